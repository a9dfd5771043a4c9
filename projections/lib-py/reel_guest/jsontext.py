"""JSON in and out, the way the Rust SDK's serde_json does it.

Projections in every language must store the same bytes and answer queries with
the same text, so this module follows serde_json 1.0 (as built into the Rust
guests) where Python's `json` differs:

- `dumps` writes compact JSON, UTF-8 unescaped, floats in serde_json's shortest
  form (`1e+16`, `1.5e-7`, `0.00001`, `100.0`), non-finite floats as `null`, and
  object keys sorted when `sort_keys` (a `serde_json::Value` object is sorted by
  key; a Rust struct keeps its field order, which a Python dict's insertion order
  mirrors).
- `loads` refuses `NaN` and `Infinity`.
- `Fields` reads typed fields out of a decoded object with serde's rules (an
  `i64` refuses `2.0`, an `f64` accepts `2`, a missing field is an error unless
  optional) and serde's error wording.
"""

import json as _json
import math

__all__ = ["JsonError", "Fields", "loads", "dumps", "format_f64", "wrap_i64"]

I64_MIN = -(1 << 63)
I64_MAX = (1 << 63) - 1
_U64_MAX = (1 << 64) - 1

_encode_str = _json.encoder.encode_basestring  # C version when available; no \u escapes for non-ASCII


class JsonError(ValueError):
    """Text that is not JSON, or JSON that is not the expected shape."""


def _refuse_constant(name):
    raise JsonError(f"expected value: `{name}` is not JSON")


_decoder = _json.JSONDecoder(parse_constant=_refuse_constant)


def loads(text):
    """Parse JSON text (str or UTF-8 bytes)."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise JsonError(f"invalid unicode code point: {e}") from None
    try:
        return _decoder.decode(text)
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
    return _float_text(float(value))  # serde_json keeps such a number as an f64


def dumps(value, sort_keys=False):
    """Compact JSON text of `value` (dict, list, tuple, str, int, float, bool,
    None; bytes as an array of numbers)."""
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
    elif isinstance(value, bool):
        out.append("true" if value else "false")
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
        return f"integer `{value}`"
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
        value = float(value)  # serde_json reads it as a float
    raise JsonError(f"invalid type: {unexpected(value)}, expected i64")


def as_f64(value):
    t = type(value)
    if t is float:
        if math.isfinite(value):
            return value
        raise JsonError("number out of range")
    if t is int:
        try:
            result = float(value)
        except OverflowError:
            raise JsonError("number out of range") from None
        return result
    raise JsonError(f"invalid type: {unexpected(value)}, expected f64")


def as_bool(value):
    if type(value) is bool:
        return value
    raise JsonError(f"invalid type: {unexpected(value)}, expected a boolean")


class Fields:
    """A JSON object read as a struct: `Fields(obj, "struct OrderPlaced")`."""

    __slots__ = ("_obj",)

    def __init__(self, value, expected="a map"):
        if type(value) is not dict:
            raise JsonError(f"invalid type: {unexpected(value)}, expected {expected}")
        self._obj = value

    def _get(self, name):
        try:
            return self._obj[name]
        except KeyError:
            raise JsonError(f"missing field `{name}`") from None

    def str(self, name):
        return as_str(self._get(name))

    def i64(self, name):
        return as_i64(self._get(name))

    def f64(self, name):
        return as_f64(self._get(name))

    def bool(self, name):
        return as_bool(self._get(name))

    def opt_str(self, name):
        """An `Option<String>` with `#[serde(default)]`: absent or null is None."""
        value = self._obj.get(name)
        return None if value is None else as_str(value)

    def list(self, name, item):
        """A `Vec<T>`: each element decoded by `item(element)`."""
        value = self._get(name)
        if type(value) is not list:
            raise JsonError(f"invalid type: {unexpected(value)}, expected a sequence")
        return [item(element) for element in value]
