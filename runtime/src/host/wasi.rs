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
        .stdout(GuestOutput::new(Arc::clone(&name), "stdout", None))
        .stderr(GuestOutput::new(name, "stderr", Some(recent_stderr)))
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

/// Guest stdout/stderr, written to reel's log a line at a time. The line
/// being written is shared by every stream handle of the instance (a guest
/// may open one per write, and flush after each piece of a line), and what is
/// left without a newline is logged when the instance goes away.
#[derive(Clone)]
struct GuestOutput(Arc<Sink>);

struct Sink {
    projection: Arc<str>,
    stream: &'static str,
    recent: Option<Arc<Mutex<VecDeque<String>>>>,
    line: Mutex<Vec<u8>>,
}

impl GuestOutput {
    fn new(projection: Arc<str>, stream: &'static str, recent: Option<Arc<Mutex<VecDeque<String>>>>) -> Self {
        Self(Arc::new(Sink { projection, stream, recent, line: Mutex::new(Vec::new()) }))
    }
}

impl Sink {
    fn write(&self, buf: &[u8]) {
        let Ok(mut line) = self.line.lock() else { return };
        for chunk in buf.split_inclusive(|b| *b == b'\n') {
            if line.len() < LINE_BYTES {
                line.extend_from_slice(chunk);
            }
            if chunk.ends_with(b"\n") {
                self.emit(&line);
                line.clear();
            }
        }
    }

    fn emit(&self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = super::caps::truncate(text.trim_end(), LINE_BYTES);
        tracing::info!(target: "reel::guest", projection = %self.projection, stream = self.stream, "{text}");
        if let Some(recent) = &self.recent
            && let Ok(mut recent) = recent.lock()
        {
            if recent.len() == RECENT_LINES {
                recent.pop_front();
            }
            recent.push_back(text.to_owned());
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Ok(line) = self.line.get_mut()
            && !line.is_empty()
        {
            let line = std::mem::take(line);
            self.emit(&line);
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(LineWriter(self.clone()))
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(tokio::io::sink())
    }
}

struct LineWriter(GuestOutput);

#[wasmtime_wasi::async_trait]
impl OutputStream for LineWriter {
    fn write(&mut self, buf: Bytes) -> Result<(), StreamError> {
        self.0.0.write(&buf);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(recent: &Arc<Mutex<VecDeque<String>>>) -> Vec<String> {
        recent.lock().unwrap().iter().cloned().collect()
    }

    #[test]
    fn a_line_written_in_pieces_through_several_handles_is_one_line() {
        let recent = Arc::new(Mutex::new(VecDeque::new()));
        let output = GuestOutput::new(Arc::from("p"), "stderr", Some(Arc::clone(&recent)));
        // CPython's print: each piece through a fresh handle, flushed.
        for piece in ["placed", " ", "o-1", "\n", "two\nlines\npart"] {
            let mut handle = output.p2_stream();
            handle.write(Bytes::copy_from_slice(piece.as_bytes())).unwrap();
            handle.flush().unwrap();
        }
        assert_eq!(lines(&recent), ["placed o-1", "two", "lines"]);
        drop(output);
        assert_eq!(lines(&recent), ["placed o-1", "two", "lines", "part"], "the rest is logged when the instance goes");
    }

    #[test]
    fn only_the_last_lines_are_kept_and_long_lines_are_cut() {
        let recent = Arc::new(Mutex::new(VecDeque::new()));
        let output = GuestOutput::new(Arc::from("p"), "stderr", Some(Arc::clone(&recent)));
        let mut handle = output.p2_stream();
        for i in 0..8 {
            handle.write(Bytes::from(format!("line {i}\n"))).unwrap();
        }
        handle.write(Bytes::from(format!("{}\n", "x".repeat(3 * LINE_BYTES)))).unwrap();
        let kept = lines(&recent);
        assert_eq!(kept.len(), RECENT_LINES);
        assert_eq!(kept[..4], ["line 4", "line 5", "line 6", "line 7"]);
        assert!(kept[4].len() <= LINE_BYTES + 4 && kept[4].starts_with("xxx"), "{}", kept[4].len());
    }
}
