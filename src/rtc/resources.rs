//! `SessionResources`: the WHIP/WHEP session resources (`Location` URLs) of one endpoint: unguessable tokens
//! mapped to engine sessions, their ETags, and what a PATCH does to them (trickle ICE, ICE restart).

use super::{RtcEngine, SessionId};
use std::collections::HashMap;
use std::sync::Mutex;
use str0m::{Candidate, IceCreds};

/// Why a PATCH or DELETE on a session resource failed.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// No session has this resource token (never made, DELETEd, or ended).
    #[error("no such session")]
    NoSession,
    /// `If-Match` is neither `*` nor the session's current ETag (an ICE restart changed it).
    #[error("ETag mismatch: the session changed")]
    EtagMismatch,
    /// The trickle fragment is not UTF-8 or has a candidate line that does not parse; holds why.
    #[error("bad trickle ICE fragment: {0}")]
    BadFragment(String),
    /// The PATCH would take the session past `MAX_TRICKLED_CANDIDATES` trickled candidates; holds that limit.
    #[error("too many trickled candidates: at most {0} per session")]
    TooManyCandidates(usize),
}

/// A new WHIP or WHEP session as its HTTP 201 gives it out.
pub struct SessionAnswer {
    /// Unguessable session token: the `Location` is `{endpoint}/session/{resource}`.
    pub resource: String,
    /// The session's `ETag` (its ICE ufrag, quoted), matched against PATCH's `If-Match`.
    pub etag: String,
    /// The SDP answer (the 201 body).
    pub sdp: String,
}

/// Remote candidates one session may trickle in (PATCH), in total: each costs the engine work on every check.
pub const MAX_TRICKLED_CANDIDATES: usize = 20;

/// What a PATCH did.
pub enum PatchResult {
    /// Remote candidates were added (204).
    Trickled,
    /// ICE restarted: answer 200 with our new credentials.
    Restarted {
        /// The session's new ETag (our new ufrag, quoted).
        etag: String,
        /// The body: `a=ice-lite`, our new `ice-ufrag`/`ice-pwd`, our candidates and `a=end-of-candidates`.
        fragment: String,
    },
}

struct Resource {
    engine_id: SessionId,
    etag: String,
    /// Remote candidates trickled so far.
    candidates: usize,
}

/// The live sessions of one endpoint (WHIP or WHEP), by resource token.
#[derive(Default)]
pub struct SessionResources {
    map: Mutex<HashMap<String, Resource>>,
}

/// Random letters and digits (ICE credentials, resource tokens).
pub fn random_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..len)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn etag_of(ufrag: &str) -> String {
    format!("\"{ufrag}\"")
}

impl SessionResources {
    /// Register a session; returns its resource token and ETag.
    pub fn insert(&self, engine_id: SessionId, ufrag: &str) -> (String, String) {
        let token = random_token(20);
        let etag = etag_of(ufrag);
        self.map.lock().expect("resources lock").insert(
            token.clone(),
            Resource {
                engine_id,
                etag: etag.clone(),
                candidates: 0,
            },
        );
        (token, etag)
    }

    /// DELETE: take the resource out and end its engine session.
    pub async fn end(&self, engine: &RtcEngine, token: &str) -> Result<(), ResourceError> {
        let id = self.remove(token).ok_or(ResourceError::NoSession)?;
        engine.remove(id).await;
        Ok(())
    }

    /// Take a resource out (DELETE); its engine session.
    pub fn remove(&self, token: &str) -> Option<SessionId> {
        self.map
            .lock()
            .expect("resources lock")
            .remove(token)
            .map(|r| r.engine_id)
    }

    /// Resources registered now (taken out on DELETE or when the session ends).
    pub fn len(&self) -> usize {
        self.map.lock().expect("resources lock").len()
    }

    /// True when no resource is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// PATCH with `application/trickle-ice-sdpfrag`: trickled remote candidates, or an ICE restart when the
    /// fragment carries new `ice-ufrag`/`ice-pwd` (RFC 9725 §4.3); `If-Match` must then be `*` or the ETag.
    pub async fn patch(
        &self,
        engine: &RtcEngine,
        token: &str,
        if_match: Option<&str>,
        fragment: &str,
    ) -> Result<PatchResult, ResourceError> {
        let (id, etag) = {
            let map = self.map.lock().expect("resources lock");
            let r = map.get(token).ok_or(ResourceError::NoSession)?;
            (r.engine_id, r.etag.clone())
        };
        if if_match.is_some_and(|m| m != "*" && m != etag) {
            return Err(ResourceError::EtagMismatch);
        }
        let attr = |name: &str| {
            fragment
                .lines()
                .map(str::trim)
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
        };
        if let (Some(ufrag), Some(pass)) = (attr("a=ice-ufrag:"), attr("a=ice-pwd:")) {
            let local = IceCreds {
                ufrag: random_token(8),
                pass: random_token(24),
            };
            engine.ice_restart(id, local.clone(), IceCreds { ufrag, pass }).await;
            let new_etag = etag_of(&local.ufrag);
            if let Some(r) = self.map.lock().expect("resources lock").get_mut(token) {
                r.etag = new_etag.clone();
            }
            let mut body = format!(
                "a=ice-lite\r\na=ice-ufrag:{}\r\na=ice-pwd:{}\r\n",
                local.ufrag, local.pass
            );
            for c in engine.local_candidates() {
                body.push_str(&format!("a={}\r\n", c.to_sdp_string()));
            }
            body.push_str("a=end-of-candidates\r\n");
            return Ok(PatchResult::Restarted {
                etag: new_etag,
                fragment: body,
            });
        }
        let cands = fragment
            .lines()
            .map(str::trim)
            .filter_map(|line| {
                line.strip_prefix("a=candidate:")
                    .or_else(|| line.strip_prefix("candidate:"))
            })
            .take(MAX_TRICKLED_CANDIDATES + 1)
            .map(|c| Candidate::from_sdp_string(&format!("candidate:{c}")))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ResourceError::BadFragment(e.to_string()))?;
        {
            // Count (and refuse) before any of them reaches the engine.
            let mut map = self.map.lock().expect("resources lock");
            let r = map.get_mut(token).ok_or(ResourceError::NoSession)?;
            if r.candidates + cands.len() > MAX_TRICKLED_CANDIDATES {
                return Err(ResourceError::TooManyCandidates(MAX_TRICKLED_CANDIDATES));
            }
            r.candidates += cands.len();
        }
        for cand in cands {
            engine.add_remote_candidate(id, cand).await;
        }
        Ok(PatchResult::Trickled)
    }
}
