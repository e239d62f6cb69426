//! Opening a pull source once: the address policy and HTTP pre-flight before libav sees the URL, libav's open
//! bounded by a deadline and interruptible by Stop (http(s) only through the source proxy, whitelisted protocols
//! and formats), the choice of streams, and for each stream its path: passed through (H.264 without B-frames,
//! Opus) or transcoded. The result is an `OpenedSource` the pump plays.

use super::control::Terms;
use super::proxy::{ProxyEvent, ProxySession};
use super::runner::{Ended, TaskRun};
use super::{source, SourceInfo, TaskSpec, TaskState};
use crate::media::h264::AvcConfig;
use crate::media::transcode::{AudioInputCodec, AudioTranscoder, StreamParameters, VideoInput, VideoTranscoder};
use crate::media::{TrackInfo, AUDIO_CLOCK};
use crate::room::{AnchorHandle, SourceKind};
use bytes::Bytes;
use ffmpeg_next as ff;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use url::Url;

/// Protocols libav may use for an http(s) source: the http stack through the source proxy (`httpproxy` is the
/// CONNECT tunnel to it, `tcp` its connection to the proxy) and `crypto`, which only decrypts what another
/// whitelisted protocol fetched (AES-128 HLS segments). No `file`, `udp`, `rtp`, `data`, `concat`, `subfile`...
const HTTP_PROTOCOLS: &str = "http,https,tls,tcp,httpproxy,crypto";
/// Demuxers libav may use (the formats the README documents), on the source and inside HLS. None of them opens
/// URLs of its own except `hls`, whose playlist entries are held to the protocols above and to the proxy. Not
/// here on purpose: `sdp`/`rtp`/`rtsp` (open UDP to any host), `concat`, `dash`, `image2`, `tee`...
const FORMATS: &str = "mov,mp4,m4a,3gp,3g2,mj2,flv,live_flv,mpegts,hls,matroska,webm,mp3,aac,ogg,wav,flac";
/// What callers see for a format (or a URL inside it) libav was not allowed to use.
pub(super) const FORMAT_REFUSED: &str = "unsupported source: its container format is not accepted (FLV, MP4/MOV/M4A, \
     MPEG-TS, HLS, Matroska/WebM, MP3, AAC, Ogg, WAV and FLAC are)";

/// What libav's interrupt callback checks besides Stop: a deadline for the blocking call in progress.
pub(super) struct Deadline {
    base: Instant,
    /// ms since `base`; 0 = none.
    at_ms: AtomicU64,
}

impl Deadline {
    fn new() -> Deadline {
        Deadline {
            base: Instant::now(),
            at_ms: AtomicU64::new(0),
        }
    }
    /// The blocking call about to start may take `d`.
    pub fn set(&self, d: Duration) {
        let ms = (self.base.elapsed() + d).as_millis() as u64;
        self.at_ms.store(ms.max(1), Ordering::Relaxed);
    }
    /// The blocking call in progress took too long.
    pub fn passed(&self) -> bool {
        let at = self.at_ms.load(Ordering::Relaxed);
        at != 0 && self.base.elapsed().as_millis() as u64 > at
    }
}

/// The video path chosen for a source.
pub(super) enum VideoPath {
    /// H.264 without B-frames: converted to Annex-B and published as is.
    Passthrough {
        avcc: Option<AvcConfig>,
        extradata: Bytes,
    },
    Transcode(VideoTranscoder),
}

/// The audio path chosen for a source.
pub(super) enum AudioPath {
    /// Opus, untouched.
    Passthrough,
    Transcode(AudioTranscoder),
}

/// One stream of the source the task plays, and how.
pub(super) struct Chosen<P> {
    pub index: usize,
    pub time_base: ff::Rational,
    pub path: P,
}

