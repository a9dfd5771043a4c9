//! Idempotency keys (ADR 25): a command sent again with the key of one
//! already answered gets that answer again and appends nothing. The answer
//! is kept in the events database, in the transaction of the append it
//! answers (`source::CommandStore`), so a restart, a crash between the append
//! and the answer, or another reel process on the same PostgreSQL changes
//! nothing.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use reel_model::time::now_micros;
use sha2::{Digest, Sha256};

use super::command::{CommandAnswer, CommandError, CommandRequest};
use super::{Deciders, Deployed};
use crate::source::{KeptAnswer, Keyed, Outcome};

/// Longest key (bytes): a UUID is 36.
pub const MAX_KEY_BYTES: usize = 255;

/// A command's key, checked, and what it stands for.
#[derive(Debug, Clone)]
pub struct Key {
    /// The client's `Idempotency-Key`.
    pub key: String,
    /// Digest of the request it came with ([`fingerprint`]).
    pub fingerprint: String,
    /// Answers kept before this (Unix µs) have expired.
    pub expired_before: i64,
}

impl Key {
    /// `answer` (given now) to keep under this key.
    pub fn keyed(&self, answer: KeptAnswer) -> Keyed {
        Keyed { key: self.key.clone(), created_micros: now_micros(), expired_before: self.expired_before, answer }
    }

    /// A kept answer for `stream` of this key's request.
    pub fn answer(&self, outcome: Outcome, stream: &str, version: i64, count: i64, reason: String) -> KeptAnswer {
        KeptAnswer {
            fingerprint: self.fingerprint.clone(),
            outcome,
            stream_id: stream.to_owned(),
            version,
            count,
            reason,
        }
    }
}

/// Refuse a key no client means: empty, too long, or not printable ASCII
/// (RFC 9110 field values, without spaces at either end).
pub fn check(key: &str) -> Result<(), CommandError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES || !key.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err(CommandError::Invalid(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_BYTES} printable ASCII characters (a UUID, say)"
        )));
    }
    Ok(())
}

/// Digest of what a command asks: the decider, the stream, the command type,
/// and its data and metadata as sent (JSON text, byte for byte). Each part is
/// length-prefixed, so no two requests run together into the same bytes.
pub fn fingerprint(decider: &str, stream: &str, request: &CommandRequest) -> String {
    let mut digest = Sha256::new();
    let metadata = request.metadata.as_ref().map_or("", |m| m.get());
    for part in [decider, stream, &request.command_type, request.data.get(), metadata] {
        digest.update((part.len() as u64).to_le_bytes());
        digest.update(part.as_bytes());
    }
    digest.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl Deciders {
    /// The answer kept under `key`, given again: `None` when none is kept
    /// (or it expired).
    pub(super) async fn replay(
        &self,
        deployed: &Arc<Deployed>,
        key: &Key,
    ) -> Result<Option<Result<CommandAnswer, CommandError>>, CommandError> {
        let Some(kept) = self.inner.source.commands().answer(&key.key, key.expired_before).await? else {
            return Ok(None);
        };
        if kept.fingerprint != key.fingerprint {
            return Err(CommandError::KeyReused(key.key.clone()));
        }
        deployed.counts.replays.fetch_add(1, Ordering::Relaxed);
        let stream = &kept.stream_id;
        Ok(Some(match kept.outcome {
            Outcome::Appended => {
                let count = usize::try_from(kept.count).unwrap_or(0);
                let events = self.inner.source.read_stream(stream, kept.version, count).await?;
                if events.len() != count {
                    return Err(CommandError::Internal(format!(
                        "the answer kept under an idempotency key names {count} events of `{stream}` after version \
                         {}, and the log has {}",
                        kept.version,
                        events.len()
                    )));
                }
                let positions = events.iter().map(|e| e.position).collect();
                Ok(CommandAnswer { positions, version: kept.version + kept.count, events })
            }
            Outcome::Nothing => Ok(CommandAnswer { positions: vec![], version: kept.version, events: vec![] }),
            Outcome::Rejected => Err(CommandError::Rejected(kept.reason)),
            Outcome::InvalidCommand => Err(CommandError::InvalidCommand(kept.reason)),
        }))
    }

    /// Forget expired answers, at most once per `every` (a task of its
    /// own: a command does not wait for it).
    pub(super) fn purge_now_and_then(&self, expired_before: i64) {
        let every = self.inner.answers_ttl.min(std::time::Duration::from_secs(600));
        let now = now_micros();
        let last = self.inner.last_purge.load(Ordering::Relaxed);
        if now - last < every.as_micros() as i64
            || self.inner.last_purge.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            return;
        }
        let source = self.inner.source.clone();
        tokio::spawn(async move {
            match source.commands().purge_answers(expired_before).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!("forgot {n} expired answers of idempotency keys"),
                Err(e) => tracing::warn!("cannot forget expired answers of idempotency keys: {e}"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(data: &str) -> CommandRequest {
        serde_json::from_str(&format!(r#"{{"command_type":"place","data":{data}}}"#)).unwrap()
    }

    #[test]
    fn a_fingerprint_tells_requests_apart() {
        let a = fingerprint("order", "order-1", &request(r#"{"n":1}"#));
        assert_eq!(a, fingerprint("order", "order-1", &request(r#"{"n":1}"#)));
        assert_ne!(a, fingerprint("order", "order-2", &request(r#"{"n":1}"#)));
        assert_ne!(a, fingerprint("order", "order-1", &request(r#"{"n":2}"#)));
        assert_ne!(fingerprint("ab", "c", &request("1")), fingerprint("a", "bc", &request("1")));
        assert!(check("0b9e4c1e-4a5f-4b61-9d1f-5d2b8e2f1a00").is_ok());
        for bad in ["", "tab\there", "é", "k".repeat(256).as_str()] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
    }
}
