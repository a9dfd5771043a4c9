//! What one connection is doing, for its timeouts (ADR 35): waiting for a
//! request's headers, serving requests, or idle between them. The socket
//! reports bytes read, the service reports a request's start and the end of
//! its response (the body dropped once sent), and the connection's task
//! waits for the deadline of the phase it is in.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use crate::config::ConnectionLimits;

/// What a connection waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// A request's headers (or a TLS handshake), due by the header timeout.
    Headers,
    /// Nothing from the client: a request is being served.
    Busy,
    /// The next request, for at most the idle timeout.
    Idle,
}

/// One connection's phase and deadline.
pub struct Activity {
    state: Mutex<State>,
    /// Woken when the phase changes (a new deadline may be earlier).
    changed: Notify,
    header_timeout: Duration,
    idle_timeout: Duration,
    /// A request's body did not arrive within the body timeout.
    body_timed_out: AtomicBool,
    /// A response on this connection is an event stream (it ends only when
    /// the client leaves, so shutting down does not wait for it).
    streaming: AtomicBool,
}

struct State {
    phase: Phase,
    /// When the phase ends the connection (unused while `Busy`).
    deadline: Instant,
    /// Requests whose responses are not yet sent.
    in_flight: usize,
    /// Closed while idle to make room for a new connection at the cap.
    reclaimed: bool,
}

impl Activity {
    /// A connection just accepted: its first request's headers are due.
    pub fn new(limits: &ConnectionLimits) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                phase: Phase::Headers,
                deadline: Instant::now() + limits.header_timeout,
                in_flight: 0,
                reclaimed: false,
            }),
            changed: Notify::new(),
            header_timeout: limits.header_timeout,
            idle_timeout: limits.idle_timeout,
            body_timed_out: AtomicBool::new(false),
            streaming: AtomicBool::new(false),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes arrived: an idle connection is now reading a request's headers
    /// (unless it was reclaimed: it closes whatever the client sends).
    fn read(&self) {
        let mut state = self.state();
        if state.phase == Phase::Idle && !state.reclaimed {
            state.phase = Phase::Headers;
            state.deadline = Instant::now() + self.header_timeout;
            drop(state);
            self.changed.notify_one();
        }
    }

    /// A request's headers were read; the connection is busy until the
    /// returned guard (kept by the response's body) is dropped.
    pub fn request(self: &Arc<Self>) -> InFlight {
        let mut state = self.state();
        state.phase = Phase::Busy;
        state.in_flight += 1;
        InFlight(self.clone())
    }

    /// When an idle keep-alive connection's idle timeout ends it (`None` for
    /// a connection reading headers, serving, or already reclaimed): the
    /// earliest is the one idle the longest.
    pub fn idle_until(&self) -> Option<Instant> {
        let state = self.state();
        (state.phase == Phase::Idle && !state.reclaimed).then_some(state.deadline)
    }

    /// Close the connection now if it is idle between requests, as its idle
    /// timeout would (RFC 9112 §9.3.1 lets a server close an idle
    /// connection; a client that sent a request at that moment retries it
    /// on a new one). A connection no longer idle is left alone.
    pub fn reclaim(&self) {
        let mut state = self.state();
        if state.phase != Phase::Idle || state.reclaimed {
            return;
        }
        state.reclaimed = true;
        drop(state);
        self.changed.notify_one();
    }

    /// Resolves when the deadline of the current phase has passed, with
    /// that phase (never while busy), or at once for a reclaimed connection.
    pub async fn expired(&self) -> Phase {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let (phase, deadline, reclaimed) = {
                let state = self.state();
                (state.phase, state.deadline, state.reclaimed)
            };
            if reclaimed {
                return Phase::Idle;
            }
            if phase == Phase::Busy {
                changed.await;
                continue;
            }
            if Instant::now() >= deadline {
                return phase;
            }
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// Whether a request's body ran out of time (and forget it).
    pub fn take_body_timeout(&self) -> bool {
        self.body_timed_out.swap(false, Ordering::Relaxed)
    }

    /// A response on this connection streams until the client leaves.
    pub fn set_streaming(&self) {
        self.streaming.store(true, Ordering::Relaxed);
    }

    /// Whether a response on this connection is an event stream.
    pub fn streaming(&self) -> bool {
        self.streaming.load(Ordering::Relaxed)
    }
}

/// A request in flight: dropped with its response's body, once sent (or
/// when the connection goes).
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        let mut state = activity.state();
        state.in_flight -= 1;
        if state.in_flight == 0 {
            state.phase = Phase::Idle;
            state.deadline = Instant::now() + activity.idle_timeout;
            drop(state);
            activity.changed.notify_one();
        }
    }
}

/// The client's socket, telling its connection's [`Activity`] when bytes
/// arrive.
pub struct Watched {
    tcp: TcpStream,
    activity: Arc<Activity>,
}

impl Watched {
    /// `tcp`, reporting to `activity`.
    pub fn new(tcp: TcpStream, activity: Arc<Activity>) -> Self {
        Self { tcp, activity }
    }

    /// The socket itself (to peek at what the client sent first).
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.tcp).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            this.activity.read();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// A request's body, cut off when it has not all arrived by the body timeout.
pub struct TimedBody {
    inner: Incoming,
    /// `None` for a body already complete (no timer for a GET).
    deadline: Option<Pin<Box<Sleep>>>,
    activity: Arc<Activity>,
}

impl TimedBody {
    /// `inner`, due within `limit` from now.
    pub fn new(inner: Incoming, limit: Duration, activity: Arc<Activity>) -> Self {
        let deadline = (!inner.is_end_stream()).then(|| Box::pin(tokio::time::sleep(limit)));
        Self { inner, deadline, activity }
    }
}

/// The error a body cut off by its timeout ends with.
#[derive(Debug, thiserror::Error)]
#[error("the request's body did not arrive in time")]
pub struct BodyTimeout;

impl Body for TimedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if let Some(deadline) = &mut this.deadline
            && deadline.as_mut().poll(cx).is_ready()
        {
            this.activity.body_timed_out.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(BodyTimeout.into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response's body, holding its request's place until it is sent.
pub struct Finished {
    inner: axum::body::Body,
    _in_flight: InFlight,
}

impl Finished {
    /// `inner`, ending `in_flight` when dropped.
    pub fn new(inner: axum::body::Body, in_flight: InFlight) -> Self {
        Self { inner, _in_flight: in_flight }
    }
}

impl Body for Finished {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
