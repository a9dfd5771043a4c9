//! HTTPS (ADR 35): rustls with the certificate and key of `--tls-cert` and
//! `--tls-key`, read again when either file changes, so a renewed certificate
//! is served from the next handshake on without a restart. A client that
//! speaks plain HTTP to the TLS port gets a plain `400` saying so.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use anyhow::Context as _;
use tokio::io::AsyncWriteExt as _;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};

use super::watch::Watched;
use crate::config::TlsFiles;

/// The first byte of a TLS record carrying a handshake (RFC 8446 5.1).
const HANDSHAKE_RECORD: u8 = 0x16;

/// Accepts TLS connections with the current certificate.
#[derive(Clone)]
pub struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
}

impl Tls {
    /// Load the files (a start-up error names the one that is wrong).
    pub fn new(files: &TlsFiles) -> anyhow::Result<Self> {
        // ring has no post-quantum key exchange (hence rustls 0.23.48's
        // deprecation); aws-lc-rs has, at the price of a C build of its own (ADR 35).
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let resolver = Reloading::new(files.clone(), provider.clone())?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("rustls has no protocol version for the ring provider")?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self { acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)) })
    }

    /// The TLS stream of `io`, or `None` once a client that sent something
    /// else than a TLS handshake has been answered (or failed its handshake).
    pub async fn accept(&self, mut io: Watched) -> Option<tokio_rustls::server::TlsStream<Watched>> {
        let mut first = [0u8; 1];
        if io.tcp().peek(&mut first).await.ok()? == 0 {
            return None;
        }
        if first[0] != HANDSHAKE_RECORD {
            // Most likely `http://` to an `https://` port: say so instead of
            // failing a handshake the client never started.
            let body = "this port serves HTTPS: use an https:// address\n";
            let answer = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = io.write_all(answer.as_bytes()).await;
            let _ = io.shutdown().await;
            return None;
        }
        match self.acceptor.accept(io).await {
            Ok(stream) => Some(stream),
            Err(e) => {
                tracing::debug!("TLS handshake failed: {e}");
                None
            }
        }
    }
}

/// The certificate and key, read again at a handshake after either file
/// changed (their modification times and sizes, looked up per handshake: two
/// `stat`s beside a handshake's public-key operations).
#[derive(Debug)]
struct Reloading {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    loaded: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    /// The files as last read, loaded or not: a pair that failed (a
    /// certificate renewed before its key) is not read again until it changes.
    seen: Stamp,
}

/// What tells that a file changed.
type Stamp = [(Option<SystemTime>, u64); 2];

impl Reloading {
    fn new(files: TlsFiles, provider: Arc<CryptoProvider>) -> anyhow::Result<Self> {
        let seen = stamp(&files);
        let key = Arc::new(load(&files, &provider)?);
        Ok(Self { files, provider, loaded: Mutex::new(Loaded { key, seen }) })
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let now = stamp(&self.files);
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if now != loaded.seen {
            loaded.seen = now;
            match load(&self.files, &self.provider) {
                Ok(key) => {
                    tracing::info!("TLS: serving the certificate in {} from now on", self.files.cert.display());
                    loaded.key = Arc::new(key);
                }
                Err(e) => tracing::warn!("TLS: keeping the previous certificate: {e:#}"),
            }
        }
        Some(loaded.key.clone())
    }
}

fn stamp(files: &TlsFiles) -> Stamp {
    let of = |path: &std::path::Path| match std::fs::metadata(path) {
        Ok(m) => (m.modified().ok(), m.len()),
        Err(_) => (None, 0),
    };
    [of(&files.cert), of(&files.key)]
}

/// The chain and key of `files`, checked to belong together.
fn load(files: &TlsFiles, provider: &CryptoProvider) -> anyhow::Result<CertifiedKey> {
    let cert = std::fs::read(&files.cert).with_context(|| format!("cannot read {}", files.cert.display()))?;
    let chain = CertificateDer::pem_slice_iter(&cert)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", files.cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "{} holds no PEM certificate", files.cert.display());
    let key = std::fs::read(&files.key).with_context(|| format!("cannot read {}", files.key.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&key)
        .with_context(|| format!("{} holds no PEM private key", files.key.display()))?;
    CertifiedKey::from_der(chain, key, provider)
        .with_context(|| format!("{} and {} do not make a usable pair", files.cert.display(), files.key.display()))
}
