//! End-to-end benchmark: N anchors with M WHEP viewers each (str0m players in this process), against a separate
//! release gateway process. Prints JSON. Anchors are RTMP pushes (ffmpeg `-re -stream_loop -1 -c copy` of the
//! sample FLV), for `srt:` scenarios the same sample as MPEG-TS over SRT (`-f mpegts srt://...`), or, for `whip:`
//! scenarios, str0m WHIP publishers in this process sending 720p30 H.264 + Opus. SRT scenarios also report SRT's
//! own delay (encoder hand-off to the gateway's read: network and the latency buffer) next to the gateway's.
//!
//! `pull:T[:N]` measures pull tasks for T s each (N rounds, reporting the median gateway/CLI ratio): a 1080p30 high-profile MP4 with B-frames looped through a task
//! (decode + x264 + Opus in the gateway) next to the `ffmpeg` CLI doing the same decode+encode with the same
//! settings, and a passthrough task on a baseline 1080p30 MP4 (sources served by nginx on loopback).
//!
//! `cluster[:V[:T]]` starts two gateways on one Redis (redis-server), an RTMP anchor on node A and V viewers over
//! A and B (B relays the anchor over one link): CPU of each node with the anchor alone, with the relay link, and
//! with all viewers; per-viewer CPU local and relayed.
//!
//! `audio-floor[:T]` runs the AAC -> Opus work of one publisher in the ffmpeg CLI (the floor a publisher's CPU can
//! approach); `opus-quality[:BITRATE]` measures every Opus complexity (benches/support/opus_quality.rs);
//! `rtc-setup[:N]` builds N str0m sessions (what each WHEP/WHIP offer does) with str0m's own crypto provider and
//! with the gateway's (`roomgate::rtc::crypto_provider`), three alternating rounds. Each runs alone when named.
//!
//! Per scenario the JSON reports gateway CPU (idle, streams only, with viewers, per stream, per viewer) and its
//! context switches per second in the same phases, RSS split into private (`RssAnon`) and file-backed (`RssFile`)
//! pages, private memory per viewer, the media payload viewers received and that egress per core of gateway CPU
//! spent on viewers, frames sent/received, first frame p50/p95 and added delay p50/p99.
//!
//! `BENCH_GATEWAY_CPUS=<list>` starts the gateway under `taskset -c <list>`; run the bench itself on the other CPUs
//! (`taskset -c 1 cargo bench ...`) so the viewers it wakes on loopback do not preempt the gateway.
//! `BENCH_GATEWAY_BIN=<path>` runs another build of the gateway (e.g. an older commit's, for a before/after).
//! `2m:NxMxT[+J]` pushes the stream the performance goals are stated for instead of the testdata sample (~0.78 Mb/s):
//! 720p30 H.264 baseline at 2 Mb/s, 2 s GOP, AAC 128 kb/s, made once with the SRS ruler's ffmpeg command
//! (`../shared/bench/README.md`) into `target/bench-media/`. `BENCH_RTMP_SAMPLE=<flv>` has RTMP and SRT scenarios
//! push any other file (looped, copied): a longer GOP, a higher bitrate.
//!
//! `NxMxT+J` adds J viewers that POST at once to room 0 two seconds into the measurement window (a handshake storm
//! while M watch); their POST -> first frame is reported as `joiners_first_frame_ms_p50/p95` (null without J).
//!
//! `make bench` runs the default scenarios (RTMP 1x1 and 20x5, SRT 1x1, WHIP 1x1 and 10x5, pull:20); `cargo bench --bench
//! e2e -- 5x10x20 whip:2x3x15` runs RTMP N=5, M=10 for 20 s and WHIP N=2, M=3 for 15 s. Numbers come from one run
//! on whatever machine this is: compare ratios, not absolutes.

#[allow(dead_code)] // shared with the tests, which use all of it
#[path = "../tests/support/whep_client.rs"]
mod whep_client;

#[path = "support/opus_quality.rs"]
mod opus_quality;

use roomgate::auth::{unix_now, UserSig};
use serde_json::json;
use std::ffi::OsStr;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use whep_client::{play, Transport, WhepPlayer};

#[allow(dead_code)]
#[path = "../tests/support/whip_client.rs"]
mod whip_client;

const SDKAPPID: u64 = 1400000001;
const KEY: &str = "bench-secret-key";

/// The gateway's default Opus settings as ffmpeg CLI options (64 kb/s stereo 48 kHz, 40 ms frames): the audio floor and
/// the CLI transcode the pull tasks are compared with encode as the gateway does.
const FFMPEG_OPUS: &str = "-c:a libopus -b:a 64k -ar 48000 -ac 2 -application audio -frame_duration 40";

/// The gateway's x264 settings for the 1080p30 pull source, as ffmpeg CLI options.
const FFMPEG_X264_1080P30: &str = concat!(
    "-c:v libx264 -preset veryfast -tune zerolatency -profile:v baseline -bf 0 -g 60 ",
    "-b:v 6220800 -maxrate 9331200 -bufsize 6220k"
);

#[derive(Clone, Copy, PartialEq)]
enum Source {
    Rtmp,
    /// ffmpeg pushing the same sample as MPEG-TS over SRT (`srt:NxMxT`).
    Srt,
    Whip,
    /// A pull task (`pull:T`): see `run_pull`.
    Pull,
}

#[allow(dead_code)]
#[path = "../tests/support/nginx.rs"]
mod nginx;

#[allow(dead_code)]
#[path = "../tests/support/redis.rs"]
mod redis;

