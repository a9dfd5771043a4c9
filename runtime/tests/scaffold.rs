//! `reel new` in each language: the scaffold builds with its own instructions,
//! and dropped into a running server's folder it serves its query, counting
//! exactly the events appended.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Backend, Harness};
use serde_json::json;

/// Run a build step; on failure, show what it printed.
fn run(dir: &Path, program: &str, args: &[&str], env: &[(&str, &Path)]) {
    let mut command = Command::new(program);
    command.args(args).current_dir(dir);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        output.status.success(),
        "`{program} {}` in {} failed:\n{}\n{}",
        args.join(" "),
        dir.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `reel new name --lang lang --dir <lang>-project` in `parent`, then the
/// build its README gives;
/// returns the component.
fn scaffold_and_build(parent: &Path, name: &str, lang: &str) -> PathBuf {
    // In a folder not named after the projection: the README's paths must
    // still be right.
    let folder = format!("{lang}-project");
    run(parent, env!("CARGO_BIN_EXE_reel"), &["new", name, "--lang", lang, "--dir", &folder], &[]);
    let dir = parent.join(folder);
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    match lang {
        "rust" => {
            // A target folder of its own that outlives the test, so reruns are quick.
            let cargo_target = target.join("scaffold-test");
            run(
                &dir,
                env!("CARGO"),
                &["build", "--release", "--target", "wasm32-wasip2"],
                &[("CARGO_TARGET_DIR", &cargo_target)],
            );
            cargo_target.join(format!("wasm32-wasip2/release/{}.wasm", name.replace('-', "_")))
        }
        "js" => {
            run(&dir, "npm", &["ci", "--no-audit", "--no-fund"], &[]);
            run(&dir, "npm", &["run", "build"], &[]);
            dir.join(format!("dist/{name}.wasm"))
        }
        "python" => {
            run(&dir, "bash", &["build.sh"], &[]);
            dir.join(format!("dist/{name}.wasm"))
        }
        "c" => {
            // The wasm-tools `cargo xtask guests` installs, when it did.
            let installed = target.join("guest-tools/venv/bin/wasm-tools");
            let env: Vec<(&str, &Path)> =
                if installed.exists() { vec![("WASM_TOOLS", installed.as_path())] } else { vec![] };
            run(&dir, "bash", &["build.sh"], &env);
            dir.join(format!("dist/{name}.wasm"))
        }
        other => panic!("no language {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scaffold_builds_deploys_and_answers_its_query() {
    let parent = tempfile::tempdir().unwrap();
    let langs = ["rust", "js", "python", "c"];
    let components: Vec<(String, PathBuf)> = langs
        .iter()
        .map(|lang| {
            let name = format!("counter-{lang}");
            let component = scaffold_and_build(parent.path(), &name, lang);
            assert!(component.exists(), "{} was not built", component.display());
            (name, component)
        })
        .collect();

    let h = Harness::start(Backend::Sqlite, &[]).await;
    let events = [("order.placed", 3), ("order.shipped", 2), ("something.else", 1)];
    let mut last = 0;
    for (i, (event_type, n)) in events.iter().enumerate() {
        let batch: Vec<_> = (0..*n).map(|k| json!({ "event_type": event_type, "data": { "k": k } })).collect();
        let appended = h.append(&format!("stream-{i}"), Some(0), json!(batch)).await;
        last = appended["positions"].as_array().unwrap().last().unwrap().as_i64().unwrap();
    }
    // Dropped in while the server runs, after the events: each one rebuilds
    // from the start of the log.
    for (name, component) in &components {
        let staging = h.dir.path().join(format!("{name}.partial"));
        std::fs::copy(component, &staging).unwrap();
        std::fs::rename(&staging, h.config.modules_dir.join(format!("{name}.wasm"))).unwrap();
    }
    let expected = json!([
        { "count": 3, "event_type": "order.placed" },
        { "count": 2, "event_type": "order.shipped" },
        { "count": 1, "event_type": "something.else" },
    ]);
    for (name, _) in &components {
        let status =
            h.wait_status(name, Duration::from_secs(120), |s| s["position"] == last || s["state"] == "stopped").await;
        assert_eq!(status["position"], last, "{name}: {status:#}");
        let counts = h.get(&format!("/projections/{name}/query/counts?min_position={last}")).await;
        assert_eq!(counts, expected, "{name}");
        let rows = h.get(&format!("/projections/{name}/tables/event_counts?order=event_type")).await;
        assert_eq!(rows, expected, "{name}: the table behind the query");
    }
    h.finish().await;
}
