// A record's transparency-log proof, checked in the browser: the leaf
// hash of its canonical bytes, and the RFC 6962 inclusion path up to the
// root of the signed checkpoint the API sends with it (RFC 9162, 2.1.3.2).
// The checkpoint's signature is not checked here: meshproof verify-proof
// --public-key does that, with no server at all.

const b64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));

async function sha256(...parts) {
  const n = parts.reduce((a, p) => a + p.length, 0);
  const buf = new Uint8Array(n);
  let off = 0;
  for (const p of parts) { buf.set(p, off); off += p.length; }
  return new Uint8Array(await crypto.subtle.digest('SHA-256', buf));
}

const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

// checkInclusion returns {ok, size, origin} or {ok: false, why}.
export async function checkInclusion(p) {
  const lines = p.checkpoint.split('\n');
  if (lines.length < 4) return { ok: false, why: 'the checkpoint is not a C2SP checkpoint' };
  const [origin, sizeText, rootText] = lines;
  if (Number(sizeText) !== p.tree_size) return { ok: false, why: `the checkpoint is of ${sizeText} leaves, the proof of ${p.tree_size}` };
  let fn = p.leaf_index;
  let sn = p.tree_size - 1;
  if (fn > sn) return { ok: false, why: 'the leaf is past the tree' };
  let r = await sha256(new Uint8Array([0]), b64(p.leaf));
  for (const s of p.proof) {
    if (sn === 0) return { ok: false, why: 'the path is too long' };
    const sib = b64(s);
    if (fn % 2 === 1 || fn === sn) {
      r = await sha256(new Uint8Array([1]), sib, r);
      if (fn % 2 === 0) while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
    } else {
      r = await sha256(new Uint8Array([1]), r, sib);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  if (sn !== 0 || !same(r, b64(rootText))) return { ok: false, why: 'the path does not lead to the checkpoint\'s root' };
  return { ok: true, size: p.tree_size, origin };
}
