//! A poison event recorded for a replay (ADR 49): once the worker has
//! narrowed a failure down to one event and before it stops at it or sets it
//! aside, it runs that event once more on a recording host, in a transaction
//! it rolls back, and keeps the record in the data folder. The normal path
//! records nothing.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use reel_model::time::{format_micros, now_micros};
use reel_model::{Cursor, Event};

use super::record::{self, FailedIn, Record, RecordedLimits, RecordedModule, SNAPSHOT_BYTES, SnapshotSink};
use super::{Worker, open_caps};
use crate::host::GuestFailure;
use crate::host::tape::{Recorded, TAPE_BYTES, Tape};

/// Records kept per projection; the oldest go first.
const RECORDS_KEPT: usize = 64;

impl Worker {
    /// Record `event` (which failed with `failure`; `end` is the cursor
    /// after it) for a replay, saying where the record went.
    pub(super) fn record(&mut self, event: &Event, end: Cursor, failure: &GuestFailure) {
        let position = event.position;
        match self.recorded(event, end, failure) {
            Ok((path, 0)) => tracing::info!(
                projection = %self.ns, position,
                "recorded event {position} for a replay: {} (export: GET /projections/{}/replays/{position})",
                path.display(), self.ns.name
            ),
            Ok((path, dropped)) => tracing::info!(
                projection = %self.ns, position,
                "recorded event {position} for a replay, its host calls cut at {TAPE_BYTES} bytes ({dropped} more \
                 not kept): {} (export: GET /projections/{}/replays/{position})",
                path.display(), self.ns.name
            ),
            Err(e) => {
                tracing::warn!(projection = %self.ns, position, "event {position} not recorded for a replay: {e}")
            }
        }
    }

    /// The record's path, and how many host calls it could not keep.
    fn recorded(&mut self, event: &Event, end: Cursor, failure: &GuestFailure) -> Result<(PathBuf, u64), String> {
        let Some(module) = self.program.module().cloned() else {
            return Err("a projection compiled into reel has no module to replay".into());
        };
        let bytes = std::fs::read(&module.path).ok().filter(|b| hex(&Sha256::digest(b)) == module.hash);
        // The read model as the event found it: what is committed now (every
        // event before it is).
        let mut sink = SnapshotSink::new(SNAPSHOT_BYTES);
        let Some(caps) = open_caps(&mut self.guest, &mut self.spare) else {
            return Err("the namespace is not open".into());
        };
        let dialect = caps.sql_dialect().to_owned();
        let (snapshot, snapshot_missing) = match caps.namespace().dump(&mut sink) {
            Ok(()) => match sink.finish() {
                Some(snapshot) => (Some(snapshot), None),
                None => (None, Some(format!("the read model is over {SNAPSHOT_BYTES} bytes"))),
            },
            Err(e) => (None, Some(format!("reading the read model: {e}"))),
        };
        let (recorded, error, failed_in) = self.rerun(event, end).map_err(|e| format!("running it again: {e}"))?;
        let (error, failed_in) = match (error, failed_in) {
            (Some(error), failed_in) => (error, failed_in),
            (None, _) => (failure.to_string(), FailedIn::Nowhere),
        };
        let record = Record {
            projection: self.ns.name.clone(),
            version: self.ns.version.clone(),
            dialect,
            recorded_at: format_micros(now_micros()),
            event: event.clone(),
            module: RecordedModule {
                hash: module.hash.clone(),
                file: module.path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
                bytes,
            },
            calls: recorded.calls,
            calls_dropped: recorded.dropped,
            error,
            failed_in,
            limits: RecordedLimits::of(&self.ctx.limits),
            snapshot,
            snapshot_missing,
        };
        let path = record::path(&self.ctx.data_dir, &self.ns.name, event.position);
        save(&path, &record.to_json()).map_err(|e| format!("writing {}: {e}", path.display()))?;
        Ok((path, record.calls_dropped))
    }

    /// Run `event` alone on a recording host and roll back: the host calls,
    /// the error (`None`: it passed) and where it came.
    fn rerun(&mut self, event: &Event, end: Cursor) -> Result<(Recorded, Option<String>, FailedIn), GuestFailure> {
        // On a fresh instance, as a replay runs it.
        if let Some(guest) = self.guest.take() {
            self.spare = Some(guest.into_caps());
        }
        let guest = self.guest()?;
        guest.caps().begin()?;
        guest.caps().set_tape(Some(Tape::recording()));
        guest.caps().begin_batch(std::slice::from_ref(event), &[end]);
        let handled = guest.handle(std::slice::from_ref(event));
        let outcome = match handled {
            Err(e) => Err((e, FailedIn::Handle)),
            Ok(()) => guest.caps().flush().map_err(|e| (GuestFailure::Store(e), FailedIn::Commit)),
        };
        let recorded = guest.caps().take_tape().map(Tape::into_recorded).unwrap_or_default();
        let (error, failed_in, failure) = match outcome {
            Ok(()) => (None, FailedIn::Nowhere, GuestFailure::Refused("recorded".into())),
            Err((e, failed_in)) => (Some(e.to_string()), failed_in, e),
        };
        self.discard(&failure);
        Ok((recorded, error, failed_in))
    }
}

/// Write `text` to `path` whole (a temporary file renamed), and keep at most
/// [`RECORDS_KEPT`] records beside it.
fn save(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().expect("a record's path is in a folder");
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    let mut records: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| Some((p.metadata().and_then(|m| m.modified()).ok()?, p)))
        .collect();
    if records.len() > RECORDS_KEPT {
        records.sort();
        for (_, old) in &records[..records.len() - RECORDS_KEPT] {
            let _ = std::fs::remove_file(old);
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
