// The query API client: bearer token from sessionStorage, a token prompt on
// 401, and API errors turned into exceptions that say what the API said.

const tokenKey = 'meshproof.token';
// The API lives beside /ui/, so a reverse proxy may mount both under a prefix.
const base = new URL('../', document.baseURI);

// APIError carries the API's JSON error and the parameter it names.
export class APIError extends Error {
  constructor(status, body) {
    super(body.error || `HTTP ${status}`);
    this.status = status;
    this.parameter = body.parameter || '';
  }
}

export function token() { return sessionStorage.getItem(tokenKey) || ''; }

export function forgetToken() {
  sessionStorage.removeItem(tokenKey);
  showForget();
}

function showForget() { document.getElementById('forget-token').hidden = !token(); }

// api GETs path with params (an object; array values repeat the parameter;
// empty values are left out) and returns the decoded JSON. On 401 it asks
// for a token and tries again.
export async function api(path, params = {}) {
  const url = new URL(path.replace(/^\//, ''), base);
  for (const [k, v] of Object.entries(params)) {
    for (const one of [].concat(v)) {
      if (one !== '' && one !== undefined && one !== null) url.searchParams.append(k, one);
    }
  }
  for (let rejected = false; ; rejected = true) {
    const headers = { Accept: 'application/json' };
    if (token()) headers.Authorization = `Bearer ${token()}`;
    const resp = await fetch(url, { headers });
    if (resp.status === 401) {
      await askToken(rejected || token() !== '');
      continue;
    }
    let body;
    try {
      body = await resp.json();
    } catch {
      body = { error: `HTTP ${resp.status}: the answer is not JSON` };
    }
    if (!resp.ok) throw new APIError(resp.status, body);
    return body;
  }
}

// One prompt at a time: every request that meets a 401 waits for it.
let pending = null;

function askToken(rejected) {
  if (pending) return pending;
  const form = document.getElementById('token-form');
  const input = document.getElementById('token');
  document.getElementById('token-message').textContent = rejected
    ? 'The API did not accept that token. Enter another one.'
    : 'The API asks for a bearer token (one of the lines of --api-token-file).';
  form.hidden = false;
  input.value = '';
  input.focus();
  pending = new Promise((resolve) => {
    form.onsubmit = (ev) => {
      ev.preventDefault();
      sessionStorage.setItem(tokenKey, input.value.trim());
      form.hidden = true;
      pending = null;
      showForget();
      resolve();
    };
  });
  return pending;
}

// showError fills an error box with the API's message and the parameter it
// names, or hides the box when err is null.
export function showError(box, err) {
  box.hidden = !err;
  box.textContent = '';
  if (!err) return;
  const where = err.status ? `API error ${err.status}` : 'Error';
  box.textContent = `${where}: ${err.message}`;
  if (err.parameter) box.textContent += ` (parameter: ${err.parameter})`;
}

showForget();
