//! Live latency: from an append's commit to its effect being readable over
//! HTTP, at a steady rate.
//!
//! ```sh
//! cargo bench -p reel --bench latency                        # both backends
//! cargo bench -p reel --bench latency -- --backend postgres --seconds 20
//! cargo test  -p reel --bench latency -- --smoke
//! ```
//!
//! A `reel serve` process runs `customer-stats`; this process is the client.
//! Appenders send one
//! `order.placed` per request at the target rate, either through
//! `POST /events` or straight into the events table with SQL; as soon as an
//! append has committed, a reader asks
//! `GET /projections/customer-stats/kv/customer/{id}?min_position={position}`,
//! which answers once the projection has applied it. The latency is commit
//! to answer. After a second of warm-up, each path runs at 1,000 events/s,
//! then the rate doubles until the machine can no longer keep up. Appends
//! and reads use 8 connections each (`REEL_BENCH_LANES`).
//!
//! Then the feeds: a second `reel serve` captures `customer-stats`' changes
//! (`--set customer-stats.changes=on`); 100 clients (`--clients`) follow
//! `GET /events/live`, then 100 follow `GET /projections/customer-stats/changes`,
//! as server-sent events on plain sockets, each resuming at the head (a token
//! from the end of `GET /events`; the id of the change feed's `complete`
//! after one client read its snapshot), while `POST /events` appends at
//! 1,000 events/s (`--feed-rate`). The latency is from an append's answer to
//! each client's receipt of the event (the live log) or of the change of the
//! key `order/l-{i}` that `customer-stats` sets for that order (the change
//! feed); every client must see every appended event, once.

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use common::Backend;
use common::keepalive::Http;
use common::sse;
use tokio::sync::Mutex;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Path {
    Api,
    Sql,
}

/// How an appender writes.
enum Writer {
    Api(Http),
    Postgres(tokio_postgres::Client),
    Sqlite(std::path::PathBuf),
}

impl Writer {
    /// Append one event; its position once committed.
    async fn append(&mut self, i: u64) -> i64 {
        let data = format!(
            r#"{{"orderId":"l-{i}","customerId":"c-{:04}","items":[{{"productId":"p-1","quantity":1,"price":9.5}}],"total":9.5}}"#,
            i % 1000
        );
        match self {
            Writer::Api(http) => {
                let body = format!(
                    r#"{{"stream_id":"order-l-{i}","expected_version":0,"events":[{{"event_type":"order.placed","data":{data}}}]}}"#
                );
                let (status, response) = http.request("POST", "/events", &body).await;
                assert_eq!(status, 201, "{response}");
                let value: serde_json::Value = serde_json::from_str(&response).unwrap();
                value["positions"][0].as_i64().unwrap()
            }
            Writer::Postgres(client) => client
                .query_one(
                    "INSERT INTO events (stream_id, version, event_type, data) VALUES ($1, 1, 'order.placed', $2::text::jsonb) RETURNING id",
                    &[&format!("order-l-{i}"), &data],
                )
                .await
                .unwrap()
                .get(0),
            Writer::Sqlite(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    let conn = rusqlite::Connection::open(path).unwrap();
                    conn.busy_timeout(Duration::from_secs(10)).unwrap();
                    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
                    let id: i64 = conn
                        .query_row(
                            "INSERT INTO events (stream_id, version, event_type, data) VALUES (?1, 1, 'order.placed', ?2) RETURNING id",
                            rusqlite::params![format!("order-l-{i}"), data],
                            |r| r.get(0),
                        )
                        .unwrap();
                    conn.execute_batch("COMMIT").unwrap();
                    id
                })
                .await
                .unwrap()
            }
        }
    }
}

struct Run {
    achieved: f64,
    latencies: Vec<Duration>,
}

async fn run(addr: SocketAddr, config: &reel::Config, path: Path, rate: u64, seconds: f64, start: u64) -> Run {
    let lanes: usize = std::env::var("REEL_BENCH_LANES").ok().and_then(|v| v.parse().ok()).unwrap_or(8);
    let mut writers = Vec::new();
    for _ in 0..lanes {
        writers.push(Arc::new(Mutex::new(match (path, &config.database_url) {
            (Path::Api, _) => Writer::Api(Http::connect(addr).await),
            (Path::Sql, Some(url)) => {
                let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(connection);
                Writer::Postgres(client)
            }
            (Path::Sql, None) => Writer::Sqlite(config.data_dir.join("events.db")),
        })));
    }
    let mut readers = Vec::new();
    for _ in 0..lanes {
        readers.push(Arc::new(Mutex::new(Http::connect(addr).await)));
    }
    let (latencies, achieved) = paced(rate, seconds, |n| {
        let writer = Arc::clone(&writers[n as usize % lanes]);
        let reader = Arc::clone(&readers[n as usize % lanes]);
        let i = start + n;
        async move {
            let position = writer.lock().await.append(i).await;
            let committed = Instant::now();
            let (status, body) = reader
                .lock()
                .await
                .request(
                    "GET",
                    &format!("/projections/customer-stats/kv/customer/c-{:04}?min_position={position}", i % 1000),
                    "",
                )
                .await;
            assert_eq!(status, 200, "{body}");
            committed.elapsed()
        }
    })
    .await;
    Run { achieved, latencies }
}

