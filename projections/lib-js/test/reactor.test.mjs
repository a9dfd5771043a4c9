// node --test test/: reactor.js under Node, the world's imports stood in for
// by stubs that record what was emitted and scheduled.
import assert from "node:assert/strict";
import { register } from "node:module";
import { test } from "node:test";

const stub = `export default {
  log() {}, get: () => null, set() {}, delete() {}, scan: () => [],
  execute() {}, query: () => ({ columns: [], rows: [] }), dialect: () => "sqlite",
  emit: (event) => (globalThis.reelEmitted ??= []).push(event),
  schedule: (timer) => (globalThis.reelTimers ??= []).push(timer),
  cancel: (key) => (globalThis.reelCancelled ??= []).push(key),
};`;
const hooks = `export async function resolve(specifier, context, next) {
  if (specifier.startsWith("reel:projection/")) {
    return { url: "data:text/javascript," + encodeURIComponent(${JSON.stringify(stub)}), shortCircuit: true };
  }
  return next(specifier, context);
}`;
register("data:text/javascript," + encodeURIComponent(hooks));
const { defineReactor, emit, timers } = await import("../reactor.js");

const payment = defineReactor({
  manifest: { name: "payment", version: "1", eventTypes: ["inventory.reserved"] },
  emits: { streamPrefix: "payment-" },
  handle(event) {
    const { orderId, total } = event.data;
    if (total > 400) emit(event.position, `payment-${orderId}`, "payment.failed", { orderId, reason: "over 400" });
    else emit(event.position, `payment-${orderId}`, "payment.processed", { orderId, amount: total }, { tenant: "t1" });
    timers.schedule(`timeout/${orderId}`, new Date(Date.UTC(2026, 10, 27, 17, 45, 11)), {
      cause: event.position,
      streamId: `payment-${orderId}`,
      eventType: "payment.timed-out",
      data: { orderId },
    });
    timers.cancel(`timeout/${orderId}`);
  },
});

const raw = (position, data) => ({
  position,
  streamId: "inventory-o",
  version: 1,
  eventType: "inventory.reserved",
  data: JSON.stringify(data),
  metadata: "{}",
  occurredAt: "2026-11-27T17:45:11.000000Z",
});

test("a reactor declares its prefix and emits JSON text naming its cause", () => {
  globalThis.reelEmitted = [];
  assert.deepEqual(payment.describeEmits(), { streamPrefix: "payment-" });
  assert.equal(payment.describe().name, "payment");
  payment.handle([raw(7, { orderId: "o-1", total: 120 }), raw(9, { orderId: "o-2", total: 401 })]);
  assert.deepEqual(globalThis.reelEmitted, [
    {
      cause: 7,
      streamId: "payment-o-1",
      eventType: "payment.processed",
      data: '{"orderId":"o-1","amount":120}',
      metadata: '{"tenant":"t1"}',
    },
    { cause: 9, streamId: "payment-o-2", eventType: "payment.failed", data: '{"orderId":"o-2","reason":"over 400"}', metadata: "{}" },
  ]);
});

test("timers are scheduled with RFC 3339 text and cancelled by key", () => {
  globalThis.reelTimers = [];
  globalThis.reelCancelled = [];
  payment.handle([raw(3, { orderId: "o-3", total: 1 })]);
  assert.equal(globalThis.reelTimers.length, 1);
  assert.equal(globalThis.reelTimers[0].key, "timeout/o-3");
  assert.equal(globalThis.reelTimers[0].due, "2026-11-27T17:45:11.000Z");
  assert.equal(globalThis.reelTimers[0].event.eventType, "payment.timed-out");
  assert.deepEqual(globalThis.reelCancelled, ["timeout/o-3"]);
});

test("a bad emit fails the event with the reason", () => {
  const bad = defineReactor({
    manifest: { name: "bad", version: "1" },
    emits: { streamPrefix: "bad-" },
    handle(event) {
      emit("seven", "bad-1", "x", {});
    },
  });
  assert.throws(
    () => bad.handle([raw(5, {})]),
    (e) => e.position === 5 && e.error.tag === "failed" && /cause must be the position/.test(e.error.val),
  );
  assert.throws(() => defineReactor({ manifest: { name: "x", version: "1" }, handle() {} }), /streamPrefix/);
});
