//! Probing an existing audit file before appending to it: which header it
//! has, its last complete record (seq and chain to continue from) and whether
//! a torn tail must be cut off. Reads the first line and at most
//! [`TAIL_WINDOW`] bytes of the end — never the whole file.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::chain::{ChainHash, ChainKey, ZERO_CHAIN};
use crate::record::{parse_line_as, ParseError, ParsedLine, Record, Schema};
use crate::{HEADER_V1_PREFIX, HEADER_V2, HEADER_V3};

/// Bytes read from the end of the file. A record line is a few hundred bytes
/// (paths are the only long fields), so this always holds many records.
pub const TAIL_WINDOW: u64 = 64 * 1024;

/// What the file starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The file is empty.
    Empty,
    /// A v2 header.
    V2,
    /// A v3 header (ours: agent `name` and `unit` columns).
    V3,
    /// A prefix of the v2 header and nothing else: a crash while the header
    /// was being written.
    TornHeader,
    /// A legacy v1 header (records without seq and chain).
    LegacyV1,
    /// Anything else: not an audit file.
    Unknown,
}

impl Header {
    /// The schema of a v2 or v3 header.
    pub fn schema(self) -> Option<Schema> {
        match self {
            Header::V2 => Some(Schema::V2),
            Header::V3 => Some(Schema::V3),
            _ => None,
        }
    }
}

/// The last complete, parseable record of a file.
#[derive(Debug, Clone)]
pub struct TailRecord {
    /// The record.
    pub line: ParsedLine,
    /// Its chained body (the line up to the tab before `chain`).
    pub body: Vec<u8>,
    /// File offset just past its newline.
    pub end: u64,
    /// The chain value it was linked from, when that can be told from the
    /// window: the previous record's chain, or for the first record of a
    /// file its `boot` `prev_chain` column (zero if `-`). For a record
    /// after an unchained one, only a `boot` record's `prev_chain` column.
    pub prev: Option<ChainHash>,
}

impl TailRecord {
    /// Whether the last link verifies with `key`: `None` when the previous
    /// chain value is unknown or the record is unchained (`-`). A
    /// `Some(false)` means the file was written in another chain mode (or
    /// with another key), or was edited.
    pub fn link_verifies(&self, key: &ChainKey) -> Option<bool> {
        if !self.line.chained {
            return None;
        }
        let prev = self.prev?;
        Some(key.next(&prev, self.line.record.kind(), &self.body) == self.line.chain)
    }
}

/// A complete line (it ends in a newline) that is not a record. A writer
/// must not cut it: only an incomplete final line is a torn write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// File offset of the line's first byte.
    pub offset: u64,
    /// Its leading `seq` column, when that is a number.
    pub seq: Option<u64>,
    /// Why it is not a record.
    pub error: ParseError,
}

/// The result of [`probe`].
#[derive(Debug, Clone)]
pub struct TailProbe {
    /// File size when probed.
    pub len: u64,
    /// What the file starts with.
    pub header: Header,
    /// The last complete record (v2 and v3 files only), when it parses.
    pub last: Option<TailRecord>,
    /// Set when the last complete line is not a record: the file cannot be
    /// continued, and nothing may be cut ([`TailProbe::last`] is `None`).
    pub bad_last: Option<BadLine>,
    /// Where to cut the file so it ends with its last complete line (or
    /// header): set only when the file ends in an incomplete line — bytes
    /// after the last newline, a write torn by a crash.
    pub truncate_to: Option<u64>,
    /// The first bytes (at most [`TORN_SHOWN`]) of that incomplete line, so
    /// the writer can log what it cut.
    pub torn_head: Vec<u8>,
    /// The window reached back to the header, so `last == None` means the
    /// file has no record at all (rather than none in the window).
    pub complete_scan: bool,
}

/// Bytes of a torn line kept in [`TailProbe::torn_head`].
pub const TORN_SHOWN: usize = 256;

