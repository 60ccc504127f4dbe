//! Writer tests: every file they produce is checked with the same verifier
//! `varta audit verify` uses.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use varta_audit::{
    existing_generations, rotated_path, verify_files, BootReason, ChainKey, Problem, Record,
    Summary, VerifyError,
};

use super::*;

fn settings(path: &Path) -> AuditSettings {
    AuditSettings {
        file: crate::config::AuditConfig {
            path: path.to_path_buf(),
            max_bytes: None,
            sync_every: 1,
            key_file: None,
            schema: varta_audit::Schema::V2,
        },
        queue_capacity: DEFAULT_QUEUE_CAPACITY,
    }
}

fn spawn_rec(i: u32) -> Record {
    Record::Spawn {
        wallclock_ms: 1_700_000_000_000 + u64::from(i),
        observer_ns: u64::from(i) * 1000,
        agent_pid: 100 + i,
        child_pid: 200 + i,
        mode: "exec".into(),
        program: "/usr/bin/restart\tagent".into(),
        source: "inline".into(),
        template_len: 22,
    }
}

fn run(s: &AuditSettings, records: u32) -> (Arc<AuditCounters>, ShutdownReport) {
    let counters = Arc::new(AuditCounters::default());
    let log = AuditLog::open(s, 4242, counters.clone()).expect("open");
    for i in 0..records {
        assert!(log.submit(spawn_rec(i)));
    }
    let report = log.shutdown(Instant::now() + Duration::from_secs(10));
    (counters, report)
}

fn verify(paths: &[PathBuf], key: &ChainKey) -> Summary {
    verify_files(paths, key).unwrap_or_else(|e| panic!("verify: {e}"))
}

/// The boot records of a file: (seq, prev_chain, reason).
fn boots(path: &Path) -> Vec<(u64, Option<[u8; 32]>, BootReason)> {
    let text = std::fs::read_to_string(path).unwrap();
    let schema = text
        .lines()
        .next()
        .and_then(|h| varta_audit::Schema::from_header_line(h.as_bytes()))
        .unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let p = varta_audit::parse_line_as(l.as_bytes(), schema).unwrap();
            match p.record {
                Record::Boot {
                    prev_chain, reason, ..
                } => Some((p.seq, prev_chain, reason)),
                _ => None,
            }
        })
        .collect()
}

fn write_key(dir: &Path, name: &str, byte: u8) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("{}\n", format!("{byte:02x}").repeat(32))).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

#[test]
fn fresh_file_is_0600_and_every_record_is_synced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.tsv");
    let (c, report) = run(&settings(&path), 3);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let s = verify(std::slice::from_ref(&path), &ChainKey::Plain);
    assert_eq!(
        (s.records, s.first_seq, s.last_seq, s.boots),
        (4, Some(1), Some(4), 1)
    );
    assert_eq!(boots(&path), vec![(1, None, BootReason::Fresh)]);
    assert_eq!(c.records_committed(), 4);
    assert!(
        c.fsyncs() >= 4,
        "one fdatasync per record, got {}",
        c.fsyncs()
    );
    assert_eq!(
        report,
        ShutdownReport {
            committed: 4,
            not_written: 0,
            dropped: 0,
            timed_out: false
        }
    );
    // Free-form fields were sanitized: the tab in the program is a space.
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\t/usr/bin/restart agent\tinline\t"));
}

#[test]
fn restart_resumes_seq_and_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.tsv");
    run(&settings(&path), 2);
    let first = verify(std::slice::from_ref(&path), &ChainKey::Plain);
    run(&settings(&path), 1);
    let s = verify(std::slice::from_ref(&path), &ChainKey::Plain);
    assert_eq!((s.records, s.last_seq, s.boots), (5, Some(5), 2));
    let b = boots(&path);
    assert_eq!(b[1], (4, first.last_chain, BootReason::Resume));
}

