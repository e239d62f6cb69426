//! TC3-HMAC-SHA256: the request signature of Tencent Cloud API 3.0, which the official SDKs put on every call.
//!
//! `Tc3Verifier::verify` checks a request the way Tencent's API gateway does: the `Authorization` header names
//! the SecretId, the UTC date, the service and the headers the client chose to sign; we rebuild the canonical
//! request from exactly those headers (lowercased names and values) and the raw body bytes, and compare
//! signatures in constant time. `sign` is the client side (our CLI and tests), built from the same functions.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The algorithm name that starts the `Authorization` header and the string to sign.
pub const ALGORITHM: &str = "TC3-HMAC-SHA256";
/// How far `X-TC-Timestamp` may be from our clock.
pub const MAX_SKEW_SECS: u64 = 300;

/// Why a request's signature was refused; each maps to one Cloud API error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Tc3Error {
    /// The `Authorization` header is absent or malformed, or its scope or service is wrong.
    #[error("the Authorization header is missing or malformed: {0}")]
    InvalidAuthorization(String),
    /// `X-TC-Timestamp` is absent or not a number.
    #[error("X-TC-Timestamp is missing or not a number")]
    MissingTimestamp,
    /// `timestamp` is more than `MAX_SKEW_SECS` away from our clock `now` (both Unix seconds).
    #[error("the signature expired: X-TC-Timestamp {timestamp} is more than 5 minutes from server time {now}")]
    SignatureExpire {
        /// `X-TC-Timestamp` as sent, Unix seconds.
        timestamp: u64,
        /// Our clock at the check, Unix seconds.
        now: u64,
    },
    /// No API key with this SecretId is configured.
    #[error("SecretId {0} is not known to this gateway")]
    SecretIdNotFound(String),
    /// The recomputed signature differs from the one sent.
    #[error("the signature does not match (check the SecretKey, the signed headers and the body)")]
    SignatureFailure,
    /// The signature was already used, and this use or the earlier one is not idempotent.
    #[error("this signature was already used: sign each request anew")]
    Replayed,
    /// The replay cache is full of still-valid signatures; the request is refused.
    #[error("too many signed requests within the signature window; try again shortly")]
    ReplayCacheFull,
}

impl Tc3Error {
    /// The Cloud API error code for this failure.
    pub fn code(&self) -> &'static str {
        match self {
            Tc3Error::InvalidAuthorization(_) => "AuthFailure.InvalidAuthorization",
            Tc3Error::MissingTimestamp => "MissingParameter",
            Tc3Error::SignatureExpire { .. } => "AuthFailure.SignatureExpire",
            Tc3Error::SecretIdNotFound(_) => "AuthFailure.SecretIdNotFound",
            Tc3Error::SignatureFailure => "AuthFailure.SignatureFailure",
            Tc3Error::Replayed => "AuthFailure.InvalidAuthorization",
            Tc3Error::ReplayCacheFull => "RequestLimitExceeded",
        }
    }
}

/// The parts of a `TC3-HMAC-SHA256 Credential=.., SignedHeaders=.., Signature=..` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tc3Authorization {
    /// The SecretId from the `Credential` scope.
    pub secret_id: String,
    /// The UTC date (`YYYY-MM-DD`) from the `Credential` scope.
    pub date: String,
    /// The service label from the `Credential` scope (`trtc`, or an endpoint's first DNS label).
    pub service: String,
    /// `SignedHeaders`, lowercased; always includes `content-type` and `host`.
    pub signed_headers: Vec<String>,
    /// `Signature`: 64 hex digits, lowercased.
    pub signature: String,
}

