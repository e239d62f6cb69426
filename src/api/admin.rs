//! Who is admin: the `[admin] token` as a Bearer token, or a request from the gateway's own machine that a
//! browser cannot have been tricked into sending. A loopback peer alone proves nothing: any web page can make the
//! browser send requests to 127.0.0.1, with a `Host` of the attacker's name after DNS rebinding, or as a CSRF
//! form post. So the loopback grant also needs a loopback `Host`, a matching `Origin`, no proxy headers, and (for
//! state changes) a JSON content type, which browsers only send cross-origin after a CORS preflight.
//!
//! [`check`] is a pure function of the request's method, headers and peer, and the config.

use crate::config::AdminConfig;
use axum::http::{header, HeaderMap, Method};
use std::net::{IpAddr, SocketAddr};

/// How a request got admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminGrant {
    /// The `Authorization: Bearer` token matched `[admin] token`.
    Bearer,
    /// A same-machine request that passed every loopback check (`[admin] loopback`).
    Loopback,
}

/// Why a request is not admin; each is a 403 with [`AdminRefusal::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminRefusal {
    /// Neither a matching Bearer token nor a loopback peer (or loopback admin is off).
    #[error("this needs the admin credential: Authorization: Bearer <[admin] token>, or a request from the gateway's own machine")]
    Required,
    /// The `Host` header (as sent) names neither a loopback address nor an allowed host.
    #[error("loopback admin needs a Host of 127.0.0.1, [::1], localhost or an admin.allowed_hosts name, not {0:?}")]
    HostNotLoopback(String),
    /// An `Origin` header is present but is not the `Host`.
    #[error("loopback admin needs the Origin to be the Host: Origin {origin:?}, Host {host:?}")]
    OriginMismatch {
        /// The `Origin` header as sent.
        origin: String,
        /// The `Host` header as sent.
        host: String,
    },
    /// A proxy header is present; holds its canonical name, e.g. `X-Forwarded-For`.
    #[error("loopback admin is not granted through a proxy (a {0} header is present); use the Bearer token")]
    Forwarded(&'static str),
    /// A state-changing request without a JSON content type; holds the method.
    #[error("admin {0} requests need Content-Type: application/json")]
    ContentType(String),
    /// `Sec-Fetch-Site: cross-site`: the browser says another site sent it.
    #[error("admin requests from another site (Sec-Fetch-Site: cross-site) are refused")]
    CrossSite,
}

impl AdminRefusal {
    /// Stable snake_case code for the 403 body and the refusal metric, e.g. `admin_required`.
    pub fn code(&self) -> &'static str {
        match self {
            AdminRefusal::Required => "admin_required",
            AdminRefusal::HostNotLoopback(_) => "admin_host_not_loopback",
            AdminRefusal::OriginMismatch { .. } => "admin_origin_mismatch",
            AdminRefusal::Forwarded(_) => "admin_forwarded",
            AdminRefusal::ContentType(_) => "admin_content_type",
            AdminRefusal::CrossSite => "admin_cross_site",
        }
    }
}

