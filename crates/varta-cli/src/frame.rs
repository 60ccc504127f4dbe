//! `varta frame decode`: explains a VLP frame byte by byte — a 32-byte
//! plaintext frame (docs/protocol.md §1), or a 60/64-byte sealed one (§2)
//! opened with `--key-file` / `--master-key-file`.
//!
//! Every verdict comes from varta-vlp (`Frame::decode`, `open_shared`,
//! `open_master`); this module only lays the bytes out and says which of
//! them the verdict is about.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use varta_vlp::{
    open_master, open_shared, parse_key_file, AuthError, DecodeError, Frame, Key, Status,
    FRAME_LEN, MASTER_LEN, SHARED_LEN,
};

use crate::cli::{fail, finish_output, unusable, Global, EXIT_FAIL, EXIT_OK};
use crate::ui::{self, paint, state_style, Cell, Table, DIM, HEAD};

/// `varta frame` subcommands.
#[derive(Debug, Subcommand)]
pub enum FrameCommand {
    /// Explain each field of a VLP frame given in hex.
    ///
    /// 32 bytes: a plaintext frame (magic, version, status, pid,
    /// timestamp, nonce, payload, CRC-32C). 60 bytes: a shared-key sealed
    /// frame, opened with --key-file. 64 bytes: a master-key sealed frame,
    /// opened with --master-key-file. Whitespace, colons and a leading 0x
    /// are ignored.
    ///
    /// Exit status: 0 a legal frame; 1 it is not (the error names the
    /// decode error kind and the bytes that caused it), or the hex or its
    /// length is wrong; 2 the key file cannot be used.
    #[command(
        after_help = "Examples:\n  varta frame decode 56410200020000000000000000000000010000000000000000000000e4116baa\n  xxd -p beat.bin | varta frame decode -\n  varta frame decode --key-file /etc/varta/shared.key \"$(xxd -p sealed.bin)\""
    )]
    Decode(DecodeArgs),
}

/// Arguments of `varta frame decode`.
#[derive(Debug, Args)]
pub struct DecodeArgs {
    /// The frame in hex, or `-` to read the hex from standard input.
    #[arg(value_name = "HEX|-")]
    pub input: String,

    /// The shared key (a --key-file of varta-watch) to open a 60-byte
    /// sealed frame.
    #[arg(long, value_name = "PATH", conflicts_with = "master_key_file")]
    pub key_file: Option<PathBuf>,

    /// The master key (a --master-key-file of varta-watch) to open a
    /// 64-byte sealed frame; the agent key is derived for its clear pid.
    #[arg(long, value_name = "PATH")]
    pub master_key_file: Option<PathBuf>,
}

/// Runs a `varta frame` subcommand.
pub fn run(g: &Global, cmd: FrameCommand) -> u8 {
    match cmd {
        FrameCommand::Decode(args) => decode(g, &args),
    }
}

/// Why a frame could not be explained as legal: the kind named on the
/// error line, the bytes it is about, and the message.
#[derive(Debug, PartialEq, Eq)]
pub struct Problem {
    /// `bad_magic`, …, `wrong_length`, `bad_hex`, `aead_bad_tag`,
    /// `aead_pid_mismatch`, `no_key`.
    pub kind: String,
    /// Byte offsets the problem is about, already spelled (`28..32`).
    pub at: String,
    /// What is wrong.
    pub msg: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at {}: {}", self.kind, self.at, self.msg)
    }
}

