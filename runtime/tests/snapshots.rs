//! `reel test` (ADR 38): each example's fixture builds the read model its
//! snapshot holds, in each of the four languages, on both backends, with one
//! checksum (ADR 37) for all eight; a snapshot with one value changed fails
//! with a diff naming that value, and `--update` writes it back.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Backend, guest, language_guest};
use reel::cli::snapshot::{TestRun, Verdict, run};

/// Each example's read-model checksum after its fixture: the same in every
/// language and on both backends.
const CHECKSUMS: [(&str, &str, &str); 2] = [
    ("order-summaries", "order_summaries", "sha256:4c5920a25fb9f5bd0ee6f4efe7ab53475eae110c918381622cdc58fc109d6f5d"),
    ("customer-stats", "customer_stats", "sha256:f29c7fa377f43520b390e969b2f30b2451ef630a3a457feb639ecce1a8881d74"),
];

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../projections").join(name)
}

fn cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("reel-compile-cache")
}

both_backends!(each_example_matches_its_snapshot_in_every_language);

async fn each_example_matches_its_snapshot_in_every_language(backend: Backend) {
    let database = (backend == Backend::Postgres).then(common::postgres_admin_url);
    for (example, crate_name, checksum) in CHECKSUMS {
        let folder = self::example(example);
        let modules = [guest(crate_name)]
            .into_iter()
            .chain(["js", "py", "c"].iter().map(|lang| language_guest(&format!("{example}-{lang}"))));
        for module in modules {
            let test = TestRun {
                module: module.clone(),
                events: folder.join("fixture.jsonl"),
                snapshot: Some(folder.join("snapshot.json")),
                update: false,
                database: database.clone(),
                cache_dir: Some(cache()),
            };
            let report = run(&test).await.unwrap_or_else(|e| panic!("{}: {e:#}", module.display()));
            assert_eq!(report.verdict, Verdict::Passed, "{}: see the diff above", module.display());
            assert!(report.projection.starts_with(example), "{}", report.projection);
            assert_eq!(report.checksum.checksum, checksum, "{}: {:#?}", module.display(), report.checksum);
        }
    }
}

#[test]
fn a_snapshot_with_one_value_changed_fails_with_a_diff_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let folder = example("order-summaries");
    let snapshot = std::fs::read_to_string(folder.join("snapshot.json")).unwrap();
    let line = snapshot.lines().find(|l| l.trim() == r#""status": "cancelled","#).expect("a cancelled order");
    let changed_line = line.replace("cancelled", "canceled");
    let changed = snapshot.replacen(line, &changed_line, 1);
    let file = dir.path().join("snapshot.json");
    std::fs::write(&file, &changed).unwrap();
    let reel = |update: bool| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_reel"));
        command.arg("test").arg(guest("order_summaries")).arg("--events").arg(folder.join("fixture.jsonl"));
        command.arg("--snapshot").arg(&file).env("XDG_CACHE_HOME", Path::new(env!("CARGO_TARGET_TMPDIR")));
        if update {
            command.arg("--update");
        }
        command.output().unwrap()
    };

    let output = reel(false);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("the read model differs from"), "{stdout}");
    let removed: Vec<&str> = stdout.lines().filter(|l| l.starts_with("- ")).collect();
    let added: Vec<&str> = stdout.lines().filter(|l| l.starts_with("+ ")).collect();
    assert_eq!(removed, [format!("- {changed_line}")], "exactly the changed line: {stdout}");
    assert_eq!(added, [format!("+ {line}")], "{stdout}");
    assert!(stdout.contains("--update"), "the way to accept it is named: {stdout}");

    let output = reel(true);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), snapshot, "--update writes the read model back");
    assert!(reel(false).status.success());
}
