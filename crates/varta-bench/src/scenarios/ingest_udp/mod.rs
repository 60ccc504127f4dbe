//! `ingest-udp`: accepted frames/s over loopback UDP with 100 k distinct
//! pids, plaintext and secure (shared key, master key), for our observer,
//! the original and a raw `recvmmsg` drain; and the AEAD cost per frame
//! with 1, 4 and 16 accepted keys.
//!
//! Sender threads in this process send datagrams built before the clock
//! starts (`udpload`), flat out with `sendmmsg`, all pinned to the last CPU
//! so the receiver has a core of its own. Both observers are counted as in
//! `ingest-uds`: the `beat` lines their export file gained in the window.
//! What they took off the socket is sent − dropped by the kernel (the
//! socket's `drops` in /proc/net/udp); their own refusal counters are
//! scraped from /metrics once the senders have stopped. CPU = utime+stime
//! of the receiver over the window.

mod report;

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::rotated;
use super::scrape::endpoint::{
    free_port, ours_metrics_addr, random_token, request_bytes, scrape, wait_listening, write_secret,
};
use crate::exportfile::{beat_lines_between, file_len};
use crate::procs::{bench_dir, Binaries, Observer, ObserverSpec, Res, Which, TRACKER_CAPACITY};
use crate::stats::num;
use crate::udpload::{
    aead_micro, build, calibrate, counters, key_hex, random_key, stat_ticks, udp_stat, CpuSplit,
    Drain, Material, Mode, Senders, Stream,
};
use crate::{Common, IngestUdpArgs, Outcome};

/// The receivers compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Rx {
    Raw,
    Ours,
    Original,
}

impl Rx {
    fn label(self) -> &'static str {
        match self {
            Rx::Raw => "raw recvmmsg drain",
            Rx::Ours => Which::Ours.label(),
            Rx::Original => Which::Original.label(),
        }
    }
}

/// One configuration: layout, and for the shared key how many keys the
/// observer holds (the senders' key is the last of them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
struct Case {
    mode: Mode,
    keys: usize,
}

/// The original's tracker holds at most 4,096 pids (`MAX_CAPACITY` in
/// 0.2.0's tracker.rs; `--tracker-capacity` is clamped to it).
const ORIGINAL_MAX_TRACKED: usize = 4096;

/// Refusal counters read from either observer's /metrics.
const REFUSALS: &[&str] = &[
    "varta_frame_decrypt_failures_total",
    "varta_frame_auth_failures_total",
    "varta_sender_state_full_total",
    "varta_rate_limited_total",
    "varta_rejected_total",
    "varta_frame_rejected_pid_above_max_total",
    "varta_tracker_capacity_exceeded_total",
    "varta_decode_errors_total",
    "varta_truncated_datagrams_total",
];

/// AEAD opens tried, over all keys (both observers try every key).
const AEAD_ATTEMPTS: &str = "varta_secure_aead_attempts_total";

/// Streams are sized for this multiple of the calibrated send rate (the
/// senders run faster into a full socket, and this VM's speed drifts).
const HEADROOM: f64 = 3.0;

/// Calls per variant of the in-process AEAD micro-benchmark.
const MICRO_CALLS: usize = 100_000;

/// One measurement: rates over the window, counts over the whole run.
#[derive(Clone, Debug, Default, Serialize)]
struct Run {
    window_secs: f64,
    /// A sender ran out of datagrams before the window's end, which then
    /// came early (the stream was sized too small).
    cut_short: bool,
    accepted_per_sec: f64,
    /// Taken off the socket: sent − dropped by the kernel.
    read_per_sec: f64,
    sent_per_sec: f64,
    /// Share of the window's datagrams the kernel dropped (socket full):
    /// above 0 the receiver, not the senders, set the pace.
    kernel_drop_share: f64,
    /// Receiver CPU (utime+stime) per second: 1.0 = one core.
    cpu_cores: f64,
    cpu_ns_per_accepted: f64,
    cpu_ns_per_read: f64,
    sent: u64,
    kernel_dropped: u64,
    read: u64,
    accepted: u64,
    send_errors: u64,
    /// Nonzero refusal counters from /metrics (observers only).
    refused: BTreeMap<String, f64>,
    aead_attempts: Option<f64>,
}

/// The fixed settings of one scenario run.
struct Cfg<'a> {
    bins: &'a Binaries,
    pids: usize,
    senders: usize,
    settle: Duration,
    window: Duration,
    cpu: Option<usize>,
    ns_per_tick: f64,
    /// Datagrams/s of the senders alone (calibration).
    send_rate: f64,
    original_read_timeout_ms: u64,
}