#[test]
fn torn_tail_is_cut_and_chain_continues() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.tsv");
    run(&settings(&path), 2);
    let good_len = std::fs::metadata(&path).unwrap().len();
    let clean = verify(std::slice::from_ref(&path), &ChainKey::Plain);
    // A crash in the middle of a write: half a line, no newline.
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"4\t1700000000009\t0\tspa").unwrap();
    }
    assert!(matches!(
        verify_files(std::slice::from_ref(&path), &ChainKey::Plain),
        Err(VerifyError::Invalid(f)) if f.problem == Problem::TornLine
    ));
    let (c, _) = run(&settings(&path), 1);
    assert_eq!(c.torn_tail_repairs(), 1);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains("1700000000009\t0\tspa"),
        "torn bytes are gone"
    );
    assert!(text.len() as u64 > good_len);
    let s = verify(std::slice::from_ref(&path), &ChainKey::Plain);
    assert_eq!((s.records, s.boots), (5, 2));
    assert_eq!(
        boots(&path)[1],
        (4, clean.last_chain, BootReason::CorruptTail)
    );
}

#[test]
fn rotation_keeps_five_generations_and_the_chain_runs_across_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.tsv");
    let mut s = settings(&path);
    s.file.max_bytes = Some(600);
    let (c, report) = run(&s, 60);
    assert_eq!(report.not_written, 0);
    let gens = existing_generations(&path);
    assert_eq!(gens.len(), 5, "{gens:?}");
    assert!(!rotated_path(&path, 6).exists());
    assert!(c.rotations() > 5);
    let mut all = gens.clone();
    all.push(path.clone());
    let sum = verify(&all, &ChainKey::Plain);
    assert_eq!(sum.files, 6);
    // The oldest generations were deleted: the chain is anchored on the
    // rotation boot record that starts PATH.5.
    let anchored = sum.anchored_at.expect("anchored on PATH.5's boot record");
    assert_eq!(
        boots(&gens[0])[0],
        (anchored, boots(&gens[0])[0].1, BootReason::Rotation)
    );
    assert_eq!(sum.last_seq, Some(61 + c.rotations()));
    assert_eq!(sum.last_seq.unwrap() - anchored + 1, sum.records);
    for g in &all {
        let m = std::fs::metadata(g).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
        let b = boots(g);
        assert_eq!(b[0].2, BootReason::Rotation, "{}", g.display());
        assert!(b[0].1.is_some());
    }
    // Generations out of order do not verify.
    all.swap(3, 4);
    assert!(verify_files(&all, &ChainKey::Plain).is_err());
}

