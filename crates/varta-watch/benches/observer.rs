//! `cargo bench -p varta-watch --bench observer` — the observer-core figures
//! of issue 4 (the head-to-head harness of issue 5 extends this):
//!
//! 1. UDS ingest: accepted frames/s with 64 sender processes, next to a raw
//!    `recvmsg` drain of the same kind of socket under the same load.
//! 2. Stall overshoot: agents beat every 100 ms with a 500 ms threshold and
//!    are SIGKILLed at random times; overshoot = (stall raised − last beat)
//!    − threshold, p50/p99/max.
//! 3. Tracker scale: RSS and ns per beat at 10 k / 100 k / 1 M agents
//!    (in-process, same code path as after the socket read).
//!
//! `VARTA_BENCH_QUICK=1` shortens everything (used by `cargo test --benches`).

use std::io::IoSliceMut;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use varta_vlp::{Frame, Status};
use varta_watch::config::Config;
use varta_watch::daemon::Daemon;
use varta_watch::events::{Event, EventBus, Sink};
use varta_watch::export::counters::{Counters, CountingSink};
use varta_watch::tracker::{Incoming, NoProbe, Tracker, TrackerSettings, Verdict};

const SENDER_ENV: &str = "VARTA_BENCH_SENDER";
const SECS_ENV: &str = "VARTA_BENCH_SECS";
const INTERVAL_ENV: &str = "VARTA_BENCH_INTERVAL_MS";

