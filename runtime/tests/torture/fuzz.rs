//! Fuzzed modules (issue 30 item 4): mutants of real components dropped one
//! after the other into the modules folder of a running `reel`, while a
//! client appends, a prober reads `/healthz` and a healthy projection's
//! read model, and a sampler watches reel's memory.
//!
//! Each mutant is a component whose main core module was mutated with
//! `wasm-mutate` (the crate of the wasmparser and wasm-encoder versions
//! wasmtime 48 uses, 0.254) and spliced back into the component in its place,
//! or the component with a few bytes flipped. Some are refused at load
//! (header, validation, link, `describe`), the others are deployed and run on
//! the log: they run as before, trap, or stop at a poison event. Whatever
//! they do, reel must not crash or hang (every probe answered, every file
//! accounted for in `/modules` in time), and its peak resident memory must
//! stay under twice its idle memory plus the modules' memory caps.
//!
//! Knobs: `REEL_FUZZ_MUTANTS` (30 on SQLite and 12 on PostgreSQL in CI;
//! `cargo xtask torture fuzz --mutants 200` for the long run), `REEL_TORTURE_SEED` (the mutations;
//! 1 unless set), `REEL_FUZZ_WATCH_MS` (how long each deployed mutant is
//! watched).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reel::testing::Client;
use reel::testing::workload::{OrderWorkload, generate, load};
use serde_json::{Value, json};

use super::common;
use super::process::{Reel, Rng, knob};
use super::soak::{proc_status_kib, with_custom_section};

/// The memory cap of a module instance in the run (`--memory-mib`).
const MEMORY_MIB: u64 = 32;
/// Module instances alive at once at most: the healthy projection's, the
/// mutant's worker and a rebuild of it beside (a mutant of another version),
/// and the one being swapped out.
const INSTANCES: u64 = 4;
/// How long a file may take to be loaded or refused, and a probe to be
/// answered, before reel counts as hung.
const HUNG: Duration = Duration::from_secs(60);

#[test]
fn fuzzed_modules_sqlite() {
    fuzz(common::Backend::Sqlite);
}

#[test]
fn fuzzed_modules_postgres() {
    fuzz(common::Backend::Postgres);
}

/// What became of the mutants.
#[derive(Debug, Default)]
struct Outcomes {
    /// Refused at load, by the first words of the reason.
    refused: BTreeMap<String, usize>,
    /// Deployed and applied events without an error.
    ran: usize,
    /// Deployed; their batches failed (a trap, an error), retried.
    trapped: usize,
    /// Deployed; stopped at a poison event.
    stopped: usize,
    /// Deployed; applied nothing and reported nothing while watched
    /// (e.g. still starting, or rebuilding from the start).
    idle: usize,
}

