//! The disk under the data folder: when SQLite cannot write, a small file
//! written in the folder says whether the disk is full or the folder is
//! read-only, which tells an outage of the host apart from a module's own
//! doing (its storage quota, ADR 20) and names it (ADR 42).

use std::io::{ErrorKind, Write};
use std::path::Path;

/// Bytes the probe writes: a disk with less free space than this counts as
/// full (a commit needs at least a few pages of WAL).
const PROBE_BYTES: usize = 1 << 20;

/// Why nothing can be written in `folder`, if that is so.
pub(super) fn unwritable(folder: &Path) -> Option<String> {
    let probe = folder.join(".reel-disk-probe");
    let written = std::fs::File::create(&probe).and_then(|mut file| {
        file.write_all(&vec![0u8; PROBE_BYTES])?;
        file.sync_all()
    });
    let _ = std::fs::remove_file(&probe);
    let folder = folder.display();
    match written {
        Ok(()) => None,
        Err(e) if e.kind() == ErrorKind::StorageFull => {
            Some(format!("the disk holding the data folder {folder} is full"))
        }
        Err(e) if e.kind() == ErrorKind::ReadOnlyFilesystem => {
            Some(format!("the data folder {folder} is on a read-only file system"))
        }
        Err(e) => Some(format!("the data folder {folder} cannot be written: {e}")),
    }
}

/// Whether an error message of SQLite's says it could not write: the disk
/// (or the quota, `max_page_count`) full, a read-only file, an I/O error.
pub(super) fn cannot_write(message: &str) -> bool {
    ["database or disk is full", "readonly database", "disk I/O error", "unable to open database file"]
        .iter()
        .any(|m| message.contains(m))
}