/// `task(n)` spawned for n in 0..rate × seconds, at a steady `rate` per
/// second: what each gave, in order, and the rate achieved.
async fn paced<T: Send + 'static, F: std::future::Future<Output = T> + Send + 'static>(
    rate: u64,
    seconds: f64,
    mut task: impl FnMut(u64) -> F,
) -> (Vec<T>, f64) {
    let total = (rate as f64 * seconds) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for n in 0..total {
        tokio::time::sleep_until((started + interval.mul_f64(n as f64)).into()).await;
        tasks.push(tokio::spawn(task(n)));
    }
    let mut outputs = Vec::with_capacity(tasks.len());
    for task in tasks {
        outputs.push(task.await.unwrap());
    }
    (outputs, total as f64 / started.elapsed().as_secs_f64())
}

/// Start `reel serve` for `config`; its address once it listens.
fn serve(config: &reel::Config, args: &[&str]) -> (std::process::Child, SocketAddr) {
    use std::io::BufRead;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_reel"));
    command.args(["serve", "--listen", "127.0.0.1:0"]).arg("--data-dir").arg(&config.data_dir);
    command.args(args);
    command.arg("--projections").arg(&config.modules_dir);
    if let Some(url) = &config.database_url {
        command.args(["--database", url]);
    }
    let mut child = command
        .env("RUST_LOG", std::env::var("REEL_SERVER_LOG").unwrap_or_else(|_| "info".into()))
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("reel exited before serving").unwrap();
        if let Some(url) = line.split("reel is serving http://").nth(1) {
            break url.trim().parse().unwrap();
        }
    };
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if line.contains("WARN") || line.contains("ERROR") {
                eprintln!("reel: {line}");
            }
        }
    });
    (child, addr)
}

/// The feed the clients follow.
#[derive(Clone, Copy, Debug)]
enum Feed {
    Live,
    Changes,
}

impl Feed {
    fn uri(self) -> &'static str {
        match self {
            Feed::Live => "/events/live",
            Feed::Changes => "/projections/customer-stats/changes",
        }
    }

    /// What precedes the number that names an append in a message: the
    /// event's position on the live log; on the change feed, the order's
    /// number in the key `customer-stats` sets for each placed order
    /// (`order/l-{i}`), one change per event.
    fn marker(self) -> &'static str {
        match self {
            Feed::Live => "\"position\":",
            Feed::Changes => "\"key\":\"order/l-",
        }
    }
}

/// A server-sent events client on a plain socket (HTTP/1.1, chunked).
struct SseClient {
    stream: tokio::io::BufReader<tokio::net::TcpStream>,
    text: String,
    chunk: Vec<u8>,
}

impl SseClient {
    /// `GET uri`, resuming after `last_id` when given.
    async fn open(addr: SocketAddr, uri: &str, last_id: Option<&str>) -> Self {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let mut stream = tokio::io::BufReader::new(stream);
        let resume = last_id.map_or_else(String::new, |id| format!("Last-Event-ID: {id}\r\n"));
        let head = format!("GET {uri} HTTP/1.1\r\nHost: reel\r\nAccept: text/event-stream\r\n{resume}\r\n");
        stream.get_mut().write_all(head.as_bytes()).await.unwrap();
        let mut line = String::new();
        stream.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("HTTP/1.1 200"), "{uri}: {line}");
        let mut chunked = false;
        loop {
            line.clear();
            stream.read_line(&mut line).await.unwrap();
            if line.trim_end().is_empty() {
                break;
            }
            chunked |= line.to_ascii_lowercase().starts_with("transfer-encoding: chunked");
        }
        assert!(chunked, "{uri}: a stream in chunks");
        Self { stream, text: String::new(), chunk: Vec::new() }
    }

    /// The messages of the next chunk, with when it arrived; `None` if none
    /// came within `wait`.
    async fn next_chunk(&mut self, wait: Duration) -> Option<(Vec<sse::Message>, Instant)> {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt};
        // Only the wait for the first bytes has a timeout: a read cut off
        // midway would lose what it had read (`fill_buf` loses nothing).
        let buffered = tokio::time::timeout(wait, self.stream.fill_buf()).await.ok()?.unwrap().len();
        assert_ne!(buffered, 0, "the server ended the stream");
        let mut line = String::new();
        self.stream.read_line(&mut line).await.unwrap();
        let size = usize::from_str_radix(line.trim_end().split(';').next().unwrap(), 16).unwrap();
        self.chunk.resize(size + 2, 0);
        self.stream.read_exact(&mut self.chunk).await.unwrap();
        let arrived = Instant::now();
        self.text.push_str(std::str::from_utf8(&self.chunk[..size]).unwrap());
        let messages = std::iter::from_fn(|| sse::take(&mut self.text)).collect();
        Some((messages, arrived))
    }
}