fn fuzz(backend: common::Backend) {
    // In CI: 30 on SQLite, 12 more on PostgreSQL (where the mutants' SQL
    // runs in PostgreSQL; the loader is the same).
    let mutants = knob("REEL_FUZZ_MUTANTS", if matches!(backend, common::Backend::Sqlite) { 30 } else { 12 });
    let watch = Duration::from_millis(knob("REEL_FUZZ_WATCH_MS", 1500) as u64);
    let seed = std::env::var("REEL_TORTURE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1u64);
    eprintln!("fuzz: seed {seed} (REEL_TORTURE_SEED), {mutants} mutants (REEL_FUZZ_MUTANTS)");
    let started = Instant::now();

    let (dir, setup, database) = super::common::scratch(backend);
    let db = database.as_deref();
    let modules = dir.path().join("modules");
    std::fs::copy(common::guest("customer_stats"), modules.join("customer_stats.wasm")).unwrap();
    let memory = MEMORY_MIB.to_string();
    let args = ["--memory-mib", &memory, "--batch-timeout", "2", "--batch-size", "200"];
    // A backlog for the mutants to work through.
    Reel::start(dir.path(), db, &args).kill();
    let backlog = generate(&OrderWorkload::new(1_000, seed));
    match db {
        None => load::insert_sqlite(&dir.path().join("data/events.db"), &backlog).unwrap(),
        Some(url) => setup.block_on(load::copy_postgres(url, &backlog)).unwrap(),
    };

    let mut reel = Reel::start(dir.path(), db, &args);
    let pid = reel.pid();
    let base = format!("http://{}", reel.addr);
    let mut client = Client::connect(&base).unwrap();
    wait_for(HUNG, || {
        let list = get(&mut client, "/projections");
        list[0]["name"] == "customer-stats" && list[0]["lag"] == 0
    });
    let idle = proc_status_kib(pid, "VmRSS:") / 1024.0;
    let bound = 2.0 * idle + (INSTANCES * MEMORY_MIB) as f64;

    let stop = Arc::new(AtomicBool::new(false));
    let prober = Prober::start(&base, &stop);
    let appender = {
        let (base, stop) = (base, Arc::clone(&stop));
        std::thread::spawn(move || append(&base, seed, &stop))
    };

    let originals = [
        std::fs::read(common::guest("order_summaries")).unwrap(),
        std::fs::read(common::guest("fixture_echo_a")).unwrap(),
    ];
    let mut rng = Rng(seed);
    let mut outcomes = Outcomes::default();
    let mut previous: Option<std::path::PathBuf> = None;
    let mut making = Duration::ZERO;
    for i in 0..mutants {
        let made = Instant::now();
        let (kind, bytes) = mutant(&originals[(i / 3) % 2], i, &mut rng);
        making += made.elapsed();
        if let Some(path) = previous.take() {
            std::fs::remove_file(path).unwrap();
        }
        let name = format!("mutant-{i:04}.wasm");
        let staged = dir.path().join(&name);
        std::fs::write(&staged, &bytes).unwrap();
        std::fs::rename(&staged, modules.join(&name)).unwrap();
        let path = modules.join(&name);
        previous = Some(path.clone());

        // Loaded or refused, in time.
        let mut file = Value::Null;
        wait_for(HUNG, || {
            assert!(reel.running(), "reel died on mutant {i} ({kind}): {}", reel.log_tail());
            file = file_status(&mut client, &path);
            file["compiling"] == false && (file["error"].is_string() || file["provides"].is_string())
        });
        let outcome = if let Some(error) = file["error"].as_str() {
            *outcomes.refused.entry(reason(error)).or_default() += 1;
            let error = error.split_once(": ").map_or(error, |(_, e)| e);
            format!("refused: {}", error.chars().take(300).collect::<String>())
        } else {
            let provides = file["provides"].as_str().unwrap().to_owned();
            let outcome = observe(&mut client, &provides, watch);
            match outcome {
                Watched::Ran => outcomes.ran += 1,
                Watched::Trapped => outcomes.trapped += 1,
                Watched::Stopped => outcomes.stopped += 1,
                Watched::Idle => outcomes.idle += 1,
            }
            format!("{provides}: {outcome:?}")
        };
        eprintln!("fuzz: mutant {i} ({kind}, {} bytes): {outcome}", bytes.len());
    }
    if let Some(path) = previous.take() {
        std::fs::remove_file(path).unwrap();
    }

    // Afterwards: the real module is taken again (what it finds in a read
    // model the mutants wrote to is another matter).
    let original = modules.join("order_summaries.wasm");
    std::fs::write(&original, &originals[0]).unwrap();
    wait_for(HUNG, || {
        let files = get(&mut client, "/modules");
        files.as_array().unwrap().iter().any(|f| {
            f["path"] == original.to_str().unwrap() && f["compiling"] == false && f["provides"] == "order-summaries@1"
        })
    });
    // The compiled code of the mutants does not pile up in the cache: past
    // the grace a load gets (twice the CPU deadline, 2 s here, and 5 s), the
    // next load leaves only the code of the files in use.
    std::thread::sleep(Duration::from_secs(2 * 2 + 5 + 1));
    let stats = modules.join("customer_stats.wasm");
    let before = file_status(&mut client, &stats)["hash"].clone();
    let refreshed = with_custom_section(&std::fs::read(&stats).unwrap(), 1);
    std::fs::write(dir.path().join("customer_stats.wasm"), &refreshed).unwrap();
    std::fs::rename(dir.path().join("customer_stats.wasm"), &stats).unwrap();
    wait_for(HUNG, || {
        let file = file_status(&mut client, &stats);
        file["hash"] != before && file["compiling"] == false && file["error"].is_null()
    });
    // Each entry with the seconds since it was written or last used, to
    // tell a late load from a pruning that did not run.
    let cached = || -> Vec<(String, f64)> {
        std::fs::read_dir(dir.path().join("data/compiled"))
            .unwrap()
            .flatten()
            .map(|e| {
                let age = e.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
                (e.file_name().to_string_lossy().into_owned(), age.map_or(-1.0, |a| a.as_secs_f64()))
            })
            .filter(|(name, _)| name.ends_with(".cwasm"))
            .collect()
    };
    // The pruning runs once the load is listed (a failed suite read the
    // cache in between: four entries, three of them past the grace).
    let deadline = Instant::now() + HUNG;
    let first = cached();
    let mut compiled = first.clone();
    while compiled.len() != 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        compiled = cached();
    }
    assert_eq!(
        compiled.len(),
        2,
        "compiled code of modules no longer in use stays in the cache: {compiled:#?}\n\
         when the load showed: {first:#?}\nmodules: {:#}",
        get(&mut client, "/modules")
    );

    stop.store(true, Ordering::Relaxed);
    let appended = appender.join().expect("the appender panicked");
    let probes = prober.join();
    wait_for(HUNG * 3, || {
        let list = get(&mut client, "/projections");
        let s = list.as_array().unwrap().iter().find(|p| p["name"] == "customer-stats").cloned().unwrap();
        s["lag"] == 0
    });
    assert!(reel.running(), "reel died: {}", reel.log_tail());
    let peak = proc_status_kib(pid, "VmHWM:") / 1024.0;
    drop(client);
    reel.terminate();
    let deployed = outcomes.ran + outcomes.trapped + outcomes.stopped + outcomes.idle;
    let refused: usize = outcomes.refused.values().sum();
    eprintln!(
        "fuzz: {backend:?}: {mutants} mutants (seed {seed}, made in {making:.1?}): {refused} refused at load \
         {:?}; {deployed} deployed: {} ran, {} trapped, {} stopped, {} idle while watched; {appended} events \
         appended meanwhile; {} probes of /healthz and customer-stats, all answered, slowest {:.0?}; peak RSS \
         {peak:.0} MiB, idle {idle:.0} MiB, bound {bound:.0} MiB (2 x idle + {INSTANCES} x {MEMORY_MIB} MiB); \
         {:.0?} in all",
        outcomes.refused,
        outcomes.ran,
        outcomes.trapped,
        outcomes.stopped,
        outcomes.idle,
        probes.count,
        probes.slowest,
        started.elapsed()
    );
    assert!(peak < bound, "peak RSS {peak:.0} MiB over the bound {bound:.0} MiB");
    assert!(deployed > 0, "no mutant was deployed: the run tried only the loader");
    if let Some(url) = db {
        setup.block_on(common::drop_database(url));
    }
}

