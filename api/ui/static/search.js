// The evidence search form: the API's filters, a results table, and "more"
// pages through next_cursor. The filters live in the URL hash under their
// API names (#view=search&window=1h&host=...): a search puts them there,
// and an address with them runs the same search again.

import { api, showError } from './api.js';
import { fill, recordsTable } from './dom.js';
import { go } from './hash.js';

const $ = (id) => document.getElementById(id);
const pageSize = 50;

// names are the form's fields: the API's filter parameters.
function names(form) {
  return [...new Set([...form.elements].map((el) => el.name).filter(Boolean))];
}

// setupSearch wires the form: submitting puts its filters in the URL,
// which runs the search (showSearch).
export function setupSearch() {
  const form = $('search-form');
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    // run marks a search made, so that one with no filter at all (every
    // record of the window) is in the address too.
    const change = searchChange({ run: '1' });
    for (const [k, v] of new FormData(form)) {
      if (v.trim() === '') continue;
      if (k === 'verdict') (change.verdict ||= []).push(v);
      else change[k] = v.trim();
    }
    if (!go(change)) rerun(); // the same search again: no hashchange
  });
  form.addEventListener('reset', () => {
    const change = { run: '' };
    for (const n of names(form)) change[n] = '';
    // The form empties itself; the address follows, and what is typed
    // before that change is handled stays.
    keepForm = go(change);
    fill($('search-results'));
    showError($('search-error'), null);
    $('search-more').hidden = true;
    markInvalid(form, '');
  });
}

// searchChange is the state of a search for filters (API names): every
// other filter and the other views' selections cleared.
export function searchChange(filters) {
  const change = { view: 'search', run: '', record: '', src: '', dst: '', filter: '', ns: '', status: '' };
  for (const n of names($('search-form'))) change[n] = '';
  return { ...change, ...filters };
}

let lastKey = '';
let rerun = () => {};
// keepForm: the next change of the address is a reset's, whose form is
// already empty (and may hold what was typed since).
let keepForm = false;

// showSearch runs the search the URL's state q names, unless it is the one
// shown already; since is the window, used when the filters have none.
export function showSearch(q, since) {
  const form = $('search-form');
  const p = { limit: pageSize };
  for (const n of names(form)) {
    const v = q.getAll(n).filter((x) => x !== '');
    if (v.length) p[n] = n === 'verdict' ? v : v[0];
  }
  const filters = Object.keys(p).length > 1;
  p.since ||= since;
  rerun = () => search(p);
  const key = JSON.stringify([p, q.get('run')]);
  const keep = keepForm;
  keepForm = false;
  if (key === lastKey) return;
  lastKey = key;
  if (!keep) setForm(form, q);
  if (filters || q.get('run') === '1') search(p);
}

// setForm shows the URL's filters in the form.
function setForm(form, q) {
  for (const el of form.elements) {
    if (!el.name) continue;
    if (el.type === 'checkbox') el.checked = q.getAll(el.name).includes(el.value);
    else el.value = q.get(el.name) || '';
  }
}

async function search(p) {
  const form = $('search-form');
  const more = $('search-more');
  const shown = [];
  more.hidden = true;
  fill($('search-results'));
  const page = async (cursor) => {
    try {
      const res = await api('/v1/evidence', { ...p, cursor });
      showError($('search-error'), null);
      markInvalid(form, '');
      shown.push(...res.records);
      fill($('search-results'), recordsTable(shown));
      more.hidden = !res.next_cursor;
      more.onclick = () => page(res.next_cursor);
    } catch (err) {
      showError($('search-error'), err);
      markInvalid(form, err.parameter);
    }
  };
  await page('');
}

// markInvalid flags the field the API named as wrong, and only that one.
function markInvalid(form, name) {
  for (const el of form.elements) {
    if (el.name === name) el.setAttribute('aria-invalid', 'true');
    else el.removeAttribute('aria-invalid');
  }
  const bad = name && form.elements[name];
  if (bad && bad.focus) bad.focus();
}
