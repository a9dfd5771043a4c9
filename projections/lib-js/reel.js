// A small helper for writing reel projections in JavaScript, over the raw
// bindings of the `reel:projection` world (see ../../wit/projection.wit) as
// componentize-qjs maps them:
// - records are objects with camelCase fields (`streamId`, `occurredAt`, ...);
// - variants are `{ tag, val }`, enums are strings (`"stop"`, `"info"`);
// - s64 is a plain JS number (exact up to 2^53; a BigInt traps);
// - list<u8> is a Uint8Array; option<T> is the value or null;
// - an exported function's result<_, E> error is a thrown E (any other thrown
//   value traps); an import's result error is thrown as an Error whose
//   `payload` is the E.
//
// `defineProjection` builds the four exports from a plain description and
// turns thrown errors into the world's `error` variant.

import kvApi from "reel:projection/kv@0.1.1";
import sqlApi from "reel:projection/sql@0.1.1";
import logApi from "reel:projection/log@0.1.1";

import * as json from "./json.js";
import { utf8Decode, utf8Encode } from "./utf8.js";

export { json, utf8Decode, utf8Encode };

// ---------------------------------------------------------------------------
// Errors

/// An error reported to reel: `kind` is `invalid-event` or `failed`.
export class ReelError extends Error {
  constructor(kind, message) {
    super(message);
    this.name = "ReelError";
    this.kind = kind;
  }
}

/// The event's payload is not what the projection expects.
export function invalidEvent(message) {
  return new ReelError("invalid-event", message);
}

/// Anything else that went wrong.
export function failed(message) {
  return new ReelError("failed", message);
}

/// Where an error was thrown, from its stack: the first frame outside this
/// helper, as `src/index.js:42:17 in handle` (QuickJS names files from the
/// module root), or null when the stack has none.
export function thrownAt(e) {
  const stack = e && typeof e.stack === "string" ? e.stack : "";
  let first = null;
  for (const line of stack.split("\n")) {
    const frame = /^\s*at (?:(.*?) \()?\/?(.+?:\d+(?::\d+)?)\)?\s*$/.exec(line);
    if (!frame) continue;
    const place = frame[1] && frame[1] !== "<anonymous>" ? `${frame[2]} in ${frame[1]}` : frame[2];
    if (!/(^|\/)lib-js\/(reel|json|utf8)\.js:/.test(frame[2])) return place;
    first ??= place;
  }
  return first;
}

/// The world's `error` variant for anything thrown. An error the code did not
/// mean to throw (a TypeError, ...) says where it was thrown, and its whole
/// stack goes to reel's log.
function toWitError(e) {
  if (e instanceof ReelError) return { tag: e.kind, val: e.message };
  if (e && typeof e === "object" && (e.tag === "invalid-event" || e.tag === "failed") && typeof e.val === "string") {
    return { tag: e.tag, val: e.val };
  }
  if (e instanceof Error) {
    const message = e.name && e.name !== "Error" ? `${e.name}: ${e.message}` : e.message;
    const at = thrownAt(e);
    // QuickJS's stack is the frames alone; V8's starts with the message.
    if (e.stack) logApi.log("error", /^\s*at /.test(e.stack) ? `${message}\n${e.stack}` : e.stack);
    return { tag: "failed", val: at ? `${message} (at ${at})` : message };
  }
  return { tag: "failed", val: String(e) };
}

// ---------------------------------------------------------------------------
// Log

function logAt(level) {
  return (message) => logApi.log(level, String(message));
}

/// Lines in reel's log, tagged with the projection's name.
export const log = {
  trace: logAt("trace"),
  debug: logAt("debug"),
  info: logAt("info"),
  warn: logAt("warn"),
  error: logAt("error"),
};

// The engine has no `console`; give it one that writes to reel's log, so
// `console.log` in projection code (or a library) works instead of throwing.
if (typeof globalThis.console === "undefined") {
  const line = (args) =>
    args
      .map((a) => {
        if (typeof a === "string") return a;
        try {
          return JSON.stringify(a) ?? String(a);
        } catch {
          return String(a);
        }
      })
      .join(" ");
  const at = (write) => (...args) => write(line(args));
  globalThis.console = {
    log: at(log.info),
    info: at(log.info),
    debug: at(log.debug),
    trace: at(log.trace),
    warn: at(log.warn),
    error: at(log.error),
  };
}

// ---------------------------------------------------------------------------
// Key-value store

function checkKey(key) {
  if (typeof key !== "string") throw new TypeError(`kv key must be a string, got ${typeof key}`);
  return key;
}

function toBytes(value) {
  if (value instanceof Uint8Array) return value;
  if (typeof value === "string") return utf8Encode(value);
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  throw new TypeError("kv value must be a Uint8Array or a string");
}