/// A source opened and ready to play. Dropped on the runner thread, it lets its transcoders publish what they
/// hold before the next opening starts (so frames of two openings never interleave).
pub(super) struct OpenedSource {
    pub input: ff::format::context::Input,
    pub video: Option<Chosen<VideoPath>>,
    pub audio: Option<Chosen<AudioPath>>,
    pub info: SourceInfo,
    pub deadline: Arc<Deadline>,
    /// The proxy session of an http(s) source (what it refused outranks what libav reports).
    pub proxy: Option<ProxySession>,
    /// No data for this long ends the opening.
    pub read_timeout: Duration,
    /// Where playback starts in the source (SeekSecond or the saved position), ms.
    pub seek_base_ms: i64,
    pub terms: Terms,
    pub opened_at: Instant,
    /// The name of the task's transcoder threads and log lines.
    pub label: String,
}

impl Drop for OpenedSource {
    fn drop(&mut self) {
        if let Some(Chosen {
            path: VideoPath::Transcode(t),
            ..
        }) = self.video.take()
        {
            t.finish();
        }
        if let Some(Chosen {
            path: AudioPath::Transcode(t),
            ..
        }) = self.audio.take()
        {
            t.finish();
        }
    }
}

impl OpenedSource {
    /// This opening failed for `reason`.
    pub fn failed(&self, reason: String) -> Ended {
        failure(reason, self.proxy.as_ref(), self.opened_at)
    }
}

/// A failure `reason`, unless the proxy refused an address, which is then the reason callers see.
fn failure(reason: String, proxy: Option<&ProxySession>, opened_at: Instant) -> Ended {
    Ended::Failed {
        reason: match proxy {
            Some(p) if p.refused() => source::REFUSED_ADDRESS.to_string(),
            _ => reason,
        },
        played_for: opened_at.elapsed(),
    }
}

/// Open the task's source for playing from `position_ms`.
pub(super) fn open(run: &mut TaskRun<'_>, position_ms: i64) -> Result<OpenedSource, Ended> {
    let task = run.task;
    let spec = task.spec();
    let desired = task.control.snapshot();
    task.set_status(|st| {
        if st.state != TaskState::Restarting {
            st.state = TaskState::Connecting;
        }
    });
    let opened_at = Instant::now();
    let url = preflight(run, &spec, opened_at)?;
    let (mut input, proxy, deadline, read_timeout) = open_input(run, &spec, url, opened_at)?;
    let fail = |reason: String| failure(reason, proxy.as_ref(), opened_at);

    // Streams: the best video (not a cover picture) and the best audio.
    let video_stream = input
        .streams()
        .filter(|st| st.parameters().medium() == ff::media::Type::Video)
        .filter(|st| !st.disposition().contains(ff::format::stream::Disposition::ATTACHED_PIC))
        .max_by_key(|st| StreamParameters(st.parameters()).width())
        .map(|st| st.index());
    let audio_stream = input.streams().best(ff::media::Type::Audio).map(|st| st.index());
    if video_stream.is_none() && audio_stream.is_none() {
        return Err(fail(if input.nb_streams() == 0 {
            "empty source: no audio or video stream".to_string()
        } else {
            "unsupported source: no audio or video stream".to_string()
        }));
    }

    // Join the room (once per task; the anchor stays through loops and retries).
    if run.anchor.is_none() {
        run.anchor = Some(run.env.hub.join(run.key.clone(), &spec.user_id, SourceKind::Pull));
    }
    let run = &*run;
    let anchor = run.anchor.as_ref().expect("joined above");
    let label = format!("pull-{}", &task.id[..8]);
    let mut info = SourceInfo {
        format: input.format().name().to_string(),
        duration_ms: (input.duration() > 0).then(|| (input.duration() / 1000) as u64),
        ..Default::default()
    };
    // A stream that cannot be decoded is left out when the other one plays.
    let video = video_stream.map(|idx| choose_video(run.env, &input, idx, &spec, anchor, &label, &mut info));
    let video = playable(video, audio_stream.is_some(), "audio", &task.id).map_err(&fail)?;
    let audio = audio_stream.map(|idx| choose_audio(run, &input, idx, &spec, &label, &mut info));
    let audio = playable(audio, video.is_some(), "video", &task.id).map_err(&fail)?;
    if video.is_none() && audio.is_none() {
        return Err(fail(
            "unsupported source: neither its audio nor its video can be decoded".to_string(),
        ));
    }
    task.set_status(|st| st.source = Some(info.clone()));

    // Seek (SeekSecond on the first loop, or the saved position after a restart).
    let mut seek_base_ms = 0i64;
    if position_ms > 0 {
        let ts = position_ms.saturating_mul(1000); // AV_TIME_BASE is microseconds
        deadline.set(Duration::from_secs(run.env.config.pull.open_timeout_secs.max(1)));
        match input.seek(ts, ..ts) {
            Ok(()) => seek_base_ms = position_ms,
            Err(e) => tracing::info!(task = %task.id, error = %e, "source cannot seek; playing from its start"),
        }
    }
    let terms = Terms {
        url_generation: desired.url_generation,
        max_end: run.max_end,
        audio_passthrough: matches!(
            audio,
            Some(Chosen {
                path: AudioPath::Passthrough,
                ..
            })
        ),
    };
    Ok(OpenedSource {
        input,
        video,
        audio,
        info,
        deadline,
        proxy,
        read_timeout,
        seek_base_ms,
        terms,
        opened_at,
        label,
    })
}

