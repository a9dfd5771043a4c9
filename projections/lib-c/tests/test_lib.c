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
    if (v && v->kind == REEL_JSON_NUMBER)
        d = v->num == REEL_NUM_U64 ? (double)v->v.u : v->num == REEL_NUM_I64 ? (double)v->v.i : v->v.f;
    reel_buf_free(&err);
    reel_json_doc_free(&doc);
    return d;
}

/* One element of `items`: a LineItem { productId, quantity, price }. */
static int line_item(reel_de *de, void *ctx) {
    reel_str product_id;
    int64_t quantity;
    double price;
    const reel_de_field fields[] = {
        {"productId", REEL_DE_STR, &product_id},
        {"quantity", REEL_DE_I64, &quantity},
        {"price", REEL_DE_F64, &price},
    };
    int rc = reel_de_struct(de, "LineItem", fields, 3);
    if (rc == 0) *(uint64_t *)ctx += (uint64_t)quantity;
    return rc;
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
    check("1e400 out of range", parse_number("1e400") != parse_number("1e400")); /* NaN: an error */
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
    roundtrip_json("[-1,18446744073709551615,-9223372036854775808,1.0,1E2,-0]",
                   "[-1,18446744073709551615,-9223372036854775808,1.0,100.0,-0.0]");
    roundtrip_json("18446744073709551616", "1.8446744073709552e+19");
    roundtrip_json("{}", "{}");
    roundtrip_json("[]", "[]");

    /* the tree parser's errors: serde_json's messages and positions */
    {
        struct {
            const char *in, *want;
        } cases[] = {
            {"", "EOF while parsing a value at line 1 column 0"},
            {"{\"a\":1,}", "trailing comma at line 1 column 8"},
            {"[1,]", "trailing comma at line 1 column 4"},
            {"{\"a\" 1}", "expected `:` at line 1 column 6"},
            {"{1:2}", "key must be a string at line 1 column 2"},
            {"[1 2]", "expected `,` or `]` at line 1 column 4"},
            {"{\"a\":1 \"b\"}", "expected `,` or `}` at line 1 column 8"},
            {"01", "invalid number at line 1 column 2"},
            {"1.", "EOF while parsing a value at line 1 column 2"},
            {"1.e1", "invalid number at line 1 column 3"},
            {"-", "EOF while parsing a value at line 1 column 1"},
            {"tru", "EOF while parsing a value at line 1 column 3"},
            {"trux", "expected ident at line 1 column 4"},
            {"\"a\\x\"", "invalid escape at line 1 column 4"},
            {"\"\\ud800\"", "unexpected end of hex escape at line 1 column 8"},
            {"\"\\udc00\"", "lone leading surrogate in hex escape at line 1 column 7"},
            {"\"a\nb\"", "control character (\\u0000-\\u001F) found while parsing a string at line 2 column 0"},
            {"{} x", "trailing characters at line 1 column 4"},
            {"x", "expected value at line 1 column 1"},
            {"[1e400, x", "number out of range at line 1 column 6"},
            {"\"\xff\"", "invalid unicode code point at line 1 column 2"},
        };
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) parse_error(cases[c].in, cases[c].want);
        char deep[200];
        memset(deep, '[', 128);
        deep[128] = 0;
        parse_error(deep, "recursion limit exceeded at line 1 column 128");
    }

    /* typed decoding: messages and positions as serde_json + serde derive
     * give them (expected strings taken from serde_json 1.0.154 under serde_path_to_error
     * 0.1.20, as the Rust SDK reports them: the path to the value first) */
    {
        struct {
            const char *in, *want;
        } cases[] = {
            {"{\"orderId\":5}", "orderId: invalid type: integer `5`, expected a string at line 1 column 12"},
            {"{\"orderId\":\"o\"}", "missing field `total` at line 1 column 15"},
            {"{\"orderId\":\"o\",\"total\":1,\"orderId\":\"p\"}", "duplicate field `orderId` at line 1 column 34"},
            {"{\"orderId\":\"o\",\"total\":\"x\\ny\"}",
             "total: invalid type: string \"x\\ny\", expected f64 at line 1 column 29"},
            {"{\"orderId\":[1],\"total\":1}", "orderId: invalid type: sequence, expected a string at line 1 column 11"},
            {"{\"orderId\":\"o\",\n \"total\":1e400}", "total: number out of range at line 2 column 14"},
            {"{\"orderId\":\"o\",\"total\":1,\"q\":1.0}",
             "q: invalid type: floating point `1.0`, expected i64 at line 1 column 32"},
            {"{\"orderId\":\"o\",\"total\":1,\"q\":18446744073709551615}",
             "q: invalid value: integer `18446744073709551615`, expected i64 at line 1 column 49"},
            {"{\"orderId\":\"o\",\"total\":1,\"q\":2,\"reason\":true}",
             "reason: invalid type: boolean `true`, expected a string at line 1 column 44"},
            {"5", "invalid type: integer `5`, expected struct T at line 1 column 1"},
            {"[\"o\"]", "invalid length 1, expected struct T with 4 elements at line 1 column 5"},
            {"[\"o\",2,3,null,9]", "trailing characters at line 1 column 15"},
            {"[\"o\",2.5e1,3]", "ok o 25 3 -"},
            {"{\"q\":3,\"total\":-0,\"orderId\":\"o\",\"x\":{\"deep\":[1e999,\"\\udc00\"]},\"reason\":null}",
             "ok o -0 3 -"},
            {"{\"q\":3,\"total\":0.5,\"orderId\":\"\\u00e9\",\"reason\":\"r\"}", "ok \xc3\xa9 0.5 3 r"},
            {"{\"orderId\":\"o\",\"total\":1,\"q\":1e20}",
             "q: invalid type: floating point `1e+20`, expected i64 at line 1 column 33"},
            {"{\"orderId\":\"o\",\"total\":\"\\u0001\\u007f\"}",
             "total: invalid type: string \"\\u{1}\\u{7f}\", expected f64 at line 1 column 37"},
            {"{\"orderId\":\"o\",\"total\":1,\"q\":2} x", "trailing characters at line 1 column 33"},
            {"{\"orderId\":\"o\",\"total\":1,\"q\":2,\"x\":[1,}", "x: expected value at line 1 column 39"},
            {"{\"orderId\":\"o\",\"total\":1,\"q\":2,\"orderId\":[}", "duplicate field `orderId` at line 1 column 40"},
        };
        reel_json_doc doc = REEL_JSON_DOC_INIT;
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            reel_buf err = REEL_BUF_INIT;
            reel_str order_id, reason;
            double total = 0;
            int64_t q = 0;
            const reel_de_field fields[] = {
                {"orderId", REEL_DE_STR, &order_id},
                {"total", REEL_DE_F64, &total},
                {"q", REEL_DE_I64, &q},
                {"reason", REEL_DE_OPT_STR, &reason},
            };
            reel_json_doc_reset(&doc);
            if (reel_de_from_text(&doc, cases[c].in, strlen(cases[c].in), "T", fields, 4, &err)) {
                check_str(cases[c].in, &err, cases[c].want);
            } else {
                char got[200];
                snprintf(got, sizeof got, "ok %.*s %g %lld %.*s", (int)order_id.len, order_id.ptr, total,
                         (long long)q, reason.ptr ? (int)reason.len : 1, reason.ptr ? reason.ptr : "-");
                reel_buf g = REEL_BUF_INIT;
                reel_buf_puts(&g, got);
                check_str(cases[c].in, &g, cases[c].want);
                reel_buf_free(&g);
            }
            reel_buf_free(&err);
        }
        reel_json_doc_free(&doc);
    }

    /* nested values: the path to the value at fault (serde_path_to_error) */
    {
        struct {
            const char *in, *want;
        } cases[] = {
            {"{\"orderId\":\"o\",\"customerId\":\"c\",\"items\":[{\"productId\":\"p\",\"quantity\":\"two\",\"price\":1}],\"total\":1}",
             "items[0].quantity: invalid type: string \"two\", expected i64 at line 1 column 74"},
            {"{\"orderId\":\"o\",\"customerId\":\"c\",\"items\":[{\"productId\":\"p\",\"quantity\":1,\"price\":1},{\"productId\":\"p\",\"price\":1}],\"total\":1}",
             "items[1]: missing field `quantity` at line 1 column 109"},
            {"{\"orderId\":\"o\",\"customerId\":\"c\",\"items\":[7],\"total\":1}",
             "items[0]: invalid type: integer `7`, expected struct LineItem at line 1 column 42"},
            {"{\"orderId\":\"o\",\"customerId\":\"c\",\"items\":{},\"total\":1}",
             "items: invalid type: map, expected a sequence at line 1 column 40"},
            {"{\"orderId\":\"o\",\"customerId\":\"c\",\"items\":[[\"p\",1,\"x\"]],\"total\":1}",
             "items[0][2]: invalid type: string \"x\", expected f64 at line 1 column 51"},
            {"{\"orderId\":\"o\",\"customerId\":\"c\",\"items\":[{\"productId\":\"p\",\"quantity\":1,\"price\":1,\"note\":[1,}],\"total\":1}",
             "items[0].note: expected value at line 1 column 92"},
            {"{\"orderId\":\"o\",\"customerId\":\"c\",\"items\":[{\"productId\":\"p\",\"quantity\":1,\"price\":1} {}],\"total\":1}",
             "items: expected `,` or `]` at line 1 column 83"},
            {"{\"orderId\":\"o\",\"customerId\":\"c\",\"items\":[],\"total\":1,\"extra\":{\"a\":tru}}",
             "extra: expected ident at line 1 column 70"},
        };
        reel_json_doc doc = REEL_JSON_DOC_INIT;
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            reel_buf err = REEL_BUF_INIT;
            reel_str order_id, customer_id;
            double total;
            uint64_t quantities = 0;
            const reel_de_field fields[] = {
                {"orderId", REEL_DE_STR, &order_id},
                {"customerId", REEL_DE_STR, &customer_id},
                {"items", REEL_DE_SEQ, 0, line_item, &quantities},
                {"total", REEL_DE_F64, &total},
            };
            reel_json_doc_reset(&doc);
            if (reel_de_from_text(&doc, cases[c].in, strlen(cases[c].in), "OrderPlaced", fields, 4, &err)) {
                check_str(cases[c].in, &err, cases[c].want);
            } else {
                reel_buf g = REEL_BUF_INIT;
                reel_buf_puts(&g, "ok");
                check_str(cases[c].in, &g, cases[c].want);
                reel_buf_free(&g);
            }
            reel_buf_free(&err);
        }
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
