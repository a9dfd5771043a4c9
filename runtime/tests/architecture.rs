//! The layer order of `runtime/src`: a top-level module may use only modules
//! ranked below it, so no two of them import each other, however indirectly.
//!
//! `LAYERS` is the ranking; `lib.rs`'s `# Layout` and the README's
//! `### Layers` list the same one (checked here too). Every `crate::NAME`
//! path outside comments and strings counts (`use crate::{a, b::c}` too),
//! except in `#[cfg(test)]` items: a unit test may reach a real backend.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// From the floor up (layer 1 first). Modules on one line are peers:
/// neither may use the other.
const LAYERS: &[&[&str]] = &[
    &["config", "text"],
    &["source", "store"],
    &["sqlite", "postgres"],
    &["host"],
    &["modules"],
    &["worker", "decide", "sinks"],
    &["deploy"],
    &["reads"],
    &["api"],
    &["server"],
    &["client"],
    &["cli", "scaffold"],
    &["testing"],
];

/// One `crate::` path: the line it is on and the top-level name it reaches.
#[derive(Debug, PartialEq)]
struct Reach {
    line: usize,
    name: String,
}

#[test]
fn no_module_imports_one_ranked_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let rank = ranks();
    let declared = top_level_modules(&std::fs::read_to_string(src.join("lib.rs")).unwrap());
    let unranked: Vec<_> = declared.iter().filter(|m| !rank.contains_key(m.as_str())).collect();
    assert!(
        unranked.is_empty(),
        "lib.rs declares {unranked:?}, not ranked in LAYERS of tests/architecture.rs: add each at its rank"
    );
    let gone: Vec<_> = rank.keys().filter(|m| !declared.iter().any(|d| d == *m)).collect();
    assert!(gone.is_empty(), "LAYERS ranks {gone:?}, which lib.rs no longer declares");
    let aliases = root_reexports(&std::fs::read_to_string(src.join("lib.rs")).unwrap());

    let mut upward = Vec::new();
    for file in rust_files(&src) {
        let relative = file.strip_prefix(&src).unwrap();
        let Some(module) = owner(relative) else { continue };
        let text = std::fs::read_to_string(&file).unwrap();
        for reach in reaches(&text) {
            let target = aliases.get(&reach.name).map_or(reach.name.as_str(), String::as_str);
            let Some(&to) = rank.get(target) else { continue };
            if target != module && to >= rank[module] {
                let code = text.lines().nth(reach.line - 1).unwrap_or_default().trim();
                upward.push(format!(
                    "runtime/src/{}:{}: {module} (layer {}) uses {target} (layer {}): {code}",
                    relative.display(),
                    reach.line,
                    rank[module] + 1,
                    to + 1
                ));
            }
        }
    }
    assert!(upward.is_empty(), "imports of a module not ranked below the importer:\n{}", upward.join("\n"));
}

#[test]
fn lib_rs_and_the_readme_show_the_same_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let expected: Vec<Vec<String>> = LAYERS.iter().map(|layer| layer.iter().map(|m| m.to_string()).collect()).collect();
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
    let lib_layers = numbered_layers(lib.lines().filter_map(|l| l.strip_prefix("//!")).map(str::trim), "# Layout");
    assert_eq!(lib_layers, expected, "lib.rs's `# Layout` list differs from LAYERS");
    let readme = std::fs::read_to_string(root.join("../README.md")).unwrap();
    let readme_layers = numbered_layers(readme.lines().map(str::trim), "### Layers");
    assert_eq!(readme_layers, expected, "the README's `### Layers` list differs from LAYERS");
}

/// The checker itself: it must see each shape an upward path can take.
#[test]
fn every_shape_of_a_crate_path_is_seen() {
    let text = "use crate::a::B;\nuse crate::{b, c::{D, E}, d::F as G};\n// crate::comment\n\
                let s = \"crate::string\"; let c = '\"'; crate::e::call();\n\
                #[cfg(test)]\nmod tests { use crate::hidden; }\nfn f<'a>() { pub(in crate::g) struct H; }\n";
    let names: Vec<_> = reaches(text).into_iter().map(|r| (r.line, r.name)).collect();
    let expect = [(1, "a"), (2, "b"), (2, "c"), (2, "d"), (4, "e"), (7, "g")];
    assert_eq!(names, expect.map(|(l, n)| (l, n.to_string())));
}

fn ranks() -> BTreeMap<&'static str, usize> {
    let mut rank = BTreeMap::new();
    for (i, layer) in LAYERS.iter().enumerate() {
        for m in *layer {
            assert!(rank.insert(*m, i).is_none(), "{m} is ranked twice in LAYERS");
        }
    }
    rank
}

