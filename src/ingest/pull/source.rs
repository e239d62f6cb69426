//! Where a pull task may connect: scheme and address policy (SSRF protection) and the HTTP pre-flight that follows
//! redirects one hop at a time, re-checking each, and turns the common failures into reasons.
//!
//! The pre-flight's client resolves names through `PolicyResolver`, so the addresses it connects to are the ones
//! the policy saw (no second lookup an attacker's DNS could answer differently). libav never follows redirects
//! itself and reaches http(s) hosts only through the `proxy`, which checks every connection the same way.
//!
//! Reasons have two audiences: the log gets every detail (`Display`), API callers get `public_reason`, which
//! never tells a refused connection from a timeout or a TLS failure (no port-scan oracle) and names no address.

use super::policy::AddressPolicy;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use url::Url;

/// Schemes a source URL may use.
pub const SCHEMES: &[&str] = &["http", "https", "rtmp", "srt", "rtsp", "rtsps"];
/// The options an `srt://` source may carry in its query (libsrt's, as ffmpeg names them): the stream id, the
/// encryption and the latency. Anything else (a local port or address, listener or rendezvous mode) is refused:
/// a pull task only ever calls out.
pub const SRT_OPTIONS: &[&str] = &[
    "streamid",
    "passphrase",
    "pbkeylen",
    "latency",
    "rcvlatency",
    "peerlatency",
];
/// Redirect hops followed before giving up.
const MAX_REDIRECTS: usize = 5;

/// What API callers see for a source that could not be reached (refused, timed out, TLS, DNS): one reason for all.
pub const NOT_OPENED: &str = "the source could not be opened (the gateway log has the details)";
/// What API callers see when the source (or a redirect, playlist entry or DNS answer of it) led to an address the
/// policy refuses.
pub const REFUSED_ADDRESS: &str = "the source redirected or pointed to an address that is not allowed \
     (private, loopback or link-local; see pull.allow_private_cidrs)";

/// Why a source cannot be used. `Display` is the detailed reason for the log; `public_reason` is what callers see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// The URL does not parse, is empty or too long, has no host, or a redirect's `Location` is bad.
    #[error("not a valid URL: {0}")]
    BadUrl(String),
    /// The scheme (of the URL or a redirect) is not http, https, rtmp, srt, rtsp or rtsps; carries it.
    #[error("scheme {0:?} is not supported: use http, https, rtmp, srt, rtsp or rtsps")]
    BadScheme(String),
    /// The address is kept for the log (`Debug`); the message names only the host the caller gave.
    #[error("the source host {host} has a private, loopback or link-local address (pull.allow_private_cidrs or pull.allow_private_sources allow it)")]
    PrivateAddress {
        /// The host the URL (or a redirect) names.
        host: String,
        /// The first of its addresses the policy refuses.
        ip: IpAddr,
    },
    /// The source's `host` does not resolve; `why` is the resolver's error.
    #[error("cannot resolve {host}: {why}")]
    Resolve {
        /// The host name looked up.
        host: String,
        /// The resolver's error, or `no addresses`.
        why: String,
    },
    /// The source host refused the connection; carries the host.
    #[error("connection refused by {0}")]
    ConnectionRefused(String),
    /// Connecting to the source host timed out; carries the host.
    #[error("timed out connecting to {0}")]
    ConnectTimeout(String),
    /// The TLS handshake with `host` failed; `why` is the TLS error.
    #[error("TLS error with {host}: {why}")]
    Tls {
        /// The host of the handshake.
        host: String,
        /// The TLS error with its chain of causes.
        why: String,
    },
    /// `url` is redacted (no userinfo, query or fragment).
    #[error("the server answered HTTP {status} for {url}")]
    HttpStatus {
        /// The non-2xx status the server answered (redirects are followed, not reported here).
        status: u16,
        /// The URL that answered, after any redirects.
        url: String,
    },
    /// The server says the source is empty (a 2xx with no body, or 416 for a `/0` range).
    #[error("empty source: the server sent no data")]
    Empty,
    /// The pre-flight met more than `MAX_REDIRECTS` redirects.
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
    /// The pre-flight's HTTP request failed some other way (or a redirect had no `Location`).
    #[error("HTTP request failed: {0}")]
    Http(String),
}

