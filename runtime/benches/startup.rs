//! Start-up time with a folder of modules: cold (nothing compiled yet) and
//! with the compiled-code cache from the previous start.
//!
//! ```sh
//! cargo bench -p reel --bench startup
//! ```
//!
//! Ten Rust components, plus the JavaScript, Python and C example components
//! when their `dist/` builds exist (`cargo xtask guests` builds them).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

fn modules() -> Vec<(String, PathBuf)> {
    let rust = [
        "order_summaries",
        "customer_stats",
        "fixture_echo_a",
        "fixture_faulty",
        "fixture_faulty_twin",
        "fixture_skipper",
        "fixture_bomb",
        "fixture_hog",
        "fixture_flood",
        "fixture_chatter",
    ];
    let mut all: Vec<(String, PathBuf)> = rust.iter().map(|m| (m.to_string(), common::guest(m))).collect();
    let projections = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../projections");
    for lang in ["js", "py", "c"] {
        for name in ["order-summaries", "customer-stats"] {
            let file = projections.join(format!("{name}-{lang}/dist/{name}-{lang}.wasm"));
            if file.exists() {
                all.push((format!("{name}-{lang}"), file));
            }
        }
    }
    all
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let modules = modules();
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::test_config(dir.path());
    config.cache_dir = Some(dir.path().join("cache"));
    std::fs::create_dir_all(&config.modules_dir).unwrap();
    let mut bytes = 0;
    for (name, file) in &modules {
        bytes += std::fs::metadata(file).unwrap().len();
        std::fs::copy(file, config.modules_dir.join(format!("{name}.wasm"))).unwrap();
    }
    println!(
        "start-up with {} modules ({} MB): {}",
        modules.len(),
        bytes >> 20,
        modules.iter().map(|m| m.0.as_str()).collect::<Vec<_>>().join(", ")
    );
    let mut per_module = Vec::new();
    for run in ["cold (empty compile cache)", "cached", "cached again"] {
        let started = Instant::now();
        let server = rt.block_on(reel::Server::start(config.clone())).unwrap();
        let elapsed = started.elapsed();
        let files = server.deployments().files();
        let failed: Vec<_> = files.iter().filter(|f| f.error.is_some()).collect();
        assert!(failed.is_empty(), "{failed:?}");
        let compile: f64 = files.iter().filter_map(|f| f.compile_ms).sum();
        println!(
            "{run:<28} {:>8.0} ms to serve; compile or cache load {compile:>8.0} ms in total",
            elapsed.as_secs_f64() * 1000.0
        );
        per_module.push(files);
        rt.block_on(server.shutdown());
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("\n{:<24} {:>10} {:>12} {:>12}", "module", "size (KB)", "cold (ms)", "cached (ms)");
    for (name, file) in &modules {
        let target = config.modules_dir.join(format!("{name}.wasm"));
        let ms = |run: usize| {
            per_module[run].iter().find(|f| f.path == target).and_then(|f| f.compile_ms).unwrap_or_default()
        };
        let size = std::fs::metadata(file).unwrap().len();
        println!("{name:<24} {:>10} {:>12.0} {:>12.1}", size / 1000, ms(0), ms(1));
    }
}
