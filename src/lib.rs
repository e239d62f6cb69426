//! roomgate: a self-hosted media ingest gateway. Sources (RTMP push, WHIP, pull tasks) become virtual anchors in
//! rooms; viewers watch them over WebRTC. It speaks the public surface of Tencent TRTC's stream ingest.

pub mod api;
pub mod auth;
pub mod config;
pub mod egress;
pub mod events;
pub mod gateway;
pub mod ingest;
pub mod media;
pub mod room;
pub mod rtc;
pub mod store;

pub use config::Config;
pub use gateway::Gateway;
