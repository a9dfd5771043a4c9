//! The connection loop (ADR 35): accept while under the connection cap,
//! serve each connection with hyper's HTTP/1 (over TLS when configured),
//! and end it when the client is too slow: its headers (or TLS handshake)
//! not in by the header timeout, or silent past the idle timeout between
//! requests. A request's body late past the body timeout answers `408`.
//! Timeouts of whole requests and caps per route class are the router's
//! (ADR 33).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tower_service::Service as _;

use super::tls::Tls;
use super::watch::{Activity, Finished, Phase, TimedBody, Watched};
use crate::api::ApiError;
use crate::config::ConnectionLimits;

/// What every connection is served with.
pub struct Listen {
    /// The API.
    pub router: Router,
    /// The timeouts and the cap.
    pub limits: ConnectionLimits,
    /// Present when the port speaks HTTPS.
    pub tls: Option<Tls>,
    /// How long shutting down waits for requests in flight (live feeds are
    /// cut at once: their clients resume with `Last-Event-ID`).
    pub grace: Duration,
}

impl Listen {
    /// Serve `listener` until `shutdown` resolves, then let the requests in
    /// flight finish (within the grace period).
    pub async fn run(self, listener: TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) {
        let this = Arc::new(self);
        let permits = Arc::new(Semaphore::new(this.limits.max.max(1)));
        let (stop, stopping) = watch::channel(false);
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
                accepted = accept(&listener, &permits) => accepted,
            };
            let Some((tcp, addr, permit)) = accepted else { continue };
            let this = this.clone();
            let stopping = stopping.clone();
            connections.spawn(async move {
                this.connection(tcp, addr, stopping).await;
                drop(permit);
            });
        }
        drop(listener);
        let _ = stop.send(true);
        let drained = tokio::time::timeout(this.grace, async { while connections.join_next().await.is_some() {} });
        if drained.await.is_err() {
            tracing::warn!(
                "shutting down: {} connections still busy after {:?}, closed",
                connections.len(),
                this.grace
            );
            connections.shutdown().await;
        }
    }

    async fn connection(&self, tcp: TcpStream, addr: SocketAddr, stopping: watch::Receiver<bool>) {
        let activity = Activity::new(&self.limits);
        let _ = tcp.set_nodelay(true);
        let io = Watched::new(tcp, activity.clone());
        match &self.tls {
            None => self.http(TokioIo::new(io), addr, activity, stopping).await,
            Some(tls) => {
                // The handshake is part of the headers' time.
                let handshake = tokio::time::timeout(self.limits.header_timeout, tls.accept(io));
                if let Ok(Some(stream)) = handshake.await {
                    self.http(TokioIo::new(stream), addr, activity, stopping).await;
                }
            }
        }
    }

    /// HTTP/1 on `io` until the client leaves, a timeout ends it, or reel
    /// shuts down.
    async fn http<IO>(&self, io: IO, addr: SocketAddr, activity: Arc<Activity>, mut stopping: watch::Receiver<bool>)
    where
        IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let router = self.router.clone();
        let body_timeout = self.limits.body_timeout;
        let watched = activity.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let in_flight = watched.request();
            let mut router = router.clone();
            let activity = watched.clone();
            async move {
                let (mut parts, body) = request.into_parts();
                // Admin actions record the client's address (ADR 21).
                parts.extensions.insert(ConnectInfo(addr));
                let body = axum::body::Body::new(TimedBody::new(body, body_timeout, activity.clone()));
                let response = router.call(Request::from_parts(parts, body)).await.unwrap_or_else(|e| match e {});
                let response = if activity.take_body_timeout() { body_too_slow(body_timeout) } else { response };
                if is_event_stream(&response) {
                    activity.set_streaming();
                }
                Ok::<_, Infallible>(response.map(|body| Finished::new(body, in_flight)))
            }
        });
        let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
        tokio::pin!(conn);
        let mut draining = false;
        loop {
            tokio::select! {
                served = conn.as_mut() => {
                    if let Err(e) = served {
                        tracing::debug!("connection from {addr}: {e}");
                    }
                    return;
                }
                phase = activity.expired() => {
                    if phase == Phase::Headers {
                        tracing::debug!("connection from {addr}: no request headers within {:?}, closed", self.limits.header_timeout);
                    }
                    return;
                }
                _ = stopping.wait_for(|stop| *stop), if !draining => {
                    if activity.streaming() {
                        return;
                    }
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// The next connection once there is room for one; `None` after an error
/// (such as running out of file descriptors), after a pause.
async fn accept(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
) -> Option<(TcpStream, SocketAddr, tokio::sync::OwnedSemaphorePermit)> {
    let permit = permits.clone().acquire_owned().await.expect("never closed");
    match listener.accept().await {
        Ok((tcp, addr)) => Some((tcp, addr, permit)),
        Err(e) => {
            // As hyper's and axum's loops do: EMFILE and the like pass.
            tracing::warn!("cannot accept a connection: {e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

fn is_event_stream(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

/// `408` for a body that did not arrive within the body timeout; the
/// connection closes after it (what is left of the body is not read).
fn body_too_slow(limit: Duration) -> Response {
    let mut response = ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "body_timeout",
        format!("the request's body did not arrive within {limit:?}"),
    )
    .into_response();
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
