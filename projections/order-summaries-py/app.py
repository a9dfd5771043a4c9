"""`order-summaries-py`: one row per order, kept in SQL.

The Python twin of `projections/order-summaries` (Rust), statement for statement:

- `order.placed` upserts the row with status `placed`;
- `order.shipped` sets status `shipped`, the tracking number and `shipped_at`;
- `order.cancelled` sets status `cancelled`.

`item_count` is the sum of the items' quantities. Timestamps come from the
event's `occurred_at`. The query `customer-orders` with `{"customerId": ...}`
returns that customer's orders, newest `placed_at` first, at most 50.
"""

from dataclasses import dataclass

from reel_guest import Failed, Fields, Manifest, export
from reel_guest.jsontext import wrap_i64


@dataclass
class LineItem:
    product_id: str
    quantity: int
    price: float

    @staticmethod
    def decode(value):
        f = Fields(value, "struct LineItem", ("productId", "quantity", "price"))
        return LineItem(f.str("productId"), f.i64("quantity"), f.f64("price"))


@dataclass
class OrderPlaced:
    order_id: str
    customer_id: str
    items: list
    total: float

    @staticmethod
    def decode(value):
        f = Fields(value, "struct OrderPlaced", ("orderId", "customerId", "items", "total"))
        return OrderPlaced(f.str("orderId"), f.str("customerId"), f.list("items", LineItem.decode), f.f64("total"))


@dataclass
class OrderShipped:
    order_id: str
    tracking_number: str

    @staticmethod
    def decode(value):
        f = Fields(value, "struct OrderShipped", ("orderId", "trackingNumber"))
        return OrderShipped(f.str("orderId"), f.str("trackingNumber"))


@dataclass
class OrderCancelled:
    order_id: str
    reason: str | None

    @staticmethod
    def decode(value):
        f = Fields(value, "struct OrderCancelled", ("orderId", "reason?"))
        return OrderCancelled(f.str("orderId"), f.opt_str("reason"))


UPSERT_PLACED = (
    "INSERT INTO order_summaries "
    "(order_id, customer_id, item_count, total, status, placed_at) "
    "VALUES ($1, $2, $3, $4, 'placed', $5) "
    "ON CONFLICT (order_id) DO UPDATE SET customer_id = excluded.customer_id, "
    "item_count = excluded.item_count, total = excluded.total, status = 'placed', "
    "placed_at = excluded.placed_at"
)

MARK_SHIPPED = (
    "UPDATE order_summaries SET status = 'shipped', tracking_number = $2, shipped_at = $3 WHERE order_id = $1"
)

MARK_CANCELLED = "UPDATE order_summaries SET status = 'cancelled' WHERE order_id = $1"

CUSTOMER_ORDERS = (
    "SELECT order_id, customer_id, item_count, total, status, placed_at, "
    "tracking_number, shipped_at FROM order_summaries WHERE customer_id = $1 "
    "ORDER BY placed_at DESC, order_id DESC LIMIT 50"
)

# The same text as the Rust literal, indentation included (it is what the
# database keeps as the table's definition).
CREATE_TABLE = """CREATE TABLE IF NOT EXISTS order_summaries (
                order_id TEXT PRIMARY KEY,
                customer_id TEXT NOT NULL,
                item_count BIGINT NOT NULL,
                total DOUBLE PRECISION NOT NULL,
                status TEXT NOT NULL,
                placed_at TEXT NOT NULL,
                tracking_number TEXT,
                shipped_at TEXT
            )"""

# On PostgreSQL: text keys compared bytewise, room on each page for an
# order's one later update (see the Rust version).
CREATE_TABLE_POSTGRES = """CREATE TABLE IF NOT EXISTS order_summaries (
                order_id TEXT COLLATE "C" PRIMARY KEY,
                customer_id TEXT COLLATE "C" NOT NULL,
                item_count BIGINT NOT NULL,
                total DOUBLE PRECISION NOT NULL,
                status TEXT NOT NULL,
                placed_at TEXT COLLATE "C" NOT NULL,
                tracking_number TEXT,
                shipped_at TEXT
            ) WITH (fillfactor = 60)"""

CREATE_INDEX = "CREATE INDEX IF NOT EXISTS order_summaries_by_customer ON order_summaries (customer_id, placed_at)"


def init(ctx):
    ctx.sql.execute(CREATE_TABLE_POSTGRES if ctx.sql.dialect() == "postgres" else CREATE_TABLE)
    ctx.sql.execute(CREATE_INDEX)


def handle(ctx, event):
    data = event.data
    if isinstance(data, OrderPlaced):
        item_count = wrap_i64(sum(item.quantity for item in data.items))
        ctx.sql.execute(
            UPSERT_PLACED, (data.order_id, data.customer_id, item_count, data.total, event.occurred_at)
        )
    elif isinstance(data, OrderShipped):
        ctx.sql.execute(MARK_SHIPPED, (data.order_id, data.tracking_number, event.occurred_at))
    else:
        ctx.sql.execute(MARK_CANCELLED, (data.order_id,))


def query(ctx, name, args):
    if name == "customer-orders":
        customer_id = args.get("customerId") if isinstance(args, dict) else None
        if not isinstance(customer_id, str):
            raise Failed('customer-orders needs {"customerId": "..."}')
        return ctx.sql.query(CUSTOMER_ORDERS, (customer_id,)).to_json()
    raise Failed(f"unknown query `{name}`; this projection has `customer-orders`")


WitWorld = export(
    manifest=Manifest("order-summaries-py", "1", event_types=["order.placed", "order.shipped", "order.cancelled"]),
    events={
        "order.placed": OrderPlaced.decode,
        "order.shipped": OrderShipped.decode,
        "order.cancelled": OrderCancelled.decode,
    },
    init=init,
    handle=handle,
    query=query,
)
