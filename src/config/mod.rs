//! Configuration: embedded defaults, then an optional TOML file, then `ROOMGATE_*` environment variables, then
//! command-line flags (each layer overrides the one before).
//!
//! Every key can be set from the environment: the variable name is `ROOMGATE_` plus the key path in upper case
//! joined by `_` (array elements by index), e.g. `ROOMGATE_RTMP_LISTEN`, `ROOMGATE_AUDIO_OPUS_BITRATE`,
//! `ROOMGATE_APPS_0_SECRET_KEY`.

mod cidr;
mod load;
#[cfg(test)]
mod tests;
mod validate;

pub use cidr::{Cidr, CidrError};

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Why the configuration cannot be loaded, or the demo credentials cannot be stored.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file (or the demo credentials' file) at `path` cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The `--config` file, or `demo-app.toml`/`demo-api-key.toml` in the data dir.
        path: PathBuf,
        /// The I/O error from reading it.
        source: std::io::Error,
    },
    /// TOML that does not parse or match the keys, or a value that fails validation.
    #[error("invalid config: {0}")]
    Invalid(String),
    /// `ROOMGATE_*` variable `var` has a value that does not fit its key, for reason `why`.
    #[error("environment variable {var}: {why}")]
    Env {
        /// The full variable name, e.g. `ROOMGATE_RTMP_LISTEN`.
        var: String,
        /// What is wrong: no such key, a bad array index, or a value of the wrong type.
        why: String,
    },
    /// The demo credentials cannot be written to `path` in the data dir.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The demo credentials file being created (`demo-app.toml` or `demo-api-key.toml`).
        path: PathBuf,
        /// The I/O error from creating the data dir or the file, or writing it.
        source: std::io::Error,
    },
}

/// The whole configuration, as loaded from defaults, file, environment and flags.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where roomgate keeps its state (SQLite database, the demo app's key).
    pub data_dir: PathBuf,
    /// Log filter (tracing-subscriber syntax), e.g. `info` or `roomgate=debug`.
    pub log: String,
    /// Host name or address put in the URLs roomgate prints (ffmpeg/OBS lines).
    pub public_host: String,
    /// The HTTP listener (API, WHIP/WHEP, console, metrics).
    pub http: HttpConfig,
    /// The RTMP listener.
    pub rtmp: RtmpConfig,
    /// The SRT listener for publishers.
    pub srt: SrtConfig,
    /// The WebRTC engine (WHIP publishers, WHEP viewers).
    pub rtc: RtcConfig,
    /// Opus encoding of transcoded audio.
    pub audio: AudioConfig,
    /// Limits of video roomgate decodes.
    pub video: VideoConfig,
    /// The apps (SDKAppID and secret key) users may publish and watch in; empty: `serve` creates a demo app.
    pub apps: Vec<AppConfig>,
    /// Cloud API 3.0 credentials (TC3-HMAC-SHA256) for `POST /` actions such as StartStreamIngest.
    pub api_keys: Vec<ApiKeyConfig>,
    /// Limits of the Cloud API endpoint.
    pub api: CloudApiConfig,
    /// Pull tasks (StartStreamIngest).
    pub pull: PullConfig,
    /// Delivery of event callbacks.
    pub callbacks: CallbacksConfig,
    /// Who may use the admin API and the console's privileged actions.
    pub admin: AdminConfig,
    /// Cluster mode: several nodes sharing one Redis (off while `redis_url` is empty).
    pub cluster: ClusterConfig,
    /// The certificate of the TLS listeners (`http.tls_listen`, `rtmp.tls_listen`).
    pub tls: TlsConfig,
    /// Media file served at `/demo/sample.mp4` for the demo pull task (`serve --demo-task`); not a config key.
    #[serde(skip)]
    pub demo_media: Option<PathBuf>,
}

/// The certificate the TLS listeners present (HTTPS, RTMPS).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, the server's certificate first (e.g. certbot's `fullchain.pem`).
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC; e.g. certbot's `privkey.pem`).
    pub key_file: PathBuf,
    /// How often the two files are checked for a change (a renewal), in seconds; new handshakes then get the new
    /// certificate and open connections stay.
    pub check_every_secs: u64,
    /// `Strict-Transport-Security: max-age=<this>` on HTTPS responses; 0 (the default): no HSTS header.
    pub hsts_max_age_secs: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            check_every_secs: 10,
            hsts_max_age_secs: 0,
        }
    }
}

