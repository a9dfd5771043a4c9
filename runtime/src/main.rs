//! The `reel` command: parse the CLI, set up logging, run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use reel::Config;
use reel::config::tokens::{self, Tokens};

#[derive(Parser)]
#[command(name = "reel", version, about = "A projection runtime for event-sourced systems")]
struct Cli {
    /// The configuration file (flags win over environment variables, and
    /// they over the file); by default ./reel.toml if there is one.
    #[arg(long, global = true, value_name = "FILE", env = "REEL_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// The commands whose flags `reel.toml` sets (ADR 46): the server's, and the
/// server address and token of the commands that talk to it.
const FILE_COMMANDS: &[&str] = &[
    "serve",
    "config",
    "status",
    "pause",
    "resume",
    "rebuild",
    "delete",
    "skip",
    "discard",
    "dead-letters",
    "replay",
    "shadow",
];

#[derive(Subcommand)]
enum Command {
    /// Tail the events table and run the projections in the modules folder.
    Serve(Box<ServeArgs>),
    /// Print the configuration `reel serve` would run with (and the server
    /// and token the other commands use), each value's origin beside it,
    /// secrets hidden.
    Config {
        #[command(flatten)]
        serve: Box<ServeArgs>,
        #[command(flatten)]
        client: Target,
    },
    /// Generate a deterministic order workload (placed, shipped, cancelled)
    /// and append it through a server or insert it into an events table.
    Generate(GenerateArgs),
    /// Show the projections of a running server (or one of them).
    Status {
        /// One projection (all when absent).
        name: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Stop a projection taking batches.
    Pause(NameArgs),
    /// Let a projection take batches again (also retries a stopped one).
    Resume(NameArgs),
    /// Rebuild a projection from position 0 beside the serving version,
    /// showing progress until reads switch to it.
    Rebuild {
        #[command(flatten)]
        projection: NameArgs,
        /// Return once the rebuild has started.
        #[arg(long)]
        no_wait: bool,
    },
    /// Delete a projection's read model (remove its module file first).
    Delete(NameArgs),
    /// Skip the event a stopped projection halted at: it goes to the dead
    /// letters (retry it later) and the projection goes on after it.
    Skip(PositionArgs),
    /// Delete a dead letter for good.
    Discard(PositionArgs),
    /// List the events a projection set aside (policy skip) and why.
    DeadLetters(NameArgs),
    /// Build a module beside a projection's serving version (a shadow run),
    /// then list what differs between their read models at one position
    /// (exit code 1 when something does); promote or discard it after.
    #[command(group(ArgGroup::new("shadow_action").args(["file", "promote", "discard"])))]
    Shadow {
        #[command(flatten)]
        projection: NameArgs,
        /// The module (.wasm) to build as the shadow; without it, the
        /// differences of the shadow running are shown.
        file: Option<PathBuf>,
        /// Switch reads to the shadow, as at a version's cut-over, and wait
        /// until they have.
        #[arg(long)]
        promote: bool,
        /// Stop the shadow and drop its read model.
        #[arg(long)]
        discard: bool,
    },
    /// Make a random API token and the line that lets `reel serve --tokens
    /// FILE` accept it (reel keeps only its SHA-256).
    Token {
        /// Who holds it (shown in refusals and the log).
        name: String,
        /// What it may do: read, read:PROJECTION, append, admin (commas
        /// between; admin includes the others).
        scopes: String,
    },
    /// Build a projection's read model from a fixture of events on a scratch
    /// store and compare it with a snapshot: exit code 1 and a diff when it
    /// differs (or the projection fails).
    Test(TestArgs),
    /// Run a poison event again from its record (kept when an event stops a
    /// projection or goes to its dead letters): the recorded module on the
    /// recorded host-call answers, with no database; exit code 0 when it
    /// reproduces the recorded error and log lines, 1 when it differs. With
    /// --module, that module applies the event on the read model as it was
    /// before it: 0 when it passes, 1 when it fails. 2: no usable record.
    Replay(ReplayArgs),
    /// Create a projection folder that builds and deploys as it is.
    New {
        /// The projection's name (a-z, 0-9, `-`, `_`).
        name: String,
        /// Its language.
        #[arg(long, value_enum, default_value = "rust")]
        lang: reel::scaffold::Lang,
        /// Where to create it (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Args)]
#[command(group(ArgGroup::new("target").required(true).args(["server", "data_dir", "database"])))]
struct GenerateArgs {
    /// Number of orders (about 1.8 events each).
    #[arg(long, default_value_t = 1000)]
    orders: usize,
    /// Seed: the same seed gives the same events.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of customers (default: orders / 20).
    #[arg(long)]
    customers: Option<usize>,
    /// Append through this server's POST /events (http://host:port).
    #[arg(long)]
    server: Option<String>,
    /// The API token to send with --server (needs scope `append`).
    #[arg(long, env = "REEL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Trust an https:// --server whose certificate is in this PEM file or
    /// signed by one in it, instead of the system's roots.
    #[arg(long, value_name = "FILE", env = "REEL_CA")]
    ca: Option<PathBuf>,
    /// Insert straight into this embedded data folder's events.db.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// COPY straight into this PostgreSQL database's events table.
    #[arg(long)]
    database: Option<String>,
}

#[derive(Args)]
#[command(group(ArgGroup::new("record").required(true).args(["name", "file"])))]
struct ReplayArgs {
    /// The projection, to fetch the record from the server
    /// (GET /projections/NAME/replays/POSITION, scope admin).
    #[arg(requires = "position")]
    name: Option<String>,
    /// The poison event's position (`stopped_at` in `reel status NAME`, or a
    /// dead letter's).
    position: Option<i64>,
    /// A record file instead of the server (exported from that route, or
    /// written by --save).
    #[arg(long, conflicts_with = "name")]
    file: Option<PathBuf>,
    /// Apply the event with this module (.wasm) on the record's read model
    /// in a temporary SQLite store, instead of replaying the recorded module.
    #[arg(long)]
    module: Option<PathBuf>,
    /// Write the record fetched from the server to this file.
    #[arg(long, conflicts_with = "file")]
    save: Option<PathBuf>,
    #[command(flatten)]
    target: Target,
}

#[derive(Args)]
struct TestArgs {
    /// The projection: its component (.wasm), or its folder (built first
    /// with cargo, npm run build or ./build.sh).
    module: PathBuf,
    /// The fixture: JSON lines, each an event (`stream_id`, `event_type`,
    /// `data`, optional `metadata` and `occurred_at`) or a query (`query`,
    /// optional `args`) answered on the read model built.
    #[arg(long)]
    events: PathBuf,
    /// The snapshot to compare with (default: the fixture's name with
    /// `.snapshot.json`).
    #[arg(long)]
    snapshot: Option<PathBuf>,
    /// Write the snapshot from this read model instead of comparing.
    #[arg(long)]
    update: bool,
    /// Build on this PostgreSQL server (postgres://user@host/db): a scratch
    /// database is created on it and dropped after. The embedded SQLite
    /// store in a temporary folder when absent.
    #[arg(long)]
    database: Option<String>,
}

#[derive(Args)]
struct Target {
    /// The reel server to talk to (http:// or https://).
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "REEL_SERVER")]
    server: String,
    /// The API token to send (see `reel token`).
    #[arg(long, env = "REEL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Trust an https:// server whose certificate is in this PEM file or
    /// signed by one in it (a private CA, or the server's own self-signed
    /// certificate) instead of the system's roots.
    #[arg(long, value_name = "FILE", env = "REEL_CA")]
    ca: Option<PathBuf>,
}

impl Target {
    fn remote(&self) -> reel::cli::Remote {
        reel::cli::Remote {
            url: self.server.clone(),
            token: self.token.clone(),
            trust: reel::cli::Trust { ca: self.ca.clone() },
        }
    }
}

#[derive(Args)]
struct NameArgs {
    /// The projection.
    name: String,
    #[command(flatten)]
    target: Target,
}

#[derive(Args)]
struct PositionArgs {
    /// The projection.
    name: String,
    /// The event's position (`stopped_at` in `reel status NAME`, or a dead
    /// letter's).
    position: i64,
    #[command(flatten)]
    target: Target,
}

#[derive(Args)]
struct ServeArgs {
    /// Embedded mode's data (events.db, read models) and the compile cache.
    #[arg(long, default_value = "reel-data", env = "REEL_DATA_DIR")]
    data_dir: PathBuf,
    /// PostgreSQL URL (postgres://user@host/db); embedded SQLite when absent.
    #[arg(long, env = "DATABASE_URL")]
    database: Option<String>,
    /// Folder of projection modules (*.wasm), watched for changes.
    #[arg(long, default_value = "projections-dir", env = "REEL_PROJECTIONS")]
    projections: PathBuf,
    /// HTTP listen address.
    #[arg(long, default_value = "127.0.0.1:8080", env = "REEL_LISTEN")]
    listen: SocketAddr,
    /// Most events per batch (one transaction); catching up, batches are
    /// sized to take about a second, up to this.
    #[arg(long, default_value_t = 100_000)]
    batch_size: usize,
    /// CPU deadline of one call into a projection, in seconds.
    #[arg(long, default_value_t = 10.0)]
    batch_timeout: f64,
    /// Memory limit of one projection instance, in MiB.
    #[arg(long, default_value_t = 256)]
    memory_mib: usize,
    /// Largest KV value, in KiB.
    #[arg(long, default_value_t = 1024)]
    kv_value_kib: usize,
    /// Most rows one SQL query may return.
    #[arg(long, default_value_t = 100_000)]
    query_rows: usize,
    /// Largest string or blob a projection's SQL may make or read, in MiB.
    #[arg(long, default_value_t = 16)]
    sql_value_mib: usize,
    /// Most a projection's read model may hold on disk, in MiB.
    #[arg(long, default_value_t = 1024)]
    storage_mib: u64,
    /// Longest chain of events reactors emit in answer to each other
    /// (`causation_depth`); past it the emitting reactor stops.
    #[arg(long, default_value_t = 32)]
    emit_depth: u32,
    /// Most events (emitted or scheduled) a reactor may make per handled event.
    #[arg(long, default_value_t = 100)]
    emit_per_event: u32,
    /// Most bytes a reactor may emit per handled event, in KiB.
    #[arg(long, default_value_t = 1024)]
    emit_kib_per_event: usize,
    /// Most events a reactor may emit per batch.
    #[arg(long, default_value_t = 100_000)]
    emit_per_batch: u32,
    /// Most bytes a reactor may emit per batch, in MiB.
    #[arg(long, default_value_t = 64)]
    emit_mib_per_batch: usize,
    /// How often to look for new events without a wake-up, in milliseconds.
    #[arg(long, default_value_t = 250)]
    poll_ms: u64,
    /// Keep a projection's previous version after a rebuilt one takes over.
    #[arg(long)]
    keep_old: bool,
    /// Override a setting of one projection: NAME.KEY=VALUE, with KEY one of
    /// on-error (stop|skip), batch-timeout (seconds), memory-mib,
    /// kv-value-kib, query-rows, sql-value-mib, storage-mib, changes
    /// (on|off: capture the read model's changes for
    /// GET /projections/NAME/changes). Repeatable.
    #[arg(long = "set", value_name = "NAME.KEY=VALUE")]
    settings: Vec<String>,
    /// API tokens, one a line: NAME SCOPES SECRET (`reel token` makes them).
    /// REEL_TOKENS may hold more lines (or `;`-separated ones). Without any
    /// token every route is open.
    #[arg(long, value_name = "FILE", env = "REEL_TOKENS_FILE")]
    tokens: Option<PathBuf>,
    /// Serve GET /metrics without a token (for a scraper that sends none).
    #[arg(long)]
    metrics_open: bool,
    /// Listen on a non-loopback address without tokens: anyone who reaches
    /// the port may append, pause, rebuild and delete.
    #[arg(long)]
    insecure: bool,
    /// A host name browsers may use to reach reel when it has no tokens
    /// (besides localhost and IP addresses): other names are refused, as a
    /// DNS-rebinding page would use them. Repeatable.
    #[arg(long = "allow-host", value_name = "NAME", env = "REEL_ALLOW_HOSTS", value_delimiter = ',')]
    allowed_hosts: Vec<String>,
    /// Total time an ordinary request may take, in seconds (live feeds are
    /// exempt); past it reel answers 503 request_timeout.
    #[arg(long, default_value_t = 30.0)]
    request_timeout: f64,
    /// NATS server sinks of broker `nats` publish to (JetStream), e.g.
    /// nats://127.0.0.1:4222; credentials in the URL (user:pass@).
    #[arg(long, value_name = "URL", env = "REEL_NATS_URL")]
    nats_url: Option<String>,
    /// RabbitMQ server sinks of broker `amqp` publish to, e.g.
    /// amqp://guest:guest@127.0.0.1:5672/%2f.
    #[arg(long, value_name = "URL", env = "REEL_AMQP_URL")]
    amqp_url: Option<String>,
    /// Most events a sink publishes before it waits for the broker's
    /// confirmations and moves its checkpoint.
    #[arg(long, default_value_t = 1000)]
    sink_batch: usize,
    /// How long captured read-model changes are kept, in seconds; a client
    /// resuming from further back gets 410 and reads the read model afresh.
    #[arg(long, default_value_t = 86_400.0)]
    changes_retention: f64,
    /// Memory for deciders' states of streams, in MiB (least recently used
    /// go first).
    #[arg(long, default_value_t = 64)]
    decider_cache_mib: usize,
    /// Events folded past a stream's last snapshot before a decider's state
    /// of it is snapshotted again in the database (0: never).
    #[arg(long, default_value_t = 1000)]
    snapshot_every: u32,
    /// How long a command's answer is kept under its Idempotency-Key, in
    /// hours: the same key again within it gets the same answer.
    #[arg(long, default_value_t = 24.0)]
    idempotency_hours: f64,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key); reel
    /// reads it again when it changes, so a renewal needs no restart.
    #[arg(long, value_name = "FILE", env = "REEL_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", env = "REEL_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Seconds a client has to send a request's headers (from its first
    /// byte, or from connecting, TLS handshake included); then reel closes
    /// the connection.
    #[arg(long, default_value_t = 10.0)]
    header_timeout: f64,
    /// Seconds a client has to send a request's body once its headers are
    /// in; past it reel answers 408 body_timeout.
    #[arg(long, default_value_t = 20.0)]
    body_timeout: f64,
    /// Seconds a keep-alive connection may sit with no request before reel
    /// closes it.
    #[arg(long, default_value_t = 60.0)]
    idle_timeout: f64,
    /// Connections served at once; past it the keep-alive connection idle the
    /// longest is closed to make room, or new ones wait until one closes.
    #[arg(long, default_value_t = 4096)]
    max_connections: usize,
    /// The log's format: `text` for a terminal, `json` for a collector (one
    /// object a line, with a line per batch applied: target reel::batch).
    /// RUST_LOG chooses what is logged in either.
    #[arg(long, value_enum, default_value = "text", env = "REEL_LOG_FORMAT")]
    log_format: LogFormat,
}

/// How `reel serve` writes its log (ADR 46).
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Lines for a person; a batch's own line only when RUST_LOG asks for
    /// `reel::batch`.
    Text,
    /// One JSON object a line, with a line per batch applied.
    Json,
}

