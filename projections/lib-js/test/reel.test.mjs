// node --test test/: reel.js under Node, its world imports stood in for by
// stubs (a loader hook resolves `reel:projection/...` to them).
import assert from "node:assert/strict";
import { register } from "node:module";
import { test } from "node:test";

const stub = `export default {
  log: (level, message) => (globalThis.reelLog ??= []).push([level, message]),
  get: () => null, set() {}, delete() {}, scan: () => [],
  execute() {}, query: () => ({ columns: [], rows: [] }), dialect: () => "sqlite",
};`;
const hooks = `export async function resolve(specifier, context, next) {
  if (specifier.startsWith("reel:projection/")) {
    return { url: "data:text/javascript," + encodeURIComponent(${JSON.stringify(stub)}), shortCircuit: true };
  }
  return next(specifier, context);
}`;
register("data:text/javascript," + encodeURIComponent(hooks));
const { defineProjection, fields, thrownAt } = await import("../reel.js");

function lineItem(item) {
  fields.object(item, "LineItem");
  return { productId: fields.string(item, "productId"), quantity: fields.integer(item, "quantity") };
}

const orders = defineProjection({
  manifest: { name: "orders", version: "1" },
  events: {
    "order.placed": (data) => {
      fields.object(data, "OrderPlaced");
      return {
        orderId: fields.string(data, "orderId"),
        items: fields.array(data, "items", lineItem),
        shipTo: data.shipTo === undefined ? null : fields.field(data, "shipTo", (a) => fields.string(a, "city")),
      };
    },
  },
  handle(event) {
    if (event.data.orderId === "boom") return event.data.missing.code;
  },
});

function failure(data) {
  const event = { position: 7, streamId: "s", version: 1, eventType: "order.placed", metadata: "{}", occurredAt: "t" };
  try {
    orders.handle([{ ...event, data: JSON.stringify(data) }]);
  } catch (e) {
    assert.equal(e.position, 7);
    return e.error;
  }
  assert.fail("the event did not fail");
}

test("a payload error names the path to the value, as the Rust SDK does", () => {
  const cases = [
    [{ orderId: 5, items: [] }, "orderId: invalid type: integer `5`, expected a string"],
    [{ items: [] }, "missing field `orderId`"],
    [{ orderId: "o", items: {} }, "items: invalid type: map, expected a sequence"],
    [
      { orderId: "o", items: [{ productId: "p", quantity: "two" }] },
      'items[0].quantity: invalid type: string "two", expected i64',
    ],
    [{ orderId: "o", items: [{ productId: "p", quantity: 1 }, { productId: "p" }] }, "items[1]: missing field `quantity`"],
    [{ orderId: "o", items: [7] }, "items[0]: invalid type: integer `7`, expected struct LineItem"],
    [{ orderId: "o", items: [], shipTo: { city: 1 } }, "shipTo.city: invalid type: integer `1`, expected a string"],
  ];
  for (const [data, message] of cases) {
    assert.deepEqual(failure(data), { tag: "invalid-event", val: `\`order.placed\` event: ${message}` });
  }
});

test("an error the code did not mean to throw says where it was thrown", () => {
  const error = failure({ orderId: "boom", items: [] });
  assert.equal(error.tag, "failed");
  assert.match(error.val, /^TypeError: .*\(at \S*reel\.test\.mjs:\d+:\d+ in \S*handle\)$/);
  const [level, logged] = globalThis.reelLog.at(-1);
  assert.equal(level, "error");
  assert.match(logged, /^TypeError: [^\n]*\n\s+at /);
});

test("places come from QuickJS's stacks, past the helper's own frames", () => {
  // As QuickJS in componentize-qjs writes them: paths from the module root.
  assert.equal(
    thrownAt({ stack: "    at handle (/src/index.js:26:53)\n    at handle (/lib-js/reel.js:444:41)\n" }),
    "src/index.js:26:53 in handle",
  );
  assert.equal(
    thrownAt({ stack: "    at checkKey (/lib-js/reel.js:100:5)\n    at <anonymous> (/my-p/src/index.js:3:4)\n" }),
    "my-p/src/index.js:3:4",
  );
  assert.equal(thrownAt({ stack: "    at checkKey (/lib-js/reel.js:100:5)\n" }), "lib-js/reel.js:100:5 in checkKey");
  assert.equal(thrownAt({}), null);
});