/// Cluster mode. Empty `redis_url`: a single node, no Redis needed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// The shared Redis, e.g. `redis://127.0.0.1:6379/0` (`rediss://` for TLS), or the master a set of Sentinels
    /// names: `redis+sentinel://[[user]:password@]host:26379[,host:port...]/<master name>[/<db>]` (followed across
    /// failovers); set = cluster mode.
    pub redis_url: String,
    /// This node's id; empty: the host name plus a random suffix, made once and kept in the data dir.
    pub node_id: String,
    /// How other nodes and redirected clients reach this node's HTTP, e.g. `http://10.0.0.5:8080`; empty:
    /// `http://<public_host>:<http port>`.
    pub advertise_http: String,
    /// What a WHEP POST for an anchor that is on another node gets: `relay` (this node pulls the anchor once over
    /// a relay link and serves its viewers itself), `redirect` (307 to that node; WHEP players follow it as WHIP
    /// clients do, RFC 9725 §4.5) or `local` (404 `anchor_not_found`, as on a single node).
    pub whep: RemoteViewers,
    /// Where this node serves its anchors to other nodes' relay links (TCP); only with a `secret`.
    pub relay_listen: SocketAddr,
    /// Shared by all nodes: relay links are authenticated with it (HMAC-SHA256 of a per-link challenge), and what
    /// nodes write to Redis for each other (entries, rooms, task mirrors, control messages) is signed with it.
    /// Empty: no relay links (then `whep` must be `redirect` or `local`) and nothing signed.
    pub secret: String,
    /// Above this load score (0-1: the largest of the CPU share and the use of `rtc.max_sessions` and
    /// `pull.max_tasks`) the node takes no new WHIP publishers: they are sent (307) to the least-loaded node.
    pub max_load: f64,
    /// On SIGTERM or Ctrl-C a cluster node drains: it takes no new work and waits up to this long for its RTMP
    /// and WHIP publishers to leave before it stops (a second signal stops it at once).
    pub drain_timeout_secs: u64,
    /// What a new pull task is expected to cost, in cores, until the CPU of the node it is placed on shows it:
    /// one whose video passes through (demux + AAC → Opus; measured 0.03 for 1080p30)...
    pub task_cost_passthrough: f64,
    /// ...and one that re-encodes its video (`VideoEncodeParams` set; measured 0.56 for 1080p30 → x264
    /// veryfast). Placement adds the cost over the node's cores to its score (LiveKit's `cpu_cost`).
    pub task_cost_transcode: f64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis_url: String::new(),
            node_id: String::new(),
            advertise_http: String::new(),
            whep: RemoteViewers::default(),
            relay_listen: "0.0.0.0:7935".parse().expect("a socket address"),
            secret: String::new(),
            max_load: 0.7,
            drain_timeout_secs: 30,
            task_cost_passthrough: 0.03,
            task_cost_transcode: 0.6,
        }
    }
}

/// How a node answers a viewer of an anchor published to another node (`cluster.whep`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RemoteViewers {
    /// Pull the anchor from its node over one relay link and fan it out here.
    #[default]
    Relay,
    /// `307 Temporary Redirect` to the anchor's node, same path and query.
    Redirect,
    /// Only local anchors are played; others are `404 anchor_not_found`.
    Local,
}

/// Who may use the console's privileged actions (make tokens, start/stop tasks, re-send callbacks).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// `Authorization: Bearer <token>` grants admin; empty: no token works.
    pub token: String,
    /// Requests from loopback addresses are admin (turn off behind a reverse proxy on the same host), when their
    /// `Host` is a loopback literal, `localhost` or one of `allowed_hosts`, their `Origin` (if any) is that host,
    /// and they carry no `Forwarded`/`X-Forwarded-For`/`Via` header (a browser cannot borrow it: DNS rebinding).
    pub loopback: bool,
    /// More `Host` names (without port) that count as this machine for loopback admin, e.g. `gw.local`.
    pub allowed_hosts: Vec<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            token: String::new(),
            loopback: true,
            allowed_hosts: Vec::new(),
        }
    }
}

/// A SecretId/SecretKey pair a backend signs Cloud API requests with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// The SecretId that names the key in `Authorization` headers.
    pub secret_id: String,
    /// The SecretKey requests are signed with.
    pub secret_key: String,
    /// Apps this key may act on; empty means every app.
    #[serde(default)]
    pub sdkappids: Vec<u64>,
}

