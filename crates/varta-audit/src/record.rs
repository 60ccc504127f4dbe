//! Audit records: the typed [`Record`], its line format, and parsing a line
//! back with errors that name the offending column.

use std::fmt::Write as _;
use std::str::FromStr;

use crate::chain::{parse_hex, to_hex, ChainHash, ChainKey};

/// Longest `excerpt` column, in bytes of escaped text.
pub const EXCERPT_MAX: usize = 160;

/// The file schema, declared by the header line. Records of one file all
/// follow its header's schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Schema {
    /// The original's schema v2 (header `# varta-watch recovery audit v2`),
    /// byte for byte.
    #[default]
    V2,
    /// v2 plus two columns, `name` and `unit` of the agent, appended
    /// (before `chain`) to `spawn`, `complete` and `refused` records
    /// (header `# varta-watch recovery audit v3`). `boot` is unchanged.
    V3,
}

impl Schema {
    /// The header line of files in this schema, newline included.
    pub fn header(self) -> &'static str {
        match self {
            Schema::V2 => crate::HEADER_V2,
            Schema::V3 => crate::HEADER_V3,
        }
    }

    /// `v2` or `v3`, as `--recovery-audit-schema` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Schema::V2 => "v2",
            Schema::V3 => "v3",
        }
    }

    /// The schema whose header line (without newline) is `line`.
    pub fn from_header_line(line: &[u8]) -> Option<Schema> {
        [Schema::V2, Schema::V3]
            .into_iter()
            .find(|s| s.header().trim_end().as_bytes() == line)
    }
}

impl std::str::FromStr for Schema {
    type Err = String;
    fn from_str(s: &str) -> Result<Schema, String> {
        match s {
            "v2" | "2" => Ok(Schema::V2),
            "v3" | "3" => Ok(Schema::V3),
            other => Err(format!(
                "unknown audit schema {other:?}; expected v2 (the original's, default) or v3 (adds name and unit columns)"
            )),
        }
    }
}

/// The agent columns of a schema v3 record: who the record is about.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Agent {
    /// The agent's name (`unknown` when the observer does not know it).
    pub name: String,
    /// Its systemd unit; `None` (written `-`) when it has none or it is
    /// unknown.
    pub unit: Option<String>,
}

impl Agent {
    /// An agent of this name and unit.
    pub fn new(name: impl Into<String>, unit: Option<impl Into<String>>) -> Agent {
        Agent {
            name: name.into(),
            unit: unit.map(Into::into),
        }
    }

    /// The two columns, tab-separated, [`sanitize`]d; an empty name is
    /// written `unknown`, no unit `-`.
    fn columns(&self) -> String {
        let name = sanitize(&self.name);
        let name = if name.is_empty() {
            "unknown".to_string()
        } else {
            name
        };
        let unit = match self.unit.as_deref().map(sanitize) {
            Some(u) if !u.is_empty() => u,
            _ => "-".to_string(),
        };
        format!("{name}\t{unit}")
    }
}

/// Why a `boot` record was written. The tokens are 0.2.0's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BootReason {
    /// New file, no earlier history.
    Fresh,
    /// The file ended with a complete record; its chain continues.
    Resume,
    /// A legacy v1 file (written by 0.2.0 only; we refuse to append to v1).
    LegacyV1,
    /// The file ended with an incomplete line (a torn write) that was cut
    /// off. A complete line that does not parse is never cut: we refuse
    /// to append to such a file.
    CorruptTail,
    /// The file's header was not recognised (written by 0.2.0 only).
    SchemaDrift,
    /// First record of a new generation after rotation.
    Rotation,
}

impl BootReason {
    /// Every reason, for tests and tools.
    pub const ALL: [BootReason; 6] = [
        BootReason::Fresh,
        BootReason::Resume,
        BootReason::LegacyV1,
        BootReason::CorruptTail,
        BootReason::SchemaDrift,
        BootReason::Rotation,
    ];

