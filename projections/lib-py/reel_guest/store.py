"""The world's imports (`kv`, `sql`, `log`) with plain Python values.

SQL parameters: None, bool (as 0/1), int (a 64-bit integer), float, str, bytes;
wrap a value in `Integer(...)` or `Real(...)` to force the type. Column values
come back as None, int, float, str or bytes.
"""

import traceback

from componentize_py_types import Err
from wit_world.imports import kv as _kv
from wit_world.imports import log as _log
from wit_world.imports import sql as _sql
from wit_world.imports.log import Level

from .errors import Failed
from .jsontext import I64_MAX, I64_MIN, JsonError, dumps, loads

__all__ = ["Context", "Integer", "Kv", "Level", "Real", "Rows", "Sql"]

_Null = _sql.Value_Null()
_ValueInteger = _sql.Value_Integer
_ValueReal = _sql.Value_Real
_ValueText = _sql.Value_Text
_ValueBlob = _sql.Value_Blob


class Integer(int):
    """Pass as SQL INTEGER (the default for int)."""


class Real(float):
    """Pass as SQL REAL: `Real(5)` stores 5.0 where a plain 5 would be an integer."""


def _integer(value):
    value = int(value)
    if I64_MIN <= value <= I64_MAX:
        return _ValueInteger(value)
    raise Failed(f"SQL parameter {value} does not fit a 64-bit integer")


_TO_WIT = {
    str: _ValueText,
    int: _integer,
    float: _ValueReal,
    bool: lambda v: _ValueInteger(int(v)),
    type(None): lambda v: _Null,
    bytes: _ValueBlob,
    bytearray: lambda v: _ValueBlob(bytes(v)),
    memoryview: lambda v: _ValueBlob(bytes(v)),
    Integer: _integer,
    Real: lambda v: _ValueReal(float(v)),
}


def to_wit(value):
    """A Python value as a WIT `sql.value`."""
    try:
        convert = _TO_WIT[type(value)]
    except KeyError:
        raise Failed(f"cannot pass {type(value).__name__} as an SQL parameter") from None
    return convert(value)


def from_wit(value):
    """A WIT `sql.value` as a Python value."""
    return None if type(value) is _sql.Value_Null else value.value


class Rows:
    """A query result: `columns` (names) and `rows` (lists of Python values)."""

    __slots__ = ("columns", "rows")

    def __init__(self, columns, rows):
        self.columns = columns
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def dicts(self):
        """Each row as a dict keyed by column name."""
        columns = self.columns
        return [dict(zip(columns, row)) for row in self.rows]

    def to_json(self):
        """Rows as JSON objects, as the Rust SDK's `Rows::to_json` gives them
        (pass to `jsontext.dumps(..., sort_keys=True)` for its exact text)."""
        return self.dicts()


class Kv:
    """Key-value storage private to the projection."""

    __slots__ = ()

    def get(self, key):
        """The bytes stored under `key`, or None."""
        return _kv.get(key)

    def get_json(self, key, decode=None):
        """The JSON value stored under `key`, or None when absent; `decode`
        (e.g. a `Fields` reader) turns the parsed value into a typed one."""
        value = _kv.get(key)
        if value is None:
            return None
        try:
            value = loads(value)
            return value if decode is None else decode(value)
        except JsonError as e:
            raise Failed(f"kv value of `{key}` is not the expected JSON: {e}") from None

    def set(self, key, value):
        """Store bytes (str is stored as UTF-8) under `key`."""
        if isinstance(value, str):
            value = value.encode("utf-8")
        _kv.set(key, bytes(value))

    def set_json(self, key, value):
        """Store `value` as compact JSON (dict keys in insertion order, like a
        serde struct's fields)."""
        _kv.set(key, dumps(value).encode("utf-8"))

    def delete(self, key):
        _kv.delete(key)

    def scan(self, prefix, after=None, limit=100):
        """Up to `limit` (key, bytes) pairs whose key starts with `prefix`, in
        key order, strictly after `after`."""
        return [(entry.key, entry.value) for entry in _kv.scan(prefix, after, limit)]


class Sql:
    """SQL in the projection's namespace; placeholders are `$1`, `$2`, ..."""

    __slots__ = ()

    @staticmethod
    def dialect():
        """Which database the namespace lives in: `"sqlite"` or `"postgres"`."""
        return _sql.dialect()

    def execute(self, statement, params=()):
        """Run a statement whose rows are not needed; its error fails the batch
        (it surfaces at the next query or at commit)."""
        _sql.execute(statement, [to_wit(p) for p in params])

    def query(self, statement, params=()):
        """Run a query and return its `Rows`; an SQL error raises `Failed`."""
        try:
            result = _sql.query(statement, [to_wit(p) for p in params])
        except Err as e:
            error = e.value
            raise Failed(f"SQL error {error.code}: {error.message}") from None
        return Rows(list(result.columns), [[from_wit(v) for v in row] for row in result.rows])


class Context:
    """What projection code gets: `ctx.kv`, `ctx.sql` and `ctx.log(level, message)`."""

    __slots__ = ()
    kv = Kv()
    sql = Sql()

    @staticmethod
    def log(level, message):
        """Write a line to reel's log; `level` is a `Level` or its name (`"info"`)."""
        if isinstance(level, str):
            level = Level[level.upper()]
        _log.log(level, message)

    @staticmethod
    def log_exception(message):
        """Log `message` and the exception being handled, at error level."""
        _log.log(Level.ERROR, f"{message}\n{traceback.format_exc()}")
