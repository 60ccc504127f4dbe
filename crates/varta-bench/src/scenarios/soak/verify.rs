//! soak, the checks: the export file tallied by kind, the observer's event
//! counters from `/metrics`, the two compared, deaths and stalls matched
//! to the agents, and RSS growth.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::procs::Res;

/// The TSV `kind` column an event kind (`varta_events_total{kind}`) is
/// written under, or None when it writes no TSV line: `beat` (the soak runs
/// with `--no-export-beats`), `identified` (identity is in the JSON export
/// only) and `recovery` (audit log and JSON only). See
/// crates/varta-watch/src/export/format.rs.
pub(super) fn tsv_kind(event_kind: &str) -> Option<&str> {
    match event_kind {
        "beat" | "identified" | "recovery" => None,
        "auth_failure" | "origin_conflict" | "namespace_conflict" => Some("mismatch"),
        "decode_error" | "truncated" => Some("decode"),
        k => Some(k),
    }
}

/// The export file, tallied.
#[derive(Default, Debug)]
pub(super) struct ExportTally {
    pub(super) lines: u64,
    pub(super) by_kind: BTreeMap<String, u64>,
    /// Pids of `exit` and `stall` lines, sorted (duplicates kept).
    pub(super) exit_pids: Vec<u32>,
    pub(super) stall_pids: Vec<u32>,
    /// Lines without six tab-separated columns, or a trailing fragment.
    pub(super) malformed: u64,
}

pub(super) fn tally_export(path: &Path) -> Res<ExportTally> {
    Ok(tally_text(&std::fs::read(path)?))
}

pub(super) fn tally_text(data: &[u8]) -> ExportTally {
    let mut t = ExportTally::default();
    let mut rest = data;
    while !rest.is_empty() {
        let (line, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => {
                // A line the observer never finished.
                t.malformed += 1;
                break;
            }
        };
        rest = next;
        t.lines += 1;
        let cols: Vec<&[u8]> = line.split(|&b| b == b'\t').collect();
        if cols.len() != 6 {
            t.malformed += 1;
            continue;
        }
        let kind = String::from_utf8_lossy(cols[1]).into_owned();
        let pid = std::str::from_utf8(cols[2])
            .ok()
            .and_then(|p| p.parse::<u32>().ok());
        match (kind.as_str(), pid) {
            ("exit", Some(p)) => t.exit_pids.push(p),
            ("stall", Some(p)) => t.stall_pids.push(p),
            _ => {}
        }
        *t.by_kind.entry(kind).or_insert(0) += 1;
    }
    t.exit_pids.sort_unstable();
    t.stall_pids.sort_unstable();
    t
}

/// `varta_events_total{kind="…"}` samples of a text-format body.
pub(super) fn events_by_kind(body: &str) -> BTreeMap<String, u64> {
    body.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("varta_events_total{kind=\"")?;
            let (kind, rest) = rest.split_once('"')?;
            let value = rest.rsplit_once(' ')?.1.parse::<f64>().ok()?;
            Some((kind.to_string(), value as u64))
        })
        .collect()
}

/// The value of an unlabelled sample `name` (a counter's `_total` line).
pub(super) fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines().find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        (series == name).then(|| value.parse().ok())?
    })
}

/// One TSV kind: lines in the file and what the counters say it should hold.
#[derive(Serialize, Debug, PartialEq)]
pub(super) struct KindRow {
    pub(super) kind: String,
    pub(super) file_lines: u64,
    pub(super) counted_events: u64,
}

/// Per TSV kind, file lines next to the summed event counters of the kinds
/// written under it; every kind either side appears.
pub(super) fn compare(
    file: &BTreeMap<String, u64>,
    events: &BTreeMap<String, u64>,
) -> Vec<KindRow> {
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for (k, &n) in events {
        if let Some(t) = tsv_kind(k) {
            *want.entry(t.to_string()).or_insert(0) += n;
        }
    }
    let mut kinds: Vec<&String> = want.keys().chain(file.keys()).collect();
    kinds.sort();
    kinds.dedup();
    kinds
        .into_iter()
        .map(|k| KindRow {
            kind: k.clone(),
            file_lines: file.get(k).copied().unwrap_or(0),
            counted_events: want.get(k).copied().unwrap_or(0),
        })
        .filter(|r| r.file_lines > 0 || r.counted_events > 0)
        .collect()
}

/// Σ |file lines − counted events| over the rows.
pub(super) fn mismatch(rows: &[KindRow]) -> u64 {
    rows.iter()
        .map(|r| r.file_lines.abs_diff(r.counted_events))
        .sum()
}

/// How `expected` pids (each once) were seen in `seen_sorted`.
#[derive(Serialize, Debug, Default, PartialEq)]
pub(super) struct Matched {
    pub(super) expected: usize,
    /// Expected pids with at least one line.
    pub(super) seen: usize,
    /// Expected pids with none.
    pub(super) missing: usize,
    /// Lines beyond the first for an expected pid.
    pub(super) duplicates: usize,
    /// Lines for pids not expected at all.
    pub(super) unexpected: usize,
}

pub(super) fn match_pids(expected: &[u32], seen_sorted: &[u32]) -> Matched {
    let mut exp = expected.to_vec();
    exp.sort_unstable();
    let mut m = Matched {
        expected: exp.len(),
        ..Matched::default()
    };
    for p in &exp {
        let lo = seen_sorted.partition_point(|x| x < p);
        let hi = seen_sorted.partition_point(|x| x <= p);
        if hi > lo {
            m.seen += 1;
            m.duplicates += hi - lo - 1;
        } else {
            m.missing += 1;
        }
    }
    m.unexpected = seen_sorted
        .iter()
        .filter(|p| exp.binary_search(p).is_err())
        .count();
    m
}

