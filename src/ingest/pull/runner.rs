//! The pull runner: one OS thread per task (libav blocks). It opens the source with libav (timeouts and an
//! interrupt callback, so Stop never waits on a hung server), reads it at real time (paced by timestamps, scaled
//! by Tempo), passes H.264 without B-frames through and sends everything else to the transcoders, loops RepeatNum
//! times and retries a broken source at 0, 1 and 3 s before the task fails.
//!
//! Output timeline: a frame's room timestamp is the wall-clock time (since the task began) it is due, so loops,
//! reopenings, pauses and tempo changes all stay monotonic and in step with real time.

use super::proxy::ProxyEvent;
use super::source;
use super::{IngestEventKind, IngestTask, PullService, SourceInfo, TaskState};
use crate::media::h264::{self, AvcConfig};
use crate::media::transcode::{AudioInputCodec, AudioTranscoder, StreamParameters, VideoInput, VideoTranscoder};
use crate::media::{Codec, Frame, AUDIO_CLOCK, VIDEO_CLOCK};
use crate::room::{AnchorPublisher, LeaveReason, RoomKey, SourceKind, TrackInfo};
use bytes::Bytes;
use ffmpeg_next as ff;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Delays before the retries of a broken source: at 0, 1 and 3 s after the failure (TRTC's schedule).
const RETRY_DELAYS: [Duration; 3] = [Duration::ZERO, Duration::from_secs(1), Duration::from_secs(2)];
/// How often progress is written to the store.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// A source that played this long before breaking gets a fresh retry schedule.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// Protocols libav may use for an http(s) source: the http stack through the source proxy (`httpproxy` is the
/// CONNECT tunnel to it, `tcp` its connection to the proxy) and `crypto`, which only decrypts what another
/// whitelisted protocol fetched (AES-128 HLS segments). No `file`, `udp`, `rtp`, `data`, `concat`, `subfile`...
const HTTP_PROTOCOLS: &str = "http,https,tls,tcp,httpproxy,crypto";
/// Protocols libav may use for an rtmp source.
const RTMP_PROTOCOLS: &str = "rtmp,tcp";
/// Demuxers libav may use (the formats the README documents), on the source and inside HLS. None of them opens
/// URLs of its own except `hls`, whose playlist entries are held to the protocols above and to the proxy. Not
/// here on purpose: `sdp`/`rtp`/`rtsp` (open UDP to any host), `concat`, `dash`, `image2`, `tee`...
const FORMATS: &str = "mov,mp4,m4a,3gp,3g2,mj2,flv,live_flv,mpegts,hls,matroska,webm,mp3,aac,ogg,wav,flac";
/// What callers see for a format (or a URL inside it) libav was not allowed to use.
const FORMAT_REFUSED: &str = "unsupported source: its container format is not accepted (FLV, MP4/MOV/M4A, MPEG-TS, \
     HLS, Matroska/WebM, MP3, AAC, Ogg, WAV and FLAC are)";

/// How one opening of the source ended.
enum Played {
    /// The source ended (a loop is done).
    Eof,
    /// StopStreamIngest or shutdown.
    Stopped,
    /// Another publisher took over the identity.
    Replaced,
    /// MaxDuration elapsed (RepeatNum -1).
    MaxDuration,
    /// No data for IdleTimeout seconds.
    Idle(u64),
    /// UpdateStreamIngest changed the URL.
    UrlChanged,
    /// Volume or Tempo changed on audio that was passing through: reopen where we are, transcoding.
    Reconfigure,
    /// The source could not be opened or broke.
    Failed { reason: String, played_for: Duration },
}

/// State that lives across openings of one task.
struct Session<'a> {
    service: &'a Arc<PullService>,
    task: &'a Arc<IngestTask>,
    key: RoomKey,
    anchor: Option<AnchorPublisher>,
    /// Start of the output timeline.
    epoch: Instant,
    max_end: Option<Instant>,
    loops_done: i64,
    restarts: i64,
    last_saved: Instant,
}

