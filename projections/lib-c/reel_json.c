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

/* ---- parser ------------------------------------------------------------- */

typedef struct {
    reel_json_doc *doc;
    const unsigned char *s;
    size_t len;
    size_t pos;
    int depth;
    reel_buf *err;
    int failed;
} parser;

static int fail_at(parser *p, size_t at, const char *msg) {
    if (p->failed) return -1;
    p->failed = 1;
    size_t line = 1, col = 0;
    for (size_t i = 0; i < at && i < p->len; i++) {
        if (p->s[i] == '\n') {
            line++;
            col = 0;
        } else {
            col++;
        }
    }
    if (at < p->len) col++;
    reel_buf_puts(p->err, msg);
    reel_buf_puts(p->err, " at line ");
    reel_buf_put_u64(p->err, line);
    reel_buf_puts(p->err, " column ");
    reel_buf_put_u64(p->err, col);
    return -1;
}

static int fail(parser *p, const char *msg) { return fail_at(p, p->pos, msg); }

static void skip_ws(parser *p) {
    while (p->pos < p->len) {
        unsigned char c = p->s[p->pos];
        if (c == ' ' || c == '\n' || c == '\t' || c == '\r') p->pos++;
        else break;
    }
}

static int peek(parser *p) { return p->pos < p->len ? p->s[p->pos] : -1; }

static reel_json *new_node(parser *p, reel_json_kind kind) {
    reel_json *n = arena_alloc(p->doc, sizeof *n);
    memset(n, 0, sizeof *n);
    n->kind = kind;
    return n;
}

static int parse_value(parser *p, reel_json **out);

static int hex4(parser *p, unsigned *out) {
    if (p->len - p->pos < 4) {
        p->pos = p->len;
        return fail(p, "EOF while parsing a string");
    }
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int c = p->s[p->pos++];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return fail(p, "invalid escape");
    }
    *out = v;
    return 0;
}

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

/* Length of the valid UTF-8 sequence at s[0..n), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    size_t need;
    unsigned cp;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) { need = 2; cp = c & 0x1F; }
    else if (c >= 0xE0 && c <= 0xEF) { need = 3; cp = c & 0x0F; }
    else if (c >= 0xF0 && c <= 0xF4) { need = 4; cp = c & 0x07; }
    else return 0;
    if (n < need) return 0;
    for (size_t i = 1; i < need; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (need == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) return 0;
    if (need == 4 && (cp < 0x10000 || cp > 0x10FFFF)) return 0;
    return need;
}

/* At the opening quote. Decoded bytes: a slice of the input when there is
 * no escape, else a copy in the arena. */
