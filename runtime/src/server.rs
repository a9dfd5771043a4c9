//! Start-up: the configured backend opened (above both backends, so neither
//! knows the other), the engine and its epoch clock,
//! the deployments started, the read service, and HTTP served until shutdown.

use std::sync::Arc;

use anyhow::Context as _;

use crate::api::{self, Services};
use crate::config::Config;
use crate::deploy::Deployments;
use crate::host::{Engine, EpochTicker};
use crate::modules::Loader;
use crate::postgres::{PgSource, PgStore};
use crate::reads::Reads;
use crate::source::Source;
use crate::sqlite::{SqliteSource, SqliteStore};
use crate::store::Store;

/// Run reel until `shutdown` resolves: backends, modules, workers, HTTP.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    exposure(&config)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let server = Server::start(config).await?;
    serve(server, listener, shutdown).await
}

/// Refuse to serve a non-loopback address without tokens, unless told
/// `--insecure` (ADR 33): the quick start stays one command on loopback.
fn exposure(config: &Config) -> anyhow::Result<()> {
    if config.tokens.is_empty() {
        anyhow::ensure!(
            config.listen.ip().is_loopback() || config.insecure,
            "reel will not listen on {} without API tokens: anyone who reaches it could append events, pause, \
             rebuild and delete. Give tokens (--tokens FILE or REEL_TOKENS; `reel token NAME admin` makes one), \
             listen on 127.0.0.1, or pass --insecure to serve it open anyway",
            config.listen
        );
        if !config.listen.ip().is_loopback() {
            tracing::warn!("--insecure: serving {} with no authentication", config.listen);
        }
    }
    Ok(())
}

/// Serve the HTTP API of `server` on `listener` until `shutdown` resolves,
/// then stop the server.
pub async fn serve(
    server: Server,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    tracing::info!("reel is serving http://{}", listener.local_addr()?);
    let app = api::app(server.services());
    // Connection info: admin actions record the client's address (ADR 21).
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    server.shutdown().await;
    Ok(served?)
}

/// A started reel: its backends, its deployments and the read service.
/// Shared by the HTTP server and tests.
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    source: Source,
    store: Store,
    deployments: Deployments,
    reads: Reads,
    /// Advances the engine's epoch (CPU deadlines) while reel runs.
    _ticker: EpochTicker,
}

impl Server {
    /// Open the backends, load the modules folder and start the workers.
    pub async fn start(mut config: Config) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create the data folder {}", config.data_dir.display()))?;
        std::fs::create_dir_all(&config.modules_dir)
            .with_context(|| format!("cannot create the modules folder {}", config.modules_dir.display()))?;
        // The watcher reports absolute paths; the folder's listing at start
        // must name the same files the same way.
        config.modules_dir = std::fs::canonicalize(&config.modules_dir)
            .with_context(|| format!("cannot resolve the modules folder {}", config.modules_dir.display()))?;
        let (source, store) = open_backends(&config).await?;
        let engine = Engine::new().map_err(|e| anyhow::anyhow!("{e:#}")).context("cannot set up wasmtime")?;
        let ticker = engine.start_ticker();
        let cache_dir = config.cache_dir.clone().unwrap_or_else(|| config.data_dir.join("compiled"));
        let loader = Loader::new(engine, &cache_dir, config.limits.clone());
        let deployments = Deployments::start(config.clone(), source.clone(), store.clone(), loader).await?;
        let reads = Reads::new(config.clone(), deployments.clone(), source.clone(), store.clone());
        Ok(Self { inner: Arc::new(Inner { config, source, store, deployments, reads, _ticker: ticker }) })
    }

    /// Stop the workers and background tasks.
    pub async fn shutdown(&self) {
        self.inner.deployments.shutdown().await;
        self.inner.source.close();
    }

    /// What the HTTP routes use.
    pub fn services(&self) -> Services {
        Services {
            deployments: self.inner.deployments.clone(),
            reads: self.inner.reads.clone(),
            source: self.inner.source.clone(),
            access: api::Access::from_config(&self.inner.config),
        }
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The event log.
    pub fn source(&self) -> &Source {
        &self.inner.source
    }

    /// The read-model storage.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The registry of deployments.
    pub fn deployments(&self) -> &Deployments {
        &self.inner.deployments
    }

    /// The read service.
    pub fn reads(&self) -> &Reads {
        &self.inner.reads
    }
}

/// The event log and the read-model storage of the configured backend.
async fn open_backends(config: &Config) -> anyhow::Result<(Source, Store)> {
    Ok(match &config.database_url {
        None => {
            let events = config.data_dir.join("events.db");
            let source = SqliteSource::open(&events)
                .await
                .with_context(|| format!("cannot open the events database {}", events.display()))?;
            let store = SqliteStore::new(&config.data_dir.join("projections"))?.with_bounds(bounds_for(config));
            (Source::new(source), Store::new(store))
        }
        Some(url) => {
            let source = PgSource::open(url).await.context("cannot use the PostgreSQL database")?;
            let store = PgStore::new(source.config().clone(), source.pool().clone(), tokio::runtime::Handle::current())
                .with_bounds(bounds_for(config));
            (Source::new(source), Store::new(store))
        }
    })
}

/// Each projection's bounds on its SQL, from its limits.
fn bounds_for(config: &Config) -> crate::store::BoundsFor {
    let config = config.clone();
    std::sync::Arc::new(move |name| crate::store::SqlBounds {
        changes: config.changes_for(name),
        ..crate::store::SqlBounds::of(&config.limits_for(name))
    })
}
