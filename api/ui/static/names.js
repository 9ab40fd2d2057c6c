// Names as the page shows them: a workload's short name with its full ID
// on hover, placed in a namespace as the API's namespace reports place it.
//
// The rule is the namespace reports' (package evidence/report): a
// destination is its SPIFFE principal when it has one
// (spiffe://TD/ns/NS/sa/SA: namespace NS, workload SA), else its host,
// placed by its name.

import { h } from './dom.js';

// spiffe splits a Kubernetes SPIFFE ID, or returns null.
export function spiffe(id) {
  const m = /^spiffe:\/\/([^/]+)\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(id || '');
  return m ? { trustDomain: m[1], namespace: m[2], workload: m[3] } : null;
}

// hostPlace places a host (with or without a port) by its name, as
// Kubernetes' DNS names services: svc.NS, svc.NS.svc and
// svc.NS.svc.<cluster domain>; anything else (a bare name, an IP) is in no
// known namespace, its workload the name without the port.
export function hostPlace(host) {
  let name = host || '';
  const bracket = /^\[([^\]]*)\]/.exec(name);
  if (bracket) return { namespace: '', workload: bracket[1] };
  if ((name.match(/:/g) || []).length === 1) name = name.slice(0, name.indexOf(':'));
  const labels = name.toLowerCase().replace(/\.$/, '').split('.');
  const label = (l) => /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(l);
  const isIP = /^\d+(\.\d+){3}$/.test(name) || name.includes(':');
  if (!isIP && (labels.length === 2 || (labels.length >= 3 && labels[2] === 'svc')) && label(labels[0]) && label(labels[1])) {
    return { namespace: labels[1], workload: labels[0] };
  }
  return { namespace: '', workload: name };
}

// place is where a destination belongs: by its first principal (a host
// may list several, ", " separated; one not of the form
// spiffe://TD/ns/NS/sa/SA is in no known namespace), else by its host.
export function place(host, principals = '') {
  const first = principals.split(', ')[0];
  if (!first) return hostPlace(host);
  const id = spiffe(first);
  return id ? { namespace: id.namespace, workload: id.workload } : { namespace: '', workload: first };
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
