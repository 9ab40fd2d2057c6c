// The record detail: everything one evidence record says, laid out as
// definition lists, key fields marked with data-testid for the tests.

import { api, showError } from './api.js';
import { h, fill, verdictBadge, decisionText, effectiveText } from './dom.js';
import { checkInclusion } from './proof.js';
import { stateLink } from './hash.js';
import { searchChange } from './search.js';
import { workloadLabel } from './names.js';

const $ = (id) => document.getElementById(id);

// dl renders [label, value, testid] triples; a value may be a node. Empty
// values show as a dash so that a missing field is visible, not hidden.
function dl(rows) {
  return h('dl', {}, rows.filter(Boolean).map(([label, value, testid]) => [
    h('dt', {}, label),
    h('dd', { 'data-testid': testid, class: 'id' }, empty(value) ? '—' : value),
  ]));
}

function empty(v) {
  return v === undefined || v === null || v === '' || (Array.isArray(v) && !v.length);
}

const list = (a) => (a || []).join(', ');

function peer(title, p = {}, prefix) {
  const id = p.spiffe || {};
  const cert = p.certificate;
  return h('section', { class: 'peer' }, h('h3', {}, title), dl([
    ['principal', p.principal, `${prefix}-principal`],
    ['address', [p.address, p.port].filter(Boolean).join(':'), `${prefix}-address`],
    ['trust domain', id.trust_domain, `${prefix}-trust-domain`],
    ['SPIFFE path', id.path],
    ['namespace', id.namespace, `${prefix}-namespace`],
    ['service account', id.service_account, `${prefix}-service-account`],
  ]), workload(p.workload, prefix), cert ? [h('h4', {}, 'certificate'), dl([
    ['sha256', cert.sha256, `${prefix}-cert-sha256`],
    ['serial', cert.serial, `${prefix}-cert-serial`],
    ['subject', cert.subject],
    ['issuer', cert.issuer],
    ['valid', cert.not_before || cert.not_after ? `${cert.not_before || '?'} → ${cert.not_after || '?'}` : '', `${prefix}-cert-validity`],
    ['URI SANs', list(cert.uri_sans)],
    ['DNS SANs', list(cert.dns_sans)],
    cert.error && ['parse error', cert.error],
  ])] : h('p', { class: 'hint' }, 'No certificate recorded.'));
}

// workload is the Kubernetes workload the peer's address belonged to when
// the Check was recorded (serve --kubernetes), or a note that none was.
function workload(w, prefix) {
  if (!w) return h('p', { class: 'hint', 'data-testid': `${prefix}-workload-none` }, 'No Kubernetes workload recorded (the reasons say why, when serve --kubernetes ran).');
  return [h('h4', {}, 'workload'), dl([
    ['workload', workloadLabel(w), `${prefix}-workload`],
    ['pod', w.pod, `${prefix}-pod`],
    ['pod service account', w.service_account, `${prefix}-pod-service-account`],
    ['app', [w.app, w.version].filter(Boolean).join(' '), `${prefix}-app`],
    ['sidecar', w.sidecar ? 'istio-proxy' : 'none: breaks under STRICT', `${prefix}-sidecar`],
  ])];
}

function xfcc(x) {
  if (!x) return h('p', { class: 'hint', 'data-testid': 'xfcc-none' }, 'No x-forwarded-client-cert header.');
  const elements = (x.elements || []).map((e, i) => h('section', { 'data-testid': 'xfcc-element' },
    h('h4', {}, `element ${i + 1}${i === x.elements.length - 1 ? ' (this hop)' : ''}`), dl([
      ['By', list(e.by)], ['Hash', e.hash], ['Subject', e.subject], ['URI', list(e.uri), 'xfcc-uri'],
      ['DNS', list(e.dns)], ['Cert sha256', e.cert_sha256],
      ...Object.entries(e.other || {}).map(([k, v]) => [k, list(v)]),
    ])));
  return [dl([['raw', x.raw, 'xfcc-raw'], x.error && ['parse error', x.error, 'xfcc-error']]), elements];
}

