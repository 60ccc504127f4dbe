//! `varta-bench` — head-to-head benchmarks of this workspace's observer and
//! client against the original varta 0.2.0 from crates.io. See BENCHMARKS.md
//! at the repository root for what each scenario measures and the goals.

#![forbid(unsafe_code)]

mod exportfile;
mod machine;
mod procs;
mod scenarios;
mod sender;
mod stats;
mod udpload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::procs::{Binaries, Res};
use crate::stats::Goal;

const NOT_YET: &str = "\
The original observer is built once from crates.io into $VARTA_BENCH_CACHE
(default <workspace>/target/varta-bench-cache); ours is target/release/varta-watch.";

/// Head-to-head benchmarks: this workspace's varta-watch / varta-client
/// against the original 0.2.0. Each scenario prints a markdown table
/// (median of the repetitions, with min and max) and GOAL lines.
#[derive(Parser, Debug)]
#[command(name = "varta-bench", version, after_help = NOT_YET)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,

    /// Repetitions per measurement; tables show their median, min and max.
    #[arg(long, global = true, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    reps: u32,

    /// Also write the results as JSON to this file.
    #[arg(long, global = true, value_name = "PATH")]
    json: Option<PathBuf>,

    /// Short durations and smaller sizes, for smoke runs (explicit knobs still win).
    #[arg(long, global = true)]
    quick: bool,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// UDS ingest: accepted frames/s with N sender processes beating flat out,
    /// ours vs the original vs a raw recvmsg drain.
    IngestUds(IngestArgs),
    /// UDP ingest with 100 k distinct pids from sendmmsg senders: accepted
    /// frames/s for plaintext, shared-key and master-key datagrams, ours vs
    /// the original vs a raw recvmmsg drain; AEAD cost per frame with 1, 4
    /// and 16 accepted keys.
    IngestUdp(IngestUdpArgs),
    /// Stall detection overshoot, measured outside the observer: agents are
    /// SIGKILLed at random times, stall seen in the export − last beat − threshold.
    Detect(DetectArgs),
    /// Our tracker in-process at 10 k / 100 k / 1 M agents: RSS, ns per beat,
    /// stall-scan tick cost, ns per stall.
    Scale(ScaleArgs),
    /// CPU use of each observer with agents beating at 1 Hz.
    Idle(IdleArgs),
    /// Client beat(): ours vs raw send(2) vs the original client, ns per call.
    Beat(BeatArgs),
    /// Recovery: stall → recovery command exec'd, ours vs the original under
    /// load; and our stall overshoot with a slow audit fsync (test-hooks).
    Recovery(RecoveryArgs),
    /// /metrics under load: stall overshoot with and without a scrape flood
    /// (concurrent scrapers + slowloris) at 10 k per-pid series, ours and
    /// the original; sequential scrape latency.
    Scrape(ScrapeArgs),
    /// New agents: /proc identity read cost and the loop's share of an
    /// admission; accepted beats of a steady UDP set with and without
    /// 100 k new pids/s, and stall overshoot during the churn.
    Churn(ChurnArgs),
    /// Alertmanager push (ours only): stall event → alert at a fake
    /// Alertmanager, and through a real one (Debian's
    /// prometheus-alertmanager, if installed) to its webhook; p50/p99.
    Alerts(AlertsArgs),
    /// Every scenario above but churn and alerts, in that order.
    All(Box<AllArgs>),
    /// Soak (not part of `all`): our observer for 10 minutes at over half
    /// its measured maximum UDP ingest, agents dying (terminal frame) and
    /// starting every second, a few falling silent, /metrics scraped every
    /// second, export on; RSS growth, false stalls, deaths detected, export
    /// lines vs event counters.
    Soak(SoakArgs),
    /// (internal) one agent process used as load generator.
    #[command(hide = true)]
    Sender(SenderCli),
    /// (internal) one tracker scale measurement in a fresh process.
    #[command(hide = true)]
    ScaleWorker(ScaleWorkerCli),
    /// (internal) the scrape flood: concurrent scrapers and slowloris
    /// connections against one /metrics endpoint until stdin closes.
    #[command(hide = true)]
    ScrapeFlood(ScrapeFloodCli),
    /// (internal) the scrape scenario's UDP load: many agents beating
    /// over plaintext UDP from one process until stdin closes.
    #[command(hide = true)]
    ScrapeLoad(scenarios::scrape::LoadArgs),
}

