// node --test test/  (the pure modules only; reel.js needs the component)
import assert from "node:assert/strict";
import { test } from "node:test";

import { float, formatFloat, parse, stringify } from "../json.js";

test("floats print as serde_json 1.0.154 (zmij) prints f64", () => {
  const cases = [
    [6.62607015e-34, "6.62607015e-34"],
    [5.444310685350916e14, "544431068535091.6"],
    [5e-324, "5e-324"],
    [1e-323, "1e-323"],
    [1.2e-322, "1.2e-322"],
    [2.2250738585072004e-308, "2.2250738585072004e-308"],
    [1.0, "1.0"],
    [0.0, "0.0"],
    [-0.0, "-0.0"],
    [-4.932096661796888e-226, "-4.932096661796888e-226"],
    [3.439070283483335e35, "3.439070283483335e+35"],
    [2.9802322387695312e-8, "2.9802322387695312e-8"],
    [5.960464477539062e-7, "5.960464477539062e-7"],
    [9.03725590277404e160, "9.03725590277404e+160"],
    [43210.0, "43210.0"],
    [43210.1, "43210.1"],
    [10000.0, "10000.0"],
    [-5942736479622170.0, "-5942736479622170.0"],
    [1e15, "1000000000000000.0"],
    [1e16, "1e+16"],
    [1.5e16, "1.5e+16"],
    [123456789012345680000, "1.2345678901234568e+20"],
    [1e21, "1e+21"],
    [0.00001, "0.00001"],
    [0.000012, "0.000012"],
    [0.000001, "1e-6"],
    [0.1, "0.1"],
    [31.5, "31.5"],
    [199.99, "199.99"],
    [Infinity, "null"],
    [NaN, "null"],
  ];
  for (const [x, want] of cases) assert.equal(formatFloat(x), want, String(x));
});

test("stringify writes serde_json's compact form", () => {
  assert.equal(stringify({ b: 1, a: [float(30), 2.5, "x\"\n\u0001é😀"], c: null }), '{"b":1,"a":[30.0,2.5,"x\\"\\n\\u0001é😀"],"c":null}');
  assert.equal(stringify({ b: 1, a: 2, "😀": 3, "\uffff": 4 }, { sortKeys: true }), '{"a":2,"b":1,"\uffff":4,"😀":3}');
  assert.equal(stringify(new Uint8Array([0, 255])), "[0,255]");
  assert.equal(stringify(12345678901234567890n), "12345678901234567890");
});

test("parse keeps integers and floats apart", () => {
  const v = parse('{"orders":2,"cancelled":0,"total_spent":31.50}');
  assert.equal(stringify(v, { sortKeys: true }), '{"cancelled":0,"orders":2,"total_spent":31.5}');
  assert.equal(stringify(parse('{"total_spent":30.00}')), '{"total_spent":30.0}');
  assert.equal(stringify(parse("[1e2, -0, 9007199254740993, 18446744073709551616]")), "[100.0,-0.0,9007199254740993,1.8446744073709552e+19]");
  assert.equal(parse(' "a\\u00e9\\ud83d\\ude00" '), "aé😀");
  assert.throws(() => parse("{\"a\":1,}"), /line 1 column 8/);
  assert.throws(() => parse("[1] x"), /trailing characters/);
});

test("serdeF64 follows serde_json's f64 parsing", async () => {
  const { serdeF64 } = await import("../json.js");
  // Below 2^53 the significand is exact and one division rounds correctly.
  for (const t of ["31.50", "0.1", "12345678.90", "-5066.27", "1e5", "2.5E-3", "0.000001", "90071992547409.91"]) {
    assert.equal(serdeF64(t), Number(t), t);
  }
  // Above 2^53: significand rounded to f64 first, then divided by 100.
  assert.equal(serdeF64("-92233720368547658.09"), -(Number(9223372036854765809n) / 100));
  assert.notEqual(serdeF64("-92233720368547658.09"), Number("-92233720368547658.09"));
  // Digits beyond 64 bits are dropped (integer part scales the exponent).
  assert.equal(serdeF64("123456789012345678901234"), Number(12345678901234567890n) * 1e4);
  assert.equal(serdeF64("-0"), -0);
  assert.equal(serdeF64("1e-400"), 0);
  assert.throws(() => serdeF64("1e400"), RangeError);
  assert.equal(serdeF64("0e99999999999"), 0);
});
