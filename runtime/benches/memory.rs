//! Memory (issue 29): the resident set (RSS) of a `reel serve` process with
//! ten modules deployed and idle, and across repeated hot swaps.
//!
//! ```sh
//! cargo bench -p reel --bench memory                         # both backends, 50 swaps of each swapped module
//! cargo bench -p reel --bench memory -- --backend sqlite --swaps 20
//! ```
//!
//! The ten modules: `order-summaries` and `customer-stats` in Rust,
//! JavaScript, Python and C, and the Rust fixtures `noop` and `echo-a`
//! (`cargo xtask guests` builds the other languages' components; the bench
//! fails when one is missing). `reel serve` runs with its defaults. RSS
//! (`VmRSS`, split into anonymous and file-backed pages, from
//! /proc/PID/status) is read:
//!
//! 1. idle, 5 s after the first start, which compiled every module (`VmHWM`,
//!    the peak, is the compilation's);
//! 2. idle, 5 s after a restart that loaded them from the compile cache;
//! 3. idle, 5 s after each module applied a workload of `--orders` orders;
//! 4. across `--swaps` hot swaps of the same module, for `customer-stats` in
//!    Rust, JavaScript and Python in turn: the file is replaced by the same
//!    component with or without an extra custom section, so its hash changes
//!    while its code does not (the first swap compiles it, the others load
//!    from the compile cache). After each swap one event is appended and
//!    read back through the module's `query` export (`min_position`), so the
//!    new code has run both in the worker and as a query instance.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::Backend;
use reel::testing::Client;

/// Memory of a process, from /proc/PID/status, in MiB.
#[derive(Clone, Copy)]
struct Rss {
    rss: f64,
    anon: f64,
    file: f64,
    peak: f64,
}

impl Rss {
    fn of(pid: u32) -> Self {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kib = |field: &str| -> f64 {
            let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field}"));
            line[field.len()..].trim().trim_end_matches("kB").trim().parse::<f64>().unwrap() / 1024.0
        };
        Rss { rss: kib("VmRSS:"), anon: kib("RssAnon:"), file: kib("RssFile:"), peak: kib("VmHWM:") }
    }

    fn line(&self) -> String {
        format!(
            "RSS {:>6.1} MiB (anonymous {:>6.1}, files {:>5.1}); peak so far {:>6.1} MiB",
            self.rss, self.anon, self.file, self.peak
        )
    }
}

/// A running `reel serve`.
struct Reel {
    child: std::process::Child,
    url: String,
}

