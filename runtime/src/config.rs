//! Runtime configuration: where data lives, what to serve, and the limits
//! every projection runs under.

pub mod file;
pub mod tokens;

use reel_model::OnError;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything [`run`](crate::run) needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Embedded mode: `events.db`, one file per projection, the compile cache.
    /// With PostgreSQL only the compile cache lives here.
    pub data_dir: PathBuf,
    /// `postgres://...` to use PostgreSQL; `None` for embedded SQLite.
    pub database_url: Option<String>,
    /// Compiled-code cache; `None` means `{data_dir}/compiled`.
    pub cache_dir: Option<PathBuf>,
    /// Folder of `.wasm` projection modules, watched for changes.
    pub modules_dir: PathBuf,
    /// HTTP listen address (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Resource limits of each projection.
    pub limits: Limits,
    /// Batching of events per transaction.
    pub batch: BatchConfig,
    /// How often workers look for new events when no wake-up arrives
    /// (appends by other processes, lost notifications).
    pub poll_interval: Duration,
    /// Quiet time after the last change to a module file before it is loaded.
    pub watch_debounce: Duration,
    /// How long a read with `min_position` waits before answering 504.
    pub read_wait: Duration,
    /// Keep the previous version's namespace after a rebuilt version takes
    /// over reads (instead of dropping it).
    pub keep_old: bool,
    /// Settings of single projections, by name, over the defaults.
    pub projections: BTreeMap<String, ProjectionSettings>,
    /// The API tokens and their scopes; none means no authentication.
    pub tokens: tokens::Tokens,
    /// `GET /metrics` answers without a token.
    pub metrics_open: bool,
    /// Serve a non-loopback address without tokens.
    pub insecure: bool,
    /// Host names (beyond loopback names and IP addresses) that requests may
    /// name in `Host` when reel has no tokens (ADR 34).
    pub allowed_hosts: Vec<String>,
    /// The total request timeout and the caps on requests in flight.
    pub requests: RequestLimits,
    /// How long a connection may take over its headers, its body and its
    /// silences, and how many are served at once.
    pub connections: ConnectionLimits,
    /// Serve HTTPS with this certificate and key; plain HTTP when `None`.
    pub tls: Option<TlsFiles>,
    /// Settings of the deciders (the write side).
    pub deciders: DeciderConfig,
    /// Where sinks deliver: the brokers' addresses (ADR 31).
    pub sinks: SinkConfig,
    /// How long captured read-model changes are kept (ADR 28); a resume
    /// point older than that answers 410.
    pub changes_retention: Duration,
}

/// The brokers sinks publish to. A sink module names a broker kind, never
/// an address: addresses and credentials are the deployment's.
#[derive(Clone, PartialEq)]
pub struct SinkConfig {
    /// NATS server(s), e.g. `nats://127.0.0.1:4222` (comma-separated for
    /// several; credentials in the URL: `nats://user:pass@host:4222`).
    pub nats_url: Option<String>,
    /// RabbitMQ, e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`.
    pub amqp_url: Option<String>,
    /// Most events a sink reads and publishes before it waits for the
    /// broker's confirmations and moves its checkpoint.
    pub batch_events: usize,
}

/// No brokers; 1,000 events a batch.
impl Default for SinkConfig {
    fn default() -> Self {
        Self { nats_url: None, amqp_url: None, batch_events: 1000 }
    }
}

/// URLs shown without their passwords.
impl std::fmt::Debug for SinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hide = |url: &Option<String>| url.as_deref().map(hide_password);
        f.debug_struct("SinkConfig")
            .field("nats_url", &hide(&self.nats_url))
            .field("amqp_url", &hide(&self.amqp_url))
            .field("batch_events", &self.batch_events)
            .finish()
    }
}

/// `scheme://user:secret@host` as `scheme://user:***@host`.
pub fn hide_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((credentials, host)) = rest.rsplit_once('@') else { return url.to_owned() };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// Settings of the deciders.
#[derive(Debug, Clone, PartialEq)]
pub struct DeciderConfig {
    /// Bytes of streams' states kept in memory (64 MiB by default).
    pub state_cache_bytes: usize,
    /// How long a command's answer is kept under its idempotency key (24
    /// hours by default; ADR 25).
    pub answers_ttl: Duration,
    /// Events folded past a stream's last snapshot before its state is
    /// snapshotted again in the database (1,000 by default; 0: never; ADR 26).
    pub snapshot_every: i64,
}

