#include "reel_host.h"

#include <stdlib.h>
#include <string.h>

static projection_string_t wit_str(reel_str s) {
    return (projection_string_t){(uint8_t *)s.ptr, s.len};
}

static reel_str from_wit(const projection_string_t *s) {
    return (reel_str){(const char *)s->ptr, s->len};
}

/* ---- kv ------------------------------------------------------------------ */

int reel_kv_get(reel_str key, projection_list_u8_t *value) {
    projection_string_t k = wit_str(key);
    return reel_projection_kv_get(&k, value);
}

void reel_kv_set(reel_str key, const void *value, size_t len) {
    projection_string_t k = wit_str(key);
    projection_list_u8_t v = {(uint8_t *)value, len};
    reel_projection_kv_set(&k, &v);
}

void reel_kv_delete(reel_str key) {
    projection_string_t k = wit_str(key);
    reel_projection_kv_delete(&k);
}

/* ---- sql ----------------------------------------------------------------- */

static reel_projection_sql_value_t *next_param(reel_params *p) {
    if (p->len >= REEL_MAX_PARAMS) __builtin_trap();
    return &p->items[p->len++];
}

void reel_param_null(reel_params *p) { next_param(p)->tag = REEL_PROJECTION_SQL_VALUE_NULL; }

void reel_param_int(reel_params *p, int64_t v) {
    reel_projection_sql_value_t *x = next_param(p);
    x->tag = REEL_PROJECTION_SQL_VALUE_INTEGER;
    x->val.integer = v;
}

void reel_param_real(reel_params *p, double v) {
    reel_projection_sql_value_t *x = next_param(p);
    x->tag = REEL_PROJECTION_SQL_VALUE_REAL;
    x->val.real = v;
}

void reel_param_text(reel_params *p, reel_str v) {
    reel_projection_sql_value_t *x = next_param(p);
    x->tag = REEL_PROJECTION_SQL_VALUE_TEXT;
    x->val.text = wit_str(v);
}

void reel_param_blob(reel_params *p, const void *v, size_t len) {
    reel_projection_sql_value_t *x = next_param(p);
    x->tag = REEL_PROJECTION_SQL_VALUE_BLOB;
    x->val.blob = (projection_list_u8_t){(uint8_t *)v, len};
}

const char *reel_sql_dialect(void) {
    static char name[16];
    if (!name[0]) {
        projection_string_t s;
        reel_projection_sql_dialect(&s);
        size_t n = s.len < sizeof name - 1 ? s.len : sizeof name - 1;
        memcpy(name, s.ptr, n);
        name[n] = 0;
        projection_string_free(&s);
    }
    return name;
}

void reel_sql_execute(const char *statement, const reel_params *params) {
    projection_string_t s = {(uint8_t *)statement, strlen(statement)};
    reel_projection_sql_list_value_t list = {params ? (reel_projection_sql_value_t *)params->items : 0,
                                             params ? params->len : 0};
    reel_projection_sql_execute(&s, &list);
}

int reel_sql_query(const char *statement, const reel_params *params, reel_projection_sql_rows_t *rows,
                   reel_buf *err) {
    projection_string_t s = {(uint8_t *)statement, strlen(statement)};
    reel_projection_sql_list_value_t list = {params ? (reel_projection_sql_value_t *)params->items : 0,
                                             params ? params->len : 0};
    reel_projection_sql_sql_error_t e;
    if (reel_projection_sql_query(&s, &list, rows, &e)) return REEL_OK;
    reel_buf_puts(err, "SQL error ");
    reel_buf_put(err, (const char *)e.code.ptr, e.code.len);
    reel_buf_puts(err, ": ");
    reel_buf_put(err, (const char *)e.message.ptr, e.message.len);
    reel_projection_sql_sql_error_free(&e);
    return REEL_FAILED;
}

void reel_value_to_json(reel_buf *out, const reel_projection_sql_value_t *v) {
    switch (v->tag) {
    case REEL_PROJECTION_SQL_VALUE_INTEGER: reel_buf_put_i64(out, v->val.integer); return;
    case REEL_PROJECTION_SQL_VALUE_REAL: reel_buf_put_json_f64(out, v->val.real); return;
    case REEL_PROJECTION_SQL_VALUE_TEXT:
        reel_buf_put_json_string(out, (const char *)v->val.text.ptr, v->val.text.len);
        return;
    case REEL_PROJECTION_SQL_VALUE_BLOB:
        reel_buf_putc(out, '[');
        for (size_t i = 0; i < v->val.blob.len; i++) {
            if (i) reel_buf_putc(out, ',');
            reel_buf_put_u64(out, v->val.blob.ptr[i]);
        }
        reel_buf_putc(out, ']');
        return;
    default: reel_buf_puts(out, "null"); return;
    }
}

