//! `ingest-uds`: accepted frames/s with N sender processes beating flat
//! out, for our observer, the original, and a raw `recvmsg` drain (the
//! physical limit of this socket type on this machine).
//!
//! Both observers are counted the same way, from outside: the `beat` lines
//! their export file gained during the window. The raw drain counts the
//! datagrams it received in the same window.

use std::io::IoSliceMut;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
use serde_json::json;

use super::{rotated, Table};
use crate::exportfile::{beat_lines_between, file_len};
use crate::procs::{
    bench_dir, spawn_senders, Binaries, Observer, ObserverSpec, Res, SenderSpec, Which,
    TRACKER_CAPACITY,
};
use crate::stats::{Cmp, Goal, Summary};
use crate::{Common, IngestArgs, Outcome};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rx {
    Raw,
    Ours,
    Original,
}

/// Lets every sender reach its steady state before the window opens.
const SETTLE: Duration = Duration::from_millis(250);

pub fn run(a: &IngestArgs, c: &Common, bins: &Binaries) -> Res<Outcome> {
    let senders = a.senders.unwrap_or(if c.quick { 8 } else { 64 });
    let secs = a.secs.unwrap_or(if c.quick { 1.0 } else { 3.0 });
    if senders == 0 || !(0.1..=3600.0).contains(&secs) {
        return Err("ingest-uds needs --senders >= 1 and --secs in 0.1..=3600".into());
    }
    println!(
        "## ingest-uds: {senders} sender processes beating flat out, {secs} s window, {} reps",
        c.reps
    );
    let (mut raw, mut ours, mut orig) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..c.reps as usize {
        for rx in rotated(&[Rx::Raw, Rx::Ours, Rx::Original], rep) {
            let rate = measure(rx, senders, secs, bins)?;
            eprintln!("  rep {}: {rx:?} {rate:.0} frames/s", rep + 1);
            match rx {
                Rx::Raw => raw.push(rate),
                Rx::Ours => ours.push(rate),
                Rx::Original => orig.push(rate),
            }
        }
    }
    // Ratios per repetition (same minute, same machine state), then summarised.
    let over_raw: Vec<f64> = ours.iter().zip(&raw).map(|(o, r)| o / r).collect();
    let over_orig: Vec<f64> = ours.iter().zip(&orig).map(|(o, u)| o / u).collect();
    let (s_raw, s_ours, s_orig) = (Summary::of(&raw), Summary::of(&ours), Summary::of(&orig));
    let (s_over_raw, s_over_orig) = (Summary::of(&over_raw), Summary::of(&over_orig));

    let mut t = Table::new(&["receiver", "accepted frames/s", "share of raw drain"]);
    t.row(vec![
        "raw recvmsg drain (SO_PASSCRED)".into(),
        s_raw.cell(0),
        "1.00".into(),
    ]);
    t.row(vec![
        Which::Ours.label().into(),
        s_ours.cell(0),
        s_over_raw.cell(2),
    ]);
    let orig_over_raw: Vec<f64> = orig.iter().zip(&raw).map(|(o, r)| o / r).collect();
    t.row(vec![
        Which::Original.label().into(),
        s_orig.cell(0),
        Summary::of(&orig_over_raw).cell(3),
    ]);
    println!();
    t.print();
    println!(
        "\nours / raw drain: {}   ours / original: {}",
        s_over_raw.cell(2),
        s_over_orig.cell(1)
    );
    println!(
        "(median (min–max) of {} reps; ratios are per repetition)",
        c.reps
    );

    let goals = vec![
        Goal::new(
            "ingest-uds ours >= 80% of raw drain",
            s_over_raw.median,
            Cmp::AtLeast,
            0.80,
            "x",
        ),
        Goal::new(
            "ingest-uds ours >= 10x original",
            s_over_orig.median,
            Cmp::AtLeast,
            10.0,
            "x",
        ),
    ];
    Ok(Outcome {
        scenario: "ingest-uds",
        results: json!({
            "senders": senders,
            "window_secs": secs,
            "frames_per_sec": { "raw_drain": s_raw, "ours": s_ours, "original": s_orig },
            "ours_over_raw": s_over_raw,
            "ours_over_original": s_over_orig,
            "per_rep": { "raw_drain": raw, "ours": ours, "original": orig },
        }),
        goals,
    })
}

