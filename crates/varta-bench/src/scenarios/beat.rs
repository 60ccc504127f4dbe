//! `beat`: ns per call of our client's `beat()`, a raw `send(2)` of the same
//! 32 bytes on the same kind of socket (the floor), and the original
//! client's `beat()`, in one process with a draining reader thread.
//!
//! The receiving socket has SO_PASSCRED like an observer's (the kernel then
//! attaches credentials on every send, a cost all three pay). Variants are
//! interleaved in rounds so machine noise hits all alike; only delivered
//! sends are timed, because a dropped send (EAGAIN) returns sooner.
//!
//! The reader spins on a non-blocking socket instead of sleeping in
//! recvmsg: a send that has to wake a sleeping reader pays for the wake-up
//! (an IPI, about 10 µs on this VM, and bimodal), a cost of the receiver
//! that is the same for all three variants and would bury the differences
//! between them.

use std::hint::black_box;
use std::io::IoSliceMut;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use nix::sys::socket::{recvmsg, setsockopt, sockopt, MsgFlags};
use serde_json::json;
use varta_client::{BeatOutcome, Status, Varta};
use varta_vlp::Frame;

use super::Table;
use crate::procs::{bench_dir, Res};
use crate::stats::{percentile, Cmp, Goal, Summary};
use crate::{BeatArgs, Common, Outcome};

struct Samples {
    ns: Vec<f64>,
    dropped: u64,
    calls: u64,
}

impl Samples {
    fn new(cap: usize) -> Samples {
        Samples {
            ns: Vec::with_capacity(cap),
            dropped: 0,
            calls: 0,
        }
    }

    #[inline]
    fn time(&mut self, op: impl FnOnce() -> bool) {
        let t = Instant::now();
        let delivered = op();
        let d = t.elapsed();
        self.calls += 1;
        if delivered {
            self.ns.push(d.as_nanos() as f64);
        } else {
            self.dropped += 1;
        }
    }

    /// (p50, p99, drop share %)
    fn stats(mut self) -> (f64, f64, f64) {
        self.ns.sort_by(f64::total_cmp);
        (
            percentile(&self.ns, 0.5),
            percentile(&self.ns, 0.99),
            100.0 * self.dropped as f64 / self.calls.max(1) as f64,
        )
    }
}

