//! `reel replay` (ADR 49): a poison event's record, run again outside
//! production. From the record alone, the recorded module runs on the
//! recorded event with every host call answered from the record, and prints
//! its guest log lines and its error, compared with the record's. With a
//! fixed module, the event is applied on the read model as it was before it
//! (the record's snapshot, loaded into a temporary SQLite store), and the
//! run says whether it passes.

mod detached;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use reel_model::Cursor;

use crate::config::Limits;
use crate::host::tape::{HostCall, Recorded, TAPE_BYTES, Tape};
use crate::host::{Access, Capabilities, Engine, Guest, GuestFailure};
use crate::modules::{Loaded, Loader, Module, Program};
use crate::store::{KvWrite, NamespaceId, Namespaces as _, StoreError};
use crate::worker::record::{FailedIn, Record, level_name};

/// How a replay ended (errors aside: a record or module that cannot be
/// used is an error, exit code 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The recorded module did what the record says: the same error, the
    /// same log lines (exit code 0).
    Reproduced,
    /// It did something else (exit code 1).
    Differs,
    /// The fixed module applied the event (exit code 0).
    Passes,
    /// The fixed module failed on it too (exit code 1).
    Fails,
}

impl Verdict {
    /// The exit code for scripts.
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Reproduced | Verdict::Passes => 0,
            Verdict::Differs | Verdict::Fails => 1,
        }
    }
}

/// Read a record file.
pub fn read(file: &Path) -> anyhow::Result<Record> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    Record::from_json(&text).map_err(|e| anyhow::anyhow!("{}: not a usable replay record: {e}", file.display()))
}

/// Fetch the record of projection `name`'s event at `position` from a
/// server (`GET /projections/{name}/replays/{position}`).
pub fn fetch(server: &super::Remote, name: &str, position: i64) -> anyhow::Result<(Record, String)> {
    let mut client = server.connect().map_err(anyhow::Error::msg)?;
    let response = client.get(&format!("/projections/{name}/replays/{position}")).map_err(anyhow::Error::msg)?;
    if response.status != 200 {
        bail!("{}", response.message());
    }
    let record = Record::from_json(&response.body)
        .map_err(|e| anyhow::anyhow!("the server sent no usable replay record: {e}"))?;
    Ok((record, response.body))
}

/// Run `record` again: its own module on the recorded answers, or `fixed`
/// on its snapshot. Prints what happened.
pub fn run(record: &Record, fixed: Option<&Path>, cache_dir: Option<PathBuf>) -> anyhow::Result<Verdict> {
    let engine = Engine::new().map_err(|e| anyhow::anyhow!("{e:#}")).context("cannot set up wasmtime")?;
    let _ticker = engine.start_ticker();
    let mut limits = Limits::default();
    record.limits.apply(&mut limits);
    let scratch = tempdir()?;
    let cache = cache_dir.unwrap_or_else(|| scratch.0.join("compiled"));
    let loader = Loader::new(engine, &cache, limits.clone());
    let event = &record.event;
    println!(
        "reel replay: {}@{}, event {} ({} on {}), recorded on {} at {}",
        record.projection,
        record.version,
        event.position,
        event.event_type,
        event.stream_id,
        record.dialect,
        record.recorded_at
    );
    match fixed {
        None => {
            let Some(bytes) = &record.module.bytes else {
                bail!(
                    "the record holds no module bytes (its file had changed when it was recorded); \
                     it ran the module of SHA-256 {}",
                    record.module.hash
                );
            };
            let module = load(&loader, Path::new(&record.module.file), Some(bytes))?;
            println!("module: {} (sha256 {})", record.module.file, record.module.hash);
            replay(record, &module, &limits)
        }
        Some(path) => {
            let module = load(&loader, path, None)?;
            println!(
                "module: {} (sha256 {}), on the read model as it was before the event",
                path.display(),
                module.hash
            );
            on_snapshot(record, &module, &limits, &scratch.0)
        }
    }
}

