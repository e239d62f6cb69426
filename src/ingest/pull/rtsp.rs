//! RTSP sources go through a relay of their own, as http(s) sources go through the source proxy: libav's RTSP
//! client follows a server's redirect (3xx + `Location`) to any host by itself, which no address check would see.
//! The relay listens on loopback for the one connection of one opening, connects to the address the policy
//! checked, and forwards both ways while it reads what the server sends ([`RtspScanner`]): a redirect ends the
//! connection before libav sees it. Media stays interleaved on that connection (`rtsp_transport=tcp`).

use super::proxy::{EventSink, ProxyEvent};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The longest message head (status line and headers) a server may send.
const MAX_HEAD: usize = 16 * 1024;
/// The largest body a server's message may announce (SDP and parameters are small; libav would allocate it).
const MAX_BODY: usize = 64 * 1024;
/// How long the relay waits for libav to connect.
const ACCEPT_WITHIN: Duration = Duration::from_secs(10);

/// Why the relay ends the connection: the server redirects, or says something libav could read otherwise than
/// the scanner does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    /// A response whose status libav would read as a redirect (libav follows one to any host).
    #[error("the server answered with a redirect ({0})")]
    Redirect(i32),
    /// A `Location` header.
    #[error("the server sent a Location header")]
    Location,
    /// A message head longer than [`MAX_HEAD`].
    #[error("an RTSP message head longer than {MAX_HEAD} bytes")]
    HeadTooLong,
    /// A `Content-Length` that is not plain digits, is over [`MAX_BODY`], or is written so that libav and the
    /// scanner could read it differently.
    #[error("an RTSP message with a bad or ambiguous Content-Length")]
    BadLength,
    /// An interleaved packet inside a message head (libav skips it there; the scanner does not guess).
    #[error("interleaved data inside an RTSP message head")]
    Interleaved,
}

/// Reads what an RTSP server sends — responses, requests of its own, `$`-framed interleaved packets — and passes
/// on only what it has judged: a message head is held until complete and then refused if libav could read it as a
/// redirect (libav's reading of status lines and headers is lenient: a line ends at `\n`, the status is `atoi` of
/// the second word), bodies and packets pass as they come. Pure: fed bytes, it keeps at most one message head.
#[derive(Debug, Default)]
pub struct RtspScanner {
    /// The head being read, or the 4-byte header of an interleaved frame.
    pending: Vec<u8>,
    /// Bytes of a body or an interleaved packet still to pass.
    skip: usize,
    /// Where the current line of `pending` starts.
    line_start: usize,
}

impl RtspScanner {
    /// Take `data` and append to `out` what may reach libav; the status codes of the responses it completed, in
    /// order. An error: end the connection (nothing more may reach libav).
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<Vec<i32>, ScanError> {
        let mut statuses = Vec::new();
        let mut i = 0;
        while i < data.len() {
            if self.skip > 0 {
                let n = self.skip.min(data.len() - i);
                out.extend_from_slice(&data[i..i + n]);
                self.skip -= n;
                i += n;
                continue;
            }
            let byte = data[i];
            i += 1;
            self.pending.push(byte);
            if self.pending[0] == b'$' {
                if self.pending.len() == 4 {
                    self.skip = u16::from_be_bytes([self.pending[2], self.pending[3]]) as usize;
                    out.extend_from_slice(&self.pending);
                    self.pending.clear();
                }
                continue;
            }
            if byte == b'$' && self.pending.len() - 1 == self.line_start {
                return Err(ScanError::Interleaved);
            }
            if byte == b'\n' {
                let line = &self.pending[self.line_start..self.pending.len() - 1];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.is_empty() {
                    // The head is complete (or a blank line between messages).
                    if let Some(status) = self.judge()? {
                        statuses.push(status);
                    }
                    out.extend_from_slice(&self.pending);
                    self.pending.clear();
                    self.line_start = 0;
                } else {
                    self.line_start = self.pending.len();
                }
            } else if self.pending.len() > MAX_HEAD {
                return Err(ScanError::HeadTooLong);
            }
        }
        Ok(statuses)
    }

