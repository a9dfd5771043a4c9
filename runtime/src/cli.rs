//! What the `reel` subcommands other than `serve` do: control a running
//! server over its API (`status`, `pause`, `resume`, `rebuild`, `delete`,
//! `skip`, `discard`, `dead-letters`, `shadow`),
//! generate a workload, and test a projection against a snapshot
//! ([`snapshot`], `reel test`).

pub mod replay;
mod shadow;
pub mod snapshot;
pub mod workload;

pub use shadow::{ShadowAction, shadow};

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use crate::client::Client;
pub use crate::client::Trust;

/// The server a command talks to, the token it sends and the certificates
/// it trusts (`--server`, `--token`, `--ca`; `REEL_SERVER`, `REEL_TOKEN`,
/// `REEL_CA`).
pub struct Remote {
    /// `http://host:port` or `https://host:port`.
    pub url: String,
    /// An API token, if the server wants one.
    pub token: Option<String>,
    /// What an `https://` server's certificate must chain to.
    pub trust: crate::client::Trust,
}

impl Remote {
    fn connect(&self) -> Result<Client, String> {
        Ok(Client::connect_trusting(&self.url, &self.trust)?.with_token(self.token.as_deref()))
    }
}

/// `reel status [NAME]`: a table of projections and sinks, or one
/// projection's status.
pub fn status(server: &Remote, name: Option<&str>) -> Result<(), String> {
    let mut client = server.connect()?;
    let path = name.map_or_else(|| "/projections".to_owned(), |n| format!("/projections/{n}"));
    let response = client.get(&path)?;
    if response.status != 200 {
        return Err(response.message());
    }
    let body = response.json()?;
    if name.is_some() {
        println!("{}", serde_json::to_string_pretty(&body).map_err(|e| e.to_string())?);
        return Ok(());
    }
    println!(
        "{:<24} {:<8} {:<10} {:>10} {:>10} {:>10} {:>12} {:>6}  error",
        "projection", "version", "state", "position", "head", "lag", "events/s", "dead"
    );
    for p in body.as_array().into_iter().flatten() {
        let error = p["last_error"]["message"].as_str().or(p["module_error"].as_str()).unwrap_or("");
        row(p["name"].as_str().unwrap_or(""), p, &p["head"], error);
        // A new version being rebuilt beside it gets a line of its own, so
        // one that fails shows here and not only in the JSON.
        let rebuild = &p["rebuild"];
        if !rebuild.is_null() {
            row("  rebuilding", rebuild, &p["head"], rebuild["last_error"]["message"].as_str().unwrap_or(""));
        }
    }
    sinks(&mut client)
}

