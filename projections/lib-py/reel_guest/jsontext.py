"""JSON in and out, the way the Rust SDK's serde_json does it.

Projections in every language must store the same bytes and answer queries with
the same text, so this module follows serde_json 1.0 (as built into the Rust
guests) where Python's `json` differs:

- `dumps` writes compact JSON, UTF-8 unescaped, floats in serde_json's shortest
  form (`1e+16`, `1.5e-7`, `0.00001`, `100.0`), non-finite floats as `null`, and
  object keys sorted when `sort_keys` (a `serde_json::Value` object is sorted by
  key; a Rust struct keeps its field order, which a Python dict's insertion order
  mirrors).
- `loads` refuses `NaN` and `Infinity`, and turns number literals into floats
  the way serde_json does without its `float_roundtrip` feature: the digits
  into a u64 (digits past its range dropped), then one multiplication or
  division by a power of ten. That is exact for everyday literals (up to 15
  digits, no exponent) and can be an ulp off Python's `float()` beyond them;
  `-0` is the float `-0.0`.
- `Fields` reads typed fields out of a decoded object with serde's rules (an
  `i64` refuses `2.0`, an `f64` accepts `2`, a missing field is an error unless
  optional) and serde's error wording.
"""

import json as _json
import math
import re

__all__ = ["JsonError", "Fields", "loads", "dumps", "format_f64", "serde_f64", "wrap_i64"]

I64_MIN = -(1 << 63)
I64_MAX = (1 << 63) - 1
_U64_MAX = (1 << 64) - 1

_encode_str = _json.encoder.encode_basestring  # C version when available; no \u escapes for non-ASCII


class JsonError(ValueError):
    """Text that is not JSON, or JSON that is not the expected shape: `reason`
    in serde's words, and `path` to the value (field names and list indices
    from the payload's root), which its text starts with as the Rust SDK's
    (serde_path_to_error) does: `items[0].quantity: invalid type: ...`."""

    def __init__(self, reason, path=()):
        super().__init__(reason)
        self.reason = reason
        self.path = list(path)

    def __str__(self):
        if not self.path:
            return self.reason
        text = "".join(f"[{s}]" if type(s) is int else s if i == 0 else f".{s}" for i, s in enumerate(self.path))
        return f"{text}: {self.reason}"

    def within(self, segment):
        """The same error seen one level up: `segment` goes first in its path."""
        self.path.insert(0, segment)
        return self


def _inside(segment, decode, value):
    # decode(value), naming `segment` in the path of a JsonError it raises.
    try:
        return decode(value)
    except JsonError as e:
        raise e.within(segment) from None


_I32_MAX = (1 << 31) - 1
_I32_MIN = -(1 << 31)
_U64_CUT, _U64_CUT_DIGIT = divmod(_U64_MAX, 10)
_I32_CUT, _I32_CUT_DIGIT = divmod(_I32_MAX, 10)
_POW10 = [float(f"1e{k}") for k in range(309)]  # serde_json's POW10 table
_DIGITS = frozenset("0123456789")


def serde_f64(text):
    """The f64 serde_json (without `float_roundtrip`) reads from the JSON number
    literal `text`; infinite where serde_json says "number out of range"."""
    n = len(text)
    positive = text[0] != "-"
    i = 0 if positive else 1
    significand = 0
    exponent = 0
    # Integer digits; past u64, the rest only scale (parse_long_integer).
    while i < n and text[i] in _DIGITS:
        digit = ord(text[i]) - 48
        if significand >= _U64_CUT and (significand > _U64_CUT or digit > _U64_CUT_DIGIT):
            while i < n and text[i] in _DIGITS:
                exponent += 1
                i += 1
            break
        significand = significand * 10 + digit
        i += 1
    if i < n and text[i] == ".":  # parse_decimal; digits past u64 are dropped
        i += 1
        while i < n and text[i] in _DIGITS:
            digit = ord(text[i]) - 48
            if significand >= _U64_CUT and (significand > _U64_CUT or digit > _U64_CUT_DIGIT):
                while i < n and text[i] in _DIGITS:
                    i += 1
                break
            significand = significand * 10 + digit
            exponent -= 1
            i += 1
    if i < n and text[i] in "eE":  # parse_exponent
        i += 1
        positive_exp = True
        if text[i] in "+-":
            positive_exp = text[i] == "+"
            i += 1
        exp = 0
        while i < n:
            digit = ord(text[i]) - 48
            if exp >= _I32_CUT and (exp > _I32_CUT or digit > _I32_CUT_DIGIT):
                if significand != 0 and positive_exp:
                    return math.inf if positive else -math.inf
                return 0.0 if positive else -0.0
            exp = exp * 10 + digit
            i += 1
        exponent = exponent + exp if positive_exp else exponent - exp
        exponent = max(_I32_MIN, min(_I32_MAX, exponent))
    # f64_from_parts
    f = float(significand)
    while True:
        if abs(exponent) < len(_POW10):
            if exponent >= 0:
                f *= _POW10[exponent]
            else:
                f /= _POW10[-exponent]
            break
        if f == 0.0:
            break
        if exponent >= 0:
            f = math.inf
            break
        f /= 1e308
        exponent += 308
    return f if positive else -f


