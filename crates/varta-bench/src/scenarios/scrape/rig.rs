//! Starting the scenario's three observers, and the probe of the original's
//! own UDP listener.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use tempfile::TempDir;

use super::endpoint::{
    free_port, ours_metrics_addr, ours_printed_addr, random_token, request_bytes, wait_listening,
    wait_tracked, write_secret,
};
use super::load::{udp_drops, Target, UdpLoad};
use super::{ORIGINAL_MAX_TRACKED, SMALL_LABEL};
use crate::exportfile::{beat_lines_between, file_len};
use crate::procs::{bench_dir, Binaries, Observer, ObserverSpec, Res, Which};
use crate::stats::num;

/// How the observers are run.
pub(super) struct RigCfg {
    pub threshold_ms: u64,
    /// Our main observer's `--tracker-capacity`.
    pub ours_capacity: usize,
    pub per_agent_limit: usize,
    /// Our main observer also listens on plaintext UDP (loopback).
    pub ours_udp: bool,
    /// Our main observer leaves beat lines out of its export.
    pub ours_no_export_beats: bool,
    /// Safety net: every observer exits by itself after this long.
    pub lifetime: Duration,
}

/// Ours, the original and ours again (part 2's like-for-like row), each
/// serving `/metrics` with the same token.
pub(super) struct Rig {
    pub ours: Observer,
    pub orig: Observer,
    pub small: Observer,
    /// `/metrics` of ours, the original, small.
    pub addrs: [SocketAddr; 3],
    /// Our main observer's UDP listener.
    pub ours_udp: Option<SocketAddr>,
    pub token: String,
    pub token_file: PathBuf,
    // Removed after the observers have stopped (fields drop in order).
    _dir: TempDir,
    _dir_small: TempDir,
}

impl Rig {
    pub(super) fn start(bins: &Binaries, cfg: &RigCfg) -> Res<Rig> {
        let dir = bench_dir()?;
        // Ours at the original's agent count (part 2 only): its own
        // directory, since observers name their files by kind.
        let dir_small = bench_dir()?;
        let token = random_token()?;
        let token_file = dir.path().join("prom.token");
        write_secret(&token_file, &token)?;
        let token_arg = token_file.to_string_lossy().into_owned();
        let limit_arg = cfg.per_agent_limit.to_string();
        let orig_port = free_port()?;
        let orig_addr_arg = format!("127.0.0.1:{orig_port}");
        let common_flags = [
            "--prom-token-file",
            &token_arg,
            "--prom-rate-limit-burst",
            "0",
        ];
        let mut small_flags: Vec<&str> = common_flags.to_vec();
        small_flags.extend([
            "--prom-addr",
            "127.0.0.1:0",
            "--per-agent-metrics-limit",
            &limit_arg,
        ]);
        let mut ours_flags = small_flags.clone();
        ours_flags.extend(["--export-file-sync-every", "1"]);
        if cfg.ours_udp {
            ours_flags.extend(UDP_FLAGS);
            ours_flags.extend(["--udp-port", "0"]);
        }
        if cfg.ours_no_export_beats {
            ours_flags.push("--no-export-beats");
        }
        let mut orig_flags: Vec<&str> = common_flags.to_vec();
        orig_flags.extend([
            "--prom-addr",
            &orig_addr_arg,
            "--export-file-sync-every",
            "1",
        ]);
        let spec = |which, dir, export, tracker_capacity, extra| ObserverSpec {
            which,
            dir,
            threshold_ms: cfg.threshold_ms,
            export,
            tracker_capacity,
            extra,
            lifetime: cfg.lifetime,
        };
        let ours = Observer::start(
            bins,
            &spec(
                Which::Ours,
                dir.path(),
                true,
                cfg.ours_capacity,
                &ours_flags,
            ),
        )?;
        let orig = Observer::start(
            bins,
            &spec(
                Which::Original,
                dir.path(),
                true,
                ORIGINAL_MAX_TRACKED,
                &orig_flags,
            ),
        )?;
        let small = Observer::start(
            bins,
            &spec(
                Which::Ours,
                dir_small.path(),
                false,
                ORIGINAL_MAX_TRACKED,
                &small_flags,
            ),
        )?;
        let addrs = [
            wait_listening(
                ours_printed_addr(&ours, "metrics: http://", "/metrics")?,
                &ours,
            )?,
            wait_listening(SocketAddr::from(([127, 0, 0, 1], orig_port)), &orig)?,
            ours_metrics_addr(&small)?,
        ];
        let ours_udp = if cfg.ours_udp {
            Some(ours_printed_addr(&ours, "udp: ", "")?)
        } else {
            None
        };
        Ok(Rig {
            ours,
            orig,
            small,
            addrs,
            ours_udp,
            token,
            token_file,
            _dir: dir,
            _dir_small: dir_small,
        })
    }

    /// An error naming the observer if one has exited.
    pub(super) fn check(&mut self) -> Res<()> {
        self.ours.check_running(Which::Ours.label())?;
        self.orig.check_running(Which::Original.label())?;
        self.small.check_running(SMALL_LABEL)
    }

    /// Stops the observers (SIGTERM, then SIGKILL) and removes their files.
    pub(super) fn stop(self) {
        self.ours.stop();
        self.orig.stop();
        self.small.stop();
    }
}

/// The flags of a plaintext UDP listener on loopback, the same for both
/// observers (`--udp-port` comes separately).
const UDP_FLAGS: [&str; 3] = ["--udp-bind-addr", "127.0.0.1", "--i-accept-plaintext-udp"];

