//! Sinks: delivery from the log to message brokers (ADR 31). A sink module
//! declares which events it takes and where they go (a NATS JetStream
//! subject, or a RabbitMQ exchange and routing key); reel reads the events
//! after the sink's checkpoint, publishes them (`messages.rs` builds them,
//! through the module's `transform` if it has one), and moves the
//! checkpoint only once the broker has confirmed every message of the batch
//! (`deliver.rs`, over `broker.rs`). Each message's dedup id is the sink's
//! name and the event's position (`sink:position`, `sink:position:index`
//! when a transform makes several of one event), as `Nats-Msg-Id` and as
//! AMQP's `message-id`.
//!
//! Delivery is at least once: a crash or a lost confirmation sends the
//! messages after the checkpoint again, with the same ids (JetStream drops
//! them within its duplicate window). A broker that is away is retried with
//! backoff, shown in the status; nothing is skipped. With several reel
//! processes on one PostgreSQL, one holds each sink's lease at a time.

mod broker;
mod deliver;
mod messages;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use tokio::sync::watch;

use crate::config::{Config, Limits, SinkConfig};
use crate::host::sink::Broker;
use crate::modules::SinkModule;
use crate::source::Source;

pub use deliver::SinkState;

/// The sinks in service, by name.
#[derive(Clone)]
pub struct Sinks {
    inner: Arc<Inner>,
}

struct Inner {
    source: Source,
    config: SinkConfig,
    limits: Limits,
    poll_interval: std::time::Duration,
    /// This process's name in sink leases (each task adds its number).
    owner: String,
    /// Delivery tasks started so far.
    tasks: AtomicU64,
    registry: Mutex<BTreeMap<String, Running>>,
}

/// A sink's delivery task.
struct Running {
    module: Arc<SinkModule>,
    state: Arc<Mutex<SinkState>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// A sink as `GET /sinks` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SinkInfo {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// `nats` or `amqp`.
    pub broker: &'static str,
    /// The subject (NATS) or routing key (RabbitMQ) template.
    pub subject: String,
    /// The RabbitMQ exchange (empty: the default exchange).
    pub exchange: String,
    /// Whether its module transforms each event.
    pub transform: bool,
    /// Event types taken (empty: all).
    pub event_types: Vec<String>,
    /// Stream prefixes taken (empty: all).
    pub stream_prefixes: Vec<String>,
    /// The module file.
    pub file: PathBuf,
    /// Delivery: where it is, what it did, what went wrong.
    #[serde(flatten)]
    pub state: SinkState,
    /// Events in the log after the checkpoint (when known).
    pub lag_events: Option<i64>,
}

/// The broker's name in status and messages.
pub fn broker_name(broker: Broker) -> &'static str {
    match broker {
        Broker::Nats => "nats",
        Broker::Amqp => "amqp",
    }
}

impl Sinks {
    /// No sinks yet, over `source`.
    pub fn new(config: &Config, source: Source) -> Self {
        let mut bytes = [0u8; 6];
        let _ = getrandom::fill(&mut bytes);
        let host = std::env::var("HOSTNAME").unwrap_or_default();
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Self {
            inner: Arc::new(Inner {
                source,
                config: config.sinks.clone(),
                limits: config.limits.clone(),
                poll_interval: config.poll_interval,
                owner: format!("{host}:{}:{id}", std::process::id()),
                tasks: AtomicU64::new(0),
                registry: Mutex::default(),
            }),
        }
    }

