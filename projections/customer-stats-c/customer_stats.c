/* `customer-stats-c`: per customer, `{"orders", "cancelled", "total_spent"}`
 * as JSON under the key `customer/{customerId}`. The C twin of
 * ../customer-stats/src/lib.rs: same keys, same bytes.
 *
 * - `orders` counts placed orders, `cancelled` the cancelled ones;
 * - `total_spent` sums the totals of orders not cancelled, in exact cents,
 *   written with two decimals (`{"orders":2,"cancelled":0,"total_spent":31.50}`).
 *
 * A cancellation names only the order, so each placed order is remembered
 * under `order/{orderId}` as `{"customer":"...","cents":N,"cancelled":false}`. */
#include "reel_host.h"

static const char *const EVENT_TYPES[] = {"order.placed", "order.cancelled"};

const reel_manifest reel_projection_manifest = {
    .name = "customer-stats-c",
    .version = "1",
    .event_types = EVENT_TYPES,
    .event_type_count = 2,
};

typedef struct {
    int64_t orders;
    int64_t cancelled;
    int64_t total_spent_cents;
} customer_stats;

/* Amounts are decimals with two places; cents make the sums exact.
 * Rust's `(amount * 100.0 + 0.5).floor() as i64`: a saturating cast, NaN 0. */
static int64_t to_cents(double amount) {
    double x = __builtin_floor(amount * 100.0 + 0.5);
    if (x != x) return 0;
    if (x >= 9223372036854775808.0) return INT64_MAX;
    if (x < -9223372036854775808.0) return INT64_MIN;
    return (int64_t)x;
}

static int64_t wrapping_add(int64_t a, int64_t b) { return (int64_t)((uint64_t)a + (uint64_t)b); }

/* The stored JSON, written by hand like the Rust version's `to_json`. */
static void stats_json(reel_buf *b, customer_stats s) {
    int64_t cents = s.total_spent_cents;
    /* cents.abs(): wraps to i64::MIN at i64::MIN in a release build */
    int64_t abs = cents < 0 ? (int64_t)((uint64_t)0 - (uint64_t)cents) : cents;
    int64_t whole = abs / 100, frac = abs % 100;
    reel_buf_puts(b, "{\"orders\":");
    reel_buf_put_i64(b, s.orders);
    reel_buf_puts(b, ",\"cancelled\":");
    reel_buf_put_i64(b, s.cancelled);
    reel_buf_puts(b, ",\"total_spent\":");
    if (cents < 0) reel_buf_putc(b, '-');
    reel_buf_put_i64(b, whole);
    reel_buf_putc(b, '.');
    if (frac >= 0 && frac < 10) reel_buf_putc(b, '0'); /* {:02} */
    reel_buf_put_i64(b, frac);
    reel_buf_putc(b, '}');
}

/* The customer's stats, or zeros when there are none yet. */
static int load(reel_str key, customer_stats *s, reel_buf *err) {
    s->orders = s->cancelled = s->total_spent_cents = 0;
    projection_list_u8_t bytes;
    if (!reel_kv_get(key, &bytes)) return REEL_OK;
    reel_json_doc doc = REEL_JSON_DOC_INIT;
    reel_buf why = REEL_BUF_INIT;
    double total_spent = 0;
    int rc = REEL_OK;
    const reel_de_field fields[] = {
        {"orders", REEL_DE_I64, &s->orders},
        {"cancelled", REEL_DE_I64, &s->cancelled},
        {"total_spent", REEL_DE_F64, &total_spent},
    };
    if (reel_de_from_text(&doc, (const char *)bytes.ptr, bytes.len, "Stored", fields, 3, &why)) {
        reel_buf_puts(err, "JSON: ");
        reel_buf_put(err, why.ptr, why.len);
        rc = REEL_FAILED;
    } else {
        s->total_spent_cents = to_cents(total_spent);
    }
    reel_buf_free(&why);
    reel_json_doc_free(&doc);
    reel_bytes_free(&bytes);
    return rc;
}

static void store(reel_str key, customer_stats s) {
    reel_buf b = REEL_BUF_INIT;
    stats_json(&b, s);
    reel_kv_set(key, b.ptr, b.len);
    reel_buf_free(&b);
}

/* What is remembered of a placed order, as serde_json writes the struct
 * `OrderRef { customer, cents, cancelled }`. */
static void store_order(reel_str key, reel_str customer, int64_t cents, int cancelled) {
    reel_buf b = REEL_BUF_INIT;
    reel_buf_puts(&b, "{\"customer\":");
    reel_buf_put_json_string(&b, customer.ptr, customer.len);
    reel_buf_puts(&b, ",\"cents\":");
    reel_buf_put_i64(&b, cents);
    reel_buf_puts(&b, cancelled ? ",\"cancelled\":true}" : ",\"cancelled\":false}");
    reel_kv_set(key, b.ptr, b.len);
    reel_buf_free(&b);
}

static void key_of(reel_buf *b, const char *prefix, reel_str id) {
    reel_buf_clear(b);
    reel_buf_puts(b, prefix);
    reel_buf_put(b, id.ptr, id.len);
}

static reel_str as_str(const reel_buf *b) { return (reel_str){b->ptr, b->len}; }

