// meshproof's page: the state lives in the URL hash (view, window,
// auto-refresh, open record, each view's filters and selection) so that a
// view can be shared by its address.

import { forgetToken } from './api.js';
import { icon } from './dom.js';
import { params, go, hashWith } from './hash.js';
import { showReadiness } from './readiness.js';
import { showEdges, setupEdges } from './edges.js';
import { showTrend, setupTrend } from './chart.js';
import { setupSearch, showSearch } from './search.js';
import { showRecord } from './detail.js';

const $ = (id) => document.getElementById(id);
const views = ['strict', 'edges', 'trend', 'search'];
const windows = ['15m', '1h', '24h', '7d', '30d'];
const refreshes = { off: 0, '10s': 10000, '30s': 30000 };
const defaults = { view: 'strict', window: '24h', refresh: 'off' };

// state reads the hash, falling back to the defaults for anything unknown;
// q is the whole hash, for the views' own keys.
function state() {
  const q = params();
  const pick = (k, ok) => (ok(q.get(k)) ? q.get(k) : defaults[k]);
  return {
    view: pick('view', (v) => views.includes(v)),
    window: pick('window', (v) => windows.includes(v)),
    refresh: pick('refresh', (v) => v in refreshes),
    record: q.get('record') || '',
    q,
  };
}

// show draws the view the state names; reload fetches again what the view
// shows (auto-refresh).
function show(s, reload) {
  if (s.view === 'strict') return showReadiness(s.window, reload);
  if (s.view === 'edges') return showEdges(s.q, s.window, reload);
  if (s.view === 'trend') return showTrend(s.q, s.window, reload);
  return showSearch(s.q, s.window);
}

let timer = 0;
let timerEvery = 0;

function render() {
  const s = state();
  $('window').value = s.window;
  $('refresh').value = s.refresh;
  for (const v of views) {
    $(`view-${v}`).hidden = v !== s.view;
    const link = $(`nav-${v}`);
    link.href = `#${new URLSearchParams({ view: v, window: s.window, refresh: s.refresh })}`;
    if (v === s.view) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  $('detail-close').href = hashWith({ record: '' });
  show(s, false);
  showRecord(s.record);
  const every = refreshes[s.refresh];
  if (every !== timerEvery) {
    clearInterval(timer);
    timerEvery = every;
    timer = every ? setInterval(() => show(state(), true), every) : 0;
  }
}

for (const el of document.querySelectorAll('[data-icon]')) el.prepend(icon(el.dataset.icon));
$('window').addEventListener('change', (ev) => go({ window: ev.target.value }));
$('refresh').addEventListener('change', (ev) => go({ refresh: ev.target.value }));
$('forget-token').addEventListener('click', () => forgetToken());
setupEdges();
setupTrend();
setupSearch();
window.addEventListener('hashchange', render);
render();
