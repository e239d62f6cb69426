//! Rooms and their participants: the hub every source publishes into and every viewer reads from.
//!
//! A room `(sdkappid, room id)` exists while it has participants. A virtual anchor is a participant
//! `(sdkappid, room, userid)` with a video and an audio `Track`. A second publisher with the same identity
//! replaces the first, which is told why and disconnected, as TRTC does; the room sees one participant.

mod relayed;
mod room_ref;
pub use relayed::RemoteAnchors;
pub use room_ref::RoomRef;
mod track;

pub use track::{Track, TrackStats, TrackSubscriber, SUBSCRIBER_QUEUE};

pub use crate::media::TrackInfo;
use crate::media::{Codec, Frame, FrameSink};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::{mpsc, watch};

/// The identity of a room.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoomKey {
    /// The app the room belongs to.
    pub sdkappid: u64,
    /// The room id within the app.
    pub room: RoomRef,
}

/// Where an anchor's media comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// An RTMP publisher (OBS, ffmpeg).
    Rtmp,
    /// A WHIP (WebRTC) publisher.
    Whip,
    /// A pull task's robot anchor.
    Pull,
    /// An SRT publisher (OBS, ffmpeg, hardware encoders).
    Srt,
}

/// Why an anchor left its room (mapped to TRTC's 104 `Reason` by the events module).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaveReason {
    /// The source ended its stream.
    Normal,
    /// The source stopped sending and timed out.
    Timeout,
    /// A new publisher with the same identity took over.
    Replaced,
    /// The gateway ended the publish (policy refusal, malformed stream...).
    Ended(String),
}

/// Room and media events, in the order they happened, for callbacks and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomEvent {
    /// The first anchor entered the room (TRTC 101).
    RoomCreated {
        /// The room.
        key: RoomKey,
        /// The anchor whose joining created the room.
        userid: String,
    },
    /// The last anchor left and the room is gone (TRTC 102).
    RoomDismissed {
        /// The room.
        key: RoomKey,
        /// The anchor whose leaving emptied the room.
        userid: String,
    },
    /// An anchor entered the room (TRTC 103).
    AnchorEntered {
        /// The room.
        key: RoomKey,
        /// The anchor's user id.
        userid: String,
        /// Where its media comes from.
        source: SourceKind,
    },
    /// An anchor left the room (TRTC 104).
    AnchorLeft {
        /// The room.
        key: RoomKey,
        /// The anchor's user id.
        userid: String,
        /// Why it left.
        reason: LeaveReason,
    },
    /// The first frame of a track, or the first after it had stopped.
    MediaStarted {
        /// The room.
        key: RoomKey,
        /// The anchor's user id.
        userid: String,
        /// Which track: H.264 is video (201), Opus audio (203).
        codec: Codec,
    },
    /// One kind of media stopped while the other goes on (an anchor that leaves gets `AnchorLeft` only).
    MediaStopped {
        /// The room.
        key: RoomKey,
        /// The anchor's user id.
        userid: String,
        /// Which track: H.264 is video (202), Opus audio (204).
        codec: Codec,
    },
}

/// A virtual anchor as its room knows it: who publishes, its two tracks, their info and viewer count.
pub struct Anchor {
    /// The anchor's user id in the room.
    pub userid: String,
    /// Where its media comes from.
    pub source: SourceKind,
    /// When it entered the room (wall clock).
    pub started_at: SystemTime,
    session: u64,
    /// The H.264 track.
    pub video: Track,
    /// The Opus track.
    pub audio: Track,
    video_info: Mutex<TrackInfo>,
    audio_info: Mutex<TrackInfo>,
    kick: watch::Sender<Option<LeaveReason>>,
    /// Set by sources that can make keyframes on demand (WebRTC publishers).
    keyframe_source: Mutex<Option<mpsc::UnboundedSender<()>>>,
    /// Whether video / audio flows (for 201-204 events).
    video_active: AtomicBool,
    audio_active: AtomicBool,
    /// Viewers watching (kept by the egress that serves them; the tracks see one subscriber per egress).
    viewers: std::sync::atomic::AtomicUsize,
}

