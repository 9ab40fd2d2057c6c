// Names as the page shows them: a workload's short name with its full ID
// on hover, placed in a namespace as the API's namespace reports place it.
//
// A destination is its SPIFFE principal when it has one
// (spiffe://TD/ns/NS/sa/SA: namespace NS, workload SA), else its host,
// placed by its name Kubernetes style: svc.NS, svc.NS.svc and
// svc.NS.svc.cluster.local (any port) are in NS; a bare name or an IP is
// in no known namespace ('').

import { h } from './dom.js';

// spiffe splits a Kubernetes SPIFFE ID, or returns null.
export function spiffe(id) {
  const m = /^spiffe:\/\/([^/]+)\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(id || '');
  return m ? { trustDomain: m[1], namespace: m[2], workload: m[3] } : null;
}

// hostPlace places a host (with or without a port) by its name.
export function hostPlace(host) {
  let name = host || '';
  const bracket = /^\[([^\]]*)\](?::\d+)?$/.exec(name);
  if (bracket) return { namespace: '', workload: bracket[1] };
  name = name.replace(/:\d+$/, '');
  const parts = name.split('.');
  const isIP = /^\d+(\.\d+){3}$/.test(name);
  if (!isIP && (parts.length === 2 || (parts.length === 3 && parts[2] === 'svc')
    || (parts.length === 5 && parts.slice(2).join('.') === 'svc.cluster.local'))) {
    return { namespace: parts[1], workload: parts[0] };
  }
  return { namespace: '', workload: name };
}

// place is where a destination belongs: by its first principal (a host
// may list several, ", " separated), else by its host.
export function place(host, principals = '') {
  const id = spiffe(principals.split(', ')[0]);
  if (id) return { namespace: id.namespace, workload: id.workload };
  return hostPlace(host);
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
