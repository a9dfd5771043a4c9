//! Reactors: modules that emit events exactly once (wit/reactor.wit,
//! docs/adr/23-reactors-exactly-once.md).

mod common;

use reel::config::Limits;
use reel::host::Engine;
use reel::model::Emits;
use reel::modules::Loader;

/// A component exporting `describe-emits` is a reactor with its prefix; a
/// projection built with the same SDK is not one.
#[test]
fn a_reactor_declares_its_stream_prefix_and_a_projection_none() {
    let engine = Engine::new().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let loader = Loader::new(engine, cache.path(), Limits::default());
    let relay = loader.load(&common::guest("fixture_relay")).unwrap();
    assert_eq!(relay.manifest.name, "relay");
    assert_eq!(relay.emits, Some(Emits::new("relay-")));
    let echo = loader.load(&common::guest("fixture_echo_a")).unwrap();
    assert_eq!(echo.emits, None);
}
