//! SRT push ingest: a publisher calls `srt://HOST:8890?streamid=...` (caller mode) and sends MPEG-TS.
//!
//! This file is the I/O edge. libsrt runs the protocol (handshake, retransmission, AES, latency buffer) on its
//! own threads; roomgate decides who may publish in libsrt's listen callback, before the handshake completes, so
//! a refused caller gets an SRT reject code (1400 bad request, 1401 bad credentials, 1402 overload, 1403
//! forbidden, 1404 unknown app, 1405 not `m=publish`) and never sends media. Two threads of ours: `srt-accept`
//! waits for the port's first datagram before libsrt is given the port (see `start`), then in libsrt's
//! blocking accept; `srt-io` waits on libsrt's epoll for the open connections and hands what
//! each received, a batch per wake-up, to that publish's task, where `to_room::SrtPublish` demuxes it into the
//! room. With no connection open, `srt-io` sleeps on a channel: libsrt's epoll wait looks for events every
//! 10 ms, and an idle listener should cost nothing.

pub mod ffi;
pub mod stream_id;
pub mod to_room;

use crate::access::{authorize_publish, Denied};
use crate::auth::unix_now;
use crate::config::Config;
use crate::ingest::Refusal;
use crate::limits::{ConnectionCounter, ConnectionSlot};
use crate::room::{LeaveReason, RoomHub, RoomKey, RoomRef, SourceKind};
use bytes::{Bytes, BytesMut};
use ffi::{Epoll, EpollEvent, Handshaking, RawSocket, SockOpt, Socket, SrtError};
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Batches of received bytes (each at most `BATCH` bytes) a publish task may have waiting before more are dropped.
const QUEUE: usize = 32;
/// The most one read of a connection hands over at once.
const BATCH: usize = 64 * 1024;
/// How long the I/O thread waits, with no connection open, before it looks at stale admissions.
const IDLE_TICK: Duration = Duration::from_millis(250);
/// How long the I/O thread waits for events of open connections before it takes newly accepted ones and looks at
/// ended publishes (libsrt's wait polls every 10 ms anyway).
const TICK_MS: i64 = 20;
/// An admitted caller not accepted within this time (its handshake failed after the callback, e.g. a passphrase
/// mismatch) is forgotten and its slot given back.
const ADMISSION_TTL: Duration = Duration::from_secs(3);
/// Handshakes the listen callback judges per minute: from one address, and from all (each verifies a UserSig on
/// libsrt's receiving thread, which every publisher's packets go through).
const HANDSHAKES_PER_IP_PER_MINUTE: u32 = 60;
const HANDSHAKES_PER_MINUTE: u32 = 30_000;
/// libsrt's receive buffer per connection (bytes): what a caller asking for a long latency can make us hold.
/// 4 MiB holds 1.5 s of a 20 Mb/s stream.
const RECEIVE_BUFFER: i32 = 4 << 20;

/// What every SRT publish shares.
pub struct SrtContext {
    /// The rooms publishers join.
    pub hub: Arc<RoomHub>,
    /// The configuration (apps, `[srt]`, Opus settings).
    pub config: Arc<Config>,
}

/// A caller the listen callback let in, until the I/O thread accepts it.
struct Admission {
    key: RoomKey,
    userid: String,
    label: String,
    slot: ConnectionSlot,
    at: Instant,
}

/// The decisions shared by libsrt's handshake thread (the listen callback) and the I/O thread.
struct Gate {
    ctx: Arc<SrtContext>,
    slots: Arc<ConnectionCounter>,
    admitted: Mutex<HashMap<RawSocket, Admission>>,
    per_ip: crate::limits::PerIpRate,
    all: crate::limits::PerIpRate,
}

/// What the listen callback points at: the gate while the listener runs, nothing after (libsrt may still call
/// the callback while the listener closes, so this small cell lives as long as the process).
struct GateCell(Mutex<Option<Arc<Gate>>>);