    /// The token written in the `reason` column.
    pub fn as_str(self) -> &'static str {
        match self {
            BootReason::Fresh => "fresh",
            BootReason::Resume => "resume",
            BootReason::LegacyV1 => "legacy_v1",
            BootReason::CorruptTail => "corrupt_tail",
            BootReason::SchemaDrift => "schema_drift",
            BootReason::Rotation => "rotation",
        }
    }

    fn parse(s: &str) -> Option<BootReason> {
        BootReason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// One audit record, without its `seq` and `chain` (the writer assigns those
/// in file order).
///
/// Free-form text fields (`mode`, `program`, `source`, `outcome`, `reason`,
/// `excerpt`) are [`sanitize`]d when formatted, so they can never inject a
/// column or a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// The observer started, resumed, repaired or rotated the file.
    Boot {
        /// Wall clock, ms since the UNIX epoch.
        wallclock_ms: u64,
        /// Observer clock, ns (0.2.0 always wrote 0 here).
        observer_ns: u64,
        /// The observer's pid.
        daemon_pid: u32,
        /// The chain this file continues (`resume`, `rotation`); `-` if none.
        prev_chain: Option<ChainHash>,
        /// Why the record was written.
        reason: BootReason,
    },
    /// A recovery command was started.
    Spawn {
        /// Wall clock, ms since the UNIX epoch.
        wallclock_ms: u64,
        /// Observer clock, ns.
        observer_ns: u64,
        /// The stalled agent.
        agent_pid: u32,
        /// The recovery child.
        child_pid: u32,
        /// Always `exec` (there is no shell mode).
        mode: String,
        /// `argv[0]` of the child.
        program: String,
        /// `inline` (`--recovery-exec`) or the `--recovery-exec-file` path.
        source: String,
        /// Length in bytes of the expanded command template.
        template_len: u32,
    },
    /// A recovery command finished (or could not be started).
    Complete {
        /// Wall clock, ms since the UNIX epoch.
        wallclock_ms: u64,
        /// Observer clock, ns.
        observer_ns: u64,
        /// The agent the recovery was for.
        agent_pid: u32,
        /// The recovery child (0 when it never started).
        child_pid: u32,
        /// `reaped`, `killed`, `reap_failed` or `spawn_failed`.
        outcome: String,
        /// Exit code when the child exited normally.
        exit_code: Option<i32>,
        /// Signal number when a signal ended the child.
        signal: Option<i32>,
        /// Spawn to completion, ns.
        duration_ns: u64,
        /// Bytes captured from stdout.
        stdout_len: u32,
        /// Bytes captured from stderr.
        stderr_len: u32,
        /// A capture hit its cap.
        truncated: bool,
        /// Escaped tail of the captured output ([`escape_excerpt`]); `None`
        /// when capture is off, which keeps 0.2.0's column count.
        excerpt: Option<String>,
    },
    /// Recovery was declined for a stalled agent.
    Refused {
        /// Wall clock, ms since the UNIX epoch.
        wallclock_ms: u64,
        /// Observer clock, ns.
        observer_ns: u64,
        /// The stalled agent.
        agent_pid: u32,
        /// `cross_namespace_agent`, `unauthenticated_transport`,
        /// `debounce_capacity`, `outstanding_capacity` or `given_up`.
        reason: String,
    },
}

/// A record line parsed back from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedLine {
    /// The `seq` column.
    pub seq: u64,
    /// The columns between `seq` and `chain`.
    pub record: Record,
    /// The `chain` column; all zero when the column is `-` (see
    /// [`ParsedLine::chained`]), which is how 0.2.0 itself read it.
    pub chain: ChainHash,
    /// False when the `chain` column is `-`: the record was written by a
    /// 0.2.0 built without its `audit-chain` feature and carries no link,
    /// so nothing in the line itself can be verified.
    pub chained: bool,
    /// Length of the chained body: the line up to the tab before `chain`.
    pub body_len: usize,
    /// Schema v3 agent records: the `name` and `unit` columns.
    pub agent: Option<Agent>,
}

