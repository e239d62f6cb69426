//! RTMP push ingest: `rtmp://HOST/push/<room>?sdkappid=..&userid=..&usersig=..`.
//!
//! This file is the I/O edge: it accepts TCP connections and moves bytes between sockets and
//! `RtmpConnection` state machines. Everything protocol-shaped lives in the submodules.

pub mod amf0;
pub mod chunk;
pub mod connection;
pub mod to_room;
pub mod writer;

pub use connection::{ConnectionConfig, ConnectionError, Event, Output, RtmpConnection};

use crate::config::Config;
use crate::ingest::Refusal;
use crate::room::{LeaveReason, RoomHub};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use to_room::ToRoom;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// How long a refused client gets to read our status message before the socket closes.
const CLOSE_GRACE: Duration = Duration::from_millis(800);

/// What every connection shares.
pub struct RtmpContext {
    /// The rooms publishers join.
    pub hub: Arc<RoomHub>,
    /// The configuration (apps, `[rtmp]` limits, Opus settings).
    pub config: Arc<Config>,
}

/// Connections per client address, so one address cannot take every slot.
#[derive(Default)]
struct PerIp(Mutex<std::collections::HashMap<IpAddr, usize>>);

/// A counted connection of one address; dropping it gives the slot back.
struct IpSlot(Arc<PerIp>, IpAddr);

impl PerIp {
    fn take(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Option<IpSlot> {
        let mut m = self.0.lock().expect("per-IP map");
        let n = m.entry(ip).or_default();
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(IpSlot(self.clone(), ip))
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut m = self.0 .0.lock().expect("per-IP map");
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

/// Whose share a connection counts against: the IPv4 address, or the IPv6 /64 (one subscriber's prefix:
/// a host has as many addresses in it as it likes).
pub(crate) fn slot_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        v4 => v4,
    }
}

/// The connection slots RTMP and RTMPS share: `rtmp.max_connections` and `rtmp.max_connections_per_ip` hold for
/// both listeners together, so a second port does not double what one client (or all) may hold.
#[derive(Clone)]
pub struct RtmpSlots {
    total: Arc<Semaphore>,
    per_ip: Arc<PerIp>,
}

impl RtmpSlots {
    /// Slots for `config.rtmp.max_connections` connections.
    pub fn new(config: &crate::config::Config) -> RtmpSlots {
        RtmpSlots {
            total: Arc::new(Semaphore::new(config.rtmp.max_connections)),
            per_ip: Arc::new(PerIp::default()),
        }
    }
}

/// Accept RTMP clients until the task is dropped, holding `slots`; with `tls`, RTMPS (RTMP inside TLS, whose
/// handshake must finish within `rtmp.handshake_timeout_secs`).
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<RtmpContext>,
    slots: RtmpSlots,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let RtmpSlots { total: slots, per_ip } = slots;
    let mut last_warn = None::<Instant>;
    loop {
        let (stream, peer) = crate::limits::accept(&listener, "RTMP").await;
        let reason = match slots.clone().try_acquire_owned() {
            Err(_) => Some("max_connections"),
            Ok(permit) => match per_ip.take(slot_key(peer.ip()), ctx.config.rtmp.max_connections_per_ip.max(1)) {
                None => Some("max_connections_per_ip"),
                Some(slot) => {
                    let (ctx, tls) = (ctx.clone(), tls.clone());
                    tokio::spawn(async move {
                        let _held = (permit, slot);
                        let _ = stream.set_nodelay(true);
                        metrics::gauge!("roomgate_rtmp_connections").increment(1.0);
                        match tls {
                            None => handle_connection(stream, peer, ctx).await,
                            Some(tls) => {
                                let limit = Duration::from_secs(ctx.config.rtmp.handshake_timeout_secs.max(1));
                                match tokio::time::timeout(limit, tls.accept(stream)).await {
                                    Ok(Ok(stream)) => handle_connection(stream, peer, ctx).await,
                                    Ok(Err(e)) => crate::limits::refused(
                                        "rtmps",
                                        "tls_handshake",
                                        &format_args!("TLS handshake with {peer} failed: {e}"),
                                    ),
                                    Err(_) => crate::limits::refused(
                                        "rtmps",
                                        "tls_timeout",
                                        &format_args!("no TLS handshake from {peer} in time"),
                                    ),
                                }
                            }
                        }
                        metrics::gauge!("roomgate_rtmp_connections").decrement(1.0);
                    });
                    None
                }
            },
        };
        if let Some(reason) = reason {
            metrics::counter!("roomgate_refusals_total", "source" => "rtmp", "reason" => reason).increment(1);
            if last_warn.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                last_warn = Some(Instant::now());
                tracing::warn!(%peer, reason, "RTMP connection refused at accept (logged at most every 10 s)");
            }
        }
    }
}

