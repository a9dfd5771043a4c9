//! `reel test`: a projection's read model built from a fixture of events on
//! a scratch store (a temporary SQLite folder, or a scratch PostgreSQL
//! database), written as stable JSON and compared with a snapshot (ADR 38).
//!
//! The run is reel itself, in process: the fixture's events are written
//! into the scratch event log with the times they give (or fixed ones), the
//! module is deployed from a modules folder, its worker catches up, and the
//! read model is read whole in one snapshot (`store::Dumps`), as the checksum
//! route reads it. Every language and both backends take the same path.

mod build;
mod diff;
mod fixture;
mod render;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::config::Config;
use crate::server::Server;

pub use fixture::{Fixture, Query};

/// What `reel test` is asked to do.
#[derive(Debug, Clone)]
pub struct TestRun {
    /// The component (`.wasm`), or a projection folder to build first.
    pub module: PathBuf,
    /// The fixture: JSON lines of events (and queries).
    pub events: PathBuf,
    /// The snapshot file (default: the fixture's name with `.snapshot.json`).
    pub snapshot: Option<PathBuf>,
    /// Write the snapshot instead of comparing with it.
    pub update: bool,
    /// A PostgreSQL server to build on (a scratch database is created on it
    /// and dropped after); the embedded SQLite store when absent.
    pub database: Option<String>,
    /// Where compiled modules are kept between runs (default
    /// `~/.cache/reel/compiled`).
    pub cache_dir: Option<PathBuf>,
}

/// What a run found.
#[derive(Debug, Clone)]
pub struct Report {
    /// How it ended.
    pub verdict: Verdict,
    /// The projection the module provides.
    pub projection: String,
    /// The read model's checksum (ADR 37).
    pub checksum: crate::store::ReadModelSum,
}

/// How a run ended (errors aside).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The read model equals the snapshot.
    Passed,
    /// `--update`: the snapshot was written.
    Written,
    /// It differs; the diff was printed.
    Differs,
}

/// Longest a run waits for the module to compile and the projection to
/// catch up.
const PATIENCE: Duration = Duration::from_secs(600);

/// Run `reel test`: build, compare (or write), print what happened.
pub async fn run(test: &TestRun) -> anyhow::Result<Report> {
    let module = build::module(&test.module)?;
    let fixture = Fixture::read(&test.events)?;
    let snapshot_path = test.snapshot.clone().unwrap_or_else(|| default_snapshot(&test.events));
    let scratch = Scratch::new()?;
    let database = match &test.database {
        Some(url) => Some(ScratchDatabase::create(url).await?),
        None => None,
    };
    let cache_dir = test.cache_dir.clone().or_else(compile_cache);
    let built =
        build_read_model(&module, &fixture, &scratch, database.as_ref().map(|d| d.url.as_str()), cache_dir).await;
    if let Some(database) = database {
        database.drop().await;
    }
    let built = built?;
    let verdict = compare(test, &snapshot_path, &fixture, &built)?;
    Ok(Report { verdict, projection: built.name, checksum: built.checksum })
}

/// Compare the read model with the snapshot (or write it), saying so.
fn compare(test: &TestRun, snapshot_path: &Path, fixture: &Fixture, built: &Built) -> anyhow::Result<Verdict> {
    let text = built.snapshot_text();
    let summary = format!("{} events; {}; checksum {}", fixture.events.len(), built.summary(), built.checksum.checksum);
    if test.update {
        std::fs::write(snapshot_path, &text)
            .with_context(|| format!("cannot write the snapshot {}", snapshot_path.display()))?;
        println!("reel test: {}: wrote {} ({summary})", built.name, snapshot_path.display());
        return Ok(Verdict::Written);
    }
    let expected = match std::fs::read_to_string(snapshot_path) {
        Ok(expected) => expected,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no snapshot {}: run again with --update to write it from this read model, then check it in",
            snapshot_path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot read the snapshot {}", snapshot_path.display())),
    };
    if expected == text {
        println!("reel test: {}: the read model matches {} ({summary})", built.name, snapshot_path.display());
        return Ok(Verdict::Passed);
    }
    println!(
        "reel test: {}: the read model differs from {} (- snapshot, + read model):",
        built.name,
        snapshot_path.display()
    );
    print!("{}", diff::lines(&expected, &text));
    println!("({summary}; run with --update to accept the read model as the snapshot)");
    Ok(Verdict::Differs)
}

