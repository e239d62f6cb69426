//! `ChunkWriter`: messages we send → RTMP chunks. We send few messages (control, command results, status), so
//! each one goes out with a full (type 0) header and type 3 continuations: no header compression state to get
//! wrong, and any message can be the last one of a connection.

/// Chunk stream for protocol control messages (set chunk size, window acknowledgement size, ...).
pub const CSID_CONTROL: u8 = 2;
/// Chunk stream for command messages and their results.
pub const CSID_COMMAND: u8 = 3;

/// Splits outgoing messages into chunks of the size we announced.
#[derive(Debug)]
pub struct ChunkWriter {
    chunk_size: usize,
}

impl Default for ChunkWriter {
    fn default() -> Self {
        ChunkWriter { chunk_size: 128 }
    }
}

impl ChunkWriter {
    /// Chunk size for the messages written after this one; the caller sends Set Chunk Size first.
    pub fn set_chunk_size(&mut self, size: u32) {
        self.chunk_size = size.clamp(1, 0x7FFF_FFFF) as usize;
    }

    /// Append `payload` as one message (timestamp 0: our messages are not media) to `out`.
    pub fn write(&self, csid: u8, type_id: u8, stream_id: u32, payload: &[u8], out: &mut Vec<u8>) {
        debug_assert!((2..64).contains(&csid));
        let len = (payload.len() as u32).min(0xFF_FFFF);
        out.push(csid);
        out.extend_from_slice(&[0, 0, 0]);
        out.extend_from_slice(&len.to_be_bytes()[1..]);
        out.push(type_id);
        out.extend_from_slice(&stream_id.to_le_bytes());
        let mut chunks = payload[..len as usize].chunks(self.chunk_size);
        if let Some(first) = chunks.next() {
            out.extend_from_slice(first);
        }
        for c in chunks {
            out.push(0xC0 | csid);
            out.extend_from_slice(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::rtmp::chunk::{ChunkLimits, ChunkReader};

    #[test]
    fn our_reader_reads_what_we_write() {
        let mut w = ChunkWriter::default();
        let mut out = Vec::new();
        let big: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        w.write(CSID_COMMAND, 20, 0, &big, &mut out);
        w.set_chunk_size(4096);
        w.write(CSID_CONTROL, 1, 0, &4096u32.to_be_bytes(), &mut out);
        w.write(CSID_COMMAND, 20, 1, &big, &mut out);
        let mut r = ChunkReader::new(ChunkLimits::default());
        r.feed(&out);
        let a = r.next_message().unwrap().unwrap();
        let b = r.next_message().unwrap().unwrap();
        let c = r.next_message().unwrap().unwrap();
        assert_eq!((a.type_id, &a.payload[..]), (20, &big[..]));
        assert_eq!((b.type_id, &b.payload[..]), (1, &4096u32.to_be_bytes()[..]));
        assert_eq!((c.stream_id, &c.payload[..]), (1, &big[..]));
    }
}