static int parse_string(parser *p, const char **out, size_t *out_len) {
    p->pos++; /* the quote */
    size_t start = p->pos;
    /* Fast path: find the closing quote; fall back on the first escape. */
    for (;;) {
        if (p->pos >= p->len) return fail(p, "EOF while parsing a string");
        unsigned char c = p->s[p->pos];
        if (c == '"') {
            *out = (const char *)p->s + start;
            *out_len = p->pos - start;
            p->pos++;
            return 0;
        }
        if (c == '\\') break;
        if (c < 0x20) return fail(p, "control character (\\u0000-\\u001F) found while parsing a string");
        if (c < 0x80) {
            p->pos++;
        } else {
            size_t n = utf8_len(p->s + p->pos, p->len - p->pos);
            if (!n) return fail(p, "invalid unicode code point");
            p->pos += n;
        }
    }
    /* Slow path: decoded text is never longer than the source. */
    size_t end = p->pos;
    while (end < p->len && p->s[end] != '"') end += p->s[end] == '\\' ? 2 : 1;
    size_t cap = (end < p->len ? end : p->len) - start + 4;
    char *d = arena_alloc(p->doc, cap);
    size_t n = p->pos - start;
    memcpy(d, p->s + start, n);
    for (;;) {
        if (p->pos >= p->len) return fail(p, "EOF while parsing a string");
        unsigned char c = p->s[p->pos];
        if (c == '"') {
            p->pos++;
            *out = d;
            *out_len = n;
            return 0;
        }
        if (c < 0x20) return fail(p, "control character (\\u0000-\\u001F) found while parsing a string");
        if (c != '\\') {
            size_t k = c < 0x80 ? 1 : utf8_len(p->s + p->pos, p->len - p->pos);
            if (!k) return fail(p, "invalid unicode code point");
            memcpy(d + n, p->s + p->pos, k);
            n += k;
            p->pos += k;
            continue;
        }
        p->pos++;
        if (p->pos >= p->len) return fail(p, "EOF while parsing a string");
        c = p->s[p->pos++];
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
            if (hex4(p, &cp)) return -1;
            if (cp >= 0xDC00 && cp <= 0xDFFF) return fail(p, "lone leading surrogate in hex escape");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (p->len - p->pos < 2 || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u')
                    return fail(p, "unexpected end of hex escape");
                p->pos += 2;
                unsigned lo;
                if (hex4(p, &lo)) return -1;
                if (lo < 0xDC00 || lo > 0xDFFF) return fail(p, "lone leading surrogate in hex escape");
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            /* \uXXXX (6 source bytes) decodes to at most 3 bytes, a pair
             * (12 bytes) to 4: the copy never outgrows the source. */
            n += put_utf8(d + n, cp);
            break;
        }
        default:
            p->pos--;
            return fail(p, "invalid escape");
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

static int is_digit(int c) { return c >= '0' && c <= '9'; }

/* f64_from_parts; returns 0, or 1 for "number out of range". */
static int f64_from_parts(int positive, uint64_t significand, int32_t exponent, double *out) {
    double f = (double)significand;
    for (;;) {
        uint32_t a = exponent < 0 ? (uint32_t)0 - (uint32_t)exponent : (uint32_t)exponent;
        if (a < 309) {
            if (exponent >= 0) {
                f *= POW10[a];
                if (f - f != 0) return 1; /* infinite */
            } else {
                f /= POW10[a];
            }
            break;
        }
        if (f == 0.0) break;
        if (exponent >= 0) return 1;
        f /= 1e308;
        exponent += 308;
    }
    *out = positive ? f : -f;
    return 0;
}

typedef struct {
    parser *p;
    int positive;
    int out_of_range;
    double f;
} numctx;

static int32_t sat_add(int32_t a, int32_t b) {
    int64_t r = (int64_t)a + b;
    if (r > INT32_MAX) return INT32_MAX;
    if (r < INT32_MIN) return INT32_MIN;
    return (int32_t)r;
}

static int parse_exponent(numctx *n, uint64_t significand, int32_t starting_exp) {
    parser *p = n->p;
    p->pos++; /* e or E */
    int positive_exp = 1;
    if (peek(p) == '+') p->pos++;
    else if (peek(p) == '-') {
        p->pos++;
        positive_exp = 0;
    }
    if (p->pos >= p->len) return fail(p, "EOF while parsing a value");
    int c = p->s[p->pos++];
    if (!is_digit(c)) return fail_at(p, p->pos - 1, "invalid number");
    int32_t exp = c - '0';
    while (is_digit(peek(p))) {
        int digit = p->s[p->pos++] - '0';
        if (exp >= INT32_MAX / 10 && (exp > INT32_MAX / 10 || digit > INT32_MAX % 10)) {
            /* parse_exponent_overflow */
            if (significand != 0 && positive_exp) {
                n->out_of_range = 1;
            } else {
                n->f = n->positive ? 0.0 : -0.0;
            }
            while (is_digit(peek(p))) p->pos++;
            return 0;
        }
        exp = exp * 10 + digit;
    }
    int32_t final_exp = positive_exp ? sat_add(starting_exp, exp) : sat_add(starting_exp, -exp);
    n->out_of_range = f64_from_parts(n->positive, significand, final_exp, &n->f);
    return 0;
}

static int parse_decimal(numctx *n, uint64_t significand, int32_t exp_before) {
    parser *p = n->p;
    p->pos++; /* the point */
    int32_t exp_after = 0;
    while (is_digit(peek(p))) {
        int digit = p->s[p->pos] - '0';
        if (OVERFLOW_U64(significand, digit)) {
            /* parse_decimal_overflow: ignore further digits */
            while (is_digit(peek(p))) p->pos++;
            int32_t exponent = exp_before + exp_after;
            if (peek(p) == 'e' || peek(p) == 'E') return parse_exponent(n, significand, exponent);
            n->out_of_range = f64_from_parts(n->positive, significand, exponent, &n->f);
            return 0;
        }
        p->pos++;
        significand = significand * 10 + (uint64_t)digit;
        exp_after--;
    }
    if (exp_after == 0) {
        if (p->pos < p->len) return fail(p, "invalid number");
        return fail(p, "EOF while parsing a value");
    }
    int32_t exponent = exp_before + exp_after;
    if (peek(p) == 'e' || peek(p) == 'E') return parse_exponent(n, significand, exponent);
    n->out_of_range = f64_from_parts(n->positive, significand, exponent, &n->f);
    return 0;
}

static int parse_number(parser *p, reel_json *node) {
    size_t start = p->pos;
    numctx n = {p, 1, 0, 0.0};
    if (peek(p) == '-') {
        p->pos++;
        n.positive = 0;
    }
    if (p->pos >= p->len) return fail(p, "EOF while parsing a value");
    int c = p->s[p->pos++];
    uint64_t significand;
    int is_float = 0;
    if (c == '0') {
        if (is_digit(peek(p))) return fail(p, "invalid number");
        significand = 0;
    } else if (c >= '1' && c <= '9') {
        significand = (uint64_t)(c - '0');
        for (;;) {
            int d = peek(p);
            if (!is_digit(d)) break;
            if (OVERFLOW_U64(significand, d - '0')) {
                /* parse_long_integer: count the remaining digits as exponent */
                int32_t exponent = 0;
                while (is_digit(peek(p))) {
                    p->pos++;
                    exponent++;
                }
                is_float = 1;
                if (peek(p) == '.') {
                    if (parse_decimal(&n, significand, exponent)) return -1;
                } else if (peek(p) == 'e' || peek(p) == 'E') {
                    if (parse_exponent(&n, significand, exponent)) return -1;
                } else {
                    n.out_of_range = f64_from_parts(n.positive, significand, exponent, &n.f);
                }
                goto done;
            }
            p->pos++;
            significand = significand * 10 + (uint64_t)(d - '0');
        }
    } else {
        return fail_at(p, p->pos - 1, "invalid number");
    }
    if (peek(p) == '.') {
        is_float = 1;
        if (parse_decimal(&n, significand, 0)) return -1;
    } else if (peek(p) == 'e' || peek(p) == 'E') {
        is_float = 1;
        if (parse_exponent(&n, significand, 0)) return -1;
    } else if (n.positive) {
        node->num = REEL_NUM_U64;
        node->v.u = significand;
    } else {
        int64_t neg = (int64_t)((uint64_t)0 - significand);
        if (neg >= 0) { /* -0, or below i64::MIN */
            node->num = REEL_NUM_F64;
            node->v.f = -(double)significand;
        } else {
            node->num = REEL_NUM_I64;
            node->v.i = neg;
        }
    }
done:
    if (is_float) {
        node->num = n.out_of_range ? REEL_NUM_OUT_OF_RANGE : REEL_NUM_F64;
        node->v.f = n.f;
    }
    node->str = (const char *)p->s + start;
    node->len = p->pos - start;
    return 0;
}

static int parse_ident(parser *p, const char *rest) {
    p->pos++;
    for (const char *r = rest; *r; r++) {
        if (p->pos >= p->len) return fail(p, "EOF while parsing a value");
        if (p->s[p->pos] != (unsigned char)*r) return fail(p, "expected ident");
        p->pos++;
    }
    return 0;
}

static int parse_array(parser *p, reel_json *node) {
    p->pos++;
    reel_json **tail = &node->first;
    skip_ws(p);
    if (peek(p) == ']') {
        p->pos++;
        return 0;
    }
    for (;;) {
        reel_json *child;
        if (parse_value(p, &child)) return -1;
        *tail = child;
        tail = &child->next;
        node->count++;
        skip_ws(p);
        int c = peek(p);
        if (c == ',') {
            p->pos++;
            skip_ws(p);
            if (peek(p) == ']') return fail(p, "trailing comma");
            continue;
        }
        if (c == ']') {
            p->pos++;
            return 0;
        }
        if (c < 0) return fail(p, "EOF while parsing a list");
        return fail(p, "expected `,` or `]`");
    }
}

static int parse_object(parser *p, reel_json *node) {
    p->pos++;
    reel_json **tail = &node->first;
    skip_ws(p);
    if (peek(p) == '}') {
        p->pos++;
        return 0;
    }
    for (;;) {
        int c = peek(p);
        if (c < 0) return fail(p, "EOF while parsing an object");
        if (c != '"') return fail(p, "key must be a string");
        const char *key;
        size_t key_len;
        if (parse_string(p, &key, &key_len)) return -1;
        skip_ws(p);
        c = peek(p);
        if (c < 0) return fail(p, "EOF while parsing an object");
        if (c != ':') return fail(p, "expected `:`");
        p->pos++;
        reel_json *child;
        if (parse_value(p, &child)) return -1;
        child->key = key;
        child->key_len = key_len;
        *tail = child;
        tail = &child->next;
        node->count++;
        skip_ws(p);
        c = peek(p);
        if (c == ',') {
            p->pos++;
            skip_ws(p);
            if (peek(p) == '}') return fail(p, "trailing comma");
            continue;
        }
        if (c == '}') {
            p->pos++;
            return 0;
        }
        if (c < 0) return fail(p, "EOF while parsing an object");
        return fail(p, "expected `,` or `}`");
    }
}

static int parse_value(parser *p, reel_json **out) {
    skip_ws(p);
    int c = peek(p);
    if (c < 0) return fail(p, "EOF while parsing a value");
    reel_json *node;
    switch (c) {
    case 'n':
        node = new_node(p, REEL_JSON_NULL);
        if (parse_ident(p, "ull")) return -1;
        break;
    case 't':
        node = new_node(p, REEL_JSON_BOOL);
        node->v.b = 1;
        if (parse_ident(p, "rue")) return -1;
        break;
    case 'f':
        node = new_node(p, REEL_JSON_BOOL);
        if (parse_ident(p, "alse")) return -1;
        break;
    case '"':
        node = new_node(p, REEL_JSON_STRING);
        if (parse_string(p, &node->str, &node->len)) return -1;
        break;
    case '[':
    case '{':
        if (++p->depth > 128) return fail(p, "recursion limit exceeded");
        node = new_node(p, c == '[' ? REEL_JSON_ARRAY : REEL_JSON_OBJECT);
        if ((c == '[' ? parse_array : parse_object)(p, node)) return -1;
        p->depth--;
        break;
    default:
        if (c == '-' || is_digit(c)) {
            node = new_node(p, REEL_JSON_NUMBER);
            if (parse_number(p, node)) return -1;
            break;
        }
        return fail(p, "expected value");
    }
    *out = node;
    return 0;
}

reel_json *reel_json_parse(reel_json_doc *doc, const char *text, size_t len, reel_buf *err) {
    parser p = {doc, (const unsigned char *)text, len, 0, 0, err, 0};
    reel_json *root;
    if (parse_value(&p, &root)) return 0;
    skip_ws(&p);
    if (p.pos < p.len) {
        fail(&p, "trailing characters");
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

int reel_json_has_out_of_range(const reel_json *v) {
    if (v->kind == REEL_JSON_NUMBER) return v->num == REEL_NUM_OUT_OF_RANGE;
    for (const reel_json *c = v->first; c; c = c->next)
        if (reel_json_has_out_of_range(c)) return 1;
    return 0;
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

/* ---- serde-style decoding ----------------------------------------------- */

/* serde's `Unexpected` display of a value. */
static void unexpected(reel_buf *err, const reel_json *v) {
    switch (v->kind) {
    case REEL_JSON_NULL: reel_buf_puts(err, "null"); return;
    case REEL_JSON_BOOL: reel_buf_puts(err, v->v.b ? "boolean `true`" : "boolean `false`"); return;
    case REEL_JSON_STRING:
        reel_buf_puts(err, "string ");
        reel_buf_put_json_string(err, v->str, v->len);
        return;
    case REEL_JSON_ARRAY: reel_buf_puts(err, "sequence"); return;
    case REEL_JSON_OBJECT: reel_buf_puts(err, "map"); return;
    case REEL_JSON_NUMBER:
        switch (v->num) {
        case REEL_NUM_U64: reel_buf_puts(err, "integer `"); reel_buf_put_u64(err, v->v.u); break;
        case REEL_NUM_I64: reel_buf_puts(err, "integer `"); reel_buf_put_i64(err, v->v.i); break;
        default: reel_buf_puts(err, "floating point `"); reel_buf_put(err, v->str, v->len); break;
        }
        reel_buf_putc(err, '`');
        return;
    }
}

static int invalid_type(reel_buf *err, const reel_json *v, const char *expected) {
    if (v->kind == REEL_JSON_NUMBER && v->num == REEL_NUM_OUT_OF_RANGE) {
        reel_buf_puts(err, "number out of range");
        return -1;
    }
    reel_buf_puts(err, "invalid type: ");
    unexpected(err, v);
    reel_buf_puts(err, ", expected ");
    reel_buf_puts(err, expected);
    return -1;
}

int reel_de_struct(const reel_json *v, const char *name, reel_buf *err) {
    if (v->kind == REEL_JSON_OBJECT) return 0;
    reel_buf b = REEL_BUF_INIT;
    reel_buf_puts(&b, "struct ");
    reel_buf_puts(&b, name);
    reel_buf_putc(&b, 0);
    invalid_type(err, v, b.ptr);
    reel_buf_free(&b);
    return -1;
}

int reel_de_field(const reel_json *obj, const char *key, const reel_json **out, reel_buf *err) {
    size_t n = strlen(key);
    *out = 0;
    for (const reel_json *m = obj->first; m; m = m->next) {
        if (!key_is(m, key, n)) continue;
        if (*out) {
            reel_buf_puts(err, "duplicate field `");
            reel_buf_puts(err, key);
            reel_buf_putc(err, '`');
            return -1;
        }
        *out = m;
    }
    return 0;
}

static int required(const reel_json *obj, const char *key, const reel_json **out, reel_buf *err) {
    if (reel_de_field(obj, key, out, err)) return -1;
    if (*out) return 0;
    reel_buf_puts(err, "missing field `");
    reel_buf_puts(err, key);
    reel_buf_putc(err, '`');
    return -1;
}

int reel_as_str(const reel_json *v, const char **s, size_t *n, reel_buf *err) {
    if (v->kind != REEL_JSON_STRING) return invalid_type(err, v, "a string");
    *s = v->str;
    *n = v->len;
    return 0;
}

int reel_as_i64(const reel_json *v, int64_t *out, reel_buf *err) {
    if (v->kind == REEL_JSON_NUMBER && v->num == REEL_NUM_I64) {
        *out = v->v.i;
        return 0;
    }
    if (v->kind == REEL_JSON_NUMBER && v->num == REEL_NUM_U64) {
        if (v->v.u <= (uint64_t)INT64_MAX) {
            *out = (int64_t)v->v.u;
            return 0;
        }
        reel_buf_puts(err, "invalid value: integer `");
        reel_buf_put_u64(err, v->v.u);
        reel_buf_puts(err, "`, expected i64");
        return -1;
    }
    return invalid_type(err, v, "i64");
}

int reel_as_f64(const reel_json *v, double *out, reel_buf *err) {
    if (v->kind == REEL_JSON_NUMBER) {
        switch (v->num) {
        case REEL_NUM_U64: *out = (double)v->v.u; return 0;
        case REEL_NUM_I64: *out = (double)v->v.i; return 0;
        case REEL_NUM_F64: *out = v->v.f; return 0;
        default: break;
        }
    }
    return invalid_type(err, v, "f64");
}

int reel_as_bool(const reel_json *v, int *out, reel_buf *err) {
    if (v->kind != REEL_JSON_BOOL) return invalid_type(err, v, "a boolean");
    *out = v->v.b;
    return 0;
}

int reel_de_str(const reel_json *obj, const char *key, const char **s, size_t *n, reel_buf *err) {
    const reel_json *v;
    return required(obj, key, &v, err) ? -1 : reel_as_str(v, s, n, err);
}

int reel_de_i64(const reel_json *obj, const char *key, int64_t *out, reel_buf *err) {
    const reel_json *v;
    return required(obj, key, &v, err) ? -1 : reel_as_i64(v, out, err);
}

int reel_de_f64(const reel_json *obj, const char *key, double *out, reel_buf *err) {
    const reel_json *v;
    return required(obj, key, &v, err) ? -1 : reel_as_f64(v, out, err);
}

int reel_de_bool(const reel_json *obj, const char *key, int *out, reel_buf *err) {
    const reel_json *v;
    return required(obj, key, &v, err) ? -1 : reel_as_bool(v, out, err);
}

int reel_de_opt_str(const reel_json *obj, const char *key, const char **s, size_t *n, reel_buf *err) {
    const reel_json *v;
    *s = 0;
    *n = 0;
    if (reel_de_field(obj, key, &v, err)) return -1;
    if (!v || v->kind == REEL_JSON_NULL) return 0;
    return reel_as_str(v, s, n, err);
}

int reel_de_array(const reel_json *obj, const char *key, const reel_json **out, reel_buf *err) {
    if (required(obj, key, out, err)) return -1;
    if ((*out)->kind != REEL_JSON_ARRAY) return invalid_type(err, *out, "a sequence");
    return 0;
}
