//! `POST /events` with an `Idempotency-Key` (ADR 25, ADR 43): the append's
//! answer kept under the key in the append's transaction, so a client that
//! lost the answer (reel killed, the database's connection lost while the
//! append was committing: `503 outcome_unknown`) sends the same request
//! again with the same key and gets the first answer, appended once.

use reel_model::time::now_micros;
use sha2::{Digest, Sha256};

use super::Deciders;
use super::command::CommandError;
use super::keys::{self, Key};
use crate::source::{AppendRequest, Appended, Outcome};

/// Digest of an append as sent: the stream, the expected version, and each
/// event's type, data and metadata (JSON text, byte for byte), each part
/// length-prefixed; a marker keeps it apart from every command's.
pub fn fingerprint(request: &AppendRequest) -> String {
    let mut digest = Sha256::new();
    let expected = request.expected_version.map_or_else(String::new, |v| v.to_string());
    let mut parts = vec!["POST /events", request.stream_id.as_str(), expected.as_str()];
    for e in &request.events {
        parts.extend([e.event_type.as_str(), e.data.get(), e.metadata.as_ref().map_or("", |m| m.get())]);
    }
    for part in parts {
        digest.update((part.len() as u64).to_le_bytes());
        digest.update(part.as_bytes());
    }
    digest.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl Deciders {
    /// Append `request` under idempotency key `key`: the answer, and whether
    /// it is one given before under that key (nothing appended now). Only an
    /// append is kept: a version conflict or a failure is not, and the same
    /// key may be sent again.
    pub async fn append_keyed(&self, request: AppendRequest, key: &str) -> Result<(Appended, bool), CommandError> {
        keys::check(key)?;
        let ttl = i64::try_from(self.inner.answers_ttl.as_micros()).unwrap_or(i64::MAX);
        let key = Key {
            key: key.to_owned(),
            fingerprint: fingerprint(&request),
            expired_before: now_micros().saturating_sub(ttl),
        };
        if let Some(appended) = self.replay_append(&key).await? {
            return Ok((appended, true));
        }
        self.purge_now_and_then(key.expired_before);
        let (stream, count) = (request.stream_id.clone(), request.events.len() as i64);
        // The version before the append is set by the append itself.
        let answer =
            key.answer(Outcome::Appended, &stream, request.expected_version.unwrap_or(0), count, String::new());
        if let Some(appended) = self.inner.source.commands().append_keyed(request, key.keyed(answer)).await? {
            return Ok((appended, false));
        }
        // Another request with this key was answered first: its answer.
        match self.replay_append(&key).await? {
            Some(appended) => Ok((appended, true)),
            None => Err(CommandError::Internal(format!("the answer kept under idempotency key `{}` is gone", key.key))),
        }
    }

    /// The append kept under `key`, given again.
    async fn replay_append(&self, key: &Key) -> Result<Option<Appended>, CommandError> {
        let Some(kept) = self.inner.source.commands().answer(&key.key, key.expired_before).await? else {
            return Ok(None);
        };
        if kept.fingerprint != key.fingerprint || kept.outcome != Outcome::Appended {
            return Err(CommandError::KeyReused(key.key.clone()));
        }
        let count = usize::try_from(kept.count).unwrap_or(0);
        let events = self.inner.source.read_stream(&kept.stream_id, kept.version, count).await?;
        if events.len() != count {
            return Err(CommandError::Internal(format!(
                "the answer kept under an idempotency key names {count} events of `{}` after version {}, and the \
                 log has {}",
                kept.stream_id,
                kept.version,
                events.len()
            )));
        }
        let positions = events.iter().map(|e| e.position).collect();
        Ok(Some(Appended { positions, version: kept.version + kept.count }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: &str) -> AppendRequest {
        serde_json::from_str(body).unwrap()
    }

    #[test]
    fn an_appends_fingerprint_tells_requests_apart() {
        let one = r#"{"stream_id":"a","expected_version":0,"events":[{"event_type":"t","data":{"n":1}}]}"#;
        let a = fingerprint(&request(one));
        assert_eq!(a, fingerprint(&request(one)));
        for other in [
            r#"{"stream_id":"b","expected_version":0,"events":[{"event_type":"t","data":{"n":1}}]}"#,
            r#"{"stream_id":"a","expected_version":1,"events":[{"event_type":"t","data":{"n":1}}]}"#,
            r#"{"stream_id":"a","events":[{"event_type":"t","data":{"n":1}}]}"#,
            r#"{"stream_id":"a","expected_version":0,"events":[{"event_type":"t","data":{"n":2}}]}"#,
            r#"{"stream_id":"a","expected_version":0,"events":[{"event_type":"t","data":{"n":1},"metadata":{}}]}"#,
        ] {
            assert_ne!(a, fingerprint(&request(other)), "{other}");
        }
    }
}
