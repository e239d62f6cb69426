//! What the Rust examples share: how they end on an error and, for the two WebRTC ones (`whep_record`,
//! `whip_publish_file`), the WHIP/WHEP signalling and the UDP side of their str0m peer. Each example includes it
//! with `mod common;` (Cargo makes no example of a folder without a `main.rs`) and uses the part it needs.

#![allow(dead_code)] // each example uses a part of it

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use url::Url;

/// How many `307`/`308` redirects a WHIP/WHEP POST follows before giving up.
const MAX_REDIRECTS: usize = 3;

/// The timeout of every HTTP request to the gateway.
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);

/// Print `error: <e>` on stderr and exit 1 if `result` is an error: how every example reports a failure (the
/// message is the whole diagnosis: no panic, no backtrace).
pub fn exit_on_error(result: Result<(), String>) {
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// A str0m peer the gateway has answered, on its own UDP socket: one H.264 video and one Opus audio track.
pub struct Peer {
    pub rtc: Rtc,
    pub socket: UdpSocket,
    /// The socket's address, the destination of every datagram it receives.
    pub local: SocketAddr,
    pub video_mid: Mid,
    pub audio_mid: Mid,
}

/// What the peer has next, once the datagrams str0m wanted sent are sent.
#[allow(clippy::large_enum_variant)] // as str0m's own `Output`: one at a time, never stored
pub enum Polled {
    /// Nothing before this time, unless a datagram comes.
    Timeout(Instant),
    Event(Event),
}

/// A WHIP/WHEP session at the gateway: what ending it takes.
pub struct Session {
    http: reqwest::Client,
    /// The session's URL (the POST's `Location`), if the gateway gave one.
    location: Option<Url>,
    token: Option<String>,
}

/// Make a peer offering H.264 video and Opus audio in `direction` from a UDP socket on `local_ip` (default: the
/// address this machine reaches the gateway from), POST the offer to the `protocol` ("WHIP" or "WHEP", for the
/// messages) endpoint `url` with the bearer `token`, accept the answer and print `Connected: <url> (session
/// <Location>)`. The signalling of both WebRTC examples, which differ only in the direction of their media.
pub async fn connect(
    protocol: &str,
    url: &Url,
    token: Option<&str>,
    local_ip: Option<IpAddr>,
    direction: Direction,
) -> Result<(Peer, Session), String> {
    str0m::crypto::from_feature_flags().install_process_default();
    let socket = udp_socket_toward(url, local_ip).await?;
    let local = socket.local_addr().map_err(|e| e.to_string())?;

    // The offer: H.264 video + Opus audio (str0m offers both codecs by default).
    let mut rtc = Rtc::builder().build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").map_err(|e| e.to_string())?);
    let mut sdp = rtc.sdp_api();
    let video_mid = sdp.add_media(MediaKind::Video, direction, None, None, None);
    let audio_mid = sdp.add_media(MediaKind::Audio, direction, None, None, None);
    let (offer, pending) = sdp.apply().ok_or("str0m made no offer")?;

    let (answer, location) = post_offer(protocol, url, token, &offer.to_sdp_string()).await?;
    let answer = SdpAnswer::from_sdp_string(&answer).map_err(|e| format!("the answer is not SDP: {e}"))?;
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .map_err(|e| format!("the answer does not fit the offer: {e}"))?;
    println!(
        "Connected: {url} (session {})",
        location.as_ref().map(|l| l.as_str()).unwrap_or("?")
    );

    let peer = Peer {
        rtc,
        socket,
        local,
        video_mid,
        audio_mid,
    };
    let http = reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let session = Session {
        http,
        location,
        token: token.map(str::to_string),
    };
    Ok((peer, session))
}

/// A UDP socket for the media, on `local_ip` or else on the address this machine reaches the gateway of `url`
/// from (found with a UDP "connect", which sends nothing): the one candidate the offer lists.
async fn udp_socket_toward(url: &Url, local_ip: Option<IpAddr>) -> Result<UdpSocket, String> {
    let host = url.host_str().ok_or("the URL has no host")?;
    let port = url.port_or_known_default().unwrap_or(80);
    let gateway_ip = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))?
        .ip();
    let local_ip = match local_ip {
        Some(ip) => ip,
        None => {
            let probe = UdpSocket::bind((if gateway_ip.is_ipv4() { "0.0.0.0" } else { "::" }, 0))
                .and_then(|s| s.connect((gateway_ip, port)).map(|_| s))
                .map_err(|e| format!("no route to {gateway_ip}: {e}"))?;
            probe.local_addr().map_err(|e| e.to_string())?.ip()
        }
    };
    UdpSocket::bind((local_ip, 0)).map_err(|e| format!("cannot bind UDP on {local_ip}: {e}"))
}

