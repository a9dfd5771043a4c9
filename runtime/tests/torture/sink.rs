//! The sink of a kill loop: `order-sink` publishing every `order.*` event to
//! a JetStream stream capturing `orders.>` on a private `nats-server` (the
//! shared one's other streams may take subjects under `orders.`). After each
//! kill: no event in the stream twice (JetStream drops what is published
//! again under the same `Nats-Msg-Id`, within a window longer than the run),
//! every order event up to the sink's position before the kill in it, each
//! stream's messages in version order; at the end, exactly the log's order
//! events.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_nats::jetstream;
use tempfile::TempDir;

use super::check::Logged;
use super::common::brokers::{PrivateNats, spare_port};

/// The module file and the name it serves as.
pub const MODULE: &str = "order_sink";
pub const NAME: &str = "order-sink";

pub struct Sink {
    rt: tokio::runtime::Runtime,
    nats: PrivateNats,
    _store: TempDir,
    stream: jetstream::stream::Stream,
    /// The stream's messages read so far: the positions they carry, and
    /// each order stream's last version.
    seen: BTreeSet<i64>,
    versions: BTreeMap<String, i64>,
    read_to: u64,
}

impl Sink {
    pub fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let store = tempfile::tempdir().unwrap();
        let nats = PrivateNats::start(store.path(), spare_port());
        let stream = rt.block_on(async {
            let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
            js.create_stream(jetstream::stream::Config {
                name: "REEL_TORTURE".into(),
                subjects: vec!["orders.>".into()],
                duplicate_window: Duration::from_secs(6 * 3600),
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .unwrap()
        });
        Self { rt, nats, _store: store, stream, seen: BTreeSet::new(), versions: BTreeMap::new(), read_to: 0 }
    }

    /// The server's address, for `reel serve --nats-url`.
    pub fn url(&self) -> String {
        self.nats.url()
    }

    /// Read what the stream got since the last call and check it against
    /// `log` (read up to now): each message an order event of the log, none
    /// twice, each order stream in version order; and every order event at
    /// or before `delivered` (the sink's position before the kill), or every
    /// one when `complete`, in the stream. Returns the messages in the stream.
    pub fn check(&mut self, log: &[Logged], delivered: i64, complete: bool) -> usize {
        let by_position: BTreeMap<i64, &Logged> = log.iter().map(|l| (l.cursor.id, l)).collect();
        self.rt.block_on(async {
            let last = self.stream.info().await.unwrap().state.last_sequence;
            for seq in self.read_to + 1..=last {
                let m = self.stream.get_raw_message(seq).await.unwrap();
                let id = m.headers.get("Nats-Msg-Id").map(|v| v.as_str().to_owned()).unwrap_or_default();
                let position: i64 = id
                    .strip_prefix(&format!("{NAME}:"))
                    .and_then(|p| p.parse().ok())
                    .unwrap_or_else(|| panic!("message {seq} has the dedup id {id:?}"));
                assert!(self.seen.insert(position), "event {position} is in the stream twice (message {seq})");
                let event = by_position.get(&position).unwrap_or_else(|| panic!("message {id}: no such event"));
                assert!(event.stored.event_type.starts_with("order."), "message {id}: {}", event.stored.event_type);
                assert_eq!(m.subject.as_str(), format!("orders.{}", event.stream_id), "message {id}");
                let previous = self.versions.insert(event.stream_id.clone(), event.version).unwrap_or(0);
                assert_eq!(
                    event.version,
                    previous + 1,
                    "stream {}: message {id} (version {}) follows version {previous}",
                    event.stream_id,
                    event.version
                );
            }
            self.read_to = last;
        });
        let missing: Vec<i64> = log
            .iter()
            .filter(|l| l.stored.event_type.starts_with("order.") && (complete || l.cursor.id <= delivered))
            .map(|l| l.cursor.id)
            .filter(|p| !self.seen.contains(p))
            .collect();
        assert!(
            missing.is_empty(),
            "{} order events the sink had passed are not in the stream, first {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
        self.seen.len()
    }
}