/// What a deployed mutant did while watched.
#[derive(Debug)]
enum Watched {
    Ran,
    Trapped,
    Stopped,
    Idle,
}

/// Watch the deployment of `provides` (`name@version`: the serving version
/// or the one rebuilding beside it) for `watch`: trapped if it reports a new
/// failure or retries, stopped if it ends stopped, ran if it applied events.
fn observe(client: &mut Client, provides: &str, watch: Duration) -> Watched {
    let (name, version) = provides.rsplit_once('@').unwrap();
    let deployment = |client: &mut Client| {
        let status = get(client, &format!("/projections/{}", common::urlencode(name)));
        if status["version"] == version { status } else { status["rebuild"].clone() }
    };
    let first = deployment(client);
    let from = first["position"].as_i64().unwrap_or(0);
    let deadline = Instant::now() + watch;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = deployment(client);
        if now["state"] == "retrying" || now["last_error"] != first["last_error"] {
            return Watched::Trapped;
        }
        if Instant::now() > deadline {
            let moved = now["position"].as_i64().unwrap_or(0) > from;
            return match now["state"].as_str() {
                Some("stopped") => Watched::Stopped,
                Some("running") if moved => Watched::Ran,
                _ => Watched::Idle,
            };
        }
    }
}

/// What kind of refusal `error` (`PATH: WHAT: DETAIL`) is: its `WHAT`.
fn reason(error: &str) -> String {
    error.split(": ").nth(1).unwrap_or(error).to_owned()
}

/// Mutant `i` of `original` (a component): its main core module mutated by
/// wasm-mutate and spliced back (semantics kept for a third of them), or
/// some of its bytes flipped.
fn mutant(original: &[u8], i: usize, rng: &mut Rng) -> (&'static str, Vec<u8>) {
    match i % 3 {
        0 => ("byte flips", flip_bytes(original, rng)),
        kind => {
            let keep = kind == 1;
            let (index, module) = core_modules(original).into_iter().max_by_key(|(_, m)| m.len()).unwrap();
            let mut mutated = module.to_vec();
            // One to three mutations in a row.
            for _ in 0..1 + rng.next_u64() % 3 {
                for _attempt in 0..20 {
                    let next = {
                        let mut mutate = wasm_mutate::WasmMutate::default();
                        mutate.seed(rng.next_u64()).preserve_semantics(keep).fuel(1_000);
                        mutate.run(&mutated).ok().and_then(|mut all| all.next()).and_then(Result::ok)
                    };
                    if let Some(next) = next {
                        mutated = next;
                        break;
                    }
                }
            }
            (if keep { "wasm-mutate, semantics kept" } else { "wasm-mutate" }, splice(original, index, &mutated))
        }
    }
}

/// `bytes` with one to eight bytes changed at random places.
fn flip_bytes(bytes: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for _ in 0..1 + rng.next_u64() % 8 {
        let at = (rng.next_u64() % out.len() as u64) as usize;
        out[at] ^= (1 + rng.next_u64() % 255) as u8;
    }
    out
}