/// Why a caller is rejected: the SRT reject code, the metrics reason and the log text.
struct Rejection {
    code: i32,
    reason: &'static str,
    detail: String,
}

impl Rejection {
    fn new(code: i32, reason: &'static str, detail: impl std::fmt::Display) -> Self {
        Rejection {
            code,
            reason,
            detail: detail.to_string(),
        }
    }

    fn of(refusal: &Refusal) -> Self {
        let code = match refusal {
            Refusal::Denied(Denied::UnknownApp(_)) => 1404,
            Refusal::Denied(Denied::UserSig(_)) | Refusal::Denied(Denied::MissingToken) => 1401,
            Refusal::Denied(Denied::PrivateMapKey(_)) | Refusal::Denied(Denied::PrivateMapKeyRequired(_)) => 1403,
            _ => 1400,
        };
        Rejection::new(code, refusal.label(), refusal)
    }
}

/// The running SRT listener; dropping it closes the listener, stops its threads and closes every connection. The
/// drop waits for the threads (at most a tick): libsrt's own teardown at process exit must not meet a thread
/// still inside libsrt.
pub struct SrtListener {
    stop: Arc<AtomicBool>,
    listener: Arc<Socket>,
    /// Closed to wake the accept thread while it still waits for the first datagram (see `Dormant`).
    dormant: Dormant,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for SrtListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept thread out of its wait for the first datagram, or out of libsrt's accept.
        self.dormant.close(&self.listener);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Bind the SRT listener of `ctx.config.srt` and start its threads; publish tasks are spawned on `runtime`.
///
/// The port is bound here, on a plain UDP socket, but libsrt is only given it once the first datagram arrives:
/// libsrt's receiving thread polls its socket every 10 ms even when nothing comes (about 100 wake-ups a second),
/// and a gateway whose users never publish over SRT should not pay that. The first caller's handshake is not
/// read by us: it waits in the socket for libsrt. libsrt's receiving thread starts in `srt_bind_acquire` and may
/// read it before `srt_listen` has set the listener up (a race either side can win), in which case libsrt drops
/// it and the caller repeats its handshake 250 ms later, as callers do: the first connection after start may take
/// up to 250 ms longer. Once started, libsrt stays started for the process's life.
pub fn start(ctx: Arc<SrtContext>, runtime: tokio::runtime::Handle) -> Result<(SocketAddr, SrtListener), SrtError> {
    let cfg = &ctx.config.srt;
    let listener = Socket::new()?;
    // Live mode; a blocking accept (on a thread of its own; accepted sockets are made non-blocking for the epoll).
    listener.set_int(SockOpt::TransType, 0)?;
    listener.set_int(SockOpt::RcvSyn, 1)?;
    listener.set_int(SockOpt::SndSyn, 0)?;
    listener.set_int(SockOpt::Latency, cfg.latency_ms as i32)?;
    listener.set_int(SockOpt::RcvLatency, cfg.latency_ms as i32)?;
    listener.set_int(SockOpt::EnforcedEncryption, 1)?;
    listener.set_int(SockOpt::RcvBuf, RECEIVE_BUFFER)?;
    let io_error = |what: &'static str| {
        move |e: std::io::Error| SrtError {
            what,
            code: 0,
            message: e.to_string(),
        }
    };
    let udp = bind_udp(cfg.listen).map_err(io_error("bind"))?;
    let bound = udp
        .local_addr()
        .and_then(|a| a.as_socket().ok_or_else(|| std::io::Error::other("not an IP address")))
        .map_err(io_error("getsockname"))?;
    let gate = Arc::new(Gate {
        slots: ConnectionCounter::new(cfg.max_connections, cfg.max_connections_per_ip),
        ctx: ctx.clone(),
        admitted: Mutex::new(HashMap::new()),
        per_ip: crate::limits::PerIpRate::new(HANDSHAKES_PER_IP_PER_MINUTE),
        all: crate::limits::PerIpRate::new(HANDSHAKES_PER_MINUTE),
    });
    let cell: &'static GateCell = Box::leak(Box::new(GateCell(Mutex::new(Some(gate.clone())))));
    let epoll = Epoll::new()?;
    let stop = Arc::new(AtomicBool::new(false));
    let listener = Arc::new(listener);
    let (accepted_tx, accepted) = std::sync::mpsc::channel();
    let (wake, woken) = std::os::unix::net::UnixStream::pair().map_err(io_error("socketpair"))?;
    let dormant = Dormant(Arc::new(Mutex::new(Some(wake))));
    let io = IoLoop {
        gate,
        accepted,
        epoll,
        runtime,
        conns: HashMap::new(),
    };
    let mut guard = SrtListener {
        stop: stop.clone(),
        listener: listener.clone(),
        dormant: dormant.clone(),
        threads: Vec::new(),
    };
    let flag = stop.clone();
    let teardown = Teardown {
        cell,
        listener: listener.clone(),
        dormant: dormant.clone(),
    };
    guard.threads.push(
        std::thread::Builder::new()
            .name("srt-io".into())
            .spawn(move || {
                let _teardown = teardown;
                io.run(&flag);
            })
            .map_err(io_error("thread"))?,
    );
    let flag = stop.clone();
    guard.threads.push(
        std::thread::Builder::new()
            .name("srt-accept".into())
            .spawn(move || {
                if !first_datagram(&udp, &woken) {
                    return;
                }
                // Under the lock `Dormant::close` takes: either the listener is closed first and not started
                // here, or it is started here and closed after (which wakes `accept_loop`).
                let Ok(open) = dormant.0.lock() else { return };
                if open.is_none() {
                    return;
                }
                // SAFETY: `cell` is never freed, and is a Mutex (usable from libsrt's threads).
                let listening = listener.bind_acquire(udp.into()).and_then(|()| unsafe {
                    listener.listen(128, on_handshake, cell as *const GateCell as *mut c_void)
                });
                drop(open);
                match listening {
                    Ok(()) => tracing::debug!("SRT listener woken by its first datagram; libsrt started"),
                    Err(e) => {
                        if !flag.load(Ordering::Relaxed) {
                            tracing::error!(error = %e, "SRT listener could not start; SRT callers get no answer");
                        }
                        return;
                    }
                }
                accept_loop(&listener, &accepted_tx, &flag)
            })
            .map_err(io_error("thread"))?,
    );
    tracing::info!(addr = %bound, latency_ms = cfg.latency_ms, "SRT listener ready");
    Ok((bound, guard))
}