/// POST the SDP `offer` to the `protocol` ("WHIP" or "WHEP") endpoint `url` with the bearer `token`; the answer
/// SDP and the session's Location (resolved against the URL that answered). A `307`/`308` (a gateway sending the
/// offer on to another node, say) is followed here, up to three hops, with the same method, body and token
/// (reqwest's own following would drop the token on a move to another host), a relative Location being resolved
/// against the URL just posted to. Anything but a `201` in the end is an error with the gateway's status and body.
pub async fn post_offer(
    protocol: &str,
    url: &Url,
    token: Option<&str>,
    offer: &str,
) -> Result<(String, Option<Url>), String> {
    let http = reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let mut target = url.clone();
    let mut hops = 0;
    let (resp, location) = loop {
        let mut req = http
            .post(target.clone())
            .header("Content-Type", "application/sdp")
            .body(offer.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("{protocol} POST to {target}: {e}"))?;
        // The session's URL (201), or where to POST again (307/308).
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .and_then(|l| target.join(l).ok());
        let status = resp.status().as_u16();
        match (status, location) {
            (307 | 308, Some(next)) if hops < MAX_REDIRECTS => {
                hops += 1;
                target = next;
            }
            (307 | 308, Some(next)) => {
                return Err(format!(
                    "{protocol} POST to {url}: more than {MAX_REDIRECTS} redirects (the last to {next})"
                ));
            }
            (307 | 308, None) => {
                return Err(format!(
                    "{protocol} POST to {target}: redirected (HTTP {status}) without a usable Location"
                ));
            }
            (_, location) => break (resp, location),
        }
    };
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    if status.as_u16() != 201 {
        return Err(format!(
            "the gateway refused the {protocol} offer: HTTP {status}: {}",
            body.trim()
        ));
    }
    Ok((body, location))
}

impl Session {
    /// End the session with a DELETE of its Location, so that the gateway frees it now rather than at its
    /// timeout; a failure is ignored (the gateway times the session out then).
    pub async fn end(self) {
        if let Some(l) = self.location {
            let mut del = self.http.delete(l);
            if let Some(t) = &self.token {
                del = del.bearer_auth(t);
            }
            let _ = del.send().await;
        }
    }
}

impl Peer {
    /// Send what str0m wants sent, then return the next event or the time str0m wants to be woken at: the output
    /// half of the loop both WebRTC examples run (str0m does no I/O of its own).
    pub fn poll(&mut self) -> Result<Polled, String> {
        loop {
            match self.rtc.poll_output().map_err(|e| format!("WebRTC: {e}"))? {
                Output::Timeout(t) => return Ok(Polled::Timeout(t)),
                Output::Transmit(t) => {
                    let _ = self.socket.send_to(&t.contents, t.destination);
                }
                Output::Event(e) => return Ok(Polled::Event(e)),
            }
        }
    }

    /// Wait for a datagram until `until` (at least 1 ms, at most `at_most`) and hand it, or the time, to str0m:
    /// the input half of that loop. `buf` must hold the largest datagram expected.
    pub fn receive(&mut self, until: Instant, at_most: Duration, buf: &mut [u8]) -> Result<(), String> {
        let wait = until
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(1), at_most);
        self.socket.set_read_timeout(Some(wait)).map_err(|e| e.to_string())?;
        let input = match self.socket.recv_from(buf) {
            Ok((n, source)) => match Receive::new(Protocol::Udp, source, self.local, &buf[..n]) {
                Ok(r) => Input::Receive(Instant::now(), r),
                Err(_) => Input::Timeout(Instant::now()), // not STUN/DTLS/RTP: ignore it
            },
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                Input::Timeout(Instant::now())
            }
            Err(e) => return Err(format!("UDP: {e}")),
        };
        self.rtc.handle_input(input).map_err(|e| format!("WebRTC: {e}"))
    }
}
