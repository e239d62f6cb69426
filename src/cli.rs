//! What the client subcommands of `roomgate` do and print: pull tasks through the signed Cloud API (`ingest`) and
//! the callback outbox (`callbacks`). `main.rs` parses the command line and dispatches here.

use crate::auth::{unix_now, UserSig};
use crate::client::{endpoint_url, AdminClient, CloudApiClient};
use crate::config::{AppConfig, Config};
use clap::Subcommand;

/// `roomgate ingest` subcommands.
#[derive(Subcommand)]
pub enum IngestAction {
    /// Start a task: a robot anchor plays URL into ROOM.
    Start {
        /// Source: http(s) file or HLS, or rtmp.
        #[arg(long)]
        url: String,
        /// The room to play into.
        #[arg(long)]
        room: String,
        /// The robot's user id (its UserSig is made from the app key in the config).
        #[arg(long, default_value = "ingest_robot")]
        userid: String,
        /// The app (default: the only one configured).
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
        /// The task id StartStreamIngest returned.
        task_id: String,
        /// The app (default: the only one configured).
        #[arg(long)]
        sdkappid: Option<u64>,
    },
    /// Show a task (with --follow: a live progress bar until it ends).
    Describe {
        /// The task id StartStreamIngest returned.
        task_id: String,
        /// The app (default: the only one configured).
        #[arg(long)]
        sdkappid: Option<u64>,
        /// Redraw the task's progress until it ends.
        #[arg(long)]
        follow: bool,
    },
    /// List running tasks.
    List {
        /// Only tasks of this app (default: every app).
        #[arg(long)]
        sdkappid: Option<u64>,
    },
}

