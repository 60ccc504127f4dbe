//! Property tests: every record survives format → parse, parse → format is
//! byte-identical, and any single-byte edit of a valid file is detected.

use proptest::prelude::*;
use varta_audit::chain::to_hex;
use varta_audit::record::parse_line;
use varta_audit::{
    escape_excerpt, sanitize, BootReason, ChainHash, ChainKey, Record, Verifier, HEADER_V2,
    ZERO_CHAIN,
};

fn text() -> impl Strategy<Value = String> {
    // Any Unicode, tabs and newlines included: the formatter sanitizes.
    proptest::string::string_regex("(?s).{0,40}").unwrap()
}

fn record() -> impl Strategy<Value = Record> {
    let boot = (
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
        proptest::option::of(any::<[u8; 32]>()),
        proptest::sample::select(BootReason::ALL.to_vec()),
    )
        .prop_map(
            |(wallclock_ms, observer_ns, daemon_pid, prev_chain, reason)| Record::Boot {
                wallclock_ms,
                observer_ns,
                daemon_pid,
                prev_chain,
                reason,
            },
        );
    let spawn = (
        any::<(u64, u64, u32, u32)>(),
        text(),
        text(),
        text(),
        any::<u32>(),
    )
        .prop_map(
            |((ms, ns, a, c), mode, program, source, template_len)| Record::Spawn {
                wallclock_ms: ms,
                observer_ns: ns,
                agent_pid: a,
                child_pid: c,
                mode,
                program,
                source,
                template_len,
            },
        );
    let complete = (
        any::<(u64, u64, u32, u32)>(),
        text(),
        any::<(Option<i32>, Option<i32>, u64)>(),
        any::<(u32, u32, bool)>(),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
    )
        .prop_map(
            |((ms, ns, a, c), outcome, (exit_code, signal, duration_ns), (o, e, t), ex)| {
                Record::Complete {
                    wallclock_ms: ms,
                    observer_ns: ns,
                    agent_pid: a,
                    child_pid: c,
                    outcome,
                    exit_code,
                    signal,
                    duration_ns,
                    stdout_len: o,
                    stderr_len: e,
                    truncated: t,
                    excerpt: ex.map(|b| escape_excerpt(&b)),
                }
            },
        );
    let refused =
        (any::<(u64, u64, u32)>(), text()).prop_map(|((ms, ns, a), reason)| Record::Refused {
            wallclock_ms: ms,
            observer_ns: ns,
            agent_pid: a,
            reason,
        });
    prop_oneof![boot, spawn, complete, refused]
}

/// What the parser gives back: the record with its free-form fields sanitized.
fn sanitized(r: &Record) -> Record {
    let mut r = r.clone();
    match &mut r {
        Record::Spawn {
            mode,
            program,
            source,
            ..
        } => {
            *mode = sanitize(mode);
            *program = sanitize(program);
            *source = sanitize(source);
        }
        Record::Complete { outcome, .. } => *outcome = sanitize(outcome),
        Record::Refused { reason, .. } => *reason = sanitize(reason),
        Record::Boot { .. } => {}
    }
    r
}

fn key_strategy() -> impl Strategy<Value = ChainKey> {
    prop_oneof![
        Just(ChainKey::Plain),
        any::<[u8; 32]>().prop_map(|k| ChainKey::from_hex(to_hex(&k).as_bytes()).unwrap()),
    ]
}

fn build(records: &[Record], key: &ChainKey) -> Vec<u8> {
    let mut out = HEADER_V2.as_bytes().to_vec();
    // A file whose first record is a boot with a prev_chain column is a
    // continuation (a rotated generation): the chain is anchored there.
    let mut prev: ChainHash = match records.first() {
        Some(Record::Boot {
            prev_chain: Some(h),
            ..
        }) => *h,
        _ => ZERO_CHAIN,
    };
    for (i, r) in records.iter().enumerate() {
        // A boot with a prev_chain column must name the running chain.
        let r = match r {
            Record::Boot {
                prev_chain: Some(_),
                wallclock_ms,
                observer_ns,
                daemon_pid,
                reason,
            } if i > 0 => Record::Boot {
                prev_chain: Some(prev),
                wallclock_ms: *wallclock_ms,
                observer_ns: *observer_ns,
                daemon_pid: *daemon_pid,
                reason: *reason,
            },
            other => other.clone(),
        };
        let (line, chain) = r.to_line(i as u64 + 1, key, &prev);
        out.extend_from_slice(line.as_bytes());
        prev = chain;
    }
    out
}

fn verifies(bytes: &[u8], key: &ChainKey) -> bool {
    let mut v = Verifier::new(key.clone());
    v.check_reader(std::path::Path::new("p"), bytes).is_ok()
}

