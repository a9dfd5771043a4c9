// JSON text as serde_json writes it, for output that must match the Rust
// projections byte for byte.
//
// JavaScript numbers do not say whether they are integers or floats; serde_json
// does, and writes a float that happens to be whole as `30.0`. So:
// - `parse` keeps that distinction: a number token with `.`, `e` or `E` (or an
//   integer too large for 64 bits) becomes a `Float`, other integers a number
//   (a BigInt beyond 2^53);
// - `stringify` writes a `Float` (see `float`) the way serde_json writes an
//   f64, a whole number as an integer, and any other number as a float;
// - `{ sortKeys: true }` orders object keys as serde_json's default map does
//   (a BTreeMap: by code point), which is what the Rust SDK's query results,
//   `Rows::to_json` and parsed `serde_json::Value`s print in.
// Strings are escaped as by JSON.stringify, which serde_json matches for
// well-formed text.

/// A number serde_json holds as an f64.
export class Float {
  constructor(value) {
    this.value = value;
  }
}

/// Mark `x` to be written as a float (`30` → `30.0`).
export function float(x) {
  return new Float(Number(x));
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const U64_MAX = (1n << 64n) - 1n;
const I32_MAX = 2147483647;

/// The f64 serde_json 1.0.154 (without its `float_roundtrip` feature) reads
/// from the number token `token`: the decimal significand (at most 64 bits;
/// digits beyond are dropped) as an f64, then multiplied or divided by a power
/// of ten. That is not always the correctly rounded value JSON.parse gives:
/// the two differ by an ulp for some significands above 2^53. Throws a
/// RangeError where serde_json reports "number out of range".
export function serdeF64(token) {
  let i = 0;
  let positive = true;
  if (token[i] === "-") {
    positive = false;
    i++;
  }
  const isDigit = () => i < token.length && token.charCodeAt(i) >= 48 && token.charCodeAt(i) <= 57;
  const digit = () => token.charCodeAt(i) - 48;
  let significand = 0n;
  let exponent = 0;
  let isFloat = false;
  if (token[i] === "0") {
    i++;
  } else {
    significand = BigInt(digit());
    i++;
    while (isDigit()) {
      const d = BigInt(digit());
      if (significand * 10n + d > U64_MAX) {
        // parse_long_integer: the remaining integer digits only scale.
        isFloat = true;
        while (isDigit()) {
          i++;
          exponent++;
        }
        break;
      }
      significand = significand * 10n + d;
      i++;
    }
  }
  if (token[i] === ".") {
    isFloat = true;
    i++;
    while (isDigit()) {
      const d = BigInt(digit());
      if (significand * 10n + d > U64_MAX) {
        // parse_decimal_overflow: the remaining fraction digits are dropped.
        while (isDigit()) i++;
        break;
      }
      significand = significand * 10n + d;
      i++;
      exponent--;
    }
  }
  if (token[i] === "e" || token[i] === "E") {
    isFloat = true;
    i++;
    let positiveExp = true;
    if (token[i] === "+") i++;
    else if (token[i] === "-") {
      positiveExp = false;
      i++;
    }
    let exp = digit();
    i++;
    while (isDigit()) {
      if (exp > (I32_MAX - digit()) / 10) {
        // parse_exponent_overflow
        if (significand !== 0n && positiveExp) throw new RangeError("number out of range");
        return positive ? 0 : -0;
      }
      exp = exp * 10 + digit();
      i++;
    }
    // i32 saturating add/sub
    exponent = Math.max(-2147483648, Math.min(I32_MAX, positiveExp ? exponent + exp : exponent - exp));
  }
  if (!isFloat) {
    // An integer token: u64, or i64 when negative, else an f64 (`-0` too).
    const f = Number(significand);
    return positive ? f : -f;
  }
  // f64_from_parts
  let f = Number(significand); // rounds to nearest, as `u64 as f64`
  for (;;) {
    const index = Math.abs(exponent);
    if (index <= 308) {
      const pow = Number(`1e${index}`);
      if (exponent >= 0) {
        f *= pow;
        if (!Number.isFinite(f)) throw new RangeError("number out of range");
      } else {
        f /= pow;
      }
      break;
    }
    if (f === 0) break;
    if (exponent >= 0) throw new RangeError("number out of range");
    f /= 1e308;
    exponent += 308;
  }
  return positive ? f : -f;
}

/// An f64 as serde_json 1.0.154 writes it (via zmij): shortest round-trip
/// digits; plain notation for decimal exponents -5 to 15 (always with a
/// fraction: `1.0`, `100.0`), else `1.5e+16` / `1e-7`; non-finite as `null`.
export function formatFloat(x) {
  if (!Number.isFinite(x)) return "null";
  if (x === 0) return Object.is(x, -0) ? "-0.0" : "0.0";
  const negative = x < 0;
  const text = String(negative ? -x : x); // shortest round-trip digits
  let mantissa = text;
  let shift = 0;
  const e = text.indexOf("e");
  if (e >= 0) {
    mantissa = text.slice(0, e);
    shift = Number(text.slice(e + 1));
  }
  const dot = mantissa.indexOf(".");
  const whole = dot >= 0 ? mantissa.slice(0, dot) : mantissa;
  let digits = dot >= 0 ? whole + mantissa.slice(dot + 1) : whole;
  let point = whole.length + shift; // digits before the decimal point
  let lead = 0;
  while (lead < digits.length - 1 && digits[lead] === "0") lead++;
  digits = digits.slice(lead);
  point -= lead;
  let end = digits.length;
  while (end > 1 && digits[end - 1] === "0") end--;
  digits = digits.slice(0, end);
  const exp = point - 1; // decimal exponent of the first digit
  let out;
  if (exp >= -5 && exp <= 15) {
    if (digits.length - 1 <= exp) out = digits + "0".repeat(exp + 1 - digits.length) + ".0";
    else if (exp >= 0) out = digits.slice(0, exp + 1) + "." + digits.slice(exp + 1);
    else out = "0." + "0".repeat(-exp - 1) + digits;
  } else {
    out = digits[0] + (digits.length > 1 ? "." + digits.slice(1) : "") + "e" + (exp < 0 ? "-" : "+") + Math.abs(exp);
  }
  return negative ? "-" + out : out;
}

/// Order of keys in serde_json's default (BTreeMap) objects: by code point.
export function compareKeys(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    // Surrogates (U+10000 and up) sort after every other code unit.
    if (x >= 0xd800 && x <= 0xdfff) x += 0x10000;
    if (y >= 0xd800 && y <= 0xdfff) y += 0x10000;
    return x - y;
  }
  return a.length - b.length;
}