/// `VmRSS` of a `/proc/<pid>/status` text, KiB.
pub(super) fn parse_vmrss(status: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        l.strip_prefix("VmRSS:")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// RSS of the first window after warm-up against the last window.
#[derive(Serialize, Debug, Clone, Copy, PartialEq)]
pub(super) struct Growth {
    /// Median RSS (KiB) over `[warmup, warmup + window)`.
    pub(super) first_kib: f64,
    /// Median RSS (KiB) over `[end − window, end]`.
    pub(super) last_kib: f64,
    /// (last − first) / first, percent.
    pub(super) pct: f64,
}

/// Growth of `samples` ((seconds since start, KiB)): None when the two
/// windows would overlap or one holds no sample.
pub(super) fn rss_growth(
    samples: &[(f64, u64)],
    warmup: f64,
    window: f64,
    end: f64,
) -> Option<Growth> {
    if warmup + window > end - window {
        return None;
    }
    let pick = |lo: f64, hi: f64| -> Vec<f64> {
        samples
            .iter()
            .filter(|(t, _)| *t >= lo && *t <= hi)
            .map(|&(_, k)| k as f64)
            .collect()
    };
    // The first window excludes its upper edge, so the windows never share a sample.
    let first = median(pick(warmup, warmup + window - 1e-9))?;
    let last = median(pick(end - window, end))?;
    Some(Growth {
        first_kib: first,
        last_kib: last,
        pct: (last - first) / first * 100.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_tally_counts_kinds_and_pids() {
        let text = b"1\tstall\t9\t3\tstall\t-\n2\texit\t8\t18446744073709551615\tcritical\t0\n\
            3\teviction\t8\t-\t-\t-\n4\texit\t7\t18446744073709551615\tcritical\t0\n\
            5\tmismatch\t6\t-\t-\torigin_conflict\nbroken line\n6\texit\t8";
        let t = tally_text(text);
        assert_eq!(t.lines, 6);
        assert_eq!(t.malformed, 2, "a short line and an unfinished one");
        assert_eq!(t.by_kind["exit"], 2);
        assert_eq!(t.by_kind["mismatch"], 1);
        assert_eq!(t.exit_pids, vec![7, 8]);
        assert_eq!(t.stall_pids, vec![9]);
    }

    #[test]
    fn counters_parse_and_compare_with_the_file() {
        let body = "# TYPE varta_events_total counter\n\
            varta_events_total{kind=\"beat\"} 1000\n\
            varta_events_total{kind=\"stall\"} 3\n\
            varta_events_total{kind=\"exit\"} 5\n\
            varta_events_total{kind=\"identified\"} 9\n\
            varta_events_total{kind=\"origin_conflict\"} 1\n\
            varta_events_total{kind=\"auth_failure\"} 1\n\
            varta_events_total{kind=\"clock_jump\"} 0\n\
            varta_export_lines_dropped_total 0\n\
            varta_export_lines_dropped_totalx 7\n";
        let ev = events_by_kind(body);
        assert_eq!(ev["beat"], 1000);
        assert_eq!(ev["clock_jump"], 0);
        assert_eq!(sample(body, "varta_export_lines_dropped_total"), Some(0.0));
        assert_eq!(sample(body, "varta_nothing_total"), None);
        let file: BTreeMap<String, u64> =
            [("stall", 3), ("exit", 4), ("mismatch", 2), ("eviction", 1)]
                .into_iter()
                .map(|(k, n)| (k.to_string(), n))
                .collect();
        let rows = compare(&file, &ev);
        // beat and identified write no TSV line; zero rows are left out.
        let kinds: Vec<&str> = rows.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(kinds, ["eviction", "exit", "mismatch", "stall"]);
        assert_eq!(
            rows[2].counted_events, 2,
            "two kinds are written as mismatch"
        );
        // exit 4 vs 5, eviction 1 vs 0.
        assert_eq!(mismatch(&rows), 2);
    }

    #[test]
    fn pids_are_matched_once_each() {
        let m = match_pids(&[5, 3, 9], &[1, 3, 3, 5]);
        assert_eq!(
            m,
            Matched {
                expected: 3,
                seen: 2,
                missing: 1,
                duplicates: 1,
                unexpected: 1
            }
        );
    }

    #[test]
    fn rss_growth_compares_window_medians() {
        assert_eq!(
            parse_vmrss("Name:\tx\nVmPeak:\t 9 kB\nVmRSS:\t   12345 kB\n"),
            Some(12345)
        );
        assert_eq!(parse_vmrss("Name:\tx\n"), None);
        // Warm-up climbs to 1000 KiB; then flat with one spike; the last
        // window sits at 1030.
        let mut s: Vec<(f64, u64)> = (0..10).map(|t| (t as f64, 100 * t as u64)).collect();
        s.extend((10..30).map(|t| (t as f64, if t == 12 { 5000 } else { 1000 })));
        s.extend((30..=40).map(|t| (t as f64, 1030)));
        let g = rss_growth(&s, 10.0, 10.0, 40.0).unwrap();
        assert_eq!((g.first_kib, g.last_kib), (1000.0, 1030.0));
        assert!((g.pct - 3.0).abs() < 1e-9);
        // Shrinking is negative growth.
        let flat: Vec<(f64, u64)> = (0..=40)
            .map(|t| (t as f64, if t < 20 { 1000 } else { 900 }))
            .collect();
        assert!((rss_growth(&flat, 5.0, 10.0, 40.0).unwrap().pct + 10.0).abs() < 1e-9);
        // Overlapping windows, or no sample in one: nothing measured.
        assert_eq!(rss_growth(&s, 10.0, 20.0, 40.0), None);
        assert_eq!(rss_growth(&s, 50.0, 5.0, 100.0), None);
    }
}