#[test]
fn hmac_chain_needs_the_key_and_mode_mismatches_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.tsv");
    let key_path = write_key(dir.path(), "a.key", 0x5a);
    let key = ChainKey::from_key_file(&key_path).unwrap();
    let mut s = settings(&path);
    s.file.key_file = Some(key_path.clone());
    run(&s, 3);
    run(&s, 1);
    let sum = verify(std::slice::from_ref(&path), &key);
    assert_eq!((sum.records, sum.boots), (6, 2));
    match verify_files(std::slice::from_ref(&path), &ChainKey::Plain) {
        Err(VerifyError::Invalid(f)) => {
            assert_eq!(f.problem, Problem::ChainMismatch { maybe_keyed: true });
            assert_eq!((f.line, f.seq), (2, Some(1)));
        }
        other => panic!("{other:?}"),
    }
    // Restarting without the key would break the chain: refused.
    let e = AuditLog::open(&settings(&path), 1, Arc::default()).unwrap_err();
    assert!(
        matches!(e, AuditError::TailDoesNotVerify { keyed: false, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("recovery-audit-key-file"));
    // Another key: refused too.
    let other = write_key(dir.path(), "other.key", 0x11);
    let mut s2 = settings(&path);
    s2.file.key_file = Some(other);
    let e = AuditLog::open(&s2, 1, Arc::default()).unwrap_err();
    assert!(
        matches!(e, AuditError::TailDoesNotVerify { keyed: true, .. }),
        "{e}"
    );
    // A plain file with a key configured: refused with the reason.
    let plain = dir.path().join("plain.tsv");
    run(&settings(&plain), 1);
    let mut s3 = settings(&plain);
    s3.file.key_file = Some(key_path);
    let e = AuditLog::open(&s3, 1, Arc::default()).unwrap_err();
    assert!(matches!(e, AuditError::PlainFileWithKey { .. }), "{e}");
}

#[test]
fn continues_a_file_written_by_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.tsv");
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../varta-audit/tests/data/original-0.2.0.tsv");
    std::fs::copy(&fixture, &path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let before = verify(std::slice::from_ref(&path), &ChainKey::Plain);
    run(&settings(&path), 2);
    let s = verify(std::slice::from_ref(&path), &ChainKey::Plain);
    assert_eq!((s.records, s.last_seq, s.boots), (14, Some(14), 4));
    assert_eq!(boots(&path)[3], (12, before.last_chain, BootReason::Resume));
    // The original's bytes are untouched.
    let orig = std::fs::read(&fixture).unwrap();
    assert!(std::fs::read(&path).unwrap().starts_with(&orig));
}

#[test]
fn a_missing_live_file_continues_the_previous_generation() {
    // A crash between rotation's rename and the new file's creation.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.tsv");
    run(&settings(&path), 2);
    let prev = verify(std::slice::from_ref(&path), &ChainKey::Plain);
    std::fs::rename(&path, rotated_path(&path, 1)).unwrap();
    run(&settings(&path), 1);
    let s = verify(&[rotated_path(&path, 1), path.clone()], &ChainKey::Plain);
    assert_eq!((s.records, s.last_seq), (5, Some(5)));
    assert_eq!(boots(&path)[0], (4, prev.last_chain, BootReason::Resume));
}

#[test]
fn unsafe_or_foreign_files_are_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let open = |p: &Path| AuditLog::open(&settings(p), 1, Arc::default()).unwrap_err();

    let loose = dir.path().join("loose.tsv");
    std::fs::write(&loose, varta_audit::HEADER_V2).unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = open(&loose);
    assert!(
        e.to_string()
            .contains(&format!("chmod 600 {}", loose.display())),
        "{e}"
    );

    let target = dir.path().join("target.tsv");
    run(&settings(&target), 0);
    let link = dir.path().join("link.tsv");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let e = open(&link);
    assert!(
        matches!(e, AuditError::File(SecretFileError::Symlink { .. })),
        "{e}"
    );

    let other = dir.path().join("passwd");
    std::fs::write(&other, "root:x:0:0::/root:/bin/sh\n").unwrap();
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(matches!(open(&other), AuditError::NotAuditFile { .. }));
    assert_eq!(
        std::fs::read_to_string(&other).unwrap(),
        "root:x:0:0::/root:/bin/sh\n",
        "a refused file is never modified"
    );

    let v1 = dir.path().join("v1.tsv");
    std::fs::write(&v1, "# varta-watch recovery audit v1\n1\t2\tspawn\n").unwrap();
    std::fs::set_permissions(&v1, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(matches!(open(&v1), AuditError::LegacyV1 { .. }));

    let key = write_key(dir.path(), "loose.key", 1);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let mut s = settings(&dir.path().join("k.tsv"));
    s.file.key_file = Some(key);
    let e = AuditLog::open(&s, 1, Arc::default()).unwrap_err();
    assert!(matches!(e, AuditError::Key(_)), "{e}");
    assert!(e.to_string().contains("chmod 600"), "{e}");

    let mut s = settings(&dir.path().join("z.tsv"));
    s.file.sync_every = 0;
    assert!(matches!(
        AuditLog::open(&s, 1, Arc::default()),
        Err(AuditError::SyncEveryZero)
    ));
}

#[test]
fn sync_every_n_batches_fdatasync_and_still_commits_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.tsv");
    let mut s = settings(&path);
    s.file.sync_every = 10;
    let (c, report) = run(&s, 50);
    assert_eq!(report.not_written, 0);
    assert_eq!(c.records_committed(), 51);
    assert!(c.fsyncs() < 51, "batched: {} fsyncs", c.fsyncs());
    assert_eq!(verify(&[path], &ChainKey::Plain).records, 51);
}

/// Environment variable that turns [`disk_full_child`] on.
const CHILD_ENV: &str = "VARTA_AUDIT_TEST_DISK_FULL_DIR";

/// Runs the ignored test `name` of this test binary in a child process
/// with `env` set, and checks that it ran and passed.
fn run_child(name: &str, env: &[(&str, &std::ffi::OsStr)]) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed") && stdout.contains("CHILD-OK"),
        "child {name} failed: {}\n{stdout}\n{stderr}",
        out.status
    );
}

