//! `varta audit verify` end to end: the real binary on files written with
//! the shared format library, on edited copies, and on the original
//! 0.2.0's output.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use varta_audit::chain::to_hex;
use varta_audit::{rotated_path, BootReason, ChainHash, ChainKey, Record, HEADER_V2, ZERO_CHAIN};

fn varta(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_varta"))
        .args(args)
        .output()
        .expect("run varta")
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn verify(args: &[&Path], extra: &[&str]) -> Run {
    let mut a: Vec<&str> = vec!["audit", "verify"];
    a.extend_from_slice(extra);
    a.extend(args.iter().map(|p| p.to_str().unwrap()));
    let o = varta(&a);
    Run {
        code: o.status.code().expect("exit code"),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn records(n: u64) -> Vec<Record> {
    (1..=n)
        .map(|seq| match seq % 4 {
            1 => Record::Boot {
                wallclock_ms: 1_700_000_000_000 + seq,
                observer_ns: 0,
                daemon_pid: 4242,
                prev_chain: None,
                reason: BootReason::Fresh,
            },
            2 => Record::Spawn {
                wallclock_ms: 1_700_000_000_000 + seq,
                observer_ns: seq * 10,
                agent_pid: 100,
                child_pid: 200 + seq as u32,
                mode: "exec".into(),
                program: "/usr/bin/restart".into(),
                source: "inline".into(),
                template_len: 20,
            },
            3 => Record::Complete {
                wallclock_ms: 1_700_000_000_000 + seq,
                observer_ns: seq * 10,
                agent_pid: 100,
                child_pid: 199 + seq as u32,
                outcome: "reaped".into(),
                exit_code: Some(0),
                signal: None,
                duration_ns: 5_000_000,
                stdout_len: 3,
                stderr_len: 0,
                truncated: false,
                excerpt: Some(varta_audit::escape_excerpt(b"ok\n")),
            },
            _ => Record::Refused {
                wallclock_ms: 1_700_000_000_000 + seq,
                observer_ns: seq * 10,
                agent_pid: 300,
                reason: "given_up".into(),
            },
        })
        .collect()
}

/// Lines (header first) of a valid file of `n` records.
fn lines(n: u64, key: &ChainKey) -> Vec<String> {
    let mut out = vec![HEADER_V2.to_string()];
    let mut prev: ChainHash = ZERO_CHAIN;
    for (i, r) in records(n).into_iter().enumerate() {
        // Boot records after the first continue the chain, like a resume.
        let r = match r {
            Record::Boot {
                wallclock_ms,
                observer_ns,
                daemon_pid,
                ..
            } if i > 0 => Record::Boot {
                wallclock_ms,
                observer_ns,
                daemon_pid,
                prev_chain: Some(prev),
                reason: BootReason::Resume,
            },
            r => r,
        };
        let (l, c) = r.to_line(i as u64 + 1, key, &prev);
        out.push(l);
        prev = c;
    }
    out
}

fn write(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, lines.concat()).unwrap();
    p
}

#[test]
fn valid_file_exits_0_with_summary() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "a.tsv", &lines(9, &ChainKey::Plain));
    let r = verify(&[&p], &[]);
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    assert_eq!(
        r.stdout.trim(),
        "OK: 9 records (seq 1..9), 3 boots, 1 file; plain SHA-256 chain"
    );
}

#[test]
fn one_edited_byte_names_its_line_and_seq() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = lines(9, &ChainKey::Plain);
    // Record seq 6 is on line 7: its child pid 206 becomes 207.
    assert!(l[6].contains("\t206\t"));
    l[6] = l[6].replacen("\t206\t", "\t207\t", 1);
    let p = write(dir.path(), "a.tsv", &l);
    let r = verify(&[&p], &[]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stdout.trim(),
        format!(
            "FAIL: {} line 7 (seq 6): chain mismatch: this record (or the one before it) was modified",
            p.display()
        )
    );
}