/// The projection's key-value store (inside the batch transaction).
export const kv = {
  /// The bytes under `key` (a Uint8Array), or null.
  get(key) {
    return kvApi.get(checkKey(key)) ?? null;
  },
  /// The UTF-8 text under `key`, or null.
  getString(key) {
    const bytes = kvApi.get(checkKey(key));
    return bytes == null ? null : utf8Decode(bytes);
  },
  /// The JSON value under `key` (JSON.parse), or null when absent.
  getJson(key) {
    const text = kv.getString(key);
    if (text === null) return null;
    try {
      return JSON.parse(text);
    } catch (e) {
      throw failed(`kv value of \`${key}\` is not the expected JSON: ${json.syntaxError(text) ?? e.message}`);
    }
  },
  /// Store bytes, or a string as UTF-8.
  set(key, value) {
    kvApi.set(checkKey(key), toBytes(value));
  },
  /// Store `value` as JSON text (JSON.stringify).
  setJson(key, value) {
    kvApi.set(checkKey(key), utf8Encode(JSON.stringify(value)));
  },
  /// Remove `key` (no-op if absent).
  delete(key) {
    kvApi.delete(checkKey(key));
  },
  /// Up to `limit` entries `{ key, value }` (value: Uint8Array) whose key
  /// starts with `prefix`, in key byte order, strictly after `after`.
  scan(prefix, { after = null, limit = 100 } = {}) {
    if (!Number.isInteger(limit) || limit < 0 || limit > 0xffffffff) throw new RangeError("limit must be a u32");
    return kvApi.scan(checkKey(prefix), after === null ? null : checkKey(after), limit);
  },
};

// ---------------------------------------------------------------------------
// SQL

const NULL = Object.freeze({ tag: "null" });

function checkInteger(n) {
  if (typeof n === "bigint") {
    if (n < BigInt(Number.MIN_SAFE_INTEGER) || n > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new RangeError(`integer ${n} is beyond 2^53, which the QuickJS bindings cannot pass exactly`);
    }
    return Number(n);
  }
  if (typeof n === "boolean") return n ? 1 : 0;
  if (!Number.isSafeInteger(n)) throw new RangeError(`${n} is not an integer within 2^53`);
  return n;
}

/// Typed SQL values: use them where a plain JS value is ambiguous, above all
/// `real(x)` for a float column, since a whole number (`100`) would otherwise
/// be sent as an integer.
export const value = {
  null: NULL,
  integer: (n) => ({ tag: "integer", val: checkInteger(n) }),
  real: (x) => ({ tag: "real", val: Number(x) }),
  text: (s) => ({ tag: "text", val: String(s) }),
  blob: (b) => ({ tag: "blob", val: toBytes(b) }),
};

const TAGS = new Set(["null", "integer", "real", "text", "blob"]);

/// A parameter as the world's `value` variant. Plain values: null/undefined →
/// null, string → text, boolean → integer 0/1, bigint → integer, number →
/// integer when it is a whole number within 2^53 and real otherwise,
/// Uint8Array → blob. Tagged values (from `value`) pass through.
export function toValue(v) {
  if (v === null || v === undefined) return NULL;
  switch (typeof v) {
    case "string":
      return { tag: "text", val: v };
    case "number":
      return Number.isSafeInteger(v) ? { tag: "integer", val: v } : { tag: "real", val: v };
    case "boolean":
    case "bigint":
      return { tag: "integer", val: checkInteger(v) };
  }
  if (v instanceof Uint8Array) return { tag: "blob", val: v };
  if (typeof v === "object" && TAGS.has(v.tag)) {
    if (v.tag === "null") return NULL;
    if (v.tag === "integer") return { tag: "integer", val: checkInteger(v.val) };
    if (v.tag === "real") return { tag: "real", val: Number(v.val) };
    if (v.tag === "text") return { tag: "text", val: String(v.val) };
    return { tag: "blob", val: toBytes(v.val) };
  }
  throw new TypeError(`cannot pass ${Object.prototype.toString.call(v)} as an SQL value`);
}

function toParams(params) {
  if (!Array.isArray(params)) throw new TypeError("SQL parameters must be an array");
  return params.map(toValue);
}

/// A column value as a plain JS value: integer and real → number, text →
/// string, blob → Uint8Array, null → null.
export function fromValue(v) {
  return v.tag === "null" ? null : v.val;
}

