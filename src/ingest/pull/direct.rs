//! Sources libav reaches without the http(s) source proxy: rtmp and srt (libav connects to the address the
//! gateway resolved and checked, so a DNS answer that changes before libav connects is never used; neither
//! protocol redirects) and rtsp/rtsps (through a relay of its own to the checked address, which refuses redirects:
//! [`super::rtsp`]; for rtsps the relay speaks TLS to the camera, verifying its certificate, and libav plain RTSP to
//! the relay).

use super::proxy::ProxySession;
use super::runner::TaskRun;
use super::{policy, source};
use std::time::Duration;
use url::Url;

/// The schemes handled here.
pub const SCHEMES: &[&str] = &["rtmp", "srt", "rtsp", "rtsps"];

/// Protocols libav may use for an rtmp source.
const RTMP_PROTOCOLS: &str = "rtmp,tcp";
/// Protocols libav may use for an srt source (libsrt does its own UDP).
const SRT_PROTOCOLS: &str = "srt";
/// Protocols libav may use for an rtsp source: the control connection (to the relay), media interleaved on it.
const RTSP_PROTOCOLS: &str = "rtsp,tcp";
/// The RTSP port when the URL names none.
const RTSP_PORT: u16 = 554;
/// The RTSPS port when the URL names none.
const RTSPS_PORT: u16 = 322;

/// Check `url`'s host against `policy` and set libav's options for its protocol: the URL libav opens, and the
/// relay session of an rtsp source. `Err(None)`: the task was stopped; `Err(Some(reason))`: what callers see.
pub(super) fn prepare(
    run: &TaskRun<'_>,
    url: Url,
    policy: policy::AddressPolicy,
    opts: &mut ffmpeg_next::Dictionary,
    read_timeout: Duration,
    connect_ms: u64,
) -> Result<(Url, Option<ProxySession>), Option<String>> {
    let (task, sources) = (run.task, &run.env.sources);
    match url.scheme() {
        "srt" => {
            opts.set("protocol_whitelist", SRT_PROTOCOLS);
            // The URL's options (validated against source::SRT_OPTIONS) go to libsrt as options, decoded, and the
            // URL libav opens carries none: libsrt would read its query raw and after anything we set (a
            // `mode=listener` hidden from the check, a passphrase in libav's error lines).
            for (key, value) in url.query_pairs() {
                opts.set(&key, &value);
            }
            opts.set("mode", "caller");
            opts.set("timeout", &read_timeout.as_micros().to_string());
            opts.set("connect_timeout", &connect_ms.to_string());
        }
        "rtsp" | "rtsps" => {
            opts.set("protocol_whitelist", RTSP_PROTOCOLS);
            opts.set("format_whitelist", "rtsp");
            opts.set("rtsp_transport", "tcp");
            opts.set("timeout", &read_timeout.as_micros().to_string());
        }
        _ => opts.set("protocol_whitelist", RTMP_PROTOCOLS),
    }
    let (to_check, p) = (url.clone(), policy.clone());
    let checked = sources
        .run(
            &task.control,
            async move { source::check_destination(&to_check, &p).await },
        )
        .ok_or(None)?;
    let ip = match checked.as_deref() {
        Ok([ip, ..]) => *ip,
        Ok([]) => return Err(Some(source::NOT_OPENED.to_string())),
        Err(e) => {
            tracing::warn!(task = %task.id, url = %source::redact(&url), error = %e, "pull source address refused");
            return Err(Some(e.public_reason()));
        }
    };
    match url.scheme() {
        "rtsp" | "rtsps" => {
            let tls = url.scheme() == "rtsps";
            let port = url.port().unwrap_or(if tls { RTSPS_PORT } else { RTSP_PORT });
            let target = std::net::SocketAddr::new(ip, port);
            // The certificate is checked against the URL's host name (or address).
            let name = tls.then(|| url.host_str().unwrap_or_default().trim_matches(['[', ']']).to_string());
            let session = sources
                .rtsp_relay(policy, &task.id[..8], target, name)
                .map_err(|_| Some(source::NOT_OPENED.to_string()))?;
            // The camera's credentials stay in the URL (libav answers its authentication challenges); libav speaks
            // plain RTSP to the relay.
            let mut local = url.clone();
            let _ = local.set_scheme("rtsp");
            let _ = local.set_ip_host(session.addr().ip());
            let _ = local.set_port(Some(session.addr().port()));
            Ok((local, Some(session)))
        }
        "rtmp" => {
            // The server still sees the host name in tcUrl.
            opts.set("rtmp_tcurl", &source::rtmp_tc_url(&url));
            Ok((source::with_ip(&url, ip), None))
        }
        _ => {
            let mut bare = source::with_ip(&url, ip);
            bare.set_query(None);
            bare.set_fragment(None);
            Ok((bare, None))
        }
    }
}
