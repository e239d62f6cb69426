//! The metrics recorder does not keep histogram samples until someone scrapes `/metrics`: the gateway folds them
//! into their buckets on its own. Measured with a counting allocator: the memory the samples take comes back.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

/// The system allocator, counting the bytes live.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn histogram_samples_are_folded_without_a_scrape() {
    let handle = roomgate::gateway::metrics_handle();
    let before = LIVE.load(Ordering::Relaxed);
    // What 100 viewers record in ~6 s: one gateway-delay sample per frame per viewer.
    let delay = metrics::histogram!("roomgate_gateway_delay_seconds", "kind" => "video");
    for i in 0..500_000u32 {
        delay.record(f64::from(i % 1000) * 1e-5);
    }
    let held = LIVE.load(Ordering::Relaxed) - before;
    assert!(held > 2_000_000, "the samples are held until folded: {held} bytes");
    let start = Instant::now();
    loop {
        let now_held = LIVE.load(Ordering::Relaxed) - before;
        if now_held < held / 10 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "without a scrape, {now_held} of {held} bytes of samples are still held after 20 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Nothing was lost: the samples are in the buckets.
    let text = handle.render();
    let count = text
        .lines()
        .find(|l| l.starts_with("roomgate_gateway_delay_seconds_count"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<u64>().ok());
    assert_eq!(count, Some(500_000), "{text}");
}
