// node --test test/: billing's rules under Node, the reactor world's imports
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
const billing = await import("../src/index.js");

const event = (position, eventType, data) => ({
  position,
  streamId: `fulfillment-${data.orderId}`,
  version: 1,
  eventType,
  data: JSON.stringify(data),
  metadata: "{}",
  occurredAt: "2026-12-05T10:00:00.000000Z",
});
const stored = (key) => JSON.parse(new TextDecoder().decode(globalThis.reelKv.get(key)));
const charge = (position, orderId, amount) =>
  event(position, "fulfillment.charge-requested", { orderId, customerId: "c-1", amount });

test("charges, declines over 400.00, leaves amounts ending in 7 unanswered, refunds", () => {
  globalThis.reelKv = new Map();
  globalThis.reelEmitted = [];
  billing.handle([
    charge(1, "o-1", 60),
    charge(2, "o-2", 400.01),
    charge(3, "o-3", 400),
    charge(4, "o-4", 17.99),
    charge(5, "o-5", 248.16),
    event(6, "fulfillment.refund-requested", { orderId: "o-1", paymentId: "pay-o-1", amount: 60 }),
  ]);
  const emitted = globalThis.reelEmitted.map((e) => [e.cause, e.streamId, e.eventType, JSON.parse(e.data)]);
  assert.deepEqual(emitted, [
    [1, "billing-o-1", "billing.charged", { orderId: "o-1", paymentId: "pay-o-1", amount: 60 }],
    [2, "billing-o-2", "billing.declined", { orderId: "o-2", reason: "400.01 is over the 400.00 limit" }],
    [3, "billing-o-3", "billing.charged", { orderId: "o-3", paymentId: "pay-o-3", amount: 400 }],
    [5, "billing-o-5", "billing.charged", { orderId: "o-5", paymentId: "pay-o-5", amount: 248.16 }],
    [6, "billing-o-1", "billing.refunded", { orderId: "o-1", paymentId: "pay-o-1", amount: 60 }],
  ]);
  // Floats as serde_json writes them, as the Rust billing does.
  assert.match(globalThis.reelEmitted[0].data, /"amount":60\.0/);
  assert.deepEqual(stored("ledger"), { charged: 6000 + 40000 + 24816, refunded: 6000 });
  assert.deepEqual(stored("payment/o-4"), { status: "unanswered", cents: 1799 });
});

test("is the Rust billing's module: same name, version and prefix", () => {
  assert.deepEqual(billing.describe().name, "billing");
  assert.deepEqual(billing.describe().version, "1");
  assert.deepEqual(billing.describeEmits(), { streamPrefix: "billing-" });
});
