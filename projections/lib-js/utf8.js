// UTF-8 without TextEncoder/TextDecoder (the QuickJS engine has neither).

const REPLACEMENT = 0xfffd;

/// The UTF-8 bytes of `text`. A lone surrogate becomes U+FFFD, as with
/// TextEncoder.
export function utf8Encode(text) {
  const n = text.length;
  // ASCII (most JSON) in one pass; the rest from the first other character.
  const ascii = new Uint8Array(n);
  let i = 0;
  for (; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c > 0x7f) break;
    ascii[i] = c;
  }
  if (i === n) return ascii;
  const out = new Uint8Array(n * 3);
  out.set(ascii.subarray(0, i));
  let len = i;
  for (; i < n; i++) {
    let c = text.charCodeAt(i);
    if (c < 0x80) {
      out[len++] = c;
      continue;
    }
    if (c < 0x800) {
      out[len++] = 0xc0 | (c >> 6);
      out[len++] = 0x80 | (c & 0x3f);
      continue;
    }
    if (c >= 0xd800 && c <= 0xdfff) {
      const next = i + 1 < n ? text.charCodeAt(i + 1) : 0;
      if (c <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (next - 0xdc00);
        i++;
        out[len++] = 0xf0 | (c >> 18);
        out[len++] = 0x80 | ((c >> 12) & 0x3f);
        out[len++] = 0x80 | ((c >> 6) & 0x3f);
        out[len++] = 0x80 | (c & 0x3f);
        continue;
      }
      c = REPLACEMENT;
    }
    out[len++] = 0xe0 | (c >> 12);
    out[len++] = 0x80 | ((c >> 6) & 0x3f);
    out[len++] = 0x80 | (c & 0x3f);
  }
  return out.slice(0, len);
}

/// The text of UTF-8 `bytes` (a Uint8Array or an array of numbers). Invalid
/// sequences become U+FFFD, as with TextDecoder, unless `fatal` is true, in
/// which case they throw a TypeError.
export function utf8Decode(bytes, fatal = false) {
  const n = bytes.length;
  const units = [];
  let text = "";
  const bad = (at) => {
    if (fatal) throw new TypeError(`invalid UTF-8 at byte ${at}`);
    units.push(REPLACEMENT);
  };
  let i = 0;
  while (i < n) {
    const b = bytes[i];
    if (b < 0x80) {
      units.push(b);
      i++;
    } else {
      // Length and the allowed range of the second byte (WHATWG Encoding).
      let need = 0;
      let lo = 0x80;
      let hi = 0xbf;
      let c = 0;
      if (b >= 0xc2 && b <= 0xdf) {
        need = 1;
        c = b & 0x1f;
      } else if (b >= 0xe0 && b <= 0xef) {
        need = 2;
        c = b & 0x0f;
        if (b === 0xe0) lo = 0xa0;
        if (b === 0xed) hi = 0x9f;
      } else if (b >= 0xf0 && b <= 0xf4) {
        need = 3;
        c = b & 0x07;
        if (b === 0xf0) lo = 0x90;
        if (b === 0xf4) hi = 0x8f;
      } else {
        bad(i);
        i++;
        continue;
      }
      let j = i + 1;
      let ok = true;
      for (let k = 0; k < need; k++, j++) {
        const next = j < n ? bytes[j] : -1;
        if (next < lo || next > hi) {
          ok = false;
          break;
        }
        lo = 0x80;
        hi = 0xbf;
        c = (c << 6) | (next & 0x3f);
      }
      if (!ok) {
        // Maximal subpart: skip the bytes that were valid so far.
        bad(i);
        i = j;
        continue;
      }
      if (c >= 0x10000) {
        c -= 0x10000;
        units.push(0xd800 + (c >> 10), 0xdc00 + (c & 0x3ff));
      } else {
        units.push(c);
      }
      i = j;
    }
    if (units.length >= 4096) {
      text += String.fromCharCode.apply(null, units);
      units.length = 0;
    }
  }
  return text + String.fromCharCode.apply(null, units);
}