/// Why a line is not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The line is not UTF-8.
    #[error("line is not valid UTF-8")]
    NotUtf8,
    /// The line contains a carriage return or newline (the writer never
    /// writes one inside a line).
    #[error("line contains a carriage return or newline")]
    LineBreak,
    /// Fewer columns than the kind needs.
    #[error("missing column `{column}`")]
    MissingColumn {
        /// The first absent column.
        column: &'static str,
    },
    /// More columns than the kind has.
    #[error("{kind} record has {found} columns, expected {expected}")]
    ExtraColumns {
        /// The record kind.
        kind: &'static str,
        /// Columns found.
        found: usize,
        /// Columns expected.
        expected: &'static str,
    },
    /// A column does not hold a valid value.
    #[error("column `{column}`: invalid value {value:?}")]
    BadColumn {
        /// The column.
        column: &'static str,
        /// The value found (cut to 64 characters).
        value: String,
    },
    /// The `kind` column is not one of the four kinds.
    #[error("column `kind`: unknown record kind {0:?}")]
    UnknownKind(String),
}

/// Replaces tab, CR and LF with a space so a chosen path or `argv[0]` can never
/// add a column or a line (0.2.0's rule).
pub fn sanitize(s: &str) -> String {
    s.replace(['\t', '\n', '\r'], " ")
}

/// Escapes captured output for the `excerpt` column: `\t` `\n` `\r` `\\` as
/// two-character escapes, bytes outside printable ASCII as `\xNN`. Keeps the
/// *end* of the output (where errors are) within [`EXCERPT_MAX`] bytes of
/// escaped text, never cutting an escape in half.
pub fn escape_excerpt(raw: &[u8]) -> String {
    let mut pieces: Vec<String> = Vec::new();
    let mut total = 0usize;
    for &b in raw.iter().rev() {
        let piece = match b {
            b'\t' => "\\t".to_string(),
            b'\n' => "\\n".to_string(),
            b'\r' => "\\r".to_string(),
            b'\\' => "\\\\".to_string(),
            0x20..=0x7e => (b as char).to_string(),
            _ => format!("\\x{b:02x}"),
        };
        if total + piece.len() > EXCERPT_MAX {
            break;
        }
        total += piece.len();
        pieces.push(piece);
    }
    pieces.iter().rev().map(String::as_str).collect()
}

/// Reverses [`escape_excerpt`]; `None` if `s` is not a valid escaping.
pub fn unescape_excerpt(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            if !(0x20..=0x7e).contains(&b[i]) {
                return None;
            }
            out.push(b[i]);
            i += 1;
            continue;
        }
        match b.get(i + 1)? {
            b't' => out.push(b'\t'),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b'\\' => out.push(b'\\'),
            b'x' => {
                let hex = s.get(i + 2..i + 4)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            _ => return None,
        }
        i += 2;
    }
    Some(out)
}

