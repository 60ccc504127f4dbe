//! Files written by the original varta-watch 0.2.0 (see data/README.md):
//! we verify them, probe their tail like the writer does, and continue
//! their chain.

use std::io::Write;
use std::path::{Path, PathBuf};

use varta_audit::{
    probe, rotated_path, verify_files, BootReason, ChainKey, Header, Problem, Record, VerifyError,
    GENERATIONS,
};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn rotated_set() -> Vec<PathBuf> {
    let live = data("original-0.2.0-rotated/audit.tsv");
    let mut v: Vec<PathBuf> = (1..=GENERATIONS)
        .rev()
        .map(|n| rotated_path(&live, n))
        .collect();
    v.push(live);
    v
}

#[test]
fn original_file_verifies() {
    let s = verify_files(&[data("original-0.2.0.tsv")], &ChainKey::Plain).unwrap();
    assert_eq!(s.records, 11);
    assert_eq!((s.first_seq, s.last_seq), (Some(1), Some(11)));
    assert_eq!(s.boots, 3);
    assert_eq!(s.files, 1);
}

#[test]
fn original_rotated_generations_verify_as_one_chain() {
    let s = verify_files(&rotated_set(), &ChainKey::Plain).unwrap();
    assert_eq!(
        (s.records, s.first_seq, s.last_seq),
        (22, Some(1), Some(22))
    );
    assert_eq!((s.boots, s.files), (6, 6));
    // The live file alone verifies too, anchored on its rotation boot record.
    let live = verify_files(&rotated_set()[5..], &ChainKey::Plain).unwrap();
    assert_eq!((live.first_seq, live.last_seq), (Some(21), Some(22)));
}

#[test]
fn original_generations_out_of_order_fail() {
    let mut set = rotated_set();
    set.swap(1, 2);
    let Err(VerifyError::Invalid(f)) = verify_files(&set, &ChainKey::Plain) else {
        panic!("swapped generations must fail");
    };
    assert_eq!(f.path, set[1]);
    assert_eq!(f.line, 2);
    assert_eq!(f.problem, Problem::SeqGap { prev: 4, got: 9 });
}

#[test]
fn original_file_with_a_key_is_reported_as_plain() {
    let key = ChainKey::from_hex(&[b'a'; 64]).unwrap();
    let Err(VerifyError::Invalid(f)) = verify_files(&[data("original-0.2.0.tsv")], &key) else {
        panic!("a keyed verification of a plain file must fail");
    };
    assert_eq!(f.problem, Problem::PlainChainWithKey);
    assert_eq!((f.line, f.seq), (2, Some(1)));
}

#[test]
fn tail_probe_of_original_file_and_continuation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.tsv");
    std::fs::copy(data("original-0.2.0.tsv"), &path).unwrap();
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .open(&path)
        .unwrap();
    let p = probe(&file).unwrap();
    assert_eq!(p.header, Header::V2);
    assert_eq!(p.truncate_to, None);
    let last = p.last.unwrap();
    assert_eq!(last.line.seq, 11);
    assert_eq!(last.link_verifies(&ChainKey::Plain), Some(true));

    // Continue exactly as our writer does on resume.
    let boot = Record::Boot {
        wallclock_ms: varta_audit::wallclock_ms_now(),
        observer_ns: 0,
        daemon_pid: 1,
        prev_chain: Some(last.line.chain),
        reason: BootReason::Resume,
    };
    let (l, c) = boot.to_line(12, &ChainKey::Plain, &last.line.chain);
    let spawn = Record::Spawn {
        wallclock_ms: 2,
        observer_ns: 3,
        agent_pid: 4,
        child_pid: 5,
        mode: "exec".into(),
        program: "/bin/true".into(),
        source: "inline".into(),
        template_len: 15,
    };
    let (l2, _) = spawn.to_line(13, &ChainKey::Plain, &c);
    file.write_all(l.as_bytes()).unwrap();
    file.write_all(l2.as_bytes()).unwrap();
    let s = verify_files(&[path], &ChainKey::Plain).unwrap();
    assert_eq!((s.records, s.last_seq, s.boots), (13, Some(13), 4));
}

#[test]
fn live_generation_alone_reports_its_anchor() {
    let s = verify_files(&rotated_set()[5..], &ChainKey::Plain).unwrap();
    assert_eq!(s.anchored_at, Some(21));
    assert!(s.to_string().contains("anchored at seq 21"), "{s}");
    let all = verify_files(&rotated_set(), &ChainKey::Plain).unwrap();
    assert_eq!(all.anchored_at, None);
}

/// The original built with `audit-chain` continuing a file its build
/// without the chain wrote: the unchained records are counted, not
/// verified, and (the original starting its chain from zero) not sealed;
/// the chained records after them verify.
#[test]
fn original_chain_build_after_an_unchained_file() {
    let s = verify_files(
        &[data("original-0.2.0-nochain-then-chain.tsv")],
        &ChainKey::Plain,
    )
    .unwrap();
    assert_eq!((s.records, s.last_seq, s.boots), (14, Some(14), 4));
    assert_eq!(
        (s.unchained, s.unchained_seqs, s.sealed),
        (11, Some((1, 11)), 0)
    );
    assert!(
        s.to_string()
            .contains("11 of them UNCHAINED (chain column `-`, seq 1..11"),
        "{s}"
    );
    assert!(s.to_string().contains("NOT verifiable, not sealed"), "{s}");
    // An edit of a chained record after them is still caught.
    let text = std::fs::read_to_string(data("original-0.2.0-nochain-then-chain.tsv")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("e.tsv");
    std::fs::write(&p, text.replacen("\t11869\t11877\t", "\t11869\t11878\t", 1)).unwrap();
    let Err(VerifyError::Invalid(f)) = verify_files(&[p], &ChainKey::Plain) else {
        panic!("edited chained record must fail");
    };
    assert_eq!(f.seq, Some(13));
}

/// The build without the chain continuing a chained file: the chained
/// records verify, the unchained ones after them are counted.
#[test]
fn original_unchained_build_after_a_chained_file() {
    let path = data("original-0.2.0-chain-then-nochain.tsv");
    let s = verify_files(std::slice::from_ref(&path), &ChainKey::Plain).unwrap();
    assert_eq!((s.records, s.boots), (14, 4));
    assert_eq!(
        (s.unchained, s.unchained_seqs, s.sealed),
        (3, Some((12, 14)), 0)
    );
    // The probe reads its tail as records, nothing to cut.
    let p = probe(&std::fs::File::open(&path).unwrap()).unwrap();
    assert_eq!((p.truncate_to, p.bad_last), (None, None));
    let last = p.last.unwrap();
    assert_eq!((last.line.seq, last.line.chained), (14, false));
}
