//! The relay link decoder (`cluster::relay::wire`), fed what a hostile peer could send in any pieces: it must
//! return records or an error (never panic, never allocate by an announced length), and every record it returns
//! must encode to bytes that decode to the same record again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomgate::cluster::relay::wire::{encode, Decoder, Record};

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |b| *b as usize) % (data.len().max(1));
    let mut d = Decoder::default();
    d.feed(&data[..split]);
    let mut records = Vec::new();
    while let Ok(Some(r)) = d.next_record() {
        records.push(r);
    }
    d.feed(&data[split..]);
    while let Ok(Some(r)) = d.next_record() {
        records.push(r);
    }
    for r in records {
        let mut bytes = Vec::new();
        encode(&r, &mut bytes);
        let mut again = Decoder::default();
        again.feed(&bytes);
        let back = again.next_record().expect("our own encoding decodes").expect("a whole record");
        let mut bytes2 = Vec::new();
        encode(&back, &mut bytes2);
        assert_eq!(bytes, bytes2);
        if let Record::Frame(f) = &r {
            assert!(!f.keyframe || f.codec == roomgate::media::Codec::H264);
        }
    }
});
