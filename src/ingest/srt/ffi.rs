//! libsrt, the SRT library ffmpeg and OBS speak SRT with, through the few calls the listener needs.
//!
//! Why libsrt and not a Rust SRT stack: the publishers are libsrt (ffmpeg's `srt://`, OBS, most encoders), so the
//! same library on our side is wire-compatible by construction, including AES, the stream id and reject codes;
//! it is already mapped into the process by libavformat (no added library pages); and it is the SRT stack SRS
//! runs in production. srt-tokio 0.4.4 interoperated with ffmpeg in a probe, but its handshake code keeps a
//! reachable-looking `panic!` and it has had no release since 2023.
//!
//! The declarations follow `srt/srt.h` of libsrt 1.5.1 (Debian 12: `libsrt1.5-gnutls`); the option and event
//! numbers were checked against that header with a C program. Everything here is a thin safe shell: each unsafe
//! call is local and documented.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// An SRT socket id (libsrt's `SRTSOCKET`).
pub type RawSocket = i32;
/// libsrt's `SRT_INVALID_SOCK` and `SRT_ERROR`.
const INVALID: i32 = -1;

/// Socket options used here (`SRT_SOCKOPT`).
#[derive(Debug, Clone, Copy)]
#[repr(i32)]
pub enum SockOpt {
    /// Blocking send (bool).
    SndSyn = 1,
    /// Blocking receive (bool).
    RcvSyn = 2,
    /// Receive buffer size in bytes (int).
    RcvBuf = 6,
    /// Latency, both directions, in ms (int).
    Latency = 23,
    /// The AES passphrase (string, 10-79 bytes).
    Passphrase = 26,
    /// Receiver latency in ms (int).
    RcvLatency = 43,
    /// The stream id the caller sent (string, up to 512 bytes).
    StreamId = 46,
    /// Transmission type: 0 live (int enum).
    TransType = 50,
    /// Reject a caller whose encryption does not match ours (bool).
    EnforcedEncryption = 53,
    /// Milliseconds of silence (no packet, keepalives included) before the connection is declared broken.
    PeerIdleTimeout = 55,
}

/// The epoll event bits (`SRT_EPOLL_OPT`).
pub const EPOLL_IN: c_int = 0x1;
/// Error (or connection broken) on the socket.
pub const EPOLL_ERR: c_int = 0x8;
/// libsrt error code of a non-blocking call that has nothing to do yet (`SRT_EASYNCRCV`).
pub const E_ASYNC_RCV: c_int = 6002;

/// `SRT_EPOLL_EVENT`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct EpollEvent {
    /// The socket.
    pub fd: RawSocket,
    /// `EPOLL_*` bits.
    pub events: c_int,
}

/// `SRT_MSGCTRL` (48 bytes, `srctime` at 16: checked against the header): what libsrt says of a message.
#[repr(C)]
struct MsgCtrl {
    flags: c_int,
    msgttl: c_int,
    inorder: c_int,
    boundary: c_int,
    /// On receipt: when the message was due for delivery (its TSBPD time: its arrival as the sender's timestamp
    /// places it, plus the latency), on libsrt's clock (µs); 0 if unknown.
    srctime: i64,
    pktseq: i32,
    msgno: i32,
    grpdata: *mut c_void,
    grpdata_size: usize,
}

/// The listen callback's signature (`srt_listen_callback_fn`).
pub type ListenCallback = unsafe extern "C" fn(
    opaque: *mut c_void,
    ns: RawSocket,
    hs_version: c_int,
    peer: *const libc::sockaddr,
    stream_id: *const c_char,
) -> c_int;

