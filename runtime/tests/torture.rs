//! Torture runs (issue 30; docs/reliability.md has the long runs' results).
//!
//! The kill loop: `reel` killed with SIGKILL at random moments, first while
//! its projections rebuild from a backlog, then while a client appends
//! through it; after each kill the log and every read model at its
//! checkpoint equal the fold of the log up to there (`torture/check.rs`),
//! and the sink's JetStream stream holds each order event it passed once
//! (`torture/sink.rs`); at the end every appended event is in the log once,
//! in order, every read model is at the head, and the stream holds every
//! order event once. The CI runs are short; the knobs make
//! them long (`cargo xtask torture kill --help`):
//! `REEL_TORTURE_EVENTS` (backlog), `REEL_TORTURE_LIVE` (appended live),
//! `REEL_TORTURE_KILLS`, `REEL_TORTURE_SEED`, `REEL_TORTURE_BATCH` (reel's
//! `--batch-size`; 0: its default).
//!
//! Connection abuse (`torture/connections.rs`): a thousand idle keep-alive
//! connections past the connection cap while two hundred clients read.
//!
//! PostgreSQL restarts (`torture/restarts.rs`): a private cluster stopped
//! with `-m immediate` under reel and started again, and reel started while
//! it is down.

#[path = "torture/appender.rs"]
mod appender;
#[path = "torture/check.rs"]
mod check;
mod common;
#[path = "torture/connections.rs"]
mod connections;
#[path = "torture/fuzz.rs"]
mod fuzz;
#[path = "torture/postgres.rs"]
mod postgres;
#[path = "torture/process.rs"]
mod process;
#[path = "torture/restarts.rs"]
mod restarts;
#[path = "torture/sink.rs"]
mod sink;
#[path = "torture/soak.rs"]
mod soak;

use std::time::{Duration, Instant};

use appender::Appender;
use check::{MODULES, World};
use process::{Address, Reel, Rng, knob};
use reel::testing::workload::{OrderWorkload, generate, load};

#[test]
fn kill_loop_sqlite() {
    kill_loop(common::Backend::Sqlite);
}

#[test]
fn kill_loop_postgres() {
    kill_loop(common::Backend::Postgres);
}