/// What the original did with its agents fed over its own UDP listener.
#[derive(Serialize, Clone)]
pub(super) struct UdpProbe {
    /// `--read-timeout-ms` given (None: its default, 100).
    pub read_timeout_ms: Option<u64>,
    pub agents: u32,
    pub first_pid: u32,
    pub interval_ms: u64,
    pub secs: f64,
    /// Datagrams the load process sent to it.
    pub sent: u64,
    /// Dropped by the kernel at its full receive queue.
    pub dropped: Option<u64>,
    /// Beat lines in its export: beats it accepted.
    pub beats_exported: u64,
    /// `varta_watch_pids_tracked` at the end.
    pub pids_tracked: f64,
}

/// One probe of the original's UDP listener.
#[derive(Clone, Copy)]
struct ProbeCfg {
    pub agents: u32,
    pub first_pid: u32,
    pub interval_ms: u64,
    pub threshold_ms: u64,
    /// `--read-timeout-ms` (None: its default).
    pub read_timeout_ms: Option<u64>,
    pub secs: f64,
}

/// Feeds a fresh original observer (the main run's flags plus a plaintext
/// UDP listener on loopback, and `--read-timeout-ms` if given) `agents` UDP
/// agents beating every `interval_ms` for `secs`, with nothing on its Unix
/// socket: what it takes in over UDP by itself.
fn probe_original_udp(bins: &Binaries, exe: &Path, cfg: &ProbeCfg) -> Res<UdpProbe> {
    let ProbeCfg {
        agents,
        first_pid,
        interval_ms,
        threshold_ms,
        read_timeout_ms,
        secs,
    } = *cfg;
    let dir = bench_dir()?;
    let token = random_token()?;
    let token_file = dir.path().join("prom.token");
    write_secret(&token_file, &token)?;
    let token_arg = token_file.to_string_lossy().into_owned();
    let prom_port = free_port()?;
    let prom_arg = format!("127.0.0.1:{prom_port}");
    let udp_port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
    let udp_arg = udp_port.to_string();
    let rt_arg = read_timeout_ms.map(|ms| ms.to_string());
    let mut flags = vec![
        "--prom-token-file",
        &token_arg,
        "--prom-rate-limit-burst",
        "0",
        "--prom-addr",
        &prom_arg,
        "--export-file-sync-every",
        "1",
        "--udp-port",
        &udp_arg,
    ];
    flags.extend(UDP_FLAGS);
    if let Some(rt) = &rt_arg {
        flags.extend(["--read-timeout-ms", rt]);
    }
    let mut orig = Observer::start(
        bins,
        &ObserverSpec {
            which: Which::Original,
            dir: dir.path(),
            threshold_ms,
            export: true,
            tracker_capacity: ORIGINAL_MAX_TRACKED,
            extra: &flags,
            lifetime: Duration::from_secs_f64(secs) + Duration::from_secs(60),
        },
    )?;
    let prom = wait_listening(SocketAddr::from(([127, 0, 0, 1], prom_port)), &orig)?;
    let drops0 = udp_drops(udp_port);
    let target = Target {
        addr: SocketAddr::from(([127, 0, 0, 1], udp_port)),
        first_pid,
        count: agents,
    };
    let t0 = Instant::now();
    let load = UdpLoad::start(exe, &[target], interval_ms, 1)?;
    std::thread::sleep(Duration::from_secs_f64(secs));
    let drops1 = udp_drops(udp_port);
    let stats = load.stop()?;
    let secs = t0.elapsed().as_secs_f64();
    let [tracked] = wait_tracked(&[prom], &request_bytes(&token), &[0], Duration::ZERO);
    orig.check_running(Which::Original.label())?;
    let export = orig.export.clone().ok_or("no export file")?;
    // A clean stop flushes its export.
    orig.stop();
    let beats = beat_lines_between(&export, 0, file_len(&export))?;
    Ok(UdpProbe {
        read_timeout_ms,
        agents,
        first_pid,
        interval_ms,
        secs,
        sent: stats.sent.first().copied().unwrap_or(0),
        dropped: drops0.zip(drops1).map(|(a, b)| b.saturating_sub(a)),
        beats_exported: beats,
        pids_tracked: tracked,
    })
}

/// `--read-timeout-ms` values of the original's UDP probes: its default
/// (100) and the smallest it takes.
const PROBE_READ_TIMEOUTS: [Option<u64>; 2] = [None, Some(1)];

/// Both probes of the original's UDP listener, `agents` agents with pids
/// just below `pid_max` (the original drops larger pids), each for two
/// thresholds (at least 5 s).
pub(super) fn probe_original_udp_all(
    bins: &Binaries,
    exe: &Path,
    agents: u32,
    interval_ms: u64,
    threshold_ms: u64,
) -> Res<Vec<UdpProbe>> {
    let secs = (2 * threshold_ms).max(5000) as f64 / 1000.0;
    let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")?
        .trim()
        .parse()?;
    let first_pid = pid_max
        .checked_sub(agents)
        .filter(|&f| f >= 2)
        .ok_or("pid_max too small for the probe")?;
    let mut probes = Vec::new();
    for read_timeout_ms in PROBE_READ_TIMEOUTS {
        eprintln!(
            "  probe: the original fed {agents} agents over its UDP listener for {secs} s \
             (--read-timeout-ms {})...",
            read_timeout_ms.map_or("default".into(), |v| v.to_string())
        );
        let cfg = ProbeCfg {
            agents,
            first_pid,
            interval_ms,
            threshold_ms,
            read_timeout_ms,
            secs,
        };
        let p = probe_original_udp(bins, exe, &cfg)?;
        eprintln!(
            "    sent {}, dropped by the kernel {}, beats accepted {}, pids tracked {}",
            p.sent,
            p.dropped.map_or("n/a".into(), |d| d.to_string()),
            p.beats_exported,
            num(p.pids_tracked, 0)
        );
        probes.push(p);
    }
    Ok(probes)
}
