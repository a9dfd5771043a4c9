//! Deciders: the write side. A [`Decider`] folds a stream's events into a
//! state ([`Decider::evolve`]) and decides what a command does to it
//! ([`Decider::decide`]); reel loads the state, calls `decide`, and appends
//! the events with the stream's version as the expected version. The
//! [`export_decider!`](crate::export_decider) macro makes it a component of
//! the `reel:projection/decider` world; [`run`] calls it natively.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::event::decode_tagged;
use crate::{Envelope, Error, EventFields, RawEvent, Result};

/// What a decider declares about itself (the WIT's `decider-manifest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeciderManifest {
    /// Unique name (the rules of a projection's name); names the decider in
    /// `POST /commands/{name}/{stream_id}`.
    pub name: String,
    /// Version of the logic: states kept for another version are not used.
    pub version: String,
    /// The streams it owns: ids starting with this prefix.
    pub stream_prefix: String,
    /// The command types it decides.
    pub command_types: Vec<String>,
}

impl DeciderManifest {
    /// A decider `name` at `version`, owning streams that start with
    /// `stream_prefix`.
    pub fn new(name: impl Into<String>, version: impl Into<String>, stream_prefix: impl Into<String>) -> Self {
        Self { name: name.into(), version: version.into(), stream_prefix: stream_prefix.into(), command_types: vec![] }
    }

    /// The command types it decides.
    pub fn command_types<S: Into<String>>(mut self, types: impl IntoIterator<Item = S>) -> Self {
        self.command_types = types.into_iter().map(Into::into).collect();
        self
    }
}

/// A command as reel hands it over (the WIT's `command`): payload and
/// metadata still JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawCommand {
    /// One of the declared command types.
    pub command_type: String,
    /// The stream it is for.
    pub stream_id: String,
    /// The payload, JSON text.
    pub data: String,
    /// Metadata, JSON text, with `received_at` set by reel.
    pub metadata: String,
}

/// A decoded command handed to [`Decider::decide`].
#[derive(Debug, Clone)]
pub struct Command<'a, C> {
    /// The stream it is for.
    pub stream_id: &'a str,
    /// Its type.
    pub command_type: &'a str,
    /// Metadata, JSON text.
    pub metadata: &'a str,
    /// When reel received it (RFC 3339, UTC, µs): use it instead of a clock.
    pub received_at: String,
    /// The decoded payload.
    pub data: C,
}

/// An event a decision produces (the WIT's `new-event`); reel gives it its
/// position, version and time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Type name.
    pub event_type: String,
    /// The payload, JSON text.
    pub data: String,
    /// Metadata, a JSON object's text.
    pub metadata: String,
}

impl NewEvent {
    /// An event of `event_type` with `data` serialized as its payload.
    pub fn new(event_type: impl Into<String>, data: &impl Serialize) -> Self {
        let data =
            serde_json::to_string(data).unwrap_or_else(|e| format!("{{\"unserializable\": {:?}}}", e.to_string()));
        Self { event_type: event_type.into(), data, metadata: "{}".into() }
    }
}

/// Why a decision produced no events (the WIT's `rejection`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The command breaks a rule in this state: reel answers 422 with the reason.
    Rejected(String),
    /// The payload is not what the decider reads: reel answers 400.
    InvalidCommand(String),
}

impl Rejection {
    /// A rule the command breaks.
    pub fn rejected(reason: impl Into<String>) -> Self {
        Rejection::Rejected(reason.into())
    }
}

/// A decider: the functional aggregate.
///
/// Like a projection it keeps nothing of its own between calls: the state is
/// what `evolve` makes of the stream's events, kept by reel (as JSON).
pub trait Decider {
    /// The state of one stream; `Default` is a stream with no events.
    type State: Default + Serialize + DeserializeOwned;
    /// The events it folds, decoded like [`Projection::Event`](crate::Projection::Event)
    /// (adjacently tagged by event type).
    type Event: DeserializeOwned;
    /// The commands it decides, decoded the same way by command type:
    /// `{"type": <command type>, "data": <payload>}`.
    type Command: DeserializeOwned;

    /// Name, version, owned prefix and command types.
    fn manifest() -> DeciderManifest;

    /// Apply one event of the stream to the state.
    fn evolve(state: &mut Self::State, event: Envelope<'_, Self::Event>) -> Result<()>;

    /// The events `command` produces in `state`, or why it produces none.
    fn decide(state: &Self::State, command: Command<'_, Self::Command>) -> Result<Vec<NewEvent>, Rejection>;
}

/// The calls of the decider world on a [`Decider`], as the component export
/// makes them (and natively, for tests and baselines).
pub mod run {
    use super::*;

    /// `describe`.
    pub fn describe<D: Decider>() -> DeciderManifest {
        D::manifest()
    }

    fn state<D: Decider>(state: Option<&str>) -> Result<D::State> {
        match state {
            None => Ok(D::State::default()),
            Some(text) => {
                serde_json::from_str(text).map_err(|e| Error::Failed(format!("the state does not decode: {e}")))
            }
        }
    }

    /// `evolve`: the state after `events`, as JSON text.
    pub fn evolve<D: Decider, E: EventFields>(state: Option<&str>, events: &[E]) -> Result<String> {
        let mut state = self::state::<D>(state)?;
        for raw in events {
            let event = raw.envelope::<D::Event>().map_err(|e| e.error)?;
            D::evolve(&mut state, event)?;
        }
        Ok(serde_json::to_string(&state)?)
    }

    /// `decide`: the events `command` produces in `state`.
    pub fn decide<D: Decider>(command: &RawCommand, state: Option<&str>) -> Result<Vec<NewEvent>, Rejection> {
        let state = self::state::<D>(state).map_err(|e| Rejection::InvalidCommand(e.to_string()))?;
        let data = decode_tagged::<D::Command>(&command.command_type, &command.data)
            .map_err(|e| Rejection::InvalidCommand(format!("`{}` command: {e}", command.command_type)))?;
        let received_at = serde_json::from_str::<serde_json::Value>(&command.metadata)
            .ok()
            .and_then(|m| m.get("received_at").and_then(|v| v.as_str()).map(str::to_owned))
            .unwrap_or_default();
        D::decide(
            &state,
            Command {
                stream_id: &command.stream_id,
                command_type: &command.command_type,
                metadata: &command.metadata,
                received_at,
                data,
            },
        )
    }

    /// Fold `events` from the empty state and decide `command`: what reel
    /// does for a command, in one call (tests of a decider's rules).
    pub fn load_and_decide<D: Decider>(events: &[RawEvent], command: &RawCommand) -> Result<Vec<NewEvent>, Rejection> {
        let state = evolve::<D, RawEvent>(None, events).map_err(|e| Rejection::InvalidCommand(e.to_string()))?;
        decide::<D>(command, Some(&state))
    }
}
