// The time view: per destination, the share of mTLS requests (the line)
// and the plaintext requests (the bars) over the window, from one request
// to /v1/reports/timeseries, so that a rollout can be watched (with
// auto-refresh). Inline SVG, no library: each point carries its numbers in
// data attributes and a title.

import { api, showError } from './api.js';
import { h, fill, svg, iso } from './dom.js';
import { go } from './hash.js';
import { nsLabel, name } from './names.js';

const $ = (id) => document.getElementById(id);

// The chart's drawing box, in SVG units (it scales to the page's width).
const W = 640;
const H = 120;
const left = 40;
const right = 40;
const top = 8;
const bottom = 18;

let loadedKey = '';
const namespacesSeen = new Set();

// showTrend fetches the series when the window or namespace changed, or
// reload asks for it, and draws them.
export async function showTrend(q, since, reload) {
  const ns = q.get('ns') || '';
  const key = `${since}\n${ns}`;
  drawFilter(ns);
  if (!reload && key === loadedKey) return;
  loadedKey = key;
  let ts;
  try {
    ts = await api('/v1/reports/timeseries', { since, namespace: ns });
    showError($('trend-error'), null);
  } catch (err) {
    loadedKey = '';
    showError($('trend-error'), err);
    return;
  }
  const series = ts.series || [];
  // The API has no filter for the unknown namespace: it is not offered.
  if (!ns) for (const s of series) if (s.namespace) namespacesSeen.add(s.namespace);
  drawFilter(ns);
  const box = $('trend');
  box.dataset.since = ts.since;
  box.dataset.until = ts.until;
  box.dataset.step = String(ts.step_seconds);
  box.dataset.namespace = ns;
  $('trend-summary').textContent = series.length
    ? `${series.length} destination${series.length === 1 ? '' : 's'}, ${iso(ts.since)} to ${iso(ts.until)}, one point per ${stepText(ts.step_seconds)}${ts.truncated ? ' (truncated: narrow the window or pick a namespace)' : ''}.`
    : '';
  fill(box, series.length ? series.map((s) => seriesChart(s, ts)) : h('p', { class: 'hint' }, 'No traffic in this window.'));
}

function stepText(sec) {
  if (sec % 86400 === 0) return `${sec / 86400} d`;
  if (sec % 3600 === 0) return `${sec / 3600} h`;
  if (sec % 60 === 0) return `${sec / 60} min`;
  return `${sec} s`;
}

// drawFilter lists the namespaces seen so far; the choice goes to the URL.
function drawFilter(ns) {
  const sel = $('trend-ns');
  const all = [...namespacesSeen];
  if (ns && !all.includes(ns)) all.push(ns);
  all.sort();
  fill(sel, h('option', { value: '' }, 'all'), all.map((n) => h('option', { value: n }, n)));
  sel.value = ns;
}

export function setupTrend() {
  $('trend-ns').addEventListener('change', (ev) => go({ ns: ev.target.value }));
}

// seriesChart draws one destination: the mTLS share of each step with
// traffic as a line of points (a gap where there was none), and its
// plaintext requests as bars against the right-hand scale.
function seriesChart(s, ts) {
  const t0 = Date.parse(ts.since);
  const t1 = Math.max(Date.parse(ts.until), t0 + 1);
  const x = (t) => left + ((Date.parse(t) - t0) / (t1 - t0)) * (W - left - right);
  const y = (share) => top + (1 - share) * (H - top - bottom);
  const points = s.points || [];
  const maxPlain = Math.max(1, ...points.map((p) => p.plaintext || 0));
  const barW = Math.max(1, ((ts.step_seconds * 1000) / (t1 - t0)) * (W - left - right) * 0.8);
  const bars = points.filter((p) => p.plaintext > 0).map((p) => svg('rect', {
    class: 'plain-bar', x: x(p.t).toFixed(1), width: barW.toFixed(1),
    y: (H - bottom - ((p.plaintext / maxPlain) * (H - top - bottom))).toFixed(1),
    height: ((p.plaintext / maxPlain) * (H - top - bottom)).toFixed(1),
  }));
  // The line breaks where a step had no traffic: no share to draw.
  const runs = [[]];
  for (const p of points) {
    if (p.total > 0) runs[runs.length - 1].push(p);
    else if (runs[runs.length - 1].length) runs.push([]);
  }
  const share = (p) => (p.total ? p.mtls / p.total : 0);
  const at = (p) => `${(x(p.t) + barW / 2).toFixed(1)},${y(share(p)).toFixed(1)}`;
  const lines = runs.filter((r) => r.length > 1).map((r) => svg('polyline', { class: 'share-line', points: r.map(at).join(' ') }));
  const dots = points.filter((p) => p.total > 0).map((p) => svg('circle', {
    class: 'share-dot', cx: (x(p.t) + barW / 2).toFixed(1), cy: y(share(p)).toFixed(1), r: '2.2',
    'data-t': p.t, 'data-total': String(p.total), 'data-mtls': String(p.mtls), 'data-plaintext': String(p.plaintext),
  }, svg('title', {}, `${iso(p.t)}: ${Math.round(share(p) * 100)}% mTLS, ${p.plaintext} plaintext of ${p.total} requests`)));
  const label = (cls, lx, ly, text, anchor = 'start') => svg('text', { class: cls, x: String(lx), y: String(ly), 'text-anchor': anchor }, text);
  const total = points.reduce((a, p) => a + (p.total || 0), 0);
  const plain = points.reduce((a, p) => a + (p.plaintext || 0), 0);
  return h('article', { class: 'series', 'data-destination': s.destination, 'data-namespace': s.namespace || '' },
    h('h3', {}, name(s.workload || s.destination, s.destination), ' ',
      h('span', { class: 'hint' }, `${nsLabel(s.namespace)}: ${plain} plaintext of ${total} requests`)),
    svg('svg', {
      class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img',
      'aria-label': `${s.destination}: mTLS share and plaintext requests over time`,
    },
    svg('line', { class: 'axis', x1: left, y1: y(1), x2: W - right, y2: y(1) }),
    svg('line', { class: 'axis', x1: left, y1: y(0), x2: W - right, y2: y(0) }),
    label('tick', left - 4, y(1) + 4, '100%', 'end'),
    label('tick', left - 4, y(0) + 4, '0%', 'end'),
    plain > 0 && label('tick plain', W - right + 4, top + 8, String(maxPlain)),
    label('tick', left, H - 4, iso(t0).slice(11)),
    label('tick', W - right, H - 4, iso(t1).slice(11), 'end'),
    bars, lines, dots));
}