/// `RLIMIT_FSIZE` is process-wide (and raises SIGXFSZ), so the disk-full
/// test runs in a child: this test binary, re-executed for
/// [`disk_full_child`] only.
#[test]
fn disk_full_is_counted_retried_and_loses_no_committed_record() {
    let dir = tempfile::tempdir().unwrap();
    run_child(
        "audit::tests::disk_full_child",
        &[(CHILD_ENV, dir.path().as_os_str())],
    );
}

/// The benchmark hook: a slow fdatasync delays the writer thread only,
/// never `submit`. In a child, because the hook reads the environment.
#[cfg(feature = "test-hooks")]
#[test]
fn fsync_delay_hook_slows_the_writer_not_submit() {
    let dir = tempfile::tempdir().unwrap();
    run_child(
        "audit::tests::fsync_delay_child",
        &[
            (CHILD_ENV, dir.path().as_os_str()),
            (
                "VARTA_TEST_AUDIT_FSYNC_DELAY_MS",
                std::ffi::OsStr::new("100"),
            ),
        ],
    );
}

#[cfg(feature = "test-hooks")]
#[test]
#[ignore = "run in a child process by fsync_delay_hook_slows_the_writer_not_submit"]
fn fsync_delay_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV).map(PathBuf::from) else {
        return;
    };
    let path = dir.join("audit.tsv");
    let t0 = Instant::now();
    let log = AuditLog::open(&settings(&path), 7, Arc::default()).unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(100),
        "the boot fdatasync is delayed"
    );
    let t1 = Instant::now();
    for i in 0..5 {
        assert!(log.submit(spawn_rec(i)));
    }
    assert!(
        t1.elapsed() < Duration::from_millis(50),
        "submit never waits: {:?}",
        t1.elapsed()
    );
    let report = log.shutdown(Instant::now() + Duration::from_secs(10));
    assert_eq!(report.not_written, 0);
    assert!(
        t1.elapsed() >= Duration::from_millis(500),
        "five delayed fdatasyncs"
    );
    assert_eq!(
        verify(std::slice::from_ref(&path), &ChainKey::Plain).records,
        6
    );
    println!("CHILD-OK");
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn set_fsize(limit: Option<u64>) {
    use rustix::process::{setrlimit, Resource, Rlimit};
    setrlimit(
        Resource::Fsize,
        Rlimit {
            current: limit,
            maximum: None,
        },
    )
    .expect("setrlimit(RLIMIT_FSIZE)");
}

#[test]
#[ignore = "run in a child process by disk_full_is_counted_retried_and_loses_no_committed_record"]
fn disk_full_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV).map(PathBuf::from) else {
        return;
    };
    // Handled (not default-fatal) SIGXFSZ: writes past the limit fail
    // with EFBIG instead of killing the process.
    let xfsz = Arc::new(std::sync::atomic::AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGXFSZ, xfsz.clone()).unwrap();

    // Phase 1: the disk fills up mid-record, then space returns.
    let path = dir.join("audit.tsv");
    let mut s = settings(&path);
    s.queue_capacity = 2;
    let counters = Arc::new(AuditCounters::default());
    let log = AuditLog::open(&s, 7, counters.clone()).unwrap();
    let committed_len = std::fs::metadata(&path).unwrap().len();
    // Room for part of the next line only: a partial write, then EFBIG.
    set_fsize(Some(committed_len + 40));
    let mut accepted = 0;
    for i in 0..10 {
        accepted += u64::from(log.submit(spawn_rec(i)));
        std::thread::sleep(Duration::from_millis(2));
    }
    wait_for("write errors", || counters.write_errors() >= 3);
    assert!(
        xfsz.load(std::sync::atomic::Ordering::Relaxed),
        "EFBIG raised SIGXFSZ"
    );
    assert_eq!(counters.records_committed(), 1, "only the boot record");
    // While the writer retries, the queue fills and further records drop.
    assert!(counters.dropped_queue_full() >= 1);
    assert_eq!(accepted + counters.dropped_queue_full(), 10);
    // The partial line was cut back: the file is still exactly the boot.
    assert_eq!(std::fs::metadata(&path).unwrap().len(), committed_len);
    verify(std::slice::from_ref(&path), &ChainKey::Plain);

    set_fsize(None);
    wait_for("records after space returns", || {
        counters.records_committed() == 1 + accepted
    });
    let report = log.shutdown(Instant::now() + Duration::from_secs(5));
    assert_eq!(report.not_written, 0);
    let sum = verify(std::slice::from_ref(&path), &ChainKey::Plain);
    assert_eq!(sum.records, 1 + accepted);

    // Phase 2: the disk stays full; shutdown gives up at its deadline and
    // says how many records were not written.
    let path2 = dir.join("audit2.tsv");
    let c2 = Arc::new(AuditCounters::default());
    let log = AuditLog::open(&settings(&path2), 7, c2.clone()).unwrap();
    set_fsize(Some(std::fs::metadata(&path2).unwrap().len() + 10));
    for i in 0..3 {
        assert!(log.submit(spawn_rec(i)));
    }
    wait_for("write error", || c2.write_errors() >= 1);
    let t0 = Instant::now();
    let report = log.shutdown(Instant::now() + Duration::from_millis(300));
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert_eq!(report.not_written, 3);
    assert!(!report.timed_out);
    set_fsize(None);
    assert_eq!(verify(&[path2], &ChainKey::Plain).records, 1);
    println!("CHILD-OK");
}