/// The driver of one connection: moves bytes between the socket and its `RtmpConnection`, decides publishes
/// (authorization, joining the room) and carries media to the room through an `ToRoom`.
async fn handle_connection<S>(mut stream: S, peer: SocketAddr, ctx: Arc<RtmpContext>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut conn = RtmpConnection::new(ConnectionConfig::from_config(&ctx.config.rtmp), Instant::now());
    let mut buf = vec![0u8; 64 * 1024];
    let mut publisher: Option<ToRoom> = None;
    let mut kick: Option<tokio::sync::watch::Receiver<Option<LeaveReason>>> = None;
    loop {
        let deadline = tokio::time::Instant::from_std(conn.poll_timeout());
        let r = tokio::select! {
            r = tokio::time::timeout_at(deadline, stream.read(&mut buf)) => match r {
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => conn.handle_input(&buf[..n], Instant::now()),
                Ok(Err(e)) => {
                    tracing::info!(%peer, error = %e, "RTMP connection error");
                    break;
                }
                Err(_) => conn.handle_timeout(Instant::now()),
            },
            _ = crate::ingest::replaced(&mut kick) => {
                let refusal = Refusal::Replaced;
                conn.refuse("NetStream.Publish.Rejected", &refusal.to_string());
                end_publish(&mut publisher, &refusal, peer).await;
                Ok(())
            }
        };
        if let Err(e) = r {
            ended_by_protocol(&mut publisher, &e, peer).await;
        }
        let mut close = false;
        while let Some(out) = conn.poll_output() {
            match out {
                Output::Send(bytes) => {
                    // A client that does not read must not hold its slot past the connection's deadline.
                    let deadline = tokio::time::Instant::from_std(conn.poll_timeout());
                    // Flushed too: a TLS stream buffers what it was given until flushed.
                    let sent = async {
                        stream.write_all(&bytes).await?;
                        stream.flush().await
                    };
                    match tokio::time::timeout_at(deadline, sent).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => close = true,
                        Err(_) => {
                            let e = ConnectionError::Idle(ctx.config.rtmp.idle_timeout_secs);
                            tracing::info!(%peer, "RTMP client does not read what we send; closing");
                            ended_by_protocol(&mut publisher, &e, peer).await;
                            return;
                        }
                    }
                }
                Output::Close => close = true,
                Output::Event(ev) => {
                    if let Err(refusal) = on_event(&ctx, peer, &mut conn, &mut publisher, &mut kick, ev).await {
                        conn.refuse(refusal_code(&refusal), &refusal.to_string());
                        end_publish(&mut publisher, &refusal, peer).await;
                    }
                }
            }
        }
        if close {
            if let Some(p) = publisher.take() {
                p.finish(LeaveReason::Normal).await;
            }
            linger_and_close(stream).await;
            return;
        }
    }
    if let Some(p) = publisher.take() {
        tracing::info!(%peer, "RTMP publisher disconnected");
        p.finish(LeaveReason::Normal).await;
    }
}

