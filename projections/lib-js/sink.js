// The sink side of the JavaScript helper: `defineSink` builds the exports of
// the `sink` world (../../wit/sink.wit): `describeSink`, and `transform`,
// which reel calls for each event when the spec has a `transform` function.
//
// A sink's build names the world: `"reel": { "world": "sink" }` in its
// package.json (or REEL_WORLD=sink). A sink must not import reel.js: its
// world has no `kv` or `sql`, only `log`.

import logApi from "reel:projection/log@0.1.1";

import * as json from "./json.js";
import { utf8Encode } from "./utf8.js";

export { json, utf8Encode };

const BROKERS = ["nats", "amqp"];

/// An error reported to reel (thrown from `transform`): the sink stops at
/// the event with `message` in its status.
export class SinkError extends Error {
  constructor(kind, message) {
    super(message);
    this.name = "SinkError";
    this.kind = kind;
  }
}

/// The event's payload is not what the sink expects.
export function invalidEvent(message) {
  return new SinkError("invalid-event", message);
}

/// Anything else that went wrong.
export function failed(message) {
  return new SinkError("failed", message);
}

/// Log lines, at reel's levels.
export const log = {
  debug: (message) => logApi.log("debug", String(message)),
  info: (message) => logApi.log("info", String(message)),
  warn: (message) => logApi.log("warn", String(message)),
  error: (message) => logApi.log("error", String(message)),
};

function toWitError(e) {
  if (e instanceof SinkError) return { tag: e.kind, val: e.message };
  if (e instanceof Error) return { tag: "failed", val: e.name && e.name !== "Error" ? `${e.name}: ${e.message}` : e.message };
  return { tag: "failed", val: String(e) };
}

/// A message's body as bytes: a Uint8Array as it is, a string as UTF-8,
/// anything else as its JSON text.
function toBody(body) {
  if (body instanceof Uint8Array) return body;
  if (typeof body === "string") return utf8Encode(body);
  return utf8Encode(JSON.stringify(body === undefined ? null : body));
}

/// Headers given as an object (`{ "X-Kind": "order" }`) or as pairs.
function toHeaders(headers) {
  if (headers == null) return [];
  const pairs = Array.isArray(headers) ? headers : Object.entries(headers);
  return pairs.map(([name, value]) => {
    if (typeof name !== "string") throw new TypeError(`header name must be a string, got ${typeof name}`);
    return { name, value: String(value) };
  });
}

/// A message the transform returned: `{ body, subject?, headers? }`.
function toMessage(m) {
  if (m === null || typeof m !== "object" || Array.isArray(m)) {
    throw new TypeError(`transform must return messages ({ body, subject?, headers? }), got ${JSON.stringify(m)}`);
  }
  if (m.subject != null && typeof m.subject !== "string") throw new TypeError("a message's subject must be a string");
  return { subject: m.subject ?? null, headers: toHeaders(m.headers), body: toBody(m.body) };
}

/// The sink world's exports from `spec`:
/// - `manifest`: { name, version, broker ("nats" | "amqp"), subject,
///   exchange?, eventTypes?, streamPrefixes? } (the subject or routing key
///   may hold `{stream_id}`, `{event_type}`, `{position}`, `{version}`);
/// - `transform(event)` (optional): the event with its `data` parsed from
///   JSON (`rawData` keeps the text) -> a message, a list of them (several:
///   their dedup ids are `sink:position:index`), or null for none. A message is
///   `{ body, subject?, headers? }`: `body` a string, bytes or a value sent
///   as JSON; `subject` replaces the manifest's for this message. Without a
///   transform reel sends each event's data as it is, and never calls in.
export function defineSink(spec) {
  const m = spec.manifest;
  if (!BROKERS.includes(m.broker)) throw new TypeError(`defineSink: broker must be one of ${BROKERS.join(", ")}`);
  const manifest = {
    name: m.name,
    version: m.version,
    eventTypes: m.eventTypes ?? [],
    streamPrefixes: m.streamPrefixes ?? [],
    broker: m.broker,
    subject: m.subject ?? "",
    exchange: m.exchange ?? "",
    transform: typeof spec.transform === "function",
  };
  return {
    describeSink() {
      return manifest;
    },
    transform(raw) {
      if (typeof spec.transform !== "function") return [];
      let data;
      try {
        data = JSON.parse(raw.data);
      } catch (e) {
        throw toWitError(invalidEvent(`\`${raw.eventType}\` event: ${e.message}`));
      }
      const event = {
        position: raw.position,
        streamId: raw.streamId,
        version: raw.version,
        eventType: raw.eventType,
        metadata: raw.metadata,
        occurredAt: raw.occurredAt,
        data,
        rawData: raw.data,
      };
      let made;
      try {
        made = spec.transform(event);
        if (made == null) return [];
        return (Array.isArray(made) ? made : [made]).map(toMessage);
      } catch (e) {
        throw toWitError(e);
      }
    },
  };
}