/// Runs per (index into the case list, receiver), one per repetition.
type Results = BTreeMap<(usize, Rx), Vec<Run>>;

pub fn run(a: &IngestUdpArgs, c: &Common, bins: &Binaries) -> Res<Outcome> {
    let pids = a.udp_pids.unwrap_or(if c.quick { 20_000 } else { 100_000 });
    let secs = a.udp_secs.unwrap_or(if c.quick { 1.0 } else { 3.0 });
    let senders = a.udp_senders;
    let mut keys = a.udp_keys.clone();
    keys.push(1);
    keys.sort_unstable();
    keys.dedup();
    if !(2..=1_000_000_000).contains(&pids) || senders == 0 || senders > pids {
        return Err(
            "ingest-udp needs --udp-pids in 2..=10^9 and 1 <= --udp-senders <= pids".into(),
        );
    }
    if !(0.1..=3600.0).contains(&secs) || keys.iter().any(|&k| k == 0 || k > 64) {
        return Err("ingest-udp needs --udp-secs in 0.1..=3600 and --udp-keys in 1..=64".into());
    }
    let mut rxs = a.udp_receivers.clone();
    rxs.sort_unstable();
    rxs.dedup();
    if rxs.is_empty() {
        return Err("ingest-udp: --udp-receivers is empty".into());
    }
    // Senders on one CPU, receivers (and this thread) on the others.
    let split = CpuSplit::new()?;
    let cpu = split.as_ref().map(|s| s.sender);
    println!(
        "## ingest-udp: {pids} pids, {senders} sendmmsg sender threads{}, {secs} s window, {} reps",
        cpu.map_or_else(String::new, |c| format!(
            " pinned to CPU {c} (receivers on the other CPUs)"
        )),
        c.reps
    );
    // In-process AEAD timings, once per repetition (this VM's speed drifts).
    let mut micro = Vec::new();
    let material = Material::new(pids, true)?;
    let send_rate = calibrate(&material, senders, cpu)?;
    let cfg = Cfg {
        bins,
        pids,
        senders,
        settle: Duration::from_millis(if c.quick { 500 } else { 1000 }),
        window: Duration::from_secs_f64(secs),
        cpu,
        ns_per_tick: 1e9 / clock_ticks()?,
        send_rate,
        original_read_timeout_ms: a.udp_original_read_timeout_ms,
    };
    let span = (cfg.settle + cfg.window).as_secs_f64();
    let per_sender = (send_rate * span * HEADROOM / senders as f64).ceil() as usize;
    eprintln!(
        "  senders alone: {} datagrams/s; {per_sender} datagrams pre-built per sender and layout",
        num(send_rate, 0)
    );

    let mut cases = vec![Case {
        mode: Mode::Plaintext,
        keys: 0,
    }];
    cases.extend(keys.iter().map(|&k| Case {
        mode: Mode::Shared,
        keys: k,
    }));
    cases.push(Case {
        mode: Mode::Master,
        keys: 1,
    });
    let mut results: Results = BTreeMap::new();
    for mode in [Mode::Plaintext, Mode::Shared, Mode::Master] {
        let t = Instant::now();
        let streams = Arc::new(build(mode, &material, senders, per_sender)?);
        let mib = streams.iter().map(|s| s.bytes.len()).sum::<usize>() as f64 / (1 << 20) as f64;
        eprintln!(
            "  {}: built {mib:.0} MiB of datagrams in {:.1} s",
            mode.label(),
            t.elapsed().as_secs_f64()
        );
        for rep in 0..c.reps as usize {
            if mode == Mode::Shared {
                micro.push(aead_micro(MICRO_CALLS)?);
            }
            for (ci, case) in cases.iter().enumerate().filter(|(_, k)| k.mode == mode) {
                // The raw drain does no AEAD: once per layout is enough.
                let here: Vec<Rx> = rotated(&rxs, rep)
                    .into_iter()
                    .filter(|&r| r != Rx::Raw || case.keys <= 1)
                    .collect();
                for rx in here {
                    let r = measure(rx, *case, &streams, &material, &cfg)?;
                    eprintln!(
                        "  rep {}: {} {}: accepted {}/s, read {}/s, CPU {} ns/accepted{}",
                        rep + 1,
                        case_label(*case),
                        rx.label(),
                        num(r.accepted_per_sec, 0),
                        num(r.read_per_sec, 0),
                        num(r.cpu_ns_per_accepted, 0),
                        if r.cut_short {
                            " (window cut short)"
                        } else {
                            ""
                        }
                    );
                    results.entry((ci, rx)).or_default().push(r);
                }
            }
        }
    }
    report::report(&cases, &rxs, &results, &micro, &cfg, c.reps)
}

