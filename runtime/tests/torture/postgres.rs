//! A private PostgreSQL instance for a test that stops and starts it
//! (DESIGN.md: never the shared server): `initdb` into a temporary folder,
//! served on a spare port, run as the `postgres` user when the test runs as
//! root (PostgreSQL refuses to run as root).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A PostgreSQL cluster of the test's own, stopped (`-m immediate`) when dropped.
pub struct PrivatePostgres {
    dir: TempDir,
    bin: PathBuf,
    /// The port it serves on (127.0.0.1).
    pub port: u16,
}

impl PrivatePostgres {
    /// `initdb` a cluster and start it.
    pub fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's programs are needed in /usr/lib/postgresql/VERSION/bin (Debian's postgresql package)")
            .flatten()
            .map(|v| v.path().join("bin"))
            .filter(|bin| bin.join("initdb").exists())
            .max()
            .expect("no /usr/lib/postgresql/*/bin/initdb");
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            // The folder must belong to the user the server runs as.
            let status = Command::new("chown").arg("postgres").arg(dir.path()).status().unwrap();
            assert!(status.success(), "chown postgres {}", dir.path().display());
        }
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let pg = Self { dir, bin, port };
        let data = pg.data();
        assert!(
            pg.run("initdb", &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]),
            "initdb failed"
        );
        pg.up();
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").to_string_lossy().into_owned()
    }

    /// Run one of PostgreSQL's programs (as `postgres` when root).
    fn run(&self, program: &str, args: &[&str]) -> bool {
        let path = self.bin.join(program);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let output = command.args(args).output().unwrap_or_else(|e| panic!("running {}: {e}", path.display()));
        if !output.status.success() {
            eprintln!(
                "{program} {args:?}: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        output.status.success()
    }

    /// Start the server and wait until it accepts connections.
    pub fn up(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log").to_string_lossy().into_owned();
        let started = Instant::now();
        while !self.run("pg_ctl", &["-D", &self.data(), "-o", &options, "-l", &log, "-w", "-t", "120", "start"]) {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the private PostgreSQL did not start: {}",
                tail(&log)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Stop the server the hard way: every backend killed, no checkpoint
    /// (crash recovery runs at the next start).
    pub fn crash(&self) {
        assert!(self.run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "stop"]), "pg_ctl stop failed");
    }

    /// A URL for database `name` on it.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Create database `name`; its URL.
    pub fn create_database(&self, name: &str) -> String {
        let status = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-q", "-c"])
            .arg(format!("CREATE DATABASE {name}"))
            .status()
            .unwrap();
        assert!(status.success(), "CREATE DATABASE {name}");
        self.url(name)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "stop"]);
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

fn tail(path: &str) -> String {
    super::process::tail(Path::new(path))
}
