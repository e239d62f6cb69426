//! `roomgate serve`: start the gateway on this configuration (with the demo app and Cloud API key when none is
//! configured), print where to publish and watch, and run until Ctrl-C.

use crate::auth::{unix_now, UserSig};
use crate::config::{AppConfig, Config};

/// libav reads the lower-case `no_proxy` and connects directly to the hosts it names, around the source proxy
/// that checks pull tasks' connections. Move it to `NO_PROXY` (which reqwest, for callbacks, reads first) before
/// any thread starts; the pull service refuses http(s) sources while `no_proxy` is still set.
pub fn hide_no_proxy_from_libav() {
    if let Some(v) = std::env::var_os("no_proxy") {
        if std::env::var_os("NO_PROXY").is_none() {
            std::env::set_var("NO_PROXY", &v);
        }
        std::env::remove_var("no_proxy");
    }
}

/// glibc gives each thread that allocates an arena of its own (up to eight per core), and the media path allocates
/// a frame on the thread that reads it and frees it on whichever worker sends it last, so every arena keeps pages
/// of freed frames that only its own thread reuses. One arena for the process measured ~0.5 MB (5 %) less private
/// memory for an RTMP publisher with a WHEP viewer, at the same CPU, and the same pull-transcode CPU (README,
/// "One malloc arena"); the smallest allocations are still served from each thread's own cache without the
/// arena's lock. Called before any thread starts (a thread that already had an arena would keep it); an operator's
/// `MALLOC_ARENA_MAX`, or an `arena_max` in `GLIBC_TUNABLES`, is left to rule.
pub fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tuned = std::env::var_os("MALLOC_ARENA_MAX").is_some()
            || std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc.arena_max"));
        if !tuned {
            // SAFETY: mallopt takes its arguments by value and glibc serialises it with allocation; it only sets
            // the limit read when a thread next picks an arena.
            unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
        }
    }
}

/// Run the gateway until Ctrl-C.
pub fn serve(mut config: Config) -> Result<(), String> {
    one_malloc_arena();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&config.log).map_err(|e| format!("log filter: {e}"))?)
        .init();
    let demo = crate::demo::ensure_app(&mut config).map_err(|e| e.to_string())?;
    let demo_key = crate::demo::ensure_api_key(&mut config).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let gw = crate::Gateway::start(config).await.map_err(|e| e.to_string())?;
        let host = &gw.config.public_host;
        tracing::info!(http = %gw.http_addr, https = ?gw.https_addr, rtmp = ?gw.rtmp_addr, rtmps = ?gw.rtmps_addr,
            srt = ?gw.srt_addr, "roomgate is running");
        if gw.config.demo_media.is_some() {
            if let Some(app) = gw.config.apps.first() {
                let mut at = gw.http_addr;
                if at.ip().is_unspecified() {
                    at.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                let scheme = if gw.config.http.plain { "http" } else { "https" };
                let url = format!("{scheme}://{at}/demo/sample.mp4");
                let spec = crate::ingest::pull::TaskSpec::with_defaults(
                    app.sdkappid,
                    "demo_room",
                    "demo_robot",
                    &url,
                    -1,
                    true,
                );
                match gw.pull.start(spec).await {
                    Ok(id) => tracing::info!(task = %id, "demo pull task started in demo_room"),
                    Err(crate::ingest::pull::PullError::TaskExist(_)) => {
                        tracing::info!("demo pull task already running (resumed)")
                    }
                    Err(e) => tracing::warn!(error = %e, "demo pull task not started"),
                }
            }
        }
        println!();
        let https_port = gw.https_addr.map(|a| a.port());
        let base = http_base(host, gw.http_addr.port(), https_port);
        println!("Console: {base}/  (dashboard, player, browser publisher, tokens)");
        if let Some(app) = demo {
            let rtmp = match (gw.rtmps_addr, gw.rtmp_addr) {
                (Some(a), _) => Some((a.port(), true)),
                (None, Some(a)) => Some((a.port(), false)),
                (None, None) => None,
            };
            print_demo(&app, host, rtmp, &base, &gw.config.data_dir);
        }
        if let Some(key) = demo_key {
            println!(
                "No [[api_keys]] configured: Cloud API (StartStreamIngest...) credentials are in {}",
                gw.config.data_dir.join("demo-api-key.toml").display()
            );
            println!("  SecretId:  {}", key.secret_id);
            println!("  Endpoint:  {base}  (or: roomgate ingest start --url URL --room R)");
            println!();
        }
        // Ctrl-C, or SIGTERM from systemd / docker stop / Kubernetes: the same orderly stop (out of the cluster at
        // once, pull tasks suspended to resume on the next start).
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
        let mut signalled = async || {
            tokio::select! {
                r = tokio::signal::ctrl_c() => r.map_err(|e| e.to_string()),
                _ = terminate.recv() => Ok(()),
            }
        };
        signalled().await?;
        if gw.registry.clustered() {
            // A cluster node drains first: no new work, its publishers given time to leave (or to be moved by
            // their operators); a second signal stops it at once.
            let timeout = std::time::Duration::from_secs(gw.config.cluster.drain_timeout_secs);
            tokio::select! {
                _ = gw.drain(timeout) => {}
                _ = signalled() => tracing::info!("second signal: stopping without waiting for publishers"),
            }
        }
        tracing::info!("shutting down");
        gw.stop().await;
        Ok(())
    })
}

