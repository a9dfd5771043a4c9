//! Debian's chromium, driven over chromedriver's WebDriver protocol (HTTP
//! and JSON, spoken through reel's own small client).

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reel::testing::Client;
use serde_json::{Value, json};

/// The key of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless chromium with one WebDriver session.
pub struct Browser {
    driver: Child,
    client: Client,
    session: String,
    _profile: tempfile::TempDir,
}

/// An element of the page.
#[derive(Debug, Clone)]
pub struct Element(String);

fn installed(program: &str) -> bool {
    Command::new(program).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

impl Browser {
    /// Start chromedriver on a free port and open a session.
    pub fn start() -> Self {
        assert!(
            installed("chromedriver") && std::path::Path::new("/usr/bin/chromium").exists(),
            "the dashboard test needs Debian's chromium and chromium-driver; `cargo xtask test` installs them \
             (apt-get install chromium chromium-driver)"
        );
        let mut driver = Command::new("chromedriver")
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let port = driver_port(&mut driver);
        let client = Client::connect(&format!("http://127.0.0.1:{port}")).expect("connecting to chromedriver");
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Self { driver, client, session: String::new(), _profile: profile };
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-proxy-server",
            "--hide-scrollbars",
            &format!("--user-data-dir={}", browser._profile.path().display()),
        ];
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args },
            "goog:loggingPrefs": { "browser": "SEVERE" },
        }}});
        let answer = browser.request("POST", "/session", Some(capabilities));
        browser.session = answer["sessionId"].as_str().expect("a session id").to_owned();
        browser
    }

    fn request(&mut self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string());
        let response = match method {
            "GET" => self.client.get(path),
            "DELETE" => self.client.delete(path),
            _ => self.client.post(path, Some(body.as_deref().unwrap_or("{}"))),
        }
        .unwrap_or_else(|e| panic!("{method} {path} to chromedriver: {e}"));
        let value: Value = serde_json::from_str(&response.body).unwrap_or(Value::Null);
        assert!(response.status == 200, "{method} {path}: HTTP {}: {}", response.status, value["value"]);
        value["value"].clone()
    }

    fn call(&mut self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.request(method, &path, body)
    }

    /// Open `url`.
    pub fn goto(&mut self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    /// Size the window (the viewport, in headless mode).
    pub fn window(&mut self, width: u32, height: u32) {
        self.call("POST", "/window/rect", Some(json!({ "width": width, "height": height })));
    }

    /// Run `script` (a function body; `arguments` holds `args`) and return its result.
    pub fn script(&mut self, script: &str, args: Value) -> Value {
        self.call("POST", "/execute/sync", Some(json!({ "script": script, "args": args })))
    }

    /// A DevTools command (device emulation, full-page screenshots).
    pub fn devtools(&mut self, command: &str, params: Value) -> Value {
        self.call("POST", "/goog/cdp/execute", Some(json!({ "cmd": command, "params": params })))
    }

    /// The first element matching `css`, if any.
    pub fn find(&mut self, css: &str) -> Option<Element> {
        let path = format!("/session/{}/element", self.session);
        let body = json!({ "using": "css selector", "value": css }).to_string();
        let response = self.client.post(&path, Some(&body)).expect("finding an element");
        let value: Value = serde_json::from_str(&response.body).unwrap_or(Value::Null);
        match response.status {
            200 => Some(Element(value["value"][ELEMENT].as_str().expect("an element reference").to_owned())),
            404 if value["value"]["error"] == "no such element" => None,
            status => panic!("finding {css}: HTTP {status}: {}", value["value"]),
        }
    }

    /// Click `element` as a user would: scrolled to the middle of the window
    /// first (chromedriver's own scrolling may leave it under the sticky
    /// header), refused if something covers it.
    pub fn click(&mut self, element: &Element) {
        self.script("arguments[0].scrollIntoView({ block: 'center' });", json!([{ ELEMENT: element.0 }]));
        self.call("POST", &format!("/element/{}/click", element.0), Some(json!({})));
    }

    /// What the page logged as errors (uncaught exceptions, failed loads).
    pub fn errors(&mut self) -> Vec<String> {
        let entries = self.call("POST", "/se/log", Some(json!({ "type": "browser" })));
        entries.as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap_or_default().to_owned()).collect()
    }

    /// A PNG of the viewport, or of the whole page.
    pub fn screenshot(&mut self, whole_page: bool) -> Vec<u8> {
        use base64::Engine as _;
        let shot =
            self.devtools("Page.captureScreenshot", json!({ "format": "png", "captureBeyondViewport": whole_page }));
        base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().expect("PNG data")).unwrap()
    }

    /// Wait (up to `timeout`) until `check` gives something; panic with
    /// `what` and the last thing seen otherwise.
    pub fn wait<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&mut Self) -> Result<T, String>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            match check(self) {
                Ok(found) => return found,
                Err(seen) if Instant::now() > deadline => panic!("timed out waiting until {what}; last seen: {seen}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.client.delete(&format!("/session/{}", self.session));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// chromedriver prints "... started successfully on port N." when it listens.
fn driver_port(driver: &mut Child) -> u16 {
    let mut out = driver.stdout.take().expect("chromedriver's output");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = String::new();
        let mut byte = [0u8; 1];
        while out.read(&mut byte).is_ok_and(|n| n == 1) {
            seen.push(byte[0] as char);
            let port = seen
                .rsplit_once("on port ")
                .and_then(|(_, rest)| rest.split_once('.'))
                .and_then(|(port, _)| port.parse::<u16>().ok());
            if let Some(port) = port.filter(|p| *p != 0) {
                let _ = tx.send(port);
                break;
            }
        }
        // Keep reading so chromedriver never blocks on a full pipe.
        let _ = std::io::copy(&mut out, &mut std::io::sink());
    });
    rx.recv_timeout(Duration::from_secs(30)).expect("chromedriver did not say which port it listens on")
}
