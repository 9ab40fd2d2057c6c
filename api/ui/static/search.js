// The evidence search form: the API's filters, a results table, and "more"
// pages through next_cursor.

import { api, showError } from './api.js';
import { fill, recordsTable } from './dom.js';

const $ = (id) => document.getElementById(id);
const pageSize = 50;

// setupSearch wires the form; windowSince gives the selected window, used
// when the form's since is empty.
export function setupSearch(windowSince) {
  const form = $('search-form');
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    search(params(form, windowSince()));
  });
  form.addEventListener('reset', () => {
    fill($('search-results'));
    showError($('search-error'), null);
    $('search-more').hidden = true;
    markInvalid(form, '');
  });
}

// params reads the form as API query parameters: every non-empty field,
// verdict once per ticked box.
function params(form, since) {
  const p = { limit: pageSize };
  for (const [k, v] of new FormData(form)) {
    if (v === '') continue;
    if (k === 'verdict') (p.verdict ||= []).push(v);
    else p[k] = v.trim();
  }
  p.since ||= since;
  return p;
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