/// The rows of a query: `columns` (names) and `rows` (arrays of tagged values).
export class Rows {
  constructor(raw) {
    this.columns = raw.columns;
    this.rows = raw.rows;
  }
  get length() {
    return this.rows.length;
  }
  /// Rows as objects keyed by column name, with plain values.
  objects() {
    const columns = this.columns;
    return this.rows.map((row) => {
      const object = {};
      for (let i = 0; i < columns.length; i++) object[columns[i]] = fromValue(row[i]);
      return object;
    });
  }
  /// The first row as an object, or null.
  first() {
    if (this.rows.length === 0) return null;
    const object = {};
    this.columns.forEach((column, i) => (object[column] = fromValue(this.rows[0][i])));
    return object;
  }
  /// The rows as JSON text exactly as the Rust SDK's `rows.to_json()` prints:
  /// objects with keys in code point order, reals as f64 (`12.0`;
  /// non-finite as null), blobs as arrays of bytes.
  toJson() {
    const columns = this.columns;
    return json.stringify(
      this.rows.map((row) => {
        const object = {};
        for (let i = 0; i < columns.length; i++) {
          const v = row[i];
          object[columns[i]] = v.tag === "real" ? json.float(v.val) : fromValue(v);
        }
        return object;
      }),
      { sortKeys: true },
    );
  }
}

/// SQL in the projection's namespace (inside the batch transaction).
/// Placeholders are `$1`, `$2`, ...
export const sql = {
  /// Which database the namespace lives in: "sqlite" or "postgres".
  dialect() {
    return sqlApi.dialect();
  },
  /// Run a statement whose rows are not needed. The host may defer it: an
  /// error fails the batch at the next `query` or at the end.
  execute(statement, params = []) {
    sqlApi.execute(String(statement), toParams(params));
  },
  /// Run a query and return its `Rows`. An SQL error is thrown as
  /// `failed("SQL error CODE: message")` (with `.sqlError` = { code, message });
  /// the batch fails either way.
  query(statement, params = []) {
    try {
      return new Rows(sqlApi.query(String(statement), toParams(params)));
    } catch (e) {
      const payload = e && e.payload;
      if (payload && typeof payload.code === "string") {
        const error = failed(`SQL error ${payload.code}: ${payload.message}`);
        error.sqlError = payload;
        throw error;
      }
      throw e;
    }
  },
};

// ---------------------------------------------------------------------------
// Event payloads: serde-like checks with serde-like messages

/// How serde names an unexpected JSON value in "invalid type" messages.
function unexpected(v) {
  if (v === null) return "null";
  switch (typeof v) {
    case "boolean":
      return `boolean \`${v}\``;
    case "number":
      return Number.isInteger(v) ? `integer \`${v}\`` : `floating point \`${v}\``;
    case "string":
      return `string ${JSON.stringify(v)}`;
  }
  return Array.isArray(v) ? "sequence" : "map";
}

/// A payload that is not what a decoder expects: serde's `reason`, and where
/// (`path`: field names and array indices from the payload's root). Its
/// message reads as serde_path_to_error prints one, as the Rust SDK says it:
/// ``items[0].quantity: invalid type: string "two", expected i64``.
export class DecodeError extends TypeError {
  constructor(reason, path = []) {
    super(reason);
    this.name = "DecodeError";
    this.reason = reason;
    this.path = path;
    this.message = pathMessage(reason, path);
  }

  /// The same error seen one level up: `segment` (a field name or an index)
  /// goes first in its path.
  within(segment) {
    this.path.unshift(segment);
    this.message = pathMessage(this.reason, this.path);
    return this;
  }
}

function pathMessage(reason, path) {
  if (path.length === 0) return reason;
  const text = path.map((s, i) => (typeof s === "number" ? `[${s}]` : i === 0 ? s : `.${s}`)).join("");
  return `${text}: ${reason}`;
}

/// `decode(value)`, naming `segment` in the path of whatever it throws.
function inside(segment, decode, value) {
  try {
    return decode(value);
  } catch (e) {
    if (e instanceof DecodeError) throw e.within(segment);
    if (e instanceof ReelError || !(e instanceof Error)) throw e;
    throw new DecodeError(e.message, [segment]);
  }
}

function field(object, name, check, expected) {
  if (!Object.prototype.hasOwnProperty.call(object, name) || object[name] === undefined) {
    throw new DecodeError(`missing field \`${name}\``);
  }
  const v = object[name];
  if (!check(v)) throw new DecodeError(`invalid type: ${unexpected(v)}, expected ${expected}`, [name]);
  return v;
}