// proves is one plain sentence of what the record proves, from its
// verdict and reasons (evidence.Judge's).
export function proves(r) {
  const src = r.source || {};
  const reasons = r.reasons || [];
  const has = (p) => reasons.some((x) => x === p || x.startsWith(`${p}:`));
  const who = src.principal;
  const addr = [src.address, src.port].filter(Boolean).join(':') || 'an unknown address';
  switch (r.verdict) {
    case 'mtls':
      if (has('xfcc hash matches peer certificate')) return `mTLS: the client presented ${who} and the XFCC hash matches the peer certificate.`;
      if (has('xfcc agrees with connection')) return `mTLS: the client presented ${who} and the XFCC header agrees with the connection.`;
      return `mTLS: the client presented ${who}; there was no XFCC header to cross-check.`;
    case 'mtls_mismatch':
      return `Suspect: the client presented ${who}, but the XFCC header contradicts the connection (${reasons.filter((x) => /^xfcc (invalid|.* differs)/.test(x)).join('; ')}).`;
    case 'tls_server_only':
      return `TLS without a client certificate: the server presented ${r.destination?.principal || 'a certificate'}, the client at ${addr} none, so the client is not authenticated.`;
    case 'xfcc_unverified':
      return `Unverifiable: an XFCC header arrived on a connection from ${addr} without a client certificate; any client could have written it.`;
    case 'plaintext':
      return src.workload
        ? `Plaintext: no TLS identity on either side; the client is known by its address ${addr}, which was workload ${workloadLabel(src.workload)}'s when recorded.`
        : `Plaintext: no TLS identity on either side; the client is known only by its address ${addr}.`;
  }
  return `Verdict ${r.verdict}: ${reasons.join('; ')}.`;
}

// links lead from a record to its edge and to a search for its kind of
// request (by source principal, else by source workload, else by verdict).
// The edge's client is the record's source key as the reports have it
// (evidence.SourceKey).
function links(r) {
  const src = r.source || {};
  const w = src.workload;
  const wk = w && w.namespace && w.kind && w.name && !/[/ ]/.test(w.namespace + w.kind + w.name) ? `workload:${w.namespace}/${w.kind}/${w.name}` : '';
  const id = src.spiffe || {};
  const mismatch = wk && id.namespace && id.service_account && (id.namespace !== w.namespace || id.service_account !== w.service_account);
  const client = src.principal ? (mismatch ? `${src.principal} ${wk}` : src.principal) : (wk || src.address || '');
  const host = r.request?.host || '';
  const filters = src.principal ? { source: src.principal, host }
    : w ? { source_workload: `${w.namespace}/${w.name}`, host, verdict: r.verdict } : { host, verdict: r.verdict };
  return h('p', { class: 'links' },
    stateLink({ view: 'edges', src: client, dst: host, filter: '', ns: '', status: '', record: '' }, { 'data-testid': 'record-edge' }, `its edge: ${client} → ${host}`),
    ' · ',
    stateLink(searchChange(filters), { 'data-testid': 'record-search' }, `search: ${Object.entries(filters).map(([k, v]) => `${k}=${v}`).join(' ')}`));
}

