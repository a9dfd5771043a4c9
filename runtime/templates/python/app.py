"""`{{name}}`: counts events per event type in an SQL table, and answers the
query `counts`. Replace it with your own logic."""

from reel_guest import Failed, Manifest, export


def init(ctx):
    ctx.sql.execute("CREATE TABLE IF NOT EXISTS event_counts (event_type TEXT PRIMARY KEY, count BIGINT NOT NULL)")


def handle(ctx, event):
    ctx.sql.execute(
        "INSERT INTO event_counts (event_type, count) VALUES ($1, 1) "
        "ON CONFLICT (event_type) DO UPDATE SET count = event_counts.count + 1",
        (event.event_type,),
    )


def query(ctx, name, args):
    if name != "counts":
        raise Failed(f"unknown query `{name}`; try `counts`")
    return ctx.sql.query("SELECT event_type, count FROM event_counts ORDER BY event_type").to_json()


# Subscribe to fewer events with event_types=["order.*"]; bump the version when
# the logic changes, and reel rebuilds the read model. events=None: any event
# type, its payload as parsed JSON.
WitWorld = export(manifest=Manifest("{{name}}", "1"), events=None, init=init, handle=handle, query=query)
