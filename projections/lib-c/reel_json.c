#include "reel_json.h"

#include <stdlib.h>
#include <string.h>

/* ---- arena -------------------------------------------------------------- */

struct reel_json_chunk {
    reel_json_chunk *next;
    size_t size;
    size_t used;
    /* data follows, 8-byte aligned */
};

#define CHUNK_HEADER ((sizeof(reel_json_chunk) + 7) & ~(size_t)7)

static void *arena_alloc(reel_json_doc *doc, size_t n) {
    n = (n + 7) & ~(size_t)7;
    reel_json_chunk *c = doc->current;
    /* Chunks after `current` were used by an earlier parse: reuse them. */
    while (c && c->size - c->used < n && c->next) {
        c = c->next;
        c->used = 0;
    }
    if (!c || c->size - c->used < n) {
        size_t size = n > 8192 ? n : 8192;
        reel_json_chunk *fresh = malloc(CHUNK_HEADER + size);
        if (!fresh) __builtin_trap();
        fresh->next = 0;
        fresh->size = size;
        fresh->used = 0;
        if (c) c->next = fresh;
        else doc->chunks = fresh;
        c = fresh;
    }
    doc->current = c;
    void *p = (char *)c + CHUNK_HEADER + c->used;
    c->used += n;
    return p;
}

void reel_json_doc_reset(reel_json_doc *doc) {
    doc->current = doc->chunks;
    if (doc->current) doc->current->used = 0;
}

void reel_json_doc_free(reel_json_doc *doc) {
    reel_json_chunk *c = doc->chunks;
    while (c) {
        reel_json_chunk *next = c->next;
        free(c);
        c = next;
    }
    doc->chunks = doc->current = 0;
}

/* ---- the reader -----------------------------------------------------------
 *
 * One reader serves both the typed decoder and the tree parser. Its pieces
 * follow serde_json's `Deserializer<SliceRead>` function by function, so the
 * same input fails at the same place with the same message:
 *   - error():      position after what was consumed;
 *   - peek_error(): one byte further (the byte looked at);
 *   - messages made by serde itself (missing field, invalid type, ...) get
 *     their position where serde_json's `fix_position` gives it one: when
 *     the innermost deserialize_* call returns. */

#define REEL_DE_PATH_MAX 256

struct reel_de {
    reel_json_doc *doc;
    const unsigned char *s;
    size_t len;
    size_t pos;
    int remaining_depth;
    reel_buf *err;
    int positioned; /* the error in `err` has its " at line L column C" */
    int silent;     /* > 0: errors are computed but not written (end_map after a failure) */
    /* Where the decoder is, as serde_path_to_error writes it
     * (`items[0].quantity`), and where it was at the first error: the message
     * starts with that path, as the Rust SDK's does. */
    char path[REEL_DE_PATH_MAX];
    size_t path_len;
    char error_path[REEL_DE_PATH_MAX];
    size_t error_path_len;
    int error_noted;
};

typedef reel_de reader;

static void position_of_index(const unsigned char *s, size_t i, size_t *line, size_t *col) {
    size_t start = 0, l = 1;
    for (size_t k = 0; k < i; k++) {
        if (s[k] == '\n') {
            l++;
            start = k + 1;
        }
    }
    *line = l;
    *col = i - start;
}

static void put_position(reel_buf *err, size_t line, size_t col) {
    reel_buf_puts(err, " at line ");
    reel_buf_put_u64(err, line);
    reel_buf_puts(err, " column ");
    reel_buf_put_u64(err, col);
}

/* The first error keeps the path to where it happened. */
static void note_path(reader *r) {
    if (r->error_noted) return;
    memcpy(r->error_path, r->path, r->path_len);
    r->error_path_len = r->path_len;
    r->error_noted = 1;
}

/* Into a field or an element: append `.name` (`name` at the root) or
 * `[index]`; the mark to return to. A segment that does not fit is left out. */
static size_t path_push(reader *r, const char *text, size_t len, int is_index) {
    size_t mark = r->path_len;
    size_t dot = !is_index && mark ? 1 : 0;
    if (mark + dot + len > sizeof r->path) return mark;
    if (dot) r->path[r->path_len++] = '.';
    memcpy(r->path + r->path_len, text, len);
    r->path_len += len;
    return mark;
}

static size_t path_push_index(reader *r, size_t index) {
    char digits[24];
    size_t d = sizeof digits;
    digits[--d] = ']';
    do digits[--d] = (char)('0' + index % 10);
    while ((index /= 10));
    digits[--d] = '[';
    return path_push(r, digits + d, sizeof digits - d, 1);
}

static int fail_idx(reader *r, size_t i, const char *msg) {
    if (r->silent) return -1;
    note_path(r);
    size_t line, col;
    position_of_index(r->s, i, &line, &col);
    reel_buf_puts(r->err, msg);
    put_position(r->err, line, col);
    r->positioned = 1;
    return -1;
}

static int error_here(reader *r, const char *msg) { return fail_idx(r, r->pos, msg); }

static int peek_error(reader *r, const char *msg) {
    return fail_idx(r, r->pos + 1 < r->len ? r->pos + 1 : r->len, msg);
}

/* A message without position yet (serde's custom errors). */
static reel_buf *custom(reader *r) {
    note_path(r);
    r->positioned = 0;
    return r->err;
}

static void fix_position(reader *r) {
    if (r->silent || r->positioned) return;
    size_t line, col;
    position_of_index(r->s, r->pos, &line, &col);
    put_position(r->err, line, col);
    r->positioned = 1;
}

/* parse_whitespace: skip it, then peek (-1 at the end). */
static int ws(reader *r) {
    while (r->pos < r->len) {
        unsigned char c = r->s[r->pos];
        if (c == ' ' || c == '\n' || c == '\t' || c == '\r') r->pos++;
        else return c;
    }
    return -1;
}

static int peek(reader *r) { return r->pos < r->len ? r->s[r->pos] : -1; }

static int is_digit(int c) { return c >= '0' && c <= '9'; }

