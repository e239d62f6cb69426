use super::*;

fn demux_all(data: &[u8], split: &mut dyn FnMut() -> usize) -> (TsDemuxer, Vec<TsEvent>) {
    let mut d = TsDemuxer::new();
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let n = split().clamp(1, data.len() - at);
        d.push(&data[at..at + n], &mut out);
        at += n;
    }
    (d, out)
}

fn pes_of(events: &[TsEvent], kind: fn(StreamKind) -> bool) -> Vec<&Pes> {
    events
        .iter()
        .filter_map(|e| match e {
            TsEvent::Pes(p) if kind(p.kind) => Some(p),
            _ => None,
        })
        .collect()
}

fn sample(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// A file ffmpeg muxed (1 s: 30 H.264 pictures, 48 AAC frames): every picture comes out whole and at once (the
/// early end on stuffing holds for libavformat), whatever way the bytes are split.
#[test]
fn an_ffmpeg_file_demuxes_into_every_picture_and_audio_frame() {
    let data = sample("x264_aac.ts");
    let (d, whole) = demux_all(&data, &mut || 1316);
    let program: Vec<StreamKind> = d.program().iter().map(|e| e.kind).collect();
    assert_eq!(program, vec![StreamKind::H264, StreamKind::Aac]);
    let video = pes_of(&whole, StreamKind::is_video);
    assert_eq!(video.len(), 30, "one PES per picture");
    for v in &video {
        assert!(v.data.starts_with(&[0, 0, 0, 1]) || v.data.starts_with(&[0, 0, 1]));
        assert!(v.pts.is_some() && !v.after_loss);
        assert!(v.dts.is_none() || v.dts == v.pts, "no reordering in baseline");
    }
    let pts: Vec<u64> = video.iter().map(|v| v.pts.unwrap()).collect();
    assert!(pts.windows(2).all(|w| w[1] - w[0] == 3000), "30 fps at 90 kHz: {pts:?}");
    let audio = pes_of(&whole, |k| k == StreamKind::Aac);
    let adts_frames: usize = audio
        .iter()
        .map(|a| crate::media::aac::adts_frames(&a.data).filter(|f| f.is_ok()).count())
        .sum();
    assert_eq!(adts_frames, 48);
    // The last picture came out too, though no picture starts after it: the early end worked for every one.
    assert_eq!(d.losses(), TsLosses::default());

    // Any split gives the same PES.
    let mut seed = 7u64;
    let (_, split) = demux_all(&data, &mut || {
        (crate::ingest::rtmp::noise(&mut seed, 2)[0] as usize) * 3 + 1
    });
    assert_eq!(split, whole);
}

#[test]
fn opus_is_recognized_by_its_registration() {
    let (d, events) = demux_all(&sample("x264_opus.ts"), &mut || 1316);
    assert!(matches!(
        d.program()[1].kind,
        StreamKind::Opus {
            channels: Some(1) | Some(2)
        }
    ));
    assert!(!pes_of(&events, |k| matches!(k, StreamKind::Opus { .. })).is_empty());
}

/// A picture is emitted by the packet that ends it, not one frame later by the next start.
#[test]
fn a_picture_is_emitted_without_waiting_for_the_next() {
    let data = sample("x264_aac.ts");
    let mut d = TsDemuxer::new();
    let mut out = Vec::new();
    let packets: Vec<&[u8]> = data.chunks(PACKET).collect();
    let mut video_seen = 0;
    for (k, p) in packets.iter().enumerate() {
        d.push(p, &mut out);
        let v = pes_of(&out, StreamKind::is_video).len();
        if v > video_seen {
            video_seen = v;
            // Out before the next picture's first packet arrived: the next packet of the stream starts a PES.
            let pid = d.program()[0].pid;
            let next = packets[k + 1..]
                .iter()
                .find(|q| u16::from_be_bytes([q[1] & 0x1F, q[2]]) == pid);
            assert!(
                next.is_none_or(|q| q[1] & 0x40 != 0),
                "picture {v} waited for the next start"
            );
        }
    }
    assert_eq!(video_seen, 30);
}

#[test]
fn a_continuity_gap_drops_the_cut_picture_and_marks_the_next() {
    let data = sample("x264_aac.ts");
    let video_pid = {
        let (d, _) = demux_all(&data, &mut || 1316);
        d.program()[0].pid
    };
    // Drop the 3rd packet of the video stream that does not start a PES (inside the first picture).
    let mut n = 0;
    let mut cut = Vec::new();
    for p in data.chunks(PACKET) {
        let pid = u16::from_be_bytes([p[1] & 0x1F, p[2]]);
        if pid == video_pid && p[1] & 0x40 == 0 {
            n += 1;
            if n == 3 {
                continue;
            }
        }
        cut.extend_from_slice(p);
    }
    let (d, events) = demux_all(&cut, &mut || 1316);
    let video = pes_of(&events, StreamKind::is_video);
    assert_eq!(video.len(), 29);
    assert!(video[0].after_loss);
    assert!(video[1..].iter().all(|v| !v.after_loss));
    assert_eq!(d.losses().cut_pes, 1);
}

/// A muxer that ends packets short in the middle of a PES: the first picture goes out cut (and is counted), the
/// stream then waits for the next start, and every later picture is whole.
#[test]
fn a_muxer_that_pads_mid_pes_turns_early_ends_off() {
    let pictures: Vec<Vec<u8>> = (0..4u8).map(|i| annexb_picture(i, 600)).collect();
    let mut ts = psi(0x100, 0x1B);
    let mut cc = 0;
    for (i, p) in pictures.iter().enumerate() {
        ts.extend(pes_packets(0x100, &mut cc, i as u64 * 3000, p, Some(100)));
    }
    let (d, events) = demux_all(&ts, &mut || 1316);
    let video = pes_of(&events, StreamKind::is_video);
    // The first picture goes out cut at its first short packet and its rest is dropped; then the stream waits for
    // starts: the second and third come out whole (at the next start), the fourth never (no fifth start).
    assert!(video[0].data.len() < pictures[0].len());
    assert_eq!(video.len(), 3);
    assert_eq!(video[1].data[..], pictures[1][..]);
    assert_eq!(video[2].data[..], pictures[2][..]);
    assert!(video[1].after_loss);
    assert!(d.losses().cut_pes >= 1);
}

/// libavformat pads a PES's last packet by 2 bytes with a flags-only adaptation field (no 0xFF): still an end.
#[test]
fn a_two_byte_pad_ends_a_picture_too() {
    let mut ts = psi(0x100, 0x1B);
    let mut cc = 0;
    // PES header 14 bytes + picture: 184 in the first packet, then 182 in the last (2 bytes of padding).
    let picture = annexb_picture(1, 184 - 14 + 182 - 5);
    ts.extend(pes_packets(0x100, &mut cc, 0, &picture, None));
    let last = &ts[ts.len() - PACKET..];
    assert_eq!(
        (last[3] & 0x30, last[4], last[5]),
        (0x30, 1, 0x00),
        "a flags-only adaptation field"
    );
    let (_, events) = demux_all(&ts, &mut || 188);
    let video = pes_of(&events, StreamKind::is_video);
    assert_eq!(video.len(), 1, "emitted without a next start");
    assert_eq!(video[0].data[..], picture[..]);
}

#[test]
fn only_the_first_video_and_audio_streams_are_reassembled() {
    let mut ts = section_packet(
        0,
        &[0x00, 0xB0, 0x0D, 0x00, 0x01, 0xC1, 0x00, 0x00, 0x00, 0x01, 0xF0, 0x00],
    );
    // A PMT with two H.264 streams and two AAC streams.
    let mut pmt = vec![0x02, 0xB0, 0x00, 0x00, 0x01, 0xC1, 0x00, 0x00, 0xE1, 0x00, 0xF0, 0x00];
    for (t, pid) in [(0x1Bu8, 0x100u16), (0x1B, 0x102), (0x0F, 0x101), (0x0F, 0x103)] {
        pmt.extend([t, 0xE0 | (pid >> 8) as u8, pid as u8, 0xF0, 0x00]);
    }
    pmt[2] = (pmt.len() - 3 + 4) as u8;
    ts.extend(section_packet(0x1000, &pmt));
    let (mut cv, mut cv2, mut ca, mut ca2) = (0, 0, 0, 0);
    ts.extend(pes_packets(0x100, &mut cv, 0, &annexb_picture(1, 300), None));
    ts.extend(pes_packets(0x102, &mut cv2, 0, &annexb_picture(2, 300), None));
    ts.extend(pes_packets_bounded(0x101, &mut ca, 0, &[1; 100]));
    ts.extend(pes_packets_bounded(0x103, &mut ca2, 0, &[2; 100]));
    let (d, events) = demux_all(&ts, &mut || 1316);
    assert_eq!(d.program().len(), 4, "all are listed");
    let pids: Vec<u16> = events
        .iter()
        .filter_map(|e| match e {
            TsEvent::Pes(p) => Some(p.pid),
            _ => None,
        })
        .collect();
    assert_eq!(pids, vec![0x100, 0x101]);
}

#[test]
fn an_audio_pes_is_bounded() {
    let mut ts = psi(0x101, 0x0F);
    let mut cc = 0;
    ts.extend(pes_packets(
        0x101,
        &mut cc,
        0,
        &vec![0xAB; MAX_AUDIO_PES_BYTES + 1000],
        None,
    ));
    ts.extend(pes_packets_bounded(0x101, &mut cc, 3000, &[7; 50]));
    let (d, events) = demux_all(&ts, &mut || 1316);
    let audio = pes_of(&events, |k| k == StreamKind::Aac);
    assert_eq!(audio.len(), 1, "the over-long PES is dropped, the next one kept");
    assert!(audio[0].after_loss && audio[0].data[..] == [7; 50]);
    assert_eq!(d.losses().bad_pes, 1);
}

#[test]
fn pes_with_a_length_ends_at_it_and_timestamps_are_read() {
    let mut ts = psi(0x101, 0x0F);
    let mut cc = 0;
    let audio = vec![0xAB; 500];
    ts.extend(pes_packets_bounded(0x101, &mut cc, 0x1_FFFF_FFF0, &audio));
    let (_, events) = demux_all(&ts, &mut || 188);
    let a = pes_of(&events, |k| k == StreamKind::Aac);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].data[..], audio[..]);
    assert_eq!(a[0].pts, Some(0x1_FFFF_FFF0));
}

