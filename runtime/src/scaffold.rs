//! `reel new`: a projection folder that builds and deploys as it is, in Rust,
//! JavaScript, Python or C. Everything it needs is copied in: the contract
//! (`wit/projection.wit`) and the language's helper (the Rust SDK, or
//! `lib-js`, `lib-py`, `lib-c`; the Rust SDK with the `reel-model` crate it
//! re-exports), the same files this repository builds its
//! examples with.

use std::path::{Path, PathBuf};

use reel_model::{PROJECTION_NAME_RULE, is_projection_name};

/// The languages `reel new` scaffolds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust, with the `reel-guest-sdk` crate.
    Rust,
    /// JavaScript, built with componentize-qjs.
    Js,
    /// Python, built with componentize-py.
    Python,
    /// C, built with clang, wit-bindgen and wasm-tools.
    C,
}

/// A file of a scaffold: where it goes, what it holds, whether it has
/// `{{name}}` / `{{ident}}` placeholders, whether it is executable.
struct File {
    path: &'static str,
    text: &'static str,
    template: bool,
    executable: bool,
}

const fn file(path: &'static str, text: &'static str) -> File {
    File { path, text, template: false, executable: false }
}

const fn template(path: &'static str, text: &'static str) -> File {
    File { path, text, template: true, executable: false }
}

const fn script(path: &'static str, text: &'static str, template: bool) -> File {
    File { path, text, template, executable: true }
}

/// The contract, every world of it (a scaffold may become a reactor or a decider).
const WIT: &[File] = &[
    file("wit/projection.wit", include_str!("../../wit/projection.wit")),
    file("wit/reactor.wit", include_str!("../../wit/reactor.wit")),
    file("wit/decider.wit", include_str!("../../wit/decider.wit")),
    file("wit/sink.wit", include_str!("../../wit/sink.wit")),
];

/// The test every scaffold starts with (`reel test`, ADR 38): the same
/// events and the same read model in every language.
const TEST: &[File] = &[
    file("fixture.jsonl", include_str!("../templates/common/fixture.jsonl")),
    file("snapshot.json", include_str!("../templates/common/snapshot.json")),
];

const RUST: &[File] = &[
    template("Cargo.toml", include_str!("../templates/rust/Cargo.toml")),
    template("src/lib.rs", include_str!("../templates/rust/src/lib.rs")),
    template("README.md", include_str!("../templates/rust/README.md")),
    file(".gitignore", "target/\n"),
    file("reel-guest-sdk/Cargo.toml", include_str!("../templates/rust/reel-guest-sdk.toml")),
    file("reel-guest-sdk/src/lib.rs", include_str!("../../guest-sdk/src/lib.rs")),
    file("reel-guest-sdk/src/context.rs", include_str!("../../guest-sdk/src/context.rs")),
    file("reel-guest-sdk/src/decider.rs", include_str!("../../guest-sdk/src/decider.rs")),
    file("reel-guest-sdk/src/event.rs", include_str!("../../guest-sdk/src/event.rs")),
    file("reel-guest-sdk/src/native.rs", include_str!("../../guest-sdk/src/native.rs")),
    file("reel-guest-sdk/src/sink.rs", include_str!("../../guest-sdk/src/sink.rs")),
    file("reel-guest-sdk/src/wasm.rs", include_str!("../../guest-sdk/src/wasm.rs")),
    file("reel-model/Cargo.toml", include_str!("../templates/rust/reel-model.toml")),
    file("reel-model/src/lib.rs", include_str!("../../model/src/lib.rs")),
    file("reel-model/src/cursor.rs", include_str!("../../model/src/cursor.rs")),
    file("reel-model/src/emission.rs", include_str!("../../model/src/emission.rs")),
    file("reel-model/src/emit.rs", include_str!("../../model/src/emit.rs")),
    file("reel-model/src/error.rs", include_str!("../../model/src/error.rs")),
    file("reel-model/src/event.rs", include_str!("../../model/src/event.rs")),
    file("reel-model/src/manifest.rs", include_str!("../../model/src/manifest.rs")),
    file("reel-model/src/time.rs", include_str!("../../model/src/time.rs")),
    file("reel-model/src/value.rs", include_str!("../../model/src/value.rs")),
];