/// The address policy and the HTTP pre-flight (status, redirects, TLS): the URL libav may open.
fn preflight(run: &TaskRun<'_>, spec: &TaskSpec, opened_at: Instant) -> Result<Url, Ended> {
    let task = run.task;
    let url = source::parse_source_url(&spec.stream_url).map_err(|e| failure(e.public_reason(), None, opened_at))?;
    let sources = &run.env.sources;
    let policy = sources.policy(spec.trusted_source);
    let client = sources.preflight_client(spec.trusted_source).clone();
    let (checked, p) = (url.clone(), policy.clone());
    match sources.run(
        &task.control,
        async move { source::preflight(&client, &checked, &p).await },
    ) {
        None => Err(Ended::Stopped),
        Some(Ok(u)) => Ok(u),
        Some(Err(e)) => {
            tracing::warn!(task = %task.id, url = %source::redact(&url), error = %e, "pull source pre-flight failed");
            Err(failure(e.public_reason(), None, opened_at))
        }
    }
}

/// libav's open, bounded by `pull.open_timeout_secs` and interruptible by Stop; http(s) only through the source
/// proxy, no redirects of its own, whitelisted protocols and formats only.
fn open_input(
    run: &TaskRun<'_>,
    spec: &TaskSpec,
    mut url: Url,
    opened_at: Instant,
) -> Result<
    (
        ff::format::context::Input,
        Option<ProxySession>,
        Arc<Deadline>,
        Duration,
    ),
    Ended,