#[link(name = "libsrt-gnutls.so.1.5", kind = "dylib", modifiers = "+verbatim")]
extern "C" {
    fn srt_startup() -> c_int;
    fn srt_cleanup() -> c_int;
    fn srt_create_socket() -> RawSocket;
    fn srt_bind_acquire(u: RawSocket, udpsock: c_int) -> c_int;
    fn srt_listen(u: RawSocket, backlog: c_int) -> c_int;
    fn srt_listen_callback(lsn: RawSocket, hook: ListenCallback, opaque: *mut c_void) -> c_int;
    fn srt_accept(u: RawSocket, addr: *mut libc::sockaddr, addrlen: *mut c_int) -> RawSocket;
    fn srt_close(u: RawSocket) -> c_int;
    fn srt_getsockflag(u: RawSocket, opt: c_int, optval: *mut c_void, optlen: *mut c_int) -> c_int;
    fn srt_setsockflag(u: RawSocket, opt: c_int, optval: *const c_void, optlen: c_int) -> c_int;
    fn srt_getsockname(u: RawSocket, name: *mut libc::sockaddr, namelen: *mut c_int) -> c_int;
    fn srt_recvmsg2(u: RawSocket, buf: *mut c_char, len: c_int, mctrl: *mut MsgCtrl) -> c_int;
    fn srt_msgctrl_init(mctrl: *mut MsgCtrl);
    fn srt_time_now() -> i64;
    fn srt_getlasterror(errno_loc: *mut c_int) -> c_int;
    fn srt_getlasterror_str() -> *const c_char;
    fn srt_epoll_create() -> c_int;
    fn srt_epoll_add_usock(eid: c_int, u: RawSocket, events: *const c_int) -> c_int;
    fn srt_epoll_uwait(eid: c_int, fds: *mut EpollEvent, fds_size: c_int, timeout_ms: i64) -> c_int;
    fn srt_epoll_release(eid: c_int) -> c_int;
    fn srt_setrejectreason(u: RawSocket, value: c_int) -> c_int;
    fn srt_getrejectreason(u: RawSocket) -> c_int;
    fn srt_connect(u: RawSocket, name: *const libc::sockaddr, namelen: c_int) -> c_int;
    fn srt_sendmsg2(u: RawSocket, buf: *const c_char, len: c_int, mctrl: *mut c_void) -> c_int;
    fn srt_setloglevel(level: c_int);
    fn srt_setloghandler(opaque: *mut c_void, handler: LogHandler);
}

/// `SRT_LOG_HANDLER_FN`.
type LogHandler = unsafe extern "C" fn(
    opaque: *mut c_void,
    level: c_int,
    file: *const c_char,
    line: c_int,
    area: *const c_char,
    message: *const c_char,
);

/// libsrt's log lines (errors and worse) into our log, instead of libsrt writing to stderr itself.
unsafe extern "C" fn log_line(
    _opaque: *mut c_void,
    level: c_int,
    _file: *const c_char,
    _line: c_int,
    area: *const c_char,
    message: *const c_char,
) {
    // libsrt logs an error for some single spoofable datagrams: at most one line a second (with how many were
    // not logged), decided before any formatting, as this runs on libsrt's receiving thread.
    static LAST: std::sync::Mutex<Option<(std::time::Instant, u64)>> = std::sync::Mutex::new(None);
    let suppressed = {
        let Ok(mut last) = LAST.lock() else { return };
        let now = std::time::Instant::now();
        match &mut *last {
            Some((at, n)) if now.duration_since(*at) < std::time::Duration::from_secs(1) => {
                *n += 1;
                return;
            }
            slot => slot.replace((now, 0)).map_or(0, |(_, n)| n),
        }
    };
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: libsrt passes NUL-terminated strings (or null) valid during the call.
        let text = |p: *const c_char| {
            if p.is_null() {
                String::new()
            } else {
                unsafe { CStr::from_ptr(p) }.to_string_lossy().trim_end().to_string()
            }
        };
        let (area, message) = (text(area), text(message));
        if message.contains("srt_accept: listener socket") && message.contains("already closed") {
            // Our accept thread, woken by the listener's closing at shutdown: expected.
            tracing::debug!(target: "libsrt", area, "{message}");
        } else if level <= 2 {
            tracing::error!(target: "libsrt", area, suppressed, "{message}");
        } else {
            tracing::warn!(target: "libsrt", area, suppressed, "{message}");
        }
    });
}

/// A libsrt error: its code and message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what}: {message} (SRT error {code})")]
pub struct SrtError {
    /// The call that failed.
    pub what: &'static str,
    /// libsrt's error code (`SRT_ERRNO`).
    pub code: c_int,
    /// libsrt's message.
    pub message: String,
}