/// The SRT URL an encoder publishes `userid` into `room` with: the stream id in SRT's access-control form,
/// written plainly (OBS and ffmpeg pass it on as is; roomgate also takes it percent-encoded).
pub fn srt_url(host: &str, port: u16, sdkappid: u64, sig: &str, userid: &str, room: &str) -> String {
    format!("srt://{host}:{port}?streamid=#!::r={room},u={userid},m=publish,sdkappid={sdkappid},usersig={sig}")
}

/// OBS's Server setting for RTMP (`rtmps: true`: RTMPS) on `port` of `host`: the port is left out when it is the
/// scheme's default (1935 for RTMP, 443 for RTMPS).
pub fn rtmp_server(host: &str, port: u16, rtmps: bool) -> String {
    match (rtmps, port) {
        (false, 1935) => format!("rtmp://{host}/push/"),
        (false, p) => format!("rtmp://{host}:{p}/push/"),
        (true, 443) => format!("rtmps://{host}/push/"),
        (true, p) => format!("rtmps://{host}:{p}/push/"),
    }
}

/// The base of printed HTTP URLs: `https://host:port` when HTTPS is on, else `http://host:port`.
pub fn http_base(host: &str, http_port: u16, https_port: Option<u16>) -> String {
    match https_port {
        Some(p) => format!("https://{host}:{p}"),
        None => format!("http://{host}:{http_port}"),
    }
}

fn print_demo(app: &AppConfig, host: &str, rtmp: Option<(u16, bool)>, base: &str, data_dir: &std::path::Path) {
    let userid = "demo_anchor";
    let room = "demo_room";
    let sig = UserSig::generate(app.sdkappid, &app.secret_key, userid, unix_now(), 7 * 86400, None);
    let key = format!("{room}?sdkappid={}&userid={userid}&usersig={sig}", app.sdkappid);
    println!();
    println!(
        "No [[apps]] configured: using the demo app (key stored in {}).",
        data_dir.join("demo-app.toml").display()
    );
    println!("  sdkappid:   {}", app.sdkappid);
    if let Some((port, rtmps)) = rtmp {
        let server = rtmp_server(host, port, rtmps);
        println!();
        println!("Push a test stream with ffmpeg (UserSig valid 7 days):");
        println!(
            "  ffmpeg -re -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440 \\\n    -c:v libx264 -preset veryfast -tune zerolatency -profile:v baseline -g 60 -c:a aac -ar 48000 \\\n    -f flv '{server}{key}'"
        );
        println!();
        println!("OBS (Settings > Stream > Service: Custom):");
        println!("  Server:     {server}");
        println!("  Stream Key: {key}");
    }
    let viewer = UserSig::generate(app.sdkappid, &app.secret_key, "viewer1", unix_now(), 7 * 86400, None);
    println!();
    println!("Publish with WHIP (OBS 30+: Service WHIP; `roomgate obs --userid U --room R` prints all settings):");
    println!(
        "  Server:       {base}/v2/pub/{}/{room}?SessionID={userid}",
        app.sdkappid
    );
    println!("  Bearer Token: {sig}");
    println!();
    println!("Watch with any WHEP player:");
    println!(
        "  URL:          {base}/v2/sub/{}/{room}?SessionID=viewer1",
        app.sdkappid
    );
    println!("  Bearer Token: {viewer}");
    println!();
    println!("Rooms: curl {base}/v1/rooms");
    println!();
}

/// Print the OBS settings (RTMP and WHIP) of anchor `userid` in `room`.
pub fn print_obs(sdkappid: u64, sig: &str, userid: &str, room: &str, config: &Config) {
    let host = &config.public_host;
    let server = match config.rtmps_listen() {
        Some(a) => rtmp_server(host, a.port(), true),
        None => rtmp_server(host, config.rtmp.listen.port(), false),
    };
    let base = http_base(host, config.http.listen.port(), config.https_listen().map(|a| a.port()));
    println!("RTMP (Settings > Stream > Service: Custom)");
    println!("  Server:       {server}");
    println!("  Stream Key:   {room}?sdkappid={sdkappid}&userid={userid}&usersig={sig}");
    println!();
    if config.srt.enabled {
        println!("SRT (OBS: Service: Custom, this Server, Stream Key empty; ffmpeg: -f mpegts '<this URL>')");
        println!(
            "  Server:       {}",
            srt_url(host, config.srt.listen.port(), sdkappid, sig, userid, room)
        );
        println!();
    }
    println!("WHIP (OBS 30+, Settings > Stream > Service: WHIP)");
    println!("  Server:       {base}/v2/pub/{sdkappid}/{room}?SessionID={userid}");
    println!("  Bearer Token: {sig}");
    println!();
    println!(
        "Output: x264, keyframe interval 1-2 s, profile baseline, tune zerolatency, bframes=0 (see obs/README.md)"
    );
}
