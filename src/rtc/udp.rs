//! `UdpEndpoint`: the engine's one UDP socket, aware of which local address each datagram was sent to.
//!
//! Bound to a wildcard address (0.0.0.0, the default) on a host with several addresses, a plain socket cannot
//! tell on which address a packet arrived, and the kernel picks the source of replies by route, which may not be
//! the address the client sent to, so the client's ICE check fails. On Linux this socket asks for
//! `IP_PKTINFO` / `IPV6_RECVPKTINFO` and reports each datagram's destination, and sends with the source address
//! the session uses. Elsewhere (or bound to one address) it behaves as a plain socket.
//!
//! The packets of one frame to one viewer leave in one system call where the kernel can split them (UDP GSO,
//! Linux 4.18+): `SegmentBatch` gathers them, `try_send_segments` sends them, one by one where GSO is refused.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::UdpSocket;

pub struct UdpEndpoint {
    sock: UdpSocket,
    /// The socket reports destinations and can choose sources.
    pktinfo: bool,
    /// UDP GSO works here (until the kernel refuses it once).
    gso: AtomicBool,
}

/// Datagrams to one destination gathered for one GSO send: all of the first one's size, except a shorter last
/// one, which closes the batch (the kernel cuts the buffer into segments of that size).
#[derive(Default)]
pub struct SegmentBatch {
    to: Option<(SocketAddr, Option<IpAddr>)>,
    size: usize,
    count: usize,
    closed: bool,
    buf: Vec<u8>,
}

/// The kernel's limits for one GSO send.
const MAX_SEGMENTS: usize = 64;
/// Datagrams above this size go alone, sent plainly. The kernel refuses a GSO send whose segments do not fit the
/// route's path MTU (EINVAL), which would turn GSO off for every viewer; video is cut well below this, and only an
/// Opus packet near the largest (`rtp::OPUS_PACKET_MAX`, a datagram of ~1 330 bytes) is above it. 1 232 is the IPv6
/// minimum MTU less the IPv6 and UDP headers.
const SEGMENT_MAX: usize = 1232;
const MAX_BATCH_BYTES: usize = 65_000;

impl SegmentBatch {
    /// Add a datagram if it can join (same destination and source, fits the segment size and the limits);
    /// false if the batch must be sent first.
    pub fn push(&mut self, data: &[u8], dest: SocketAddr, source: Option<IpAddr>) -> bool {
        match self.to {
            None => {
                self.to = Some((dest, source));
                self.size = data.len();
                self.closed = data.len() > SEGMENT_MAX;
            }
            Some(to) => {
                let fits = to == (dest, source)
                    && !self.closed
                    && data.len() <= self.size
                    && self.count < MAX_SEGMENTS
                    && self.buf.len() + data.len() <= MAX_BATCH_BYTES;
                if !fits {
                    return false;
                }
                self.closed = data.len() < self.size;
            }
        }
        self.buf.extend_from_slice(data);
        self.count += 1;
        true
    }

    /// Send what is gathered (one datagram plainly, several with GSO) and start empty; the number of datagrams
    /// that could not be sent.
    pub fn flush(&mut self, udp: &UdpEndpoint) -> usize {
        let Some((dest, source)) = self.to.take() else { return 0 };
        let lost = if self.count == 1 {
            usize::from(udp.try_send(&self.buf, dest, source).is_err())
        } else {
            udp.try_send_segments(&self.buf, self.size, dest, source)
        };
        self.buf.clear();
        (self.count, self.closed) = (0, false);
        lost
    }
}

impl UdpEndpoint {
    pub fn new(sock: UdpSocket) -> UdpEndpoint {
        let wildcard = sock.local_addr().map(|a| a.ip().is_unspecified()).unwrap_or(false);
        let pktinfo = wildcard && sys::enable_pktinfo(&sock).is_ok();
        UdpEndpoint {
            sock,
            pktinfo,
            gso: AtomicBool::new(cfg!(target_os = "linux")),
        }
    }