#[test]
fn removed_inserted_and_swapped_lines_fail() {
    let dir = tempfile::tempdir().unwrap();
    let good = lines(9, &ChainKey::Plain);

    let mut removed = good.clone();
    removed.remove(4); // seq 4
    let p = write(dir.path(), "removed.tsv", &removed);
    let r = verify(&[&p], &[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains("line 5 (seq 5): seq 5 after seq 3"),
        "{}",
        r.stdout
    );

    let mut dup = good.clone();
    dup.insert(4, good[4].clone());
    let p = write(dir.path(), "dup.tsv", &dup);
    let r = verify(&[&p], &[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout
            .contains("line 6 (seq 4): seq 4 after seq 4: seq not increasing"),
        "{}",
        r.stdout
    );

    let mut swapped = good.clone();
    swapped.swap(3, 4);
    let p = write(dir.path(), "swapped.tsv", &swapped);
    let r = verify(&[&p], &[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains("line 4 (seq 4): seq 4 after seq 2"),
        "{}",
        r.stdout
    );
}

#[test]
fn hmac_file_needs_its_key_and_a_plain_rechain_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let key_hex = "5a".repeat(32);
    let key_path = dir.path().join("audit.key");
    std::fs::write(&key_path, format!("{key_hex}\n")).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let key = ChainKey::from_hex(key_hex.as_bytes()).unwrap();
    let kp = key_path.to_str().unwrap();

    let keyed = write(dir.path(), "keyed.tsv", &lines(6, &key));
    let r = verify(&[&keyed], &["--key-file", kp]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.ends_with("; HMAC-SHA256 chain\n"), "{}", r.stdout);

    let r = verify(&[&keyed], &[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains("line 2 (seq 1): chain mismatch"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("pass --key-file"), "{}", r.stdout);

    // An attacker without the key edits a record and recomputes every
    // chain value as plain SHA-256: consistent, but not keyed.
    let mut forged = lines(6, &key);
    forged[3] = forged[3].replace("\treaped\t", "\tkilled\t");
    let forged = rechain(&forged, &ChainKey::Plain);
    let fp = write(dir.path(), "forged.tsv", &forged);
    assert_eq!(
        verify(&[&fp], &[]).code,
        0,
        "the forgery is a valid plain chain"
    );
    let r = verify(&[&fp], &["--key-file", kp]);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout
            .contains("file uses a plain SHA-256 chain, not HMAC"),
        "{}",
        r.stdout
    );
}

/// Recomputes every chain column (what a forger without the key can do).
fn rechain(lines: &[String], key: &ChainKey) -> Vec<String> {
    let mut prev = ZERO_CHAIN;
    let mut out = vec![lines[0].clone()];
    for l in &lines[1..] {
        let mut cols: Vec<String> = l.trim_end().split('\t').map(String::from).collect();
        cols.pop();
        if cols[3] == "boot" && cols[5] != "-" {
            cols[5] = to_hex(&prev);
        }
        let body = cols.join("\t");
        let c = key.next(&prev, &cols[3], body.as_bytes());
        out.push(format!("{body}\t{}\n", to_hex(&c)));
        prev = c;
    }
    out
}

#[test]
fn unreadable_input_exits_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.tsv");
    let r = verify(&[&missing], &[]);
    assert_eq!(r.code, 2);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(r
        .stderr
        .starts_with(&format!("varta: cannot read {}", missing.display())));
    assert!(r.stdout.is_empty());

    // A key file that fails the secret-file rules.
    let good = write(dir.path(), "a.tsv", &lines(3, &ChainKey::Plain));
    let key_path = dir.path().join("k");
    std::fs::write(&key_path, "ab".repeat(32)).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = verify(&[&good], &["--key-file", key_path.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains(&format!("chmod 600 {}", key_path.display())),
        "{}",
        r.stderr
    );

    // A key file with the wrong content.
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&key_path, "not hex").unwrap();
    let r = verify(&[&good], &["--key-file", key_path.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("64 hex characters"), "{}", r.stderr);

    // Usage errors are 2 as well (clap).
    assert_eq!(varta(&["audit", "verify"]).status.code(), Some(2));
}

#[test]
fn missing_header_and_torn_line_fail() {
    let dir = tempfile::tempdir().unwrap();
    let l = lines(3, &ChainKey::Plain);
    let p = write(dir.path(), "nohdr.tsv", &l[1..]);
    let r = verify(&[&p], &[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains("line 1: missing header line"),
        "{}",
        r.stdout
    );
    let mut torn = l.concat();
    torn.pop();
    std::fs::write(&p, torn).unwrap();
    let r = verify(&[&p], &[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout
            .contains("line 4 (seq 3): last line has no newline"),
        "{}",
        r.stdout
    );
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../varta-audit/tests/data")
        .join(name)
}

#[test]
fn original_fixture_verifies() {
    let r = verify(&[&fixture("original-0.2.0.tsv")], &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(
        r.stdout.trim(),
        "OK: 11 records (seq 1..11), 3 boots, 1 file; plain SHA-256 chain"
    );
}

#[test]
fn rotated_generations_are_pointed_out_and_picked_up() {
    let live = fixture("original-0.2.0-rotated/audit.tsv");
    let r = verify(&[&live], &[]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("anchored at seq 21"), "{}", r.stdout);
    assert!(r.stderr.contains("5 rotated generation(s)"), "{}", r.stderr);
    assert!(r.stderr.contains("--with-rotated"), "{}", r.stderr);

    let r = verify(&[&live], &["--with-rotated"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(
        r.stdout.trim(),
        "OK: 22 records (seq 1..22), 6 boots, 6 files; plain SHA-256 chain"
    );
    assert!(r.stderr.is_empty());

    // Listing them by hand, oldest first, is the same.
    let gens: Vec<PathBuf> = (1..=5).rev().map(|n| rotated_path(&live, n)).collect();
    let mut all: Vec<&Path> = gens.iter().map(PathBuf::as_path).collect();
    all.push(&live);
    assert_eq!(verify(&all, &[]).code, 0);
    // Newest first is wrong and says where.
    all.reverse();
    let r = verify(&all, &[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout
            .contains("audit.tsv.1 line 2 (seq 17): seq 17 after seq 22"),
        "{}",
        r.stdout
    );

    let r = verify(&[&live, &live], &["--with-rotated"]);
    assert_eq!(r.code, 2);
}

/// `lines` in schema v3: the same records with the agent's name and unit.
fn lines_v3(n: u64, key: &ChainKey, first_seq: u64, prev0: ChainHash) -> Vec<String> {
    let mut out = vec![varta_audit::HEADER_V3.to_string()];
    let mut prev = prev0;
    let agent = varta_audit::Agent::new("billing", Some("billing.service"));
    for (i, r) in records(n).into_iter().enumerate() {
        let r = match r {
            Record::Boot {
                wallclock_ms,
                observer_ns,
                daemon_pid,
                ..
            } if i > 0 || first_seq > 1 => Record::Boot {
                wallclock_ms,
                observer_ns,
                daemon_pid,
                prev_chain: Some(prev),
                reason: BootReason::Rotation,
            },
            r => r,
        };
        let (l, c) = r.to_line_as(
            first_seq + i as u64,
            key,
            &prev,
            varta_audit::Schema::V3,
            Some(&agent),
        );
        out.push(l);
        prev = c;
    }
    out
}

#[test]
fn schema_v3_files_and_a_chain_crossing_schemas_verify() {
    let dir = tempfile::tempdir().unwrap();
    let v3 = lines_v3(9, &ChainKey::Plain, 1, ZERO_CHAIN);
    assert!(v3[2].contains("\tbilling\tbilling.service\t"), "{}", v3[2]);
    let p = write(dir.path(), "a.tsv", &v3);
    let r = verify(&[&p], &[]);
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    assert_eq!(
        r.stdout.trim(),
        "OK: 9 records (seq 1..9), 3 boots, 1 file, schema v3; plain SHA-256 chain"
    );
    // An edited name breaks the chain.
    let mut edited = v3.clone();
    edited[2] = edited[2].replacen("\tbilling\t", "\tbi11ing\t", 1);
    let p = write(dir.path(), "b.tsv", &edited);
    let r = verify(&[&p], &[]);
    assert_eq!(r.code, 1, "{} {}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("line 3 (seq 2): chain mismatch"),
        "{}",
        r.stdout
    );

    // A v2 generation, then a v3 file continuing its chain (the observer's
    // schema was switched): checked as one chain, each in its own schema.
    let old = lines(5, &ChainKey::Plain);
    let last = varta_audit::parse_line(old.last().unwrap().trim_end().as_bytes())
        .unwrap()
        .chain;
    let live = dir.path().join("c.tsv");
    std::fs::write(rotated_path(&live, 1), old.concat()).unwrap();
    std::fs::write(&live, lines_v3(4, &ChainKey::Plain, 6, last).concat()).unwrap();
    let r = verify(&[&live], &["--with-rotated"]);
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("9 records (seq 1..9), 3 boots, 2 files, schema v2 and v3 (1 file v3)"),
        "{}",
        r.stdout
    );
}