#[test]
fn a_bad_crc_or_garbage_changes_nothing() {
    let mut ts = psi(0x100, 0x1B);
    // Flip the PMT's stream type: its CRC no longer matches.
    ts[PACKET + 5 + 12] ^= 0x01;
    let (d, events) = demux_all(&ts, &mut || 188);
    assert!(d.program().is_empty() && events.is_empty());
    assert!(d.losses().bad_sections >= 1);
    // Pure noise, with sync bytes sprinkled in.
    let mut seed = 99u64;
    for _ in 0..200 {
        let mut junk = crate::ingest::rtmp::noise(&mut seed, 3000);
        for i in (0..junk.len()).step_by(188) {
            junk[i] = SYNC;
        }
        let (d, _) = demux_all(&junk, &mut || 700);
        assert!(d.streams.len() <= MAX_STREAMS);
    }
}

#[test]
fn opus_access_units_and_durations() {
    let (_, events) = demux_all(&sample("x264_opus.ts"), &mut || 1316);
    let mut samples = 0;
    for p in pes_of(&events, |k| matches!(k, StreamKind::Opus { .. })) {
        for unit in opus_access_units(&p.data) {
            samples += opus_packet_samples(unit.expect("well-formed")).unwrap();
        }
    }
    // 26 packets of 20 ms (the file's 0.5 s, plus the encoder's lookahead).
    assert_eq!(samples, 26 * 960);
    // Sizes over 255 use continuation bytes; trims and extensions are skipped.
    let mut unit = vec![0x7F, 0xE0 | 0x10 | 0x04, 0xFF, 0x01, 0x00, 0x00, 0x02, 0xAA, 0xBB];
    unit.extend(std::iter::repeat_n(0xFC, 256));
    let units: Vec<_> = opus_access_units(&unit).collect();
    assert_eq!(units.len(), 1);
    assert_eq!(units[0].unwrap().len(), 256);
    assert_eq!(opus_packet_samples(&[0xFC]), Some(960));
    assert_eq!(opus_packet_samples(&[0x03, 0x00]), None);
    assert_eq!(
        opus_access_units(&[0x7F, 0xE0, 0x05, 1]).collect::<Vec<_>>(),
        vec![None]
    );
}