/// The sinks' lines of `reel status` (none when the server has none, or
/// predates them).
fn sinks(client: &mut Client) -> Result<(), String> {
    let response = client.get("/sinks")?;
    if response.status != 200 {
        return Ok(());
    }
    let body = response.json()?;
    let sinks: Vec<&serde_json::Value> = body.as_array().into_iter().flatten().collect();
    if sinks.is_empty() {
        return Ok(());
    }
    println!(
        "\n{:<24} {:<8} {:<10} {:>10} {:>10} {:>12} {:<6} {:<24} error",
        "sink", "version", "state", "position", "lag", "events/s", "broker", "subject"
    );
    for s in sinks {
        println!(
            "{:<24} {:<8} {:<10} {:>10} {:>10} {:>12.0} {:<6} {:<24} {}",
            s["name"].as_str().unwrap_or(""),
            s["version"].as_str().unwrap_or(""),
            s["state"].as_str().unwrap_or(""),
            s["position"].to_string(),
            s["lag_events"].to_string(),
            s["events_per_second"].as_f64().unwrap_or(0.0),
            s["broker"].as_str().unwrap_or(""),
            s["subject"].as_str().unwrap_or(""),
            s["last_error"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

/// A line of the status table: `label`, then `v`'s version, state, position
/// and lag, the log's head, and `error`.
fn row(label: &str, v: &serde_json::Value, head: &serde_json::Value, error: &str) {
    println!(
        "{:<24} {:<8} {:<10} {:>10} {:>10} {:>10} {:>12.0} {:>6}  {}",
        label,
        v["version"].as_str().unwrap_or(""),
        v["state"].as_str().unwrap_or(""),
        v["position"].to_string(),
        head.to_string(),
        v["lag"].to_string(),
        v["events_per_second"].as_f64().unwrap_or(0.0),
        v["dead_letters"].as_i64().unwrap_or(0),
        error
    );
}

/// `reel dead-letters NAME`: the events a projection set aside (policy
/// skip), one a line: position, stream, type, when, why.
pub fn dead_letters(server: &Remote, name: &str) -> Result<(), String> {
    let mut client = server.connect()?;
    let response = client.get(&format!("/projections/{name}/dead-letters"))?;
    if response.status != 200 {
        return Err(response.message());
    }
    let body = response.json()?;
    let letters = body.as_array().map(Vec::as_slice).unwrap_or_default();
    if letters.is_empty() {
        println!("{name}: no dead letters");
        return Ok(());
    }
    println!("{:>10}  {:<24} {:<20} {:<27}  error", "position", "stream", "type", "failed at");
    for d in letters {
        println!(
            "{:>10}  {:<24} {:<20} {:<27}  {}",
            d["position"].to_string(),
            d["stream_id"].as_str().unwrap_or(""),
            d["event_type"].as_str().unwrap_or(""),
            d["failed_at"].as_str().unwrap_or(""),
            d["error"].as_str().unwrap_or("")
        );
    }
    println!(
        "retry one after a fix: POST /projections/{name}/dead-letters/POSITION/retry; \
         discard one: reel discard {name} POSITION"
    );
    Ok(())
}

/// `reel pause|resume|delete NAME`.
pub fn control(server: &Remote, name: &str, action: &str) -> Result<(), String> {
    let mut client = server.connect()?;
    let response = match action {
        "delete" => client.delete(&format!("/projections/{name}"))?,
        other => client.post(&format!("/projections/{name}/{other}"), None)?,
    };
    if !(200..300).contains(&response.status) {
        return Err(response.message());
    }
    println!("{name}: {action} done");
    Ok(())
}

/// `reel skip NAME POSITION` (the event a stopped projection halted at goes
/// to the dead letters; it goes on after it) and `reel discard NAME
/// POSITION` (a dead letter is deleted for good).
pub fn poison(server: &Remote, name: &str, action: &str, position: i64) -> Result<(), String> {
    let mut client = server.connect()?;
    let response = match action {
        "skip" => client.post(&format!("/projections/{name}/skip/{position}"), None)?,
        _ => client.delete(&format!("/projections/{name}/dead-letters/{position}"))?,
    };
    if response.status != 200 {
        return Err(response.message());
    }
    match action {
        "skip" => println!(
            "{name}: event {position} skipped; it is a dead letter now (retry it with \
             POST /projections/{name}/dead-letters/{position}/retry)"
        ),
        _ => println!("{name}: dead letter {position} discarded"),
    }
    Ok(())
}

/// `reel rebuild NAME`: start a rebuild, then show its progress until reads
/// have switched to it (unless `wait` is false).
pub fn rebuild(server: &Remote, name: &str, wait: bool) -> Result<(), String> {
    let mut client = server.connect()?;
    let response = client.post(&format!("/projections/{name}/rebuild"), None)?;
    if response.status != 202 {
        return Err(response.message());
    }
    let target = response.json()?["rebuilding"].as_str().unwrap_or_default().to_owned();
    println!("{name}: rebuilding into {target}; reads stay on the current version until it has caught up");
    if !wait {
        return Ok(());
    }
    wait_for_switch(&mut client, name, &target)
}

/// Show the progress of the version `target` being built beside the serving
/// one until reads switch to it.
fn wait_for_switch(client: &mut Client, name: &str, target: &str) -> Result<(), String> {
    let mut stderr = std::io::stderr();
    let mut told = String::new();
    // The position moves a batch (about a second of work) at a time; the
    // elapsed time shows the rebuild is alive in between.
    let started = std::time::Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let status = client.get(&format!("/projections/{name}"))?;
        if status.status != 200 {
            return Err(status.message());
        }
        let status = status.json()?;
        if status["namespace"] == target {
            let _ = writeln!(
                stderr,
                "\r{}",
                progress_line(
                    status["head"].as_i64().unwrap_or(0),
                    status["head"].as_i64().unwrap_or(0),
                    0.0,
                    None,
                    started.elapsed()
                )
            );
            println!("{name}: reads now come from {target}");
            return Ok(());
        }
        let rebuild = &status["rebuild"];
        if rebuild.is_null() {
            return Err(format!("{name}: the rebuild into {target} was abandoned (a new module version arrived?)"));
        }
        let error = rebuild["last_error"]["message"].as_str().unwrap_or_default();
        if rebuild["state"] == "stopped" {
            let _ = writeln!(stderr);
            return Err(format!(
                "{name}: the rebuild into {target} stopped at a poison event: {error}; reads stay on the \
                 current version (see `reel status {name}`; `reel skip {name} {}` goes on without it)",
                rebuild["stopped_at"]
            ));
        }
        // Under policy skip a failing event ends as a dead letter and the
        // rebuild goes on: not a failure of the rebuild.
        if !error.is_empty() && error != told {
            let _ = writeln!(stderr);
            if status["module"]["on_error"] == "skip" {
                eprintln!(
                    "{name}: {error} (policy skip: after its retries it goes to the dead letters and the \
                     rebuild goes on; see `reel dead-letters {name}`)"
                );
            } else {
                eprintln!("{name}: the rebuild is failing: {error}");
            }
            told = error.to_owned();
        }
        let line = progress_line(
            rebuild["position"].as_i64().unwrap_or(0),
            status["head"].as_i64().unwrap_or(0),
            rebuild["events_per_second"].as_f64().unwrap_or(0.0),
            rebuild["eta_seconds"].as_f64(),
            started.elapsed(),
        );
        let _ = write!(stderr, "\r{line}");
        let _ = stderr.flush();
    }
}

/// `[########------------]  40%  400000/1000000  210000 events/s  ETA 3s  2s`
fn progress_line(position: i64, head: i64, rate: f64, eta: Option<f64>, elapsed: Duration) -> String {
    let fraction = if head > 0 { (position as f64 / head as f64).clamp(0.0, 1.0) } else { 1.0 };
    let filled = (fraction * 30.0).round() as usize;
    let eta = eta.map_or_else(String::new, |s| format!("  ETA {}s", s.ceil()));
    format!(
        "[{}{}] {:>3.0}%  {position}/{head}  {rate:.0} events/s{eta}  {}s   ",
        "#".repeat(filled),
        "-".repeat(30 - filled),
        fraction * 100.0,
        elapsed.as_secs()
    )
}

/// `reel generate`: where the workload goes.
pub enum Target {
    /// A server's `POST /events`.
    Server(Remote),
    /// An embedded data folder's `events.db`.
    DataDir(PathBuf),
    /// A PostgreSQL database's events table (created if absent).
    Database(String),
}

/// Generate `orders` orders with `seed` (and `customers`, if given) into `target`.
pub async fn generate(orders: usize, seed: u64, customers: Option<usize>, target: Target) -> anyhow::Result<i64> {
    use workload::{OrderWorkload, generate, load};
    let mut workload = OrderWorkload::new(orders, seed);
    if let Some(customers) = customers {
        workload.customers = customers.max(1);
    }
    let events = generate(&workload);
    Ok(match target {
        Target::Server(remote) => tokio::task::spawn_blocking(move || load::append_through(remote.connect()?, &events))
            .await?
            .map_err(anyhow::Error::msg)?,
        Target::DataDir(dir) => {
            std::fs::create_dir_all(&dir)?;
            let db = dir.join("events.db");
            crate::sqlite::SqliteSource::open(&db).await?;
            tokio::task::spawn_blocking(move || load::insert_sqlite(&db, &events)).await??
        }
        Target::Database(url) => {
            crate::postgres::PgSource::open(&url).await?;
            load::copy_postgres(&url, &events).await.map_err(anyhow::Error::msg)?
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_show_fraction_rate_and_eta() {
        assert_eq!(
            progress_line(25, 100, 1234.4, Some(2.1), Duration::from_millis(7500)),
            "[########----------------------]  25%  25/100  1234 events/s  ETA 3s  7s   "
        );
        assert!(progress_line(0, 0, 0.0, None, Duration::ZERO).starts_with("[##############################] 100%"));
    }
}
