//! `soak`: our release observer for minutes at over half its measured
//! maximum ingest, with churn, `/metrics` scraped every second and the
//! export file on (issue 13, item 5). Not part of `all` or CI.
//!
//! Load ([`fleet`]): N agents over plaintext UDP on loopback, beating at a
//! fixed rate each, paced by sender threads (`sendmmsg` batches, frames made
//! as they fall due). Every second K agents die — each sends the terminal
//! frame (Critical + nonce `u64::MAX`), so the observer must raise `exit`
//! at once, not a `stall` later — and K fresh pids take their slots. Every
//! S seconds one agent falls silent without a terminal frame: it must stall
//! exactly once. At the end every agent still beating sends its terminal
//! frame, so nothing is left to stall and every counter settles.
//!
//! Watched ([`monitor`]): a scraper GETs `/metrics` every second (latency,
//! failures, the beat/stall/exit counters); the observer's VmRSS, CPU and
//! UDP receive-buffer drops are sampled every second.
//!
//! Checked ([`verify`]), after the counters settled and the observer was
//! stopped (SIGTERM: its export is flushed): RSS growth from the first
//! window after warm-up to the last; every death has exactly one `exit`
//! line; stall lines are exactly the silenced agents (anything else is a
//! false stall); the export's lines, per kind, equal the observer's
//! `varta_events_total{kind}` counters of the kinds the TSV writes (beats
//! are off: `--no-export-beats`; 10 minutes of beat lines would be gigabytes,
//! and the beat counter is checked against the senders instead).

mod fleet;
mod monitor;
mod report;
mod verify;

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::procs::{bench_dir, Binaries, Observer, ObserverSpec, Res, Which};
use crate::scenarios::ingest_udp::ours_udp_addr;
use crate::scenarios::scrape::endpoint::{
    ours_metrics_addr, random_token, request_bytes, write_secret,
};
use crate::{Common, Outcome, SoakArgs};
use fleet::{run_sender, Fleet, SenderReport};
use monitor::{proc_sample, scrape_once, ProcSample, ScrapeSample, Scraper};
use verify::{compare, events_by_kind, match_pids, sample, tally_export};

/// The resolved settings of a run.
#[derive(serde::Serialize, Clone)]
struct Cfg {
    duration_secs: f64,
    agents: usize,
    hz: f64,
    deaths_per_sec: f64,
    silence_every_secs: f64,
    threshold_ms: u64,
    capacity: u32,
    warmup_secs: f64,
    window_secs: f64,
    senders: usize,
    max_ingest: f64,
}

impl Cfg {
    fn from_args(a: &SoakArgs, c: &Common) -> Res<Cfg> {
        let q = c.quick;
        let duration_secs = a.duration_secs.unwrap_or(if q { 30.0 } else { 600.0 });
        let agents = a.soak_agents.unwrap_or(if q { 5_000 } else { 20_000 }) as usize;
        let silence_every_secs = a
            .soak_silence_every_secs
            .unwrap_or(if q { 5.0 } else { 20.0 });
        let warmup_secs = a.soak_warmup_secs.unwrap_or(if q { 10.0 } else { 60.0 });
        let window_secs = a.soak_window_secs.unwrap_or(if q { 5.0 } else { 60.0 });
        let senders = a.soak_senders;
        if senders == 0 || agents < 2 * senders || a.soak_hz <= 0.0 || a.soak_deaths_per_sec < 0.0 {
            return Err("soak needs --soak-senders >= 1, --soak-agents >= 2 per sender, --soak-hz > 0, --soak-deaths-per-sec >= 0".into());
        }
        if silence_every_secs <= 0.0 || warmup_secs + 2.0 * window_secs > duration_secs {
            return Err("soak needs --soak-silence-every-secs > 0 and --duration-secs >= warm-up + 2 windows".into());
        }
        // Room for every live agent, the silenced ones (stalled slots are
        // reclaimed only after exited ones) and 30 s of exited agents: the
        // tracker is full — reclaiming exited slots, `eviction` lines — long
        // before warm-up ends, so its growth is not read as a leak.
        let silences = (duration_secs / silence_every_secs) as usize;
        let capacity = a
            .soak_capacity
            .unwrap_or((agents + silences + (a.soak_deaths_per_sec * 30.0) as usize + 1024) as u32);
        Ok(Cfg {
            duration_secs,
            agents,
            hz: a.soak_hz,
            deaths_per_sec: a.soak_deaths_per_sec,
            silence_every_secs,
            threshold_ms: a.soak_threshold_ms,
            capacity,
            warmup_secs,
            window_secs,
            senders,
            max_ingest: a.soak_max_ingest,
        })
    }
}