impl Default for DeciderConfig {
    fn default() -> Self {
        Self { state_cache_bytes: 64 << 20, answers_ttl: Duration::from_secs(24 * 3600), snapshot_every: 1000 }
    }
}

/// What one reel serves at once, and for how long (ADR 33).
#[derive(Debug, Clone)]
pub struct RequestLimits {
    /// Total time of an ordinary request (streaming routes are exempt).
    pub timeout: Duration,
    /// Reads (and open routes) in flight.
    pub reads: usize,
    /// Appends and commands in flight.
    pub appends: usize,
    /// Administrative calls in flight.
    pub admin: usize,
    /// Open streams (live feeds).
    pub streams: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(30), reads: 1024, appends: 512, admin: 32, streams: 1024 }
    }
}

/// What one connection may take, and how many are served at once (ADR 35).
/// These are enforced in reel's connection loop, below the router.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionLimits {
    /// From the first byte of a request (or the connection's opening, or the
    /// start of a TLS handshake) to the end of its headers.
    pub header_timeout: Duration,
    /// From the end of a request's headers to the end of its body.
    pub body_timeout: Duration,
    /// A keep-alive connection with no request in flight is closed after this.
    pub idle_timeout: Duration,
    /// Connections served at once; past it the keep-alive connection idle
    /// the longest is closed for a new one, or new ones wait until one closes.
    pub max: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            max: 4096,
        }
    }
}

/// A certificate chain and its private key, PEM files read at start and
/// again whenever either changes on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    /// The certificate chain, the server's own certificate first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// What one projection may override.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProjectionSettings {
    /// Policy for poison events, over the module's `on-error`.
    pub on_error: Option<OnError>,
    /// CPU deadline of a call.
    pub batch_timeout: Option<Duration>,
    /// Memory cap of an instance.
    pub memory_bytes: Option<usize>,
    /// Largest KV value.
    pub kv_value_bytes: Option<usize>,
    /// Most rows of one query.
    pub query_rows: Option<usize>,
    /// Largest SQL value.
    pub sql_value_bytes: Option<usize>,
    /// Storage quota of the read model.
    pub storage_bytes: Option<u64>,
    /// Capture the read model's changes for `GET /projections/{name}/changes`
    /// (ADR 28): off unless set.
    pub changes: bool,
    /// A new build of the serving version is swapped in only once a shadow
    /// run of it shows the same read model (`swap=shadow`, ADR 48).
    pub swap_shadow: bool,
}

impl ProjectionSettings {
    /// Apply `key=value` (`on-error`, `batch-timeout` in seconds,
    /// `memory-mib`, `kv-value-kib`, `query-rows`, `sql-value-mib`, `storage-mib`,
    /// `changes` on or off, `swap` direct or shadow).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let number = |v: &str| match v.parse::<f64>() {
            Ok(n) if n > 0.0 => Ok(n),
            Ok(_) => Err(format!("`{key}` must be more than 0, not `{v}`")),
            Err(_) => Err(format!("`{key}` needs a number, not `{v}`")),
        };
        match key {
            "on-error" => {
                self.on_error = Some(match value {
                    "stop" => OnError::Stop,
                    "skip" => OnError::Skip,
                    other => return Err(format!("on-error is `stop` or `skip`, not `{other}`")),
                })
            }
            "batch-timeout" => {
                let seconds = Duration::try_from_secs_f64(number(value)?)
                    .map_err(|_| format!("batch-timeout is a finite number of seconds, not `{value}`"))?;
                self.batch_timeout = Some(seconds);
            }
            "memory-mib" => self.memory_bytes = Some((number(value)? as usize) << 20),
            "kv-value-kib" => self.kv_value_bytes = Some((number(value)? as usize) << 10),
            "query-rows" => self.query_rows = Some(number(value)? as usize),
            "sql-value-mib" => self.sql_value_bytes = Some(sql_value_bytes(number(value)? as usize)?),
            "storage-mib" => self.storage_bytes = Some((number(value)? as u64) << 20),
            "changes" => {
                self.changes = match value {
                    "on" => true,
                    "off" => false,
                    other => return Err(format!("changes is `on` or `off`, not `{other}`")),
                }
            }
            "swap" => {
                self.swap_shadow = match value {
                    "shadow" => true,
                    "direct" => false,
                    other => return Err(format!("swap is `direct` or `shadow`, not `{other}`")),
                }
            }
            other => {
                return Err(format!(
                    "unknown setting `{other}`; use on-error, batch-timeout, memory-mib, kv-value-kib, query-rows, \
                     sql-value-mib, storage-mib, changes or swap"
                ));
            }
        }
        Ok(())
    }
}

