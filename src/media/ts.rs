//! MPEG-TS demuxing (ISO 13818-1) for SRT publishers: 188-byte packets in, the first program's elementary streams
//! out as whole PES payloads with their 33-bit PTS/DTS.
//!
//! `TsDemuxer` is a pure state machine fed whatever bytes arrived (SRT messages carry 7 packets, but any split
//! works). It is lenient the way a live receiver must be: a lost sync byte is searched for again, a gap in a
//! stream's continuity counter drops the PES it cut and marks the next one, a PSI section with a bad CRC is
//! ignored. It reassembles only the program's first video and first audio stream (what a room carries), so it
//! never holds more than `MAX_PES_BYTES` + `MAX_AUDIO_PES_BYTES`, the stream list and one partial packet.
//!
//! When does a video PES end? Muxers leave video `PES_packet_length` at 0 (unbounded), so by the standard a
//! picture is only known complete when the next one starts, a frame interval later. libavformat (ffmpeg, OBS) and
//! GStreamer fill every packet of a PES but its last one, which they pad with adaptation-field stuffing; so a short
//! packet without a PCR ends its PES here at once. If a stream is seen to continue after such a packet, that muxer
//! does not work this way: the stream goes back to waiting for the next start for good.

use bytes::{Bytes, BytesMut};

/// Size of one transport packet.
pub const PACKET: usize = 188;
const SYNC: u8 = 0x47;
/// The most one video PES may hold (a 4K intra picture is well below it).
pub const MAX_PES_BYTES: usize = 8 << 20;
/// The most one audio PES may hold (muxers put a few frames in one: a few KiB).
pub const MAX_AUDIO_PES_BYTES: usize = 256 << 10;
/// The most elementary streams a program may list.
pub const MAX_STREAMS: usize = 16;
/// The largest PSI section (`section_length` is at most 1021 for PAT and PMT).
const MAX_SECTION: usize = 1024;

/// What an elementary stream carries, from the PMT's `stream_type` (and, for private data, its registration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    /// H.264 (stream type 0x1B), Annex-B.
    H264,
    /// AAC in ADTS frames (0x0F).
    Aac,
    /// MPEG-1/2 audio layer I-III (0x03, 0x04).
    Mp3,
    /// Opus (private data 0x06 registered as `Opus`), with its channel count when the PMT says it.
    Opus {
        /// The channel configuration code of the Opus extension descriptor (1 or 2 for mono/stereo).
        channels: Option<u8>,
    },
    /// Another video codec (MPEG-2, HEVC, ...): its stream type.
    OtherVideo(u8),
    /// Another audio codec (AC-3, LATM AAC, ...): its stream type.
    OtherAudio(u8),
}

impl StreamKind {
    fn from_type(stream_type: u8, registration: Option<[u8; 4]>, opus_channels: Option<u8>) -> Option<StreamKind> {
        Some(match stream_type {
            0x1B => StreamKind::H264,
            0x0F => StreamKind::Aac,
            0x03 | 0x04 => StreamKind::Mp3,
            0x06 if registration == Some(*b"Opus") => StreamKind::Opus {
                channels: opus_channels,
            },
            0x06 if registration == Some(*b"AC-3") || registration == Some(*b"EAC3") => StreamKind::OtherAudio(0x06),
            0x01 | 0x02 | 0x10 | 0x24 | 0x42 | 0xD1 | 0xEA => StreamKind::OtherVideo(stream_type),
            0x11 | 0x1C | 0x2D | 0x81..=0x85 | 0x87 => StreamKind::OtherAudio(stream_type),
            _ => return None, // data, SCTE-35, metadata: not ours to carry
        })
    }

    /// True for the video kinds.
    pub fn is_video(self) -> bool {
        matches!(self, StreamKind::H264 | StreamKind::OtherVideo(_))
    }