#[derive(Args, Debug, Clone, Default)]
pub struct IngestArgs {
    /// Sender processes [default: 64; --quick 8].
    #[arg(long)]
    pub senders: Option<usize>,
    /// Measurement window per repetition and receiver, seconds [default: 3; --quick 1].
    #[arg(long)]
    pub secs: Option<f64>,
}

#[derive(Args, Debug, Clone)]
pub struct IngestUdpArgs {
    /// Distinct pids the senders cycle through [default: 100000; --quick 20000].
    #[arg(long)]
    pub udp_pids: Option<usize>,
    /// Sender threads, each with its own socket and share of the pids, all
    /// pinned to the last CPU.
    #[arg(long, default_value_t = 2)]
    pub udp_senders: usize,
    /// Measurement window per repetition and receiver, seconds [default: 3; --quick 1].
    #[arg(long)]
    pub udp_secs: Option<f64>,
    /// Accepted-key counts of the shared-key AEAD cost table (1 is always run).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 4, 16])]
    pub udp_keys: Vec<usize>,
    /// Receivers to measure.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [
        scenarios::ingest_udp::Rx::Raw,
        scenarios::ingest_udp::Rx::Ours,
        scenarios::ingest_udp::Rx::Original,
    ])]
    pub udp_receivers: Vec<scenarios::ingest_udp::Rx>,
    /// The original's --read-timeout-ms. Its loop reads one datagram per
    /// listener per pass and blocks that long in the idle Unix socket's
    /// recv first: at its default (100) it reads about 10 UDP datagrams/s.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub udp_original_read_timeout_ms: u64,
}

#[derive(Args, Debug, Clone, Default)]
pub struct DetectArgs {
    /// Agents per repetition, each killed once [default: 40; --quick 10].
    #[arg(long)]
    pub agents: Option<usize>,
    /// Seconds over which the kills are spread [default: 8; --quick 3].
    #[arg(long)]
    pub detect_secs: Option<f64>,
    /// Stall threshold given to both observers, ms.
    #[arg(long, default_value_t = 500)]
    pub threshold_ms: u64,
    /// Beat interval of the agents, ms.
    #[arg(long, default_value_t = 100)]
    pub interval_ms: u64,
    /// Seed of the kill-time PRNG (repetition r uses seed + r).
    #[arg(long, default_value_t = 0x5eed)]
    pub seed: u64,
}

#[derive(Args, Debug, Clone, Default)]
pub struct ScaleArgs {
    /// Tracker sizes (agents) [default: 10000,100000,1000000; --quick 10000,1000000].
    #[arg(long, value_delimiter = ',')]
    pub sizes: Option<Vec<u32>>,
    /// Policy-class counts measured at the largest size (agents round-robin
    /// over classes with thresholds 1 s, 2 s, …) [default: 1,16].
    #[arg(long, value_delimiter = ',')]
    pub thresholds: Option<Vec<u32>>,
}

#[derive(Args, Debug, Clone)]
pub struct ChurnArgs {
    /// Steady UDP pids beating for the whole run [default: 10000; --quick 2000].
    #[arg(long)]
    pub churn_steady: Option<u32>,
    /// Beats per second of each steady pid.
    #[arg(long, default_value_t = 10.0)]
    pub churn_hz: f64,
    /// New pids per second in the churn phase (each beats once).
    #[arg(long, default_value_t = 100_000.0)]
    pub churn_rate: f64,
    /// Stall threshold of the observer, ms.
    #[arg(long, default_value_t = 1000)]
    pub churn_threshold_ms: u64,
    /// Steady pids that fall silent during each window (stall overshoot).
    #[arg(long, default_value_t = 20)]
    pub churn_silent: usize,
    /// Measurement window, seconds [default: 5; --quick 3].
    #[arg(long)]
    pub churn_secs: Option<f64>,
    /// --tracker-capacity [default: steady + 2.5 × rate × threshold + 4096].
    #[arg(long)]
    pub churn_capacity: Option<u32>,
    /// Seed of the silence-time PRNG (repetition r uses seed + r).
    #[arg(long, default_value_t = 0x5eed)]
    pub churn_seed: u64,
}