struct Scenario {
    source: Source,
    rooms: usize,
    viewers: usize,
    seconds: u64,
    /// Viewers that POST all at once (to room 0) 2 s into the measurement window: a handshake storm while the
    /// others watch (`1x100x20+50`).
    joining: usize,
    /// RTMP and SRT: push the goals' 2 Mb/s stream (`2m:`, `ruler_sample`) rather than the testdata sample.
    two_mbit: bool,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn sig(user: &str) -> String {
    UserSig::generate(SDKAPPID, KEY, user, unix_now(), 3600, None)
}

/// CPU time of a process (every thread, those that ended included), in seconds, from its CPU-time clock
/// (nanoseconds; `/proc/<pid>/stat`'s 10 ms ticks would leave ±0.2 % of a core over a 5 s window).
fn cpu_seconds(pid: u32) -> f64 {
    let mut clock: libc::clockid_t = 0;
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: both out-pointers point at live locals of the right types.
    let ok = unsafe {
        libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) == 0 && libc::clock_gettime(clock, &mut t) == 0
    };
    if ok {
        t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
    } else {
        cpu_ticks_seconds(pid)
    }
}

/// utime + stime of a process, in seconds (10 ms ticks).
fn cpu_ticks_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 =
        f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0) + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// Context switches of every thread of a process so far (voluntary and not): how often its threads sleep and
