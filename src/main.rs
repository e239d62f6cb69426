//! The `roomgate` command line.

use clap::{Parser, Subcommand};
use roomgate::auth::{unix_now, UserSig};
use roomgate::config::{AppConfig, Config};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "roomgate",
    version,
    about = "Self-hosted media ingest gateway: RTMP and WHIP publishers and pull tasks (Cloud API StartStreamIngest) become virtual anchors in rooms, watched over WHEP, with signed event callbacks (TRTC-compatible)"
)]
struct Cli {
    /// Config file (TOML). Every key can also be set as ROOMGATE_<KEY PATH>, e.g. ROOMGATE_RTMP_LISTEN.
    #[arg(long, short, global = true, env = "ROOMGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (overrides data_dir).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// HTTP listen address (overrides http.listen).
        #[arg(long)]
        http_listen: Option<SocketAddr>,
        /// RTMP listen address (overrides rtmp.listen).
        #[arg(long)]
        rtmp_listen: Option<SocketAddr>,
        /// Host name or address used in the URLs printed at start (overrides public_host).
        #[arg(long)]
        public_host: Option<String>,
        /// Also run a demo pull task: FILE (default testdata/sample-720p30.mp4) looping into room demo_room of the
        /// first app as robot demo_robot, so the console shows moving video at once.
        #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "testdata/sample-720p30.mp4")]
        demo_task: Option<PathBuf>,
    },
    /// Print OBS settings (RTMP server + stream key, WHIP server + Bearer token) for an anchor of a room.
    Obs {
        #[arg(long)]
        sdkappid: Option<u64>,
        #[arg(long)]
        userid: String,
        #[arg(long)]
        room: String,
        /// Validity of the UserSig in seconds.
        #[arg(long, default_value_t = 7 * 86400)]
        expire: u64,
    },
    /// Pull tasks through the signed Cloud API (StartStreamIngest & co.) of a running gateway.
    Ingest {
        /// The gateway's Cloud API endpoint (default: this config's http.listen on 127.0.0.1).
        #[arg(long, global = true)]
        endpoint: Option<String>,
        #[command(subcommand)]
        action: IngestAction,
    },
    /// The event-callback outbox of a running gateway (GET /v1/callbacks, POST /v1/callbacks/<id>/retry).
    Callbacks {
        /// The gateway's HTTP address (default: this config's http.listen on 127.0.0.1).
        #[arg(long, global = true)]
        endpoint: Option<String>,
        #[command(subcommand)]
        action: CallbacksAction,
    },
    /// Print a UserSig for a user of a configured app (the key comes from the config or the demo app).
    Usersig {
        #[arg(long)]
        sdkappid: Option<u64>,
        #[arg(long)]
        userid: String,
        /// Validity in seconds.
        #[arg(long, default_value_t = 86400)]
        expire: u64,
    },
}

#[derive(Subcommand)]
enum IngestAction {
    /// Start a task: a robot anchor plays URL into ROOM.
    Start {
        /// Source: http(s) file or HLS, or rtmp.
        #[arg(long)]
        url: String,
        #[arg(long)]
        room: String,
        /// The robot's user id (its UserSig is made from the app key in the config).
        #[arg(long, default_value = "ingest_robot")]
        userid: String,
        #[arg(long)]
        sdkappid: Option<u64>,
        /// The room id is numeric (RoomIdType 1).
        #[arg(long)]
        numeric_room: bool,
        /// Loops to play (-1: until stopped).
        #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
        repeat: i64,
        /// Start at this second.
        #[arg(long)]
        seek: Option<i64>,
        /// Volume in percent (0-200).
        #[arg(long)]
        volume: Option<u32>,
        /// Speed: 0.5, 0.75, 1.0, 1.25, 1.5, 1.75 or 2.0.
        #[arg(long)]
        tempo: Option<f64>,
        /// Then show the task's progress until it ends (Ctrl-C leaves it running).
        #[arg(long)]
        follow: bool,
    },
    /// Stop a task.
    Stop {
        task_id: String,
        #[arg(long)]
        sdkappid: Option<u64>,
    },
    /// Show a task (with --follow: a live progress bar until it ends).
    Describe {
        task_id: String,
        #[arg(long)]
        sdkappid: Option<u64>,
        #[arg(long)]
        follow: bool,
    },
    /// List running tasks.
    List {
        #[arg(long)]
        sdkappid: Option<u64>,
    },
}

