//! A small blocking HTTP client for reel's own API: the CLI's control
//! commands (`reel status`, `reel rebuild`, ...) and `reel generate`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls::{self, pki_types::CertificateDer, pki_types::ServerName, pki_types::pem::PemObject};

/// One keep-alive connection to a reel server, over plain HTTP or HTTPS.
pub struct Client {
    host: String,
    /// Sent as `Authorization: Bearer` on every request.
    token: Option<String>,
    connection: BufReader<Connection>,
}

/// The bytes of a connection: a TCP stream, or TLS over one.
enum Connection {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Connection {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Connection::Plain(s) => s.read(buf),
            Connection::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Connection {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Connection::Plain(s) => s.write(buf),
            Connection::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Connection::Plain(s) => s.flush(),
            Connection::Tls(s) => s.flush(),
        }
    }
}

/// Which certificates an `https://` server may present: those that chain
/// to the system's roots, or (`--ca FILE`, `REEL_CA`) to the certificates
/// of a PEM file only: a private CA, or a self-signed server certificate.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// The PEM file; the system's roots when absent.
    pub ca: Option<PathBuf>,
}

impl Trust {
    fn roots(&self) -> Result<rustls::RootCertStore, String> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca {
            Some(file) => {
                let certificates = CertificateDer::pem_file_iter(file)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("--ca {}: {e}", file.display()))?;
                if certificates.is_empty() {
                    return Err(format!("--ca {}: no certificate (PEM) in the file", file.display()));
                }
                for certificate in certificates {
                    roots.add(certificate).map_err(|e| format!("--ca {}: {e}", file.display()))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(format!(
                        "no trusted certificates found on this system ({}): give the server's certificate or its CA with --ca FILE",
                        found.errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
                    ));
                }
            }
        }
        Ok(roots)
    }

    fn config(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        // The server's provider (ADR 35): ring.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(self.roots()?)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
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
    /// Connect to `base_url` (`http://host:port`, or `https://host:port`
    /// trusting the system's roots).
    pub fn connect(base_url: &str) -> Result<Self, String> {
        Self::connect_trusting(base_url, &Trust::default())
    }

    /// Connect to `base_url`; an `https://` server's certificate must chain
    /// to what `trust` names.
    pub fn connect_trusting(base_url: &str, trust: &Trust) -> Result<Self, String> {
        let (tls, rest) = match base_url.split_once("://") {
            Some(("http", rest)) => (false, rest),
            Some(("https", rest)) => (true, rest),
            _ => return Err(format!("the server URL must start with http:// or https://, not `{base_url}`")),
        };
        let host = rest.trim_end_matches('/').to_owned();
        // Without a port: the scheme's.
        let address = match host.rsplit_once(':') {
            Some((_, port)) if !port.contains(']') => host.clone(),
            _ => format!("{host}:{}", if tls { 443 } else { 80 }),
        };
        let stream = TcpStream::connect(&address).map_err(|e| format!("cannot reach reel at {address}: {e}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| e.to_string())?;
        // A request is one write; with Nagle's algorithm on, the next one
        // waited for the delayed ACK of this one (~40 ms a request).
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let connection = if tls {
            let name = server_name(&host)?;
            let tls = rustls::ClientConnection::new(trust.config()?, name).map_err(|e| e.to_string())?;
            let mut stream = rustls::StreamOwned::new(tls, stream);
            // Handshake now, so that an untrusted certificate is reported as
            // such rather than as a failed request.
            while stream.conn.is_handshaking() {
                stream.conn.complete_io(&mut stream.sock).map_err(|e| handshake_failed(&address, trust, &e))?;
            }
            Connection::Tls(Box::new(stream))
        } else {
            Connection::Plain(stream)
        };
        Ok(Self { host, token: None, connection: BufReader::new(connection) })
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

    /// `POST path` with a body of `content_type` (a module's bytes).
    pub fn post_bytes(&mut self, path: &str, body: &[u8], content_type: &str) -> Result<Response, String> {
        self.send("POST", path, body, content_type)
    }

    fn request(&mut self, method: &str, path: &str, body: Option<&str>) -> Result<Response, String> {
        self.send(method, path, body.unwrap_or("").as_bytes(), "application/json")
    }

    fn send(&mut self, method: &str, path: &str, body: &[u8], content_type: &str) -> Result<Response, String> {
        let authorization = self.token.as_ref().map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{authorization}Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        let connection = self.connection.get_mut();
        connection
            .write_all(head.as_bytes())
            .and_then(|()| connection.write_all(body))
            .and_then(|()| connection.flush())
            .map_err(|e| format!("sending to {}: {e}", self.host))?;
        let mut line = String::new();
        self.connection.read_line(&mut line).map_err(|e| e.to_string())?;
        if line.is_empty() {
            return Err(format!("{} closed the connection without an answer", self.host));
        }
        let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or(format!("bad status line {line:?}"))?;
        let mut length = 0;
        loop {
            line.clear();
            self.connection.read_line(&mut line).map_err(|e| e.to_string())?;
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
        self.connection.read_exact(&mut bytes).map_err(|e| e.to_string())?;
        Ok(Response { status, body: String::from_utf8_lossy(&bytes).into_owned() })
    }
}

/// The name the server's certificate must carry: `host` without its port
/// (an IP address is checked against the certificate's addresses).
fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if !port.contains(']') => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(name.to_owned()).map_err(|e| format!("`{name}` is not a host name: {e}"))
}

fn handshake_failed(address: &str, trust: &Trust, e: &std::io::Error) -> String {
    let trusted = match &trust.ca {
        Some(file) => format!("the certificates of {}", file.display()),
        None => "the system's roots (give the server's certificate or its CA with --ca FILE)".to_owned(),
    };
    format!("TLS with {address} failed: {e}; trusting {trusted}")
}