/// are woken, the cost of hand-offs and timers that CPU % alone hides.
fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .map(|t| {
            let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
            status
                .lines()
                .filter(|l| l.starts_with("voluntary_ctxt_switches:") || l.starts_with("nonvoluntary_ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

/// CPU % of one core and context switches per second of `pid` over `d`.
async fn cpu_and_switches(pid: u32, d: Duration) -> (f64, f64) {
    let (s0, t0) = (context_switches(pid), Instant::now());
    let cpu = cpu_percent(pid, d).await;
    // Threads that end inside the window take their counts with them.
    let switches = context_switches(pid).saturating_sub(s0) as f64 / t0.elapsed().as_secs_f64();
    (cpu, switches)
}

fn rss_mb(pid: u32) -> f64 {
    status_mb(pid, "VmRSS:")
}

/// A `/proc/<pid>/status` field (kB) in MB: `VmRSS:`, `RssAnon:` (private), `RssFile:` (file-backed pages).
fn status_mb(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// `audio-floor:T`: the AAC -> Opus work of one RTMP publisher with nothing else around it (the ffmpeg CLI
/// demuxing the bench sample, decoding AAC, resampling and encoding Opus 64 kb/s stereo 40 ms in real time), at
/// the default complexity and at SRS's (1): the floor a publisher's CPU can approach.
async fn run_audio_floor(seconds: u64) -> serde_json::Value {
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/sample-720p30-baseline.flv");
    let mut out = serde_json::Map::new();
    for complexity in [roomgate::config::DEFAULT_OPUS_COMPLEXITY, 1] {
        let mut ff = ffmpeg_looping(sample)
            .arg("-vn")
            .args(FFMPEG_OPUS.split(' '))
            .args(["-compression_level", &complexity.to_string(), "-f", "null", "-"])
            .stdout(Stdio::null())
            .spawn()
            .expect("ffmpeg");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let cpu = cpu_percent(ff.id(), Duration::from_secs(seconds)).await;
        let _ = ff.kill();
        let _ = ff.wait();
        out.insert(
            format!("ffmpeg_cli_cpu_percent_complexity_{complexity}"),
            json!(round(cpu)),
        );
    }
    out.insert("source".into(), json!("audio-floor"));
    out.insert("seconds".into(), json!(seconds));
    serde_json::Value::Object(out)
}

/// CPU % of one core used by `pid` over `d`.
async fn cpu_percent(pid: u32, d: Duration) -> f64 {
    let (c0, t0) = (cpu_seconds(pid), Instant::now());
    tokio::time::sleep(d).await;
    (cpu_seconds(pid) - c0) / t0.elapsed().as_secs_f64() * 100.0
}

/// Cumulative bucket counts (le, count) of the video series of histogram `name`.
fn buckets(metrics: &str, name: &str) -> Vec<(f64, f64)> {
    let mut b: Vec<(f64, f64)> = metrics
        .lines()
        // The video series of a histogram with kinds (the gateway delay), or the only series of one without.
        .filter(|l| l.starts_with(&format!("{name}_bucket")) && (l.contains("kind=\"video\"") || !l.contains("kind=")))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    b.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    b
}

/// Quantile of what a histogram recorded between two scrapes (linear inside a bucket).
fn window_quantile(before: &str, after: &str, name: &str, q: f64) -> Option<f64> {
    let b0 = buckets(before, name);
    let b1 = buckets(after, name);
    let diff: Vec<(f64, f64)> = b1
        .iter()
        .map(|&(le, c)| (le, c - b0.iter().find(|x| x.0 == le).map_or(0.0, |x| x.1)))
        .collect();
    let total = diff.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let target = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, count) in &diff {
        if count >= target {
            if le.is_infinite() {
                return Some(prev.0);
            }
            let frac = if count > prev.1 {
                (target - prev.1) / (count - prev.1)
            } else {
                0.0
            };
            return Some(prev.0 + (le - prev.0) * frac);
        }
        prev = (le, count);
    }
    None
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// The body of a GET of `url` (the gateway's rooms and metrics, scraped during a scenario).
async fn get_text(url: String) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

async fn rooms_json(http: &str) -> serde_json::Value {
    serde_json::from_str(&get_text(format!("{http}/v1/rooms")).await).unwrap()
}

async fn source_video_frames(http: &str) -> u64 {
    let v = rooms_json(http).await;
    v["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["anchors"].as_array().unwrap().iter())
        .map(|a| a["video"]["frames"].as_u64().unwrap_or(0))
        .sum()
}

/// Start a release gateway process on a config written in `dir` and wait until its HTTP port answers; (process,
/// base URL). The config, the same for every scenario but for its `[rtmp]` table (`rtmp`), its SRT and RTC ports
/// (`srt_port`; `rtc_port`, UDP and TCP; 0: any) and the tables in `more`: HTTP on a free port, RTC on loopback,
/// per-IP limits a bench would hit raised, the bench app.
async fn start_gateway(dir: &std::path::Path, rtmp: &str, srt_port: u16, rtc_port: u16, more: &str) -> (Child, String) {
    // A free HTTP port may be taken by another process before the gateway binds it: such a gateway exits at once
    // (its error is on stderr), and it is started again on another. (The other ports are the caller's.)
    for _ in 0..5 {
        if let Some(up) = try_start_gateway(dir, rtmp, srt_port, rtc_port, more).await {
            return up;
        }
    }
    panic!("the gateway exited at start five times (its errors are above)");
}

/// One try of `start_gateway`: `None` if the gateway exited before it answered (e.g. its HTTP port was taken).
async fn try_start_gateway(
    dir: &std::path::Path,
    rtmp: &str,
    srt_port: u16,
    rtc_port: u16,
    more: &str,
) -> Option<(Child, String)> {
    let http_port = free_port();
    let cfg = dir.join("roomgate.toml");
    std::fs::write(
        &cfg,
        format!(
            "log = \"warn\"\ndata_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:{http_port}\"\nmax_connections_per_ip = 4096\n[rtmp]\n{rtmp}\n[srt]\nlisten = \"127.0.0.1:{srt_port}\"\nmax_connections_per_ip = 1000\n[rtc]\nbind = \"127.0.0.1\"\nwhep_per_ip_per_minute = 0\ntcp_max_connections_per_ip = 1000\nudp_port = {rtc_port}\ntcp_port = {rtc_port}\n[[apps]]\nsdkappid = {SDKAPPID}\nsecret_key = \"{KEY}\"\n{more}",
            dir.display()
        ),
    )
    .unwrap();
    // `BENCH_GATEWAY_CPUS=0` runs the gateway on CPU 0 only (`taskset`, which execs it: same pid); start the bench
    // itself on the others (`taskset -c 1 cargo bench ...`), so that its viewers and pushers, woken by the
    // gateway's sends on loopback, do not preempt the gateway inside those sends.
    // `BENCH_GATEWAY_BIN=<path>` measures another build of the gateway (an older commit's) with this bench.
    let bin = std::env::var("BENCH_GATEWAY_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_roomgate").to_string());
    let mut gw = match std::env::var("BENCH_GATEWAY_CPUS") {
        Ok(cpus) if !cpus.is_empty() => {
            let mut c = Command::new("taskset");
            c.args(["-c", &cpus, &bin]);
            c
        }
        _ => Command::new(&bin),
    };
    let mut gw: Child = gw
        .args(["--config", cfg.to_str().unwrap(), "serve"])
        .stdout(Stdio::null())
        .spawn()
        .expect("gateway starts");
    let http = format!("http://127.0.0.1:{http_port}");
    let start = Instant::now();
    loop {
        let answered = reqwest::get(format!("{http}/healthz"))
            .await
            .is_ok_and(|r| r.status().is_success());
        // Checked after the answer too: another server on a port taken from under the gateway may have answered.
        if let Some(status) = gw.try_wait().expect("gateway status") {
            eprintln!("bench: the gateway exited ({status}) before it answered; starting it again");
            return None;
        }
        if answered {
            return Some((gw, http));
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = gw.kill();
            let _ = gw.wait();
            panic!("gateway did not come up within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `target/bench-media/<name>`, made the first time it is needed by `ffmpeg <args> <file>` (written aside and
/// renamed, so an interrupted run leaves nothing half made; `args` name the format with `-f`).
fn bench_media(name: &str, args: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-media");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    if !path.exists() {
        let cmd = format!(
            "ffmpeg -hide_banner -loglevel error -y {args} {0}.part && mv {0}.part {0}",
            path.display()
        );
        let ok = Command::new("sh").arg("-c").arg(&cmd).status().unwrap().success();
        assert!(ok, "making {name} failed");
    }
    path
}

/// The stream the performance goals are stated for (720p30 baseline 2 Mb/s, 2 s GOP, AAC), made with the SRS
/// ruler's command (30 s; looped when pushed) the first time a `2m:` scenario runs.
fn ruler_sample() -> std::path::PathBuf {
    bench_media(
        "720p30-2M-gop60.flv",
        "-f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440:sample_rate=44100 -t 30 -c:v libx264 -preset veryfast -profile:v baseline -tune zerolatency -b:v 2M -maxrate 2.2M -bufsize 2M -g 60 -keyint_min 60 -sc_threshold 0 -c:a aac -b:a 128k -ac 2 -f flv",
    )
}

/// Make (once, under target/) the 1080p30 sources of the pull scenario; their folder.
fn pull_media() -> std::path::PathBuf {
    let mut dir = std::path::PathBuf::new();
    for (name, profile) in [
        ("1080p30-high-bframes.mp4", "-profile:v high -bf 3"),
        ("1080p30-baseline.mp4", "-profile:v baseline -bf 0"),
    ] {
        let args = format!(
            "-f lavfi -i testsrc2=size=1920x1080:rate=30 -f lavfi -i sine=frequency=440:sample_rate=44100 -t 10 -c:v libx264 -preset veryfast {profile} -g 60 -b:v 4M -c:a aac -b:a 128k -ac 2 -movflags +faststart -f mp4"
        );
        dir = bench_media(name, &args).parent().unwrap().to_path_buf();
    }
    dir
}

/// A pull task per source kind, CPU and realtime factor, and the ffmpeg CLI doing the same transcode.
async fn run_pull(seconds: u64) -> serde_json::Value {
    let media = pull_media();
    let web = nginx::Nginx::start(&media).await;
    let dir = tempfile::tempdir().unwrap();
    let pull =
        "[pull]\nallow_private_sources = true\n[[api_keys]]\nsecret_id = \"AKIDbench\"\nsecret_key = \"bench\"\n";
    let (mut gw, http) = start_gateway(dir.path(), "enabled = false", 0, 0, pull).await;
    let pid = gw.id();
    let api =
        roomgate::client::CloudApiClient::new(format!("{http}/").parse().unwrap(), "AKIDbench".into(), "bench".into());
    let mut results = serde_json::Map::new();
    for (label, file) in [
        ("transcode", "1080p30-high-bframes.mp4"),
        ("passthrough", "1080p30-baseline.mp4"),
    ] {
        let r = api
            .call(
                "StartStreamIngest",
                &json!({"SdkAppId": SDKAPPID, "RoomId": label, "RoomIdType": 0, "UserId": "robot",
                        "UserSig": sig("robot"), "StreamUrl": web.url(&format!("/{file}")), "RepeatNum": -1}),
            )
            .await
            .expect("StartStreamIngest");
        let task = r["TaskId"].as_str().unwrap().to_string();
        let position = |r: &serde_json::Map<String, serde_json::Value>| {
            r["LoopsDone"].as_f64().unwrap_or(0.0) * 10.0 + r["PositionMs"].as_f64().unwrap_or(0.0) / 1000.0
        };
        let describe = json!({"SdkAppId": SDKAPPID, "TaskId": task});
        tokio::time::sleep(Duration::from_secs(3)).await;
        let p0 = position(&api.call("DescribeStreamIngest", &describe).await.unwrap());
        let t0 = Instant::now();
        let cpu = cpu_percent(pid, Duration::from_secs(seconds)).await;
        let r = api.call("DescribeStreamIngest", &describe).await.unwrap();
        let factor = (position(&r) - p0) / t0.elapsed().as_secs_f64();
        api.call("StopStreamIngest", &describe).await.unwrap();
        results.insert(
            format!("{label}_task"),
            json!({"source": file, "gateway_cpu_percent": round(cpu), "realtime_factor": round(factor),
                   "video_passthrough": r["Source"]["VideoPassthrough"]}),
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let rss = rss_mb(pid);
    let _ = gw.kill();
    let _ = gw.wait();

    // The ffmpeg CLI doing the same decode + encode (same x264 and Opus settings, real-time input).
    let mut ff = ffmpeg_looping(media.join("1080p30-high-bframes.mp4"))
        .args(FFMPEG_X264_1080P30.split(' '))
        .args(FFMPEG_OPUS.split(' '))
        .args(["-progress", "pipe:1", "-f", "null", "-"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("ffmpeg");
    let ff_pid = ff.id();
    let out_time = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let reader = {
        let out_time = out_time.clone();
        let stdout = ff.stdout.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(v) = line.strip_prefix("out_time_us=").and_then(|v| v.parse::<u64>().ok()) {
                    out_time.store(v, std::sync::atomic::Ordering::Relaxed);
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let o0 = out_time.load(std::sync::atomic::Ordering::Relaxed);
    let t0 = Instant::now();
    let ff_cpu = cpu_percent(ff_pid, Duration::from_secs(seconds)).await;
    let ff_factor =
        (out_time.load(std::sync::atomic::Ordering::Relaxed) - o0) as f64 / 1e6 / t0.elapsed().as_secs_f64();
    let _ = ff.kill();
    let _ = ff.wait();
    let _ = reader.join();
    let task_cpu = results["transcode_task"]["gateway_cpu_percent"].as_f64().unwrap_or(0.0);
    results.insert(
        "ffmpeg_cli_same_transcode".into(),
        json!({"cpu_percent": round(ff_cpu), "realtime_factor": round(ff_factor)}),
    );
    results.insert(
        "transcode_cpu_ratio_gateway_over_ffmpeg".into(),
        json!(round(task_cpu / ff_cpu.max(0.01))),
    );
    results.insert("gateway_rss_mb".into(), json!(round(rss)));
    results.insert("seconds".into(), json!(seconds));
    results.insert("source".into(), json!("pull"));
    results.insert(
        "cores".into(),
        json!(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)),
    );
    serde_json::Value::Object(results)
}

async fn run(s: &Scenario) -> serde_json::Value {
    if s.source == Source::Pull {
        if s.rooms <= 1 {
            return run_pull(s.seconds).await;
        }
        // Rounds of (task, then the CLI), so both see the machine's drift alike; the median ratio is the figure.
        let mut rounds = Vec::new();
        let mut ratios = Vec::new();
        for _ in 0..s.rooms {
            let r = run_pull(s.seconds).await;
            ratios.push(
                r["transcode_cpu_ratio_gateway_over_ffmpeg"]
                    .as_f64()
                    .unwrap_or(f64::NAN),
            );
            rounds.push(r);
        }
        let mut sorted = ratios.clone();
        sorted.sort_by(f64::total_cmp);
        return json!({
            "source": "pull",
            "rounds": rounds,
            "transcode_cpu_ratios": ratios,
            "transcode_cpu_ratio_median": sorted[sorted.len() / 2],
        });
    }
    let dir = tempfile::tempdir().unwrap();
    let rtmp_port = free_port();
    let rtmp = format!("listen = \"127.0.0.1:{rtmp_port}\"\nmax_connections_per_ip = 1000");
    let srt_port = free_port();
    let (mut gw, http) = start_gateway(dir.path(), &rtmp, srt_port, free_port(), "").await;
    let pid = gw.id();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (cpu_idle, switches_idle) = cpu_and_switches(pid, Duration::from_secs(3)).await;
    let sample = match std::env::var_os("BENCH_RTMP_SAMPLE") {
        _ if s.two_mbit => ruler_sample().into_os_string(),
        Some(path) => path,
        None => concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/sample-720p30-baseline.flv").into(),
    };
    let mut whip_publishers = Vec::new();
    if s.source == Source::Whip {
        for i in 0..s.rooms {
            let url = format!("{http}/v2/pub/{SDKAPPID}/room{i}?SessionID=cam{i}");
            let spec = whip_client::MediaSpec {
                width: 1280,
                height: 720,
                gop: 60,
                ..Default::default()
            };
            let p = whip_client::publish(&url, Some(&sig(&format!("cam{i}"))), spec)
                .await
                .expect("WHIP publish");
            whip_publishers.push(p);
        }
    }
    let pushed_rooms = if matches!(s.source, Source::Rtmp | Source::Srt) {
        s.rooms
    } else {
        0
    };
    let mut pushers: Vec<Child> = (0..pushed_rooms)
        .map(|i| {
            let sig = sig(&format!("cam{i}"));
            let (format, url) = match s.source {
                Source::Srt => (
                    "mpegts",
                    format!("srt://127.0.0.1:{srt_port}?streamid=#!::r=room{i},u=cam{i},m=publish,sdkappid={SDKAPPID},usersig={sig}"),
                ),
                _ => (
                    "flv",
                    format!("rtmp://127.0.0.1:{rtmp_port}/push/room{i}?sdkappid={SDKAPPID}&userid=cam{i}&usersig={sig}"),
                ),
            };
            ffmpeg_looping(&sample)
                .args(["-c", "copy", "-f", format, &url])
                .stdout(Stdio::null())
                .spawn()
                .expect("ffmpeg")
        })
        .collect();
    let start = Instant::now();
    loop {
        let v = rooms_json(&http).await;
        if v["rooms"].as_array().unwrap().len() == s.rooms {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "anchors did not all appear");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (cpu_streams_only, switches_streams_only) = cpu_and_switches(pid, Duration::from_secs(5)).await;
    let rss_anon_streams_only = status_mb(pid, "RssAnon:");

    // Viewers: time from POST to the first video frame that decodes.
    let mut players: Vec<(Instant, WhepPlayer)> = Vec::new();
    let mut firsts = Vec::new();
    for i in 0..s.rooms {
        for j in 0..s.viewers {
            players.push(view(&http, &format!("room{i}"), &format!("v{i}_{j}")).await);
            keep_first_frames(&players, &mut firsts);
        }
    }
    let first_frames = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while firsts.iter().any(Option::is_none) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            keep_first_frames(&players, &mut firsts);
        }
        let mut startup_ms = Vec::new();
        for ((t0, _), f) in players.iter().zip(firsts) {
            // Decoded here (libav) only to prove the first frame is a picture.
            if let Some(f) = f.filter(|f| decode_ok(&f.data)) {
                startup_ms.push(f.at.duration_since(*t0).as_secs_f64() * 1000.0);
            }
        }
        (startup_ms, players)
    })
    .await
    .unwrap();
    let (mut startup_ms, players) = first_frames;

    // Measurement window: drain what came before, then count.
    for (_, p) in &players {
        while p.frames.try_recv().is_ok() {}
    }
    let sent0 = source_video_frames(&http).await;
    let metrics_before = get_text(format!("{http}/metrics")).await;
    let (me0, pushers0) = (
        cpu_seconds(std::process::id()),
        pushers.iter().map(|p| cpu_seconds(p.id())).sum::<f64>(),
    );
    let window = Instant::now();
    let storm = (s.joining > 0).then(|| tokio::spawn(join_at_once(http.clone(), s.joining)));
    // The players hand over every frame they receive: count them as they come, so the bench does not hold the
    // whole window's media (500 viewers of 2 Mb/s are over 100 MB a second).
    let (mut received, mut received_bytes) = (0u64, 0u64);
    let mut count = |players: &[(Instant, WhepPlayer)]| {
        for (_, p) in players {
            for f in p.frames.try_iter() {
                received_bytes += f.data.len() as u64;
                received += f.video as u64;
            }
        }
    };
    let measured = cpu_and_switches(pid, Duration::from_secs(s.seconds));
    tokio::pin!(measured);
    let (cpu_all, switches_all) = loop {
        tokio::select! {
            r = &mut measured => break r,
            _ = tokio::time::sleep(Duration::from_millis(250)) => count(&players),
        }
    };
    let secs = window.elapsed().as_secs_f64();
    let (joined, mut joiners_ms) = match storm {
        Some(t) => t.await.unwrap(),
        None => (Vec::new(), Vec::new()),
    };
    let bench_cpu = (cpu_seconds(std::process::id()) - me0) / secs * 100.0;
    let pushers_cpu = (pushers.iter().map(|p| cpu_seconds(p.id())).sum::<f64>() - pushers0) / secs * 100.0;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let sent = (source_video_frames(&http).await - sent0) * s.viewers as u64;
    count(&players);
    let metrics = get_text(format!("{http}/metrics")).await;
    let rss = rss_mb(pid);
    let (rss_anon, rss_file) = (status_mb(pid, "RssAnon:"), status_mb(pid, "RssFile:"));
    drop(players);
    drop(joined);
    drop(whip_publishers);
    for p in &mut pushers {
        let _ = p.kill();
        let _ = p.wait();
    }
    let _ = gw.kill();
    let _ = gw.wait();
    let viewers = (s.rooms * s.viewers) as f64;
    json!({
        "source": match s.source { Source::Whip => "whip", Source::Srt => "srt", _ => "rtmp" },
        "sample": if s.source == Source::Whip { "whip".into() } else { sample.to_string_lossy().into_owned() },
        "rooms": s.rooms,
        "viewers_per_room": s.viewers,
        "seconds": s.seconds,
        "gateway_cpu_percent_idle": round(cpu_idle),
        "gateway_context_switches_per_s_idle": round(switches_idle),
        "gateway_context_switches_per_s_streams_only": round(switches_streams_only),
        "gateway_context_switches_per_s_with_viewers": round(switches_all),
        "gateway_cpu_percent_streams_only": round(cpu_streams_only),
        "gateway_cpu_percent_with_viewers": round(cpu_all),
        "cpu_percent_per_stream": round(cpu_streams_only / s.rooms as f64),
        "cpu_percent_per_viewer": round((cpu_all - cpu_streams_only).max(0.0) / viewers),
        "gateway_rss_mb": round(rss),
        "gateway_rss_anon_mb": round(rss_anon),
        "gateway_rss_file_mb": round(rss_file),
        "rss_mb_per_viewer": round((rss_anon - rss_anon_streams_only).max(0.0) / viewers.max(1.0)),
        // Media payload the viewers received in the window (RTP/SRTP/UDP headers not counted), and that egress
        // divided by the cores the gateway used for it (its CPU with viewers minus with streams only).
        "egress_payload_mbit_per_s": round(received_bytes as f64 * 8.0 / 1e6 / secs),
        "egress_payload_mbit_per_s_per_core": round(received_bytes as f64 * 8.0 / 1e6 / secs / ((cpu_all - cpu_streams_only) / 100.0).max(0.001)),
        // WHIP scenarios: this includes the in-process WHIP publishers.
        "viewer_clients_cpu_percent": round(bench_cpu),
        "ffmpeg_pushers_cpu_percent": round(pushers_cpu),
        "loadavg_1m": load.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "video_frames_sent_to_viewers": sent,
        "video_frames_received": received,
        "viewers_started": startup_ms.len(),
        "post_to_first_frame_ms_p50": round(percentile(&mut startup_ms, 0.5)),
        "post_to_first_frame_ms_p95": round(percentile(&mut startup_ms, 0.95)),
        // Over the measurement window only (steady state; viewer start-up is reported separately).
        "gateway_added_delay_ms_p50": window_quantile(&metrics_before, &metrics, "roomgate_gateway_delay_seconds", 0.5).map(|v| round(v * 1000.0)),
        "gateway_added_delay_ms_p99": window_quantile(&metrics_before, &metrics, "roomgate_gateway_delay_seconds", 0.99).map(|v| round(v * 1000.0)),
        // SRT scenarios: from the encoder handing a message to SRT to the gateway reading it (loopback network
        // plus SRT's latency buffer, `srt.latency_ms`): what SRT adds before the gateway's own delay above.
        "srt_receive_delay_ms_p50": window_quantile(&metrics_before, &metrics, "roomgate_srt_receive_delay_seconds", 0.5).map(|v| round(v * 1000.0)),
        "srt_receive_delay_ms_p99": window_quantile(&metrics_before, &metrics, "roomgate_srt_receive_delay_seconds", 0.99).map(|v| round(v * 1000.0)),
        // `+J` scenarios: the viewers that joined at once during the window (their frames are not in the counts
        // above, which are the steady viewers'; the added delay covers everyone's).
        "joining": s.joining,
        "joiners_started": joiners_ms.len(),
        "joiners_first_frame_ms_p50": round(percentile(&mut joiners_ms, 0.5)),
        "joiners_first_frame_ms_p95": round(percentile(&mut joiners_ms, 0.95)),
    })
}

/// `cluster[:V[:T]]`: two release gateways on one Redis; an RTMP anchor on node A; V viewers, half on A (local)
/// and half on B (relayed over one link). CPU of each node in three windows of T s: the anchor alone, one viewer
/// on B (the relay link's cost on both nodes), then all V; per-viewer CPU on each node from the last two.
async fn run_cluster(viewers: usize, seconds: u64) -> serde_json::Value {
    let redis = redis::Redis::start();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cluster = |id: &str| {
        format!(
            "[cluster]\nredis_url = \"{}\"\nnode_id = \"{id}\"\n\
             secret = \"bench-cluster-secret-0123456789abcdef\"\nrelay_listen = \"127.0.0.1:0\"\n",
            redis.url()
        )
    };
    let rtmp_port = free_port();
    let rtmp = format!("listen = \"127.0.0.1:{rtmp_port}\"");
    let (mut a, http_a) = start_gateway(dir_a.path(), &rtmp, 0, free_port(), &cluster("node-a")).await;
    let (mut b, http_b) = start_gateway(dir_b.path(), "enabled = false", 0, free_port(), &cluster("node-b")).await;
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/sample-720p30-baseline.flv");
    let url = format!(
        "rtmp://127.0.0.1:{rtmp_port}/push/room0?sdkappid={SDKAPPID}&userid=cam0&usersig={}",
        sig("cam0")
    );
    let mut pusher = ffmpeg_looping(sample)
        .args(["-c", "copy", "-f", "flv", &url])
        .stdout(Stdio::null())
        .spawn()
        .expect("ffmpeg");
    // B lists A's anchor once A has published its rooms.
    let start = Instant::now();
    while rooms_json(&http_b).await["rooms"][0]["anchors"][0]["node"] != "node-a" {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "node B never saw the anchor on node A"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let window = Duration::from_secs(seconds);
    let (pid_a, pid_b) = (a.id(), b.id());
    let both = move |w| async move { tokio::join!(cpu_percent(pid_a, w), cpu_percent(pid_b, w)) };
    let (a0, b0) = both(window).await;
    let mut players = vec![view(&http_b, "room0", "relay0").await.1];
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (a1, b1) = both(window).await;
    let half = viewers / 2;
    for i in 0..half {
        players.push(view(&http_a, "room0", &format!("a{i}")).await.1);
        players.push(view(&http_b, "room0", &format!("b{i}")).await.1);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for p in &players {
        while p.frames.try_recv().is_ok() {}
    }
    let (a2, b2) = both(window).await;
    let received: Vec<u64> = players
        .iter()
        .map(|p| p.frames.try_iter().filter(|f| f.video).count() as u64)
        .collect();
    drop(players);
    drop(redis);
    for c in [&mut pusher, &mut a, &mut b] {
        let _ = c.kill();
        let _ = c.wait();
    }
    let per = |with: f64, without: f64| round((with - without).max(0.0) / half.max(1) as f64);
    json!({
        "source": "cluster",
        "viewers": 1 + 2 * half,
        "seconds": seconds,
        "node_a_cpu_percent": { "anchor_only": round(a0), "relay_link": round(a1), "all_viewers": round(a2) },
        "node_b_cpu_percent": { "idle": round(b0), "relay_link_and_one_viewer": round(b1), "all_viewers": round(b2) },
        // The link's cost on the anchor's node (sending the anchor once to B).
        "relay_link_cpu_percent_on_owner": round((a1 - a0).max(0.0)),
        "cpu_percent_per_viewer_local_on_a": per(a2, a1),
        "cpu_percent_per_viewer_relayed_on_b": per(b2, b1),
        "video_frames_received_min": received.iter().min(),
        "video_frames_received_max": received.iter().max(),
    })
}

/// 2 s from now, POST `n` WHEP viewers of room 0 at once; (the players, POST -> first video frame of each, ms).
async fn join_at_once(http: String, n: usize) -> (Vec<WhepPlayer>, Vec<f64>) {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut posts = tokio::task::JoinSet::new();
    for j in 0..n {
        let http = http.clone();
        posts.spawn(async move {
            let (t0, p) = view(&http, "room0", &format!("join{j}")).await;
            tokio::task::spawn_blocking(move || {
                let ms = first_video_frame(&p).map(|f| f.at.duration_since(t0).as_secs_f64() * 1000.0);
                (ms, p)
            })
            .await
            .unwrap()
        });
    }
    let (mut players, mut first_ms) = (Vec::new(), Vec::new());
    while let Some(r) = posts.join_next().await {
        let (ms, p) = r.unwrap();
        first_ms.extend(ms);
        players.push(p);
    }
    (players, first_ms)
}

/// A WHEP viewer `viewer` of `room` over UDP, and when its POST was sent (its first frame is timed from then).
async fn view(http: &str, room: &str, viewer: &str) -> (Instant, WhepPlayer) {
    let url = format!("{http}/v2/sub/{SDKAPPID}/{room}?SessionID={viewer}");
    let t0 = Instant::now();
    let p = play(&url, Some(&sig(viewer)), Transport::Udp).await.expect("WHEP POST");
    (t0, p)
}

/// Keep the first video frame each player received and drop the rest of what they handed over: the players send
/// every frame's bytes, and hundreds of 2 Mb/s viewers set up one after another would pile up gigabytes before the
/// window opens. (The time a frame came is stamped by the player, so a late look here does not change it.)
fn keep_first_frames(players: &[(Instant, WhepPlayer)], firsts: &mut Vec<Option<whep_client::Received>>) {
    firsts.resize_with(players.len(), || None);
    for ((_, p), first) in players.iter().zip(firsts.iter_mut()) {
        for f in p.frames.try_iter() {
            if first.is_none() && f.video {
                *first = Some(f);
            }
        }
    }
}

/// The first video frame `p` receives within 10 s, if any: what a viewer's start-up is measured to.
fn first_video_frame(p: &WhepPlayer) -> Option<whep_client::Received> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(f) = p.frames.recv_timeout(Duration::from_millis(100)) {
            if f.video {
                return Some(f);
            }
        }
    }
    None
}

/// `ffmpeg`, quiet (stderr too), reading `input` in real time and looped forever: how every ffmpeg run here
/// starts (the RTMP publishers, the audio floor and the CLI transcode the pull tasks are compared with).
fn ffmpeg_looping(input: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error"])
        .args(["-re", "-stream_loop", "-1", "-i"])
        .arg(input)
        .stderr(Stdio::null());
    cmd
}

/// The multi-threaded Tokio runtime the async parts of the bench run on.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Microseconds per str0m session built with str0m's own crypto provider and with the gateway's, per round.
fn run_rtc_setup(n: u32) -> serde_json::Value {
    let ours = roomgate::rtc::crypto_provider();
    let theirs = std::sync::Arc::new(str0m::crypto::from_feature_flags());
    let build = |p: &std::sync::Arc<str0m::crypto::CryptoProvider>| {
        let t = Instant::now();
        for _ in 0..n {
            let rtc = str0m::RtcConfig::new()
                .set_crypto_provider(p.clone())
                .build(Instant::now());
            std::hint::black_box(rtc);
        }
        t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
    };
    // Warm-up: aws-lc's one-time initialisation, the shared configuration's first build.
    build(&ours);
    build(&theirs);
    let rounds: Vec<serde_json::Value> = (0..3)
        .map(|_| json!({"str0m_provider_us": round(build(&theirs)), "gateway_provider_us": round(build(&ours))}))
        .collect();
    json!({"sessions_per_round": n, "rounds": rounds})
}

/// `NAME[:VALUE]` among `args` (a benchmark that runs alone): None if it is not named, else VALUE, or `default`
/// when there is none.
fn solo<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> Option<T> {
    let a = args.iter().find(|a| a.starts_with(name))?;
    let value = a.strip_prefix(name).and_then(|v| v.strip_prefix(':'));
    Some(value.and_then(|v| v.parse().ok()).unwrap_or(default))
}

fn decode_ok(annexb: &[u8]) -> bool {
    use ffmpeg_next as ff;
    roomgate::media::transcode::init_libav();
    let Some(codec) = ff::decoder::find(ff::codec::Id::H264) else {
        return false;
    };
    let Ok(mut dec) = ff::codec::Context::new_with_codec(codec).decoder().video() else {
        return false;
    };
    let mut pic = ff::frame::Video::empty();
    dec.send_packet(&ff::Packet::copy(annexb)).is_ok()
        && (dec.receive_frame(&mut pic).is_ok() || (dec.send_eof().is_ok() && dec.receive_frame(&mut pic).is_ok()))
}

fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        // `cargo test --all-targets` builds and runs bench targets too; the benchmark runs only under `cargo bench`.
        return;
    }
    // `audio-floor[:T]`: the AAC -> Opus work alone, in the ffmpeg CLI.
    if let Some(secs) = solo(&args, "audio-floor", 15) {
        let report = runtime().block_on(run_audio_floor(secs));
        println!("{}", serde_json::to_string_pretty(&report).unwrap());
        return;
    }
    // `cluster[:V[:T]]`: one anchor on node A, viewers over A and B (relayed); CPU per node and per viewer.
    if let Some(a) = args.iter().find(|a| a.starts_with("cluster")) {
        let mut parts = a.split(':').skip(1).map(|v| v.parse::<u64>().ok());
        let viewers = parts.next().flatten().unwrap_or(20) as usize;
        let secs = parts.next().flatten().unwrap_or(10);
        println!(
            "{}",
            serde_json::to_string_pretty(&runtime().block_on(run_cluster(viewers, secs))).unwrap()
        );
        return;
    }
    // `rtc-setup[:N]`: the CPU time of building one str0m session, no gateway.
    if let Some(n) = solo(&args, "rtc-setup", 300u32) {
        println!("{}", serde_json::to_string_pretty(&run_rtc_setup(n.max(1))).unwrap());
        return;
    }
    // `opus-quality[:BITRATE]`: the encoder alone, no gateway (see benches/support/opus_quality.rs).
    if let Some(bitrate) = solo(&args, "opus-quality", 64_000) {
        println!("{}", serde_json::to_string_pretty(&opus_quality::run(bitrate)).unwrap());
        return;
    }
    let scenarios: Vec<Scenario> = {
        let given: Vec<Scenario> = args
            .iter()
            .filter_map(|a| {
                if let Some(t) = a.strip_prefix("pull:") {
                    // `pull:T` or `pull:T:N` (N alternating rounds of task and CLI; `rooms` counts them).
                    let (t, n) = t.split_once(':').unwrap_or((t, "1"));
                    return Some(Scenario {
                        source: Source::Pull,
                        rooms: n.parse().ok()?,
                        viewers: 0,
                        seconds: t.parse().ok()?,
                        joining: 0,
                        two_mbit: false,
                    });
                }
                let (two_mbit, a) = match a.strip_prefix("2m:") {
                    Some(rest) => (true, rest),
                    None => (false, a.as_str()),
                };
                let (source, a) = match (a.strip_prefix("whip:"), a.strip_prefix("srt:")) {
                    (Some(rest), _) => (Source::Whip, rest),
                    (_, Some(rest)) => (Source::Srt, rest),
                    _ => (Source::Rtmp, a),
                };
                let (a, joining) = match a.split_once('+') {
                    Some((a, j)) => (a, j.parse().ok()?),
                    None => (a, 0),
                };
                let p: Vec<u64> = a.split('x').map(|n| n.parse().ok()).collect::<Option<_>>()?;
                (p.len() == 3).then(|| Scenario {
                    source,
                    rooms: p[0] as usize,
                    viewers: p[1] as usize,
                    seconds: p[2],
                    joining,
                    two_mbit: two_mbit && source != Source::Whip,
                })
            })
            .collect();
        if given.is_empty() {
            vec![
                Scenario {
                    source: Source::Rtmp,
                    rooms: 1,
                    viewers: 1,
                    seconds: 15,
                    joining: 0,
                    two_mbit: false,
                },
                Scenario {
                    source: Source::Rtmp,
                    rooms: 20,
                    viewers: 5,
                    seconds: 20,
                    joining: 0,
                    two_mbit: false,
                },
                Scenario {
                    source: Source::Srt,
                    rooms: 1,
                    viewers: 1,
                    seconds: 15,
                    joining: 0,
                    two_mbit: false,
                },
                Scenario {
                    source: Source::Whip,
                    rooms: 1,
                    viewers: 1,
                    seconds: 15,
                    joining: 0,
                    two_mbit: false,
                },
                Scenario {
                    source: Source::Whip,
                    rooms: 10,
                    viewers: 5,
                    seconds: 20,
                    joining: 0,
                    two_mbit: false,
                },
                Scenario {
                    source: Source::Pull,
                    rooms: 1,
                    viewers: 0,
                    seconds: 20,
                    joining: 0,
                    two_mbit: false,
                },
            ]
        } else {
            given
        }
    };
    let rt = runtime();
    let mut results = Vec::new();
    for s in &scenarios {
        let source = match s.source {
            Source::Whip => "WHIP",
            Source::Rtmp => "RTMP",
            Source::Srt => "SRT",
            Source::Pull => "pull",
        };
        eprintln!(
            "bench: {source} {} rooms x {} viewers for {} s",
            s.rooms, s.viewers, s.seconds
        );
        results.push(rt.block_on(run(s)));
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({ "scenarios": results })).unwrap()
    );
}
