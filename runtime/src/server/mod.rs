//! Start-up: the configured backend opened (above both backends, so neither
//! knows the other), the engine and its epoch clock,
//! the deployments started, the read service, and HTTP served until shutdown.
//!
//! - [`listen`]: the connection loop: the connection cap, header, body and
//!   idle timeouts, TLS.
//! - [`tls`]: rustls with a certificate reloaded when its files change.
//! - [`watch`]: what a connection is doing, for its timeouts.

mod listen;
mod tls;
mod watch;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;

use crate::api::{self, Services};
use crate::config::Config;
use crate::deploy::Deployments;
use crate::host::{Engine, EpochTicker};
use crate::modules::Loader;
use crate::postgres::{PgSource, PgStore};
use crate::reads::Reads;
use crate::source::{Source, SourceError};
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
    match Server::start(config.clone()).await {
        Ok(server) => serve(server, listener, shutdown).await,
        Err(e) if unreachable(&e) => serve_until_reachable(config, listener, shutdown, e).await,
        Err(e) => Err(e),
    }
}

/// Whether start-up failed only because the database could not be reached.
fn unreachable(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| matches!(cause.downcast_ref::<SourceError>(), Some(SourceError::Unreachable(_))))
}

/// The database was unreachable at start (ADR 43): serve anyway, every
/// request answered `503` with what is wrong (`/healthz` included), and
/// start again with backoff until it can be reached; then serve as usual.
async fn serve_until_reachable(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    first: anyhow::Error,
) -> anyhow::Result<()> {
    use futures_util::FutureExt as _;
    let shutdown = shutdown.boxed().shared();
    let waiting = Arc::new(Waiting { since: std::time::Instant::now(), app: OnceLock::new() });
    tracing::warn!("{first:#}; serving anyway, and starting again until the database answers");
    tracing::info!("reel is serving http://{}", listener.local_addr()?);
    let front = axum::Router::new().fallback(forward).with_state(Arc::clone(&waiting));
    let front = front.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let http = tokio::spawn(axum::serve(listener, front).with_graceful_shutdown(shutdown.clone()).into_future());
    let mut attempt = 0u32;
    let server = loop {
        let pause = Duration::from_millis(250).saturating_mul(1u32 << attempt.min(5)).min(Duration::from_secs(10));
        tokio::select! {
            () = shutdown.clone() => {
                http.await??;
                return Ok(());
            }
            () = tokio::time::sleep(pause) => {}
        }
        match Server::start(config.clone()).await {
            Ok(server) => break server,
            Err(e) if unreachable(&e) => {
                attempt += 1;
                tracing::warn!("{e:#}; trying again");
            }
            Err(e) => {
                http.abort();
                return Err(e);
            }
        }
    };
    tracing::info!("the database answers after {:.1?}: reel runs", waiting.since.elapsed());
    let _ = waiting.app.set(api::app(server.services()));
    let served = http.await;
    server.shutdown().await;
    Ok(served??)
}

/// What serves HTTP while the database is unreachable at start.
struct Waiting {
    since: std::time::Instant,
    /// The API, once reel has started.
    app: OnceLock<axum::Router>,
}

/// A request: to the API once reel has started, else `503`.
async fn forward(
    axum::extract::State(waiting): axum::extract::State<Arc<Waiting>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    use tower::ServiceExt as _;
    if let Some(app) = waiting.app.get() {
        return app.clone().oneshot(request).await.into_response();
    }
    let message = format!(
        "reel cannot reach its database (for {} s): it starts once the database answers; see the server log",
        waiting.since.elapsed().as_secs()
    );
    api::unavailable(request.uri().path() == "/healthz", message)
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
    let config = server.config();
    let tls = match config.tls.as_ref().map(tls::Tls::new).transpose() {
        Ok(tls) => tls,
        Err(e) => {
            server.shutdown().await;
            return Err(e.context("cannot serve TLS (--tls-cert, --tls-key)"));
        }
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!("reel is serving {scheme}://{}", listener.local_addr()?);
    listen::raise_open_files(config.connections.max);
    let listen = listen::Listen {
        router: api::app(server.services()),
        limits: config.connections.clone(),
        tls,
        // Ordinary requests end within their timeout anyway.
        grace: config.requests.timeout,
    };
    listen.run(listener, shutdown).await;
    server.shutdown().await;
    Ok(())
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
