//! roomgate: a self-hosted media ingest gateway. Sources (RTMP push, WHIP, pull tasks) become virtual anchors in
//! rooms; viewers watch them over WebRTC. It speaks the public surface of Tencent TRTC's stream ingest.

pub mod api;
pub mod auth;
pub mod config;
pub mod egress;
pub mod events;
pub mod gateway;
pub mod ingest;
pub mod limits;
pub mod media;
pub mod room;
pub mod rtc;
pub mod store;

pub use config::Config;

/// An error and its sources, joined with ": " (what a log line or an API reason should say).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
pub use gateway::Gateway;
