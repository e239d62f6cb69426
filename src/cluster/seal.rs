//! What nodes write to Redis for each other — node entries, published rooms, task mirrors and updates, task
//! control and takeover messages — carries an HMAC-SHA256 under `cluster.secret` (when one is set) bound to the key
//! or channel it is written to. A node ignores what does not carry a valid mark, so someone who can write to Redis
//! but does not know the secret cannot point viewers at another relay, start, stop or change tasks, or end anchors.
//! Each sealed value carries when it was sealed, and messages, node entries and updates are refused once older
//! than they can be (so replaying what one saw works for seconds, not forever; nodes' clocks must agree to within
//! those seconds: run NTP). What is left to such a writer: deleting keys, replaying recent values, and the plain
//! sets (room memberships, the node and task lists).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::Arc;

/// The marker of a sealed value: `rg1.<64 hex digits of the MAC>.<ms since the Unix epoch when sealed>.<body>`.
const PREFIX: &str = "rg1.";

/// Seals and opens the values nodes exchange through Redis. Without a secret it passes values through (a
/// cluster in redirect mode may run without one; whoever can write Redis is then trusted, as the README says).
#[derive(Clone, Default)]
pub struct Seal {
    key: Option<Arc<[u8]>>,
}

impl Seal {
    /// A seal under `secret`; an empty secret seals nothing.
    pub fn new(secret: &str) -> Seal {
        Seal {
            key: (!secret.is_empty()).then(|| Arc::from(secret.as_bytes())),
        }
    }

    fn mac(key: &[u8], place: &str, at_ms: u64, body: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(b"roomgate cluster value\0");
        mac.update(place.as_bytes());
        mac.update(b"\0");
        mac.update(at_ms.to_string().as_bytes());
        mac.update(b"\0");
        mac.update(body.as_bytes());
        mac
    }

    /// `body` as written to `place` (a Redis key or channel) now.
    pub fn seal(&self, place: &str, body: &str) -> String {
        self.seal_at(place, body, now_ms())
    }

    /// `body` sealed for `place` as of `at_ms`: the same inputs give the same string (leases are compared as
    /// strings inside Redis scripts, so theirs are sealed at a fixed time).
    pub fn seal_at(&self, place: &str, body: &str, at_ms: u64) -> String {
        let Some(key) = &self.key else {
            return body.to_string();
        };
        let tag = hex(&Self::mac(key, place, at_ms, body).finalize().into_bytes());
        format!("{PREFIX}{tag}.{at_ms}.{body}")
    }

    /// The body of `value` read from `place`, if it was sealed there under this secret (or, without a secret, if
    /// it is not sealed at all); `None` otherwise, counted in `roomgate_cluster_unsealed_total`.
    pub fn open<'a>(&self, place: &str, value: &'a str) -> Option<&'a str> {
        self.open_within(place, value, None)
    }

    /// `open`, and only if it was sealed less than `max_age` ago (or less than that in the future: clocks differ).
    pub fn open_fresh<'a>(&self, place: &str, value: &'a str, max_age: std::time::Duration) -> Option<&'a str> {
        self.open_within(place, value, Some(max_age))
    }

    fn open_within<'a>(&self, place: &str, value: &'a str, max_age: Option<std::time::Duration>) -> Option<&'a str> {
        let opened = match &self.key {
            None => (!value.starts_with(PREFIX)).then_some(value),
            Some(key) => value.strip_prefix(PREFIX).and_then(|rest| {
                let (hex, rest) = rest.split_at_checked(64)?;
                let (at, body) = rest.strip_prefix('.')?.split_once('.')?;
                let at_ms: u64 = at.parse().ok()?;
                let tag = unhex(hex)?;
                Self::mac(key, place, at_ms, body).verify_slice(&tag).ok()?;
                let fresh = max_age.is_none_or(|max| now_ms().abs_diff(at_ms) <= max.as_millis() as u64);
                fresh.then_some(body)
            }),
        };
        if opened.is_none() {
            metrics::counter!("roomgate_cluster_unsealed_total").increment(1);
            tracing::debug!(place, "ignored a cluster value without this cluster's seal");
        }
        opened
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Lowercase hex of `bytes` (MACs in sealed values and relay handshakes).
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of hex digits `s`, or `None` if it is not hex.
pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_where_and_under_the_secret_it_was_sealed() {
        let seal = Seal::new("0123456789abcdef0123456789abcdef");
        let v = seal.seal("roomgate:node:a", r#"{"id":"a"}"#);
        assert!(v.starts_with("rg1.") && v.ends_with(r#".{"id":"a"}"#), "{v}");
        assert_eq!(
            seal.seal_at("k", "x", 5),
            seal.seal_at("k", "x", 5),
            "the same inputs, the same string"
        );
        // Sealed long ago: opens, but not as fresh.
        let t = now_ms() - 60_000;
        let old = seal.seal_at("k", "x", t);
        assert_eq!(seal.open("k", &old), Some("x"));
        assert_eq!(seal.open_fresh("k", &old, std::time::Duration::from_secs(30)), None);
        assert_eq!(
            seal.open_fresh("k", &seal.seal("k", "x"), std::time::Duration::from_secs(30)),
            Some("x")
        );
        // The time is under the MAC.
        let moved = old.replacen(&format!(".{t}."), &format!(".{}.", t + 60_000), 1);
        assert_eq!(seal.open("k", &moved), None);
        assert_eq!(seal.open("roomgate:node:a", &v), Some(r#"{"id":"a"}"#));
        // Elsewhere, under another secret, changed, unsealed or cut short: nothing.
        assert_eq!(seal.open("roomgate:node:b", &v), None);
        assert_eq!(
            Seal::new("another secret of thirty-two chars!").open("roomgate:node:a", &v),
            None
        );
        assert_eq!(seal.open("roomgate:node:a", &v.replace("\"a\"}", "\"b\"}")), None);
        assert_eq!(seal.open("roomgate:node:a", r#"{"id":"a"}"#), None);
        for cut in [0, 3, 4, 20, 68, 69] {
            assert_eq!(seal.open("roomgate:node:a", &v[..cut]), None, "{cut}");
        }
        assert_eq!(seal.open("roomgate:node:a", &v.replacen("rg1.", "rg1.zz", 1)), None);
    }

    #[test]
    fn without_a_secret_values_pass_as_they_are_and_sealed_ones_are_refused() {
        let none = Seal::new("");
        assert_eq!(none.seal("k", "{}"), "{}");
        assert_eq!(none.open("k", "{}"), Some("{}"));
        let sealed = Seal::new("0123456789abcdef0123456789abcdef").seal("k", "{}");
        assert_eq!(none.open("k", &sealed), None);
    }
}