/// Clock ticks per second (the unit of utime and stime).
fn clock_ticks() -> Res<f64> {
    let t = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.ok_or("no CLK_TCK")?;
    Ok(t as f64)
}

/// Sleeps `d`, or less once a sender has run out of datagrams.
fn pause(senders: &Senders, d: Duration) {
    let until = Instant::now() + d;
    while !senders.exhausted() {
        let Some(left) = until.checked_duration_since(Instant::now()) else {
            return;
        };
        std::thread::sleep(left.min(Duration::from_millis(5)));
    }
}

/// What the harness reads at a window edge.
struct Edge {
    t: Instant,
    sent: u64,
    drops: u64,
    /// Raw drain: datagrams counted; observer: export file length.
    mark: u64,
    /// Receiver CPU (utime+stime), clock ticks.
    ticks: u64,
}

/// The receiver being measured.
enum Target<'a> {
    Raw(&'a Drain),
    Observer { pid: u32, export: &'a Path },
}

impl Target<'_> {
    fn edge(&self, senders: &Senders, port: u16) -> Res<Edge> {
        let drops = udp_stat(port)?
            .ok_or("the receiver's UDP socket is gone")?
            .drops;
        let (mark, ticks) = match self {
            Target::Raw(d) => (d.count(), d.cpu_ticks()?),
            Target::Observer { pid, export } => {
                (file_len(export), stat_ticks(&format!("/proc/{pid}/stat"))?)
            }
        };
        Ok(Edge {
            t: Instant::now(),
            sent: senders.sent(),
            drops,
            mark,
            ticks,
        })
    }
}

/// Settle, then the window; returns the window's rates.
fn window(target: &Target, senders: &Senders, port: u16, cfg: &Cfg) -> Res<Run> {
    pause(senders, cfg.settle);
    let e0 = target.edge(senders, port)?;
    pause(senders, cfg.window);
    let e1 = target.edge(senders, port)?;
    let dt = (e1.t - e0.t).as_secs_f64();
    let accepted = match target {
        Target::Raw(_) => e1.mark - e0.mark,
        Target::Observer { export, .. } => beat_lines_between(export, e0.mark, e1.mark)?,
    };
    let read = (e1.sent - e0.sent).saturating_sub(e1.drops - e0.drops);
    let cpu_ns = (e1.ticks - e0.ticks) as f64 * cfg.ns_per_tick;
    let per = |n: u64| if n == 0 { f64::NAN } else { cpu_ns / n as f64 };
    Ok(Run {
        window_secs: dt,
        cut_short: senders.exhausted(),
        accepted_per_sec: accepted as f64 / dt,
        read_per_sec: read as f64 / dt,
        sent_per_sec: (e1.sent - e0.sent) as f64 / dt,
        kernel_drop_share: (e1.drops - e0.drops) as f64 / (e1.sent - e0.sent).max(1) as f64,
        cpu_cores: cpu_ns / 1e9 / dt,
        cpu_ns_per_accepted: per(accepted),
        cpu_ns_per_read: per(read),
        ..Run::default()
    })
}