const JS: &[File] = &[
    template("package.json", include_str!("../templates/js/package.json")),
    template("src/index.js", include_str!("../templates/js/src/index.js")),
    template("README.md", include_str!("../templates/js/README.md")),
    file(".gitignore", "node_modules/\ndist/\n"),
    file("lib-js/reel.js", include_str!("../../projections/lib-js/reel.js")),
    file("lib-js/json.js", include_str!("../../projections/lib-js/json.js")),
    file("lib-js/utf8.js", include_str!("../../projections/lib-js/utf8.js")),
    file("lib-js/build.mjs", include_str!("../../projections/lib-js/build.mjs")),
    file("lib-js/README.md", include_str!("../../projections/lib-js/README.md")),
];

/// The lock file of the examples' JavaScript toolchain, for the scaffold's.
const JS_LOCK: &str = include_str!("../../projections/order-summaries-js/package-lock.json");

const PYTHON: &[File] = &[
    template("app.py", include_str!("../templates/python/app.py")),
    file("requirements.txt", include_str!("../templates/python/requirements.txt")),
    script("build.sh", include_str!("../templates/python/build.sh"), true),
    template("README.md", include_str!("../templates/python/README.md")),
    file(".gitignore", ".venv/\ndist/\n__pycache__/\n"),
    script("lib-py/componentize.sh", include_str!("../../projections/lib-py/componentize.sh"), false),
    file("lib-py/reel_guest/__init__.py", include_str!("../../projections/lib-py/reel_guest/__init__.py")),
    file("lib-py/reel_guest/decider.py", include_str!("../../projections/lib-py/reel_guest/decider.py")),
    file("lib-py/reel_guest/errors.py", include_str!("../../projections/lib-py/reel_guest/errors.py")),
    file("lib-py/reel_guest/events.py", include_str!("../../projections/lib-py/reel_guest/events.py")),
    file("lib-py/reel_guest/jsontext.py", include_str!("../../projections/lib-py/reel_guest/jsontext.py")),
    file("lib-py/reel_guest/projection.py", include_str!("../../projections/lib-py/reel_guest/projection.py")),
    file("lib-py/reel_guest/store.py", include_str!("../../projections/lib-py/reel_guest/store.py")),
    file("lib-py/reel_guest/trace.py", include_str!("../../projections/lib-py/reel_guest/trace.py")),
    file("lib-py/README.md", include_str!("../../projections/lib-py/README.md")),
];

const C: &[File] = &[
    template("app.c", include_str!("../templates/c/app.c")),
    script("build.sh", include_str!("../templates/c/build.sh"), true),
    template("README.md", include_str!("../templates/c/README.md")),
    file(".gitignore", "gen/\nbuild/\ndist/\n"),
    script("lib-c/build-component.sh", include_str!("../../projections/lib-c/build-component.sh"), false),
    file("lib-c/reel_host.c", include_str!("../../projections/lib-c/reel_host.c")),
    file("lib-c/reel_host.h", include_str!("../../projections/lib-c/reel_host.h")),
    file("lib-c/reel_json.c", include_str!("../../projections/lib-c/reel_json.c")),
    file("lib-c/reel_json.h", include_str!("../../projections/lib-c/reel_json.h")),
    file("lib-c/reel_str.c", include_str!("../../projections/lib-c/reel_str.c")),
    file("lib-c/reel_str.h", include_str!("../../projections/lib-c/reel_str.h")),
    file("lib-c/README.md", include_str!("../../projections/lib-c/README.md")),
];

/// Check a projection name the way the runtime checks a manifest's.
fn check_name(name: &str) -> Result<(), String> {
    if is_projection_name(name) {
        Ok(())
    } else {
        Err(format!("`{name}` is not a projection name: {PROJECTION_NAME_RULE}"))
    }
}