/// Everything a run measured, for the report.
struct Run {
    cfg: Cfg,
    started_utc: String,
    senders: Vec<SenderReport>,
    procs: Vec<ProcSample>,
    scrapes: Vec<ScrapeSample>,
    /// The final scrape, after every counter settled.
    final_events: std::collections::BTreeMap<String, u64>,
    lines_dropped: Option<f64>,
    write_errors: Option<f64>,
    /// How long after the load stopped the counters settled, s.
    settle_secs: f64,
    export: verify::ExportTally,
    export_bytes: u64,
    deaths: verify::Matched,
    stalls: verify::Matched,
    rows: Vec<verify::KindRow>,
    clk_tck: f64,
}

pub fn run(a: &SoakArgs, c: &Common, bins: &Binaries) -> Res<Outcome> {
    let cfg = Cfg::from_args(a, c)?;
    if c.reps > 1 {
        eprintln!("varta-bench soak: one run; --reps does not apply");
    }
    println!(
        "## soak: {} agents × {} Hz over plaintext UDP for {} s, {} deaths/s (terminal frame, new pid), one silent agent every {} s, /metrics every second, export on\n",
        cfg.agents, cfg.hz, cfg.duration_secs, cfg.deaths_per_sec, cfg.silence_every_secs
    );
    let r = soak(&cfg, bins)?;
    Ok(report::report(&r))
}

