// `billing`: a participant of the seed's orchestrated saga, as a reactor in
// JavaScript, the twin of ../billing (Rust): the same module name, prefix,
// rules and events, so either serves `order-fulfillment` (the guide's
// "Orchestrated sagas", docs/adr/45-orchestrated-saga.md).
//
// - `fulfillment.charge-requested` {orderId, customerId, amount}: no answer
//   at all when the amount's whole part ends in 7 (the bank never answers:
//   the saga's payment timeout fires); `billing.declined` over 400.00; else
//   `billing.charged` with a `paymentId`;
// - `fulfillment.refund-requested` {orderId, paymentId, amount} (the
//   compensation): `billing.refunded`.
//
// Every event goes to `billing-{orderId}` and carries `orderId`. KV:
// `payment/{orderId}` = {status, cents[, paymentId]}, `ledger` = {charged,
// refunded} in cents.

import { emit } from "../../lib-js/reactor.js";
import { json, fields, kv } from "../../lib-js/reel.js";

/// A charge whose whole part ends in this digit is never answered.
const SILENT_DIGIT = 7;
/// A charge over this many cents is declined.
const LIMIT_CENTS = 40000;

const cents = (amount) => Math.round(amount * 100);

function request(data) {
  fields.object(data, "Request");
  return {
    orderId: fields.string(data, "orderId"),
    paymentId: fields.optionalString(data, "paymentId"),
    amount: fields.number(data, "amount"),
  };
}

function book(charged, refunded) {
  const ledger = kv.getJson("ledger") ?? { charged: 0, refunded: 0 };
  kv.setJson("ledger", { charged: ledger.charged + charged, refunded: ledger.refunded + refunded });
}

/// The reactor's definition, for `defineReactor` (index.js).
export const billing = {
  manifest: {
    name: "billing",
    version: "1",
    eventTypes: ["fulfillment.charge-requested", "fulfillment.refund-requested"],
  },
  emits: { streamPrefix: "billing-" },

  events: {
    "fulfillment.charge-requested": request,
    "fulfillment.refund-requested": request,
  },

  handle(event) {
    const { orderId, paymentId, amount } = event.data;
    const key = `payment/${orderId}`;
    const stream = `billing-${orderId}`;
    const owed = cents(amount);
    switch (event.eventType) {
      case "fulfillment.charge-requested": {
        if (Math.floor(owed / 100) % 10 === SILENT_DIGIT) {
          kv.setJson(key, { status: "unanswered", cents: owed });
          return;
        }
        if (owed > LIMIT_CENTS) {
          kv.setJson(key, { status: "declined", cents: owed });
          const reason = `${amount.toFixed(2)} is over the ${(LIMIT_CENTS / 100).toFixed(2)} limit`;
          emit(event.position, stream, "billing.declined", { orderId, reason });
          return;
        }
        // Derived from the order, not a clock: a replay computes the same id.
        const id = `pay-${orderId}`;
        kv.setJson(key, { status: "charged", cents: owed, paymentId: id });
        book(owed, 0);
        emit(event.position, stream, "billing.charged", { orderId, paymentId: id, amount: json.float(amount) });
        return;
      }
      case "fulfillment.refund-requested": {
        kv.setJson(key, { status: "refunded", cents: owed, paymentId });
        book(0, owed);
        emit(event.position, stream, "billing.refunded", { orderId, paymentId, amount: json.float(amount) });
        return;
      }
    }
  },
};