#[derive(Args, Debug, Clone)]
pub struct AlertsArgs {
    /// Agents per repetition, each falling silent once [default: 50; --quick 10].
    #[arg(long)]
    pub alerts_agents: Option<usize>,
    /// Seconds over which they fall silent [default: 5; --quick 3].
    #[arg(long)]
    pub alerts_secs: Option<f64>,
    /// Stall threshold of the observer, ms.
    #[arg(long, default_value_t = 500)]
    pub alerts_threshold_ms: u64,
    /// Beat interval of the agents, ms.
    #[arg(long, default_value_t = 100)]
    pub alerts_interval_ms: u64,
    /// Only the fake Alertmanager, even if prometheus-alertmanager is installed.
    #[arg(long)]
    pub alerts_no_alertmanager: bool,
    /// Seed of the silence-time PRNG (repetition r uses seed + r).
    #[arg(long, default_value_t = 0x5eed)]
    pub alerts_seed: u64,
}

#[derive(Args, Debug, Clone)]
pub struct SoakArgs {
    /// Length of the load, seconds [default: 600; --quick 30].
    #[arg(long)]
    pub duration_secs: Option<f64>,
    /// Agents beating at any moment [default: 20000; --quick 5000].
    #[arg(long)]
    pub soak_agents: Option<u32>,
    /// Beats per second of each agent.
    #[arg(long, default_value_t = 4.0)]
    pub soak_hz: f64,
    /// Agents dying per second (terminal frame), each replaced by a new pid.
    #[arg(long, default_value_t = 100.0)]
    pub soak_deaths_per_sec: f64,
    /// One agent falls silent (no terminal frame: it must stall once) every
    /// this many seconds [default: 20; --quick 5].
    #[arg(long)]
    pub soak_silence_every_secs: Option<f64>,
    /// Stall threshold of the observer, ms.
    #[arg(long, default_value_t = 2000)]
    pub soak_threshold_ms: u64,
    /// RSS warm-up, seconds [default: 60; --quick 10].
    #[arg(long)]
    pub soak_warmup_secs: Option<f64>,
    /// RSS growth compares the median of the first window after warm-up
    /// with the last window's, seconds [default: 60; --quick 5].
    #[arg(long)]
    pub soak_window_secs: Option<f64>,
    /// Sender threads, each with its own socket and share of the agents.
    #[arg(long, default_value_t = 2)]
    pub soak_senders: usize,
    /// --tracker-capacity [default: agents + silenced + 30 s of deaths + 1024].
    #[arg(long)]
    pub soak_capacity: Option<u32>,
    /// The measured maximum ingest the load is held against, frames/s
    /// (BENCHMARKS.md, ingest-udp, plaintext, ours).
    #[arg(long, default_value_t = 145_059.0)]
    pub soak_max_ingest: f64,
}

#[derive(Args, Debug, Clone, Default)]
pub struct IdleArgs {
    /// Agents beating at 1 Hz [default: 50; --quick 10].
    #[arg(long)]
    pub idle_agents: Option<usize>,
    /// Measurement window, seconds [default: 30; --quick 3].
    #[arg(long)]
    pub idle_secs: Option<f64>,
}

#[derive(Args, Debug, Clone, Default)]
pub struct BeatArgs {
    /// Calls per variant per round [default: 10000; --quick 1000].
    #[arg(long)]
    pub calls: Option<usize>,
    /// Interleaved rounds (raw, ours, original) per repetition [default: 20; --quick 4].
    #[arg(long)]
    pub rounds: Option<usize>,
}

#[derive(Args, Debug, Clone, Default)]
pub struct RecoveryArgs {
    /// Agents beating every --recovery-interval-ms for the whole run [default: 200; --quick 40].
    #[arg(long)]
    pub load_agents: Option<usize>,
    /// Further agents, each falling silent (alive) once [default: 50; --quick 10].
    #[arg(long)]
    pub stall_agents: Option<usize>,
    /// Seconds over which the agents fall silent [default: 4; --quick 2].
    #[arg(long)]
    pub stall_secs: Option<f64>,
    /// Stall threshold given to the observers, ms.
    #[arg(long, default_value_t = 500)]
    pub recovery_threshold_ms: u64,
    /// Beat interval of every agent, ms.
    #[arg(long, default_value_t = 100)]
    pub recovery_interval_ms: u64,
    /// Extra ms per audit fdatasync in part 2 (our test-hooks build's
    /// VARTA_TEST_AUDIT_FSYNC_DELAY_MS).
    #[arg(long, default_value_t = 200)]
    pub fsync_delay_ms: u64,
    /// Seed of the stop-time PRNG (repetition r uses seed + r).
    #[arg(long, default_value_t = 0x5eed)]
    pub recovery_seed: u64,
}

