"""Write reel modules in Python (componentize-py, package `reel:projection`).

The Python counterpart of the Rust `reel-guest-sdk`, with the same behaviour.
Projections (world `projection`; `export` and `Manifest`, in `projection.py`):
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

Deciders (world `decider`): `reel_guest.decider.export_decider`.

The app module must expose the class as `WitWorld`: componentize-py looks it up
by that name. Modules keep no state between calls: reel may discard an
instance at any call.
"""

import importlib

from . import jsontext
from .errors import Error, Failed, InvalidEvent
from .events import Envelope
from .jsontext import Fields, JsonError, dumps, loads

__all__ = [
    "Context", "Envelope", "Error", "Failed", "Fields", "Integer", "InvalidEvent", "JsonError",
    "Level", "Manifest", "Real", "Rows", "dumps", "export", "jsontext", "loads",
]

# Imported on first use: they need the `projection` world's imports (kv, sql),
# which a decider's component does not have.
_PROJECTION_ONLY = {
    "Context": ".store", "Integer": ".store", "Level": ".store", "Real": ".store", "Rows": ".store",
    "Manifest": ".projection", "export": ".projection",
}


def __getattr__(name):
    module = _PROJECTION_ONLY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
