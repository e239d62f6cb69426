//! The HTTP listener: hyper's HTTP/1 server with a timer, because `axum::serve` has no header-read timeout (a
//! slowloris client sending a header byte every few seconds would hold a connection forever). Each connection
//! gets a slot from a [`ConnectionCounter`] (total and per-IP caps; over the cap the socket is closed at once and
//! the refusal counted), a header-read timeout, a graceful idle timeout (no byte either way), and a request-body
//! timeout (tower-http). Handlers still see the peer as `ConnectInfo<SocketAddr>`. The HTTPS listener is the
//! same server behind a TLS handshake (which must finish within the header timeout); its requests carry
//! [`Secure`], and its responses HSTS when configured.

use crate::config::HttpConfig;
use crate::limits::{refused, ConnectionCounter, ConnectionSlot};
use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;

/// The timeouts and caps of the HTTP listener (from `[http]`).
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Connections open at once; past it a new socket is reset at accept (at least 1).
    pub max_connections: usize,
    /// Connections one client address may hold at once (at least 1).
    pub max_connections_per_ip: usize,
    /// Time to send a request's whole header; also bounds a keep-alive connection between requests.
    pub header_timeout: Duration,
    /// No byte either way for this long: graceful shutdown, then a drop after as long again.
    pub idle_timeout: Duration,
    /// Longest wait for the next chunk of a request body.
    pub body_timeout: Duration,
}

impl From<&HttpConfig> for HttpLimits {
    fn from(c: &HttpConfig) -> Self {
        HttpLimits {
            max_connections: c.max_connections,
            max_connections_per_ip: c.max_connections_per_ip,
            header_timeout: Duration::from_secs(c.header_timeout_secs.max(1)),
            idle_timeout: Duration::from_secs(c.idle_timeout_secs.max(1)),
            body_timeout: Duration::from_secs(c.body_timeout_secs.max(1)),
        }
    }
}

/// Marks a request that came over TLS (the HTTPS listener): URLs printed for it say `https://`.
#[derive(Debug, Clone, Copy)]
pub struct Secure;

/// Whether a request came over TLS: a handler argument that never fails.
#[derive(Debug, Clone, Copy)]
pub struct OverTls(pub bool);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for OverTls {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(OverTls(parts.extensions.get::<Secure>().is_some()))
    }
}

/// The TLS side of the HTTPS listener: its acceptor, and the HSTS max-age (0: no header).
#[derive(Clone)]
pub struct HttpsSide {
    /// Handshakes with the current certificate.
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// `Strict-Transport-Security` max-age in seconds; 0: none.
    pub hsts_max_age_secs: u64,
}

/// Serve `app` on `listener` until the task is aborted: plain HTTP, or HTTPS with `tls`; connections count against
/// `counter` (shared by the HTTP and HTTPS listeners).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    counter: Arc<ConnectionCounter>,
    tls: Option<HttpsSide>,
) {
    let mut app = app.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(limits.body_timeout));
    if let Some(max_age) = tls.as_ref().map(|t| t.hsts_max_age_secs).filter(|a| *a > 0) {
        let value = axum::http::HeaderValue::from_str(&format!("max-age={max_age}")).expect("a header value");
        app = app.layer(tower_http::set_header::SetResponseHeaderLayer::if_not_present(
            axum::http::header::STRICT_TRANSPORT_SECURITY,
            value,
        ));
    }
    let limits = Arc::new(limits);
    loop {
        let (stream, peer) = crate::limits::accept(&listener, "HTTP").await;
        let slot = match counter.try_open(peer.ip()) {
            Ok(s) => s,
            Err(e) => {
                let source = if tls.is_some() { "https" } else { "http" };
                refused(source, e.reason(), &format_args!("{e}, peer {}", peer.ip()));
                // Close at once: RST instead of a FIN handshake that would hold the socket in TIME_WAIT here.
                let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                drop(stream);
                continue;
            }
        };
        let (app, limits) = (app.clone(), limits.clone());
        match tls.clone() {
            None => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(connection(stream, peer, app, limits, slot, false));
            }
            Some(tls) => {
                tokio::spawn(async move {
                    let _ = stream.set_nodelay(true);
                    // The handshake counts against the header timeout: a client that opens and says nothing is
                    // dropped as a slowloris would be.
                    match tokio::time::timeout(limits.header_timeout, tls.acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => connection(stream, peer, app, limits, slot, true).await,
                        Ok(Err(e)) => {
                            metrics::counter!("roomgate_refusals_total", "source" => "https", "reason" => "tls_handshake")
                                .increment(1);
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        }
                        Err(_) => refused("https", "tls_timeout", &format_args!("no TLS handshake from {peer}")),
                    }
                });
            }
        }
    }
}

async fn connection<S>(
    stream: S,
    peer: SocketAddr,
    app: Router,
    limits: Arc<HttpLimits>,
    _slot: ConnectionSlot,
    secure: bool,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = ActivityIo::new(stream);
    let last = io.last.clone();
    let started = io.started;
    let svc = tower::ServiceExt::map_request(app, move |mut req: axum::http::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        if secure {
            req.extensions_mut().insert(Secure);
        }
        req
    });
    let svc = hyper_util::service::TowerToHyperService::new(svc);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(io), svc).with_upgrades();
    tokio::pin!(conn);
    let tick = (limits.idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut closing: Option<Instant> = None;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "HTTP connection ended");
                }
                return;
            }
            _ = tokio::time::sleep(tick) => {
                let idle = started.elapsed().saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
                match closing {
                    None if idle >= limits.idle_timeout => {
                        conn.as_mut().graceful_shutdown();
                        closing = Some(Instant::now());
                    }
                    // A response still being written to a peer that stopped reading: give up on it.
                    Some(t) if t.elapsed() >= limits.idle_timeout => {
                        let source = if secure { "https" } else { "http" };
                        refused(source, "idle_timeout", &format_args!("connection from {peer} did not close"));
                        return;
                    }
                    _ => {}
                }
            }
        }
    }
}

/// A TCP stream that remembers when a byte last went either way (milliseconds since `started`).
struct ActivityIo<S> {
    inner: S,
    started: Instant,
    last: Arc<AtomicU64>,
}

impl<S> ActivityIo<S> {
    fn new(inner: S) -> Self {
        ActivityIo {
            inner,
            started: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        self.last
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ActivityIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ActivityIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