/// Checked access to the fields of a decoded JSON object. Each throws a
/// DecodeError with serde's wording ("missing field `orderId`", "invalid type:
/// integer `5`, expected a string") and the path to the value
/// (`items[0].quantity`), without serde_json's position.
export const fields = {
  /// `data` must be a JSON object (`name`: the struct, for the message).
  object(data, name) {
    if (data === null || typeof data !== "object" || Array.isArray(data)) {
      throw new DecodeError(`invalid type: ${unexpected(data)}, expected struct ${name}`);
    }
    return data;
  },
  /// A field holding a nested value, decoded by `decode(value)`; what it
  /// throws is placed under the field's name.
  field(o, name, decode) {
    return inside(name, decode, field(o, name, () => true, ""));
  },
  string: (o, name) => field(o, name, (v) => typeof v === "string", "a string"),
  optionalString(o, name) {
    const v = o[name];
    if (v === undefined || v === null) return null;
    return field(o, name, (x) => typeof x === "string", "a string");
  },
  /// An integer (i64; JSON.parse cannot tell `2` from `2.0`, serde can).
  integer: (o, name) => field(o, name, (v) => Number.isInteger(v), "i64"),
  number: (o, name) => field(o, name, (v) => typeof v === "number", "f64"),
  boolean: (o, name) => field(o, name, (v) => typeof v === "boolean", "a boolean"),
  /// An array; with `item`, each element decoded by `item(element)`, what it
  /// throws placed under `name[i]`.
  array(o, name, item) {
    const list = field(o, name, (v) => Array.isArray(v), "a sequence");
    if (!item) return list;
    return inside(name, () => list.map((element, i) => inside(i, item, element)));
  },
};

/// serde's message for an event type the projection does not know.
function unknownVariant(type, known) {
  const names = known.map((k) => `\`${k}\``);
  let expected;
  if (names.length === 0) expected = "there are no variants";
  else if (names.length === 1) expected = `expected ${names[0]}`;
  else if (names.length === 2) expected = `expected ${names[0]} or ${names[1]}`;
  else expected = `expected one of ${names.join(", ")}`;
  return `unknown variant \`${type}\`, ${expected}`;
}

// ---------------------------------------------------------------------------
// The exports

/// Build the world's exports from:
/// - `manifest`: { name, version, eventTypes = [], streamPrefixes = [],
///   onError = "stop" };
/// - `events` (optional): { [eventType]: (data) => decoded } — each payload is
///   JSON.parse'd and passed through its decoder; a thrown error (or an event
///   type missing from the map) fails the event as
///   invalid-event("`type` event: ..."), as the Rust SDK does. Without
///   `events`, handlers get the parsed JSON;
/// - `init()` (optional): create tables;
/// - `handle(event)`: apply one event { position, streamId, version,
///   eventType, metadata, occurredAt, data }; throw to fail it;
/// - `query(name, args)` (optional): args parsed from JSON (null when empty);
///   return JSON text, or a value to write with `json.stringify`.
export function defineProjection(spec) {
  const manifest = {
    name: spec.manifest.name,
    version: spec.manifest.version,
    eventTypes: spec.manifest.eventTypes ?? [],
    streamPrefixes: spec.manifest.streamPrefixes ?? [],
    onError: spec.manifest.onError ?? "stop",
  };
  const decoders = spec.events ?? null;
  const known = decoders ? Object.keys(decoders) : [];

  function decode(raw) {
    let data;
    try {
      data = JSON.parse(raw.data);
    } catch (e) {
      throw invalidEvent(`\`${raw.eventType}\` event: ${json.syntaxError(raw.data) ?? e.message}`);
    }
    if (decoders) {
      const decoder = Object.prototype.hasOwnProperty.call(decoders, raw.eventType) ? decoders[raw.eventType] : null;
      if (!decoder) throw invalidEvent(`\`${raw.eventType}\` event: ${unknownVariant(raw.eventType, known)}`);
      try {
        data = decoder(data);
      } catch (e) {
        throw invalidEvent(`\`${raw.eventType}\` event: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
    return {
      position: raw.position,
      streamId: raw.streamId,
      version: raw.version,
      eventType: raw.eventType,
      metadata: raw.metadata,
      occurredAt: raw.occurredAt,
      data,
    };
  }

  return {
    describe() {
      return manifest;
    },
    setup() {
      if (!spec.init) return;
      try {
        spec.init();
      } catch (e) {
        throw toWitError(e);
      }
    },
    handle(events) {
      for (let i = 0; i < events.length; i++) {
        const raw = events[i];
        try {
          spec.handle(decode(raw));
        } catch (e) {
          throw { position: raw.position, error: toWitError(e) };
        }
      }
    },
    query(name, args) {
      try {
        let parsed = null;
        if (args.trim() !== "") {
          try {
            parsed = JSON.parse(args);
          } catch (e) {
            throw failed(`query arguments are not JSON: ${json.syntaxError(args) ?? e.message}`);
          }
        }
        if (!spec.query) throw failed(`unknown query \`${name}\``);
        const result = spec.query(name, parsed);
        return typeof result === "string" ? result : json.stringify(result);
      } catch (e) {
        throw toWitError(e);
      }
    },
  };
}
