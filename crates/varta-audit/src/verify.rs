//! Verifying audit files: header, parse, seq continuity and the hash chain,
//! across rotated generations given oldest first.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::chain::{ChainHash, ChainKey, ZERO_CHAIN};
use crate::record::{parse_line_as, ParseError, Record, Schema};
use crate::tail::leading_seq;
use crate::{HEADER_V1_PREFIX, HEADER_V2, HEADER_V3};

/// Longest line the verifier reads (a real record is a few hundred bytes);
/// bounds memory on garbage input.
pub const MAX_LINE: usize = 1 << 20;

/// What a successful verification covered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Records checked.
    pub records: u64,
    /// Seq of the first record.
    pub first_seq: Option<u64>,
    /// Seq of the last record.
    pub last_seq: Option<u64>,
    /// `boot` records among them.
    pub boots: u64,
    /// Files checked.
    pub files: usize,
    /// Chain value of the last record (what a writer continues from); for
    /// an unchained last record, the chain it would have had (the value a
    /// writer continuing it seals it with).
    pub last_chain: Option<ChainHash>,
    /// Seq of the first record when it is a `boot` record whose
    /// `prev_chain` column anchored the chain (a rotated generation or a
    /// resumed file whose earlier records were not given): nothing before
    /// it was checked.
    pub anchored_at: Option<u64>,
    /// Files with a schema v3 header (the others are v2).
    pub v3_files: usize,
    /// Records whose chain column is `-` (written by 0.2.0 built without
    /// `audit-chain`), counted in `records` too. Nothing in them can be
    /// verified: only their seq order is checked.
    pub unchained: u64,
    /// Seq of the first and of the last unchained record.
    pub unchained_seqs: Option<(u64, u64)>,
    /// Of the unchained records, those sealed: a chained `boot` record
    /// after them carries, in its `prev_chain` column, the chain they would
    /// have had (what our observer writes when it continues such a file),
    /// so an edit made to them after that boot record is detected.
    pub sealed: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = |n: u64, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
        write!(f, "{}", plural(self.records, "record"))?;
        if let (Some(a), Some(b)) = (self.first_seq, self.last_seq) {
            write!(f, " (seq {a}..{b})")?;
        }
        write!(
            f,
            ", {}, {}",
            plural(self.boots, "boot"),
            plural(self.files as u64, "file")
        )?;
        if self.v3_files == self.files && self.files > 0 {
            f.write_str(", schema v3")?;
        } else if self.v3_files > 0 {
            write!(
                f,
                ", schema v2 and v3 ({} v3)",
                plural(self.v3_files as u64, "file")
            )?;
        }
        if self.unchained > 0 {
            let (a, b) = self.unchained_seqs.unwrap_or_default();
            write!(
                f,
                "; {} of them UNCHAINED (chain column `-`, seq {a}..{b}: written by varta-watch 0.2.0 built without audit-chain) and NOT verifiable",
                self.unchained
            )?;
            match (self.sealed, self.unchained - self.sealed) {
                (0, _) => f.write_str(", not sealed")?,
                (s, 0) => write!(f, ", {s} sealed by the chain after them (later edits to them are detected)")?,
                (s, u) => write!(f, ", {s} sealed by the chain after them (later edits to them are detected), {u} not sealed")?,
            }
        }
        if let Some(seq) = self.anchored_at {
            write!(
                f,
                "; chain anchored at seq {seq}'s prev_chain (earlier records not given)"
            )?;
        }
        Ok(())
    }
}