/// Decide whether a request is admin (`tls`: it came over the HTTPS listener, so a browser's `Origin` must be
/// `https://` to be this origin).
pub fn check(
    method: &Method,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    tls: bool,
    cfg: &AdminConfig,
) -> Result<AdminGrant, AdminRefusal> {
    if let Some(t) = bearer(headers) {
        if !cfg.token.is_empty() && bool::from(subtle::ConstantTimeEq::ct_eq(t.as_bytes(), cfg.token.as_bytes())) {
            return Ok(AdminGrant::Bearer);
        }
    }
    let loopback_peer = peer.is_some_and(|p| p.ip().to_canonical().is_loopback());
    if !cfg.loopback || !loopback_peer {
        return Err(AdminRefusal::Required);
    }
    for name in ["forwarded", "x-forwarded-for", "x-forwarded-host", "x-real-ip", "via"] {
        if headers.contains_key(name) {
            return Err(AdminRefusal::Forwarded(canonical_name(name)));
        }
    }
    let host = header_str(headers, header::HOST).unwrap_or("");
    let (host_name, host_port) = split_authority(host).ok_or_else(|| AdminRefusal::HostNotLoopback(host.into()))?;
    if !is_local_name(&host_name, cfg) {
        return Err(AdminRefusal::HostNotLoopback(host.into()));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let o = origin.to_str().unwrap_or("");
        let same = origin_authority(o, tls)
            .and_then(|a| split_authority(&a))
            .is_some_and(|(n, p)| n == host_name && p == host_port);
        if !same {
            return Err(AdminRefusal::OriginMismatch {
                origin: o.into(),
                host: host.into(),
            });
        }
    }
    if header_str(headers, "sec-fetch-site").is_some_and(|v| v.eq_ignore_ascii_case("cross-site")) {
        return Err(AdminRefusal::CrossSite);
    }
    if matches!(*method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE) {
        let ct = header_str(headers, header::CONTENT_TYPE).unwrap_or("");
        let essence = ct.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(AdminRefusal::ContentType(method.to_string()));
        }
    }
    Ok(AdminGrant::Loopback)
}

fn canonical_name(name: &str) -> &'static str {
    match name {
        "forwarded" => "Forwarded",
        "x-forwarded-for" => "X-Forwarded-For",
        "x-forwarded-host" => "X-Forwarded-Host",
        "x-real-ip" => "X-Real-IP",
        _ => "Via",
    }
}

fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    header_str(headers, header::AUTHORIZATION)?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// `host[:port]` / `[v6][:port]` as (lower-case host without brackets, port or 80).
fn split_authority(a: &str) -> Option<(String, u16)> {
    let a = a.trim();
    if a.is_empty() || a.contains(['/', '@', ' ']) {
        return None;
    }
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        match after {
            "" => (h, None),
            p => (h, Some(p.strip_prefix(':')?)),
        }
    } else {
        match a.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p)),
            Some(_) => return None,
            None => (a, None),
        }
    };
    let port = match port {
        None => 80,
        Some(p) => p.parse().ok()?,
    };
    Some((host.to_ascii_lowercase(), port))
}

/// The `host[:port]` of an `Origin` of the request's scheme such as `http://127.0.0.1:8080` (or, `tls`,
/// `https://localhost:8443`); None for `null` or another scheme.
fn origin_authority(o: &str, tls: bool) -> Option<String> {
    let rest = o.strip_prefix(if tls { "https://" } else { "http://" })?;
    (!rest.is_empty() && !rest.contains('/')).then(|| rest.to_string())
}

