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
    about = "Self-hosted media ingest gateway: RTMP and WHIP publishers become virtual anchors in rooms, watched over WHEP (TRTC-compatible)"
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

fn load(cli: &Cli) -> Result<Config, String> {
    let mut config = Config::load(cli.config.as_deref(), std::env::vars()).map_err(|e| e.to_string())?;
    if let Some(d) = &cli.data_dir {
        config.data_dir = d.clone();
    }
    Ok(config)
}

fn app_for(config: &Config, sdkappid: Option<u64>) -> Result<&AppConfig, String> {
    match sdkappid {
        Some(id) => config.app(id).ok_or_else(|| format!("sdkappid {id} is not configured")),
        None if config.apps.len() == 1 => Ok(&config.apps[0]),
        None => Err("several apps are configured: pass --sdkappid".into()),
    }
}

fn main() {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Serve {
            http_listen,
            rtmp_listen,
            public_host,
        } => load(&cli).and_then(|mut config| {
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
            if !roomgate::auth::is_valid_user_id(userid) {
                return Err(format!(
                    "invalid userid {userid:?}: use 1-32 characters from letters, digits, '_' and '-'"
                ));
            }
            if !roomgate::auth::is_valid_str_room_id(room) {
                return Err(format!(
                    "invalid room {room:?}: use 1-64 characters from letters, digits, '_' and '-'"
                ));
            }
            let sig = UserSig::generate(app.sdkappid, &app.secret_key, userid, unix_now(), *expire, None);
            print_obs(app.sdkappid, &sig, userid, room, &config);
            Ok(())
        }),
        Command::Usersig {
            sdkappid,
            userid,
            expire,
        } => load(&cli).and_then(|mut config| {
            config.ensure_demo_app().map_err(|e| e.to_string())?;
            let app = app_for(&config, *sdkappid)?;
            if !roomgate::auth::is_valid_user_id(userid) {
                return Err(format!(
                    "invalid userid {userid:?}: use 1-32 characters from letters, digits, '_' and '-'"
                ));
            }
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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let gw = roomgate::Gateway::start(config).await.map_err(|e| e.to_string())?;
        let host = &gw.config.public_host;
        tracing::info!(http = %gw.http_addr, rtmp = ?gw.rtmp_addr, "roomgate is running");
        if let Some(app) = demo {
            print_demo(
                &app,
                host,
                gw.rtmp_addr.map(|a| a.port()),
                gw.http_addr.port(),
                &gw.config.data_dir,
            );
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