impl Reel {
    fn start(data: &Path, modules: &Path, database: Option<&str>) -> Self {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_reel"));
        command.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(data).arg("--projections").arg(modules);
        if let Some(url) = database {
            command.args(["--database", url]);
        }
        let mut child = command
            .env("RUST_LOG", "info,sqlx=warn")
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let url = loop {
            let line = lines.next().expect("reel exited before serving").unwrap();
            if let Some(addr) = line.split("reel is serving ").nth(1) {
                break addr.trim().to_owned();
            }
        };
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if line.contains("WARN") || line.contains("ERROR") {
                    eprintln!("reel: {line}");
                }
            }
        });
        Reel { child, url }
    }

    fn client(&self) -> Client {
        Client::connect(&self.url).unwrap()
    }

    fn rss(&self) -> Rss {
        Rss::of(self.child.id())
    }

    /// A gauge of `/metrics` in MiB: what the read models' KV caches
    /// (`reel_kv_cache_bytes`) and SQLite's page caches
    /// (`reel_sqlite_memory_bytes`) hold is data kept for the next batches,
    /// not memory held for nothing.
    fn metric_mib(&self, name: &str) -> f64 {
        let metrics = self.client().get("/metrics").unwrap().body;
        common::gauge(&metrics, name).unwrap_or_else(|| panic!("no {name}")) / (1024.0 * 1024.0)
    }

    /// The module files' status, once none is compiling; panics on a file
    /// that failed.
    fn modules_loaded(&self, count: usize) -> Vec<serde_json::Value> {
        let started = Instant::now();
        loop {
            let files = self.client().get("/modules").unwrap().json().unwrap();
            let files = files.as_array().unwrap().clone();
            for f in &files {
                assert!(f["error"].is_null(), "{f}");
            }
            let ready = files.iter().filter(|f| f["compiling"] == false && f["provides"].is_string()).count();
            if ready == count && files.len() == count {
                return files;
            }
            assert!(started.elapsed() < Duration::from_secs(900), "modules not loaded: {files:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Wait until every projection has applied `position`.
    fn caught_up(&self, position: i64) {
        let started = Instant::now();
        loop {
            let list = self.client().get("/projections").unwrap().json().unwrap();
            let list = list.as_array().unwrap();
            let behind: Vec<_> =
                list.iter().filter(|p| p["position"].as_i64().unwrap_or(0) < position).map(|p| &p["name"]).collect();
            if behind.is_empty() && !list.is_empty() {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(900), "still behind {position}: {behind:?}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn stop(mut self) {
        let _ = std::process::Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

/// The ten modules: (file name in the modules folder, component).
fn modules() -> Vec<(String, PathBuf)> {
    let mut all = Vec::new();
    for crate_name in ["order_summaries", "customer_stats", "fixture_noop", "fixture_echo_a"] {
        all.push((format!("{crate_name}.wasm"), common::guest(crate_name)));
    }
    for lang in ["js", "py", "c"] {
        for name in ["order-summaries", "customer-stats"] {
            let name = format!("{name}-{lang}");
            all.push((format!("{name}.wasm"), common::language_guest(&name)));
        }
    }
    all
}

/// `component` with a custom section appended: the same code, another hash.
fn with_custom_section(component: &[u8]) -> Vec<u8> {
    let name = b"reel-bench-swap";
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(b"B");
    let mut out = component.to_vec();
    out.push(0); // custom section id
    out.push(section.len() as u8); // its size (LEB128, < 128)
    out.extend_from_slice(&section);
    out
}

fn idle(label: &str, reel: &Reel) -> Rss {
    std::thread::sleep(Duration::from_secs(5));
    let rss = reel.rss();
    let (kv, sqlite) = (reel.metric_mib("reel_kv_cache_bytes"), reel.metric_mib("reel_sqlite_memory_bytes"));
    println!("{label:<52} {}; KV caches {kv:.1} MiB, SQLite {sqlite:.1} MiB", rss.line());
    rss
}

fn run(backend: Backend, orders: usize, swaps: usize, rt: &tokio::runtime::Runtime) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let folder = dir.path().join("modules");
    std::fs::create_dir_all(&folder).unwrap();
    let modules = modules();
    for (file, component) in &modules {
        std::fs::copy(component, folder.join(file)).unwrap();
    }
    let database = (backend == Backend::Postgres).then(|| rt.block_on(common::create_database()));
    println!("\n== {backend:?}: {} modules, reel serve with its defaults", modules.len());

    let started = Instant::now();
    let reel = Reel::start(&data, &folder, database.as_deref());
    reel.modules_loaded(modules.len());
    println!("first start: every module compiled in {:.0} s", started.elapsed().as_secs_f64());
    idle("idle after the first start (all compiled)", &reel);
    reel.stop();

    let started = Instant::now();
    let reel = Reel::start(&data, &folder, database.as_deref());
    reel.modules_loaded(modules.len());
    println!("restart: every module loaded from the compile cache in {:.1} s", started.elapsed().as_secs_f64());
    idle("idle after a restart (compile cache)", &reel);

    let events = reel::testing::workload::generate(&reel::testing::workload::OrderWorkload::new(orders, 7));
    let count = events.len();
    let last = rt.block_on(async {
        match &database {
            None => reel::testing::workload::load::insert_sqlite(&data.join("events.db"), &events).unwrap(),
            Some(url) => reel::testing::workload::load::copy_postgres(url, &events).await.unwrap(),
        }
    });
    let started = Instant::now();
    reel.caught_up(last);
    println!("{count} events applied by every module in {:.1} s", started.elapsed().as_secs_f64());
    idle(&format!("idle after {count} events applied by each"), &reel);

    let mut client = reel.client();
    let mut appended = 0;
    for file in ["customer_stats.wasm", "customer-stats-js.wasm", "customer-stats-py.wasm"] {
        let original = std::fs::read(folder.join(file)).unwrap();
        let variants = [original.clone(), with_custom_section(&original)];
        let hash = |files: &[serde_json::Value]| {
            let entry = files.iter().find(|f| f["path"].as_str().is_some_and(|p| p.ends_with(file))).unwrap();
            (entry["hash"].as_str().unwrap().to_owned(), entry["provides"].as_str().unwrap().to_owned())
        };
        let (mut current, provides) = hash(&reel.modules_loaded(modules.len()));
        let name = provides.split('@').next().unwrap().to_owned();
        let before = reel.rss();
        let mut peak = before.rss;
        println!("{:<52} {}", format!("{name}: before {swaps} swaps"), before.line());
        let started = Instant::now();
        let mut first_swap = Duration::ZERO;
        for swap in 1..=swaps {
            let swapped = Instant::now();
            let staged = dir.path().join("staged.wasm");
            std::fs::write(&staged, &variants[swap % 2]).unwrap();
            std::fs::rename(&staged, folder.join(file)).unwrap();
            let deadline = Instant::now() + Duration::from_secs(900);
            loop {
                let (now, _) = hash(&reel.modules_loaded(modules.len()));
                if now != current {
                    current = now;
                    break;
                }
                assert!(Instant::now() < deadline, "swap {swap} of {file} not seen");
                std::thread::sleep(Duration::from_millis(50));
            }
            appended += 1;
            let body = format!(
                r#"{{"stream_id":"order-swap-{appended}","expected_version":0,"events":[{{"event_type":"order.placed","data":{{"orderId":"swap-{appended}","customerId":"c-swap","items":[{{"productId":"p-1","quantity":1,"price":9.5}}],"total":9.5}}}}]}}"#
            );
            let response = client.post("/events", Some(&body)).unwrap();
            assert_eq!(response.status, 201, "{}", response.body);
            let position = response.json().unwrap()["positions"][0].as_i64().unwrap();
            let response = client
                .get(&format!(
                    "/projections/{name}/query/customer?args=%7B%22customerId%22%3A%22c-swap%22%7D&min_position={position}"
                ))
                .unwrap();
            assert_eq!(response.status, 200, "{}", response.body);
            let count = response.json().unwrap()["orders"].as_i64();
            assert_eq!(count, Some(appended as i64), "{name} after swap {swap}: {}", response.body);
            if swap == 1 {
                first_swap = swapped.elapsed();
            }
            let rss = reel.rss();
            peak = peak.max(rss.rss);
            if swap % 10 == 0 || swap == swaps {
                println!("{:<52} {}", format!("{name}: after swap {swap}"), rss.line());
            }
        }
        let after = idle(&format!("{name}: idle after {swaps} swaps"), &reel);
        println!(
            "{name}: {swaps} swaps in {:.1} s (the first, compiling, {:.1} s): RSS start {:.1}, end {:.1}, \
             peak {peak:.1} MiB (end - start {:+.1} MiB)",
            started.elapsed().as_secs_f64(),
            first_swap.as_secs_f64(),
            before.rss,
            after.rss,
            after.rss - before.rss
        );
    }
    reel.stop();
    if let Some(url) = &database {
        rt.block_on(common::drop_database(url));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| args.iter().position(|a| a == name).map(|i| args[i + 1].clone());
    let swaps: usize = value("--swaps").map_or(50, |s| s.parse().unwrap());
    let orders: usize = value("--orders").map_or(10_000, |s| s.parse().unwrap());
    let backends = match value("--backend").as_deref() {
        Some("sqlite") => vec![Backend::Sqlite],
        Some("postgres") => vec![Backend::Postgres],
        _ => vec![Backend::Sqlite, Backend::Postgres],
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    for backend in backends {
        run(backend, orders, swaps, &rt);
    }
}
