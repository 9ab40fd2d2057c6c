// The page's state lives in its URL hash (view, window, auto-refresh, the
// open record, each view's filters and selection), so that an address
// says what the page shows and loading it shows the same again.

// params is the hash as query parameters.
export function params() { return new URLSearchParams(location.hash.slice(1)); }

// hashWith is the hash of base (the current state by default) changed by
// change: a key set to '' or null goes, an array value repeats the key.
export function hashWith(change, base = params()) {
  const q = new URLSearchParams(base);
  for (const [k, v] of Object.entries(change)) {
    q.delete(k);
    for (const one of [].concat(v ?? [])) {
      if (one !== '' && one !== undefined && one !== null) q.append(k, one);
    }
  }
  return `#${q}`;
}

// go changes the state; the page redraws on the hashchange that follows.
// replace (for typing in a filter) changes the address without a history
// entry per keystroke. go returns false when the state was already so.
export function go(change, replace = false) {
  const next = hashWith(change);
  if (next === location.hash || (next === '#' && !location.hash)) return false;
  if (replace) {
    history.replaceState(null, '', next);
    window.dispatchEvent(new HashChangeEvent('hashchange'));
  } else {
    location.hash = next;
  }
  return true;
}

// link is an anchor to a state; the hash is taken when it is followed, so
// that a state changed since it was drawn (the window) is kept.
export function stateLink(change, attrs, ...children) {
  const a = document.createElement('a');
  a.href = hashWith(change);
  for (const [k, v] of Object.entries(attrs || {})) a.setAttribute(k, v);
  a.append(...children);
  a.addEventListener('click', (ev) => { ev.preventDefault(); go(change); });
  return a;
}
