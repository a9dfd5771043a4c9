//! Delivery to outside consumers: `GET /events`, the log page by page in
//! delivery order, on both backends, and under concurrent writers.

mod common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{Backend, Harness, oneshot, sse, urlencode, writers};
use serde_json::{Value, json};

/// Every event `GET /events` hands out after `after` (pages of `limit`),
/// and the token to go on from.
async fn read_all(h: &Harness, query: &str, after: &str, limit: usize) -> (Vec<Value>, String) {
    let (mut events, mut after) = (Vec::new(), after.to_owned());
    loop {
        let page = h.get(&format!("/events?limit={limit}&after={}{query}", urlencode(&after))).await;
        let got = page["events"].as_array().unwrap();
        events.extend(got.iter().cloned());
        after = page["next"].as_str().unwrap().to_owned();
        if got.len() < limit {
            return (events, after);
        }
    }
}

fn positions(events: &[Value]) -> Vec<i64> {
    events.iter().map(|e| e["position"].as_i64().unwrap()).collect()
}

/// Waits until `n` events can be read: on PostgreSQL a transaction open
/// anywhere in the cluster (another test's) holds delivery back a moment.
async fn wait_deliverable(h: &Harness, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while h.get("/events?limit=10000").await["events"].as_array().unwrap().len() < n {
        assert!(Instant::now() < deadline, "{n} events never became readable");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An appended event: (position, stream, type, data).
type Appended = (i64, String, String, Value);

/// The appended events, in the order appended.
async fn append_mixed(h: &Harness, n: usize) -> Vec<Appended> {
    let mut appended = Vec::new();
    for i in 0..n {
        let (stream, event_type) = match i % 3 {
            0 => (format!("order-{}", i % 4), "order.placed"),
            1 => (format!("order-{}", i % 4), "order.shipped"),
            _ => (format!("customer-{}", i % 2), "customer.registered"),
        };
        let data = json!({ "i": i, "note": "kept as sent" });
        let body = h.append(&stream, None, json!([{ "event_type": event_type, "data": data }])).await;
        appended.push((body["positions"][0].as_i64().unwrap(), stream, event_type.to_owned(), data));
    }
    appended
}

async fn the_log_reads_page_by_page_in_delivery_order(backend: Backend) {
    let h = Harness::start(backend, &[]).await;
    let appended = append_mixed(&h, 30).await;
    wait_deliverable(&h, appended.len()).await;
    let (events, end) = read_all(&h, "", "", 7).await;
    assert_eq!(positions(&events), appended.iter().map(|a| a.0).collect::<Vec<_>>(), "every event once, in order");
    for (event, (_, stream, event_type, data)) in events.iter().zip(&appended) {
        assert_eq!(
            (&event["stream_id"], &event["event_type"], &event["data"]),
            (&json!(stream), &json!(event_type), data)
        );
        assert_eq!(event["metadata"], json!({}));
        assert!(event["version"].as_i64().unwrap() >= 1 && event["occurred_at"].is_string(), "{event}");
    }
    let page = h.get(&format!("/events?after={}", urlencode(&end))).await;
    assert_eq!((page["events"].clone(), page["next"].as_str()), (json!([]), Some(end.as_str())), "nothing more");

    // Resuming from a page's `next` goes on where it stopped.
    let first = h.get("/events?limit=10").await;
    let next = first["next"].as_str().unwrap();
    let (rest, _) = read_all(&h, "", next, 100).await;
    assert_eq!(positions(&rest), appended[10..].iter().map(|a| a.0).collect::<Vec<_>>());

    // Filters: types (exact or prefix*, comma-separated) and a stream prefix.
    let want = |f: &dyn Fn(&Appended) -> bool| -> Vec<i64> { appended.iter().filter(|a| f(a)).map(|a| a.0).collect() };
    let (orders, _) = read_all(&h, "&types=order.*", "", 4).await;
    assert_eq!(positions(&orders), want(&|a| a.2.starts_with("order.")));
    let (some, _) = read_all(&h, "&types=customer.registered,order.shipped&stream_prefix=order-1", "", 4).await;
    assert_eq!(positions(&some), want(&|a| a.2 == "order.shipped" && a.1.starts_with("order-1")));
    // A filter that matches nothing still moves on to the head.
    let none = h.get("/events?types=no.such.type").await;
    assert_eq!(none["events"], json!([]));
    assert_eq!(none["next"].as_str(), Some(end.as_str()), "past the events it left out");
    h.finish().await;
}

async fn bad_requests_to_the_log_say_what_is_wrong(backend: Backend) {
    let h = Harness::start(backend, &[]).await;
    h.append("order-1", Some(0), json!([{ "event_type": "order.placed", "data": {} }])).await;
    let mut cases = vec![
        ("/events?after=x", "`x` is not a resume token reel handed out"),
        ("/events?after=-1", "`-1` is not a resume token"),
        ("/events?limit=0", "limit `0` must be a number from 1 to 10000"),
        ("/events?limit=10001", "limit `10001` must be a number from 1 to 10000"),
        ("/events?limit=ten", "limit `ten` must be a number"),
        ("/events?position=1", "unknown field `position`"),
    ];
    if backend == Backend::Postgres {
        // A bare position is SQLite's token, never PostgreSQL's: read from it
        // and a consumer would see events twice.
        cases.push(("/events?after=1", "`1` is not a resume token this log handed out"));
    }
    for (uri, message) in cases {
        let (status, body) = h.call("GET", uri, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_eq!(body["error"]["code"], "bad_request", "{uri}");
        let text = body["error"]["message"].as_str().unwrap();
        assert!(text.contains(message), "{uri}: {text}");
    }
    h.finish().await;
}

/// Events to write in the concurrent test (`REEL_STRESS_EVENTS` for more).
fn stress_events() -> usize {
    std::env::var("REEL_STRESS_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(4_000)
}

/// Positions of every committed event, in delivery order, from the table.
async fn committed(h: &Harness) -> Vec<i64> {
    match h.backend {
        Backend::Sqlite => {
            let conn = rusqlite::Connection::open(h.config.data_dir.join("events.db")).unwrap();
            let mut stmt = conn.prepare("SELECT id FROM events ORDER BY id").unwrap();
            stmt.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
        }
        Backend::Postgres => {
            let client = h.postgres().await;
            let rows = client.query("SELECT id FROM events ORDER BY transaction_id, id", &[]).await.unwrap();
            rows.iter().map(|r| r.get(0)).collect()
        }
    }
}

/// 8 writers at once: on PostgreSQL straight into the table, with ids
/// drawn before transaction ids, random delays and rollbacks; on SQLite
/// through `POST /events`. Returns how many transactions rolled back.
async fn write_concurrently(h: &Harness, target: usize) -> usize {
    match h.backend {
        Backend::Postgres => {
            let url = h.config.database_url.clone().unwrap();
            writers::run(&url, writers::Writers { writers: 8, target, seed: 7, ids_first: true }).await.1
        }
        Backend::Sqlite => {
            let mut tasks = Vec::new();
            for w in 0..8 {
                let app = h.app.clone();
                tasks.push(tokio::spawn(async move {
                    for i in 0..target / 8 {
                        let body = json!({ "stream_id": format!("w{w}-{}", i % 16), "events": [{ "event_type": "tick", "data": {} }] });
                        let (status, body) = oneshot(&app, "POST", "/events", Some(&body.to_string())).await;
                        assert_eq!(status, StatusCode::CREATED, "{body}");
                    }
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
            0
        }
    }
}

async fn a_client_paging_under_concurrent_writers_sees_every_committed_event_once(backend: Backend) {
    let h = Harness::start(backend, &[]).await;
    let target = stress_events();
    let started = Instant::now();
    let writing = {
        let h = &h;
        async move { write_concurrently(h, target).await }
    };
    // The client pages all along, with page sizes from 1 to 300.
    let reading = async {
        let (mut got, mut after, mut size) = (Vec::new(), "0".to_owned(), 1usize);
        let mut done_at: Option<Instant> = None;
        loop {
            let page = h.get(&format!("/events?limit={size}&after={}", urlencode(&after))).await;
            let events = page["events"].as_array().unwrap();
            if events.is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            got.extend(positions(events));
            after = page["next"].as_str().unwrap().to_owned();
            size = size * 7 % 301 + 1;
            if got.len() >= target {
                // Writers may still commit: read on a little past the target.
                let done = *done_at.get_or_insert_with(Instant::now);
                if done.elapsed() > Duration::from_secs(1) && page["events"] == json!([]) {
                    return (got, after);
                }
            }
            assert!(started.elapsed() < Duration::from_secs(120), "{} of {target} events read", got.len());
        }
    };
    let (rollbacks, (mut got, after)) = tokio::join!(writing, reading);
    // Everything committed is readable now (other tests' transactions can
    // hold delivery back for a moment).
    let want = committed(&h).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut after = after;
    while got.len() < want.len() && Instant::now() < deadline {
        let (more, next) = read_all(&h, "", &after, 1000).await;
        got.extend(positions(&more));
        after = next;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut sorted = got.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), got.len(), "no event twice");
    assert_eq!(got, want, "every committed event once, in delivery order");
    if backend == Backend::Postgres {
        assert!(rollbacks > 10, "rollbacks happen: {rollbacks}");
        let overtaken = got.windows(2).filter(|w| w[0] > w[1]).count();
        assert!(overtaken > 0, "ids committed out of order (an `id > last` reader would skip some)");
        eprintln!("{} events, {rollbacks} rollbacks, {overtaken} ids overtaken, in {:?}", got.len(), started.elapsed());
    }
    h.finish().await;
}

both_backends!(
    the_log_reads_page_by_page_in_delivery_order,
    bad_requests_to_the_log_say_what_is_wrong,
    a_client_paging_under_concurrent_writers_sees_every_committed_event_once,
);
/// A small deterministic generator.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Appends `total` events through the API in appends of 1 to 50, to 32
/// streams, types `t.even` and `t.odd` by position parity of the append.
async fn append_spread(app: axum::Router, total: usize, seed: u64) {
    let mut rng = Rng(seed);
    let mut written = 0;
    while written < total {
        let n = (1 + rng.below(50) as usize).min(total - written);
        let event_type = if rng.below(2) == 0 { "t.even" } else { "t.odd" };
        let events: Vec<Value> =
            (0..n).map(|i| json!({ "event_type": event_type, "data": { "i": written + i } })).collect();
        let body = json!({ "stream_id": format!("s-{}", rng.below(32)), "events": events });
        let (status, body) = oneshot(&app, "POST", "/events", Some(&body.to_string())).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        written += n;
        if rng.below(4) == 0 {
            tokio::time::sleep(Duration::from_millis(rng.below(3))).await;
        }
    }
}

/// Reads the live feed at `uri` until `want` events came, dropping the
/// connection after a random number of messages (`disconnect_every` at
/// most) and resuming with `Last-Event-ID` (the first time `start`).
/// Returns the positions and the number of connections.
async fn follow_live(
    h: &Harness,
    uri: &str,
    start: Option<&str>,
    want: usize,
    disconnect_every: u64,
    seed: u64,
) -> (Vec<i64>, usize) {
    let (mut got, mut last_id, mut rng, mut connections) = (Vec::new(), start.map(str::to_owned), Rng(seed), 0);
    let deadline = Instant::now() + Duration::from_secs(180);
    while got.len() < want {
        let (status, content_type, mut stream) = sse::open(&h.app, uri, last_id.as_deref()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "text/event-stream");
        connections += 1;
        let quota = 1 + rng.below(disconnect_every);
        let mut read = 0;
        while read < quota && got.len() < want {
            let next = tokio::time::timeout(Duration::from_secs(30), stream.next()).await;
            let Ok(message) = next else {
                // What the log says past the client's place, to tell a
                // feed that stalls from a log that held the events back.
                let after = last_id.as_deref().map_or(String::new(), |id| format!("&after={id}"));
                let (code, page) = h.call("GET", &format!("/events?limit=5{after}"), None).await;
                let (_, health) = h.call("GET", "/healthz", None).await;
                panic!(
                    "the feed went silent for 30 s after {} of {want} events ({connections} connections, last id \
                     {last_id:?}); GET /events past it: {code} {page}; /healthz: {health}",
                    got.len()
                );
            };
            let message = message.expect("the feed stays open");
            last_id = message.id.clone().or(last_id);
            match (message.event.as_str(), message.data.as_str()) {
                ("message", "") => {} // progress: the id moved on
                ("message", data) => {
                    let event: Value = serde_json::from_str(data).unwrap();
                    got.push(event["position"].as_i64().unwrap());
                }
                (other, data) => panic!("unexpected {other}: {data}"),
            }
            read += 1;
        }
        assert!(Instant::now() < deadline, "{} of {want} events", got.len());
    }
    (got, connections)
}

async fn a_live_client_disconnected_at_random_misses_doubles_and_reorders_nothing(backend: Backend) {
    let h = Harness::start(backend, &[]).await;
    let total: usize = std::env::var("REEL_LIVE_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    // Two clients at once, so one reconnects while the other keeps the
    // live tail running ahead of it.
    let writing = append_spread(h.app.clone(), total, 11);
    let ((), (got, connections), (other, _)) = tokio::join!(
        writing,
        follow_live(&h, "/events/live", None, total, 3_000, 5),
        follow_live(&h, "/events/live", None, total, 300, 6),
    );
    let want = committed(&h).await;
    assert!(got == want, "every event once, in order, over {connections} connections: {} of {}", got.len(), want.len());
    assert!(other == want, "the other client too");
    // A filtered client gets the events of its types, the same way.
    let even = h.get("/events?types=t.even&limit=10000").await;
    let even = positions(even["events"].as_array().unwrap());
    let (got, _) = follow_live(&h, "/events/live?types=t.even", None, even.len(), 500, 9).await;
    assert_eq!(got, even, "the filtered feed");
    h.finish().await;
}

async fn a_client_too_slow_for_its_buffer_is_cut_and_resumes_from_the_log(backend: Backend) {
    let h = Harness::start(backend, &[]).await;
    let source = h.server.services().source;
    let (_, _, mut stream) = sse::open(&h.app, "/events/live", None).await;
    h.append("first", None, json!([{ "event_type": "t", "data": {} }])).await;
    let first = stream.next().await.unwrap();
    assert!(first.data.contains("\"stream_id\":\"first\""), "{first:?}");
    // The client stops reading while more than its buffer is committed.
    let total = reel::testing::LIVE_BUFFER + 500;
    for chunk in 0..total / 500 {
        let events: Vec<Value> =
            (0..500).map(|i| json!({ "event_type": "t", "data": { "i": chunk * 500 + i } })).collect();
        h.append(&format!("s-{chunk}"), None, json!(events)).await;
    }
    // Wait for the live tail to have read it all.
    let head = committed(&h).await.len();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut spans = source.live_spans();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = source.live_spans();
        let (page, _) = read_all(&h, "", "0", 10_000).await;
        if now == spans && page.len() == head {
            break;
        }
        spans = now;
        assert!(Instant::now() < deadline, "the tail keeps reading");
    }
    let cut = stream.next().await.expect("a last message");
    assert_eq!(cut.event, "cut", "{cut:?}");
    assert_eq!(cut.id.as_ref(), first.id.as_ref(), "it resumes after the last event it got");
    let body: Value = serde_json::from_str(&cut.data).unwrap();
    assert_eq!(body["resume_after"].as_str(), first.id.as_deref());
    assert!(body["message"].as_str().unwrap().contains("reconnect with Last-Event-ID"), "{body}");
    assert!(stream.next().await.is_none(), "the stream ends after the cut");
    // Resumed, it reads the rest from the log: everything once, in order.
    let (got, _) = follow_live(&h, "/events/live", cut.id.as_deref(), total, u64::MAX - 1, 1).await;
    let want = &committed(&h).await[1..];
    assert!(got == want, "the events after the cut: {} of {}", got.len(), want.len());
    h.finish().await;
}

async fn a_resume_token_reel_did_not_hand_out_is_refused(backend: Backend) {
    let h = Harness::start(backend, &[]).await;
    // A malformed `after` is refused even beside a `Last-Event-ID`, which wins over it.
    let cases =
        [("/events/live?after=abc", None), ("/events/live", Some("1.2.3")), ("/events/live?after=abc", Some("0"))];
    for (uri, last_id) in cases {
        let (status, _, stream) = sse::open(&h.app, uri, last_id).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let body: Value = serde_json::from_str(&stream.text().await).unwrap();
        assert!(body["error"]["message"].as_str().unwrap().contains("is not a resume token"), "{body}");
    }
    h.finish().await;
}

both_backends!(
    a_live_client_disconnected_at_random_misses_doubles_and_reorders_nothing,
    a_client_too_slow_for_its_buffer_is_cut_and_resumes_from_the_log,
    a_resume_token_reel_did_not_hand_out_is_refused,
);

/// Resident memory of this process (the server runs in it), in MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() / 1024.0
}

/// A measurement, not a CI test (`cargo test -p reel --test delivery --
/// --ignored --nocapture stalled`, on each backend): 50 live clients that
/// stop reading while 100,000 events of ~1 KiB commit; prints the resident
/// memory as it goes (on PostgreSQL the database is another process: the
/// figures are reel's and the test's).
async fn stalled_live_clients_keep_the_servers_memory_flat(backend: Backend) {
    let h = Harness::start(backend, &[]).await;
    h.append("first", None, json!([{ "event_type": "t", "data": {} }])).await;
    let mut streams = Vec::new();
    for _ in 0..50 {
        let (_, _, mut stream) = sse::open(&h.app, "/events/live", None).await;
        stream.next().await.unwrap();
        streams.push(stream);
    }
    let pad = "x".repeat(1000);
    eprintln!("before: {:.0} MiB", rss_mib());
    for round in 0..10 {
        for chunk in 0..20 {
            let events: Vec<Value> =
                (0..500).map(|i| json!({ "event_type": "t", "data": { "i": i, "pad": pad } })).collect();
            h.append(&format!("s-{round}-{chunk}"), None, json!(events)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        eprintln!("after {} events: {:.0} MiB", (round + 1) * 10_000, rss_mib());
    }
    for stream in &mut streams {
        assert_eq!(stream.next().await.unwrap().event, "cut");
    }
    eprintln!("all 50 cut: {:.0} MiB", rss_mib());
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn stalled_live_clients_keep_the_servers_memory_flat_on_sqlite() {
    stalled_live_clients_keep_the_servers_memory_flat(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn stalled_live_clients_keep_the_servers_memory_flat_on_postgres() {
    stalled_live_clients_keep_the_servers_memory_flat(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_reel_process_on_the_same_postgresql_serves_the_feeds() {
    let a = Harness::start(Backend::Postgres, &[]).await;
    let url = a.config.database_url.clone().unwrap();
    let b = Harness::start_with(Backend::Postgres, &[], |c| c.database_url = Some(url.clone())).await;
    // Appends through one process, a client of the other, disconnected at random.
    let total = 2_000;
    let ((), (got, connections)) =
        tokio::join!(append_spread(a.app.clone(), total, 3), follow_live(&b, "/events/live", None, total, 400, 4));
    let want = committed(&a).await;
    assert!(got == want, "every event once, in order, over {connections} connections: {} of {}", got.len(), want.len());
    // A token one process handed out resumes at the other.
    let page = a.get("/events?limit=1500").await;
    let next = page["next"].as_str().unwrap();
    let (rest, _) = follow_live(&b, "/events/live", Some(next), total - 1500, 100, 8).await;
    assert!(rest == want[1500..], "resumed at the other process");
    a.server.shutdown().await;
    b.finish().await;
}