#[test]
fn unwrap33_follows_wraps_and_small_steps_back() {
    let mut u = Unwrap33::default();
    let top = (1u64 << 33) - 100;
    assert_eq!(u.unwrap(top), top as i64);
    assert_eq!(u.unwrap(50), top as i64 + 150);
    assert_eq!(u.unwrap((1u64 << 33) - 10), top as i64 + 90);
    assert_eq!(u.unwrap(3000), top as i64 + 3100);
}

#[test]
fn crc_of_a_known_pat() {
    // ffmpeg's PAT for program 1 with PMT pid 0x1000.
    let pat = [0x00, 0xB0, 0x0D, 0x00, 0x01, 0xC1, 0x00, 0x00, 0x00, 0x01, 0xF0, 0x00];
    let crc = crc32_mpeg2(&pat);
    let mut with = pat.to_vec();
    with.extend_from_slice(&crc.to_be_bytes());
    assert_eq!(crc32_mpeg2(&with), 0);
    assert_eq!(crc, 0x2AB104B2);
}

// --- a tiny muxer for the synthetic cases ---

fn annexb_picture(seed: u8, len: usize) -> Vec<u8> {
    let mut v = vec![0, 0, 0, 1, 0x65];
    v.extend((0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 0x01));
    v
}

fn section_packet(pid: u16, body: &[u8]) -> Vec<u8> {
    let mut sec = body.to_vec();
    let crc = crc32_mpeg2(&sec);
    sec.extend_from_slice(&crc.to_be_bytes());
    let mut p = vec![SYNC, 0x40 | (pid >> 8) as u8, pid as u8, 0x10, 0x00];
    p.extend_from_slice(&sec);
    p.resize(PACKET, 0xFF);
    p
}