impl Config {
    /// The limits of projection `name`.
    pub fn limits_for(&self, name: &str) -> Limits {
        let mut limits = self.limits.clone();
        if let Some(s) = self.projections.get(name) {
            limits.batch_timeout = s.batch_timeout.unwrap_or(limits.batch_timeout);
            limits.memory_bytes = s.memory_bytes.unwrap_or(limits.memory_bytes);
            limits.kv_value_bytes = s.kv_value_bytes.unwrap_or(limits.kv_value_bytes);
            limits.query_rows = s.query_rows.unwrap_or(limits.query_rows);
            limits.sql_value_bytes = s.sql_value_bytes.unwrap_or(limits.sql_value_bytes);
            limits.storage_bytes = s.storage_bytes.unwrap_or(limits.storage_bytes);
        }
        limits
    }

    /// How long the changes of projection `name` are kept, if they are
    /// captured (`--set NAME.changes=on`, ADR 28).
    pub fn changes_for(&self, name: &str) -> Option<Duration> {
        self.projections.get(name).filter(|s| s.changes).map(|_| self.changes_retention)
    }

    /// Whether a new build of the serving version of `name` must pass a
    /// shadow run before it is swapped in (`--set NAME.swap=shadow`).
    pub fn swap_shadow_for(&self, name: &str) -> bool {
        self.projections.get(name).is_some_and(|s| s.swap_shadow)
    }

    /// The failure policy configured for projection `name`, if any.
    pub fn on_error_for(&self, name: &str) -> Option<OnError> {
        self.projections.get(name).and_then(|s| s.on_error)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("reel-data"),
            database_url: None,
            cache_dir: None,
            modules_dir: PathBuf::from("projections-dir"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            limits: Limits::default(),
            batch: BatchConfig::default(),
            poll_interval: Duration::from_millis(250),
            watch_debounce: Duration::from_millis(300),
            read_wait: Duration::from_secs(5),
            keep_old: false,
            projections: BTreeMap::new(),
            tokens: tokens::Tokens::default(),
            metrics_open: false,
            insecure: false,
            allowed_hosts: Vec::new(),
            requests: RequestLimits::default(),
            connections: ConnectionLimits::default(),
            tls: None,
            deciders: DeciderConfig::default(),
            sinks: SinkConfig::default(),
            changes_retention: Duration::from_secs(24 * 3600),
        }
    }
}

/// Limits that contain a misbehaving projection. Hitting one fails the batch
/// (rolled back, retried with backoff), nothing more.
#[derive(Debug, Clone)]
pub struct Limits {
    /// CPU time a guest call may take (enforced by epoch interruption), and
    /// the time a batch's database work may take.
    pub batch_timeout: Duration,
    /// Linear memory a guest instance may grow to.
    pub memory_bytes: usize,
    /// Largest KV value.
    pub kv_value_bytes: usize,
    /// Largest KV key.
    pub kv_key_bytes: usize,
    /// Most rows one `sql.query` (or a table read over HTTP) returns.
    pub query_rows: usize,
    /// Time a guest `query` export, or a table read over HTTP, may take.
    pub query_timeout: Duration,
    /// What a reactor may emit (ignored for projections).
    pub emit: EmitLimits,
    /// Largest string or blob a projection's SQL may make or read (on
    /// SQLite it is allocated in reel's process, outside the module's
    /// memory cap: ADR 20).
    pub sql_value_bytes: usize,
    /// Most bytes a projection's read model may hold on disk (ADR 20).
    pub storage_bytes: u64,
}

