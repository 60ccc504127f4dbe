//! Zero heap allocations over 100,000 beats on each transport, counted by a
//! global allocator that only counts on the beating thread.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use varta_client::{BeatOutcome, BeatTransport, Key, Status, Varta};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    // SAFETY: forwards to the system allocator unchanged; only counts.
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCS.with(|c| c.set(c.get() + 1));
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCS.with(|c| c.set(c.get() + 1));
        }
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const BEATS: u64 = 100_000;

/// Beats `BEATS` times and returns (allocations, sent, dropped).
fn count_allocs<T: BeatTransport>(agent: &mut Varta<T>) -> (u64, u64, u64) {
    let (mut sent, mut dropped) = (0, 0);
    ALLOCS.with(|c| c.set(0));
    COUNTING.with(|c| c.set(true));
    for i in 0..BEATS {
        match agent.beat(Status::Ok, i as u32) {
            BeatOutcome::Sent => sent += 1,
            BeatOutcome::Dropped(_) => dropped += 1,
            BeatOutcome::Failed(e) => panic!("beat failed: {e}"),
        }
    }
    COUNTING.with(|c| c.set(false));
    (ALLOCS.with(Cell::get), sent, dropped)
}

fn drain_udp(rx: UdpSocket, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    rx.set_read_timeout(Some(std::time::Duration::from_millis(50)))
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 128];
        while !stop.load(Ordering::Relaxed) {
            let _ = rx.recv(&mut buf);
        }
    })
}

#[test]
fn uds_beats_do_not_allocate() {
    let obs = support::FakeObserver::bind();
    let mut agent = Varta::connect(&obs.path).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = obs.sock.try_clone().unwrap();
    reader
        .set_read_timeout(Some(std::time::Duration::from_millis(50)))
        .unwrap();
    let s = stop.clone();
    let t = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while !s.load(Ordering::Relaxed) {
            let _ = reader.recv(&mut buf);
        }
    });
    let (allocs, sent, dropped) = count_allocs(&mut agent);
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
    assert_eq!(
        allocs, 0,
        "{allocs} allocations ({sent} sent, {dropped} dropped)"
    );
    assert!(sent > 0);
}

#[test]
fn udp_and_secure_udp_beats_do_not_allocate() {
    let stop = Arc::new(AtomicBool::new(false));
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = rx.local_addr().unwrap();
    let t = drain_udp(rx, stop.clone());

    let mut plain = Varta::connect_udp(addr).unwrap();
    let (allocs, sent, _) = count_allocs(&mut plain);
    assert_eq!(allocs, 0, "udp: {allocs} allocations");
    assert!(sent > 0);

    let mut shared = Varta::connect_secure_udp(addr, Key::from_bytes([3; 32])).unwrap();
    let (allocs, sent, _) = count_allocs(&mut shared);
    assert_eq!(allocs, 0, "secure shared: {allocs} allocations");
    assert!(sent > 0);

    let mut master = Varta::connect_secure_udp_with_master(addr, Key::from_bytes([4; 32])).unwrap();
    let (allocs, sent, _) = count_allocs(&mut master);
    assert_eq!(allocs, 0, "secure master: {allocs} allocations");
    assert!(sent > 0);

    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
}
