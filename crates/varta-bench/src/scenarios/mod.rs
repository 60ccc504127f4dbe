//! One module per scenario; each returns its results and goals.

pub mod alerts;
pub mod beat;
pub mod churn;
pub mod detect;
pub mod idle;
pub mod ingest;
pub mod ingest_udp;
pub mod recovery;
pub mod scale;
pub mod scrape;
pub mod soak;

/// A markdown table printed with padded columns (readable raw and rendered).
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn print(&self) {
        let cols = self.header.len();
        let width = |c: usize| {
            self.rows
                .iter()
                .filter_map(|r| r.get(c))
                .chain(std::iter::once(&self.header[c]))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..cols).map(width).collect();
        let line = |cells: &[String]| {
            let mut s = String::from("|");
            for (c, w) in widths.iter().enumerate() {
                let cell = cells.get(c).map_or("", String::as_str);
                let pad = w - cell.chars().count();
                s.push_str(&format!(" {cell}{} |", " ".repeat(pad)));
            }
            s
        };
        println!("{}", line(&self.header));
        let mut sep = String::from("|");
        for w in &widths {
            sep.push_str(&format!("{}|", "-".repeat(w + 2)));
        }
        println!("{sep}");
        for r in &self.rows {
            println!("{}", line(r));
        }
    }
}

/// The variants in their order for repetition `rep`: rotated, so each goes
/// first in turn and slow drift of the machine hits all alike.
pub fn rotated<T: Copy>(items: &[T], rep: usize) -> Vec<T> {
    let n = items.len();
    (0..n).map(|i| items[(i + rep) % n]).collect()
}

/// SplitMix64: a seeded, dependency-free PRNG for kill and stop times.
pub(crate) struct SplitMix(pub(crate) u64);

impl SplitMix {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Calls `act(i)` once for each of `n` agents, at seeded random instants
/// between `earliest_ms` and `span_ms` after the call, in time order
/// (the stall schedules of `detect`, `recovery`, `scrape` and `alerts`:
/// the same seed gives every observer the same schedule).
pub(crate) fn at_random_instants(
    seed: u64,
    n: usize,
    earliest_ms: u64,
    span_ms: u64,
    mut act: impl FnMut(usize) -> crate::procs::Res<()>,
) -> crate::procs::Res<()> {
    let mut rng = SplitMix(seed);
    let mut schedule: Vec<(u64, usize)> = (0..n)
        .map(|i| (earliest_ms + rng.next() % (span_ms - earliest_ms), i))
        .collect();
    schedule.sort_unstable();
    let start = std::time::Instant::now();
    for &(at_ms, i) in &schedule {
        let due = std::time::Duration::from_millis(at_ms);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        act(i)?;
    }
    Ok(())
}

/// A thread collecting one sender's (nonce, send time) records.
pub(crate) type ReportReader = std::thread::JoinHandle<Vec<(u64, u64)>>;

/// One thread per reporting sender, reading its (nonce, send time)
/// records until its pipe closes.
pub(crate) fn report_readers(
    senders: &mut [crate::procs::Sender],
) -> crate::procs::Res<Vec<ReportReader>> {
    let readers: Vec<_> = senders
        .iter_mut()
        .filter_map(|k| k.stdout.take())
        .map(|out| std::thread::spawn(move || read_reports(out)))
        .collect();
    if readers.len() != senders.len() {
        return Err("a sender has no stdout pipe".into());
    }
    Ok(readers)
}

/// Reads an agent's (nonce, send time) records until its pipe closes.
fn read_reports(mut out: std::process::ChildStdout) -> Vec<(u64, u64)> {
    use std::io::Read;
    let mut v = Vec::new();
    let mut rec = [0u8; crate::procs::REPORT_LEN];
    while out.read_exact(&mut rec).is_ok() {
        let mut n = [0u8; 8];
        let mut t = [0u8; 8];
        n.copy_from_slice(&rec[..8]);
        t.copy_from_slice(&rec[8..16]);
        v.push((u64::from_le_bytes(n), u64::from_le_bytes(t)));
    }
    v
}
