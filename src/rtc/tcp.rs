//! ICE-TCP connections (RFC 6544 passive candidates, RFC 4571 framing). Each connection is a small task that
//! hands whole packets to the engine and writes what the engine gives it, through a queue bounded in size and
//! in age: a peer that stops reading loses packets (and its video waits for the next keyframe) instead of
//! holding anyone up or being fed stale media later. The queue is large enough for a GOP burst at join.
//!
//! Before a peer has proven it speaks ICE it holds a slot of a capped budget (total and per IP) and has a few
//! seconds to send a STUN message; otherwise the connection is closed and the refusal counted.

use super::demux::{frame, FrameReader};
use super::engine::{Command, Shards};
use crate::limits::{refused, ConnectionCounter, ConnectionSlot};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Packets queued for one TCP peer before new ones are dropped (about 1.2 MB: a GOP-cache burst fits).
pub const TCP_QUEUE: usize = 1024;
/// Queued packets older than this are dropped instead of written: media that late is useless live.
const STALE: std::time::Duration = std::time::Duration::from_millis(1000);
/// Kernel send buffer of an ICE-TCP socket: small, so a stalled peer shows up as drops within a fraction of a
/// second instead of as seconds of stale media queued in the kernel.
const TCP_SEND_BUFFER: usize = 128 * 1024;

/// Caps of the ICE-TCP listener (from `[rtc]`).
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Time a new connection has to send its first STUN message.
    pub stun_timeout: Duration,
}

/// Whether `p` is a STUN message (RFC 5389: top bits 00, the magic cookie, a length that fits).
pub fn is_stun(p: &[u8]) -> bool {
    p.len() >= 20
        && p[0] & 0xC0 == 0
        && p[4..8] == [0x21, 0x12, 0xA4, 0x42]
        && usize::from(u16::from_be_bytes([p[2], p[3]])) + 20 == p.len()
}

pub(crate) async fn accept_loop(listener: TcpListener, shards: Arc<Shards>, limits: TcpLimits) {
    let counter = ConnectionCounter::new(limits.max_connections, limits.max_connections_per_ip);
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => match counter.try_open(peer.ip()) {
                Ok(slot) => {
                    tokio::spawn(connection(stream, peer, shards.clone(), limits.stun_timeout, slot));
                }
                Err(e) => {
                    refused("ice_tcp", e.reason(), &format_args!("{e}, peer {}", peer.ip()));
                    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                    drop(stream);
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "ICE-TCP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    shards: Arc<Shards>,
    stun_timeout: Duration,
    _slot: ConnectionSlot,
) {
    let _ = stream.set_nodelay(true);
    let _ = socket2::SockRef::from(&stream).set_send_buffer_size(TCP_SEND_BUFFER);
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(TCP_QUEUE);
    let lost = Arc::new(AtomicBool::new(false));
    // The shard of the session the first STUN request names; the connection talks to it alone.
    let mut engine: Option<mpsc::Sender<Command>> = None;
    let mut open = Some(Command::TcpOpen {
        peer,
        writer: tx,
        lost: lost.clone(),
    });
    let writer = tokio::spawn(async move {
        while let Some((queued, packet)) = rx.recv().await {
            if queued.elapsed() > STALE {
                lost.store(true, Ordering::Relaxed);
                metrics::counter!("roomgate_rtc_send_dropped_total", "proto" => "tcp").increment(1);
                continue;
            }
            let Some(framed) = frame(&packet) else {
                continue;
            };
            if wr.write_all(&framed).await.is_err() {
                break;
            }
        }
    });
    let mut reader = FrameReader::default();
    let mut buf = vec![0u8; 16 * 1024];
    // Until the first STUN message, reads have a deadline and anything else ends the connection.
    let mut stun_by = Some(tokio::time::Instant::now() + stun_timeout);
    'read: loop {
        let read = rd.read(&mut buf);
        let n = match stun_by {
            Some(deadline) => match tokio::time::timeout_at(deadline, read).await {
                Ok(r) => r,
                Err(_) => {
                    refused(
                        "ice_tcp",
                        "no_stun",
                        &format_args!("{peer} sent no STUN within {stun_timeout:?}"),
                    );
                    break;
                }
            },
            None => read.await,
        };
        let n = match n {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        reader.feed(&buf[..n]);
        while let Some(p) = reader.next_packet() {
            if stun_by.is_some() {
                if !is_stun(&p) {
                    refused(
                        "ice_tcp",
                        "not_stun",
                        &format_args!("{peer} sent something else than STUN first"),
                    );
                    break 'read;
                }
                let Some(id) = shards.routes.route((str0m::net::Protocol::Tcp, peer), &p) else {
                    refused(
                        "ice_tcp",
                        "unknown_session",
                        &format_args!("{peer}'s STUN request names no session"),
                    );
                    break 'read;
                };
                let shard = shards.of(id).clone();
                if shard.send(open.take().expect("sent once")).await.is_err() {
                    break 'read;
                }
                engine = Some(shard);
                stun_by = None;
            }
            let Some(shard) = &engine else { break 'read };
            if shard.send(Command::TcpPacket { peer, packet: p }).await.is_err() {
                break 'read;
            }
        }
    }
    if let Some(shard) = engine {
        let _ = shard.send(Command::TcpClosed { peer }).await;
    }
    writer.abort();
}

#[cfg(test)]
mod tests {
    use super::is_stun;

    #[test]
    fn stun_is_recognised() {
        let mut m = vec![0x00, 0x01, 0x00, 0x04, 0x21, 0x12, 0xA4, 0x42];
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&[0, 0, 0, 0]);
        assert!(is_stun(&m));
        assert!(!is_stun(&m[..20]), "length must match");
        let mut rtp = m.clone();
        rtp[0] = 0x80;
        assert!(!is_stun(&rtp));
        assert!(!is_stun(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    }
}
