//! `ChunkReader`: RTMP chunk stream → whole messages, as a pure state machine fed bytes.
//!
//! Why our own: rml_rtmp's deserializer keeps one payload buffer for all chunk streams (interleaved chunk
//! streams corrupt messages) and can underflow on hostile headers. This reader keeps per-chunk-stream state,
//! bounds every size (message length, chunk size, number of chunk streams, bytes buffered) and turns every
//! inconsistency into an error that ends the connection.

use bytes::{Buf, Bytes, BytesMut};
use std::collections::HashMap;

/// Limits that bound the memory one connection can make us hold.
#[derive(Debug, Clone, Copy)]
pub struct ChunkLimits {
    /// Largest audio or video message, once media is allowed (`ChunkReader::allow_media`).
    pub max_message_size: u32,
    /// Largest message of any other type (commands, data, user control), and of every message before media
    /// is allowed: what an unauthenticated peer can make us buffer per message.
    pub max_control_size: u32,
    /// Largest chunk size a client may set (`rtmp.max_chunk_size`).
    pub max_chunk_size: u32,
    /// Chunk stream ids one connection may use.
    pub max_chunk_streams: usize,
    /// Bytes of unfinished messages held at once, over all chunk streams.
    pub max_buffered: usize,
}

impl Default for ChunkLimits {
    fn default() -> Self {
        ChunkLimits {
            max_message_size: 8 * 1024 * 1024,
            max_control_size: 64 * 1024,
            max_chunk_size: 1 << 20,
            max_chunk_streams: 8,
            max_buffered: 16 * 1024 * 1024,
        }
    }
}

/// Why a chunk stream cannot be read; every one ends the connection.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChunkError {
    /// A message header announces `size` bytes, over the `limit` for its type at this point.
    #[error("message of {size} bytes exceeds the limit of {limit}")]
    MessageTooLarge {
        /// Message length from the header, bytes.
        size: u32,
        /// `max_message_size` for audio/video once publishing, else the smaller `max_control_size`.
        limit: u32,
    },
    /// Set Chunk Size asks for the first value, outside 1 to the second (`max_chunk_size`).
    #[error("chunk size {0} is outside 1..={1}")]
    BadChunkSize(u32, u32),
    /// A type 1-3 chunk header on a chunk stream (the id) that has no message header yet.
    #[error("chunk stream {0} continues a message it never started")]
    NoPreviousHeader(u32),
    /// A type 0-2 header on a chunk stream (the id) whose message is still incomplete.
    #[error("chunk stream {0} starts a new message before finishing the last one")]
    InterruptedMessage(u32),
    /// A new chunk stream beyond `max_chunk_streams` (the limit).
    #[error("more than {0} chunk streams in use")]
    TooManyChunkStreams(usize),
    /// Set Chunk Size with a payload shorter than 4 bytes.
    #[error("set chunk size message is malformed")]
    BadSetChunkSize,
    /// Unfinished messages would hold more than `max_buffered` bytes (the limit).
    #[error("unfinished messages hold more than {0} bytes")]
    OverBudget(usize),
}

/// One complete RTMP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtmpMessage {
    /// Chunk stream id it arrived on.
    pub csid: u32,
    /// Absolute timestamp in ms (deltas summed, wrapping at 2^32).
    pub timestamp: u32,
    /// Message type id (`MSG_*`; 20 is an AMF0 command, 18 AMF0 data).
    pub type_id: u8,
    /// Message stream id (0: the connection's control stream).
    pub stream_id: u32,
    /// The whole message body.
    pub payload: Bytes,
}

/// Message type 1: the sender's new chunk size.
pub const MSG_SET_CHUNK_SIZE: u8 = 1;
/// Message type 2: drop the partial message of a chunk stream.
pub const MSG_ABORT: u8 = 2;
/// Message type 8: one FLV audio tag body.
pub const MSG_AUDIO: u8 = 8;
/// Message type 9: one FLV video tag body.
pub const MSG_VIDEO: u8 = 9;

