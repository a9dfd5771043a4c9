//! What the write side keeps beside the log, in the events database: the
//! answers of commands sent with an idempotency key (ADR 25), kept in the
//! transaction of the append they answer, and snapshots of deciders' states
//! (ADR 26).

use super::{AppendRequest, Appended, LogFuture};

/// How a command was answered, as kept under its idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Events were appended: `count` of them after `version`.
    Appended,
    /// Accepted with nothing to append, the stream at `version`.
    Nothing,
    /// The decider refused the command (`reason`).
    Rejected,
    /// The decider could not read the command (`reason`).
    InvalidCommand,
}

impl Outcome {
    /// The name kept in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Appended => "appended",
            Self::Nothing => "nothing",
            Self::Rejected => "rejected",
            Self::InvalidCommand => "invalid_command",
        }
    }

    /// The outcome a kept name stands for.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Appended, Self::Nothing, Self::Rejected, Self::InvalidCommand].into_iter().find(|o| o.as_str() == text)
    }
}

/// A command's answer as kept under its key: enough to give the same answer
/// again (the events appended are read back from the log, which never
/// changes them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptAnswer {
    /// Digest of what was asked (decider, stream, command): the same key
    /// with another request is refused, not answered.
    pub fingerprint: String,
    /// How it was answered.
    pub outcome: Outcome,
    /// The stream.
    pub stream_id: String,
    /// The stream's version before the append (or, with nothing appended or
    /// refused, when decided).
    pub version: i64,
    /// Events appended.
    pub count: i64,
    /// The refusal's reason (empty unless refused).
    pub reason: String,
}

/// An answer to keep under `key`.
#[derive(Debug, Clone)]
pub struct Keyed {
    /// The client's `Idempotency-Key`.
    pub key: String,
    /// When the answer was given (Unix µs).
    pub created_micros: i64,
    /// Answers kept before this (Unix µs) are expired: the key is free again.
    pub expired_before: i64,
    /// The answer.
    pub answer: KeptAnswer,
}

/// A decider's state of a stream, kept in the database (ADR 26).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The decider.
    pub decider: String,
    /// Its code: version and file digest. Another code's state is not used.
    pub code: String,
    /// The stream.
    pub stream_id: String,
    /// The stream's version the state includes.
    pub version: i64,
    /// The state (JSON text).
    pub state: String,
}

/// The answers kept under idempotency keys (ADR 25) and the snapshots of
/// deciders' states (ADR 26), in the events database so that every reel
/// process on it sees them.
pub trait CommandStore: Send + Sync {
    /// The answer kept under `key`, unless it expired (kept before
    /// `expired_before`, Unix µs).
    fn answer(&self, key: &str, expired_before: i64) -> LogFuture<'_, Option<KeptAnswer>>;
    /// Append `request` and keep `keyed` in the same transaction, its
    /// `version` set to the stream's version before the append (a `POST
    /// /events` without an expected version learns it only there). `None`: a
    /// live answer is kept under the key already, and nothing was appended.
    fn append_keyed(&self, request: AppendRequest, keyed: Keyed) -> LogFuture<'_, Option<Appended>>;
    /// Keep `keyed`, an answer that appended nothing; `false` when a live
    /// answer is kept under the key already (and stays).
    fn keep_answer(&self, keyed: Keyed) -> LogFuture<'_, bool>;
    /// Forget answers kept before `expired_before` (Unix µs); how many.
    fn purge_answers(&self, expired_before: i64) -> LogFuture<'_, u64>;
    /// The snapshot of `stream` by decider `decider` running `code`, if any.
    fn snapshot(&self, decider: &str, code: &str, stream: &str) -> LogFuture<'_, Option<Snapshot>>;
    /// Keep `snapshot`, unless one of a later version by the same code is
    /// kept (a state made by other code is replaced).
    fn save_snapshot(&self, snapshot: Snapshot) -> LogFuture<'_, ()>;
}
