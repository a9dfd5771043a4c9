"""Write reel projections in Python (componentize-py, world `reel:projection`).

The Python counterpart of the Rust `reel-guest-sdk`, with the same behaviour:
events decoded per type (an unknown type or a bad payload is `InvalidEvent`
naming the type), one `handle` call per event inside the batch, the failing
event's position reported to reel, query arguments parsed as JSON (`None` when
empty) and the query result written as serde_json writes a `serde_json::Value`.

    from reel_guest import Manifest, export

    def handle(ctx, event):          # event.data is what the decoder returned
        ctx.kv.set(f"seen/{event.stream_id}", event.occurred_at)

    WitWorld = export(
        manifest=Manifest("seen", "1", event_types=["order.*"]),
        events={"order.placed": lambda data: data},
        handle=handle,
    )

The app module must expose the class as `WitWorld`: componentize-py looks it up
by that name. Projections keep no state between calls: reel may discard an
instance at any batch.
"""

from componentize_py_types import Err
from wit_world.imports import types as _types

from . import jsontext
from .errors import Error, Failed, InvalidEvent
from .jsontext import Fields, JsonError, dumps, loads
from .store import Context, Integer, Level, Real, Rows
from .trace import thrown_at

__all__ = [
    "Context", "Envelope", "Error", "Failed", "Fields", "Integer", "InvalidEvent", "JsonError",
    "Level", "Manifest", "Real", "Rows", "dumps", "export", "jsontext", "loads",
]

_ON_ERROR = {"stop": _types.OnError.STOP, "skip": _types.OnError.SKIP}


class Manifest:
    """Name, version and subscriptions (see the WIT `manifest`)."""

    def __init__(self, name, version, event_types=(), stream_prefixes=(), on_error="stop"):
        if on_error not in _ON_ERROR:
            raise ValueError(f"on_error must be one of {sorted(_ON_ERROR)}")
        self.name = name
        self.version = version
        self.event_types = list(event_types)
        self.stream_prefixes = list(stream_prefixes)
        self.on_error = on_error

    def to_wit(self):
        return _types.Manifest(
            self.name, self.version, list(self.event_types), list(self.stream_prefixes), _ON_ERROR[self.on_error]
        )


class Envelope:
    """A decoded event: `data` is the decoder's result, the rest is the envelope."""

    __slots__ = ("position", "stream_id", "version", "event_type", "metadata", "occurred_at", "data")

    def __init__(self, raw, data):
        self.position = raw.position
        self.stream_id = raw.stream_id
        self.version = raw.version
        self.event_type = raw.event_type
        self.metadata = raw.metadata
        self.occurred_at = raw.occurred_at
        self.data = data


def _one_of(names):
    # serde's wording for the expected variants.
    quoted = [f"`{n}`" for n in names]
    if not quoted:
        return "there are no variants"
    if len(quoted) == 1:
        return f"expected {quoted[0]}"
    if len(quoted) == 2:
        return f"expected {quoted[0]} or {quoted[1]}"
    return "expected one of " + ", ".join(quoted)


def _unexpected(error):
    where = thrown_at(error)
    place = f" (at {where})" if where else ""
    return f"unexpected {type(error).__name__}: {error}{place}"


def export(manifest, events, handle, init=None, query=None):
    """The `WitWorld` class componentize-py exports, built from plain functions.

    - `events`: event type -> decoder of the parsed JSON payload (raise
      `JsonError` for a payload of the wrong shape; see `Fields`), or None to
      take any event type with its payload parsed as JSON;
    - `handle(ctx, envelope)`: apply one event;
    - `init(ctx)`: create tables (optional);
    - `query(ctx, name, args)`: return a JSON value (optional).

    Raising `InvalidEvent` or `Failed` fails the batch at the event (or the
    query); any other exception does too, as `Failed`, with its traceback logged.
    """
    ctx = Context()
    decoders = None if events is None else dict(events)
    expected = _one_of(list(decoders or ()))

    def decode(raw):
        if decoders is None:
            try:
                return Envelope(raw, loads(raw.data))
            except JsonError as e:
                raise InvalidEvent(f"`{raw.event_type}` event: {e}") from None
        decoder = decoders.get(raw.event_type)
        if decoder is None:
            raise InvalidEvent(f"`{raw.event_type}` event: unknown variant `{raw.event_type}`, {expected}")
        try:
            data = decoder(loads(raw.data))
        except JsonError as e:
            raise InvalidEvent(f"`{raw.event_type}` event: {e}") from None
        return Envelope(raw, data)

    class WitWorld:
        def describe(self):
            return manifest.to_wit()

        def setup(self):
            if init is None:
                return
            try:
                init(ctx)
            except Error as e:
                raise Err(e.to_wit()) from None
            except Exception as e:
                ctx.log_exception("init failed")
                raise Err(_types.Error_Failed(_unexpected(e))) from None

        def handle(self, batch):
            for raw in batch:
                try:
                    handle(ctx, decode(raw))
                except Error as e:
                    raise Err(_types.HandleError(raw.position, e.to_wit())) from None
                except Exception as e:
                    ctx.log_exception(f"event at position {raw.position} failed")
                    raise Err(_types.HandleError(raw.position, _types.Error_Failed(_unexpected(e)))) from None

        def query(self, name, args):
            try:
                try:
                    value = loads(args) if args.strip() else None
                except JsonError as e:
                    raise Failed(f"query arguments are not JSON: {e}") from None
                if query is None:
                    raise Failed(f"unknown query `{name}`")
                return dumps(query(ctx, name, value), sort_keys=True)
            except Error as e:
                raise Err(e.to_wit()) from None
            except Exception as e:
                ctx.log_exception(f"query `{name}` failed")
                raise Err(_types.Error_Failed(_unexpected(e))) from None

    return WitWorld