fn quick() -> bool {
    std::env::var_os("VARTA_BENCH_QUICK").is_some() || !std::env::args().any(|a| a == "--bench")
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Sender process: beat as fast as possible (or every INTERVAL ms) until the
/// deadline or until killed.
fn sender_main(socket: &str) {
    let secs: f64 = std::env::var(SECS_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let interval = std::env::var(INTERVAL_ENV)
        .ok()
        .and_then(|s| s.parse::<u64>().ok());
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut agent = loop {
        match varta_client::Varta::connect(socket) {
            Ok(a) => break a,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("sender cannot connect: {e}"),
        }
    };
    while Instant::now() < deadline {
        let _ = agent.beat(Status::Ok, 0);
        if let Some(ms) = interval {
            std::thread::sleep(Duration::from_millis(ms));
        }
    }
}

fn spawn_senders(n: usize, socket: &Path, secs: f64, interval_ms: Option<u64>) -> Vec<Child> {
    (0..n)
        .map(|_| {
            let mut c = Command::new(std::env::current_exe().unwrap());
            c.env(SENDER_ENV, socket)
                .env(SECS_ENV, secs.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if let Some(ms) = interval_ms {
                c.env(INTERVAL_ENV, ms.to_string());
            }
            c.spawn().expect("spawn sender")
        })
        .collect()
}

/// Minimal recvmsg loop with SO_PASSCRED: the physical limit of this
/// socket type on this machine.
fn raw_drain(socket: &Path, senders: usize, secs: f64) -> f64 {
    let _ = std::fs::remove_file(socket);
    let sock = UnixDatagram::bind(socket).unwrap();
    nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::PassCred, &true).unwrap();
    let _ = nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::RcvBufForce, &(4 << 20));
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut children = spawn_senders(senders, socket, secs + 0.5, None);
    let mut cmsg = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
    let mut buf = [0u8; 64];
    // Count over the middle of the run, after every sender is up.
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs - 0.3 {
        let mut iov = [IoSliceMut::new(&mut buf)];
        if nix::sys::socket::recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            nix::sys::socket::MsgFlags::empty(),
        )
        .is_ok()
        {
            n += 1;
        }
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
    let _ = std::fs::remove_file(socket);
    rate
}

/// Our observer (library, same code as the binary) under the same load;
/// accepted = beat events counted.
fn ours_ingest(socket: &Path, senders: usize, secs: f64) -> f64 {
    let counters: Arc<Mutex<Option<Arc<Counters>>>> = Arc::default();
    let c2 = counters.clone();
    let sock = socket.to_path_buf();
    let total = secs + 1.0;
    let daemon = std::thread::spawn(move || {
        let mut cfg = Config::with_socket(sock);
        cfg.max_beat_rate = 0; // as the original is run: limits off
        cfg.tracker_capacity = 4096;
        cfg.threshold = Duration::from_secs(60);
        cfg.shutdown_after = Some(Duration::from_secs_f64(total));
        let mut d = Daemon::new(cfg, None, Vec::new()).expect("daemon");
        *c2.lock().unwrap() = Some(d.counters());
        d.run().expect("run");
    });
    while counters.lock().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let c = counters.lock().unwrap().clone().unwrap();
    let mut children = spawn_senders(senders, socket, secs + 0.5, None);
    std::thread::sleep(Duration::from_millis(300));
    let (b0, t0) = (c.kind("beat"), Instant::now());
    std::thread::sleep(Duration::from_secs_f64(secs - 0.6));
    let rate = (c.kind("beat") - b0) as f64 / t0.elapsed().as_secs_f64();
    for ch in &mut children {
        let _ = ch.kill();
        let _ = ch.wait();
    }
    daemon.join().unwrap();
    rate
}

fn bench_ingest(dir: &Path) {
    let (senders, secs, reps) = if quick() { (4, 1.0, 1) } else { (64, 3.0, 3) };
    let mut raw = Vec::new();
    let mut ours = Vec::new();
    for _ in 0..reps {
        raw.push(raw_drain(&dir.join("raw.sock"), senders, secs));
        ours.push(ours_ingest(&dir.join("ours.sock"), senders, secs));
    }
    let (rmin, rmax) = (
        raw.iter().copied().fold(f64::MAX, f64::min),
        raw.iter().copied().fold(0.0, f64::max),
    );
    let (omin, omax) = (
        ours.iter().copied().fold(f64::MAX, f64::min),
        ours.iter().copied().fold(0.0, f64::max),
    );
    let (r, o) = (median(&mut raw), median(&mut ours));
    println!("\n## UDS ingest, {senders} sender processes, {secs} s x {reps}");
    println!("| receiver              | median frames/s | min | max |");
    println!("|-----------------------|-----------------|-----|-----|");
    println!("| raw recvmsg drain     | {r:>15.0} | {rmin:.0} | {rmax:.0} |");
    println!("| varta-watch (ours)    | {o:>15.0} | {omin:.0} | {omax:.0} |");
    println!("ours / raw drain: {:.2}", o / r);
}

/// Records (observer ns, pid, last_beat_ns) of every stall.
struct StallLog(Arc<Mutex<Vec<(u64, u32, u64)>>>);

impl Sink for StallLog {
    fn on_event(&mut self, at_ns: u64, e: &Event) {
        if let Event::Stall {
            pid, last_beat_ns, ..
        } = *e
        {
            self.0.lock().unwrap().push((at_ns, pid, last_beat_ns));
        }
    }
}

fn bench_detect(dir: &Path) {
    let (agents, secs) = if quick() { (4, 2.0) } else { (40, 8.0) };
    let threshold_ns = 500_000_000u64;
    let stalls: Arc<Mutex<Vec<(u64, u32, u64)>>> = Arc::default();
    let s2 = stalls.clone();
    let sock = dir.join("detect.sock");
    let sock2 = sock.clone();
    let ready = Arc::new(AtomicBool::new(false));
    let r2 = ready.clone();
    let daemon = std::thread::spawn(move || {
        let mut cfg = Config::with_socket(sock2);
        cfg.threshold = Duration::from_nanos(threshold_ns);
        cfg.shutdown_after = Some(Duration::from_secs_f64(secs + 2.0));
        let mut d = Daemon::new(cfg, None, vec![Box::new(StallLog(s2))]).expect("daemon");
        r2.store(true, Ordering::Release);
        d.run().expect("run");
    });
    while !ready.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut children = spawn_senders(agents, &sock, secs + 5.0, Some(100));
    // Kill each agent at a random moment within the run.
    let seed = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    let rnd = || {
        let x = seed.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        (x ^ (x >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) >> 11
    };
    let mut kill_at: Vec<(Duration, usize)> = (0..agents)
        .map(|i| {
            (
                Duration::from_millis(700 + rnd() % ((secs * 1000.0) as u64 - 1500)),
                i,
            )
        })
        .collect();
    kill_at.sort();
    let start = Instant::now();
    for (at, i) in kill_at {
        if let Some(wait) = at.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        let _ = children[i].kill();
    }
    for c in &mut children {
        let _ = c.wait();
    }
    daemon.join().unwrap();
    let mut over: Vec<f64> = stalls
        .lock()
        .unwrap()
        .iter()
        .map(|&(at, _, last)| (at.saturating_sub(last) as f64 - threshold_ns as f64) / 1e6)
        .collect();
    over.sort_by(f64::total_cmp);
    let pct = |p: f64| over[((over.len() - 1) as f64 * p) as usize];
    println!("\n## Stall detection overshoot, {agents} agents beating every 100 ms, threshold 500 ms, SIGKILL at random times");
    println!("(measured in-process: stall raised − (last accepted beat + threshold))");
    println!("| stalls | p50 ms | p99 ms | max ms |");
    println!("|--------|--------|--------|--------|");
    println!(
        "| {:>6} | {:>6.3} | {:>6.3} | {:>6.3} |",
        over.len(),
        pct(0.5),
        pct(0.99),
        over[over.len() - 1]
    );
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn bench_scale() {
    let sizes: &[u32] = if quick() {
        &[10_000]
    } else {
        &[10_000, 100_000, 1_000_000]
    };
    println!("\n## Tracker scale (in-process, synthetic beats through Tracker::on_frame + counters sink)");
    println!("| agents    | RSS added MiB | bytes/agent | ns/beat, pid order | ns/beat, random order | expire(none due) ns | ns per stall raised |");
    println!("|-----------|---------------|-------------|--------------------|-----------------------|---------------------|---------------------|");
    for &n in sizes {
        let before = rss_bytes();
        let mut t = Tracker::new(TrackerSettings {
            capacity: n,
            threshold_ns: 5_000_000_000,
            eviction: varta_watch::config::EvictionPolicy::Strict,
            max_beat_rate: 100,
            global_beat_rate: 0,
            global_beat_burst: 0,
            own_pidns: 0,
            allow_cross_namespace: false,
        });
        let mut bus = EventBus::new();
        bus.add(Box::new(CountingSink::new(Arc::new(Counters::default()))));
        let mut now = 0u64;
        // Frames reach the tracker in recvmmsg-sized batches, as from the socket.
        let mut verdicts = [Verdict::Dropped; 32];
        let mut run = |t: &mut Tracker, bus: &mut EventBus, now: u64, pids: &[u32], nonce: u64| {
            let mut batch = Vec::with_capacity(32);
            for (k, chunk) in pids.chunks(32).enumerate() {
                batch.clear();
                batch.extend(chunk.iter().map(|&pid| Incoming {
                    pid,
                    frame: Frame::new(Status::Ok, pid, nonce, nonce, 0),
                    origin: varta_watch::events::Origin::KernelAttested,
                    pidns: None,
                }));
                t.on_batch(
                    now + k as u64,
                    &batch,
                    &mut NoProbe,
                    bus,
                    &mut verdicts[..batch.len()],
                );
            }
        };
        let pids: Vec<u32> = (2..n + 2).collect();
        run(&mut t, &mut bus, now, &pids, 1);
        let added = rss_bytes().saturating_sub(before);
        let mut rounds = Vec::new();
        for r in 0..3u64 {
            // One simulated second per round: every agent beats once (1 Hz).
            now += 1_000_000_000;
            let start = Instant::now();
            run(&mut t, &mut bus, now, &pids, r + 2);
            rounds.push(start.elapsed().as_nanos() as f64 / f64::from(n));
        }
        // Random beat order: every beat lands on a cold slot and index entry
        // once the table outgrows the CPU caches.
        let mut order = pids.clone();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for i in (1..order.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut shuffled = Vec::new();
        for r in 0..3u64 {
            now += 1_000_000_000;
            let start = Instant::now();
            run(&mut t, &mut bus, now, &order, r + 10);
            shuffled.push(start.elapsed().as_nanos() as f64 / f64::from(n));
        }
        let start = Instant::now();
        let iters = 1000;
        for _ in 0..iters {
            std::hint::black_box(t.expire(now, &mut bus));
        }
        let idle_expire = start.elapsed().as_nanos() as f64 / f64::from(iters);
        let start = Instant::now();
        let stalled = t.expire(now + 10_000_000_000, &mut bus);
        let per_stall = start.elapsed().as_nanos() as f64 / f64::from(stalled.max(1));
        assert_eq!(stalled, n);
        println!(
            "| {n:>9} | {:>13.1} | {:>11.1} | {:>18.1} | {:>21.1} | {idle_expire:>19.1} | {per_stall:>19.1} |",
            added as f64 / 1048576.0,
            added as f64 / f64::from(n),
            median(&mut rounds),
            median(&mut shuffled)
        );
    }
}

fn main() {
    if let Ok(socket) = std::env::var(SENDER_ENV) {
        sender_main(&socket);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // `cargo bench --bench observer -- scale` runs one part; default all.
    let picked: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| ["scale", "detect", "ingest"].contains(&a.as_str()))
        .collect();
    let want = |name: &str| picked.is_empty() || picked.iter().any(|p| p == name);
    if want("scale") {
        bench_scale();
    }
    if want("detect") {
        bench_detect(dir.path());
    }
    if want("ingest") {
        bench_ingest(dir.path());
    }
}
