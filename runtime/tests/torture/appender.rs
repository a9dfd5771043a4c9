//! A client appending a workload through `POST /events` while reel is killed
//! or loses its database, as a careful user would: each event sent with its
//! expected version and an `Idempotency-Key` of its own, and sent again with
//! the same key until an answer comes (ADR 43): after a lost answer or a
//! `503 outcome_unknown` the retry gets the first answer (`Idempotent-Replayed`)
//! when the first attempt had appended. A `409` is never expected: only this
//! client writes these streams, so it would mean an event lost or doubled.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use reel::testing::workload::OrderEvent;
use serde_json::json;

use super::process::Address;

/// What the client met.
#[derive(Debug, Default, Clone)]
pub struct Appended {
    /// Events appended (each once, whatever it took).
    pub events: usize,
    /// Answers `201`.
    pub created: usize,
    /// Answers `503` (the database unavailable), retried.
    pub unavailable: usize,
    /// Of those, `503 outcome_unknown` (the connection lost while the append
    /// was committing), retried with the same key.
    pub outcome_unknown: usize,
    /// Other answers that were retried (`5xx`), with the first seen.
    pub other_errors: usize,
    pub first_other: Option<String>,
    /// Requests sent whose answer never came (reel killed), retried.
    pub lost_answers: usize,
    /// Answers given again under the key (`Idempotent-Replayed: true`): an
    /// earlier attempt had appended, and its answer was lost or unknown.
    pub replayed: usize,
    /// Connections refused (no reel serving), retried.
    pub refused: usize,
    /// The longest time one event took to go in.
    pub longest: Duration,
}

/// The client, on its thread.
pub struct Appender {
    thread: Option<JoinHandle<Appended>>,
    stop: Arc<AtomicBool>,
    /// Events in so far.
    progress: Arc<AtomicUsize>,
}

impl Appender {
    /// Append `events` in order to whatever reel `address` names, pausing
    /// `pause` between events.
    pub fn start(address: Address, events: Vec<OrderEvent>, pause: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let progress = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&progress);
        let thread = std::thread::spawn(move || run(&address, &events, pause, &stopping, &counter));
        Self { thread: Some(thread), stop, progress }
    }

    /// How many events are in so far.
    pub fn progress(&self) -> usize {
        self.progress.load(Ordering::Relaxed)
    }

    /// Whether every event is in.
    pub fn done(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Wait until every event is in; what it met.
    pub fn join(mut self) -> Appended {
        self.thread.take().unwrap().join().expect("the appender panicked")
    }
}

impl Drop for Appender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn run(
    address: &Address,
    events: &[OrderEvent],
    pause: Duration,
    stop: &AtomicBool,
    progress: &AtomicUsize,
) -> Appended {
    let mut seen = Appended::default();
    for e in events {
        let key = format!("{}@{}", e.stream_id, e.version);
        let body = json!({
            "stream_id": e.stream_id,
            "expected_version": e.version - 1,
            "events": [{ "event_type": e.event_type, "data": e.data }],
        })
        .to_string();
        let started = Instant::now();
        loop {
            assert!(!stop.load(Ordering::Relaxed), "the run ended before the appender");
            assert!(started.elapsed() < Duration::from_secs(600), "{} not appended in 10 minutes", e.stream_id);
            let Some(addr) = *address.lock().unwrap() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            match post(addr, &key, &body) {
                Sent::Refused => {
                    seen.refused += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Sent::Unanswered => {
                    seen.lost_answers += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Sent::Answered(201, replayed, _) => {
                    seen.created += 1;
                    seen.replayed += usize::from(replayed);
                    break;
                }
                Sent::Answered(503, _, answer) => {
                    seen.unavailable += 1;
                    seen.outcome_unknown += usize::from(answer.contains("\"outcome_unknown\""));
                    std::thread::sleep(Duration::from_millis(20));
                }
                Sent::Answered(status, _, answer) if status >= 500 => {
                    seen.other_errors += 1;
                    seen.first_other.get_or_insert(format!("{status}: {answer}"));
                    std::thread::sleep(Duration::from_millis(20));
                }
                Sent::Answered(status, _, answer) => {
                    panic!("append of {} version {} answered {status}: {answer}", e.stream_id, e.version)
                }
            }
        }
        seen.events += 1;
        progress.store(seen.events, Ordering::Relaxed);
        seen.longest = seen.longest.max(started.elapsed());
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
    seen
}

enum Sent {
    /// Nothing sent: no server there.
    Refused,
    /// Sent, and the connection ended before an answer.
    Unanswered,
    /// The status, whether it was marked `Idempotent-Replayed`, the body.
    Answered(u16, bool, String),
}

fn post(addr: SocketAddr, key: &str, body: &str) -> Sent {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else { return Sent::Refused };
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let request = format!(
        "POST /events HTTP/1.1\r\nHost: reel\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Idempotency-Key: {key}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return Sent::Unanswered;
    }
    let mut response = Vec::new();
    if stream.read_to_end(&mut response).is_err() || response.is_empty() {
        return Sent::Unanswered;
    }
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let replayed = head.lines().any(|line| line.eq_ignore_ascii_case("idempotent-replayed: true"));
    match response.split(' ').nth(1).and_then(|s| s.parse().ok()) {
        Some(status) => Sent::Answered(status, replayed, body.to_owned()),
        None => Sent::Unanswered,
    }
}
