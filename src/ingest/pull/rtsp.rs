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
/// How long the relay waits for libav to connect.
const ACCEPT_WITHIN: Duration = Duration::from_secs(30);

/// Why the server's byte stream is not RTSP the scanner accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    /// A message head longer than [`MAX_HEAD`].
    #[error("an RTSP message head longer than {MAX_HEAD} bytes")]
    HeadTooLong,
    /// A `Content-Length` that is not a number.
    #[error("an RTSP message with a bad Content-Length")]
    BadLength,
}

/// Reads what an RTSP server sends — responses, requests of its own, `$`-framed interleaved packets — and says
/// the status of each response. Pure: fed bytes, it keeps at most one message head.
#[derive(Debug, Default)]
pub struct RtspScanner {
    /// The head being read, or the 4-byte header of an interleaved frame.
    pending: Vec<u8>,
    /// Bytes of a body or an interleaved packet still to pass.
    skip: usize,
}

impl RtspScanner {
    /// Take `data`; the status codes of the responses it completed, in order.
    pub fn feed(&mut self, data: &[u8]) -> Result<Vec<u16>, ScanError> {
        let mut statuses = Vec::new();
        let mut i = 0;
        while i < data.len() {
            if self.skip > 0 {
                let n = self.skip.min(data.len() - i);
                self.skip -= n;
                i += n;
                continue;
            }
            self.pending.push(data[i]);
            i += 1;
            if self.pending[0] == b'$' {
                if self.pending.len() == 4 {
                    self.skip = u16::from_be_bytes([self.pending[2], self.pending[3]]) as usize;
                    self.pending.clear();
                }
                continue;
            }
            if self.pending.ends_with(b"\r\n\r\n") || self.pending == b"\r\n" {
                if let Some(status) = self.head()? {
                    statuses.push(status);
                }
                self.pending.clear();
            } else if self.pending.len() > MAX_HEAD {
                return Err(ScanError::HeadTooLong);
            }
        }
        Ok(statuses)
    }

    /// Read the complete head in `pending`: its status if it is a response; sets `skip` to its body.
    fn head(&mut self) -> Result<Option<u16>, ScanError> {
        let text = String::from_utf8_lossy(&self.pending);
        let mut lines = text.split("\r\n");
        let first = lines.next().unwrap_or_default();
        let status = first
            .strip_prefix("RTSP/")
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|code| code.parse::<u16>().ok());
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                if name.trim().eq_ignore_ascii_case("content-length") {
                    self.skip = value.trim().parse().map_err(|_| ScanError::BadLength)?;
                }
            }
        }
        Ok(status)
    }
}

/// Relay the one connection libav makes to `listener` to `target`, ending it (recorded in `events`) when the
/// server redirects or speaks something else than RTSP.
pub(super) async fn relay(listener: TcpListener, target: SocketAddr, connect_timeout: Duration, events: EventSink) {
    let Ok(Ok((client, _))) = tokio::time::timeout(ACCEPT_WITHIN, listener.accept()).await else {
        return;
    };
    drop(listener);
    let server = match tokio::time::timeout(connect_timeout, TcpStream::connect(target)).await {
        Ok(Ok(s)) => s,
        _ => {
            events.record(ProxyEvent::Unreachable {
                host: target.ip().to_string(),
            });
            return;
        }
    };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (mut client_rd, mut client_wr) = client.into_split();
    let (mut server_rd, mut server_wr) = server.into_split();
    let upstream = tokio::io::copy(&mut client_rd, &mut server_wr);
    let downstream = async {
        let mut scanner = RtspScanner::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = server_rd.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            match scanner.feed(&buf[..n]) {
                Ok(statuses) => {
                    if let Some(status) = statuses.into_iter().find(|s| (300..400).contains(s)) {
                        events.record(ProxyEvent::RtspRedirected { status });
                        return Ok(());
                    }
                }
                Err(e) => {
                    tracing::info!(error = %e, "RTSP source relay: not RTSP; closing");
                    return Ok(());
                }
            }
            client_wr.write_all(&buf[..n]).await?;
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

    #[test]
    fn responses_bodies_and_interleaved_packets_are_told_apart() {
        let mut s = RtspScanner::default();
        let describe = b"RTSP/1.0 200 OK\r\nCSeq: 2\r\nContent-Length: 10\r\n\r\nv=0\r\no=RTS";
        assert_eq!(s.feed(describe).unwrap(), [200]);
        // An interleaved packet whose payload looks like a redirect is media, not a response.
        let mut frame = vec![b'$', 0, 0, 20];
        frame.extend_from_slice(b"RTSP/1.0 302 Found\r\n");
        assert_eq!(s.feed(&frame).unwrap(), Vec::<u16>::new());
        // A redirect split across reads.
        let redirect = b"RTSP/1.0 302 Moved\r\nLocation: rtsp://10.0.0.1/x\r\n\r\n";
        assert_eq!(s.feed(&redirect[..7]).unwrap(), Vec::<u16>::new());
        assert_eq!(s.feed(&redirect[7..]).unwrap(), [302]);
        // A request from the server is not a response.
        assert_eq!(
            s.feed(b"GET_PARAMETER rtsp://x RTSP/1.0\r\nCSeq: 1\r\n\r\n").unwrap(),
            Vec::<u16>::new()
        );
    }

    #[test]
    fn endless_heads_and_bad_lengths_are_refused() {
        let mut s = RtspScanner::default();
        assert_eq!(s.feed(&vec![b'a'; MAX_HEAD + 1]), Err(ScanError::HeadTooLong));
        let mut s = RtspScanner::default();
        assert_eq!(
            s.feed(b"RTSP/1.0 200 OK\r\nContent-Length: lots\r\n\r\n"),
            Err(ScanError::BadLength)
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200 {
            let mut s = RtspScanner::default();
            let _ = s.feed(&crate::ingest::rtmp::noise(&mut seed, 4096));
        }
    }
}