    /// Send `data` as datagrams of `size` bytes (the last may be shorter) to `dest`: in one system call with UDP
    /// GSO, else one by one. Returns how many datagrams were not sent (a full socket buffer drops them).
    pub fn try_send_segments(&self, data: &[u8], size: usize, dest: SocketAddr, source: Option<IpAddr>) -> usize {
        let source = self.usable_source(source, dest);
        let segments = data.len().div_ceil(size.max(1));
        if self.gso.load(Ordering::Relaxed) && size > 0 && size <= u16::MAX as usize {
            let sent = self.sock.try_io(tokio::io::Interest::WRITABLE, || {
                sys::send_msg(&self.sock, data, dest, source, Some(size as u16))
            });
            match sent {
                Ok(_) => return 0,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return segments,
                Err(e) => {
                    // EIO (no checksum offload on the route's device), EINVAL/ENOPROTOOPT (an old kernel): plain
                    // sends from now on.
                    tracing::info!(error = %e, "UDP GSO refused by the kernel; sending datagrams one by one");
                    self.gso.store(false, Ordering::Relaxed);
                }
            }
        }
        data.chunks(size.max(1))
            .filter(|d| self.try_send(d, dest, source).is_err())
            .count()
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// Receive one datagram: (length, sender, the local address it was sent to when known).
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
        if !self.pktinfo {
            let (n, from) = self.sock.recv_from(buf).await?;
            return Ok((n, from, None));
        }
        loop {
            self.sock.readable().await?;
            match self.sock.try_io(tokio::io::Interest::READABLE, || {
                sys::recv_with_destination(&self.sock, buf)
            }) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }

    /// Send without waiting; `source` is the local address to send from (used when the socket is a wildcard).
    pub fn try_send(&self, data: &[u8], dest: SocketAddr, source: Option<IpAddr>) -> io::Result<usize> {
        match self.usable_source(source, dest) {
            Some(src) => self.sock.try_io(tokio::io::Interest::WRITABLE, || {
                sys::send_from(&self.sock, data, dest, src)
            }),
            None => self.sock.try_send_to(data, dest),
        }
    }

    /// `source` if this socket can send from it to `dest` (a wildcard socket with pktinfo, same family).
    fn usable_source(&self, source: Option<IpAddr>, dest: SocketAddr) -> Option<IpAddr> {
        source.filter(|s| self.pktinfo && s.is_ipv4() == dest.is_ipv4() && !s.is_unspecified())
    }
}

#[cfg(target_os = "linux")]
mod sys {
    use std::io;
    use std::mem::{size_of, zeroed};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    use std::os::fd::AsRawFd;
    use tokio::net::UdpSocket;

    fn check(r: libc::c_int) -> io::Result<()> {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    pub fn enable_pktinfo(sock: &UdpSocket) -> io::Result<()> {
        let on: libc::c_int = 1;
        let (level, name) = if sock.local_addr()?.is_ipv4() {
            (libc::IPPROTO_IP, libc::IP_PKTINFO)
        } else {
            (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)
        };
        // SAFETY: a valid fd and a c_int option value of the right size.
        check(unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                level,
                name,
                &on as *const libc::c_int as *const libc::c_void,
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        })
    }

    /// Room for one pktinfo control message of either family, aligned for cmsghdr.
    #[repr(C, align(8))]
    struct Control([u8; 64]);