    fn registry(&self) -> MutexGuard<'_, BTreeMap<String, Running>> {
        self.inner.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Deliver with `module` (from its file): a new sink, or new code for a
    /// running one (it continues from the checkpoint). Refused when another
    /// file provides the same name, or reel has no address for its broker.
    pub fn deploy(&self, module: Arc<SinkModule>) -> Result<(), String> {
        let m = &module.manifest;
        let url = match m.broker {
            Broker::Nats => self.inner.config.nats_url.clone(),
            Broker::Amqp => self.inner.config.amqp_url.clone(),
        };
        let Some(url) = url else {
            let flag = match m.broker {
                Broker::Nats => "--nats-url (REEL_NATS_URL)",
                Broker::Amqp => "--amqp-url (REEL_AMQP_URL)",
            };
            return Err(format!(
                "sink `{}` publishes to {}, but reel was started without {flag}: \
                 the broker's address is reel's configuration, not the module's",
                m.name,
                broker_name(m.broker)
            ));
        };
        let old = {
            let mut registry = self.registry();
            if let Some(other) = registry.get(&m.name)
                && other.module.path != module.path
                && other.module.path.exists()
            {
                return Err(format!(
                    "sink `{}` is already provided by {}; remove one of the two files",
                    m.name,
                    other.module.path.display()
                ));
            }
            // The same file may now provide another name: the old one goes.
            let names: Vec<String> =
                registry.iter().filter(|(_, r)| r.module.path == module.path).map(|(n, _)| n.clone()).collect();
            let mut old: Vec<Running> = names.iter().filter_map(|n| registry.remove(n)).collect();
            old.extend(registry.remove(&m.name));
            old
        };
        // The old task finishes its batch and ends before the new one starts.
        let previous: Vec<_> = old
            .into_iter()
            .map(|running| {
                running.stop.send_replace(true);
                running.task
            })
            .collect();
        let state = Arc::new(Mutex::new(SinkState::starting()));
        let (stop, stopped) = watch::channel(false);
        let job = deliver::Job {
            module: Arc::clone(&module),
            url,
            source: self.inner.source.clone(),
            limits: self.inner.limits.clone(),
            batch_events: self.inner.config.batch_events,
            poll_interval: self.inner.poll_interval,
            // Each task its own name: a task that replaces another of this
            // process (a new file) must not pass the claim as the old one's
            // owner while the old one still delivers.
            owner: format!("{}/{}", self.inner.owner, self.inner.tasks.fetch_add(1, Ordering::Relaxed)),
            state: Arc::clone(&state),
            stop: stopped,
            previous,
        };
        let task = tokio::spawn(job.run());
        self.registry().insert(m.name.clone(), Running { module, state, stop, task });
        Ok(())
    }

    /// The file at `path` is gone: the sink it provided stops (its
    /// checkpoint stays). Returns its name.
    pub fn unload(&self, path: &Path) -> Option<String> {
        let running = {
            let mut registry = self.registry();
            let name = registry.iter().find(|(_, r)| r.module.path == path).map(|(n, _)| n.clone())?;
            registry.remove(&name).map(|r| (name, r))
        };
        let (name, running) = running?;
        running.stop.send_replace(true);
        Some(name)
    }

    /// Stop every sink and wait (briefly) for each to give its lease up.
    pub async fn shutdown(&self) {
        let running: Vec<Running> = std::mem::take(&mut *self.registry()).into_values().collect();
        for r in &running {
            r.stop.send_replace(true);
        }
        for r in running {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), r.task).await;
        }
    }

    /// Every sink in service, with its lag.
    pub async fn list(&self) -> Vec<SinkInfo> {
        let sinks: Vec<(Arc<SinkModule>, SinkState)> = self
            .registry()
            .values()
            .map(|r| (Arc::clone(&r.module), r.state.lock().unwrap_or_else(|p| p.into_inner()).clone()))
            .collect();
        let mut list = Vec::with_capacity(sinks.len());
        for (module, state) in sinks {
            let lag_events = match state.checkpoint {
                Some(cursor) => self.inner.source.count_after(cursor).await.ok(),
                None => None,
            };
            let m = &module.manifest;
            list.push(SinkInfo {
                name: m.name.clone(),
                version: m.version.clone(),
                broker: broker_name(m.broker),
                subject: m.subject.clone(),
                exchange: m.exchange.clone(),
                transform: m.transform,
                event_types: m.event_types.clone(),
                stream_prefixes: m.stream_prefixes.clone(),
                file: module.path.clone(),
                state,
                lag_events,
            });
        }
        list
    }
}
