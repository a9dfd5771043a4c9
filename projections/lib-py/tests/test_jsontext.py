"""Host-side tests of reel_guest.jsontext (no component needed):
`python3 -m unittest discover -s projections/lib-py/tests`."""

import importlib.util
import math
import pathlib
import unittest

# Loaded by path: the package's __init__ needs the component's `wit_world`.
_path = pathlib.Path(__file__).resolve().parent.parent / "reel_guest" / "jsontext.py"
_spec = importlib.util.spec_from_file_location("jsontext", _path)
jt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(jt)


class FormatF64(unittest.TestCase):
    def test_matches_serde_json_zmij(self):
        # Expected texts from zmij 1.0.23's tests and serde_json's output.
        cases = [(0.0, "0.0"), (-0.0, "-0.0")] + list({
            1.0: "1.0", 12.0: "12.0", 31.5: "31.5", 0.1: "0.1",
            43210.1: "43210.1", 10000.0: "10000.0", -5942736479622170.0: "-5942736479622170.0",
            5.444310685350916e14: "544431068535091.6", 1e15: "1000000000000000.0", 1e16: "1e+16",
            6.62607015e-34: "6.62607015e-34", 3.439070283483335e35: "3.439070283483335e+35",
            2.9802322387695312e-08: "2.9802322387695312e-8", 5e-324: "5e-324", 1e-5: "0.00001",
            1.1e-5: "0.000011", 1e-6: "1e-6", 1.7976931348623157e308: "1.7976931348623157e+308",
        }.items())
        for value, text in cases:
            self.assertEqual(jt.format_f64(value), text, repr(value))

    def test_dumps_is_serde_json_compact(self):
        value = {"b": [1, 2.5, None, True, float("nan")], "a": "é\"\\\n\u0001", "c": b"\x00\xff"}
        self.assertEqual(jt.dumps(value, sort_keys=True), '{"a":"é\\"\\\\\\n\\u0001","b":[1,2.5,null,true,null],"c":[0,255]}')
        self.assertEqual(jt.dumps({"customer": "c-1", "cents": 3150, "cancelled": False}),
                         '{"customer":"c-1","cents":3150,"cancelled":false}')


class Loads(unittest.TestCase):
    def test_numbers_as_serde_json_reads_them(self):
        self.assertEqual(jt.loads("0.1"), 0.1)
        self.assertEqual(jt.loads("4500000000000003.74"), 4500000000000004.0)  # serde_json, not float()
        self.assertEqual(float("4500000000000003.74"), 4500000000000003.5)
        self.assertEqual(jt.serde_f64("123456789012345678901234"), 1.2345678901234567e23)
        self.assertEqual(math.copysign(1, jt.loads("-0")), -1.0)
        self.assertEqual(jt.serde_f64("1e400"), math.inf)
        self.assertEqual(jt.serde_f64("1e-400"), 0.0)

    def test_refuses_what_serde_json_refuses(self):
        for text in ["NaN", "[Infinity]", "{", '{"a":1,}']:
            with self.assertRaises(jt.JsonError):
                jt.loads(text)


class FieldsRead(unittest.TestCase):
    def test_serde_rules(self):
        f = jt.Fields(jt.loads('{"n": 2, "x": 2, "s": "a"}'), "struct T", ("n", "x", "s"))
        self.assertEqual((f.i64("n"), f.f64("x"), f.str("s"), f.opt_str("r")), (2, 2.0, "a", None))
        self.assertIsInstance(f.f64("x"), float)
        with self.assertRaisesRegex(jt.JsonError, r"invalid type: floating point `2.0`, expected i64"):
            jt.Fields({"n": 2.0}, "struct T").i64("n")
        with self.assertRaisesRegex(jt.JsonError, r"missing field `q`"):
            f.i64("q")

    def test_structs_also_read_from_arrays(self):
        f = jt.Fields(["o-1"], "struct C", ("orderId", "reason?"))
        self.assertEqual((f.str("orderId"), f.opt_str("reason")), ("o-1", None))
        with self.assertRaisesRegex(jt.JsonError, r"invalid length 1, expected struct S with 2 elements"):
            jt.Fields(["o-1"], "struct S", ("orderId", "trackingNumber"))


class ErrorPaths(unittest.TestCase):
    """A payload error names the path to the value, as the Rust SDK's
    (serde_path_to_error) does: the same text in every language."""

    @staticmethod
    def placed(value):
        def line_item(item):
            f = jt.Fields(item, "struct LineItem", ("productId", "quantity"))
            return f.str("productId"), f.i64("quantity")

        f = jt.Fields(value, "struct OrderPlaced", ("orderId", "items", "shipTo"))
        address = f.obj("shipTo", lambda v: jt.Fields(v, "struct Address").str("city")) if "shipTo" in value else None
        return f.str("orderId"), f.list("items", line_item), address

    def test_nested_fields_and_elements_are_named(self):
        cases = [
            ('{"orderId": 5, "items": []}', 'orderId: invalid type: integer `5`, expected a string'),
            ('{"items": []}', "missing field `orderId`"),
            ('{"orderId": "o", "items": {}}', "items: invalid type: map, expected a sequence"),
            ('{"orderId": "o", "items": [{"productId": "p", "quantity": "two"}]}',
             'items[0].quantity: invalid type: string "two", expected i64'),
            ('{"orderId": "o", "items": [{"productId": "p", "quantity": 1}, {"productId": "p"}]}',
             "items[1]: missing field `quantity`"),
            ('{"orderId": "o", "items": [7]}', "items[0]: invalid type: integer `7`, expected struct LineItem"),
            ('{"orderId": "o", "items": [], "shipTo": {"city": 1}}',
             "shipTo.city: invalid type: integer `1`, expected a string"),
        ]
        for text, message in cases:
            with self.assertRaises(jt.JsonError, msg=text) as caught:
                self.placed(jt.loads(text))
            self.assertEqual(str(caught.exception), message)


class Wrap(unittest.TestCase):
    def test_wrap_i64(self):
        self.assertEqual(jt.wrap_i64((1 << 63) - 1 + 1), -(1 << 63))
        self.assertEqual(jt.wrap_i64(5), 5)


if __name__ == "__main__":
    unittest.main()
