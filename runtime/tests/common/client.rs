//! One client for a reel in-process ([`Harness`], through its router) or a
//! `reel serve` process on a socket ([`Process`], one a test may kill), so
//! an end-to-end check runs the same against either (`sagas.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Harness;
use super::process::Process;

/// How long [`Reel::quiesce`] and [`Reel::running`] wait.
const PATIENCE: Duration = Duration::from_secs(300);

/// A reel to talk to.
pub enum Reel<'a> {
    /// A runtime in the test's process.
    Router(&'a Harness),
    /// A `reel serve` process.
    Process(&'a Process),
}

impl Reel<'_> {
    /// `GET uri`, expecting 200.
    pub async fn get(&self, uri: &str) -> Value {
        match self {
            Reel::Router(h) => h.get(uri).await,
            Reel::Process(p) => {
                let (code, body) = p.call("GET", uri, None);
                assert_eq!(code, 200, "GET {uri}: {body}");
                body
            }
        }
    }

    /// Append `events` to a new stream `stream` (`POST /events`, expected
    /// version 0): the position of each.
    pub async fn append_new(&self, stream: &str, events: Value) -> Vec<i64> {
        let body = match self {
            Reel::Router(h) => h.append(stream, Some(0), events).await,
            Reel::Process(p) => {
                let body = json!({ "stream_id": stream, "expected_version": 0, "events": events });
                let (code, answer) = p.call("POST", "/events", Some(&body));
                assert_eq!(code, 201, "append: {answer}");
                answer
            }
        };
        body["positions"].as_array().unwrap().iter().map(|p| p.as_i64().unwrap()).collect()
    }

    /// Every event of the log, through `GET /events`, in delivery order.
    pub async fn log(&self) -> Vec<Value> {
        let mut events = Vec::new();
        let mut after = String::new();
        loop {
            let page = self.get(&format!("/events?limit=10000{after}")).await;
            let got = page["events"].as_array().unwrap().clone();
            let done = got.len() < 10_000;
            events.extend(got);
            if done {
                return events;
            }
            after = format!("&after={}", super::urlencode(page["next"].as_str().unwrap()));
        }
    }

    /// Every KV entry of `module` under `prefix`, the prefix cut off the key.
    pub async fn kv(&self, module: &str, prefix: &str) -> BTreeMap<String, Value> {
        let mut entries = BTreeMap::new();
        let mut after = String::new();
        loop {
            let uri = format!("/projections/{module}/kv?prefix={}&limit=10000{after}", super::urlencode(prefix));
            let page = self.get(&uri).await;
            for entry in page["entries"].as_array().unwrap() {
                entries.insert(entry["key"].as_str().unwrap()[prefix.len()..].to_owned(), entry["value"].clone());
            }
            match page["next"].as_str() {
                Some(next) => after = format!("&after={}", super::urlencode(next)),
                None => return entries,
            }
        }
    }

    /// Wait until every module has handled the whole log and the log
    /// stopped growing (no outbox left to forward); fails if one stops.
    pub async fn quiesce(&self) {
        let deadline = Instant::now() + PATIENCE;
        let mut last_head = -1;
        loop {
            let all = self.get("/projections").await;
            let all = all.as_array().unwrap();
            for p in all {
                assert_ne!(p["state"], "stopped", "{p:#}");
            }
            let head = all.iter().map(|p| p["head"].as_i64().unwrap()).max().unwrap_or(0);
            let idle = all.iter().all(|p| {
                (p["position"].as_i64() >= Some(head) || p["lag"] == 0)
                    && p["reactor"]["outbox"].as_u64().unwrap_or(0) == 0
            });
            if idle && head == last_head {
                return;
            }
            last_head = if idle { head } else { -1 };
            assert!(Instant::now() < deadline, "no quiescence: {all:#?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Wait until exactly the modules `names` run.
    pub async fn running(&self, names: &[&str]) {
        let deadline = Instant::now() + PATIENCE;
        let wanted: BTreeSet<&str> = names.iter().copied().collect();
        loop {
            let all = self.get("/projections").await;
            let running: BTreeSet<&str> = all
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["state"] == "running")
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            if running == wanted {
                return;
            }
            assert!(Instant::now() < deadline, "not all running: {all:#}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