impl Anchor {
    /// A new anchor with open, empty tracks, and the receiver of its kick (replacement) signal.
    fn new(userid: &str, source: SourceKind, session: u64) -> (Arc<Anchor>, watch::Receiver<Option<LeaveReason>>) {
        let (kick, kicked) = watch::channel(None);
        let anchor = Arc::new(Anchor {
            userid: userid.to_string(),
            source,
            started_at: SystemTime::now(),
            session,
            video: Track::new(Codec::H264),
            audio: Track::new(Codec::Opus),
            video_info: Mutex::default(),
            audio_info: Mutex::default(),
            kick,
            keyframe_source: Mutex::default(),
            video_active: AtomicBool::new(false),
            audio_active: AtomicBool::new(false),
            viewers: Default::default(),
        });
        (anchor, kicked)
    }

    /// Viewers watching this anchor now.
    pub fn viewers(&self) -> usize {
        self.viewers.load(Ordering::Relaxed)
    }

    /// Set by the egress that serves this anchor's viewers.
    pub fn set_viewers(&self, n: usize) {
        self.viewers.store(n, Ordering::Relaxed);
    }

    /// Ask the source for a keyframe. False when it cannot make one on demand (RTMP, files).
    pub fn request_keyframe(&self) -> bool {
        self.keyframe_source
            .lock()
            .expect("keyframe lock")
            .as_ref()
            .is_some_and(|tx| tx.send(()).is_ok())
    }

    /// What the video track carries now (codec, profile, size), as the source reported it.
    pub fn video_info(&self) -> TrackInfo {
        self.video_info.lock().expect("info lock").clone()
    }
    /// What the audio track carries now (codec, rates, channels), as the source reported it.
    pub fn audio_info(&self) -> TrackInfo {
        self.audio_info.lock().expect("info lock").clone()
    }
    fn active(&self, codec: Codec) -> &AtomicBool {
        match codec {
            Codec::H264 => &self.video_active,
            Codec::Opus => &self.audio_active,
        }
    }

    /// The video track for H.264, the audio track for Opus.
    pub fn track(&self, codec: Codec) -> &Track {
        match codec {
            Codec::H264 => &self.video,
            Codec::Opus => &self.audio,
        }
    }
}

/// A room: its participants by user id.
pub struct Room {
    /// Which room this is.
    pub key: RoomKey,
    /// When its first anchor entered (wall clock).
    pub created_at: SystemTime,
    participants: Mutex<HashMap<String, Arc<Anchor>>>,
}

impl Room {
    /// The anchors in the room, oldest first.
    pub fn participants(&self) -> Vec<Arc<Anchor>> {
        let mut v: Vec<_> = self.participants.lock().expect("room lock").values().cloned().collect();
        v.sort_by_key(|p| p.started_at);
        v
    }
    /// The anchor with user id `userid`, if it is in the room.
    pub fn participant(&self, userid: &str) -> Option<Arc<Anchor>> {
        self.participants.lock().expect("room lock").get(userid).cloned()
    }
}

/// All rooms of the gateway.
#[derive(Default)]
pub struct RoomHub {
    rooms: Mutex<HashMap<RoomKey, Arc<Room>>>,
    next_session: AtomicU64,
    observers: Mutex<Vec<mpsc::UnboundedSender<RoomEvent>>>,
}

impl RoomHub {
    /// An empty hub.
    pub fn new() -> Arc<RoomHub> {
        Arc::new(RoomHub::default())
    }