/// The SRT port's UDP socket, bound as libsrt 1.5 binds its own (an IPv6 address also takes IPv4 callers; no
/// `SO_REUSEADDR`, so a second process cannot bind the same port and take half the datagrams).
fn bind_udp(addr: SocketAddr) -> std::io::Result<socket2::Socket> {
    let udp = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM, None)?;
    if addr.is_ipv6() {
        udp.set_only_v6(false)?;
    }
    udp.bind(&addr.into())?;
    Ok(udp)
}

/// Wait, with libsrt not started, until a datagram is waiting on `udp` (true) or the other end of `stop` is
/// dropped (false). The datagram is left in the socket for libsrt to read.
fn first_datagram(udp: &socket2::Socket, stop: &std::os::unix::net::UnixStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut fds = [
        libc::pollfd {
            fd: udp.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: stop.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: `fds` is an array of two valid pollfd, both descriptors open during the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            // Cannot wait: start libsrt now rather than never answer.
            tracing::warn!(error = %e, "cannot wait for the first SRT datagram; starting libsrt now");
            return true;
        }
        if fds[1].revents != 0 {
            return false;
        }
        if fds[0].revents != 0 {
            return true;
        }
    }
}

/// What the I/O thread leaves behind when it ends, even by a panic: no more admissions (the listen callback
/// rejects every caller) and a closed listener (which also ends the accept thread), so callers are not let into
/// a listener nobody reads.
struct Teardown {
    cell: &'static GateCell,
    listener: Arc<Socket>,
    dormant: Dormant,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        if let Ok(mut gate) = self.cell.0.lock() {
            *gate = None;
        }
        self.dormant.close(&self.listener);
    }
}

