//! A command: load the stream's state, decide, append with the expected
//! version; on a conflict, load again and decide again (bounded).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use reel_model::Event;
use reel_model::time::{format_micros, now_micros};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::keys::{self, Key};
use super::state::Loaded;
use super::{Deciders, Deployed};
use crate::host::GuestFailure;
use crate::host::decider::{Command, NewEvent, Rejection};
use crate::source::{AppendRequest, Outcome, SourceError};

/// Decisions taken for one command at most: the first, and one per conflict.
pub const MAX_ATTEMPTS: u32 = 8;
/// Events read from the log per `evolve` call while loading a state.
const EVOLVE_PAGE: usize = 2_000;

/// The body of `POST /commands/{decider}/{stream_id}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandRequest {
    /// One of the decider's command types.
    pub command_type: String,
    /// The payload, kept as sent.
    pub data: Box<RawValue>,
    /// The sender's metadata (a JSON object); reel adds `received_at`.
    #[serde(default)]
    pub metadata: Option<Box<RawValue>>,
}

/// What an accepted command appended.
#[derive(Debug, Clone, Serialize)]
pub struct CommandAnswer {
    /// Position of each appended event.
    pub positions: Vec<i64>,
    /// The stream's version after the command.
    pub version: i64,
    /// The appended events, as stored.
    pub events: Vec<Event>,
}

/// Why a command appended nothing.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// No decider of that name is in service.
    #[error("no decider named `{0}`")]
    UnknownDecider(String),
    /// The request is not one the decider takes (unknown command type, a
    /// stream outside its prefix, malformed metadata).
    #[error("{0}")]
    Invalid(String),
    /// The decider refused the command in the stream's state.
    #[error("{0}")]
    Rejected(String),
    /// The decider could not read the command's payload.
    #[error("{0}")]
    InvalidCommand(String),
    /// The stream kept moving: every attempt found it at another version.
    #[error(
        "stream `{stream}` changed during each of {MAX_ATTEMPTS} attempts to decide the command (last at version \
         {version}); nothing was appended, send it again"
    )]
    Conflict {
        /// The stream.
        stream: String,
        /// Its version at the last attempt.
        version: i64,
    },
    /// The decider trapped, timed out, ran out of memory, or returned
    /// something reel cannot append.
    #[error("decider `{name}` failed: {message}")]
    Failed {
        /// The decider.
        name: String,
        /// What happened.
        message: String,
    },
    /// The idempotency key came with another request before.
    #[error(
        "Idempotency-Key `{0}` was sent before with another request (another decider, stream, command type, data \
         or metadata): a key stands for one request; send a new request with a new key"
    )]
    KeyReused(String),
    /// A call into the decider failed (named by [`Deciders::command`]).
    #[error("{0}")]
    Decider(GuestFailure),
    /// The event log failed.
    #[error("{0}")]
    Source(#[from] SourceError),
    /// A blocking task died.
    #[error("internal error: {0}")]
    Internal(String),
}

/// A command's answer, and whether it is one given before under the same
/// idempotency key (ADR 25).
#[derive(Debug)]
pub struct Replied {
    /// The answer.
    pub result: Result<CommandAnswer, CommandError>,
    /// Given before: this request appended nothing.
    pub replayed: bool,
}

impl Deciders {
    /// Decide `request` on `stream` with decider `name` and append what it
    /// decides. With an idempotency `key`, a request answered before under
    /// that key gets its answer again (ADR 25).
    pub async fn command(&self, name: &str, stream: &str, request: CommandRequest, key: Option<&str>) -> Replied {
        let (result, replayed) = match self.answer(name, stream, request, key).await {
            Ok(answered) => answered,
            Err(e) => (Err(e), false),
        };
        let result = result.map_err(|e| match e {
            CommandError::Decider(failure) => {
                CommandError::Failed { name: name.to_owned(), message: failure.to_string() }
            }
            other => other,
        });
        Replied { result, replayed }
    }