impl Record {
    /// The `kind` column (also hashed into the chain).
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Boot { .. } => "boot",
            Record::Spawn { .. } => "spawn",
            Record::Complete { .. } => "complete",
            Record::Refused { .. } => "refused",
        }
    }

    /// The chained body: `seq⇥wallclock_ms⇥observer_ns⇥kind⇥…`, without the
    /// chain column and newline.
    pub fn body(&self, seq: u64) -> String {
        let mut s = String::with_capacity(160);
        let opt = |v: Option<i32>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
        // write! into a String cannot fail.
        let _ = match self {
            Record::Boot {
                wallclock_ms,
                observer_ns,
                daemon_pid,
                prev_chain,
                reason,
            } => write!(
                s,
                "{seq}\t{wallclock_ms}\t{observer_ns}\tboot\t{daemon_pid}\t{}\t{}",
                prev_chain.as_ref().map_or_else(|| "-".to_string(), to_hex),
                reason.as_str()
            ),
            Record::Spawn {
                wallclock_ms,
                observer_ns,
                agent_pid,
                child_pid,
                mode,
                program,
                source,
                template_len,
            } => write!(
                s,
                "{seq}\t{wallclock_ms}\t{observer_ns}\tspawn\t{agent_pid}\t{child_pid}\t{}\t{}\t{}\t{template_len}",
                sanitize(mode),
                sanitize(program),
                sanitize(source)
            ),
            Record::Complete {
                wallclock_ms,
                observer_ns,
                agent_pid,
                child_pid,
                outcome,
                exit_code,
                signal,
                duration_ns,
                stdout_len,
                stderr_len,
                truncated,
                excerpt,
            } => {
                let _ = write!(
                    s,
                    "{seq}\t{wallclock_ms}\t{observer_ns}\tcomplete\t{agent_pid}\t{child_pid}\t{}\t{}\t{}\t{duration_ns}\t{stdout_len}\t{stderr_len}\t{truncated}",
                    sanitize(outcome),
                    opt(*exit_code),
                    opt(*signal)
                );
                match excerpt {
                    Some(e) => write!(s, "\t{}", sanitize(e)),
                    None => Ok(()),
                }
            }
            Record::Refused {
                wallclock_ms,
                observer_ns,
                agent_pid,
                reason,
            } => write!(
                s,
                "{seq}\t{wallclock_ms}\t{observer_ns}\trefused\t{agent_pid}\t{}",
                sanitize(reason)
            ),
        };
        s
    }

    /// Whether the record is about an agent (`spawn`, `complete`,
    /// `refused`): schema v3 gives these the `name` and `unit` columns.
    pub fn has_agent(&self) -> bool {
        !matches!(self, Record::Boot { .. })
    }

    /// The chained body in `schema`: [`Record::body`], and for v3 the
    /// agent's `name` and `unit` columns appended to agent records (`agent`
    /// None is written `unknown` and `-`). v2 ignores `agent`.
    pub fn body_as(&self, seq: u64, schema: Schema, agent: Option<&Agent>) -> String {
        let mut s = self.body(seq);
        if schema == Schema::V3 && self.has_agent() {
            s.push('\t');
            s.push_str(
                &agent
                    .cloned()
                    .unwrap_or_else(|| Agent::new("unknown", None::<String>))
                    .columns(),
            );
        }
        s
    }

    /// The full line (newline included) of this record as number `seq`
    /// following a record whose chain was `prev`, and its own chain value.
    pub fn to_line(&self, seq: u64, key: &ChainKey, prev: &ChainHash) -> (String, ChainHash) {
        self.to_line_as(seq, key, prev, Schema::V2, None)
    }

    /// The line (newline included) 0.2.0 built without `audit-chain`
    /// writes for this record: the v2 body and `-` as its chain column. We
    /// never write one; tests and tools use it to build such files.
    pub fn to_unchained_line(&self, seq: u64) -> String {
        format!("{}\t-\n", self.body(seq))
    }

    /// [`Record::to_line`] in `schema`, with the agent columns of v3.
    pub fn to_line_as(
        &self,
        seq: u64,
        key: &ChainKey,
        prev: &ChainHash,
        schema: Schema,
        agent: Option<&Agent>,
    ) -> (String, ChainHash) {
        let mut line = self.body_as(seq, schema, agent);
        let chain = key.next(prev, self.kind(), line.as_bytes());
        line.push('\t');
        line.push_str(&to_hex(&chain));
        line.push('\n');
        (line, chain)
    }
}

/// Column names per kind, in order (for error messages).
const COMMON: [&str; 4] = ["seq", "wallclock_ms", "observer_ns", "kind"];
const BOOT: [&str; 3] = ["daemon_pid", "prev_chain", "reason"];
const SPAWN: [&str; 6] = [
    "agent_pid",
    "child_pid",
    "mode",
    "program",
    "source",
    "template_len",
];
const COMPLETE: [&str; 10] = [
    "agent_pid",
    "child_pid",
    "outcome",
    "exit_code",
    "signal",
    "duration_ns",
    "stdout_len",
    "stderr_len",
    "truncated",
    "excerpt",
];
const REFUSED: [&str; 2] = ["agent_pid", "reason"];

fn bad(column: &'static str, value: &str) -> ParseError {
    ParseError::BadColumn {
        column,
        value: value.chars().take(64).collect(),
    }
}

/// Canonical unsigned decimal: digits only, no sign, no leading zero — the
/// only spelling the writer produces.
fn num<T: FromStr>(column: &'static str, v: &str) -> Result<T, ParseError> {
    let canonical =
        !v.is_empty() && v.bytes().all(|c| c.is_ascii_digit()) && (v == "0" || !v.starts_with('0'));
    if !canonical {
        return Err(bad(column, v));
    }
    v.parse().map_err(|_| bad(column, v))
}

