//! The audit log under crashes and a full disk, with the real observer:
//! SIGKILL in the middle of a burst of records, a torn tail, a tmpfs that
//! runs out of space and gets it back.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{spawn_agent, Observer};
use nix::sys::signal::Signal;

#[test]
fn agent_entry() {
    common::maybe_run_agent();
}

fn records(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

fn of_kind(path: &Path, kind: &str) -> Vec<Vec<String>> {
    records(path)
        .iter()
        .map(|l| l.split('\t').map(str::to_string).collect::<Vec<_>>())
        .filter(|r| r.len() > 3 && r[3] == kind)
        .collect()
}

/// Starts `n` agents, waits until each has beaten, then kills and reaps
/// them all at once; returns their guards (for their pids).
fn beat_then_die(obs: &Observer, n: usize) -> Vec<common::ChildGuard> {
    let mut agents: Vec<common::ChildGuard> = (0..n)
        .map(|_| spawn_agent("beat", &obs.socket, 20))
        .collect();
    for a in &agents {
        obs.wait_for("beat", Some(a.id()));
    }
    for a in &mut agents {
        let _ = a.kill();
        let _ = a.wait();
    }
    agents
}

fn verify(path: &Path) -> varta_audit::Summary {
    varta_audit::verify_files(&[path.to_path_buf()], &varta_audit::ChainKey::Plain)
        .unwrap_or_else(|e| panic!("chain must verify: {e}"))
}

/// Many agents die at once, the observer is SIGKILLed while it writes
/// their records, a half-written line is left at the end (what a crash in
/// mid-write leaves), and the restarted observer repairs the tail, says so
/// in a boot record, keeps every complete record and extends the chain.
#[test]
fn sigkill_mid_write_then_restart_repairs_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.tsv");
    let exec = common::exit0_recovery(dir.path());
    let args = [
        "--threshold-ms",
        "300",
        "--recovery-exec",
        exec.as_str(),
        "--recovery-audit-file",
        audit.to_str().unwrap(),
    ];
    let keep = dir.path().to_path_buf();
    let mut obs = Observer::start_in(dir, &args);
    beat_then_die(&obs, 20);
    // Kill while records are being written.
    obs.wait_until("some spawn records", || of_kind(&audit, "spawn").len() >= 3);
    obs.signal(Signal::SIGKILL);
    let _ = obs.wait_exit();
    let before = records(&audit);
    assert!(!before.is_empty());
    // The page cache survives SIGKILL, so simulate the torn write a power
    // cut would leave: half a record, no newline.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&audit)
        .unwrap();
    std::io::Write::write_all(&mut f, b"999\t1700000000000\t0\tspawn\t12").unwrap();
    drop(f);

    let socket = keep.join("obs2.sock");
    let mut again = Command::new(common::bin())
        .args(["--socket", socket.to_str().unwrap()])
        .args(args)
        .args(["--shutdown-after-secs", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(again.wait().unwrap().success());
    let after = records(&audit);
    let complete_before: Vec<&String> = before
        .iter()
        .filter(|l| l.ends_with(|c: char| c.is_ascii_hexdigit()))
        .collect();
    for (i, l) in complete_before.iter().enumerate() {
        assert_eq!(&after[i], *l, "committed record {i} kept");
    }
    let boots = of_kind(&audit, "boot");
    assert_eq!(boots.last().unwrap()[6], "corrupt_tail", "{boots:?}");
    let summary = verify(&audit);
    assert!(summary.boots >= 2);
    drop(keep);
}

/// A tmpfs that fills up: writes fail and are counted, the observer keeps
/// detecting stalls, and once space returns the held records are written
/// and the chain verifies.
#[test]
fn disk_full_is_survived_and_recovered() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&mnt)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let audit = mnt.join("audit.tsv");
    let exec = common::exit0_recovery(dir.path());
    let obs_dir = tempfile::tempdir().unwrap();
    let obs = Observer::start_in(
        obs_dir,
        &[
            "--threshold-ms",
            "300",
            "--recovery-exec",
            exec.as_str(),
            "--recovery-debounce-ms",
            "0",
            "--recovery-audit-file",
            audit.to_str().unwrap(),
        ],
    );
    obs.wait_until("boot record", || !of_kind(&audit, "boot").is_empty());
    // Fill the filesystem.
    let filler = mnt.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=4k", "count=64"])
        .arg(format!("of={}", filler.display()))
        .stderr(Stdio::null())
        .status();
    // The audit file's last page still has room for a few records; 30
    // agents' spawn and complete records are far more than that.
    const N: usize = 30;
    let agents = beat_then_die(&obs, N);
    // Detection goes on while the audit disk is full.
    for a in &agents {
        obs.wait_for("stall", Some(a.id()));
    }
    std::thread::sleep(Duration::from_millis(500));
    let while_full = of_kind(&audit, "complete").len();
    assert!(
        while_full < N,
        "the disk is full: only {while_full} of {N} fit"
    );
    assert!(
        obs.stderr().contains("recovery audit write failed"),
        "the write failure is logged: {}",
        obs.stderr()
    );
    // Space returns: the held records arrive.
    std::fs::remove_file(&filler).unwrap();
    obs.wait_until("records after space returned", || {
        of_kind(&audit, "complete").len() >= N
    });
    assert_eq!(of_kind(&audit, "spawn").len(), N, "no record lost");
    obs.wait_until("recovery logged", || {
        obs.stderr().contains("recovery audit writes recovered")
    });
    verify(&audit);
}

/// With `--recovery-audit-key-file` the observer writes an HMAC chain:
/// it verifies with the key and not as a plain SHA-256 chain.
#[test]
fn hmac_chain_written_by_the_observer_needs_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("audit.key");
    std::fs::write(&key, format!("{}\n", "5a".repeat(32))).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let audit = dir.path().join("audit.tsv");
    let exec = common::exit0_recovery(dir.path());
    let mut obs = Observer::start_in(
        dir,
        &[
            "--threshold-ms",
            "300",
            "--recovery-exec",
            exec.as_str(),
            "--recovery-audit-file",
            audit.to_str().unwrap(),
            "--recovery-audit-key-file",
            key.to_str().unwrap(),
        ],
    );
    let mut agent = spawn_agent("beat", &obs.socket, 20);
    obs.wait_for("beat", Some(agent.id()));
    let _ = agent.kill();
    let _ = agent.wait();
    obs.wait_until("complete record", || {
        !of_kind(&audit, "complete").is_empty()
    });
    obs.signal(Signal::SIGTERM);
    assert_eq!(obs.wait_exit(), Some(0));
    let hmac = varta_audit::ChainKey::from_key_file(&key).unwrap();
    let summary = varta_audit::verify_files(std::slice::from_ref(&audit), &hmac).unwrap();
    assert_eq!(summary.records, 3, "boot, spawn, complete");
    assert!(
        varta_audit::verify_files(&[audit], &varta_audit::ChainKey::Plain).is_err(),
        "an HMAC chain is not a plain SHA-256 chain"
    );
}

/// An existing audit file others can read is refused at startup (exit 1)
/// with the fix named, before the socket is bound.
#[test]
fn audit_file_readable_by_others_is_refused_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.tsv");
    std::fs::write(&audit, varta_audit::HEADER_V2).unwrap();
    std::fs::set_permissions(&audit, std::fs::Permissions::from_mode(0o644)).unwrap();
    let socket = dir.path().join("obs.sock");
    let out = Command::new(common::bin())
        .args(["--socket", socket.to_str().unwrap()])
        .args(["--recovery-audit-file", audit.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chmod"), "{err}");
    assert!(!socket.exists(), "no socket left behind");
}
