/* reel_json: a small JSON reader for event payloads, KV values and query
 * arguments, and a writer, made to behave like serde_json (what the Rust
 * projections use) so that both read the same input the same way.
 *
 * Two ways to read:
 *
 *   - reel_de_from_text decodes a document straight into C variables the
 *     way serde's derived `Deserialize` does through serde_json, in one pass:
 *     members in document order, unknown members skipped, duplicate and
 *     missing fields, the `[a, b, c]` sequence form of a struct, and the
 *     same error messages with the same positions
 *     ("missing field `orderId` at line 1 column 57");
 *
 *   - reel_json_parse builds a tree, as `serde_json::from_str::<Value>`
 *     does, for untyped access (query arguments) and for writing back with
 *     reel_json_write (sorted keys, serde_json's number formats).
 *
 * Numbers follow serde_json's `ParserNumber`: an unsigned integer, a
 * negative integer or a double, the double computed with serde_json's own
 * algorithm (significand as u64, times or divided by a power of ten; serde_json
 * is built without `float_roundtrip`), so C and Rust pass the same IEEE value
 * to SQL. Up to 15 significant digits and |exponent| <= 22 (every decimal
 * amount in practice) that is also what strtod returns; beyond, serde_json
 * can be 1 ulp off the correctly rounded value, and so is this reader.
 *
 * Strings are UTF-8 with the JSON escapes; surrogate pairs are joined, lone
 * surrogates and raw control characters refused; nesting is limited to 127
 * levels, as in serde_json. Decoded strings point into the input, or into the
 * arena (`reel_json_doc`) when they had escapes. */
#ifndef REEL_JSON_H
#define REEL_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "reel_str.h"

/* ---- the arena ---------------------------------------------------------- */

typedef struct reel_json_chunk reel_json_chunk;

/* Zero-initialize (REEL_JSON_DOC_INIT); reset between documents to reuse
 * its memory; free when done. */
typedef struct {
    reel_json_chunk *chunks;
    reel_json_chunk *current;
} reel_json_doc;

#define REEL_JSON_DOC_INIT {0, 0}

void reel_json_doc_reset(reel_json_doc *doc);
void reel_json_doc_free(reel_json_doc *doc);

/* ---- typed decoding ------------------------------------------------------ */

typedef struct reel_de reel_de;

typedef enum {
    REEL_DE_STR,     /* String:                                  out = reel_str* */
    REEL_DE_OPT_STR, /* #[serde(default)] Option<String>:        out = reel_str*, ptr NULL for None */
    REEL_DE_I64,     /* i64:                                     out = int64_t* */
    REEL_DE_F64,     /* f64:                                     out = double* */
    REEL_DE_BOOL,    /* bool:                                    out = int* */
    REEL_DE_SEQ,     /* Vec<T>: `each` decodes one element (with reel_de_struct) */
} reel_de_kind;

typedef struct {
    const char *name;
    reel_de_kind kind;
    void *out;
    int (*each)(reel_de *de, void *ctx); /* REEL_DE_SEQ: 0 or -1, as reel_de_struct */
    void *ctx;
} reel_de_field;

/* Decode `text` as a struct named `name` (for messages: "expected struct
 * OrderPlaced") with these fields, then require the end of the text, as
 * `serde_json::from_str::<T>` does. 0, or -1 with the message in `err`.
 * Decoded strings live until `doc` is reset (or point into `text`). */
int reel_de_from_text(reel_json_doc *doc, const char *text, size_t len, const char *name,
                      const reel_de_field *fields, size_t count, reel_buf *err);

/* Decode the next value as a struct: for REEL_DE_SEQ callbacks. */
int reel_de_struct(reel_de *de, const char *name, const reel_de_field *fields, size_t count);

/* ---- the tree ------------------------------------------------------------ */

typedef enum {
    REEL_JSON_NULL,
    REEL_JSON_BOOL,
    REEL_JSON_NUMBER,
    REEL_JSON_STRING,
    REEL_JSON_ARRAY,
    REEL_JSON_OBJECT,
} reel_json_kind;

/* serde_json's ParserNumber. */
typedef enum {
    REEL_NUM_U64,
    REEL_NUM_I64,
    REEL_NUM_F64,
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
    const char *str; /* STRING: the decoded bytes (not NUL-terminated) */
    size_t len;
    const char *key; /* member of an OBJECT: its decoded key */
    size_t key_len;
    reel_json *first; /* ARRAY / OBJECT: children in document order */
    reel_json *next;
    size_t count;
};

/* Parse a whole document (only whitespace may follow the value) as
 * `serde_json::from_str::<Value>` does. The root, or NULL with serde_json's
 * message ("expected value at line 1 column 1") in `err`. */
reel_json *reel_json_parse(reel_json_doc *doc, const char *text, size_t len, reel_buf *err);

/* `serde_json::Value::get`: the member `key` of an object (the last one if
 * the key repeats), or NULL. */
const reel_json *reel_json_get(const reel_json *obj, const char *key);

/* Write `v` as serde_json writes a `serde_json::Value`: compact, object keys
 * sorted (a repeated key keeps its last value), floats in serde_json's form. */
void reel_json_write(reel_buf *out, const reel_json *v);

#endif