def _parse_float(text):
    if len(text) <= 16 and "e" not in text and "E" not in text:
        return float(text)  # at most 15 digits and 10**-15: serde_json is exact too
    return serde_f64(text)


def _parse_int(text):
    return -0.0 if text == "-0" else int(text)


def _serde_number(value):
    """An int from the parser as serde_json holds it: u64 or i64, else f64."""
    if I64_MIN <= value <= _U64_MAX:
        return value
    return serde_f64(str(value))


def _refuse_constant(name):
    raise JsonError(f"expected value: `{name}` is not JSON")


# Literals go through serde_json's reading (`_parse_float`, `_parse_int`); the
# hooks cost ~0.1 us per number, less than any pre-scan that could skip them.
_scan = _json.JSONDecoder(
    parse_constant=_refuse_constant, parse_float=_parse_float, parse_int=_parse_int
).scan_once
_WS = re.compile(r"[ \t\n\r]*").match  # JSON's whitespace, as serde_json's


def loads(text):
    """Parse JSON text (str or UTF-8 bytes)."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise JsonError(f"invalid unicode code point: {e}") from None
    try:
        start = _WS(text, 0).end()
        try:
            value, end = _scan(text, start)
        except StopIteration as e:
            raise JsonError(f"expected value at character {e.value}") from None
        if end != len(text):
            end = _WS(text, end).end()
            if end != len(text):
                raise JsonError(f"trailing characters at character {end}")
        return value
    except JsonError:
        raise
    except ValueError as e:  # JSONDecodeError, or an integer too long to convert
        raise JsonError(str(e)) from None
    except RecursionError:
        raise JsonError("recursion limit exceeded") from None


def wrap_i64(n):
    """`n` as a Rust `i64` computes it in a release build (two's complement wrap)."""
    return ((n - I64_MIN) & _U64_MAX) + I64_MIN


def format_f64(value):
    """A finite float as serde_json writes it (zmij: shortest round-trip digits,
    fixed notation for decimal exponents -5..=15, else `d.ddde+N`/`e-N`)."""
    text = repr(value)  # shortest round-trip digits, like zmij's
    sign = ""
    if text[0] == "-":
        sign, text = "-", text[1:]
    mantissa, _, exp = text.partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = whole + frac
    point = len(whole) + (int(exp) if exp else 0)  # value = 0.<digits> * 10**point
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    if not digits:
        return sign + "0.0"
    exp10 = point - 1  # scientific exponent of the first digit
    n = len(digits)
    if -5 <= exp10 <= 15:
        if n - 1 <= exp10:
            return f"{sign}{digits}{'0' * (exp10 + 1 - n)}.0"
        if exp10 >= 0:
            return f"{sign}{digits[:exp10 + 1]}.{digits[exp10 + 1:]}"
        return f"{sign}0.{'0' * (-exp10 - 1)}{digits}"
    mantissa = digits[0] + ("." + digits[1:] if n > 1 else "")
    return f"{sign}{mantissa}e{'+' if exp10 >= 0 else '-'}{abs(exp10)}"


def _float_text(value):
    if math.isfinite(value):
        return format_f64(value)
    return "null"  # serde_json::Number cannot hold NaN or infinities


def _int_text(value):
    if I64_MIN <= value <= _U64_MAX:
        return str(value)
    return _float_text(_serde_number(value))  # serde_json keeps such a number as an f64


_c_dumps = _json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_C_SAFE = frozenset([str, bool, type(None)])


def dumps(value, sort_keys=False):
    """Compact JSON text of `value` (dict, list, tuple, str, int, float, bool,
    None; bytes as an array of numbers)."""
    if type(value) is dict and not sort_keys:
        # Flat objects of strings, booleans, null and 64-bit integers: Python's
        # C encoder writes them exactly as serde_json does.
        for key, item in value.items():
            if type(key) is not str or not (
                type(item) in _C_SAFE or (type(item) is int and I64_MIN <= item <= _U64_MAX)
            ):
                break
        else:
            return _c_dumps(value)
    out = []
    _write(value, out, sort_keys)
    return "".join(out)


def _write(value, out, sort_keys):
    t = type(value)
    if t is str:
        out.append(_encode_str(value))
    elif t is bool:
        out.append("true" if value else "false")
    elif t is int:
        out.append(_int_text(value))
    elif t is float:
        out.append(_float_text(value))
    elif value is None:
        out.append("null")
    elif isinstance(value, dict):
        items = sorted(value.items()) if sort_keys else value.items()
        out.append("{")
        first = True
        for key, item in items:
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys must be strings, not {type(key).__name__}")
            if not first:
                out.append(",")
            first = False
            out.append(_encode_str(key))
            out.append(":")
            _write(item, out, sort_keys)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out, sort_keys)
        out.append("]")
    elif isinstance(value, (bytes, bytearray)):
        out.append("[" + ",".join(map(str, value)) + "]")
    elif isinstance(value, int):
        out.append(_int_text(int(value)))
    elif isinstance(value, float):
        out.append(_float_text(float(value)))
    elif isinstance(value, str):
        out.append(_encode_str(str(value)))
    else:
        raise TypeError(f"{type(value).__name__} is not JSON serializable")


