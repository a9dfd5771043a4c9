"""Deciders (world `decider`): the write side, as in the Rust SDK's `Decider`.

reel folds a stream's events into a state (`evolve`, one event at a time here,
many per call across the boundary), asks `decide` what a command does to that
state, and appends the events it returns with the stream's version as the
expected version. The state crosses the boundary as JSON text: reel keeps it
between commands, the decider keeps nothing.

    from reel_guest import Fields
    from reel_guest.decider import DeciderManifest, NewEvent, Rejected, export_decider

    def decide(state, command):      # command.data is what its decoder returned
        if state["opened"]:
            raise Rejected("already open")
        return [NewEvent("door.opened", {"by": command.data})]

    WitWorld = export_decider(
        manifest=DeciderManifest("door", "1", "door-", command_types=["open"]),
        initial=lambda: {"opened": False},
        events={"door.opened": lambda data: data},
        evolve=lambda state, event: {**state, "opened": True},
        commands={"open": lambda data: Fields(data, "struct Open", ("by",)).str("by")},
        decide=decide,
    )

A decider has no clock: `command.received_at` is when reel received the command.
"""

import traceback

from componentize_py_types import Err
from wit_world.imports import decider_types as _wit
from wit_world.imports import log as _log

from .errors import Error, Failed
from .events import decoder, one_of, unexpected
from .jsontext import JsonError, dumps, loads

__all__ = ["Command", "DeciderManifest", "InvalidCommand", "NewEvent", "Rejected", "export_decider"]


class DeciderManifest:
    """Name, version, the stream prefix it owns and its command types (the
    WIT's `decider-manifest`)."""

    def __init__(self, name, version, stream_prefix, command_types):
        self.name = name
        self.version = version
        self.stream_prefix = stream_prefix
        self.command_types = list(command_types)

    def to_wit(self):
        return _wit.DeciderManifest(self.name, self.version, self.stream_prefix, list(self.command_types))


class Command:
    """A decoded command: `data` is its decoder's result."""

    __slots__ = ("stream_id", "command_type", "metadata", "received_at", "data")

    def __init__(self, raw, data, received_at):
        self.stream_id = raw.stream_id
        self.command_type = raw.command_type
        self.metadata = raw.metadata
        self.received_at = received_at
        self.data = data


class NewEvent:
    """An event a decision produces: `data` (a JSON value) is written as
    serde_json writes it, keys in insertion order (a serde struct's field
    order) or sorted (`sort_keys=True`, a `serde_json::json!` value's)."""

    __slots__ = ("event_type", "data", "metadata")

    def __init__(self, event_type, data, metadata=None, sort_keys=False):
        self.event_type = event_type
        self.data = dumps(data, sort_keys=sort_keys)
        self.metadata = "{}" if metadata is None else dumps(metadata, sort_keys=sort_keys)

    def to_wit(self):
        return _wit.NewEvent(self.event_type, self.data, self.metadata)


class Rejected(Exception):
    """The command breaks a rule in this state: reel answers 422 with `reason`."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


class InvalidCommand(Exception):
    """The command's payload is not what the decider reads: reel answers 400."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def _received_at(metadata):
    try:
        value = loads(metadata).get("received_at")
    except (JsonError, AttributeError):
        return ""
    return value if isinstance(value, str) else ""


def export_decider(manifest, initial, events, evolve, commands, decide, load_state=None, dump_state=None):
    """The `WitWorld` class componentize-py exports, built from plain functions.

    - `initial()`: the state of a stream with no events;
    - `events`: event type -> decoder of the parsed JSON payload (as for a
      projection; an unknown type or a bad payload fails `evolve`);
    - `evolve(state, envelope)`: the state after one event (return it; it may
      be the same object, changed);
    - `commands`: command type -> decoder of the parsed JSON payload (a
      `JsonError` it raises is a 400 `invalid_command` naming the command);
    - `decide(state, command)`: the list of `NewEvent`s, or raise `Rejected` /
      `InvalidCommand`; any other exception traps: reel answers 500
      `decider_failed` and appends nothing;
    - `load_state(value)` / `dump_state(state)`: the state from / to a JSON
      value (default: the state is a JSON value itself).
    """
    decode_event = decoder(events)
    command_decoders = dict(commands)
    expected = one_of(list(command_decoders))
    load = load_state or (lambda value: value)
    dump = dump_state or (lambda state: state)

    def state_of(text):
        return initial() if text is None else load(loads(text))

    class WitWorld:
        def describe(self):
            return manifest.to_wit()

        def evolve(self, state, batch):
            try:
                current = state_of(state)
                for raw in batch:
                    current = evolve(current, decode_event(raw))
                return dumps(dump(current))
            except Error as e:
                raise Err(e.to_wit()) from None
            except Exception as e:
                _log.log(_log.Level.ERROR, f"evolve failed\n{traceback.format_exc()}")
                raise Err(Failed(unexpected(e)).to_wit()) from None

        def decide(self, raw, state):
            kind = raw.command_type
            try:
                current = state_of(state)
            except Exception as e:
                raise Err(_wit.Rejection_InvalidCommand(f"the state does not decode: {e}")) from None
            decode = command_decoders.get(kind)
            if decode is None:
                raise Err(_wit.Rejection_InvalidCommand(f"`{kind}` command: unknown variant `{kind}`, {expected}"))
            try:
                data = decode(loads(raw.data))
            except JsonError as e:
                raise Err(_wit.Rejection_InvalidCommand(f"`{kind}` command: {e}")) from None
            try:
                decided = decide(current, Command(raw, data, _received_at(raw.metadata)))
            except Rejected as e:
                raise Err(_wit.Rejection_Rejected(e.reason)) from None
            except InvalidCommand as e:
                raise Err(_wit.Rejection_InvalidCommand(e.reason)) from None
            except Exception:
                # No variant for it: the call traps, as a Rust decider's panic.
                _log.log(_log.Level.ERROR, f"decide `{kind}` on `{raw.stream_id}` failed\n{traceback.format_exc()}")
                raise
            return [event.to_wit() for event in decided]

    return WitWorld