    pub fn recv_with_destination(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
        // SAFETY: every pointer in `msg` points at a live local of the size given next to it; the kernel writes
        // at most those sizes; control messages are read only through the CMSG_* accessors within msg_controllen.
        unsafe {
            let mut from: libc::sockaddr_storage = zeroed();
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr() as *mut libc::c_void,
                iov_len: buf.len(),
            };
            let mut control = Control([0; 64]);
            let mut msg: libc::msghdr = zeroed();
            msg.msg_name = &mut from as *mut _ as *mut libc::c_void;
            msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.0.as_mut_ptr() as *mut libc::c_void;
            msg.msg_controllen = control.0.len() as _;
            let n = libc::recvmsg(sock.as_raw_fd(), &mut msg, 0);
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let source = match from.ss_family as libc::c_int {
                libc::AF_INET => {
                    let a = std::ptr::read_unaligned(&from as *const _ as *const libc::sockaddr_in);
                    SocketAddr::new(
                        IpAddr::V4(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr))),
                        u16::from_be(a.sin_port),
                    )
                }
                libc::AF_INET6 => {
                    let a = std::ptr::read_unaligned(&from as *const _ as *const libc::sockaddr_in6);
                    SocketAddr::V6(std::net::SocketAddrV6::new(
                        Ipv6Addr::from(a.sin6_addr.s6_addr),
                        u16::from_be(a.sin6_port),
                        a.sin6_flowinfo,
                        a.sin6_scope_id,
                    ))
                }
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "datagram without an IP sender",
                    ))
                }
            };
            let mut destination = None;
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                let (level, kind) = ((*cmsg).cmsg_level, (*cmsg).cmsg_type);
                if level == libc::IPPROTO_IP && kind == libc::IP_PKTINFO {
                    let info = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::in_pktinfo);
                    destination = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr))));
                } else if level == libc::IPPROTO_IPV6 && kind == libc::IPV6_PKTINFO {
                    let info = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::in6_pktinfo);
                    destination = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
            Ok((n as usize, source, destination))
        }
    }

    pub fn send_from(sock: &UdpSocket, data: &[u8], dest: SocketAddr, source: IpAddr) -> io::Result<usize> {
        send_msg(sock, data, dest, Some(source), None)
    }

    /// `UDP_SEGMENT` from linux/udp.h (the libc crate has it for some targets only).
    const UDP_SEGMENT: libc::c_int = 103;

    /// sendmsg with the source address (IP_PKTINFO) and/or the GSO segment size (UDP_SEGMENT) as control messages.
    pub fn send_msg(
        sock: &UdpSocket,
        data: &[u8],
        dest: SocketAddr,
        source: Option<IpAddr>,
        segment: Option<u16>,
    ) -> io::Result<usize> {
        let dest = socket2::SockAddr::from(dest);
        // SAFETY: as in `recv_with_destination`; each control message is written through CMSG_FIRSTHDR/NXTHDR
        // within the 64-byte buffer (pktinfo at most CMSG_SPACE(20) = 40 bytes, the segment size 16 more), and
        // msg_controllen is the sum of their CMSG_SPACEs.
        unsafe {
            let mut iov = libc::iovec {
                iov_base: data.as_ptr() as *mut libc::c_void,
                iov_len: data.len(),
            };
            let mut control = Control([0; 64]);
            let mut msg: libc::msghdr = zeroed();
            msg.msg_name = dest.as_ptr() as *mut libc::c_void;
            msg.msg_namelen = dest.len();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            let pktinfo_space = match source {
                Some(IpAddr::V4(_)) => libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32),
                Some(IpAddr::V6(_)) => libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as u32),
                None => 0,
            };
            let segment_space = segment.map_or(0, |_| libc::CMSG_SPACE(size_of::<u16>() as u32));
            if pktinfo_space + segment_space > 0 {
                msg.msg_control = control.0.as_mut_ptr() as *mut libc::c_void;
                msg.msg_controllen = (pktinfo_space + segment_space) as _;
            }
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            match source {
                Some(IpAddr::V4(v4)) => {
                    (*cmsg).cmsg_level = libc::IPPROTO_IP;
                    (*cmsg).cmsg_type = libc::IP_PKTINFO;
                    (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as _;
                    let mut info: libc::in_pktinfo = zeroed();
                    info.ipi_spec_dst.s_addr = u32::from(v4).to_be();
                    std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut libc::in_pktinfo, info);
                    cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
                }
                Some(IpAddr::V6(v6)) => {
                    (*cmsg).cmsg_level = libc::IPPROTO_IPV6;
                    (*cmsg).cmsg_type = libc::IPV6_PKTINFO;
                    (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::in6_pktinfo>() as u32) as _;
                    let mut info: libc::in6_pktinfo = zeroed();
                    info.ipi6_addr.s6_addr = v6.octets();
                    std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut libc::in6_pktinfo, info);
                    cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
                }
                None => {}
            }
            if let Some(size) = segment {
                (*cmsg).cmsg_level = libc::SOL_UDP;
                (*cmsg).cmsg_type = UDP_SEGMENT;
                (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut u16, size);
            }
            let n = libc::sendmsg(sock.as_raw_fd(), &msg, 0);
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(n as usize)
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use std::io;
    use std::net::{IpAddr, SocketAddr};
    use tokio::net::UdpSocket;

    pub fn enable_pktinfo(_: &UdpSocket) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "IP_PKTINFO is used on Linux only",
        ))
    }
    pub fn recv_with_destination(_: &UdpSocket, _: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "not used"))
    }
    pub fn send_from(_: &UdpSocket, _: &[u8], _: SocketAddr, _: IpAddr) -> io::Result<usize> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "not used"))
    }
    pub fn send_msg(_: &UdpSocket, _: &[u8], _: SocketAddr, _: Option<IpAddr>, _: Option<u16>) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "UDP GSO is used on Linux only",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_batch_takes_equal_datagrams_to_one_place_and_ends_at_a_shorter_one() {
        let mut b = SegmentBatch::default();
        assert!(b.push(&[1; 1200], at(1), None));
        assert!(b.push(&[2; 1200], at(1), None));
        assert!(!b.push(&[3; 1200], at(2), None), "another destination");
        assert!(
            !b.push(&[3; 1200], at(1), Some(IpAddr::from([10, 0, 0, 1]))),
            "another source"
        );
        assert!(!b.push(&[3; 1300], at(1), None), "larger than the segment size");
        assert!(b.push(&[3; 500], at(1), None), "a shorter last one");
        assert!(!b.push(&[4; 500], at(1), None), "nothing after the shorter one");
        assert_eq!((b.count, b.size, b.buf.len()), (3, 1200, 2900));
    }

    #[test]
    fn a_batch_stays_within_the_kernel_limits() {
        let mut b = SegmentBatch::default();
        let mut n = 0;
        while b.push(&[0; 100], at(1), None) {
            n += 1;
        }
        assert_eq!(n, MAX_SEGMENTS);
        let mut b = SegmentBatch::default();
        let mut bytes = 0;
        while b.push(&[0; 1200], at(1), None) {
            bytes += 1200;
        }
        assert!(bytes <= MAX_BATCH_BYTES && bytes + 1200 > MAX_BATCH_BYTES);
    }

    #[test]
    fn a_datagram_above_the_segment_limit_goes_alone() {
        let mut b = SegmentBatch::default();
        assert!(b.push(&[0; SEGMENT_MAX + 1], at(1), None));
        assert!(!b.push(&[0; 100], at(1), None), "nothing joins it");
        assert_eq!(b.count, 1);
        let mut b = SegmentBatch::default();
        assert!(b.push(&[0; 1200], at(1), None));
        assert!(
            !b.push(&[0; SEGMENT_MAX + 1], at(1), None),
            "it does not join a batch either"
        );
    }

    /// One GSO send arrives as the separate datagrams it was gathered from, in order, wildcard-bound or not.
    #[tokio::test]
    async fn a_flushed_batch_arrives_as_its_datagrams() {
        for bind in ["127.0.0.1:0", "0.0.0.0:0"] {
            let server = UdpEndpoint::new(UdpSocket::bind(bind).await.unwrap());
            let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let dest = client.local_addr().unwrap();
            let mut b = SegmentBatch::default();
            let source = Some(IpAddr::from([127, 0, 0, 1]));
            for (i, len) in [1200usize, 1200, 1200, 700].into_iter().enumerate() {
                assert!(b.push(&vec![i as u8; len], dest, source));
            }
            server.sock.writable().await.unwrap(); // a new socket's readiness is learned, as the engine's is
            assert_eq!(b.flush(&server), 0, "nothing lost");
            if cfg!(target_os = "linux") {
                assert!(
                    server.gso.load(Ordering::Relaxed),
                    "the kernel took the batch as one GSO send"
                );
            }
            let mut buf = [0u8; 2048];
            for (i, len) in [1200usize, 1200, 1200, 700].into_iter().enumerate() {
                let (n, _) = tokio::time::timeout(std::time::Duration::from_secs(2), client.recv_from(&mut buf))
                    .await
                    .expect("a datagram")
                    .unwrap();
                assert_eq!(n, len, "datagram {i} ({bind})");
                assert!(buf[..n].iter().all(|&x| x == i as u8), "datagram {i} in order ({bind})");
            }
            assert!(b.push(&[9; 10], dest, None), "a flushed batch starts empty");
        }
    }

    /// A wildcard-bound endpoint learns the address a datagram was sent to, and replies from it.
    #[tokio::test]
    async fn destinations_are_reported_and_replies_come_from_them() {
        let server = UdpEndpoint::new(UdpSocket::bind("0.0.0.0:0").await.unwrap());
        let port = server.local_addr().unwrap().port();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(b"ping", ("127.0.0.1", port)).await.unwrap();
        let mut buf = [0u8; 64];
        let (n, from, to) = server.recv(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"ping");
        assert_eq!(from, client.local_addr().unwrap());
        if cfg!(target_os = "linux") {
            assert_eq!(to, Some(IpAddr::from([127, 0, 0, 1])));
        }
        server
            .try_send(b"pong", from, Some(IpAddr::from([127, 0, 0, 1])))
            .unwrap();
        let (n, reply_from) = client.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"pong");
        assert_eq!(reply_from, SocketAddr::from(([127, 0, 0, 1], port)));

        // The multi-homed case: a client on loopback talks to this host's other address. The kernel would answer
        // from 127.0.0.1 (its route to the client); the endpoint answers from the address the client used.
        let other = if_addrs::get_if_addrs()
            .unwrap_or_default()
            .into_iter()
            .map(|i| i.ip())
            .find(|ip| ip.is_ipv4() && !ip.is_loopback());
        if let (Some(other), true) = (other, cfg!(target_os = "linux")) {
            client.send_to(b"ping2", (other, port)).await.unwrap();
            let (_, from, to) = server.recv(&mut buf).await.unwrap();
            assert_eq!(to, Some(other));
            server.try_send(b"pong2", from, to).unwrap();
            let (_, reply_from) = client.recv_from(&mut buf).await.unwrap();
            assert_eq!(
                reply_from,
                SocketAddr::new(other, port),
                "the reply comes from the address the client used"
            );
        }
    }
}
