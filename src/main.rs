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
    about = "Self-hosted media ingest gateway: RTMP push into rooms as virtual anchors (TRTC-compatible)"
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
    println!();
    println!("Rooms: curl http://{host}:{http_port}/v1/rooms");
    println!();
}