/// Limits of the Cloud API endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CloudApiConfig {
    /// Requests per second per SecretId (TRTC documents 20 for StartStreamIngest); 0 disables the limit.
    pub rate_limit: u32,
    /// Largest request body accepted (bytes); larger ones get RequestSizeLimitExceeded.
    pub max_body_bytes: usize,
}

impl Default for CloudApiConfig {
    fn default() -> Self {
        CloudApiConfig {
            rate_limit: 20,
            max_body_bytes: 64 * 1024,
        }
    }
}

/// Pull tasks (StartStreamIngest).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PullConfig {
    /// Allow sources on loopback, private, link-local and other non-public addresses (off: SSRF protection).
    /// All or nothing; `allow_private_cidrs` allows exact ranges instead.
    pub allow_private_sources: bool,
    /// Private ranges sources may use although `allow_private_sources` is off (an operator's own media
    /// servers), e.g. `["10.1.2.0/24"]`; every other non-public address stays refused. Checked by the pre-flight
    /// and at every connection libav makes. A value that is not a CIDR is a config error.
    pub allow_private_cidrs: Vec<Cidr>,
    /// Tasks running at once; more get FailedOperation.RestrictedConcurrency.
    pub max_tasks: usize,
    /// Seconds to connect to and open a source before the attempt fails.
    pub open_timeout_secs: u64,
    /// Seconds without data from an open source before it counts as broken (when the task sets no IdleTimeout).
    pub read_timeout_secs: u64,
    /// Days a finished, failed or stopped task is kept in the store (Describe answers for it) before it is
    /// deleted; 0 keeps them forever.
    pub ended_task_retention_days: u64,
    /// PEM certificates trusted for `rtsps://` sources besides the system's CAs: CAs, and certificates pinned as
    /// they are (a camera's self-signed one); empty: the system's CAs only.
    pub ca_file: PathBuf,
}

impl Default for PullConfig {
    fn default() -> Self {
        PullConfig {
            allow_private_sources: false,
            allow_private_cidrs: Vec::new(),
            max_tasks: 100,
            open_timeout_secs: 10,
            read_timeout_secs: 10,
            ended_task_retention_days: 30,
            ca_file: PathBuf::new(),
        }
    }
}

/// The HTTP server: listen address, connection caps and timeouts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address the HTTP server binds to (port 0: any free port).
    pub listen: SocketAddr,
    /// Serve plain HTTP on `listen`; off: HTTPS only (`tls_listen` must be set).
    pub plain: bool,
    /// Address of the HTTPS listener serving everything HTTP serves, e.g. `0.0.0.0:8443`; empty: none. Needs
    /// `[tls]`.
    pub tls_listen: String,
    /// HTTP connections open at once; more are closed at accept (kept below the open-file limit).
    pub max_connections: usize,
    /// Share of `max_connections` one client address may hold.
    pub max_connections_per_ip: usize,
    /// Seconds a client has to send a request's whole header (slowloris), counted from when the server starts
    /// waiting for it: this also bounds an idle keep-alive connection between requests.
    pub header_timeout_secs: u64,
    /// Seconds a connection may stay open without a byte in either direction (e.g. a response the client stopped
    /// reading); then it is shut down gracefully.
    pub idle_timeout_secs: u64,
    /// Seconds a client has to send a request body.
    pub body_timeout_secs: u64,
}

/// The RTMP listener: address, message and chunk sizes, connection caps and timeouts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RtmpConfig {
    /// Run the RTMP listener; off: no RTMP publishing.
    pub enabled: bool,
    /// Address the RTMP listener binds to (port 0: any free port).
    pub listen: SocketAddr,
    /// Serve plain RTMP on `listen`; off: RTMPS only (`tls_listen` must be set).
    pub plain: bool,
    /// Address of the RTMPS listener (RTMP inside TLS, as OBS and ffmpeg `rtmps://` speak it), e.g.
    /// `0.0.0.0:1936`; empty: none. Needs `[tls]`.
    pub tls_listen: String,
    /// Largest RTMP message accepted (bytes); a larger one ends the connection.
    pub max_message_size: u32,
    /// Largest chunk size a client may announce.
    pub max_chunk_size: u32,
    /// Chunk size roomgate sends with.
    pub chunk_size: u32,
    /// Concurrent RTMP connections; more are refused at accept.
    pub max_connections: usize,
    /// Concurrent RTMP connections from one client address (an encoder needs one; NATs share addresses).
    pub max_connections_per_ip: usize,
    /// Seconds without any byte from a client before its connection is closed.
    pub idle_timeout_secs: u64,
    /// Seconds a client has to complete the handshake and start publishing.
    pub handshake_timeout_secs: u64,
}