impl Tc3Authorization {
    /// Parse and check an `Authorization` header's form; verifies nothing cryptographic.
    pub fn parse(header: &str) -> Result<Self, Tc3Error> {
        let bad = |why: &str| Tc3Error::InvalidAuthorization(why.to_string());
        let rest = header
            .trim()
            .strip_prefix(ALGORITHM)
            .ok_or_else(|| bad("it must start with TC3-HMAC-SHA256"))?;
        let (mut credential, mut signed, mut signature) = (None, None, None);
        for part in rest.split(',') {
            let (k, v) = part
                .trim()
                .split_once('=')
                .ok_or_else(|| bad("expected key=value parts"))?;
            match k.trim() {
                "Credential" => credential = Some(v.trim()),
                "SignedHeaders" => signed = Some(v.trim()),
                "Signature" => signature = Some(v.trim()),
                _ => {}
            }
        }
        let credential = credential.ok_or_else(|| bad("no Credential"))?;
        let mut scope = credential.split('/');
        let (Some(secret_id), Some(date), Some(service), Some("tc3_request"), None) =
            (scope.next(), scope.next(), scope.next(), scope.next(), scope.next())
        else {
            return Err(bad("Credential must be <SecretId>/<YYYY-MM-DD>/<service>/tc3_request"));
        };
        let signed_headers: Vec<String> = signed
            .ok_or_else(|| bad("no SignedHeaders"))?
            .split(';')
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        for required in ["content-type", "host"] {
            if !signed_headers.iter().any(|h| h == required) {
                return Err(bad(&format!("SignedHeaders must include {required}")));
            }
        }
        let signature = signature.ok_or_else(|| bad("no Signature"))?;
        if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("Signature must be 64 hex digits"));
        }
        Ok(Tc3Authorization {
            secret_id: secret_id.to_string(),
            date: date.to_string(),
            service: service.to_string(),
            signed_headers,
            signature: signature.to_ascii_lowercase(),
        })
    }
}

/// Lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

