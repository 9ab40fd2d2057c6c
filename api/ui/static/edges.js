// The edge view (tls-check as a sources x destinations matrix, with the
// latest records of a clicked edge) and the STRICT-readiness view.

import { api, showError } from './api.js';
import { h, fill, when, recordsTable, recordAnchor } from './dom.js';

const $ = (id) => document.getElementById(id);

// Verdicts a request without a client certificate gets: a client named by
// its address (no principal) only ever has these.
const noPrincipal = ['tls_server_only', 'xfcc_unverified', 'plaintext'];
const edgeLimit = 20;

// status judges one edge's counts as the API judges a destination.
export function status(counts) {
  if ((counts.mtls_mismatch || 0) + (counts.xfcc_unverified || 0) > 0) return 'SUSPECT';
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  return (counts.mtls || 0) === total ? 'OK' : 'PLAINTEXT';
}

// add sums counts into into, leaving out verdicts never seen.
function add(into, counts) {
  for (const [v, n] of Object.entries(counts || {})) if (n) into[v] = (into[v] || 0) + n;
}

// seen lists "verdict: count" for the verdicts seen.
const seen = (counts) => Object.entries(counts || {}).filter(([, n]) => n).map(([v, n]) => `${v}: ${n}`).join(', ');

// edges folds the report into cells keyed by client and destination. A
// destination is its host:port; rows of one host with different principals
// (plaintext requests carry none) are one column.
function edges(report) {
  const cells = new Map();
  const dests = new Map();
  for (const row of report.rows || []) {
    const d = dests.get(row.destination) || { host: row.destination, principals: new Set() };
    if (row.destination_principal) d.principals.add(row.destination_principal);
    dests.set(row.destination, d);
    for (const c of row.clients || []) {
      const key = `${c.client}\n${row.destination}`;
      const cell = cells.get(key) || { client: c.client, host: row.destination, counts: {}, total: 0 };
      add(cell.counts, c.counts);
      cell.total += c.total;
      cells.set(key, cell);
    }
  }
  const clients = [...new Set([...cells.values()].map((c) => c.client))].sort();
  return { cells, clients, dests: [...dests.values()].sort((a, b) => a.host.localeCompare(b.host)) };
}

let selected = null; // the edge whose records are listed

// loadEdges fetches the tls-check report for the window and draws it.
export async function loadEdges(since) {
  try {
    const report = await api('/v1/reports/tls-check', { since });
    showError($('edges-error'), null);
    drawMatrix(edges(report), since);
    drawDestinations(report);
    if (selected) await showEdge(selected, since);
    return report;
  } catch (err) {
    showError($('edges-error'), err);
    return null;
  }
}

function drawMatrix({ cells, clients, dests }, since) {
  if (!dests.length) {
    fill($('matrix'), h('p', { class: 'hint' }, 'No traffic in this window.'));
    return;
  }
  const head = h('tr', {}, h('th', { scope: 'col' }, 'source \\ destination'),
    dests.map((d) => h('th', { scope: 'col', title: [...d.principals].join('\n') },
      d.host, [...d.principals].map((p) => h('small', {}, p)))));
  const rows = clients.map((client) => h('tr', {}, h('th', { scope: 'row', class: 'id' }, client),
    dests.map((d) => {
      const cell = cells.get(`${client}\n${d.host}`);
      return h('td', {}, cell && cellButton(cell, since));
    })));
  fill($('matrix'), h('table', { class: 'matrix' }, h('thead', {}, head), h('tbody', {}, rows)));
}

function cellButton(cell, since) {
  const st = status(cell.counts);
  const share = cell.total ? (cell.counts.mtls || 0) / cell.total : 0;
  let cls = 'ok';
  if (st === 'SUSPECT') cls = 'suspect';
  else if (st === 'PLAINTEXT') cls = share >= 0.5 ? 'plain-some' : 'plain-most';
  const pct = `${Math.round(share * 100)}% mTLS`;
  return h('button', {
    type: 'button', class: `cell ${cls}`,
    'data-source': cell.client, 'data-destination': cell.host, 'data-status': st, 'data-count': cell.total,
    title: `${pct}; ${seen(cell.counts)}`,
    'aria-label': `${cell.client} to ${cell.host}: ${cell.total} requests, ${pct}, ${st}`,
    onclick: () => { selected = cell; showEdge(cell, since); },
  }, st === 'OK' ? '🔒 ' : '⚠ ', String(cell.total));
}

