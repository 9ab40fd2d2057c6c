// Small DOM helpers. Everything from the API is set as text, never parsed
// as HTML: evidence is full of strings a client chose.

// h builds an element: attrs sets attributes (data-*, aria-*, class, ...)
// and on* handlers; children are nodes or strings (null and false skipped).
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c !== null && c !== undefined && c !== false) el.append(c);
  }
  return el;
}

const svgNS = 'http://www.w3.org/2000/svg';

// svg builds an SVG element, as h builds an HTML one (attributes only).
export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(svgNS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) el.setAttribute(k, v);
  for (const c of children.flat(Infinity)) if (c) el.append(c);
  return el;
}

// The page's glyphs are inline SVG drawn in the text's colour: an emoji
// lock draws as an empty box on a system without an emoji font.
const glyphs = {
  lock: [['path', { d: 'M5 7V5a3 3 0 0 1 6 0v2', fill: 'none', stroke: 'currentColor', 'stroke-width': '1.8' }],
    ['rect', { x: '3', y: '7', width: '10', height: '8', rx: '1.5', fill: 'currentColor' }]],
  warn: [['path', { d: 'M8 1.5 15 14.5H1z', fill: 'none', stroke: 'currentColor', 'stroke-width': '1.6', 'stroke-linejoin': 'round' }],
    ['path', { d: 'M8 6v4.2M8 11.6v1.4', stroke: 'currentColor', 'stroke-width': '1.8' }]],
};

// icon is the lock (all mTLS) or the warning glyph, hidden from screen
// readers: the text beside it says the same.
export function icon(name) {
  return svg('svg', { class: `icon ${name}`, viewBox: '0 0 16 16', width: '14', height: '14', 'aria-hidden': 'true', focusable: 'false' },
    glyphs[name].map(([tag, attrs]) => svg(tag, attrs)));
}

// fill replaces el's children.
export function fill(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
}

// iso writes a time as every human line of meshproof does (the CLI, the
// reports' sentences, the logs): RFC 3339 in UTC, to the second, which
// the search form's since and until take back.
export function iso(t) {
  return new Date(t).toISOString().replace(/\.\d+Z$/, 'Z');
}

// when writes a time as iso does, with how long ago.
export function when(t) {
  if (!t) return '';
  const d = new Date(t);
  const s = Math.round((Date.now() - d) / 1000);
  let ago;
  if (s < 60) ago = `${s}s ago`;
  else if (s < 3600) ago = `${Math.floor(s / 60)}m ago`;
  else if (s < 86400) ago = `${Math.floor(s / 3600)}h ago`;
  else ago = `${Math.floor(s / 86400)}d ago`;
  return `${iso(d)} (${ago})`;
}

export function verdictBadge(v) {
  return h('span', { class: `verdict v-${v}` }, icon(v === 'mtls' ? 'lock' : 'warn'), v);
}

// peerName is a peer's principal, or its address when it has none.
export function peerName(p = {}) {
  return p.principal || [p.address, p.port].filter(Boolean).join(':') || '—';
}

// idText is a full ID that may wrap only after a '/', never inside a
// segment (not at a hyphen either).
export function idText(id) {
  const parts = String(id).split(/(?<=\/)/);
  return h('span', { class: 'fullid' }, parts.flatMap((p, i) => [i ? h('wbr') : null, h('span', { class: 'name' }, p)]));
}

// workloadLabel names a workload as the CLI and reports do:
// NAMESPACE/KIND/NAME, the kind in lower case.
export const workloadLabel = (w) => `${w.namespace || '-'}/${(w.kind || '').toLowerCase()}/${w.name}`;

// workloadCell is a peer's workload as the records table shows it (its
// pod and service account on hover), '—' when serve recorded none.
function workloadCell(p = {}) {
  const w = p.workload;
  if (!w) return h('td', {}, '—');
  return h('td', {}, h('span', { class: 'name', title: [w.pod && `pod ${w.pod}`, w.service_account && `service account ${w.service_account}`].filter(Boolean).join('\n') || null },
    workloadLabel(w)));
}

// recordLink is the hash that opens a record's detail, keeping the view.
export function recordLink(id) {
  const q = new URLSearchParams(location.hash.slice(1));
  q.set('record', id);
  return `#${q}`;
}

// recordAnchor links to a record's detail; the hash is taken when it is
// followed, so that a window changed since it was drawn is kept.
export function recordAnchor(id, text) {
  return h('a', {
    href: recordLink(id),
    onclick: (ev) => { ev.preventDefault(); location.hash = recordLink(id); },
  }, text);
}

// recordsTable lists records, with each peer's workload where serve
// --kubernetes recorded one (the CLI's SOURCE WORKLOAD and DESTINATION
// WORKLOAD); a click anywhere on a row opens its detail, and the time cell
// is a link for the keyboard.
export function recordsTable(records) {
  if (!records.length) return h('p', { class: 'hint' }, 'No records.');
  const row = (r) => h('tr', {
    'data-id': r.id,
    onclick: (ev) => { if (ev.target.tagName !== 'A') location.hash = recordLink(r.id); },
  },
  h('td', {}, recordAnchor(r.id, when(r.time))),
  h('td', {}, verdictBadge(r.verdict)),
  h('td', {}, idText(peerName(r.source))),
  h('td', {}, idText(peerName(r.destination))),
  workloadCell(r.source),
  workloadCell(r.destination),
  h('td', {}, r.request?.method || ''),
  h('td', { class: 'name' }, r.request?.host || ''),
  h('td', { class: 'id' }, r.request?.path || ''),
  h('td', {}, r.effective ? effectiveText(r.effective) : decisionText(r.decision)));
  return h('table', { class: 'records' },
    h('thead', {}, h('tr', {}, ['time', 'verdict', 'source', 'destination', 'source workload', 'destination workload', 'method', 'host', 'path', 'decision']
      .map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, records.map(row)));
}

// effectiveText is what a request whose record was amended actually got.
export function effectiveText(e = {}) {
  return `${e.allowed ? 'allowed' : `denied${e.http_status ? ` (${e.http_status})` : ''}`} — amended`;
}

export function decisionText(d = {}) {
  let s = d.allowed ? 'allowed' : `denied${d.http_status ? ` (${d.http_status})` : ''}`;
  if (d.dry_run) s += ' — dry run';
  if (d.error) s += ' — error';
  return s;
}
