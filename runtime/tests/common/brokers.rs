//! Private broker instances for the tests that stop one: a `nats-server`
//! with JetStream or a `rabbitmq-server`, on a spare port, with its state in
//! a folder of its own. Each runs in a process group of its own, killed
//! whole when the instance is dropped (a failed test leaves no broker
//! behind).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A private `nats-server` with JetStream, on a spare port and a store of
/// its own; killed when dropped.
pub struct PrivateNats {
    child: Child,
    port: u16,
    /// Running (once stopped and reaped, its pid may name another process).
    running: bool,
}

impl PrivateNats {
    pub fn start(store: &Path, port: u16) -> Self {
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("nats-server (Debian package nats-server) is needed for this test");
        let nats = Self { child, port, running: true };
        wait_for_port(port, Duration::from_secs(20), "nats-server", || None);
        nats
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stop it as a restart does (SIGTERM): JetStream writes what it
    /// acknowledged (a SIGKILL could lose acknowledged messages that its
    /// file store had not written yet, which is the broker's durability, not
    /// the sink's).
    ///
    /// A server that has not ended 30 s after SIGTERM fails the test (it is
    /// then killed with its group when dropped).
    pub fn stop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the private nats-server did not stop within 30 s of SIGTERM"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.running = false;
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        if self.running {
            kill_group(&mut self.child);
        }
    }
}

pub fn spare_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A private RabbitMQ broker (`rabbitmq-server` of the Debian package, run
/// as this user) on a spare port, with its node name, database, logs and
/// Erlang cookie in a folder of its own; killed when dropped.
pub struct PrivateRabbit {
    child: Child,
    dir: PathBuf,
    port: u16,
    /// Running (once killed and reaped, its pid may name another process).
    running: bool,
}

impl PrivateRabbit {
    pub fn start(dir: &Path, port: u16) -> Self {
        let program = ["/usr/lib/rabbitmq/bin/rabbitmq-server", "rabbitmq-server"]
            .into_iter()
            .find(|p| !p.starts_with('/') || Path::new(p).exists())
            .unwrap();
        std::fs::write(dir.join("enabled_plugins"), "[].").unwrap();
        let log = std::fs::File::create(dir.join("server.out")).unwrap();
        let child = Command::new(program)
            .env("HOME", dir)
            .env("RABBITMQ_NODENAME", format!("reel{port}@localhost"))
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", spare_port().to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_PID_FILE", dir.join("pid"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", dir.join("advanced.config"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("rabbitmq-server (Debian package rabbitmq-server) is needed for this test");
        let mut rabbit = Self { child, dir: dir.to_owned(), port, running: true };
        let out = rabbit.dir.join("server.out");
        let child = &mut rabbit.child;
        wait_for_port(port, Duration::from_secs(90), "rabbitmq-server", || {
            let exited = child.try_wait().ok().flatten()?;
            Some(format!("it exited ({exited}):\n{}", std::fs::read_to_string(&out).unwrap_or_default()))
        });
        rabbit
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Kill the broker with SIGKILL, a crash (its whole process group: the
    /// start script and the Erlang VM): what it had confirmed (persistent
    /// messages in a durable queue) is on its disk.
    pub fn kill(&mut self) {
        if !self.running {
            return;
        }
        self.running = false;
        kill_group(&mut self.child);
        // The VM's own pid, should it have left the group.
        let pid = std::fs::read_to_string(self.dir.join("pid")).unwrap_or_default();
        let pid = pid.trim();
        if !pid.is_empty() {
            let _ = Command::new("kill").args(["-KILL", pid]).stderr(Stdio::null()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Command::new("kill").args(["-0", pid]).stderr(Stdio::null()).status().is_ok_and(|s| s.success()) {
                assert!(Instant::now() < deadline, "the private rabbitmq-server (pid {pid}) outlived SIGKILL");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = std::fs::remove_file(self.dir.join("pid"));
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Wait until something listens on `port`, panicking after `patience` or
/// when `gone` says why the server will not come.
fn wait_for_port(port: u16, patience: Duration, server: &str, mut gone: impl FnMut() -> Option<String>) {
    let deadline = Instant::now() + patience;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(why) = gone() {
            panic!("the private {server} did not start on port {port}: {why}");
        }
        assert!(Instant::now() < deadline, "the private {server} did not start on port {port} within {patience:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGKILL to `child`'s process group (it leads one of its own), then reap it.
fn kill_group(child: &mut Child) {
    let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).stderr(Stdio::null()).status();
    let _ = child.kill();
    let _ = child.wait();
}
