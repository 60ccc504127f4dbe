//! Upgrading from the original 0.2.0 built without `audit-chain`: its audit
//! file (chain column `-` in every record, vendored in
//! tests/data/original-0.2.0-nochain.tsv) is continued by the real observer
//! — every old byte kept, new records chained after a boot record that
//! seals the old ones — and never cut, unless its last line is torn.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{spawn_agent, Observer};
use nix::sys::signal::Signal;
use varta_audit::{verify_files, ChainKey, Problem, Summary, VerifyError};

#[test]
fn agent_entry() {
    common::maybe_run_agent();
}

fn fixture() -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/original-0.2.0-nochain.tsv"),
    )
    .unwrap()
}

/// Copies the fixture (plus `extra` bytes) into `dir` as the observer's
/// audit file, mode 0600 as the observer requires.
fn install(dir: &Path, extra: &[u8]) -> PathBuf {
    let path = dir.join("audit.tsv");
    let mut bytes = fixture();
    bytes.extend_from_slice(extra);
    std::fs::write(&path, bytes).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn records(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// Starts the observer (in a directory of its own, removed after it) on
/// `audit`, lets one agent stall so a recovery is recorded, stops it with
/// SIGTERM and returns its stderr.
fn run_with_one_recovery(audit: &Path) -> String {
    let dir = tempfile::tempdir().unwrap();
    let exec = common::exit0_recovery(dir.path());
    let before = records(audit).len();
    let mut obs = Observer::start_in(
        dir,
        &[
            "--threshold-ms",
            "300",
            "--recovery-exec",
            exec.as_str(),
            "--recovery-audit-file",
            audit.to_str().unwrap(),
        ],
    );
    let mut agent = spawn_agent("beat", &obs.socket, 20);
    obs.wait_for("beat", Some(agent.id()));
    let _ = agent.kill();
    let _ = agent.wait();
    obs.wait_until("spawn and complete records", || {
        let r = records(audit);
        r[before..].iter().any(|c| c[3] == "complete")
    });
    obs.signal(Signal::SIGTERM);
    assert_eq!(obs.wait_exit(), Some(0), "{}", obs.stderr());
    obs.stderr()
}

fn verify(path: &Path, key: &ChainKey) -> Result<Summary, VerifyError> {
    verify_files(&[path.to_path_buf()], key)
}

/// `varta audit verify PATH` when the CLI is built next to `varta-watch`
/// (`cargo build -p varta-cli`): its stdout. A cargo test of this package
/// alone does not build it; the library call above it is what the CLI
/// prints after `OK: `.
fn cli_verify(path: &Path) -> Option<String> {
    let cli = common::bin().with_file_name("varta");
    if !cli.exists() {
        eprintln!("note: {} not built; CLI output not checked", cli.display());
        return None;
    }
    let out = Command::new(cli)
        .args(["audit", "verify"])
        .arg(path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    Some(String::from_utf8(out.stdout).unwrap())
}

#[test]
fn an_unchained_file_of_the_original_is_continued_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let audit = install(dir.path(), b"");
    let old = fixture();
    let old_summary = verify(&audit, &ChainKey::Plain).unwrap();
    assert_eq!((old_summary.records, old_summary.unchained), (11, 11));

    let stderr = run_with_one_recovery(&audit);
    let now = std::fs::read(&audit).unwrap();
    assert_eq!(&now[..old.len()], &old[..], "every old byte is kept");
    assert!(
        stderr.contains("records without a hash chain") && stderr.contains("unchained=11"),
        "the upgrade is logged: {stderr}"
    );
    assert!(!stderr.contains("torn"), "{stderr}");
    let r = records(&audit);
    // seq 12: our boot, resuming, sealed with the chain the old records
    // would have had; then the recovery's records, chained.
    assert_eq!(&r[11][..4], ["12", r[11][1].as_str(), "0", "boot"]);
    assert_eq!(r[11][6], "resume");
    assert_eq!(
        r[11][5],
        to_hex(&old_summary.last_chain.unwrap()),
        "the boot record seals the old records"
    );
    assert!(r[12..].iter().any(|c| c[3] == "spawn"));
    assert!(r[11..].iter().all(|c| c.last().unwrap().len() == 64));

    let s = verify(&audit, &ChainKey::Plain).unwrap();
    assert_eq!(s.first_seq, Some(1));
    assert_eq!(
        (s.unchained, s.sealed, s.unchained_seqs),
        (11, 11, Some((1, 11)))
    );
    assert_eq!(s.records, r.len() as u64);
    let text = s.to_string();
    assert!(
        text.contains("11 of them UNCHAINED (chain column `-`, seq 1..11")
            && text.contains("NOT verifiable, 11 sealed"),
        "{text}"
    );
    if let Some(out) = cli_verify(&audit) {
        assert!(out.starts_with("OK: ") && out.contains(&text), "{out}");
    }

    // An edit of an old record is now caught, at the sealing boot record.
    let edited = dir.path().join("edited.tsv");
    let t = std::fs::read_to_string(&audit).unwrap();
    std::fs::write(&edited, t.replacen("\t/bin/sleep\t", "\t/bin/slept\t", 1)).unwrap();
    match verify(&edited, &ChainKey::Plain) {
        Err(VerifyError::Invalid(f)) => {
            assert_eq!(
                (f.seq, f.problem.clone()),
                (Some(12), Problem::SealMismatch)
            )
        }
        other => panic!("edit of a sealed record must fail: {other:?}"),
    }

    // A second start reads only the (now chained) tail and resumes.
    let again = run_with_one_recovery(&audit);
    assert!(!again.contains("records without a hash chain"), "{again}");
    let s2 = verify(&audit, &ChainKey::Plain).unwrap();
    assert_eq!((s2.unchained, s2.sealed), (11, 11));
    assert!(s2.records > s.records);
    assert_eq!(&std::fs::read(&audit).unwrap()[..now.len()], &now[..]);
}

#[test]
fn a_torn_line_after_unchained_records_is_the_only_thing_cut() {
    let dir = tempfile::tempdir().unwrap();
    let audit = install(dir.path(), b"12\t1796078780000\t0\tspa");
    let old = fixture();
    let stderr = run_with_one_recovery(&audit);
    assert!(
        stderr.contains("incomplete line") && stderr.contains("12\\t1796078780000\\t0\\tspa"),
        "the cut bytes are logged: {stderr}"
    );
    let now = std::fs::read(&audit).unwrap();
    assert_eq!(&now[..old.len()], &old[..]);
    let r = records(&audit);
    assert_eq!(
        (r[11][0].as_str(), r[11][6].as_str()),
        ("12", "corrupt_tail")
    );
    let s = verify(&audit, &ChainKey::Plain).unwrap();
    assert_eq!((s.unchained, s.sealed), (11, 11));
}

#[test]
fn a_complete_line_that_is_not_a_record_is_refused_and_nothing_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    for (name, extra) in [
        ("garbage", &b"not a record\n"[..]),
        // A complete line followed by a torn one: neither is cut.
        ("garbage+torn", &b"12\tx\n13\t17"[..]),
    ] {
        let audit = install(dir.path(), extra);
        let before = std::fs::read(&audit).unwrap();
        let out = common::run(&[
            "--socket",
            dir.path().join("w.sock").to_str().unwrap(),
            "--recovery-audit-file",
            audit.to_str().unwrap(),
            "--shutdown-after-secs",
            "1",
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(
            stderr.contains("its last complete line")
                && stderr.contains(&format!("byte offset {}", fixture().len()))
                && stderr.contains("never cuts a complete line"),
            "{name}: {stderr}"
        );
        assert_eq!(std::fs::read(&audit).unwrap(), before, "{name}: untouched");
    }
}

fn to_hex(h: &[u8; 32]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}