#[derive(Debug, Default)]
struct StreamState {
    started: bool,
    timestamp: u32,
    delta: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
    extended: bool,
    /// Payload of the message in progress; `None` between messages.
    partial: Option<BytesMut>,
}

/// Reassembles messages from chunks.
pub struct ChunkReader {
    limits: ChunkLimits,
    chunk_size: u32,
    buf: BytesMut,
    streams: HashMap<u32, StreamState>,
    /// Whether audio/video messages may be `max_message_size` (after publish was accepted).
    media_allowed: bool,
    /// Bytes in every stream's `partial` buffer.
    buffered: usize,
}

impl ChunkReader {
    /// A reader at RTMP's initial chunk size (128); media messages stay under `max_control_size` until allowed.
    pub fn new(limits: ChunkLimits) -> Self {
        ChunkReader {
            limits,
            chunk_size: 128,
            buf: BytesMut::new(),
            streams: HashMap::new(),
            media_allowed: false,
            buffered: 0,
        }
    }

    /// Let audio and video messages grow to `max_message_size` (called once a publish is accepted), or not.
    pub fn allow_media(&mut self, allowed: bool) {
        self.media_allowed = allowed;
    }

    /// Bytes received and not yet read as chunks.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The largest message of `type_id` accepted now.
    fn size_limit(&self, type_id: u8) -> u32 {
        if self.media_allowed && matches!(type_id, MSG_AUDIO | MSG_VIDEO) {
            self.limits.max_message_size
        } else {
            self.limits.max_control_size.min(self.limits.max_message_size)
        }
    }

    /// Append received bytes.
    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete message, `None` when more bytes are needed. Set Chunk Size and Abort are applied
    /// here and still returned, so the caller can see them.
    pub fn next_message(&mut self) -> Result<Option<RtmpMessage>, ChunkError> {
        loop {
            match self.next_chunk()? {
                None => return Ok(None),
                Some(Some(msg)) => {
                    match msg.type_id {
                        MSG_SET_CHUNK_SIZE => {
                            if msg.payload.len() < 4 {
                                return Err(ChunkError::BadSetChunkSize);
                            }
                            let size = u32::from_be_bytes(msg.payload[..4].try_into().expect("4 bytes")) & 0x7FFF_FFFF;
                            if size == 0 || size > self.limits.max_chunk_size {
                                return Err(ChunkError::BadChunkSize(size, self.limits.max_chunk_size));
                            }
                            self.chunk_size = size;
                        }
                        MSG_ABORT if msg.payload.len() >= 4 => {
                            let csid = u32::from_be_bytes(msg.payload[..4].try_into().expect("4 bytes"));
                            if let Some(p) = self.streams.get_mut(&csid).and_then(|s| s.partial.take()) {
                                self.buffered -= p.len();
                            }
                        }
                        _ => {}
                    }
                    return Ok(Some(msg));
                }
                Some(None) => continue,
            }
        }
    }