/// Probes `file` (any position; reads with `pread`).
///
/// Only an incomplete final line (no newline) is ever proposed for
/// cutting. A complete line that is not a record is reported in
/// [`TailProbe::bad_last`] instead: it may be a record we cannot read,
/// and a writer that cut it would lose it.
pub fn probe(file: &File) -> io::Result<TailProbe> {
    let len = file.metadata()?.len();
    let hlen = HEADER_V2.len() as u64;
    let mut out = TailProbe {
        len,
        header: Header::Empty,
        last: None,
        bad_last: None,
        truncate_to: None,
        torn_head: Vec::new(),
        complete_scan: true,
    };
    if len == 0 {
        return Ok(out);
    }
    let mut head = vec![0u8; len.min(hlen) as usize];
    file.read_exact_at(&mut head, 0)?;
    let schema = if head == HEADER_V2.as_bytes() {
        out.header = Header::V2;
        Schema::V2
    } else if head == HEADER_V3.as_bytes() {
        out.header = Header::V3;
        Schema::V3
    } else if len < hlen
        && (HEADER_V2.as_bytes().starts_with(&head) || HEADER_V3.as_bytes().starts_with(&head))
    {
        out.header = Header::TornHeader;
        out.truncate_to = Some(0);
        out.torn_head = head;
        return Ok(out);
    } else {
        out.header = if head.starts_with(HEADER_V1_PREFIX.as_bytes()) {
            Header::LegacyV1
        } else {
            Header::Unknown
        };
        return Ok(out);
    };
    debug_assert_eq!(HEADER_V2.len(), HEADER_V3.len());

    let start = hlen.max(len.saturating_sub(TAIL_WINDOW));
    out.complete_scan = start == hlen;
    let mut buf = vec![0u8; (len - start) as usize];
    file.read_exact_at(&mut buf, start)?;

    // Bytes after the last newline are an incomplete line: a torn write.
    // The header ends in a newline, so a complete scan always finds one
    // (at -1, just before the window); a partial window without any
    // newline is one line longer than the window and is left alone.
    let last_nl = buf.iter().rposition(|&b| b == b'\n');
    let complete_end = match last_nl {
        Some(i) => i + 1,
        None if out.complete_scan => 0,
        None => return Ok(out),
    };
    if complete_end < buf.len() {
        out.truncate_to = Some(start + complete_end as u64);
        let torn = &buf[complete_end..];
        out.torn_head = torn[..torn.len().min(TORN_SHOWN)].to_vec();
    }

    // Complete lines in the window as [from, to) spans (newline excluded).
    // Without a complete scan the window's first line may be partial.
    let mut spans = Vec::new();
    let mut from = if out.complete_scan { Some(0) } else { None };
    for (i, &b) in buf[..complete_end].iter().enumerate() {
        if b == b'\n' {
            if let Some(f) = from {
                spans.push((f, i));
            }
            from = Some(i + 1);
        }
    }
    let Some(&(f, t)) = spans.last() else {
        return Ok(out);
    };
    let line = match parse_line_as(&buf[f..t], schema) {
        Ok(line) => line,
        Err(error) => {
            out.bad_last = Some(BadLine {
                offset: start + f as u64,
                seq: leading_seq(&buf[f..t]),
                error,
            });
            return Ok(out);
        }
    };
    let boot_col = match &line.record {
        Record::Boot { prev_chain, .. } => *prev_chain,
        _ => None,
    };
    let prev = match spans.len().checked_sub(2).map(|i| spans[i]) {
        Some((pf, pt)) => match parse_line_as(&buf[pf..pt], schema) {
            Ok(p) if p.chained => Some(p.chain),
            // After an unchained record only a boot record says what it
            // was linked from (a virtual chain over the unchained records,
            // see verify.rs).
            Ok(_) => boot_col,
            Err(_) => None,
        },
        None if out.complete_scan => Some(boot_col.unwrap_or(ZERO_CHAIN)),
        None => None,
    };
    out.last = Some(TailRecord {
        body: buf[f..f + line.body_len].to_vec(),
        line,
        end: start + t as u64 + 1,
        prev,
    });
    Ok(out)
}

