//! What a guest got from its host calls during one call, kept for a replay
//! (ADR 49): recorded when the worker re-runs a poison event, played back
//! when `reel replay` runs the module again with no database. Only the
//! answers the guest saw are kept (a KV read served by the cache is recorded
//! like one served by the database); writes are not answers and are not
//! kept, but their refusals are the guest's own doing and happen again.
//! A recording keeps at most [`TAPE_BYTES`]: a guest that loops on host
//! calls until its deadline makes millions of them, and the calls past the
//! bound are counted, not kept (the tape is then cut).

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

/// Most bytes of host calls a recording keeps (ADR 49), counted as
/// [`HostCall::weight`]: past them the tape is cut.
pub const TAPE_BYTES: usize = 16 << 20;

impl HostCall {
    /// What keeping the call costs, roughly: its texts, bytes and values,
    /// and a fixed share for the call itself.
    pub fn weight(&self) -> usize {
        const CALL: usize = 64;
        const VALUE: usize = 32;
        let value = |v: &Value| {
            VALUE
                + match v {
                    Value::Text(s) => s.len(),
                    Value::Blob(b) => b.len(),
                    _ => 0,
                }
        };
        CALL + match self {
            HostCall::KvGet { key, value } => key.len() + value.as_ref().map_or(0, Vec::len),
            HostCall::KvScan { prefix, after, entries, .. } => {
                prefix.len()
                    + after.as_ref().map_or(0, String::len)
                    + entries.iter().map(|(k, v)| VALUE + k.len() + v.len()).sum::<usize>()
            }
            HostCall::SqlQuery { statement, params, result } => {
                statement.len()
                    + params.iter().map(value).sum::<usize>()
                    + match result {
                        Ok(rows) => {
                            rows.columns.iter().map(|c| VALUE + c.len()).sum::<usize>()
                                + rows.rows.iter().flatten().map(value).sum::<usize>()
                        }
                        Err(e) => e.code.len() + e.message.len(),
                    }
            }
            HostCall::Log { message, .. } => message.len(),
        }
    }

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
#[derive(Debug)]
pub struct Tape {
    /// The calls recorded, or to answer from.
    calls: Vec<HostCall>,
    /// Playing back: the index of the next call to answer (`None`: recording).
    next: Option<usize>,
    /// Log lines written while playing back.
    logs: Vec<(Level, String)>,
    /// Recording: what the calls kept weigh, and the most they may.
    bytes: usize,
    limit: usize,
    /// Calls and log lines made past the cut: not kept (recording), or not
    /// in the record (playing back).
    dropped: u64,
    /// Playing back: the module asked for a call past a cut tape's end.
    ran_past_cut: bool,
}

impl Default for Tape {
    fn default() -> Self {
        Self::recording()
    }
}

/// What a recording kept.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Recorded {
    /// The calls and log lines, in order, up to the cut.
    pub calls: Vec<HostCall>,
    /// How many more there were past the cut (0: none, the tape is whole).
    pub dropped: u64,
}

impl Tape {
    /// A tape that records up to [`TAPE_BYTES`].
    pub fn recording() -> Self {
        Self::recording_up_to(TAPE_BYTES)
    }

    /// A tape that records up to `limit` bytes of calls.
    pub fn recording_up_to(limit: usize) -> Self {
        Self { calls: Vec::new(), next: None, logs: Vec::new(), bytes: 0, limit, dropped: 0, ran_past_cut: false }
    }

    /// A tape that answers from `recorded`, in order.
    pub fn playing(recorded: Recorded) -> Self {
        let Recorded { calls, dropped } = recorded;
        Self { calls, next: Some(0), logs: Vec::new(), bytes: 0, limit: 0, dropped, ran_past_cut: false }
    }

    /// Whether it answers (rather than records).
    pub fn is_playing(&self) -> bool {
        self.next.is_some()
    }

    /// What was recorded.
    pub fn into_recorded(self) -> Recorded {
        Recorded { calls: self.calls, dropped: self.dropped }
    }

    /// Whether the module, played back, asked for more than a cut tape has:
    /// what it did after is not known, nor whether it would have matched.
    pub fn ran_past_cut(&self) -> bool {
        self.ran_past_cut
    }

    /// The log lines written while playing back.
    pub fn played_logs(&self) -> &[(Level, String)] {
        &self.logs
    }

    /// Keep the call `call` makes (recording), unless the tape is cut: past
    /// its bound, calls are counted and not made, nor kept after it (a later
    /// small one would leave a gap).
    pub(super) fn record(&mut self, call: impl FnOnce() -> HostCall) {
        if self.next.is_some() {
            return;
        }
        if self.dropped == 0 {
            let call = call();
            let weight = call.weight();
            if self.bytes + weight <= self.limit {
                self.bytes += weight;
                self.calls.push(call);
                return;
            }
        }
        self.dropped += 1;
    }

    /// A log line: recorded, or kept as written during the replay.
    pub(super) fn log(&mut self, level: Level, message: &str) {
        match self.next {
            None => self.record(|| HostCall::Log { level, message: message.to_owned() }),
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
            if self.dropped > 0 {
                self.ran_past_cut = true;
                return Err(format!(
                    "replay: the module called {} after the {} host calls and log lines the record kept; \
                     the record was cut there ({} more were made when it was recorded)",
                    asked.describe(),
                    self.calls.len(),
                    self.dropped
                ));
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn get(key: &str) -> HostCall {
        HostCall::KvGet { key: key.into(), value: Some(vec![1; 36]) }
    }

    #[test]
    fn a_recording_past_its_bound_is_cut_and_counts_the_rest() {
        // Each get weighs 64 + 1 + 36 = 101 bytes: three fit in 303.
        let mut tape = Tape::recording_up_to(303);
        for key in ["a", "b", "c"] {
            tape.record(|| get(key));
        }
        tape.record(|| get("d"));
        // Past the cut a later, smaller call is not kept either (no gap),
        // nor made.
        tape.log(Level::Info, "");
        tape.record(|| unreachable!("a call past the cut is not made"));
        let recorded = tape.into_recorded();
        assert_eq!(recorded.calls, vec![get("a"), get("b"), get("c")]);
        assert_eq!(recorded.dropped, 3);

        // Played back, the module's fourth call has no answer, and the
        // replay says it is the cut, not the module.
        let mut tape = Tape::playing(recorded);
        for key in ["a", "b", "c"] {
            assert_eq!(tape.answer(&get(key)), Ok(get(key)));
        }
        assert!(!tape.ran_past_cut());
        let why = tape.answer(&get("d")).unwrap_err();
        assert!(tape.ran_past_cut());
        assert_eq!(
            why,
            "replay: the module called kv.get(\"d\") after the 3 host calls and log lines the record kept; \
             the record was cut there (3 more were made when it was recorded)"
        );
    }

    #[test]
    fn a_whole_tape_run_past_its_end_is_the_module_s_doing() {
        let mut tape = Tape::recording_up_to(TAPE_BYTES);
        tape.record(|| get("a"));
        let mut tape = Tape::playing(tape.into_recorded());
        assert_eq!(tape.answer(&get("a")), Ok(get("a")));
        let why = tape.answer(&get("b")).unwrap_err();
        assert!(!tape.ran_past_cut());
        assert!(why.contains("after every recorded host call was answered"), "{why}");
    }
}
