//! The shell examples of the README and the language guides, run as written:
//! the README's "Query it" against a `reel serve` set up as `cargo xtask demo`
//! sets it up, and each guide's quick path (`reel new`, its build, the copy
//! into the modules folder, its query) against a plain `reel serve`. Every
//! `curl` must answer 2xx. Only three things are substituted: `reel` is this
//! build's binary, `localhost:8080` the server's port, `/path/to/projections-dir/`
//! its modules folder; toolchain installs (`# once`) are left out, the suite's
//! own are used, and the Rust build's `target` is a shared folder.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The ```sh blocks of the section `heading` (up to the next heading of the
/// same or a higher level).
fn sh_blocks(markdown: &str, heading: &str) -> Vec<String> {
    let level = heading.chars().take_while(|c| *c == '#').count();
    let mut lines = markdown.lines().skip_while(|l| l.trim_end() != heading).skip(1);
    let mut blocks = Vec::new();
    while let Some(line) = lines.next() {
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if hashes > 0 && hashes <= level && line[hashes..].starts_with(' ') {
            break;
        }
        if line.trim_end() == "```sh" {
            blocks.push(lines.by_ref().take_while(|l| l.trim_end() != "```").collect::<Vec<_>>().join("\n") + "\n");
        }
    }
    assert!(!blocks.is_empty(), "no ```sh block under {heading:?}");
    blocks
}

/// A file of the repository.
fn repo_file(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `reel serve` with its defaults (`./reel-data`, `./projections-dir`) in
/// `dir`, on a free port.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(dir: &Path) -> Self {
        std::fs::create_dir_all(dir.join("projections-dir")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_reel"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .current_dir(dir)
            .env("NO_COLOR", "1")
            .env_remove("REEL_DATA_DIR")
            .env_remove("REEL_PROJECTIONS")
            .env_remove("DATABASE_URL")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = loop {
            let line = lines.next().expect("reel exited before serving").unwrap();
            if let Some(addr) = line.split("reel is serving http://").nth(1) {
                break addr.trim().to_owned();
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        Self { child, addr }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `sh` runs before a block: `reel` is this build, and `curl` is curl
/// that fails unless the answer is 2xx, with its calls and bodies kept in
/// `$OUT`. A 404 or 503 is retried for up to a minute: a module copied into
/// the folder answers once reel has compiled it.
const PRELUDE: &str = r#"set -eu
reel() { "$REEL" "$@"; }
curl() {
    n=$(( ${n:-0} + 1 )); tries=0
    while :; do
        code=$(command curl -sS -o "$OUT/$n.body" -w '%{http_code}' "$@") || { echo "curl failed ($?): curl $*" >&2; exit 90; }
        # A module just dropped in answers 404 until it is loaded, then `[]`
        # until it has caught up with the events before it (read models are
        # eventually consistent; a user runs the query again).
        case "$code" in
            404|503) [ "$tries" -lt 600 ] || break; tries=$(( tries + 1 )); sleep 0.1 ;;
            200) [ "$(cat "$OUT/$n.body")" = "[]" ] && [ "$tries" -lt 600 ] || break; tries=$(( tries + 1 )); sleep 0.1 ;;
            *) break ;;
        esac
    done
    printf '%s\t%s\n' "$code" "$(echo "$*" | tr '\n' ' ')" >> "$OUT/calls"
    case "$code" in 2??) ;; *) echo "HTTP $code from: curl $*" >&2; cat "$OUT/$n.body" >&2; exit 91 ;; esac
}
"#;

/// Run `block` as written in `dir` against `server`; the curl calls made and
/// the last one's body.
fn run_block(dir: &Path, server: &Server, block: &str, env: &[(&str, PathBuf)]) -> (Vec<String>, String) {
    let out = tempfile::tempdir().unwrap();
    let modules = dir.join("projections-dir");
    let script = block
        .lines()
        .filter(|l| {
            let command = l.trim_start();
            let install =
                ["apt-get ", "cargo install ", "pip install ", "rustup "].iter().any(|p| command.starts_with(p));
            !(install || command.contains("# once"))
        })
        .collect::<Vec<_>>()
        .join("\n")
        .replace("/path/to/projections-dir/", &format!("{}/", modules.display()))
        .replace("localhost:8080", &server.addr);
    let mut command = Command::new("sh");
    command.arg("-c").arg(format!("{PRELUDE}{script}\n")).current_dir(dir).env_remove("CARGO_TARGET_DIR");
    command.env("REEL", env!("CARGO_BIN_EXE_reel")).env("OUT", out.path());
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "this block, as written, failed ({}):\n{script}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let calls: Vec<String> =
        std::fs::read_to_string(out.path().join("calls")).unwrap_or_default().lines().map(str::to_owned).collect();
    let last = std::fs::read_to_string(out.path().join(format!("{}.body", calls.len()))).unwrap_or_default();
    (calls, last)
}

/// `curl` from the test itself (not from a document).
fn curl(args: &[&str]) -> String {
    let output = Command::new("curl").args(["-sS", "--fail-with-body"]).args(args).output().unwrap();
    let body = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "curl {args:?}: {body}{}", String::from_utf8_lossy(&output.stderr));
    body
}