/// The write end of the pipe the accept thread watches while libsrt is not started, shared by the listener's
/// drop and the I/O thread's teardown: closing takes it (which wakes the thread) and closes the listener under
/// one lock, which the accept thread holds while it hands the port to libsrt. So a closed listener is never
/// started (which would fail and leave the port bound), and a listener being started is closed after.
#[derive(Clone)]
struct Dormant(Arc<Mutex<Option<std::os::unix::net::UnixStream>>>);

impl Dormant {
    fn close(&self, listener: &Socket) {
        let mut open = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        open.take();
        listener.shut();
    }
}

/// The accept thread: waits in libsrt's blocking accept and hands each new connection to the I/O thread, until
/// the listener is closed.
fn accept_loop(listener: &Socket, to_io: &std::sync::mpsc::Sender<Accepted>, stop: &AtomicBool) {
    let mut failures = 0u32;
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok(Some((socket, peer))) => {
                failures = 0;
                // A caller that hung up at once has a broken socket that refuses options: it still goes to the
                // I/O thread, marked unusable, which closes it and gives back its admission and slot.
                let unblocked = socket
                    .set_int(SockOpt::RcvSyn, 0)
                    .and_then(|()| socket.set_int(SockOpt::SndSyn, 0));
                if let Err(e) = &unblocked {
                    tracing::debug!(?peer, error = %e, "SRT connection cannot be made non-blocking; closed");
                }
                if to_io.send((socket, peer, unblocked.is_ok())).is_err() {
                    break;
                }
            }
            Ok(None) => {}
            Err(e) => {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                // One failure is a caller that left between its handshake and our accept; a run of them is a
                // listener in trouble: no busy loop then.
                failures += 1;
                if failures > 1 {
                    tracing::warn!(error = %e, "SRT accept failed");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

/// libsrt's listen callback: runs on libsrt's receiving thread during each caller's handshake.
unsafe extern "C" fn on_handshake(
    opaque: *mut c_void,
    ns: RawSocket,
    _hs_version: c_int,
    peer: *const libc::sockaddr,
    stream_id: *const c_char,
) -> c_int {
    // A panic must not cross into C; it rejects the caller instead.
    let decided = std::panic::catch_unwind(|| {
        // SAFETY: `opaque` is the leaked `GateCell` given to `listen`; `peer` and `stream_id` are libsrt's,
        // valid during the call (the stream id NUL-terminated, at most 512 bytes).
        let cell = &*(opaque as *const GateCell);
        let peer = ffi::socket_addr(peer);
        let stream_id = if stream_id.is_null() {
            String::new()
        } else {
            CStr::from_ptr(stream_id).to_string_lossy().into_owned()
        };
        let gate = cell.0.lock().map(|g| g.clone()).unwrap_or(None);
        match gate {
            Some(gate) => gate.decide(Handshaking(ns), peer, &stream_id),
            None => {
                Handshaking(ns).set_reject_reason(1503);
                -1
            }
        }
    });
    decided.unwrap_or_else(|_| {
        Handshaking(ns).set_reject_reason(1500);
        -1
    })
}

impl Gate {
    /// Admit or reject one caller (0 or -1, as libsrt wants it).
    fn decide(&self, ns: Handshaking, peer: Option<SocketAddr>, stream_id: &str) -> c_int {
        let Some(peer) = peer else {
            ns.set_reject_reason(1400);
            return -1;
        };
        match self.admit(ns, peer, stream_id) {
            Ok(admission) => {
                tracing::info!(%peer, anchor = %admission.label, "SRT caller admitted");
                self.admitted.lock().expect("admissions").insert(ns.0, admission);
                0
            }
            Err(r) => {
                crate::limits::refused(
                    "srt",
                    r.reason,
                    &format_args!("SRT caller {peer} rejected ({}): {}", r.code, r.detail),
                );
                ns.set_reject_reason(r.code);
                -1
            }
        }
    }

    fn admit(&self, ns: Handshaking, peer: SocketAddr, stream_id: &str) -> Result<Admission, Rejection> {
        let now = Instant::now();
        let key = crate::ingest::rtmp::slot_key(peer.ip());
        let unspecified = std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
        for bucket in [self.per_ip.check(key, now), self.all.check(unspecified, now)] {
            bucket.map_err(|(e, _)| Rejection::new(1402, e.reason(), e))?;
        }
        let slot = self
            .slots
            .try_open(crate::ingest::rtmp::slot_key(peer.ip()))
            .map_err(|e| Rejection::new(1402, e.reason(), e))?;
        let id = stream_id::parse(stream_id).map_err(|e| {
            let code = match e {
                stream_id::StreamIdError::Mode(_) => 1405,
                _ => 1400,
            };
            Rejection::new(code, "bad_stream_id", e)
        })?;
        let get = |k: &'static str| {
            id.params
                .get(k)
                .map(String::as_str)
                .filter(|v| !v.is_empty())
                .ok_or(Refusal::MissingParameter(k))
        };
        let refused = |r: Refusal| Rejection::of(&r);
        let sdkappid_raw = get("sdkappid").map_err(refused)?;
        let sdkappid: u64 = sdkappid_raw
            .parse()
            .map_err(|_| refused(Refusal::BadSdkAppId(crate::ingest::clip(sdkappid_raw))))?;
        let userid = get("userid").map_err(refused)?.to_string();
        let usersig = get("usersig").map_err(refused)?;
        let room = RoomRef::Str(id.room.clone());
        let config = &self.ctx.config;
        let app = authorize_publish(
            &config.apps,
            sdkappid,
            &room,
            &userid,
            usersig,
            id.params.get("privatemapkey").map(String::as_str),
            unix_now(),
        )
        .map_err(|d| refused(Refusal::Denied(d)))?;
        if !app.srt_passphrase.is_empty() {
            ns.set_str(SockOpt::Passphrase, &app.srt_passphrase)
                .map_err(|e| Rejection::new(1500, "internal", e))?;
        }
        Ok(Admission {
            label: format!("{sdkappid}/{}/{userid}", id.room),
            key: RoomKey { sdkappid, room },
            userid,
            slot,
            at: Instant::now(),
        })
    }
}

/// One accepted connection, as the I/O thread holds it.
struct Connection {
    socket: Socket,
    to_publish: mpsc::Sender<Bytes>,
    peer: Option<SocketAddr>,
    label: String,
    latency: Duration,
    dropped: u64,
    _slot: ConnectionSlot,
}

/// A connection the accept thread took: its socket, its peer, and whether it is usable (made non-blocking).
type Accepted = (Socket, Option<SocketAddr>, bool);

/// The I/O thread's state: newly accepted connections, the epoll set and the open connections.
struct IoLoop {
    gate: Arc<Gate>,
    accepted: std::sync::mpsc::Receiver<Accepted>,
    epoll: Epoll,
    runtime: tokio::runtime::Handle,
    conns: HashMap<RawSocket, Connection>,
}

impl IoLoop {
    fn run(mut self, stop: &AtomicBool) {
        let mut events = [EpollEvent::default(); 64];
        let mut buf = vec![0u8; 1500];
        let mut last_sweep = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            if self.conns.is_empty() {
                // Nothing to read: sleep until a connection is accepted (libsrt's epoll wait would poll).
                match self.accepted.recv_timeout(IDLE_TICK) {
                    Ok((socket, peer, usable)) => self.take(socket, peer, usable),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                let n = self.epoll.wait(&mut events, TICK_MS);
                for ev in &events[..n] {
                    self.read(ev.fd, ev.events, &mut buf);
                }
                while let Ok((socket, peer, usable)) = self.accepted.try_recv() {
                    self.take(socket, peer, usable);
                }
            }
            if last_sweep.elapsed() >= IDLE_TICK {
                last_sweep = Instant::now();
                self.sweep();
            }
        }
        metrics::gauge!("roomgate_srt_connections").decrement(self.conns.len() as f64);
        tracing::info!("SRT listener stopped");
    }

    /// Start the publish of an accepted connection, if the listen callback admitted it.
    fn take(&mut self, socket: Socket, peer: Option<SocketAddr>, usable: bool) {
        {
            let admission = self.gate.admitted.lock().expect("admissions").remove(&socket.raw());
            let Some(a) = admission else {
                tracing::warn!(?peer, "SRT connection without an admission closed");
                return;
            };
            if !usable {
                // Closed with its admission (and the slot in it) dropped here.
                return;
            }
            if let Err(e) = self.epoll.add(socket.raw(), ffi::EPOLL_IN | ffi::EPOLL_ERR) {
                tracing::warn!(?peer, error = %e, "SRT connection cannot be watched; closed");
                return;
            }
            // The receive latency both sides agreed on (the larger of ours and the caller's).
            let latency = socket
                .get_int(SockOpt::RcvLatency)
                .map_or(Duration::ZERO, |ms| Duration::from_millis(ms.max(0) as u64));
            let (tx, rx) = mpsc::channel(QUEUE);
            let ctx = self.gate.ctx.clone();
            let (key, userid, label) = (a.key, a.userid, a.label.clone());
            self.runtime.spawn(publish(ctx, key, userid, label, peer, rx));
            metrics::gauge!("roomgate_srt_connections").increment(1.0);
            self.conns.insert(
                socket.raw(),
                Connection {
                    socket,
                    to_publish: tx,
                    peer,
                    label: a.label,
                    latency,
                    dropped: 0,
                    _slot: a.slot,
                },
            );
        }
    }

    /// Read every message waiting on `fd` into one batch for its publish; close it on error or once its
    /// publish ended.
    fn read(&mut self, fd: RawSocket, events: c_int, buf: &mut [u8]) {
        let Some(c) = self.conns.get_mut(&fd) else { return };
        let mut batch = BytesMut::new();
        let mut broken = events & ffi::EPOLL_ERR != 0;
        let mut held = None;
        if events & ffi::EPOLL_IN != 0 {
            loop {
                match c.socket.recv(buf) {
                    Ok(Some((n, h))) if n > 0 => {
                        batch.extend_from_slice(&buf[..n]);
                        held = held.or(h);
                    }
                    Ok(_) => break,
                    Err(_) => {
                        broken = true;
                        break;
                    }
                }
                if batch.len() >= BATCH {
                    break;
                }
            }
        }
        if let Some(late) = held {
            // From the batch's first message arriving (as SRT's clock places it) to our reading it: the latency
            // buffer SRT holds it in (the negotiated latency) and how late after that we read it. What SRT adds
            // before the gateway's own delay begins (the network's one-way delay is not in it).
            metrics::histogram!("roomgate_srt_receive_delay_seconds").record((late + c.latency).as_secs_f64());
        }
        if !batch.is_empty() {
            match c.to_publish.try_send(batch.freeze()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    c.dropped += 1;
                    metrics::counter!("roomgate_srt_dropped_batches_total").increment(1);
                    if c.dropped == 1 {
                        tracing::warn!(anchor = %c.label, "SRT publish is behind; dropping received data");
                    }
                }
                Err(mpsc::error::TrySendError::Closed(_)) => broken = true,
            }
        }
        if broken {
            self.close(fd);
        }
    }

    /// Close connections whose publish ended, and forget admissions whose handshake never completed.
    fn sweep(&mut self) {
        let ended: Vec<RawSocket> = self
            .conns
            .iter()
            .filter(|(_, c)| c.to_publish.is_closed())
            .map(|(fd, _)| *fd)
            .collect();
        for fd in ended {
            self.close(fd);
        }
        self.gate
            .admitted
            .lock()
            .expect("admissions")
            .retain(|_, a| a.at.elapsed() < ADMISSION_TTL);
    }

    fn close(&mut self, fd: RawSocket) {
        if let Some(c) = self.conns.remove(&fd) {
            tracing::debug!(peer = ?c.peer, anchor = %c.label, "SRT connection closed");
            metrics::gauge!("roomgate_srt_connections").decrement(1.0);
        }
    }
}

/// One publish: joins the room as the anchor, feeds it what the connection receives, and leaves when the
/// connection ends, the stream is refused, no media comes for `srt.idle_timeout_secs`, or another publisher
/// takes the identity over. Dropping `rx` at the end tells the I/O thread to close the connection.
async fn publish(
    ctx: Arc<SrtContext>,
    key: RoomKey,
    userid: String,
    label: String,
    peer: Option<SocketAddr>,
    mut rx: mpsc::Receiver<Bytes>,
) {
    let sdkappid = key.sdkappid;
    let idle = Duration::from_secs(ctx.config.srt.idle_timeout_secs.max(1));
    // The room is joined (and a publisher with this identity replaced) only once the connection sends something:
    // a handshake alone, even a forged one, takes nobody's place.
    let first = match tokio::time::timeout(idle, rx.recv()).await {
        Ok(Some(bytes)) => bytes,
        Ok(None) => {
            tracing::info!(?peer, anchor = %label, "SRT caller left before sending");
            return;
        }
        Err(_) => {
            tracing::warn!(?peer, anchor = %label, "no data from the SRT caller for {} s; closing", idle.as_secs());
            metrics::counter!("roomgate_refusals_total", "source" => "srt", "reason" => "timeout").increment(1);
            return;
        }
    };
    let anchor = ctx.hub.join(key, &userid, SourceKind::Srt);
    let mut kick = Some(anchor.kick_signal());
    tracing::info!(?peer, anchor = %label, "SRT publish started");
    let mut p = to_room::SrtPublish::new(anchor, label.clone(), ctx.config.opus_settings(sdkappid, None));
    let mut media_deadline = tokio::time::Instant::now() + idle;
    let mut pending = Some(first);
    let reason = loop {
        let (deadline, ready) = (media_deadline, pending.take());
        let next = async {
            match ready {
                Some(bytes) => Ok(Some(bytes)),
                None => tokio::time::timeout_at(deadline, rx.recv()).await,
            }
        };
        tokio::select! {
            batch = next => match batch {
                Err(_) => {
                    tracing::warn!(?peer, anchor = %label, "no media from the SRT publisher for {} s; closing", idle.as_secs());
                    metrics::counter!("roomgate_refusals_total", "source" => "srt", "reason" => "timeout").increment(1);
                    break LeaveReason::Timeout;
                }
                Ok(None) => {
                    tracing::info!(?peer, anchor = %label, "SRT publisher disconnected");
                    break LeaveReason::Normal;
                }
                Ok(Some(bytes)) => match p.on_data(&bytes, Instant::now()).await {
                    Ok(true) => media_deadline = tokio::time::Instant::now() + idle,
                    Ok(false) => {}
                    Err(refusal) => {
                        refusal.count("srt");
                        tracing::warn!(?peer, anchor = %label, reason = %refusal, "SRT publish ended");
                        break LeaveReason::Ended(refusal.to_string());
                    }
                },
            },
            _ = crate::ingest::replaced(&mut kick) => {
                Refusal::Replaced.count("srt");
                tracing::warn!(?peer, anchor = %label, "SRT publish replaced by a new publisher");
                break LeaveReason::Replaced;
            }
        }
    };
    p.finish(reason).await;
}
