/* Native unit tests of reel_str and reel_json (no wasm needed):
 *   ../test.sh   (or: cc -O2 -I.. ../reel_str.c ../reel_json.c test_lib.c -lm && ./a.out)
 * Expected strings are serde_json's (zmij's test suite, serde_json docs). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reel_json.h"
#include "reel_str.h"

static int passed, failed;

static void check_str(const char *what, const reel_buf *got, const char *want) {
    if (got->len == strlen(want) && memcmp(got->ptr, want, got->len) == 0) {
        passed++;
        return;
    }
    failed++;
    printf("FAIL %s: got `%.*s`, want `%s`\n", what, (int)got->len, got->ptr, want);
}

static void check(const char *what, int ok) {
    if (ok) passed++;
    else {
        failed++;
        printf("FAIL %s\n", what);
    }
}

static void f64_is(double v, const char *want) {
    reel_buf b = REEL_BUF_INIT;
    reel_buf_put_json_f64(&b, v);
    check_str(want, &b, want);
    reel_buf_free(&b);
}

static void roundtrip_json(const char *in, const char *want) {
    reel_json_doc doc = REEL_JSON_DOC_INIT;
    reel_buf err = REEL_BUF_INIT, out = REEL_BUF_INIT;
    reel_json *v = reel_json_parse(&doc, in, strlen(in), &err);
    if (!v) {
        failed++;
        printf("FAIL parse %s: %.*s\n", in, (int)err.len, err.ptr);
    } else {
        reel_json_write(&out, v);
        check_str(in, &out, want);
    }
    reel_buf_free(&err);
    reel_buf_free(&out);
    reel_json_doc_free(&doc);
}

static void parse_error(const char *in, const char *want_prefix) {
    reel_json_doc doc = REEL_JSON_DOC_INIT;
    reel_buf err = REEL_BUF_INIT;
    reel_json *v = reel_json_parse(&doc, in, strlen(in), &err);
    reel_buf_putc(&err, 0);
    if (v || strncmp(err.ptr, want_prefix, strlen(want_prefix)) != 0) {
        failed++;
        printf("FAIL error for `%s`: got `%s`, want `%s...`\n", in, v ? "(parsed)" : err.ptr, want_prefix);
    } else {
        passed++;
    }
    reel_buf_free(&err);
    reel_json_doc_free(&doc);
}

static double parse_number(const char *in) {
    reel_json_doc doc = REEL_JSON_DOC_INIT;
    reel_buf err = REEL_BUF_INIT;
    reel_json *v = reel_json_parse(&doc, in, strlen(in), &err);
    double d = NAN;
    if (v) reel_as_f64(v, &d, &err);
    reel_buf_free(&err);
    reel_json_doc_free(&doc);
    return d;
}

int main(void) {
    /* serde_json / zmij float layout */
    f64_is(0.0, "0.0");
    f64_is(-0.0, "-0.0");
    f64_is(1.0, "1.0");
    f64_is(31.5, "31.5");
    f64_is(19.99, "19.99");
    f64_is(0.1 + 0.2, "0.30000000000000004");
    f64_is(1e15, "1000000000000000.0");
    f64_is(1e16, "1e+16");
    f64_is(123456789012345680.0, "1.2345678901234568e+17");
    f64_is(1e-5, "0.00001");
    f64_is(1e-6, "1e-6");
    f64_is(1.5e-7, "1.5e-7");
    f64_is(6.62607015e-34, "6.62607015e-34");
    f64_is(5.444310685350916e+14, "544431068535091.6");
    f64_is(4.9406564584124654e-324, "5e-324");
    f64_is(1e-323, "1e-323");
    f64_is(1.2e-322, "1.2e-322");
    f64_is(1.24e-322, "1.24e-322");
    f64_is(1.234e-320, "1.234e-320");
    f64_is(2.2250738585072004e-308, "2.2250738585072004e-308");
    f64_is(-4.932096661796888e-226, "-4.932096661796888e-226");
    f64_is(3.439070283483335e+35, "3.439070283483335e+35");
    f64_is(6.606854224493745e-17, "6.606854224493745e-17");
    f64_is(6.079537928711555e+61, "6.079537928711555e+61");
    f64_is(1.3588129002659584e-245, "1.3588129002659584e-245");
    f64_is(2.9802322387695312e-08, "2.9802322387695312e-8");
    f64_is(5.960464477539063e-08, "5.960464477539063e-8");
    f64_is(1.3076622631878654e+65, "1.3076622631878654e+65");
    f64_is(9.03725590277404e+159, "9.03725590277404e+159");
    f64_is(5.960464477539062e-07, "5.960464477539062e-7");
    f64_is(1.7976931348623157e308, "1.7976931348623157e+308");
    f64_is(INFINITY, "null");
    f64_is(NAN, "null");

    /* every cent amount up to 10,000.00 prints as its shortest decimal and
     * parses (serde_json's way) to what strtod gives */
    int cents_ok = 1;
    for (long c = 0; c <= 1000000 && cents_ok; c++) {
        char text[32];
        snprintf(text, sizeof text, "%ld.%02ld", c / 100, c % 100);
        double want = strtod(text, 0);
        double got = parse_number(text);
        if (memcmp(&want, &got, sizeof want) != 0) {
            printf("FAIL parse %s\n", text);
            cents_ok = 0;
        }
        reel_buf b = REEL_BUF_INIT;
        reel_buf_put_json_f64(&b, (double)c / 100.0);
        double back = reel_parse_f64(b.ptr, b.len);
        if (back != (double)c / 100.0) {
            printf("FAIL format %ld\n", c);
            cents_ok = 0;
        }
        reel_buf_free(&b);
    }
    check("cent amounts", cents_ok);

    /* random doubles: the shortest form reads back, and no shorter one does */
    unsigned long long state = 0x9E3779B97F4A7C15ull;
    int random_ok = 1;
    for (int i = 0; i < 200000 && random_ok; i++) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        double v;
        memcpy(&v, &state, sizeof v);
        if (!isfinite(v) || v == 0) continue;
        char d[20];
        int k;
        int n = reel_f64_shortest(v, d, &k);
        char text[64];
        snprintf(text, sizeof text, "%.*se%d", n, d, k);
        if (strtod(text, 0) != fabs(v)) {
            printf("FAIL shortest %.17g -> %s\n", v, text);
            random_ok = 0;
        }
        char shorter[64];
        snprintf(shorter, sizeof shorter, "%.*e", n - 2 < 0 ? 0 : n - 2, fabs(v));
        if (n > 1 && strtod(shorter, 0) == fabs(v)) {
            printf("FAIL not shortest %.17g: %s vs %s\n", v, text, shorter);
            random_ok = 0;
        }
    }
    check("random doubles", random_ok);

    /* serde_json's number parsing */
    check("1e400 out of range", parse_number("1e400") != parse_number("1e400")); /* NaN: not decoded */
    check("0e999999999999", parse_number("0e999999999999") == 0.0);
    check("1e-999999999999", parse_number("1e-999999999999") == 0.0);
    check("big integer", parse_number("123456789012345678901234567890") == 1.2345678901234568e29);
    check("exact 0.1", parse_number("0.1") == 0.1);
    check("exact 2.5e-3", parse_number("2.5e-3") == 2.5e-3);
    check("-0 is a float", parse_number("-0") == 0.0 && signbit(parse_number("-0")));

    /* Value round trips: sorted keys, last duplicate wins, escapes */
    roundtrip_json("{\"orders\":2,\"cancelled\":0,\"total_spent\":31.50}",
                   "{\"cancelled\":0,\"orders\":2,\"total_spent\":31.5}");
    roundtrip_json("{\"total_spent\":-3.00}", "{\"total_spent\":-3.0}");
    roundtrip_json(" {\"b\":1,\"a\":[true,false,null],\"b\":\"x\"} ", "{\"a\":[true,false,null],\"b\":\"x\"}");
    roundtrip_json("\"a\\u00e9\\ud83d\\ude00\\n\\t\\u0001\\/\"", "\"a\xc3\xa9\xf0\x9f\x98\x80\\n\\t\\u0001/\"");
    roundtrip_json("[-1,18446744073709551615,-9223372036854775808,1.0,1E2]",
                   "[-1,18446744073709551615,-9223372036854775808,1.0,100.0]");
    roundtrip_json("18446744073709551616", "1.8446744073709552e+19");
    roundtrip_json("{}", "{}");
    roundtrip_json("[]", "[]");

    parse_error("", "EOF while parsing a value");
    parse_error("{\"a\":1,}", "trailing comma");
    parse_error("[1,]", "trailing comma");
    parse_error("{\"a\" 1}", "expected `:`");
    parse_error("{1:2}", "key must be a string");
    parse_error("[1 2]", "expected `,` or `]`");
    parse_error("{\"a\":1 \"b\"}", "expected `,` or `}`");
    parse_error("01", "invalid number");
    parse_error("1.", "EOF while parsing a value");
    parse_error("1.e1", "invalid number");
    parse_error("-", "EOF while parsing a value");
    parse_error("tru", "EOF while parsing a value");
    parse_error("trux", "expected ident");
    parse_error("\"a\\x\"", "invalid escape");
    parse_error("\"\\ud800\"", "unexpected end of hex escape");
    parse_error("\"a\nb\"", "control character");
    parse_error("{} x", "trailing characters");
    parse_error("\"\xff\"", "invalid unicode code point");
    parse_error("x", "expected value");
    {
        char deep[300];
        memset(deep, '[', 129);
        deep[129] = 0;
        parse_error(deep, "recursion limit exceeded");
    }

    /* serde-derive decoding messages */
    {
        reel_json_doc doc = REEL_JSON_DOC_INIT;
        reel_buf err = REEL_BUF_INIT;
        const char *in = "{\"orderId\":5,\"q\":1.5,\"dup\":1,\"dup\":2,\"big\":18446744073709551615}";
        reel_json *v = reel_json_parse(&doc, in, strlen(in), &err);
        const char *s;
        size_t n;
        int64_t i;
        double f;
        const reel_json *field;
        check("parse for decode", v != 0);
        check("wrong type", reel_de_str(v, "orderId", &s, &n, &err) == -1);
        check_str("wrong type msg", &err, "invalid type: integer `5`, expected a string");
        reel_buf_clear(&err);
        check("missing", reel_de_str(v, "customerId", &s, &n, &err) == -1);
        check_str("missing msg", &err, "missing field `customerId`");
        reel_buf_clear(&err);
        check("float for i64", reel_de_i64(v, "q", &i, &err) == -1);
        check_str("float for i64 msg", &err, "invalid type: floating point `1.5`, expected i64");
        reel_buf_clear(&err);
        check("duplicate", reel_de_field(v, "dup", &field, &err) == -1);
        check_str("duplicate msg", &err, "duplicate field `dup`");
        reel_buf_clear(&err);
        check("u64 over i64", reel_de_i64(v, "big", &i, &err) == -1);
        check_str("u64 over i64 msg", &err, "invalid value: integer `18446744073709551615`, expected i64");
        reel_buf_clear(&err);
        check("int as f64", reel_de_f64(v, "big", &f, &err) == 0 && f == 18446744073709551615.0);
        check("last duplicate for Value", reel_json_get(v, "dup")->v.u == 2);
        reel_buf_free(&err);
        reel_json_doc_free(&doc);
    }

    /* string escaping like serde_json */
    {
        reel_buf b = REEL_BUF_INIT;
        { const char *e = "q\"b\\s\b\f\n\r\t\x1f\x7f\xc3\xa9/"; reel_buf_put_json_string(&b, e, strlen(e)); }
        check_str("escape", &b, "\"q\\\"b\\\\s\\b\\f\\n\\r\\t\\u001f\x7f\xc3\xa9/\"");
        reel_buf_free(&b);
    }

    /* the arena: many parses into one doc, reset between them */
    {
        reel_json_doc doc = REEL_JSON_DOC_INIT;
        reel_buf err = REEL_BUF_INIT;
        int ok = 1;
        for (int i = 0; i < 10000 && ok; i++) {
            reel_json_doc_reset(&doc);
            char in[400];
            snprintf(in, sizeof in, "{\"orderId\":\"o-%d\",\"items\":[{\"quantity\":%d}],\"s\":\"%0*d\"}", i, i,
                     i % 150, 0);
            reel_json *v = reel_json_parse(&doc, in, strlen(in), &err);
            ok = v && reel_json_get(v, "items")->first->first->v.u == (uint64_t)i;
        }
        check("arena reuse", ok);
        reel_buf_free(&err);
        reel_json_doc_free(&doc);
    }

    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