#[derive(Args, Debug, Clone, Default)]
pub struct ScrapeArgs {
    /// Load agents of ours: UDP agents (one load process, many pids) on
    /// top of the original's sender processes, or with --scrape-uds-load
    /// sender processes (one pid each) [default: 100000; --scrape-uds-load
    /// 10000; --quick 10000 / 1000].
    #[arg(long)]
    pub scrape_agents: Option<usize>,
    /// Beat interval of the load agents, ms.
    #[arg(long, default_value_t = 1000)]
    pub scrape_load_interval_ms: u64,
    /// Sender threads of the UDP load process.
    #[arg(long, default_value_t = 2)]
    pub scrape_udp_threads: usize,
    /// Every load agent a sender process on the Unix socket (at most ~10 k
    /// on a 32768 pid_max), no UDP: the scenario's earlier setup.
    #[arg(long)]
    pub scrape_uds_load: bool,
    /// Keep beat lines in our export with the UDP load (default: ours gets
    /// --no-export-beats then; stall lines are exported either way).
    #[arg(long)]
    pub scrape_export_beats: bool,
    /// Stall threshold given to both observers, ms (load agents must miss
    /// that many ms of beats to stall).
    #[arg(long, default_value_t = 3000)]
    pub scrape_threshold_ms: u64,
    /// Agents that fall silent per phase (each beats every 100 ms until
    /// then) [default: 30; --quick 10].
    #[arg(long)]
    pub scrape_stalls: Option<usize>,
    /// Seconds over which a phase's agents fall silent [default: 3; --quick 2].
    #[arg(long)]
    pub scrape_stop_secs: Option<f64>,
    /// Concurrent scrapers of the flood, each scraping /metrics back to back.
    #[arg(long, default_value_t = 50)]
    pub scrapers: usize,
    /// Slowloris connections of the flood, each sending one header byte per second.
    #[arg(long, default_value_t = 20)]
    pub slowloris: usize,
    /// Nice value of the flood process (0: same priority as the observers).
    #[arg(long, default_value_t = 19, value_parser = clap::value_parser!(u8).range(0..=19))]
    pub flood_nice: u8,
    /// Sequential scrapes per observer for the scrape-latency table
    /// (one per observer every 1.2 s) [default: 20; --quick 5].
    #[arg(long)]
    pub seq_scrapes: Option<usize>,
    /// Our --per-agent-metrics-limit (the original has no such cap).
    #[arg(long, default_value_t = 10_000)]
    pub per_agent_metrics_limit: usize,
    /// Seed of the stop-time PRNG (phase p of repetition r uses seed + 3r + p).
    #[arg(long, default_value_t = 0x5eed)]
    pub scrape_seed: u64,
    /// SIGKILL the stalling agents, as `detect` does, instead of silencing
    /// them (alive). The original 0.2.0 can then crash under the flood: a
    /// dead agent's queued beat, read once its /proc entry is gone, raises
    /// a namespace conflict its export file writer does not handle.
    #[arg(long)]
    pub scrape_sigkill: bool,
}

#[derive(Args, Debug, Clone)]
struct AllArgs {
    #[command(flatten, next_help_heading = "ingest-uds")]
    ingest: IngestArgs,
    #[command(flatten, next_help_heading = "ingest-udp")]
    ingest_udp: IngestUdpArgs,
    #[command(flatten, next_help_heading = "detect")]
    detect: DetectArgs,
    #[command(flatten, next_help_heading = "scale")]
    scale: ScaleArgs,
    #[command(flatten, next_help_heading = "idle")]
    idle: IdleArgs,
    #[command(flatten, next_help_heading = "beat")]
    beat: BeatArgs,
    #[command(flatten, next_help_heading = "recovery")]
    recovery: RecoveryArgs,
    #[command(flatten, next_help_heading = "scrape")]
    scrape: ScrapeArgs,
}

