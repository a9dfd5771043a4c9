"""`order-py`: the seed's `Order` aggregate and `OrderCommandHandler` as a
decider, the Python twin of `projections/order` (Rust): the same commands give
the same events (byte for byte), refusals and states. It is named `order-py`
and owns the same streams, `order-{id}`, so only one of the two can be in
service at a time. Three commands:

- `place` `{"customerId", "items": [{"productId", "quantity", "price"}]}`:
  refused with no items, or when the order exists; emits `order.placed` with
  the total of the items;
- `ship` `{"trackingNumber"}`: refused unless the order is placed; emits
  `order.shipped`;
- `cancel` `{"reason"}`: refused when the order is shipped, already cancelled,
  or was never placed; emits `order.cancelled`.

Its events are the ones `order-summaries` and `customer-stats` fold.
"""

import math
from dataclasses import dataclass, field

from reel_guest import Fields
from reel_guest.decider import DeciderManifest, InvalidCommand, NewEvent, Rejected, export_decider
from reel_guest.jsontext import I64_MAX, I64_MIN, wrap_i64


@dataclass
class LineItem:
    product_id: str
    quantity: int
    price: float

    @staticmethod
    def decode(value):
        f = Fields(value, "struct LineItem", ("productId", "quantity", "price"))
        return LineItem(f.str("productId"), f.i64("quantity"), f.f64("price"))

    def to_json(self):
        return {"productId": self.product_id, "quantity": self.quantity, "price": self.price}


@dataclass
class OrderState:
    """The seed's `OrderState`; its JSON is the Rust twin's, field for field."""

    status: str = "draft"  # draft, placed, shipped, cancelled
    customer_id: str | None = None
    items: list = field(default_factory=list)
    total: float = 0.0

    @staticmethod
    def load(value):
        f = Fields(value, "struct OrderState", ("status", "customerId", "items", "total"))
        return OrderState(f.str("status"), f.opt_str("customerId"), f.list("items", LineItem.decode), f.f64("total"))

    def dump(self):
        return {
            "status": self.status,
            "customerId": self.customer_id,
            "items": [item.to_json() for item in self.items],
            "total": self.total,
        }


# Events: the fields the state needs (the others are ignored, as serde does).
def placed(value):
    f = Fields(value, "struct variant OrderEvent::Placed", ("customerId", "items", "total"))
    return f.str("customerId"), f.list("items", LineItem.decode), f.f64("total")


def status_only(status):
    def decode(value):
        Fields(value, f"struct variant OrderEvent::{status.capitalize()}")
        return status

    return decode


def evolve(state, event):
    if event.event_type == "order.placed":
        state.status = "placed"
        state.customer_id, state.items, state.total = event.data
    else:
        state.status = event.data
    return state


# Commands.
def place(value):
    f = Fields(value, "struct variant OrderCommand::Place", ("customerId", "items"))
    return f.str("customerId"), f.list("items", LineItem.decode)


def ship(value):
    return Fields(value, "struct variant OrderCommand::Ship", ("trackingNumber",)).str("trackingNumber")


def cancel(value):
    return Fields(value, "struct variant OrderCommand::Cancel", ("reason",)).str("reason")


def _round(x):
    # Rust's f64::round: halves away from zero (Python's round() goes to even).
    whole = math.floor(abs(x))
    if abs(x) - whole >= 0.5:
        whole += 1
    return math.copysign(whole, x)


def _as_i64(x):
    # Rust's `as i64` from f64: saturating, NaN to 0.
    if math.isnan(x):
        return 0
    if x >= 2.0**63:
        return I64_MAX
    if x < -(2.0**63):
        return I64_MIN
    return int(x)


def total(items):
    """The total of `items`, in whole cents as the workload counts them (with
    Rust's i64 arithmetic, so the twins agree on every input)."""
    cents = 0
    for item in items:
        price = item.price * 100.0
        cents = wrap_i64(cents + wrap_i64(item.quantity * _as_i64(_round(price) if math.isfinite(price) else price)))
    return float(cents) / 100.0


DESCRIBE = {"draft": "not placed", "placed": "placed", "shipped": "already shipped", "cancelled": "already cancelled"}


def decide(state, command):
    order_id = command.stream_id.removeprefix("order-")
    if command.command_type == "place":
        customer_id, items = command.data
        if state.status != "draft":
            raise Rejected(f"order {order_id} exists: it is {DESCRIBE[state.status]}")
        if not items:
            raise Rejected("Order must have at least one item")
        for item in items:
            if item.quantity < 1 or item.price < 0.0:
                raise InvalidCommand(
                    f"item {item.product_id} needs a quantity of at least 1 and a price of at least 0"
                )
        data = {
            "orderId": order_id,
            "customerId": customer_id,
            "items": [item.to_json() for item in items],
            "total": total(items),
        }
        # Keys sorted, as the Rust twin's `serde_json::json!` writes them.
        return [NewEvent("order.placed", data, sort_keys=True)]
    verb = command.command_type
    if state.status != "placed":
        raise Rejected(f"cannot {verb} order {order_id}: it is {DESCRIBE[state.status]}")
    if verb == "ship":
        return [NewEvent("order.shipped", {"orderId": order_id, "trackingNumber": command.data}, sort_keys=True)]
    return [NewEvent("order.cancelled", {"orderId": order_id, "reason": command.data}, sort_keys=True)]


WitWorld = export_decider(
    manifest=DeciderManifest("order-py", "1", "order-", command_types=["place", "ship", "cancel"]),
    initial=OrderState,
    load_state=OrderState.load,
    dump_state=OrderState.dump,
    events={"order.placed": placed, "order.shipped": status_only("shipped"), "order.cancelled": status_only("cancelled")},
    evolve=evolve,
    commands={"place": place, "ship": ship, "cancel": cancel},
    decide=decide,
)
