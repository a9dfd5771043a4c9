// `customer-stats-js`: per customer, `{"orders", "cancelled", "total_spent"}`
// as JSON under the key `customer/{customerId}`. The JavaScript twin of
// ../../customer-stats (Rust): the stored bytes are the same.
//
// - `orders` counts placed orders, `cancelled` the cancelled ones;
// - `total_spent` sums the totals of orders not cancelled, in exact cents,
//   written with two decimals (`{"orders":2,"cancelled":0,"total_spent":31.50}`).
//
// A cancellation names only the order, so each placed order is remembered
// under `order/{orderId}` as `{"customer":"...","cents":N,"cancelled":false}`.

import { defineProjection, failed, fields, invalidEvent, json, kv } from "../../lib-js/reel.js";

// Cents are i64 in the Rust version. They stay plain numbers while they are
// safe integers (always, for real amounts: up to 2^53 cents); beyond that they
// become BigInts with Rust's semantics (`as i64` saturates, `+`/`-` wrap as in
// a release build), so even absurd amounts store the same bytes.
const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;
const SAFE = BigInt(Number.MAX_SAFE_INTEGER);

function narrow(n) {
  return n >= -SAFE && n <= SAFE ? Number(n) : n;
}

/// Amounts are decimals with two places; cents make the sums exact.
/// `(amount * 100.0 + 0.5).floor() as i64`
function toCents(amount) {
  const cents = Math.floor(amount * 100 + 0.5);
  if (Number.isSafeInteger(cents)) return cents;
  if (Number.isNaN(cents)) return 0;
  if (cents >= 2 ** 63) return I64_MAX;
  if (cents <= -(2 ** 63)) return I64_MIN;
  return BigInt(cents);
}

/// i64 `a + b`, wrapping.
function add(a, b) {
  if (typeof a === "number" && typeof b === "number") {
    const sum = a + b;
    if (Number.isSafeInteger(sum)) return sum;
  }
  return narrow(BigInt.asIntN(64, BigInt(a) + BigInt(b)));
}

/// i64 `a - b`, wrapping.
function sub(a, b) {
  return add(a, typeof b === "bigint" ? BigInt.asIntN(64, -b) : -b);
}

/// The stored JSON, written by hand so every language's version of this
/// projection produces the same bytes.
function statsJson(stats) {
  const cents = stats.totalSpentCents;
  const sign = cents < 0 ? "-" : "";
  let units;
  let fraction;
  if (typeof cents === "number") {
    const abs = Math.abs(cents);
    units = Math.floor(abs / 100);
    fraction = String(abs % 100).padStart(2, "0");
  } else {
    const abs = BigInt.asIntN(64, cents < 0n ? -cents : cents); // i64::MIN.abs() wraps
    units = abs / 100n;
    const rest = abs % 100n;
    fraction = rest < 0n ? String(rest) : String(rest).padStart(2, "0");
  }
  return `{"orders":${stats.orders},"cancelled":${stats.cancelled},"total_spent":${sign}${units}.${fraction}}`;
}

/// The stats under `key`, or zeros.
function load(key) {
  const text = kv.getString(key);
  if (text === null) return { orders: 0, cancelled: 0, totalSpentCents: 0 };
  let stored;
  try {
    stored = JSON.parse(text);
    fields.object(stored, "Stored");
    let total = fields.number(stored, "total_spent");
    if (Math.abs(total) * 100 >= 2 ** 52) {
      // Beyond 2^52 cents serde_json's f64 parsing can differ from JSON.parse
      // by an ulp; read it as serde_json does (see json.serdeF64).
      const exact = json.parse(text).total_spent;
      total = exact instanceof json.Float ? exact.value : Number(exact);
    }
    return {
      orders: fields.integer(stored, "orders"),
      cancelled: fields.integer(stored, "cancelled"),
      totalSpentCents: toCents(total),
    };
  } catch (e) {
    throw failed(`JSON: ${(e instanceof SyntaxError && json.syntaxError(text)) || e.message}`);
  }
}

/// What is remembered of a placed order, under `order/{id}`, or null.
function loadOrder(key) {
  let order = kv.getJson(key);
  if (order === null) return null;
  try {
    fields.object(order, "OrderRef");
    if (typeof order.cents === "number" && !Number.isSafeInteger(order.cents)) {
      // Beyond 2^53: read the exact i64 (json.parse keeps big integers as BigInt).
      order = json.parse(kv.getString(key));
      if (typeof order.cents !== "bigint" || order.cents < I64_MIN || order.cents > I64_MAX) {
        throw new TypeError(`invalid type: floating point \`${order.cents.value ?? order.cents}\`, expected i64`);
      }
      return { customer: fields.string(order, "customer"), cents: order.cents, cancelled: fields.boolean(order, "cancelled") };
    }
    return {
      customer: fields.string(order, "customer"),
      cents: fields.integer(order, "cents"),
      cancelled: fields.boolean(order, "cancelled"),
    };
  } catch (e) {
    throw failed(`kv value of \`${key}\` is not the expected JSON: ${e.message}`);
  }
}

function saveOrder(key, order) {
  // Field order as serde_json writes the Rust struct: customer, cents, cancelled.
  const ref = { customer: order.customer, cents: order.cents, cancelled: order.cancelled };
  if (typeof ref.cents === "bigint") kv.set(key, json.stringify(ref));
  else kv.setJson(key, ref);
}

export const { describe, setup, handle, query } = defineProjection({
  manifest: {
    name: "customer-stats-js",
    version: "1",
    eventTypes: ["order.placed", "order.cancelled"],
  },

  events: {
    "order.placed": (data) => {
      fields.object(data, "OrderPlaced");
      return {
        orderId: fields.string(data, "orderId"),
        customerId: fields.string(data, "customerId"),
        total: fields.number(data, "total"),
      };
    },
    "order.cancelled": (data) => {
      fields.object(data, "OrderCancelled");
      return { orderId: fields.string(data, "orderId") };
    },
  },

  handle(event) {
    const data = event.data;
    if (event.eventType === "order.placed") {
      const cents = toCents(data.total);
      const key = `customer/${data.customerId}`;
      const stats = load(key);
      stats.orders += 1;
      stats.totalSpentCents = add(stats.totalSpentCents, cents);
      kv.set(key, statsJson(stats));
      saveOrder(`order/${data.orderId}`, { customer: data.customerId, cents, cancelled: false });
    } else {
      const orderKey = `order/${data.orderId}`;
      const order = loadOrder(orderKey);
      if (order === null) throw invalidEvent(`order ${data.orderId} was never placed`);
      if (order.cancelled) return;
      const key = `customer/${order.customer}`;
      const stats = load(key);
      stats.cancelled += 1;
      stats.totalSpentCents = sub(stats.totalSpentCents, order.cents);
      kv.set(key, statsJson(stats));
      order.cancelled = true;
      saveOrder(orderKey, order);
    }
  },

  query(name, args) {
    switch (name) {
      case "customer": {
        const id = args !== null && typeof args === "object" && !Array.isArray(args) ? args.customerId : undefined;
        if (typeof id !== "string") throw failed('customer needs {"customerId": "..."}');
        const text = kv.getString(`customer/${id}`);
        if (text === null) return "null";
        // Parsed and printed again as serde_json does (keys sorted, f64).
        let stored;
        try {
          stored = json.parse(text);
        } catch (e) {
          throw failed(`JSON: ${e.message}`);
        }
        return json.stringify(stored, { sortKeys: true });
      }
      default:
        throw failed(`unknown query \`${name}\`; this projection has \`customer\``);
    }
  },
});
