//! Run a [`Projection`] without WebAssembly, against any [`Host`].
//!
//! These are the functions the component export calls, so a projection
//! compiled natively runs exactly the logic its component runs.

use std::collections::BTreeMap;

use crate::{
    Context, Emits, Emitted, Error, EventFields, HandleError, Host, Level, Manifest, Projection, Reactor, Result, Rows,
    SqlError, Timer, Value,
};

/// `describe`: the projection's manifest.
pub fn describe<P: Projection>() -> Manifest {
    P::manifest()
}

/// `describe-emits`: the reactor's stream prefix.
pub fn describe_emits<R: Reactor>() -> Emits {
    R::emits()
}

/// `init`: create the read model's tables.
pub fn init<P: Projection>(host: &mut dyn Host) -> Result<()> {
    P::init(&mut Context::new(host))
}

/// `handle`: apply the batch ([`Projection::handle_batch`]).
pub fn handle<P: Projection, E: EventFields>(host: &mut dyn Host, events: &[E]) -> Result<(), HandleError> {
    P::handle_batch(&mut Context::new(host), events)
}

/// `query`: run a custom read; `args` is JSON text (empty means `null`).
pub fn query<P: Projection>(host: &mut dyn Host, name: &str, args: &str) -> Result<String> {
    let args = if args.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(args).map_err(|e| Error::Failed(format!("query arguments are not JSON: {e}")))?
    };
    let result = P::query(&mut Context::new(host), name, args)?;
    Ok(result.to_string())
}

/// An in-memory [`Host`] for unit tests of projection and reactor logic: a
/// sorted map for kv, a list for log lines, what a reactor emitted and the
/// timers it holds, and no SQL.
#[derive(Debug, Default)]
pub struct MemoryHost {
    /// The key-value store.
    pub kv: BTreeMap<String, Vec<u8>>,
    /// Lines logged by the projection.
    pub logs: Vec<(Level, String)>,
    /// Events emitted, in order.
    pub emitted: Vec<Emitted>,
    /// Pending timers by key.
    pub timers: BTreeMap<String, Timer>,
}

impl Host for MemoryHost {
    fn kv_get(&mut self, key: &str) -> Option<Vec<u8>> {
        self.kv.get(key).cloned()
    }

    fn kv_set(&mut self, key: &str, value: Vec<u8>) {
        self.kv.insert(key.to_owned(), value);
    }

    fn kv_delete(&mut self, key: &str) {
        self.kv.remove(key);
    }

    fn kv_scan(&mut self, prefix: &str, after: Option<&str>, limit: u32) -> Vec<(String, Vec<u8>)> {
        self.kv
            .range(after.unwrap_or(prefix).to_owned()..)
            .filter(|(k, _)| Some(k.as_str()) != after)
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit as usize)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn sql_execute(&mut self, _statement: &str, _params: Vec<Value>) {
        self.logs.push((Level::Error, "MemoryHost has no SQL".into()));
    }

    fn sql_query(&mut self, _statement: &str, _params: Vec<Value>) -> Result<Rows, SqlError> {
        Err(SqlError { code: "unsupported".into(), message: "MemoryHost has no SQL".into() })
    }

    fn sql_dialect(&mut self) -> String {
        "none".into()
    }

    fn log(&mut self, level: Level, message: &str) {
        self.logs.push((level, message.to_owned()));
    }

    fn emit(&mut self, event: Emitted) {
        self.emitted.push(event);
    }

    fn schedule(&mut self, timer: Timer) {
        self.timers.insert(timer.key.clone(), timer);
    }

    fn cancel_timer(&mut self, key: &str) {
        self.timers.remove(key);
    }
}