/// `-` or a canonical signed decimal.
fn opt_i32(column: &'static str, v: &str) -> Result<Option<i32>, ParseError> {
    if v == "-" {
        return Ok(None);
    }
    let (neg, digits) = match v.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, v),
    };
    if neg && digits == "0" {
        return Err(bad(column, v));
    }
    let n: u32 = num(column, digits)?;
    let n = i64::from(n);
    i32::try_from(if neg { -n } else { n })
        .map(Some)
        .map_err(|_| bad(column, v))
}

/// Parses one schema v2 record line (without its newline).
pub fn parse_line(line: &[u8]) -> Result<ParsedLine, ParseError> {
    parse_line_as(line, Schema::V2)
}

/// Parses one record line (without its newline) of a file in `schema`.
pub fn parse_line_as(line: &[u8], schema: Schema) -> Result<ParsedLine, ParseError> {
    let s = std::str::from_utf8(line).map_err(|_| ParseError::NotUtf8)?;
    if s.contains(['\r', '\n']) {
        return Err(ParseError::LineBreak);
    }
    let mut cols: Vec<&str> = s.split('\t').collect();
    let mut agent = None;
    if schema == Schema::V3 && cols.len() > 3 && matches!(cols[3], "spawn" | "complete" | "refused")
    {
        // v3 appends name and unit before chain: take them out and parse
        // the rest as v2.
        let (kind, min) = match cols[3] {
            "spawn" => ("spawn", 13),
            "complete" => ("complete", 16),
            _ => ("refused", 9),
        };
        if cols.len() < min {
            let column = match min - cols.len() {
                1 => "chain",
                2 => "unit",
                _ => "name",
            };
            // Missing leading columns are reported by the v2 parse below
            // when the agent columns are not what is missing.
            if min - cols.len() <= 3 {
                return Err(ParseError::MissingColumn { column });
            }
        } else {
            let max = if kind == "complete" { 17 } else { min };
            if cols.len() > max {
                return Err(ParseError::ExtraColumns {
                    kind,
                    found: cols.len(),
                    expected: match kind {
                        "spawn" => "13",
                        "complete" => "16 or 17",
                        _ => "9",
                    },
                });
            }
            let n = cols.len();
            let unit = cols.remove(n - 2);
            let name = cols.remove(n - 3);
            if name.is_empty() {
                return Err(bad("name", name));
            }
            if unit.is_empty() {
                return Err(bad("unit", unit));
            }
            agent = Some(Agent {
                name: name.to_string(),
                unit: (unit != "-").then(|| unit.to_string()),
            });
        }
    }
    let get = |i: usize, names: &[&'static str]| -> Result<&str, ParseError> {
        cols.get(i).copied().ok_or(ParseError::MissingColumn {
            column: names[i - 4],
        })
    };
    let col0 = |i: usize| -> Result<&str, ParseError> {
        cols.get(i)
            .copied()
            .ok_or(ParseError::MissingColumn { column: COMMON[i] })
    };
    let seq: u64 = num("seq", col0(0)?)?;
    let wallclock_ms: u64 = num("wallclock_ms", col0(1)?)?;
    let observer_ns: u64 = num("observer_ns", col0(2)?)?;
    let kind = col0(3)?;
    // Columns after `kind`, chain excluded.
    let (record, fixed) = match kind {
        "boot" => {
            let n = &BOOT;
            let prev = get(5, n)?;
            let rec = Record::Boot {
                wallclock_ms,
                observer_ns,
                daemon_pid: num("daemon_pid", get(4, n)?)?,
                prev_chain: if prev == "-" {
                    None
                } else {
                    Some(parse_hex(prev).ok_or_else(|| bad("prev_chain", prev))?)
                },
                reason: {
                    let r = get(6, n)?;
                    BootReason::parse(r).ok_or_else(|| bad("reason", r))?
                },
            };
            (rec, 3)
        }
        "spawn" => {
            let n = &SPAWN;
            let rec = Record::Spawn {
                wallclock_ms,
                observer_ns,
                agent_pid: num("agent_pid", get(4, n)?)?,
                child_pid: num("child_pid", get(5, n)?)?,
                mode: get(6, n)?.to_string(),
                program: get(7, n)?.to_string(),
                source: get(8, n)?.to_string(),
                template_len: num("template_len", get(9, n)?)?,
            };
            (rec, 6)
        }
        "complete" => {
            let n = &COMPLETE;
            let trunc = get(12, n)?;
            // 14 columns: 0.2.0 layout; 15: with our excerpt before chain.
            let excerpt = (cols.len() >= 15).then(|| cols[13].to_string());
            let rec = Record::Complete {
                wallclock_ms,
                observer_ns,
                agent_pid: num("agent_pid", get(4, n)?)?,
                child_pid: num("child_pid", get(5, n)?)?,
                outcome: get(6, n)?.to_string(),
                exit_code: opt_i32("exit_code", get(7, n)?)?,
                signal: opt_i32("signal", get(8, n)?)?,
                duration_ns: num("duration_ns", get(9, n)?)?,
                stdout_len: num("stdout_len", get(10, n)?)?,
                stderr_len: num("stderr_len", get(11, n)?)?,
                truncated: match trunc {
                    "true" => true,
                    "false" => false,
                    other => return Err(bad("truncated", other)),
                },
                excerpt,
            };
            let fixed = if cols.len() >= 15 { 10 } else { 9 };
            (rec, fixed)
        }
        "refused" => {
            let n = &REFUSED;
            let rec = Record::Refused {
                wallclock_ms,
                observer_ns,
                agent_pid: num("agent_pid", get(4, n)?)?,
                reason: get(5, n)?.to_string(),
            };
            (rec, 2)
        }
        other => return Err(ParseError::UnknownKind(other.chars().take(64).collect())),
    };
    let expected = 4 + fixed + 1;
    if cols.len() < expected {
        return Err(ParseError::MissingColumn { column: "chain" });
    }
    if cols.len() > expected {
        return Err(ParseError::ExtraColumns {
            kind: record.kind(),
            found: cols.len(),
            expected: match record.kind() {
                "boot" => "8",
                "spawn" => "11",
                "complete" => "14 or 15",
                _ => "7",
            },
        });
    }
    let chain_str = cols[expected - 1];
    // `-`: what 0.2.0 built without `audit-chain` writes in every record.
    let chained = chain_str != "-";
    let chain = if chained {
        parse_hex(chain_str).ok_or_else(|| bad("chain", chain_str))?
    } else {
        crate::chain::ZERO_CHAIN
    };
    Ok(ParsedLine {
        seq,
        record,
        chain,
        chained,
        body_len: s.len() - chain_str.len() - 1,
        agent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::ZERO_CHAIN;

    fn complete(excerpt: Option<&str>) -> Record {
        Record::Complete {
            wallclock_ms: 5,
            observer_ns: 6,
            agent_pid: 7,
            child_pid: 8,
            outcome: "killed".into(),
            exit_code: None,
            signal: Some(9),
            duration_ns: 10,
            stdout_len: 11,
            stderr_len: 12,
            truncated: true,
            excerpt: excerpt.map(str::to_string),
        }
    }

    #[test]
    fn original_lines_parse_and_reformat_identically() {
        let lines = [
            "1\t1796044681582\t0\tboot\t11419\t-\tfresh\t95b536f385f8f9a1b4130a7180b7c9425a46f42f7392906c034bf9c2563d5bd6",
            "2\t1796044682359\t0\tspawn\t11426\t11432\texec\t/bin/echo\tinline\t15\tca6f572b3ee0111c91b507c96a396fec2396248853c63985598dfd6dbac25dd8",
            "8\t1796044689201\t0\tcomplete\t11595\t11613\tkilled\t-\t9\t224038081\t0\t0\tfalse\t5201a9dd68e81500e899f8d940776b0bbd80e3a466e8a9a55b5cdfa1a1960306",
        ];
        for l in lines {
            let p = parse_line(l.as_bytes()).unwrap();
            let body = p.record.body(p.seq);
            assert_eq!(body, l[..p.body_len]);
            assert_eq!(format!("{body}\t{}", to_hex(&p.chain)), l);
        }
    }

    #[test]
    fn unchained_lines_of_the_original_parse_as_unchained_records() {
        // Written by 0.2.0 built without `audit-chain` (tests/data of
        // varta-watch: original-0.2.0-nochain.tsv).
        let lines = [
            "1\t1796078775022\t0\tboot\t11603\t-\tfresh\t-",
            "6\t1796078776906\t0\tboot\t11767\t0000000000000000000000000000000000000000000000000000000000000000\tresume\t-",
            "8\t1796078777741\t0\tcomplete\t11770\t11780\tkilled\t-\t9\t224040586\t0\t0\tfalse\t-",
        ];
        for l in lines {
            let p = parse_line(l.as_bytes()).unwrap();
            assert!(!p.chained, "{l}");
            assert_eq!(p.chain, ZERO_CHAIN);
            assert_eq!(p.record.to_unchained_line(p.seq), format!("{l}\n"));
            assert_eq!(p.body_len, l.len() - 2);
        }
        let chained = complete(None).to_line(3, &ChainKey::Plain, &ZERO_CHAIN).0;
        assert!(parse_line(chained.trim_end().as_bytes()).unwrap().chained);
        // Only a lone `-` means "no chain".
        for bad_chain in ["--", "", "-0", "+"] {
            let l = format!("1\t2\t0\trefused\t5\tgiven_up\t{bad_chain}");
            assert_eq!(
                parse_line(l.as_bytes()).unwrap_err(),
                bad("chain", bad_chain),
                "{l}"
            );
        }
    }

    #[test]
    fn excerpt_column_is_optional_and_round_trips() {
        for r in [complete(None), complete(Some("a\\tb")), complete(Some(""))] {
            let (line, chain) = r.to_line(3, &ChainKey::Plain, &ZERO_CHAIN);
            let p = parse_line(line.trim_end_matches('\n').as_bytes()).unwrap();
            assert_eq!(p.record, r);
            assert_eq!(p.chain, chain);
            assert_eq!(p.seq, 3);
        }
    }

    #[test]
    fn v3_appends_name_and_unit_and_round_trips() {
        let spawn = Record::Spawn {
            wallclock_ms: 1,
            observer_ns: 2,
            agent_pid: 3,
            child_pid: 4,
            mode: "exec".into(),
            program: "/bin/true".into(),
            source: "inline".into(),
            template_len: 9,
        };
        let refused = Record::Refused {
            wallclock_ms: 1,
            observer_ns: 2,
            agent_pid: 0,
            reason: "given_up".into(),
        };
        let boot = Record::Boot {
            wallclock_ms: 1,
            observer_ns: 0,
            daemon_pid: 5,
            prev_chain: None,
            reason: BootReason::Fresh,
        };
        let agents = [
            Agent::new("nginx", Some("nginx.service")),
            Agent::new("bat\tch\nx", None::<String>),
        ];
        for r in [
            spawn.clone(),
            refused,
            complete(None),
            complete(Some("e")),
            boot.clone(),
        ] {
            for a in &agents {
                let (line, chain) =
                    r.to_line_as(7, &ChainKey::Plain, &ZERO_CHAIN, Schema::V3, Some(a));
                let trimmed = line.trim_end_matches('\n');
                let p = parse_line_as(trimmed.as_bytes(), Schema::V3).unwrap();
                assert_eq!(p.record, r);
                assert_eq!(p.chain, chain);
                assert_eq!(p.body_len, trimmed.len() - 65);
                if r.has_agent() {
                    let got = p.agent.unwrap();
                    assert_eq!(got.name, sanitize(&a.name));
                    assert_eq!(got.unit, a.unit);
                    // Two more columns than v2, and v2 refuses it.
                    let (v2, _) = r.to_line(7, &ChainKey::Plain, &ZERO_CHAIN);
                    assert_eq!(line.matches('\t').count(), v2.matches('\t').count() + 2);
                } else {
                    assert_eq!(p.agent, None);
                    assert_eq!(line, r.to_line(7, &ChainKey::Plain, &ZERO_CHAIN).0);
                }
            }
        }
        // v2 is unchanged by an agent, and an unknown agent is written so.
        let a = Agent::new("x", Some("y"));
        assert_eq!(
            spawn.to_line_as(1, &ChainKey::Plain, &ZERO_CHAIN, Schema::V2, Some(&a)),
            spawn.to_line(1, &ChainKey::Plain, &ZERO_CHAIN)
        );
        let body = spawn.body_as(1, Schema::V3, None);
        assert!(body.ends_with("\t9\tunknown\t-"), "{body}");
        // Missing agent columns are named.
        let v2 = spawn.to_line(1, &ChainKey::Plain, &ZERO_CHAIN).0;
        assert_eq!(
            parse_line_as(v2.trim_end().as_bytes(), Schema::V3).unwrap_err(),
            ParseError::MissingColumn { column: "unit" }
        );
        assert_eq!("v3".parse::<Schema>(), Ok(Schema::V3));
        assert!("v4".parse::<Schema>().is_err());
        assert_eq!(
            Schema::from_header_line(b"# varta-watch recovery audit v3"),
            Some(Schema::V3)
        );
    }

    #[test]
    fn free_form_fields_are_sanitized() {
        let r = Record::Spawn {
            wallclock_ms: 1,
            observer_ns: 2,
            agent_pid: 3,
            child_pid: 4,
            mode: "exec".into(),
            program: "/tmp/evil\tprog\nx".into(),
            source: "a\rb".into(),
            template_len: 9,
        };
        let (line, _) = r.to_line(1, &ChainKey::Plain, &ZERO_CHAIN);
        assert_eq!(line.matches('\t').count(), 10);
        assert_eq!(line.matches('\n').count(), 1);
        let p = parse_line(line.trim_end().as_bytes()).unwrap();
        match p.record {
            Record::Spawn {
                program, source, ..
            } => {
                assert_eq!(program, "/tmp/evil prog x");
                assert_eq!(source, "a b");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_name_the_column() {
        let cases: [(&str, ParseError); 8] = [
            ("x\t1\t0\tboot", bad("seq", "x")),
            ("1\t01\t0\tboot", bad("wallclock_ms", "01")),
            ("1\t1\t0\tnope\t1", ParseError::UnknownKind("nope".into())),
            (
                "1\t1\t0\tboot\t5\t-",
                ParseError::MissingColumn { column: "reason" },
            ),
            (
                "1\t1\t0\tboot\t5\t-\tfresh",
                ParseError::MissingColumn { column: "chain" },
            ),
            ("1\t1\t0\tboot\t5\t-\twhy\tab", bad("reason", "why")),
            ("1\t1\t0\trefused\t5\tx\tzz", bad("chain", "zz")),
            (
                "1\t1\t0\tcomplete\t1\t2\treaped\t+1\t-\t1\t0\t0\tfalse\tc",
                bad("exit_code", "+1"),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(parse_line(line.as_bytes()).unwrap_err(), want, "{line}");
        }
        let msg = parse_line(b"1\t1\t0\tboot\t5\t-").unwrap_err().to_string();
        assert_eq!(msg, "missing column `reason`");
    }

    #[test]
    fn signed_exit_codes() {
        assert_eq!(opt_i32("c", "-").unwrap(), None);
        assert_eq!(opt_i32("c", "-5").unwrap(), Some(-5));
        assert_eq!(opt_i32("c", "2147483647").unwrap(), Some(i32::MAX));
        assert_eq!(opt_i32("c", "-2147483648").unwrap(), Some(i32::MIN));
        assert!(opt_i32("c", "2147483648").is_err());
        assert!(opt_i32("c", "-0").is_err());
        assert!(opt_i32("c", "--1").is_err());
    }

    #[test]
    fn excerpt_escaping() {
        assert_eq!(
            escape_excerpt(b"ok\tgo\n\\\x01\xff"),
            "ok\\tgo\\n\\\\\\x01\\xff"
        );
        let raw: Vec<u8> = (0..=255u8).collect();
        let e = escape_excerpt(&raw);
        assert!(e.len() <= EXCERPT_MAX);
        // The tail is kept: the last byte 0xff is its last escape.
        assert!(e.ends_with("\\xfe\\xff"));
        let back = unescape_excerpt(&e).unwrap();
        assert!(raw.ends_with(&back));
        // Never cuts an escape in half: 160 bytes of \x01 is 40 escapes.
        assert_eq!(escape_excerpt(&[1u8; 100]).len(), 160);
        assert_eq!(escape_excerpt(&[b'a'; 200]), "a".repeat(160));
        assert_eq!(unescape_excerpt("\\q"), None);
        assert_eq!(unescape_excerpt("\\x4"), None);
    }
}