/// The leading seq column of a line that failed to parse, if it is a number.
pub(crate) fn leading_seq(line: &[u8]) -> Option<u64> {
    let end = line.iter().position(|&b| b == b'\t')?;
    std::str::from_utf8(&line[..end]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::BootReason;
    use std::io::Write;

    fn file_with(content: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(content).unwrap();
        f
    }

    fn two_records() -> (String, ChainHash) {
        let boot = Record::Boot {
            wallclock_ms: 1,
            observer_ns: 0,
            daemon_pid: 42,
            prev_chain: None,
            reason: BootReason::Fresh,
        };
        let refused = Record::Refused {
            wallclock_ms: 2,
            observer_ns: 3,
            agent_pid: 9,
            reason: "given_up".into(),
        };
        let (l1, c1) = boot.to_line(1, &ChainKey::Plain, &ZERO_CHAIN);
        let (l2, c2) = refused.to_line(2, &ChainKey::Plain, &c1);
        (format!("{HEADER_V2}{l1}{l2}"), c2)
    }

    #[test]
    fn clean_tail_resumes() {
        let (text, chain) = two_records();
        let p = probe(&file_with(text.as_bytes())).unwrap();
        assert_eq!(p.header, Header::V2);
        let last = p.last.unwrap();
        assert_eq!(last.line.seq, 2);
        assert_eq!(last.line.chain, chain);
        assert_eq!(last.end, text.len() as u64);
        assert_eq!(p.truncate_to, None);
        assert_eq!(last.link_verifies(&ChainKey::Plain), Some(true));
        let key = ChainKey::from_hex(&[b'7'; 64]).unwrap();
        assert_eq!(last.link_verifies(&key), Some(false));
    }

    #[test]
    fn only_an_incomplete_final_line_is_cut() {
        let (text, _) = two_records();
        // No newline: a write torn by a crash (or a NUL-filled tail left by
        // a power cut). Cut back to the last record, its bytes kept.
        for junk in ["9\t17\t0\tcompl", "\0\0\0\0\0"] {
            let p = probe(&file_with(format!("{text}{junk}").as_bytes())).unwrap();
            assert_eq!(p.last.unwrap().line.seq, 2, "{junk:?}");
            assert_eq!(p.truncate_to, Some(text.len() as u64), "{junk:?}");
            assert_eq!(p.torn_head, junk.as_bytes());
            assert_eq!(p.bad_last, None);
        }
    }

    #[test]
    fn a_complete_line_that_is_not_a_record_is_reported_not_cut() {
        let (text, _) = two_records();
        for junk in [
            "garbage\n",
            "garbage\nmore",
            "\n",
            "3\t17\t0\tcomplete\n",
            "3\t17\t0\trefused\t5\tgiven_up\tXYZ\n",
        ] {
            let p = probe(&file_with(format!("{text}{junk}").as_bytes())).unwrap();
            assert!(p.last.is_none(), "{junk:?}");
            let bad = p.bad_last.unwrap();
            assert_eq!(bad.offset, text.len() as u64, "{junk:?}");
            // Only the incomplete part after the bad line would be torn.
            let cut = junk.rfind('\n').map(|i| text.len() + i + 1);
            let cut = cut.filter(|&c| c < text.len() + junk.len());
            assert_eq!(p.truncate_to, cut.map(|c| c as u64), "{junk:?}");
        }
        let p = probe(&file_with(format!("{text}3\t1\t0\tnope\n").as_bytes())).unwrap();
        assert_eq!(p.bad_last.unwrap().seq, Some(3));
        // A file whose only line after the header is not a record is not
        // cut back to its header either.
        let p = probe(&file_with(format!("{HEADER_V2}garbage\n").as_bytes())).unwrap();
        assert_eq!((p.truncate_to, p.bad_last.is_some()), (None, true));
    }

    /// The bytes varta-watch 0.2.0 built without `audit-chain` wrote (two
    /// runs; see crates/varta-watch/tests/data/README.md).
    const UNCHAINED: &str = "# varta-watch recovery audit v2\n\
        1\t1796078114842\t0\tboot\t31498\t-\tfresh\t-\n\
        2\t1796078115857\t0\tspawn\t31512\t31539\texec\t/bin/echo\tinline\t25\t-\n\
        3\t1796078115964\t0\tcomplete\t31512\t31539\treaped\t0\t-\t106563270\t0\t0\tfalse\t-\n\
        4\t1796078122801\t0\tboot\t31673\t0000000000000000000000000000000000000000000000000000000000000000\tresume\t-\n";

    #[test]
    fn unchained_records_of_the_original_are_records_not_a_torn_tail() {
        let p = probe(&file_with(UNCHAINED.as_bytes())).unwrap();
        assert_eq!((p.truncate_to, p.bad_last.clone()), (None, None));
        let last = p.last.unwrap();
        assert_eq!(last.line.seq, 4);
        assert!(!last.line.chained);
        assert_eq!(last.end, UNCHAINED.len() as u64);
        // Nothing to verify in an unchained link, whatever the key.
        assert_eq!(last.link_verifies(&ChainKey::Plain), None);
        // A torn line after them is still cut, and only it.
        let p = probe(&file_with(format!("{UNCHAINED}5\t179").as_bytes())).unwrap();
        assert_eq!(p.truncate_to, Some(UNCHAINED.len() as u64));
        assert_eq!(p.last.unwrap().line.seq, 4);
    }

    #[test]
    fn a_boot_record_after_unchained_ones_is_checked_against_its_column() {
        let seal = [7u8; 32];
        let boot = Record::Boot {
            wallclock_ms: 9,
            observer_ns: 0,
            daemon_pid: 1,
            prev_chain: Some(seal),
            reason: BootReason::Resume,
        };
        let (line, _) = boot.to_line(5, &ChainKey::Plain, &seal);
        let p = probe(&file_with(format!("{UNCHAINED}{line}").as_bytes())).unwrap();
        let last = p.last.unwrap();
        assert_eq!(last.prev, Some(seal));
        assert_eq!(last.link_verifies(&ChainKey::Plain), Some(true));
        let key = ChainKey::from_hex(&[b'7'; 64]).unwrap();
        assert_eq!(last.link_verifies(&key), Some(false));
    }

    #[test]
    fn headers() {
        let cases: [(&[u8], Header, Option<u64>); 6] = [
            (b"", Header::Empty, None),
            (b"# varta-watch rec", Header::TornHeader, Some(0)),
            (HEADER_V2.as_bytes(), Header::V2, None),
            (
                b"# varta-watch recovery audit v2\ntorn",
                Header::V2,
                Some(32),
            ),
            (
                b"# varta-watch recovery audit v1\n1\t2\n",
                Header::LegacyV1,
                None,
            ),
            (b"root:x:0:0:root:/root:/bin/bash\n", Header::Unknown, None),
        ];
        for (content, header, cut) in cases {
            let p = probe(&file_with(content)).unwrap();
            assert_eq!(p.header, header, "{content:?}");
            assert_eq!(p.truncate_to, cut, "{content:?}");
            assert!(p.last.is_none());
        }
    }

    #[test]
    fn reads_only_the_window_of_a_large_file() {
        // A big file whose tail is one record after lots of filler records.
        let mut big = String::from(HEADER_V2);
        let filler = Record::Refused {
            wallclock_ms: 1,
            observer_ns: 1,
            agent_pid: 1,
            reason: "x".repeat(200),
        };
        let mut prev = ZERO_CHAIN;
        let mut seq = 0;
        while big.len() < 3 * TAIL_WINDOW as usize {
            seq += 1;
            let (l, c) = filler.to_line(seq, &ChainKey::Plain, &prev);
            big.push_str(&l);
            prev = c;
        }
        let p = probe(&file_with(big.as_bytes())).unwrap();
        assert!(!p.complete_scan);
        let last = p.last.unwrap();
        assert_eq!(last.line.seq, seq);
        assert_eq!(last.link_verifies(&ChainKey::Plain), Some(true));
    }
}