/// The SRT listener: publishers (OBS, ffmpeg, hardware encoders) connect as callers and send MPEG-TS.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SrtConfig {
    /// Run the SRT listener; off: no SRT publishing.
    pub enabled: bool,
    /// UDP address the SRT listener binds to (port 0: any free port).
    pub listen: SocketAddr,
    /// SRT receive latency in milliseconds (the buffer that lets lost packets be sent again); the larger of this
    /// and the publisher's own is used.
    pub latency_ms: u32,
    /// Concurrent SRT connections; more are rejected with 1402 (overload) in the handshake.
    pub max_connections: usize,
    /// Concurrent SRT connections from one client address (IPv6: one /64).
    pub max_connections_per_ip: usize,
    /// Seconds without media from a connected publisher before its connection is closed.
    pub idle_timeout_secs: u64,
}

/// The WebRTC engine: every session on one UDP port and one ICE-TCP port.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RtcConfig {
    /// Run the WebRTC engine; off: no WHIP or WHEP.
    pub enabled: bool,
    /// Address the UDP socket and the TCP listener bind to.
    pub bind: std::net::IpAddr,
    /// UDP port of every WebRTC session (0: any free port).
    pub udp_port: u16,
    /// ICE-TCP (RFC 4571 framing) for clients whose UDP is blocked.
    pub tcp_enabled: bool,
    /// ICE-TCP listener port (0: any free port).
    pub tcp_port: u16,
    /// Addresses put in ICE candidates (NAT 1:1). Empty: the bind address, or every local non-loopback
    /// address when bound to 0.0.0.0 / ::.
    pub public_ips: Vec<std::net::IpAddr>,
    /// STUN/TURN servers announced to WHIP/WHEP clients in `Link` headers.
    pub ice_servers: Vec<IceServer>,
    /// Secret shared with a TURN server (coturn `static-auth-secret` with `use-auth-secret`): `turn:`/`turns:`
    /// servers without a username get short-lived REST credentials per authenticated client. Empty: off.
    pub turn_secret: String,
    /// Lifetime of those credentials.
    pub turn_ttl_secs: u64,
    /// Seconds a session has to connect (ICE and DTLS); a WHIP publisher's session also ends after this long
    /// without media.
    pub session_timeout_secs: u64,
    /// WebRTC sessions (WHIP publishers + WHEP viewers) at once; more get 503 with Retry-After.
    pub max_sessions: usize,
    /// WHEP sessions one client address may start per minute; more get 429 with Retry-After (0: no limit).
    pub whep_per_ip_per_minute: u32,
    /// ICE-TCP connections open at once; more are closed at accept.
    pub tcp_max_connections: usize,
    /// Share of `tcp_max_connections` one client address may hold.
    pub tcp_max_connections_per_ip: usize,
    /// Seconds an ICE-TCP connection has to send a STUN request before it is closed.
    pub tcp_stun_timeout_secs: u64,
    /// Engine shards: tasks that run the WebRTC sessions, spread by session (0: one per CPU core).
    pub workers: usize,
}

impl RtcConfig {
    /// How many engine shards to run: `workers`, or one per core.
    pub fn shard_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

/// A STUN or TURN server for clients (`urls` like `stun:host:3478`, `turn:host:3478?transport=udp`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    /// `stun:`, `turn:` or `turns:` URLs of the server.
    pub urls: Vec<String>,
    /// TURN username given to authenticated clients; empty: REST credentials when `rtc.turn_secret` is set.
    #[serde(default)]
    pub username: String,
    /// TURN password that goes with `username`.
    #[serde(default)]
    pub credential: String,
}

impl Default for RtcConfig {
    fn default() -> Self {
        RtcConfig {
            enabled: true,
            bind: std::net::IpAddr::from([0, 0, 0, 0]),
            udp_port: 8189,
            tcp_enabled: true,
            tcp_port: 8189,
            public_ips: Vec::new(),
            ice_servers: Vec::new(),
            turn_secret: String::new(),
            turn_ttl_secs: 86_400,
            session_timeout_secs: 10,
            max_sessions: 1000,
            whep_per_ip_per_minute: 60,
            tcp_max_connections: 1000,
            tcp_max_connections_per_ip: 20,
            tcp_stun_timeout_secs: 5,
            workers: 0,
        }
    }
}

