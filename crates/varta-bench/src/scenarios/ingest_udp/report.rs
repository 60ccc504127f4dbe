//! The tables of `ingest-udp` and its JSON.

use std::collections::BTreeMap;

use serde_json::json;

use super::{case_label, Case, Cfg, Results, Run, Rx, ORIGINAL_MAX_TRACKED};
use crate::procs::Res;
use crate::scenarios::Table;
use crate::stats::{num, Summary};
use crate::udpload::{AeadMicro, Mode};
use crate::Outcome;

fn summary(runs: &[Run], f: impl Fn(&Run) -> f64) -> Summary {
    Summary::of(&runs.iter().map(f).collect::<Vec<_>>())
}

/// Per-repetition ratio of `f` between two receivers' runs.
fn ratio(a: &[Run], b: &[Run], f: impl Fn(&Run) -> f64) -> Summary {
    Summary::of(
        &a.iter()
            .zip(b)
            .map(|(x, y)| f(x) / f(y))
            .collect::<Vec<_>>(),
    )
}

pub(super) fn report(
    cases: &[Case],
    rxs: &[Rx],
    results: &Results,
    micro: &[AeadMicro],
    cfg: &Cfg,
    reps: u32,
) -> Res<Outcome> {
    let none: Vec<Run> = Vec::new();
    let get = |ci: usize, rx: Rx| results.get(&(ci, rx)).unwrap_or(&none);
    let idx = |mode: Mode, keys: usize| cases.iter().position(|c| c.mode == mode && c.keys == keys);
    // The raw drain of a shared-key case is its one-key run.
    let raw_of = |ci: usize| {
        let c = cases[ci];
        get(idx(c.mode, c.keys.min(1)).unwrap_or(ci), Rx::Raw)
    };

    let mut t = Table::new(&[
        "layout",
        "receiver",
        "accepted frames/s",
        "read off the socket/s",
        "dropped by the kernel",
        "accepted / raw drain",
        "CPU ns per accepted frame",
        "CPU ns per datagram read",
    ]);
    let main_cases: Vec<usize> = [
        idx(Mode::Plaintext, 0),
        idx(Mode::Shared, 1),
        idx(Mode::Master, 1),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut ratios = serde_json::Map::new();
    for &ci in &main_cases {
        for &rx in rxs {
            let runs = get(ci, rx);
            t.row(vec![
                case_label(cases[ci]),
                rx.label().into(),
                summary(runs, |r| r.accepted_per_sec).cell(0),
                summary(runs, |r| r.read_per_sec).cell(0),
                summary(runs, |r| 100.0 * r.kernel_drop_share).cell(1) + " %",
                ratio(runs, raw_of(ci), |r| r.accepted_per_sec).cell(3),
                summary(runs, |r| r.cpu_ns_per_accepted).cell(0),
                summary(runs, |r| r.cpu_ns_per_read).cell(0),
            ]);
        }
        let (ours, orig) = (get(ci, Rx::Ours), get(ci, Rx::Original));
        let accepted = |r: &Run| r.accepted_per_sec;
        ratios.insert(
            format!("{:?}", cases[ci].mode).to_lowercase(),
            json!({
                "ours_over_original": ratio(ours, orig, accepted),
                "ours_over_raw": ratio(ours, raw_of(ci), accepted),
                "original_over_raw": ratio(orig, raw_of(ci), accepted),
            }),
        );
    }
    println!();
    t.print();
    println!();
    for &ci in &main_cases {
        let ours = get(ci, Rx::Ours);
        println!(
            "{}: ours / original {}, ours / raw drain {}",
            case_label(cases[ci]),
            ratio(ours, get(ci, Rx::Original), |r| r.accepted_per_sec).cell(2),
            ratio(ours, raw_of(ci), |r| r.accepted_per_sec).cell(3)
        );
    }
    println!(
        "(median (min–max) of {reps} reps; ratios per repetition; {} pids; the senders alone: {} datagrams/s)",
        num(cfg.pids as f64, 0),
        num(cfg.send_rate, 0)
    );

    let mut k = Table::new(&[
        "accepted keys",
        "receiver",
        "accepted frames/s",
        "CPU ns per accepted frame",
        "CPU ns per datagram read",
        "AEAD opens per datagram read",
    ]);
    let shared: Vec<usize> = (0..cases.len())
        .filter(|&ci| cases[ci].mode == Mode::Shared)
        .collect();
    let observers: Vec<Rx> = rxs.iter().copied().filter(|&r| r != Rx::Raw).collect();
    for &ci in &shared {
        for &rx in &observers {
            let runs = get(ci, rx);
            k.row(vec![
                cases[ci].keys.to_string(),
                rx.label().into(),
                summary(runs, |r| r.accepted_per_sec).cell(0),
                summary(runs, |r| r.cpu_ns_per_accepted).cell(0),
                summary(runs, |r| r.cpu_ns_per_read).cell(0),
                summary(runs, |r| {
                    r.aead_attempts.map_or(f64::NAN, |a| a / r.read as f64)
                })
                .cell(2),
            ]);
        }
    }
    println!("\nAEAD cost, shared key; the senders' key is the last of the observer's keys:\n");
    k.print();
    let m = |f: fn(&AeadMicro) -> f64| Summary::of(&micro.iter().map(f).collect::<Vec<_>>());
    let (ok, wrong, master) = (
        m(|x| x.open_shared_ok_ns),
        m(|x| x.open_shared_wrong_key_ns),
        m(|x| x.open_master_ns),
    );
    println!(
        "\nIn-process, ns per call (once per rep): open_shared {} with the right key, {} with a \
         wrong one (tag fails); open_master (HKDF-SHA256 + open) {}.",
        ok.cell(0),
        wrong.cell(0),
        master.cell(0)
    );
    let mut slopes = serde_json::Map::new();
    if let (Some(&lo), Some(&hi)) = (shared.first(), shared.last()) {
        let extra = (cases[hi].keys - cases[lo].keys) as f64;
        for &rx in &observers {
            let (a, b) = (get(lo, rx), get(hi, rx));
            if extra == 0.0 || a.is_empty() {
                continue;
            }
            let per_key = |x: &Run, y: &Run| (y.cpu_ns_per_read - x.cpu_ns_per_read) / extra;
            let s = Summary::of(
                &a.iter()
                    .zip(b)
                    .map(|(x, y)| per_key(x, y))
                    .collect::<Vec<_>>(),
            );
            println!(
                "{}: CPU per datagram read grows {} ns per extra key ({} → {} keys)",
                rx.label(),
                s.cell(0),
                cases[lo].keys,
                cases[hi].keys
            );
            slopes.insert(format!("{rx:?}").to_lowercase(), json!(s));
        }
    }

    let mut w = Table::new(&[
        "layout",
        "receiver",
        "sent",
        "dropped by the kernel",
        "read",
        "accepted",
        "read − accepted",
        "refusals counted by the observer",
    ]);
    let mut runs_json = Vec::new();
    for (ci, c) in cases.iter().enumerate() {
        for &rx in rxs {
            let runs = get(ci, rx);
            if runs.is_empty() {
                continue;
            }
            let sum = |f: fn(&Run) -> u64| num(runs.iter().map(f).sum::<u64>() as f64, 0);
            let mut reasons: BTreeMap<&str, f64> = BTreeMap::new();
            for (name, v) in runs.iter().flat_map(|r| &r.refused) {
                *reasons.entry(name.as_str()).or_default() += v;
            }
            let reasons: Vec<String> = reasons
                .iter()
                .map(|(n, v)| format!("{n} {}", num(*v, 0)))
                .collect();
            w.row(vec![
                case_label(*c),
                rx.label().into(),
                sum(|r| r.sent),
                sum(|r| r.kernel_dropped),
                sum(|r| r.read),
                sum(|r| r.accepted),
                sum(|r| r.read.saturating_sub(r.accepted)),
                match (rx, reasons.is_empty()) {
                    (Rx::Raw, _) => "-".into(),
                    (_, true) => "none".into(),
                    (_, false) => reasons.join("; "),
                },
            ]);
            runs_json.push(json!({
                "layout": c.mode,
                "keys": c.keys,
                "receiver": rx,
                "accepted_per_sec": summary(runs, |r| r.accepted_per_sec),
                "read_per_sec": summary(runs, |r| r.read_per_sec),
                "cpu_ns_per_accepted": summary(runs, |r| r.cpu_ns_per_accepted),
                "cpu_ns_per_read": summary(runs, |r| r.cpu_ns_per_read),
                "per_rep": runs,
            }));
        }
    }
    println!(
        "\nWhere the datagrams went, whole runs (settle + window + drain), all reps summed:\n"
    );
    w.print();
    if rxs.contains(&Rx::Original) {
        println!(
            "\nThe original runs at its maxima: {ORIGINAL_MAX_TRACKED} tracked pids and 1,024 replay \
             states, the latter per source address, not per pid; it also drops frames whose pid \
             exceeds kernel.pid_max ({} here).",
            std::fs::read_to_string("/proc/sys/kernel/pid_max")
                .map_or_else(|_| "?".into(), |s| s.trim().to_string())
        );
    }
    if results.values().flatten().any(|r| r.cut_short) {
        println!("NOTE: some windows were cut short: a sender ran out of pre-built datagrams.");
    }
    Ok(Outcome {
        scenario: "ingest-udp",
        results: json!({
            "pids": cfg.pids,
            "sender_threads": cfg.senders,
            "sender_cpu": cfg.cpu,
            "senders_alone_per_sec": cfg.send_rate,
            "settle_secs": cfg.settle.as_secs_f64(),
            "window_secs": cfg.window.as_secs_f64(),
            "aead_micro_ns": {
                "open_shared_ok": ok,
                "open_shared_wrong_key": wrong,
                "open_master": master,
                "per_rep": micro,
            },
            "ratios": ratios,
            "cpu_ns_per_read_per_extra_key": slopes,
            "runs": runs_json,
        }),
        goals: Vec::new(),
    })
}
