//! A `reel serve` process, for tests that kill it with SIGKILL or run two
//! of them on one PostgreSQL database.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// A running `reel serve`.
pub struct Process {
    child: Child,
    /// Where it serves.
    pub addr: SocketAddr,
}

impl Process {
    /// `reel serve` on `dir/data` and `dir/modules`, on `database` if given,
    /// with `args` added.
    pub fn start(dir: &Path, database: Option<&str>, args: &[&str]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_reel"));
        command.env_remove("REEL_PERF_MAP").args(["serve", "--listen", "127.0.0.1:0", "--poll-ms", "20"]).args(args);
        if let Some(url) = database {
            command.args(["--database", url]);
        }
        let mut child = command
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--projections")
            .arg(dir.join("modules"))
            .env("RUST_LOG", "warn,reel=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = loop {
            let line = lines.next().expect("reel exited before serving").unwrap();
            if let Some(url) = line.split("reel is serving http://").nth(1) {
                break url.trim().parse().unwrap();
            }
        };
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
        Self { child, addr }
    }

    /// One request: (status, body as JSON, or as a string when it is not).
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut stream = TcpStream::connect(self.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let body = body.map(Value::to_string).unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: reel\r\nConnection: close\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let response = String::from_utf8_lossy(&response);
        let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let raw = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        let chunked = response.split("\r\n\r\n").next().unwrap_or("").to_ascii_lowercase().contains("chunked");
        let text = if chunked { dechunk(&raw) } else { raw };
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Stop the process with SIGSTOP: it holds what it holds (locks,
    /// sessions) and does nothing until killed or thawed.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Let a frozen process go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill").args([signal, &self.child.id().to_string()]).status();
        assert!(status.is_ok_and(|s| s.success()), "could not send {signal} to reel");
    }

    /// Kill it with SIGKILL: no shutdown, no flush.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// A test that fails leaves no process behind.
impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].strip_prefix("\r\n").unwrap_or(&after[n..]);
    }
    out
}