/// `roomgate callbacks` subcommands.
#[derive(Subcommand)]
pub enum CallbacksAction {
    /// List callbacks, newest first.
    List {
        /// pending, delivered or failed (retry window over).
        #[arg(long)]
        status: Option<String>,
        /// Most callbacks to list.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Re-send a failed callback.
    Retry {
        /// The callback's id (the first column of the list).
        id: i64,
    },
}

/// `roomgate tls` subcommands.
#[derive(Subcommand)]
pub enum TlsAction {
    /// Write a development CA (`ca.pem`) and a certificate it signed for the hosts (`cert.pem`, the chain, and
    /// `key.pem`) into a directory, and print the [tls] settings and how to trust the CA.
    Selfsigned {
        /// A host name or IP address the certificate is for (repeat for more; localhost and 127.0.0.1 are added).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        /// Where to write the files (created if missing).
        #[arg(long, default_value = "roomgate-tls")]
        out: std::path::PathBuf,
        /// Replace files already there (a new CA, which must be trusted again).
        #[arg(long)]
        force: bool,
    },
}

/// Run a `roomgate tls` subcommand.
pub fn tls(action: &TlsAction) -> Result<(), String> {
    let TlsAction::Selfsigned { hosts, out, force } = action;
    for name in ["ca.pem", "cert.pem", "key.pem"] {
        if out.join(name).exists() && !force {
            return Err(format!(
                "{} exists; pass --force to replace it (the new CA must be trusted again) or choose another --out",
                out.join(name).display()
            ));
        }
    }
    let mut names = hosts.clone();
    for extra in ["localhost", "127.0.0.1"] {
        if !names.iter().any(|h| h == extra) {
            names.push(extra.to_string());
        }
    }
    let made = crate::tls::self_signed(&names).map_err(|e| format!("cannot make the certificate: {e}"))?;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let write = |name: &str, body: &str, private: bool| -> Result<std::path::PathBuf, String> {
        // Written to a new file beside it (private from the start for the key), then renamed over the old one: a
        // gateway watching the directory never reads half a file, and a symlink there is replaced, not followed.
        let path = out.join(name);
        let tmp = out.join(format!(".{name}.{}", std::process::id()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
        use std::io::Write;
        let written = options
            .open(&tmp)
            .and_then(|mut f| f.write_all(body.as_bytes()).and_then(|_| f.sync_all()))
            .and_then(|_| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(format!("{}: {e}", path.display()));
        }
        Ok(path)
    };
    let ca = write("ca.pem", &made.ca_pem, false)?;
    let cert = write("cert.pem", &made.chain_pem, false)?;
    let key = write("key.pem", &made.key_pem, true)?;
    let abs = |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    println!(
        "Wrote a development CA and a certificate for {} (valid for a year).",
        names.join(", ")
    );
    println!();
    println!("In roomgate's config:");
    println!("  [tls]");
    println!("  cert_file = {:?}", abs(&cert).display().to_string());
    println!("  key_file = {:?}", abs(&key).display().to_string());
    println!("  [http]");
    println!("  tls_listen = \"0.0.0.0:8443\"");
    println!("  [rtmp]");
    println!("  tls_listen = \"0.0.0.0:1936\"");
    println!();
    println!("Trust the CA ({}) where clients run:", abs(&ca).display());
    println!(
        "  Debian/Ubuntu: sudo cp {} /usr/local/share/ca-certificates/roomgate-dev.crt && sudo update-ca-certificates",
        abs(&ca).display()
    );
    println!(
        "  Chromium/Chrome on Linux: certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n roomgate-dev -i {}",
        abs(&ca).display()
    );
    println!(
        "  curl: --cacert {}    ffmpeg (rtmps://, https://): -ca_file {} (or -tls_verify 0)",
        abs(&ca).display(),
        abs(&ca).display()
    );
    println!("  OBS: trust it in the system store (above) and use rtmps://<host>:1936/push/ as the server");
    Ok(())
}

/// A user id the way TRTC accepts it.
pub fn check_userid(userid: &str) -> Result<(), String> {
    if crate::auth::is_valid_user_id(userid) {
        Ok(())
    } else {
        Err(format!(
            "invalid userid {userid:?}: use 1-32 characters from letters, digits, '_' and '-'"
        ))
    }
}

/// A UserSig for `userid` in the app `--sdkappid` names (the demo app is made first when none is configured);
/// returns the app's id with it. What `usersig` prints and `obs` builds its settings from.
pub fn signed(config: &mut Config, sdkappid: Option<u64>, userid: &str, expire: u64) -> Result<(u64, String), String> {
    crate::demo::ensure_app(config).map_err(|e| e.to_string())?;
    let app = app_for(config, sdkappid)?;
    check_userid(userid)?;
    let now = crate::auth::unix_now();
    Ok((
        app.sdkappid,
        UserSig::generate(app.sdkappid, &app.secret_key, userid, now, expire, None),
    ))
}

/// The app `--sdkappid` names, or the only one configured.
pub fn app_for(config: &Config, sdkappid: Option<u64>) -> Result<&AppConfig, String> {
    match sdkappid {
        Some(id) => config.app(id).ok_or_else(|| format!("sdkappid {id} is not configured")),
        None if config.apps.len() == 1 => Ok(&config.apps[0]),
        None => Err("several apps are configured: pass --sdkappid".into()),
    }
}

/// `roomgate callbacks list|retry`.
pub fn callbacks(config: &Config, endpoint: Option<&str>, action: &CallbacksAction) -> Result<(), String> {
    let admin = AdminClient::new(endpoint_url(config, endpoint)?, Some(config.admin.token.clone()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    match action {
        CallbacksAction::Retry { id } => {
            rt.block_on(admin.retry_callback(*id))?;
            println!("callback {id} queued again");
        }
        CallbacksAction::List { status, limit } => {
            let list = rt.block_on(admin.callbacks(status.as_deref(), *limit))?;
            if list.is_empty() {
                println!("no callbacks");
            }
            for c in list {
                println!(
                    "{:>6}  {:<9}  {}  app {}  attempts {}  {}",
                    c.id, c.status, c.event_type, c.sdkappid, c.attempts, c.last_error
                );
            }
        }
    }
    Ok(())
}

/// `roomgate ingest start|stop|describe|list`.
pub fn ingest(config: &Config, endpoint: Option<&str>, action: &IngestAction) -> Result<(), String> {
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