fn soak(cfg: &Cfg, bins: &Binaries) -> Res<Run> {
    let dir = bench_dir()?;
    let token = random_token()?;
    let token_file = dir.path().join("prom.token");
    write_secret(&token_file, &token)?;
    let token_arg = token_file.to_string_lossy().into_owned();
    let extra = [
        "--udp-port",
        "0",
        "--i-accept-plaintext-udp",
        "--udp-bind-addr",
        "127.0.0.1",
        "--no-export-beats",
        "--prom-addr",
        "127.0.0.1:0",
        "--prom-token-file",
        &token_arg,
    ];
    let duration = Duration::from_secs_f64(cfg.duration_secs);
    let mut obs = Observer::start(
        bins,
        &ObserverSpec {
            which: Which::Ours,
            dir: dir.path(),
            threshold_ms: cfg.threshold_ms,
            export: true,
            tracker_capacity: cfg.capacity as usize,
            extra: &extra,
            lifetime: duration + Duration::from_millis(cfg.threshold_ms) + Duration::from_secs(180),
        },
    )?;
    let udp = ours_udp_addr(&obs)?;
    let metrics = ours_metrics_addr(&obs)?;
    let request = request_bytes(&token);
    let export = obs.export.clone().ok_or("no export file")?;
    let clk_tck = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100) as f64;
    let started_utc = crate::machine::Machine::describe().date_utc;

    // Fleets: agents split over the senders, each fleet's pids its own;
    // deaths split too; the silences all in fleet 0.
    let t = cfg.senders;
    let fleets: Vec<Fleet> = (0..t)
        .map(|i| {
            let n = cfg.agents / t + usize::from(i < cfg.agents % t);
            let silence = (i == 0).then(|| Duration::from_secs_f64(cfg.silence_every_secs));
            Fleet::new(
                i as u32,
                t as u32,
                n,
                cfg.hz,
                cfg.deaths_per_sec / t as f64,
                silence,
            )
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut socks = Vec::new();
    for _ in 0..t {
        let s = UdpSocket::bind("127.0.0.1:0")?;
        s.connect(udp)?;
        socks.push(s);
    }
    let start = Instant::now();
    let handles: Vec<_> = fleets
        .into_iter()
        .zip(socks)
        .map(|(f, s)| {
            let (stop, sent) = (stop.clone(), sent.clone());
            std::thread::spawn(move || run_sender(&s, f, start, duration, &stop, &sent))
        })
        .collect();
    let scraper = Scraper::start(metrics, request.clone(), start);
    // A failure below must still stop the senders: they hold no guard.
    let watched = watch(cfg, &mut obs, &scraper, &sent, start, duration, udp.port());
    let procs = match watched {
        Ok(p) => p,
        Err(e) => {
            stop.store(true, Ordering::Relaxed);
            for h in handles {
                let _ = h.join();
            }
            return Err(e);
        }
    };
    let mut senders = Vec::new();
    for h in handles {
        senders.push(h.join().map_err(|_| "a sender thread panicked")?);
    }
    let scrapes = scraper.finish();
    let load_end = Instant::now();

    // Settle: every terminal frame is sent; wait until the observer counted
    // every death and every silenced agent's stall, and at least one
    // threshold (+1 s) past the end, so a lost terminal frame would have
    // become a (false) stall by then.
    let deaths: Vec<u32> = senders
        .iter()
        .flat_map(|s| s.dead.iter().copied())
        .collect();
    let silenced: Vec<u32> = senders
        .iter()
        .flat_map(|s| s.silenced.iter().copied())
        .collect();
    let min_wait = Duration::from_millis(cfg.threshold_ms + 1000);
    let max_wait = min_wait + Duration::from_secs(20);
    let body = loop {
        std::thread::sleep(Duration::from_millis(500));
        obs.check_running("varta-watch (ours)")?;
        let (s, body) = scrape_once(metrics, &request, start.elapsed().as_secs_f64());
        let settled = s.exits.unwrap_or(0) >= deaths.len() as u64
            && s.stalls.unwrap_or(0) >= silenced.len() as u64;
        let waited = load_end.elapsed();
        match body {
            Some(b) if (settled && waited >= min_wait) || waited >= max_wait => break b,
            None if waited >= max_wait => {
                return Err(format!("the final scrape failed: {:?}", s.fail).into())
            }
            _ => {}
        }
    };
    let settle_secs = load_end.elapsed().as_secs_f64();
    let final_events = events_by_kind(&body);
    let lines_dropped = sample(&body, "varta_export_lines_dropped_total");
    let write_errors = sample(&body, "varta_export_write_errors_total");
    obs.check_running("varta-watch (ours)")?;
    obs.stop();
    let tally = tally_export(&export)?;
    let export_bytes = crate::exportfile::file_len(&export);
    let rows = compare(&tally.by_kind, &final_events);
    Ok(Run {
        cfg: cfg.clone(),
        started_utc,
        deaths: match_pids(&deaths, &tally.exit_pids),
        stalls: match_pids(&silenced, &tally.stall_pids),
        senders,
        procs,
        scrapes,
        final_events,
        lines_dropped,
        write_errors,
        settle_secs,
        export: tally,
        export_bytes,
        rows,
        clk_tck,
    })
}

/// Samples the observer every second until `duration` has passed since
/// `start`; a progress line every minute (every 10 s in short runs).
fn watch(
    cfg: &Cfg,
    obs: &mut Observer,
    scraper: &Scraper,
    sent: &AtomicU64,
    start: Instant,
    duration: Duration,
    udp_port: u16,
) -> Res<Vec<ProcSample>> {
    let pid = obs.pid();
    let mut procs = Vec::new();
    let every = if cfg.duration_secs >= 300.0 { 60 } else { 10 };
    if let Some(p) = proc_sample(pid, udp_port, 0.0) {
        procs.push(p);
    }
    let mut k = 1u64;
    loop {
        let due = Duration::from_secs(k);
        if due > duration {
            return Ok(procs);
        }
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        obs.check_running("varta-watch (ours)")?;
        let t = start.elapsed().as_secs_f64();
        let p = proc_sample(pid, udp_port, t).ok_or("cannot read the observer's /proc files")?;
        procs.push(p);
        if k % every == 0 {
            let s = scraper.last();
            eprintln!(
                "  {k:>4} s: RSS {:.1} MiB, sent {}, drops {}, last scrape {}: beats {}, exits {}, stalls {}",
                p.rss_kib as f64 / 1024.0,
                sent.load(Ordering::Relaxed),
                p.udp_drops,
                s.as_ref()
                    .map_or("none".to_string(), |s| s.latency_ms.map_or_else(
                        || format!("FAILED ({})", s.fail.clone().unwrap_or_default()),
                        |l| format!("{l:.1} ms")
                    )),
                s.as_ref().and_then(|s| s.beats).unwrap_or(0),
                s.as_ref().and_then(|s| s.exits).unwrap_or(0),
                s.as_ref().and_then(|s| s.stalls).unwrap_or(0),
            );
        }
        k += 1;
    }
}
