//! The RTSP relay's scanner of what a source server sends (`ingest::pull::rtsp::RtspScanner`), fed hostile bytes
//! in two pieces: it must return statuses or an error, never panic, and find the same statuses however the bytes
//! are split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomgate::ingest::pull::rtsp::RtspScanner;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |b| *b as usize) % (data.len().max(1));
    let mut whole = RtspScanner::default();
    let at_once = whole.feed(data);
    let mut parts = RtspScanner::default();
    let first = parts.feed(&data[..split]);
    let second = parts.feed(&data[split..]);
    if let (Ok(all), Ok(mut a), Ok(b)) = (at_once, first, second) {
        a.extend(b);
        assert_eq!(all, a, "statuses depend on how the bytes were split");
    }
});