#[derive(Args, Debug)]
struct SenderCli {
    /// Observer socket; repeat to beat several observers from one pid.
    #[arg(long = "socket", required = true)]
    sockets: Vec<PathBuf>,
    /// Beat every N ms instead of flat out.
    #[arg(long)]
    interval_ms: Option<u64>,
    /// Report (nonce, CLOCK_MONOTONIC ns) of every delivered beat on stdout.
    #[arg(long)]
    report: bool,
    /// Exit after this long even if nobody kills us.
    #[arg(long)]
    lifetime_ms: u64,
    /// Stop beating (staying alive) when a byte or EOF arrives on stdin.
    #[arg(long)]
    stop_on_stdin: bool,
}

#[derive(Args, Debug)]
struct ScrapeFloodCli {
    /// The /metrics endpoint's address.
    #[arg(long)]
    addr: std::net::SocketAddr,
    /// File holding the bearer token (64 hex characters).
    #[arg(long)]
    token_file: PathBuf,
    #[arg(long)]
    scrapers: usize,
    #[arg(long)]
    slowloris: usize,
}

#[derive(Args, Debug)]
struct ScaleWorkerCli {
    #[arg(long)]
    agents: u32,
    /// Measure policy classes (this many) instead of sizes.
    #[arg(long)]
    classes: Option<u32>,
}

/// Settings every scenario gets.
pub struct Common {
    pub reps: u32,
    pub quick: bool,
}

/// One scenario's results: its JSON and its goals.
#[derive(Serialize)]
pub struct Outcome {
    pub scenario: &'static str,
    pub results: serde_json::Value,
    pub goals: Vec<Goal>,
}

