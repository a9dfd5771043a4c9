//! What reel's own tests and benchmarks reach inside the library, and only
//! they: the layers below the server, for tests that drive a namespace, a
//! guest or an event log on their own, and the workload and client they
//! drive a server with. Not an API (hidden from the docs): it changes with
//! the code. A test that needs more adds it here, not a `pub mod` in lib.rs.

pub use crate::api::{OPENAPI, app};
pub use crate::cli::workload;
pub use crate::client::Client;
pub use crate::host::caps::Fault;
pub use crate::host::instance::{Code, WasmGuest};
pub use crate::host::{Access, Capabilities, Engine, Guest};
pub use crate::postgres::{PgSource, PgStore};
pub use crate::source::{EventReader, Filter, LIVE_BUFFER, LOG_READERS, Source};
pub use crate::sqlite::{SqliteStore, wal};
pub use crate::store::{
    BoundsFor, Checksum, DumpSink, Dumps, NamespaceId, ReadModelSum, SqlBounds, Store, StoreError, TableRead,
};
pub use crate::worker::{State, calls};