    /// The answer to a command, and whether it was given before.
    async fn answer(
        &self,
        name: &str,
        stream: &str,
        request: CommandRequest,
        key: Option<&str>,
    ) -> Result<(Result<CommandAnswer, CommandError>, bool), CommandError> {
        let deployed = self.get(name)?;
        let key = match key {
            None => None,
            Some(key) => {
                keys::check(key)?;
                let ttl = i64::try_from(self.inner.answers_ttl.as_micros()).unwrap_or(i64::MAX);
                Some(Key {
                    key: key.to_owned(),
                    fingerprint: keys::fingerprint(name, stream, &request),
                    expired_before: now_micros().saturating_sub(ttl),
                })
            }
        };
        if let Some(key) = &key {
            if let Some(answer) = self.replay(&deployed, key).await? {
                return Ok((answer, true));
            }
            self.purge_now_and_then(key.expired_before);
        }
        deployed.counts.commands.fetch_add(1, Ordering::Relaxed);
        let result = self.decide_and_append(&deployed, stream, request, key.as_ref()).await;
        let counts = &deployed.counts;
        match &result {
            Err(CommandError::Rejected(_)) => counts.rejections.fetch_add(1, Ordering::Relaxed),
            Err(CommandError::Failed { .. } | CommandError::Decider(_)) => {
                counts.failures.fetch_add(1, Ordering::Relaxed)
            }
            _ => 0,
        };
        let Some(key) = &key else {
            return Ok((result.map(|answer| answer.expect("only a key is answered elsewhere")), false));
        };
        // Answers that appended nothing are kept now; one that appended was
        // kept with its events. Conflicts and failures are not kept: the
        // same request may go otherwise next time.
        let commands = self.inner.source.commands();
        let keep =
            |outcome, version, reason| commands.keep_answer(key.keyed(key.answer(outcome, stream, version, 0, reason)));
        let kept = match &result {
            Ok(None) => false,
            Ok(Some(answer)) if answer.events.is_empty() => {
                keep(Outcome::Nothing, answer.version, String::new()).await?
            }
            Ok(Some(_)) => true,
            Err(CommandError::Rejected(reason)) => keep(Outcome::Rejected, 0, reason.clone()).await?,
            Err(CommandError::InvalidCommand(reason)) => keep(Outcome::InvalidCommand, 0, reason.clone()).await?,
            Err(_) => true,
        };
        if kept {
            return Ok((result.map(|answer| answer.expect("answered here")), false));
        }
        // Another request with this key was answered first: its answer.
        match self.replay(&deployed, key).await? {
            Some(answer) => Ok((answer, true)),
            None => Err(CommandError::Internal(format!("the answer kept under idempotency key `{}` is gone", key.key))),
        }
    }