    /// Parse one chunk if it is all here. `Some(Some(msg))` when it completed a message.
    fn next_chunk(&mut self) -> Result<Option<Option<RtmpMessage>>, ChunkError> {
        let b = &self.buf[..];
        let Some(&b0) = b.first() else {
            return Ok(None);
        };
        let fmt = b0 >> 6;
        let (csid, mut pos) = match b0 & 0x3F {
            0 => match b.get(1) {
                Some(&x) => (64 + x as u32, 2),
                None => return Ok(None),
            },
            1 => match b.get(1..3) {
                Some(x) => (64 + x[0] as u32 + 256 * x[1] as u32, 3),
                None => return Ok(None),
            },
            n => (n as u32, 1),
        };
        let header_len = [11, 7, 3, 0][fmt as usize];
        if b.len() < pos + header_len {
            return Ok(None);
        }
        if !self.streams.contains_key(&csid) && self.streams.len() >= self.limits.max_chunk_streams {
            return Err(ChunkError::TooManyChunkStreams(self.limits.max_chunk_streams));
        }
        let prev = self.streams.get(&csid);
        if fmt != 0 && !prev.is_some_and(|p| p.started) {
            return Err(ChunkError::NoPreviousHeader(csid));
        }
        let in_progress = prev.is_some_and(|p| p.partial.is_some());
        if fmt != 3 && in_progress {
            return Err(ChunkError::InterruptedMessage(csid));
        }
        let u24 = |s: &[u8]| (s[0] as u32) << 16 | (s[1] as u32) << 8 | s[2] as u32;
        let h = &b[pos..pos + header_len];
        let (mut ts_field, mut length, mut type_id, mut stream_id) = match prev {
            Some(p) => (p.delta, p.length, p.type_id, p.stream_id),
            None => (0, 0, 0, 0),
        };
        if fmt <= 2 {
            ts_field = u24(&h[0..3]);
        }
        if fmt <= 1 {
            length = u24(&h[3..6]);
            type_id = h[6];
        }
        if fmt == 0 {
            stream_id = u32::from_le_bytes(h[7..11].try_into().expect("4 bytes"));
        }
        pos += header_len;
        let extended = if fmt == 3 {
            prev.is_some_and(|p| p.extended)
        } else {
            ts_field == 0xFF_FFFF
        };
        if extended {
            if b.len() < pos + 4 {
                return Ok(None);
            }
            let ext = u32::from_be_bytes(b[pos..pos + 4].try_into().expect("4 bytes"));
            if fmt != 3 || !in_progress {
                ts_field = ext;
                pos += 4;
            } else if ext == prev.map_or(0, |p| p.delta) {
                // Continuation chunks repeat the extended timestamp in most encoders (ffmpeg, OBS); some omit
                // it. Consume it only when it is there.
                pos += 4;
            }
        }
        let limit = self.size_limit(type_id);
        if length > limit {
            return Err(ChunkError::MessageTooLarge { size: length, limit });
        }
        let already = prev.and_then(|p| p.partial.as_ref()).map_or(0, |p| p.len() as u32);
        let take = (length - already).min(self.chunk_size) as usize;
        if b.len() < pos + take {
            return Ok(None);
        }
        let completes = already as usize + take == length as usize;
        if !completes && self.buffered + take > self.limits.max_buffered {
            return Err(ChunkError::OverBudget(self.limits.max_buffered));
        }
        // The whole chunk is here: commit.
        self.buf.advance(pos);
        let data = self.buf.split_to(take);
        let st = self.streams.entry(csid).or_default();
        if !in_progress {
            st.timestamp = match fmt {
                0 => ts_field,
                _ => st.timestamp.wrapping_add(ts_field),
            };
            st.delta = ts_field;
            st.length = length;
            st.type_id = type_id;
            st.stream_id = stream_id;
            st.extended = extended;
            st.started = true;
            // Grown as chunks arrive: a header announcing 8 MiB costs nothing until the bytes come.
            st.partial = Some(BytesMut::new());
        }
        let partial = st.partial.as_mut().expect("message in progress");
        if partial.is_empty() && completes {
            // A single-chunk message (at most one chunk long): copied out, so a few-byte audio frame kept in a
            // queue does not pin the whole receive buffer it arrived in.
            st.partial = None;
            return Ok(Some(Some(RtmpMessage {
                csid,
                timestamp: st.timestamp,
                type_id: st.type_id,
                stream_id: st.stream_id,
                payload: Bytes::copy_from_slice(&data),
            })));
        }
        partial.extend_from_slice(&data);
        self.buffered += take;
        if partial.len() as u32 == st.length {
            self.buffered -= partial.len();
            let payload = st.partial.take().expect("message in progress").freeze();
            return Ok(Some(Some(RtmpMessage {
                csid,
                timestamp: st.timestamp,
                type_id: st.type_id,
                stream_id: st.stream_id,
                payload,
            })));
        }
        Ok(Some(None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk0(csid: u8, ts: u32, type_id: u8, sid: u32, total: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![csid];
        v.extend_from_slice(&ts.to_be_bytes()[1..]);
        v.extend_from_slice(&total.to_be_bytes()[1..]);
        v.push(type_id);
        v.extend_from_slice(&sid.to_le_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn whole_and_split_messages() {
        let mut r = ChunkReader::new(ChunkLimits::default());
        let payload: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let mut bytes = chunk0(6, 1000, MSG_VIDEO, 1, 300, &payload[..128]);
        bytes.push(0xC6);
        bytes.extend_from_slice(&payload[128..256]);
        bytes.push(0xC6);
        bytes.extend_from_slice(&payload[256..]);
        // Fed one byte at a time: the reader never needs more than what it has.
        let mut out = vec![];
        for b in &bytes {
            r.feed(std::slice::from_ref(b));
            while let Some(m) = r.next_message().unwrap() {
                out.push(m);
            }
        }
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].timestamp, 1000);
        assert_eq!(&out[0].payload[..], &payload[..]);
    }

    #[test]
    fn interleaved_chunk_streams_keep_their_own_payloads() {
        let mut r = ChunkReader::new(ChunkLimits::default());
        let a = [0xAA; 200];
        let v = [0xBB; 200];
        let mut bytes = chunk0(4, 0, MSG_AUDIO, 1, 200, &a[..128]);
        bytes.extend(chunk0(6, 0, MSG_VIDEO, 1, 200, &v[..128]));
        bytes.push(0xC4);
        bytes.extend_from_slice(&a[128..]);
        bytes.push(0xC6);
        bytes.extend_from_slice(&v[128..]);
        r.feed(&bytes);
        let m1 = r.next_message().unwrap().unwrap();
        let m2 = r.next_message().unwrap().unwrap();
        assert_eq!((m1.type_id, &m1.payload[..]), (MSG_AUDIO, &a[..]));
        assert_eq!((m2.type_id, &m2.payload[..]), (MSG_VIDEO, &v[..]));
    }

    #[test]
    fn deltas_chunk_size_and_extended_timestamps() {
        let mut r = ChunkReader::new(ChunkLimits::default());
        let mut bytes = chunk0(2, 0, MSG_SET_CHUNK_SIZE, 0, 4, &4096u32.to_be_bytes());
        bytes.extend(chunk0(6, 0xFF_FFFF, MSG_VIDEO, 1, 2, &[]));
        bytes.extend_from_slice(&0x0100_0000u32.to_be_bytes());
        bytes.extend_from_slice(&[1, 2]);
        // fmt 2: timestamp delta 33, same length and type.
        bytes.extend_from_slice(&[0x86, 0, 0, 33, 3, 4]);
        // fmt 3: a new message with the same delta.
        bytes.extend_from_slice(&[0xC6, 5, 6]);
        r.feed(&bytes);
        assert_eq!(r.next_message().unwrap().unwrap().type_id, MSG_SET_CHUNK_SIZE);
        assert_eq!(r.chunk_size, 4096);
        let ts: Vec<u32> = std::iter::from_fn(|| r.next_message().unwrap())
            .map(|m| m.timestamp)
            .collect();
        assert_eq!(ts, vec![0x0100_0000, 0x0100_0000 + 33, 0x0100_0000 + 66]);
    }

    #[test]
    fn hostile_input_is_an_error() {
        let mut r = ChunkReader::new(ChunkLimits::default());
        r.feed(&[0xC5, 1, 2, 3]);
        assert_eq!(r.next_message(), Err(ChunkError::NoPreviousHeader(5)));

        let mut r = ChunkReader::new(ChunkLimits {
            max_message_size: 1000,
            ..Default::default()
        });
        r.feed(&chunk0(6, 0, MSG_VIDEO, 1, 0xFF_FFFF, &[]));
        assert!(matches!(r.next_message(), Err(ChunkError::MessageTooLarge { .. })));

        let mut r = ChunkReader::new(ChunkLimits::default());
        r.feed(&chunk0(2, 0, MSG_SET_CHUNK_SIZE, 0, 4, &0u32.to_be_bytes()));
        assert!(matches!(r.next_message(), Err(ChunkError::BadChunkSize(0, _))));

        let mut r = ChunkReader::new(ChunkLimits {
            max_chunk_streams: 2,
            ..Default::default()
        });
        let mut b = chunk0(3, 0, 20, 0, 1, &[0]);
        b.extend(chunk0(4, 0, 20, 0, 1, &[0]));
        b.extend(chunk0(5, 0, 20, 0, 1, &[0]));
        r.feed(&b);
        r.next_message().unwrap();
        r.next_message().unwrap();
        assert_eq!(r.next_message(), Err(ChunkError::TooManyChunkStreams(2)));

        let mut r = ChunkReader::new(ChunkLimits::default());
        let mut b = chunk0(6, 0, MSG_VIDEO, 1, 200, &[0; 128]);
        b.extend(chunk0(6, 0, MSG_VIDEO, 1, 10, &[0; 10]));
        r.feed(&b);
        assert_eq!(r.next_message(), Err(ChunkError::InterruptedMessage(6)));
    }

    #[test]
    fn media_may_be_large_only_after_publish_and_control_never() {
        let mut r = ChunkReader::new(ChunkLimits::default());
        r.feed(&chunk0(6, 0, MSG_VIDEO, 1, 1 << 20, &[]));
        assert!(matches!(
            r.next_message(),
            Err(ChunkError::MessageTooLarge { limit: 65536, .. })
        ));
        let mut r = ChunkReader::new(ChunkLimits::default());
        r.allow_media(true);
        r.feed(&chunk0(6, 0, MSG_VIDEO, 1, 1 << 20, &[0; 128]));
        assert_eq!(r.next_message(), Ok(None));
        r.feed(&chunk0(3, 0, 20, 0, 1 << 20, &[]));
        assert!(matches!(
            r.next_message(),
            Err(ChunkError::MessageTooLarge { limit: 65536, .. })
        ));
    }

    #[test]
    fn unfinished_messages_are_held_within_a_budget() {
        // Seven chunk streams (eight with the control stream) each announcing 8 MiB and sending one byte at a
        // time: memory follows the bytes that arrived (no allocation by the announced length), and the sum is
        // capped.
        let mut r = ChunkReader::new(ChunkLimits {
            max_buffered: 4096,
            ..Default::default()
        });
        r.allow_media(true);
        let mut b = chunk0(2, 0, MSG_SET_CHUNK_SIZE, 0, 4, &1u32.to_be_bytes());
        for cs in 3..10u8 {
            b.extend(chunk0(cs, 0, MSG_VIDEO, 1, 8 << 20, &[0]));
        }
        r.feed(&b);
        assert_eq!(r.next_message().unwrap().unwrap().type_id, MSG_SET_CHUNK_SIZE);
        assert_eq!(r.next_message(), Ok(None));
        assert_eq!(r.buffered, 7);
        let mut more = Vec::new();
        for _ in 0..1000 {
            for cs in 3..10u8 {
                more.extend_from_slice(&[0xC0 | cs, 0]);
            }
        }
        r.feed(&more);
        assert_eq!(r.next_message(), Err(ChunkError::OverBudget(4096)));
        let mut r = ChunkReader::new(ChunkLimits::default());
        let mut b = Vec::new();
        for cs in 3..12u8 {
            b.extend(chunk0(cs, 0, 20, 0, 1, &[0]));
        }
        r.feed(&b);
        while let Ok(Some(_)) = r.next_message() {}
        assert_eq!(r.next_message(), Err(ChunkError::TooManyChunkStreams(8)));
    }

    #[test]
    fn random_garbage_never_panics() {
        let mut seed = 0x1234_5678u64;
        for _ in 0..2000 {
            let mut r = ChunkReader::new(ChunkLimits {
                max_message_size: 4096,
                ..Default::default()
            });
            let len = (seed % 512) as usize;
            let bytes = super::super::noise(&mut seed, len);
            r.feed(&bytes);
            while let Ok(Some(_)) = r.next_message() {}
        }
    }
}
