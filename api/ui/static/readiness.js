// The readiness view, the page's first: can each namespace go to
// PeerAuthentication STRICT? One request for every namespace
// (strict-readiness?all_namespaces=true); the API lists them not ready
// first, each with its verdict, what it is based on, its workloads and the
// clients that would break.

import { api, showError } from './api.js';
import { h, fill, icon, when, recordAnchor } from './dom.js';
import { seen, unknownNS } from './edges.js';
import { nsLabel, clientLabel, name } from './names.js';
import { stateLink } from './hash.js';

const $ = (id) => document.getElementById(id);

let loadedWindow = '';

// showReadiness fetches the report when the window changed or reload
// asks for it, and draws it.
export async function showReadiness(since, reload) {
  if (!reload && loadedWindow === since) return;
  loadedWindow = since;
  let report;
  try {
    report = await api('/v1/reports/strict-readiness', { all_namespaces: 'true', since });
    showError($('strict-error'), null);
  } catch (err) {
    loadedWindow = '';
    showError($('strict-error'), err);
    return;
  }
  const namespaces = report.namespaces || [];
  $('readiness-summary').textContent = namespaces.length ? report.summary : '';
  fill($('readiness'), namespaces.length
    ? namespaces.map(namespaceCard)
    : h('p', { class: 'hint' }, 'No traffic in this window.'));
}

const statusText = { ready: 'ready', not_ready: 'not ready', no_traffic: 'no traffic' };

function namespaceCard(n) {
  const blocking = n.blocking || [];
  const named = blocking.some((c) => c.workload);
  return h('article', { class: 'readiness', 'data-testid': 'ns-readiness', 'data-namespace': n.namespace, 'data-ready': String(!!n.ready) },
    h('h3', {}, nsLabel(n.namespace), ' ', h('span', { class: 'hint' }, `${n.ready_destinations || 0} of ${n.destinations || 0} destinations ready`)),
    h('p', { class: `ready ${n.ready ? 'yes' : 'no'}`, 'data-testid': 'verdict' }, icon(n.ready ? 'lock' : 'warn'), n.verdict),
    h('p', { class: 'hint', 'data-testid': 'based-on' }, `Based on ${n.based_on}`),
    h('table', { class: 'records workloads' },
      h('caption', {}, 'Workloads'),
      h('thead', {}, h('tr', {}, ['workload', 'status', 'why', 'requests', 'clients', 'last seen']
        .map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, (n.workloads || []).map((w) => h('tr', { 'data-destination': w.destination, 'data-status': w.status },
        h('th', { scope: 'row' }, name(w.workload || w.destination, [w.destination, ...(w.hosts || [])])),
        h('td', {}, h('span', { class: `status s-${w.status}` }, statusText[w.status] || w.status)),
        h('td', {}, w.reason || ''),
        h('td', {}, String(w.total || 0)),
        h('td', {}, String(w.clients || 0)),
        h('td', {}, when(w.last_seen)))))),
    blocking.length > 0 && h('table', { class: 'records blocking' },
      h('caption', {}, 'Blocking clients: they would break under STRICT'),
      h('thead', {}, h('tr', {}, ['client', ...(named ? ['sidecar'] : []), 'requests STRICT refuses', 'verdicts', 'last seen', 'example']
        .map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, blocking.map((c) => h('tr', { 'data-client': c.client },
        h('th', { scope: 'row' }, name(clientLabel(c.client), c.client)),
        // With serve --kubernetes: a client without Istio's proxy cannot
        // send mTLS at all; a DestinationRule will not help it.
        named && h('td', { 'data-testid': 'sidecar', class: c.no_sidecar ? 'no-sidecar' : '' },
          c.no_sidecar ? 'no: breaks under STRICT' : c.workload ? 'yes' : '-'),
        h('td', {}, String(c.count ?? c.total ?? 0)),
        h('td', {}, seen(c.counts)),
        h('td', {}, when(c.last_seen)),
        h('td', {}, c.example_id ? recordAnchor(c.example_id, 'a record') : ''))))),
    h('p', {}, stateLink({ view: 'edges', ns: n.namespace || unknownNS, filter: '', status: '', src: '', dst: '', record: '' },
      {}, `edges of ${nsLabel(n.namespace)}`)));
}
