//! `Routes`: which session a packet on the shared port belongs to, for every engine shard at once.
//!
//! The engine runs its sessions on several shards (tasks on different cores) behind one UDP port and one TCP port.
//! A packet from a peer seen before is routed by its address; a new peer names its session by the local ufrag of
//! its first STUN request. The table is shared (one short lock per packet, only contended when a session comes or
//! goes) so that whichever task reads a packet can hand it to the shard that owns the session.

use super::demux::stun_local_ufrag;
use super::engine::SessionId;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use str0m::net::Protocol;

/// A peer: transport and address.
pub type Peer = (Protocol, SocketAddr);

/// Addresses remembered per session. A real peer uses a few (one per candidate pair it checks); anyone who saw
/// the ufrag in clear could otherwise grow the table by sending STUN from spoofed addresses for as long as the
/// session lives. Past the cap, STUN from a new address still reaches the session but is not remembered.
const MAX_PEERS_PER_SESSION: usize = 32;

#[derive(Default)]
struct Table {
    by_ufrag: HashMap<String, SessionId>,
    by_peer: HashMap<Peer, SessionId>,
    /// Every address learned for a session, so they go when it does.
    peers_of: HashMap<SessionId, Vec<Peer>>,
}

/// The shared routing table.
#[derive(Default)]
pub struct Routes(Mutex<Table>);

impl Routes {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic while holding the lock leaves the maps consistent (each method is a few map operations).
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A session that new peers find by its local ufrag.
    pub fn add(&self, ufrag: &str, id: SessionId) {
        self.table().by_ufrag.insert(ufrag.to_owned(), id);
    }

    /// An ICE restart gave the session a new local ufrag.
    pub fn rename(&self, old: &str, new: &str, id: SessionId) {
        let mut t = self.table();
        if t.by_ufrag.get(old) == Some(&id) {
            t.by_ufrag.remove(old);
        }
        t.by_ufrag.insert(new.to_owned(), id);
    }

    /// The session is gone: forget its ufrag and every address it was reached from.
    pub fn remove(&self, ufrag: &str, id: SessionId) {
        let mut t = self.table();
        if t.by_ufrag.get(ufrag) == Some(&id) {
            t.by_ufrag.remove(ufrag);
        }
        for peer in t.peers_of.remove(&id).unwrap_or_default() {
            if t.by_peer.get(&peer) == Some(&id) {
                t.by_peer.remove(&peer);
            }
        }
    }

    /// A TCP peer disconnected: its address may come back for another session.
    pub fn forget(&self, peer: Peer) {
        let mut t = self.table();
        if let Some(id) = t.by_peer.remove(&peer) {
            if let Some(list) = t.peers_of.get_mut(&id) {
                list.retain(|p| *p != peer);
            }
        }
    }

    /// The session `packet` from `peer` is for: the peer's known session, else the one its STUN request names
    /// (and the peer is remembered for it). None for strangers.
    pub fn route(&self, peer: Peer, packet: &[u8]) -> Option<SessionId> {
        let mut t = self.table();
        if let Some(id) = t.by_peer.get(&peer) {
            return Some(*id);
        }
        let id = *t.by_ufrag.get(stun_local_ufrag(packet)?)?;
        let known = t.peers_of.entry(id).or_default();
        if known.len() < MAX_PEERS_PER_SESSION {
            known.push(peer);
            t.by_peer.insert(peer, id);
        }
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A STUN binding request whose USERNAME is `local:remote`.
    fn stun(local: &str) -> Vec<u8> {
        let name = format!("{local}:remote");
        let padded = name.len().div_ceil(4) * 4;
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&((4 + padded) as u16).to_be_bytes());
        m.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&0x0006u16.to_be_bytes());
        m.extend_from_slice(&(name.len() as u16).to_be_bytes());
        m.extend_from_slice(name.as_bytes());
        m.resize(20 + 4 + padded, 0);
        m
    }

    fn udp(port: u16) -> Peer {
        (Protocol::Udp, SocketAddr::from(([127, 0, 0, 1], port)))
    }

    #[test]
    fn a_peer_is_found_by_its_stun_ufrag_then_by_its_address() {
        let r = Routes::default();
        r.add("abcd", 7);
        assert_eq!(
            r.route(udp(1000), b"\x80\x60rtp"),
            None,
            "a stranger's RTP goes nowhere"
        );
        assert_eq!(r.route(udp(1000), &stun("zzzz")), None, "an unknown ufrag goes nowhere");
        assert_eq!(r.route(udp(1000), &stun("abcd")), Some(7));
        assert_eq!(r.route(udp(1000), b"\x80\x60rtp"), Some(7), "then its RTP follows");
        assert_eq!(r.route(udp(1001), b"\x80\x60rtp"), None, "another port is another peer");
    }

    #[test]
    fn removing_a_session_forgets_its_ufrag_and_addresses_only() {
        let r = Routes::default();
        r.add("aaaa", 1);
        r.add("bbbb", 2);
        r.route(udp(1), &stun("aaaa"));
        r.route(udp(2), &stun("aaaa"));
        r.route(udp(3), &stun("bbbb"));
        r.remove("aaaa", 1);
        assert_eq!(r.route(udp(1), b"x"), None);
        assert_eq!(r.route(udp(2), b"x"), None);
        assert_eq!(r.route(udp(1), &stun("aaaa")), None);
        assert_eq!(r.route(udp(3), b"x"), Some(2), "the other session keeps its peer");
    }

    #[test]
    fn an_ice_restart_moves_the_ufrag_and_keeps_the_peers() {
        let r = Routes::default();
        r.add("old1", 5);
        r.route(udp(9), &stun("old1"));
        r.rename("old1", "new1", 5);
        assert_eq!(r.route(udp(10), &stun("old1")), None);
        assert_eq!(r.route(udp(10), &stun("new1")), Some(5));
        assert_eq!(r.route(udp(9), b"x"), Some(5));
        r.remove("new1", 5);
        assert_eq!(r.route(udp(9), b"x"), None);
        assert_eq!(r.route(udp(10), b"x"), None);
    }

    #[test]
    fn a_session_remembers_a_bounded_number_of_addresses() {
        let r = Routes::default();
        r.add("aaaa", 1);
        for port in 0..1000 {
            assert_eq!(
                r.route(udp(port), &stun("aaaa")),
                Some(1),
                "STUN still reaches the session"
            );
        }
        let t = r.table();
        assert_eq!(
            (t.by_peer.len(), t.peers_of[&1].len()),
            (MAX_PEERS_PER_SESSION, MAX_PEERS_PER_SESSION)
        );
        drop(t);
        assert_eq!(
            r.route(udp(999), b"rtp"),
            None,
            "an address past the cap is not remembered"
        );
        assert_eq!(r.route(udp(0), b"rtp"), Some(1));
    }

    #[test]
    fn a_closed_tcp_peer_can_return_for_another_session() {
        let r = Routes::default();
        let tcp = (Protocol::Tcp, SocketAddr::from(([10, 0, 0, 1], 5000)));
        r.add("aaaa", 1);
        r.add("bbbb", 2);
        assert_eq!(r.route(tcp, &stun("aaaa")), Some(1));
        r.forget(tcp);
        assert_eq!(r.route(tcp, &stun("bbbb")), Some(2));
        r.remove("aaaa", 1);
        assert_eq!(
            r.route(tcp, b"x"),
            Some(2),
            "removing the first session does not take the address back"
        );
    }
}