/// Set up the log: `format`, filtered by RUST_LOG when it is set. Without it,
/// info and above, and the line per batch (`reel::batch`) only in JSON: a
/// terminal would scroll with every append, a collector wants them.
fn init_log(format: LogFormat, quiet: Option<&'static str>) {
    let default_filter = match (quiet, format) {
        (Some(filter), _) => filter,
        (None, LogFormat::Text) => "info,sqlx=warn,reel::batch=off",
        (None, LogFormat::Json) => "info,sqlx=warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).with_span_list(false).init(),
        LogFormat::Text => {
            // Colour codes only on a terminal: a log redirected to a file stays plain text.
            let colour = std::io::IsTerminal::is_terminal(&std::io::stdout()) && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(colour).init()
        }
    }
}

impl ServeArgs {
    fn config(self) -> anyhow::Result<Config> {
        anyhow::ensure!(self.batch_size > 0, "--batch-size must be at least 1");
        anyhow::ensure!(self.batch_timeout > 0.0, "--batch-timeout must be positive");
        anyhow::ensure!(self.memory_mib > 0, "--memory-mib must be at least 1");
        anyhow::ensure!(self.kv_value_kib > 0, "--kv-value-kib must be at least 1");
        anyhow::ensure!(self.query_rows > 0, "--query-rows must be at least 1");
        anyhow::ensure!(self.sql_value_mib > 0, "--sql-value-mib must be at least 1");
        anyhow::ensure!(self.storage_mib > 0, "--storage-mib must be at least 1");
        anyhow::ensure!(self.emit_depth > 0, "--emit-depth must be at least 1");
        anyhow::ensure!(self.emit_per_event > 0, "--emit-per-event must be at least 1");
        anyhow::ensure!(self.emit_kib_per_event > 0, "--emit-kib-per-event must be at least 1");
        anyhow::ensure!(self.emit_per_batch > 0, "--emit-per-batch must be at least 1");
        anyhow::ensure!(
            (1..=1024).contains(&self.emit_mib_per_batch),
            "--emit-mib-per-batch must be 1 to 1024 (PostgreSQL takes no value over 1 GiB)"
        );
        anyhow::ensure!(self.sink_batch > 0, "--sink-batch must be at least 1");
        let mut config = Config {
            data_dir: self.data_dir,
            database_url: self.database,
            modules_dir: self.projections,
            listen: self.listen,
            poll_interval: Duration::from_millis(self.poll_ms.max(1)),
            ..Config::default()
        };
        config.batch.max_events = self.batch_size;
        config.limits.batch_timeout = Duration::try_from_secs_f64(self.batch_timeout)
            .map_err(|_| anyhow::anyhow!("--batch-timeout must be a finite number of seconds"))?;
        config.limits.memory_bytes = self.memory_mib << 20;
        config.limits.kv_value_bytes = self.kv_value_kib << 10;
        config.limits.query_rows = self.query_rows;
        config.limits.sql_value_bytes =
            reel::config::sql_value_bytes(self.sql_value_mib).map_err(|e| anyhow::anyhow!("--{e}"))?;
        config.limits.storage_bytes = self.storage_mib << 20;
        config.limits.emit = reel::config::EmitLimits {
            events_per_event: self.emit_per_event,
            bytes_per_event: self.emit_kib_per_event << 10,
            events_per_batch: self.emit_per_batch,
            bytes_per_batch: self.emit_mib_per_batch << 20,
            max_depth: self.emit_depth,
        };
        config.keep_old = self.keep_old;
        config.sinks = reel::config::SinkConfig {
            nats_url: self.nats_url.filter(|u| !u.is_empty()),
            amqp_url: self.amqp_url.filter(|u| !u.is_empty()),
            batch_events: self.sink_batch,
        };
        config.changes_retention = Duration::try_from_secs_f64(self.changes_retention)
            .ok()
            .filter(|t| !t.is_zero())
            .ok_or_else(|| anyhow::anyhow!("--changes-retention must be a positive number of seconds"))?;
        config.metrics_open = self.metrics_open;
        config.insecure = self.insecure;
        config.allowed_hosts =
            self.allowed_hosts.iter().map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase()).collect();
        config.requests.timeout = Duration::try_from_secs_f64(self.request_timeout)
            .ok()
            .filter(|t| !t.is_zero())
            .ok_or_else(|| anyhow::anyhow!("--request-timeout must be a positive number of seconds"))?;
        config.deciders.state_cache_bytes = self.decider_cache_mib << 20;
        config.deciders.snapshot_every = i64::from(self.snapshot_every);
        config.deciders.answers_ttl = Duration::try_from_secs_f64(self.idempotency_hours * 3600.0)
            .ok()
            .filter(|t| !t.is_zero())
            .ok_or_else(|| anyhow::anyhow!("--idempotency-hours must be a positive number of hours"))?;
        let seconds = |flag: &str, value: f64| {
            Duration::try_from_secs_f64(value)
                .ok()
                .filter(|t| !t.is_zero())
                .ok_or_else(|| anyhow::anyhow!("--{flag} must be a positive number of seconds"))
        };
        config.connections = reel::config::ConnectionLimits {
            header_timeout: seconds("header-timeout", self.header_timeout)?,
            body_timeout: seconds("body-timeout", self.body_timeout)?,
            idle_timeout: seconds("idle-timeout", self.idle_timeout)?,
            max: self.max_connections,
        };
        anyhow::ensure!(self.max_connections > 0, "--max-connections must be at least 1");
        if let (Some(cert), Some(key)) = (self.tls_cert, self.tls_key) {
            config.tls = Some(reel::config::TlsFiles { cert, key });
        }
        if let Some(file) = &self.tokens {
            config.tokens = Tokens::from_file(file).map_err(|e| anyhow::anyhow!("--tokens: {e}"))?;
        }
        if let Ok(lines) = std::env::var("REEL_TOKENS") {
            let more = Tokens::parse(&lines.replace(';', "\n"), "REEL_TOKENS").map_err(anyhow::Error::msg)?;
            config.tokens = config.tokens.merge(more).map_err(anyhow::Error::msg)?;
        }
        for setting in &self.settings {
            let parsed = setting.split_once('=').and_then(|(target, value)| {
                let (name, key) = target.split_once('.')?;
                Some((name, key, value))
            });
            let Some((name, key, value)) = parsed else {
                anyhow::bail!("--set {setting}: use NAME.KEY=VALUE, e.g. --set order-summaries.on-error=skip");
            };
            // A name no projection can have would be a setting that never applies.
            anyhow::ensure!(
                reel::model::is_projection_name(name),
                "--set {setting}: `{name}` cannot name a projection ({})",
                reel::model::PROJECTION_NAME_RULE
            );
            config
                .projections
                .entry(name.to_owned())
                .or_default()
                .set(key, value)
                .map_err(|e| anyhow::anyhow!("--set {setting}: {e}"))?;
        }
        Ok(config)
    }
}