/* parse_ident: the rest of null/true/false, after its first letter. */
static int parse_ident(reader *r, const char *rest) {
    for (const char *c = rest; *c; c++) {
        if (r->pos >= r->len) return error_here(r, "EOF while parsing a value");
        if (r->s[r->pos++] != (unsigned char)*c) return error_here(r, "expected ident");
    }
    return 0;
}

/* ---- strings -------------------------------------------------------------- */

static size_t put_utf8(char *d, unsigned cp) {
    if (cp < 0x80) {
        d[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        d[0] = (char)(0xC0 | (cp >> 6));
        d[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        d[0] = (char)(0xE0 | (cp >> 12));
        d[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        d[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    d[0] = (char)(0xF0 | (cp >> 18));
    d[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    d[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    d[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Rust's `Utf8Error::valid_up_to`. */
static size_t utf8_valid_up_to(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        unsigned cp;
        if (c >= 0xC2 && c <= 0xDF) { need = 2; cp = c & 0x1F; }
        else if (c >= 0xE0 && c <= 0xEF) { need = 3; cp = c & 0x0F; }
        else if (c >= 0xF0 && c <= 0xF4) { need = 4; cp = c & 0x07; }
        else return i;
        if (n - i < need) return i;
        for (size_t k = 1; k < need; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return i;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (need == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) return i;
        if (need == 4 && (cp < 0x10000 || cp > 0x10FFFF)) return i;
        i += need;
    }
    return n;
}

/* decode_hex_escape: four hex digits, consumed before they are checked. */
static int hex4(reader *r, unsigned *out) {
    if (r->len - r->pos < 4) {
        r->pos = r->len;
        return error_here(r, "EOF while parsing a string");
    }
    unsigned v = 0;
    int ok = 1;
    for (int i = 0; i < 4; i++) {
        int c = r->s[r->pos + (size_t)i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else ok = 0;
    }
    r->pos += 4;
    if (!ok) return error_here(r, "invalid escape");
    *out = v;
    return 0;
}

/* parse_str, after the opening quote: the decoded bytes are a slice of the
 * input when there is no escape, else a copy in the arena (an escape always
 * decodes to fewer bytes than it takes, so the copy fits the source). */
static int parse_str(reader *r, reel_str *out) {
    size_t start = r->pos;
    char *d = 0;
    size_t n = 0;
    for (;;) {
        size_t run = r->pos;
        while (r->pos < r->len) {
            unsigned char c = r->s[r->pos];
            if (c == '"' || c == '\\' || c < 0x20) break;
            r->pos++;
        }
        if (d) {
            memcpy(d + n, r->s + run, r->pos - run);
            n += r->pos - run;
        }
        if (r->pos >= r->len) return error_here(r, "EOF while parsing a string");
        unsigned char c = r->s[r->pos];
        if (c == '"') {
            r->pos++;
            const char *text = d ? d : (const char *)r->s + start;
            size_t len = d ? n : r->pos - 1 - start;
            size_t valid = utf8_valid_up_to((const unsigned char *)text, len);
            if (valid != len) { /* from_slice's check, at the closing quote */
                if (r->silent) return -1;
                size_t line, col, back = len - valid;
                position_of_index(r->s, r->pos, &line, &col);
                reel_buf_puts(r->err, "invalid unicode code point");
                put_position(r->err, line, col > back ? col - back : 0);
                r->positioned = 1;
                return -1;
            }
            out->ptr = text;
            out->len = len;
            return 0;
        }
        if (c < 0x20) {
            r->pos++;
            return error_here(r, "control character (\\u0000-\\u001F) found while parsing a string");
        }
        if (!d) { /* the first escape: decode into a copy from here on */
            size_t end = r->pos;
            while (end < r->len && r->s[end] != '"') end += r->s[end] == '\\' ? 2 : 1;
            d = arena_alloc(r->doc, (end < r->len ? end : r->len) - start + 8);
            n = r->pos - start;
            memcpy(d, r->s + start, n);
        }
        r->pos++;
        if (r->pos >= r->len) return error_here(r, "EOF while parsing a string");
        c = r->s[r->pos++];
        switch (c) {
        case '"': d[n++] = '"'; break;
        case '\\': d[n++] = '\\'; break;
        case '/': d[n++] = '/'; break;
        case 'b': d[n++] = '\b'; break;
        case 'f': d[n++] = '\f'; break;
        case 'n': d[n++] = '\n'; break;
        case 'r': d[n++] = '\r'; break;
        case 't': d[n++] = '\t'; break;
        case 'u': {
            unsigned cp;
            if (hex4(r, &cp)) return -1;
            if (cp >= 0xDC00 && cp <= 0xDFFF) return error_here(r, "lone leading surrogate in hex escape");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                for (const char *want = "\\u"; *want; want++) {
                    if (r->pos >= r->len) return error_here(r, "EOF while parsing a string");
                    if (r->s[r->pos++] != (unsigned char)*want)
                        return error_here(r, "unexpected end of hex escape");
                }
                unsigned lo;
                if (hex4(r, &lo)) return -1;
                if (lo < 0xDC00 || lo > 0xDFFF) return error_here(r, "lone leading surrogate in hex escape");
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            n += put_utf8(d + n, cp);
            break;
        }
        default: return error_here(r, "invalid escape");
        }
    }
}

/* ignore_str, after the opening quote: escapes are only checked for their
 * shape (a lone surrogate passes), control characters still fail. */
static int ignore_str(reader *r) {
    for (;;) {
        while (r->pos < r->len) {
            unsigned char c = r->s[r->pos];
            if (c == '"' || c == '\\' || c < 0x20) break;
            r->pos++;
        }
        if (r->pos >= r->len) return error_here(r, "EOF while parsing a string");
        unsigned char c = r->s[r->pos];
        if (c == '"') {
            r->pos++;
            return 0;
        }
        if (c != '\\') return error_here(r, "control character (\\u0000-\\u001F) found while parsing a string");
        r->pos++;
        if (r->pos >= r->len) return error_here(r, "EOF while parsing a string");
        c = r->s[r->pos++];
        switch (c) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't': break;
        case 'u': {
            unsigned cp;
            if (hex4(r, &cp)) return -1;
            break;
        }
        default: return error_here(r, "invalid escape");
        }
    }
}

/* ---- numbers, exactly as serde_json (without float_roundtrip) ----------- */

static const double POW10[309] = {
    1e0,   1e1,   1e2,   1e3,   1e4,   1e5,   1e6,   1e7,   1e8,   1e9,   1e10,  1e11,  1e12,  1e13,  1e14,
    1e15,  1e16,  1e17,  1e18,  1e19,  1e20,  1e21,  1e22,  1e23,  1e24,  1e25,  1e26,  1e27,  1e28,  1e29,
    1e30,  1e31,  1e32,  1e33,  1e34,  1e35,  1e36,  1e37,  1e38,  1e39,  1e40,  1e41,  1e42,  1e43,  1e44,
    1e45,  1e46,  1e47,  1e48,  1e49,  1e50,  1e51,  1e52,  1e53,  1e54,  1e55,  1e56,  1e57,  1e58,  1e59,
    1e60,  1e61,  1e62,  1e63,  1e64,  1e65,  1e66,  1e67,  1e68,  1e69,  1e70,  1e71,  1e72,  1e73,  1e74,
    1e75,  1e76,  1e77,  1e78,  1e79,  1e80,  1e81,  1e82,  1e83,  1e84,  1e85,  1e86,  1e87,  1e88,  1e89,
    1e90,  1e91,  1e92,  1e93,  1e94,  1e95,  1e96,  1e97,  1e98,  1e99,  1e100, 1e101, 1e102, 1e103, 1e104,
    1e105, 1e106, 1e107, 1e108, 1e109, 1e110, 1e111, 1e112, 1e113, 1e114, 1e115, 1e116, 1e117, 1e118, 1e119,
    1e120, 1e121, 1e122, 1e123, 1e124, 1e125, 1e126, 1e127, 1e128, 1e129, 1e130, 1e131, 1e132, 1e133, 1e134,
    1e135, 1e136, 1e137, 1e138, 1e139, 1e140, 1e141, 1e142, 1e143, 1e144, 1e145, 1e146, 1e147, 1e148, 1e149,
    1e150, 1e151, 1e152, 1e153, 1e154, 1e155, 1e156, 1e157, 1e158, 1e159, 1e160, 1e161, 1e162, 1e163, 1e164,
    1e165, 1e166, 1e167, 1e168, 1e169, 1e170, 1e171, 1e172, 1e173, 1e174, 1e175, 1e176, 1e177, 1e178, 1e179,
    1e180, 1e181, 1e182, 1e183, 1e184, 1e185, 1e186, 1e187, 1e188, 1e189, 1e190, 1e191, 1e192, 1e193, 1e194,
    1e195, 1e196, 1e197, 1e198, 1e199, 1e200, 1e201, 1e202, 1e203, 1e204, 1e205, 1e206, 1e207, 1e208, 1e209,
    1e210, 1e211, 1e212, 1e213, 1e214, 1e215, 1e216, 1e217, 1e218, 1e219, 1e220, 1e221, 1e222, 1e223, 1e224,
    1e225, 1e226, 1e227, 1e228, 1e229, 1e230, 1e231, 1e232, 1e233, 1e234, 1e235, 1e236, 1e237, 1e238, 1e239,
    1e240, 1e241, 1e242, 1e243, 1e244, 1e245, 1e246, 1e247, 1e248, 1e249, 1e250, 1e251, 1e252, 1e253, 1e254,
    1e255, 1e256, 1e257, 1e258, 1e259, 1e260, 1e261, 1e262, 1e263, 1e264, 1e265, 1e266, 1e267, 1e268, 1e269,
    1e270, 1e271, 1e272, 1e273, 1e274, 1e275, 1e276, 1e277, 1e278, 1e279, 1e280, 1e281, 1e282, 1e283, 1e284,
    1e285, 1e286, 1e287, 1e288, 1e289, 1e290, 1e291, 1e292, 1e293, 1e294, 1e295, 1e296, 1e297, 1e298, 1e299,
    1e300, 1e301, 1e302, 1e303, 1e304, 1e305, 1e306, 1e307, 1e308,
};

#define U64_MAX 18446744073709551615ull
#define OVERFLOW_U64(a, b) ((a) >= U64_MAX / 10 && ((a) > U64_MAX / 10 || (uint64_t)(b) > U64_MAX % 10))

typedef struct {
    reel_num_kind kind;
    union {
        uint64_t u;
        int64_t i;
        double f;
    } v;
} pnum;

static int number_out_of_range(reader *r) { return error_here(r, "number out of range"); }

/* f64_from_parts */
static int f64_from_parts(reader *r, int positive, uint64_t significand, int32_t exponent, double *out) {
    double f = (double)significand;
    for (;;) {
        uint32_t a = exponent < 0 ? (uint32_t)0 - (uint32_t)exponent : (uint32_t)exponent;
        if (a < 309) {
            if (exponent >= 0) {
                f *= POW10[a];
                if (f - f != 0) return number_out_of_range(r); /* infinite */
            } else {
                f /= POW10[a];
            }
            break;
        }
        if (f == 0.0) break;
        if (exponent >= 0) return number_out_of_range(r);
        f /= 1e308;
        exponent += 308;
    }
    *out = positive ? f : -f;
    return 0;
}

static int32_t sat_add(int32_t a, int64_t b) {
    int64_t x = (int64_t)a + b;
    if (x > INT32_MAX) return INT32_MAX;
    if (x < INT32_MIN) return INT32_MIN;
    return (int32_t)x;
}

/* parse_exponent, at the 'e' */
static int parse_exponent(reader *r, int positive, uint64_t significand, int32_t starting_exp, double *out) {
    r->pos++;
    int positive_exp = 1;
    if (peek(r) == '+') r->pos++;
    else if (peek(r) == '-') {
        r->pos++;
        positive_exp = 0;
    }
    if (r->pos >= r->len) return error_here(r, "EOF while parsing a value");
    int c = r->s[r->pos++];
    if (!is_digit(c)) return error_here(r, "invalid number");
    int32_t exp = c - '0';
    while (is_digit(peek(r))) {
        r->pos++;
        int digit = r->s[r->pos - 1] - '0';
        if (exp >= INT32_MAX / 10 && (exp > INT32_MAX / 10 || digit > INT32_MAX % 10)) {
            /* parse_exponent_overflow: an error instead of infinity */
            if (significand != 0 && positive_exp) return number_out_of_range(r);
            while (is_digit(peek(r))) r->pos++;
            *out = positive ? 0.0 : -0.0;
            return 0;
        }
        exp = exp * 10 + digit;
    }
    int32_t final_exp = sat_add(starting_exp, positive_exp ? exp : -(int64_t)exp);
    return f64_from_parts(r, positive, significand, final_exp, out);
}

/* parse_decimal, at the '.' */
static int parse_decimal(reader *r, int positive, uint64_t significand, int32_t exp_before, double *out) {
    r->pos++;
    int32_t exp_after = 0;
    while (is_digit(peek(r))) {
        int digit = r->s[r->pos] - '0';
        if (OVERFLOW_U64(significand, digit)) {
            /* parse_decimal_overflow: further digits are ignored */
            while (is_digit(peek(r))) r->pos++;
            int32_t exponent = exp_before + exp_after;
            if (peek(r) == 'e' || peek(r) == 'E') return parse_exponent(r, positive, significand, exponent, out);
            return f64_from_parts(r, positive, significand, exponent, out);
        }
        r->pos++;
        significand = significand * 10 + (uint64_t)digit;
        exp_after--;
    }
    if (exp_after == 0) {
        if (r->pos < r->len) return peek_error(r, "invalid number");
        return peek_error(r, "EOF while parsing a value");
    }
    int32_t exponent = exp_before + exp_after;
    if (peek(r) == 'e' || peek(r) == 'E') return parse_exponent(r, positive, significand, exponent, out);
    return f64_from_parts(r, positive, significand, exponent, out);
}

/* parse_integer: after the '-' of a negative number, at the first digit. */
static int parse_integer(reader *r, int positive, pnum *out) {
    if (r->pos >= r->len) return error_here(r, "EOF while parsing a value");
    int c = r->s[r->pos++];
    uint64_t significand;
    if (c == '0') {
        if (is_digit(peek(r))) return peek_error(r, "invalid number");
        significand = 0;
    } else if (c >= '1' && c <= '9') {
        significand = (uint64_t)(c - '0');
        for (;;) {
            int d = peek(r);
            if (!is_digit(d)) break;
            if (OVERFLOW_U64(significand, d - '0')) {
                /* parse_long_integer: the remaining digits only scale */
                int32_t exponent = 0;
                while (is_digit(peek(r))) {
                    r->pos++;
                    exponent++;
                }
                out->kind = REEL_NUM_F64;
                if (peek(r) == '.') return parse_decimal(r, positive, significand, exponent, &out->v.f);
                if (peek(r) == 'e' || peek(r) == 'E')
                    return parse_exponent(r, positive, significand, exponent, &out->v.f);
                return f64_from_parts(r, positive, significand, exponent, &out->v.f);
            }
            r->pos++;
            significand = significand * 10 + (uint64_t)(d - '0');
        }
    } else {
        return error_here(r, "invalid number");
    }
    /* parse_number */
    if (peek(r) == '.') {
        out->kind = REEL_NUM_F64;
        return parse_decimal(r, positive, significand, 0, &out->v.f);
    }
    if (peek(r) == 'e' || peek(r) == 'E') {
        out->kind = REEL_NUM_F64;
        return parse_exponent(r, positive, significand, 0, &out->v.f);
    }
    if (positive) {
        out->kind = REEL_NUM_U64;
        out->v.u = significand;
        return 0;
    }
    int64_t neg = (int64_t)((uint64_t)0 - significand);
    if (neg >= 0) { /* -0, or below i64::MIN: a float */
        out->kind = REEL_NUM_F64;
        out->v.f = -(double)significand;
    } else {
        out->kind = REEL_NUM_I64;
        out->v.i = neg;
    }
    return 0;
}

/* ---- ignore_value: a value nobody reads, checked only for its syntax ----- */

static int ignore_exponent(reader *r) {
    r->pos++;
    if (peek(r) == '+' || peek(r) == '-') r->pos++;
    int c = r->pos < r->len ? r->s[r->pos++] : 0; /* next_char_or_null */
    if (!is_digit(c)) return error_here(r, "invalid number");
    while (is_digit(peek(r))) r->pos++;
    return 0;
}

static int ignore_decimal(reader *r) {
    r->pos++;
    int digits = 0;
    while (is_digit(peek(r))) {
        r->pos++;
        digits = 1;
    }
    if (!digits) return peek_error(r, "invalid number");
    if (peek(r) == 'e' || peek(r) == 'E') return ignore_exponent(r);
    return 0;
}

static int ignore_integer(reader *r) {
    int c = r->pos < r->len ? r->s[r->pos++] : 0; /* next_char_or_null */
    if (c == '0') {
        if (is_digit(peek(r))) return peek_error(r, "invalid number");
    } else if (c >= '1' && c <= '9') {
        while (is_digit(peek(r))) r->pos++;
    } else {
        return error_here(r, "invalid number");
    }
    if (peek(r) == '.') return ignore_decimal(r);
    if (peek(r) == 'e' || peek(r) == 'E') return ignore_exponent(r);
    return 0;
}

/* serde_json's ignore_value: iterative, so no recursion limit, and a
 * little more lenient than a real parse (lone surrogates pass). */
static int ignore_value(reader *r) {
    /* open containers; '[' or '{' each. Grows as needed. */
    char small[64];
    char *stack = small;
    size_t depth = 0, cap = sizeof small;
    int enclosing = 0;
    int rc = 0;
    for (;;) {
        int c = ws(r);
        if (c < 0) {
            rc = peek_error(r, "EOF while parsing a value");
            break;
        }
        int frame = 0;
        switch (c) {
        case 'n': r->pos++; rc = parse_ident(r, "ull"); break;
        case 't': r->pos++; rc = parse_ident(r, "rue"); break;
        case 'f': r->pos++; rc = parse_ident(r, "alse"); break;
        case '-': r->pos++; rc = ignore_integer(r); break;
        case '"': r->pos++; rc = ignore_str(r); break;
        case '[':
        case '{':
            if (enclosing) {
                if (depth == cap) {
                    char *bigger = malloc(cap * 2);
                    if (!bigger) __builtin_trap();
                    memcpy(bigger, stack, depth);
                    if (stack != small) free(stack);
                    stack = bigger;
                    cap *= 2;
                }
                stack[depth++] = (char)enclosing;
                enclosing = 0;
            }
            r->pos++;
            frame = c;
            break;
        default:
            if (is_digit(c)) rc = ignore_integer(r);
            else rc = peek_error(r, "expected value");
        }
        if (rc) break;
        int accept_comma;
        if (frame) {
            accept_comma = 0;
        } else if (enclosing) {
            frame = enclosing;
            enclosing = 0;
            accept_comma = 1;
        } else if (depth) {
            frame = stack[--depth];
            accept_comma = 1;
        } else {
            break; /* a scalar at the top: done */
        }
        int done = 0;
        for (;;) {
            c = ws(r);
            if (c == ',' && accept_comma) {
                r->pos++;
                break;
            }
            if ((c == ']' && frame == '[') || (c == '}' && frame == '{')) {
                r->pos++;
                if (!depth) {
                    done = 1;
                    break;
                }
                frame = stack[--depth];
                accept_comma = 1;
                continue;
            }
            if (c >= 0) {
                if (accept_comma) {
                    rc = peek_error(r, frame == '[' ? "expected `,` or `]`" : "expected `,` or `}`");
                    done = 1;
                }
                break;
            }
            rc = peek_error(r, frame == '[' ? "EOF while parsing a list" : "EOF while parsing an object");
            done = 1;
            break;
        }
        if (done) break;
        if (frame == '{') {
            c = ws(r);
            if (c == '"') {
                r->pos++;
            } else {
                rc = peek_error(r, c < 0 ? "EOF while parsing an object" : "key must be a string");
                break;
            }
            if ((rc = ignore_str(r))) break;
            c = ws(r);
            if (c == ':') {
                r->pos++;
            } else {
                rc = peek_error(r, c < 0 ? "EOF while parsing an object" : "expected `:`");
                break;
            }
        }
        enclosing = frame;
    }
    if (stack != small) free(stack);
    return rc;
}

/* ---- sequences and maps (SeqAccess, MapAccess) --------------------------- */

/* has_next_element: 1 at an element, 0 at the ']', -1 on an error. */
static int has_next_element(reader *r, int *first) {
    int c = ws(r);
    if (c == ']') return 0;
    if (c == ',' && !*first) {
        r->pos++;
        c = ws(r);
    } else if (c < 0) {
        return peek_error(r, "EOF while parsing a list");
    } else if (*first) {
        *first = 0;
    } else {
        return peek_error(r, "expected `,` or `]`");
    }
    if (c == ']') return peek_error(r, "trailing comma");
    if (c < 0) return peek_error(r, "EOF while parsing a value");
    return 1;
}

/* has_next_key: 1 at a key's quote, 0 at the '}', -1 on an error. */
static int has_next_key(reader *r, int *first) {
    int c = ws(r);
    if (c == '}') return 0;
    if (c == ',' && !*first) {
        r->pos++;
        c = ws(r);
    } else if (c < 0) {
        return peek_error(r, "EOF while parsing an object");
    } else if (*first) {
        *first = 0;
    } else {
        return peek_error(r, "expected `,` or `}`");
    }
    if (c == '"') return 1;
    if (c == '}') return peek_error(r, "trailing comma");
    if (c < 0) return peek_error(r, "EOF while parsing a value");
    return peek_error(r, "key must be a string");
}

static int parse_object_colon(reader *r) {
    int c = ws(r);
    if (c == ':') {
        r->pos++;
        return 0;
    }
    return peek_error(r, c < 0 ? "EOF while parsing an object" : "expected `:`");
}

static int end_seq(reader *r) {
    int c = ws(r);
    if (c == ']') {
        r->pos++;
        return 0;
    }
    if (c == ',') {
        r->pos++;
        c = ws(r);
        return peek_error(r, c == ']' ? "trailing comma" : "trailing characters");
    }
    return peek_error(r, c < 0 ? "EOF while parsing a list" : "trailing characters");
}

static int end_map(reader *r) {
    int c = ws(r);
    if (c == '}') {
        r->pos++;
        return 0;
    }
    if (c == ',') return peek_error(r, "trailing comma");
    return peek_error(r, c < 0 ? "EOF while parsing an object" : "trailing characters");
}

/* `match (ret, self.end_xxx())`: the end is read even after a failure,
 * which moves the position a failure's message gets. */
static int finish(reader *r, int ret, int (*end)(reader *)) {
    if (ret) {
        r->silent++;
        end(r);
        r->silent--;
        return ret;
    }
    return end(r);
}

/* ---- typed decoding (serde derive over serde_json) ----------------------- */

/* serde_json's JsonUnexpected for a number: Unsigned, Signed, or Float in
 * serde_json's float format. */
static void unexpected_number(reel_buf *b, const pnum *n) {
    switch (n->kind) {
    case REEL_NUM_U64: reel_buf_puts(b, "integer `"); reel_buf_put_u64(b, n->v.u); break;
    case REEL_NUM_I64: reel_buf_puts(b, "integer `"); reel_buf_put_i64(b, n->v.i); break;
    default: reel_buf_puts(b, "floating point `"); reel_buf_put_json_f64(b, n->v.f); break;
    }
    reel_buf_putc(b, '`');
}

/* Rust's `{:?}` of a str, as serde's `Unexpected::Str` shows it. */
static void put_debug_str(reel_buf *b, reel_str s) {
    static const char hex[] = "0123456789abcdef";
    reel_buf_putc(b, '"');
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        switch (c) {
        case '"': reel_buf_puts(b, "\\\""); break;
        case '\\': reel_buf_puts(b, "\\\\"); break;
        case '\n': reel_buf_puts(b, "\\n"); break;
        case '\r': reel_buf_puts(b, "\\r"); break;
        case '\t': reel_buf_puts(b, "\\t"); break;
        case 0: reel_buf_puts(b, "\\0"); break;
        default:
            if (c < 0x20 || c == 0x7f) {
                reel_buf_puts(b, "\\u{");
                if (c >> 4) reel_buf_putc(b, hex[c >> 4]);
                reel_buf_putc(b, hex[c & 15]);
                reel_buf_putc(b, '}');
            } else {
                reel_buf_putc(b, (char)c); /* other characters as they are */
            }
        }
    }
    reel_buf_putc(b, '"');
}

static int invalid_type_msg(reader *r, const char *unexp_text, const pnum *unexp_num, const reel_str *unexp_str,
                            const char *expected, const char *expected2) {
    if (r->silent) return -1;
    reel_buf *e = custom(r);
    reel_buf_puts(e, "invalid type: ");
    if (unexp_num) unexpected_number(e, unexp_num);
    else if (unexp_str) {
        reel_buf_puts(e, "string ");
        put_debug_str(e, *unexp_str);
    } else reel_buf_puts(e, unexp_text);
    reel_buf_puts(e, ", expected ");
    reel_buf_puts(e, expected);
    if (expected2) reel_buf_puts(e, expected2);
    return -1;
}

/* peek_invalid_type: read the scalar that is there, to name it. */
static int peek_invalid_type(reader *r, const char *expected, const char *expected2) {
    int c = peek(r);
    int rc;
    pnum n;
    reel_str s;
    switch (c) {
    case 'n':
        r->pos++;
        if (parse_ident(r, "ull")) return -1;
        rc = invalid_type_msg(r, "null", 0, 0, expected, expected2);
        break;
    case 't':
        r->pos++;
        if (parse_ident(r, "rue")) return -1;
        rc = invalid_type_msg(r, "boolean `true`", 0, 0, expected, expected2);
        break;
    case 'f':
        r->pos++;
        if (parse_ident(r, "alse")) return -1;
        rc = invalid_type_msg(r, "boolean `false`", 0, 0, expected, expected2);
        break;
    case '-':
        r->pos++;
        if (parse_integer(r, 0, &n)) return -1;
        rc = invalid_type_msg(r, 0, &n, 0, expected, expected2);
        break;
    case '"':
        r->pos++;
        if (parse_str(r, &s)) return -1;
        rc = invalid_type_msg(r, 0, 0, &s, expected, expected2);
        break;
    case '[': rc = invalid_type_msg(r, "sequence", 0, 0, expected, expected2); break;
    case '{': rc = invalid_type_msg(r, "map", 0, 0, expected, expected2); break;
    default:
        if (is_digit(c)) {
            if (parse_integer(r, 1, &n)) return -1;
            rc = invalid_type_msg(r, 0, &n, 0, expected, expected2);
            break;
        }
        return peek_error(r, "expected value");
    }
    fix_position(r);
    return rc;
}

/* deserialize_str / deserialize_string */
static int de_string(reader *r, reel_str *out) {
    int c = ws(r);
    if (c < 0) return peek_error(r, "EOF while parsing a value");
    if (c == '"') {
        r->pos++;
        return parse_str(r, out);
    }
    int rc = peek_invalid_type(r, "a string", 0);
    fix_position(r);
    return rc;
}

/* deserialize_option, then String */
static int de_option_string(reader *r, reel_str *out) {
    if (ws(r) == 'n') {
        r->pos++;
        out->ptr = 0;
        out->len = 0;
        return parse_ident(r, "ull");
    }
    return de_string(r, out);
}

/* deserialize_number for i64 (want_i64) or f64 */
static int de_number(reader *r, int want_i64, void *out) {
    int c = ws(r);
    if (c < 0) return peek_error(r, "EOF while parsing a value");
    pnum n;
    int rc = 0;
    if (c == '-') {
        r->pos++;
        if (parse_integer(r, 0, &n)) return -1;
    } else if (is_digit(c)) {
        if (parse_integer(r, 1, &n)) return -1;
    } else {
        rc = peek_invalid_type(r, want_i64 ? "i64" : "f64", 0);
        fix_position(r);
        return rc;
    }
    if (!want_i64) {
        *(double *)out = n.kind == REEL_NUM_U64 ? (double)n.v.u : n.kind == REEL_NUM_I64 ? (double)n.v.i : n.v.f;
        return 0;
    }
    if (n.kind == REEL_NUM_I64) {
        *(int64_t *)out = n.v.i;
        return 0;
    }
    if (n.kind == REEL_NUM_U64 && n.v.u <= (uint64_t)INT64_MAX) {
        *(int64_t *)out = (int64_t)n.v.u;
        return 0;
    }
    if (n.kind == REEL_NUM_U64) {
        if (!r->silent) {
            reel_buf *e = custom(r);
            reel_buf_puts(e, "invalid value: ");
            unexpected_number(e, &n);
            reel_buf_puts(e, ", expected i64");
        }
        rc = -1;
    } else {
        rc = invalid_type_msg(r, 0, &n, 0, "i64", 0);
    }
    fix_position(r);
    return rc;
}

/* deserialize_bool */
static int de_bool(reader *r, int *out) {
    int c = ws(r);
    if (c < 0) return peek_error(r, "EOF while parsing a value");
    if (c == 't' || c == 'f') {
        r->pos++;
        *out = c == 't';
        return parse_ident(r, c == 't' ? "rue" : "alse");
    }
    int rc = peek_invalid_type(r, "a boolean", 0);
    fix_position(r);
    return rc;
}

/* deserialize_seq for Vec<T> */
static int de_seq(reader *r, int (*each)(reel_de *, void *), void *ctx) {
    int c = ws(r);
    if (c < 0) return peek_error(r, "EOF while parsing a value");
    int rc;
    if (c == '[') {
        if (--r->remaining_depth == 0) return peek_error(r, "recursion limit exceeded");
        r->pos++;
        int first = 1, ret = 0;
        for (size_t index = 0;; index++) {
            int has = has_next_element(r, &first);
            if (has <= 0) {
                ret = has;
                break;
            }
            size_t mark = path_push_index(r, index);
            if ((ret = each(r, ctx))) break;
            r->path_len = mark;
        }
        r->remaining_depth++;
        rc = finish(r, ret, end_seq);
    } else {
        rc = peek_invalid_type(r, "a sequence", 0);
    }
    if (rc) fix_position(r);
    return rc;
}

static int decode_field(reader *r, const reel_de_field *f) {
    switch (f->kind) {
    case REEL_DE_STR: return de_string(r, f->out);
    case REEL_DE_OPT_STR: return de_option_string(r, f->out);
    case REEL_DE_I64: return de_number(r, 1, f->out);
    case REEL_DE_F64: return de_number(r, 0, f->out);
    case REEL_DE_BOOL: return de_bool(r, f->out);
    case REEL_DE_SEQ: return de_seq(r, f->each, f->ctx);
    }
    return 0;
}

#define MAX_FIELDS 32

/* The derived visit_map: members in document order, then missing fields. */
static int visit_map(reader *r, const reel_de_field *fields, size_t count) {
    unsigned char seen[MAX_FIELDS] = {0};
    size_t lens[MAX_FIELDS];
    for (size_t i = 0; i < count; i++) lens[i] = strlen(fields[i].name);
    int first = 1;
    for (;;) {
        int has = has_next_key(r, &first);
        if (has < 0) return -1;
        if (has == 0) break;
        r->pos++;
        reel_str key;
        if (parse_str(r, &key)) return -1;
        size_t i = 0;
        while (i < count && !(lens[i] == key.len && memcmp(fields[i].name, key.ptr, key.len) == 0))
            i++;
        if (i < count && seen[i]) {
            if (!r->silent) {
                reel_buf *e = custom(r);
                reel_buf_puts(e, "duplicate field `");
                reel_buf_puts(e, fields[i].name);
                reel_buf_putc(e, '`');
            }
            return -1;
        }
        if (parse_object_colon(r)) return -1;
        size_t mark = path_push(r, key.ptr, key.len, 0);
        if (i == count) {
            if (ignore_value(r)) return -1;
            r->path_len = mark;
            continue;
        }
        seen[i] = 1;
        if (decode_field(r, &fields[i])) return -1;
        r->path_len = mark;
    }
    for (size_t i = 0; i < count; i++) {
        if (seen[i] || fields[i].kind == REEL_DE_OPT_STR) continue; /* Option: None */
        if (!r->silent) {
            reel_buf *e = custom(r);
            reel_buf_puts(e, "missing field `");
            reel_buf_puts(e, fields[i].name);
            reel_buf_putc(e, '`');
        }
        return -1;
    }
    return 0;
}

/* The derived visit_seq: fields in declaration order. */
static int visit_seq(reader *r, const char *name, const reel_de_field *fields, size_t count) {
    int first = 1;
    for (size_t i = 0; i < count; i++) {
        int has = has_next_element(r, &first);
        if (has < 0) return -1;
        if (has == 0) {
            if (fields[i].kind == REEL_DE_OPT_STR) { /* #[serde(default)] */
                ((reel_str *)fields[i].out)->ptr = 0;
                ((reel_str *)fields[i].out)->len = 0;
                continue;
            }
            if (!r->silent) {
                reel_buf *e = custom(r);
                reel_buf_puts(e, "invalid length ");
                reel_buf_put_u64(e, i);
                reel_buf_puts(e, ", expected struct ");
                reel_buf_puts(e, name);
                reel_buf_puts(e, " with ");
                reel_buf_put_u64(e, count);
                reel_buf_puts(e, count == 1 ? " element" : " elements");
            }
            return -1;
        }
        size_t mark = path_push_index(r, i);
        if (decode_field(r, &fields[i])) return -1;
        r->path_len = mark;
    }
    return 0;
}

int reel_de_struct(reel_de *r, const char *name, const reel_de_field *fields, size_t count) {
    if (count > MAX_FIELDS) __builtin_trap();
    for (size_t i = 0; i < count; i++) {
        if (fields[i].kind == REEL_DE_OPT_STR) {
            ((reel_str *)fields[i].out)->ptr = 0;
            ((reel_str *)fields[i].out)->len = 0;
        }
    }
    int c = ws(r);
    if (c < 0) return peek_error(r, "EOF while parsing a value");
    int rc;
    if (c == '[' || c == '{') {
        if (--r->remaining_depth == 0) return peek_error(r, "recursion limit exceeded");
        r->pos++;
        int ret = c == '[' ? visit_seq(r, name, fields, count) : visit_map(r, fields, count);
        r->remaining_depth++;
        rc = finish(r, ret, c == '[' ? end_seq : end_map);
    } else {
        rc = peek_invalid_type(r, "struct ", name);
    }
    if (rc) fix_position(r);
    return rc;
}

int reel_de_from_text(reel_json_doc *doc, const char *text, size_t len, const char *name,
                      const reel_de_field *fields, size_t count, reel_buf *err) {
    reader r = {doc, (const unsigned char *)text, len, 0, 128, err, 1, 0};
    size_t start = err->len;
    if (reel_de_struct(&r, name, fields, count)) {
        if (r.error_path_len) { /* "items[0].quantity: " before the message */
            size_t n = r.error_path_len + 2;
            reel_buf_reserve(err, n);
            memmove(err->ptr + start + n, err->ptr + start, err->len - start);
            memcpy(err->ptr + start, r.error_path, r.error_path_len);
            memcpy(err->ptr + start + r.error_path_len, ": ", 2);
            err->len += n;
        }
        return -1;
    }
    if (ws(&r) >= 0) return peek_error(&r, "trailing characters"); /* Deserializer::end */
    return 0;
}

/* ---- the tree (deserialize_any into serde_json::Value) ------------------- */

static reel_json *new_node(reader *r, reel_json_kind kind) {
    reel_json *n = arena_alloc(r->doc, sizeof *n);
    memset(n, 0, sizeof *n);
    n->kind = kind;
    return n;
}

static int parse_any(reader *r, reel_json **out) {
    int c = ws(r);
    if (c < 0) return peek_error(r, "EOF while parsing a value");
    reel_json *node;
    switch (c) {
    case 'n':
        r->pos++;
        if (parse_ident(r, "ull")) return -1;
        node = new_node(r, REEL_JSON_NULL);
        break;
    case 't':
    case 'f':
        r->pos++;
        if (parse_ident(r, c == 't' ? "rue" : "alse")) return -1;
        node = new_node(r, REEL_JSON_BOOL);
        node->v.b = c == 't';
        break;
    case '"': {
        reel_str s;
        r->pos++;
        if (parse_str(r, &s)) return -1;
        node = new_node(r, REEL_JSON_STRING);
        node->str = s.ptr;
        node->len = s.len;
        break;
    }
    case '[':
    case '{': {
        if (--r->remaining_depth == 0) return peek_error(r, "recursion limit exceeded");
        r->pos++;
        node = new_node(r, c == '[' ? REEL_JSON_ARRAY : REEL_JSON_OBJECT);
        reel_json **tail = &node->first;
        int first = 1, ret = 0;
        for (;;) {
            int has = c == '[' ? has_next_element(r, &first) : has_next_key(r, &first);
            if (has <= 0) {
                ret = has;
                break;
            }
            reel_str key = {0, 0};
            if (c == '{') {
                r->pos++;
                if ((ret = parse_str(r, &key))) break;
                if ((ret = parse_object_colon(r))) break;
            }
            reel_json *child;
            if ((ret = parse_any(r, &child))) break;
            child->key = key.ptr;
            child->key_len = key.len;
            *tail = child;
            tail = &child->next;
            node->count++;
        }
        r->remaining_depth++;
        if (finish(r, ret, c == '[' ? end_seq : end_map)) return -1;
        break;
    }
    default: {
        pnum n;
        if (c == '-') {
            r->pos++;
            if (parse_integer(r, 0, &n)) return -1;
        } else if (is_digit(c)) {
            if (parse_integer(r, 1, &n)) return -1;
        } else {
            return peek_error(r, "expected value");
        }
        node = new_node(r, REEL_JSON_NUMBER);
        node->num = n.kind;
        if (n.kind == REEL_NUM_U64) node->v.u = n.v.u;
        else if (n.kind == REEL_NUM_I64) node->v.i = n.v.i;
        else node->v.f = n.v.f;
        break;
    }
    }
    *out = node;
    return 0;
}

reel_json *reel_json_parse(reel_json_doc *doc, const char *text, size_t len, reel_buf *err) {
    reader r = {doc, (const unsigned char *)text, len, 0, 128, err, 1, 0};
    reel_json *root;
    if (parse_any(&r, &root)) return 0;
    if (ws(&r) >= 0) {
        peek_error(&r, "trailing characters");
        return 0;
    }
    return root;
}

/* ---- access ------------------------------------------------------------- */

static int key_is(const reel_json *m, const char *key, size_t n) {
    return m->key_len == n && memcmp(m->key, key, n) == 0;
}

const reel_json *reel_json_get(const reel_json *obj, const char *key) {
    if (!obj || obj->kind != REEL_JSON_OBJECT) return 0;
    size_t n = strlen(key);
    const reel_json *found = 0;
    for (const reel_json *m = obj->first; m; m = m->next)
        if (key_is(m, key, n)) found = m;
    return found;
}

/* ---- writer ------------------------------------------------------------- */

typedef struct {
    const reel_json *node;
    size_t index;
} member;

static int cmp_member(const void *a, const void *b) {
    const member *x = a, *y = b;
    size_t n = x->node->key_len < y->node->key_len ? x->node->key_len : y->node->key_len;
    int c = memcmp(x->node->key, y->node->key, n);
    if (c) return c;
    if (x->node->key_len != y->node->key_len) return x->node->key_len < y->node->key_len ? -1 : 1;
    return x->index < y->index ? -1 : (x->index > y->index);
}

void reel_json_write(reel_buf *out, const reel_json *v) {
    switch (v->kind) {
    case REEL_JSON_NULL: reel_buf_puts(out, "null"); return;
    case REEL_JSON_BOOL: reel_buf_puts(out, v->v.b ? "true" : "false"); return;
    case REEL_JSON_STRING: reel_buf_put_json_string(out, v->str, v->len); return;
    case REEL_JSON_NUMBER:
        switch (v->num) {
        case REEL_NUM_U64: reel_buf_put_u64(out, v->v.u); return;
        case REEL_NUM_I64: reel_buf_put_i64(out, v->v.i); return;
        case REEL_NUM_F64: reel_buf_put_json_f64(out, v->v.f); return;
        default: reel_buf_puts(out, "null"); return;
        }
    case REEL_JSON_ARRAY:
        reel_buf_putc(out, '[');
        for (const reel_json *c = v->first; c; c = c->next) {
            if (c != v->first) reel_buf_putc(out, ',');
            reel_json_write(out, c);
        }
        reel_buf_putc(out, ']');
        return;
    case REEL_JSON_OBJECT: {
        member *ms = malloc((v->count ? v->count : 1) * sizeof *ms);
        if (!ms) __builtin_trap();
        size_t n = 0;
        for (const reel_json *c = v->first; c; c = c->next, n++) {
            ms[n].node = c;
            ms[n].index = n;
        }
        qsort(ms, n, sizeof *ms, cmp_member);
        reel_buf_putc(out, '{');
        int first = 1;
        for (size_t i = 0; i < n; i++) {
            /* a repeated key keeps its last value (serde_json::Map insert) */
            if (i + 1 < n && ms[i + 1].node->key_len == ms[i].node->key_len &&
                memcmp(ms[i + 1].node->key, ms[i].node->key, ms[i].node->key_len) == 0)
                continue;
            if (!first) reel_buf_putc(out, ',');
            first = 0;
            reel_buf_put_json_string(out, ms[i].node->key, ms[i].node->key_len);
            reel_buf_putc(out, ':');
            reel_json_write(out, ms[i].node);
        }
        reel_buf_putc(out, '}');
        free(ms);
        return;
    }
    }
}