/// `fixture.jsonl` -> `fixture.snapshot.json`, beside it.
fn default_snapshot(events: &Path) -> PathBuf {
    let stem = events.file_stem().and_then(|s| s.to_str()).unwrap_or("fixture");
    events.with_file_name(format!("{stem}.snapshot.json"))
}

/// The read model a run built, and what it read from it.
struct Built {
    name: String,
    dump: crate::store::whole::WholeModel,
    queries: Vec<(Query, serde_json::Value)>,
    checksum: crate::store::ReadModelSum,
}

impl Built {
    fn snapshot_text(&self) -> String {
        render::snapshot(&self.dump, &self.queries)
    }

    fn summary(&self) -> String {
        let tables: Vec<String> = self.checksum.tables.iter().map(|t| format!("{} {} rows", t.name, t.rows)).collect();
        let tables = if tables.is_empty() { "no tables".to_owned() } else { tables.join(", ") };
        format!("{tables}; {} keys; {} queries", self.checksum.kv.entries, self.queries.len())
    }
}

/// Write the events, start reel on the scratch store, wait for the
/// projection to catch up, read it whole and run the queries.
async fn build_read_model(
    module: &Path,
    fixture: &Fixture,
    scratch: &Scratch,
    database: Option<&str>,
    cache_dir: Option<PathBuf>,
) -> anyhow::Result<Built> {
    let mut config = Config {
        data_dir: scratch.path.join("data"),
        database_url: database.map(str::to_owned),
        modules_dir: scratch.path.join("modules"),
        poll_interval: Duration::from_millis(20),
        read_wait: PATIENCE,
        cache_dir,
        ..Config::default()
    };
    std::fs::create_dir_all(&config.data_dir)?;
    std::fs::create_dir_all(&config.modules_dir)?;
    let last = fixture.write_events(&config).await?;
    let file = module.file_name().map_or_else(|| "module.wasm".into(), |f| f.to_owned());
    std::fs::copy(module, config.modules_dir.join(file))
        .with_context(|| format!("cannot copy {}", module.display()))?;
    config.limits.query_timeout = config.limits.query_timeout.max(Duration::from_secs(60));
    let server = Server::start(config).await?;
    let built = read_back(&server, fixture, last).await;
    server.shutdown().await;
    built
}

/// What the deployed module provides, once compiled; its read model, once
/// it has applied the last event.
async fn read_back(server: &Server, fixture: &Fixture, last: i64) -> anyhow::Result<Built> {
    let name = deployed(server).await?;
    let reads = server.reads();
    caught_up(server, &name, last).await?;
    let dump = reads
        .read(&name, None, |reader| {
            let mut dump = crate::store::whole::WholeModel::default();
            reader.dump(&mut dump)?;
            Ok(dump)
        })
        .await
        .map_err(|e| anyhow::anyhow!("reading projection `{name}`: {e}"))?;
    let checksum = reads.checksum(&name, None).await.map_err(|e| anyhow::anyhow!("projection `{name}`: {e}"))?;
    let mut queries = Vec::new();
    for query in &fixture.queries {
        let answer = match reads.query(&name, query.name.clone(), query.args_text(), None).await {
            Ok(json) => serde_json::from_str(&json).unwrap_or(serde_json::Value::String(json)),
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        };
        queries.push((query.clone(), answer));
    }
    Ok(Built { name, dump, queries, checksum })
}