/// Kill reel `REEL_TORTURE_KILLS` times: half while it rebuilds its read
/// models from a backlog of `REEL_TORTURE_EVENTS`, the rest (and those the
/// rebuild left) while `REEL_TORTURE_LIVE` more events are appended through it.
fn kill_loop(backend: common::Backend) {
    let events = knob("REEL_TORTURE_EVENTS", 6_000);
    let live = knob("REEL_TORTURE_LIVE", 1_500);
    let kills = knob("REEL_TORTURE_KILLS", 6);
    let batch = knob("REEL_TORTURE_BATCH", 100).to_string();
    let mut rng = Rng::from_env();
    let seed = rng.next_u64();
    let started = Instant::now();

    let (dir, setup, database) = common::scratch(backend);
    let db = database.as_deref();
    for module in MODULES.into_iter().chain([sink::MODULE]) {
        std::fs::copy(common::guest(module), dir.path().join(format!("modules/{module}.wasm"))).unwrap();
    }
    let mut sink = sink::Sink::start();
    let nats = sink.url();
    let mut args: Vec<&str> = vec!["--nats-url", &nats];
    if batch != "0" {
        args.extend(["--batch-size", &batch]);
    }
    // Started once to create the events table, which gets the backlog the
    // way another service would write it.
    Reel::start(dir.path(), db, &args).kill();
    let backlog = generate(&OrderWorkload::new(events * 5 / 9, seed));
    match db {
        None => {
            load::insert_sqlite(&dir.path().join("data/events.db"), &backlog).unwrap();
        }
        Some(url) => {
            setup.block_on(load::copy_postgres(url, &backlog)).unwrap();
        }
    }
    let mut world = World::new(&dir.path().join("data"), db);
    world.read_log();
    let head = world.log.len();
    eprintln!("torture: {head} events loaded in {:.1?}", started.elapsed());

    // The rebuild: each kill at a random point of what is left of it
    // (watched through `GET /projections`).
    let rebuild_kills = kills / 2;
    let last_id = world.log.last().map_or(0, |l| l.cursor.id);
    let mut done = 0;
    let mut mid_rebuild = 0;
    // Where the projections' committed checkpoints were at the last kill: a
    // reel just started reports position 0 until its workers resume, and a
    // kill aimed from there would land at once.
    let mut resumed_at = 0;
    let rebuild_started = Instant::now();
    while done < rebuild_kills {
        let mut reel = Reel::start(dir.path(), db, &args);
        let at = positions(&reel).into_iter().min().unwrap_or(0).max(resumed_at);
        let share = 2.0 * rng.unit() / (rebuild_kills - done + 1) as f64;
        let target = at + ((last_id - at) as f64 * share) as i64;
        let deadline = Instant::now() + Duration::from_secs(1800);
        let reached = loop {
            let reached = positions(&reel).into_iter().min().unwrap_or(0);
            if reached >= target || Instant::now() > deadline {
                break reached;
            }
            assert!(reel.running(), "reel died on its own: {}", reel.log_tail());
            std::thread::sleep(Duration::from_millis(5));
        };
        let delivered = sink_position(&reel);
        reel.kill();
        done += 1;
        world.read_log(); // the relay's emissions
        let covered = world.check(false);
        let published = sink.check(&world.log, delivered, false);
        // (Events covered: at most the position reached.)
        let models = ["order-summaries", "customer-stats"].map(|name| covered.get(name).copied().unwrap_or(0));
        resumed_at = models.into_iter().min().unwrap_or(0) as i64;
        eprintln!(
            "torture: kill {done} at position {reached} (aimed at {target} of {last_id}): read models cover {covered:?}; \
             the sink passed {delivered}, {published} messages"
        );
        if covered.values().copied().min().unwrap_or(0) >= head {
            eprintln!("torture: the rebuild ended before kill {done}: the rest go to the live appends");
            break;
        }
        mid_rebuild += 1;
    }
    let rebuild_time = rebuild_started.elapsed();

    // Live appends through reel, each kill after a random share of what is
    // left of them.
    let address: Address = Default::default();
    let more = generate(&OrderWorkload::new(live * 5 / 9, seed ^ 0x5eed));
    let appender = Appender::start(address.clone(), more.clone(), Duration::ZERO);
    let live_started = Instant::now();
    let mut live_kills = 0;
    while done < kills {
        let mut reel = Reel::start(dir.path(), db, &args);
        *address.lock().unwrap() = Some(reel.addr);
        let at = appender.progress();
        let share = 2.0 * rng.unit() / (kills - done + 1) as f64;
        let target = at + ((more.len() - at) as f64 * share) as usize;
        while appender.progress() < target.max(at + 1) && !appender.done() {
            assert!(reel.running(), "reel died on its own: {}", reel.log_tail());
            std::thread::sleep(Duration::from_millis(1));
        }
        let appending = !appender.done();
        *address.lock().unwrap() = None;
        let delivered = sink_position(&reel);
        reel.kill();
        done += 1;
        live_kills += usize::from(appending);
        world.read_log();
        let covered = world.check(false);
        let published = sink.check(&world.log, delivered, false);
        eprintln!(
            "torture: kill {done} after {} of {} live appends: read models cover {covered:?} of {}; the sink passed \
             {delivered}, {published} messages",
            appender.progress(),
            more.len(),
            world.log.len()
        );
    }

    // The end: every append in, every read model at the head.
    let reel = Reel::start(dir.path(), db, &args);
    *address.lock().unwrap() = Some(reel.addr);
    let appended = appender.join();
    let live_time = live_started.elapsed();
    wait_caught_up(&reel, 1);
    *address.lock().unwrap() = None;
    reel.terminate();
    world.read_log();
    world.check(true);
    world.check_appended(&backlog);
    world.check_appended(&more);
    let published = sink.check(&world.log, i64::MAX, true);
    let stats = format!(
        "{backend:?}: {head} events rebuilt under {mid_rebuild} kills in {rebuild_time:.1?}; {} appended live under \
         {live_kills} kills in {live_time:.1?} ({} refused connections, {} lost answers, {} first answers given again \
         under their keys, {} x 503, longest append {:.1?}); log {} events; all read models equal the fold after every \
         kill; the sink's stream holds each of the {published} order events once, in order; {:.0?} in all",
        appended.events,
        appended.refused,
        appended.lost_answers,
        appended.replayed,
        appended.unavailable,
        appended.longest,
        world.log.len(),
        started.elapsed()
    );
    eprintln!("torture: {stats}");
    assert_eq!(appended.other_errors, 0, "{:?}", appended.first_other);
    assert!(mid_rebuild + live_kills >= kills.min(2), "too few kills hit work: {stats}");
    drop(world);
    if let Some(url) = db {
        setup.block_on(common::drop_database(url));
    }
}

/// Wait until every read model is at the head of the log, as reel reports it,
/// and each of the `sinks` deployed has delivered up to it.
fn wait_caught_up(reel: &Reel, sinks: usize) {
    let deadline = Instant::now() + Duration::from_secs(1800);
    let mut settled = 0;
    loop {
        let list = get(reel, "/projections");
        let delivery = get(reel, "/sinks");
        let caught_up =
            list.as_array().is_some_and(|all| {
                all.len() == check::NAMES.len() && all.iter().all(|p| p["lag"] == 0 && p["position"] == p["head"])
            }) && delivery.as_array().is_some_and(|all| all.len() == sinks && all.iter().all(|s| s["lag_events"] == 0));
        settled = if caught_up { settled + 1 } else { 0 };
        // Twice in a row: the relay's emissions move the head once more.
        if settled == 3 {
            return;
        }
        assert!(Instant::now() < deadline, "not caught up: {list:#}\n{delivery:#}\n{}", reel.log_tail());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The sink's position (the last event the broker confirmed; its
/// checkpoint, which the kill may find further on, is at least there).
fn sink_position(reel: &Reel) -> i64 {
    let sinks = get(reel, "/sinks");
    sinks.get(0).and_then(|s| s["position"].as_i64()).unwrap_or(0)
}

/// The positions of the projections (not the reactor, whose position
/// moves only with the events it subscribes to).
fn positions(reel: &Reel) -> Vec<i64> {
    let list = get(reel, "/projections");
    let all = list.as_array().unwrap();
    all.iter().filter(|p| p["reactor"].is_null()).map(|p| p["position"].as_i64().unwrap()).collect()
}

fn get(reel: &Reel, path: &str) -> serde_json::Value {
    let mut client = reel::testing::Client::connect(&format!("http://{}", reel.addr)).unwrap();
    let response = client.get(path).unwrap();
    assert_eq!(response.status, 200, "{path}: {}", response.body);
    response.json().unwrap()
}