impl SrtError {
    fn last(what: &'static str) -> SrtError {
        // SAFETY: both read libsrt's thread-local last error; the string is owned by libsrt and copied at once.
        let (code, message) = unsafe {
            let code = srt_getlasterror(std::ptr::null_mut());
            let p = srt_getlasterror_str();
            let message = if p.is_null() {
                String::new()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            };
            (code, message)
        };
        SrtError { what, code, message }
    }
}

fn check(what: &'static str, r: c_int) -> Result<c_int, SrtError> {
    if r == INVALID {
        Err(SrtError::last(what))
    } else {
        Ok(r)
    }
}

/// libsrt kept started while held: `srt_startup` and `srt_cleanup` are counted, and each of our sockets and
/// epoll sets holds one, so the library is torn down (its threads joined) when the last of them goes, before the
/// process exits. Left to libsrt's own teardown at exit, its garbage-collector and queue threads would still be
/// running while its globals are destroyed (heap corruption seen in tests).
#[derive(Debug)]
struct Started(());

impl Started {
    fn new() -> Result<Started, SrtError> {
        static LOGS: std::sync::Once = std::sync::Once::new();
        // SAFETY: the handler is a plain function valid for the whole process; srt_startup counts its callers.
        unsafe {
            LOGS.call_once(|| {
                srt_setloglevel(3); // LOG_ERR
                srt_setloghandler(std::ptr::null_mut(), log_line);
            });
            check("srt_startup", srt_startup())?;
        }
        Ok(Started(()))
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        // SAFETY: balances the srt_startup of `new`; the last one tears libsrt down.
        unsafe {
            srt_cleanup();
        }
    }
}

/// An SRT socket this process owns; closed when dropped.
#[derive(Debug)]
pub struct Socket(RawSocket, Started);

impl Socket {
    /// A new socket (live mode by default).
    pub fn new() -> Result<Socket, SrtError> {
        let started = Started::new()?;
        // SAFETY: no arguments.
        let s = unsafe { srt_create_socket() };
        if s == INVALID {
            return Err(SrtError::last("srt_create_socket"));
        }
        Ok(Socket(s, started))
    }

    /// Connect to `addr` as a caller (blocking, up to the connect timeout); on refusal, the error and the reject
    /// code the listener gave (`srt_getrejectreason`: 1000 + an HTTP status when it chose one).
    pub fn connect(&self, addr: SocketAddr) -> Result<(), (SrtError, i32)> {
        let sa = socket2::SockAddr::from(addr);
        // SAFETY: `sa` is a valid sockaddr of `sa.len()` bytes for the duration of the call.
        let r = unsafe { srt_connect(self.0, sa.as_ptr().cast(), sa.len() as c_int) };
        if r == INVALID {
            let e = SrtError::last("srt_connect");
            // SAFETY: no pointers.
            let reason = unsafe { srt_getrejectreason(self.0) };
            return Err((e, reason));
        }
        Ok(())
    }

    /// Send one message (live mode: at most 1456 bytes).
    pub fn send(&self, data: &[u8]) -> Result<usize, SrtError> {
        let len = data.len().min(i32::MAX as usize) as c_int;
        // SAFETY: libsrt reads `len` bytes of `data`; no message control.
        let n = unsafe { srt_sendmsg2(self.0, data.as_ptr().cast(), len, std::ptr::null_mut()) };
        Ok(check("srt_sendmsg2", n)? as usize)
    }

    /// Take ownership of a socket id libsrt handed over (from `accept`).
    fn from_raw(s: RawSocket) -> Result<Socket, SrtError> {
        Ok(Socket(s, Started::new()?))
    }

    /// The socket id.
    pub fn raw(&self) -> RawSocket {
        self.0
    }

    /// Set an integer (or boolean) option.
    pub fn set_int(&self, opt: SockOpt, value: i32) -> Result<(), SrtError> {
        set_flag_int(self.0, opt, value)
    }

    /// Set a string option.
    pub fn set_str(&self, opt: SockOpt, value: &str) -> Result<(), SrtError> {
        set_flag_str(self.0, opt, value)
    }

    /// An integer option (the negotiated latency).
    pub fn get_int(&self, opt: SockOpt) -> Result<i32, SrtError> {
        let mut value: i32 = 0;
        let mut len = 4 as c_int;
        // SAFETY: libsrt writes at most `len` (4) bytes into `value`.
        check("srt_getsockflag", unsafe {
            srt_getsockflag(self.0, opt as c_int, (&mut value as *mut i32).cast(), &mut len)
        })?;
        Ok(value)
    }