> {
    let (task, config, sources) = (run.task, &run.env.config, &run.env.sources);
    let policy = sources.policy(spec.trusted_source);
    let deadline = Arc::new(Deadline::new());
    let read_timeout = Duration::from_secs(
        spec.idle_timeout
            .filter(|s| *s > 0)
            .unwrap_or(config.pull.read_timeout_secs)
            .max(1),
    );
    let mut opts = ff::Dictionary::new();
    opts.set("rw_timeout", &read_timeout.as_micros().to_string());
    opts.set("user_agent", concat!("roomgate/", env!("CARGO_PKG_VERSION")));
    opts.set("format_whitelist", FORMATS);
    let proxy = if super::direct::SCHEMES.contains(&url.scheme()) {
        let connect_ms = config.pull.open_timeout_secs.max(1) * 1000;
        let (direct, session) = super::direct::prepare(run, url, policy, &mut opts, read_timeout, connect_ms).map_err(
            |reason| match reason {
                None => Ended::Stopped,
                Some(reason) => failure(reason, None, opened_at),
            },
        )?;
        url = direct;
        session
    } else {
        let Ok(session) = sources.proxy_session(policy, &task.id[..8]) else {
            return Err(failure(source::NOT_OPENED.to_string(), None, opened_at));
        };
        opts.set("protocol_whitelist", HTTP_PROTOCOLS);
        opts.set("http_proxy", &session.url());
        opts.set("max_redirects", "0");
        Some(session)
    };
    deadline.set(Duration::from_secs(config.pull.open_timeout_secs.max(1)));
    let interrupt = {
        let task = task.clone();
        let deadline = deadline.clone();
        move || task.control.stop_requested() || deadline.passed()
    };
    match ff::format::input_with_interrupt_and_dictionary(&url.as_str(), interrupt, opts) {
        Ok(input) => Ok((input, proxy, deadline, read_timeout)),
        Err(_) if task.control.stop_requested() => Err(Ended::Stopped),
        Err(e) => {
            let events = proxy.as_ref().map(|p| p.events()).unwrap_or_default();
            tracing::warn!(task = %task.id, url = %source::redact(&url), error = %e, timed_out = deadline.passed(),
                proxy = ?events, "libav cannot open the pull source");
            Err(failure(
                open_error(&e, deadline.passed(), &events),
                proxy.as_ref(),
                opened_at,
            ))
        }
    }
}

/// The stream to play out of a choice, `None` for an undecodable one while the other stream plays (logged: the
/// task plays `alone` only); `Err`: why the whole source fails.
fn playable<T>(
    choice: Option<Result<T, Unplayable>>,
    other_plays: bool,
    alone: &str,
    task: &str,
) -> Result<Option<T>, String> {
    match choice {
        None => Ok(None),
        Some(Ok(chosen)) => Ok(Some(chosen)),
        Some(Err(Unplayable::Undecodable(why))) if other_plays => {
            tracing::warn!(task, reason = %why, "playing {alone} only");
            Ok(None)
        }
        Some(Err(Unplayable::Undecodable(why) | Unplayable::Refused(why))) => Err(why),
    }
}

/// Why a stream cannot be played.
enum Unplayable {
    /// No decoder for it (the other stream may still play).
    Undecodable(String),
    /// Refused outright (the whole source fails).
    Refused(String),
}

/// The path of video stream `idx`: passed through when it is H.264 without B-frames and no re-encoding is asked
/// for, transcoded otherwise. `Err`: the reason the video cannot be played.
fn choose_video(
    env: &super::env::RunnerEnv,
    input: &ff::format::context::Input,
    idx: usize,
    spec: &TaskSpec,
    anchor: &AnchorHandle,
    label: &str,
    info: &mut SourceInfo,
) -> Result<Chosen<VideoPath>, Unplayable> {
    let st = input.stream(idx).expect("stream index");
    let params = StreamParameters(st.parameters());
    let (width, height) = (params.width(), params.height());
    let rate = st.avg_frame_rate();
    let fps =
        (rate.denominator() > 0 && rate.numerator() > 0).then(|| rate.numerator() as f64 / rate.denominator() as f64);
    let codec = params.0.id();
    info.video_codec = Some(codec.name().to_string());
    info.width = Some(width);
    info.height = Some(height);
    info.fps = fps.map(|f| (f * 100.0).round() / 100.0);
    let passthrough = codec == ff::codec::Id::H264 && !params.reorders() && spec.video_encode_params.is_none();
    let max_pixels = env.config.video.max_pixels;
    if !passthrough && width as u64 * height as u64 > max_pixels {
        let why = crate::ingest::Refusal::PictureTooLarge {
            width,
            height,
            max_pixels,
        };
        return Err(Unplayable::Refused(why.to_string()));
    }
    let path = if passthrough {
        let extradata = Bytes::copy_from_slice(params.extradata());
        let avcc = (extradata.first() == Some(&1))
            .then(|| AvcConfig::parse(&extradata).ok())
            .flatten();
        if let Some(cfg) = &avcc {
            anchor.set_video_info(TrackInfo::from(&cfg.info));
        }
        VideoPath::Passthrough { avcc, extradata }
    } else {
        match start_video_transcoder(&params, fps, spec, max_pixels, anchor, label) {
            Ok(t) => VideoPath::Transcode(t),
            Err(e) => {
                return Err(Unplayable::Undecodable(format!(
                    "unsupported video codec {}: {e}",
                    codec.name()
                )))
            }
        }
    };
    info.video_passthrough = matches!(path, VideoPath::Passthrough { .. });
    Ok(Chosen {
        index: idx,
        time_base: st.time_base(),
        path,
    })
}