    /// Judge the complete head in `pending` as libav would read it: its status if it is a response; sets `skip`
    /// to its body.
    fn judge(&mut self) -> Result<Option<i32>, ScanError> {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let first = lines.next().unwrap_or_default();
        if first.is_empty() {
            return Ok(None);
        }
        let mut words = first.split_ascii_whitespace();
        let word1 = words.next().unwrap_or_default();
        // libav takes a line starting with one of these as a request from the server, anything else as a reply.
        let request = ["SET_PARAMETER", "OPTIONS", "ANNOUNCE"]
            .iter()
            .any(|m| word1.starts_with(m));
        let status = (!request).then(|| atoi(words.next().unwrap_or_default()));
        if let Some(status) = status.filter(|s| (300..400).contains(s)) {
            return Err(ScanError::Redirect(status));
        }
        for line in lines {
            let lower = line.to_ascii_lowercase();
            if lower.trim_start().starts_with("location") {
                return Err(ScanError::Location);
            }
            if lower.contains("content-length") {
                let value = lower
                    .strip_prefix("content-length:")
                    .ok_or(ScanError::BadLength)?
                    .trim();
                if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) || value.len() > 6 {
                    return Err(ScanError::BadLength);
                }
                let length: usize = value.parse().map_err(|_| ScanError::BadLength)?;
                if length > MAX_BODY {
                    return Err(ScanError::BadLength);
                }
                self.skip = length;
            }
        }
        Ok(status)
    }
}

/// C's `atoi` as glibc computes it (what libav reads a status code with): leading whitespace, a sign, digits
/// (saturating as `strtol` does), truncated to `int`.
fn atoi(word: &str) -> i32 {
    let s = word.trim_start();
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let mut value: i64 = 0;
    let mut saturated = false;
    for b in digits.bytes().take_while(u8::is_ascii_digit) {
        match value.checked_mul(10).and_then(|v| v.checked_add(i64::from(b - b'0'))) {
            Some(v) => value = v,
            None => {
                saturated = true;
                break;
            }
        }
    }
    let value = match (saturated, negative) {
        (true, false) => i64::MAX,
        (true, true) => i64::MIN,
        (false, true) => -value,
        (false, false) => value,
    };
    value as i32
}

/// Where a relay connects: the checked address, and for rtsps the TLS client and the name the certificate must
/// carry.
pub(super) struct Upstream {
    /// The checked address and port.
    pub target: SocketAddr,
    /// rtsps: TLS to the camera, verified for this name.
    pub tls: Option<(tokio_rustls::TlsConnector, rustls::pki_types::ServerName<'static>)>,
}

/// Relay the one connection libav makes to `listener` to `up`, ending it (recorded in `events`) when the server
/// redirects or speaks something else than RTSP (or, for rtsps, when its certificate does not verify).
pub(super) async fn relay(listener: TcpListener, up: Upstream, connect_timeout: Duration, events: EventSink) {
    let Ok(Ok((client, _))) = tokio::time::timeout(ACCEPT_WITHIN, listener.accept()).await else {
        return;
    };
    drop(listener);
    let server = match tokio::time::timeout(connect_timeout, TcpStream::connect(up.target)).await {
        Ok(Ok(s)) => s,
        _ => {
            events.record(ProxyEvent::Unreachable {
                host: up.target.ip().to_string(),
            });
            return;
        }
    };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    match up.tls {
        None => pump(client, server, events).await,
        Some((connector, name)) => match tokio::time::timeout(connect_timeout, connector.connect(name, server)).await {
            Ok(Ok(tls)) => pump(client, tls, events).await,
            // A TLS refusal (most often the certificate) is the task's reason; a reset or close is not reaching it.
            Ok(Err(e)) => match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
                Some(tls) => events.record(ProxyEvent::TlsFailed {
                    why: tls.to_string().chars().take(200).collect(),
                    certificate: matches!(tls, rustls::Error::InvalidCertificate(_)),
                }),
                None => events.record(ProxyEvent::Unreachable {
                    host: up.target.ip().to_string(),
                }),
            },
            Err(_) => events.record(ProxyEvent::Unreachable {
                host: up.target.ip().to_string(),
            }),
        },
    }
}

