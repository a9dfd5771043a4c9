/* `order-summaries-c`: one row per order, kept in SQL. The C twin of
 * ../order-summaries/src/lib.rs: same statements, same table, same query.
 *
 * - `order.placed` upserts the row with status `placed`;
 * - `order.shipped` sets status `shipped`, the tracking number and `shipped_at`;
 * - `order.cancelled` sets status `cancelled`.
 *
 * `item_count` is the sum of the items' quantities. Timestamps come from the
 * event's `occurred_at`. The query `customer-orders` with `{"customerId": ...}`
 * returns that customer's orders, newest `placed_at` first, at most 50. */
#include <string.h>

#include "reel_host.h"

static const char *const EVENT_TYPES[] = {"order.placed", "order.shipped", "order.cancelled"};

const reel_manifest reel_projection_manifest = {
    .name = "order-summaries-c",
    .version = "1",
    .event_types = EVENT_TYPES,
    .event_type_count = 3,
};

/* The statement texts are the Rust version's, character for character. */
static const char CREATE_TABLE[] =
    "CREATE TABLE IF NOT EXISTS order_summaries (\n"
    "                order_id TEXT PRIMARY KEY,\n"
    "                customer_id TEXT NOT NULL,\n"
    "                item_count BIGINT NOT NULL,\n"
    "                total DOUBLE PRECISION NOT NULL,\n"
    "                status TEXT NOT NULL,\n"
    "                placed_at TEXT NOT NULL,\n"
    "                tracking_number TEXT,\n"
    "                shipped_at TEXT\n"
    "            )";

/* On PostgreSQL: text keys compared bytewise, room on each page for an
 * order's one later update (see the Rust version). */
static const char CREATE_TABLE_POSTGRES[] =
    "CREATE TABLE IF NOT EXISTS order_summaries (\n"
    "                order_id TEXT COLLATE \"C\" PRIMARY KEY,\n"
    "                customer_id TEXT COLLATE \"C\" NOT NULL,\n"
    "                item_count BIGINT NOT NULL,\n"
    "                total DOUBLE PRECISION NOT NULL,\n"
    "                status TEXT NOT NULL,\n"
    "                placed_at TEXT COLLATE \"C\" NOT NULL,\n"
    "                tracking_number TEXT,\n"
    "                shipped_at TEXT\n"
    "            ) WITH (fillfactor = 60)";

static const char CREATE_INDEX[] =
    "CREATE INDEX IF NOT EXISTS order_summaries_by_customer ON order_summaries (customer_id, placed_at)";

static const char UPSERT_PLACED[] =
    "INSERT INTO order_summaries "
    "(order_id, customer_id, item_count, total, status, placed_at) "
    "VALUES ($1, $2, $3, $4, 'placed', $5) "
    "ON CONFLICT (order_id) DO UPDATE SET customer_id = excluded.customer_id, "
    "item_count = excluded.item_count, total = excluded.total, status = 'placed', "
    "placed_at = excluded.placed_at";

static const char MARK_SHIPPED[] =
    "UPDATE order_summaries SET status = 'shipped', tracking_number = $2, shipped_at = $3 WHERE order_id = $1";

static const char MARK_CANCELLED[] = "UPDATE order_summaries SET status = 'cancelled' WHERE order_id = $1";

static const char CUSTOMER_ORDERS[] =
    "SELECT order_id, customer_id, item_count, total, status, placed_at, "
    "tracking_number, shipped_at FROM order_summaries WHERE customer_id = $1 "
    "ORDER BY placed_at DESC, order_id DESC LIMIT 50";

int reel_projection_init(reel_buf *err) {
    (void)err;
    reel_sql_execute(strcmp(reel_sql_dialect(), "postgres") == 0 ? CREATE_TABLE_POSTGRES : CREATE_TABLE, 0);
    reel_sql_execute(CREATE_INDEX, 0);
    return REEL_OK;
}

/* One element of `items`: a LineItem { productId, quantity, price }; adds
 * its quantity to the running sum (wrapping like Rust's release build). */