/// Compact JSON text of `value` as serde_json would write it.
/// `sortKeys`: order object keys as serde_json's default map does.
export function stringify(value, { sortKeys = false } = {}) {
  const parts = [];
  write(value, parts, sortKeys);
  return parts.join("");
}

function write(value, parts, sortKeys) {
  if (value === null || value === undefined) {
    parts.push("null");
    return;
  }
  switch (typeof value) {
    case "boolean":
      parts.push(value ? "true" : "false");
      return;
    case "string":
      parts.push(JSON.stringify(value));
      return;
    case "bigint":
      parts.push(value.toString());
      return;
    case "number":
      if (Number.isSafeInteger(value)) parts.push(String(Object.is(value, -0) ? 0 : value));
      else parts.push(formatFloat(value));
      return;
  }
  if (value instanceof Float) {
    parts.push(formatFloat(value.value));
    return;
  }
  if (Array.isArray(value) || value instanceof Uint8Array) {
    parts.push("[");
    for (let i = 0; i < value.length; i++) {
      if (i > 0) parts.push(",");
      write(value[i], parts, sortKeys);
    }
    parts.push("]");
    return;
  }
  if (typeof value.toJSON === "function") {
    write(value.toJSON(), parts, sortKeys);
    return;
  }
  const keys = Object.keys(value).filter((k) => value[k] !== undefined && typeof value[k] !== "function");
  if (sortKeys) keys.sort(compareKeys);
  parts.push("{");
  keys.forEach((key, i) => {
    if (i > 0) parts.push(",");
    parts.push(JSON.stringify(key), ":");
    write(value[key], parts, sortKeys);
  });
  parts.push("}");
}