/// The path of audio stream `idx`: Opus passes through unless volume, tempo or a bitrate change it; everything
/// else is transcoded to Opus. `Err`: the reason the audio cannot be played.
fn choose_audio(
    run: &TaskRun<'_>,
    input: &ff::format::context::Input,
    idx: usize,
    spec: &TaskSpec,
    label: &str,
    info: &mut SourceInfo,
) -> Result<Chosen<AudioPath>, Unplayable> {
    let anchor = run.anchor.as_ref().expect("joined before the paths are chosen");
    let st = input.stream(idx).expect("stream index");
    let params = StreamParameters(st.parameters());
    let codec = params.0.id();
    info.audio_codec = Some(codec.name().to_string());
    let passthrough = codec == ff::codec::Id::OPUS
        && !run.task.control.snapshot().tunes_audio()
        && spec.audio_encode_params.is_none();
    let path = if passthrough {
        AudioPath::Passthrough
    } else {
        let bitrate = spec
            .audio_encode_params
            .as_ref()
            .map(|p| p.bit_rate.saturating_mul(1000))
            .filter(|b| *b >= 6000);
        match AudioTranscoder::start(
            AudioInputCodec::Stream(params.clone()),
            run.env.config.opus_settings(spec.sdk_app_id, bitrate),
            anchor.sink(),
            label.to_string(),
            Some(run.task.control.tuning()),
        )
        .wait()
        {
            Ok(t) => AudioPath::Transcode(t),
            Err(e) => {
                return Err(Unplayable::Undecodable(format!(
                    "unsupported audio codec {}: {e}",
                    codec.name()
                )))
            }
        }
    };
    info.audio_passthrough = matches!(path, AudioPath::Passthrough);
    anchor.set_audio_info(TrackInfo {
        source_codec: codec.name().to_string(),
        sample_rate: Some(AUDIO_CLOCK),
        source_sample_rate: Some(params.sample_rate()),
        channels: Some(params.channels()),
        ..Default::default()
    });
    Ok(Chosen {
        index: idx,
        time_base: st.time_base(),
        path,
    })
}

/// A video transcoder for the stream, with the task's (deprecated) VideoEncodeParams applied.
pub(super) fn start_video_transcoder(
    params: &StreamParameters,
    fps: Option<f64>,
    spec: &TaskSpec,
    max_pixels: u64,
    anchor: &AnchorHandle,
    label: &str,
) -> Result<VideoTranscoder, crate::media::transcode::TranscodeError> {
    let mut input = VideoInput::from_stream(params.clone(), fps.map(|f| f.round() as u32));
    input.max_pixels = max_pixels;
    if let Some(p) = &spec.video_encode_params {
        if p.width > 0 && p.height > 0 {
            input.size = Some((p.width, p.height));
        }
        if p.fps > 0 {
            input.fps = Some(p.fps);
        }
        if p.bit_rate > 0 {
            input.bitrate = Some(p.bit_rate.saturating_mul(1000));
        }
        if p.gop > 0 {
            input.keyframe_secs = Some(p.gop);
        }
    }
    VideoTranscoder::start(input, anchor.sink(), label.to_string()).wait()
}