#[test]
fn schema_v3_writes_agent_columns_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.tsv");
    let mut s = settings(&path);
    s.file.schema = varta_audit::Schema::V3;
    let counters = Arc::new(AuditCounters::default());
    let log = AuditLog::open(&s, 4242, counters).expect("open");
    assert!(log.submit_for(
        spawn_rec(1),
        Some(varta_audit::Agent::new("nginx", Some("nginx.service")))
    ));
    assert!(log.submit(spawn_rec(2)));
    log.shutdown(Instant::now() + Duration::from_secs(10));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with(varta_audit::HEADER_V3), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[2].contains("\t22\tnginx\tnginx.service\t"),
        "{}",
        lines[2]
    );
    assert!(lines[3].contains("\t22\tunknown\t-\t"), "{}", lines[3]);
    let sum = verify(std::slice::from_ref(&path), &ChainKey::Plain);
    assert_eq!((sum.records, sum.v3_files), (3, 1));
}

#[test]
fn changing_the_schema_rotates_and_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.tsv");
    let v2 = settings(&path);
    run(&v2, 2);
    let mut v3 = settings(&path);
    v3.file.schema = varta_audit::Schema::V3;
    run(&v3, 2);
    // The v2 file became PATH.1; the v3 file continues its chain.
    let old = rotated_path(&path, 1);
    assert!(std::fs::read_to_string(&old)
        .unwrap()
        .starts_with(varta_audit::HEADER_V2));
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .starts_with(varta_audit::HEADER_V3));
    assert_eq!(boots(&path)[0].2, BootReason::Rotation);
    let sum = verify(&[old.clone(), path.clone()], &ChainKey::Plain);
    assert_eq!((sum.records, sum.files, sum.v3_files), (6, 2, 1));
    // Back to v2: the v3 file is rotated in turn; a restart in the same
    // schema resumes.
    run(&v2, 1);
    run(&v2, 1);
    let all: Vec<PathBuf> = existing_generations(&path)
        .into_iter()
        .chain([path.clone()])
        .collect();
    assert_eq!(all.len(), 3);
    let sum = verify(&all, &ChainKey::Plain);
    assert_eq!((sum.records, sum.files, sum.v3_files), (10, 3, 1));
    assert_eq!(boots(&path).last().unwrap().2, BootReason::Resume);
}

#[test]
fn a_header_only_file_of_the_other_schema_is_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.tsv");
    std::fs::write(&path, varta_audit::HEADER_V2).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut v3 = settings(&path);
    v3.file.schema = varta_audit::Schema::V3;
    run(&v3, 1);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with(varta_audit::HEADER_V3));
    assert_eq!(text.matches("# varta-watch").count(), 1);
    verify(std::slice::from_ref(&path), &ChainKey::Plain);
}