/// Parse JSON text into values `stringify` writes back as serde_json would:
/// floats as `Float` (with serde_json's f64 value, see `serdeF64`), integers as numbers (BigInt beyond 2^53), objects
/// without a prototype (so any key is safe; a repeated key keeps its last
/// value). Throws a SyntaxError that names the line and column.
export function parse(text) {
  let pos = 0;
  const fail = (what) => {
    let line = 1;
    let column = 1;
    for (let i = 0; i < pos && i < text.length; i++) {
      if (text[i] === "\n") {
        line++;
        column = 1;
      } else {
        column++;
      }
    }
    throw new SyntaxError(`${what} at line ${line} column ${column}`);
  };
  const ws = () => {
    while (pos < text.length) {
      const c = text[pos];
      if (c === " " || c === "\t" || c === "\n" || c === "\r") pos++;
      else break;
    }
  };
  const literal = (word, value) => {
    if (text.startsWith(word, pos)) {
      pos += word.length;
      return value;
    }
    fail("expected value");
  };
  const number = () => {
    const start = pos;
    if (text[pos] === "-") pos++;
    if (text[pos] === "0") pos++;
    else if (text[pos] >= "1" && text[pos] <= "9") while (text[pos] >= "0" && text[pos] <= "9") pos++;
    else fail("invalid number");
    let isFloat = false;
    if (text[pos] === ".") {
      isFloat = true;
      pos++;
      if (!(text[pos] >= "0" && text[pos] <= "9")) fail("invalid number");
      while (text[pos] >= "0" && text[pos] <= "9") pos++;
    }
    if (text[pos] === "e" || text[pos] === "E") {
      isFloat = true;
      pos++;
      if (text[pos] === "+" || text[pos] === "-") pos++;
      if (!(text[pos] >= "0" && text[pos] <= "9")) fail("invalid number");
      while (text[pos] >= "0" && text[pos] <= "9") pos++;
    }
    const token = text.slice(start, pos);
    const toFloat = () => {
      try {
        return new Float(serdeF64(token));
      } catch (e) {
        pos = start;
        fail(e.message);
      }
    };
    if (isFloat) return toFloat();
    const big = BigInt(token);
    if (big === 0n && token[0] === "-") return new Float(-0); // serde_json: `-0` is an f64
    if (big >= -MAX_SAFE && big <= MAX_SAFE) return Number(big);
    // serde_json: u64 or i64 if it fits, else an f64.
    if (big >= -(1n << 63n) && big < 1n << 64n) return big;
    return toFloat();
  };
  const string = () => {
    pos++; // opening quote
    let out = "";
    let start = pos;
    for (;;) {
      if (pos >= text.length) fail("EOF while parsing a string");
      const c = text.charCodeAt(pos);
      if (c === 0x22) {
        out += text.slice(start, pos);
        pos++;
        return out;
      }
      if (c < 0x20) fail("control character (\\u0000-\\u001F) found while parsing a string");
      if (c === 0x5c) {
        out += text.slice(start, pos);
        const e = text[pos + 1];
        pos += 2;
        switch (e) {
          case '"': out += '"'; break;
          case "\\": out += "\\"; break;
          case "/": out += "/"; break;
          case "b": out += "\b"; break;
          case "f": out += "\f"; break;
          case "n": out += "\n"; break;
          case "r": out += "\r"; break;
          case "t": out += "\t"; break;
          case "u": {
            const hex = text.slice(pos, pos + 4);
            if (!/^[0-9a-fA-F]{4}$/.test(hex)) fail("invalid escape");
            out += String.fromCharCode(parseInt(hex, 16));
            pos += 4;
            break;
          }
          default:
            pos -= 1;
            fail("invalid escape");
        }
        start = pos;
      } else {
        pos++;
      }
    }
  };
  const value = () => {
    ws();
    if (pos >= text.length) fail("EOF while parsing a value");
    const c = text[pos];
    if (c === "{") {
      pos++;
      const obj = Object.create(null);
      ws();
      if (text[pos] === "}") {
        pos++;
        return obj;
      }
      for (;;) {
        ws();
        if (text[pos] !== '"') fail("key must be a string");
        const key = string();
        ws();
        if (text[pos] !== ":") fail("expected `:`");
        pos++;
        obj[key] = value();
        ws();
        if (text[pos] === ",") {
          pos++;
          continue;
        }
        if (text[pos] === "}") {
          pos++;
          return obj;
        }
        fail("expected `,` or `}`");
      }
    }
    if (c === "[") {
      pos++;
      const arr = [];
      ws();
      if (text[pos] === "]") {
        pos++;
        return arr;
      }
      for (;;) {
        arr.push(value());
        ws();
        if (text[pos] === ",") {
          pos++;
          continue;
        }
        if (text[pos] === "]") {
          pos++;
          return arr;
        }
        fail("expected `,` or `]`");
      }
    }
    if (c === '"') return string();
    if (c === "t") return literal("true", true);
    if (c === "f") return literal("false", false);
    if (c === "n") return literal("null", null);
    if (c === "-" || (c >= "0" && c <= "9")) return number();
    fail("expected value");
  };
  const result = value();
  ws();
  if (pos < text.length) fail("trailing characters");
  return result;
}

/// Why `text` is not JSON, in serde_json's words and position ("invalid number
/// at line 1 column 42"), or null if it is JSON. For error messages that
/// should read like the Rust projections'; parse with JSON.parse first, which
/// is much faster.
export function syntaxError(text) {
  try {
    parse(text);
    return null;
  } catch (e) {
    return e.message;
  }
}
