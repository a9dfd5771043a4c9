"""`customer-stats-py`: per customer, `{"orders", "cancelled", "total_spent"}` as
JSON under the key `customer/{customerId}`.

The Python twin of `projections/customer-stats` (Rust), byte for byte:

- `orders` counts placed orders, `cancelled` the cancelled ones;
- `total_spent` sums the totals of orders not cancelled, in exact cents,
  written with two decimals (`{"orders":2,"cancelled":0,"total_spent":31.50}`).

A cancellation names only the order, so each placed order is remembered under
`order/{orderId}` with its customer and amount.
"""

import math
from dataclasses import dataclass

from reel_guest import Failed, Fields, InvalidEvent, JsonError, Manifest, export, loads
from reel_guest.jsontext import I64_MAX, I64_MIN, wrap_i64


@dataclass
class OrderPlaced:
    order_id: str
    customer_id: str
    total: float

    @staticmethod
    def decode(value):
        f = Fields(value, "struct OrderPlaced", ("orderId", "customerId", "total"))
        return OrderPlaced(f.str("orderId"), f.str("customerId"), f.f64("total"))


@dataclass
class OrderCancelled:
    order_id: str

    @staticmethod
    def decode(value):
        return OrderCancelled(Fields(value, "struct OrderCancelled", ("orderId",)).str("orderId"))


def to_cents(amount):
    """Amounts are decimals with two places; cents make the sums exact. Rust's
    `(amount * 100.0 + 0.5).floor() as i64` (not `round`, which rounds half to
    even), saturating like Rust's cast."""
    scaled = amount * 100.0 + 0.5
    if math.isnan(scaled):
        return 0
    if scaled >= 9223372036854775808.0:
        return I64_MAX
    if scaled < -9223372036854775808.0:
        return I64_MIN
    return math.floor(scaled)


def _trunc_divmod(n, d):
    # Rust's `/` and `%` on integers truncate toward zero.
    q = abs(n) // d
    q = q if n >= 0 else -q
    return q, n - q * d


@dataclass
class CustomerStats:
    """The value under `customer/{id}`."""

    orders: int = 0
    cancelled: int = 0
    total_spent_cents: int = 0

    def to_json(self):
        """The stored JSON, written by hand so every language's version of this
        projection produces the same bytes."""
        cents = self.total_spent_cents
        sign = "-" if cents < 0 else ""
        whole, frac = _trunc_divmod(wrap_i64(abs(cents)), 100)
        return f'{{"orders":{self.orders},"cancelled":{self.cancelled},"total_spent":{sign}{whole}.{frac:02d}}}'

    @staticmethod
    def from_json(data):
        try:
            f = Fields(loads(data), "struct Stored", ("orders", "cancelled", "total_spent"))
            return CustomerStats(f.i64("orders"), f.i64("cancelled"), to_cents(f.f64("total_spent")))
        except JsonError as e:
            raise Failed(f"JSON: {e}") from None


@dataclass
class OrderRef:
    """What is remembered of a placed order, under `order/{id}`."""

    customer: str
    cents: int
    cancelled: bool

    @staticmethod
    def decode(value):
        f = Fields(value, "struct OrderRef", ("customer", "cents", "cancelled"))
        return OrderRef(f.str("customer"), f.i64("cents"), f.bool("cancelled"))

    def to_json(self):
        # serde_json's field order: customer, cents, cancelled.
        return {"customer": self.customer, "cents": self.cents, "cancelled": self.cancelled}


def load(ctx, key):
    data = ctx.kv.get(key)
    return CustomerStats() if data is None else CustomerStats.from_json(data)


def handle(ctx, event):
    data = event.data
    if isinstance(data, OrderPlaced):
        cents = to_cents(data.total)
        key = f"customer/{data.customer_id}"
        stats = load(ctx, key)
        stats.orders = wrap_i64(stats.orders + 1)
        stats.total_spent_cents = wrap_i64(stats.total_spent_cents + cents)
        ctx.kv.set(key, stats.to_json())
        ctx.kv.set_json(f"order/{data.order_id}", OrderRef(data.customer_id, cents, False).to_json())
    else:
        order_key = f"order/{data.order_id}"
        order = ctx.kv.get_json(order_key, OrderRef.decode)
        if order is None:
            raise InvalidEvent(f"order {data.order_id} was never placed")
        if order.cancelled:
            return
        key = f"customer/{order.customer}"
        stats = load(ctx, key)
        stats.cancelled = wrap_i64(stats.cancelled + 1)
        stats.total_spent_cents = wrap_i64(stats.total_spent_cents - order.cents)
        ctx.kv.set(key, stats.to_json())
        order.cancelled = True
        ctx.kv.set_json(order_key, order.to_json())


def query(ctx, name, args):
    if name == "customer":
        customer_id = args.get("customerId") if isinstance(args, dict) else None
        if not isinstance(customer_id, str):
            raise Failed('customer needs {"customerId": "..."}')
        data = ctx.kv.get(f"customer/{customer_id}")
        if data is None:
            return None
        try:
            return loads(data)
        except JsonError as e:
            raise Failed(f"JSON: {e}") from None
    raise Failed(f"unknown query `{name}`; this projection has `customer`")


WitWorld = export(
    manifest=Manifest("customer-stats-py", "1", event_types=["order.placed", "order.cancelled"]),
    events={"order.placed": OrderPlaced.decode, "order.cancelled": OrderCancelled.decode},
    handle=handle,
    query=query,
)