/// Waits (up to 5 s) until the receiver has emptied its socket.
fn wait_drained(port: u16) -> Res<()> {
    let until = Instant::now() + Duration::from_secs(5);
    while udp_stat(port)?.is_some_and(|s| s.rx_queue > 0) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn measure(rx: Rx, case: Case, streams: &Arc<Vec<Stream>>, m: &Material, cfg: &Cfg) -> Res<Run> {
    let which = match rx {
        Rx::Raw => return measure_raw(case, streams, cfg),
        Rx::Ours => Which::Ours,
        Rx::Original => Which::Original,
    };
    let dir = bench_dir()?;
    let (mut obs, udp, metrics, token) = start_observer(which, case, m, cfg, dir.path())?;
    let export = obs.export.clone().ok_or("observer has no export file")?;
    let senders = Senders::start(streams, udp, cfg.cpu, false)?;
    let target = Target::Observer {
        pid: obs.pid(),
        export: &export,
    };
    let mut run = window(&target, &senders, udp.port(), cfg)?;
    let (sent, send_errors) = senders.stop()?;
    obs.check_running(which.label())?;
    wait_drained(udp.port())?;
    let mut buf = Vec::new();
    let body = match scrape(metrics, &request_bytes(&token), &mut buf) {
        Ok((_, range)) => String::from_utf8_lossy(&buf[range]).into_owned(),
        Err(e) => return Err(format!("{}: /metrics scrape failed ({e:?})", which.label()).into()),
    };
    let drops = udp_stat(udp.port())?.map_or(0, |s| s.drops);
    obs.check_running(which.label())?;
    // A clean stop flushes the export file (the original buffers it).
    obs.stop();
    run.accepted = beat_lines_between(&export, 0, file_len(&export))?;
    run.sent = sent;
    run.send_errors = send_errors;
    run.kernel_dropped = drops;
    run.read = sent.saturating_sub(drops);
    run.refused = counters(&body, REFUSALS);
    let attempts = counters(&body, &[AEAD_ATTEMPTS]).values().sum::<f64>();
    run.aead_attempts = (case.mode != Mode::Plaintext).then_some(attempts);
    Ok(run)
}

fn measure_raw(case: Case, streams: &Arc<Vec<Stream>>, cfg: &Cfg) -> Res<Run> {
    let drain = Drain::start(case.mode.len())?;
    let port = drain.addr.port();
    let senders = Senders::start(streams, drain.addr, cfg.cpu, false)?;
    let mut run = window(&Target::Raw(&drain), &senders, port, cfg)?;
    let (sent, send_errors) = senders.stop()?;
    wait_drained(port)?;
    let drops = udp_stat(port)?.map_or(0, |s| s.drops);
    run.accepted = drain.count();
    run.sent = sent;
    run.send_errors = send_errors;
    run.kernel_dropped = drops;
    run.read = sent.saturating_sub(drops);
    Ok(run)
}

/// Starts one observer with its UDP listener for `case`; returns it with
/// its UDP and /metrics addresses and the bearer token.
fn start_observer(
    which: Which,
    case: Case,
    m: &Material,
    cfg: &Cfg,
    dir: &Path,
) -> Res<(Observer, SocketAddr, SocketAddr, String)> {
    let token = random_token()?;
    let token_file = dir.join("prom.token");
    write_secret(&token_file, &token)?;
    // Ours binds port 0 and prints what it got; the original gets ports
    // that were free a moment ago (it does not print what it bound).
    let (udp_port, prom) = match which {
        Which::Ours => (0, "127.0.0.1:0".to_string()),
        Which::Original => (free_udp_port()?, format!("127.0.0.1:{}", free_port()?)),
    };
    let mut extra: Vec<String> = [
        "--udp-port",
        &udp_port.to_string(),
        "--udp-bind-addr",
        "127.0.0.1",
        "--prom-addr",
        &prom,
        "--prom-token-file",
        &path_arg(&token_file),
        "--prom-rate-limit-burst",
        "0",
    ]
    .map(String::from)
    .to_vec();
    extra.extend(key_flags(case, m, dir)?);
    let tracker_capacity = match which {
        Which::Ours => {
            // Room for every pid in the tracker and the replay table, and
            // no per-pid /metrics series (100 k of them would only slow
            // the one scrape).
            extra.extend(
                [
                    "--udp-sender-capacity",
                    &cfg.pids.to_string(),
                    "--per-agent-metrics-limit",
                    "0",
                ]
                .map(String::from),
            );
            cfg.pids.max(TRACKER_CAPACITY)
        }
        Which::Original => {
            // Its loop blocks this long in the idle Unix socket's recv
            // before each UDP read (see `IngestUdpArgs`). It buffers its
            // export in a BufWriter flushed when full: at the few hundred
            // beats/s it reaches here, a window would see none of them
            // without a flush per record (on tmpfs, next to free).
            extra.extend(
                [
                    "--read-timeout-ms",
                    &cfg.original_read_timeout_ms.to_string(),
                    "--export-file-sync-every",
                    "1",
                ]
                .map(String::from),
            );
            ORIGINAL_MAX_TRACKED
        }
    };
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let mut obs = Observer::start(
        cfg.bins,
        &ObserverSpec {
            which,
            dir,
            // Far beyond the run: no stall work, pure ingest.
            threshold_ms: 60_000,
            export: true,
            tracker_capacity,
            extra: &extra,
            lifetime: cfg.settle + cfg.window + Duration::from_secs(90),
        },
    )?;
    let (udp, metrics) = match which {
        Which::Ours => (ours_udp_addr(&obs)?, ours_metrics_addr(&obs)?),
        Which::Original => (
            SocketAddr::from(([127, 0, 0, 1], udp_port)),
            wait_listening(prom.parse()?, &obs)?,
        ),
    };
    wait_udp_bound(udp.port(), &mut obs, which)?;
    Ok((obs, udp, metrics, token))
}

/// The observer flags of `case`'s layout and keys. Shared key with k keys:
/// `--key-file` holds the first, `--accepted-key-file` the other k − 1,
/// the senders' key last, so even an observer that stopped at the first
/// key that opens would try all k.
fn key_flags(case: Case, m: &Material, dir: &Path) -> Res<Vec<String>> {
    let file = |name: &str, keys: &[String]| -> Res<String> {
        let p = dir.join(name);
        write_secret(&p, &keys.join("\n"))?;
        Ok(path_arg(&p))
    };
    Ok(match case.mode {
        Mode::Plaintext => vec!["--i-accept-plaintext-udp".into()],
        Mode::Master => vec![
            "--master-key-file".into(),
            file("master.key", &[key_hex(&m.master)])?,
        ],
        Mode::Shared => {
            let mut keys = Vec::with_capacity(case.keys);
            for _ in 1..case.keys {
                keys.push(key_hex(&random_key()?));
            }
            keys.push(key_hex(&m.shared));
            let mut flags = vec!["--key-file".into(), file("primary.key", &keys[..1])?];
            if keys.len() > 1 {
                flags.push("--accepted-key-file".into());
                flags.push(file("accepted.keys", &keys[1..])?);
            }
            flags
        }
    })
}

fn path_arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn free_udp_port() -> Res<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Ours prints `udp: IP:PORT` on stdout (its log file here) once bound.
pub(crate) fn ours_udp_addr(obs: &Observer) -> Res<SocketAddr> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(obs.log_path()).unwrap_or_default();
        if let Some(a) = parse_udp_line(&text) {
            return Ok(a);
        }
        if Instant::now() > until {
            return Err(format!(
                "our observer printed no `udp: IP:PORT` line within 10 s: {}",
                obs.log_tail()
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn parse_udp_line(log: &str) -> Option<SocketAddr> {
    log.lines().find_map(|l| {
        l.trim()
            .strip_prefix("udp: ")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// Waits until a socket bound to 127.0.0.1:`port` shows in /proc/net/udp.
fn wait_udp_bound(port: u16, obs: &mut Observer, which: Which) -> Res<()> {
    let until = Instant::now() + Duration::from_secs(10);
    while udp_stat(port)?.is_none() {
        obs.check_running(which.label())?;
        if Instant::now() > until {
            return Err(format!(
                "{} has no UDP socket on 127.0.0.1:{port} after 10 s: {}",
                which.label(),
                obs.log_tail()
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn case_label(c: Case) -> String {
    match c.mode {
        Mode::Shared => format!(
            "{}, {} key{}",
            c.mode.label(),
            c.keys,
            if c.keys == 1 { "" } else { "s" }
        ),
        _ => c.mode.label().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_ours_udp_line() {
        let log = "warning: x\nudp: 127.0.0.1:40123\nmetrics: http://127.0.0.1:9/metrics\n";
        assert_eq!(
            parse_udp_line(log),
            Some("127.0.0.1:40123".parse().unwrap())
        );
        assert_eq!(parse_udp_line("udp: nonsense\n"), None);
    }

    #[test]
    fn senders_key_is_last() {
        let dir = tempfile::tempdir().unwrap();
        let m = Material::new(4, false).unwrap();
        let shared = |keys| Case {
            mode: Mode::Shared,
            keys,
        };
        let flags = key_flags(shared(4), &m, dir.path()).unwrap();
        assert_eq!(
            (flags[0].as_str(), flags[2].as_str()),
            ("--key-file", "--accepted-key-file")
        );
        let primary = std::fs::read_to_string(&flags[1]).unwrap();
        let accepted = std::fs::read_to_string(&flags[3]).unwrap();
        let lines: Vec<&str> = accepted.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2], key_hex(&m.shared));
        assert_ne!(primary.trim(), key_hex(&m.shared));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&flags[3]).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let sub = dir.path().join("one");
        std::fs::create_dir(&sub).unwrap();
        let one = key_flags(shared(1), &m, &sub).unwrap();
        assert_eq!(one.len(), 2);
        let only = std::fs::read_to_string(&one[1]).unwrap();
        assert_eq!(only.trim(), key_hex(&m.shared));
    }
}
