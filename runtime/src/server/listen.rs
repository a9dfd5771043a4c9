//! The connection loop (ADR 35): accept, and serve while under the
//! connection cap (at the cap, the keep-alive connection idle the longest
//! gives way to the new one, or the new one waits for a place), serve each
//! connection with hyper's HTTP/1 (over TLS when configured),
//! and end it when the client is too slow: its headers (or TLS handshake)
//! not in by the header timeout, or silent past the idle timeout between
//! requests. A request's body late past the body timeout answers `408`.
//! Timeouts of whole requests and caps per route class are the router's
//! (ADR 33).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
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
        let open = Arc::new(Open::default());
        let (stop, stopping) = watch::channel(false);
        let mut connections = JoinSet::new();
        let mut next_id = 0_u64;
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
                accepted = listener.accept() => accepted,
            };
            let (tcp, addr) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // As hyper's and axum's loops do: EMFILE and the like pass.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let permit = tokio::select! {
                () = &mut shutdown => break,
                permit = room(&permits, &open) => permit,
            };
            next_id += 1;
            let (id, activity) = (next_id, Activity::new(&this.limits));
            open.insert(id, activity.clone());
            let (this, stopping, open) = (this.clone(), stopping.clone(), open.clone());
            connections.spawn(async move {
                this.connection(tcp, addr, activity, stopping).await;
                open.remove(id);
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

    async fn connection(
        &self,
        tcp: TcpStream,
        addr: SocketAddr,
        activity: Arc<Activity>,
        stopping: watch::Receiver<bool>,
    ) {
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

/// The connections being served, for the loop to find an idle one at the cap.
#[derive(Default)]
struct Open(Mutex<HashMap<u64, Arc<Activity>>>);

impl Open {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Activity>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, id: u64, activity: Arc<Activity>) {
        self.map().insert(id, activity);
    }

    fn remove(&self, id: u64) {
        self.map().remove(&id);
    }

    /// Close the keep-alive connection idle the longest, if there is one
    /// (one that turns busy meanwhile is not closed: the caller looks again).
    fn reclaim_one(&self) {
        let map = self.map();
        let oldest =
            map.values().filter_map(|a| a.idle_until().map(|until| (until, a))).min_by_key(|(until, _)| *until);
        if let Some((_, activity)) = oldest {
            activity.reclaim();
        }
    }
}

/// A place under the cap for a connection just accepted: a free one, or the
/// one of the keep-alive connection idle the longest (closed for it), or the
/// first to come free (every connection busy, or reading its headers).
async fn room(permits: &Arc<Semaphore>, open: &Open) -> OwnedSemaphorePermit {
    loop {
        if let Ok(permit) = permits.clone().try_acquire_owned() {
            return permit;
        }
        open.reclaim_one();
        // A reclaimed connection closes at once; a connection that turns
        // idle meanwhile is looked for again.
        let wait = tokio::time::timeout(Duration::from_millis(100), permits.clone().acquire_owned());
        if let Ok(permit) = wait.await {
            return permit.expect("never closed");
        }
    }
}

/// Let the process hold `cap` connections besides its own files (databases,
/// modules, logs): the soft limit on open files raised to the cap plus 1,024
/// as far as the hard limit allows, with a warning when it cannot be.
pub fn raise_open_files(cap: usize) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let want = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1024);
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if current >= want {
        return;
    }
    let reachable = limit.maximum.map_or(want, |hard| hard.min(want));
    let raised = if reachable > current {
        match setrlimit(Resource::Nofile, Rlimit { current: Some(reachable), maximum: limit.maximum }) {
            Ok(()) => reachable,
            Err(e) => {
                tracing::warn!("cannot raise the open files limit from {current} to {reachable}: {e}");
                current
            }
        }
    } else {
        current
    };
    if raised < want {
        tracing::warn!(
            "open files are limited to {raised} (ulimit -n): fewer than the {cap} connections of the cap \
             (--max-connections) and reel's own files; past it, connections wait to be accepted"
        );
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
