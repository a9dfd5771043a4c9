import assert from "node:assert/strict";
import { test } from "node:test";

import { utf8Decode, utf8Encode } from "../utf8.js";

test("encodes like TextEncoder", () => {
  for (const s of ["", "abc", "é", "€uro", "😀 x", "a\ud800b", "\udc00", "mixed ascii and ü and 日本語 and 🎉🎉"]) {
    assert.deepEqual(utf8Encode(s), new TextEncoder().encode(s), JSON.stringify(s));
  }
});

test("decodes like TextDecoder", () => {
  const samples = [
    [0x61, 0xc3, 0xa9],
    [0xf0, 0x9f, 0x98, 0x80],
    [0xff, 0x61],
    [0xe2, 0x82],
    [0xe2, 0x82, 0x41],
    [0xed, 0xa0, 0x80],
    [0xf4, 0x90, 0x80, 0x80],
    [0xc0, 0x80],
    [0xf0, 0x9f, 0x98],
  ];
  for (const bytes of samples) {
    const b = new Uint8Array(bytes);
    assert.equal(utf8Decode(b), new TextDecoder().decode(b), bytes.join(","));
  }
  const big = "x€😀".repeat(5000);
  assert.equal(utf8Decode(utf8Encode(big)), big);
  assert.throws(() => utf8Decode(new Uint8Array([0xff]), true), TypeError);
});
