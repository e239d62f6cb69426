//! ICE-TCP connections (RFC 6544 passive candidates, RFC 4571 framing). Each connection is a small task that
//! hands whole packets to the engine and writes what the engine gives it, through a queue bounded in size and
//! in age: a peer that stops reading loses packets (and its video waits for the next keyframe) instead of
//! holding anyone up or being fed stale media later. The queue is large enough for a GOP burst at join.

use super::demux::{frame, FrameReader};
use super::engine::Command;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
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

pub async fn accept_loop(listener: TcpListener, engine: mpsc::Sender<Command>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(connection(stream, peer, engine.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "ICE-TCP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection(stream: TcpStream, peer: SocketAddr, engine: mpsc::Sender<Command>) {
    let _ = stream.set_nodelay(true);
    let _ = socket2::SockRef::from(&stream).set_send_buffer_size(TCP_SEND_BUFFER);
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(TCP_QUEUE);
    let lost = Arc::new(AtomicBool::new(false));
    if engine
        .send(Command::TcpOpen {
            peer,
            writer: tx,
            lost: lost.clone(),
        })
        .await
        .is_err()
    {
        return;
    }
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
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        reader.feed(&buf[..n]);
        while let Some(p) = reader.next_packet() {
            if engine.send(Command::TcpPacket { peer, packet: p }).await.is_err() {
                break;
            }
        }
    }
    let _ = engine.send(Command::TcpClosed { peer }).await;
    writer.abort();
}
