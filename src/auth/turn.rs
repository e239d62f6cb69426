//! TURN REST credentials ("use-auth-secret" in coturn, draft-uberti-behave-turn-rest): the gateway and the TURN
//! server share a secret, and each authenticated publisher or viewer gets a username that expires and a
//! password derived from it, so no long-lived TURN password is ever handed to a browser.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// `username = "<expiry>:<user>"`, `credential = base64(HMAC-SHA1(secret, username))`.
pub fn rest_credential(secret: &str, user: &str, expires_at: u64) -> (String, String) {
    let username = format!("{expires_at}:{user}");
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(username.as_bytes());
    let credential = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (username, credential)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_what_coturn_computes() {
        // Python: base64(hmac.new(b"north", b"1700086400:viewer_1", hashlib.sha1).digest())
        assert_eq!(
            rest_credential("north", "viewer_1", 1_700_086_400),
            (
                "1700086400:viewer_1".to_string(),
                "+bzmnKUJVOEjFIMunsh5Zmo+toc=".to_string()
            )
        );
    }
}
