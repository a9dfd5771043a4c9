/* reel_json: a small JSON reader (and canonical writer) for event payloads,
 * KV values and query arguments.
 *
 * Parsing follows serde_json (the Rust projections' parser) so both read the
 * same input the same way:
 *   - numbers become an unsigned integer, a negative integer or a double
 *     exactly as serde_json's `ParserNumber` does, and doubles are computed
 *     with serde_json's own algorithm (significand as u64, times or divided by
 *     a power of ten; serde_json is built without `float_roundtrip`), so the
 *     C and Rust projections pass the same IEEE value to SQL. For up to 15
 *     significant digits and |exponent| <= 22, every decimal amount in
 *     practice, that is also what strtod returns;
 *   - strings are UTF-8 with the JSON escapes, surrogate pairs joined, lone
 *     surrogates and raw control characters refused;
 *   - nesting is limited to 128 levels, as in serde_json.
 *
 * A parse makes a tree of `reel_json` nodes in an arena (`reel_json_doc`);
 * reset the arena between events to reuse its memory. */
#ifndef REEL_JSON_H
#define REEL_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "reel_str.h"

typedef enum {
    REEL_JSON_NULL,
    REEL_JSON_BOOL,
    REEL_JSON_NUMBER,
    REEL_JSON_STRING,
    REEL_JSON_ARRAY,
    REEL_JSON_OBJECT,
} reel_json_kind;

/* serde_json's ParserNumber, plus the out-of-range case that serde_json only
 * reports when the number is actually decoded. */
typedef enum {
    REEL_NUM_U64,
    REEL_NUM_I64,
    REEL_NUM_F64,
    REEL_NUM_OUT_OF_RANGE,
} reel_num_kind;

typedef struct reel_json reel_json;
struct reel_json {
    reel_json_kind kind;
    reel_num_kind num; /* NUMBER */
    union {
        uint64_t u; /* REEL_NUM_U64 */
        int64_t i;  /* REEL_NUM_I64 */
        double f;   /* REEL_NUM_F64 */
        int b;      /* BOOL */
    } v;
    const char *str; /* STRING: the decoded bytes (not NUL-terminated); NUMBER: its text */
    size_t len;
    const char *key; /* member of an OBJECT: its decoded key */
    size_t key_len;
    reel_json *first; /* ARRAY / OBJECT: children in document order */
    reel_json *next;
    size_t count;
};

typedef struct reel_json_chunk reel_json_chunk;

/* The arena a parse allocates from. Zero-initialize (REEL_JSON_DOC_INIT). */
typedef struct {
    reel_json_chunk *chunks;
    reel_json_chunk *current;
} reel_json_doc;

#define REEL_JSON_DOC_INIT {0, 0}

/* Parse `len` bytes of JSON text (a whole document: only whitespace may
 * follow the value). Returns the root, or NULL with a serde_json-style
 * message ("expected value at line 1 column 1") in `err`. The tree lives
 * until the next reset of `doc`. */
reel_json *reel_json_parse(reel_json_doc *doc, const char *text, size_t len, reel_buf *err);
/* Forget every tree parsed into `doc`, keep its memory for the next parse. */
void reel_json_doc_reset(reel_json_doc *doc);
void reel_json_doc_free(reel_json_doc *doc);

/* serde_json::Value semantics: the member `key` of an object (the last one if
 * the key repeats), or NULL. */
const reel_json *reel_json_get(const reel_json *obj, const char *key);

/* Write `v` the way serde_json writes a `serde_json::Value`: compact, object
 * keys sorted (later duplicates win), floats via reel_buf_put_json_f64. */
void reel_json_write(reel_buf *out, const reel_json *v);

/* 1 when a number anywhere in `v` is out of range (serde_json's "number out
 * of range", which `serde_json::Value` parsing reports). */
int reel_json_has_out_of_range(const reel_json *v);

/* ---- serde-derive style decoding ------------------------------------------
 * Each returns 0 on success, or -1 with a serde-style message in `err`
 * ("missing field `orderId`", "invalid type: integer `5`, expected a string"). */

/* `v` must be an object (a struct named `name`, for the message). */
int reel_de_struct(const reel_json *v, const char *name, reel_buf *err);
/* A struct field: *out = the member or NULL when absent; duplicate keys are
 * an error, as in serde's derived Deserialize. */
int reel_de_field(const reel_json *obj, const char *key, const reel_json **out, reel_buf *err);
/* Required fields of the given type. Strings are (pointer, length). */
int reel_de_str(const reel_json *obj, const char *key, const char **s, size_t *n, reel_buf *err);
int reel_de_i64(const reel_json *obj, const char *key, int64_t *out, reel_buf *err);
int reel_de_f64(const reel_json *obj, const char *key, double *out, reel_buf *err);
int reel_de_bool(const reel_json *obj, const char *key, int *out, reel_buf *err);
/* `Option<String>` with `#[serde(default)]`: absent or null leaves *s NULL. */
int reel_de_opt_str(const reel_json *obj, const char *key, const char **s, size_t *n, reel_buf *err);
/* A required `Vec<_>` field: *out = the array node. */
int reel_de_array(const reel_json *obj, const char *key, const reel_json **out, reel_buf *err);

/* Value conversions, with the same messages (`what` names the expected type
 * for the message: "a string", "i64", "f64", "a boolean"). */
int reel_as_str(const reel_json *v, const char **s, size_t *n, reel_buf *err);
int reel_as_i64(const reel_json *v, int64_t *out, reel_buf *err);
int reel_as_f64(const reel_json *v, double *out, reel_buf *err);
int reel_as_bool(const reel_json *v, int *out, reel_buf *err);

#endif
