//! What a guest got from its host calls during one call, kept for a replay
//! (ADR 49): recorded when the worker re-runs a poison event, played back
//! when `reel replay` runs the module again with no database. Only the
//! answers the guest saw are kept (a KV read served by the cache is recorded
//! like one served by the database); writes are not answers and are not
//! kept, but their refusals are the guest's own doing and happen again.

use guest_sdk::Level;
use reel_model::{Rows, SqlError, Value};

/// One host call that answered the guest, or a log line it wrote.
#[derive(Debug, Clone, PartialEq)]
pub enum HostCall {
    /// `kv.get`.
    KvGet {
        /// The key asked for.
        key: String,
        /// What it got.
        value: Option<Vec<u8>>,
    },
    /// `kv.scan`.
    KvScan {
        /// The prefix asked for.
        prefix: String,
        /// The key it asked to start after.
        after: Option<String>,
        /// Most entries it asked for.
        limit: u32,
        /// What it got.
        entries: Vec<(String, Vec<u8>)>,
    },
    /// `sql.query`.
    SqlQuery {
        /// The statement.
        statement: String,
        /// Its parameters.
        params: Vec<Value>,
        /// What it got: rows, or the database's error.
        result: Result<Rows, SqlError>,
    },
    /// `log.log`, as the host's log took it (cut to its longest line).
    Log {
        /// Its level.
        level: Level,
        /// Its text.
        message: String,
    },
}

impl HostCall {
    /// The call as a person reads it: `kv.get("seen/1")`.
    pub fn describe(&self) -> String {
        match self {
            HostCall::KvGet { key, .. } => format!("kv.get({key:?})"),
            HostCall::KvScan { prefix, after, limit, .. } => format!("kv.scan({prefix:?}, {after:?}, {limit})"),
            HostCall::SqlQuery { statement, params, .. } => format!("sql.query({statement:?}, {params:?})"),
            HostCall::Log { message, .. } => format!("log({message:?})"),
        }
    }
}

/// Host calls being recorded, or played back.
#[derive(Debug, Default)]
pub struct Tape {
    /// The calls recorded, or to answer from.
    calls: Vec<HostCall>,
    /// Playing back: the index of the next call to answer (`None`: recording).
    next: Option<usize>,
    /// Log lines written while playing back.
    logs: Vec<(Level, String)>,
}

impl Tape {
    /// A tape that records.
    pub fn recording() -> Self {
        Self::default()
    }

    /// A tape that answers from `calls`, in order.
    pub fn playing(calls: Vec<HostCall>) -> Self {
        Self { calls, next: Some(0), logs: Vec::new() }
    }

    /// Whether it answers (rather than records).
    pub fn is_playing(&self) -> bool {
        self.next.is_some()
    }

    /// What was recorded.
    pub fn into_calls(self) -> Vec<HostCall> {
        self.calls
    }

    /// The log lines written while playing back.
    pub fn played_logs(&self) -> &[(Level, String)] {
        &self.logs
    }

    /// Keep `call` (recording).
    pub(super) fn record(&mut self, call: HostCall) {
        if self.next.is_none() {
            self.calls.push(call);
        }
    }

    /// A log line: recorded, or kept as written during the replay.
    pub(super) fn log(&mut self, level: Level, message: &str) {
        match self.next {
            None => self.calls.push(HostCall::Log { level, message: message.to_owned() }),
            Some(_) => self.logs.push((level, message.to_owned())),
        }
    }

    /// The recorded answer to the call `asked` describes, if the next
    /// recorded answer (log lines aside) is to that same call; else why not.
    pub(super) fn answer(&mut self, asked: &HostCall) -> Result<HostCall, String> {
        let next = self.next.as_mut().expect("answers come from a playing tape");
        while let Some(HostCall::Log { .. }) = self.calls.get(*next) {
            *next += 1;
        }
        let Some(recorded) = self.calls.get(*next) else {
            return Err(format!(
                "replay: the module called {} after every recorded host call was answered \
                 (it is not the recorded module, or not deterministic)",
                asked.describe()
            ));
        };
        if !same_call(recorded, asked) {
            return Err(format!(
                "replay: the module called {} where the record has {} \
                 (it is not the recorded module, or not deterministic)",
                asked.describe(),
                recorded.describe()
            ));
        }
        *next += 1;
        Ok(recorded.clone())
    }
}

/// Whether `a` and `b` ask the same thing (their answers aside).
fn same_call(a: &HostCall, b: &HostCall) -> bool {
    match (a, b) {
        (HostCall::KvGet { key: x, .. }, HostCall::KvGet { key: y, .. }) => x == y,
        (
            HostCall::KvScan { prefix: p, after: a, limit: l, .. },
            HostCall::KvScan { prefix: q, after: b, limit: m, .. },
        ) => p == q && a == b && l == m,
        (HostCall::SqlQuery { statement: s, params: p, .. }, HostCall::SqlQuery { statement: t, params: q, .. }) => {
            s == t && p == q
        }
        _ => false,
    }
}
