//! RTMP push ingest: `rtmp://HOST/push/<room>?sdkappid=..&userid=..&usersig=..`.
//!
//! This file is the I/O edge: it accepts TCP connections and moves bytes between sockets and
//! `RtmpConnection` state machines. Everything protocol-shaped lives in the submodules.

pub mod chunk;
pub mod connection;
pub mod publisher;

pub use connection::{Action, RtmpConnection, RtmpContext};

use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// How long a refused client gets to read our status message before the socket closes.
const CLOSE_GRACE: Duration = Duration::from_millis(800);

/// Accept RTMP clients until the task is dropped.
pub async fn serve(listener: TcpListener, ctx: Arc<RtmpContext>) {
    let slots = Arc::new(Semaphore::new(ctx.config.rtmp.max_connections));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "RTMP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "RTMP connection refused: rtmp.max_connections reached");
            metrics::counter!("roomgate_refusals_total", "source" => "rtmp", "reason" => "max_connections")
                .increment(1);
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            metrics::gauge!("roomgate_rtmp_connections").increment(1.0);
            handle_connection(stream, peer, ctx).await;
            metrics::gauge!("roomgate_rtmp_connections").decrement(1.0);
        });
    }
}

async fn handle_connection(mut stream: TcpStream, peer: std::net::SocketAddr, ctx: Arc<RtmpContext>) {
    let _ = stream.set_nodelay(true);
    let idle = Duration::from_secs(ctx.config.rtmp.idle_timeout_secs.max(1));
    let setup_deadline =
        tokio::time::Instant::now() + Duration::from_secs(ctx.config.rtmp.handshake_timeout_secs.max(1));
    let mut conn = RtmpConnection::new(ctx, peer);
    let mut buf = vec![0u8; 64 * 1024];
    let mut kick: Option<tokio::sync::watch::Receiver<_>> = None;
    loop {
        let deadline = if conn.is_publishing() {
            tokio::time::Instant::now() + idle
        } else {
            setup_deadline.min(tokio::time::Instant::now() + idle)
        };
        let actions = tokio::select! {
            r = tokio::time::timeout_at(deadline, stream.read(&mut buf)) => match r {
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => conn.handle_input(&buf[..n], Instant::now()),
                Ok(Err(e)) => {
                    tracing::info!(%peer, error = %e, "RTMP connection error");
                    break;
                }
                Err(_) => {
                    tracing::warn!(%peer, publishing = conn.is_publishing(), "RTMP connection timed out");
                    break;
                }
            },
            _ = replaced(&mut kick) => conn.on_replaced(),
        };
        if let Some(k) = conn.take_kick_signal() {
            kick = Some(k);
        }
        let mut close = false;
        for a in actions {
            match a {
                Action::Send(bytes) => {
                    if stream.write_all(&bytes).await.is_err() {
                        close = true;
                    }
                }
                Action::Close => close = true,
            }
        }
        if close {
            conn.on_disconnect();
            linger_and_close(stream).await;
            return;
        }
    }
    conn.on_disconnect();
}

async fn replaced(kick: &mut Option<tokio::sync::watch::Receiver<Option<crate::room::LeaveReason>>>) {
    match kick {
        Some(rx) => loop {
            if rx.borrow_and_update().is_some() {
                return;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        },
        None => std::future::pending().await,
    }
}

/// Half-close and read until the client closes (or a grace period ends), so a status we just sent is not
/// destroyed by a reset caused by unread input.
async fn linger_and_close(mut stream: TcpStream) {
    let _ = stream.flush().await;
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 16 * 1024];
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}