fn is_local_name(host: &str, cfg: &AdminConfig) -> bool {
    if host == "localhost" || cfg.allowed_hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.to_canonical().is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AdminConfig {
        AdminConfig {
            token: "tok".into(),
            loopback: true,
            allowed_hosts: vec!["gw.local".into()],
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    const LO: &str = "127.0.0.1:50000";

    fn run(method: Method, pairs: &[(&str, &str)], peer: &str) -> Result<AdminGrant, &'static str> {
        check(&method, &headers(pairs), Some(peer.parse().unwrap()), false, &cfg()).map_err(|e| e.code())
    }

    #[test]
    fn loopback_hosts_are_admin() {
        for host in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "127.1.2.3:1",
            "[::1]:8080",
            "[::1]",
            "localhost:8080",
            "LOCALHOST",
            "gw.local:9",
        ] {
            assert_eq!(
                run(Method::GET, &[("host", host)], LO),
                Ok(AdminGrant::Loopback),
                "{host}"
            );
        }
        let json = [
            ("host", "localhost:8080"),
            ("content-type", "application/json; charset=utf-8"),
        ];
        assert_eq!(run(Method::POST, &json, LO), Ok(AdminGrant::Loopback));
        assert_eq!(
            run(Method::GET, &[("host", "[::1]:8080")], "[::1]:5"),
            Ok(AdminGrant::Loopback)
        );
        assert_eq!(
            run(Method::GET, &[("host", "127.0.0.1:8080")], "[::ffff:127.0.0.1]:5"),
            Ok(AdminGrant::Loopback),
            "an IPv4 peer on a [::] listener"
        );
    }

    #[test]
    fn rebinding_hosts_are_refused() {
        for host in [
            "rebind.attacker.example:8080",
            "127.0.0.1.nip.io",
            "",
            "evil@127.0.0.1",
            "::1",
            "0.0.0.0:8080",
            "10.0.0.1",
        ] {
            assert_eq!(
                run(Method::GET, &[("host", host)], LO),
                Err("admin_host_not_loopback"),
                "{host:?}"
            );
        }
        assert_eq!(run(Method::GET, &[], LO), Err("admin_host_not_loopback"), "no Host");
    }

    #[test]
    fn origin_must_be_the_host() {
        let ok = [("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080")];
        assert_eq!(run(Method::GET, &ok, LO), Ok(AdminGrant::Loopback));
        for origin in [
            "http://evil.example",
            "http://127.0.0.1:9090",
            "http://localhost:8080",
            "null",
            "https://127.0.0.1:8080",
        ] {
            assert_eq!(
                run(Method::GET, &[("host", "127.0.0.1:8080"), ("origin", origin)], LO),
                Err("admin_origin_mismatch"),
                "{origin}"
            );
        }
        let default_port = [("host", "localhost"), ("origin", "http://localhost")];
        assert_eq!(run(Method::GET, &default_port, LO), Ok(AdminGrant::Loopback));
        // Over the HTTPS listener the origin is https:// (and an http:// page is another origin).
        let lo = Some(LO.parse().unwrap());
        let tls = |origin: &str| {
            let h = headers(&[("host", "localhost:8443"), ("origin", origin)]);
            check(&Method::GET, &h, lo, true, &cfg()).map_err(|e| e.code())
        };
        assert_eq!(tls("https://localhost:8443"), Ok(AdminGrant::Loopback));
        assert_eq!(tls("http://localhost:8443"), Err("admin_origin_mismatch"));
    }

    #[test]
    fn proxies_cross_site_and_form_posts_are_refused() {
        for h in ["x-forwarded-for", "forwarded", "via"] {
            assert_eq!(
                run(Method::GET, &[("host", "127.0.0.1"), (h, "1.2.3.4")], LO),
                Err("admin_forwarded"),
                "{h}"
            );
        }
        let cross = [
            ("host", "127.0.0.1"),
            ("sec-fetch-site", "cross-site"),
            ("content-type", "application/json"),
        ];
        assert_eq!(run(Method::POST, &cross, LO), Err("admin_cross_site"));
        for ct in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ] {
            assert_eq!(
                run(Method::POST, &[("host", "127.0.0.1"), ("content-type", ct)], LO),
                Err("admin_content_type"),
                "{ct}"
            );
        }
        assert_eq!(
            run(Method::DELETE, &[("host", "127.0.0.1")], LO),
            Err("admin_content_type")
        );
    }

    #[test]
    fn bearer_works_from_anywhere_and_loopback_can_be_off() {
        let b = [("authorization", "Bearer tok"), ("host", "evil.example")];
        assert_eq!(run(Method::POST, &b, "203.0.113.5:1"), Ok(AdminGrant::Bearer));
        assert_eq!(
            run(
                Method::GET,
                &[("authorization", "Bearer nope"), ("host", "127.0.0.1")],
                "203.0.113.5:1"
            ),
            Err("admin_required")
        );
        assert_eq!(
            run(Method::GET, &[("host", "127.0.0.1")], "10.0.0.1:1"),
            Err("admin_required")
        );
        let off = AdminConfig {
            loopback: false,
            ..cfg()
        };
        let h = headers(&[("host", "127.0.0.1")]);
        assert_eq!(
            check(&Method::GET, &h, Some(LO.parse().unwrap()), false, &off).map_err(|e| e.code()),
            Err("admin_required")
        );
        let empty = AdminConfig {
            token: String::new(),
            loopback: false,
            allowed_hosts: vec![],
        };
        let h = headers(&[("authorization", "Bearer ")]);
        assert!(
            check(&Method::GET, &h, None, false, &empty).is_err(),
            "an empty token never matches"
        );
    }
}
