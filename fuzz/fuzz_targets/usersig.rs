//! UserSig / PrivateMapKey decoding of arbitrary tokens.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomgate::auth::{PrivateMapKey, UserSig};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = UserSig::verify(s, 1, "u", "k", 0);
        let _ = PrivateMapKey::verify(s, 1, "u", "k", 0);
    }
    let _ = PrivateMapKey::parse_userbuf(data);
});
