//! `UdpEndpoint`: the engine's one UDP socket, aware of which local address each datagram was sent to.
//!
//! Bound to a wildcard address (0.0.0.0, the default) on a host with several addresses, a plain socket cannot
//! tell on which address a packet arrived, and the kernel picks the source of replies by route, which may not be
//! the address the client sent to, so the client's ICE check fails. On Linux this socket asks for
//! `IP_PKTINFO` / `IPV6_RECVPKTINFO` and reports each datagram's destination, and sends with the source address
//! the session uses. Elsewhere (or bound to one address) it behaves as a plain socket.

use std::io;
use std::net::{IpAddr, SocketAddr};
use tokio::net::UdpSocket;

pub struct UdpEndpoint {
    sock: UdpSocket,
    /// The socket reports destinations and can choose sources.
    pktinfo: bool,
}

impl UdpEndpoint {
    pub fn new(sock: UdpSocket) -> UdpEndpoint {
        let wildcard = sock.local_addr().map(|a| a.ip().is_unspecified()).unwrap_or(false);
        let pktinfo = wildcard && sys::enable_pktinfo(&sock).is_ok();
        UdpEndpoint { sock, pktinfo }
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
        match source {
            Some(src) if self.pktinfo && src.is_ipv4() == dest.is_ipv4() && !src.is_unspecified() => {
                self.sock.try_io(tokio::io::Interest::WRITABLE, || {
                    sys::send_from(&self.sock, data, dest, src)
                })
            }
            _ => self.sock.try_send_to(data, dest),
        }
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
        let dest = socket2::SockAddr::from(dest);
        // SAFETY: as in `recv_with_destination`; the one control message is written through CMSG_* within the
        // buffer, whose length is CMSG_SPACE of the payload.
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
            msg.msg_control = control.0.as_mut_ptr() as *mut libc::c_void;
            match source {
                IpAddr::V4(v4) => {
                    msg.msg_controllen = libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) as _;
                    let cmsg = libc::CMSG_FIRSTHDR(&msg);
                    (*cmsg).cmsg_level = libc::IPPROTO_IP;
                    (*cmsg).cmsg_type = libc::IP_PKTINFO;
                    (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as _;
                    let mut info: libc::in_pktinfo = zeroed();
                    info.ipi_spec_dst.s_addr = u32::from(v4).to_be();
                    std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut libc::in_pktinfo, info);
                }
                IpAddr::V6(v6) => {
                    msg.msg_controllen = libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as u32) as _;
                    let cmsg = libc::CMSG_FIRSTHDR(&msg);
                    (*cmsg).cmsg_level = libc::IPPROTO_IPV6;
                    (*cmsg).cmsg_type = libc::IPV6_PKTINFO;
                    (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::in6_pktinfo>() as u32) as _;
                    let mut info: libc::in6_pktinfo = zeroed();
                    info.ipi6_addr.s6_addr = v6.octets();
                    std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut libc::in6_pktinfo, info);
                }
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