static int placed(const reel_event *ev, reel_buf *err) {
    reel_str order_id, customer_id;
    double total;
    const reel_de_field fields[] = {
        {"orderId", REEL_DE_STR, &order_id},
        {"customerId", REEL_DE_STR, &customer_id},
        {"total", REEL_DE_F64, &total},
    };
    if (reel_de_event(ev, "OrderPlaced", fields, 3, err)) return REEL_DECODE_ERROR;
    int64_t cents = to_cents(total);
    reel_buf key = REEL_BUF_INIT;
    key_of(&key, "customer/", customer_id);
    customer_stats s;
    int rc = load(as_str(&key), &s, err);
    if (rc == REEL_OK) {
        s.orders = wrapping_add(s.orders, 1);
        s.total_spent_cents = wrapping_add(s.total_spent_cents, cents);
        store(as_str(&key), s);
        key_of(&key, "order/", order_id);
        store_order(as_str(&key), customer_id, cents, 0);
    }
    reel_buf_free(&key);
    return rc;
}

static int cancelled(const reel_event *ev, reel_buf *err) {
    reel_str order_id;
    const reel_de_field fields[] = {{"orderId", REEL_DE_STR, &order_id}};
    if (reel_de_event(ev, "OrderCancelled", fields, 1, err)) return REEL_DECODE_ERROR;
    reel_buf order_key = REEL_BUF_INIT;
    key_of(&order_key, "order/", order_id);
    projection_list_u8_t bytes;
    if (!reel_kv_get(as_str(&order_key), &bytes)) {
        reel_buf_puts(err, "order ");
        reel_buf_put(err, order_id.ptr, order_id.len);
        reel_buf_puts(err, " was never placed");
        reel_buf_free(&order_key);
        return REEL_INVALID_EVENT;
    }
    reel_json_doc doc = REEL_JSON_DOC_INIT;
    reel_buf why = REEL_BUF_INIT;
    reel_buf key = REEL_BUF_INIT;
    reel_str customer;
    int64_t cents;
    int was_cancelled;
    int rc = REEL_OK;
    const reel_de_field ref_fields[] = {
        {"customer", REEL_DE_STR, &customer},
        {"cents", REEL_DE_I64, &cents},
        {"cancelled", REEL_DE_BOOL, &was_cancelled},
    };
    if (reel_de_from_text(&doc, (const char *)bytes.ptr, bytes.len, "OrderRef", ref_fields, 3, &why)) {
        reel_buf_puts(err, "kv value of `");
        reel_buf_put(err, order_key.ptr, order_key.len);
        reel_buf_puts(err, "` is not the expected JSON: ");
        reel_buf_put(err, why.ptr, why.len);
        rc = REEL_FAILED;
    } else if (!was_cancelled) {
        key_of(&key, "customer/", customer);
        customer_stats s;
        rc = load(as_str(&key), &s, err);
        if (rc == REEL_OK) {
            s.cancelled = wrapping_add(s.cancelled, 1);
            s.total_spent_cents = (int64_t)((uint64_t)s.total_spent_cents - (uint64_t)cents);
            store(as_str(&key), s);
            store_order(as_str(&order_key), customer, cents, 1);
        }
    }
    reel_buf_free(&key);
    reel_buf_free(&why);
    reel_json_doc_free(&doc); /* `customer` points into doc or bytes: free them last */
    reel_bytes_free(&bytes);
    reel_buf_free(&order_key);
    return rc;
}

int reel_projection_init(reel_buf *err) {
    (void)err;
    return REEL_OK;
}

int reel_projection_handle(const reel_event *ev, reel_buf *err) {
    /* The glue only delivers the manifest's event types. */
    if (reel_str_eq(ev->event_type, "order.placed")) return placed(ev, err);
    return cancelled(ev, err);
}

int reel_projection_query(reel_str name, const reel_json *args, reel_buf *out, reel_buf *err) {
    if (!reel_str_eq(name, "customer")) {
        reel_buf_puts(err, "unknown query `");
        reel_buf_put(err, name.ptr, name.len);
        reel_buf_puts(err, "`; this projection has `customer`");
        return REEL_FAILED;
    }
    const reel_json *id = reel_json_get(args, "customerId");
    if (!id || id->kind != REEL_JSON_STRING) {
        reel_buf_puts(err, "customer needs {\"customerId\": \"...\"}");
        return REEL_FAILED;
    }
    reel_buf key = REEL_BUF_INIT;
    key_of(&key, "customer/", (reel_str){id->str, id->len});
    projection_list_u8_t bytes;
    int rc = REEL_OK;
    if (!reel_kv_get(as_str(&key), &bytes)) {
        reel_buf_puts(out, "null");
    } else {
        /* serde_json::from_slice::<Value> then to_string: keys sorted,
         * `31.50` read as 31.5 and written back as `31.5`. */
        reel_json_doc doc = REEL_JSON_DOC_INIT;
        reel_buf why = REEL_BUF_INIT;
        const reel_json *v = reel_json_parse(&doc, (const char *)bytes.ptr, bytes.len, &why);
        if (v) {
            reel_json_write(out, v);
        } else {
            reel_buf_puts(err, "JSON: ");
            reel_buf_put(err, why.ptr, why.len);
            rc = REEL_FAILED;
        }
        reel_buf_free(&why);
        reel_json_doc_free(&doc);
        reel_bytes_free(&bytes);
    }
    reel_buf_free(&key);
    return rc;
}