/// Run a task to its end; returns the final state and reason.
pub(super) fn run(service: &Arc<PullService>, task: &Arc<IngestTask>, start_position_ms: i64) -> (TaskState, String) {
    crate::media::transcode::init_libav();
    let spec = task.spec();
    let status = task.status();
    let epoch = Instant::now();
    let mut s = Session {
        service,
        task,
        key: RoomKey {
            sdkappid: spec.sdk_app_id,
            room: spec.room(),
        },
        anchor: None,
        epoch,
        max_end: match (spec.repeat_num, spec.max_duration) {
            (-1, Some(min)) => Some(epoch + Duration::from_secs(min.max(1) as u64 * 60)),
            _ => None,
        },
        loops_done: status.loops_done,
        restarts: status.restarts,
        last_saved: Instant::now(),
    };
    let mut position_ms = start_position_ms;
    let mut failures = 0usize;
    let result = loop {
        if task.stop_requested() {
            break (TaskState::Stopped, "stopped by StopStreamIngest".to_string());
        }
        let played = play(&mut s, position_ms);
        match played {
            Played::Eof => {
                s.loops_done += 1;
                position_ms = 0;
                failures = 0;
                task.set_status(|st| {
                    st.loops_done = s.loops_done;
                    st.position_ms = 0;
                });
                save_progress(&s, 0);
                let repeat = task.spec().repeat_num;
                if repeat != -1 && s.loops_done >= repeat {
                    break (TaskState::Finished, format!("played {} time(s)", s.loops_done));
                }
            }
            Played::Stopped => break (TaskState::Stopped, "stopped by StopStreamIngest".to_string()),
            Played::Replaced => {
                break (
                    TaskState::Stopped,
                    "replaced by another publisher with the same sdkappid, room and userid".to_string(),
                )
            }
            Played::MaxDuration => break (TaskState::Finished, "MaxDuration reached".to_string()),
            Played::Idle(secs) => {
                break (
                    TaskState::Finished,
                    format!("no data from the source for {secs} s (IdleTimeout)"),
                )
            }
            Played::UrlChanged => {
                position_ms = 0;
                failures = 0;
            }
            Played::Reconfigure => position_ms = task.status().position_ms,
            Played::Failed { reason, played_for } => {
                position_ms = task.status().position_ms;
                if played_for >= HEALTHY_AFTER {
                    failures = 0;
                }
                if failures >= RETRY_DELAYS.len() {
                    break (TaskState::Failed, reason);
                }
                let delay = RETRY_DELAYS[failures];
                failures += 1;
                s.restarts += 1;
                tracing::warn!(task = %task.id, attempt = failures, error = %reason, "pull source failed; retrying");
                task.set_status(|st| {
                    st.state = TaskState::Restarting;
                    st.reason = reason.clone();
                    st.restarts = s.restarts;
                });
                save_progress(&s, position_ms);
                metrics::counter!("roomgate_pull_restarts_total").increment(1);
                service.emit(
                    task,
                    IngestEventKind::Restarting {
                        attempt: failures as u32,
                        reason,
                    },
                );
                sleep_unless_woken(task, delay);
            }
        }
    };
    save_progress(&s, task.status().position_ms);
    if let Some(anchor) = s.anchor.take() {
        let reason = match result.0 {
            TaskState::Failed => LeaveReason::Ended(result.1.clone()),
            _ => LeaveReason::Normal,
        };
        anchor.leave(reason);
    }
    result
}

fn save_progress(s: &Session<'_>, position_ms: i64) {
    if s.task.control.suspended.load(Ordering::Relaxed) {
        return;
    }
    if let Err(e) = s
        .service
        .store
        .update_progress(&s.task.id, s.loops_done, position_ms, s.restarts)
    {
        tracing::warn!(task = %s.task.id, error = %e, "cannot save task progress");
    }
}

/// Sleep up to `d`, returning early when the task is woken (stop, pause, update).
fn sleep_unless_woken(task: &IngestTask, d: Duration) {
    if d.is_zero() || task.stop_requested() {
        return;
    }
    let guard = task.wake.0.lock().expect("wake lock");
    let _ = task.wake.1.wait_timeout(guard, d);
}

/// What the interrupt callback checks: the stop flag and a deadline for the blocking call in progress.
struct Deadline {
    base: Instant,
    /// ms since `base`; 0 = none.
    at_ms: AtomicU64,
}

impl Deadline {
    fn set(&self, d: Duration) {
        let ms = (self.base.elapsed() + d).as_millis() as u64;
        self.at_ms.store(ms.max(1), Ordering::Relaxed);
    }
    fn passed(&self) -> bool {
        let at = self.at_ms.load(Ordering::Relaxed);
        at != 0 && self.base.elapsed().as_millis() as u64 > at
    }
}

/// The video path chosen for a source.
enum VideoPath {
    /// H.264 without B-frames: converted to Annex-B and published as is.
    Passthrough {
        avcc: Option<AvcConfig>,
        extradata: Bytes,
    },
    Transcode(VideoTranscoder),
}