    /// Receive every room event from now on. Events are queued without bound so the media path never waits.
    pub fn observe(&self) -> mpsc::UnboundedReceiver<RoomEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.observers.lock().expect("observers lock").push(tx);
        rx
    }

    fn emit(&self, ev: RoomEvent) {
        self.observers
            .lock()
            .expect("observers lock")
            .retain(|tx| tx.send(ev.clone()).is_ok());
    }

    /// A publisher with the identity (`key`, `userid`) took it on another node: the anchor here with that
    /// identity is told it was replaced (its source then leaves, as on a local takeover). Whether one was told.
    pub fn replaced_elsewhere(&self, key: &RoomKey, userid: &str) -> bool {
        match self.participant(key, userid) {
            Some(p) => {
                tracing::info!(sdkappid = key.sdkappid, room = %key.room, userid, "anchor replaced by a publisher on another node");
                p.kick.send(Some(LeaveReason::Replaced)).is_ok()
            }
            _ => false,
        }
    }

    /// Enter `key` as anchor `userid`. An existing anchor with that identity is replaced and told so.
    pub fn join(self: &Arc<Self>, key: RoomKey, userid: &str, source: SourceKind) -> AnchorHandle {
        let (participant, kicked) = Anchor::new(userid, source, self.next_session.fetch_add(1, Ordering::Relaxed));
        // Events are emitted under the hub lock so their order is the order of the changes.
        let mut rooms = self.rooms.lock().expect("hub lock");
        let room = match rooms.get(&key) {
            Some(r) => r.clone(),
            None => {
                let r = Arc::new(Room {
                    key: key.clone(),
                    created_at: SystemTime::now(),
                    participants: Mutex::default(),
                });
                rooms.insert(key.clone(), r.clone());
                self.emit(RoomEvent::RoomCreated {
                    key: key.clone(),
                    userid: userid.to_string(),
                });
                r
            }
        };
        let old = room
            .participants
            .lock()
            .expect("room lock")
            .insert(userid.to_string(), participant.clone());
        if let Some(old) = old {
            Self::close_participant(&old);
            let _ = old.kick.send(Some(LeaveReason::Replaced));
            self.emit(RoomEvent::AnchorLeft {
                key: key.clone(),
                userid: userid.to_string(),
                reason: LeaveReason::Replaced,
            });
            tracing::info!(sdkappid = key.sdkappid, room = %key.room, userid, "anchor replaced by a new publisher");
        }
        self.emit(RoomEvent::AnchorEntered {
            key: key.clone(),
            userid: userid.to_string(),
            source,
        });
        metrics::gauge!("roomgate_publishers", "source" => source_label(source)).increment(1.0);
        drop(rooms);
        AnchorHandle {
            hub: self.clone(),
            room,
            participant,
            kicked,
            left: false,
        }
    }

    fn close_participant(p: &Anchor) {
        p.video.close();
        p.audio.close();
        metrics::gauge!("roomgate_publishers", "source" => source_label(p.source)).decrement(1.0);
    }

    fn leave(&self, room: &Arc<Room>, participant: &Arc<Anchor>, reason: LeaveReason) {
        let mut rooms = self.rooms.lock().expect("hub lock");
        let mut members = room.participants.lock().expect("room lock");
        // Only the current holder of the identity leaves; a replaced one already left.
        let current = members
            .get(&participant.userid)
            .is_some_and(|p| p.session == participant.session);
        if !current {
            return;
        }
        members.remove(&participant.userid);
        Self::close_participant(participant);
        self.emit(RoomEvent::AnchorLeft {
            key: room.key.clone(),
            userid: participant.userid.clone(),
            reason,
        });
        if members.is_empty() {
            if rooms.get(&room.key).is_some_and(|r| Arc::ptr_eq(r, room)) {
                rooms.remove(&room.key);
            }
            self.emit(RoomEvent::RoomDismissed {
                key: room.key.clone(),
                userid: participant.userid.clone(),
            });
        }
    }

    /// Emit `event` for `participant` only while it is still in its room (under the hub lock, so it cannot land
    /// after the anchor's `AnchorLeft`).
    fn emit_if_current(&self, key: &RoomKey, participant: &Anchor, event: RoomEvent) {
        let rooms = self.rooms.lock().expect("hub lock");
        let current = rooms.get(key).is_some_and(|r| {
            r.participants
                .lock()
                .expect("room lock")
                .get(&participant.userid)
                .is_some_and(|p| p.session == participant.session)
        });
        if current {
            self.emit(event);
        }
    }

    /// Emit `MediaStopped` for tracks idle longer than `idle` while the anchor's other track still flows. Called
    /// periodically by the gateway.
    pub fn sweep_idle_media(&self, idle: std::time::Duration) {
        let rooms = self.rooms.lock().expect("hub lock");
        for room in rooms.values() {
            for p in room.participants.lock().expect("room lock").values() {
                let flowing = |c: Codec| p.track(c).idle_for().is_some_and(|d| d <= idle);
                for (codec, other) in [(Codec::H264, Codec::Opus), (Codec::Opus, Codec::H264)] {
                    if p.active(codec).load(Ordering::Relaxed) && !flowing(codec) && flowing(other) {
                        p.active(codec).store(false, Ordering::Relaxed);
                        self.emit(RoomEvent::MediaStopped {
                            key: room.key.clone(),
                            userid: p.userid.clone(),
                            codec,
                        });
                    }
                }
            }
        }
    }

    /// Every room, oldest first.
    pub fn rooms(&self) -> Vec<Arc<Room>> {
        let mut v: Vec<_> = self.rooms.lock().expect("hub lock").values().cloned().collect();
        v.sort_by_key(|r| r.created_at);
        v
    }

    /// The room `key` names, while it has anchors.
    pub fn room(&self, key: &RoomKey) -> Option<Arc<Room>> {
        self.rooms.lock().expect("hub lock").get(key).cloned()
    }

    /// Anchor `userid` of room `key`, if it is in it.
    pub fn participant(&self, key: &RoomKey, userid: &str) -> Option<Arc<Anchor>> {
        self.room(key)?.participant(userid)
    }
}