impl SourceError {
    /// The reason API callers (Describe, `/v1/tasks`, callbacks) see: what the source's own server answered stays
    /// visible (HTTP status, empty body, redirect loops); anything about reaching an address does not.
    pub fn public_reason(&self) -> String {
        match self {
            SourceError::BadUrl(_)
            | SourceError::BadScheme(_)
            | SourceError::HttpStatus { .. }
            | SourceError::Empty
            | SourceError::TooManyRedirects => self.to_string(),
            SourceError::PrivateAddress { .. } => REFUSED_ADDRESS.to_string(),
            SourceError::Resolve { .. }
            | SourceError::ConnectionRefused(_)
            | SourceError::ConnectTimeout(_)
            | SourceError::Tls { .. }
            | SourceError::Http(_) => NOT_OPENED.to_string(),
        }
    }
}

/// A URL fit for a reason or a log line: no userinfo, query or fragment (signed URLs carry credentials there).
pub fn redact(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// Parse and check the syntax and scheme of a source URL (what StartStreamIngest validates before answering).
pub fn parse_source_url(raw: &str) -> Result<Url, SourceError> {
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > 4096 {
        return Err(SourceError::BadUrl("empty or longer than 4096 bytes".into()));
    }
    let url = Url::parse(raw).map_err(|e| SourceError::BadUrl(e.to_string()))?;
    if !SCHEMES.contains(&url.scheme()) {
        return Err(SourceError::BadScheme(url.scheme().to_string()));
    }
    if url.host_str().is_none_or(|h| h.is_empty()) {
        return Err(SourceError::BadUrl("no host".into()));
    }
    if url.scheme() == "rtsps" {
        let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']).to_string();
        if rustls::pki_types::ServerName::try_from(host).is_err() {
            return Err(SourceError::BadUrl(
                "an rtsps:// host must be a DNS name or an IP address".into(),
            ));
        }
    }
    if ["srt", "rtsp", "rtsps"].contains(&url.scheme()) && url.fragment().is_some() {
        return Err(SourceError::BadUrl(format!(
            "a {}:// source has no #fragment",
            url.scheme()
        )));
    }
    if url.scheme() == "srt" {
        if url.port().is_none() {
            return Err(SourceError::BadUrl("an srt:// source needs a port".into()));
        }
        if let Some((key, _)) = url.query_pairs().find(|(k, _)| !SRT_OPTIONS.contains(&k.as_ref())) {
            return Err(SourceError::BadUrl(format!(
                "srt:// option {key:?} is not accepted (only {}; the task always calls the source)",
                SRT_OPTIONS.join(", ")
            )));
        }
    }
    Ok(url)
}

/// True for addresses a public source can have: not loopback, private, link-local, CGNAT, multicast,
/// unspecified, documentation or other reserved ranges (IPv4-mapped IPv6 addresses are judged as IPv4).
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let seg = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (seg[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
                || (seg[0] == 0x0064 && seg[1] == 0xff9b) // NAT64 (may reach private IPv4)
                || v6 == Ipv6Addr::from(0u128))
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_unspecified()
        || ip.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // CGNAT 100.64/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18/15
        || o[0] >= 240)
}

/// Resolve the URL's host and refuse it when the policy refuses any of its addresses.
pub async fn check_destination(url: &Url, policy: &AddressPolicy) -> Result<Vec<IpAddr>, SourceError> {
    let host = url.host_str().unwrap_or_default().to_string();
    let port = url.port_or_known_default().unwrap_or(1935);
    let ips: Vec<IpAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
        Some(url::Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
        _ => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| SourceError::Resolve {
                host: host.clone(),
                why: e.to_string(),
            })?
            .map(|a| a.ip())
            .collect(),
    };
    if ips.is_empty() {
        return Err(SourceError::Resolve {
            host,
            why: "no addresses".into(),
        });
    }
    if let Some(ip) = policy.first_refused(ips.iter().copied()) {
        return Err(SourceError::PrivateAddress { host, ip });
    }
    Ok(ips)
}

/// Resolves names for the pre-flight client and refuses a name when the policy refuses any of its addresses:
/// the check happens on the very answer the client connects with.
#[derive(Debug)]
pub struct PolicyResolver {
    policy: AddressPolicy,
}

