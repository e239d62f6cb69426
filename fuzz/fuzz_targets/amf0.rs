//! The AMF0 decoder alone, with the production caps: whatever the input (nested 100 000 deep, counts of
//! 4 billion), it must return (never recurse into a stack overflow, never allocate by an announced count), and
//! what it decodes must encode and decode again to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomgate::ingest::rtmp::amf0::{decode_all, encode, Amf0Limits};

fuzz_target!(|data: &[u8]| {
    if let Ok(values) = decode_all(data, Amf0Limits::default()) {
        let mut bytes = Vec::new();
        encode(&values, &mut bytes);
        let again = decode_all(&bytes, Amf0Limits::default()).expect("our own encoding decodes");
        // NaN != NaN: compare encodings, not values.
        let mut bytes2 = Vec::new();
        encode(&again, &mut bytes2);
        assert_eq!(bytes, bytes2);
    }
});
