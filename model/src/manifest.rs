//! What a projection declares about itself, and the checks reel makes of it.

use serde::{Deserialize, Serialize};

/// Policy for an event that keeps failing after retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(
    feature = "host",
    derive(wasmtime::component::ComponentType, wasmtime::component::Lift, wasmtime::component::Lower),
    component(enum),
    repr(u8)
)]
pub enum OnError {
    /// Halt the projection at the event (the default).
    #[default]
    #[cfg_attr(feature = "host", component(name = "stop"))]
    Stop,
    /// Put the event in the dead-letter table and continue.
    #[cfg_attr(feature = "host", component(name = "skip"))]
    Skip,
}

/// What a projection declares about itself (`describe`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(
    feature = "host",
    derive(wasmtime::component::ComponentType, wasmtime::component::Lift, wasmtime::component::Lower),
    component(record)
)]
pub struct Manifest {
    /// Unique name: `a-z`, `0-9`, `-`, `_`, starting with a letter, at most 48
    /// ([`is_projection_name`]).
    pub name: String,
    /// Version of the logic; changing it rebuilds the read model from scratch.
    pub version: String,
    /// Event types to receive (exact, or a prefix ending in `*`); empty = all.
    #[cfg_attr(feature = "host", component(name = "event-types"))]
    pub event_types: Vec<String>,
    /// Stream id prefixes to receive; empty = all.
    #[cfg_attr(feature = "host", component(name = "stream-prefixes"))]
    pub stream_prefixes: Vec<String>,
    /// What to do with an event that keeps failing.
    #[cfg_attr(feature = "host", component(name = "on-error"))]
    pub on_error: OnError,
}

/// Whether `name` can name a projection: 1 to 48 characters of a-z, 0-9,
/// `-` and `_`, starting with a letter (it becomes file, schema and role
/// names).
pub fn is_projection_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 48
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// What [`is_projection_name`] asks for, for error messages.
pub const PROJECTION_NAME_RULE: &str = "use 1 to 48 characters of a-z, 0-9, `-` and `_`, starting with a letter";

impl Manifest {
    /// A manifest receiving every event, stopping on failures.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            event_types: Vec::new(),
            stream_prefixes: Vec::new(),
            on_error: OnError::Stop,
        }
    }

    /// Receive only these event types (exact names or `prefix*`).
    pub fn event_types<I, S>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.event_types = types.into_iter().map(Into::into).collect();
        self
    }

    /// Receive only events of streams starting with one of these prefixes.
    pub fn stream_prefixes<I, S>(mut self, prefixes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.stream_prefixes = prefixes.into_iter().map(Into::into).collect();
        self
    }

    /// Set the policy for events that keep failing.
    pub fn on_error(mut self, policy: OnError) -> Self {
        self.on_error = policy;
        self
    }

    /// Check the name and version are usable as identifiers.
    pub fn validate(&self) -> Result<(), String> {
        let name = &self.name;
        if !is_projection_name(name) {
            return Err(format!("projection name `{name}` is invalid: {PROJECTION_NAME_RULE}"));
        }
        if self.version.is_empty() || self.version.len() > 64 {
            return Err(format!(
                "projection `{name}` has an invalid version `{}`: use 1 to 64 characters",
                self.version
            ));
        }
        Ok(())
    }
}
