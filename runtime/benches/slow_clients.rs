//! Slow clients (ADR 35): many connections sending their request headers a
//! byte a second while a client reads a read model; each slow connection
//! should be cut at the header timeout, and the reads should not notice.
//!
//! ```sh
//! cargo bench -p reel --bench slow_clients                   # 500 clients, 10 s timeout, 15 s
//! cargo bench -p reel --bench slow_clients -- --clients 1000 --seconds 20
//! cargo test  -p reel --bench slow_clients -- --smoke        # 50 clients, 1 s timeout, 3 s
//! ```
//!
//! A `reel serve` process (SQLite, `customer-stats`, its default limits but
//! `--header-timeout`) serves; this process opens the slow connections, each
//! sending `GET / HTTP/1.1\r\n` and then one byte a second, and meanwhile
//! reads `GET /projections/customer-stats/kv/customer/c-0001` on one
//! keep-alive connection, one read every 20 ms, timing each.

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::keepalive::Http;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A slow client: how long after connecting the server cut it, if it did
/// within `give_up`.
async fn trickle(addr: SocketAddr, give_up: Duration) -> Option<Duration> {
    let started = Instant::now();
    let stream = TcpStream::connect(addr).await.ok()?;
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        if writer.write_all(b"GET / HTTP/1.1\r\n").await.is_err() {
            return;
        }
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if writer.write_all(b"X").await.is_err() {
                return;
            }
        }
    });
    let mut buf = [0u8; 512];
    let cut = tokio::time::timeout(give_up, async {
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    writing.abort();
    cut.ok().map(|()| started.elapsed())
}

/// Start `reel serve` with `args`; its address once it listens.
fn serve(config: &reel::Config, args: &[&str]) -> (std::process::Child, SocketAddr) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_reel"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(&config.data_dir)
        .arg("--projections")
        .arg(&config.modules_dir)
        .args(args)
        .env("RUST_LOG", "info")
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
            if line.contains("ERROR") {
                eprintln!("reel: {line}");
            }
        }
    });
    (child, addr)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let smoke = args.iter().any(|a| a == "--smoke");
    let value = |name: &str| args.iter().position(|a| a == name).map(|i| args[i + 1].clone());
    let clients: usize = value("--clients").map_or(if smoke { 50 } else { 500 }, |s| s.parse().unwrap());
    let timeout: u64 = value("--header-timeout").map_or(if smoke { 1 } else { 10 }, |s| s.parse().unwrap());
    let seconds: f64 = value("--seconds").map_or(if smoke { 3.0 } else { 15.0 }, |s| s.parse().unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let config = common::test_config(dir.path());
        std::fs::create_dir_all(&config.modules_dir).unwrap();
        std::fs::copy(common::guest("customer_stats"), config.modules_dir.join("customer_stats.wasm")).unwrap();
        let (mut server, addr) = serve(&config, &["--header-timeout", &timeout.to_string()]);
        let mut reads = Http::connect(addr).await;
        let data = r#"{"orderId":"o-1","customerId":"c-0001","items":[],"total":9.5}"#;
        let body = format!(
            r#"{{"stream_id":"order-o-1","expected_version":0,"events":[{{"event_type":"order.placed","data":{data}}}]}}"#
        );
        let (status, answer) = reads.request("POST", "/events", &body).await;
        assert_eq!(status, 201, "{answer}");
        let position = serde_json::from_str::<serde_json::Value>(&answer).unwrap()["positions"][0].as_i64().unwrap();
        let path = "/projections/customer-stats/kv/customer/c-0001";
        let (status, answer) = reads.request("GET", &format!("{path}?min_position={position}"), "").await;
        assert_eq!(status, 200, "{answer}");

        println!(
            "slow clients: {clients} connections sending a header byte a second, --header-timeout {timeout} s; \
             a read every 20 ms for {seconds} s"
        );
        let give_up = Duration::from_secs(timeout * 3 + 5);
        let slow: Vec<_> = (0..clients).map(|_| tokio::spawn(trickle(addr, give_up))).collect();
        let started = Instant::now();
        let mut latencies = Vec::new();
        while started.elapsed().as_secs_f64() < seconds {
            let asked = Instant::now();
            let (status, answer) = reads.request("GET", path, "").await;
            assert_eq!(status, 200, "{answer}");
            latencies.push(asked.elapsed());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut cuts = Vec::new();
        for task in slow {
            if let Some(after) = task.await.unwrap() {
                cuts.push(after);
            }
        }
        latencies.sort();
        cuts.sort();
        println!(
            "reads: {} served, p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            latencies.len(),
            percentile(&latencies, 0.5).as_secs_f64() * 1e3,
            percentile(&latencies, 0.95).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3,
            latencies.last().unwrap().as_secs_f64() * 1e3,
        );
        if cuts.is_empty() {
            println!("slow clients cut: 0 of {clients}");
        } else {
            println!(
                "slow clients cut: {} of {clients}, after p50 {:.2} s, max {:.2} s",
                cuts.len(),
                percentile(&cuts, 0.5).as_secs_f64(),
                cuts.last().unwrap().as_secs_f64(),
            );
        }
        assert_eq!(cuts.len(), clients, "every slow client is cut at the header timeout");
        let _ = server.kill();
        let _ = server.wait();
    });
}