    /// A name for logs and refusals.
    pub fn name(self) -> String {
        match self {
            StreamKind::H264 => "h264".into(),
            StreamKind::Aac => "aac".into(),
            StreamKind::Mp3 => "mp3".into(),
            StreamKind::Opus { .. } => "opus".into(),
            StreamKind::OtherVideo(0x01 | 0x02) => "mpeg2video".into(),
            StreamKind::OtherVideo(0x10) => "mpeg4".into(),
            StreamKind::OtherVideo(0x24) => "hevc".into(),
            StreamKind::OtherVideo(0xD1) => "dirac".into(),
            StreamKind::OtherVideo(0xEA) => "vc1".into(),
            StreamKind::OtherAudio(0x06 | 0x81) => "ac3".into(),
            StreamKind::OtherAudio(0x87) => "eac3".into(),
            StreamKind::OtherAudio(0x11) => "aac_latm".into(),
            StreamKind::OtherVideo(t) => format!("video stream type 0x{t:02x}"),
            StreamKind::OtherAudio(t) => format!("audio stream type 0x{t:02x}"),
        }
    }
}

/// One elementary stream of the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EsInfo {
    /// Its packet id.
    pub pid: u16,
    /// What it carries.
    pub kind: StreamKind,
}

/// One complete PES payload of an elementary stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pes {
    /// The stream's packet id.
    pub pid: u16,
    /// What the stream carries.
    pub kind: StreamKind,
    /// Presentation time, 90 kHz, 33 bits as sent.
    pub pts: Option<u64>,
    /// Decoding time when the PES has one (and it may equal `pts`).
    pub dts: Option<u64>,
    /// Data of this stream was lost just before this PES (continuity gap, or an over-long PES dropped).
    pub after_loss: bool,
    /// The elementary stream bytes (for H.264 one access unit in Annex-B).
    pub data: Bytes,
}

/// What the demuxer found in the bytes it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TsEvent {
    /// The program's stream list, at the first PMT and whenever it changes.
    Program(Vec<EsInfo>),
    /// A PES of one of the program's streams.
    Pes(Pes),
}

/// Counts of what the demuxer had to throw away, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TsLosses {
    /// Bytes skipped looking for a sync byte.
    pub unsynced_bytes: u64,
    /// PES dropped because a continuity gap cut them.
    pub cut_pes: u64,
    /// PES dropped for being longer than `MAX_PES_BYTES` or malformed.
    pub bad_pes: u64,
    /// PSI sections ignored (bad CRC, malformed).
    pub bad_sections: u64,
}

/// One elementary stream being reassembled.
#[derive(Debug)]
struct EsState {
    kind: StreamKind,
    cc: Option<u8>,
    buf: BytesMut,
    /// Whether `buf` holds a PES begun with a unit start and not yet emitted.
    open: bool,
    /// The parsed header of the open PES: (payload offset, expected total length or 0, pts, dts).
    head: Option<(usize, usize, Option<u64>, Option<u64>)>,
    /// Data was lost before the PES now open (or the next one).
    lost: bool,
    /// A short packet ended the last PES early: a continuation now means the muxer pads differently.
    ended_early: bool,
    /// Early ends are off for this stream (its muxer was seen to send short packets mid-PES).
    no_early_end: bool,
}

/// A PSI section being gathered (PAT or PMT).
#[derive(Debug, Default)]
struct Section {
    buf: Vec<u8>,
    cc: Option<u8>,
}

/// The MPEG-TS demuxer state machine: feed it with `push`, read what it found from the events it appends.
#[derive(Debug, Default)]
pub struct TsDemuxer {
    carry: Vec<u8>,
    pmt_pid: Option<u16>,
    pat: Section,
    pmt: Section,
    program: Vec<EsInfo>,
    streams: Vec<(u16, EsState)>,
    losses: TsLosses,
}

impl TsDemuxer {
    /// A demuxer waiting for its first PAT.
    pub fn new() -> Self {
        Self::default()
    }

    /// What was thrown away so far.
    pub fn losses(&self) -> TsLosses {
        self.losses
    }

    /// The program's streams as the last PMT listed them.
    pub fn program(&self) -> &[EsInfo] {
        &self.program
    }

