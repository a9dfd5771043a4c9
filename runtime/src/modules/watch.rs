//! Watching the modules folder: a `.wasm` file created, replaced or removed
//! is reported once it has been quiet for the debounce time (a file still
//! being written keeps producing events, so it is not picked up half-done).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Keeps the OS watch alive.
pub struct FolderWatch {
    _watcher: notify::RecommendedWatcher,
}

/// Whether `path` names a module file.
pub fn is_module(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "wasm")
}

/// Whether an event can mean the file's bytes changed (or it came or went).
/// Opening, reading and closing a file unwritten are events too (inotify
/// reports them): reported as changes, every load of a module, which reads
/// it, made the next.
fn is_change(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Watch `dir`; each debounced change arrives on the returned channel as the
/// file's path (check whether it still exists to tell removal from change).
/// Must be called inside a tokio runtime.
pub fn watch(dir: &Path, debounce: Duration) -> notify::Result<(FolderWatch, mpsc::UnboundedReceiver<PathBuf>)> {
    let (raw_tx, raw_rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
        Ok(event) if is_change(&event.kind) => {
            for path in event.paths.into_iter().filter(|p| is_module(p)) {
                let _ = raw_tx.send(path);
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("watching the modules folder: {e}"),
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(debounce_changes(raw_rx, tx, debounce));
    Ok((FolderWatch { _watcher: watcher }, rx))
}

async fn debounce_changes(
    mut raw: mpsc::UnboundedReceiver<PathBuf>,
    out: mpsc::UnboundedSender<PathBuf>,
    quiet: Duration,
) {
    let mut last_event: HashMap<PathBuf, Instant> = HashMap::new();
    loop {
        let due = last_event.values().min().map(|t| *t + quiet);
        tokio::select! {
            path = raw.recv() => match path {
                Some(path) => {
                    last_event.insert(path, Instant::now());
                }
                None => return,
            },
            () = async { tokio::time::sleep_until(due.unwrap_or_else(Instant::now)).await }, if due.is_some() => {
                let now = Instant::now();
                let ready: Vec<PathBuf> =
                    last_event.iter().filter(|(_, t)| **t + quiet <= now).map(|(p, _)| p.clone()).collect();
                for path in ready {
                    last_event.remove(&path);
                    if out.send(path).is_err() {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn next(changes: &mut mpsc::UnboundedReceiver<PathBuf>, within: Duration) -> Option<PathBuf> {
        tokio::time::timeout(within, changes.recv()).await.ok().flatten()
    }

    #[tokio::test]
    async fn reading_a_module_file_is_not_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let (_watch, mut changes) = watch(dir.path(), Duration::from_millis(50)).unwrap();
        let file = dir.path().join("m.wasm");
        std::fs::write(&file, b"not a module").unwrap();
        assert_eq!(next(&mut changes, Duration::from_secs(10)).await, Some(file.clone()));
        // What loading it does: open, read, close. Reported as a change, it
        // was loaded again, and again, for as long as it stayed there.
        std::fs::read(&file).unwrap();
        let after_read = next(&mut changes, Duration::from_millis(500)).await;
        assert_eq!(after_read, None, "reading the file was reported as a change");
        std::fs::write(&file, b"still not a module").unwrap();
        assert_eq!(next(&mut changes, Duration::from_secs(10)).await, Some(file.clone()));
        std::fs::remove_file(&file).unwrap();
        assert_eq!(next(&mut changes, Duration::from_secs(10)).await, Some(file));
    }
}