def unexpected(value):
    """serde's description of a JSON value that has the wrong type."""
    t = type(value)
    if t is str:
        return f"string {_encode_str(value)}"
    if t is bool:
        return f"boolean `{'true' if value else 'false'}`"
    if t is int:
        value = _serde_number(value)
        if type(value) is int:
            return f"integer `{value}`"
        t = float
    if t is float:
        return f"floating point `{_float_text(value)}`"
    if value is None:
        return "null"
    if t is list:
        return "sequence"
    return "map"


def _valid_str(value):
    # Python's json accepts lone surrogates (`"\ud800"`); serde_json and the
    # component model's UTF-8 strings do not.
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise JsonError("lone surrogate in hex escape") from None
    return value


def as_str(value, what="a string"):
    if type(value) is str:
        return _valid_str(value)
    raise JsonError(f"invalid type: {unexpected(value)}, expected {what}")


def as_i64(value):
    if type(value) is int:
        if I64_MIN <= value <= I64_MAX:
            return value
        if 0 <= value <= _U64_MAX:
            raise JsonError(f"invalid value: integer `{value}`, expected i64")
    raise JsonError(f"invalid type: {unexpected(value)}, expected i64")


def as_f64(value):
    t = type(value)
    if t is float:
        if math.isfinite(value):
            return value
        raise JsonError("number out of range")
    if t is int:
        result = float(_serde_number(value))  # u64/i64 `as f64`: round to nearest even
        if math.isfinite(result):
            return result
        raise JsonError("number out of range")
    raise JsonError(f"invalid type: {unexpected(value)}, expected f64")


def as_bool(value):
    if type(value) is bool:
        return value
    raise JsonError(f"invalid type: {unexpected(value)}, expected a boolean")


def _seq_fields(values, expected, fields):
    if len(values) > len(fields):
        raise JsonError("trailing characters")
    obj = {}
    for i, name in enumerate(fields):
        optional = name.endswith("?")
        if optional:
            name = name[:-1]
        if i < len(values):
            obj[name] = values[i]
        elif not optional:
            raise JsonError(f"invalid length {len(values)}, expected {expected} with {len(fields)} elements")
    return obj


class Fields:
    """A JSON value read as a serde struct:
    `Fields(value, "struct OrderShipped", ("orderId", "trackingNumber"))`.

    Like serde's derived `Deserialize`, it takes an object, or an array holding
    the fields in declaration order (`fields`; a name ending in `?` is a field
    with a default, which an array may leave out at its end).
    """

    __slots__ = ("_obj",)

    def __init__(self, value, expected, fields=()):
        if type(value) is not dict:
            if type(value) is list and fields:
                value = _seq_fields(value, expected, fields)
            else:
                raise JsonError(f"invalid type: {unexpected(value)}, expected {expected}")
        self._obj = value

    def _get(self, name):
        try:
            return self._obj[name]
        except KeyError:
            raise JsonError(f"missing field `{name}`") from None

    def str(self, name):
        return _inside(name, as_str, self._get(name))

    def i64(self, name):
        return _inside(name, as_i64, self._get(name))

    def f64(self, name):
        return _inside(name, as_f64, self._get(name))

    def bool(self, name):
        return _inside(name, as_bool, self._get(name))

    def opt_str(self, name):
        """An `Option<String>` with `#[serde(default)]`: absent or null is None."""
        value = self._obj.get(name)
        return None if value is None else _inside(name, as_str, value)

    def obj(self, name, decode):
        """A nested value decoded by `decode(value)` (e.g. another `Fields`
        reader); its errors are placed under `name`."""
        return _inside(name, decode, self._get(name))

    def list(self, name, item):
        """A `Vec<T>`: each element decoded by `item(element)`; its errors are
        placed under `name[i]`."""
        return _inside(name, lambda value: _list(value, item), self._get(name))


def _list(value, item):
    if type(value) is not list:
        raise JsonError(f"invalid type: {unexpected(value)}, expected a sequence")
    return [_inside(i, item, element) for i, element in enumerate(value)]