#[derive(Serialize)]
struct Report {
    machine: machine::Machine,
    reps: u32,
    quick: bool,
    scenarios: Vec<Outcome>,
    errors: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Sender(s) => {
            let args = sender::SenderArgs {
                sockets: s.sockets,
                interval_ms: s.interval_ms,
                report: s.report,
                lifetime: Duration::from_millis(s.lifetime_ms),
                stop_on_stdin: s.stop_on_stdin,
            };
            return match sender::run(&args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("varta-bench sender: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Cmd::ScaleWorker(w) => {
            let r = match w.classes {
                Some(k) => scenarios::scale::class_worker(w.agents, k),
                None => scenarios::scale::worker(w.agents),
            };
            return match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("varta-bench scale-worker: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Cmd::ScrapeFlood(f) => {
            let args = scenarios::scrape::FloodArgs {
                addr: f.addr,
                token_file: f.token_file,
                scrapers: f.scrapers,
                slowloris: f.slowloris,
            };
            return match scenarios::scrape::flood(&args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("varta-bench scrape-flood: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Cmd::ScrapeLoad(l) => {
            return match scenarios::scrape::load(&l) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("varta-bench scrape-load: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
    let common = Common {
        reps: cli.reps,
        quick: cli.quick,
    };
    if common.reps < 3 {
        eprintln!(
            "varta-bench: note: --reps {} < 3; medians need at least 3",
            common.reps
        );
    }
    let machine = machine::Machine::describe();
    println!(
        "# varta-bench{}\n",
        if common.quick { " (--quick)" } else { "" }
    );
    println!("{}\n", machine.line());

    let plan: Vec<Scenario> = match &cli.cmd {
        Cmd::IngestUds(a) => vec![Scenario::Ingest(a.clone())],
        Cmd::IngestUdp(a) => vec![Scenario::IngestUdp(a.clone())],
        Cmd::Detect(a) => vec![Scenario::Detect(a.clone())],
        Cmd::Scale(a) => vec![Scenario::Scale(a.clone())],
        Cmd::Idle(a) => vec![Scenario::Idle(a.clone())],
        Cmd::Beat(a) => vec![Scenario::Beat(a.clone())],
        Cmd::Recovery(a) => vec![Scenario::Recovery(a.clone())],
        Cmd::Scrape(a) => vec![Scenario::Scrape(a.clone())],
        Cmd::Churn(a) => vec![Scenario::Churn(a.clone())],
        Cmd::Alerts(a) => vec![Scenario::Alerts(a.clone())],
        Cmd::Soak(a) => vec![Scenario::Soak(a.clone())],
        Cmd::All(a) => vec![
            Scenario::Ingest(a.ingest.clone()),
            Scenario::IngestUdp(a.ingest_udp.clone()),
            Scenario::Detect(a.detect.clone()),
            Scenario::Scale(a.scale.clone()),
            Scenario::Idle(a.idle.clone()),
            Scenario::Beat(a.beat.clone()),
            Scenario::Recovery(a.recovery.clone()),
            Scenario::Scrape(a.scrape.clone()),
        ],
        Cmd::Sender(_) | Cmd::ScaleWorker(_) | Cmd::ScrapeFlood(_) | Cmd::ScrapeLoad(_) => {
            unreachable!("handled above")
        }
    };

    let mut report = Report {
        machine,
        reps: common.reps,
        quick: common.quick,
        scenarios: Vec::new(),
        errors: Vec::new(),
    };
    // Observer binaries are needed only by the scenarios that run them.
    let mut bins: Option<Result<Binaries, String>> = None;
    for sc in plan {
        let result = run_scenario(&sc, &common, &mut bins);
        match result {
            Ok(outcome) => {
                println!();
                for g in &outcome.goals {
                    println!("{}", g.line());
                }
                println!();
                report.scenarios.push(outcome);
            }
            Err(e) => {
                let msg = format!("{}: {e}", sc.name());
                eprintln!("varta-bench: error in {msg}");
                report.errors.push(msg);
            }
        }
    }

    let all_goals: Vec<&Goal> = report.scenarios.iter().flat_map(|o| &o.goals).collect();
    if all_goals.len() > 1 {
        println!("## Goals");
        for g in &all_goals {
            println!("{}", g.line());
        }
    }
    if !report.errors.is_empty() {
        println!("\n## Errors");
        for e in &report.errors {
            println!("ERROR {e}");
        }
    }
    if let Some(path) = &cli.json {
        let written = serde_json::to_string_pretty(&report)
            .map_err(|e| e.to_string())
            .and_then(|s| std::fs::write(path, s + "\n").map_err(|e| e.to_string()));
        match written {
            Ok(()) => eprintln!("varta-bench: results written to {}", path.display()),
            Err(e) => {
                eprintln!("varta-bench: cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

enum Scenario {
    Ingest(IngestArgs),
    IngestUdp(IngestUdpArgs),
    Detect(DetectArgs),
    Scale(ScaleArgs),
    Idle(IdleArgs),
    Beat(BeatArgs),
    Recovery(RecoveryArgs),
    Scrape(ScrapeArgs),
    Churn(ChurnArgs),
    Alerts(AlertsArgs),
    Soak(SoakArgs),
}

impl Scenario {
    fn name(&self) -> &'static str {
        match self {
            Scenario::Ingest(_) => "ingest-uds",
            Scenario::IngestUdp(_) => "ingest-udp",
            Scenario::Detect(_) => "detect",
            Scenario::Scale(_) => "scale",
            Scenario::Idle(_) => "idle",
            Scenario::Beat(_) => "beat",
            Scenario::Recovery(_) => "recovery",
            Scenario::Scrape(_) => "scrape",
            Scenario::Churn(_) => "churn",
            Scenario::Alerts(_) => "alerts",
            Scenario::Soak(_) => "soak",
        }
    }
}

/// Resolves (finds or builds) the observers once; a failure is remembered
/// so `all` does not retry a 5-minute build for every scenario.
fn binaries(cache: &mut Option<Result<Binaries, String>>) -> Res<Binaries> {
    let r = cache.get_or_insert_with(|| Binaries::resolve().map_err(|e| e.to_string()));
    Ok(r.clone()?)
}

fn run_scenario(
    sc: &Scenario,
    common: &Common,
    bins: &mut Option<Result<Binaries, String>>,
) -> Res<Outcome> {
    match sc {
        Scenario::Ingest(a) => scenarios::ingest::run(a, common, &binaries(bins)?),
        Scenario::IngestUdp(a) => scenarios::ingest_udp::run(a, common, &binaries(bins)?),
        Scenario::Detect(a) => scenarios::detect::run(a, common, &binaries(bins)?),
        Scenario::Scale(a) => scenarios::scale::run(a, common),
        Scenario::Idle(a) => scenarios::idle::run(a, common, &binaries(bins)?),
        Scenario::Beat(a) => scenarios::beat::run(a, common),
        Scenario::Recovery(a) => scenarios::recovery::run(a, common, &binaries(bins)?),
        Scenario::Scrape(a) => scenarios::scrape::run(a, common, &binaries(bins)?),
        Scenario::Churn(a) => scenarios::churn::run(a, common, &binaries(bins)?),
        Scenario::Alerts(a) => scenarios::alerts::run(a, common, &binaries(bins)?),
        Scenario::Soak(a) => scenarios::soak::run(a, common, &binaries(bins)?),
    }
}