    /// Demux `data` (any number of bytes), appending what it completes to `out`.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<TsEvent>) {
        if !self.carry.is_empty() {
            let need = PACKET - self.carry.len();
            let take = need.min(data.len());
            self.carry.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.carry.len() < PACKET {
                return;
            }
            let packet: [u8; PACKET] = self.carry[..].try_into().expect("one packet");
            self.carry.clear();
            self.packet(&packet, out);
        }
        while !data.is_empty() {
            if data[0] != SYNC {
                let skip = data.iter().position(|&b| b == SYNC).unwrap_or(data.len());
                self.losses.unsynced_bytes += skip as u64;
                data = &data[skip..];
                continue;
            }
            if data.len() < PACKET {
                self.carry.extend_from_slice(data);
                return;
            }
            // A false sync byte costs one bad packet (its continuity counter or PES header gives it away); the
            // next one is searched for from where it ended.
            let (packet, rest) = data.split_at(PACKET);
            self.packet(packet.try_into().expect("one packet"), out);
            data = rest;
        }
    }

    fn packet(&mut self, p: &[u8; PACKET], out: &mut Vec<TsEvent>) {
        let tei = p[1] & 0x80 != 0;
        let pusi = p[1] & 0x40 != 0;
        let pid = u16::from_be_bytes([p[1] & 0x1F, p[2]]);
        let afc = (p[3] >> 4) & 0x3;
        let cc = p[3] & 0x0F;
        if tei || pid == 0x1FFF {
            return;
        }
        let mut at = 4;
        let mut discontinuity = false;
        // Stuffing in the adaptation field (and no PCR): how libavformat and GStreamer end a PES.
        let mut stuffed = false;
        if afc & 0x2 != 0 {
            let len = p[4] as usize;
            if 5 + len > PACKET {
                self.losses.bad_pes += 1;
                return;
            }
            if len > 0 {
                discontinuity = p[5] & 0x80 != 0;
                let pcr = p[5] & 0x10 != 0;
                // libavformat pads 2 bytes with a flags-only field (flags 0), more with 0xFF bytes after them.
                stuffed = !pcr && ((len >= 2 && p[4 + len] == 0xFF) || (len == 1 && p[5] == 0));
            } else {
                stuffed = true; // an empty adaptation field: one byte of stuffing
            }
            at = 5 + len;
        }
        if afc & 0x1 == 0 || at >= PACKET {
            return; // adaptation field only
        }
        let payload = &p[at..];
        if pid == 0 {
            if let Some(section) = gather(&mut self.pat, pusi, cc, payload, &mut self.losses) {
                self.on_pat(&section);
            }
        } else if Some(pid) == self.pmt_pid {
            if let Some(section) = gather(&mut self.pmt, pusi, cc, payload, &mut self.losses) {
                self.on_pmt(&section, out);
            }
        } else if let Some(i) = self.streams.iter().position(|(p, _)| *p == pid) {
            let (pid, es) = &mut self.streams[i];
            es_packet(
                *pid,
                es,
                pusi,
                cc,
                discontinuity,
                stuffed,
                payload,
                &mut self.losses,
                out,
            );
        }
    }

    fn on_pat(&mut self, s: &[u8]) {
        // table_id 0, then programs of 4 bytes between the 8-byte header and the CRC.
        if s[0] != 0x00 {
            return;
        }
        let programs = &s[8..s.len() - 4];
        let pmt = programs.chunks_exact(4).find_map(|c| {
            let number = u16::from_be_bytes([c[0], c[1]]);
            (number != 0).then(|| u16::from_be_bytes([c[2] & 0x1F, c[3]]))
        });
        if let Some(pid) = pmt {
            if self.pmt_pid != Some(pid) && pid != 0 && pid != 0x1FFF {
                self.pmt_pid = Some(pid);
                self.pmt = Section::default();
            }
        }
    }

    fn on_pmt(&mut self, s: &[u8], out: &mut Vec<TsEvent>) {
        if s[0] != 0x02 || s.len() < 16 {
            return;
        }
        let body = &s[..s.len() - 4];
        let info_len = (u16::from_be_bytes([body[10] & 0x0F, body[11]])) as usize;
        let Some(mut rest) = body.get(12 + info_len..) else {
            self.losses.bad_sections += 1;
            return;
        };
        let mut program = Vec::new();
        while rest.len() >= 5 {
            let stream_type = rest[0];
            let pid = u16::from_be_bytes([rest[1] & 0x1F, rest[2]]);
            let es_len = u16::from_be_bytes([rest[3] & 0x0F, rest[4]]) as usize;
            let Some(descriptors) = rest.get(5..5 + es_len) else {
                self.losses.bad_sections += 1;
                return;
            };
            let (registration, opus_channels) = read_descriptors(descriptors);
            if let Some(kind) = StreamKind::from_type(stream_type, registration, opus_channels) {
                if program.len() < MAX_STREAMS
                    && pid > 0x0F
                    && pid != 0x1FFF
                    && Some(pid) != self.pmt_pid
                    && !program.iter().any(|e: &EsInfo| e.pid == pid)
                {
                    program.push(EsInfo { pid, kind });
                }
            }
            rest = &rest[5 + es_len..];
        }
        if program == self.program {
            return;
        }
        // The first video and the first audio stream are reassembled (streams that stay keep what they were
        // assembling); the others are listed only.
        let first_video = program.iter().find(|e| e.kind.is_video());
        let first_audio = program.iter().find(|e| !e.kind.is_video());
        let mut streams = Vec::with_capacity(2);
        for e in first_video.into_iter().chain(first_audio) {
            let kept = self
                .streams
                .iter()
                .position(|(p, s)| *p == e.pid && s.kind == e.kind)
                .map(|i| self.streams.swap_remove(i));
            streams.push(kept.unwrap_or_else(|| {
                (
                    e.pid,
                    EsState {
                        kind: e.kind,
                        cc: None,
                        buf: BytesMut::new(),
                        open: false,
                        head: None,
                        lost: false,
                        ended_early: false,
                        no_early_end: !e.kind.is_video(),
                    },
                )
            }));
        }
        self.streams = streams;
        self.program = program.clone();
        out.push(TsEvent::Program(program));
    }
}

