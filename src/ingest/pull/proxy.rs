//! The source proxy: the one place libav's http/https connections go through, so each is checked at connect time.
//!
//! libav opens http(s) sources with `http_proxy` pointing here: for `http://` it sends absolute-form requests
//! (`GET http://host/path HTTP/1.1`), for `https://` a `CONNECT host:443`. For every proxy connection this module
//! reads the request head (bounded size and time), resolves the target, checks EVERY address against the task's
//! `AddressPolicy`, connects to a checked address (never resolving again) and splices. That closes, in one
//! place, redirects libav might follow, DNS answers that change between the pre-flight and libav's connect, and
//! HLS playlists that name internal segment URLs.
//!
//! The listener is bound to 127.0.0.1 on an ephemeral port and refuses peers that are not loopback. Each opening
//! of a source registers a session with a random token that libav presents as proxy credentials (Basic, after a
//! 407 challenge), so only the gateway's own libav traffic is served, under the policy of the task it belongs to,
//! and what the proxy refused is reported back to that task.

use super::policy::AddressPolicy;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Most header lines accepted.
const MAX_HEADERS: usize = 64;
/// Time a client has to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Proxy connections served at once.
const MAX_CONNECTIONS: usize = 512;
/// Time an origin has to start answering a plain-HTTP request (libav gives up on its own much earlier).
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(120);
/// The user name in the proxy URL (the password is the session token).
const PROXY_USER: &str = "roomgate";

/// Why a request head cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The head is longer than `MAX_HEAD` bytes or has more than `MAX_HEADERS` headers.
    #[error("the request head is larger than {MAX_HEAD} bytes or has more than {MAX_HEADERS} headers")]
    TooLarge,
    /// The request line or a header line is not valid HTTP/1.x; says which part.
    #[error("malformed request head: {0}")]
    Malformed(&'static str),
    /// Not CONNECT, GET or HEAD; carries the method (at most 16 characters).
    #[error("method {0:?} is not proxied (CONNECT, GET and HEAD are)")]
    Method(String),
    /// A GET or HEAD whose absolute-form target is not `http://`.
    #[error("only http:// targets are proxied in absolute form")]
    Scheme,
}

/// Where a proxied request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `CONNECT host:port`: a tunnel (https).
    Tunnel {
        /// Host from the CONNECT target (a name, or an IPv4/IPv6 address).
        host: url::Host<String>,
        /// Port from the CONNECT target (always given).
        port: u16,
    },
    /// `GET http://host[:port]/path`: one plain HTTP request, forwarded in origin form.
    Absolute {
        /// Origin host from the absolute URL.
        host: url::Host<String>,
        /// Origin port (80 when the URL names none).
        port: u16,
        /// Path and query, as sent to the origin.
        path: String,
    },
}

impl Target {
    fn host_port(&self) -> (&url::Host<String>, u16) {
        match self {
            Target::Tunnel { host, port } | Target::Absolute { host, port, .. } => (host, *port),
        }
    }
}

