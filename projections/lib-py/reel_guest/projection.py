"""Projections (world `projection`): `export(...)` builds the `WitWorld` class
componentize-py exports, from plain functions. See the package's docstring."""

from componentize_py_types import Err
from wit_world.imports import types as _types

from .errors import Error, Failed
from .events import decoder, unexpected
from .jsontext import JsonError, dumps, loads
from .store import Context

__all__ = ["Manifest", "export"]

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
    decode = decoder(events)

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
                raise Err(_types.Error_Failed(unexpected(e))) from None

        def handle(self, batch):
            for raw in batch:
                try:
                    handle(ctx, decode(raw))
                except Error as e:
                    raise Err(_types.HandleError(raw.position, e.to_wit())) from None
                except Exception as e:
                    ctx.log_exception(f"event at position {raw.position} failed")
                    raise Err(_types.HandleError(raw.position, _types.Error_Failed(unexpected(e)))) from None

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
                raise Err(_types.Error_Failed(unexpected(e))) from None

    return WitWorld
