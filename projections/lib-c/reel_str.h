/* reel_str: a growable byte buffer and the number/string formatting the
 * projections need, written to match serde_json's output byte for byte:
 *
 *   - integers in plain decimal;
 *   - doubles in the shortest form that reads back to the same value, laid
 *     out as serde_json's float writer does: `31.5`, `3.0`, `0.001`,
 *     `1e+16`, `1.5e-7` (the exponent's sign always written); non-finite
 *     values as `null`;
 *   - strings quoted with serde_json's escapes (`\"`, `\\`, `\n`, ... and
 *     `\u00XX` for other control characters; everything else as is).
 *
 * No stdio: nothing here imports WASI. Allocation failure traps. */
#ifndef REEL_STR_H
#define REEL_STR_H

#include <stddef.h>
#include <stdint.h>

/* A borrowed string: pointer and length, not NUL-terminated. */
typedef struct {
    const char *ptr;
    size_t len;
} reel_str;

#define REEL_STR(literal) ((reel_str){(literal), sizeof(literal) - 1})

static inline int reel_str_eq(reel_str s, const char *lit) {
    size_t i = 0;
    for (; lit[i]; i++)
        if (i >= s.len || s.ptr[i] != lit[i]) return 0;
    return i == s.len;
}

typedef struct {
    char *ptr;
    size_t len;
    size_t cap;
} reel_buf;

#define REEL_BUF_INIT {0, 0, 0}

/* Make room for `extra` more bytes. */
void reel_buf_reserve(reel_buf *b, size_t extra);
/* Free the buffer's memory and empty it. */
void reel_buf_free(reel_buf *b);
/* Forget the contents, keep the memory. */
static inline void reel_buf_clear(reel_buf *b) { b->len = 0; }

void reel_buf_put(reel_buf *b, const char *s, size_t n);
void reel_buf_puts(reel_buf *b, const char *s);
void reel_buf_putc(reel_buf *b, char c);
void reel_buf_put_i64(reel_buf *b, int64_t v);
void reel_buf_put_u64(reel_buf *b, uint64_t v);
/* `s` as a JSON string literal, escaped like serde_json. */
void reel_buf_put_json_string(reel_buf *b, const char *s, size_t n);
/* `v` as serde_json writes an f64 (ryu layout, shortest round-trip digits). */
void reel_buf_put_json_f64(reel_buf *b, double v);

/* A NUL-terminated malloc'd copy of the contents; the buffer is left as is. */
char *reel_buf_cstr(const reel_buf *b);

/* Parse a decimal number's text exactly as strtod does (correctly rounded).
 * `s` need not be NUL-terminated. */
double reel_parse_f64(const char *s, size_t n);

/* Shortest round-trip digits of a finite, non-zero |v|: writes the digits
 * (no sign, no point, no trailing zeros) to `digits` (at least 18 bytes) and
 * returns their count; *exp10 receives the power of ten of the last digit,
 * so |v| == digits * 10^exp10 when read back. */
int reel_f64_shortest(double v, char *digits, int *exp10);

#endif