/// Limits on what a reactor emits: past one, the batch fails and the reactor
/// stops with the reason in its status (ADR 23).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmitLimits {
    /// Events (emitted or scheduled) per handled event.
    pub events_per_event: u32,
    /// Bytes (data and metadata) per handled event.
    pub bytes_per_event: usize,
    /// Events per batch.
    pub events_per_batch: u32,
    /// Bytes per batch.
    pub bytes_per_batch: usize,
    /// Longest chain of emissions (`causation_depth`): stops two reactors
    /// that answer each other for ever.
    pub max_depth: u32,
}

impl Default for EmitLimits {
    fn default() -> Self {
        Self {
            events_per_event: 100,
            bytes_per_event: 1 << 20,
            events_per_batch: 100_000,
            bytes_per_batch: 64 << 20,
            max_depth: 32,
        }
    }
}

/// The largest `--sql-value-mib` SQLite takes (its limits are `int`s).
pub const MAX_SQL_VALUE_MIB: usize = 1024;

/// `mib` MiB, if SQLite can bound values at that.
pub fn sql_value_bytes(mib: usize) -> Result<usize, String> {
    if mib > MAX_SQL_VALUE_MIB {
        return Err(format!("sql-value-mib is at most {MAX_SQL_VALUE_MIB}, not {mib}"));
    }
    Ok(mib << 20)
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            batch_timeout: Duration::from_secs(10),
            memory_bytes: 256 << 20,
            kv_value_bytes: 1 << 20,
            kv_key_bytes: 1024,
            query_rows: 100_000,
            query_timeout: Duration::from_secs(5),
            emit: EmitLimits::default(),
            sql_value_bytes: 16 << 20,
            storage_bytes: 1 << 30,
        }
    }
}

/// How many events go into one transaction.
///
/// A projection catching up gets full batches, sized so that one takes
/// about `target` (never more than `max_events`); live traffic makes small
/// ones. Within a batch, the guest is called with at most `call_events`
/// events and `call_bytes` bytes of event text at a time, which bounds the
/// memory one call needs; by default a batch of events like the benchmark's
/// (218 bytes of text on average) is one call, so a projection that folds its events (ADR 16)
/// folds a whole batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    /// Most events per batch (one transaction).
    pub max_events: usize,
    /// How long a full batch should take: longer batches write each B-tree
    /// page fewer times, shorter ones hold a transaction open for less time
    /// (on PostgreSQL an open writing transaction delays every tailer).
    pub target: Duration,
    /// Most events per `handle` call.
    pub call_events: usize,
    /// Most bytes of event text (payload, metadata, stream id, type and time)
    /// per `handle` call, past its first event: the guest holds a call's
    /// events in its memory, whose size is capped.
    pub call_bytes: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self { max_events: 100_000, target: Duration::from_secs(1), call_events: 100_000, call_bytes: 64 << 20 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_refuse_what_they_cannot_hold() {
        let mut settings = ProjectionSettings::default();
        settings.set("batch-timeout", "2.5").unwrap();
        assert_eq!(settings.batch_timeout, Some(Duration::from_millis(2500)));
        assert_eq!(
            settings.set("batch-timeout", "inf").unwrap_err(),
            "batch-timeout is a finite number of seconds, not `inf`"
        );
        assert_eq!(settings.set("batch-timeout", "soon").unwrap_err(), "`batch-timeout` needs a number, not `soon`");
        assert_eq!(settings.set("batch-timeout", "-1").unwrap_err(), "`batch-timeout` must be more than 0, not `-1`");
        assert_eq!(settings.set("memory-mib", "0").unwrap_err(), "`memory-mib` must be more than 0, not `0`");
        assert!(settings.set("colour", "red").unwrap_err().starts_with("unknown setting `colour`"));
    }
}
