/* reel_host: thin wrappers over the bindings wit-bindgen generates for the
 * `projection` world (gen/projection.h), plus the world's four exports
 * implemented once (reel_host.c), so a projection only writes its manifest
 * and three callbacks:
 *
 *   const reel_manifest reel_projection_manifest = {...};
 *   int reel_projection_init(reel_buf *err);
 *   int reel_projection_handle(const reel_event *event, reel_buf *err);
 *   int reel_projection_query(reel_str name, const reel_json *args,
 *                             reel_buf *out, reel_buf *err);
 *
 * Each returns REEL_OK, or REEL_INVALID_EVENT / REEL_FAILED /
 * REEL_DECODE_ERROR with the message in `err`. The glue mirrors the Rust
 * SDK (guest-sdk/src/native.rs):
 *   - handle: the event type must be one of the manifest's event types (the
 *     Rust enum's variants), else "unknown variant"; the callback decodes
 *     the payload with reel_de_event; either failure is
 *     `invalid-event("`<type>` event: <why>")`. The first failing event
 *     fails the batch with its position.
 *   - query: `args` is parsed as JSON (empty means null); a parse failure is
 *     `failed("query arguments are not JSON: <why>")`. The callback writes
 *     the JSON result text to `out`.
 *
 * Ownership follows wit-bindgen's C conventions: export arguments belong to
 * the callee (freed here), export results are malloc'd (freed by the
 * generated post-return functions), import arguments are borrowed and import
 * results belong to the caller (free them with the helpers below). */
#ifndef REEL_HOST_H
#define REEL_HOST_H

#include <stddef.h>
#include <stdint.h>

#include "projection.h"
#include "reel_json.h"
#include "reel_str.h"

/* Callback results. REEL_DECODE_ERROR: the payload is not the expected
 * shape (the message says why, e.g. "missing field `orderId`"); the glue
 * reports it as invalid-event("`<type>` event: <why>"), as the Rust SDK
 * does for a payload serde cannot decode. */
enum { REEL_OK = 0, REEL_INVALID_EVENT = 1, REEL_FAILED = 2, REEL_DECODE_ERROR = 3 };

/* ---- the projection's side ---------------------------------------------- */

typedef struct {
    const char *name;
    const char *version;
    const char *const *event_types; /* also the accepted variants */
    size_t event_type_count;
    const char *const *stream_prefixes;
    size_t stream_prefix_count;
    int on_error_skip; /* 0: stop (default), 1: skip */
} reel_manifest;

typedef struct {
    int64_t position;
    reel_str stream_id;
    int64_t version;
    reel_str event_type;
    reel_str data;         /* the payload, JSON text: decode with reel_de_event */
    reel_str metadata;     /* JSON text */
    reel_str occurred_at;
} reel_event;

extern const reel_manifest reel_projection_manifest;

int reel_projection_init(reel_buf *err);
int reel_projection_handle(const reel_event *event, reel_buf *err);
int reel_projection_query(reel_str name, const reel_json *args, reel_buf *out, reel_buf *err);

/* Decode the event's payload as struct `name` (see reel_de_from_text in
 * reel_json.h), as the Rust SDK's serde decode does. REEL_OK, or
 * REEL_DECODE_ERROR with serde_json's message in `err`: return that. The
 * strings point into the event or into an arena kept until the next event. */
int reel_de_event(const reel_event *event, const char *name, const reel_de_field *fields, size_t count,
                  reel_buf *err);

/* ---- kv ------------------------------------------------------------------ */

/* The value under `key`: 1 and *value (free with reel_bytes_free), or 0. */
int reel_kv_get(reel_str key, projection_list_u8_t *value);
void reel_kv_set(reel_str key, const void *value, size_t len);
void reel_kv_delete(reel_str key);
static inline void reel_bytes_free(projection_list_u8_t *value) { projection_list_u8_free(value); }

/* ---- sql ----------------------------------------------------------------- */

#define REEL_MAX_PARAMS 16

/* Parameters borrow their text and blobs: keep them alive until the call. */
typedef struct {
    reel_projection_sql_value_t items[REEL_MAX_PARAMS];
    size_t len;
} reel_params;

void reel_param_null(reel_params *p);
void reel_param_int(reel_params *p, int64_t v);
void reel_param_real(reel_params *p, double v);
void reel_param_text(reel_params *p, reel_str v);
void reel_param_blob(reel_params *p, const void *v, size_t len);

/* Which database the namespace lives in: "sqlite" or "postgres". */
const char *reel_sql_dialect(void);
void reel_sql_execute(const char *statement, const reel_params *params);
/* REEL_OK with *rows (free with reel_rows_free), or REEL_FAILED with
 * "SQL error <code>: <message>" in err. */
int reel_sql_query(const char *statement, const reel_params *params, reel_projection_sql_rows_t *rows,
                   reel_buf *err);
static inline void reel_rows_free(reel_projection_sql_rows_t *rows) { reel_projection_sql_rows_free(rows); }

/* Rows as a JSON array of objects keyed by column name, byte for byte what
 * the Rust SDK's `Rows::to_json` serializes to: keys sorted, integers plain,
 * reals in serde_json's float form (non-finite: null), text as strings,
 * blobs as arrays of numbers. */
void reel_rows_to_json(reel_buf *out, const reel_projection_sql_rows_t *rows);
/* One value as JSON (see reel_rows_to_json). */
void reel_value_to_json(reel_buf *out, const reel_projection_sql_value_t *value);

/* ---- log ----------------------------------------------------------------- */

void reel_log(reel_projection_log_level_t level, reel_str message);

#endif
