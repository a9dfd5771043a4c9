//! `{{name}}`: counts events per event type in an SQL table, and answers the
//! query `counts`. Replace it with your own logic.

use reel_guest_sdk::{Context, Envelope, Error, Manifest, Projection, Result, params, serde_json};

pub struct Counter;

impl Projection for Counter {
    /// Any event, its payload as JSON. Use an enum with
    /// `#[serde(tag = "type", content = "data")]` for typed events.
    type Event = serde_json::Value;

    fn manifest() -> Manifest {
        // Subscribe to fewer events with `.event_types(["order.*"])`; bump the
        // version when the logic changes, and reel rebuilds the read model.
        Manifest::new("{{name}}", "1")
    }

    fn init(ctx: &mut Context<'_>) -> Result<()> {
        ctx.sql().execute(
            "CREATE TABLE IF NOT EXISTS event_counts (event_type TEXT PRIMARY KEY, count BIGINT NOT NULL)",
            params![],
        );
        Ok(())
    }

    fn handle(ctx: &mut Context<'_>, event: Envelope<'_, serde_json::Value>) -> Result<()> {
        ctx.sql().execute(
            "INSERT INTO event_counts (event_type, count) VALUES ($1, 1) \
             ON CONFLICT (event_type) DO UPDATE SET count = event_counts.count + 1",
            params![event.event_type],
        );
        Ok(())
    }

    fn query(ctx: &mut Context<'_>, name: &str, _args: serde_json::Value) -> Result<serde_json::Value> {
        match name {
            "counts" => {
                let rows = ctx.sql().query("SELECT event_type, count FROM event_counts ORDER BY event_type", params![])?;
                Ok(rows.to_json())
            }
            other => Err(Error::Failed(format!("unknown query `{other}`; try `counts`"))),
        }
    }
}

reel_guest_sdk::export!(Counter);
