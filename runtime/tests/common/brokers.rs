//! Private broker instances for the tests that stop one: a `nats-server`
//! with JetStream or a `rabbitmq-server`, on a spare port, with its state in
//! a folder of its own.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A private `nats-server` with JetStream, on a spare port and a store of
/// its own; killed when dropped.
pub struct PrivateNats {
    child: Child,
    port: u16,
}

impl PrivateNats {
    pub fn start(store: &Path, port: u16) -> Self {
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server (Debian package nats-server) is needed for this test");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the private nats-server did not start on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stop it as a restart does (SIGTERM): JetStream writes what it
    /// acknowledged (a SIGKILL could lose acknowledged messages that its
    /// file store had not written yet, which is the broker's durability, not
    /// the sink's).
    pub fn stop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    dir: std::path::PathBuf,
    port: u16,
}

impl PrivateRabbit {
    pub fn start(dir: &Path, port: u16) -> Self {
        let program = ["/usr/lib/rabbitmq/bin/rabbitmq-server", "rabbitmq-server"]
            .into_iter()
            .find(|p| !p.starts_with('/') || Path::new(p).exists())
            .unwrap();
        std::fs::write(dir.join("enabled_plugins"), "[].").unwrap();
        let log = std::fs::File::create(dir.join("server.out")).unwrap();
        let mut child = Command::new(program)
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
            .spawn()
            .expect("rabbitmq-server (Debian package rabbitmq-server) is needed for this test");
        let deadline = Instant::now() + Duration::from_secs(90);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                let out = std::fs::read_to_string(dir.join("server.out")).unwrap_or_default();
                panic!("the private rabbitmq-server exited ({status}):\n{out}");
            }
            assert!(Instant::now() < deadline, "the private rabbitmq-server did not start on port {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { child, dir: dir.to_owned(), port }
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Kill the broker's Erlang VM with SIGKILL, a crash: what it had
    /// confirmed (persistent messages in a durable queue) is on its disk.
    pub fn kill(&mut self) {
        let pid = std::fs::read_to_string(self.dir.join("pid")).unwrap_or_default();
        let pid = pid.trim();
        if !pid.is_empty() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
            // (The VM may be the spawned process itself, which stays a
            // zombie until it is waited for.)
            let alive = |child: &mut Child| {
                let _ = child.try_wait();
                Command::new("kill").args(["-0", pid]).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
            };
            while alive(&mut self.child) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = std::fs::remove_file(self.dir.join("pid"));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        self.kill();
    }
}