/// The file 0.2.0 built without `audit-chain` wrote (chain `-`).
fn unchained_fixture() -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/original-0.2.0-nochain.tsv"),
    )
    .unwrap()
}

fn install(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn an_unchained_file_is_continued_and_sealed_in_either_chain_mode() {
    let dir = tempfile::tempdir().unwrap();
    let old = unchained_fixture();
    for keyed in [false, true] {
        let path = dir.path().join(format!("audit-{keyed}.tsv"));
        install(&path, &old);
        let mut s = settings(&path);
        let key = if keyed {
            s.file.key_file = Some(write_key(dir.path(), "k", 0x5a));
            ChainKey::from_key_file(s.file.key_file.as_ref().unwrap()).unwrap()
        } else {
            ChainKey::Plain
        };
        let seal = verify(std::slice::from_ref(&path), &key).last_chain;
        let (c, _) = run(&s, 2);
        assert_eq!(c.torn_tail_repairs(), 0);
        assert!(std::fs::read(&path).unwrap().starts_with(&old));
        assert_eq!(boots(&path)[3], (12, seal, BootReason::Resume));
        let v = verify(std::slice::from_ref(&path), &key);
        assert_eq!((v.records, v.unchained, v.sealed), (14, 11, 11));
        if keyed {
            // The seal is keyed: without the key the chain after it fails.
            assert!(verify_files(std::slice::from_ref(&path), &ChainKey::Plain).is_err());
        }
    }
}

#[test]
fn an_unchained_previous_generation_is_continued_and_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.tsv");
    install(&rotated_path(&path, 1), &unchained_fixture());
    let seal = verify(&[rotated_path(&path, 1)], &ChainKey::Plain).last_chain;
    run(&settings(&path), 1);
    assert_eq!(boots(&path)[0], (12, seal, BootReason::Resume));
    let s = verify(&[rotated_path(&path, 1), path.clone()], &ChainKey::Plain);
    assert_eq!((s.records, s.unchained, s.sealed), (13, 11, 11));
}

#[test]
fn files_that_cannot_be_continued_are_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let old = unchained_fixture();
    let text = String::from_utf8(old.clone()).unwrap();
    let cases: [(&str, Vec<u8>, &str); 4] = [
        // Unchained records out of order: no sequence to seal.
        (
            "seq gap",
            text.replacen("\n7\t", "\n9\t", 1).into_bytes(),
            "varta-watch 0.2.0 built without audit-chain",
        ),
        // A complete line that is not a record, with or without a torn
        // line after it: neither is cut.
        (
            "bad last line",
            [&old[..], b"12\tnot a record\n"].concat(),
            "never cuts a complete line",
        ),
        (
            "bad line then torn",
            [&old[..], b"12\tnot a record\n13\t17"].concat(),
            "never cuts a complete line",
        ),
        // Only garbage after the header: not cut back to the header.
        (
            "garbage only",
            [varta_audit::HEADER_V2.as_bytes(), b"garbage\n"].concat(),
            "byte offset 32",
        ),
    ];
    for (name, bytes, says) in cases {
        let path = dir.path().join("a.tsv");
        install(&path, &bytes);
        let e = AuditLog::open(&settings(&path), 1, Arc::default()).unwrap_err();
        assert!(e.to_string().contains(says), "{name}: {e}");
        assert!(e.to_string().contains("mv "), "{name}: names the fix: {e}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "{name}: untouched");
    }
}

#[test]
fn a_second_observer_on_the_same_file_is_refused_and_cuts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.tsv");
    let first = AuditLog::open(&settings(&path), 1, Arc::default()).unwrap();
    // What a record in progress looks like to a second writer.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut f, b"2\t17").unwrap();
    let before = std::fs::read(&path).unwrap();
    let e = AuditLog::open(&settings(&path), 2, Arc::default()).unwrap_err();
    assert!(matches!(e, AuditError::InUse { .. }), "{e}");
    assert!(e.to_string().contains("another varta-watch"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), before, "nothing cut");
    first.shutdown(Instant::now() + Duration::from_secs(10));
    // Once the first is gone the file is ours (and the torn bytes cut).
    let (c, _) = run(&settings(&path), 1);
    assert_eq!(c.torn_tail_repairs(), 1);
}