fn source_label(s: SourceKind) -> &'static str {
    match s {
        SourceKind::Rtmp => "rtmp",
        SourceKind::Srt => "srt",
        SourceKind::Whip => "whip",
        SourceKind::Pull => "pull",
    }
}

/// The source's handle on its anchor (what RTMP, WHIP and pull sources hold). Dropping it takes the anchor out
/// of its room.
pub struct AnchorHandle {
    hub: Arc<RoomHub>,
    room: Arc<Room>,
    participant: Arc<Anchor>,
    kicked: watch::Receiver<Option<LeaveReason>>,
    left: bool,
}

impl AnchorHandle {
    /// The anchor this handle publishes as.
    pub fn participant(&self) -> &Arc<Anchor> {
        &self.participant
    }

    /// A handle that publishes into this anchor's tracks from another thread (e.g. a transcoder).
    pub fn sink(&self) -> AnchorSink {
        AnchorSink {
            hub: self.hub.clone(),
            key: self.room.key.clone(),
            participant: self.participant.clone(),
        }
    }

    /// Send a frame to its track's viewers; false once the anchor has left (or was replaced).
    pub fn publish(&self, frame: Frame) -> bool {
        publish(&self.hub, &self.room.key, &self.participant, frame)
    }

    /// Replace what the video track is reported to carry.
    pub fn set_video_info(&self, info: TrackInfo) {
        *self.participant.video_info.lock().expect("info lock") = info;
    }

    /// Replace what the audio track is reported to carry.
    pub fn set_audio_info(&self, info: TrackInfo) {
        *self.participant.audio_info.lock().expect("info lock") = info;
    }

    /// Keyframe requests from viewers (for sources that can make keyframes on demand).
    pub fn keyframe_requests(&self) -> mpsc::UnboundedReceiver<()> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.participant.keyframe_source.lock().expect("keyframe lock") = Some(tx);
        rx
    }

    /// A signal that becomes `Some(reason)` when another publisher takes over this identity.
    pub fn kick_signal(&self) -> watch::Receiver<Option<LeaveReason>> {
        self.kicked.clone()
    }

    /// Resolves when another publisher took over this identity.
    pub async fn replaced(&mut self) -> LeaveReason {
        loop {
            if let Some(r) = self.kicked.borrow().clone() {
                return r;
            }
            if self.kicked.changed().await.is_err() {
                return LeaveReason::Normal;
            }
        }
    }

    /// Leave the room with a reason (dropping leaves with `Normal`).
    pub fn leave(mut self, reason: LeaveReason) {
        self.left = true;
        self.hub.leave(&self.room, &self.participant, reason);
    }
}