/// The resolver's refusal, found again in a `reqwest::Error`'s source chain.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves to the refused address {ip}")]
struct RefusedByPolicy {
    host: String,
    ip: IpAddr,
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(ip) = policy.first_refused(addrs.iter().map(|a| a.ip())) {
                return Err(Box::new(RefusedByPolicy { host, ip }) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// An HTTP client for pre-flights under `policy`: no automatic redirects (each hop is checked here), names
/// resolved by `PolicyResolver`, short timeouts.
pub fn preflight_client(connect_timeout: std::time::Duration, policy: AddressPolicy) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(crate::tls::https_client_config())
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(PolicyResolver { policy }))
        .no_proxy()
        .connect_timeout(connect_timeout)
        .timeout(connect_timeout * 2)
        .user_agent(concat!("roomgate/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("static HTTP client settings are valid")
}

/// `url` with its host replaced by `ip` (the address that was checked), userinfo dropped.
pub fn with_ip(url: &Url, ip: IpAddr) -> Url {
    let mut u = url.clone();
    let _ = u.set_ip_host(ip);
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u
}

/// The tcUrl libav would send for an rtmp URL (`rtmp://host[:port]/<app>`, the path up to the stream name),
/// for when it connects to an address instead of the name.
pub fn rtmp_tc_url(url: &Url) -> String {
    let host = match url.host() {
        Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
        Some(h) => h.to_string(),
        None => String::new(),
    };
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let path = url.path();
    let app = path.rfind('/').map_or("", |i| &path[..i]);
    format!("{}://{host}{port}{app}", url.scheme())
}

/// Check the destination and, for HTTP(S), request the URL, following redirects hop by hop with the same checks.
/// Returns the URL libav should open (the last hop). Only the response head is read. `client` must be the
/// `preflight_client` of the same `policy`.
pub async fn preflight(client: &reqwest::Client, url: &Url, policy: &AddressPolicy) -> Result<Url, SourceError> {
    let mut current = url.clone();
    for _ in 0..=MAX_REDIRECTS {
        check_destination(&current, policy).await?;
        if ["rtmp", "srt", "rtsp", "rtsps"].contains(&current.scheme()) {
            return Ok(current);
        }
        let host = current.host_str().unwrap_or_default().to_string();
        let resp = client
            .get(current.clone())
            .header(reqwest::header::RANGE, "bytes=0-")
            .send()
            .await
            .map_err(|e| classify_reqwest(e, &host))?;
        let status = resp.status();
        if status.is_redirection() {
            let location = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| SourceError::Http(format!("HTTP {status} without a Location header")))?;
            let next = current
                .join(location)
                .map_err(|e| SourceError::BadUrl(format!("redirect to {location:?}: {e}")))?;
            if !["http", "https"].contains(&next.scheme()) {
                return Err(SourceError::BadScheme(next.scheme().to_string()));
            }
            current = next;
            continue;
        }
        let empty_range = resp
            .headers()
            .get(reqwest::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_end().ends_with("/0"));
        if (status == reqwest::StatusCode::RANGE_NOT_SATISFIABLE && empty_range)
            || (status.is_success() && resp.content_length() == Some(0))
        {
            return Err(SourceError::Empty);
        }
        if !status.is_success() {
            return Err(SourceError::HttpStatus {
                status: status.as_u16(),
                url: redact(&current),
            });
        }
        return Ok(current);
    }
    Err(SourceError::TooManyRedirects)
}

/// Name the failure for the log: refused by the policy, refused, timed out, TLS, or other (never with the URL).
fn classify_reqwest(e: reqwest::Error, host: &str) -> SourceError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(c) = cause {
        if let Some(r) = c.downcast_ref::<RefusedByPolicy>() {
            return SourceError::PrivateAddress {
                host: r.host.clone(),
                ip: r.ip,
            };
        }
        cause = c.source();
    }
    let e = e.without_url();
    let chain = crate::error_chain(&e);
    let lower = chain.to_ascii_lowercase();
    if lower.contains("connection refused") {
        SourceError::ConnectionRefused(host.to_string())
    } else if lower.contains("certificate")
        || lower.contains("tls")
        || lower.contains("handshake")
        || lower.contains("invalid peer")
        || lower.contains("rustls")
        || lower.contains("corrupt message")
        || lower.contains("received fatal alert")
    {
        SourceError::Tls {
            host: host.to_string(),
            why: chain,
        }
    } else if e.is_timeout() {
        SourceError::ConnectTimeout(host.to_string())
    } else {
        SourceError::Http(chain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_and_syntax() {
        assert!(parse_source_url("https://example.com/a.mp4").is_ok());
        assert!(parse_source_url("rtmp://example.com/live/x").is_ok());
        let u = Url::parse("rtmp://user:pw@media.example.com:1936/live/inst/key?token=a/b").unwrap();
        assert_eq!(rtmp_tc_url(&u), "rtmp://media.example.com:1936/live/inst");
        assert_eq!(
            with_ip(&u, "203.0.113.9".parse().unwrap()).as_str(),
            "rtmp://203.0.113.9:1936/live/inst/key?token=a/b"
        );
        let v6 = with_ip(&Url::parse("rtmp://h/live/k").unwrap(), "2001:db8::1".parse().unwrap());
        assert_eq!(v6.as_str(), "rtmp://[2001:db8::1]/live/k");
        assert!(matches!(
            parse_source_url("file:///etc/passwd"),
            Err(SourceError::BadScheme(_))
        ));
        assert!(matches!(parse_source_url("ftp://x/y"), Err(SourceError::BadScheme(_))));
        assert!(matches!(parse_source_url("not a url"), Err(SourceError::BadUrl(_))));
        assert!(matches!(parse_source_url(""), Err(SourceError::BadUrl(_))));
    }

    #[test]
    fn address_ranges() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public_ip(ip.parse().unwrap()), "{ip} must be refused");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public_ip(ip.parse().unwrap()), "{ip} is public");
        }
    }

    #[tokio::test]
    async fn names_resolving_to_private_addresses_are_refused() {
        let strict = AddressPolicy::default();
        let open = AddressPolicy {
            allow_all: true,
            allowed: vec![],
        };
        let url = Url::parse("http://localhost:1/x.mp4").unwrap();
        let e = check_destination(&url, &strict).await.unwrap_err();
        assert!(matches!(e, SourceError::PrivateAddress { .. }));
        assert!(
            !e.to_string().contains("127.0.0.1"),
            "the message names no address: {e}"
        );
        assert_eq!(e.public_reason(), REFUSED_ADDRESS);
        assert!(check_destination(&url, &open).await.is_ok());
        let url = Url::parse("http://[::1]:1/x.mp4").unwrap();
        assert!(matches!(
            check_destination(&url, &strict).await,
            Err(SourceError::PrivateAddress { .. })
        ));
        let only_v4_loopback = AddressPolicy {
            allow_all: false,
            allowed: vec!["127.0.0.1/32".parse().unwrap()],
        };
        let url = Url::parse("http://127.0.0.1:1/x.mp4").unwrap();
        assert!(check_destination(&url, &only_v4_loopback).await.is_ok());
        let url = Url::parse("http://127.0.0.2:1/x.mp4").unwrap();
        assert!(check_destination(&url, &only_v4_loopback).await.is_err());
    }

    #[tokio::test]
    async fn the_preflight_client_refuses_names_at_connect() {
        let client = preflight_client(std::time::Duration::from_secs(2), AddressPolicy::default());
        let e = client.get("http://localhost:9/x").send().await.unwrap_err();
        assert!(matches!(
            classify_reqwest(e, "localhost"),
            SourceError::PrivateAddress { .. }
        ));
    }

    #[test]
    fn redaction_drops_userinfo_query_and_fragment() {
        let u = Url::parse("https://user:pa55@cdn.example.com:8443/live/a.m3u8?token=s3cret&x=1#frag").unwrap();
        assert_eq!(redact(&u), "https://cdn.example.com:8443/live/a.m3u8");
        let u = Url::parse("rtmp://only-user@example.com/live/key").unwrap();
        assert_eq!(redact(&u), "rtmp://example.com/live/key");
    }

    #[test]
    fn callers_see_no_connection_details() {
        for e in [
            SourceError::ConnectionRefused("10.0.0.1".into()),
            SourceError::ConnectTimeout("10.0.0.1".into()),
            SourceError::Tls {
                host: "h".into(),
                why: "corrupt message".into(),
            },
            SourceError::Resolve {
                host: "h".into(),
                why: "no".into(),
            },
            SourceError::Http("error sending request for url (http://h/?k=v)".into()),
        ] {
            assert_eq!(e.public_reason(), NOT_OPENED, "{e}");
        }
        let e = SourceError::HttpStatus {
            status: 404,
            url: "http://h/a.mp4".into(),
        };
        assert!(e.public_reason().contains("HTTP 404"));
        assert!(SourceError::Empty.public_reason().contains("empty source"));
    }
}
