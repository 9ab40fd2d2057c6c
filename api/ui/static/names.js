// Names as the page shows them: a workload's short name with its full ID
// on hover. Where a destination belongs (its namespace and workload) is
// the API's answer (tls-check rows and the namespace reports carry it),
// never worked out here.

import { h, workloadLabel } from './dom.js';

// spiffe splits a Kubernetes SPIFFE ID, or returns null.
export function spiffe(id) {
  const m = /^spiffe:\/\/([^/]+)\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(id || '');
  return m ? { trustDomain: m[1], namespace: m[2], workload: m[3] } : null;
}

// nsLabel names a namespace, including the unknown one.
export const nsLabel = (ns) => ns || '(unknown namespace)';

// sourceKey reads a report's client key (evidence.SourceKey): a
// principal, an address, workload:NAMESPACE/KIND/NAME (a source without a
// principal whose pod serve --kubernetes named), or PRINCIPAL
// workload:NAMESPACE/KIND/NAME (an Istio SPIFFE ID that is not its pod's).
export function sourceKey(key) {
  const wl = (s) => {
    const m = /^workload:([^/ ]+)\/([^/ ]+)\/([^/ ]+)$/.exec(s);
    return m && { namespace: m[1], kind: m[2], name: m[3] };
  };
  const w = wl(key || '');
  if (w) return { workload: w };
  const i = (key || '').lastIndexOf(' workload:');
  if (i > 0 && !key.slice(0, i).includes(' ')) {
    const m = wl(key.slice(i + 1));
    if (m) return { principal: key.slice(0, i), workload: m, mismatch: true };
  }
  return { principal: key };
}

// workloadLabel names a workload as the CLI and reports do (dom.js's,
// which the records table uses too).
export { workloadLabel };

// clientLabel is a client's short name: NS/SA for a SPIFFE ID, its
// workload for a client known by it (WORKLOAD as NS/SA when its SPIFFE ID
// is not its pod's), else the principal or address as it is.
export function clientLabel(client) {
  const k = sourceKey(client);
  const id = spiffe(k.principal);
  const who = id ? `${id.namespace}/${id.workload}` : k.principal;
  if (k.workload) return k.mismatch ? `${workloadLabel(k.workload)} as ${who}` : workloadLabel(k.workload);
  return who;
}

// name is a short name that never breaks across lines, with the full ID
// (or IDs) in its title.
export function name(short, full) {
  return h('span', { class: 'name', title: [].concat(full).filter(Boolean).join('\n') || short }, short);
}
