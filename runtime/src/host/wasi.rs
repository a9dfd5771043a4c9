//! The WASI a projection gets: enough to satisfy what toolchains import
//! (Rust's std, componentize-py, componentize-js), none of the real thing.
//!
//! No files (no preopens), no environment or arguments, no network, stdin
//! closed. Clocks and randomness are deterministic so a replay computes the
//! same read model: the wall clock is fixed at the Unix epoch, the monotonic
//! clock advances one microsecond per reading, and "random" bytes are a fixed
//! sequence. Standard output and error go to reel's log, line by line.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx};

/// Longest guest output line kept in the log.
const LINE_BYTES: usize = 4096;

/// Lines of stderr kept to explain a trap (a panic message is written there).
const RECENT_LINES: usize = 5;

/// A WASI context with nothing real behind it; the last lines of stderr are
/// kept in `recent_stderr`.
pub fn inert_ctx(projection: &str, recent_stderr: Arc<Mutex<VecDeque<String>>>) -> WasiCtx {
    let name: Arc<str> = Arc::from(projection);
    WasiCtx::builder()
        .stdout(GuestOutput { projection: Arc::clone(&name), stream: "stdout", recent: None })
        .stderr(GuestOutput { projection: name, stream: "stderr", recent: Some(recent_stderr) })
        .wall_clock(FixedWallClock)
        .monotonic_clock(SteppingClock::default())
        .secure_random(wasmtime_wasi::Deterministic::new(fixed_bytes(0x5eed)))
        .insecure_random(wasmtime_wasi::Deterministic::new(fixed_bytes(0x1dea)))
        .insecure_random_seed(0x7265_656c)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build()
}

/// 4 KiB of pseudo-random bytes from a fixed seed (xorshift64*).
fn fixed_bytes(seed: u64) -> Vec<u8> {
    let mut state = seed;
    (0..512)
        .flat_map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes()
        })
        .collect()
}

/// The wall clock reads 1970-01-01T00:00:00Z: use the event's `occurred-at`.
struct FixedWallClock;

impl HostWallClock for FixedWallClock {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_secs(1)
    }
    fn now(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

/// A monotonic clock that moves one microsecond per reading, so loops that
/// wait for time to pass still end.
#[derive(Default)]
struct SteppingClock {
    nanos: std::sync::atomic::AtomicU64,
}

impl HostMonotonicClock for SteppingClock {
    fn resolution(&self) -> u64 {
        1_000
    }
    fn now(&self) -> u64 {
        self.nanos.fetch_add(1_000, std::sync::atomic::Ordering::Relaxed)
    }
}

/// Guest stdout/stderr, written to reel's log.
#[derive(Clone)]
struct GuestOutput {
    projection: Arc<str>,
    stream: &'static str,
    recent: Option<Arc<Mutex<VecDeque<String>>>>,
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(LineWriter { output: self.clone(), line: Vec::new() })
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(tokio::io::sink())
    }
}

struct LineWriter {
    output: GuestOutput,
    line: Vec<u8>,
}

impl LineWriter {
    fn emit(&mut self) {
        let text = String::from_utf8_lossy(&self.line);
        let text = super::caps::truncate(text.trim_end(), LINE_BYTES);
        tracing::info!(target: "reel::guest", projection = %self.output.projection, stream = self.output.stream, "{text}");
        if let Some(recent) = &self.output.recent
            && let Ok(mut recent) = recent.lock()
        {
            if recent.len() == RECENT_LINES {
                recent.pop_front();
            }
            recent.push_back(text.to_owned());
        }
        self.line.clear();
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for LineWriter {
    fn write(&mut self, buf: Bytes) -> Result<(), StreamError> {
        for chunk in buf.split_inclusive(|b| *b == b'\n') {
            if self.line.len() < LINE_BYTES {
                self.line.extend_from_slice(chunk);
            }
            if chunk.ends_with(b"\n") {
                self.emit();
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        if !self.line.is_empty() {
            self.emit();
        }
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}