enum AudioPath {
    Passthrough,
    Transcode(AudioTranscoder),
}

/// Open the source once and play it until it ends, breaks or the task is told otherwise.
fn play(s: &mut Session<'_>, position_ms: i64) -> Played {
    let task = s.task;
    let spec = task.spec();
    let config = &s.service.config;
    let url_generation = task.control.url_generation.load(Ordering::Relaxed);
    task.set_status(|st| {
        if st.state != TaskState::Restarting {
            st.state = TaskState::Connecting;
        }
    });
    let opened_at = Instant::now();
    let failed = |reason: String| Played::Failed {
        reason,
        played_for: opened_at.elapsed(),
    };

    // Policy and pre-flight (HTTP status, redirects, TLS) before libav sees the URL.
    let url = match source::parse_source_url(&spec.stream_url) {
        Ok(u) => u,
        Err(e) => return failed(e.public_reason()),
    };
    let policy = s.service.policy(spec.trusted_source);
    let preflight = {
        let service = s.service;
        let task2 = task.clone();
        let client = service.preflight_client(spec.trusted_source);
        service.runtime.block_on(async {
            tokio::select! {
                r = source::preflight(client, &url, &policy) => Some(r),
                _ = async { while !task2.stop_requested() { tokio::time::sleep(Duration::from_millis(50)).await } } => None,
            }
        })
    };
    let open_url = match preflight {
        None => return Played::Stopped,
        Some(Ok(u)) => u,
        Some(Err(e)) => {
            tracing::warn!(task = %task.id, url = %source::redact(&url), error = %e, "pull source pre-flight failed");
            return failed(e.public_reason());
        }
    };

    // libav open, bounded by open_timeout and interruptible by Stop; http(s) only through the source proxy, no
    // redirects of its own, whitelisted protocols and formats only.
    let deadline = Arc::new(Deadline {
        base: Instant::now(),
        at_ms: AtomicU64::new(0),
    });
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
    let mut open_url = open_url;
    let proxy = if open_url.scheme() == "rtmp" {
        opts.set("protocol_whitelist", RTMP_PROTOCOLS);
        // No proxy speaks RTMP: resolve and check here, and give libav the checked address, so a DNS answer
        // that changes before libav connects (rebinding) is never used. The server still sees the host name
        // in tcUrl.
        let checked = s
            .service
            .runtime
            .block_on(source::check_destination(&open_url, &policy));
        match checked.as_deref() {
            Ok([ip, ..]) => {
                opts.set("rtmp_tcurl", &source::rtmp_tc_url(&open_url));
                open_url = source::with_ip(&open_url, *ip);
            }
            Ok([]) => return failed(source::NOT_OPENED.to_string()),
            Err(e) => {
                tracing::warn!(task = %task.id, url = %source::redact(&open_url), error = %e, "pull source address refused");
                return failed(e.public_reason());
            }
        }
        None
    } else {
        let Ok(session) = s.service.proxy_session(policy, &task.id[..8]) else {
            return failed(source::NOT_OPENED.to_string());
        };
        opts.set("protocol_whitelist", HTTP_PROTOCOLS);
        opts.set("http_proxy", &session.url());
        opts.set("max_redirects", "0");
        Some(session)
    };
    // What the proxy refused outranks what libav made of it (a 403, a failed segment, an early end).
    let failed = |reason: String| Played::Failed {
        reason: match &proxy {
            Some(p) if p.refused() => source::REFUSED_ADDRESS.to_string(),
            _ => reason,
        },
        played_for: opened_at.elapsed(),
    };
    deadline.set(Duration::from_secs(config.pull.open_timeout_secs.max(1)));
    let cb = {
        let task = task.clone();
        let deadline = deadline.clone();
        move || task.stop_requested() || deadline.passed()
    };
    let mut input = match ff::format::input_with_interrupt_and_dictionary(&open_url.as_str(), cb, opts) {
        Ok(i) => i,
        Err(_) if task.stop_requested() => return Played::Stopped,
        Err(e) => {
            let events = proxy.as_ref().map(|p| p.events()).unwrap_or_default();
            tracing::warn!(task = %task.id, url = %source::redact(&open_url), error = %e, timed_out = deadline.passed(),
                proxy = ?events, "libav cannot open the pull source");
            return failed(open_error(&e, deadline.passed(), &events));
        }
    };

    // Streams: the best video (not a cover picture) and the best audio.
    let video_stream = input
        .streams()
        .filter(|st| st.parameters().medium() == ff::media::Type::Video)
        .filter(|st| !st.disposition().contains(ff::format::stream::Disposition::ATTACHED_PIC))
        .max_by_key(|st| unsafe { (*st.parameters().as_ptr()).width })
        .map(|st| st.index());
    let audio_stream = input.streams().best(ff::media::Type::Audio).map(|st| st.index());
    if video_stream.is_none() && audio_stream.is_none() {
        return failed(if input.nb_streams() == 0 {
            "empty source: no audio or video stream".to_string()
        } else {
            "unsupported source: no audio or video stream".to_string()
        });
    }

    // Join the room (once per task; the anchor stays through loops and retries).
    if s.anchor.is_none() {
        let anchor = s.service.hub.join(s.key.clone(), &spec.user_id, SourceKind::Pull);
        s.anchor = Some(anchor);
    }
    let anchor = s.anchor.as_ref().expect("joined above");
    let kicked = anchor.kick_signal();
    let label = format!("pull-{}", &task.id[..8]);

    let mut info = SourceInfo {
        format: input.format().name().to_string(),
        duration_ms: (input.duration() > 0).then(|| (input.duration() / 1000) as u64),
        ..Default::default()
    };

    // Video path.
    let mut video = None;
    if let Some(idx) = video_stream {
        let st = input.stream(idx).expect("stream index");
        let params = st.parameters();
        let (width, height, has_b) = unsafe {
            (
                (*params.as_ptr()).width as u32,
                (*params.as_ptr()).height as u32,
                (*params.as_ptr()).video_delay > 0,
            )
        };
        let rate = st.avg_frame_rate();
        let fps = (rate.denominator() > 0 && rate.numerator() > 0)
            .then(|| rate.numerator() as f64 / rate.denominator() as f64);
        info.video_codec = Some(params.id().name().to_string());
        info.width = Some(width);
        info.height = Some(height);
        info.fps = fps.map(|f| (f * 100.0).round() / 100.0);
        let passthrough = params.id() == ff::codec::Id::H264 && !has_b && spec.video_encode_params.is_none();
        let max_pixels = config.video.max_pixels;
        if !passthrough && width as u64 * height as u64 > max_pixels {
            let why = crate::ingest::Refusal::PictureTooLarge {
                width,
                height,
                max_pixels,
            };
            return failed(why.to_string());
        }
        let path = if passthrough {
            let extradata = stream_extradata(&params);
            let avcc = (extradata.first() == Some(&1))
                .then(|| AvcConfig::parse(&extradata).ok())
                .flatten();
            if let Some(cfg) = &avcc {
                anchor.set_video_info(TrackInfo {
                    source_codec: "h264".into(),
                    profile: Some(cfg.info.profile_name().into()),
                    profile_level_id: Some(cfg.info.profile_level_id()),
                    width: Some(cfg.info.width),
                    height: Some(cfg.info.height),
                    ..Default::default()
                });
            }
            Some(VideoPath::Passthrough { avcc, extradata })
        } else {
            match start_video_transcoder(&params, fps, &spec, max_pixels, anchor, &label) {
                Ok(t) => Some(VideoPath::Transcode(t)),
                Err(e) => {
                    if audio_stream.is_none() {
                        return failed(format!("unsupported video codec {}: {e}", params.id().name()));
                    }
                    tracing::warn!(task = %task.id, codec = params.id().name(), error = %e, "video cannot be decoded; playing audio only");
                    None
                }
            }
        };
        info.video_passthrough = matches!(path, Some(VideoPath::Passthrough { .. }));
        video = path.map(|p| (idx, st.time_base(), p));
    }

    // Audio path.
    let mut audio = None;
    if let Some(idx) = audio_stream {
        let st = input.stream(idx).expect("stream index");
        let params = st.parameters();
        info.audio_codec = Some(params.id().name().to_string());
        let passthrough = params.id() == ff::codec::Id::OPUS
            && task.control.tuning.volume() == 100
            && task.control.tuning.tempo() == 1.0
            && spec.audio_encode_params.is_none();
        let path = if passthrough {
            Some(AudioPath::Passthrough)
        } else {
            let bitrate = spec
                .audio_encode_params
                .as_ref()
                .map(|p| p.bit_rate.saturating_mul(1000))
                .filter(|b| *b >= 6000);
            match AudioTranscoder::start_tuned(
                AudioInputCodec::Stream(StreamParameters(params.clone())),
                config.opus_settings(spec.sdk_app_id, bitrate),
                anchor.sink(),
                label.clone(),
                Some(task.control.tuning.clone()),
            ) {
                Ok(t) => Some(AudioPath::Transcode(t)),
                Err(e) => {
                    if video.is_none() {
                        return failed(format!("unsupported audio codec {}: {e}", params.id().name()));
                    }
                    tracing::warn!(task = %task.id, codec = params.id().name(), error = %e, "audio cannot be decoded; playing video only");
                    None
                }
            }
        };
        info.audio_passthrough = matches!(path, Some(AudioPath::Passthrough));
        if let Some(p) = path {
            anchor.set_audio_info(TrackInfo {
                source_codec: params.id().name().to_string(),
                sample_rate: Some(AUDIO_CLOCK),
                source_sample_rate: Some(unsafe { (*params.as_ptr()).sample_rate } as u32),
                channels: Some(unsafe { (*params.as_ptr()).ch_layout.nb_channels } as u32),
                ..Default::default()
            });
            audio = Some((idx, st.time_base(), p));
        }
    }
    if video.is_none() && audio.is_none() {
        return failed("unsupported source: neither its audio nor its video can be decoded".to_string());
    }
    task.set_status(|st| st.source = Some(info.clone()));

    // Seek (SeekSecond on the first loop, or the saved position after a restart).
    let mut seek_base_ms = 0i64;
    if position_ms > 0 {
        let ts = position_ms.saturating_mul(1000); // AV_TIME_BASE is microseconds
        deadline.set(Duration::from_secs(config.pull.open_timeout_secs.max(1)));
        match input.seek(ts, ..ts) {
            Ok(()) => seek_base_ms = position_ms,
            Err(e) => tracing::info!(task = %task.id, error = %e, "source cannot seek; playing from its start"),
        }
    }

    // Read, pace, publish.
    let mut clock: Option<Pacer> = None;
    let mut started = false;
    let mut waiting_keyframe = true;
    let mut packet = ff::Packet::empty();
    let idle_limit = spec.idle_timeout.filter(|s| *s > 0);
    let counters = crate::ingest::InputCounters::new("pull");
    loop {
        if task.stop_requested() {
            return Played::Stopped;
        }
        if kicked.borrow().is_some() {
            return Played::Replaced;
        }
        if s.max_end.is_some_and(|end| Instant::now() >= end) {
            return Played::MaxDuration;
        }
        if task.control.url_generation.load(Ordering::Relaxed) != url_generation {
            return Played::UrlChanged;
        }
        let tuned = task.control.tuning.volume() != 100 || task.control.tuning.tempo() != 1.0;
        if tuned && matches!(audio, Some((_, _, AudioPath::Passthrough))) {
            return Played::Reconfigure;
        }
        if task.control.paused.load(Ordering::Relaxed) {
            task.set_status(|st| st.state = TaskState::Paused);
            let paused_at = Instant::now();
            while task.control.paused.load(Ordering::Relaxed) && !task.stop_requested() {
                sleep_unless_woken(task, Duration::from_millis(200));
            }
            if let Some(c) = clock.as_mut() {
                c.shift(paused_at.elapsed());
            }
            task.set_status(|st| st.state = TaskState::Playing);
            continue;
        }
        deadline.set(read_timeout);
        match packet.read(&mut input) {
            Ok(()) => {}
            Err(ff::Error::Eof) => {
                if !started {
                    return failed("empty source: it ended before any media".to_string());
                }
                return Played::Eof;
            }
            Err(_) if task.stop_requested() => return Played::Stopped,
            Err(ff::Error::InvalidData) => continue,
            Err(e) => {
                if deadline.passed() {
                    if let Some(secs) = idle_limit {
                        return Played::Idle(secs);
                    }
                    return failed(format!("no data from the source for {} s", read_timeout.as_secs()));
                }
                return failed(format!("reading the source failed: {e}"));
            }
        }
        let idx = packet.stream();
        let (time_base, is_video) = match (&video, &audio) {
            (Some((v, tb, _)), _) if *v == idx => (*tb, true),
            (_, Some((a, tb, _))) if *a == idx => (*tb, false),
            _ => continue,
        };
        let Some(ts) = packet.pts().or(packet.dts()) else {
            continue;
        };
        let Some(data) = packet.data() else { continue };
        let media_us = rescale_us(ts, time_base);
        let tempo = task.control.tuning.tempo();
        let pacer = clock.get_or_insert_with(|| Pacer::new(media_us, s.epoch, tempo));
        pacer.follow(media_us);
        pacer.set_tempo(media_us, tempo);
        let (due, out_us) = pacer.due(media_us);
        // Real time: wait until the packet is due (waking for stop/pause/update).
        loop {
            let now = Instant::now();
            if now >= due || task.stop_requested() || task.control.paused.load(Ordering::Relaxed) {
                break;
            }
            sleep_unless_woken(task, (due - now).min(Duration::from_millis(100)));
        }
        let received_at = Instant::now();
        let position = seek_base_ms
            .max(0)
            .saturating_add(media_us.saturating_sub(pacer.first_media_us).max(0) / 1000);
        let keyframe = packet.is_key();
        if is_video {
            let Some((_, _, path)) = video.as_mut() else { continue };
            let pts90 = (out_us.max(0) as u64).saturating_mul(VIDEO_CLOCK as u64) / 1_000_000;
            match path {
                VideoPath::Passthrough { avcc, extradata } => {
                    let annexb = match avcc {
                        Some(cfg) => match cfg.to_annex_b(data, keyframe) {
                            Ok((b, _)) => b,
                            Err(e) => {
                                tracing::debug!(task = %task.id, error = %e, "malformed H.264 packet skipped");
                                continue;
                            }
                        },
                        None => annex_b_with_parameter_sets(data, keyframe, extradata),
                    };
                    if waiting_keyframe && !keyframe {
                        continue;
                    }
                    if h264::has_b_slice(&annexb) {
                        // The stream header said no B-frames, the stream has them: re-encode from here on.
                        tracing::info!(task = %task.id, "B-frames found in an H.264 source; switching to re-encoding");
                        let st = input.stream(idx).expect("stream index");
                        let fps = info.fps.map(|f| f.round() as u32);
                        match start_video_transcoder(
                            &st.parameters(),
                            info.fps,
                            &spec,
                            config.video.max_pixels,
                            anchor,
                            &label,
                        ) {
                            Ok(t) => {
                                *path = VideoPath::Transcode(t);
                                info.video_passthrough = false;
                                task.set_status(|st| st.source = Some(info.clone()));
                                waiting_keyframe = true;
                            }
                            Err(e) => return failed(format!("cannot re-encode B-frames: {e} (fps {fps:?})")),
                        }
                        continue;
                    }
                    waiting_keyframe = false;
                    anchor.publish(Frame {
                        codec: Codec::H264,
                        pts: pts90,
                        keyframe,
                        data: annexb[..].into(),
                        received_at,
                    });
                }
                VideoPath::Transcode(t) => {
                    if waiting_keyframe && !keyframe {
                        continue;
                    }
                    waiting_keyframe = false;
                    let dts_us = packet.dts().map(|d| rescale_us(d, time_base)).unwrap_or(media_us);
                    let (_, dts_out) = pacer.due(dts_us);
                    let dts90 = (dts_out.max(0) as u64).saturating_mul(VIDEO_CLOCK as u64) / 1_000_000;
                    if t.push_blocking(Bytes::copy_from_slice(data), pts90, dts90.min(pts90), received_at)
                        .is_err()
                    {
                        return failed("the video transcoder stopped".to_string());
                    }
                }
            }
        } else {
            let Some((_, _, path)) = audio.as_ref() else { continue };
            match path {
                AudioPath::Passthrough => {
                    anchor.publish(Frame {
                        codec: Codec::Opus,
                        pts: (out_us.max(0) as u64).saturating_mul(AUDIO_CLOCK as u64) / 1_000_000,
                        keyframe: false,
                        data: data.into(),
                        received_at,
                    });
                }
                AudioPath::Transcode(t) => {
                    if t.push_blocking(Bytes::copy_from_slice(data), out_us as u64 / 1000, received_at)
                        .is_err()
                    {
                        return failed("the audio transcoder stopped".to_string());
                    }
                }
            }
        }
        if is_video {
            &counters.video_frames
        } else {
            &counters.audio_frames
        }
        .increment(1);
        if !started {
            started = true;
            task.set_status(|st| {
                st.state = TaskState::Playing;
                st.reason.clear();
            });
            s.service.emit(task, IngestEventKind::Started);
        }
        task.set_status(|st| st.position_ms = position);
        if s.last_saved.elapsed() >= PROGRESS_EVERY {
            s.last_saved = Instant::now();
            save_progress(s, position);
        }
    }
}