#[derive(Subcommand)]
enum CallbacksAction {
    /// List callbacks, newest first.
    List {
        /// pending, delivered or failed (retry window over).
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Re-send a failed callback.
    Retry { id: i64 },
}

fn load(cli: &Cli) -> Result<Config, String> {
    let mut config = Config::load(cli.config.as_deref(), std::env::vars()).map_err(|e| e.to_string())?;
    if let Some(d) = &cli.data_dir {
        config.data_dir = d.clone();
    }
    Ok(config)
}

fn check_userid(userid: &str) -> Result<(), String> {
    if roomgate::auth::is_valid_user_id(userid) {
        Ok(())
    } else {
        Err(format!(
            "invalid userid {userid:?}: use 1-32 characters from letters, digits, '_' and '-'"
        ))
    }
}

fn app_for(config: &Config, sdkappid: Option<u64>) -> Result<&AppConfig, String> {
    match sdkappid {
        Some(id) => config.app(id).ok_or_else(|| format!("sdkappid {id} is not configured")),
        None if config.apps.len() == 1 => Ok(&config.apps[0]),
        None => Err("several apps are configured: pass --sdkappid".into()),
    }
}

/// libav reads the lower-case `no_proxy` and connects directly to the hosts it names, around the source proxy
/// that checks pull tasks' connections. Move it to `NO_PROXY` (which reqwest, for callbacks, reads first) before
/// any thread starts; the pull service refuses http(s) sources while `no_proxy` is still set.
fn hide_no_proxy_from_libav() {
    if let Some(v) = std::env::var_os("no_proxy") {
        if std::env::var_os("NO_PROXY").is_none() {
            std::env::set_var("NO_PROXY", &v);
        }
        std::env::remove_var("no_proxy");
    }
}

fn main() {
    hide_no_proxy_from_libav();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Serve {
            http_listen,
            rtmp_listen,
            public_host,
            demo_task,
        } => load(&cli).and_then(|mut config| {
            if let Some(f) = demo_task {
                if !f.is_file() {
                    return Err(format!("--demo-task: {} is not a file", f.display()));
                }
                config.demo_media = Some(f.clone());
            }
            if let Some(a) = http_listen {
                config.http.listen = *a;
            }
            if let Some(a) = rtmp_listen {
                config.rtmp.listen = *a;
            }
            if let Some(h) = public_host {
                config.public_host = h.clone();
            }
            serve(config)
        }),
        Command::Obs {
            sdkappid,
            userid,
            room,
            expire,
        } => load(&cli).and_then(|mut config| {
            config.ensure_demo_app().map_err(|e| e.to_string())?;
            let app = app_for(&config, *sdkappid)?;
            check_userid(userid)?;
            if !roomgate::auth::is_valid_str_room_id(room) {
                return Err(format!(
                    "invalid room {room:?}: use 1-64 characters from letters, digits, '_' and '-'"
                ));
            }
            let sig = UserSig::generate(app.sdkappid, &app.secret_key, userid, unix_now(), *expire, None);
            print_obs(app.sdkappid, &sig, userid, room, &config);
            Ok(())
        }),
        Command::Ingest { endpoint, action } => load(&cli).and_then(|mut config| {
            config.ensure_demo_app().map_err(|e| e.to_string())?;
            config.ensure_demo_api_key().map_err(|e| e.to_string())?;
            ingest(&config, endpoint.as_deref(), action)
        }),
        Command::Callbacks { endpoint, action } => {
            load(&cli).and_then(|config| callbacks(&config, endpoint.as_deref(), action))
        }
        Command::Usersig {
            sdkappid,
            userid,
            expire,
        } => load(&cli).and_then(|mut config| {
            config.ensure_demo_app().map_err(|e| e.to_string())?;
            let app = app_for(&config, *sdkappid)?;
            check_userid(userid)?;
            println!(
                "{}",
                UserSig::generate(app.sdkappid, &app.secret_key, userid, unix_now(), *expire, None)
            );
            Ok(())
        }),
    };
    if let Err(e) = result {
        eprintln!("roomgate: {e}");
        std::process::exit(1);
    }
}

