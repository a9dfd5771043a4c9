//! `order-sink`: the seed's order events (`order.*`) published to NATS
//! JetStream, one message per event on the subject `orders.{stream_id}`:
//! the event's data as the body, reel's headers (`Reel-Position`,
//! `Reel-Stream-Id`, `Reel-Version`, `Reel-Event-Type`, `Reel-Occurred-At`)
//! and `Nats-Msg-Id` = `order-sink:{position}`. No transform: reel builds
//! the messages without calling into the module.
//!
//! Deploy it with `reel serve --nats-url nats://127.0.0.1:4222` and a
//! JetStream stream that captures `orders.>`:
//! `nats stream add ORDERS --subjects 'orders.>' --dupe-window 2m ...`.

use reel_guest_sdk::{Broker, Sink, SinkManifest};

/// The sink.
pub struct OrderSink;

impl Sink for OrderSink {
    fn describe() -> SinkManifest {
        SinkManifest::new("order-sink", "1", Broker::Nats, "orders.{stream_id}").event_types(["order.*"])
    }
}

reel_guest_sdk::export_sink!(OrderSink);