/// A jump of source time larger than this (either way) is a discontinuity, not a wait.
const MAX_JUMP_US: u64 = 10_000_000;

/// Maps source timestamps to wall-clock due times and output timestamps (µs since the task's epoch).
struct Pacer {
    first_media_us: i64,
    /// The last media time seen, to notice jumps.
    last_media_us: i64,
    /// The media time and instant the current tempo segment started at.
    anchor_media_us: i64,
    anchor_wall: Instant,
    epoch: Instant,
    tempo: f64,
}

impl Pacer {
    fn new(media_us: i64, epoch: Instant, tempo: f64) -> Pacer {
        Pacer {
            first_media_us: media_us,
            last_media_us: media_us,
            anchor_media_us: media_us,
            anchor_wall: Instant::now(),
            epoch,
            tempo,
        }
    }

    /// A source time jump of more than `MAX_JUMP_US` either way (a discontinuity, a wrapped or hostile
    /// timestamp) starts a new segment right after the last packet instead of sleeping for the gap (or
    /// bursting through it); the reported position moves on as if there had been no gap.
    fn follow(&mut self, media_us: i64) {
        let jump = media_us.saturating_sub(self.last_media_us);
        if jump.unsigned_abs() > MAX_JUMP_US {
            let (last_due, _) = self.due(self.last_media_us);
            self.anchor_media_us = media_us;
            self.anchor_wall = last_due;
            self.first_media_us = self.first_media_us.saturating_add(jump);
        }
        self.last_media_us = media_us;
    }

