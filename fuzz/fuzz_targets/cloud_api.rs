//! Cloud API request authentication: arbitrary Authorization headers, timestamps, signed-header lists and bodies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomgate::auth::tc3::{self, Tc3Authorization, Tc3Request};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = Tc3Authorization::parse(&text);
    let mut parts = text.splitn(3, '\n');
    let auth = parts.next().unwrap_or("").to_string();
    let ts = parts.next().unwrap_or("").to_string();
    let body = parts.next().unwrap_or("").as_bytes().to_vec();
    let header = |n: &str| match n {
        "authorization" => Some(auth.clone()),
        "x-tc-timestamp" => Some(ts.clone()),
        "content-type" => Some("application/json".into()),
        "host" => Some("h".into()),
        _ => None,
    };
    let req = Tc3Request { method: "POST", query: "", header, body: &body };
    let _ = tc3::verify(&req, |_| Some("key".into()), 1_700_000_000);
});
