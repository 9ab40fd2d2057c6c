// meshproof's page: the state lives in the URL hash (view, window,
// auto-refresh, open record) so that a view can be shared by its address.

import { forgetToken } from './api.js';
import { loadEdges, loadReadiness } from './edges.js';
import { setupSearch } from './search.js';
import { showRecord } from './detail.js';

const $ = (id) => document.getElementById(id);
const views = ['edges', 'strict', 'search'];
const windows = ['15m', '1h', '24h', '7d', '30d'];
const refreshes = { off: 0, '10s': 10000, '30s': 30000 };
const defaults = { view: 'edges', window: '24h', refresh: 'off', record: '' };

// state reads the hash, falling back to the defaults for anything unknown.
function state() {
  const q = new URLSearchParams(location.hash.slice(1));
  const pick = (k, ok) => (ok(q.get(k)) ? q.get(k) : defaults[k]);
  return {
    view: pick('view', (v) => views.includes(v)),
    window: pick('window', (v) => windows.includes(v)),
    refresh: pick('refresh', (v) => v in refreshes),
    record: q.get('record') || '',
  };
}

function hashOf(s) {
  const q = new URLSearchParams({ view: s.view, window: s.window, refresh: s.refresh });
  if (s.record) q.set('record', s.record);
  return `#${q}`;
}

// go changes part of the state; the hashchange handler does the rest.
function go(change) {
  location.hash = hashOf({ ...state(), ...change });
}

// loaded remembers which window each data view last loaded, so that
// switching views does not fetch again unless the window changed.
const loaded = {};
let timer = 0;
let timerEvery = 0;

async function load(view, since) {
  loaded[view] = since;
  if (view === 'edges') await loadEdges(since);
  if (view === 'strict') await loadReadiness(since);
}

function render() {
  const s = state();
  $('window').value = s.window;
  $('refresh').value = s.refresh;
  for (const v of views) {
    $(`view-${v}`).hidden = v !== s.view;
    const link = $(`nav-${v}`);
    link.href = hashOf({ ...s, view: v, record: '' });
    if (v === s.view) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  $('detail-close').href = hashOf({ ...s, record: '' });
  if (loaded[s.view] !== s.window) load(s.view, s.window);
  showRecord(s.record);
  const every = refreshes[s.refresh];
  if (every !== timerEvery) {
    clearInterval(timer);
    timerEvery = every;
    timer = every ? setInterval(() => { const now = state(); load(now.view, now.window); }, every) : 0;
  }
}

$('window').addEventListener('change', (ev) => go({ window: ev.target.value }));
$('refresh').addEventListener('change', (ev) => go({ refresh: ev.target.value }));
$('forget-token').addEventListener('click', () => forgetToken());
setupSearch(() => state().window);
window.addEventListener('hashchange', render);
render();