proptest! {
    #[test]
    fn format_then_parse_round_trips(r in record(), seq in any::<u64>(), key in key_strategy(), prev in any::<[u8; 32]>()) {
        let (line, chain) = r.to_line(seq, &key, &prev);
        prop_assert!(line.ends_with('\n'));
        prop_assert_eq!(line.matches('\n').count(), 1);
        let body = line.trim_end_matches('\n');
        let p = parse_line(body.as_bytes()).unwrap();
        prop_assert_eq!(p.seq, seq);
        prop_assert_eq!(p.chain, chain);
        prop_assert_eq!(&p.record, &sanitized(&r));
        prop_assert_eq!(key.next(&prev, p.record.kind(), &body.as_bytes()[..p.body_len]), chain);
        // Parse → format is byte-identical (one canonical spelling).
        prop_assert_eq!(p.record.body(seq), &body[..p.body_len]);
    }

    #[test]
    fn any_single_byte_edit_is_detected(
        records in proptest::collection::vec(record(), 1..6),
        key in key_strategy(),
        pos in any::<prop::sample::Index>(),
        delta in 1u8..=255,
    ) {
        let good = build(&records, &key);
        prop_assert!(verifies(&good, &key));
        let mut bad = good.clone();
        let i = pos.index(bad.len());
        bad[i] = bad[i].wrapping_add(delta);
        prop_assert!(!verifies(&bad, &key), "edit at byte {} not detected", i);
    }

    #[test]
    fn removing_duplicating_or_swapping_lines_is_detected(
        records in proptest::collection::vec(record(), 3..7),
        key in key_strategy(),
        pick in any::<prop::sample::Index>(),
    ) {
        let good = build(&records, &key);
        let lines: Vec<&[u8]> = good.split_inclusive(|&b| b == b'\n').collect();
        // A record between the first and the last (cutting the end of a
        // chain, or its start up to an anchoring boot record, leaves a valid
        // shorter chain: the verifier reports where it is anchored).
        let k = 2 + pick.index(lines.len() - 3);
        let mut removed = lines.clone();
        removed.remove(k);
        prop_assert!(!verifies(&removed.concat(), &key));
        let mut swapped = lines.clone();
        swapped.swap(k, k + 1);
        prop_assert!(!verifies(&swapped.concat(), &key));
        let mut dup = lines.clone();
        dup.insert(k, lines[k]);
        prop_assert!(!verifies(&dup.concat(), &key));
    }

    /// Whatever follows a valid file (records, chained or not, then any
    /// bytes), the probe proposes to cut at most the bytes after the last
    /// newline: never a complete line.
    #[test]
    fn the_probe_never_cuts_a_complete_line(
        records in proptest::collection::vec(record(), 1..6),
        unchained in any::<bool>(),
        junk in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut bytes = if unchained {
            let mut b = HEADER_V2.as_bytes().to_vec();
            for (i, r) in records.iter().enumerate() {
                b.extend_from_slice(r.to_unchained_line(i as u64 + 1).as_bytes());
            }
            b
        } else {
            build(&records, &ChainKey::Plain)
        };
        let valid = bytes.len() as u64;
        bytes.extend_from_slice(&junk);
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, &bytes).unwrap();
        let p = varta_audit::probe(&f).unwrap();
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i as u64 + 1);
        match p.truncate_to {
            Some(to) => prop_assert_eq!(to, complete),
            None => prop_assert_eq!(complete, bytes.len() as u64),
        }
        if !junk.contains(&b'\n') {
            // Junk without a newline is torn: the valid records stay.
            let last = p.last.unwrap();
            prop_assert_eq!(last.line.seq, records.len() as u64);
            prop_assert_eq!(last.end, valid);
            prop_assert_eq!(last.line.chained, !unchained);
        }
    }

    /// Unchained records (0.2.0 without `audit-chain`) sealed by the boot
    /// record a continuing observer writes: any single-byte edit of them
    /// is detected.
    #[test]
    fn any_single_byte_edit_of_sealed_unchained_records_is_detected(
        records in proptest::collection::vec(record(), 1..5),
        key in key_strategy(),
        pos in any::<prop::sample::Index>(),
        xor in 1u8..=255,
    ) {
        let mut old = HEADER_V2.as_bytes().to_vec();
        for (i, r) in records.iter().enumerate() {
            old.extend_from_slice(r.to_unchained_line(i as u64 + 1).as_bytes());
        }
        let mut v = Verifier::new(key.clone());
        v.check_reader(std::path::Path::new("p"), &old[..]).unwrap();
        let seal = v.finish().last_chain.unwrap();
        let seq = records.len() as u64 + 1;
        let boot = Record::Boot {
            wallclock_ms: 1,
            observer_ns: 0,
            daemon_pid: 2,
            prev_chain: Some(seal),
            reason: BootReason::Resume,
        };
        let (line, _) = boot.to_line(seq, &key, &seal);
        let mut bytes = old.clone();
        bytes.extend_from_slice(line.as_bytes());
        prop_assert!(verifies(&bytes, &key));
        let i = pos.index(old.len());
        bytes[i] ^= xor;
        prop_assert!(!verifies(&bytes, &key), "edit at {} of {:?}", i, String::from_utf8_lossy(&old));
    }

    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_line(&bytes);
        let mut with_header = HEADER_V2.as_bytes().to_vec();
        with_header.extend_from_slice(&bytes);
        let _ = verifies(&with_header, &ChainKey::Plain);
    }
}
