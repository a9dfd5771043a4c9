// The reactor side of the JavaScript helper: `emit` and `timers` over the raw
// bindings of the `reactor` world (../../wit/reactor.wit), and
// `defineReactor`, which is `defineProjection` plus `describeEmits`.
//
// A reactor's build names the world: `REEL_WORLD=reactor`, or
// `"reel": { "world": "reactor" }` in its package.json (build.mjs reads it).
// A projection must not import this file: its world has no `emit`.

import emitApi from "reel:projection/emit@0.1.1";
import timersApi from "reel:projection/timers@0.1.1";

import { defineProjection, json } from "./reel.js";

function emitted(cause, streamId, eventType, data, metadata) {
  if (!Number.isInteger(cause)) throw new TypeError(`emit: cause must be the position of an event (an integer), got ${cause}`);
  if (typeof streamId !== "string") throw new TypeError(`emit: streamId must be a string, got ${typeof streamId}`);
  if (typeof eventType !== "string") throw new TypeError(`emit: eventType must be a string, got ${typeof eventType}`);
  return {
    cause,
    streamId,
    eventType,
    data: json.stringify(data === undefined ? null : data),
    metadata: metadata == null ? "{}" : json.stringify(metadata),
  };
}

/// Emit an event of `eventType` with `data` (written as JSON) to `streamId`,
/// caused by the event at position `cause` of the batch being handled (pass
/// `event.position`). reel appends it when the batch commits, exactly once;
/// the stream must start with the declared prefix. `metadata` (optional) is
/// an object; reel adds `causation_id`, `correlation_id` and `emitted_by`.
export function emit(cause, streamId, eventType, data, metadata) {
  emitApi.emit(emitted(cause, streamId, eventType, data, metadata));
}

/// Durable timers: the event is appended when the wall clock passes `due`.
export const timers = {
  /// Record timer `key` (replacing a pending one of that key): at `due`
  /// (RFC 3339 text, or a Date), append `event` = { cause, streamId,
  /// eventType, data, metadata }.
  schedule(key, due, event) {
    if (typeof key !== "string") throw new TypeError(`timers.schedule: key must be a string, got ${typeof key}`);
    const at = due instanceof Date ? due.toISOString() : due;
    if (typeof at !== "string") throw new TypeError("timers.schedule: due must be RFC 3339 text or a Date");
    const e = emitted(event.cause, event.streamId, event.eventType, event.data, event.metadata);
    timersApi.schedule({ key, due: at, event: e });
  },
  /// Cancel the pending timer `key` (no-op if none).
  cancel(key) {
    if (typeof key !== "string") throw new TypeError(`timers.cancel: key must be a string, got ${typeof key}`);
    timersApi.cancel(key);
  },
};

/// The reactor world's exports: `defineProjection(spec)`'s, plus
/// `describeEmits` from `spec.emits` = { streamPrefix }.
export function defineReactor(spec) {
  const prefix = spec.emits && spec.emits.streamPrefix;
  if (typeof prefix !== "string" || prefix === "") {
    throw new TypeError("defineReactor: emits.streamPrefix must be a non-empty string");
  }
  const exports = defineProjection(spec);
  return {
    ...exports,
    describeEmits() {
      return { streamPrefix: prefix };
    },
  };
}