static int cmp_wit_str(const projection_string_t *a, const projection_string_t *b) {
    size_t n = a->len < b->len ? a->len : b->len;
    int c = n ? memcmp(a->ptr, b->ptr, n) : 0;
    if (c) return c;
    return a->len < b->len ? -1 : (a->len > b->len);
}

void reel_rows_to_json(reel_buf *out, const reel_projection_sql_rows_t *rows) {
    /* serde_json::Map is a BTreeMap here: keys in byte order, and a column
     * name that repeats keeps the last value. Work out that order once. */
    size_t nc = rows->columns.len;
    size_t *order = malloc((nc ? nc : 1) * sizeof *order);
    if (!order) __builtin_trap();
    size_t n = 0;
    for (size_t i = 0; i < nc; i++) {
        /* insertion sort by name, later equal names replace earlier ones */
        size_t j = n;
        int replaced = 0;
        for (size_t k = 0; k < n; k++) {
            if (cmp_wit_str(&rows->columns.ptr[order[k]], &rows->columns.ptr[i]) == 0) {
                order[k] = i;
                replaced = 1;
                break;
            }
        }
        if (replaced) continue;
        while (j > 0 && cmp_wit_str(&rows->columns.ptr[order[j - 1]], &rows->columns.ptr[i]) > 0) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = i;
        n++;
    }
    reel_buf_putc(out, '[');
    for (size_t r = 0; r < rows->rows.len; r++) {
        const reel_projection_sql_list_value_t *row = &rows->rows.ptr[r];
        if (r) reel_buf_putc(out, ',');
        reel_buf_putc(out, '{');
        int first = 1;
        for (size_t k = 0; k < n; k++) {
            size_t c = order[k];
            if (c >= row->len) continue; /* zip stops at the shorter list */
            if (!first) reel_buf_putc(out, ',');
            first = 0;
            reel_buf_put_json_string(out, (const char *)rows->columns.ptr[c].ptr, rows->columns.ptr[c].len);
            reel_buf_putc(out, ':');
            reel_value_to_json(out, &row->ptr[c]);
        }
        reel_buf_putc(out, '}');
    }
    reel_buf_putc(out, ']');
    free(order);
}

/* ---- log ----------------------------------------------------------------- */

void reel_log(reel_projection_log_level_t level, reel_str message) {
    projection_string_t m = wit_str(message);
    reel_projection_log_log(level, &m);
}

/* ---- exports ------------------------------------------------------------- */

static void set_error(projection_error_t *err, int kind, const reel_buf *msg) {
    err->tag = kind == REEL_INVALID_EVENT ? REEL_PROJECTION_TYPES_ERROR_INVALID_EVENT : REEL_PROJECTION_TYPES_ERROR_FAILED;
    projection_string_dup_n(&err->val.failed, msg->ptr ? msg->ptr : "", msg->len);
}

static projection_list_string_t dup_list(const char *const *items, size_t n) {
    projection_list_string_t list = {0, n};
    if (n) {
        list.ptr = malloc(n * sizeof *list.ptr);
        if (!list.ptr) __builtin_trap();
        for (size_t i = 0; i < n; i++) projection_string_dup(&list.ptr[i], items[i]);
    }
    return list;
}

void exports_projection_describe(projection_manifest_t *ret) {
    const reel_manifest *m = &reel_projection_manifest;
    projection_string_dup(&ret->name, m->name);
    projection_string_dup(&ret->version, m->version);
    ret->event_types = dup_list(m->event_types, m->event_type_count);
    ret->stream_prefixes = dup_list(m->stream_prefixes, m->stream_prefix_count);
    ret->on_error = m->on_error_skip ? REEL_PROJECTION_TYPES_ON_ERROR_SKIP : REEL_PROJECTION_TYPES_ON_ERROR_STOP;
}

bool exports_projection_setup(projection_error_t *err) {
    reel_buf msg = REEL_BUF_INIT;
    int rc = reel_projection_init(&msg);
    if (rc != REEL_OK) set_error(err, rc, &msg);
    reel_buf_free(&msg);
    return rc == REEL_OK;
}

/* The arena for payloads and arguments, reused from call to call. */
static reel_json_doc doc = REEL_JSON_DOC_INIT;

int reel_de_event(const reel_event *event, const char *name, const reel_de_field *fields, size_t count,
                  reel_buf *err) {
    return reel_de_from_text(&doc, event->data.ptr, event->data.len, name, fields, count, err) ? REEL_DECODE_ERROR
                                                                                            : REEL_OK;
}

