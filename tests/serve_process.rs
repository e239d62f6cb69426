//! The real `roomgate serve` process as the operating system sees it.

mod support;

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;
use support::cloud::{start_params, start_task, CloudClient, SECRET_ID, SECRET_KEY};
use support::nginx::free_port;
use support::process::{roomgate_config, serve, start_roomgate, throwaway_cert};
use support::{lavfi, receiver, Ffmpeg, KEY, QUICK_X264, SDKAPPID};

/// glibc's heaps for threads other than the main one (its "arenas"): an anonymous read-write mapping that starts
/// on a 64 MiB boundary, followed at once by the inaccessible rest of its 64 MiB reservation.
fn thread_arenas(maps: &str) -> Vec<String> {
    const HEAP_MAX: u64 = 64 << 20;
    let regions: Vec<(u64, u64, &str, bool)> = maps
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (range, perms) = (f.next()?, f.next()?);
            let anonymous = f.nth(3).is_none();
            let (a, b) = range.split_once('-')?;
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
                perms,
                anonymous,
            ))
        })
        .collect();
    regions
        .windows(2)
        .filter(|w| {
            let ((start, end, perms, anon), (next_start, next_end, next_perms, next_anon)) = (w[0], w[1]);
            anon && next_anon
                && start % HEAP_MAX == 0
                && perms.starts_with("rw")
                && next_perms.starts_with("---")
                && next_start == end
                && next_end - start == HEAP_MAX
        })
        .map(|w| format!("{:x}-{:x}", w[0].0, w[0].1))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_allocates_from_one_malloc_arena() {
    let dir = tempfile::tempdir().unwrap();
    let (http, rtmp, rtc) = (free_port(), free_port(), free_port());
    let cfg = roomgate_config(dir.path(), http, rtmp, rtc, 0, "");
    let http = SocketAddr::from(([127, 0, 0, 1], http));
    let gw = serve(&cfg, http).await;
    // Work for every tokio worker: requests answered on whichever picks them up.
    for _ in 0..20 {
        assert_eq!(support::http_get(http, "/healthz").await.0, 200);
    }
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", gw.0.id())).unwrap();
    assert_eq!(
        thread_arenas(&maps),
        Vec::<String>::new(),
        "the gateway's threads share the main arena (serve sets M_ARENA_MAX to 1)"
    );
}

/// The opens of one file by any process, as inotify reports them, from `watch` on.
struct Opens {
    fd: OwnedFd,
    seen: usize,
}

impl Opens {
    fn watch(path: &std::path::Path) -> Opens {
        // SAFETY: plain system calls; the descriptor is owned from here on.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(fd >= 0, "inotify_init1");
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let name = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // Closes are watched too: inotify folds identical events in a row into one, and an open is then always
        // followed by its close.
        let mask = libc::IN_OPEN | libc::IN_CLOSE_NOWRITE;
        // SAFETY: a valid descriptor and a NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), name.as_ptr(), mask) };
        assert!(wd >= 0, "inotify_add_watch");
        Opens { fd, seen: 0 }
    }

    /// How many times the file was opened so far.
    fn count(&mut self) -> usize {
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: reads into a buffer of the length given.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return self.seen;
            }
            let mut at = 0;
            while at + 16 <= n as usize {
                // struct inotify_event: wd, mask, cookie, len, then `len` bytes of name.
                let mask = u32::from_ne_bytes(buf[at + 4..at + 8].try_into().unwrap());
                let len = u32::from_ne_bytes(buf[at + 12..at + 16].try_into().unwrap()) as usize;
                if mask & libc::IN_OPEN != 0 {
                    self.seen += 1;
                }
                at += 16 + len;
            }
        }
    }
}

/// The system's CA certificates cost memory (and a read of the bundle) for each copy: the gateway reads them
/// when its first TLS client is needed, and once, whichever client needs them after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reads_the_system_cas_only_when_a_client_needs_them_and_once() {
    const CALLING_APP: u64 = SDKAPPID + 1;
    const CALLING_KEY: &str = "calling-app-key";
    let dir = tempfile::tempdir().unwrap();
    let (cas, _) = throwaway_cert(dir.path());
    let (http, rtmp, rtc, receiver_port) = (free_port(), free_port(), free_port(), free_port());
    let config = dir.path().join("roomgate.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{data}\"\nlog = \"warn\"\n\
             http = {{ listen = \"127.0.0.1:{http}\" }}\n\
             rtmp = {{ listen = \"127.0.0.1:{rtmp}\" }}\n\
             srt = {{ enabled = false }}\n\
             rtc = {{ bind = \"127.0.0.1\", udp_port = {rtc}, tcp_port = {rtc} }}\n\
             pull = {{ allow_private_sources = true }}\n\
             api_keys = [{{ secret_id = \"{SECRET_ID}\", secret_key = \"{SECRET_KEY}\" }}]\n\
             [[apps]]\nsdkappid = {SDKAPPID}\nsecret_key = \"{KEY}\"\n\
             [[apps]]\nsdkappid = {CALLING_APP}\nsecret_key = \"{CALLING_KEY}\"\n\
             callback_url = \"http://127.0.0.1:{receiver_port}/trtc/callback\"\ncallback_key = \"{CALLING_KEY}\"\n",
            data = dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut opens = Opens::watch(std::path::Path::new(&cas));
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_roomgate"));
    cmd.args(["serve", "-c"]).arg(&config).env("SSL_CERT_FILE", &cas);
    let http = SocketAddr::from(([127, 0, 0, 1], http));
    let _gw = start_roomgate(cmd, http).await;

    // A publisher of an app without callbacks: no TLS client anywhere.
    let push = |app: u64, key: &str, room: &str| {
        let sig = roomgate::auth::UserSig::generate(app, key, "cam", roomgate::auth::unix_now(), 3600, None);
        let url = format!("rtmp://127.0.0.1:{rtmp}/push/{room}?sdkappid={app}&userid=cam&usersig={sig}");
        Ffmpeg::push(&lavfi("320x240", 2), QUICK_X264, &url)
    };
    let (ok, err) = push(SDKAPPID, KEY, "quiet").finish(Duration::from_secs(30)).await;
    assert!(ok, "the gateway took the publish: {err}");
    assert_eq!(opens.count(), 0, "nothing needed the system's CAs yet");

    // A pull task's pre-flight (plain http, to a listener of ours) needs an HTTP client: the CAs are read.
    let source = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/live.flv", source.local_addr().unwrap());
    let api = CloudClient::new(http);
    start_task(&api, start_params("pulled", "robot", &url)).await;
    let _ = tokio::time::timeout(Duration::from_secs(20), source.accept())
        .await
        .expect("the pre-flight reached the source");
    assert_eq!(opens.count(), 1, "the first client read the CAs");

    // Callbacks need another client: it shares what was read.
    let out = dir.path().join("callbacks.jsonl");
    let _receiver = receiver::Receiver::start(receiver_port, CALLING_KEY, &out).await;
    let (ok, err) = push(CALLING_APP, CALLING_KEY, "loud")
        .finish(Duration::from_secs(30))
        .await;
    assert!(ok, "the gateway took the publish: {err}");
    receiver::wait_for(&out, Duration::from_secs(20), |r| !r.is_empty()).await;
    assert_eq!(opens.count(), 1, "the callbacks' client shares the CAs read once");
}