/// PAT (program 1 at PMT pid 0x1000) and a PMT with one stream.
fn psi(pid: u16, stream_type: u8) -> Vec<u8> {
    let mut out = section_packet(
        0,
        &[0x00, 0xB0, 0x0D, 0x00, 0x01, 0xC1, 0x00, 0x00, 0x00, 0x01, 0xF0, 0x00],
    );
    let pmt = [
        0x02,
        0xB0,
        0x12,
        0x00,
        0x01,
        0xC1,
        0x00,
        0x00,
        0xE0 | (pid >> 8) as u8,
        pid as u8,
        0xF0,
        0x00,
        stream_type,
        0xE0 | (pid >> 8) as u8,
        pid as u8,
        0xF0,
        0x00,
    ];
    out.extend(section_packet(0x1000, &pmt));
    out
}

fn pes_head(pts: u64, length: u16) -> Vec<u8> {
    let ts = [
        0x21 | ((pts >> 29) & 0x0E) as u8,
        (pts >> 22) as u8,
        0x01 | ((pts >> 14) & 0xFE) as u8,
        (pts >> 7) as u8,
        0x01 | ((pts << 1) & 0xFE) as u8,
    ];
    let mut h = vec![0, 0, 1, 0xE0, (length >> 8) as u8, length as u8, 0x80, 0x80, 5];
    h.extend_from_slice(&ts);
    h
}

/// Packets of one unbounded PES; with `short_every`, a packet carries only that many payload bytes (padded with
/// stuffing) now and then, as a muxer that pads mid-PES would.
fn pes_packets(pid: u16, cc: &mut u8, pts: u64, data: &[u8], short_every: Option<usize>) -> Vec<u8> {
    let mut pes = pes_head(pts, 0);
    pes.extend_from_slice(data);
    packetize(pid, cc, &pes, short_every)
}

fn pes_packets_bounded(pid: u16, cc: &mut u8, pts: u64, data: &[u8]) -> Vec<u8> {
    let mut pes = pes_head(pts, (data.len() + 8) as u16);
    pes[3] = 0xC0;
    pes.extend_from_slice(data);
    packetize(pid, cc, &pes, None)
}

fn packetize(pid: u16, cc: &mut u8, pes: &[u8], short_every: Option<usize>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut first = true;
    while at < pes.len() {
        let room = PACKET - 4;
        let mut n = (pes.len() - at).min(room);
        if let Some(s) = short_every {
            if !first && n > s {
                n = s;
            }
        }
        let mut p = vec![SYNC, (if first { 0x40 } else { 0 }) | (pid >> 8) as u8, pid as u8];
        if n < room {
            let af = room - n - 1; // adaptation field length (without its own length byte)
            p.push(0x30 | *cc);
            p.push(af as u8);
            if af > 0 {
                p.push(0x00);
                p.extend(std::iter::repeat_n(0xFF, af - 1));
            }
        } else {
            p.push(0x10 | *cc);
        }
        p.extend_from_slice(&pes[at..at + n]);
        assert_eq!(p.len(), PACKET);
        out.extend(p);
        *cc = (*cc + 1) & 0xF;
        at += n;
        first = false;
    }
    out
}
