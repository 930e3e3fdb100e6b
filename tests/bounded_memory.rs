//! What a rate limiter holds per key, measured: this test binary counts,
//! per thread, the bytes allocated and not yet freed, so a key's cost is
//! what stays allocated after it was checked (other tests' threads do not
//! disturb the count).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use strangler::policy::ratelimit::{RouteLimit, key_of};
use strangler_rules::config::{RateKey, RateLimitSpec};

struct Counting;

thread_local! {
    static HELD: Cell<isize> = const { Cell::new(0) };
}

fn add(n: isize) {
    // `try_with`: a thread being torn down has no counter left.
    let _ = HELD.try_with(|h| h.set(h.get() + n));
}

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn held() -> isize {
    HELD.with(Cell::get)
}

/// Bytes a fresh limiter holds after `n` distinct header keys of `len`
/// bytes each were checked once (each still within its window).
fn held_for(n: usize, len: usize) -> isize {
    let spec = RateLimitSpec {
        per_second: 0.01,
        burst: 2,
        key: RateKey::Header("x-key".into()),
    };
    let limit = RouteLimit::new(&spec).expect("a valid limit");
    let client = std::net::IpAddr::from([127, 0, 0, 1]);
    // The limiter's own first allocations are not per key.
    let mut headers = http::HeaderMap::new();
    headers.insert("x-key", "warm-up".parse().expect("value"));
    limit.check(key_of(&spec, client, &headers, None));
    let before = held();
    for i in 0..n {
        let mut value = format!("{i:08}-");
        value.extend(std::iter::repeat_n('k', len.saturating_sub(value.len())));
        let mut headers = http::HeaderMap::new();
        headers.insert("x-key", value.parse().expect("value"));
        limit.check(key_of(&spec, client, &headers, None));
    }
    let after = held();
    assert_eq!(limit.retain(), n + 1, "every key is still held");
    drop(limit);
    after - before
}

#[test]
fn a_rate_limit_key_costs_the_same_whatever_its_length() {
    let n = 2000;
    let short = held_for(n, 16);
    let long = held_for(n, 16 * 1024);
    assert!(short > 0, "the keys are held somewhere: {short}");
    // Whole keys would cost 16 KiB each (32 MiB here); hashed ones cost the
    // same for both lengths, give or take the map's growth steps.
    assert!(
        long <= short + short / 4,
        "{n} keys of 16 KiB hold {long} bytes, of 16 B {short} bytes"
    );
    assert!(
        long / (n as isize) < 256,
        "{} bytes per key",
        long / n as isize
    );
}