/// A parsed proxy request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// `CONNECT`, `GET` or `HEAD`.
    pub method: String,
    /// Where the request goes: a tunnel or one plain HTTP request.
    pub target: Target,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: String,
    /// Header lines in order, as (name, value) with the value trimmed.
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The session token from `Proxy-Authorization: Basic base64(roomgate:<token>)`.
    pub fn proxy_token(&self) -> Option<String> {
        use base64::Engine;
        let value = self.header("Proxy-Authorization")?.trim();
        let (scheme, b64) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (user, token) = decoded.split_once(':')?;
        (user == PROXY_USER && !token.is_empty()).then(|| token.to_string())
    }

    /// The request to send the origin for an absolute-form request: origin-form request line, the client's
    /// headers without hop-by-hop and proxy ones, and `Connection: close` (one request per proxy connection, so
    /// a kept-alive connection cannot carry a request for another host). `None` for a tunnel.
    pub fn origin_request(&self) -> Option<Vec<u8>> {
        let Target::Absolute { host, port, path } = &self.target else {
            return None;
        };
        const DROP: &[&str] = &[
            "proxy-authorization",
            "proxy-connection",
            "connection",
            "keep-alive",
            "te",
            "trailer",
            "upgrade",
        ];
        let mut out = format!("{} {} {}\r\n", self.method, path, self.version);
        if self.header("Host").is_none() {
            match port {
                80 => out.push_str(&format!("Host: {host}\r\n")),
                p => out.push_str(&format!("Host: {host}:{p}\r\n")),
            }
        }
        for (name, value) in &self.headers {
            if !DROP.contains(&name.to_ascii_lowercase().as_str()) {
                out.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        out.push_str("Connection: close\r\n\r\n");
        Some(out.into_bytes())
    }
}

/// Parse a proxy request head from the start of `buf`. `Ok(None)`: incomplete, read more. `Ok(Some((head, n)))`:
/// the head took `n` bytes (what follows belongs to the tunnel or body).
pub fn parse_head(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, ProxyError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Err(ProxyError::TooLarge)
        } else {
            Ok(None)
        };
    };
    if end + 4 > MAX_HEAD {
        return Err(ProxyError::TooLarge);
    }
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| ProxyError::Malformed("not UTF-8"))?;
    if text
        .bytes()
        .any(|b| b.is_ascii_control() && b != b'\r' && b != b'\n' && b != b'\t')
    {
        return Err(ProxyError::Malformed("control characters"));
    }
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ProxyError::Malformed("request line"));
    };
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(ProxyError::Malformed("HTTP version"));
    }
    let target = match method {
        "CONNECT" => parse_authority(target)?,
        "GET" | "HEAD" => parse_absolute(target)?,
        other => return Err(ProxyError::Method(other.chars().take(16).collect())),
    };
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() || line.starts_with(' ') || line.starts_with('\t') {
            return Err(ProxyError::Malformed("header line"));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or(ProxyError::Malformed("header without ':'"))?;
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        {
            return Err(ProxyError::Malformed("header name"));
        }
        headers.push((name.to_string(), value.trim().to_string()));
        if headers.len() > MAX_HEADERS {
            return Err(ProxyError::TooLarge);
        }
    }
    Ok(Some((
        RequestHead {
            method: method.to_string(),
            target,
            version: version.to_string(),
            headers,
        },
        end + 4,
    )))
}

/// `host:port` of a CONNECT (port required; `[v6]:port` for IPv6).
fn parse_authority(target: &str) -> Result<Target, ProxyError> {
    let (host, port) = target
        .rsplit_once(':')
        .ok_or(ProxyError::Malformed("CONNECT needs host:port"))?;
    if host.is_empty() || host.contains(['/', '@', '?', '#', '\\', '%']) {
        return Err(ProxyError::Malformed("CONNECT host"));
    }
    let port = parse_port(port)?;
    let host = url::Host::parse(host).map_err(|_| ProxyError::Malformed("CONNECT host"))?;
    Ok(Target::Tunnel { host, port })
}

fn parse_port(p: &str) -> Result<u16, ProxyError> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ProxyError::Malformed("port"));
    }
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(ProxyError::Malformed("port")),
        Ok(port) => Ok(port),
    }
}

/// `http://host[:port]/path?query` of a GET/HEAD (no userinfo).
fn parse_absolute(target: &str) -> Result<Target, ProxyError> {
    let url = url::Url::parse(target).map_err(|_| ProxyError::Malformed("absolute URL"))?;
    if url.scheme() != "http" {
        return Err(ProxyError::Scheme);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ProxyError::Malformed("userinfo in the target"));
    }
    let host = url.host().ok_or(ProxyError::Malformed("no host"))?.to_owned();
    let port = url.port_or_known_default().unwrap_or(80);
    if port == 0 {
        return Err(ProxyError::Malformed("port"));
    }
    let path = url[url::Position::BeforePath..url::Position::AfterQuery].to_string();
    Ok(Target::Absolute {
        host,
        port,
        path: if path.is_empty() { "/".into() } else { path },
    })
}

/// The HTTP status of a response that starts with `first` (its status line), if it is one.
pub fn response_status(first: &[u8]) -> Option<u16> {
    let line = first.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// Something the proxy did to a session's traffic that the task's reason should reflect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyEvent {
    /// A connection to a name or address the policy refuses (a redirect, a playlist entry, a changed DNS answer).
    Refused {
        /// The target host as requested (name or address).
        host: String,
        /// The first of its addresses the policy refuses.
        ip: IpAddr,
    },
    /// The target could not be resolved or connected to.
    Unreachable {
        /// The target host as requested (name or address).
        host: String,
    },
    /// The origin answered a plain-HTTP request with a redirect (libav follows none).
    Redirected {
        /// The origin's 3xx status code.
        status: u16,
    },
    /// An RTSP server answered with a redirect, which the RTSP relay does not pass on.
    RtspRedirected {
        /// The server's 3xx status code.
        status: u16,
    },
    /// The TLS handshake with an rtsps server failed (its certificate does not verify, most often).
    TlsFailed {
        /// rustls's reason (at most 200 characters).
        why: String,
        /// It was the certificate (not the protocol version, the cipher suites...).
        certificate: bool,
    },
}

