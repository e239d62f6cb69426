//! The edge's side of relay links: when a viewer here wants an anchor that publishes to another node, this node
//! opens one link to that node and serves the anchor's frames to all its local viewers from a detached anchor
//! (`room::Anchor::detached`: no room, no events here). The link ends when the anchor leaves its node or when no
//! local viewer has watched it for [`IDLE_CLOSE`]; if the owner node goes away while viewers watch, the link is
//! opened again (on whichever node has the anchor then) for up to [`RECONNECT_FOR`].

use super::wire::{challenge_of, encode, Decoder, Record, Request, CHALLENGE_LEN, MAGIC};
use super::RelayError;
use crate::cluster::{NodeInfo, Registry};
use crate::room::{Anchor, RemoteAnchors, RoomKey};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A link with no local viewer for this long is closed.
pub const IDLE_CLOSE: Duration = Duration::from_secs(10);
/// After a link breaks (not a clean end), how long it is tried again while viewers wait.
pub const RECONNECT_FOR: Duration = Duration::from_secs(20);
/// Connecting and the handshake together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// No byte from the owner for this long: the link is dead (an anchor sends audio every 20 to 60 ms).
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Which anchor a link carries: its room and user id.
type LinkKey = (RoomKey, String);

/// One open link as viewers see it: the anchor it fills, and when a viewer last had it or watched it.
#[derive(Clone)]
struct Link {
    anchor: Arc<Anchor>,
    touched: Arc<Mutex<Instant>>,
}

impl Link {
    fn touch(&self) {
        *self.touched.lock().expect("touched lock") = Instant::now();
    }
}

/// The anchors of other nodes relayed to this one, one link each, shared by every local viewer of the anchor.
pub struct RelayedAnchors {
    registry: Arc<Registry>,
    secret: String,
    links: Mutex<HashMap<LinkKey, Link>>,
    /// One lock per anchor being linked, so two viewers arriving together make one link, and a slow owner holds
    /// up only the viewers of its anchor.
    opening: Mutex<HashMap<LinkKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl RelayedAnchors {
    /// Relay anchors from the nodes `registry` knows, authenticating links with `secret`.
    pub fn new(registry: Arc<Registry>, secret: String) -> Arc<RelayedAnchors> {
        Arc::new(RelayedAnchors {
            registry,
            secret,
            links: Mutex::default(),
            opening: Mutex::default(),
        })
    }

    /// Relay links open now.
    pub fn links(&self) -> usize {
        self.links.lock().expect("links lock").len()
    }

    /// An open link's anchor for `room` (`userid`'s, or any when `None`), marked as just handed out.
    fn live(&self, room: &RoomKey, userid: Option<&str>) -> Option<Arc<Anchor>> {
        let links = self.links.lock().expect("links lock");
        let (_, link) = links
            .iter()
            .find(|((r, u), l)| r == room && userid.is_none_or(|id| id == u) && !l.anchor.video.is_closed())?;
        link.touch();
        Some(link.anchor.clone())
    }

    async fn relayed(self: Arc<Self>, key: RoomKey, userid: Option<String>) -> Option<Arc<Anchor>> {
        // An open link serves without asking Redis (which may be down).
        if let Some(a) = self.live(&key, userid.as_deref()) {
            return Some(a);
        }
        let (room_id, kind) = key.room.id_and_kind();
        let located = self
            .registry
            .locate(key.sdkappid, &room_id, kind, userid.as_deref())
            .await;
        let (node, userid) = match located {
            Ok(found) => found?,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look for the anchor on other nodes");
                return None;
            }
        };
        let link_key = (key.clone(), userid.clone());
        let gate = self
            .opening
            .lock()
            .expect("opening lock")
            .entry(link_key.clone())
            .or_default()
            .clone();
        let _one = gate.lock().await;
        let opened = match self.live(&key, Some(&userid)) {
            Some(a) => return Some(a),
            None => open(&node, &self.secret, &key, &userid).await,
        };
        self.opening.lock().expect("opening lock").remove(&link_key);
        let (sock, decoder, accept) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                tracing::warn!(node = %node.id, relay = %node.relay, anchor = %userid, error = %e, "cannot open a relay link");
                return None;
            }
        };
        let anchor = Anchor::detached(&accept.userid, accept.source);
        set_infos(&anchor, accept);
        let link = Link {
            anchor: anchor.clone(),
            touched: Arc::new(Mutex::new(Instant::now())),
        };
        self.links
            .lock()
            .expect("links lock")
            .insert(link_key.clone(), link.clone());
        metrics::gauge!("roomgate_cluster_relay_links", "side" => "edge").increment(1.0);
        tracing::info!(sdkappid = key.sdkappid, room = %key.room, anchor = %userid, from = %node.id, "relaying an anchor of another node");
        tokio::spawn(self.clone().carry(link_key, link, sock, decoder));
        Some(anchor)
    }

    /// Publish what the link brings until it ends; open it again while viewers wait if it broke.
    async fn carry(self: Arc<Self>, key: LinkKey, link: Link, mut sock: TcpStream, mut decoder: Decoder) {
        let anchor = link.anchor.clone();
        let mut published = Published::default();
        loop {
            match pump(&link, &mut sock, &mut decoder, &mut published).await {
                Ok(()) => break,
                Err(e) => tracing::info!(anchor = %key.1, error = %e, "relay link broke; opening it again"),
            }
            let Some((s, d)) = self.reopen(&key, &anchor).await else {
                break;
            };
            (sock, decoder) = (s, d);
            published.reopened();
        }
        anchor.end();
        let mut links = self.links.lock().expect("links lock");
        if links.get(&key).is_some_and(|l| Arc::ptr_eq(&l.anchor, &anchor)) {
            links.remove(&key);
        }
        metrics::gauge!("roomgate_cluster_relay_links", "side" => "edge").decrement(1.0);
    }

    /// A new link for `key` while someone still watches, for up to [`RECONNECT_FOR`].
    async fn reopen(&self, key: &LinkKey, anchor: &Anchor) -> Option<(TcpStream, Decoder)> {
        let (room_id, kind) = key.0.room.id_and_kind();
        let until = Instant::now() + RECONNECT_FOR;
        while Instant::now() < until && watched(anchor) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let Ok(Some((node, userid))) = self.registry.locate(key.0.sdkappid, &room_id, kind, Some(&key.1)).await
            else {
                continue;
            };
            if let Ok((sock, decoder, accept)) = open(&node, &self.secret, &key.0, &userid).await {
                // The anchor's node may have restarted with other settings.
                set_infos(anchor, accept);
                return Some((sock, decoder));
            }
        }
        None
    }
}

