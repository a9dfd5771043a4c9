#include "reel_str.h"

#include <stdlib.h>
#include <string.h>

void reel_buf_reserve(reel_buf *b, size_t extra) {
    if (b->cap - b->len >= extra) return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap - b->len < extra) cap *= 2;
    char *p = realloc(b->ptr, cap);
    if (!p) __builtin_trap();
    b->ptr = p;
    b->cap = cap;
}

void reel_buf_free(reel_buf *b) {
    free(b->ptr);
    b->ptr = 0;
    b->len = b->cap = 0;
}

void reel_buf_put(reel_buf *b, const char *s, size_t n) {
    if (!n) return;
    reel_buf_reserve(b, n);
    memcpy(b->ptr + b->len, s, n);
    b->len += n;
}

void reel_buf_puts(reel_buf *b, const char *s) { reel_buf_put(b, s, strlen(s)); }

void reel_buf_putc(reel_buf *b, char c) {
    reel_buf_reserve(b, 1);
    b->ptr[b->len++] = c;
}

void reel_buf_put_u64(reel_buf *b, uint64_t v) {
    char tmp[20];
    int i = 20;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    reel_buf_put(b, tmp + i, (size_t)(20 - i));
}

void reel_buf_put_i64(reel_buf *b, int64_t v) {
    if (v < 0) {
        reel_buf_putc(b, '-');
        reel_buf_put_u64(b, (uint64_t)0 - (uint64_t)v);
    } else {
        reel_buf_put_u64(b, (uint64_t)v);
    }
}

void reel_buf_put_json_string(reel_buf *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    reel_buf_reserve(b, n + 2);
    reel_buf_putc(b, '"');
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = 0;
        char u[6];
        if (c == '"') esc = "\\\"";
        else if (c == '\\') esc = "\\\\";
        else if (c < 0x20) {
            switch (c) {
            case '\b': esc = "\\b"; break;
            case '\t': esc = "\\t"; break;
            case '\n': esc = "\\n"; break;
            case '\f': esc = "\\f"; break;
            case '\r': esc = "\\r"; break;
            default:
                u[0] = '\\'; u[1] = 'u'; u[2] = '0'; u[3] = '0';
                u[4] = hex[c >> 4]; u[5] = hex[c & 15];
                break;
            }
        } else {
            continue;
        }
        reel_buf_put(b, s + start, i - start);
        if (esc) reel_buf_puts(b, esc);
        else reel_buf_put(b, u, 6);
        start = i + 1;
    }
    reel_buf_put(b, s + start, n - start);
    reel_buf_putc(b, '"');
}

char *reel_buf_cstr(const reel_buf *b) {
    char *p = malloc(b->len + 1);
    if (!p) __builtin_trap();
    if (b->len) memcpy(p, b->ptr, b->len);
    p[b->len] = 0;
    return p;
}

double reel_parse_f64(const char *s, size_t n) {
    char small[64];
    char *text = n < sizeof small ? small : malloc(n + 1);
    if (!text) __builtin_trap();
    memcpy(text, s, n);
    text[n] = 0;
    double v = strtod(text, 0);
    if (text != small) free(text);
    return v;
}

/* ---- shortest round-trip digits ----------------------------------------
 *
 * The exact decimal expansion of a double is computed with a small bignum in
 * base 1e9 (|v| = m * 2^e = m * 5^-e / 10^-e), then for p = 1, 2, ... 17 the
 * two p-digit neighbours of |v| (truncated and truncated + 1 unit) are read
 * back with strtod; the first p where one of them reads back as |v| wins, the
 * nearer one (ties to even) when both do. That is the shortest, closest
 * representation ryu / zmij (serde_json's float writers) produce. */

#define LIMBS 100
#define BASE 1000000000u

static int mul_small(uint32_t *l, int n, uint32_t f) {
    uint64_t carry = 0;
    for (int i = 0; i < n; i++) {
        uint64_t t = (uint64_t)l[i] * f + carry;
        l[i] = (uint32_t)(t % BASE);
        carry = t / BASE;
    }
    while (carry) {
        l[n++] = (uint32_t)(carry % BASE);
        carry /= BASE;
    }
    return n;
}

/* Exact digits of |v| (finite, non-zero), without trailing zeros; |v| ==
 * digits * 10^(*exp10). Returns the digit count (at most ~770). */
static int exact_digits(double v, char *out, int *exp10) {
    uint64_t bits;
    memcpy(&bits, &v, 8);
    int be = (int)((bits >> 52) & 0x7ff);
    uint64_t m = bits & ((1ull << 52) - 1);
    int e;
    if (be == 0) {
        e = -1074;
    } else {
        m |= 1ull << 52;
        e = be - 1075;
    }
    uint32_t l[LIMBS];
    int n = 0;
    while (m) {
        l[n++] = (uint32_t)(m % BASE);
        m /= BASE;
    }
    int dexp = 0;
    if (e > 0) {
        int left = e;
        while (left >= 29) { n = mul_small(l, n, 1u << 29); left -= 29; }
        if (left) n = mul_small(l, n, 1u << left);
    } else if (e < 0) {
        int left = -e;
        while (left >= 13) { n = mul_small(l, n, 1220703125u); left -= 13; }
        uint32_t f = 1;
        while (left--) f *= 5;
        if (f > 1) n = mul_small(l, n, f);
        dexp = e;
    }
    int len = 0;
    for (int i = n - 1; i >= 0; i--) {
        char tmp[9];
        uint32_t x = l[i];
        for (int j = 8; j >= 0; j--) {
            tmp[j] = (char)('0' + x % 10);
            x /= 10;
        }
        if (i == n - 1) {
            int j = 0;
            while (j < 8 && tmp[j] == '0') j++;
            memcpy(out + len, tmp + j, (size_t)(9 - j));
            len += 9 - j;
        } else {
            memcpy(out + len, tmp, 9);
            len += 9;
        }
    }
    while (len > 1 && out[len - 1] == '0') {
        len--;
        dexp++;
    }
    *exp10 = dexp;
    return len;
}

