//! The owner's side of relay links: this node sends one of its anchors to another node that has viewers for it,
//! from the cached GOP on (so the other node's viewers start at once), until the anchor leaves or the link ends.

use super::wire::{encode, Accept, Decoder, Record, CHALLENGE_LEN, MAGIC, MAX_RECORD};
use super::RelayError;
use crate::room::{RoomHub, RoomKey, RoomRef};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Links served at once; more are refused (each costs a subscriber on an anchor and a socket).
const MAX_LINKS: usize = 1024;
/// Connections that have not sent a signed request yet, at once: peers without the secret cannot take the slots of
/// working links.
const MAX_HANDSHAKES: usize = 64;
/// An edge has this long to send its request after connecting.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// With nothing else to send for this long (an anchor without media), the owner sends the video info again, so
/// the edge can tell a quiet link from a dead one.
const KEEPALIVE_EVERY: Duration = Duration::from_secs(3);
/// A frame that cannot be written for this long means the edge is gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a track's info is compared with what the edge was last told.
const INFO_EVERY: Duration = Duration::from_secs(1);

/// Accept relay links on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, hub: Arc<RoomHub>, secret: Arc<str>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_LINKS));
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    loop {
        let (sock, peer) = crate::limits::accept(&listener, "relay").await;
        let Ok(handshake) = handshakes.clone().try_acquire_owned() else {
            crate::limits::refused(
                "relay",
                "max_handshakes",
                &format_args!("{MAX_HANDSHAKES} pending, peer {peer}"),
            );
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            crate::limits::refused("relay", "max_links", &format_args!("{MAX_LINKS} links, peer {peer}"));
            continue;
        };
        let (hub, secret) = (hub.clone(), secret.clone());
        tokio::spawn(async move {
            let _permit = permit;
            metrics::gauge!("roomgate_cluster_relay_links", "side" => "owner").increment(1.0);
            match link(sock, &hub, &secret, handshake).await {
                Ok(()) => tracing::debug!(%peer, "relay link ended"),
                Err(e) => tracing::info!(%peer, error = %e, "relay link ended"),
            }
            metrics::gauge!("roomgate_cluster_relay_links", "side" => "owner").decrement(1.0);
        });
    }
}

/// One link: challenge, request, then the anchor's frames.
async fn link(
    mut sock: TcpStream,
    hub: &RoomHub,
    secret: &str,
    handshake: tokio::sync::OwnedSemaphorePermit,
) -> Result<(), RelayError> {
    let _ = sock.set_nodelay(true);
    let challenge: [u8; CHALLENGE_LEN] = rand::random();
    let mut hello = MAGIC.to_vec();
    hello.extend_from_slice(&challenge);
    sock.write_all(&hello).await?;

    let mut decoder = Decoder::for_request();
    let request = tokio::time::timeout(REQUEST_TIMEOUT, super::read_record(&mut sock, &mut decoder))
        .await
        .map_err(|_| RelayError::Timeout("the request"))??;
    drop(handshake);
    let Record::Request(req) = request else {
        return Err(RelayError::Unexpected("a request"));
    };
    let mut out = Vec::new();
    if !req.verify(secret, &challenge) {
        crate::limits::refused("relay", "bad_mac", &"a relay request not signed with cluster.secret");
        encode(
            &Record::Refuse("not signed with this cluster's secret".into()),
            &mut out,
        );
        let _ = sock.write_all(&out).await;
        return Err(RelayError::Refused("bad MAC".into()));
    }
    let room = match req.room_id_type.as_str() {
        "number" => req.room_id.parse().ok().map(RoomRef::Num),
        _ => Some(RoomRef::Str(req.room_id.clone())),
    };
    let anchor = room.and_then(|room| {
        let key = RoomKey {
            sdkappid: req.sdkappid,
            room,
        };
        hub.participant(&key, &req.userid)
    });
    let Some(anchor) = anchor else {
        encode(&Record::Refuse(format!("no anchor {:?} here", req.userid)), &mut out);
        let _ = sock.write_all(&out).await;
        return Ok(());
    };
    tracing::info!(sdkappid = req.sdkappid, room = %req.room_id, anchor = %req.userid, "relaying an anchor to another node");
    let mut video = anchor.video.subscribe();
    let mut audio = anchor.audio.subscribe();
    let mut told = (anchor.video_info(), anchor.audio_info());
    encode(
        &Record::Accept(Accept {
            userid: anchor.userid.clone(),
            source: anchor.source,
            video: told.0.clone(),
            audio: told.1.clone(),
        }),
        &mut out,
    );
    let (mut rd, mut wr) = sock.into_split();
    let mut info_tick = tokio::time::interval(INFO_EVERY);
    let mut last_write = tokio::time::Instant::now();
    let mut scratch = [0u8; 256];
    loop {
        // The cached GOP comes first from `recv`, then live frames; `Some(None)`: the anchor left.
        let frame = tokio::select! {
            f = video.recv() => Some(f),
            f = audio.recv() => Some(f),
            _ = info_tick.tick() => {
                let now = (anchor.video_info(), anchor.audio_info());
                if now.0 != told.0 {
                    encode(&Record::Info(crate::media::Codec::H264, now.0.clone()), &mut out);
                }
                if now.1 != told.1 {
                    encode(&Record::Info(crate::media::Codec::Opus, now.1.clone()), &mut out);
                }
                if out.is_empty() && last_write.elapsed() >= KEEPALIVE_EVERY {
                    encode(&Record::Info(crate::media::Codec::H264, now.0.clone()), &mut out);
                }
                told = now;
                None
            }
            // The edge sends nothing after its request: a read ends only when it closes the link.
            _ = rd.read(&mut scratch) => return Ok(()),
        };
        match frame {
            // A frame the edge would refuse (over the record limit) would break the link again at every reconnect.
            Some(Some(f)) if f.data.len() > MAX_RECORD - 16 => {
                metrics::counter!("roomgate_cluster_relay_dropped_total").increment(1);
            }
            Some(Some(f)) => encode(&Record::Frame(f), &mut out),
            Some(None) => {
                encode(&Record::End, &mut out);
                let _ = tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&out)).await;
                return Ok(());
            }
            None => {}
        }
        if !out.is_empty() {
            tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&out))
                .await
                .map_err(|_| RelayError::Timeout("a write"))??;
            out.clear();
            last_write = tokio::time::Instant::now();
        }
    }
}