fn serve(mut config: Config) -> Result<(), String> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&config.log).map_err(|e| format!("log filter: {e}"))?)
        .init();
    let demo = config.ensure_demo_app().map_err(|e| e.to_string())?;
    let demo_key = config.ensure_demo_api_key().map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let gw = roomgate::Gateway::start(config).await.map_err(|e| e.to_string())?;
        let host = &gw.config.public_host;
        tracing::info!(http = %gw.http_addr, rtmp = ?gw.rtmp_addr, "roomgate is running");
        if gw.config.demo_media.is_some() {
            if let Some(app) = gw.config.apps.first() {
                let mut at = gw.http_addr;
                if at.ip().is_unspecified() {
                    at.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                let url = format!("http://{at}/demo/sample.mp4");
                let spec = roomgate::api::console::task_spec(app.sdkappid, "demo_room", "demo_robot", &url, -1, true);
                match gw.pull.start(spec).await {
                    Ok(id) => tracing::info!(task = %id, "demo pull task started in demo_room"),
                    Err(roomgate::ingest::pull::PullError::TaskExist(_)) => {
                        tracing::info!("demo pull task already running (resumed)")
                    }
                    Err(e) => tracing::warn!(error = %e, "demo pull task not started"),
                }
            }
        }
        println!();
        println!(
            "Console: http://{host}:{}/  (dashboard, player, browser publisher, tokens)",
            gw.http_addr.port()
        );
        if let Some(app) = demo {
            print_demo(
                &app,
                host,
                gw.rtmp_addr.map(|a| a.port()),
                gw.http_addr.port(),
                &gw.config.data_dir,
            );
        }
        if let Some(key) = demo_key {
            println!(
                "No [[api_keys]] configured: Cloud API (StartStreamIngest...) credentials are in {}",
                gw.config.data_dir.join("demo-api-key.toml").display()
            );
            println!("  SecretId:  {}", key.secret_id);
            println!(
                "  Endpoint:  http://{host}:{}  (or: roomgate ingest start --url URL --room R)",
                gw.http_addr.port()
            );
            println!();
        }
        tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
        tracing::info!("shutting down");
        Ok(())
    })
}

fn print_demo(app: &AppConfig, host: &str, rtmp_port: Option<u16>, http_port: u16, data_dir: &std::path::Path) {
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
    if let Some(port) = rtmp_port {
        let server = if port == 1935 {
            format!("rtmp://{host}/push/")
        } else {
            format!("rtmp://{host}:{port}/push/")
        };
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
        "  Server:       http://{host}:{http_port}/v2/pub/{}/{room}?SessionID={userid}",
        app.sdkappid
    );
    println!("  Bearer Token: {sig}");
    println!();
    println!("Watch with any WHEP player:");
    println!(
        "  URL:          http://{host}:{http_port}/v2/sub/{}/{room}?SessionID=viewer1",
        app.sdkappid
    );
    println!("  Bearer Token: {viewer}");
    println!();
    println!("Rooms: curl http://{host}:{http_port}/v1/rooms");
    println!();
}

fn print_obs(sdkappid: u64, sig: &str, userid: &str, room: &str, config: &Config) {
    let host = &config.public_host;
    let rtmp_port = config.rtmp.listen.port();
    let server = if rtmp_port == 1935 {
        format!("rtmp://{host}/push/")
    } else {
        format!("rtmp://{host}:{rtmp_port}/push/")
    };
    println!("RTMP (Settings > Stream > Service: Custom)");
    println!("  Server:       {server}");
    println!("  Stream Key:   {room}?sdkappid={sdkappid}&userid={userid}&usersig={sig}");
    println!();
    println!("WHIP (OBS 30+, Settings > Stream > Service: WHIP)");
    println!(
        "  Server:       http://{host}:{}/v2/pub/{sdkappid}/{room}?SessionID={userid}",
        config.http.listen.port()
    );
    println!("  Bearer Token: {sig}");
    println!();
    println!(
        "Output: x264, keyframe interval 1-2 s, profile baseline, tune zerolatency, bframes=0 (see obs/README.md)"
    );
}