    /// Bind to a UDP socket the caller bound: libsrt takes it over (its receiving and sending threads start
    /// here) and closes it with the last SRT socket using it.
    pub fn bind_acquire(&self, udp: std::os::fd::OwnedFd) -> Result<(), SrtError> {
        use std::os::fd::IntoRawFd;
        // SAFETY: the descriptor is a bound UDP socket whose ownership passes to libsrt. On failure it is left
        // open rather than closed: libsrt may already have attached it, and a double close is worse than one
        // descriptor held until exit.
        check("srt_bind_acquire", unsafe {
            srt_bind_acquire(self.0, udp.into_raw_fd())
        })?;
        Ok(())
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> Result<SocketAddr, SrtError> {
        // SAFETY: the storage is large enough for any address; libsrt sets the length it wrote.
        unsafe {
            let mut storage: libc::sockaddr_storage = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_storage>() as c_int;
            check(
                "srt_getsockname",
                srt_getsockname(self.0, (&mut storage as *mut libc::sockaddr_storage).cast(), &mut len),
            )?;
            socket_addr((&storage as *const libc::sockaddr_storage).cast()).ok_or(SrtError {
                what: "srt_getsockname",
                code: 0,
                message: "not an IP address".into(),
            })
        }
    }

    /// Listen, calling `hook` with `opaque` for each caller's handshake (before it is accepted).
    ///
    /// # Safety
    /// `opaque` must stay valid, and usable from libsrt's threads, for as long as the socket listens.
    pub unsafe fn listen(&self, backlog: i32, hook: ListenCallback, opaque: *mut c_void) -> Result<(), SrtError> {
        check("srt_listen_callback", srt_listen_callback(self.0, hook, opaque))?;
        check("srt_listen", srt_listen(self.0, backlog))?;
        Ok(())
    }

    /// Accept a pending caller: a blocking listener waits for one; a non-blocking one gives `Ok(None)` when none
    /// is pending.
    pub fn accept(&self) -> Result<Option<(Socket, Option<SocketAddr>)>, SrtError> {
        // SAFETY: as in `local_addr`.
        unsafe {
            let mut storage: libc::sockaddr_storage = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_storage>() as c_int;
            let s = srt_accept(self.0, (&mut storage as *mut libc::sockaddr_storage).cast(), &mut len);
            if s == INVALID {
                let e = SrtError::last("srt_accept");
                return if e.code == E_ASYNC_RCV { Ok(None) } else { Err(e) };
            }
            Ok(Some((
                Socket::from_raw(s)?,
                socket_addr((&storage as *const libc::sockaddr_storage).cast()),
            )))
        }
    }

    /// Close the socket now, from any thread (a listener: wakes a blocked `accept`, which then fails); the drop
    /// later closes nothing more.
    pub fn shut(&self) {
        // SAFETY: the id is ours; closing it twice (here, then in `drop`) only makes the second call fail.
        unsafe {
            srt_close(self.0);
        }
    }

    /// Receive one message into `buf` (non-blocking socket: `Ok(None)` when none is waiting): its length and how
    /// long after its delivery time (TSBPD: arrival plus the latency) it was read, when libsrt knows.
    pub fn recv(&self, buf: &mut [u8]) -> Result<Option<(usize, Option<std::time::Duration>)>, SrtError> {
        let len = buf.len().min(i32::MAX as usize) as c_int;
        // SAFETY: libsrt writes at most `len` bytes into `buf` and fills `ctrl`, a properly laid-out
        // SRT_MSGCTRL it initialized.
        let (n, srctime, now) = unsafe {
            let mut ctrl = std::mem::MaybeUninit::<MsgCtrl>::zeroed();
            srt_msgctrl_init(ctrl.as_mut_ptr());
            let n = srt_recvmsg2(self.0, buf.as_mut_ptr().cast(), len, ctrl.as_mut_ptr());
            (n, ctrl.assume_init().srctime, srt_time_now())
        };
        if n == INVALID {
            let e = SrtError::last("srt_recvmsg2");
            return if e.code == E_ASYNC_RCV { Ok(None) } else { Err(e) };
        }
        let late = (srctime > 0).then(|| std::time::Duration::from_micros(now.saturating_sub(srctime).max(0) as u64));
        Ok(Some((n.clamp(0, len) as usize, late)))
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // SAFETY: the id is ours; closing an id libsrt already broke is harmless.
        unsafe {
            srt_close(self.0);
        }
    }
}

fn set_flag_int(s: RawSocket, opt: SockOpt, value: i32) -> Result<(), SrtError> {
    // SAFETY: `value` lives through the call and its size is given.
    check("srt_setsockflag", unsafe {
        srt_setsockflag(s, opt as c_int, (&value as *const i32).cast(), 4)
    })?;
    Ok(())
}

fn set_flag_str(s: RawSocket, opt: SockOpt, value: &str) -> Result<(), SrtError> {
    // SAFETY: the bytes live through the call and their length is given (libsrt copies them).
    check("srt_setsockflag", unsafe {
        srt_setsockflag(s, opt as c_int, value.as_ptr().cast(), value.len() as c_int)
    })?;
    Ok(())
}

/// A socket libsrt is still handshaking, as the listen callback sees it: options may be set on it and a reject
/// reason given. Not owned (libsrt closes it if the callback rejects).
#[derive(Debug, Clone, Copy)]
pub struct Handshaking(pub RawSocket);

impl Handshaking {
    /// Set a string option (the passphrase this caller's app requires).
    pub fn set_str(self, opt: SockOpt, value: &str) -> Result<(), SrtError> {
        set_flag_str(self.0, opt, value)
    }

