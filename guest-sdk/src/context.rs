use serde::{Serialize, de::DeserializeOwned};

use crate::{Emitted, Error, Result, Rows, SqlError, Timer, Value};

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Very detailed.
    Trace,
    /// Detailed.
    Debug,
    /// Normal.
    Info,
    /// Something looks wrong.
    Warn,
    /// Something failed.
    Error,
}

/// The capabilities a projection runs against: reel's `kv`, `sql` and `log`.
///
/// In a component these are the world's imports; natively, reel implements this
/// trait over the same store code, and [`native::MemoryHost`](crate::native::MemoryHost)
/// is an in-memory version for unit tests.
pub trait Host {
    /// `kv.get`.
    fn kv_get(&mut self, key: &str) -> Option<Vec<u8>>;
    /// `kv.set`.
    fn kv_set(&mut self, key: &str, value: Vec<u8>);
    /// `kv.delete`.
    fn kv_delete(&mut self, key: &str);
    /// `kv.scan`.
    fn kv_scan(&mut self, prefix: &str, after: Option<&str>, limit: u32) -> Vec<(String, Vec<u8>)>;
    /// `sql.execute`.
    fn sql_execute(&mut self, statement: &str, params: Vec<Value>);
    /// `sql.query`.
    fn sql_query(&mut self, statement: &str, params: Vec<Value>) -> Result<Rows, SqlError>;
    /// `sql.dialect`.
    fn sql_dialect(&mut self) -> String;
    /// `log.log`.
    fn log(&mut self, level: Level, message: &str);
    /// `emit.emit` (reactors only: a projection's host has no `emit`, and
    /// calling it fails the batch).
    fn emit(&mut self, event: Emitted) {
        let _ = event;
        panic!("emit is only available to a reactor: export it with reel_guest_sdk::export_reactor!");
    }
    /// `timers.schedule` (reactors only).
    fn schedule(&mut self, timer: Timer) {
        let _ = timer;
        panic!("timers are only available to a reactor: export it with reel_guest_sdk::export_reactor!");
    }
    /// `timers.cancel` (reactors only).
    fn cancel_timer(&mut self, key: &str) {
        let _ = key;
        panic!("timers are only available to a reactor: export it with reel_guest_sdk::export_reactor!");
    }
}

/// What a projection's code gets: the key-value store, SQL and the log, all
/// inside the batch transaction.
pub struct Context<'h> {
    host: &'h mut dyn Host,
}

impl<'h> Context<'h> {
    /// A context over `host`.
    pub fn new(host: &'h mut dyn Host) -> Self {
        Self { host }
    }

    /// The projection's key-value store.
    pub fn kv(&mut self) -> Kv<'_> {
        Kv { host: &mut *self.host }
    }

    /// SQL in the projection's namespace.
    pub fn sql(&mut self) -> Sql<'_> {
        Sql { host: &mut *self.host }
    }

    /// Write a line to reel's log.
    pub fn log(&mut self, level: Level, message: &str) {
        self.host.log(level, message);
    }

    /// Emit an event of `event_type` with `data` (as JSON) to `stream_id`,
    /// caused by the event at position `cause` of the batch being handled.
    /// reel appends it when the batch commits, exactly once. Reactors only
    /// ([`Reactor`](crate::Reactor)); the stream must be under the declared
    /// prefix.
    pub fn emit<T: Serialize + ?Sized>(
        &mut self,
        cause: i64,
        stream_id: &str,
        event_type: &str,
        data: &T,
    ) -> Result<()> {
        let data = serde_json::to_string(data)?;
        self.host.emit(Emitted::new(cause, stream_id, event_type, data));
        Ok(())
    }

    /// Emit `event` as it is (with metadata of its own). See [`Context::emit`].
    pub fn emit_event(&mut self, event: Emitted) {
        self.host.emit(event);
    }

    /// Ask reel to append `event` when the wall clock passes `due` (RFC 3339),
    /// recorded when the batch commits; scheduling `key` again replaces the
    /// pending timer. Reactors only.
    pub fn schedule(&mut self, key: &str, due: &str, event: Emitted) {
        self.host.schedule(Timer { key: key.to_owned(), due: due.to_owned(), event });
    }

    /// Cancel the pending timer `key` (no-op if none). Reactors only.
    pub fn cancel_timer(&mut self, key: &str) {
        self.host.cancel_timer(key);
    }
}

/// The key-value store: see [`Context::kv`].
pub struct Kv<'c> {
    host: &'c mut dyn Host,
}

impl Kv<'_> {
    /// The bytes stored under `key`.
    pub fn get(&mut self, key: &str) -> Option<Vec<u8>> {
        self.host.kv_get(key)
    }

    /// The JSON value stored under `key`, decoded.
    pub fn get_json<T: DeserializeOwned>(&mut self, key: &str) -> Result<Option<T>> {
        match self.host.kv_get(key) {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::Failed(format!("kv value of `{key}` is not the expected JSON: {e}"))),
        }
    }

    /// Store bytes under `key`.
    pub fn set(&mut self, key: &str, value: impl Into<Vec<u8>>) {
        self.host.kv_set(key, value.into());
    }

    /// Store `value` as JSON under `key`.
    pub fn set_json<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value)?;
        self.host.kv_set(key, bytes);
        Ok(())
    }

    /// Remove `key`.
    pub fn delete(&mut self, key: &str) {
        self.host.kv_delete(key);
    }

    /// Up to `limit` entries whose key starts with `prefix`, in key order,
    /// strictly after `after`.
    pub fn scan(&mut self, prefix: &str, after: Option<&str>, limit: u32) -> Vec<(String, Vec<u8>)> {
        self.host.kv_scan(prefix, after, limit)
    }
}

/// SQL: see [`Context::sql`].
pub struct Sql<'c> {
    host: &'c mut dyn Host,
}

impl Sql<'_> {
    /// Run a statement whose rows are not needed; errors surface at the next
    /// query or at the end of the batch, and fail the batch.
    pub fn execute(&mut self, statement: &str, params: Vec<Value>) {
        self.host.sql_execute(statement, params);
    }

    /// Run a query and return its rows.
    pub fn query(&mut self, statement: &str, params: Vec<Value>) -> Result<Rows> {
        self.host.sql_query(statement, params).map_err(Error::from)
    }

    /// The database the statements run on: `"sqlite"` or `"postgres"`
    /// (`"none"` on [`MemoryHost`](crate::native::MemoryHost), which has no SQL).
    pub fn dialect(&mut self) -> String {
        self.host.sql_dialect()
    }
}