    /// Start a new segment when the tempo changed (so earlier media keeps its times).
    fn set_tempo(&mut self, media_us: i64, tempo: f64) {
        if (tempo - self.tempo).abs() > 1e-6 {
            let (due, _) = self.due(media_us);
            self.anchor_media_us = media_us;
            self.anchor_wall = due;
            self.tempo = tempo;
        }
    }

    /// Time spent paused moves everything after it.
    fn shift(&mut self, d: Duration) {
        self.anchor_wall += d;
    }

    /// When `media_us` is due, and its output timestamp (µs since the epoch).
    fn due(&self, media_us: i64) -> (Instant, i64) {
        let offset = (media_us.saturating_sub(self.anchor_media_us) as f64 / self.tempo) as i64;
        let due = if offset >= 0 {
            self.anchor_wall
                .checked_add(Duration::from_micros(offset as u64))
                .unwrap_or(self.anchor_wall + Duration::from_secs(86_400 * 365))
        } else {
            self.anchor_wall
                .checked_sub(Duration::from_micros(offset.unsigned_abs()))
                .unwrap_or(self.anchor_wall)
        };
        let out = due.saturating_duration_since(self.epoch).as_micros() as i64;
        (due, out)
    }
}

fn rescale_us(ts: i64, tb: ff::Rational) -> i64 {
    if tb.denominator() == 0 {
        return ts;
    }
    let us = ts as i128 * tb.numerator() as i128 * 1_000_000 / tb.denominator() as i128;
    us.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

fn stream_extradata(params: &ff::codec::Parameters) -> Bytes {
    unsafe {
        let p = &*params.as_ptr();
        if p.extradata.is_null() || p.extradata_size <= 0 {
            Bytes::new()
        } else {
            Bytes::copy_from_slice(std::slice::from_raw_parts(p.extradata, p.extradata_size as usize))
        }
    }
}

/// An Annex-B access unit (MPEG-TS, HLS): keyframes get the parameter sets from the extradata when they lack them.
fn annex_b_with_parameter_sets(data: &[u8], keyframe: bool, extradata: &Bytes) -> Bytes {
    let has_sps = h264::annex_b_nals(data).any(|n| n.first().map(|b| b & 0x1F) == Some(h264::NAL_SPS));
    if keyframe && !has_sps && !extradata.is_empty() {
        let mut v = Vec::with_capacity(extradata.len() + data.len());
        v.extend_from_slice(extradata);
        v.extend_from_slice(data);
        Bytes::from(v)
    } else {
        Bytes::copy_from_slice(data)
    }
}

fn start_video_transcoder(
    params: &ff::codec::Parameters,
    fps: Option<f64>,
    spec: &super::TaskSpec,
    max_pixels: u64,
    anchor: &AnchorPublisher,
    label: &str,
) -> Result<VideoTranscoder, crate::media::transcode::TranscodeError> {
    let mut input = VideoInput::from_stream(StreamParameters(params.clone()), fps.map(|f| f.round() as u32));
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
    VideoTranscoder::start(input, anchor.sink(), label.to_string())
}

/// The reason callers see for a source libav could not open: what the source's server answered (HTTP status,
/// not media, a format we refuse) stays visible; anything about reaching an address is one generic reason.
fn open_error(e: &ff::Error, timed_out: bool, proxy: &[ProxyEvent]) -> String {
    if proxy.iter().any(|ev| matches!(ev, ProxyEvent::Refused { .. })) {
        return source::REFUSED_ADDRESS.into();
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
    fn pacing_follows_media_time_scaled_by_tempo() {
        let epoch = Instant::now();
        let mut p = Pacer::new(5_000_000, epoch, 1.0);
        let start = p.anchor_wall;
        let (due, out) = p.due(6_000_000);
        assert_eq!(
            due - start,
            Duration::from_secs(1),
            "one second of media is due one second later"
        );
        assert_eq!(
            out,
            (due - epoch).as_micros() as i64,
            "the output timeline is wall time since the epoch"
        );
        // Double speed from media time 6 s: the next second of media takes half a second.
        p.set_tempo(6_000_000, 2.0);
        let (due2, _) = p.due(7_000_000);
        assert_eq!(due2 - due, Duration::from_millis(500));
        // A pause moves everything after it.
        p.shift(Duration::from_secs(3));
        let (due3, out3) = p.due(7_000_000);
        assert_eq!(due3 - due2, Duration::from_secs(3));
        assert!(out3 > out, "timestamps stay monotonic across pauses");
        // Media from before the segment (reordered packets) is due no later than the segment start.
        let (early, _) = p.due(0);
        assert!(early <= due3);
    }

    #[test]
    fn a_timestamp_jump_re_anchors_pacing_instead_of_sleeping() {
        let epoch = Instant::now();
        let mut p = Pacer::new(0, epoch, 1.0);
        p.follow(0);
        let (d1, out1) = p.due(1_000_000);
        p.follow(1_000_000);
        // The source jumps 3 hours ahead: the next packet is due right after the last one, not in 3 hours.
        let far = 3 * 3600 * 1_000_000;
        p.follow(far);
        let (d2, out2) = p.due(far);
        assert_eq!(d2, d1, "due at once after the jump");
        assert_eq!(out2, out1, "the output timeline has no gap");
        let (d3, _) = p.due(far + 40_000);
        assert_eq!(d3 - d2, Duration::from_millis(40), "then paced as before");
        // And back by more than 10 s: the same.
        p.follow(far + 40_000);
        p.follow(5_000_000);
        assert_eq!(p.due(5_000_000).0, d3);
        // Within 10 s, reordering stays as it was.
        p.follow(4_000_000);
        assert!(p.due(4_000_000).0 < d3);
        // Extreme timestamps neither overflow nor panic.
        p.follow(i64::MAX);
        let _ = p.due(i64::MAX);
        p.follow(i64::MIN);
        let _ = p.due(i64::MIN);
        assert_eq!(rescale_us(i64::MAX, ff::Rational::new(1, 1)), i64::MAX);
    }

    #[test]
    fn timestamps_rescale_to_microseconds() {
        assert_eq!(rescale_us(90_000, ff::Rational::new(1, 90_000)), 1_000_000);
        assert_eq!(rescale_us(1_000, ff::Rational::new(1, 1000)), 1_000_000);
        assert_eq!(rescale_us(48_000, ff::Rational::new(1, 48_000)), 1_000_000);
        assert_eq!(rescale_us(7, ff::Rational::new(0, 0)), 7);
    }

    #[test]
    fn annex_b_keyframes_get_parameter_sets() {
        let extradata = Bytes::from_static(&[0, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x68, 3]);
        let idr = [0u8, 0, 0, 1, 0x65, 9, 9];
        let out = annex_b_with_parameter_sets(&idr, true, &extradata);
        assert!(out.starts_with(&extradata));
        assert!(out.ends_with(&idr));
        let delta = [0u8, 0, 0, 1, 0x41, 9];
        assert_eq!(&annex_b_with_parameter_sets(&delta, false, &extradata)[..], &delta);
        let with_sps = [0u8, 0, 0, 1, 0x67, 5, 0, 0, 0, 1, 0x65, 9];
        assert_eq!(&annex_b_with_parameter_sets(&with_sps, true, &extradata)[..], &with_sps);
    }

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