/// What is wrong with the first bad line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The file does not start with the v2 header.
    MissingHeader,
    /// A legacy v1 file: no seq, no chain, nothing to verify.
    LegacyV1,
    /// The line is not a record.
    Unparseable(ParseError),
    /// Seq equal to or below the previous one.
    SeqNotIncreasing {
        /// The previous record's seq.
        prev: u64,
        /// This record's seq.
        got: u64,
    },
    /// Seq jumps forward.
    SeqGap {
        /// The previous record's seq.
        prev: u64,
        /// This record's seq.
        got: u64,
    },
    /// A `boot` record's `prev_chain` column is not the previous chain.
    BootPrevMismatch,
    /// A `boot` record after unchained records does not carry the chain
    /// they would have had: one of them was edited, removed or added after
    /// the observer sealed them with this record.
    SealMismatch,
    /// The chain column is not the link computed from the previous record.
    ChainMismatch {
        /// The very first record failed without a key: the file may be keyed.
        maybe_keyed: bool,
    },
    /// A key was given but the file verifies as a plain SHA-256 chain.
    PlainChainWithKey,
    /// The last line has no newline.
    TornLine,
    /// A line longer than [`MAX_LINE`].
    LineTooLong,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::MissingHeader => write!(
                f,
                "missing header line `{}` (or `{}`)",
                HEADER_V2.trim_end(),
                HEADER_V3.trim_end()
            ),
            Problem::LegacyV1 => f.write_str(
                "legacy v1 file: v1 records carry no seq or chain and cannot be verified",
            ),
            Problem::Unparseable(e) => write!(f, "unparseable record: {e}"),
            Problem::SeqNotIncreasing { prev, got } => write!(
                f,
                "seq {got} after seq {prev}: seq not increasing (records reordered or duplicated)"
            ),
            Problem::SeqGap { prev, got } => write!(
                f,
                "seq {got} after seq {prev} (expected {}): a record was removed or records were reordered",
                prev + 1
            ),
            Problem::BootPrevMismatch => f.write_str(
                "boot record's prev_chain column is not the previous record's chain",
            ),
            Problem::SealMismatch => f.write_str(
                "boot record's prev_chain column does not seal the unchained records before it: one of them was modified, removed or added after this record was written",
            ),
            Problem::ChainMismatch { maybe_keyed } => {
                f.write_str("chain mismatch: this record (or the one before it) was modified")?;
                if *maybe_keyed {
                    f.write_str("; if the file was written with --recovery-audit-key-file pass --key-file")?;
                }
                Ok(())
            }
            Problem::PlainChainWithKey => f.write_str(
                "file uses a plain SHA-256 chain, not HMAC: it was written without --recovery-audit-key-file, or re-chained by someone without the key",
            ),
            Problem::TornLine => f.write_str(
                "last line has no newline (torn write); the observer cuts it off on its next start",
            ),
            Problem::LineTooLong => write!(f, "line longer than {MAX_LINE} bytes"),
        }
    }
}

/// Where and why verification failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The file.
    pub path: PathBuf,
    /// 1-based line number (the header is line 1).
    pub line: u64,
    /// The bad record's seq, when its seq column could be read.
    pub seq: Option<u64>,
    /// Why.
    pub problem: Problem,
    /// Records verified before it (0: the very first record failed).
    pub records_before: u64,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} line {}", self.path.display(), self.line)?;
        if let Some(s) = self.seq {
            write!(f, " (seq {s})")?;
        }
        write!(f, ": {}", self.problem)
    }
}

/// Why [`verify_files`] failed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A file could not be read (missing, permission, I/O error).
    #[error("cannot read {}: {source}", .path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The content does not verify.
    #[error("{0}")]
    Invalid(Box<Failure>),
}

/// Streaming verifier: feed files oldest first, then [`Verifier::finish`].
#[derive(Debug)]
pub struct Verifier {
    key: ChainKey,
    /// The running chain value: the last record's chain, or for an
    /// unchained record the chain it would have had (its "virtual" link).
    prev: Option<ChainHash>,
    /// Unchained records since the last chained one (not yet sealed).
    pending_unchained: u64,
    /// The next record is the first of its file.
    first_in_file: bool,
    summary: Summary,
}

impl Verifier {
    /// A verifier checking links with `key`.
    pub fn new(key: ChainKey) -> Verifier {
        Verifier {
            key,
            prev: None,
            pending_unchained: 0,
            first_in_file: true,
            summary: Summary::default(),
        }
    }

