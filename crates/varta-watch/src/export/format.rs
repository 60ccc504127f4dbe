//! Line formats of the event file: the original's TSV and our JSON.

use std::fmt;
use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use varta_vlp::NONCE_TERMINAL;

use crate::events::{Event, RecoveryOutcome};
use crate::identity::{IdentityId, Registry};
use crate::policy::Names;

/// One TSV line, newline included. The 0.2.0 kinds are byte-for-byte what
/// 0.2.0 wrote (including `Debug` of the decode error).
pub(super) fn write_tsv(
    out: &mut Vec<u8>,
    ns: u64,
    event: &Event,
    names: Option<&Names>,
) -> io::Result<()> {
    match *event {
        Event::Beat {
            pid,
            nonce,
            status,
            payload,
            ..
        } => writeln!(
            out,
            "{ns}\tbeat\t{pid}\t{nonce}\t{}\t{payload}",
            status.as_str()
        ),
        Event::Stall {
            pid, last_nonce, ..
        } => writeln!(out, "{ns}\tstall\t{pid}\t{last_nonce}\tstall\t-"),
        Event::Recovered {
            pid,
            nonce,
            status,
            payload,
            ..
        } => writeln!(
            out,
            "{ns}\trecovered\t{pid}\t{nonce}\t{}\t{payload}",
            status.as_str()
        ),
        Event::Exit { pid, payload, .. } => {
            writeln!(
                out,
                "{ns}\texit\t{pid}\t{NONCE_TERMINAL}\tcritical\t{payload}"
            )
        }
        Event::AuthFailure { claimed_pid, .. } => {
            writeln!(out, "{ns}\tmismatch\t{claimed_pid}\t-\t-\tauth_failure")
        }
        Event::OriginConflict { pid, .. } => {
            writeln!(out, "{ns}\tmismatch\t{pid}\t-\t-\torigin_conflict")
        }
        Event::NamespaceConflict { pid, .. } => {
            writeln!(out, "{ns}\tmismatch\t{pid}\t-\t-\tnamespace_conflict")
        }
        Event::DecodeError(e) => writeln!(out, "{ns}\tdecode\t-\t-\t-\t{e:?}"),
        Event::Truncated { len } => writeln!(out, "{ns}\tdecode\t-\t-\t-\tTruncated({len})"),
        Event::Rejected { pid: 0, reason } => {
            writeln!(out, "{ns}\trejected\t-\t-\t-\t{}", reason.as_str())
        }
        Event::Rejected { pid, reason } => {
            writeln!(out, "{ns}\trejected\t{pid}\t-\t-\t{}", reason.as_str())
        }
        Event::Eviction { pid, .. } => writeln!(out, "{ns}\teviction\t{pid}\t-\t-\t-"),
        Event::CapacityExceeded { pid } => {
            writeln!(out, "{ns}\tcapacity_exceeded\t{pid}\t-\t-\t-")
        }
        Event::NewLife { pid } => writeln!(out, "{ns}\tnew_life\t{pid}\t-\t-\t-"),
        Event::NonceWrap { pid } => writeln!(out, "{ns}\tnonce_wrap\t{pid}\t-\t-\t-"),
        Event::Ctrunc => writeln!(out, "{ns}\tctrunc\t-\t-\t-\tMSG_CTRUNC"),
        Event::Io { errno } => writeln!(
            out,
            "{ns}\tio\t-\t-\t-\t{}",
            io::Error::from_raw_os_error(errno)
        ),
        Event::ClockRegression { back_ns } => {
            writeln!(out, "{ns}\tclock_regression\t-\t-\t-\t{back_ns}")
        }
        Event::ClockJump { forward_ns } => {
            writeln!(out, "{ns}\tclock_jump\t-\t-\t-\t{forward_ns}")
        }
        // The original's TSV export has no recovery lines and its readers
        // know only its kinds; recovery is in the audit log and the JSON
        // export.
        Event::Recovery { .. } => Ok(()),
        // Secure-UDP drops (0.2.0 only counted them): our own kinds.
        Event::DecryptFailure {
            master: false,
            from,
            ..
        } => writeln!(out, "{ns}\tdecrypt_failure\t-\t-\t-\tshared from={from}"),
        Event::DecryptFailure { wire_pid, from, .. } => writeln!(
            out,
            "{ns}\tdecrypt_failure\t{wire_pid}\t-\t-\tmaster from={from}"
        ),
        Event::SenderStateFull { pid } => {
            writeln!(out, "{ns}\tsender_state_full\t{pid}\t-\t-\t-")
        }
        // Identity is in the JSON export; the TSV keeps the original's
        // columns (a name does not fit them).
        Event::Identified { .. } => Ok(()),
        Event::Missing { name } => {
            let n = Names::show(names, name);
            writeln!(out, "{ns}\tmissing\t-\t-\t-\t{}", tsv_safe(&n))
        }
        Event::Present { name, pid } => {
            let n = Names::show(names, name);
            writeln!(out, "{ns}\tpresent\t{pid}\t-\t-\t{}", tsv_safe(&n))
        }
    }
}