fn measure(rx: Rx, senders: usize, secs: f64, bins: &Binaries) -> Res<f64> {
    let dir = bench_dir()?;
    let window = Duration::from_secs_f64(secs);
    // Senders outlive the window by far; they are killed right after it.
    let lifetime = window + Duration::from_secs(60);
    match rx {
        Rx::Raw => {
            let path = dir.path().join("raw.sock");
            let drain = Drain::start(&path)?;
            let kids = spawn_senders(
                senders,
                &SenderSpec {
                    sockets: &[&path],
                    interval_ms: None,
                    report: false,
                    lifetime,
                },
            )?;
            std::thread::sleep(SETTLE);
            let (n0, t0) = (drain.count.load(Ordering::Relaxed), Instant::now());
            std::thread::sleep(window);
            let (n1, t1) = (drain.count.load(Ordering::Relaxed), Instant::now());
            drop(kids);
            Ok((n1 - n0) as f64 / (t1 - t0).as_secs_f64())
        }
        Rx::Ours | Rx::Original => {
            let which = if rx == Rx::Ours {
                Which::Ours
            } else {
                Which::Original
            };
            let obs = Observer::start(
                bins,
                &ObserverSpec {
                    which,
                    dir: dir.path(),
                    // Far beyond the run: no stall work, pure ingest.
                    threshold_ms: 60_000,
                    export: true,
                    tracker_capacity: TRACKER_CAPACITY,
                    extra: &[],
                    lifetime: lifetime + Duration::from_secs(30),
                },
            )?;
            let export = obs.export.clone().ok_or("observer has no export file")?;
            let kids = spawn_senders(
                senders,
                &SenderSpec {
                    sockets: &[&obs.socket],
                    interval_ms: None,
                    report: false,
                    lifetime,
                },
            )?;
            std::thread::sleep(SETTLE);
            let (b0, t0) = (file_len(&export), Instant::now());
            std::thread::sleep(window);
            let (b1, t1) = (file_len(&export), Instant::now());
            drop(kids);
            obs.stop();
            let lines = beat_lines_between(&export, b0, b1)?;
            Ok(lines as f64 / (t1 - t0).as_secs_f64())
        }
    }
}

/// The raw drain: a minimal `recvmsg` loop with SO_PASSCRED (so the kernel
/// attaches credentials exactly as for the observers), on its own thread.
struct Drain {
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Drain {
    fn start(path: &Path) -> Res<Drain> {
        let sock = UnixDatagram::bind(path)?;
        setsockopt(&sock, sockopt::PassCred, &true)?;
        // Same receive buffer as our observer's default (4 MiB); with
        // max_dgram_qlen = 10 the queue length limits first anyway.
        let _ = setsockopt(&sock, sockopt::RcvBuf, &(4 << 20));
        // The timeout only lets the loop notice `stop`.
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (count.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            let mut cmsg = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
            let mut buf = [0u8; 64];
            while !s.load(Ordering::Relaxed) {
                let mut iov = [IoSliceMut::new(&mut buf)];
                let got = recvmsg::<()>(
                    sock.as_raw_fd(),
                    &mut iov,
                    Some(&mut cmsg),
                    MsgFlags::empty(),
                );
                if let Ok(msg) = got {
                    // Read the credentials as an observer must.
                    let pid = msg.cmsgs().ok().and_then(|mut it| {
                        it.find_map(|m| match m {
                            ControlMessageOwned::ScmCredentials(cr) => Some(cr.pid()),
                            _ => None,
                        })
                    });
                    std::hint::black_box(pid);
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Ok(Drain {
            count,
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
