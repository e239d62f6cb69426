//! The `roomgate` command line: clap's parsing and the dispatch to `roomgate::serve` and `roomgate::cli`.

use clap::{Parser, Subcommand};

use roomgate::cli::{self, CallbacksAction, IngestAction};
use roomgate::config::Config;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "roomgate",
    version,
    about = "Self-hosted media ingest gateway: RTMP, SRT and WHIP publishers and pull tasks (Cloud API StartStreamIngest) become virtual anchors in rooms, watched over WHEP, with signed event callbacks (TRTC-compatible)"
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
    /// Print OBS settings (RTMP server + stream key, SRT URL, WHIP server + Bearer token) for an anchor of a room.
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
    /// TLS certificates for the HTTPS and RTMPS listeners.
    Tls {
        #[command(subcommand)]
        action: cli::TlsAction,
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

fn main() {
    roomgate::serve::hide_no_proxy_from_libav();
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
            roomgate::serve::serve(config)
        }),
        Command::Obs {
            sdkappid,
            userid,
            room,
            expire,
        } => load(&cli).and_then(|mut config| {
            let (sdkappid, sig) = cli::signed(&mut config, *sdkappid, userid, *expire)?;
            if !roomgate::auth::is_valid_str_room_id(room) {
                return Err(format!(
                    "invalid room {room:?}: use 1-64 characters from letters, digits, '_' and '-'"
                ));
            }
            roomgate::serve::print_obs(sdkappid, &sig, userid, room, &config);
            Ok(())
        }),
        Command::Ingest { endpoint, action } => load(&cli).and_then(|mut config| {
            roomgate::demo::ensure_app(&mut config).map_err(|e| e.to_string())?;
            roomgate::demo::ensure_api_key(&mut config).map_err(|e| e.to_string())?;
            cli::ingest(&config, endpoint.as_deref(), action)
        }),
        Command::Callbacks { endpoint, action } => {
            load(&cli).and_then(|config| cli::callbacks(&config, endpoint.as_deref(), action))
        }
        Command::Tls { action } => cli::tls(action),
        Command::Usersig {
            sdkappid,
            userid,
            expire,
        } => load(&cli).and_then(|mut config| {
            println!("{}", cli::signed(&mut config, *sdkappid, userid, *expire)?.1);
            Ok(())
        }),
    };
    if let Err(e) = result {
        eprintln!("roomgate: {e}");
        std::process::exit(1);
    }
}
