//! The MPEG-TS demuxer of SRT publishers (`media::ts::TsDemuxer`) and what reads its output (ADTS frames, Opus
//! access units, SRT stream ids), fed hostile bytes: never a panic, the same events however the bytes are split,
//! no PES larger than the limit and no more streams than the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomgate::media::ts::{self, TsDemuxer, TsEvent};

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |b| *b as usize * 7) % (data.len().max(1));
    let (mut whole, mut whole_out) = (TsDemuxer::new(), Vec::new());
    whole.push(data, &mut whole_out);
    let (mut parts, mut parts_out) = (TsDemuxer::new(), Vec::new());
    parts.push(&data[..split], &mut parts_out);
    parts.push(&data[split..], &mut parts_out);
    assert_eq!(whole_out, parts_out, "events depend on how the bytes were split");
    assert!(whole.program().len() <= ts::MAX_STREAMS);
    for e in &whole_out {
        if let TsEvent::Pes(p) = e {
            assert!(p.data.len() <= ts::MAX_PES_BYTES);
            for f in roomgate::media::aac::adts_frames(&p.data).flatten() {
                assert!(f.payload.len() <= p.data.len());
            }
            for unit in ts::opus_access_units(&p.data).flatten() {
                let _ = ts::opus_packet_samples(unit);
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = roomgate::ingest::srt::stream_id::parse(text);
    }
});