/// Resolves at SIGINT (Ctrl-C) or SIGTERM (what `kill`, systemd and container
/// runtimes send), saying which: the server then stops taking requests and
/// finishes the batches in flight.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut interrupt, mut terminate) = match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(i), Ok(t)) => (i, t),
        _ => {
            tracing::warn!("cannot listen for SIGINT/SIGTERM; stop reel with SIGKILL");
            return std::future::pending().await;
        }
    };
    let name = tokio::select! {
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    };
    tracing::info!("{name} received: shutting down (finishing the batches in flight)");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let parsed =
        reel::config::file::parse(Cli::command(), std::env::args_os(), FILE_COMMANDS).map_err(anyhow::Error::msg)?;
    let cli = Cli::from_arg_matches(&parsed.matches).unwrap_or_else(|e| e.exit());
    let format = match &cli.command {
        Command::Serve(args) => args.log_format,
        Command::Config { serve, .. } => serve.log_format,
        _ => LogFormat::Text,
    };
    // `reel test` prints its verdict; the server inside it only its
    // warnings. `reel replay` prints the guest's log lines itself.
    let quiet = match cli.command {
        Command::Test(_) => Some("warn"),
        Command::Replay(_) => Some("warn,reel::guest=off"),
        _ => None,
    };
    init_log(format, quiet);
    match cli.command {
        Command::Config { mut serve, client: _ } => {
            serve.settings = parsed.with_file_settings(serve.settings);
            serve.config()?;
            print!("{}", parsed.effective("config"));
            Ok(())
        }
        Command::Serve(mut args) => {
            args.settings = parsed.with_file_settings(args.settings);
            let result = reel::run((*args).config()?, shutdown_signal()).await;
            if result.is_ok() {
                tracing::info!("reel stopped");
            }
            result
        }
        Command::Generate(args) => {
            let target = match (args.server, args.data_dir, args.database) {
                (Some(url), _, _) => reel::cli::Target::Server(reel::cli::Remote {
                    url,
                    token: args.token,
                    trust: reel::cli::Trust { ca: args.ca },
                }),
                (None, Some(dir), _) => reel::cli::Target::DataDir(dir),
                (None, None, Some(url)) => reel::cli::Target::Database(url),
                (None, None, None) => unreachable!("clap requires one of the target group"),
            };
            let last = reel::cli::generate(args.orders, args.seed, args.customers, target).await?;
            println!("appended {} orders; last position {last}", args.orders);
            Ok(())
        }
        Command::Status { name, target } => {
            Ok(reel::cli::status(&target.remote(), name.as_deref()).map_err(anyhow::Error::msg)?)
        }
        Command::Pause(p) => Ok(reel::cli::control(&p.target.remote(), &p.name, "pause").map_err(anyhow::Error::msg)?),
        Command::Resume(p) => {
            Ok(reel::cli::control(&p.target.remote(), &p.name, "resume").map_err(anyhow::Error::msg)?)
        }
        Command::Delete(p) => {
            Ok(reel::cli::control(&p.target.remote(), &p.name, "delete").map_err(anyhow::Error::msg)?)
        }
        Command::Skip(p) => {
            Ok(reel::cli::poison(&p.target.remote(), &p.name, "skip", p.position).map_err(anyhow::Error::msg)?)
        }
        Command::DeadLetters(p) => {
            Ok(reel::cli::dead_letters(&p.target.remote(), &p.name).map_err(anyhow::Error::msg)?)
        }
        Command::Discard(p) => {
            Ok(reel::cli::poison(&p.target.remote(), &p.name, "discard", p.position).map_err(anyhow::Error::msg)?)
        }
        Command::Test(args) => {
            let test = reel::cli::snapshot::TestRun {
                module: args.module,
                events: args.events,
                snapshot: args.snapshot,
                update: args.update,
                database: args.database,
                cache_dir: None,
            };
            match reel::cli::snapshot::run(&test).await?.verdict {
                reel::cli::snapshot::Verdict::Differs => std::process::exit(1),
                _ => Ok(()),
            }
        }
        Command::Replay(args) => {
            let record = match (&args.file, &args.name, args.position) {
                (Some(file), _, _) => reel::cli::replay::read(file),
                (None, Some(name), Some(position)) => reel::cli::replay::fetch(&args.target.remote(), name, position)
                    .and_then(|(record, text)| {
                        if let Some(save) = &args.save {
                            std::fs::write(save, text)
                                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", save.display()))?;
                            eprintln!("reel replay: record saved to {}", save.display());
                        }
                        Ok(record)
                    }),
                _ => unreachable!("clap requires a file or a name and a position"),
            };
            let verdict = record.and_then(|record| reel::cli::replay::run(&record, args.module.as_deref(), None));
            match verdict {
                Ok(verdict) => std::process::exit(verdict.exit_code()),
                Err(e) => {
                    eprintln!("reel replay: {e:#}");
                    std::process::exit(2)
                }
            }
        }
        Command::New { name, lang, dir } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let files = reel::scaffold::scaffold(&name, lang, &dir).map_err(anyhow::Error::msg)?;
            println!(
                "created {} ({} files); see {}/README.md to build and deploy it",
                dir.display(),
                files.len(),
                dir.display()
            );
            Ok(())
        }
        Command::Token { name, scopes } => {
            let (token, line) = tokens::generate(&name, &scopes).map_err(anyhow::Error::msg)?;
            println!("token: {token}");
            println!("line:  {line}");
            eprintln!(
                "Give the token to its holder (REEL_TOKEN=... for the CLI, `Authorization: Bearer ...` over HTTP); \
                 add the line to the --tokens file or REEL_TOKENS. reel keeps only the hash: the token cannot be shown again."
            );
            Ok(())
        }
        Command::Shadow { projection, file, promote, discard } => {
            use reel::cli::ShadowAction;
            let action = match (file, promote, discard) {
                (Some(file), _, _) => ShadowAction::Start(file),
                (None, true, _) => ShadowAction::Promote,
                (None, false, true) => ShadowAction::Discard,
                (None, false, false) => ShadowAction::Show,
            };
            let same =
                reel::cli::shadow(&projection.target.remote(), &projection.name, action).map_err(anyhow::Error::msg)?;
            if !same {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Rebuild { projection, no_wait } => {
            Ok(reel::cli::rebuild(&projection.target.remote(), &projection.name, !no_wait)
                .map_err(anyhow::Error::msg)?)
        }
    }
}