fn decode(g: &Global, args: &DecodeArgs) -> u8 {
    let text = if args.input == "-" {
        let mut s = String::new();
        if let Err(e) = io::stdin().lock().take(1 << 16).read_to_string(&mut s) {
            return unusable(format_args!("reading the hex from standard input: {e}"));
        }
        s
    } else {
        args.input.clone()
    };
    let key = match (&args.key_file, &args.master_key_file) {
        (Some(p), _) => match read_key(p) {
            Ok(k) => Some((false, k)),
            Err(code) => return code,
        },
        (None, Some(p)) => match read_key(p) {
            Ok(k) => Some((true, k)),
            Err(code) => return code,
        },
        (None, None) => None,
    };
    let bytes = match parse_hex(&text) {
        Ok(b) => b,
        Err(p) => return fail(format_args!("frame decode failed: {p}")),
    };
    let mut report = String::new();
    let verdict = explain(&bytes, key.as_ref().map(|(m, k)| (*m, k)), &mut report);
    let mut out = ui::stdout(g.color);
    let code = finish_output(out.write_all(report.as_bytes()).and_then(|()| out.flush()));
    if code != EXIT_OK {
        return code;
    }
    match verdict {
        Ok(()) => EXIT_OK,
        Err(p) => {
            eprintln!("varta: frame decode failed: {p}");
            EXIT_FAIL
        }
    }
}

fn read_key(path: &Path) -> Result<Key, u8> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        unusable(format_args!(
            "cannot read the key file {}: {e}",
            path.display()
        ))
    })?;
    parse_key_file(&text).map_err(|e| unusable(format_args!("key file {}: {e}", path.display())))
}

/// Hex to bytes; whitespace, `:` and a leading `0x` are skipped. A bad
/// character is reported with its 0-based position in the input.
pub fn parse_hex(text: &str) -> Result<Vec<u8>, Problem> {
    let trimmed = text.trim_start();
    let skip = text.len() - trimmed.len();
    let (body, skip) = match trimmed.strip_prefix("0x").or(trimmed.strip_prefix("0X")) {
        Some(rest) => (rest, skip + 2),
        None => (trimmed, skip),
    };
    let mut digits = Vec::with_capacity(body.len());
    for (i, c) in body.char_indices() {
        if c.is_whitespace() || c == ':' {
            continue;
        }
        match c.to_digit(16) {
            Some(d) => digits.push(d as u8),
            None => {
                return Err(Problem {
                    kind: "bad_hex".into(),
                    at: format!("input character {}", skip + body[..i].chars().count()),
                    msg: format!("{c:?} is not a hex digit"),
                })
            }
        }
    }
    if digits.len() % 2 == 1 {
        return Err(Problem {
            kind: "bad_hex".into(),
            at: format!("hex digit {}", digits.len()),
            msg: format!(
                "odd number of hex digits ({}): a byte is two digits",
                digits.len()
            ),
        });
    }
    Ok(digits.chunks(2).map(|p| p[0] << 4 | p[1]).collect())
}

/// Writes the explanation of `bytes` into `out` and returns the verdict.
/// `key` is `(is_master, key)`.
pub fn explain(bytes: &[u8], key: Option<(bool, &Key)>, out: &mut String) -> Result<(), Problem> {
    match bytes.len() {
        FRAME_LEN => {
            let frame: &[u8; FRAME_LEN] = bytes.try_into().expect("length checked");
            let _ = writeln!(out, "{}", paint(HEAD, "32-byte VLP frame"));
            explain_plain(frame, "", out)
        }
        SHARED_LEN => {
            let sealed: &[u8; SHARED_LEN] = bytes.try_into().expect("length checked");
            explain_shared(sealed, key, out)
        }
        MASTER_LEN => {
            let sealed: &[u8; MASTER_LEN] = bytes.try_into().expect("length checked");
            explain_master(sealed, key, out)
        }
        n => Err(Problem {
            kind: "wrong_length".into(),
            at: format!("byte {n} (end of input)"),
            msg: format!(
                "{n} bytes; a plaintext frame is {FRAME_LEN}, a shared-key sealed frame {SHARED_LEN}, a master-key sealed frame {MASTER_LEN}"
            ),
        }),
    }
}

/// A field of a layout: byte range, name, note.
struct Field {
    range: (usize, usize),
    name: &'static str,
    value: String,
}

