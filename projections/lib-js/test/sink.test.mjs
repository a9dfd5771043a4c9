// node --test test/: sink.js under Node, its one import (`log`) stood in for
// by a stub.
import assert from "node:assert/strict";
import { register } from "node:module";
import { test } from "node:test";

const stub = `export default { log() {} };`;
const hooks = `export async function resolve(specifier, context, next) {
  if (specifier.startsWith("reel:projection/")) {
    return { url: "data:text/javascript," + encodeURIComponent(${JSON.stringify(stub)}), shortCircuit: true };
  }
  return next(specifier, context);
}`;
register("data:text/javascript," + encodeURIComponent(hooks));
const { defineSink, invalidEvent } = await import("../sink.js");

const raw = (position, eventType, data) => ({
  position,
  streamId: "order-1",
  version: 2,
  eventType,
  data: typeof data === "string" ? data : JSON.stringify(data),
  metadata: "{}",
  occurredAt: "2026-11-27T10:00:00.000000Z",
});
const text = (bytes) => new TextDecoder().decode(bytes);

test("a sink without a transform declares so, and reel never needs to call it", () => {
  const sink = defineSink({ manifest: { name: "s", version: "1", broker: "nats", subject: "orders.{stream_id}" } });
  assert.deepEqual(sink.describeSink(), {
    name: "s",
    version: "1",
    eventTypes: [],
    streamPrefixes: [],
    broker: "nats",
    subject: "orders.{stream_id}",
    exchange: "",
    transform: false,
  });
  assert.deepEqual(sink.transform(raw(1, "order.placed", {})), []);
});

test("a transform's messages: one, several, or none; bodies as bytes, headers as pairs", () => {
  const sink = defineSink({
    manifest: { name: "s", version: "1", broker: "amqp", exchange: "amq.topic", subject: "orders" },
    transform(event) {
      if (event.eventType === "skip") return null;
      if (event.eventType === "many") return [{ body: "a" }, { body: new Uint8Array([1, 2]), subject: "x.y" }];
      return { body: { id: event.streamId, n: event.data.n }, headers: { "X-Kind": event.eventType, "X-N": 3 } };
    },
  });
  assert.equal(sink.describeSink().transform, true);
  const [one] = sink.transform(raw(5, "order.placed", { n: 7 }));
  assert.deepEqual(JSON.parse(text(one.body)), { id: "order-1", n: 7 });
  assert.deepEqual(one.headers, [{ name: "X-Kind", value: "order.placed" }, { name: "X-N", value: "3" }]);
  assert.equal(one.subject, null);
  const many = sink.transform(raw(6, "many", {}));
  assert.equal(text(many[0].body), "a");
  assert.deepEqual([...many[1].body], [1, 2]);
  assert.equal(many[1].subject, "x.y");
  assert.deepEqual(sink.transform(raw(7, "skip", {})), []);
});

test("errors become the world's error variant", () => {
  const sink = defineSink({
    manifest: { name: "s", version: "1", broker: "nats", subject: "s" },
    transform(event) {
      if (event.data.bad) throw invalidEvent("bad order");
      return [42];
    },
  });
  assert.throws(() => sink.transform(raw(1, "t", { bad: true })), { tag: "invalid-event", val: "bad order" });
  assert.throws(() => sink.transform(raw(1, "t", "{not json")), (e) => e.tag === "invalid-event");
  assert.throws(() => sink.transform(raw(1, "t", {})), (e) => e.tag === "failed" && /must return messages/.test(e.val));
  assert.throws(() => defineSink({ manifest: { name: "s", version: "1", broker: "kafka" } }), TypeError);
});