/// The recorded module on the recorded answers.
fn replay(record: &Record, module: &std::sync::Arc<Module>, limits: &Limits) -> anyhow::Result<Verdict> {
    let dialect = if record.dialect == "postgres" { "postgres" } else { "sqlite" };
    let access = Access::Write(Box::new(detached::Detached { dialect }));
    let mut caps = Capabilities::new(&record.projection, access, limits.clone())?;
    reactor(&mut caps, module, limits);
    caps.set_tape(Some(Tape::playing(Recorded { calls: record.calls.clone(), dropped: record.calls_dropped })));
    let mut guest = instantiate(module, caps, limits)?;
    let event = std::slice::from_ref(&record.event);
    guest.caps().begin()?;
    guest.caps().begin_batch(event, &[Cursor { tx: 0, id: record.event.position }]);
    let outcome = match guest.handle(event) {
        Err(e) => Some(e.to_string()),
        // The database's answer to the writes is part of the record too.
        Ok(()) if record.failed_in == FailedIn::Commit => Some(record.error.clone()),
        Ok(()) => None,
    };
    let tape = guest.caps().take_tape().unwrap_or_default();
    let logs: Vec<String> = tape.played_logs().iter().map(|(l, m)| format!("{} {m}", level_name(*l))).collect();
    for line in &logs {
        println!("{line}");
    }
    match &outcome {
        Some(error) => println!("error: {error}"),
        None => println!("passed: no error"),
    }
    if tape.ran_past_cut() {
        bail!(
            "the record cannot be replayed to its end: its host calls were cut at {TAPE_BYTES} bytes when it \
             was recorded ({} more were made), and the module ran past the cut, so what it did after and the \
             recorded error ({}) cannot be checked",
            record.calls_dropped,
            record.error
        );
    }
    let recorded_logs: Vec<String> = record.logs().iter().map(|(l, m)| format!("{} {m}", level_name(*l))).collect();
    let recorded_error = (record.failed_in != FailedIn::Nowhere).then(|| record.error.clone());
    // Past a cut tape, a module that asked for no more answers can only
    // have written log lines: as many as the record counted, if it is the
    // recorded module.
    let past_cut = logs.len().saturating_sub(recorded_logs.len()) as u64;
    let logs_match = logs == recorded_logs
        || (record.calls_dropped > 0 && logs.starts_with(&recorded_logs) && past_cut == record.calls_dropped);
    if logs_match && outcome == recorded_error {
        println!(
            "reel replay: reproduced: the same error and the same {} log line{} as recorded",
            logs.len(),
            if logs.len() == 1 { "" } else { "s" }
        );
        return Ok(Verdict::Reproduced);
    }
    println!("reel replay: differs from the record (- recorded, + replay):");
    for line in recorded_logs.iter().filter(|l| !logs.contains(l)) {
        println!("- {line}");
    }
    for line in logs.iter().filter(|l| !recorded_logs.contains(l)) {
        println!("+ {line}");
    }
    if outcome != recorded_error {
        println!("- error: {}", recorded_error.as_deref().unwrap_or("(none)"));
        println!("+ error: {}", outcome.as_deref().unwrap_or("(none)"));
    }
    Ok(Verdict::Differs)
}

/// `module` applies the event on the record's snapshot in a temporary
/// SQLite store: its setup, the snapshot's rows and KV entries, the event.
fn on_snapshot(
    record: &Record,
    module: &std::sync::Arc<Module>,
    limits: &Limits,
    scratch: &Path,
) -> anyhow::Result<Verdict> {
    let Some(snapshot) = &record.snapshot else {
        bail!(
            "the record holds no read model to apply the event on ({})",
            record.snapshot_missing.as_deref().unwrap_or("not recorded")
        );
    };
    let store = crate::sqlite::SqliteStore::new(&scratch.join("projections"))?;
    let ns = NamespaceId::new(&module.manifest.name, &module.manifest.version);
    let writer = store.open_writer(&ns, limits.query_timeout)?;
    let mut caps = Capabilities::new(&record.projection, Access::Write(writer), limits.clone())?;
    reactor(&mut caps, module, limits);
    let mut guest = instantiate(module, caps, limits)?;
    guest.caps().begin()?;
    let set_up = guest.init().and_then(|()| Ok(guest.caps().commit(Cursor::START, Cursor::START)?));
    if let Err(e) = set_up {
        println!("error: setup failed: {e}");
        return Ok(Verdict::Fails);
    }
    let at = Cursor { tx: 0, id: snapshot.position };
    load_snapshot(guest.caps(), snapshot, at).map_err(|e| anyhow::anyhow!("loading the record's read model: {e}"))?;
    let event = std::slice::from_ref(&record.event);
    let caps = guest.caps();
    caps.begin()?;
    caps.set_tape(Some(Tape::recording()));
    caps.begin_batch(event, &[at]);
    let handled = guest.handle(event).and_then(|()| {
        let to = Cursor { tx: 0, id: record.event.position };
        guest.caps().commit(at, to).map_err(GuestFailure::Store)
    });
    let recorded = guest.caps().take_tape().map(Tape::into_recorded).unwrap_or_default();
    for call in &recorded.calls {
        if let HostCall::Log { level, message } = call {
            println!("{} {message}", level_name(*level));
        }
    }
    if recorded.dropped > 0 {
        println!("({} more host calls and log lines, past {TAPE_BYTES} bytes, not shown)", recorded.dropped);
    }
    match handled {
        Ok(()) => {
            println!(
                "reel replay: passes: the module applies event {} (the record's error was: {})",
                record.event.position, record.error
            );
            Ok(Verdict::Passes)
        }
        Err(e) => {
            let _ = guest.caps().rollback();
            println!("error: {e}");
            println!("reel replay: fails (the record's error was: {})", record.error);
            Ok(Verdict::Fails)
        }
    }
}

