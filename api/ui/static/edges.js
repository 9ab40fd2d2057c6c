// The edge view: the tls-check report grouped by the destinations'
// namespaces, one row per destination with its clients as edges (short
// names, full IDs on hover), filters in the URL, and the latest records of
// the edge the URL selects.

import { api, showError } from './api.js';
import { h, fill, icon, recordsTable } from './dom.js';
import { params, go, hashWith, stateLink } from './hash.js';
import { nsLabel, clientLabel, name, sourceKey } from './names.js';
import { searchChange } from './search.js';

const $ = (id) => document.getElementById(id);

// Verdicts a request without a client certificate gets: a client named by
// its address (no principal) only ever has these.
const noPrincipal = ['tls_server_only', 'xfcc_unverified', 'plaintext'];
const edgeLimit = 20;
// unknownNS is the namespace filter's value for "(unknown namespace)":
// never a Kubernetes namespace name.
export const unknownNS = '(unknown)';

// status judges one edge's counts as the API judges a destination.
export function status(counts) {
  if ((counts.mtls_mismatch || 0) + (counts.xfcc_unverified || 0) > 0) return 'SUSPECT';
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  return (counts.mtls || 0) === total ? 'OK' : 'PLAINTEXT';
}

// seen lists "verdict: count" for the verdicts seen.
export const seen = (counts) => Object.entries(counts || {}).filter(([, n]) => n).map(([v, n]) => `${v}: ${n}`).join(', ');

// CONFLICT (serve --kubernetes: STRICT configured, plaintext seen) is a
// row's status only, never an edge's.
const rank = { SUSPECT: 0, CONFLICT: 1, PLAINTEXT: 2, OK: 3 };

// destinations are the report's rows placed in namespaces, their clients
// as edges; not OK first, then by name.
function destinations(report) {
  const out = (report.rows || []).map((row) => {
    const p = { namespace: row.namespace || '', workload: row.workload || row.destination };
    // A client whose SPIFFE ID is not its pod's is suspect whatever its
    // verdicts, as the API's row is.
    const cells = (row.clients || []).map((c) => ({ client: c.client, host: row.destination, counts: c.counts || {}, total: c.total || 0,
      workload: c.workload, rule: c.destination_rule, mismatch: c.identity_mismatch }))
      .map((c) => ({ ...c, status: c.mismatch ? 'SUSPECT' : status(c.counts) }))
      .sort((a, b) => rank[a.status] - rank[b.status] || clientLabel(a.client).localeCompare(clientLabel(b.client)));
    return { ...p, host: row.destination, principals: (row.destination_principal || '').split(', ').filter(Boolean), row, cells };
  });
  return out.sort((a, b) => rank[a.row.status] - rank[b.row.status] || a.workload.localeCompare(b.workload) || a.host.localeCompare(b.host));
}

// filtered applies the URL's filters: text (any ID, host or name), a
// namespace, and "not all mTLS" (edges and destinations not OK).
function filtered(dests, q) {
  const text = (q.get('filter') || '').trim().toLowerCase();
  const ns = q.get('ns') || '';
  const notOK = q.get('status') === 'not_ok';
  const has = (...s) => s.some((x) => x.toLowerCase().includes(text));
  const out = [];
  for (const d of dests) {
    if (ns && (d.namespace || unknownNS) !== ns) continue;
    if (notOK && d.row.status === 'OK') continue;
    let cells = notOK ? d.cells.filter((c) => c.status !== 'OK') : d.cells;
    if (text && !has(d.host, d.namespace, d.workload, ...d.principals)) {
      cells = cells.filter((c) => has(c.client, clientLabel(c.client)));
      if (!cells.length) continue;
    }
    out.push({ ...d, cells });
  }
  return out;
}

let report = null;
let loadedWindow = '';

// showEdges draws the view for the state q (the hash), fetching the
// report when the window changed or reload asks for it.
export async function showEdges(q, since, reload) {
  if (!report || reload || loadedWindow !== since) {
    loadedWindow = since;
    try {
      report = await api('/v1/reports/tls-check', { since });
      showError($('edges-error'), null);
    } catch (err) {
      report = null; // not the window's: fetch again on the next look
      fill($('matrix'));
      showError($('edges-error'), err);
      return;
    }
  }
  const dests = destinations(report);
  drawFilters(dests, q);
  drawEdges(dests, filtered(dests, q), q);
  const src = q.get('src') || '';
  const dst = q.get('dst') || '';
  if (src && dst) {
    const d = dests.find((x) => x.host === dst);
    await showEdge(d?.cells.find((c) => c.client === src) || { client: src, host: dst }, since, reload);
  } else {
    $('edge').hidden = true;
    delete $('edge').dataset.key;
  }
}