impl RemoteAnchors for Arc<RelayedAnchors> {
    fn find<'a>(
        &'a self,
        key: &'a RoomKey,
        userid: Option<&'a str>,
    ) -> futures_util::future::BoxFuture<'a, Option<Arc<Anchor>>> {
        Box::pin(self.clone().relayed(key.clone(), userid.map(str::to_string)))
    }
}

/// How far behind what was published a reopened link's first frame may start and still be a replay of the owner's
/// cached GOP (further back, the anchor's timeline started over: its node restarted).
const REPLAY_SPAN_MS: u64 = 30_000;

/// What this edge already published of a relayed anchor, per codec. A reopened link starts with the owner's
/// cached GOP — frames the viewers already had — and their time must not run backwards: until the link passes
/// what was published, its frames are dropped (video resumes at a keyframe, since frames were lost during the
/// break), unless the anchor's timeline started over.
#[derive(Debug, Default)]
struct Published {
    /// Last pts published (ms), video then audio.
    last: [Option<u64>; 2],
    /// Dropping the replay of a reopened link, video then audio.
    catching_up: [bool; 2],
}

impl Published {
    /// Whether to publish `f`.
    fn admit(&mut self, f: &crate::media::Frame) -> bool {
        let i = usize::from(f.codec == crate::media::Codec::Opus);
        let ms = f.pts_ms();
        if self.catching_up[i] {
            match self.last[i] {
                Some(last) if ms + REPLAY_SPAN_MS < last => self.catching_up[i] = false, // a new timeline
                Some(last) if ms <= last => return false,
                _ if i == 0 && !f.keyframe => return false,
                _ => self.catching_up[i] = false,
            }
        }
        self.last[i] = Some(ms);
        true
    }

    /// The link was opened again: what it sends first may be a replay.
    fn reopened(&mut self) {
        self.catching_up = [true, true];
    }
}

/// The track info an owner sent with its accept.
fn set_infos(anchor: &Anchor, accept: super::wire::Accept) {
    anchor.set_info(crate::media::Codec::H264, accept.video);
    anchor.set_info(crate::media::Codec::Opus, accept.audio);
}

/// Whether a local viewer is on the anchor (its fan-out subscribes to its tracks).
fn watched(anchor: &Anchor) -> bool {
    anchor.video.subscribers() + anchor.audio.subscribers() > 0
}