/// `--endpoint`, or this config's HTTP listener (on 127.0.0.1 when it listens on every address).
fn endpoint_url(config: &Config, endpoint: Option<&str>) -> Result<url::Url, String> {
    let endpoint = match endpoint {
        Some(e) => e.to_string(),
        None => {
            let port = config.http.listen.port();
            let ip = config.http.listen.ip();
            let host = if ip.is_unspecified() {
                "127.0.0.1".to_string()
            } else {
                ip.to_string()
            };
            format!("http://{host}:{port}/")
        }
    };
    url::Url::parse(&endpoint).map_err(|e| format!("--endpoint {endpoint:?}: {e}"))
}

fn callbacks(config: &Config, endpoint: Option<&str>, action: &CallbacksAction) -> Result<(), String> {
    let base = endpoint_url(config, endpoint)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let client = reqwest::Client::new();
        let (url, post) = match action {
            CallbacksAction::List { status, limit } => {
                let mut u = base.join("/v1/callbacks").map_err(|e| e.to_string())?;
                u.query_pairs_mut().append_pair("limit", &limit.to_string());
                if let Some(s) = status {
                    u.query_pairs_mut().append_pair("status", s);
                }
                (u, false)
            }
            CallbacksAction::Retry { id } => (
                base.join(&format!("/v1/callbacks/{id}/retry"))
                    .map_err(|e| e.to_string())?,
                true,
            ),
        };
        // Admin: JSON content type (the loopback rule for POST), and the admin token when the config has one.
        let mut req = if post {
            client
                .post(url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body("{}")
        } else {
            client.get(url.clone())
        };
        if !config.admin.token.is_empty() {
            req = req.bearer_auth(&config.admin.token);
        }
        let resp = req.send().await.map_err(|e| format!("cannot reach {url}: {e}"))?;
        let ok = resp.status().is_success();
        let v: serde_json::Value = resp.json().await.map_err(|e| format!("the reply is not JSON: {e}"))?;
        if !ok {
            return Err(format!(
                "{}: {}",
                v["error"]["code"].as_str().unwrap_or("error"),
                v["error"]["message"].as_str().unwrap_or("")
            ));
        }
        match action {
            CallbacksAction::Retry { id } => println!("callback {id} queued again"),
            CallbacksAction::List { .. } => {
                let list = v["callbacks"].as_array().cloned().unwrap_or_default();
                if list.is_empty() {
                    println!("no callbacks");
                }
                for c in list {
                    println!(
                        "{:>6}  {:<9}  {}  app {}  attempts {}  {}",
                        c["id"],
                        c["status"].as_str().unwrap_or(""),
                        c["event_type"],
                        c["sdkappid"],
                        c["attempts"],
                        c["last_error"].as_str().unwrap_or("")
                    );
                }
            }
        }
        Ok(())
    })
}

