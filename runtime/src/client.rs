//! A small blocking HTTP client for reel's own API: the CLI's control
//! commands (`reel status`, `reel rebuild`, ...) and `reel generate`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One keep-alive connection to a reel server.
pub struct Client {
    host: String,
    /// Sent as `Authorization: Bearer` on every request.
    token: Option<String>,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

/// A response: status code and body text.
#[derive(Debug)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// The body.
    pub body: String,
}

impl Response {
    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_str(&self.body).map_err(|e| format!("the server sent something else than JSON: {e}"))
    }

    /// The error message of an error response, or the body.
    pub fn message(&self) -> String {
        self.json()
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| self.body.clone())
    }
}

impl Client {
    /// Connect to `base_url` (`http://host:port`).
    pub fn connect(base_url: &str) -> Result<Self, String> {
        let host = base_url
            .strip_prefix("http://")
            .ok_or_else(|| format!("the server URL must start with http://, not `{base_url}`"))?
            .trim_end_matches('/')
            .to_owned();
        let stream = TcpStream::connect(&host).map_err(|e| format!("cannot reach reel at {host}: {e}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| e.to_string())?;
        // A request is one write; with Nagle's algorithm on, the next one
        // waited for the delayed ACK of this one (~40 ms a request).
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        Ok(Self { host, token: None, reader: BufReader::new(stream), writer })
    }

    /// Send `token` (an API token; ADR 33) with every request.
    pub fn with_token(mut self, token: Option<&str>) -> Self {
        self.token = token.map(str::to_owned);
        self
    }

    /// `GET path`.
    pub fn get(&mut self, path: &str) -> Result<Response, String> {
        self.request("GET", path, None)
    }

    /// `POST path` with a JSON body (or none).
    pub fn post(&mut self, path: &str, body: Option<&str>) -> Result<Response, String> {
        self.request("POST", path, body)
    }

    /// `DELETE path`.
    pub fn delete(&mut self, path: &str) -> Result<Response, String> {
        self.request("DELETE", path, None)
    }

    fn request(&mut self, method: &str, path: &str, body: Option<&str>) -> Result<Response, String> {
        let body = body.unwrap_or("");
        let authorization = self.token.as_ref().map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{authorization}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        self.writer.write_all(request.as_bytes()).map_err(|e| format!("sending to {}: {e}", self.host))?;
        let mut line = String::new();
        self.reader.read_line(&mut line).map_err(|e| e.to_string())?;
        let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or(format!("bad status line {line:?}"))?;
        let mut length = 0;
        loop {
            line.clear();
            self.reader.read_line(&mut line).map_err(|e| e.to_string())?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().map_err(|_| "bad content-length".to_owned())?;
            }
        }
        let mut bytes = vec![0; length];
        self.reader.read_exact(&mut bytes).map_err(|e| e.to_string())?;
        Ok(Response { status, body: String::from_utf8_lossy(&bytes).into_owned() })
    }
}