#[test]
fn the_readmes_query_examples_answer_as_written() {
    let dir = tempfile::tempdir().unwrap();
    // What `cargo xtask demo` does: the two examples deployed, 200 orders.
    for name in ["order_summaries", "customer_stats"] {
        let modules = dir.path().join("projections-dir");
        std::fs::create_dir_all(&modules).unwrap();
        std::fs::copy(common::guest(name), modules.join(format!("{name}.wasm"))).unwrap();
    }
    let server = Server::start(dir.path());
    let url = format!("http://{}", server.addr);
    let generate = Command::new(env!("CARGO_BIN_EXE_reel"))
        .args(["generate", "--orders", "200", "--seed", "1", "--server", &url])
        .output()
        .unwrap();
    assert!(generate.status.success(), "{generate:?}");

    let readme = repo_file("README.md");
    let blocks = sh_blocks(&readme, "## Query it");
    let (calls, _) = run_block(dir.path(), &server, &blocks.join("\n"), &[]);
    assert!(calls.len() >= 6, "every command ran: {calls:#?}");
    assert!(calls.iter().all(|c| c.starts_with('2')), "{calls:#?}");
    // The order appended above is what the reads find.
    let orders = curl(&[&format!("{url}/projections/order-summaries/tables/order_summaries?customer_id=c-1")]);
    assert!(orders.contains("\"customer_id\":\"c-1\""), "{orders}");
}

/// The guide's quick path for `lang`, as written, in a folder of its own with a
/// server of its own; the scaffold counts exactly the events appended before.
fn guide_quick_path(guide: &str, lang: &str, env: &[(&str, PathBuf)]) -> PathBuf {
    let dir = tempfile::tempdir().unwrap().keep();
    let server = Server::start(&dir);
    let url = format!("http://{}", server.addr);
    for (stream, event_type) in [("s-1", "order.placed"), ("s-2", "order.placed"), ("s-3", "order.shipped")] {
        let body =
            format!(r#"{{"stream_id": "{stream}", "events": [{{"event_type": "{event_type}", "data": {{}}}}]}}"#);
        curl(&["--json", &body, &format!("{url}/events")]);
    }
    let text = repo_file(&format!("docs/languages/{guide}.md"));
    let mut block = sh_blocks(&text, "## Start").join("\n");
    if lang == "rust" {
        // The build's target folder is shared between runs (a symlink where
        // the guide's `cargo build` and `cp target/...` look), so reruns are quick.
        let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/scaffold-test");
        std::fs::create_dir_all(&shared).unwrap();
        assert!(block.contains("cd my-projection\n"), "{block}");
        block =
            block.replace("cd my-projection\n", &format!("cd my-projection\nln -s '{}' target\n", shared.display()));
    }
    let (calls, last) = run_block(&dir, &server, &block, env);
    assert!(calls.iter().all(|c| c.starts_with("200")), "{lang}: {calls:#?}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&last).unwrap(),
        serde_json::json!([{ "count": 2, "event_type": "order.placed" }, { "count": 1, "event_type": "order.shipped" }]),
        "{lang}: the guide's query"
    );
    dir.join("my-projection")
}

/// Build again with `build` (the guide's command) and return the component.
fn rebuild(project: &Path, build: &[&str], env: &[(&str, PathBuf)]) -> Vec<u8> {
    let output =
        Command::new(build[0]).args(&build[1..]).current_dir(project).envs(env.iter().cloned()).output().unwrap();
    assert!(output.status.success(), "{build:?}: {}", String::from_utf8_lossy(&output.stderr));
    std::fs::read(project.join("dist/my-projection.wasm")).unwrap()
}

/// The same sources build to the same bytes (reel's compile cache is keyed by
/// them); other sources to other bytes, and back.
fn builds_are_reproducible(project: &Path, source: &str, build: &[&str]) {
    let first = std::fs::read(project.join("dist/my-projection.wasm")).unwrap();
    let path = project.join(source);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, &text).unwrap(); // the same content, written anew
    assert!(rebuild(project, build, &[]) == first, "{source}: the same sources built to other bytes");
    let comment = if source.ends_with(".js") { "// changed" } else { "# changed" };
    std::fs::write(&path, format!("{text}\n{comment}\n")).unwrap();
    assert!(rebuild(project, build, &[]) != first, "{source}: a change did not change the component");
    std::fs::write(&path, &text).unwrap();
    assert!(rebuild(project, build, &[]) == first, "{source}: back to the first sources, not to the first bytes");
}

#[test]
fn the_rust_guides_quick_path_runs_as_written() {
    let project = guide_quick_path("rust", "rust", &[]);
    std::fs::remove_dir_all(project.parent().unwrap()).unwrap();
}

#[test]
fn the_javascript_guides_quick_path_runs_as_written_and_rebuilds_to_the_same_bytes() {
    let project = guide_quick_path("javascript", "js", &[]);
    builds_are_reproducible(&project, "src/index.js", &["npm", "run", "build"]);
    std::fs::remove_dir_all(project.parent().unwrap()).unwrap();
}

#[test]
fn the_python_guides_quick_path_runs_as_written_and_rebuilds_to_the_same_bytes() {
    let project = guide_quick_path("python", "python", &[]);
    builds_are_reproducible(&project, "app.py", &["./build.sh"]);
    std::fs::remove_dir_all(project.parent().unwrap()).unwrap();
}

#[test]
fn the_c_guides_quick_path_runs_as_written() {
    // The wasm-tools `cargo xtask guests` installs, when it did.
    let installed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/guest-tools/venv/bin/wasm-tools");
    let env = if installed.exists() { vec![("WASM_TOOLS", installed)] } else { vec![] };
    let project = guide_quick_path("c", "c", &env);
    std::fs::remove_dir_all(project.parent().unwrap()).unwrap();
}