// drawFilters sets the filter form from the URL and lists the namespaces.
function drawFilters(dests, q) {
  const form = $('edges-filter');
  const namespaces = [...new Set(dests.map((d) => d.namespace || unknownNS))].sort();
  const current = q.get('ns') || '';
  if (current && !namespaces.includes(current)) namespaces.push(current);
  fill(form.elements.ns, h('option', { value: '' }, 'all'),
    namespaces.map((ns) => h('option', { value: ns }, ns === unknownNS ? nsLabel('') : ns)));
  form.elements.ns.value = current;
  form.elements.status.value = q.get('status') || '';
  if (document.activeElement !== form.elements.filter) form.elements.filter.value = q.get('filter') || '';
}

// setupEdges puts the filters into the URL as they change.
export function setupEdges() {
  const form = $('edges-filter');
  form.addEventListener('submit', (ev) => ev.preventDefault());
  form.elements.filter.addEventListener('input', (ev) => go({ filter: ev.target.value }, true));
  form.elements.ns.addEventListener('change', (ev) => go({ ns: ev.target.value }));
  form.elements.status.addEventListener('change', (ev) => go({ status: ev.target.value }));
}

function drawEdges(all, dests, q) {
  const spaces = new Set(all.map((d) => d.namespace));
  $('edges-summary').textContent = all.length
    ? `${dests.length === all.length ? '' : `${dests.length} shown of `}${all.length} destinations in ${spaces.size} namespaces; click an edge for its latest requests.`
    : '';
  if (!all.length) {
    fill($('matrix'), h('p', { class: 'hint' }, 'No traffic in this window.'));
    return;
  }
  if (!dests.length) {
    fill($('matrix'), h('p', { class: 'hint' }, 'Nothing matches the filters.'));
    return;
  }
  const groups = new Map();
  for (const d of dests) {
    if (!groups.has(d.namespace)) groups.set(d.namespace, []);
    groups.get(d.namespace).push(d);
  }
  // Namespaces with something not OK first, the unknown one last.
  const order = [...groups.keys()].sort((a, b) => (a === '') - (b === '')
    || groups.get(a).every((d) => d.row.status === 'OK') - groups.get(b).every((d) => d.row.status === 'OK')
    || a.localeCompare(b));
  const selected = `${q.get('src') || ''}\n${q.get('dst') || ''}`;
  const configured = all.some((d) => d.row.authn_policy);
  fill($('matrix'), order.map((ns) => {
    const ds = groups.get(ns);
    const bad = ds.filter((d) => d.row.status !== 'OK').length;
    return h('section', { class: 'ns-group', 'data-namespace': ns },
      h('h3', {}, nsLabel(ns), ' ', h('span', { class: 'hint' }, `${ds.length} destination${ds.length === 1 ? '' : 's'}${bad ? `, ${bad} not all mTLS` : ''}`)),
      h('table', { class: 'edges' },
        h('thead', {}, h('tr', {}, ['destination', 'status', ...(configured ? ['authn policy', 'destination rule'] : []), 'clients (edges)']
          .map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, ds.map((d) => h('tr', { 'data-destination': d.host, 'data-status': d.row.status },
          h('th', { scope: 'row' }, name(d.workload, [...d.principals, d.host]), h('small', { class: 'hint' }, port(d.host))),
          h('td', {},
            h('span', { class: `status s-${d.row.status}` }, d.row.status), ' ',
            h('small', { class: 'hint' }, `${Math.round((d.row.mtls_share || 0) * 100)}% mTLS of ${d.row.total || 0}, server ${d.row.server || '?'}`)),
          configured ? configuredCells(d.row) : null,
          h('td', { class: 'cells' }, d.cells.map((c) => cellButton(c, selected === `${c.client}\n${c.host}`))))))));
  }));
}

// configuredCells are what the cluster is configured for beside a row
// (serve --kubernetes only): istioctl authn tls-check's AUTHN POLICY and
// DESTINATION RULE, each its object's name.namespace over its mode.
function configuredCells(row) {
  const a = row.authn_policy || {};
  const r = row.destination_rule || {};
  const setting = (testid, title, s, none) => h('td', { 'data-testid': testid, title },
    h('span', { class: 'setting-name' }, s.name || '-'), h('br'), h('small', { class: s.mode === 'STRICT' ? 'setting-mode s-OK' : 'setting-mode' }, s.mode || none));
  return [
    setting('authn-policy', 'the PeerAuthentication that decides the mode on this port (- is Istio\'s default)', a, '?'),
    setting('destination-rule', 'the TLS clients in the destination\'s namespace are configured to send (auto: auto mTLS)', r, 'auto'),
  ];
}

// workloadName is a client's workload as the CLI names it.
const workloadName = (w) => (w ? `${w.namespace || '-'}/${(w.kind || '').toLowerCase()}/${w.name}` : '');

function cellButton(cell, pressed) {
  const share = cell.total ? (cell.counts.mtls || 0) / cell.total : 0;
  let cls = 'ok';
  if (cell.status === 'SUSPECT') cls = 'suspect';
  else if (cell.status === 'PLAINTEXT') cls = share >= 0.5 ? 'plain-some' : 'plain-most';
  const pct = `${Math.round(share * 100)}% mTLS`;
  return h('button', {
    type: 'button', class: `cell ${cls}`, 'aria-pressed': String(pressed),
    'data-source': cell.client, 'data-destination': cell.host, 'data-status': cell.status, 'data-count': cell.total,
    title: `${cell.client} → ${cell.host}\n${pct}; ${seen(cell.counts)}`
      + (cell.workload ? `\nworkload ${workloadName(cell.workload)}${cell.workload.sidecar ? '' : ' (no sidecar)'}` : '')
      + (cell.rule ? `\ndestination rule ${cell.rule.name || '-'} ${cell.rule.mode || 'auto'}` : ''),
    'data-workload': workloadName(cell.workload) || null,
    'aria-label': `${cell.client} to ${cell.host}: ${cell.total} requests, ${pct}, ${cell.status}`,
    onclick: () => go({ src: cell.client, dst: cell.host, record: '' }),
  }, clientParts(cell.client, icon(cell.status === 'OK' ? 'lock' : 'warn'), h('span', { class: 'count' }, String(cell.total))));
}

// clientParts is a client's short name between a glyph and a count: NS/SA
// may wrap after the '/', never inside a name.
function clientParts(client, glyph, count) {
  const label = clientLabel(client);
  const cut = label.indexOf('/') + 1;
  if (!cut) return h('span', { class: 'name' }, glyph, label, count);
  return [h('span', { class: 'name' }, glyph, label.slice(0, cut)), h('wbr'), h('span', { class: 'name' }, label.slice(cut), count)];
}

// port is a host's ":port", shown after the destination's short name.
const port = (host) => (/:\d+$/.exec(host) || [''])[0];

// showEdge lists the latest records of one edge. The API filters sources by
// principal or workload; a client known by its workload gets that
// workload's principal-less requests (a mismatched identity its principal
// from that workload), and a client known by its address the
// principal-less requests to that host, filtered here by source address.
async function showEdge(cell, since, reload) {
  const key = `${cell.client}\n${cell.host}\n${since}`;
  if ($('edge').dataset.key === key && !reload) return;
  const k = sourceKey(cell.client);
  const wref = k.workload && `${k.workload.namespace}/${k.workload.name}`;
  const byAddress = !k.workload && (cell.counts
    ? Object.keys(cell.counts).filter((v) => cell.counts[v]).every((v) => noPrincipal.includes(v))
    : !cell.client.includes('://'));
  $('edge').hidden = false;
  $('edge-title').textContent = `Latest requests: ${cell.client} → ${cell.host}`;
  $('edge-note').textContent = byAddress
    ? `${cell.client} has no principal: showing requests to ${cell.host} without a client certificate, filtered here by source address.`
    : k.mismatch ? `${k.principal} was presented by workload ${clientLabel(`workload:${k.workload.namespace}/${k.workload.kind}/${k.workload.name}`)}, whose pod runs as another identity: suspect.` : '';
  let search = { source: cell.client, host: cell.host };
  if (byAddress) search = { host: cell.host, verdict: noPrincipal };
  else if (k.mismatch) search = { source: k.principal, source_workload: wref, host: cell.host };
  else if (k.workload) search = { source_workload: wref, host: cell.host, verdict: noPrincipal };
  fill($('edge-links'), stateLink(searchChange(search), { 'data-testid': 'edge-search' }, 'search these requests'), ' · ',
    h('a', { href: hashWith({ src: '', dst: '' }), 'data-testid': 'edge-close' }, 'close'));
  const params = byAddress ? { ...search, since, limit: 100 } : { ...search, since, limit: edgeLimit };
  const shown = [];
  const more = $('edge-more');
  if ($('edge').dataset.key !== key) { // a new edge: no stale rows under its title
    $('edge').dataset.key = key;
    more.hidden = true;
    fill($('edge-records'));
  }
  const page = async (cursor) => {
    try {
      const res = await api('/v1/evidence', { ...params, cursor });
      shown.push(...res.records.filter((r) => byAddress ? !r.source?.principal && r.source?.address === cell.client
        : !k.workload || (r.source?.workload?.kind === k.workload.kind && (k.mismatch || !r.source?.principal))));
      showError($('edge-error'), null);
      fill($('edge-records'), recordsTable(shown));
      more.hidden = !res.next_cursor;
      more.onclick = () => page(res.next_cursor);
    } catch (err) {
      showError($('edge-error'), err);
    }
  };
  await page('');
}