/// Write a new projection `name` in `lang` into `dir` (which must not exist
/// or be empty). Returns the files written.
pub fn scaffold(name: &str, lang: Lang, dir: &Path) -> Result<Vec<PathBuf>, String> {
    check_name(name)?;
    if dir.exists() && std::fs::read_dir(dir).map_err(|e| e.to_string())?.next().is_some() {
        return Err(format!("{} exists and is not empty", dir.display()));
    }
    let ident = name.replace('-', "_");
    let fill = |text: &str| text.replace("{{name}}", name).replace("{{ident}}", &ident);
    let files: &[File] = match lang {
        Lang::Rust => RUST,
        Lang::Js => JS,
        Lang::Python => PYTHON,
        Lang::C => C,
    };
    let mut written = Vec::new();
    let mut write = |path: &str, text: String, executable: bool| -> Result<(), String> {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        std::fs::write(&target, text).map_err(|e| format!("writing {}: {e}", target.display()))?;
        if executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
        }
        written.push(target);
        Ok(())
    };
    for f in files.iter().chain(WIT).chain(TEST) {
        let text = if f.template { fill(f.text) } else { f.text.to_owned() };
        write(f.path, text, f.executable)?;
    }
    if lang == Lang::Js {
        write("package-lock.json", JS_LOCK.replace("\"order-summaries-js\"", &format!("\"{name}\"")), false)?;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_targets_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        assert!(scaffold("Bad Name", Lang::Rust, &dir.path().join("x")).unwrap_err().contains("not a projection name"));
        std::fs::write(dir.path().join("taken"), "").unwrap();
        assert!(scaffold("ok", Lang::Rust, dir.path()).unwrap_err().contains("is not empty"));
    }

    #[test]
    fn the_rust_scaffold_copies_every_source_of_the_sdk_the_model_and_the_contract() {
        // A file added to guest-sdk/src, model/src or wit/ and not listed here
        // leaves `reel new --lang rust` with a crate that does not build.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for (folder, copied_as) in
            [("guest-sdk/src", "reel-guest-sdk/src"), ("model/src", "reel-model/src"), ("wit", "wit")]
        {
            for entry in std::fs::read_dir(root.join(folder)).unwrap() {
                let path = entry.unwrap().path();
                if path.is_file() {
                    let name = path.file_name().unwrap().to_str().unwrap();
                    let copy = format!("{copied_as}/{name}");
                    assert!(RUST.iter().chain(WIT).any(|f| f.path == copy), "`reel new` does not copy {folder}/{name}");
                }
            }
        }
    }

    #[test]
    fn the_python_scaffold_copies_every_module_of_lib_py() {
        // `reel_guest/__init__.py` imports its siblings: one left out and the
        // scaffold's build fails at its first import.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../projections/lib-py/reel_guest");
        for entry in std::fs::read_dir(root).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "py") {
                let copy = format!("lib-py/reel_guest/{}", path.file_name().unwrap().to_str().unwrap());
                assert!(PYTHON.iter().any(|f| f.path == copy), "`reel new --lang python` does not copy {copy}");
            }
        }
    }

    #[test]
    fn every_language_gets_its_contract_and_helper() {
        // The helper, and its API reference (Rust's is the SDK's crate docs).
        for (lang, must) in [
            (Lang::Rust, ["reel-guest-sdk/src/wasm.rs", "reel-guest-sdk/src/lib.rs"]),
            (Lang::Js, ["lib-js/reel.js", "lib-js/README.md"]),
            (Lang::Python, ["lib-py/reel_guest/store.py", "lib-py/README.md"]),
            (Lang::C, ["lib-c/reel_host.c", "lib-c/README.md"]),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let files = scaffold("my-counter", lang, dir.path()).unwrap();
            for must in must {
                assert!(files.iter().any(|f| f.ends_with(must)), "{lang:?}: {must}");
            }
            for shared in WIT.iter().chain(TEST) {
                assert!(dir.path().join(shared.path).exists(), "{lang:?}: {}", shared.path);
            }
            let readme = std::fs::read_to_string(dir.path().join("README.md")).unwrap();
            assert!(readme.contains("my-counter") && !readme.contains("{{"), "{lang:?}: {readme}");
            assert!(readme.contains("--events fixture.jsonl --snapshot snapshot.json"), "{lang:?}: {readme}");
        }
    }
}