/// Wait until projection `name` has applied (or moved past) position
/// `last`; fail when it stops at an event, saying where and why.
async fn caught_up(server: &Server, name: &str, last: i64) -> anyhow::Result<()> {
    use crate::worker::State;
    let deadline = Instant::now() + PATIENCE;
    let mut told = String::new();
    loop {
        let info = server.reads().info(name).await.map_err(|e| anyhow::anyhow!("projection `{name}`: {e}"))?;
        let error = info.last_error.as_ref().map(|e| e.message.clone()).unwrap_or_default();
        match info.state {
            State::Stopped => bail!(
                "projection `{name}` stopped at event {}: {error}",
                info.stopped_at.map_or_else(|| "?".to_owned(), |p| p.to_string())
            ),
            State::Running if info.position >= last => return Ok(()),
            State::Running | State::Retrying | State::Starting => {}
            other => bail!("projection `{name}` is {other:?}: {error}"),
        }
        if !error.is_empty() && error != told {
            eprintln!("reel test: projection `{name}`: {error} (retrying)");
            told = error;
        }
        if Instant::now() >= deadline {
            bail!("projection `{name}` did not reach position {last} within {PATIENCE:?} (it is at {})", info.position);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The name of the projection the modules folder's one file provides,
/// once it is compiled; its error if it did not load.
async fn deployed(server: &Server) -> anyhow::Result<String> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let files = server.deployments().files();
        if let Some(file) = files.iter().find(|f| !f.compiling && (f.provides.is_some() || f.error.is_some())) {
            if let Some(error) = &file.error {
                bail!("{}: {error}", file.path.display());
            }
            if file.kind.is_some_and(|k| k != "projection") {
                bail!(
                    "{}: a {}, not a projection: reel test runs projections",
                    file.path.display(),
                    file.kind.unwrap_or("")
                );
            }
            let provides = file.provides.clone().unwrap_or_default();
            let name = provides.rsplit_once('@').map_or(provides.as_str(), |(name, _)| name).to_owned();
            if server.deployments().views(&name).is_some() {
                return Ok(name);
            }
        }
        if Instant::now() >= deadline {
            bail!("the module was not compiled and deployed within {PATIENCE:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Compiled modules are kept between runs (`~/.cache/reel/compiled`): a
/// Python component takes seconds to compile.
fn compile_cache() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    let dir = base.join("reel").join("compiled");
    std::fs::create_dir_all(&dir).ok().map(|()| dir)
}

/// A temporary folder, removed when dropped.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn new() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("reel-test-{}", random_suffix()));
        std::fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn random_suffix() -> String {
    let mut bytes = [0u8; 6];
    let _ = getrandom::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A database created for one run on the server `--database` names, and
/// dropped after it.
struct ScratchDatabase {
    /// The server's URL, as given (reel connects to it to create and drop).
    admin: String,
    /// The scratch database's name.
    name: String,
    /// Its URL.
    url: String,
}

impl ScratchDatabase {
    async fn create(admin: &str) -> anyhow::Result<Self> {
        let name = format!("reel_test_{}", random_suffix());
        let url = with_database(admin, &name)?;
        let client = connect(admin).await?;
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .with_context(|| format!("cannot create a scratch database on {admin} (the user needs CREATEDB)"))?;
        Ok(Self { admin: admin.to_owned(), name, url })
    }

    /// Drop the database, and the login roles reel made for its namespaces
    /// (roles belong to the server, not to a database).
    async fn drop(self) {
        let roles: Vec<String> = match connect(&self.url).await {
            Ok(client) => client
                .query("SELECT role_name FROM reel.namespaces", &[])
                .await
                .map(|rows| rows.iter().map(|r| r.get(0)).collect())
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let dropped = async {
            let admin = connect(&self.admin).await?;
            admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).await?;
            for role in roles {
                admin
                    .batch_execute(&format!("DROP ROLE IF EXISTS {}", crate::store::sql_text::quote_ident(&role)))
                    .await?;
            }
            anyhow::Ok(())
        };
        if let Err(e) = dropped.await {
            eprintln!("reel test: could not drop the scratch database {} and its roles: {e:#}", self.name);
        }
    }
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("cannot connect to {url}"))?;
    tokio::spawn(connection);
    Ok(client)
}

/// `url` with its database replaced by `name`
/// (`postgres://user@host:port/db?options`).
fn with_database(url: &str, name: &str) -> anyhow::Result<String> {
    let (base, options) = url.split_once('?').map_or((url, None), |(b, o)| (b, Some(o)));
    let Some(rest) = base.strip_prefix("postgres://").or_else(|| base.strip_prefix("postgresql://")) else {
        bail!("--database takes a URL (postgres://user@host:port/db), not {url}");
    };
    let authority = rest.split_once('/').map_or(rest, |(authority, _)| authority);
    let scheme = &base[..base.len() - rest.len()];
    Ok(match options {
        Some(options) => format!("{scheme}{authority}/{name}?{options}"),
        None => format!("{scheme}{authority}/{name}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scratch_database_keeps_the_servers_address_and_options() {
        assert_eq!(with_database("postgres://u@h:5432/db", "x").unwrap(), "postgres://u@h:5432/x");
        assert_eq!(with_database("postgresql://h?sslmode=disable", "x").unwrap(), "postgresql://h/x?sslmode=disable");
        assert!(with_database("host=h dbname=d", "x").is_err());
        assert_eq!(default_snapshot(Path::new("t/fixture.jsonl")), Path::new("t/fixture.snapshot.json"));
    }
}
