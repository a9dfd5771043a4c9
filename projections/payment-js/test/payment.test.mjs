// node --test test/: payment's rules under Node, the reactor world's imports
// stood in for by stubs: a KV map, and a list of what was emitted.
import assert from "node:assert/strict";
import { register } from "node:module";
import { test } from "node:test";

const stub = `export default {
  log() {}, delete() {}, scan: () => [],
  get: (key) => globalThis.reelKv.get(key) ?? null,
  set: (key, value) => globalThis.reelKv.set(key, value),
  execute() {}, query: () => ({ columns: [], rows: [] }), dialect: () => "sqlite",
  emit: (event) => globalThis.reelEmitted.push(event),
  schedule() {}, cancel() {},
};`;
const hooks = `export async function resolve(specifier, context, next) {
  if (specifier.startsWith("reel:projection/")) {
    return { url: "data:text/javascript," + encodeURIComponent(${JSON.stringify(stub)}), shortCircuit: true };
  }
  return next(specifier, context);
}`;
register("data:text/javascript," + encodeURIComponent(hooks));
const v1 = await import("../src/index.js");
const v2 = await import("../src/v2.js");

const event = (position, eventType, data) => ({
  position,
  streamId: `s-${position}`,
  version: 1,
  eventType,
  data: JSON.stringify(data),
  metadata: "{}",
  occurredAt: "2026-12-05T10:00:00.000000Z",
});
const reserved = (position, orderId, total) =>
  event(position, "inventory.reserved", {
    orderId,
    customerId: "c-1",
    items: [{ productId: "p-1", quantity: 2, price: 30.0 }],
    total,
  });

test("charges up to 400, refuses over it, refunds a failed shipment once, and charges an order once", () => {
  globalThis.reelKv = new Map();
  globalThis.reelEmitted = [];
  v1.handle([
    reserved(1, "o-1", 60),
    reserved(2, "o-2", 400.5),
    reserved(3, "o-3", 400),
    event(4, "shipment.failed", { orderId: "o-1", reason: "too many" }),
    event(5, "shipment.failed", { orderId: "o-1", reason: "again" }),
    event(6, "shipment.failed", { orderId: "o-2", reason: "never paid" }),
    reserved(7, "o-1", 60),
  ]);
  const emitted = globalThis.reelEmitted.map((e) => [e.cause, e.streamId, e.eventType, JSON.parse(e.data)]);
  assert.deepEqual(emitted, [
    [1, "payment-o-1", "payment.processed", { orderId: "o-1", paymentId: "pay-o-1", amount: 60, items: [{ productId: "p-1", quantity: 2, price: 30 }] }],
    [2, "payment-o-2", "payment.failed", { orderId: "o-2", reason: "total 400.5 is over the limit of 400" }],
    [3, "payment-o-3", "payment.processed", { orderId: "o-3", paymentId: "pay-o-3", amount: 400, items: [{ productId: "p-1", quantity: 2, price: 30 }] }],
    [4, "payment-o-1", "payment.refunded", { orderId: "o-1", paymentId: "pay-o-1", amount: 60 }],
  ]);
  // Floats as serde_json writes them, so the Rust reactors read what they wrote.
  assert.match(globalThis.reelEmitted[0].data, /"amount":60\.0,.*"price":30\.0/);
  assert.equal(v1.query("payment", JSON.stringify({ orderId: "o-1" })), '{"status":"refunded","amount":60}');
});

test("version 2 is the same reactor under another version", () => {
  assert.deepEqual({ ...v2.describe(), version: "1" }, v1.describe());
  assert.equal(v2.describe().version, "2");
  assert.deepEqual(v2.describeEmits(), { streamPrefix: "payment-" });
});