/// The top-level module a file under `src/` belongs to (`None`: the crate
/// roots, whose `crate::` is the crate itself or, for main.rs, the binary).
fn owner(relative: &Path) -> Option<&str> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" | "main.rs" => None,
        file => Some(file.strip_suffix(".rs").unwrap_or(file)),
    }
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// `mod NAME;` and `pub mod NAME;` lines of lib.rs.
fn top_level_modules(lib: &str) -> Vec<String> {
    let code = code_only(lib);
    code.lines()
        .filter_map(|l| l.trim().strip_suffix(';'))
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            (words.len() >= 2 && words[words.len() - 2] == "mod").then(|| words[words.len() - 1].to_string())
        })
        .collect()
}

/// What lib.rs re-exports at the root (`pub use server::{Server, run};`):
/// `crate::run` reaches `server`.
fn root_reexports(lib: &str) -> BTreeMap<String, String> {
    let mut aliases = BTreeMap::new();
    for line in code_only(lib).lines().filter_map(|l| l.trim().strip_prefix("pub use ")) {
        let Some((module, items)) = line.trim_end_matches(';').split_once("::") else { continue };
        for item in items.trim_matches(['{', '}']).split(',') {
            let name = item.rsplit(" as ").next().unwrap().trim();
            aliases.insert(name.to_string(), module.to_string());
        }
    }
    aliases
}

/// The numbered list under `heading` (``1. `config`, `text`: ...``): each
/// item's backquoted module names before its first colon.
fn numbered_layers<'a>(lines: impl Iterator<Item = &'a str>, heading: &str) -> Vec<Vec<String>> {
    let list = lines.skip_while(|l| *l != heading).skip_while(|l| !starts_numbered(l)).take_while(|l| !l.is_empty());
    list.filter(|l| starts_numbered(l))
        .map(|line| {
            let names = line.split_once(':').map_or(line, |(names, _)| names);
            names.split('`').skip(1).step_by(2).map(String::from).collect()
        })
        .collect()
}

fn starts_numbered(line: &str) -> bool {
    line.split_once(". ").is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Every `crate::NAME` in `text`'s code, in order.
fn reaches(text: &str) -> Vec<Reach> {
    let code = without_test_items(&code_only(text));
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(i) = code[at..].find("crate::") {
        let start = at + i;
        at = start + "crate::".len();
        let before = code[..start].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let line = code[..start].matches('\n').count() + 1;
        let rest = &code[at..];
        if let Some(group) = rest.strip_prefix('{') {
            found.extend(group_heads(group).into_iter().map(|name| Reach { line, name }));
        } else {
            found.push(Reach { line, name: identifier(rest) });
        }
    }
    found
}

/// The first segment of each item of a `{...}` use group (text after `{`).
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = vec![identifier(group.trim_start())];
    let mut depth = 0;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => heads.push(identifier(group[i + 1..].trim_start())),
            _ => {}
        }
    }
    heads.retain(|h| !h.is_empty());
    heads
}

fn identifier(text: &str) -> String {
    text.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()
}

/// `text` with comments, strings and char literals blanked (newlines kept,
/// so line numbers stay).
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 1;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 1;
                    if depth == 0 {
                        i += 1;
                        break;
                    }
                }
                blank(&mut out, chars[i]);
                i += 1;
            }
        } else if c == 'r' && matches!(next, Some('"' | '#')) && !prev_is_ident(&chars, i) {
            // A raw string: r"..." or r#"..."#.
            let hashes = chars[i + 1..].iter().take_while(|c| **c == '#').count();
            if chars.get(i + 1 + hashes) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            i += 2 + hashes;
            while i < chars.len()
                && !(chars[i] == '"' && chars[i + 1..].iter().take(hashes).filter(|c| **c == '#').count() == hashes)
            {
                blank(&mut out, chars[i]);
                i += 1;
            }
            i += 1 + hashes;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                blank(&mut out, chars[i]);
                i += 1;
            }
            i += 1;
        } else if c == '\'' && next == Some('\\') {
            i += 3;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn prev_is_ident(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

/// `code` with each `#[cfg(test)]` item blanked, up to its closing brace
/// (or `;`), newlines kept.
fn without_test_items(code: &str) -> String {
    let mut out = code.to_string();
    let mut from = 0;
    while let Some(i) = out[from..].find("#[cfg(test)]") {
        let start = from + i;
        let mut depth = 0;
        let mut end = out.len();
        for (j, c) in out[start + "#[cfg(test)]".len()..].char_indices() {
            let j = start + "#[cfg(test)]".len() + j;
            match c {
                '{' => depth += 1,
                '}' if depth == 1 => {
                    end = j + 1;
                    break;
                }
                '}' => depth -= 1,
                ';' if depth == 0 => {
                    end = j + 1;
                    break;
                }
                _ => {}
            }
        }
        let blanked: String = out[start..end].chars().map(|c| if c == '\n' { '\n' } else { ' ' }).collect();
        out.replace_range(start..end, &blanked);
        from = start + blanked.len();
    }
    out
}
