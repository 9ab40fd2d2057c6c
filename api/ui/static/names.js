// Names as the page shows them: a workload's short name with its full ID
// on hover. Where a destination belongs (its namespace and workload) is
// the API's answer (tls-check rows and the namespace reports carry it),
// never worked out here.

import { h } from './dom.js';

// spiffe splits a Kubernetes SPIFFE ID, or returns null.
export function spiffe(id) {
  const m = /^spiffe:\/\/([^/]+)\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(id || '');
  return m ? { trustDomain: m[1], namespace: m[2], workload: m[3] } : null;
}

// nsLabel names a namespace, including the unknown one.
export const nsLabel = (ns) => ns || '(unknown namespace)';

// clientLabel is a client's short name: NS/SA for a SPIFFE ID, else the
// principal or address as it is.
export function clientLabel(client) {
  const id = spiffe(client);
  return id ? `${id.namespace}/${id.workload}` : client;
}

// name is a short name that never breaks across lines, with the full ID
// (or IDs) in its title.
export function name(short, full) {
  return h('span', { class: 'name', title: [].concat(full).filter(Boolean).join('\n') || short }, short);
}