/// Transcoded audio: Opus bitrate, complexity and frame duration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AudioConfig {
    /// Opus bitrate (bit/s) of transcoded audio.
    pub opus_bitrate: u32,
    /// Opus encoder complexity 0-10 (CPU against quality at `opus_bitrate`); an app may set its own.
    pub opus_complexity: u8,
    /// Milliseconds of audio per Opus packet: 10, 20, 40 or 60; an app may set its own.
    pub opus_frame_ms: u8,
}

/// The Opus complexity used when the configuration sets none, chosen by measurement (`make bench
/// BENCH=opus-quality`, table in the README's "Benchmark"): the lowest complexity within 0.5 dB SNR and 0.2 dB
/// log-spectral distance of complexity 10 on a tone, a speech-like and a music-like signal at 64 kb/s. It costs
/// 0.76 % of a core per stereo stream against 0.91 % at 10; 5 and below lose 5 dB of SNR on a pure tone.
pub const DEFAULT_OPUS_COMPLEXITY: u8 = 7;

/// The Opus frame duration used when the configuration sets none, chosen by measurement (README, "Benchmark"):
/// a viewer of transcoded audio gets 25 packets a second instead of WebRTC's usual 50, which at `1x100` took an
/// eighth off the gateway's CPU (every packet is a poll, an encryption and a send per viewer) and ~13 kb/s of
/// headers off each viewer's stream, at the same quality; the cost is 20 ms more audio delay, small next to what
/// RTMP, SRT and pulled sources already carry. Interactive uses may set 20. Shortened where the packets would
/// not fit a datagram (`OpusSettings::effective_frame_ms`).
pub const DEFAULT_OPUS_FRAME_MS: u8 = 40;

/// Video that roomgate decodes (VP8 publishers, pull sources it transcodes).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VideoConfig {
    /// Largest picture (width x height) a source may declare for decoding; larger ones are refused.
    pub max_pixels: u64,
}

impl Default for VideoConfig {
    fn default() -> Self {
        VideoConfig {
            max_pixels: crate::media::transcode::MAX_PIXELS,
        }
    }
}

/// An application: its SDKAppID and the secret key UserSigs are made with.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// The app's SDKAppID (not 0; unique among `apps`).
    pub sdkappid: u64,
    /// Secret key UserSigs and PrivateMapKeys of this app are signed with.
    pub secret_key: String,
    /// Publishing needs a PrivateMapKey granting enter room + send audio/video for the room.
    #[serde(default)]
    pub require_private_map_key: bool,
    /// Anyone may watch this app's rooms over WHEP without a token.
    #[serde(default)]
    pub public_playback: bool,
    /// Display name in the console; may be empty.
    #[serde(default)]
    pub name: String,
    /// Where event callbacks (701/702, rooms, media) are POSTed; empty: no callbacks.
    #[serde(default)]
    pub callback_url: String,
    /// Key of the callbacks' `Sign` header (HMAC-SHA256 of the body).
    #[serde(default)]
    pub callback_key: String,
    /// Opus complexity for this app's transcoded audio; `audio.opus_complexity` when not set.
    #[serde(default)]
    pub opus_complexity: Option<u8>,
    /// Opus frame duration (ms) of this app's transcoded audio; `audio.opus_frame_ms` when not set.
    #[serde(default)]
    pub opus_frame_ms: Option<u8>,
    /// WHEP players must offer the anchor's own H.264 profile (406 otherwise). Off: a player that offers H.264
    /// of another profile is answered with that format and gets the anchor's stream (decoders cope; SRS and
    /// MediaMTX do the same).
    #[serde(default)]
    pub strict_h264_profile: bool,
    /// SRT passphrase (10-79 characters) this app's SRT publishers must encrypt with (AES); empty: none, and an
    /// encrypting publisher is rejected.
    #[serde(default)]
    pub srt_passphrase: String,
}