/// Move libav's requests to the server as they are, and the server's answers to libav once judged.
async fn pump<S>(client: TcpStream, server: S, events: EventSink)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut client_rd, mut client_wr) = client.into_split();
    let (mut server_rd, mut server_wr) = tokio::io::split(server);
    let upstream = tokio::io::copy(&mut client_rd, &mut server_wr);
    let downstream = async {
        let mut scanner = RtspScanner::default();
        let mut buf = vec![0u8; 64 * 1024];
        let mut out = Vec::with_capacity(buf.len());
        loop {
            let n = server_rd.read(&mut buf).await?;
            if n == 0 {
                // A head not yet judged never reaches libav.
                return Ok::<_, std::io::Error>(());
            }
            out.clear();
            match scanner.feed(&buf[..n], &mut out) {
                Ok(_) => client_wr.write_all(&out).await?,
                Err(ScanError::Redirect(status)) => {
                    events.record(ProxyEvent::RtspRedirected { status: status as u16 });
                    return Ok(());
                }
                Err(ScanError::Location) => {
                    events.record(ProxyEvent::RtspRedirected { status: 0 });
                    return Ok(());
                }
                Err(e) => {
                    tracing::info!(error = %e, "RTSP source relay: closing the connection");
                    return Ok(());
                }
            }
        }
    };
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `data` in one piece: (what passed, the statuses or the error).
    fn scan(s: &mut RtspScanner, data: &[u8]) -> (Vec<u8>, Result<Vec<i32>, ScanError>) {
        let mut out = Vec::new();
        let r = s.feed(data, &mut out);
        (out, r)
    }

    #[test]
    fn responses_bodies_and_interleaved_packets_pass_once_judged() {
        let mut s = RtspScanner::default();
        let describe = b"RTSP/1.0 200 OK\r\nCSeq: 2\r\nContent-Length: 10\r\n\r\nv=0\r\no=RTS";
        let (out, r) = scan(&mut s, describe);
        assert_eq!((out.as_slice(), r), (&describe[..], Ok(vec![200])));
        // An interleaved packet whose payload looks like a redirect is media, not a response.
        let mut frame = vec![b'$', 0, 0, 20];
        frame.extend_from_slice(b"RTSP/1.0 302 Found\r\n");
        assert_eq!(scan(&mut s, &frame), (frame.clone(), Ok(vec![])));
        // A head is held until it is complete.
        let ok = b"RTSP/1.0 200 OK\nCSeq: 3\n\n";
        let (out, _) = scan(&mut s, &ok[..10]);
        assert!(out.is_empty(), "a partial head passed");
        assert_eq!(scan(&mut s, &ok[10..]), (ok.to_vec(), Ok(vec![200])));
        // A request from the server is not a response.
        let req = b"GET_PARAMETER rtsp://x RTSP/1.0\r\nCSeq: 1\r\n\r\n";
        assert_eq!(scan(&mut s, req).1, Ok(vec![0]));
    }

    #[test]
    fn whatever_libav_would_read_as_a_redirect_is_refused_before_it_passes() {
        for head in [
            &b"RTSP/1.0 302 Moved\r\nLocation: rtsp://10.0.0.1/x\r\n\r\n"[..],
            b"RTSP/1.0 302 Moved\n\n",
            b" RTSP/1.0 302x Moved\r\n\r\n",
            b"RTSP/1.0 +301\r\n\r\n",
            b"RTSP/1.0 4294967598 Wrapped\r\n\r\n",
            b"RTSP/1.0 200 OK\r\nlocation: rtsp://10.0.0.1/\r\n\r\n",
        ] {
            let mut s = RtspScanner::default();
            let (out, r) = scan(&mut s, head);
            assert!(out.is_empty(), "{:?} passed", String::from_utf8_lossy(head));
            assert!(matches!(r, Err(ScanError::Redirect(_) | ScanError::Location)), "{r:?}");
        }
        // Split anywhere: nothing of it passes either.
        let head = b"RTSP/1.0 302 Moved\r\nCSeq: 2\r\n\r\n";
        for cut in 1..head.len() {
            let mut s = RtspScanner::default();
            let (a, _) = scan(&mut s, &head[..cut]);
            let (b, r) = scan(&mut s, &head[cut..]);
            assert!(a.is_empty() && b.is_empty() && r.is_err(), "{cut}");
        }
    }

    #[test]
    fn ambiguous_lengths_endless_heads_and_hidden_packets_are_refused() {
        for head in [
            &b"RTSP/1.0 200 OK\r\nContent-Length: lots\r\n\r\n"[..],
            b"RTSP/1.0 200 OK\r\nContent-Length : 60\r\n\r\n",
            b"RTSP/1.0 200 OK\r\n Content-Length: 60\r\n\r\n",
            b"RTSP/1.0 200 OK\r\nContent-Length: 2147483648\r\n\r\n",
            b"RTSP/1.0 200 OK\r\nContent-Length: 999999\r\n\r\n",
            b"RTSP/1.0 200 OK\r\n$\x00\x00\x04RTSP\r\n\r\n",
        ] {
            let mut s = RtspScanner::default();
            let (out, r) = scan(&mut s, head);
            assert!(
                out.is_empty() && r.is_err(),
                "{:?}: {r:?}",
                String::from_utf8_lossy(head)
            );
        }
        let mut s = RtspScanner::default();
        assert_eq!(scan(&mut s, &vec![b'a'; MAX_HEAD + 1]).1, Err(ScanError::HeadTooLong));
    }

    #[test]
    fn atoi_reads_as_glibc_does() {
        assert_eq!(atoi("302"), 302);
        assert_eq!(atoi("  302x"), 302);
        assert_eq!(atoi("+301"), 301);
        assert_eq!(atoi("4294967598"), 302);
        assert_eq!(atoi("99999999999999999999"), -1);
        assert_eq!(atoi("abc"), 0);
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200 {
            let mut s = RtspScanner::default();
            let _ = s.feed(&crate::ingest::rtmp::noise(&mut seed, 4096), &mut Vec::new());
        }
    }
}
