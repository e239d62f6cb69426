//! The real `roomgate serve` process as the operating system sees it.

mod support;

use std::net::SocketAddr;
use support::nginx::free_port;
use support::process::{roomgate_config, serve};

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