/// Add one packet's payload to a PSI section; the section once complete, CRC-checked and at least 12 bytes.
fn gather(sec: &mut Section, pusi: bool, cc: u8, payload: &[u8], losses: &mut TsLosses) -> Option<Vec<u8>> {
    let continued = sec.cc.is_some_and(|c| (c + 1) & 0xF == cc);
    if sec.cc == Some(cc) {
        return None; // a duplicate packet
    }
    sec.cc = Some(cc);
    if pusi {
        let pointer = payload[0] as usize;
        // The end of a previous section may sit before the pointer; only new sections are read here.
        sec.buf.clear();
        sec.buf.extend_from_slice(payload.get(1 + pointer..)?);
    } else if continued && !sec.buf.is_empty() {
        sec.buf.extend_from_slice(payload);
    } else {
        sec.buf.clear();
        return None;
    }
    if sec.buf.len() < 3 {
        return None;
    }
    let len = 3 + (u16::from_be_bytes([sec.buf[1] & 0x0F, sec.buf[2]]) as usize);
    if !(12..=MAX_SECTION).contains(&len) {
        sec.buf.clear();
        losses.bad_sections += 1;
        return None;
    }
    if sec.buf.len() < len {
        return None;
    }
    let section: Vec<u8> = sec.buf[..len].to_vec();
    sec.buf.clear();
    if crc32_mpeg2(&section) != 0 {
        losses.bad_sections += 1;
        return None;
    }
    Some(section)
}

/// The registration (format identifier) and the Opus channel configuration among an ES's descriptors.
fn read_descriptors(mut d: &[u8]) -> (Option<[u8; 4]>, Option<u8>) {
    let (mut registration, mut opus_channels) = (None, None);
    while d.len() >= 2 {
        let (tag, len) = (d[0], d[1] as usize);
        let Some(body) = d.get(2..2 + len) else { break };
        match tag {
            0x05 if len >= 4 => registration = Some([body[0], body[1], body[2], body[3]]),
            // DVB extension descriptor, tag extension 0x80: Opus audio, its channel_config_code.
            0x7F if len >= 2 && body[0] == 0x80 => opus_channels = Some(body[1]),
            _ => {}
        }
        d = &d[2 + len..];
    }
    (registration, opus_channels)
}

