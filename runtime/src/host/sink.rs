//! Running a sink component (the `sink` world): `describe-sink` and
//! `transform`, with the same CPU deadline and memory limit as a
//! projection's calls. A sink imports only `log` (and the inert WASI): its
//! instances need no namespace.

use wasmtime::Store;
use wasmtime::component::Component;

use reel_model::Event;

use super::bindings::sink::{Sink, SinkPre};
use super::engine::ticks;
use super::instance::{GuestFailure, InstanceState, classify, new_store};
use crate::config::Limits;

pub use super::bindings::sink::reel::projection::sink_types::{Broker, Message, SinkManifest};

/// A compiled sink component, linked and ready to instantiate.
#[derive(Clone)]
pub struct SinkCode {
    pre: SinkPre<InstanceState>,
}

impl SinkCode {
    /// Whether `component` is a sink: it exports `describe-sink`.
    pub fn is_sink(engine: &super::Engine, component: &Component) -> bool {
        component.component_type().exports(engine.wasmtime()).any(|(name, _)| name == "describe-sink")
    }

    /// Link `component` against reel's imports as a sink.
    pub fn link(engine: &super::Engine, component: &Component) -> wasmtime::Result<Self> {
        let pre = engine.linker().instantiate_pre(component)?;
        Ok(Self { pre: SinkPre::new(pre)? })
    }
}

/// A sink instance. After a failure it must be dropped: its memory may be
/// in any state.
pub struct WasmSink {
    store: Store<InstanceState>,
    bindings: Sink,
    limits: Limits,
}

impl WasmSink {
    /// Instantiate `code` (named `name` in its log lines).
    pub fn new(code: &SinkCode, name: &str, limits: &Limits) -> Result<Self, GuestFailure> {
        let mut store = new_store(code.pre.engine(), name, None, limits);
        store.set_epoch_deadline(ticks(limits.batch_timeout));
        match code.pre.instantiate(&mut store) {
            Ok(bindings) => Ok(Self { store, bindings, limits: limits.clone() }),
            Err(e) => Err(classify(&e, &mut store, limits.batch_timeout)),
        }
    }

    /// Ask a fresh instance of `code` for its manifest.
    pub fn describe(code: &SinkCode, name_hint: &str, limits: &Limits) -> Result<SinkManifest, GuestFailure> {
        let mut sink = Self::new(code, name_hint, limits)?;
        sink.call(|b, s| b.call_describe_sink(s))
    }

    fn call<T>(
        &mut self,
        f: impl FnOnce(&Sink, &mut Store<InstanceState>) -> wasmtime::Result<T>,
    ) -> Result<T, GuestFailure> {
        self.store.set_epoch_deadline(ticks(self.limits.batch_timeout));
        f(&self.bindings, &mut self.store).map_err(|e| classify(&e, &mut self.store, self.limits.batch_timeout))
    }

    /// The messages of `event`, or why there are none.
    pub fn transform(&mut self, event: &Event) -> Result<Vec<Message>, GuestFailure> {
        let position = event.position;
        self.call(|b, s| b.call_transform(s, event))?
            .map_err(|e| GuestFailure::Rejected { position: Some(position), message: format!("transform: {e}") })
    }
}

/// The names a subject template may hold, each in braces.
const TEMPLATE_NAMES: [&str; 4] = ["stream_id", "event_type", "position", "version"];

/// Check a subject template: every `{` opens one of [`TEMPLATE_NAMES`].
pub fn check_template(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err(format!("`{{` at byte {} is not closed", template.len() - rest.len() + open));
        };
        let name = &after[..close];
        if !TEMPLATE_NAMES.contains(&name) {
            return Err(format!(
                "`{{{name}}}` is not a field: use {}",
                TEMPLATE_NAMES.map(|n| format!("{{{n}}}")).join(", ")
            ));
        }
        rest = &after[close + 1..];
    }
    Ok(())
}

/// `template` filled from `event`. For NATS, a value's whitespace, `*` and
/// `>` (wildcards, which a published subject may not hold) become `_`.
pub fn render_template(template: &str, event: &Event, nats: bool) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}').unwrap_or(after.len());
        let value = match &after[..close] {
            "stream_id" => event.stream_id.clone(),
            "event_type" => event.event_type.clone(),
            "position" => event.position.to_string(),
            "version" => event.version.to_string(),
            other => format!("{{{other}}}"),
        };
        if nats {
            out.extend(
                value
                    .chars()
                    .map(|c| if c.is_whitespace() || c.is_control() || c == '*' || c == '>' { '_' } else { c }),
            );
        } else {
            out.push_str(&value);
        }
        rest = after.get(close + 1..).unwrap_or("");
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_from_the_event() {
        let event = Event {
            position: 42,
            stream_id: "order 7>".into(),
            version: 3,
            event_type: "order.placed".into(),
            data: "{}".into(),
            metadata: "{}".into(),
            occurred_at: String::new(),
        };
        let t = "orders.{event_type}.{stream_id}.{position}.{version}";
        assert_eq!(check_template(t), Ok(()));
        assert_eq!(render_template(t, &event, true), "orders.order.placed.order_7_.42.3");
        assert_eq!(render_template("{stream_id}", &event, false), "order 7>");
        assert!(check_template("a.{nope}").unwrap_err().contains("`{nope}` is not a field"));
        assert!(check_template("a.{stream_id").unwrap_err().contains("not closed"));
    }
}