    /// Decide and append; `None`: a request with the same key was answered
    /// meanwhile, and this one appended nothing.
    async fn decide_and_append(
        &self,
        deployed: &Arc<Deployed>,
        stream: &str,
        request: CommandRequest,
        key: Option<&Key>,
    ) -> Result<Option<CommandAnswer>, CommandError> {
        let manifest = &deployed.module.manifest;
        if !manifest.command_types.contains(&request.command_type) {
            return Err(CommandError::Invalid(format!(
                "decider `{}` takes no command `{}`; its command types: {}",
                manifest.name,
                request.command_type,
                manifest.command_types.join(", ")
            )));
        }
        if !stream.starts_with(manifest.stream_prefix.as_str()) || stream.len() > crate::source::MAX_NAME_BYTES {
            return Err(CommandError::Invalid(format!(
                "stream `{stream}` is not one of decider `{}`'s: its streams start with `{}` (at most {} bytes)",
                manifest.name,
                manifest.stream_prefix,
                crate::source::MAX_NAME_BYTES
            )));
        }
        let command = Command {
            command_type: request.command_type,
            stream_id: stream.to_owned(),
            data: request.data.get().to_owned(),
            metadata: with_received_at(request.metadata.as_deref())?,
        };
        let command = Arc::new(command);
        let mut version = 0;
        for attempt in 1..=MAX_ATTEMPTS {
            if attempt > 1 {
                deployed.counts.retries.fetch_add(1, Ordering::Relaxed);
            }
            let (loaded, decision) = self.load_and_decide(deployed, stream, Some(Arc::clone(&command))).await?;
            version = loaded.version;
            let events = match decision.expect("a command was given") {
                Ok(events) => events,
                Err(Rejection::Rejected(reason)) => return Err(CommandError::Rejected(reason)),
                Err(Rejection::InvalidCommand(reason)) => return Err(CommandError::InvalidCommand(reason)),
            };
            if events.is_empty() {
                return Ok(Some(CommandAnswer { positions: vec![], version, events: vec![] }));
            }
            let count = events.len();
            let append = AppendRequest {
                stream_id: stream.to_owned(),
                expected_version: Some(version),
                events: events
                    .into_iter()
                    .map(new_event)
                    .collect::<Result<_, _>>()
                    .map_err(|message| CommandError::Failed { name: manifest.name.clone(), message })?,
            };
            append.validate().map_err(|e| CommandError::Failed {
                name: manifest.name.clone(),
                message: format!("it decided events reel cannot append: {e}"),
            })?;
            let appended = match key {
                None => self.inner.source.append(append).await.map(Some),
                Some(key) => {
                    let answer = key.answer(Outcome::Appended, stream, version, count as i64, String::new());
                    self.inner.source.commands().append_keyed(append, key.keyed(answer)).await
                }
            };
            match appended {
                Ok(None) => return Ok(None),
                Ok(Some(appended)) => {
                    let events = self.inner.source.read_stream(stream, version, count).await?;
                    let answer = CommandAnswer { positions: appended.positions, version: appended.version, events };
                    return Ok(Some(answer));
                }
                Err(SourceError::VersionConflict { .. }) => {
                    deployed.counts.conflicts.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(CommandError::Conflict { stream: stream.to_owned(), version })
    }

    /// The current state of `stream` for decider `name`, and its version.
    pub async fn state(&self, name: &str, stream: &str) -> Result<Loaded, CommandError> {
        let deployed = self.get(name)?;
        let prefix = &deployed.module.manifest.stream_prefix;
        if !stream.starts_with(prefix.as_str()) {
            return Err(CommandError::Invalid(format!(
                "stream `{stream}` is not one of decider `{name}`'s: its streams start with `{prefix}`"
            )));
        }
        let result = self.load_and_decide(&deployed, stream, None).await;
        Ok(result
            .map_err(|e| match e {
                CommandError::Decider(failure) => {
                    CommandError::Failed { name: name.to_owned(), message: failure.to_string() }
                }
                other => other,
            })?
            .0)
    }

    /// The stream's state (from the cache, else its snapshot, then the
    /// events after it folded in), and what the decider decides on it when
    /// given a command, in one blocking call per page of events.
    async fn load_and_decide(
        &self,
        deployed: &Arc<Deployed>,
        stream: &str,
        command: Option<Arc<Command>>,
    ) -> Result<(Loaded, Option<Result<Vec<NewEvent>, Rejection>>), CommandError> {
        let manifest = &deployed.module.manifest;
        let states = &self.inner.states;
        let mut loaded = match states.get(&manifest.name, &manifest.version, stream) {
            Some(loaded) => loaded,
            None => self.load_snapshot(deployed, stream).await?,
        };
        loop {
            let events = self.inner.source.read_stream(stream, loaded.version, EVOLVE_PAGE).await?;
            let last = events.len() < EVOLVE_PAGE;
            deployed.counts.events_folded.fetch_add(events.len() as u64, Ordering::Relaxed);
            let decide = if last { command.clone() } else { None };
            let before = loaded.clone();
            let (after, decision) = deployed
                .with_instance(&self.inner.limits, move |decider| {
                    let mut loaded = before;
                    if let Some(last) = events.last() {
                        let state = decider.evolve(loaded.state.as_deref(), &events)?;
                        loaded = Loaded { state: Some(state.into()), version: last.version, saved: loaded.saved };
                    }
                    let decision = match decide {
                        Some(command) => Some(decider.decide(&command, loaded.state.as_deref())?),
                        None => None,
                    };
                    Ok((loaded, decision))
                })
                .await?;
            loaded = after;
            if last {
                loaded = self.snapshot_if_due(deployed, stream, loaded).await;
            }
            states.put(&manifest.name, &manifest.version, stream, loaded.clone());
            if last {
                return Ok((loaded, decision));
            }
        }
    }
}

/// The sender's metadata object with `received_at` (now) added: guests have
/// no clock, so the time a command arrived comes with it.
fn with_received_at(metadata: Option<&RawValue>) -> Result<String, CommandError> {
    let mut object = match metadata {
        None => serde_json::Map::new(),
        Some(raw) => match serde_json::from_str::<serde_json::Value>(raw.get()) {
            Ok(serde_json::Value::Object(object)) => object,
            _ => return Err(CommandError::Invalid("metadata must be a JSON object".into())),
        },
    };
    object.insert("received_at".into(), format_micros(now_micros()).into());
    Ok(serde_json::Value::Object(object).to_string())
}

/// A decided event as an append takes it: its payload and metadata must be JSON.
fn new_event(event: NewEvent) -> Result<crate::source::NewEvent, String> {
    let json = |what: &str, text: String| {
        RawValue::from_string(text)
            .map_err(|e| format!("it decided a `{}` event whose {what} is not JSON: {e}", event.event_type))
    };
    let metadata =
        if event.metadata.trim().is_empty() { None } else { Some(json("metadata", event.metadata.clone())?) };
    Ok(crate::source::NewEvent { data: json("data", event.data.clone())?, metadata, event_type: event.event_type })
}
