//! The `reel` command: parse the CLI, set up logging, run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use reel::Config;

#[derive(Parser)]
#[command(name = "reel", version, about = "A projection runtime for event-sourced systems")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Tail the events table and run the projections in the modules folder.
    Serve(ServeArgs),
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
    /// Most events per batch (one transaction).
    #[arg(long, default_value_t = 2000)]
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
    /// How often to look for new events without a wake-up, in milliseconds.
    #[arg(long, default_value_t = 250)]
    poll_ms: u64,
}

impl ServeArgs {
    fn config(self) -> anyhow::Result<Config> {
        anyhow::ensure!(self.batch_size > 0, "--batch-size must be at least 1");
        anyhow::ensure!(self.batch_timeout > 0.0, "--batch-timeout must be positive");
        let mut config = Config {
            data_dir: self.data_dir,
            database_url: self.database,
            modules_dir: self.projections,
            listen: self.listen,
            poll_interval: Duration::from_millis(self.poll_ms.max(1)),
            ..Config::default()
        };
        config.batch.max_events = self.batch_size;
        config.limits.batch_timeout = Duration::from_secs_f64(self.batch_timeout);
        config.limits.memory_bytes = self.memory_mib << 20;
        config.limits.kv_value_bytes = self.kv_value_kib << 10;
        config.limits.query_rows = self.query_rows;
        Ok(config)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Serve(args) => {
            let shutdown = async {
                let _ = tokio::signal::ctrl_c().await;
                tracing::info!("shutting down");
            };
            reel::run(args.config()?, shutdown).await
        }
    }
}