/// Reads and discards datagrams (with credentials, like an observer) until
/// stopped, spinning rather than sleeping (see the module comment).
struct Reader {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Reader {
    fn start(sock: UnixDatagram) -> Res<Reader> {
        sock.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut cmsg = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
            let mut buf = [0u8; 64];
            while !s.load(Ordering::Relaxed) {
                let mut iov = [IoSliceMut::new(&mut buf)];
                if recvmsg::<()>(
                    sock.as_raw_fd(),
                    &mut iov,
                    Some(&mut cmsg),
                    MsgFlags::empty(),
                )
                .is_err()
                {
                    std::hint::spin_loop();
                }
            }
        });
        Ok(Reader {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

type Rep = [(f64, f64, f64); 3];

fn one_rep(rounds: usize, calls: usize) -> Res<Rep> {
    let dir = bench_dir()?;
    let path = dir.path().join("beat.sock");
    let rx = UnixDatagram::bind(&path)?;
    setsockopt(&rx, sockopt::PassCred, &true)?;
    let _reader = Reader::start(rx)?;

    let mut ours = Varta::connect(&path)?;
    let mut upstream = upstream_client::Varta::connect(&path)?;
    let raw = UnixDatagram::unbound()?;
    raw.connect(&path)?;
    // Non-blocking like both clients: a full queue is EAGAIN, not a wait.
    raw.set_nonblocking(true)?;
    let frame = Frame::new(Status::Ok, std::process::id(), 1, 1, 0).to_bytes();

    let cap = rounds * calls;
    let (mut s_raw, mut s_ours, mut s_up) =
        (Samples::new(cap), Samples::new(cap), Samples::new(cap));
    for _ in 0..rounds {
        for _ in 0..calls {
            s_raw.time(|| raw.send(black_box(&frame)).is_ok());
        }
        for i in 0..calls {
            s_ours.time(|| ours.beat(Status::Ok, black_box(i as u32)) == BeatOutcome::Sent);
        }
        for i in 0..calls {
            s_up.time(|| {
                matches!(
                    upstream.beat(upstream_client::Status::Ok, black_box(i as u32)),
                    upstream_client::BeatOutcome::Sent
                )
            });
        }
    }
    Ok([s_raw.stats(), s_ours.stats(), s_up.stats()])
}

pub fn run(a: &BeatArgs, c: &Common) -> Res<Outcome> {
    let calls = a.calls.unwrap_or(if c.quick { 1000 } else { 10_000 });
    let rounds = a.rounds.unwrap_or(if c.quick { 4 } else { 20 });
    if calls == 0 || rounds == 0 {
        return Err("beat needs --calls >= 1 and --rounds >= 1".into());
    }
    println!(
        "## beat: client beat() on a connected UDS with a draining reader, {} calls per variant per rep, {} reps",
        calls * rounds,
        c.reps
    );
    let mut reps: Vec<Rep> = Vec::new();
    for rep in 0..c.reps {
        let r = one_rep(rounds, calls)?;
        eprintln!(
            "  rep {}: p50 raw {:.0} ns, ours {:.0} ns, original {:.0} ns",
            rep + 1,
            r[0].0,
            r[1].0,
            r[2].0
        );
        reps.push(r);
    }
    let col = |v: usize, f: fn(&(f64, f64, f64)) -> f64| {
        Summary::of(&reps.iter().map(|r| f(&r[v])).collect::<Vec<_>>())
    };
    let ratio = |num: usize, den: usize, f: fn(&(f64, f64, f64)) -> f64| {
        Summary::of(
            &reps
                .iter()
                .map(|r| f(&r[num]) / f(&r[den]))
                .collect::<Vec<_>>(),
        )
    };
    let names = [
        "raw send(2)",
        "varta-client (ours)",
        "varta-client 0.2.0 (original)",
    ];
    let mut t = Table::new(&["variant", "p50 ns", "p99 ns", "dropped %", "p50 vs raw"]);
    let mut js = Vec::new();
    for (v, name) in names.iter().enumerate() {
        let (p50, p99, drop) = (col(v, |x| x.0), col(v, |x| x.1), col(v, |x| x.2));
        t.row(vec![
            (*name).into(),
            p50.cell(0),
            p99.cell(0),
            drop.cell(1),
            ratio(v, 0, |x| x.0).cell(3),
        ]);
        js.push(json!({ "name": name, "p50_ns": p50, "p99_ns": p99, "dropped_percent": drop }));
    }
    println!();
    t.print();
    let (or50, or99) = (ratio(1, 0, |x| x.0), ratio(1, 0, |x| x.1));
    let (ou50, ou99) = (ratio(1, 2, |x| x.0), ratio(1, 2, |x| x.1));
    println!(
        "\nours / raw send: p50 {}  p99 {}\nours / original: p50 {}  p99 {}",
        or50.cell(3),
        or99.cell(3),
        ou50.cell(3),
        ou99.cell(3)
    );
    println!(
        "(timings of delivered sends only; median (min–max) of {} reps; ratios per rep)",
        c.reps
    );
    let goals = vec![
        Goal::new(
            "beat ours p50 <= 1.10x raw send",
            or50.median,
            Cmp::AtMost,
            1.10,
            "x",
        ),
        Goal::new(
            "beat ours p50 <= original",
            ou50.median,
            Cmp::AtMost,
            1.0,
            "x",
        ),
    ];
    Ok(Outcome {
        scenario: "beat",
        results: json!({
            "calls_per_variant_per_rep": calls * rounds,
            "variants": js,
            "ours_over_raw": { "p50": or50, "p99": or99 },
            "ours_over_original": { "p50": ou50, "p99": ou99 },
        }),
        goals,
    })
}