/// Where a client of `feed` starts to see only what comes next: the live
/// log's `next` token at its end (`GET /events` read to the end), the change
/// feed's id of its `complete` (one client reads the snapshot once).
async fn head_token(addr: SocketAddr, feed: Feed) -> String {
    match feed {
        Feed::Live => {
            let mut http = Http::connect(addr).await;
            let mut after = String::new();
            loop {
                let (status, body) = http.request("GET", &format!("/events?limit=10000&after={after}"), "").await;
                assert_eq!(status, 200, "{body}");
                let page: serde_json::Value = serde_json::from_str(&body).unwrap();
                after = page["next"].as_str().unwrap().to_owned();
                if page["events"].as_array().unwrap().len() < 10_000 {
                    return after;
                }
            }
        }
        Feed::Changes => {
            let mut client = SseClient::open(addr, feed.uri(), None).await;
            loop {
                let Some((messages, _)) = client.next_chunk(Duration::from_secs(60)).await else {
                    panic!("no complete within a minute")
                };
                if let Some(complete) = messages.into_iter().find(|m| m.event == "complete") {
                    return complete.id.unwrap();
                }
            }
        }
    }
}

/// A client of `feed` from `token` on: the number that names the append in
/// each message (`Feed::marker`), with when it arrived, until it has seen
/// `wanted` of them (set once the appends are done: on PostgreSQL the
/// highest position need not come last). Numbers below `first` are not
/// this run's: the change feed's head is where the projection had applied
/// when its snapshot completed, and the changes of earlier appends it had
/// not yet applied come after it.
async fn follow(
    addr: SocketAddr,
    feed: Feed,
    token: Arc<str>,
    first: i64,
    wanted: Arc<AtomicI64>,
) -> Vec<(i64, Instant)> {
    let mut client = SseClient::open(addr, feed.uri(), Some(&token)).await;
    let mut seen = Vec::new();
    while (seen.len() as i64) < wanted.load(Ordering::Relaxed) {
        let Some((messages, arrived)) = client.next_chunk(Duration::from_millis(100)).await else { continue };
        for message in messages {
            let Some(at) = message.data.find(feed.marker()) else { continue };
            let digits: String = message.data[at + feed.marker().len()..]
                .chars()
                .skip_while(|c| *c == ' ')
                .take_while(char::is_ascii_digit)
                .collect();
            let number: i64 = digits.parse().unwrap();
            if number >= first {
                seen.push((number, arrived));
            }
        }
    }
    seen
}

/// One feed's run: `clients` clients follow `feed` while `POST /events`
/// appends at `rate`/s for `seconds`. The latencies, how many receipts
/// came before the append's answer (counted as 0), and the rate achieved.
async fn feed_run(addr: SocketAddr, feed: Feed, clients: usize, rate: u64, seconds: f64, start: u64) -> FeedRun {
    let wanted = Arc::new(AtomicI64::new(i64::MAX));
    let token: Arc<str> = head_token(addr, feed).await.into();
    // The live log's head is its end; the change feed's names orders.
    let first = if matches!(feed, Feed::Live) { 0 } else { start as i64 };
    let followers: Vec<_> = (0..clients)
        .map(|_| tokio::spawn(follow(addr, feed, Arc::clone(&token), first, Arc::clone(&wanted))))
        .collect();
    // The clients are in before the first append.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let lanes = 8;
    let mut writers = Vec::new();
    for _ in 0..lanes {
        writers.push(Arc::new(Mutex::new(Writer::Api(Http::connect(addr).await))));
    }
    let (committed, achieved) = paced(rate, seconds, |n| {
        let writer = Arc::clone(&writers[n as usize % lanes]);
        async move {
            let position = writer.lock().await.append(start + n).await;
            (position, (start + n) as i64, Instant::now())
        }
    })
    .await;
    wanted.store(committed.len() as i64, Ordering::Relaxed);
    let (mut latencies, mut early) = (Vec::with_capacity(committed.len() * clients), 0);
    for follower in followers {
        let seen = tokio::time::timeout(Duration::from_secs(60), follower).await.expect("a client keeps up").unwrap();
        let mut arrivals: std::collections::HashMap<i64, Instant> = std::collections::HashMap::new();
        for (id, at) in seen {
            assert!(arrivals.insert(id, at).is_none(), "{feed:?}: {id} came twice");
        }
        for &(position, order, answered) in &committed {
            let id = if matches!(feed, Feed::Live) { position } else { order };
            let arrived = *arrivals.get(&id).unwrap_or_else(|| panic!("{feed:?}: event {position} never came"));
            early += usize::from(arrived < answered);
            latencies.push(arrived.saturating_duration_since(answered));
        }
    }
    latencies.sort_unstable();
    FeedRun { latencies, early, achieved }
}