/// Act on one event of the connection.
async fn on_event(
    ctx: &Arc<RtmpContext>,
    peer: SocketAddr,
    conn: &mut RtmpConnection,
    publisher: &mut Option<ToRoom>,
    kick: &mut Option<tokio::sync::watch::Receiver<Option<LeaveReason>>>,
    ev: Event,
) -> Result<(), Refusal> {
    let now = Instant::now();
    match ev {
        Event::PublishRequested { stream_key, app_query } => {
            let p = ToRoom::start(ctx, peer, &stream_key, &app_query)?;
            *kick = Some(p.anchor().kick_signal());
            *publisher = Some(p);
            // Errors of what was buffered behind the publish come back through the outputs.
            if let Err(e) = conn.accept_publish() {
                ended_by_protocol(publisher, &e, peer).await;
            }
        }
        Event::Video { timestamp, data } => {
            if let Some(p) = publisher {
                p.on_video(timestamp, &data, now)?;
            }
        }
        Event::Audio { timestamp, data } => {
            if let Some(p) = publisher {
                p.on_audio(timestamp, &data, now).await?;
            }
        }
        Event::Unpublished => {
            if let Some(p) = publisher.take() {
                tracing::info!(%peer, "RTMP publish finished by the client");
                p.finish(LeaveReason::Normal).await;
            }
        }
    }
    Ok(())
}

/// The `onStatus` code for a refusal of ours.
fn refusal_code(r: &Refusal) -> &'static str {
    match r {
        Refusal::Denied(crate::access::Denied::BadRoomId(_)) | Refusal::MissingParameter(_) => {
            "NetStream.Publish.BadName"
        }
        _ => "NetStream.Publish.Rejected",
    }
}

/// The connection broke the protocol (or timed out): count it, log it, and end the publish if there is one.
async fn ended_by_protocol(publisher: &mut Option<ToRoom>, e: &ConnectionError, peer: SocketAddr) {
    metrics::counter!("roomgate_refusals_total", "source" => "rtmp", "reason" => e.label()).increment(1);
    match publisher.take() {
        Some(p) => {
            tracing::warn!(%peer, anchor = %p.label(), reason = %e, "RTMP publish ended");
            p.finish(LeaveReason::Ended(e.to_string())).await;
        }
        None => tracing::info!(%peer, reason = %e, "RTMP connection closed before publishing"),
    }
}

/// End the publish (if any) for `refusal`, counted and logged.
async fn end_publish(publisher: &mut Option<ToRoom>, refusal: &Refusal, peer: SocketAddr) {
    refusal.count("rtmp");
    match publisher.take() {
        Some(p) => {
            let reason = match refusal {
                Refusal::Replaced => LeaveReason::Replaced,
                r => LeaveReason::Ended(r.to_string()),
            };
            tracing::warn!(%peer, anchor = %p.label(), reason = %refusal, "RTMP publish ended");
            p.finish(reason).await;
        }
        None => tracing::warn!(%peer, reason = %refusal, "RTMP publish refused"),
    }
}

/// Half-close and read until the client closes (or a grace period ends), so a status we just sent is not
/// destroyed by a reset caused by unread input.
async fn linger_and_close<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut stream: S) {
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

/// `len` bytes of deterministic noise (xorshift64 on `seed`, which it advances) for the parsers' garbage-input
/// tests: the same failures come back on every run.
#[cfg(test)]
pub(crate) fn noise(seed: &mut u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_shared_per_ipv4_address_and_ipv6_64() {
        let k = |s: &str| slot_key(s.parse().unwrap());
        assert_eq!(k("203.0.113.7"), k("::ffff:203.0.113.7"));
        assert_ne!(k("203.0.113.7"), k("203.0.113.8"));
        assert_eq!(k("2001:db8:1:2::1"), k("2001:db8:1:2:ffff::9"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
    }
}