static double read_back(const char *digits, int n, int exp10) {
    char text[48];
    int i = 0;
    memcpy(text, digits, (size_t)n);
    i = n;
    text[i++] = 'e';
    if (exp10 < 0) {
        text[i++] = '-';
        exp10 = -exp10;
    }
    char tmp[8];
    int k = 0;
    do {
        tmp[k++] = (char)('0' + exp10 % 10);
        exp10 /= 10;
    } while (exp10);
    while (k) text[i++] = tmp[--k];
    text[i] = 0;
    return strtod(text, 0);
}

static int trim(char *d, int n, int *exp10) {
    while (n > 1 && d[n - 1] == '0') {
        n--;
        (*exp10)++;
    }
    return n;
}

int reel_f64_shortest(double v, char *digits, int *exp10) {
    if (v < 0) v = -v;
    char all[800];
    int ex;
    int len = exact_digits(v, all, &ex);
    for (int p = 1; p <= 17; p++) {
        if (len <= p) {
            memcpy(digits, all, (size_t)len);
            *exp10 = ex;
            return len;
        }
        int e = ex + (len - p);
        char lo[20], hi[20];
        memcpy(lo, all, (size_t)p);
        memcpy(hi, all, (size_t)p);
        int hn = p, he = e, i = p - 1;
        while (i >= 0 && hi[i] == '9') hi[i--] = '0';
        if (i >= 0) {
            hi[i]++;
        } else {
            hi[0] = '1';
            hn = 1;
            he = e + p;
        }
        int lo_ok = read_back(lo, p, e) == v;
        int hi_ok = read_back(hi, hn, he) == v;
        int take_hi;
        if (lo_ok && hi_ok) {
            /* Nearer wins: compare the dropped digits with one half. */
            char first = all[p];
            if (first > '5') take_hi = 1;
            else if (first < '5') take_hi = 0;
            else if (len > p + 1) take_hi = 1; /* all[] has no trailing zeros */
            else take_hi = ((lo[p - 1] - '0') & 1);
        } else if (lo_ok) {
            take_hi = 0;
        } else if (hi_ok) {
            take_hi = 1;
        } else {
            continue;
        }
        if (take_hi) {
            memcpy(digits, hi, (size_t)hn);
            *exp10 = he;
            return trim(digits, hn, exp10);
        }
        memcpy(digits, lo, (size_t)p);
        *exp10 = e;
        return trim(digits, p, exp10);
    }
    /* Unreachable: 17 correctly rounded digits always read back. */
    memcpy(digits, all, 17);
    *exp10 = ex + (len - 17);
    return trim(digits, 17, exp10);
}

void reel_buf_put_json_f64(reel_buf *b, double v) {
    if (v != v || v - v != 0) { /* NaN or infinite */
        reel_buf_puts(b, "null");
        return;
    }
    if (__builtin_signbit(v)) reel_buf_putc(b, '-');
    if (v == 0) {
        reel_buf_puts(b, "0.0");
        return;
    }
    char d[20];
    int k;
    int len = reel_f64_shortest(v, d, &k);
    int sci = len + k - 1; /* exponent of the first digit */
    if (sci >= -5 && sci <= 15) {
        if (k >= 0) { /* 1234e7 -> 12340000000.0 */
            reel_buf_put(b, d, (size_t)len);
            for (int i = 0; i < k; i++) reel_buf_putc(b, '0');
            reel_buf_puts(b, ".0");
        } else if (sci >= 0) { /* 1234e-2 -> 12.34 */
            reel_buf_put(b, d, (size_t)(sci + 1));
            reel_buf_putc(b, '.');
            reel_buf_put(b, d + sci + 1, (size_t)(len - sci - 1));
        } else { /* 1234e-6 -> 0.001234 */
            reel_buf_puts(b, "0.");
            for (int i = 0; i < -sci - 1; i++) reel_buf_putc(b, '0');
            reel_buf_put(b, d, (size_t)len);
        }
        return;
    }
    /* 1234e30 -> 1.234e+33 (zmij writes the exponent's sign always) */
    reel_buf_putc(b, d[0]);
    if (len > 1) {
        reel_buf_putc(b, '.');
        reel_buf_put(b, d + 1, (size_t)(len - 1));
    }
    reel_buf_putc(b, 'e');
    reel_buf_putc(b, sci < 0 ? '-' : '+');
    reel_buf_put_i64(b, sci < 0 ? -sci : sci);
}
