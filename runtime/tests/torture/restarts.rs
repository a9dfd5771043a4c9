//! PostgreSQL restarted under reel (issue 30 item 2): a private cluster
//! stopped with `-m immediate` at random moments while reel rebuilds from a
//! backlog and a client appends through it, then started again; and reel
//! started while it is down. reel keeps serving, says the database is
//! unreachable (`/healthz`, the projections' status), answers appends `503`
//! (`unavailable`, or `outcome_unknown` when the restart cut an append's
//! commit: the client sends it again with its idempotency key, ADR 43), and
//! catches up with nothing lost or doubled. `REEL_TORTURE_RESTARTS` sets how
//! many restarts.

use std::time::{Duration, Instant};

use reel::testing::workload::{OrderWorkload, generate, load};
use serde_json::Value;

use super::appender::Appender;
use super::check::{MODULES, World};
use super::postgres::PrivatePostgres;
use super::process::{Address, Reel, Rng, knob};

#[test]
fn reel_rides_out_postgres_restarts_and_starts_without_it() {
    let restarts = knob("REEL_TORTURE_RESTARTS", 2);
    let events = knob("REEL_TORTURE_EVENTS", 3_000);
    let live = knob("REEL_TORTURE_LIVE", 1_000);
    let mut rng = Rng::from_env();
    let seed = rng.next_u64();
    let started = Instant::now();
    let pg = PrivatePostgres::start();
    let url = pg.create_database("torture");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("modules")).unwrap();
    for module in MODULES {
        std::fs::copy(super::common::guest(module), dir.path().join(format!("modules/{module}.wasm"))).unwrap();
    }
    let args = ["--batch-size", "100"];
    Reel::start(dir.path(), Some(&url), &args).kill();
    let backlog = generate(&OrderWorkload::new(events * 5 / 9, seed));
    let mut world = World::new(&dir.path().join("data"), Some(&url));
    world.runtime().block_on(load::copy_postgres(&url, &backlog)).unwrap();

    // Restarts while reel rebuilds and a client appends.
    let reel = Reel::start(dir.path(), Some(&url), &args);
    let address: Address = Default::default();
    *address.lock().unwrap() = Some(reel.addr);
    let more = generate(&OrderWorkload::new(live * 5 / 9, seed ^ 0x5eed));
    let appender = Appender::start(address.clone(), more.clone(), Duration::from_millis(2));
    let mut outages = Vec::new();
    for restart in 1..=restarts {
        std::thread::sleep(Duration::from_secs_f64(0.3 + 1.5 * rng.unit()));
        pg.crash();
        let down = Instant::now();
        let (health, status) = outage_reported(&reel, true);
        std::thread::sleep(Duration::from_secs_f64(0.5 + 2.5 * rng.unit()));
        let outage = down.elapsed();
        pg.up();
        let back = recovered(&reel);
        eprintln!(
            "torture: restart {restart}: down {outage:.1?}, reel healthy {back:.1?} after it came back; \
             /healthz said {health}; status said {status}"
        );
        outages.push((outage, back));
    }
    let appended = appender.join();
    super::wait_caught_up(&reel, 0);
    reel.terminate();

    // Down when reel starts: it serves, says so, and catches up when it comes.
    pg.crash();
    let reel = Reel::start(dir.path(), Some(&url), &args);
    let (health, status) = outage_reported(&reel, false);
    eprintln!("torture: reel started without PostgreSQL: /healthz said {health}; status said {status}");
    *address.lock().unwrap() = Some(reel.addr);
    let last = generate(&OrderWorkload::new(200, seed ^ 0x1a57));
    let late = Appender::start(address, last.clone(), Duration::ZERO);
    std::thread::sleep(Duration::from_secs(1));
    pg.up();
    let back = recovered(&reel);
    let late = late.join();
    super::wait_caught_up(&reel, 0);
    reel.terminate();

    world.read_log();
    world.check(true);
    world.check_appended(&backlog);
    world.check_appended(&more);
    world.check_appended(&last);
    eprintln!(
        "torture: {restarts} PostgreSQL restarts (down, back to healthy): {outages:.1?}; {} events appended meanwhile \
         ({} x 503 of which {} outcome_unknown, {} first answers given again under their keys, {} refused, {} lost answers, longest append {:.1?}); started without it: healthy {back:.1?} after \
         it came, {} appends ({} x 503); log {} events, all read models equal the fold; {:.0?} in all",
        appended.events,
        appended.unavailable,
        appended.outcome_unknown,
        appended.replayed,
        appended.refused,
        appended.lost_answers,
        appended.longest,
        late.events,
        late.unavailable,
        world.log.len(),
        started.elapsed()
    );
    assert_eq!((appended.other_errors, late.other_errors), (0, 0), "{:?} {:?}", appended.first_other, late.first_other);
}

/// Wait until reel says the database is gone: `/healthz` `503`, and a
/// projection's status naming the outage (`running`), or, on a reel that
/// could not start, `/projections` `503` too. What each said.
fn outage_reported(reel: &Reel, running: bool) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut health = None;
    loop {
        if health.is_none() {
            let (code, body) = call(reel, "/healthz");
            if code != 200 {
                assert_eq!((code, &body["status"]), (503, &Value::from("unavailable")), "{body}");
                health = Some(body["error"]["message"].to_string());
            }
        }
        let (code, body) = call(reel, "/projections");
        if let (false, Some(health)) = (running, &health) {
            assert_eq!((code, &body["error"]["code"]), (503, &Value::from("unavailable")), "{body}");
            return (health.clone(), body["error"]["message"].to_string());
        }
        let named = code == 200
            && body.as_array().is_some_and(|all| {
                all.iter().all(|p| p["log_unreachable"].is_string())
                    && all.iter().any(|p| p["state"] == "retrying" && p["last_error"]["message"].is_string())
            });
        if let (Some(health), true) = (&health, named) {
            let errors: Vec<String> = body
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["state"] == "retrying")
                .map(|p| format!("{}: {}", p["name"], p["last_error"]["message"]))
                .collect();
            return (health.clone(), errors.join("; "));
        }
        assert!(
            Instant::now() < deadline,
            "reel did not report the outage in 30 s: /healthz {health:?}, /projections {code} {body}\n{}",
            reel.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Wait until `/healthz` answers 200 again; how long it took.
fn recovered(reel: &Reel) -> Duration {
    let since = Instant::now();
    loop {
        if call(reel, "/healthz").0 == 200 {
            return since.elapsed();
        }
        assert!(since.elapsed() < Duration::from_secs(120), "reel did not recover: {}", reel.log_tail());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn call(reel: &Reel, path: &str) -> (u16, Value) {
    let mut client = reel::testing::Client::connect(&format!("http://{}", reel.addr)).unwrap();
    let response = client.get(path).unwrap();
    (response.status, response.json().unwrap_or_else(|_| Value::String(response.body)))
}