/// One opening of a source: its policy and what the proxy saw.
#[derive(Debug)]
struct SessionState {
    policy: AddressPolicy,
    label: String,
    events: Mutex<Vec<ProxyEvent>>,
}

impl SessionState {
    fn record(&self, ev: ProxyEvent) {
        let mut events = self.events.lock().expect("events lock");
        if events.len() < 64 {
            events.push(ev);
        }
    }
}

type Registry = Mutex<HashMap<String, Arc<SessionState>>>;

/// The running proxy: its address and the sessions it serves.
pub struct SourceProxy {
    addr: SocketAddr,
    sessions: Arc<Registry>,
}

/// A registered session; dropping it ends the proxy's service for its token.
pub struct ProxySession {
    token: String,
    addr: SocketAddr,
    state: Arc<SessionState>,
    sessions: Arc<Registry>,
    /// The relay task of a session of its own (an RTSP source's), ended with the session.
    relay: Option<tokio::task::AbortHandle>,
}

/// Where a relay records what it did to its session's connection.
#[derive(Clone)]
pub struct EventSink(Arc<SessionState>);

impl EventSink {
    /// Record `ev` for the session.
    pub fn record(&self, ev: ProxyEvent) {
        self.0.record(ev);
    }
}

impl ProxySession {
    /// A session of its own (no proxy behind it) for a relay at `addr`: its events come from the relay (through
    /// the returned sink), and `relay`, once set, ends with it.
    pub fn standalone(policy: AddressPolicy, label: &str, addr: SocketAddr) -> (ProxySession, EventSink) {
        let state = Arc::new(SessionState {
            policy,
            label: label.to_string(),
            events: Mutex::default(),
        });
        let session = ProxySession {
            token: String::new(),
            addr,
            state: state.clone(),
            sessions: Arc::default(),
            relay: None,
        };
        (session, EventSink(state))
    }

    /// End `task` when this session ends.
    pub fn end_with(&mut self, task: tokio::task::AbortHandle) {
        self.relay = Some(task);
    }

    /// The address libav connects to (the proxy's, or a relay's).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `http_proxy` libav gets (carries the token as credentials).
    pub fn url(&self) -> String {
        format!("http://{PROXY_USER}:{}@{}", self.token, self.addr)
    }

    /// What the proxy did to this session's connections so far.
    pub fn events(&self) -> Vec<ProxyEvent> {
        self.state.events.lock().expect("events lock").clone()
    }

    /// True when the proxy refused a connection of this session.
    pub fn refused(&self) -> bool {
        self.events().iter().any(|e| matches!(e, ProxyEvent::Refused { .. }))
    }
}

impl Drop for ProxySession {
    fn drop(&mut self) {
        if let Some(relay) = &self.relay {
            relay.abort();
        }
        self.sessions.lock().expect("sessions lock").remove(&self.token);
    }
}

impl SourceProxy {
    /// Bind 127.0.0.1 on an ephemeral port and serve on the current tokio runtime.
    pub fn start(connect_timeout: Duration) -> std::io::Result<SourceProxy> {
        let std_listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        std_listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(std_listener)?;
        let addr = listener.local_addr()?;
        let sessions: Arc<Registry> = Arc::default();
        tokio::spawn(serve(
            listener,
            sessions.clone(),
            connect_timeout.max(Duration::from_secs(1)),
        ));
        tracing::debug!(%addr, "source proxy listening");
        Ok(SourceProxy { addr, sessions })
    }

    /// Address the proxy listens on (127.0.0.1, an ephemeral port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Register one opening of a source under `policy`; `label` names the task in log lines.
    pub fn session(&self, policy: AddressPolicy, label: &str) -> ProxySession {
        use base64::Engine;
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>());
        let state = Arc::new(SessionState {
            policy,
            label: label.to_string(),
            events: Mutex::default(),
        });
        self.sessions
            .lock()
            .expect("sessions lock")
            .insert(token.clone(), state.clone());
        ProxySession {
            token,
            addr: self.addr,
            state,
            sessions: self.sessions.clone(),
            relay: None,
        }
    }
}

async fn serve(listener: TcpListener, sessions: Arc<Registry>, connect_timeout: Duration) {
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (sock, peer) = crate::limits::accept(&listener, "source proxy").await;
        if !peer.ip().is_loopback() {
            tracing::warn!(%peer, "source proxy: connection from outside loopback refused");
            continue;
        }
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!("source proxy: too many connections; one refused");
            continue;
        };
        let sessions = sessions.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = handle(sock, &sessions, connect_timeout).await {
                tracing::debug!(error = %e, "source proxy connection ended");
            }
        });
    }
}

