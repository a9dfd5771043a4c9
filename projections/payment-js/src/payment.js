// `payment`: the seed's payment service in a choreographed saga, as a reactor
// in JavaScript (its partners: ../inventory and ../shipping, in Rust; the
// guide's "Sagas").
//
// - `inventory.reserved`: charges the order's total. An order over 400 is
//   refused: `payment.failed` (inventory answers with a release). Otherwise
//   `payment.processed`, carrying the order's line items on to shipping.
// - `shipment.failed`: the compensation. A processed payment is refunded:
//   `payment.refunded` (inventory answers with a release, so the two
//   compensations run in the reverse order of their steps).
//
// Every emitted event goes to the stream `payment-{orderId}` and carries
// `orderId`. The read model, in KV: `payment/{orderId}` =
// { status: "processed" | "failed" | "refunded", amount }. An order seen
// again in `inventory.reserved` is ignored: it is charged once.

import { emit } from "../../lib-js/reactor.js";
import { failed, fields, json, kv } from "../../lib-js/reel.js";

/// The largest total a payment goes through for.
const LIMIT = 400;

function lineItem(item) {
  fields.object(item, "LineItem");
  return {
    productId: fields.string(item, "productId"),
    quantity: fields.integer(item, "quantity"),
    price: json.float(fields.number(item, "price")),
  };
}

function orderRef(data) {
  fields.object(data, "OrderRef");
  return { orderId: fields.string(data, "orderId") };
}

/// The reactor's definition, for `defineReactor` (index.js; v2.js builds
/// the same code as version 2, for the test of a new version mid-history).
export const payment = {
  manifest: { name: "payment", version: "1", eventTypes: ["inventory.reserved", "shipment.failed"] },
  emits: { streamPrefix: "payment-" },

  events: {
    "inventory.reserved": (data) => {
      fields.object(data, "InventoryReserved");
      return {
        orderId: fields.string(data, "orderId"),
        items: fields.array(data, "items", lineItem),
        total: fields.number(data, "total"),
      };
    },
    "shipment.failed": orderRef,
  },

  handle(event) {
    const { orderId } = event.data;
    const key = `payment/${orderId}`;
    const stream = `payment-${orderId}`;
    const payment = kv.getJson(key);
    switch (event.eventType) {
      case "inventory.reserved": {
        if (payment !== null) return;
        const amount = json.float(event.data.total);
        if (event.data.total > LIMIT) {
          kv.setJson(key, { status: "failed", amount: event.data.total });
          const reason = `total ${event.data.total} is over the limit of ${LIMIT}`;
          emit(event.position, stream, "payment.failed", { orderId, reason });
          return;
        }
        // Derived from the order, not a clock: a replay computes the same id.
        const paymentId = `pay-${orderId}`;
        kv.setJson(key, { status: "processed", amount: event.data.total });
        emit(event.position, stream, "payment.processed", { orderId, paymentId, amount, items: event.data.items });
        return;
      }
      case "shipment.failed": {
        if (payment === null || payment.status !== "processed") return;
        kv.setJson(key, { status: "refunded", amount: payment.amount });
        emit(event.position, stream, "payment.refunded", {
          orderId,
          paymentId: `pay-${orderId}`,
          amount: json.float(payment.amount),
        });
        return;
      }
    }
  },

  // `payment` with {"orderId": ...}: the order's payment, or null.
  query(name, args) {
    const orderId = args !== null && typeof args === "object" ? args.orderId : undefined;
    if (name !== "payment" || typeof orderId !== "string") {
      throw failed(`unknown query \`${name}\`; this reactor has \`payment\` with {"orderId": "..."}`);
    }
    return json.stringify(kv.getJson(`payment/${orderId}`));
  },
};
