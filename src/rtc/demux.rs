//! Pure helpers for sharing one UDP port (and one TCP port) among many sessions: the local ICE ufrag of a STUN
//! request (how a new peer says which session it wants) and RFC 4571 framing for ICE-TCP.

use bytes::{Buf, BytesMut};

const STUN_MAGIC: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const ATTR_USERNAME: u16 = 0x0006;

/// The local (our) ufrag in a STUN message's USERNAME (`"<local>:<remote>"`), if this is such a message.
pub fn stun_local_ufrag(packet: &[u8]) -> Option<&str> {
    if packet.len() < 20 || packet[0] & 0xC0 != 0 || packet[4..8] != STUN_MAGIC {
        return None;
    }
    let len = u16::from_be_bytes([packet[2], packet[3]]) as usize;
    let attrs = packet.get(20..20 + len)?;
    let mut pos = 0;
    while pos + 4 <= attrs.len() {
        let typ = u16::from_be_bytes([attrs[pos], attrs[pos + 1]]);
        let alen = u16::from_be_bytes([attrs[pos + 2], attrs[pos + 3]]) as usize;
        let value = attrs.get(pos + 4..pos + 4 + alen)?;
        if typ == ATTR_USERNAME {
            let name = std::str::from_utf8(value).ok()?;
            return name.split(':').next();
        }
        pos += 4 + alen.div_ceil(4) * 4;
    }
    None
}

/// Largest RFC 4571 frame (a 16-bit length).
pub const MAX_FRAME: usize = u16::MAX as usize;

/// Reassembles RFC 4571 frames (2-byte big-endian length + packet) from a TCP byte stream.
#[derive(Default)]
pub struct FrameReader {
    buf: BytesMut,
}

impl FrameReader {
    /// Append bytes read from the TCP stream, which may split or join frames anywhere.
    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole packet, if one has arrived.
    pub fn next_packet(&mut self) -> Option<BytesMut> {
        if self.buf.len() < 2 {
            return None;
        }
        let len = u16::from_be_bytes([self.buf[0], self.buf[1]]) as usize;
        if self.buf.len() < 2 + len {
            return None;
        }
        self.buf.advance(2);
        Some(self.buf.split_to(len))
    }
}

/// Frame one packet for ICE-TCP. Packets over 64 KiB cannot be framed (they never occur: MTU-sized).
pub fn frame(packet: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(packet.len()).ok()?;
    let mut v = Vec::with_capacity(2 + packet.len());
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(packet);
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding_request(username: &str) -> Vec<u8> {
        let mut attrs = vec![];
        // A SOFTWARE attribute first, with padding, to exercise the walk.
        attrs.extend_from_slice(&0x8022u16.to_be_bytes());
        attrs.extend_from_slice(&3u16.to_be_bytes());
        attrs.extend_from_slice(b"abc\0");
        attrs.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username.as_bytes());
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        let mut p = vec![0x00, 0x01];
        p.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        p.extend_from_slice(&STUN_MAGIC);
        p.extend_from_slice(&[7; 12]);
        p.extend_from_slice(&attrs);
        p
    }

    #[test]
    fn ufrag_from_binding_request() {
        assert_eq!(
            stun_local_ufrag(&binding_request("srvfrag:clientfrag")),
            Some("srvfrag")
        );
        assert_eq!(stun_local_ufrag(&[0x80, 0, 0, 0]), None, "RTP is not STUN");
        let mut truncated = binding_request("a:b");
        truncated.truncate(26);
        assert_eq!(stun_local_ufrag(&truncated), None);
        assert_eq!(stun_local_ufrag(&[0u8; 3]), None);
    }

    #[test]
    fn framing_round_trip_in_pieces() {
        let mut r = FrameReader::default();
        let mut stream = frame(b"hello").unwrap();
        stream.extend(frame(b"").unwrap());
        stream.extend(frame(&[9u8; 300]).unwrap());
        let mut got = vec![];
        for b in stream.chunks(7) {
            r.feed(b);
            while let Some(p) = r.next_packet() {
                got.push(p.to_vec());
            }
        }
        assert_eq!(got, vec![b"hello".to_vec(), vec![], vec![9u8; 300]]);
        assert!(frame(&vec![0u8; 70_000]).is_none());
    }
}