/// The top-level sections of a component: (id, content range).
fn sections(component: &[u8]) -> Vec<(u8, std::ops::Range<usize>)> {
    let mut at = 8; // magic and version
    let mut out = Vec::new();
    while at < component.len() {
        let id = component[at];
        let (size, len) = leb128(&component[at + 1..]);
        let start = at + 1 + len;
        out.push((id, start..start + size as usize));
        at = start + size as usize;
    }
    out
}

/// The core modules a component holds: (section index, module bytes).
fn core_modules(component: &[u8]) -> Vec<(usize, &[u8])> {
    const CORE_MODULE: u8 = 1;
    sections(component)
        .into_iter()
        .enumerate()
        .filter(|(_, (id, _))| *id == CORE_MODULE)
        .map(|(index, (_, range))| (index, &component[range]))
        .collect()
}

/// `component` with the content of its section `index` replaced by `module`.
fn splice(component: &[u8], index: usize, module: &[u8]) -> Vec<u8> {
    let mut out = component[..8].to_vec();
    for (i, (id, range)) in sections(component).into_iter().enumerate() {
        let content = if i == index { module } else { &component[range] };
        out.push(id);
        let mut n = content.len() as u64;
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            out.push(if n == 0 { byte } else { byte | 0x80 });
            if n == 0 {
                break;
            }
        }
        out.extend_from_slice(content);
    }
    out
}

/// An unsigned LEB128 number at the start of `bytes`: (value, its length).
fn leb128(bytes: &[u8]) -> (u64, usize) {
    let (mut value, mut shift) = (0u64, 0);
    for (i, byte) in bytes.iter().enumerate() {
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return (value, i + 1);
        }
        shift += 7;
    }
    panic!("a truncated LEB128 number");
}

/// Poll `done` every 50 ms until it holds; past `timeout`, reel is hung.
fn wait_for(timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "reel did not get there in {timeout:?}: hung?");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What `/modules` says of `path`.
fn file_status(client: &mut Client, path: &std::path::Path) -> Value {
    let files = get(client, "/modules");
    files.as_array().unwrap().iter().find(|f| f["path"] == path.to_str().unwrap()).cloned().unwrap_or(Value::Null)
}

/// `GET path`, `200`, as JSON.
fn get(client: &mut Client, path: &str) -> Value {
    let response = client.get(path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(response.status, 200, "GET {path}: {}", response.body);
    response.json().unwrap()
}

/// Append orders, 100 events a second, until `stop`; how many.
fn append(base: &str, seed: u64, stop: &AtomicBool) -> usize {
    let events = generate(&OrderWorkload::new(200_000, seed ^ 0xf022));
    // Connected once the events are made: a connection that sends nothing
    // for the header timeout (10 s; generating took longer on a loaded
    // machine) is closed by reel, and the first append met a broken pipe.
    let mut client = Client::connect(base).unwrap();
    let started = Instant::now();
    for (n, e) in events.iter().enumerate() {
        if stop.load(Ordering::Relaxed) {
            return n;
        }
        let due = started + Duration::from_millis(10 * n as u64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let body = json!({
            "stream_id": e.stream_id,
            "expected_version": e.version - 1,
            "events": [{ "event_type": e.event_type, "data": e.data }],
        })
        .to_string();
        let response = client.post("/events", Some(&body)).unwrap_or_else(|e| panic!("an append: {e}"));
        assert_eq!(response.status, 201, "an append: {}", response.body);
    }
    events.len()
}

/// Reads of `/healthz` and of the healthy projection's read model, ten a
/// second, each answered `200` in time.
struct Prober {
    thread: std::thread::JoinHandle<Probes>,
}

#[derive(Debug, Default)]
struct Probes {
    count: u64,
    slowest: Duration,
}

impl Prober {
    fn start(base: &str, stop: &Arc<AtomicBool>) -> Self {
        let (base, stop) = (base.to_owned(), Arc::clone(stop));
        let thread = std::thread::spawn(move || {
            let mut probes = Probes::default();
            let mut client = Client::connect(&base).unwrap();
            while !stop.load(Ordering::Relaxed) {
                for path in ["/healthz", "/projections/customer-stats/kv?prefix=customer/&limit=5"] {
                    let started = Instant::now();
                    let response = client.get(path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
                    let took = started.elapsed();
                    assert_eq!(response.status, 200, "GET {path}: {}", response.body);
                    assert!(took < HUNG, "GET {path} took {took:?}");
                    probes.count += 1;
                    probes.slowest = probes.slowest.max(took);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            probes
        });
        Self { thread }
    }

    fn join(self) -> Probes {
        self.thread.join().expect("a probe failed")
    }
}
