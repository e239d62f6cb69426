//! The RTSP relay's scanner of what a source server sends (`ingest::pull::rtsp::RtspScanner`), fed hostile bytes
//! in two pieces: it must return statuses or an error, never panic, and pass on the same bytes and find the same
//! statuses however the bytes are split; what it passes is never more than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomgate::ingest::pull::rtsp::RtspScanner;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |b| *b as usize) % (data.len().max(1));
    let (mut whole, mut whole_out) = (RtspScanner::default(), Vec::new());
    let at_once = whole.feed(data, &mut whole_out);
    assert!(whole_out.len() <= data.len());
    let (mut parts, mut parts_out) = (RtspScanner::default(), Vec::new());
    let first = parts.feed(&data[..split], &mut parts_out);
    let second = first.is_ok().then(|| parts.feed(&data[split..], &mut parts_out));
    if let (Ok(all), Ok(mut a), Some(Ok(b))) = (at_once, first, second) {
        a.extend(b);
        assert_eq!(all, a, "statuses depend on how the bytes were split");
        assert_eq!(whole_out, parts_out, "what passes depends on how the bytes were split");
    }
});
