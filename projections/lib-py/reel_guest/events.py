"""Events as projections and deciders get them: decoded per event type into an
`Envelope`, with serde's wording when the type or the payload is wrong."""

from .errors import InvalidEvent
from .jsontext import JsonError, loads
from .trace import thrown_at

__all__ = ["Envelope", "decoder", "one_of", "unexpected"]


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


def one_of(names):
    """serde's wording for the expected variants."""
    quoted = [f"`{n}`" for n in names]
    if not quoted:
        return "there are no variants"
    if len(quoted) == 1:
        return f"expected {quoted[0]}"
    if len(quoted) == 2:
        return f"expected {quoted[0]} or {quoted[1]}"
    return "expected one of " + ", ".join(quoted)


def unexpected(error):
    """An exception the module did not mean to raise, as its failure says it."""
    where = thrown_at(error)
    place = f" (at {where})" if where else ""
    return f"unexpected {type(error).__name__}: {error}{place}"


def decoder(events):
    """`decode(raw) -> Envelope` for `events` (event type -> decoder of the
    parsed JSON payload, or None to take any type with its payload parsed).
    An unknown type or a payload of the wrong shape raises `InvalidEvent`."""
    decoders = None if events is None else dict(events)
    expected = one_of(list(decoders or ()))

    def decode(raw):
        if decoders is None:
            try:
                return Envelope(raw, loads(raw.data))
            except JsonError as e:
                raise InvalidEvent(f"`{raw.event_type}` event: {e}") from None
        decode_data = decoders.get(raw.event_type)
        if decode_data is None:
            raise InvalidEvent(f"`{raw.event_type}` event: unknown variant `{raw.event_type}`, {expected}")
        try:
            data = decode_data(loads(raw.data))
        except JsonError as e:
            raise InvalidEvent(f"`{raw.event_type}` event: {e}") from None
        return Envelope(raw, data)

    return decode