fn ingest(config: &Config, endpoint: Option<&str>, action: &IngestAction) -> Result<(), String> {
    use roomgate::api::cloud::CloudApiClient;
    use serde_json::{json, Value};
    let endpoint = endpoint_url(config, endpoint)?;
    let key = config.api_keys.first().ok_or("no [[api_keys]] configured")?;
    let client = CloudApiClient::new(endpoint, key.secret_id.clone(), key.secret_key.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let call = |action: &str, params: Value| {
        rt.block_on(client.call(action, &params))
            .map_err(|e| format!("{}: {}", e.code, e.message))
    };
    let app_id = |sdkappid: Option<u64>| app_for(config, sdkappid).map(|a| a.sdkappid);
    match action {
        IngestAction::Start {
            url,
            room,
            userid,
            sdkappid,
            numeric_room,
            repeat,
            seek,
            volume,
            tempo,
            follow,
        } => {
            let app = app_for(config, *sdkappid)?;
            let sig = UserSig::generate(app.sdkappid, &app.secret_key, userid, unix_now(), 86400, None);
            let mut params = json!({
                "SdkAppId": app.sdkappid, "RoomId": room, "RoomIdType": if *numeric_room { 1 } else { 0 },
                "UserId": userid, "UserSig": sig, "StreamUrl": url, "RepeatNum": repeat,
            });
            if let Some(s) = seek {
                params["SeekSecond"] = json!(s);
            }
            if let Some(v) = volume {
                params["Volume"] = json!(v);
            }
            if let Some(t) = tempo {
                params["Tempo"] = json!(t);
            }
            let r = call("StartStreamIngest", params)?;
            let task = r["TaskId"].as_str().unwrap_or_default().to_string();
            println!("{task}");
            if *follow {
                follow_task(&call, app.sdkappid, &task)?;
            }
        }
        IngestAction::Stop { task_id, sdkappid } => {
            call(
                "StopStreamIngest",
                json!({"SdkAppId": app_id(*sdkappid)?, "TaskId": task_id}),
            )?;
            println!("stopped");
        }
        IngestAction::Describe {
            task_id,
            sdkappid,
            follow,
        } => {
            let app = app_id(*sdkappid)?;
            if *follow {
                follow_task(&call, app, task_id)?;
            } else {
                let r = call("DescribeStreamIngest", json!({"SdkAppId": app, "TaskId": task_id}))?;
                println!(
                    "{}",
                    serde_json::to_string_pretty(&Value::Object(r)).unwrap_or_default()
                );
            }
        }
        IngestAction::List { sdkappid } => {
            let mut params = json!({});
            if let Some(a) = sdkappid {
                params["SdkAppId"] = json!(a);
            }
            let r = call("ListStreamIngests", params)?;
            let tasks = r["Tasks"].as_array().cloned().unwrap_or_default();
            if tasks.is_empty() {
                println!("no running tasks");
            }
            for t in tasks {
                println!(
                    "{}  {:<10} room {} user {}  {}  {}",
                    t["TaskId"].as_str().unwrap_or(""),
                    t["State"].as_str().unwrap_or(""),
                    t["RoomId"].as_str().unwrap_or(""),
                    t["UserId"].as_str().unwrap_or(""),
                    progress_line(&t),
                    t["StreamUrl"].as_str().unwrap_or("")
                );
            }
        }
    }
    Ok(())
}

/// One signed Cloud API call: the `Response` object or the error text.
type ApiCall<'a> = dyn Fn(&str, serde_json::Value) -> Result<serde_json::Map<String, serde_json::Value>, String> + 'a;

/// Redraw one status line until the task ends.
fn follow_task(call: &ApiCall<'_>, sdkappid: u64, task: &str) -> Result<(), String> {
    use std::io::Write;
    loop {
        let r = serde_json::Value::Object(call(
            "DescribeStreamIngest",
            serde_json::json!({"SdkAppId": sdkappid, "TaskId": task}),
        )?);
        let line = format!("{:<10} {}", r["State"].as_str().unwrap_or("?"), progress_line(&r));
        print!("\r{line:<100}");
        let _ = std::io::stdout().flush();
        if r["Status"] != "InProgress" {
            println!();
            let reason = r["Reason"].as_str().unwrap_or("");
            if !reason.is_empty() {
                println!("ended: {reason}");
            }
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// `[#######-------]  12.0 s / 30.0 s  loop 2/3` for file sources; position and loop for live ones.
fn progress_line(t: &serde_json::Value) -> String {
    let pos = t["PositionMs"].as_i64().unwrap_or(0) as f64 / 1000.0;
    let repeat = t["RepeatNum"].as_i64().unwrap_or(1);
    let loops = format!(
        "loop {}/{}",
        t["LoopsDone"].as_i64().unwrap_or(0) + 1,
        if repeat < 0 {
            "inf".to_string()
        } else {
            repeat.to_string()
        }
    );
    match t["Source"]["DurationMs"].as_f64() {
        Some(d) if d > 0.0 => {
            let total = d / 1000.0;
            let filled = ((pos / total).clamp(0.0, 1.0) * 30.0).round() as usize;
            format!(
                "[{}{}] {pos:6.1} s / {total:.1} s  {loops}",
                "#".repeat(filled),
                "-".repeat(30 - filled)
            )
        }
        _ => format!("{pos:8.1} s (live)  {loops}"),
    }
}