/// The reason callers see for a source libav could not open: what the source's server answered (HTTP status,
/// not media, a format we refuse) stays visible; anything about reaching an address is one generic reason.
fn open_error(e: &ff::Error, timed_out: bool, proxy: &[ProxyEvent]) -> String {
    if proxy.iter().any(|ev| matches!(ev, ProxyEvent::Refused { .. })) {
        return source::REFUSED_ADDRESS.into();
    }
    if let Some(status) = proxy.iter().find_map(|ev| match ev {
        ProxyEvent::RtspRedirected { status } => Some(*status),
        _ => None,
    }) {
        let what = if status == 0 {
            "a Location header".to_string()
        } else {
            format!("a redirect ({status})")
        };
        return format!(
            "the RTSP server answered with {what}; RTSP redirects are not followed (use the address it redirects to)"
        );
    }
    if let Some((why, certificate)) = proxy.iter().find_map(|ev| match ev {
        ProxyEvent::TlsFailed { why, certificate } => Some((why, *certificate)),
        _ => None,
    }) {
        let hint = if certificate {
            " (a camera's own certificate or CA goes in pull.ca_file)"
        } else {
            ""
        };
        return format!("TLS with the RTSPS server failed: {why}{hint}");
    }
    if timed_out || proxy.iter().any(|ev| matches!(ev, ProxyEvent::Unreachable { .. })) {
        return source::NOT_OPENED.into();
    }
    match e {
        ff::Error::HttpNotFound => "the server answered HTTP 404 Not Found".into(),
        ff::Error::HttpForbidden => "the server answered HTTP 403 Forbidden".into(),
        ff::Error::HttpUnauthorized => "the server answered HTTP 401 Unauthorized".into(),
        ff::Error::HttpServerError => "the server answered HTTP 5xx".into(),
        ff::Error::InvalidData => "not a media file libav recognizes (unknown format or corrupt data)".into(),
        ff::Error::Eof => "empty source: it ended before any media".into(),
        ff::Error::ProtocolNotFound | ff::Error::DemuxerNotFound => FORMAT_REFUSED.into(),
        // What a format or protocol whitelist answers.
        ff::Error::Other { errno } if *errno == libc_errno::EINVAL => FORMAT_REFUSED.into(),
        _ => match proxy.iter().find_map(|ev| match ev {
            ProxyEvent::Redirected { status } => Some(*status),
            _ => None,
        }) {
            Some(status) => format!(
                "the source answered the media request with a redirect (HTTP {status}) it did not send the \
                 pre-flight; such redirects are not followed"
            ),
            None => source::NOT_OPENED.into(),
        },
    }
}

mod libc_errno {
    pub const EINVAL: i32 = 22;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_errors_show_what_the_server_said_and_nothing_about_addresses() {
        let errno = |e: i32| ff::Error::Other { errno: e };
        for (e, timed_out) in [
            (errno(111), false),
            (errno(110), false),
            (errno(5), false),
            (ff::Error::HttpNotFound, true),
        ] {
            assert_eq!(open_error(&e, timed_out, &[]), source::NOT_OPENED, "{e:?}");
        }
        assert!(open_error(&ff::Error::HttpNotFound, false, &[]).contains("HTTP 404"));
        assert!(open_error(&ff::Error::InvalidData, false, &[]).contains("not a media file"));
        assert_eq!(open_error(&errno(libc_errno::EINVAL), false, &[]), FORMAT_REFUSED);
        let refused = ProxyEvent::Refused {
            host: "internal".into(),
            ip: "10.0.0.1".parse().unwrap(),
        };
        // The proxy's 403 is not the source's.
        assert_eq!(
            open_error(&ff::Error::HttpForbidden, false, &[refused]),
            source::REFUSED_ADDRESS
        );
        // Nor its 502.
        let unreachable = ProxyEvent::Unreachable { host: "h".into() };
        assert_eq!(
            open_error(&ff::Error::HttpServerError, false, &[unreachable]),
            source::NOT_OPENED
        );
        let redirected = ProxyEvent::Redirected { status: 302 };
        assert!(open_error(&errno(5), false, &[redirected]).contains("redirect (HTTP 302)"));
    }
}
