//! Facts about processes that only `/proc` knows: start time (pid
//! recycling), PID namespace (cross-namespace agents), `pid_max`, and
//! identity (comm, exe, uid, unit, container: [`crate::identity::procread`]).

use std::io::Read;

use crate::tracker::ProcessProbe;

/// Reads `/proc` with a reusable buffer (no allocation per read).
pub struct ProcFs {
    root: std::path::PathBuf,
    buf: Vec<u8>,
}

impl Default for ProcFs {
    fn default() -> Self {
        ProcFs::at("/proc")
    }
}

impl ProcFs {
    /// A reader rooted at `root` (tests point it at a fake tree).
    pub fn at(root: impl Into<std::path::PathBuf>) -> ProcFs {
        ProcFs {
            root: root.into(),
            buf: Vec::with_capacity(1024),
        }
    }

    /// `/proc/sys/kernel/pid_max`.
    pub fn pid_max(&mut self) -> Option<u32> {
        let text = std::fs::read_to_string(self.root.join("sys/kernel/pid_max")).ok()?;
        text.trim().parse().ok()
    }

    /// The observer's own PID-namespace inode.
    pub fn own_pid_namespace(&mut self) -> Option<u32> {
        ns_inode(&self.root.join("self/ns/pid"))
    }
}

/// Parses `pid:[4026531836]` from the namespace link.
fn ns_inode(link: &std::path::Path) -> Option<u32> {
    let target = std::fs::read_link(link).ok()?;
    let s = target.to_str()?;
    let inner = s.strip_prefix("pid:[")?.strip_suffix(']')?;
    // Namespace inodes are 32-bit on Linux (proc_inum allocations).
    inner
        .parse::<u64>()
        .ok()
        .and_then(|v| u32::try_from(v).ok())
}

/// Field 22 (`starttime`) of a `/proc/<pid>/stat` line. The command name
/// (field 2) may contain spaces and parentheses, so fields are counted from
/// the last `)`.
pub fn parse_start_time(stat: &[u8]) -> Option<u64> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    // After ")" come fields 3.. ; starttime is field 22 → index 19.
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

impl ProcessProbe for ProcFs {
    fn start_time(&mut self, pid: u32) -> Option<u64> {
        let mut path = self.root.clone();
        path.push(pid.to_string());
        path.push("stat");
        let mut f = std::fs::File::open(path).ok()?;
        self.buf.clear();
        f.read_to_end(&mut self.buf).ok()?;
        parse_start_time(&self.buf)
    }

    fn pid_namespace(&mut self, pid: u32) -> Option<u32> {
        let mut path = self.root.clone();
        path.push(pid.to_string());
        path.push("ns/pid");
        ns_inode(&path)
    }

    fn identity(&mut self, pid: u32) -> Option<crate::identity::RawIdentity> {
        crate::identity::procread::read(&self.root, pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_survives_hostile_comm() {
        let line = b"1234 (a) b) (c 1 2) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_time(line), Some(987654));
        assert_eq!(parse_start_time(b"garbage"), None);
        assert_eq!(parse_start_time(b"1 (x) S 1"), None);
    }

    #[test]
    fn reads_own_process() {
        let mut p = ProcFs::default();
        let me = std::process::id();
        assert!(p.start_time(me).is_some());
        assert_eq!(p.pid_namespace(me), p.own_pid_namespace());
        assert!(p.pid_max().unwrap() >= 32768);
        assert!(p.start_time(u32::MAX).is_none());
        let id = p.identity(me).expect("own identity");
        assert_eq!(id.uid, Some(rustix::process::getuid().as_raw()));
        assert!(p.identity(u32::MAX).is_none());
    }
}