    /// Checks one file's content; `path` only labels failures.
    pub fn check_reader<R: BufRead>(
        &mut self,
        path: &Path,
        mut reader: R,
    ) -> Result<(), VerifyError> {
        self.summary.files += 1;
        self.first_in_file = true;
        let mut schema = Schema::V2;
        let mut buf = Vec::new();
        let mut line_no = 0u64;
        loop {
            buf.clear();
            let n = (&mut reader)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut buf)
                .map_err(|source| VerifyError::Unreadable {
                    path: path.to_path_buf(),
                    source,
                })?;
            if n == 0 {
                break;
            }
            line_no += 1;
            let fail = |problem: Problem, seq: Option<u64>, before: u64| {
                Err(VerifyError::Invalid(Box::new(Failure {
                    path: path.to_path_buf(),
                    line: line_no,
                    seq,
                    problem,
                    records_before: before,
                })))
            };
            // Chained records verified so far: the "maybe keyed" hint needs
            // to know whether the first *link* failed.
            let before = self.summary.records - self.summary.unchained;
            let Some(content) = buf.strip_suffix(b"\n") else {
                let p = if buf.len() > MAX_LINE {
                    Problem::LineTooLong
                } else if line_no == 1 {
                    Problem::MissingHeader
                } else {
                    Problem::TornLine
                };
                return fail(p, leading_seq(&buf), before);
            };
            if line_no == 1 {
                if let Some(s) = Schema::from_header_line(content) {
                    schema = s;
                    if s == Schema::V3 {
                        self.summary.v3_files += 1;
                    }
                    continue;
                }
                let p = if content.starts_with(HEADER_V1_PREFIX.as_bytes()) {
                    Problem::LegacyV1
                } else {
                    Problem::MissingHeader
                };
                return fail(p, None, before);
            }
            if let Err((p, seq)) = self.check_line(content, schema) {
                return fail(p, seq, before);
            }
        }
        if line_no == 0 {
            return Err(VerifyError::Invalid(Box::new(Failure {
                path: path.to_path_buf(),
                line: 1,
                seq: None,
                problem: Problem::MissingHeader,
                records_before: self.summary.records - self.summary.unchained,
            })));
        }
        Ok(())
    }

    fn check_line(&mut self, content: &[u8], schema: Schema) -> Result<(), (Problem, Option<u64>)> {
        let p = parse_line_as(content, schema)
            .map_err(|e| (Problem::Unparseable(e), leading_seq(content)))?;
        let seq = Some(p.seq);
        if let Some(prev) = self.summary.last_seq {
            if p.seq <= prev {
                return Err((Problem::SeqNotIncreasing { prev, got: p.seq }, seq));
            }
            if Some(p.seq) != prev.checked_add(1) {
                return Err((Problem::SeqGap { prev, got: p.seq }, seq));
            }
        }
        let boot_prev = match &p.record {
            Record::Boot { prev_chain, .. } => *prev_chain,
            _ => None,
        };
        let first_in_file = std::mem::replace(&mut self.first_in_file, false);
        if !p.chained {
            // Nothing to check. Link it "virtually" (the chain it would
            // have had) so a chained record after it can seal it. The
            // first record of a file starts from its boot column (zero for
            // `-`), so the value depends only on this file: the observer
            // computes it from the live file alone, and `--with-rotated`
            // gets the same. Unchained boot columns are not compared: 0.2.0
            // without the chain writes zeros there.
            let base = match self.prev {
                Some(running) if !first_in_file => running,
                _ => boot_prev.unwrap_or(ZERO_CHAIN),
            };
            let virt = self
                .key
                .next(&base, p.record.kind(), &content[..p.body_len]);
            if first_in_file {
                // The virtual chain restarted: a seal in this file does not
                // cover unchained records of an older one.
                self.pending_unchained = 0;
            }
            self.pending_unchained += 1;
            let s = &mut self.summary;
            s.unchained += 1;
            s.unchained_seqs = Some(match s.unchained_seqs {
                Some((a, _)) => (a, p.seq),
                None => (p.seq, p.seq),
            });
            self.advance(p.seq, virt, &p.record);
            return Ok(());
        }
        let prev = match (self.prev, boot_prev) {
            // A chained boot record right after unchained ones: ours seals
            // them (its column is their virtual chain); 0.2.0 built with
            // the chain, resuming an unchained file, starts from zero (`-`
            // or zeros in the column) and leaves them unsealed. Any other
            // column means the unchained records were edited after the
            // seal.
            (Some(running), col) if self.pending_unchained > 0 && p.record.kind() == "boot" => {
                match col {
                    Some(c) if c == running => {
                        self.summary.sealed += self.pending_unchained;
                        running
                    }
                    None => ZERO_CHAIN,
                    Some(c) if c == ZERO_CHAIN => ZERO_CHAIN,
                    Some(_) => return Err((Problem::SealMismatch, seq)),
                }
            }
            (Some(running), Some(col)) if running != col => {
                return Err((Problem::BootPrevMismatch, seq))
            }
            (Some(running), _) => running,
            // The first record anchors the chain: a rotated generation
            // starts from its boot record's prev_chain column, a fresh file
            // from zero.
            (None, Some(col)) => {
                self.summary.anchored_at = Some(p.seq);
                col
            }
            (None, None) => ZERO_CHAIN,
        };
        self.pending_unchained = 0;
        let expected = self
            .key
            .next(&prev, p.record.kind(), &content[..p.body_len]);
        if expected != p.chain {
            return Err((Problem::ChainMismatch { maybe_keyed: false }, seq));
        }
        self.advance(p.seq, p.chain, &p.record);
        Ok(())
    }

    /// Counts a record and moves the running chain on.
    fn advance(&mut self, seq: u64, chain: ChainHash, record: &Record) {
        let s = &mut self.summary;
        s.records += 1;
        s.first_seq.get_or_insert(seq);
        s.last_seq = Some(seq);
        s.last_chain = Some(chain);
        if matches!(record, Record::Boot { .. }) {
            s.boots += 1;
        }
        self.prev = Some(chain);
    }

    /// What was verified.
    pub fn finish(self) -> Summary {
        self.summary
    }
}

