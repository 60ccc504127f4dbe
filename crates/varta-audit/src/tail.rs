//! Probing an existing audit file before appending to it: which header it
//! has, its last complete record (seq and chain to continue from) and whether
//! a torn tail must be cut off. Reads the first line and at most
//! [`TAIL_WINDOW`] bytes of the end — never the whole file.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::chain::{ChainHash, ChainKey, ZERO_CHAIN};
use crate::record::{parse_line_as, ParsedLine, Record, Schema};
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
    /// file its `boot` `prev_chain` column (zero if `-`).
    pub prev: Option<ChainHash>,
}

impl TailRecord {
    /// Whether the last link verifies with `key`: `None` when the previous
    /// chain value is unknown. A `Some(false)` means the file was written in
    /// another chain mode (or with another key), or was edited.
    pub fn link_verifies(&self, key: &ChainKey) -> Option<bool> {
        let prev = self.prev?;
        Some(key.next(&prev, self.line.record.kind(), &self.body) == self.line.chain)
    }
}

/// The result of [`probe`].
#[derive(Debug, Clone)]
pub struct TailProbe {
    /// File size when probed.
    pub len: u64,
    /// What the file starts with.
    pub header: Header,
    /// The last complete, parseable record (v2 and v3 files only).
    pub last: Option<TailRecord>,
    /// Where to cut the file so it ends with its last complete record (or
    /// header): set when a torn or unparseable tail follows it.
    pub truncate_to: Option<u64>,
    /// The window reached back to the header, so `last == None` means the
    /// file has no record at all (rather than none in the window).
    pub complete_scan: bool,
}

/// Probes `file` (any position; reads with `pread`).
pub fn probe(file: &File) -> io::Result<TailProbe> {
    let len = file.metadata()?.len();
    let hlen = HEADER_V2.len() as u64;
    let mut out = TailProbe {
        len,
        header: Header::Empty,
        last: None,
        truncate_to: None,
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

    // Complete lines in the window as [from, to) spans (newline excluded).
    // Without a complete scan the window's first line may be partial.
    let mut spans = Vec::new();
    let mut from = if out.complete_scan { Some(0) } else { None };
    for (i, &b) in buf.iter().enumerate() {
        if b == b'\n' {
            if let Some(f) = from {
                spans.push((f, i));
            }
            from = Some(i + 1);
        }
    }

    let parsed = spans
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, &(f, t))| parse_line_as(&buf[f..t], schema).ok().map(|p| (i, p)));
    match parsed {
        Some((i, line)) => {
            let (f, t) = spans[i];
            let prev = if i > 0 {
                let (pf, pt) = spans[i - 1];
                parse_line_as(&buf[pf..pt], schema).ok().map(|p| p.chain)
            } else if out.complete_scan {
                Some(match &line.record {
                    Record::Boot {
                        prev_chain: Some(h),
                        ..
                    } => *h,
                    _ => ZERO_CHAIN,
                })
            } else {
                None
            };
            let end = start + t as u64 + 1;
            if end != len {
                out.truncate_to = Some(end);
            }
            out.last = Some(TailRecord {
                body: buf[f..f + line.body_len].to_vec(),
                line,
                end,
                prev,
            });
        }
        None if out.complete_scan && len > hlen => out.truncate_to = Some(hlen),
        None => {}
    }
    Ok(out)
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
    fn torn_and_unparseable_tails_are_cut_back_to_the_last_record() {
        let (text, _) = two_records();
        for junk in ["9\t17\t0\tcompl", "garbage\n", "garbage\nmore", "\n"] {
            let p = probe(&file_with(format!("{text}{junk}").as_bytes())).unwrap();
            assert_eq!(p.last.unwrap().line.seq, 2, "{junk:?}");
            assert_eq!(p.truncate_to, Some(text.len() as u64), "{junk:?}");
        }
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