struct FeedRun {
    latencies: Vec<Duration>,
    early: usize,
    achieved: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let smoke = args.iter().any(|a| a == "--smoke");
    let value = |name: &str| args.iter().position(|a| a == name).map(|i| args[i + 1].clone());
    let seconds: f64 = value("--seconds").map_or(if smoke { 1.0 } else { 10.0 }, |s| s.parse().unwrap());
    let backends = match value("--backend").as_deref() {
        Some("sqlite") => vec![Backend::Sqlite],
        Some("postgres") => vec![Backend::Postgres],
        _ => vec![Backend::Sqlite, Backend::Postgres],
    };
    let clients: usize = value("--clients").map_or(if smoke { 10 } else { 100 }, |s| s.parse().unwrap());
    let feed_rate: u64 = value("--feed-rate").map_or(1000, |s| s.parse().unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    println!("live latency: commit to readable over HTTP, {seconds} s per rate, one event per append");
    for backend in backends {
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let mut config = common::test_config(dir.path());
            config.read_wait = Duration::from_secs(30);
            config.poll_interval = Duration::from_millis(250);
            if backend == Backend::Postgres {
                config.database_url = Some(common::create_database().await);
            }
            std::fs::create_dir_all(&config.modules_dir).unwrap();
            std::fs::copy(common::guest("customer_stats"), config.modules_dir.join("customer_stats.wasm")).unwrap();
            let (mut server, addr) = serve(&config, &[]);
            println!("\n== {backend:?}");
            println!(
                "{:<6} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8}",
                "path", "target/s", "achieved", "p50 ms", "p95 ms", "p99 ms", "max ms"
            );
            let mut next = 0u64;
            for path in [Path::Api, Path::Sql] {
                // Warm up (connections, pools, caches) before measuring.
                next += run(addr, &config, path, 500, if smoke { 0.2 } else { 1.0 }, next).await.latencies.len() as u64;
                let mut rate = 1000;
                loop {
                    let mut result = run(addr, &config, path, rate, seconds, next).await;
                    next += result.latencies.len() as u64;
                    result.latencies.sort();
                    let l = &result.latencies;
                    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
                    println!(
                        "{:<6} {:>8} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
                        format!("{path:?}"),
                        rate,
                        result.achieved,
                        ms(percentile(l, 0.5)),
                        ms(percentile(l, 0.95)),
                        ms(percentile(l, 0.99)),
                        ms(*l.last().unwrap())
                    );
                    let kept_up = result.achieved >= rate as f64 * 0.9 && percentile(l, 0.99) < Duration::from_secs(1);
                    if smoke || !kept_up || rate >= 64_000 {
                        break;
                    }
                    rate *= 2;
                }
            }
            server.kill().unwrap();
            server.wait().unwrap();

            // The feeds, on a server that captures customer-stats' changes.
            let (mut server, addr) = serve(&config, &["--set", "customer-stats.changes=on"]);
            println!(
                "\nfeeds: {clients} clients, POST /events at {feed_rate}/s for {seconds} s, append's answer to receipt"
            );
            println!(
                "{:<8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>10}",
                "feed", "achieved", "p50 ms", "p95 ms", "p99 ms", "max ms", "before ans"
            );
            // The capture starts once the projection is at the head.
            next +=
                run(addr, &config, Path::Api, 500, if smoke { 0.2 } else { 1.0 }, next).await.latencies.len() as u64;
            for feed in [Feed::Live, Feed::Changes] {
                let result = feed_run(addr, feed, clients, feed_rate, seconds, next).await;
                next += (feed_rate as f64 * seconds) as u64;
                let l = &result.latencies;
                let ms = |d: Duration| d.as_secs_f64() * 1000.0;
                println!(
                    "{:<8} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9.1}%",
                    format!("{feed:?}"),
                    result.achieved,
                    ms(percentile(l, 0.5)),
                    ms(percentile(l, 0.95)),
                    ms(percentile(l, 0.99)),
                    ms(*l.last().unwrap()),
                    100.0 * result.early as f64 / l.len() as f64
                );
            }
            server.kill().unwrap();
            server.wait().unwrap();
            if let Some(url) = &config.database_url {
                common::drop_database(url).await;
            }
        });
    }
}
