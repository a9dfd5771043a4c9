//! Checkpoints of a SQLite namespace's write-ahead log, off the writer's
//! thread.
//!
//! SQLite's automatic checkpoint runs inside the `COMMIT` that crosses its
//! threshold: it copies the WAL into the database file and syncs it, which
//! takes tens of milliseconds on a busy file. Inside a commit that is a stall
//! of the projection, and under live traffic it showed as the p99 of
//! commit-to-readable latency. Instead, the writer's connection only notes
//! how big the WAL is after each commit ([`note_wal_pages`]), and past
//! [`BACKGROUND_PAGES`] asks a [`Checkpointer`] thread with a connection of
//! its own to run a `PASSIVE` checkpoint, which proceeds alongside the writer.
//! If the WAL still grows past [`FOREGROUND_PAGES`] (the checkpointer cannot
//! finish because the writer never pauses or readers hold old snapshots),
//! the writer checkpoints itself so the file stays bounded.

use std::cell::Cell;
use std::ffi::c_int;
use std::path::Path;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

/// WAL size, in pages, from which a background checkpoint is requested
/// (16 MiB with reel's 16 KiB pages).
pub const BACKGROUND_PAGES: i32 = 1_000;

/// The least WAL size, in pages, from which a background checkpoint is
/// requested (1 MiB).
pub const MIN_BACKGROUND_PAGES: i32 = 64;

/// Bytes of WAL a file keeps once a checkpoint has copied it all: SQLite
/// truncates the WAL to this when it starts over (`journal_size_limit`), so
/// a burst does not leave a big file behind (ADR 42).
pub const WAL_KEPT_BYTES: i64 = 4 << 20;

/// The WAL size, in pages, from which a background checkpoint is requested
/// for a database file of `file_bytes`: a quarter of the file, between
/// [`MIN_BACKGROUND_PAGES`] and [`BACKGROUND_PAGES`], so a small read model
/// does not need several times its size of disk for its WAL (ADR 42).
pub fn background_pages(file_bytes: u64) -> i32 {
    let quarter = file_bytes / 4 / 16_384;
    i32::try_from(quarter).unwrap_or(i32::MAX).clamp(MIN_BACKGROUND_PAGES, BACKGROUND_PAGES)
}

/// WAL size, in pages, from which the writer checkpoints in its own commit
/// (250 MiB). The background checkpoint copies frames up to the commit it
/// started after; the WAL starts over from its beginning only once every
/// frame is copied when a write begins, which a writer committing back to
/// back may not leave time for. The checkpoint here then finishes what the
/// thread has mostly done. (Set lower, these stalls slowed a rebuild a
/// lot: ADR 09.)
pub const FOREGROUND_PAGES: i32 = 16_000;

/// How long the writer waits for a background checkpoint that holds the
/// checkpoint lock before it gives up on its own (and says so).
const FOREGROUND_WAIT: Duration = Duration::from_secs(10);

/// Checkpoint on the writer's connection, once the WAL is past
/// [`FOREGROUND_PAGES`]. A checkpoint already running on the checkpointer's
/// connection holds the lock, and SQLite then answers "busy" at once
/// without waiting: the writer waits for it here and checkpoints what is
/// left, so the WAL stays bounded however fast the writer commits.
pub fn checkpoint_here(conn: &Connection, path: &Path) {
    let deadline = Instant::now() + FOREGROUND_WAIT;
    loop {
        match passive_checkpoint(conn) {
            Ok((0, _, _)) => return,
            Ok((_, log, done)) if Instant::now() >= deadline => {
                tracing::warn!(
                    "the WAL of {} holds {log} pages ({done} copied): a checkpoint by another connection \
                     did not finish within {FOREGROUND_WAIT:?}",
                    path.display()
                );
                return;
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => {
                tracing::warn!("checkpoint of {} failed: {e}", path.display());
                return;
            }
        }
    }
}

/// A `PASSIVE` checkpoint: (busy, pages in the WAL, pages copied). Busy is 1
/// when another connection's checkpoint holds the lock.
fn passive_checkpoint(conn: &Connection) -> rusqlite::Result<(i64, i64, i64)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
}

thread_local! {
    /// Pages in the WAL after the last commit on this thread. A writer
    /// connection commits on the thread that reads this right after.
    static WAL_PAGES: Cell<i32> = const { Cell::new(0) };
}

/// The WAL hook of a writer connection (it replaces the automatic
/// checkpoint): remember the WAL's size.
pub fn note_wal_pages(_: &rusqlite::hooks::Wal, pages: c_int) -> rusqlite::Result<()> {
    WAL_PAGES.with(|p| p.set(pages));
    Ok(())
}

/// Pages in the WAL after this thread's last commit (and forget it).
pub fn take_wal_pages() -> i32 {
    WAL_PAGES.with(|p| p.replace(0))
}

/// A thread that checkpoints one database file when asked. Dropping it
/// waits for the thread, so its connection is closed before the writer's
/// (the last connection to close may delete the WAL file by name).
pub struct Checkpointer {
    wake: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Open a second connection to `path` and start the thread.
    pub fn start(path: &Path) -> Result<Self, String> {
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .and_then(|conn| conn.busy_timeout(Duration::from_secs(5)).map(|()| conn))
                .map_err(|e| e.to_string())?;
        let (wake, requests) = sync_channel::<()>(1);
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let thread = std::thread::Builder::new()
            .name("reel-checkpoint".into())
            .spawn(move || {
                while requests.recv().is_ok() {
                    match passive_checkpoint(&conn) {
                        Ok((busy, log, done)) => {
                            tracing::trace!(file = %name, busy, log, done, "checkpoint");
                        }
                        Err(e) => tracing::debug!(file = %name, "checkpoint failed: {e}"),
                    }
                }
            })
            .map_err(|e| format!("cannot start a checkpoint thread: {e}"))?;
        Ok(Self { wake: Some(wake), thread: Some(thread) })
    }

    /// Ask for a checkpoint (no-op when one is already pending).
    pub fn request(&self) {
        if let Some(wake) = &self.wake {
            match wake.try_send(()) {
                Ok(()) | Err(TrySendError::Full(())) => {}
                Err(TrySendError::Disconnected(())) => tracing::debug!("checkpoint thread is gone"),
            }
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.wake.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
