//! A hand-built STUN Binding Request (RFC 8489 + ICE attributes), to probe which ICE credentials the gateway
//! accepts, independently of any WebRTC stack.

use hmac::{Hmac, Mac};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn attr(out: &mut Vec<u8>, typ: u16, value: &[u8]) {
    out.extend_from_slice(&typ.to_be_bytes());
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// A Binding Request with USERNAME `server_ufrag:client_ufrag`, signed with the server's password.
pub fn binding_request(server_ufrag: &str, client_ufrag: &str, server_pass: &str) -> Vec<u8> {
    let mut m = vec![0x00, 0x01, 0, 0, 0x21, 0x12, 0xA4, 0x42];
    m.extend_from_slice(&rand_tid());
    attr(&mut m, 0x0006, format!("{server_ufrag}:{client_ufrag}").as_bytes());
    attr(&mut m, 0x0024, &0x6E00_01FFu32.to_be_bytes()); // PRIORITY
    attr(&mut m, 0x802A, &0x1234_5678_9ABC_DEF0u64.to_be_bytes()); // ICE-CONTROLLING
                                                                   // MESSAGE-INTEGRITY: HMAC-SHA1 over the message with the length already counting this attribute.
    let len = (m.len() - 20 + 24) as u16;
    m[2..4].copy_from_slice(&len.to_be_bytes());
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(server_pass.as_bytes()).unwrap();
    mac.update(&m);
    let tag = mac.finalize().into_bytes();
    attr(&mut m, 0x0008, &tag);
    // FINGERPRINT
    let len = (m.len() - 20 + 8) as u16;
    m[2..4].copy_from_slice(&len.to_be_bytes());
    let fp = crc32(&m) ^ 0x5354_554E;
    attr(&mut m, 0x8028, &fp.to_be_bytes());
    m
}

fn rand_tid() -> [u8; 12] {
    let mut t = [0u8; 12];
    for (i, b) in t.iter_mut().enumerate() {
        *b = (std::process::id() as usize * 31 + i * 17) as u8;
    }
    t
}

/// Send a Binding Request from a fresh socket; true when a Binding Success Response comes back.
pub fn probe(server: SocketAddr, server_ufrag: &str, client_ufrag: &str, server_pass: &str) -> bool {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let req = binding_request(server_ufrag, client_ufrag, server_pass);
    let mut buf = [0u8; 1500];
    for _ in 0..3 {
        s.send_to(&req, server).unwrap();
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            if n >= 20 && buf[0] == 0x01 && buf[1] == 0x01 {
                return true;
            }
        }
    }
    false
}

/// The same over ICE-TCP: a fresh TCP connection, the request framed as RFC 4571 (2-byte length), one try; true
/// when a Binding Success Response comes back on it.
pub fn probe_tcp(server: SocketAddr, server_ufrag: &str, client_ufrag: &str, server_pass: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&server, Duration::from_secs(2)) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let req = binding_request(server_ufrag, client_ufrag, server_pass);
    let mut framed = (req.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&req);
    if s.write_all(&framed).is_err() {
        return false;
    }
    let mut head = [0u8; 4];
    s.read_exact(&mut head).is_ok() && head[2] == 0x01 && head[3] == 0x01
}
