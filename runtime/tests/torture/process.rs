//! The `reel` binary as a torture run drives it: started on a folder (and a
//! database), its log kept in a file of the run's folder, killed with SIGKILL.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// Where the current `reel` serves; `None` while none runs. Shared with the
/// run's clients, which follow it across restarts.
pub type Address = Arc<Mutex<Option<SocketAddr>>>;

/// A running `reel serve`.
pub struct Reel {
    child: Child,
    /// Where it serves.
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Reel {
    /// `reel serve` on `dir/data` and `dir/modules` (and `database`), with
    /// `args` added; its log appended to `dir/reel.log`.
    pub fn start(dir: &Path, database: Option<&str>, args: &[&str]) -> Self {
        let log = dir.join("reel.log");
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
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
            .env("RUST_LOG", "warn,reel::server=info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(file)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut copy = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        let addr = loop {
            let Some(Ok(line)) = lines.next() else {
                drop(copy);
                let status = child.wait().unwrap();
                panic!("reel exited before serving ({status}); its log ends:\n{}", tail(&log));
            };
            let _ = writeln!(copy, "{line}");
            if let Some(url) = line.split("reel is serving http://").nth(1) {
                break url.trim().parse().unwrap();
            }
        };
        // Its log (on stdout) goes to the file too.
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let _ = writeln!(copy, "{line}");
            }
        });
        Self { child, addr, log }
    }

    /// Its process id (for `/proc/PID`: memory, open files).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Kill it with SIGKILL: no shutdown, no flush.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Stop it with SIGTERM, as a service manager does: it finishes its
    /// batches and saves its checkpoints.
    pub fn terminate(mut self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "reel stopped with {status}: {}", self.log_tail());
    }

    /// The end of its log (for a failure's message).
    pub fn log_tail(&self) -> String {
        tail(&self.log)
    }
}

/// A run that fails leaves no process behind.
impl Drop for Reel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last lines of a log file.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// SplitMix64: the run's random moments, repeatable from a printed seed.
pub struct Rng(pub u64);

impl Rng {
    /// A seed from `REEL_TORTURE_SEED`, else from the OS.
    pub fn from_env() -> Self {
        let seed = std::env::var("REEL_TORTURE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            let mut bytes = [0u8; 8];
            getrandom::fill(&mut bytes).unwrap();
            u64::from_le_bytes(bytes) % 1_000_000
        });
        eprintln!("torture: seed {seed} (REEL_TORTURE_SEED={seed} repeats the choices, not the timings)");
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A knob from the environment, or its default.
pub fn knob(name: &str, default: usize) -> usize {
    std::env::var(name).ok().map_or(default, |v| v.replace('_', "").parse().unwrap_or_else(|_| panic!("{name}={v}")))
}