/// The UTC date (`YYYY-MM-DD`) of a Unix timestamp.
pub fn utc_date(ts: u64) -> String {
    // Howard Hinnant's civil_from_days.
    let z = (ts / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// `Method \n / \n query \n canonical headers \n signed headers \n hex(sha256(payload))`. `headers` gives the
/// value of a (lowercase) header name; names and values are lowercased and trimmed as TC3 requires.
pub fn canonical_request(
    method: &str,
    query: &str,
    signed_headers: &[String],
    header: impl Fn(&str) -> Option<String>,
    payload_hash: &str,
) -> String {
    let mut names: Vec<&String> = signed_headers.iter().collect();
    names.sort();
    let canonical_headers: String = names
        .iter()
        .map(|n| format!("{n}:{}\n", header(n).unwrap_or_default().trim().to_ascii_lowercase()))
        .collect();
    let joined: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    format!(
        "{}\n/\n{query}\n{canonical_headers}\n{}\n{payload_hash}",
        method.to_ascii_uppercase(),
        joined.join(";")
    )
}

/// The hex signature of a canonical request.
pub fn signature(secret_key: &str, service: &str, timestamp: u64, canonical_request: &str) -> String {
    let date = utc_date(timestamp);
    let string_to_sign = format!(
        "{ALGORITHM}\n{timestamp}\n{date}/{service}/tc3_request\n{}",
        sha256_hex(canonical_request.as_bytes())
    );
    let k_date = hmac(format!("TC3{secret_key}").as_bytes(), date.as_bytes());
    let k_service = hmac(&k_date, service.as_bytes());
    let k_signing = hmac(&k_service, b"tc3_request");
    hex(&hmac(&k_signing, string_to_sign.as_bytes()))
}

/// Client side: the `Authorization` header for a JSON `POST /` signed over content-type and host (what
/// Tencent's Python SDK signs).
pub fn sign_post(secret_id: &str, secret_key: &str, service: &str, host: &str, timestamp: u64, body: &[u8]) -> String {
    sign(secret_id, secret_key, service, host, None, timestamp, body)
}

/// Client side, as our CLI signs: content-type, host and `X-TC-Action`, so a captured request cannot be
/// replayed as another action with the same body (Describe and Stop take the same parameters).
pub fn sign_post_action(
    secret_id: &str,
    secret_key: &str,
    service: &str,
    host: &str,
    action: &str,
    timestamp: u64,
    body: &[u8],
) -> String {
    sign(secret_id, secret_key, service, host, Some(action), timestamp, body)
}

fn sign(
    secret_id: &str,
    secret_key: &str,
    service: &str,
    host: &str,
    action: Option<&str>,
    timestamp: u64,
    body: &[u8],
) -> String {
    let mut signed = vec!["content-type".to_string(), "host".to_string()];
    if action.is_some() {
        signed.push("x-tc-action".to_string());
    }
    let canonical = canonical_request(
        "POST",
        "",
        &signed,
        |h| match h {
            "content-type" => Some("application/json".into()),
            "host" => Some(host.into()),
            "x-tc-action" => action.map(str::to_string),
            _ => None,
        },
        &sha256_hex(body),
    );
    format!(
        "{ALGORITHM} Credential={secret_id}/{}/{service}/tc3_request, SignedHeaders={}, Signature={}",
        utc_date(timestamp),
        signed.join(";"),
        signature(secret_key, service, timestamp, &canonical)
    )
}

/// Whether a credential scope's service label is well formed: the official SDKs put `trtc` there, or (the
/// Node.js and Java SDKs) the first DNS label of the endpoint they were given (`127`, `roomgate`, ...).
/// Any label is accepted: the signature binds it, so it cannot be changed without the key.
fn is_service_label(s: &str) -> bool {
    (1..=63).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Signatures seen within their validity window, so that a captured request cannot be sent again (TC3 has no
/// nonce: the timestamp window is all that limits a replay otherwise). Idempotent actions (reads, Stop) may
/// repeat a signature: an SDK polling Describe twice within one second signs the same bytes twice, and since
/// Tencent's SDKs do not sign `X-TC-Action`, a Describe and a Stop of the same task within one second carry the
/// same signature too. Any reuse that involves a Start or an Update is a replay. Bounded: when
/// it is full of signatures still inside their window, new requests are refused (fail closed) rather than
/// forgetting one that could then be replayed; per-SecretId rate limits run first, so it fills only through
/// keys with very high limits.
pub struct ReplayCache {
    seen: std::collections::HashMap<String, (u64, bool)>,
    order: std::collections::VecDeque<(u64, String)>,
    capacity: usize,
}

impl Default for ReplayCache {
    fn default() -> Self {
        ReplayCache::new(100_000)
    }
}

impl ReplayCache {
    /// A cache that holds at most `capacity` signatures (at least 1).
    pub fn new(capacity: usize) -> Self {
        ReplayCache {
            seen: Default::default(),
            order: Default::default(),
            capacity: capacity.max(1),
        }
    }

    /// Record `v`'s signature for an action that is `idempotent` or not; a replay is an error.
    pub fn check(&mut self, v: &Verified, idempotent: bool, now: u64) -> Result<(), Tc3Error> {
        // Entries are dropped in arrival order once expired (expiries differ by at most the skew window).
        while self.order.front().is_some_and(|(expiry, _)| *expiry <= now) {
            let (_, sig) = self.order.pop_front().expect("non-empty");
            self.seen.remove(&sig);
        }
        match self.seen.get(&v.signature) {
            Some((_, true)) if idempotent => return Ok(()),
            Some(_) => return Err(Tc3Error::Replayed),
            None => {}
        }
        if self.order.len() >= self.capacity {
            return Err(Tc3Error::ReplayCacheFull);
        }
        // After this, X-TC-Timestamp is outside the window and `verify` refuses the request anyway.
        let expiry = v.timestamp.saturating_add(MAX_SKEW_SECS + 1);
        self.seen.insert(v.signature.clone(), (expiry, idempotent));
        self.order.push_back((expiry, v.signature.clone()));
        Ok(())
    }
}

/// What a verified request needs from the HTTP layer.
pub struct Tc3Request<'a, H: Fn(&str) -> Option<String>> {
    /// The HTTP method, e.g. `POST`.
    pub method: &'a str,
    /// The raw query string (empty for POST).
    pub query: &'a str,
    /// Header lookup by lowercase name.
    pub header: H,
    /// The raw request body, as signed.
    pub body: &'a [u8],
}

/// A request whose signature checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The SecretId that signed the request.
    pub secret_id: String,
    /// The signature (lowercase hex), for the replay cache.
    pub signature: String,
    /// `X-TC-Timestamp`, Unix seconds.
    pub timestamp: u64,
}

/// Verify a request; `secret_key_of` looks up a SecretId's key. The body must be signed (`UNSIGNED-PAYLOAD` is
/// refused: the body is what a signature must protect here).
pub fn verify<H: Fn(&str) -> Option<String>>(
    req: &Tc3Request<'_, H>,
    secret_key_of: impl Fn(&str) -> Option<String>,
    now: u64,
) -> Result<Verified, Tc3Error> {
    let auth = Tc3Authorization::parse(
        &(req.header)("authorization").ok_or_else(|| Tc3Error::InvalidAuthorization("no Authorization".into()))?,
    )?;
    let timestamp: u64 = (req.header)("x-tc-timestamp")
        .and_then(|t| t.trim().parse().ok())
        .ok_or(Tc3Error::MissingTimestamp)?;
    if timestamp.abs_diff(now) > MAX_SKEW_SECS {
        return Err(Tc3Error::SignatureExpire { timestamp, now });
    }
    if !is_service_label(&auth.service) {
        return Err(Tc3Error::InvalidAuthorization(format!(
            "Credential names service {:?}, which is not a service name",
            auth.service
        )));
    }
    if auth.date != utc_date(timestamp) {
        return Err(Tc3Error::InvalidAuthorization(format!(
            "Credential date {} is not the UTC date of X-TC-Timestamp ({})",
            auth.date,
            utc_date(timestamp)
        )));
    }
    let key = secret_key_of(&auth.secret_id).ok_or_else(|| Tc3Error::SecretIdNotFound(auth.secret_id.clone()))?;
    if (req.header)("x-tc-content-sha256").is_some_and(|v| v.trim().eq_ignore_ascii_case("UNSIGNED-PAYLOAD")) {
        return Err(Tc3Error::InvalidAuthorization(
            "UNSIGNED-PAYLOAD is not accepted: sign the request body".into(),
        ));
    }
    let payload_hash = sha256_hex(req.body);
    let matches = |header: &dyn Fn(&str) -> Option<String>| {
        let canonical = canonical_request(req.method, req.query, &auth.signed_headers, header, &payload_hash);
        let expected = signature(&key, &auth.service, timestamp, &canonical);
        bool::from(expected.as_bytes().ct_eq(auth.signature.as_bytes()))
    };
    // Tencent's Node.js SDK signs the host name without the port it sends in `Host`; accept that form too
    // (the signature still binds the host name).
    let host_without_port = |n: &str| match n {
        "host" => (req.header)("host").map(|h| match h.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(':') => name.to_string(),
            _ => h,
        }),
        _ => (req.header)(n),
    };
    if matches(&req.header) || matches(&host_without_port) {
        Ok(Verified {
            secret_id: auth.secret_id,
            signature: auth.signature,
            timestamp,
        })
    } else {
        Err(Tc3Error::SignatureFailure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE";
    const ID: &str = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE";

    fn headers(list: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |n| list.iter().find(|(k, _)| *k == n).map(|(_, v)| v.to_string())
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(1539084154), "2018-10-09");
        assert_eq!(utc_date(1700000000), "2023-11-14");
        assert_eq!(utc_date(951782400), "2000-02-29");
        assert_eq!(utc_date(1735689599), "2024-12-31");
        assert_eq!(utc_date(1735689600), "2025-01-01");
    }

    #[test]
    fn official_get_vector() {
        let signed = vec!["content-type".to_string(), "host".to_string()];
        let h = headers(&[
            ("content-type", "application/x-www-form-urlencoded"),
            ("host", "cvm.tencentcloudapi.com"),
        ]);
        let canonical = canonical_request("GET", "Limit=10&Offset=0", &signed, h, &sha256_hex(b""));
        assert_eq!(
            sha256_hex(canonical.as_bytes()),
            "91c9c192c14460df6c1ffc69e34e6c5e90708de2a6d282cccf957dbf1aa7f3a7"
        );
        assert_eq!(
            signature(KEY, "cvm", 1539084154, &canonical),
            "5da7a33f6993f0614b047e5df4582db9e9bf4672ba50567dba16c6ccf174c474"
        );
    }

    #[test]
    fn official_post_canonical_vector() {
        let body = r#"{"Limit": 1, "Filters": [{"Values": ["\u672a\u547d\u540d"], "Name": "instance-name"}]}"#;
        assert_eq!(
            sha256_hex(body.as_bytes()),
            "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
        );
        let signed: Vec<String> = ["content-type", "host", "x-tc-action"].map(String::from).to_vec();
        let h = headers(&[
            ("content-type", "application/json; charset=utf-8"),
            ("host", "cvm.tencentcloudapi.com"),
            ("x-tc-action", "DescribeInstances"),
        ]);
        let canonical = canonical_request("POST", "", &signed, h, &sha256_hex(body.as_bytes()));
        assert_eq!(
            sha256_hex(canonical.as_bytes()),
            "7019a55be8395899b900fb5564e4200d984910f34794a27cb3fb7d10ff6a1e84"
        );
    }

    #[test]
    fn trtc_vector_signs_and_verifies() {
        let body = br#"{"SdkAppId":1400000000,"TaskId":"task-1"}"#;
        assert_eq!(
            sha256_hex(body),
            "19f78aead9331810bf6be32301131a4012d82c34ca267aa524cc94024a6f1e00"
        );
        let auth = sign_post(ID, KEY, "trtc", "trtc.tencentcloudapi.com", 1700000000, body);
        assert!(
            auth.ends_with("faff4d1e6e09b93906f693e0531b23162298e3734528a54a477fddf7fc5353ab"),
            "{auth}"
        );
        assert!(auth.contains("Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE/2023-11-14/trtc/tc3_request"));

        let auth: &'static str = Box::leak(auth.into_boxed_str());
        let list: &'static [(&str, &str)] = Box::leak(Box::new([
            ("authorization", auth),
            ("content-type", "application/json"),
            ("host", "trtc.tencentcloudapi.com"),
            ("x-tc-timestamp", "1700000000"),
        ]));
        let keys = |id: &str| (id == ID).then(|| KEY.to_string());
        let req = |body: &'static [u8]| Tc3Request {
            method: "POST",
            query: "",
            header: headers(list),
            body,
        };
        assert_eq!(verify(&req(body), keys, 1700000100).unwrap().secret_id, ID);
        // A changed body, another key, a stale clock, an unknown id: each refused with its own code.
        let other: &'static [u8] = br#"{"SdkAppId":1400000000,"TaskId":"task-2"}"#;
        assert_eq!(verify(&req(other), keys, 1700000000), Err(Tc3Error::SignatureFailure));
        let wrong_key = |_: &str| Some("another".to_string());
        assert_eq!(
            verify(&req(body), wrong_key, 1700000000),
            Err(Tc3Error::SignatureFailure)
        );
        assert_eq!(
            verify(&req(body), keys, 1700000301).unwrap_err().code(),
            "AuthFailure.SignatureExpire"
        );
        assert_eq!(
            verify(&req(body), |_: &str| None, 1700000000).unwrap_err().code(),
            "AuthFailure.SecretIdNotFound"
        );
    }

    /// A request as a client would send it: `extra` headers on top of content-type, host and timestamp.
    fn request_headers(auth: String, extra: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let mut list = vec![
            ("authorization".to_string(), auth),
            ("content-type".to_string(), "application/json".to_string()),
            ("host".to_string(), "127.0.0.1:8080".to_string()),
            ("x-tc-timestamp".to_string(), "1700000000".to_string()),
        ];
        list.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        move |n: &str| list.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone())
    }

    #[test]
    fn any_service_label_the_signature_binds_and_no_unsigned_payload() {
        let body = br#"{"SdkAppId":1400000000,"TaskId":"t"}"#;
        let keys = |id: &str| (id == ID).then(|| KEY.to_string());
        let check = |auth: String, extra: &[(&str, &str)]| {
            verify(
                &Tc3Request {
                    method: "POST",
                    query: "",
                    header: request_headers(auth, extra),
                    body,
                },
                keys,
                1700000000,
            )
        };
        // Tencent's Node.js SDK pointed at http://127.0.0.1:8080 signs with service "127" and host "127.0.0.1"
        // (no port), while it sends `Host: 127.0.0.1:8080`.
        let node = sign_post(ID, KEY, "127", "127.0.0.1", 1700000000, body);
        assert_eq!(check(node.clone(), &[]).unwrap().secret_id, ID);
        let other_host = sign_post(ID, KEY, "127", "10.0.0.1", 1700000000, body);
        assert_eq!(check(other_host, &[]), Err(Tc3Error::SignatureFailure));
        // Claiming another service without the key breaks the signature.
        let forged = node.replace("/127/", "/trtc/");
        assert_eq!(check(forged, &[]), Err(Tc3Error::SignatureFailure));
        let odd = node.replace("/127/", "/a b/");
        assert_eq!(check(odd, &[]).unwrap_err().code(), "AuthFailure.InvalidAuthorization");
        // UNSIGNED-PAYLOAD leaves the body unprotected: refused even with a valid signature over it.
        let auth = sign_post(ID, KEY, "trtc", "127.0.0.1:8080", 1700000000, body);
        let e = check(auth, &[("x-tc-content-sha256", "UNSIGNED-PAYLOAD")]).unwrap_err();
        assert!(e.to_string().contains("UNSIGNED-PAYLOAD"), "{e}");
        // Our CLI signs the action: the same signature under another action fails.
        let cli = sign_post_action(
            ID,
            KEY,
            "trtc",
            "127.0.0.1:8080",
            "DescribeStreamIngest",
            1700000000,
            body,
        );
        assert!(cli.contains("SignedHeaders=content-type;host;x-tc-action"));
        assert!(check(cli.clone(), &[("x-tc-action", "DescribeStreamIngest")]).is_ok());
        assert_eq!(
            check(cli, &[("x-tc-action", "StopStreamIngest")]),
            Err(Tc3Error::SignatureFailure)
        );
    }

    #[test]
    fn replayed_signatures_are_refused_within_their_window() {
        let v = |sig: &str, ts: u64| Verified {
            secret_id: ID.into(),
            signature: sig.into(),
            timestamp: ts,
        };
        let mut c = ReplayCache::new(3);
        assert!(c.check(&v("a", 1000), false, 1000).is_ok());
        assert_eq!(c.check(&v("a", 1000), false, 1100), Err(Tc3Error::Replayed));
        // Idempotent actions may repeat; their signature is no ticket for a Start or an Update.
        assert!(c.check(&v("r", 1000), true, 1000).is_ok());
        assert!(c.check(&v("r", 1000), true, 1000).is_ok());
        assert_eq!(c.check(&v("r", 1000), false, 1000), Err(Tc3Error::Replayed));
        // Full of live signatures: new ones are refused, none is forgotten early.
        assert!(c.check(&v("s", 1000), true, 1000).is_ok());
        assert_eq!(c.check(&v("x", 1000), false, 1000), Err(Tc3Error::ReplayCacheFull));
        assert_eq!(c.check(&v("a", 1000), false, 1000), Err(Tc3Error::Replayed));
        // Expired entries go (verify refuses their timestamp by then anyway).
        assert!(c.check(&v("a", 1000), false, 1000 + MAX_SKEW_SECS + 1).is_ok());
        assert!(c.seen.len() <= 3 && c.order.len() <= 3);
    }

    #[test]
    fn authorization_parsing() {
        let ok = "TC3-HMAC-SHA256 Credential=AK/2023-11-14/trtc/tc3_request, SignedHeaders=content-type;host;x-tc-action, Signature=faff4d1e6e09b93906f693e0531b23162298e3734528a54a477fddf7fc5353ab";
        let a = Tc3Authorization::parse(ok).unwrap();
        assert_eq!(a.secret_id, "AK");
        assert_eq!(a.signed_headers, ["content-type", "host", "x-tc-action"]);
        for bad in [
            "",
            "HMAC Credential=AK/2023-11-14/trtc/tc3_request, SignedHeaders=content-type;host, Signature=00",
            "TC3-HMAC-SHA256 Credential=AK/2023-11-14/trtc, SignedHeaders=content-type;host, Signature=faff4d1e6e09b93906f693e0531b23162298e3734528a54a477fddf7fc5353ab",
            "TC3-HMAC-SHA256 Credential=AK/2023-11-14/trtc/tc3_request, SignedHeaders=host, Signature=faff4d1e6e09b93906f693e0531b23162298e3734528a54a477fddf7fc5353ab",
            "TC3-HMAC-SHA256 Credential=AK/2023-11-14/trtc/tc3_request, SignedHeaders=content-type;host, Signature=xyz",
        ] {
            assert!(Tc3Authorization::parse(bad).is_err(), "{bad}");
        }
    }
}