function drawDestinations(report) {
  const rows = (report.rows || []).map((r) => h('tr', { 'data-destination': r.destination, 'data-status': r.status },
    h('td', {}, r.destination), h('td', { class: 'id' }, r.destination_principal || '—'),
    h('td', {}, h('span', { class: `status s-${r.status}` }, r.status)), h('td', {}, r.server || ''),
    h('td', {}, `${Math.round((r.mtls_share || 0) * 100)}%`), h('td', {}, String(r.total || 0)),
    h('td', {}, (r.clients || []).length)));
  fill($('destinations'), rows.length ? h('table', { class: 'records' },
    h('caption', {}, 'tls-check: one row per destination'),
    h('thead', {}, h('tr', {}, ['host:port', 'principal', 'status', 'server', 'mTLS share', 'requests', 'clients']
      .map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, rows)) : null);
}

// showEdge lists the latest records of one edge. The API filters sources by
// principal only; a client known by its address gets the principal-less
// requests to that host, filtered here by source address.
async function showEdge(cell, since) {
  const byAddress = Object.keys(cell.counts).every((v) => noPrincipal.includes(v));
  $('edge').hidden = false;
  $('edge-title').textContent = `Latest requests: ${cell.client} → ${cell.host}`;
  $('edge-note').textContent = byAddress
    ? `${cell.client} has no principal: showing requests to ${cell.host} without a client certificate, filtered here by source address.`
    : '';
  const params = byAddress
    ? { host: cell.host, verdict: noPrincipal, since, limit: 100 }
    : { source: cell.client, host: cell.host, since, limit: edgeLimit };
  const shown = [];
  const more = $('edge-more');
  const key = `${cell.client}\n${cell.host}`;
  if ($('edge').dataset.key !== key) { // a new edge: no stale rows under its title
    $('edge').dataset.key = key;
    more.hidden = true;
    fill($('edge-records'));
  }
  const page = async (cursor) => {
    try {
      const res = await api('/v1/evidence', { ...params, cursor });
      shown.push(...res.records.filter((r) => !byAddress || (!r.source?.principal && r.source?.address === cell.client)));
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

// loadReadiness asks, for every destination of the tls-check report,
// whether it could go to STRICT, and lists the clients that would break.
export async function loadReadiness(since) {
  let report;
  try {
    report = await api('/v1/reports/tls-check', { since });
    showError($('strict-error'), null);
  } catch (err) {
    showError($('strict-error'), err);
    return;
  }
  const hosts = [...new Set((report.rows || []).map((r) => r.destination))].sort();
  if (!hosts.length) {
    fill($('readiness'), h('p', { class: 'hint' }, 'No traffic in this window.'));
    return;
  }
  const cards = await Promise.all(hosts.map(async (destination) => {
    try {
      return readinessCard(await api('/v1/reports/strict-readiness', { destination, since }), destination);
    } catch (err) {
      const box = h('div', { class: 'error', role: 'alert' });
      showError(box, err);
      return h('article', { class: 'readiness' }, h('h3', {}, destination), box);
    }
  }));
  fill($('readiness'), cards);
}

function readinessCard(r, destination) {
  const blocking = r.blocking || [];
  return h('article', { class: 'readiness', 'data-testid': 'readiness', 'data-destination': destination, 'data-ready': String(!!r.ready) },
    h('h3', {}, destination),
    h('p', { class: `ready ${r.ready ? 'yes' : 'no'}` }, r.ready ? '🔒 Ready for STRICT' : '⚠ Not ready for STRICT'),
    r.reason && h('p', {}, r.reason),
    h('p', { class: 'hint' }, `${r.total || 0} requests in the window`),
    blocking.length > 0 && h('table', { class: 'records' },
      h('caption', {}, 'Blocking clients: they would break under STRICT'),
      h('thead', {}, h('tr', {}, ['client', 'requests', 'verdicts', 'last seen', 'example']
        .map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, blocking.map((c) => h('tr', { 'data-client': c.client },
        h('td', { class: 'id' }, c.client), h('td', {}, String(c.total || 0)),
        h('td', {}, seen(c.counts)),
        h('td', {}, when(c.last_seen)),
        h('td', {}, c.example_id ? recordAnchor(c.example_id, c.example_id) : ''))))));
}