    /// The reject code the caller will see (`SRT_REJX_*`, 1000 + an HTTP status) when the callback refuses.
    pub fn set_reject_reason(self, code: i32) {
        // SAFETY: no pointers.
        unsafe {
            srt_setrejectreason(self.0, code);
        }
    }
}

/// An SRT epoll set.
#[derive(Debug)]
pub struct Epoll(c_int, Started);

impl Epoll {
    /// A new, empty set.
    pub fn new() -> Result<Epoll, SrtError> {
        let started = Started::new()?;
        // SAFETY: no arguments.
        let id = check("srt_epoll_create", unsafe { srt_epoll_create() })?;
        Ok(Epoll(id, started))
    }

    /// Watch `s` for `events` (`EPOLL_*`); a closed socket leaves the set by itself.
    pub fn add(&self, s: RawSocket, events: c_int) -> Result<(), SrtError> {
        // SAFETY: `events` lives through the call.
        check("srt_epoll_add_usock", unsafe {
            srt_epoll_add_usock(self.0, s, &events)
        })?;
        Ok(())
    }

    /// Wait up to `timeout_ms` for events; fills `out` and returns how many (an error waits out the timeout, so
    /// a failing set cannot spin its thread).
    pub fn wait(&self, out: &mut [EpollEvent], timeout_ms: i64) -> usize {
        let size = out.len().min(i32::MAX as usize) as c_int;
        // SAFETY: libsrt writes at most `size` events into `out`.
        let n = unsafe { srt_epoll_uwait(self.0, out.as_mut_ptr(), size, timeout_ms) };
        if n < 0 {
            std::thread::sleep(std::time::Duration::from_millis(timeout_ms.max(1) as u64));
        }
        n.clamp(0, size) as usize
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: the id is ours.
        unsafe {
            srt_epoll_release(self.0);
        }
    }
}

/// The IP address and port of a `sockaddr` libsrt gave (IPv4-mapped IPv6 addresses made IPv4).
///
/// # Safety
/// `sa` must be null or point to a valid `sockaddr_in` or `sockaddr_in6` (as its family says).
pub unsafe fn socket_addr(sa: *const libc::sockaddr) -> Option<SocketAddr> {
    if sa.is_null() {
        return None;
    }
    match (*sa).sa_family as c_int {
        libc::AF_INET => {
            let v4 = &*(sa as *const libc::sockaddr_in);
            let ip = Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
            Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be(v4.sin_port)))
        }
        libc::AF_INET6 => {
            let v6 = &*(sa as *const libc::sockaddr_in6);
            let ip = Ipv6Addr::from(v6.sin6_addr.s6_addr).to_canonical();
            Some(SocketAddr::new(ip, u16::from_be(v6.sin6_port)))
        }
        _ => None,
    }
}