function render(r) {
  const d = r.decision || {};
  const req = r.request || {};
  return [
    h('p', { class: 'proves' }, h('span', { 'data-testid': 'proves' }, proves(r)), ' ',
      h('span', { 'data-testid': 'chain-says' }, r.chain?.version === 2
        ? 'Chain: checking…'
        : 'Chain: a hash chain, checked by meshproof verify, not in this browser.')),
    links(r),
    dl([
      ['id', r.id, 'record-id'],
      ['time', r.time, 'record-time'],
      ['verdict', verdictBadge(r.verdict), 'verdict'],
      ['request', [req.method, req.host, req.path, req.protocol].filter(Boolean).join(' '), 'request'],
      ['request id', r.request_id, 'request-id'],
      ['trace id', r.trace_id],
      ['stream id', r.stream_id],
      ['replica', r.replica, 'replica'],
      ['TLS SNI', r.tls?.sni],
      r.truncated && ['truncated', 'some fields were cut to size limits'],
    ]),
    h('h3', {}, 'reasons'),
    h('ul', { 'data-testid': 'reasons' }, (r.reasons || []).map((s) => h('li', {}, s))),
    h('div', { class: 'peers' }, peer('source', r.source, 'source'), peer('destination', r.destination, 'destination')),
    h('h3', {}, 'XFCC'), xfcc(r.xfcc),
    h('h3', {}, 'decision'), dl([
      r.effective && ['actually sent', `${effectiveText(r.effective)} by ${r.effective.amended_by}`, 'decision-effective'],
      r.effective && ['why', r.effective.error, 'decision-effective-error'],
      r.amends && ['amends', r.amends.id, 'amends'],
      [r.effective ? 'recorded outcome' : 'outcome', decisionText(d), 'decision'],
      ['policy said', d.allowed ? 'allow' : 'deny', 'decision-allowed'],
      ['HTTP status', d.http_status ? String(d.http_status) : ''],
      ['decision id', d.decision_id, 'decision-id'],
      ['policy revision', d.policy_revision],
      ['reason', d.reason, 'decision-reason'],
      ['error', d.error, 'decision-error'],
    ]),
    r.headers && [h('h3', {}, 'headers'), dl(Object.entries(r.headers).sort().map(([k, v]) => [k, v]))],
    h('h3', {}, r.chain?.version === 2 ? 'transparency log' : 'hash chain'), dl([
      ['seq', String(r.chain?.seq ?? ''), 'chain-seq'],
      r.chain?.version !== 2 && ['prev_hash', r.chain?.prev_hash, 'chain-prev-hash'],
      [r.chain?.version === 2 ? 'leaf hash' : 'hash', r.chain?.hash, 'chain-hash'],
      r.chain?.version === 2 && ['proof', h('span', { 'data-testid': 'proof-status' }, 'checking…')],
    ]),
  ];
}

// proofStatus fetches the record's proof and checks it here; it says what
// it found in the detail's proof-status element.
async function proofStatus(r) {
  const el = document.querySelector('#detail [data-testid=proof-status]');
  const says = document.querySelector('#detail [data-testid=chain-says]');
  if (!el) return;
  let text;
  let summary;
  try {
    const p = await api(`/v1/evidence/${encodeURIComponent(r.id)}/proof`);
    const c = await checkInclusion(p);
    text = c.ok
      ? `verified in this browser: leaf ${p.leaf_index} of ${c.origin}, in its latest signed checkpoint of ${c.size} leaves (check the signature with meshproof verify-proof --public-key)`
      : `FAILS: ${c.why}`;
    summary = c.ok ? 'Chain verified.' : `Chain NOT verified: ${c.why}.`;
    el.dataset.verified = String(c.ok);
  } catch (err) {
    text = err.status === 404 ? err.message : `could not be checked: ${err.message}`;
    summary = `Chain not verified: ${text}.`;
    el.dataset.verified = 'unknown';
  }
  el.textContent = text;
  if (says) {
    says.textContent = summary;
    says.dataset.verified = el.dataset.verified;
  }
}

let shownID = '';

// showRecord opens the detail panel on id, or closes it when id is empty.
export async function showRecord(id) {
  const panel = $('detail');
  panel.hidden = !id;
  if (!id || id === shownID) return;
  shownID = id;
  $('detail-title').textContent = `Record ${id}`;
  fill($('detail-body'));
  try {
    const r = await api(`/v1/evidence/${encodeURIComponent(id)}`);
    showError($('detail-error'), null);
    fill($('detail-body'), render(r));
    panel.scrollIntoView({ block: 'start' });
    if (r.chain?.version === 2) proofStatus(r);
  } catch (err) {
    shownID = '';
    showError($('detail-error'), err);
  }
}