/// Reads an open file with `pread`, leaving its file offset alone (the
/// writer's descriptor is shared).
struct PreadReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for PreadReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let want = buf
            .len()
            .min(usize::try_from(self.end - self.pos).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Verifies the first `len` bytes of one open file (the whole of it, not a
/// tail window) as a chain on its own: what a writer needs before it
/// continues a file whose last record is unchained, to learn the value it
/// seals those records with ([`Summary::last_chain`]). `path` only labels
/// failures.
pub fn verify_open_file(
    file: &File,
    len: u64,
    path: &Path,
    key: &ChainKey,
) -> Result<Summary, VerifyError> {
    let mut v = Verifier::new(key.clone());
    let reader = PreadReader {
        file,
        pos: 0,
        end: len,
    };
    v.check_reader(path, BufReader::with_capacity(64 * 1024, reader))?;
    Ok(v.finish())
}

fn run(paths: &[PathBuf], key: &ChainKey) -> Result<Summary, VerifyError> {
    let mut v = Verifier::new(key.clone());
    for path in paths {
        let file = File::open(path).map_err(|source| VerifyError::Unreadable {
            path: path.clone(),
            source,
        })?;
        v.check_reader(path, BufReader::with_capacity(64 * 1024, file))?;
    }
    Ok(v.finish())
}

/// Verifies `paths` as one chain, oldest first (`PATH.5` … `PATH.1`, `PATH`).
/// Each file is read in the schema its header declares (v2 or v3), so a
/// chain that changed schema at a rotation or restart verifies.
///
/// A keyed verification of a file that verifies as plain SHA-256 fails with
/// [`Problem::PlainChainWithKey`]; an unkeyed verification that fails at
/// the very first record says the file may be keyed.
pub fn verify_files(paths: &[PathBuf], key: &ChainKey) -> Result<Summary, VerifyError> {
    match run(paths, key) {
        Err(VerifyError::Invalid(mut f))
            if f.records_before == 0 && matches!(f.problem, Problem::ChainMismatch { .. }) =>
        {
            if key.is_keyed() {
                if run(paths, &ChainKey::Plain).is_ok() {
                    f.problem = Problem::PlainChainWithKey;
                }
            } else {
                f.problem = Problem::ChainMismatch { maybe_keyed: true };
            }
            Err(VerifyError::Invalid(f))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::BootReason;

    fn file(n: u64, key: &ChainKey) -> String {
        let mut s = String::from(HEADER_V2);
        let mut prev = ZERO_CHAIN;
        for seq in 1..=n {
            let rec = if seq == 1 {
                Record::Boot {
                    wallclock_ms: 1,
                    observer_ns: 0,
                    daemon_pid: 7,
                    prev_chain: None,
                    reason: BootReason::Fresh,
                }
            } else {
                Record::Refused {
                    wallclock_ms: seq,
                    observer_ns: seq,
                    agent_pid: 100 + seq as u32,
                    reason: "given_up".into(),
                }
            };
            let (l, c) = rec.to_line(seq, key, &prev);
            s.push_str(&l);
            prev = c;
        }
        s
    }

    fn check(text: &str, key: &ChainKey) -> Result<Summary, Box<Failure>> {
        let mut v = Verifier::new(key.clone());
        match v.check_reader(Path::new("f"), text.as_bytes()) {
            Ok(()) => Ok(v.finish()),
            Err(VerifyError::Invalid(f)) => Err(f),
            Err(e) => panic!("{e}"),
        }
    }

    /// A v3 file: boot, then refused records with agent columns.
    fn file_v3(n: u64, first_seq: u64, prev0: ChainHash, key: &ChainKey) -> (String, ChainHash) {
        let mut s = String::from(crate::HEADER_V3);
        let mut prev = prev0;
        for seq in first_seq..first_seq + n {
            let rec = if seq == first_seq {
                Record::Boot {
                    wallclock_ms: 1,
                    observer_ns: 0,
                    daemon_pid: 7,
                    prev_chain: (seq > 1).then_some(prev0),
                    reason: if seq > 1 {
                        BootReason::Rotation
                    } else {
                        BootReason::Fresh
                    },
                }
            } else {
                Record::Refused {
                    wallclock_ms: seq,
                    observer_ns: seq,
                    agent_pid: 100 + seq as u32,
                    reason: "given_up".into(),
                }
            };
            let agent = crate::Agent::new("billing", Some("billing.service"));
            let (l, c) = rec.to_line_as(seq, key, &prev, Schema::V3, Some(&agent));
            s.push_str(&l);
            prev = c;
        }
        (s, prev)
    }

    #[test]
    fn v3_files_verify_and_edits_of_agent_columns_are_caught() {
        let (text, _) = file_v3(4, 1, ZERO_CHAIN, &ChainKey::Plain);
        assert!(text.contains("\tgiven_up\tbilling\tbilling.service\t"));
        let s = check(&text, &ChainKey::Plain).unwrap();
        assert_eq!((s.records, s.v3_files), (4, 1));
        assert_eq!(
            s.to_string(),
            "4 records (seq 1..4), 1 boot, 1 file, schema v3"
        );
        let edited = text.replacen("\tbilling\t", "\tbillinG\t", 1);
        let f = check(&edited, &ChainKey::Plain).unwrap_err();
        assert_eq!(f.problem, Problem::ChainMismatch { maybe_keyed: false });
        // A v3 file read as v2 (header swapped) does not parse.
        let swapped = text.replacen(crate::HEADER_V3, HEADER_V2, 1);
        let f = check(&swapped, &ChainKey::Plain).unwrap_err();
        assert!(matches!(f.problem, Problem::Unparseable(_)), "{f}");
    }

    #[test]
    fn a_chain_may_change_schema_at_a_file_boundary() {
        let old = file(3, &ChainKey::Plain);
        let mut v = Verifier::new(ChainKey::Plain);
        v.check_reader(Path::new("a.1"), old.as_bytes()).unwrap();
        let last = v.summary.last_chain.unwrap();
        let (new, _) = file_v3(3, 4, last, &ChainKey::Plain);
        v.check_reader(Path::new("a"), new.as_bytes()).unwrap();
        let s = v.finish();
        assert_eq!((s.records, s.files, s.v3_files), (6, 2, 1));
        assert!(
            s.to_string()
                .ends_with("2 files, schema v2 and v3 (1 file v3)"),
            "{s}"
        );
    }

    #[test]
    fn valid_file_summary() {
        let s = check(&file(4, &ChainKey::Plain), &ChainKey::Plain).unwrap();
        assert_eq!(
            (s.records, s.first_seq, s.last_seq, s.boots),
            (4, Some(1), Some(4), 1)
        );
        assert_eq!(s.to_string(), "4 records (seq 1..4), 1 boot, 1 file");
    }

    #[test]
    fn edits_are_located() {
        let text = file(5, &ChainKey::Plain);
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        // Byte edit in record seq 3 (line 4).
        let edited = text.replacen("\t103\t", "\t104\t", 1);
        let f = check(&edited, &ChainKey::Plain).unwrap_err();
        assert_eq!((f.line, f.seq), (4, Some(3)));
        assert_eq!(f.problem, Problem::ChainMismatch { maybe_keyed: false });
        // Line removed.
        let removed: String = [lines[0], lines[1], lines[2], lines[4], lines[5]].concat();
        let f = check(&removed, &ChainKey::Plain).unwrap_err();
        assert_eq!((f.line, f.seq), (4, Some(4)));
        assert_eq!(f.problem, Problem::SeqGap { prev: 2, got: 4 });
        // Duplicate inserted.
        let dup: String = [lines[0], lines[1], lines[2], lines[2], lines[3]].concat();
        let f = check(&dup, &ChainKey::Plain).unwrap_err();
        assert_eq!(f.problem, Problem::SeqNotIncreasing { prev: 2, got: 2 });
        // Torn last line.
        let f = check(&text[..text.len() - 1], &ChainKey::Plain).unwrap_err();
        assert_eq!((f.line, f.problem.clone()), (6, Problem::TornLine));
        // No header.
        let f = check(&text[HEADER_V2.len()..], &ChainKey::Plain).unwrap_err();
        assert_eq!((f.line, f.problem.clone()), (1, Problem::MissingHeader));
        let f = check("", &ChainKey::Plain).unwrap_err();
        assert_eq!(f.problem, Problem::MissingHeader);
    }

    /// `n` unchained records (what 0.2.0 without `audit-chain` writes)
    /// from `first`, a boot record first.
    fn unchained(first: u64, n: u64, reason: BootReason) -> String {
        (first..first + n)
            .map(|seq| {
                let rec = if seq == first {
                    Record::Boot {
                        wallclock_ms: 1,
                        observer_ns: 0,
                        daemon_pid: 7,
                        // 0.2.0 without the chain writes zeros on resume.
                        prev_chain: (reason != BootReason::Fresh).then_some(ZERO_CHAIN),
                        reason,
                    }
                } else {
                    Record::Refused {
                        wallclock_ms: seq,
                        observer_ns: seq,
                        agent_pid: 100 + seq as u32,
                        reason: "debounce_capacity".into(),
                    }
                };
                rec.to_unchained_line(seq)
            })
            .collect()
    }

    /// What our observer appends to a file whose running (virtual) chain
    /// is `seal`: a resume boot carrying it, then one refused record.
    fn sealing_boot(seq: u64, seal: ChainHash, key: &ChainKey) -> String {
        let boot = Record::Boot {
            wallclock_ms: 9,
            observer_ns: 0,
            daemon_pid: 8,
            prev_chain: Some(seal),
            reason: BootReason::Resume,
        };
        let (l1, c1) = boot.to_line(seq, key, &seal);
        let rec = Record::Refused {
            wallclock_ms: 10,
            observer_ns: 1,
            agent_pid: 5,
            reason: "given_up".into(),
        };
        let (l2, _) = rec.to_line(seq + 1, key, &c1);
        l1 + &l2
    }

    #[test]
    fn unchained_records_are_counted_and_said_not_verifiable() {
        let text = format!(
            "{HEADER_V2}{}{}",
            unchained(1, 3, BootReason::Fresh),
            unchained(4, 2, BootReason::Resume)
        );
        let s = check(&text, &ChainKey::Plain).unwrap();
        assert_eq!((s.records, s.boots, s.unchained), (5, 2, 5));
        assert_eq!((s.unchained_seqs, s.sealed), (Some((1, 5)), 0));
        assert_eq!(
            s.to_string(),
            "5 records (seq 1..5), 2 boots, 1 file; 5 of them UNCHAINED (chain column `-`, seq 1..5: written by varta-watch 0.2.0 built without audit-chain) and NOT verifiable, not sealed"
        );
        // Seq order is still checked.
        let gap = text.replacen("\n3\t", "\n9\t", 1);
        let f = check(&gap, &ChainKey::Plain).unwrap_err();
        assert_eq!(f.problem, Problem::SeqGap { prev: 2, got: 9 });
    }

    #[test]
    fn a_sealing_boot_record_detects_later_edits_of_unchained_records() {
        let old = format!("{HEADER_V2}{}", unchained(1, 4, BootReason::Fresh));
        for key in [ChainKey::Plain, ChainKey::from_hex(&[b'3'; 64]).unwrap()] {
            let seal = check(&old, &key).unwrap().last_chain.unwrap();
            let text = format!("{old}{}", sealing_boot(5, seal, &key));
            let s = check(&text, &key).unwrap();
            assert_eq!((s.records, s.unchained, s.sealed), (6, 4, 4));
            assert!(
                s.to_string().ends_with(
                    "4 sealed by the chain after them (later edits to them are detected)"
                ),
                "{s}"
            );
            let edited = text.replacen("\t103\t", "\t104\t", 1);
            let f = check(&edited, &key).unwrap_err();
            assert_eq!((f.seq, f.problem.clone()), (Some(5), Problem::SealMismatch));
            assert!(f.to_string().contains("was modified"), "{f}");
        }
    }

    #[test]
    fn the_seal_of_a_file_does_not_depend_on_its_older_generations() {
        // PATH.1: unchained; PATH: 0.2.0's unchained rotation boot (zeros)
        // then our sealing records. The seal is computed from PATH alone
        // (what the observer reads), and verifies with PATH.1 given too.
        let older = format!("{HEADER_V2}{}", unchained(1, 3, BootReason::Fresh));
        let live_old = format!("{HEADER_V2}{}", unchained(4, 2, BootReason::Rotation));
        let seal = check(&live_old, &ChainKey::Plain)
            .unwrap()
            .last_chain
            .unwrap();
        let live = format!("{live_old}{}", sealing_boot(6, seal, &ChainKey::Plain));
        assert_eq!(check(&live, &ChainKey::Plain).unwrap().sealed, 2);
        let mut v = Verifier::new(ChainKey::Plain);
        v.check_reader(Path::new("a.1"), older.as_bytes()).unwrap();
        v.check_reader(Path::new("a"), live.as_bytes()).unwrap();
        let s = v.finish();
        assert_eq!((s.records, s.unchained, s.sealed), (7, 5, 2));
        assert!(
            s.to_string().contains(
                "2 sealed by the chain after them (later edits to them are detected), 3 not sealed"
            ),
            "{s}"
        );
    }

    #[test]
    fn after_unchained_records_only_a_zero_anchor_or_the_seal_is_accepted() {
        let old = format!("{HEADER_V2}{}", unchained(1, 2, BootReason::Fresh));
        // 0.2.0 with the chain resuming: boot column zeros (or `-`), chain
        // from zero.
        for col in [Some(ZERO_CHAIN), None] {
            let boot = Record::Boot {
                wallclock_ms: 3,
                observer_ns: 0,
                daemon_pid: 9,
                prev_chain: col,
                reason: BootReason::Resume,
            };
            let (l, _) = boot.to_line(3, &ChainKey::Plain, &ZERO_CHAIN);
            let s = check(&format!("{old}{l}"), &ChainKey::Plain).unwrap();
            assert_eq!((s.records, s.unchained, s.sealed), (3, 2, 0));
        }
        // Any other column is a seal that no longer matches.
        let text = format!("{old}{}", sealing_boot(3, [1; 32], &ChainKey::Plain));
        let f = check(&text, &ChainKey::Plain).unwrap_err();
        assert_eq!(f.problem, Problem::SealMismatch);
        // A chained non-boot record cannot follow unchained ones.
        let rec = Record::Refused {
            wallclock_ms: 3,
            observer_ns: 0,
            agent_pid: 1,
            reason: "x".into(),
        };
        let (l, _) = rec.to_line(3, &ChainKey::Plain, &ZERO_CHAIN);
        let f = check(&format!("{old}{l}"), &ChainKey::Plain).unwrap_err();
        assert_eq!(f.problem, Problem::ChainMismatch { maybe_keyed: false });
    }

    #[test]
    fn keyed_and_plain_modes() {
        let key = ChainKey::from_hex(&[b'5'; 64]).unwrap();
        let keyed = file(3, &key);
        assert!(check(&keyed, &key).is_ok());
        let f = check(&keyed, &ChainKey::Plain).unwrap_err();
        assert_eq!((f.line, f.records_before), (2, 0));
        let other = ChainKey::from_hex(&[b'6'; 64]).unwrap();
        assert!(check(&keyed, &other).is_err());
    }
}
