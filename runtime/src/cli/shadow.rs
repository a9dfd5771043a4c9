//! `reel shadow NAME [FILE] [--promote | --discard]`: a shadow run (ADR 48)
//! over the API: send the module, show its progress until it is compared
//! with the serving version, print what differs; promote or discard it.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::{Remote, progress_line, wait_for_switch};
use crate::client::Client;

/// What `reel shadow` is asked to do.
pub enum ShadowAction {
    /// Build this module as a shadow, then show the differences.
    Start(PathBuf),
    /// Show the differences of the shadow running.
    Show,
    /// Switch reads to the shadow (and wait until they have).
    Promote,
    /// Drop the shadow.
    Discard,
}

/// Differences asked for a page.
const PAGE: usize = 500;

/// Run `reel shadow`. `Ok(true)`: the read models are the same.
pub fn shadow(server: &Remote, name: &str, action: ShadowAction) -> Result<bool, String> {
    let mut client = server.connect()?;
    let base = format!("/projections/{name}/shadow");
    match action {
        ShadowAction::Start(file) => {
            let bytes = std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            let response = client.post_bytes(&base, &bytes, "application/wasm")?;
            if response.status != 202 {
                return Err(response.message());
            }
            let started = response.json()?;
            println!(
                "{name}: building {} into the shadow {} beside the serving version, which keeps serving",
                file.display(),
                started["shadow"].as_str().unwrap_or_default()
            );
            compared(&mut client, name)?;
            print_diff(&mut client, name)
        }
        ShadowAction::Show => {
            compared(&mut client, name)?;
            print_diff(&mut client, name)
        }
        ShadowAction::Promote => {
            let response = client.post(&format!("{base}/promote"), None)?;
            if response.status != 202 {
                return Err(response.message());
            }
            let target = response.json()?["promoted"].as_str().unwrap_or_default().to_owned();
            println!("{name}: promoting the shadow {target}; reads switch to it once it has caught up");
            wait_for_switch(&mut client, name, &target)?;
            Ok(true)
        }
        ShadowAction::Discard => {
            let response = client.delete(&base)?;
            if response.status != 200 {
                return Err(response.message());
            }
            println!("{name}: the shadow {} is discarded", response.json()?["discarded"].as_str().unwrap_or_default());
            Ok(true)
        }
    }
}

/// Show the shadow's progress until it has been compared.
fn compared(client: &mut Client, name: &str) -> Result<(), String> {
    let mut stderr = std::io::stderr();
    let started = std::time::Instant::now();
    loop {
        let response = client.get(&format!("/projections/{name}"))?;
        if response.status != 200 {
            return Err(response.message());
        }
        let status = response.json()?;
        let shadow = &status["shadow"];
        if shadow.is_null() {
            return Err(format!("projection `{name}` has no shadow run (discarded or promoted meanwhile?)"));
        }
        match shadow["comparison"]["state"].as_str() {
            Some("compared") => {
                let _ = writeln!(stderr);
                return Ok(());
            }
            Some("failed") => {
                let _ = writeln!(stderr);
                return Err(format!(
                    "{name}: the shadow could not be compared: {}",
                    shadow["comparison"]["error"].as_str().unwrap_or_default()
                ));
            }
            _ => {}
        }
        let line = progress_line(
            shadow["position"].as_i64().unwrap_or(0),
            status["head"].as_i64().unwrap_or(0),
            shadow["events_per_second"].as_f64().unwrap_or(0.0),
            shadow["eta_seconds"].as_f64(),
            started.elapsed(),
        );
        let _ = write!(stderr, "\r{line}");
        let _ = stderr.flush();
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Print every difference, page by page. `Ok(true)`: none.
fn print_diff(client: &mut Client, name: &str) -> Result<bool, String> {
    let mut after = 0;
    loop {
        let response = client.get(&format!("/projections/{name}/shadow/diff?after={after}&limit={PAGE}"))?;
        if response.status != 200 {
            return Err(response.message());
        }
        let page = response.json()?;
        let total = page["differences"].as_u64().unwrap_or(0);
        if after == 0 {
            let position = page["position"].as_i64().unwrap_or(0);
            if total == 0 {
                println!("{name}: the shadow's read model is the serving version's at position {position}");
                return Ok(true);
            }
            println!(
                "{name}: {total} differences at position {position} (- serving version, + shadow; \
                 promote: reel shadow {name} --promote, discard: reel shadow {name} --discard)"
            );
        }
        for item in page["items"].as_array().into_iter().flatten() {
            print!("{}", difference(item));
        }
        match page["next"].as_u64() {
            Some(next) => after = next as usize,
            None => return Ok(false),
        }
    }
}

/// One difference, as lines: which row or key, then the serving side (`-`)
/// and the shadow's (`+`); of a changed row only the columns that differ.
fn difference(d: &Value) -> String {
    let what = match d["kind"].as_str() {
        Some("row") => format!("table {} row {}", d["table"].as_str().unwrap_or(""), d["key"]),
        Some("key") => format!("kv {}", d["key"]),
        _ => format!("table {}", d["table"].as_str().unwrap_or("")),
    };
    let change = match d["change"].as_str() {
        Some("only_serving") => "only in the serving version",
        Some("only_shadow") => "only in the shadow",
        _ => "changed",
    };
    let mut out = format!("{what}: {change}\n");
    let (serving, shadow) = (&d["serving"], &d["shadow"]);
    match (serving.as_object(), shadow.as_object()) {
        (Some(a), Some(b)) if d["kind"] == "row" => {
            for (column, value) in a {
                let theirs = b.get(column).unwrap_or(&Value::Null);
                if theirs != value {
                    out.push_str(&format!("  {column}: - {value}  + {theirs}\n"));
                }
            }
            for (column, value) in b.iter().filter(|(c, _)| !a.contains_key(*c)) {
                out.push_str(&format!("  {column}: + {value}\n"));
            }
        }
        _ => {
            if !serving.is_null() {
                out.push_str(&format!("  - {serving}\n"));
            }
            if !shadow.is_null() {
                out.push_str(&format!("  + {shadow}\n"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_row_shows_the_columns_that_differ() {
        let d = serde_json::json!({
            "kind": "row", "table": "orders", "key": {"id": "o-2"}, "change": "changed",
            "serving": {"id": "o-2", "status": "cancelled"}, "shadow": {"id": "o-2", "status": "canceled"},
        });
        assert_eq!(
            difference(&d),
            "table orders row {\"id\":\"o-2\"}: changed\n  status: - \"cancelled\"  + \"canceled\"\n"
        );
        let k =
            serde_json::json!({ "kind": "key", "key": "a", "change": "only_serving", "serving": 1, "shadow": null });
        assert_eq!(difference(&k), "kv \"a\": only in the serving version\n  - 1\n");
    }
}
