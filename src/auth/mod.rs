//! Credentials: Tencent's UserSig (TLSSigAPIv2) tickets, the PrivateMapKey room grants carried inside them,
//! the TC3-HMAC-SHA256 signatures of Cloud API calls, and TURN REST credentials for clients.
//!
//! Everything here is a pure function of its inputs (token, key, clock), so it is tested against the official
//! vectors without any I/O.

pub mod private_map_key;
pub mod tc3;
pub mod turn;
pub mod usersig;

pub use private_map_key::{PrivateMapKey, PrivateMapKeyError, Privileges};
pub use usersig::{UserSig, UserSigError};

/// Seconds since the Unix epoch, the clock UserSig uses.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A TRTC user id: 1-32 characters from letters, digits, `_` and `-`.
pub fn is_valid_user_id(s: &str) -> bool {
    (1..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A string room id as roomgate accepts it on RTMP/WHIP: 1-64 characters from letters, digits, `_` and `-`.
pub fn is_valid_str_room_id(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_rules() {
        assert!(is_valid_user_id("obs_anchor-1"));
        assert!(!is_valid_user_id(""));
        assert!(!is_valid_user_id(&"a".repeat(33)));
        assert!(is_valid_user_id(&"a".repeat(32)));
        assert!(!is_valid_user_id("a b"));
        assert!(is_valid_str_room_id(&"r".repeat(64)));
        assert!(!is_valid_str_room_id(&"r".repeat(65)));
        assert!(!is_valid_str_room_id("room/1"));
        assert!(!is_valid_str_room_id("room.1"));
    }
}