#[allow(clippy::too_many_arguments)]
fn es_packet(
    pid: u16,
    es: &mut EsState,
    pusi: bool,
    cc: u8,
    discontinuity: bool,
    stuffed: bool,
    payload: &[u8],
    losses: &mut TsLosses,
    out: &mut Vec<TsEvent>,
) {
    if let Some(prev) = es.cc {
        if prev == cc && !discontinuity {
            return; // a duplicate packet, sent twice on purpose
        }
        if (prev + 1) & 0xF != cc && !discontinuity {
            // Something was lost: the PES open now is cut.
            if es.open {
                losses.cut_pes += 1;
            }
            es.open = false;
            es.head = None;
            es.buf.clear();
            es.lost = true;
            es.ended_early = false;
        }
    }
    es.cc = Some(cc);
    if pusi {
        if es.open {
            emit(pid, es, out);
        }
        es.ended_early = false;
        es.buf.clear();
        es.head = None;
        es.open = true;
    } else if es.ended_early {
        // The PES went on after a short packet: this muxer pads mid-PES; that picture went out cut.
        es.no_early_end = true;
        es.ended_early = false;
        es.lost = true;
        losses.cut_pes += 1;
        return;
    } else if !es.open {
        return; // the middle of a PES whose start we did not see
    }
    let limit = if es.kind.is_video() {
        MAX_PES_BYTES
    } else {
        MAX_AUDIO_PES_BYTES
    };
    if es.buf.len() + payload.len() > limit {
        losses.bad_pes += 1;
        es.open = false;
        es.head = None;
        es.buf.clear();
        es.lost = true;
        return;
    }
    es.buf.extend_from_slice(payload);
    if es.head.is_none() {
        match pes_header(&es.buf) {
            Ok(Some(h)) => es.head = Some(h),
            Ok(None) => return, // more header to come
            Err(()) => {
                losses.bad_pes += 1;
                es.open = false;
                es.buf.clear();
                es.lost = true;
                return;
            }
        }
    }
    let Some((_, total, _, _)) = es.head else { return };
    if total != 0 && es.buf.len() >= total {
        es.buf.truncate(total);
        emit(pid, es, out);
    } else if total == 0 && !es.no_early_end && stuffed {
        emit(pid, es, out);
        es.ended_early = true;
    }
}

/// Emit the open PES of `es` (if its header was read) and close it.
fn emit(pid: u16, es: &mut EsState, out: &mut Vec<TsEvent>) {
    es.open = false;
    let Some((offset, _, pts, dts)) = es.head.take() else {
        es.buf.clear();
        return;
    };
    let mut buf = std::mem::take(&mut es.buf);
    if buf.len() <= offset {
        return;
    }
    let data = buf.split_off(offset).freeze();
    out.push(TsEvent::Pes(Pes {
        pid,
        kind: es.kind,
        pts,
        dts,
        after_loss: std::mem::take(&mut es.lost),
        data,
    }));
}

/// The PES header at the start of `b`: `Ok(None)` while it is incomplete; the payload offset, the PES's total
/// length (0: unbounded), PTS and DTS.
#[allow(clippy::type_complexity)]
fn pes_header(b: &[u8]) -> Result<Option<(usize, usize, Option<u64>, Option<u64>)>, ()> {
    if b.len() < 9 {
        return Ok(None);
    }
    if b[0] != 0 || b[1] != 0 || b[2] != 1 {
        return Err(());
    }
    let stream_id = b[3];
    let length = u16::from_be_bytes([b[4], b[5]]) as usize;
    let total = if length == 0 { 0 } else { 6 + length };
    // Streams without the optional header (padding, private 2, ECM...) carry nothing we play.
    if matches!(stream_id, 0xBC | 0xBE | 0xBF | 0xF0 | 0xF1 | 0xF2 | 0xF8 | 0xFF) {
        return Err(());
    }
    if b[6] & 0xC0 != 0x80 {
        return Err(());
    }
    let flags = b[7] >> 6;
    let header_len = b[8] as usize;
    let offset = 9 + header_len;
    if b.len() < offset {
        return Ok(None);
    }
    if total != 0 && total < offset {
        return Err(());
    }
    let (pts, dts) = match flags {
        0b10 if header_len >= 5 => (Some(timestamp(&b[9..14])), None),
        0b11 if header_len >= 10 => (Some(timestamp(&b[9..14])), Some(timestamp(&b[14..19]))),
        0b00 => (None, None),
        _ => return Err(()),
    };
    Ok(Some((offset, total, pts, dts)))
}

