//! `reel.toml` and `reel config` (ADR 46), through the `reel` binary as a user
//! runs it: a file sets every kind of value, flags and environment variables
//! win over it, a key no flag has is refused with its line, and `reel config`
//! prints what `reel serve` would run with, secrets hidden.

use std::path::Path;
use std::process::Command;

/// `reel ARGS` in `dir` with only `env` in its environment: (success, stdout, stderr).
fn reel(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_reel"))
        .current_dir(dir)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (output.status.success(), text(output.stdout), text(output.stderr))
}

/// The line of `reel config`'s output that sets `key` (in the section last
/// opened before it): (value as written, where it came from).
fn setting<'o>(output: &'o str, section: &str, key: &str) -> (&'o str, &'o str) {
    let mut current = "";
    for line in output.lines() {
        if line.starts_with('[') {
            current = line;
            continue;
        }
        if current != section {
            continue;
        }
        let Some((setting, origin)) = line.split_once(" # ") else { continue };
        if let Some((k, v)) = setting.split_once(" = ")
            && k == key
        {
            return (v.trim(), origin.trim());
        }
    }
    panic!("no `{key}` in section `{section}` of:\n{output}");
}

const EVERY_KIND: &str = r#"# reel.toml
listen = "127.0.0.1:9999"
data-dir = "state"
batch-size = 500
batch-timeout = 2.5
keep-old = true
allow-host = ["reel.example", "reel.internal"]

[emit]
depth = 8

[set.order-summaries]
on-error = "skip"
memory-mib = 64
"#;

#[test]
fn a_file_sets_every_kind_of_value_and_flags_and_the_environment_win_over_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("reel.toml"), EVERY_KIND).unwrap();
    // ./reel.toml is read without being named.
    let (ok, out, err) = reel(
        dir.path(),
        &["config", "--batch-size", "700", "--set", "order-summaries.memory-mib=32"],
        &[("REEL_LISTEN", "127.0.0.1:7777")],
    );
    assert!(ok, "{err}");
    let top = "";
    assert_eq!(setting(&out, top, "data-dir"), ("\"state\"", "reel.toml:3"), "a string");
    assert_eq!(setting(&out, top, "batch-timeout"), ("2.5", "reel.toml:5"), "a number");
    assert_eq!(setting(&out, top, "keep-old"), ("true", "reel.toml:6"), "a boolean");
    assert_eq!(setting(&out, top, "allow-host"), ("[\"reel.example\", \"reel.internal\"]", "reel.toml:7"), "a list");
    assert_eq!(setting(&out, top, "emit-depth"), ("8", "reel.toml:10"), "a key in a table of flags");
    assert_eq!(setting(&out, top, "listen"), ("\"127.0.0.1:7777\"", "environment REEL_LISTEN"));
    assert_eq!(setting(&out, top, "batch-size"), ("700", "flag"));
    assert_eq!(setting(&out, top, "query-rows"), ("100000", "default"));
    let module = "[set.order-summaries]";
    assert_eq!(setting(&out, module, "on-error"), ("\"skip\"", "reel.toml:13"));
    assert_eq!(setting(&out, module, "memory-mib"), ("32", "flag"), "--set wins over the file key by key");

    // What `reel config` prints is a reel.toml that gives the same configuration.
    std::fs::write(dir.path().join("printed.toml"), &out).unwrap();
    let (ok, again, err) = reel(dir.path(), &["config", "--config", "printed.toml"], &[]);
    assert!(ok, "{err}");
    for (section, key, value) in [
        (top, "listen", "\"127.0.0.1:7777\""),
        (top, "batch-size", "700"),
        (top, "allow-host", "[\"reel.example\", \"reel.internal\"]"),
        (top, "keep-old", "true"),
        (module, "memory-mib", "32"),
        (module, "on-error", "\"skip\""),
    ] {
        let (printed, origin) = setting(&again, section, key);
        assert_eq!(printed, value, "{key}");
        assert!(origin.starts_with("printed.toml:"), "{key} from {origin}");
    }
    // REEL_CONFIG names the file when --config does not.
    let (ok, out, err) = reel(dir.path(), &["config"], &[("REEL_CONFIG", "printed.toml")]);
    assert!(ok, "{err}");
    assert!(setting(&out, top, "batch-size").1.starts_with("printed.toml:"));
}

#[test]
fn a_key_no_flag_has_is_an_error_naming_the_key_and_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let refused = |name: &str, text: &str, command: &str| {
        std::fs::write(dir.path().join(name), text).unwrap();
        let (ok, out, err) = reel(dir.path(), &[command, "--config", name], &[]);
        assert!(!ok, "{name} accepted:\n{out}");
        err
    };
    let err = refused("typo.toml", "listen = \"127.0.0.1:0\"\n\nbatch-sise = 3\n", "serve");
    assert!(err.contains("typo.toml:3: unknown key `batch-sise`"), "{err}");
    assert!(err.contains("did you mean `batch-size`?"), "{err}");
    let err = refused("table.toml", "[emit]\ndepth = 3\nper-evnt = 2\n", "config");
    assert!(err.contains("table.toml:3: unknown key `emit.per-evnt`"), "{err}");
    let err = refused("module.toml", "[set.order-summaries]\non-error = \"skip\"\ncolour = \"red\"\n", "config");
    assert!(err.contains("module.toml:3: `set.order-summaries.colour`: unknown setting `colour`"), "{err}");
    let err = refused("kind.toml", "keep-old = \"yes\"\n", "config");
    assert!(err.contains("kind.toml:1: `keep-old` is true or false"), "{err}");
    let err = refused("value.toml", "\nbatch-size = \"many\"\n", "config");
    assert!(err.contains("value.toml:2: `batch-size`: invalid value 'many'"), "{err}");
    let (ok, _, err) = reel(dir.path(), &["config", "--config", "absent.toml"], &[]);
    assert!(!ok && err.contains("absent.toml: no such file"), "{err}");
}

#[test]
fn reel_config_hides_tokens_and_passwords() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("reel.toml"),
        "token = \"tok-in-the-file\"\ndatabase = \"postgres://reel:hunter2@127.0.0.1:5432/reel?sslmode=disable\"\n",
    )
    .unwrap();
    let (ok, out, err) = reel(dir.path(), &["config"], &[]);
    assert!(ok, "{err}");
    assert_eq!(setting(&out, "", "token"), ("\"***\"", "reel.toml:1"));
    assert_eq!(setting(&out, "", "database").0, "\"postgres://reel:***@127.0.0.1:5432/reel?sslmode=disable\"");
    assert!(!out.contains("tok-in-the-file") && !out.contains("hunter2"), "{out}");
    let (ok, out, err) = reel(dir.path(), &["config"], &[("REEL_TOKEN", "tok-in-the-environment")]);
    assert!(ok, "{err}");
    assert_eq!(setting(&out, "", "token"), ("\"***\"", "environment REEL_TOKEN"));
    assert!(!out.contains("tok-in-the-environment"), "{out}");
    // The commands that talk to a server take its address from the file too.
    std::fs::write(dir.path().join("client.toml"), "server = \"http://127.0.0.1:9\"\n").unwrap();
    let (ok, _, err) = reel(dir.path(), &["status", "--config", "client.toml"], &[]);
    assert!(!ok && err.contains("127.0.0.1:9"), "{err}");
}
