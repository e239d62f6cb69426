//! An event-callback receiver as an app backend writes it (axum): checks each POST's `Sign` header
//! (base64(HMAC-SHA256(callback_key, raw body)), compared in constant time), drops duplicates by the
//! `X-Roomgate-Event-Id` header (delivery is at least once), prints each new event as one JSON line on stdout, and
//! answers 200 `{"code":0}` (401 to a bad Sign, so a forged callback is never acted on).
//!
//! It does not use roomgate's code: only hmac, sha2, base64 and subtle, so it can be copied into any backend.
//!
//! Run, then set the app's `callback_url = "http://127.0.0.1:9000/trtc/callback"` and the same `callback_key`:
//! ```sh
//! cargo run --example callback_receiver -- --listen 127.0.0.1:9000 --key <callback_key>
//! ```
//! Each line: `{"event_id": "...", "sdkappid": "...", "event": {EventGroupId, EventType, ..., EventInfo{...}}}`.
//! Diagnostics (listening, duplicates, rejected signatures) go to stderr.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use base64::Engine;
use clap::Parser;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::sync::{Arc, Mutex};
use subtle::ConstantTimeEq;

#[derive(Parser)]
#[command(about = "Receive roomgate/TRTC event callbacks: check Sign, drop duplicates, print JSON lines")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: std::net::SocketAddr,
    /// The app's `callback_key`.
    #[arg(long, env = "CALLBACK_KEY")]
    key: String,
    /// How many recent event ids to remember for deduplication.
    #[arg(long, default_value_t = 10_000)]
    remember: usize,
}

/// The most recent event ids, oldest evicted first: a bounded set.
struct Seen {
    ids: HashSet<String>,
    order: VecDeque<String>,
    capacity: usize,
}

impl Seen {
    /// True if `id` is new (and remember it).
    fn insert(&mut self, id: &str) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        if self.order.len() >= self.capacity.max(1) {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        self.ids.insert(id.to_string());
        self.order.push_back(id.to_string());
        true
    }
}

struct App {
    key: Vec<u8>,
    seen: Mutex<Seen>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let app = Arc::new(App {
        key: args.key.into_bytes(),
        seen: Mutex::new(Seen {
            ids: HashSet::new(),
            order: VecDeque::new(),
            capacity: args.remember,
        }),
    });
    // Any path: TRTC posts to whatever callback_url says.
    let router = Router::new()
        .route("/", post(callback))
        .route("/{*path}", post(callback))
        .with_state(app);
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.listen);
            std::process::exit(1);
        }
    };
    eprintln!("listening on http://{}", listener.local_addr().unwrap());
    if let Err(e) = axum::serve(listener, router).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

async fn callback(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    // 1. The signature over the exact bytes received (never over re-serialized JSON).
    let mut mac = Hmac::<Sha256>::new_from_slice(&app.key).expect("HMAC takes any key length");
    mac.update(&body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let given = header(&headers, "Sign");
    if !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
        eprintln!("rejected: bad Sign ({} bytes of body)", body.len());
        return (StatusCode::UNAUTHORIZED, r#"{"code":1,"message":"bad Sign"}"#);
    }
    let event: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("rejected: body is not JSON: {e}");
            return (StatusCode::BAD_REQUEST, r#"{"code":1,"message":"not JSON"}"#);
        }
    };

    // 2. Deduplicate: the same event is re-sent with the same id if our 200 got lost or came late.
    let event_id = header(&headers, "X-Roomgate-Event-Id").to_string();
    if !event_id.is_empty() && !app.seen.lock().unwrap().insert(&event_id) {
        eprintln!("duplicate {event_id} ignored");
        return (StatusCode::OK, r#"{"code":0}"#);
    }

    // 3. Handle it: here, one JSON line on stdout (flushed, so a pipe sees it at once).
    let line = serde_json::json!({
        "event_id": event_id,
        "sdkappid": header(&headers, "SdkAppId"),
        "event": event,
    });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    (StatusCode::OK, r#"{"code":0}"#)
}