/// Delivery of event callbacks (TRTC's policy by default).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallbacksConfig {
    /// A delivery that gets no HTTP 200 within this is a failure (seconds).
    pub timeout_secs: u64,
    /// After the immediate retry, retries come this often (seconds).
    pub retry_interval_secs: u64,
    /// Retries stop this long after the first try (seconds); the event is then kept as failed.
    pub retry_window_secs: u64,
    /// Seconds a track may go without frames before a 202/204 is sent (when the other track still flows).
    pub media_idle_secs: u64,
    /// Days a delivered callback is kept in the store before it is deleted; 0 keeps them forever. Pending and
    /// failed callbacks are never deleted.
    pub retention_days: u64,
    /// Callbacks kept in memory (and still delivered) while the store refuses writes; past this, new events wait
    /// until the store takes writes again (none is dropped).
    pub memory_queue_max: usize,
}

impl Default for CallbacksConfig {
    fn default() -> Self {
        CallbacksConfig {
            timeout_secs: 5,
            retry_interval_secs: 10,
            retry_window_secs: 60,
            media_idle_secs: 5,
            retention_days: 7,
            memory_queue_max: 10_000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./roomgate-data"),
            log: "info".into(),
            public_host: "127.0.0.1".into(),
            http: HttpConfig::default(),
            rtmp: RtmpConfig::default(),
            srt: SrtConfig::default(),
            rtc: RtcConfig::default(),
            audio: AudioConfig::default(),
            video: VideoConfig::default(),
            apps: Vec::new(),
            api_keys: Vec::new(),
            api: CloudApiConfig::default(),
            pull: PullConfig::default(),
            callbacks: CallbacksConfig::default(),
            admin: AdminConfig::default(),
            cluster: ClusterConfig::default(),
            tls: TlsConfig::default(),
            demo_media: None,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "0.0.0.0:8080".parse().expect("valid address"),
            plain: true,
            tls_listen: String::new(),
            max_connections: 4096,
            max_connections_per_ip: 64,
            header_timeout_secs: 10,
            idle_timeout_secs: 60,
            body_timeout_secs: 30,
        }
    }
}

impl Default for RtmpConfig {
    fn default() -> Self {
        RtmpConfig {
            enabled: true,
            listen: "0.0.0.0:1935".parse().expect("valid address"),
            plain: true,
            tls_listen: String::new(),
            max_message_size: 8 * 1024 * 1024,
            max_chunk_size: 1 << 20,
            chunk_size: 4096,
            max_connections: 1000,
            max_connections_per_ip: 20,
            idle_timeout_secs: 30,
            handshake_timeout_secs: 10,
        }
    }
}

impl Default for SrtConfig {
    fn default() -> Self {
        SrtConfig {
            enabled: true,
            listen: "0.0.0.0:8890".parse().expect("valid address"),
            latency_ms: 120,
            max_connections: 1000,
            max_connections_per_ip: 20,
            idle_timeout_secs: 10,
        }
    }
}

impl Default for AudioConfig {
    fn default() -> Self {
        AudioConfig {
            opus_bitrate: 64_000,
            opus_complexity: DEFAULT_OPUS_COMPLEXITY,
            opus_frame_ms: DEFAULT_OPUS_FRAME_MS,
        }
    }
}

impl Config {
    /// The HTTPS listener's address (`http.tls_listen`), if one is set (checked by `validate`).
    pub fn https_listen(&self) -> Option<SocketAddr> {
        self.http.tls_listen.parse().ok()
    }

    /// The RTMPS listener's address (`rtmp.tls_listen`), if one is set (checked by `validate`).
    pub fn rtmps_listen(&self) -> Option<SocketAddr> {
        self.rtmp.tls_listen.parse().ok()
    }

    /// The configured app with this SDKAppID, if any.
    pub fn app(&self, sdkappid: u64) -> Option<&AppConfig> {
        self.apps.iter().find(|a| a.sdkappid == sdkappid)
    }

    /// How audio of app `sdkappid` is encoded to Opus (`bitrate` overrides the configured one when set).
    pub fn opus_settings(&self, sdkappid: u64, bitrate: Option<u32>) -> crate::media::transcode::OpusSettings {
        let app = self.app(sdkappid);
        crate::media::transcode::OpusSettings {
            bitrate: bitrate.unwrap_or(self.audio.opus_bitrate),
            complexity: app
                .and_then(|a| a.opus_complexity)
                .unwrap_or(self.audio.opus_complexity)
                .min(10),
            frame_ms: app.and_then(|a| a.opus_frame_ms).unwrap_or(self.audio.opus_frame_ms),
        }
    }

    /// The configured API key with this SecretId, if any.
    pub fn api_key(&self, secret_id: &str) -> Option<&ApiKeyConfig> {
        self.api_keys.iter().find(|k| k.secret_id == secret_id)
    }
}
