//! The component `reel test` runs: a `.wasm` file as given, or a projection
//! folder built with its own command first (the ones `reel new` writes in
//! its README): `cargo build --release --target wasm32-wasip2` for a
//! `Cargo.toml`, `npm run build` for a `package.json`, `./build.sh` else.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

/// The component at `path`, building the folder first if it is one.
pub fn module(path: &Path) -> anyhow::Result<PathBuf> {
    if !path.is_dir() {
        if !path.exists() {
            bail!("no module {}: give a .wasm file or a projection folder", path.display());
        }
        return Ok(path.to_owned());
    }
    let (program, args, output): (&str, &[&str], PathBuf) = if path.join("Cargo.toml").exists() {
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| path.join("target"), PathBuf::from);
        ("cargo", &["build", "--release", "--target", "wasm32-wasip2"], target.join("wasm32-wasip2/release"))
    } else if path.join("package.json").exists() {
        ("npm", &["run", "build"], path.join("dist"))
    } else if path.join("build.sh").exists() {
        ("./build.sh", &[], path.join("dist"))
    } else {
        bail!(
            "{}: no Cargo.toml, package.json or build.sh to build a module with; give the .wasm file",
            path.display()
        );
    };
    eprintln!("reel test: building {}: {program} {}", path.display(), args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(path)
        .status()
        .with_context(|| format!("cannot run {program} in {}", path.display()))?;
    if !status.success() {
        bail!("building {} failed ({status})", path.display());
    }
    let wanted = crate_file(path);
    newest_wasm(&output, wanted.as_deref()).with_context(|| format!("the build left no .wasm in {}", output.display()))
}

/// A Rust crate's component file name: its package name with `_` for `-`.
fn crate_file(folder: &Path) -> Option<String> {
    let manifest = std::fs::read_to_string(folder.join("Cargo.toml")).ok()?;
    let mut in_package = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package && let Some(value) = line.strip_prefix("name") {
            let name = value.trim_start().strip_prefix('=')?.trim().trim_matches('"');
            return Some(format!("{}.wasm", name.replace('-', "_")));
        }
    }
    None
}

/// `dir/wanted`, or else the newest `.wasm` in `dir`.
fn newest_wasm(dir: &Path, wanted: Option<&str>) -> Option<PathBuf> {
    if let Some(file) = wanted.map(|w| dir.join(w)).filter(|f| f.exists()) {
        return Some(file);
    }
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
}
