//! Make the credentials a backend hands to its clients: a UserSig for a user and, for a room, a PrivateMapKey
//! (a UserSig carrying a room grant), then print the ready-to-use RTMP stream key and WHEP URL.
//!
//! This is what your own backend does for its apps' users (the secret key never leaves the backend). It uses
//! roomgate's own `roomgate::auth` API, which generates tickets exactly as Tencent's TLSSigAPIv2 libraries do.
//!
//! Run:
//! ```sh
//! cargo run --example usersig -- 1400000001 <SECRET_KEY> anchor1
//! cargo run --example usersig -- 1400000001 <SECRET_KEY> anchor1 --room room1 --privileges publish
//! cargo run --example usersig -- 1400000001 <SECRET_KEY> viewer1 --room room1 --privileges play \
//!     --rtmp rtmp://media.example.com:1935 --http https://media.example.com
//! ```
//! Output: one `Name: value` line each (UserSig, PrivateMapKey, RTMP server, RTMP stream key, RTMP URL, WHEP URL,
//! WHEP bearer token).

use clap::Parser;
use roomgate::auth::{unix_now, PrivateMapKey, Privileges, UserSig};
use roomgate::room::RoomRef;

#[derive(Parser)]
#[command(about = "Make a UserSig (and a PrivateMapKey for a room) for a roomgate/TRTC app")]
struct Args {
    /// The app's SdkAppId.
    sdkappid: u64,
    /// The app's secret key (from roomgate's config, `[[apps]] secret_key`).
    secret_key: String,
    /// The user the ticket is for (1-32 letters, digits, `_`, `-`).
    userid: String,
    /// A string room: also make a PrivateMapKey granting `--privileges` in it.
    #[arg(long)]
    room: Option<String>,
    /// Privileges of the PrivateMapKey: `publish` (2+4+16), `play` (2+8+32), `all` (255) or a number (bits).
    #[arg(long, default_value = "publish")]
    privileges: String,
    /// Validity of the tickets, in seconds.
    #[arg(long, default_value_t = 86400)]
    expire: u64,
    /// The gateway's RTMP address, for the stream key forms.
    #[arg(long, default_value = "rtmp://127.0.0.1:1935")]
    rtmp: String,
    /// The gateway's HTTP address, for the WHEP URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    http: String,
}

fn parse_privileges(s: &str) -> Result<u32, String> {
    match s {
        "publish" => Ok(Privileges::PUBLISH),
        "play" => Ok(Privileges::PLAY),
        "all" => Ok(255),
        n => n
            .parse::<u32>()
            .map_err(|_| format!("--privileges {n:?}: expected publish, play, all or a number of bits")),
    }
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), String> {
    if !roomgate::auth::is_valid_user_id(&args.userid) {
        return Err(format!("user id {:?}: 1-32 letters, digits, `_` or `-`", args.userid));
    }
    let now = unix_now();

    // The UserSig: proves "this is user <userid> of app <sdkappid>" until now + expire.
    let usersig = UserSig::generate(args.sdkappid, &args.secret_key, &args.userid, now, args.expire, None);
    println!("UserSig: {usersig}");

    // The PrivateMapKey: the same kind of ticket with a binary grant (room + privilege bits) in its userbuf.
    // Apps with `require_private_map_key = true` ask for it on top of the UserSig.
    let mut private_map_key = None;
    if let Some(room) = &args.room {
        if !roomgate::auth::is_valid_str_room_id(room) {
            return Err(format!("room {room:?}: 1-64 letters, digits, `_` or `-`"));
        }
        let bits = parse_privileges(&args.privileges)?;
        let grant = PrivateMapKey {
            userid: args.userid.clone(),
            sdkappid: u32::try_from(args.sdkappid).map_err(|_| "a PrivateMapKey needs a 32-bit SdkAppId")?,
            room: RoomRef::Str(room.clone()),
            expires_at: u32::try_from(now + args.expire).map_err(|_| "--expire is too far in the future")?,
            privileges: Privileges(bits),
        };
        let key = UserSig::generate(
            args.sdkappid,
            &args.secret_key,
            &args.userid,
            now,
            args.expire,
            Some(&grant.to_userbuf()),
        );
        println!("PrivateMapKey: {key}");
        println!(
            "PrivateMapKey grants: {bits} ({}) in string room {room:?}",
            Privileges::describe(bits)
        );
        private_map_key = Some(key);
    }

    // Where clients use them. The tickets' alphabet (letters, digits, `*`, `-`, `_`) needs no URL escaping.
    let room = args.room.as_deref().unwrap_or("<room>");
    let pmk = private_map_key
        .as_deref()
        .map(|k| format!("&privatemapkey={k}"))
        .unwrap_or_default();
    let stream_key = format!(
        "{room}?sdkappid={}&userid={}&usersig={usersig}{pmk}",
        args.sdkappid, args.userid
    );
    let rtmp = args.rtmp.trim_end_matches('/');
    println!("RTMP server: {rtmp}/push/");
    println!("RTMP stream key: {stream_key}");
    println!("RTMP URL: {rtmp}/push/{stream_key}");
    println!(
        "WHEP URL: {}/v2/sub/{}/{room}?SessionID={}{pmk}",
        args.http.trim_end_matches('/'),
        args.sdkappid,
        args.userid
    );
    println!("WHEP bearer token: {usersig}");
    Ok(())
}