/// Names come from processes (comm, cgroups): keep them from breaking a
/// TSV line.
fn tsv_safe(s: &str) -> String {
    s.replace(['\t', '\n', '\r'], " ")
}

/// Where a JSON line gets agent identities from: the policy engine's
/// [`Names`] on the detection thread, or a copy of one pid's identity taken
/// there (the control API formats its event stream on the HTTP thread).
pub(crate) trait NameLookup {
    /// The registry that turns ids into strings.
    fn registry(&self) -> &Registry;
    /// The identity of `pid`, if known.
    fn identity_of(&self, pid: u32) -> Option<IdentityId>;
}

impl NameLookup for Names {
    fn registry(&self) -> &Registry {
        Names::registry(self)
    }
    fn identity_of(&self, pid: u32) -> Option<IdentityId> {
        self.identity(pid)
    }
}

/// One JSON line, newline included; `wall` becomes `time`.
pub(crate) fn write_json(
    out: &mut Vec<u8>,
    ns: u64,
    wall: SystemTime,
    event: &Event,
    names: Option<&dyn NameLookup>,
) -> io::Result<()> {
    let (nonce, status, payload) = match *event {
        Event::Beat {
            nonce,
            status,
            payload,
            ..
        }
        | Event::Recovered {
            nonce,
            status,
            payload,
            ..
        } => (Some(nonce), Some(status.as_str()), Some(payload)),
        Event::Stall { last_nonce, .. } => (Some(last_nonce), Some("stall"), None),
        Event::Exit { payload, .. } => (Some(NONCE_TERMINAL), Some("critical"), Some(payload)),
        _ => (None, None, None),
    };

    write!(
        out,
        "{{\"time\":\"{}\",\"observer_ns\":{ns},\"kind\":",
        humantime::format_rfc3339_nanos(representable(wall))
    )?;
    json_str(out, event.kind())?;
    out.extend_from_slice(b",\"pid\":");
    json_num(out, event.pid())?;
    out.extend_from_slice(b",\"nonce\":");
    json_num(out, nonce)?;
    out.extend_from_slice(b",\"status\":");
    match status {
        Some(s) => json_str(out, s)?,
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"payload\":");
    json_num(out, payload)?;
    out.extend_from_slice(b",\"detail\":");
    match *event {
        Event::Beat { origin, .. } | Event::Exit { origin, .. } => json_str(out, origin.as_str())?,
        Event::Recovered { silent_ns, .. } => write!(out, "\"silent_ns={silent_ns}\"")?,
        Event::AuthFailure { kernel_pid, .. } => write!(out, "\"kernel_pid={kernel_pid}\"")?,
        Event::OriginConflict { pinned, got, .. } => {
            write!(out, "\"pinned={} got={}\"", pinned.as_str(), got.as_str())?
        }
        Event::NamespaceConflict { pinned, got, .. } => {
            write!(out, "\"pinned={pinned} got={got}\"")?
        }
        Event::DecodeError(e) => json_str(out, e.kind())?,
        Event::Truncated { len } => write!(out, "\"len={len}\"")?,
        Event::Rejected { reason, .. } => json_str(out, reason.as_str())?,
        Event::Eviction { was_live, .. } => write!(out, "\"was_live={was_live}\"")?,
        Event::Io { errno } => {
            out.push(b'"');
            fmt::Write::write_fmt(
                &mut JsonEscape(out),
                format_args!("{}", io::Error::from_raw_os_error(errno)),
            )
            .map_err(|_| io::Error::other("formatting an OS error failed"))?;
            out.push(b'"');
        }
        Event::ClockRegression { back_ns } => write!(out, "\"back_ns={back_ns}\"")?,
        Event::ClockJump { forward_ns } => write!(out, "\"forward_ns={forward_ns}\"")?,
        Event::DecryptFailure {
            master,
            attempts,
            from,
            ..
        } => {
            let layout = if master { "master" } else { "shared" };
            write!(out, "\"{layout} attempts={attempts} from={from}\"")?
        }
        Event::Recovery { child, outcome, .. } => match outcome {
            RecoveryOutcome::ReapedNonzero { code } => {
                write!(out, "\"{} child={child} code={code}\"", outcome.as_str())?
            }
            RecoveryOutcome::SpawnFailed { errno } => {
                write!(out, "\"{} errno={errno}\"", outcome.as_str())?
            }
            _ if child != 0 => write!(out, "\"{} child={child}\"", outcome.as_str())?,
            _ => json_str(out, outcome.as_str())?,
        },
        Event::Stall { .. }
        | Event::CapacityExceeded { .. }
        | Event::NewLife { .. }
        | Event::NonceWrap { .. }
        | Event::SenderStateFull { .. }
        | Event::Ctrunc => out.extend_from_slice(b"null"),
        Event::Identified { rule, .. } => match rule {
            Some(r) => write!(out, "\"rule=#{}\"", u32::from(r) + 1)?,
            None => json_str(out, "rule=none")?,
        },
        Event::Missing { name } | Event::Present { name, .. } => match names {
            Some(n) => json_str(out, &n.registry().name_str(name))?,
            None => out.extend_from_slice(b"null"),
        },
    }
    identity_fields(out, event, names)?;
    out.extend_from_slice(b"}\n");
    Ok(())
}