/* serde's "unknown variant" message for an event type not in the manifest. */
static void unknown_variant(reel_buf *msg, reel_str type) {
    const reel_manifest *m = &reel_projection_manifest;
    reel_buf_puts(msg, "unknown variant `");
    reel_buf_put(msg, type.ptr, type.len);
    reel_buf_puts(msg, "`, ");
    reel_buf_puts(msg, m->event_type_count <= 2 ? "expected " : "expected one of ");
    for (size_t i = 0; i < m->event_type_count; i++) {
        if (i) reel_buf_puts(msg, m->event_type_count == 2 ? " or " : ", ");
        reel_buf_putc(msg, '`');
        reel_buf_puts(msg, m->event_types[i]);
        reel_buf_putc(msg, '`');
    }
}

static int accepted(reel_str type) {
    const reel_manifest *m = &reel_projection_manifest;
    if (m->event_type_count == 0) return 1;
    for (size_t i = 0; i < m->event_type_count; i++)
        if (reel_str_eq(type, m->event_types[i])) return 1;
    return 0;
}

bool exports_projection_handle(projection_list_event_t *events, projection_handle_error_t *err) {
    reel_buf msg = REEL_BUF_INIT;
    reel_buf why = REEL_BUF_INIT;
    bool ok = true;
    for (size_t i = 0; i < events->len; i++) {
        const projection_event_t *e = &events->ptr[i];
        reel_event ev = {
            e->position,      from_wit(&e->stream_id), e->version,
            from_wit(&e->event_type), from_wit(&e->data), from_wit(&e->metadata), from_wit(&e->occurred_at),
        };
        int rc;
        reel_buf_clear(&msg);
        reel_buf_clear(&why);
        if (!accepted(ev.event_type)) {
            unknown_variant(&why, ev.event_type);
            rc = REEL_DECODE_ERROR;
        } else {
            reel_json_doc_reset(&doc);
            rc = reel_projection_handle(&ev, &why);
        }
        if (rc == REEL_OK) continue;
        if (rc == REEL_DECODE_ERROR) {
            reel_buf_putc(&msg, '`');
            reel_buf_put(&msg, ev.event_type.ptr, ev.event_type.len);
            reel_buf_puts(&msg, "` event: ");
            reel_buf_put(&msg, why.ptr, why.len);
            rc = REEL_INVALID_EVENT;
        } else {
            reel_buf_put(&msg, why.ptr, why.len);
        }
        err->position = ev.position;
        set_error(&err->error, rc, &msg);
        ok = false;
        break;
    }
    reel_buf_free(&msg);
    reel_buf_free(&why);
    projection_list_event_free(events);
    return ok;
}

/* Rust's `str::trim().is_empty()`: only Unicode White_Space. */
static int blank(const projection_string_t *s) {
    const unsigned char *p = s->ptr;
    size_t i = 0, n = s->len;
    while (i < n) {
        unsigned c = p[i];
        if (c == ' ' || (c >= 0x09 && c <= 0x0D)) { i++; continue; }
        unsigned cp;
        size_t k;
        if (c >= 0xC0 && c < 0xE0 && i + 1 < n) { cp = ((c & 0x1F) << 6) | (p[i + 1] & 0x3F); k = 2; }
        else if (c >= 0xE0 && c < 0xF0 && i + 2 < n) {
            cp = ((c & 0x0F) << 12) | ((p[i + 1] & 0x3F) << 6) | (p[i + 2] & 0x3F);
            k = 3;
        } else return 0;
        if (cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
            cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000) {
            i += k;
            continue;
        }
        return 0;
    }
    return 1;
}

bool exports_projection_query(projection_string_t *name, projection_string_t *args, projection_string_t *ret,
                              projection_error_t *err) {
    static const reel_json null_value = {.kind = REEL_JSON_NULL};
    reel_buf out = REEL_BUF_INIT;
    reel_buf why = REEL_BUF_INIT;
    reel_buf msg = REEL_BUF_INIT;
    int rc = REEL_OK;
    const reel_json *root = &null_value;
    reel_json_doc_reset(&doc);
    if (!blank(args)) {
        root = reel_json_parse(&doc, (const char *)args->ptr, args->len, &why);
        if (!root) {
            reel_buf_puts(&msg, "query arguments are not JSON: ");
            reel_buf_put(&msg, why.ptr, why.len);
            rc = REEL_FAILED;
        }
    }
    if (rc == REEL_OK) {
        rc = reel_projection_query(from_wit(name), root, &out, &msg);
        if (rc == REEL_DECODE_ERROR) rc = REEL_FAILED;
    }
    if (rc == REEL_OK) {
        ret->ptr = (uint8_t *)out.ptr; /* handed over: post-return frees it */
        ret->len = out.len;
    } else {
        set_error(err, rc, &msg);
        reel_buf_free(&out);
    }
    reel_buf_free(&why);
    reel_buf_free(&msg);
    projection_string_free(name);
    projection_string_free(args);
    return rc == REEL_OK;
}
