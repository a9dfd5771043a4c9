// `order-summaries-js`: one row per order, kept in SQL. The JavaScript twin of
// ../../order-summaries (Rust): same statements, same table, same query output.
//
// - `order.placed` upserts the row with status `placed`;
// - `order.shipped` sets status `shipped`, the tracking number and `shipped_at`;
// - `order.cancelled` sets status `cancelled`.
//
// `item_count` is the sum of the items' quantities. Timestamps come from the
// event's `occurredAt`. The query `customer-orders` with `{"customerId": ...}`
// returns that customer's orders, newest `placed_at` first, at most 50.

import { defineProjection, failed, fields, sql, value } from "../../lib-js/reel.js";

const UPSERT_PLACED =
  "INSERT INTO order_summaries " +
  "(order_id, customer_id, item_count, total, status, placed_at) " +
  "VALUES ($1, $2, $3, $4, 'placed', $5) " +
  "ON CONFLICT (order_id) DO UPDATE SET customer_id = excluded.customer_id, " +
  "item_count = excluded.item_count, total = excluded.total, status = 'placed', " +
  "placed_at = excluded.placed_at";

const MARK_SHIPPED =
  "UPDATE order_summaries SET status = 'shipped', tracking_number = $2, shipped_at = $3 WHERE order_id = $1";

const MARK_CANCELLED = "UPDATE order_summaries SET status = 'cancelled' WHERE order_id = $1";

const CUSTOMER_ORDERS =
  "SELECT order_id, customer_id, item_count, total, status, placed_at, " +
  "tracking_number, shipped_at FROM order_summaries WHERE customer_id = $1 " +
  "ORDER BY placed_at DESC, order_id DESC LIMIT 50";

// Same text as the Rust version (the table's DDL is stored as written).
const CREATE_TABLE = `CREATE TABLE IF NOT EXISTS order_summaries (
                order_id TEXT PRIMARY KEY,
                customer_id TEXT NOT NULL,
                item_count BIGINT NOT NULL,
                total DOUBLE PRECISION NOT NULL,
                status TEXT NOT NULL,
                placed_at TEXT NOT NULL,
                tracking_number TEXT,
                shipped_at TEXT
            )`;

// On PostgreSQL: text keys compared bytewise, room on each page for an
// order's one later update (see the Rust version).
const CREATE_TABLE_POSTGRES = `CREATE TABLE IF NOT EXISTS order_summaries (
                order_id TEXT COLLATE "C" PRIMARY KEY,
                customer_id TEXT COLLATE "C" NOT NULL,
                item_count BIGINT NOT NULL,
                total DOUBLE PRECISION NOT NULL,
                status TEXT NOT NULL,
                placed_at TEXT COLLATE "C" NOT NULL,
                tracking_number TEXT,
                shipped_at TEXT
            ) WITH (fillfactor = 60)`;

const CREATE_INDEX =
  "CREATE INDEX IF NOT EXISTS order_summaries_by_customer ON order_summaries (customer_id, placed_at)";

function lineItem(item) {
  fields.object(item, "LineItem");
  return {
    productId: fields.string(item, "productId"),
    quantity: fields.integer(item, "quantity"),
    price: fields.number(item, "price"),
  };
}

export const { describe, setup, handle, query } = defineProjection({
  manifest: {
    name: "order-summaries-js",
    version: "1",
    eventTypes: ["order.placed", "order.shipped", "order.cancelled"],
  },

  // The payloads, checked as the Rust version's serde structs check them.
  events: {
    "order.placed": (data) => {
      fields.object(data, "OrderPlaced");
      return {
        orderId: fields.string(data, "orderId"),
        customerId: fields.string(data, "customerId"),
        items: fields.array(data, "items", lineItem),
        total: fields.number(data, "total"),
      };
    },
    "order.shipped": (data) => {
      fields.object(data, "OrderShipped");
      return {
        orderId: fields.string(data, "orderId"),
        trackingNumber: fields.string(data, "trackingNumber"),
      };
    },
    "order.cancelled": (data) => {
      fields.object(data, "OrderCancelled");
      return { orderId: fields.string(data, "orderId"), reason: fields.optionalString(data, "reason") };
    },
  },

  init() {
    sql.execute(sql.dialect() === "postgres" ? CREATE_TABLE_POSTGRES : CREATE_TABLE);
    sql.execute(CREATE_INDEX);
  },

  handle(event) {
    const data = event.data;
    switch (event.eventType) {
      case "order.placed": {
        let itemCount = 0;
        for (const item of data.items) itemCount += item.quantity;
        sql.execute(UPSERT_PLACED, [
          value.text(data.orderId),
          value.text(data.customerId),
          value.integer(itemCount),
          value.real(data.total),
          value.text(event.occurredAt),
        ]);
        break;
      }
      case "order.shipped":
        sql.execute(MARK_SHIPPED, [
          value.text(data.orderId),
          value.text(data.trackingNumber),
          value.text(event.occurredAt),
        ]);
        break;
      case "order.cancelled":
        sql.execute(MARK_CANCELLED, [value.text(data.orderId)]);
        break;
    }
  },

  query(name, args) {
    switch (name) {
      case "customer-orders": {
        const customerId =
          args !== null && typeof args === "object" && !Array.isArray(args) ? args.customerId : undefined;
        if (typeof customerId !== "string") throw failed('customer-orders needs {"customerId": "..."}');
        return sql.query(CUSTOMER_ORDERS, [value.text(customerId)]).toJson();
      }
      default:
        throw failed(`unknown query \`${name}\`; this projection has \`customer-orders\``);
    }
  },
});