fn span((a, b): (usize, usize)) -> String {
    if b == a + 1 {
        format!("{a}")
    } else {
        format!("{a}..{b}")
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Prints a layout table; the field whose range equals `bad` is marked.
fn print_fields(
    bytes: &[u8],
    fields: &[Field],
    bad: &[(usize, usize)],
    indent: &str,
    out: &mut String,
) {
    let rows: Vec<Vec<Cell>> = fields
        .iter()
        .map(|f| {
            let is_bad = bad.contains(&f.range);
            let style = if is_bad {
                state_style("stalled")
            } else {
                anstyle::Style::new()
            };
            let value = if is_bad {
                format!("{}  <- here", f.value)
            } else {
                f.value.clone()
            };
            vec![
                Cell::plain(format!("{indent}{}", span(f.range))),
                Cell::styled(f.name, style),
                Cell::plain(hex(&bytes[f.range.0..f.range.1])),
                Cell::styled(value, style),
            ]
        })
        .collect();
    let mut table = Table::new(&["BYTES", "FIELD", "HEX", "VALUE"]);
    let mut buf = Vec::new();
    let _ = table.print(&mut buf, &rows);
    let text = String::from_utf8_lossy(&buf);
    for line in text.lines() {
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

/// The byte ranges a decode error is about.
fn error_ranges(e: &DecodeError) -> Vec<(usize, usize)> {
    match e {
        DecodeError::BadMagic => vec![(0, 2)],
        DecodeError::BadVersion => vec![(2, 3)],
        DecodeError::BadCrc { .. } => vec![(28, 32)],
        DecodeError::BadStatus(_) | DecodeError::StallOnWire => vec![(3, 4)],
        DecodeError::BadPid(_) => vec![(4, 8)],
        DecodeError::BadTimestamp(_) => vec![(8, 16)],
        DecodeError::BadNonce { .. } => vec![(16, 24), (3, 4)],
    }
}

/// The exact offending byte offsets: the first differing magic byte, the
/// field ranges otherwise.
fn error_at(e: &DecodeError, frame: &[u8; FRAME_LEN]) -> String {
    match e {
        DecodeError::BadMagic => {
            let i = (0..2)
                .find(|&i| frame[i] != varta_vlp::MAGIC[i])
                .unwrap_or(0);
            format!("byte {i}")
        }
        other => {
            let spans: Vec<String> = error_ranges(other)
                .into_iter()
                .map(|r| match span(r) {
                    s if r.1 == r.0 + 1 => format!("byte {s}"),
                    s => format!("bytes {s}"),
                })
                .collect();
            spans.join(" and ")
        }
    }
}

/// Explains a 32-byte frame; `ctx` prefixes byte offsets in the verdict
/// (`inner frame ` for a decrypted one).
fn explain_plain(frame: &[u8; FRAME_LEN], ctx: &str, out: &mut String) -> Result<(), Problem> {
    let verdict = Frame::decode(frame);
    let status_byte = frame[3];
    let status = match Status::from_u8(status_byte) {
        Some(s) => format!("{status_byte} = {s}"),
        None => format!("{status_byte} = unknown"),
    };
    let nonce = le_u64(frame, 16);
    let crc_wire = le_u32(frame, 28);
    let crc_ok = varta_vlp::crc32c(&frame[0..28]) == crc_wire;
    let fields = [
        Field {
            range: (0, 2),
            name: "magic",
            value: format!("{:?}", String::from_utf8_lossy(&frame[0..2])),
        },
        Field {
            range: (2, 3),
            name: "version",
            value: format!("{:#04x}", frame[2]),
        },
        Field {
            range: (3, 4),
            name: "status",
            value: status,
        },
        Field {
            range: (4, 8),
            name: "pid",
            value: le_u32(frame, 4).to_string(),
        },
        Field {
            range: (8, 16),
            name: "timestamp",
            value: le_u64(frame, 8).to_string(),
        },
        Field {
            range: (16, 24),
            name: "nonce",
            value: if nonce == varta_vlp::NONCE_TERMINAL {
                "u64::MAX (terminal)".to_owned()
            } else {
                nonce.to_string()
            },
        },
        Field {
            range: (24, 28),
            name: "payload",
            value: format!("{0} ({0:#010x})", le_u32(frame, 24)),
        },
        Field {
            range: (28, 32),
            name: "crc32c",
            value: format!(
                "{crc_wire:#010x} ({})",
                if crc_ok {
                    "matches bytes 0..28"
                } else {
                    "mismatch"
                }
            ),
        },
    ];
    let indent = if ctx.is_empty() { "" } else { "  " };
    let bad = verdict.as_ref().err().map(error_ranges).unwrap_or_default();
    print_fields(frame, &fields, &bad, indent, out);
    match verdict {
        Ok(f) => {
            let what = if f.is_terminal() {
                "legal terminal (dying-gasp) frame"
            } else {
                "legal frame"
            };
            let _ = writeln!(out, "{indent}{}", paint(state_style("ok"), what));
            Ok(())
        }
        Err(e) => Err(Problem {
            kind: format!("{} ({})", e.kind(), e.variant_name()),
            at: format!("{ctx}{}", error_at(&e, frame)),
            msg: e.to_string(),
        }),
    }
}

fn explain_shared(
    sealed: &[u8; SHARED_LEN],
    key: Option<(bool, &Key)>,
    out: &mut String,
) -> Result<(), Problem> {
    let _ = writeln!(
        out,
        "{}",
        paint(HEAD, "60-byte shared-key sealed frame (ChaCha20-Poly1305)")
    );
    let fields = [
        Field {
            range: (0, 8),
            name: "iv_random",
            value: "IV prefix".into(),
        },
        Field {
            range: (8, 12),
            name: "iv_counter",
            value: le_u32(sealed, 8).to_string(),
        },
        Field {
            range: (12, 44),
            name: "ciphertext",
            value: "the sealed 32-byte frame".into(),
        },
        Field {
            range: (44, 60),
            name: "tag",
            value: "Poly1305".into(),
        },
    ];
    let _ = writeln!(
        out,
        "{}",
        paint(DIM, "AEAD nonce = bytes 0..12, associated data: none")
    );
    let tag_bad = match key {
        Some((false, k)) => open_shared(k, sealed).map_err(|e| auth_problem(e, (44, 60))),
        Some((true, _)) => Err(no_key(
            "a 60-byte frame is sealed with a shared key: give --key-file, not --master-key-file",
        )),
        None => Err(no_key("the frame is sealed: give --key-file to open it")),
    };
    open_and_explain(sealed, &fields, tag_bad, (44, 60), out)
}

fn explain_master(
    sealed: &[u8; MASTER_LEN],
    key: Option<(bool, &Key)>,
    out: &mut String,
) -> Result<(), Problem> {
    let _ = writeln!(
        out,
        "{}",
        paint(HEAD, "64-byte master-key sealed frame (ChaCha20-Poly1305)")
    );
    let fields = [
        Field {
            range: (0, 4),
            name: "agent_pid",
            value: le_u32(sealed, 0).to_string(),
        },
        Field {
            range: (4, 12),
            name: "iv_random",
            value: "IV prefix".into(),
        },
        Field {
            range: (12, 16),
            name: "iv_counter",
            value: le_u32(sealed, 12).to_string(),
        },
        Field {
            range: (16, 48),
            name: "ciphertext",
            value: "the sealed 32-byte frame".into(),
        },
        Field {
            range: (48, 64),
            name: "tag",
            value: "Poly1305".into(),
        },
    ];
    let _ = writeln!(
        out,
        "{}",
        paint(
            DIM,
            "AEAD key = derive_agent_key(master, agent_pid), nonce = bytes 4..16, associated data = bytes 0..4"
        )
    );
    let opened = match key {
        Some((true, k)) => open_master(k, sealed)
            .map(|(_, plain)| plain)
            .map_err(|e| auth_problem(e, (48, 64))),
        Some((false, _)) => Err(no_key(
            "a 64-byte frame is sealed with a master key: give --master-key-file, not --key-file",
        )),
        None => Err(no_key(
            "the frame is sealed: give --master-key-file to open it",
        )),
    };
    open_and_explain(sealed, &fields, opened, (48, 64), out)
}

/// Prints the sealed layout, then the decrypted frame when the tag held.
fn open_and_explain(
    sealed: &[u8],
    fields: &[Field],
    opened: Result<[u8; FRAME_LEN], Problem>,
    tag: (usize, usize),
    out: &mut String,
) -> Result<(), Problem> {
    match opened {
        Ok(plain) => {
            print_fields(sealed, fields, &[], "", out);
            let _ = writeln!(out, "tag verified; decrypted inner frame:");
            explain_plain(&plain, "inner frame ", out)
        }
        Err(p) => {
            let bad: Vec<(usize, usize)> = if p.kind.starts_with("aead_bad_tag") {
                vec![tag]
            } else if p.kind.starts_with("aead_pid_mismatch") {
                vec![(0, 4)]
            } else {
                Vec::new()
            };
            print_fields(sealed, fields, &bad, "", out);
            Err(p)
        }
    }
}

fn no_key(msg: &str) -> Problem {
    Problem {
        kind: "no_key".into(),
        at: "the whole frame".into(),
        msg: msg.into(),
    }
}

fn auth_problem(e: AuthError, tag: (usize, usize)) -> Problem {
    match e {
        AuthError::BadTag => Problem {
            kind: "aead_bad_tag (AuthError::BadTag)".into(),
            at: format!("bytes {}", span(tag)),
            msg: format!("{e}: the key is wrong or a byte of the frame was changed"),
        },
        AuthError::PidMismatch { .. } => Problem {
            kind: "aead_pid_mismatch (AuthError::PidMismatch)".into(),
            at: "bytes 0..4 and inner frame bytes 4..8".into(),
            msg: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = "56410200020000000000000000000000010000000000000000000000e4116baa";

    fn plain(s: &str) -> String {
        anstream::adapter::strip_str(s).to_string()
    }

    #[test]
    fn hex_tolerates_spaces_colons_and_0x() {
        assert_eq!(
            parse_hex(" 0x56:41 02\n00").unwrap(),
            vec![0x56, 0x41, 2, 0]
        );
        let e = parse_hex("56 4g").unwrap_err();
        assert_eq!(e.kind, "bad_hex");
        assert_eq!(e.at, "input character 4");
        let e = parse_hex("564").unwrap_err();
        assert!(e.msg.contains("odd number of hex digits (3)"), "{e}");
    }

    #[test]
    fn a_legal_frame_is_explained_field_by_field() {
        let mut out = String::new();
        explain(&parse_hex(OK).unwrap(), None, &mut out).unwrap();
        let text = plain(&out);
        for needle in [
            "0..2    magic      5641",
            "\"VA\"",
            "3       status     00                0 = ok",
            "4..8    pid        02000000          2",
            "16..24  nonce      0100000000000000  1",
            "28..32  crc32c     e4116baa          0xaa6b11e4 (matches bytes 0..28)",
            "legal frame",
        ] {
            assert!(text.contains(needle), "{needle:?} not in\n{text}");
        }
    }

    #[test]
    fn errors_name_kind_and_bytes() {
        let mut b = parse_hex(OK).unwrap();
        b[1] = 0;
        let e = explain(&b, None, &mut String::new()).unwrap_err();
        assert_eq!(e.kind, "bad_magic (BadMagic)");
        assert_eq!(e.at, "byte 1");
        b = parse_hex(OK).unwrap();
        b[31] ^= 1;
        let e = explain(&b, None, &mut String::new()).unwrap_err();
        assert_eq!(
            (e.kind.as_str(), e.at.as_str()),
            ("bad_crc (BadCrc)", "bytes 28..32")
        );
        let e = explain(&b[..31], None, &mut String::new()).unwrap_err();
        assert_eq!(
            (e.kind.as_str(), e.at.as_str()),
            ("wrong_length", "byte 31 (end of input)")
        );
    }

    #[test]
    fn sealed_without_key_shows_layout_and_asks_for_it() {
        let mut out = String::new();
        let e = explain(&[0u8; 60], None, &mut out).unwrap_err();
        assert_eq!(e.kind, "no_key");
        assert!(plain(&out).contains("8..12   iv_counter"), "{out}");
    }
}