/// `name`, `unit`, `container`, `comm`, `exe` of the event's agent (null
/// while unknown or without a pid).
fn identity_fields(
    out: &mut Vec<u8>,
    event: &Event,
    names: Option<&dyn NameLookup>,
) -> io::Result<()> {
    let rec = match (event, names) {
        (Event::Identified { identity, .. }, Some(n)) => Some(n.registry().get(*identity)),
        (_, Some(n)) => event
            .pid()
            .and_then(|pid| n.identity_of(pid))
            .map(|id| n.registry().get(id)),
        _ => None,
    };
    let field = |out: &mut Vec<u8>, key: &str, v: Option<&str>| -> io::Result<()> {
        out.push(b',');
        json_str(out, key)?;
        out.push(b':');
        match v {
            Some(v) => json_str(out, v),
            None => {
                out.extend_from_slice(b"null");
                Ok(())
            }
        }
    };
    field(out, "name", rec.as_ref().map(|r| &*r.name))?;
    field(out, "unit", rec.as_ref().and_then(|r| r.unit.as_deref()))?;
    field(
        out,
        "container",
        rec.as_ref().and_then(|r| r.container.as_deref()),
    )?;
    field(out, "comm", rec.as_ref().and_then(|r| r.comm.as_deref()))?;
    field(out, "exe", rec.as_ref().and_then(|r| r.exe.as_deref()))
}

/// Clamps `t` into what RFC 3339 formatting accepts: humantime panics before
/// 1970 and fails after 9999, and a mis-set host clock must cost neither a
/// panic nor the line.
fn representable(t: SystemTime) -> SystemTime {
    const LAST: Duration = Duration::from_secs(253_402_300_799); // 9999-12-31T23:59:59Z
    match t.duration_since(UNIX_EPOCH) {
        Err(_) => UNIX_EPOCH,
        Ok(d) if d > LAST => UNIX_EPOCH + LAST,
        Ok(_) => t,
    }
}

fn json_num<T: fmt::Display>(out: &mut Vec<u8>, v: Option<T>) -> io::Result<()> {
    match v {
        Some(v) => write!(out, "{v}"),
        None => {
            out.extend_from_slice(b"null");
            Ok(())
        }
    }
}

pub(super) fn json_str(out: &mut Vec<u8>, s: &str) -> io::Result<()> {
    out.push(b'"');
    fmt::Write::write_str(&mut JsonEscape(out), s)
        .map_err(|_| io::Error::other("escaping a JSON string failed"))?;
    out.push(b'"');
    Ok(())
}

/// Appends text with JSON string escaping (the quotes are the caller's).
struct JsonEscape<'a>(&'a mut Vec<u8>);

impl fmt::Write for JsonEscape<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            match b {
                b'"' => self.0.extend_from_slice(b"\\\""),
                b'\\' => self.0.extend_from_slice(b"\\\\"),
                b'\n' => self.0.extend_from_slice(b"\\n"),
                b'\r' => self.0.extend_from_slice(b"\\r"),
                b'\t' => self.0.extend_from_slice(b"\\t"),
                0..=0x1f | 0x7f => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    self.0.extend_from_slice(b"\\u00");
                    self.0.push(HEX[usize::from(b >> 4)]);
                    self.0.push(HEX[usize::from(b & 0xf)]);
                }
                // Multi-byte UTF-8 passes through unchanged: JSON is UTF-8.
                _ => self.0.push(b),
            }
        }
        Ok(())
    }
}
