//! roomgate: a self-hosted media ingest gateway. Sources (RTMP push, WHIP, pull tasks) become virtual anchors in
//! rooms; viewers watch them over WebRTC. It speaks the public surface of Tencent TRTC's stream ingest.
//!
//! # Layout
//! One module per concept. A frame travels `ingest` → `media::Frame` → `room` track → `egress` → viewer.
//!
//! - `media`: the one `Frame` shape, pure codec helpers (FLV, H.264, AAC, VP8) and the libav transcoders, which
//!   hand their output to a `media::FrameSink`.
//! - `room`: rooms, anchors and their tracks (the fan-out hub); implements `FrameSink` for anchors.
//! - `auth`: credentials as pure functions (UserSig, PrivateMapKey grants on a `room::RoomRef`, TC3 signatures,
//!   TURN REST).
//! - `access`: the one home of "who may publish / who may watch" (`authorize_publish`, `authorize_play`).
//! - `rtc`: the WebRTC engine (str0m sessions on shared UDP/TCP sockets, sharded by core).
//! - `ingest`: sources (`rtmp`, `whip`, `pull`); `egress`: viewers (`whep`).
//! - `events` (room and task events, the durable callback outbox), `store` (SQLite).
//! - `api`: HTTP (Cloud API, WHIP/WHEP resources, console, admin, metrics, OpenAPI); `gateway`: wiring it all.
//! - `cluster`: cluster mode on Redis (registry, rooms across nodes, relay links, placement, tasks that survive
//!   nodes, Sentinel); a single node never touches it.
//! - `tls`: the certificate of the HTTPS and RTMPS listeners (loaded, reloaded on renewal, made for development).
//! - The program around it: `serve` (run the gateway, with `demo` provisioning on a fresh machine), `cli` (the
//!   client subcommands) and `client` (clients of a running gateway: Cloud API, admin).
//! - Leaves anyone may use: `config`, `limits`, `tls`.
//!
//! # The dependency rule
//! Dependencies point one way: `media ← room ← auth ← access ← ingest / egress ← events ← api ← gateway`.
//! `rtc` sits on `media` and serves `ingest` and `egress`; `config` (which names `media`'s Opus settings) is read
//! by everything above `media`; `limits` and `store` are leaves. A lower layer never names a higher one: `media`
//! knows nothing of rooms (it sees a `FrameSink`), `ingest` and `egress` do not import each other, and nothing
//! below `api` imports `api`; `serve`, `cli` and `client` sit on top, beside `gateway`.

#![warn(missing_docs)]

pub mod access;
pub mod api;
pub mod auth;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod egress;
pub mod events;
pub mod gateway;
pub mod ingest;
pub mod limits;
pub mod media;
pub mod room;
pub mod rtc;
pub mod serve;
pub mod store;
pub mod tls;

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
