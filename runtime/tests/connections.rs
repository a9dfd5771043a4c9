//! The connection loop (ADR 35) on a real socket: HTTPS with a certificate
//! made here and replaced on disk, plain HTTP to the TLS port, clients too
//! slow with their headers, their body or their next request, a live feed
//! outliving the total request timeout, and many connections at once.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Backend, Harness};
use reel::config::TlsFiles;
use reel::config::tokens::Tokens;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, pki_types::CertificateDer};

/// A harness served on a real socket.
struct Served {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    harness: Harness,
}

async fn serve(backend: Backend, tweak: impl FnOnce(&mut reel::Config)) -> Served {
    let harness = Harness::start_with(backend, &[], tweak).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(reel::serve(harness.server.clone(), listener, async {
        let _ = stopped.await;
    }));
    Served { addr, stop, task, harness }
}

impl Served {
    async fn finish(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
        self.harness.finish().await;
    }
}

/// Send `request` and read until the server closes: the whole answer.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, request: &str) -> String {
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
}

/// Read one response's head and body (small, JSON, with a length).
async fn response(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_owned))
                .and_then(|l| l.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= length {
                return text.into_owned();
            }
        }
    }
}

/// Resolves when the server closes `stream` (end of file or reset).
async fn closed(stream: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// A self-signed certificate for `localhost`: (PEM chain, PEM key, DER).
fn certificate() -> (String, String, CertificateDer<'static>) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    (made.cert.pem(), made.signing_key.serialize_pem(), made.cert.der().clone())
}

fn write_pair(dir: &Path, cert: &str, key: &str) -> TlsFiles {
    let files = TlsFiles { cert: dir.join("cert.pem"), key: dir.join("key.pem") };
    std::fs::write(&files.key, key).unwrap();
    std::fs::write(&files.cert, cert).unwrap();
    files
}

/// A TLS client trusting `roots`: the certificate the server presented and
/// the answer to `request`.
async fn over_tls(
    addr: SocketAddr,
    roots: &[CertificateDer<'static>],
    request: &str,
) -> (CertificateDer<'static>, String) {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.expect("the TLS handshake succeeds");
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    (presented, exchange(&mut tls, request).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_tls_with_a_certificate_replaced_on_disk_without_a_restart() {
    let keys = tempfile::tempdir().unwrap();
    let (cert_a, key_a, der_a) = certificate();
    let files = write_pair(keys.path(), &cert_a, &key_a);
    let token = "reel_a-token-for-the-tls-test";
    let served = serve(Backend::Sqlite, |c| {
        c.tls = Some(files.clone());
        c.tokens = Tokens::parse(&format!("ops admin {token}"), "test").unwrap();
    })
    .await;
    let roots = [der_a.clone()];

    let (presented, answer) = over_tls(served.addr, &roots, &get("/healthz")).await;
    assert_eq!(presented, der_a);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Over TLS the browser's session cookie is Secure.
    let body = format!("{{\"token\":\"{token}\"}}");
    let sign_in = format!(
        "POST /session HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (_, answer) = over_tls(served.addr, &roots, &sign_in).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let cookie = answer.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie:")).unwrap();
    assert!(cookie.contains("; Secure"), "{cookie}");

    // A renewal: new key, new certificate, written over the old files.
    let (cert_b, key_b, der_b) = certificate();
    write_pair(keys.path(), &cert_b, &key_b);
    let (presented, answer) = over_tls(served.addr, &[der_a.clone(), der_b.clone()], &get("/healthz")).await;
    assert_eq!(presented, der_b, "the new certificate is served without a restart");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // A half-written renewal (a key that is not the certificate's) keeps the
    // pair that works.
    std::fs::write(&files.key, certificate().1).unwrap();
    let (presented, _) = over_tls(served.addr, &[der_a, der_b.clone()], &get("/healthz")).await;
    assert_eq!(presented, der_b);
    served.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_the_tls_port_is_told_to_use_https() {
    let keys = tempfile::tempdir().unwrap();
    let (cert, key, der) = certificate();
    let files = write_pair(keys.path(), &cert, &key);
    let served = serve(Backend::Sqlite, |c| c.tls = Some(files.clone())).await;

    let mut plain = TcpStream::connect(served.addr).await.unwrap();
    let answer = exchange(&mut plain, &get("/healthz")).await;
    assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{answer}");
    assert!(answer.ends_with("this port serves HTTPS: use an https:// address\n"), "{answer}");
    // And HTTPS goes on.
    let (_, answer) = over_tls(served.addr, &[der], &get("/healthz")).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // A missing key file stops reel from serving, naming it.
    let missing = TlsFiles { cert: files.cert.clone(), key: PathBuf::from("/nonexistent/key.pem") };
    let harness = Harness::start_with(Backend::Sqlite, &[], |c| c.tls = Some(missing)).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = reel::serve(harness.server.clone(), listener, async {}).await.unwrap_err();
    assert!(format!("{error:#}").contains("cannot read /nonexistent/key.pem"), "{error:#}");
    harness.finish().await;
    served.finish().await;
}

fn short_timeouts(c: &mut reel::Config) {
    c.connections.header_timeout = Duration::from_secs(1);
    c.connections.body_timeout = Duration::from_secs(1);
    c.connections.idle_timeout = Duration::from_millis(1500);
    c.requests.timeout = Duration::from_secs(1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_its_headers_a_byte_at_a_time_is_cut_off_at_the_header_timeout() {
    let served = serve(Backend::Sqlite, short_timeouts).await;
    let started = Instant::now();
    let slow = TcpStream::connect(served.addr).await.unwrap();
    let (mut reader, mut writer) = slow.into_split();
    let dribble = tokio::spawn(async move {
        writer.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if writer.write_all(b"X").await.is_err() {
                return;
            }
        }
    });
    // Meanwhile others are served.
    let mut other = TcpStream::connect(served.addr).await.unwrap();
    assert!(exchange(&mut other, &get("/healthz")).await.starts_with("HTTP/1.1 200"));

    let mut buf = [0u8; 256];
    let cut = tokio::time::timeout(Duration::from_secs(5), reader.read(&mut buf)).await;
    let took = started.elapsed();
    assert!(matches!(cut, Ok(Ok(0)) | Ok(Err(_))), "the slow client was not cut off: {cut:?}");
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "cut after {took:?}");
    dribble.abort();
    served.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_answers_408_and_an_idle_connection_is_closed() {
    let served = serve(Backend::Sqlite, short_timeouts).await;

    // Ten bytes of a hundred, then nothing.
    let mut stream = TcpStream::connect(served.addr).await.unwrap();
    let started = Instant::now();
    stream
        .write_all(
            b"POST /events HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"stream_",
        )
        .await
        .unwrap();
    let answer = response(&mut stream).await;
    let took = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"body_timeout\""), "{answer}");
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "answered after {took:?}");
    closed(&mut stream).await;

    // A keep-alive connection: served, then closed once idle for 1.5 s.
    let mut stream = TcpStream::connect(served.addr).await.unwrap();
    for _ in 0..2 {
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
        assert!(response(&mut stream).await.starts_with("HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let idle = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), closed(&mut stream)).await.expect("the idle connection is closed");
    let took = idle.elapsed() + Duration::from_millis(700);
    assert!(took >= Duration::from_millis(1400) && took < Duration::from_secs(4), "closed after {took:?} idle");
    served.finish().await;
}

async fn a_live_feed_stays_connected_past_the_total_request_timeout(backend: Backend) {
    let served = serve(backend, short_timeouts).await;
    let mut feed = TcpStream::connect(served.addr).await.unwrap();
    feed.write_all(b"GET /events/live HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n").await.unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains("\r\n\r\n") {
        let n = feed.read(&mut buf).await.unwrap();
        assert!(n > 0, "{seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(seen.to_ascii_lowercase().contains("content-type: text/event-stream"), "{seen}");

    // Past the request, header and idle timeouts, the feed still delivers.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let body = r#"{"stream_id":"late-1","events":[{"event_type":"late.arrived","data":{}}]}"#;
    let mut append = TcpStream::connect(served.addr).await.unwrap();
    let answer = exchange(
        &mut append,
        &format!(
            "POST /events HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    let delivered = tokio::time::timeout(Duration::from_secs(10), async {
        while !seen.contains("late-1") {
            let n = feed.read(&mut buf).await.unwrap();
            assert!(n > 0, "the feed was closed: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await;
    assert!(delivered.is_ok(), "the event did not arrive: {seen}");
    served.finish().await;
}

both_backends!(a_live_feed_stays_connected_past_the_total_request_timeout);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connections_are_served_at_once_and_at_the_cap_idle_keep_alives_give_way() {
    let served = serve(Backend::Sqlite, |_| {}).await;
    let mut open = Vec::new();
    for _ in 0..1000 {
        open.push(TcpStream::connect(served.addr).await.unwrap());
    }
    let answers = futures_util::future::join_all(open.iter_mut().map(|stream| async move {
        stream.write_all(HEALTHZ).await.unwrap();
        response(stream).await
    }))
    .await;
    assert!(
        answers.iter().all(|a| a.starts_with("HTTP/1.1 200")),
        "{:?}",
        answers.iter().find(|a| !a.starts_with("HTTP/1.1 200"))
    );
    drop(open);
    served.finish().await;

    // Four idle keep-alive connections hold the cap of 4: a fifth client is
    // served at once, and the connection idle the longest is the one closed.
    let served = serve(Backend::Sqlite, |c| c.connections.max = 4).await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(served.addr).await.unwrap();
        stream.write_all(HEALTHZ).await.unwrap();
        assert!(response(&mut stream).await.starts_with("HTTP/1.1 200"));
        idle.push(stream);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut fifth = TcpStream::connect(served.addr).await.unwrap();
    fifth.write_all(HEALTHZ).await.unwrap();
    let served_fifth = tokio::time::timeout(Duration::from_secs(2), response(&mut fifth)).await;
    assert!(served_fifth.is_ok_and(|a| a.starts_with("HTTP/1.1 200")), "the fifth client was not served");
    let oldest = tokio::time::timeout(Duration::from_secs(1), closed(&mut idle[0])).await;
    assert!(oldest.is_ok(), "the connection idle the longest was not closed");
    for stream in &mut idle[1..] {
        stream.write_all(HEALTHZ).await.unwrap();
        assert!(response(stream).await.starts_with("HTTP/1.1 200"), "a younger keep-alive was closed");
    }
    drop((idle, fifth));
    served.finish().await;

    // Four connections sending their headers slowly are not idle: a fifth
    // waits until one of them leaves.
    let served = serve(Backend::Sqlite, |c| c.connections.max = 4).await;
    let mut busy = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(served.addr).await.unwrap();
        stream.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        busy.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut fifth = TcpStream::connect(served.addr).await.unwrap();
    fifth.write_all(HEALTHZ).await.unwrap();
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(500), fifth.read(&mut buf)).await;
    assert!(early.is_err(), "a fifth connection was served past the cap of 4: {early:?}");
    drop(busy.pop());
    assert!(response(&mut fifth).await.starts_with("HTTP/1.1 200"));
    drop(busy);
    served.finish().await;
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