/// Connect to `node`'s relay listener and ask for `userid`'s anchor of `key`.
async fn open(
    node: &NodeInfo,
    secret: &str,
    key: &RoomKey,
    userid: &str,
) -> Result<(TcpStream, Decoder, super::wire::Accept), RelayError> {
    if node.relay.is_empty() {
        return Err(RelayError::Refused(format!("node {} serves no relay links", node.id)));
    }
    let handshake = async {
        let mut sock = TcpStream::connect(&node.relay).await?;
        let _ = sock.set_nodelay(true);
        let mut hello = [0u8; MAGIC.len() + CHALLENGE_LEN];
        sock.read_exact(&mut hello).await?;
        let challenge = challenge_of(&hello)?;
        let (room_id, kind) = key.room.id_and_kind();
        let req = Request::signed(secret, challenge, key.sdkappid, &room_id, kind, userid);
        let mut out = Vec::new();
        encode(&Record::Request(req), &mut out);
        sock.write_all(&out).await?;
        let mut decoder = Decoder::default();
        match super::read_record(&mut sock, &mut decoder).await? {
            Record::Accept(a) => Ok((sock, decoder, a)),
            Record::Refuse(why) => Err(RelayError::Refused(why)),
            _ => Err(RelayError::Unexpected("an accept")),
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, handshake)
        .await
        .map_err(|_| RelayError::Timeout("handshake"))?
}

/// Move frames from the link into its anchor until the owner ends the link (`Ok`), it breaks (`Err`), or no local
/// viewer has had or watched the anchor for [`IDLE_CLOSE`] (`Ok`).
async fn pump(
    link: &Link,
    sock: &mut TcpStream,
    decoder: &mut Decoder,
    published: &mut Published,
) -> Result<(), RelayError> {
    let anchor = &link.anchor;
    let mut buf = vec![0u8; 64 * 1024];
    let mut idle_check = tokio::time::interval(Duration::from_secs(1));
    let mut last_read = Instant::now();
    loop {
        while let Some(record) = decoder.next_record()? {
            match record {
                Record::Frame(f) => {
                    if published.admit(&f) {
                        anchor.publish_relayed(f);
                    }
                }
                Record::Info(codec, info) => anchor.set_info(codec, info),
                Record::End => return Ok(()),
                _ => return Err(RelayError::Unexpected("frames")),
            }
        }
        tokio::select! {
            read = sock.read(&mut buf) => {
                let n = read?;
                if n == 0 {
                    // Closed without `End`: the owner node went away.
                    return Err(RelayError::Closed);
                }
                decoder.feed(&buf[..n]);
                last_read = Instant::now();
            }
            _ = idle_check.tick() => {
                // The owner writes at least every few seconds (media, or its keepalive): silence is a dead link.
                if last_read.elapsed() >= READ_TIMEOUT {
                    return Err(RelayError::Timeout("frames"));
                }
                if watched(anchor) {
                    link.touch();
                } else if link.touched.lock().expect("touched lock").elapsed() >= IDLE_CLOSE {
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{Codec, Frame};

    fn frame(codec: Codec, ms: u64, keyframe: bool) -> Frame {
        Frame {
            codec,
            pts: ms * codec.clock_rate() as u64 / 1000,
            keyframe,
            data: Arc::from(&[0u8][..]),
            received_at: Instant::now(),
        }
    }

    #[test]
    fn a_reopened_links_replay_is_dropped_and_video_resumes_at_a_keyframe() {
        let mut p = Published::default();
        for ms in [0, 33, 66, 100] {
            assert!(p.admit(&frame(Codec::H264, ms, ms == 0)));
            assert!(p.admit(&frame(Codec::Opus, ms, false)));
        }
        p.reopened();
        // The owner's GOP again (from its keyframe at 0): already published.
        assert!(!p.admit(&frame(Codec::H264, 0, true)));
        assert!(!p.admit(&frame(Codec::H264, 100, false)));
        assert!(!p.admit(&frame(Codec::Opus, 100, false)));
        // Past it: audio at once, video at the next keyframe (frames were lost during the break).
        assert!(p.admit(&frame(Codec::Opus, 120, false)));
        assert!(!p.admit(&frame(Codec::H264, 500, false)));
        assert!(p.admit(&frame(Codec::H264, 2000, true)));
        assert!(p.admit(&frame(Codec::H264, 2033, false)));
        // A node that restarted sends a new timeline: published as it comes.
        let mut q = Published::default();
        assert!(q.admit(&frame(Codec::H264, 600_000, true)));
        q.reopened();
        assert!(q.admit(&frame(Codec::H264, 10, true)));
        assert!(q.admit(&frame(Codec::H264, 43, false)));
    }
}