static int line_item(reel_de *de, void *ctx) {
    reel_str product_id;
    int64_t quantity;
    double price;
    const reel_de_field fields[] = {
        {"productId", REEL_DE_STR, &product_id},
        {"quantity", REEL_DE_I64, &quantity},
        {"price", REEL_DE_F64, &price},
    };
    int rc = reel_de_struct(de, "LineItem", fields, 3);
    if (rc == 0) *(uint64_t *)ctx += (uint64_t)quantity;
    return rc;
}

static int placed(const reel_event *ev, reel_buf *err) {
    reel_str order_id, customer_id;
    uint64_t item_count = 0;
    double total;
    const reel_de_field fields[] = {
        {"orderId", REEL_DE_STR, &order_id},
        {"customerId", REEL_DE_STR, &customer_id},
        {"items", REEL_DE_SEQ, 0, line_item, &item_count},
        {"total", REEL_DE_F64, &total},
    };
    if (reel_de_event(ev, "OrderPlaced", fields, 4, err)) return REEL_DECODE_ERROR;
    reel_params p = {.len = 0};
    reel_param_text(&p, order_id);
    reel_param_text(&p, customer_id);
    reel_param_int(&p, (int64_t)item_count);
    reel_param_real(&p, total);
    reel_param_text(&p, ev->occurred_at);
    reel_sql_execute(UPSERT_PLACED, &p);
    return REEL_OK;
}

static int shipped(const reel_event *ev, reel_buf *err) {
    reel_str order_id, tracking_number;
    const reel_de_field fields[] = {
        {"orderId", REEL_DE_STR, &order_id},
        {"trackingNumber", REEL_DE_STR, &tracking_number},
    };
    if (reel_de_event(ev, "OrderShipped", fields, 2, err)) return REEL_DECODE_ERROR;
    reel_params p = {.len = 0};
    reel_param_text(&p, order_id);
    reel_param_text(&p, tracking_number);
    reel_param_text(&p, ev->occurred_at);
    reel_sql_execute(MARK_SHIPPED, &p);
    return REEL_OK;
}

static int cancelled(const reel_event *ev, reel_buf *err) {
    reel_str order_id, reason;
    const reel_de_field fields[] = {
        {"orderId", REEL_DE_STR, &order_id},
        {"reason", REEL_DE_OPT_STR, &reason},
    };
    if (reel_de_event(ev, "OrderCancelled", fields, 2, err)) return REEL_DECODE_ERROR;
    reel_params p = {.len = 0};
    reel_param_text(&p, order_id);
    reel_sql_execute(MARK_CANCELLED, &p);
    return REEL_OK;
}

int reel_projection_handle(const reel_event *ev, reel_buf *err) {
    /* The glue only delivers the manifest's event types. */
    if (reel_str_eq(ev->event_type, "order.placed")) return placed(ev, err);
    if (reel_str_eq(ev->event_type, "order.shipped")) return shipped(ev, err);
    return cancelled(ev, err);
}

int reel_projection_query(reel_str name, const reel_json *args, reel_buf *out, reel_buf *err) {
    if (reel_str_eq(name, "customer-orders")) {
        const reel_json *id = reel_json_get(args, "customerId");
        if (!id || id->kind != REEL_JSON_STRING) {
            reel_buf_puts(err, "customer-orders needs {\"customerId\": \"...\"}");
            return REEL_FAILED;
        }
        reel_params p = {.len = 0};
        reel_param_text(&p, (reel_str){id->str, id->len});
        reel_projection_sql_rows_t rows;
        if (reel_sql_query(CUSTOMER_ORDERS, &p, &rows, err) != REEL_OK) return REEL_FAILED;
        reel_rows_to_json(out, &rows);
        reel_rows_free(&rows);
        return REEL_OK;
    }
    reel_buf_puts(err, "unknown query `");
    reel_buf_put(err, name.ptr, name.len);
    reel_buf_puts(err, "`; this projection has `customer-orders`");
    return REEL_FAILED;
}