impl Drop for AnchorHandle {
    fn drop(&mut self) {
        if !self.left {
            self.hub.leave(&self.room, &self.participant, LeaveReason::Normal);
        }
    }
}

/// Publishes frames into one anchor's tracks. Cheap to clone; publishing after the anchor left does nothing.
#[derive(Clone)]
pub struct AnchorSink {
    hub: Arc<RoomHub>,
    key: RoomKey,
    participant: Arc<Anchor>,
}

impl FrameSink for AnchorSink {
    fn set_video_info(&self, info: TrackInfo) {
        *self.participant.video_info.lock().expect("info lock") = info;
    }

    fn publish(&self, frame: Frame) -> bool {
        publish(&self.hub, &self.key, &self.participant, frame)
    }
}

/// Publish `frame` into the anchor's track of its codec (nothing is cloned but the frame's `Arc`); the first frame
/// of a kind announces it (201/203) while the anchor is its room's.
fn publish(hub: &RoomHub, key: &RoomKey, participant: &Arc<Anchor>, frame: Frame) -> bool {
    let codec = frame.codec;
    let ok = participant.track(codec).publish(frame);
    if ok && !participant.active(codec).swap(true, Ordering::Relaxed) {
        hub.emit_if_current(
            key,
            participant,
            RoomEvent::MediaStarted {
                key: key.clone(),
                userid: participant.userid.clone(),
                codec,
            },
        );
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn key(room: &str) -> RoomKey {
        RoomKey {
            sdkappid: 1,
            room: RoomRef::Str(room.into()),
        }
    }

    #[tokio::test]
    async fn rooms_live_while_they_have_anchors() {
        let hub = RoomHub::new();
        let mut ev = hub.observe();
        let a = hub.join(key("r"), "a", SourceKind::Rtmp);
        let b = hub.join(key("r"), "b", SourceKind::Rtmp);
        assert_eq!(hub.room(&key("r")).unwrap().participants().len(), 2);
        drop(a);
        assert!(hub.room(&key("r")).is_some());
        b.leave(LeaveReason::Timeout);
        assert!(hub.room(&key("r")).is_none());
        let mut kinds = vec![];
        while let Ok(e) = ev.try_recv() {
            kinds.push(match e {
                RoomEvent::RoomCreated { .. } => "101",
                RoomEvent::RoomDismissed { .. } => "102",
                RoomEvent::AnchorEntered { .. } => "103",
                RoomEvent::AnchorLeft { .. } => "104",
                RoomEvent::MediaStarted { .. } | RoomEvent::MediaStopped { .. } => "20x",
            });
        }
        assert_eq!(kinds, vec!["101", "103", "103", "104", "104", "102"]);
    }

    #[tokio::test]
    async fn second_publisher_replaces_first() {
        let hub = RoomHub::new();
        let mut first = hub.join(key("r"), "a", SourceKind::Rtmp);
        let mut sub = first.participant().video.subscribe();
        let second = hub.join(key("r"), "a", SourceKind::Rtmp);
        assert_eq!(first.replaced().await, LeaveReason::Replaced);
        assert!(sub.recv().await.is_none(), "viewers of the replaced anchor see its end");
        assert!(!first.publish(Frame {
            codec: Codec::H264,
            pts: 0,
            keyframe: true,
            data: Vec::new().into(),
            received_at: Instant::now()
        }));
        drop(first); // must not remove the new anchor
        let room = hub.room(&key("r")).unwrap();
        assert_eq!(room.participants().len(), 1);
        assert!(Arc::ptr_eq(
            room.participant("a").as_ref().unwrap(),
            second.participant()
        ));
    }
}