/// The snapshot's rows and KV entries, committed at `at`.
fn load_snapshot(
    caps: &mut Capabilities,
    snapshot: &crate::worker::record::Snapshot,
    at: Cursor,
) -> Result<(), StoreError> {
    caps.begin()?;
    let loaded = (|| {
        let ns = caps.writer()?;
        for (table, columns, rows) in &snapshot.tables {
            let quoted: Vec<String> = columns.iter().map(|c| crate::store::sql_text::quote_ident(c)).collect();
            let marks: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
            let statement = format!(
                "INSERT INTO {} ({}) VALUES ({})",
                crate::store::sql_text::quote_ident(table),
                quoted.join(", "),
                marks.join(", ")
            );
            for row in rows {
                ns.execute(&statement, row.clone())?;
            }
            ns.flush().map_err(|e| match e {
                StoreError::Sql { message, .. } => StoreError::Refused(format!(
                    "table `{table}` of the record does not take its rows in the module's setup: {message}"
                )),
                other => other,
            })?;
        }
        let writes: Vec<KvWrite<'_>> =
            snapshot.kv.iter().map(|(key, value)| KvWrite { key, value: Some(value), new: false }).collect();
        ns.kv_write(&writes)?;
        Ok(())
    })();
    match loaded {
        Ok(()) => caps.commit(Cursor::START, at),
        Err(e) => {
            let _ = caps.rollback();
            Err(e)
        }
    }
}

/// A reactor's emits are checked as the server checks them (and go nowhere).
fn reactor(caps: &mut Capabilities, module: &Module, limits: &Limits) {
    if let Some(emits) = &module.emits {
        let (name, version) = (&module.manifest.name, &module.manifest.version);
        caps.set_emitter(crate::host::emitter::Emitter::new(name, version, emits, limits.emit));
    }
}

fn load(loader: &Loader, path: &Path, bytes: Option<&[u8]>) -> anyhow::Result<std::sync::Arc<Module>> {
    let loaded = match bytes {
        Some(bytes) => loader.load_bytes(path, bytes),
        None => loader.load(path),
    };
    match loaded.map_err(|e| anyhow::anyhow!("{e}"))? {
        Loaded::Projection(module) => Ok(module),
        _ => bail!("{}: not a projection: reel replay runs projections", path.display()),
    }
}

fn instantiate(module: &std::sync::Arc<Module>, caps: Capabilities, limits: &Limits) -> anyhow::Result<Box<dyn Guest>> {
    Program::Wasm(std::sync::Arc::clone(module))
        .instantiate(caps, limits)
        .map_err(|unstarted| anyhow::anyhow!("the module does not start: {}", unstarted.0))
}

/// A temporary folder, removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> anyhow::Result<TempDir> {
    let mut bytes = [0u8; 6];
    let _ = getrandom::fill(&mut bytes);
    let suffix: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let path = std::env::temp_dir().join(format!("reel-replay-{suffix}"));
    std::fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
    Ok(TempDir(path))
}