/// A 33-bit PTS or DTS from its 5 bytes.
fn timestamp(b: &[u8]) -> u64 {
    ((b[0] as u64 >> 1) & 0x07) << 30
        | (b[1] as u64) << 22
        | ((b[2] as u64) >> 1) << 15
        | (b[3] as u64) << 7
        | (b[4] as u64) >> 1
}

/// CRC-32/MPEG-2 of `data`; 0 over a section that ends with its own correct CRC.
pub fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= (b as u32) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The Opus packets of an Opus PES: each behind its control header (ETSI TS 102 366 style framing of
/// "Opus in MPEG-TS": prefix 0x7FE0 with trim and extension flags, then the size in 0xFF-continued bytes). `None`
/// for a malformed header, which ends the sequence.
pub fn opus_access_units(data: &[u8]) -> impl Iterator<Item = Option<&[u8]>> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let unit = opus_access_unit(rest);
        match unit {
            Some((packet, used)) => {
                rest = &rest[used..];
                Some(Some(packet))
            }
            None => {
                rest = &[];
                Some(None)
            }
        }
    })
}

fn opus_access_unit(b: &[u8]) -> Option<(&[u8], usize)> {
    if b.len() < 3 || b[0] != 0x7F || b[1] & 0xE0 != 0xE0 {
        return None;
    }
    let (start_trim, end_trim, extension) = (b[1] & 0x10 != 0, b[1] & 0x08 != 0, b[1] & 0x04 != 0);
    let mut at = 2;
    let mut size = 0usize;
    loop {
        let v = *b.get(at)?;
        at += 1;
        size += v as usize;
        if v != 0xFF {
            break;
        }
    }
    at += 2 * (start_trim as usize + end_trim as usize);
    if extension {
        at += 1 + *b.get(at)? as usize;
    }
    let packet = b.get(at..at.checked_add(size)?)?;
    (!packet.is_empty()).then_some((packet, at + size))
}

/// How many 48 kHz samples an Opus packet holds (RFC 6716 §3.1: its TOC byte and frame count), or None when
/// the packet is malformed.
pub fn opus_packet_samples(packet: &[u8]) -> Option<u32> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    // Frame durations in 48 kHz samples per configuration group.
    let frame = match config {
        0..=11 => [480, 960, 1920, 2880][(config % 4) as usize],
        12..=15 => [480, 960][(config % 2) as usize],
        _ => [120, 240, 480, 960][(config % 4) as usize],
    };
    let frames = match toc & 0x3 {
        0 => 1,
        1 | 2 => 2,
        _ => (*packet.get(1)? & 0x3F) as u32,
    };
    let samples = frame * frames;
    // At most 120 ms of audio in one packet.
    (frames > 0 && samples <= 5760).then_some(samples)
}

/// Turns 33-bit timestamps that wrap every 26.5 hours into one ever-growing 64-bit timeline. Values may go back
/// a little (audio and video interleave): each is placed nearest to the previous one.
#[derive(Debug, Default, Clone, Copy)]
pub struct Unwrap33 {
    last: Option<(u64, i64)>,
}

impl Unwrap33 {
    /// `raw` on the unwrapped timeline (which starts at the first value seen and may go below it).
    pub fn unwrap(&mut self, raw: u64) -> i64 {
        const SPAN: i64 = 1 << 33;
        let raw = raw & (SPAN as u64 - 1);
        let ext = match self.last {
            None => raw as i64,
            Some((last_raw, last_ext)) => {
                let mut d = raw as i64 - last_raw as i64;
                if d > SPAN / 2 {
                    d -= SPAN;
                } else if d < -SPAN / 2 {
                    d += SPAN;
                }
                last_ext + d
            }
        };
        self.last = Some((raw, ext));
        ext
    }
}

#[cfg(test)]
mod tests;