const RESP_407: &[u8] = b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"roomgate\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
const RESP_400: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
const RESP_403: &[u8] = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
const RESP_502: &[u8] = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

async fn handle(mut client: TcpStream, sessions: &Registry, connect_timeout: Duration) -> std::io::Result<()> {
    // The request head, bounded in size and time.
    let mut buf = Vec::with_capacity(1024);
    let parsed = tokio::time::timeout(HEAD_TIMEOUT, async {
        loop {
            match parse_head(&buf) {
                Ok(Some(done)) => return Ok(done),
                Ok(None) => {}
                Err(e) => return Err(Some(e)),
            }
            let mut chunk = [0u8; 2048];
            match client.read(&mut chunk).await {
                Ok(0) | Err(_) => return Err(None),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    let (head, used) = match parsed {
        Ok(Ok(done)) => done,
        Ok(Err(Some(e))) => {
            tracing::debug!(error = %e, "source proxy: bad request head");
            return client.write_all(RESP_400).await;
        }
        Ok(Err(None)) | Err(_) => return Ok(()),
    };
    let Some(session) = head
        .proxy_token()
        .and_then(|t| sessions.lock().expect("sessions lock").get(&t).cloned())
    else {
        return client.write_all(RESP_407).await;
    };
    let (host, port) = head.target.host_port();
    let host_name = host.to_string();

    // Every address of the target, checked; then connect to a checked one (no second lookup).
    let ips: Vec<IpAddr> = match host {
        url::Host::Ipv4(ip) => vec![IpAddr::V4(*ip)],
        url::Host::Ipv6(ip) => vec![IpAddr::V6(*ip)],
        url::Host::Domain(d) => {
            match tokio::time::timeout(connect_timeout, tokio::net::lookup_host((d.as_str(), port))).await {
                Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
                _ => vec![],
            }
        }
    };
    if ips.is_empty() {
        tracing::info!(task = %session.label, host = %host_name, "source proxy: cannot resolve the target");
        session.record(ProxyEvent::Unreachable { host: host_name });
        return client.write_all(RESP_502).await;
    }
    if let Some(ip) = session.policy.first_refused(ips.iter().copied()) {
        tracing::warn!(task = %session.label, host = %host_name, %ip, port,
            "source proxy refused a connection to an address the source policy does not allow");
        metrics::counter!("roomgate_refusals_total", "source" => "pull", "reason" => "address").increment(1);
        session.record(ProxyEvent::Refused { host: host_name, ip });
        return client.write_all(RESP_403).await;
    }
    let mut upstream = None;
    for ip in &ips {
        if let Ok(Ok(s)) = tokio::time::timeout(connect_timeout, TcpStream::connect((*ip, port))).await {
            upstream = Some(s);
            break;
        }
    }
    let Some(mut upstream) = upstream else {
        tracing::info!(task = %session.label, host = %host_name, port, "source proxy: cannot connect to the target");
        session.record(ProxyEvent::Unreachable { host: host_name });
        return client.write_all(RESP_502).await;
    };
    let rest = &buf[used..];
    match head.origin_request() {
        None => {
            client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await?;
            if !rest.is_empty() {
                upstream.write_all(rest).await?;
            }
        }
        Some(request) => {
            upstream.write_all(&request).await?;
            if !rest.is_empty() {
                upstream.write_all(rest).await?;
            }
            // Note redirects (libav follows none; the task's reason says why it failed).
            let mut first = [0u8; 2048];
            let n = match tokio::time::timeout(FIRST_BYTE_TIMEOUT, upstream.read(&mut first)).await {
                Ok(r) => r?,
                Err(_) => return Ok(()),
            };
            if let Some(status) = response_status(&first[..n]).filter(|s| (300..400).contains(s)) {
                tracing::info!(task = %session.label, host = %host_name, status, "source proxy: the source answered libav with a redirect");
                session.record(ProxyEvent::Redirected { status });
            }
            client.write_all(&first[..n]).await?;
        }
    }
    // Splice until either side closes.
    let (mut cr, mut cw) = client.split();
    let (mut ur, mut uw) = upstream.split();
    tokio::select! {
        _ = tokio::io::copy(&mut cr, &mut uw) => {}
        _ = tokio::io::copy(&mut ur, &mut cw) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests;
