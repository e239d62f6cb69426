//! Anchors of other nodes, played here through a cluster relay link. Such an anchor is in no room of this node's
//! hub: its room, its callbacks and its identity (takeover) stay with the node it publishes to; here it only has
//! tracks for local viewers, fed by the link.

use super::{Anchor, SourceKind};
use crate::media::{Codec, Frame, TrackInfo};
use std::sync::Arc;

impl Anchor {
    /// An anchor outside every room, for a relay link to fill. Its session number is never compared with a room
    /// member's (it is in no room), so it takes one no hub hands out.
    pub fn detached(userid: &str, source: SourceKind) -> Arc<Anchor> {
        Anchor::new(userid, source, u64::MAX).0
    }

    /// Publish a frame the link read; false once the anchor has ended.
    pub fn publish_relayed(&self, frame: Frame) -> bool {
        self.track(frame.codec).publish(frame)
    }

    /// Replace what the `codec` track is reported to carry (the owner's info).
    pub fn set_info(&self, codec: Codec, info: TrackInfo) {
        let slot = match codec {
            Codec::H264 => &self.video_info,
            Codec::Opus => &self.audio_info,
        };
        *slot.lock().expect("info lock") = info;
    }

    /// End both tracks: local viewers drain what they have and then see the end, as when an anchor leaves.
    pub fn end(&self) {
        self.video.close();
        self.audio.close();
    }
}

/// Anchors of other nodes this node can play (cluster relay links): asked when a viewer wants an anchor that is
/// not in this node's hub. The egress sees only this, not the cluster.
pub trait RemoteAnchors: Send + Sync {
    /// The anchor `userid` (or the one a viewer would get) of `key`, relayed here; `None`: no other node has it
    /// or it cannot be reached.
    fn find<'a>(
        &'a self,
        key: &'a super::RoomKey,
        userid: Option<&'a str>,
    ) -> futures_util::future::BoxFuture<'a, Option<Arc<Anchor>>>;
}
