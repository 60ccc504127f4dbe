use super::*;
use crate::events::Recorder;
use std::collections::HashMap;
use varta_vlp::{Status, NONCE_TERMINAL};

const MS: u64 = 1_000_000;

fn settings(capacity: u32) -> TrackerSettings {
    TrackerSettings {
        capacity,
        threshold_ns: 100 * MS,
        eviction: EvictionPolicy::Strict,
        max_beat_rate: 0,
        global_beat_rate: 0,
        global_beat_burst: 0,
        own_pidns: 0,
        allow_cross_namespace: false,
    }
}

fn setup(capacity: u32) -> (Tracker, EventBus, Recorder) {
    let rec = Recorder::new();
    let mut bus = EventBus::new();
    bus.add(Box::new(rec.clone()));
    (Tracker::new(settings(capacity)), bus, rec)
}

fn beat(pid: u32, nonce: u64) -> Incoming {
    Incoming {
        pid,
        frame: Frame::new(Status::Ok, pid, 0, nonce, 0),
        origin: Origin::KernelAttested,
        pidns: None,
        new_session: false,
        peer: None,
    }
}

fn terminal(pid: u32, ts: u64) -> Incoming {
    Incoming {
        pid,
        frame: Frame::new(Status::Critical, pid, ts, NONCE_TERMINAL, 0),
        origin: Origin::KernelAttested,
        pidns: None,
        new_session: false,
        peer: None,
    }
}

/// Fake /proc: start times, namespaces and identities per pid.
#[derive(Default)]
struct FakeProc {
    start: HashMap<u32, u64>,
    ns: HashMap<u32, u32>,
    identity: HashMap<u32, crate::identity::RawIdentity>,
}

impl ProcessProbe for FakeProc {
    fn start_time(&mut self, pid: u32) -> Option<u64> {
        self.start.get(&pid).copied()
    }
    fn pid_namespace(&mut self, pid: u32) -> Option<u32> {
        self.ns.get(&pid).copied()
    }
    fn identity(&mut self, pid: u32) -> Option<crate::identity::RawIdentity> {
        self.identity.get(&pid).cloned()
    }
}

#[test]
fn strict_nonce_order() {
    let (mut t, mut bus, rec) = setup(8);
    for n in [1, 2, 5] {
        assert_eq!(
            t.on_frame(0, beat(10, n), &mut NoProbe, &mut bus),
            Verdict::Accepted
        );
    }
    for n in [5, 4, 1] {
        assert_eq!(
            t.on_frame(0, beat(10, n), &mut NoProbe, &mut bus),
            Verdict::Dropped
        );
    }
    assert_eq!(
        rec.kinds(),
        ["beat", "beat", "beat", "rejected", "rejected", "rejected"]
    );
    assert_eq!(t.get(10).unwrap().last_nonce, Some(5));
    t.check_invariants();
}

#[test]
fn nonce_wrap_is_accepted_and_counted() {
    let (mut t, mut bus, rec) = setup(8);
    t.on_frame(0, beat(10, u64::MAX - 5), &mut NoProbe, &mut bus);
    assert_eq!(
        t.on_frame(0, beat(10, 0), &mut NoProbe, &mut bus),
        Verdict::Accepted
    );
    assert_eq!(
        t.on_frame(0, beat(10, 1), &mut NoProbe, &mut bus),
        Verdict::Accepted
    );
    assert_eq!(rec.kinds(), ["beat", "nonce_wrap", "beat", "beat"]);
    // Outside the window it is a replay.
    let (mut t, mut bus, _) = setup(8);
    t.on_frame(0, beat(10, u64::MAX - (1 << 21)), &mut NoProbe, &mut bus);
    assert_eq!(
        t.on_frame(0, beat(10, 0), &mut NoProbe, &mut bus),
        Verdict::Dropped
    );
    let (mut t, mut bus, _) = setup(8);
    t.on_frame(0, beat(10, u64::MAX - 5), &mut NoProbe, &mut bus);
    assert_eq!(
        t.on_frame(0, beat(10, 1 << 20), &mut NoProbe, &mut bus),
        Verdict::Dropped
    );
}

#[test]
fn one_stall_per_silence_run_then_recovered() {
    let (mut t, mut bus, rec) = setup(8);
    t.on_frame(0, beat(10, 1), &mut NoProbe, &mut bus);
    assert_eq!(t.next_deadline(), Some(100 * MS));
    assert_eq!(t.expire(100 * MS - 1, &mut bus), 0);
    assert_eq!(t.expire(100 * MS, &mut bus), 1);
    assert_eq!(t.expire(500 * MS, &mut bus), 0, "one stall per run");
    assert_eq!(t.next_deadline(), None);
    t.on_frame(600 * MS, beat(10, 2), &mut NoProbe, &mut bus);
    let ev = rec.take();
    assert_eq!(
        ev[1],
        (
            100 * MS,
            Event::Stall {
                pid: 10,
                last_nonce: 1,
                last_beat_ns: 0,
                origin: Origin::KernelAttested,
                foreign_ns: false
            }
        )
    );
    assert_eq!(
        ev[3].1,
        Event::Recovered {
            pid: 10,
            nonce: 2,
            status: Status::Ok,
            payload: 0,
            silent_ns: 600 * MS
        }
    );
    assert_eq!(
        t.expire(700 * MS, &mut bus),
        1,
        "a new silence run stalls again"
    );
    t.check_invariants();
}

#[test]
fn terminal_frame_exits_without_later_stall() {
    let (mut t, mut bus, rec) = setup(8);
    t.on_frame(0, beat(10, 1), &mut NoProbe, &mut bus);
    assert_eq!(
        t.on_frame(MS, terminal(10, 50), &mut NoProbe, &mut bus),
        Verdict::Accepted
    );
    assert_eq!(t.expire(10_000 * MS, &mut bus), 0);
    // Replayed (not newer) terminal frames are refused.
    assert_eq!(
        t.on_frame(2 * MS, terminal(10, 50), &mut NoProbe, &mut bus),
        Verdict::Dropped
    );
    assert_eq!(
        t.on_frame(2 * MS, terminal(10, 51), &mut NoProbe, &mut bus),
        Verdict::Accepted
    );
    // A later regular beat revives the slot; the terminal did not move the nonce.
    assert_eq!(
        t.on_frame(3 * MS, beat(10, 2), &mut NoProbe, &mut bus),
        Verdict::Accepted
    );
    assert_eq!(
        rec.kinds(),
        ["beat", "exit", "rejected", "exit", "beat", "recovered"]
    );
    assert_eq!(t.get(10).unwrap().state, SlotState::Live);
}

#[test]
fn terminal_as_first_frame() {
    let (mut t, mut bus, rec) = setup(8);
    t.on_frame(0, terminal(10, 5), &mut NoProbe, &mut bus);
    assert_eq!(rec.kinds(), ["exit"]);
    assert_eq!(t.get(10).unwrap().last_nonce, None);
    assert_eq!(
        t.on_frame(0, beat(10, 1), &mut NoProbe, &mut bus),
        Verdict::Accepted
    );
}

#[test]
fn origin_is_pinned() {
    let (mut t, mut bus, rec) = setup(8);
    t.on_frame(0, beat(10, 1), &mut NoProbe, &mut bus);
    let mut udp = beat(10, 2);
    udp.origin = Origin::NetworkUnverified;
    assert_eq!(t.on_frame(0, udp, &mut NoProbe, &mut bus), Verdict::Dropped);
    assert_eq!(rec.kinds(), ["beat", "origin_conflict"]);
}

#[test]
fn namespace_pinning_and_cross_namespace_policy() {
    let (mut t, mut bus, rec) = setup(8);
    t.reconfigure(TrackerSettings {
        own_pidns: 100,
        ..settings(8)
    });
    let mut probe = FakeProc::default();
    probe.ns.insert(10, 100);
    probe.ns.insert(11, 200);
    t.on_frame(0, beat(10, 1), &mut probe, &mut bus);
    assert_eq!(
        t.on_frame(0, beat(11, 1), &mut probe, &mut bus),
        Verdict::CrossNamespace
    );
    let mut other = beat(10, 2);
    other.pidns = Some(300);
    assert_eq!(t.on_frame(0, other, &mut probe, &mut bus), Verdict::Dropped);
    assert_eq!(rec.kinds(), ["beat", "rejected", "namespace_conflict"]);
    assert!(t.get(11).is_none());
    t.reconfigure(TrackerSettings {
        own_pidns: 100,
        allow_cross_namespace: true,
        ..settings(8)
    });
    assert_eq!(
        t.on_frame(0, beat(11, 1), &mut probe, &mut bus),
        Verdict::Accepted
    );
}

#[test]
fn recycled_pid_starts_a_new_life() {
    let (mut t, mut bus, rec) = setup(8);
    let mut probe = FakeProc::default();
    probe.start.insert(10, 1000);
    for n in 1..=50 {
        t.on_frame(n * MS, beat(10, n), &mut probe, &mut bus);
    }
    t.expire(1000 * MS, &mut bus);
    // Same start time: a genuine replay.
    assert_eq!(
        t.on_frame(1001 * MS, beat(10, 1), &mut probe, &mut bus),
        Verdict::Dropped
    );
    // The pid now belongs to another process.
    probe.start.insert(10, 2000);
    assert_eq!(
        t.on_frame(1002 * MS, beat(10, 1), &mut probe, &mut bus),
        Verdict::Accepted
    );
    let kinds = rec.kinds();
    assert_eq!(
        &kinds[kinds.len() - 5..],
        ["stall", "rejected", "new_life", "beat", "recovered"]
    );
    assert_eq!(t.get(10).unwrap().last_nonce, Some(1));
}

#[test]
fn pid_of_an_agent_gone_before_admission_can_start_a_new_life() {
    let (mut t, mut bus, rec) = setup(8);
    // Read after its sender exited: no start time to pin.
    let mut probe = FakeProc::default();
    for n in 1..=3 {
        t.on_frame(n * MS, beat(10, n), &mut probe, &mut bus);
    }
    t.on_frame(4 * MS, terminal(10, 4), &mut probe, &mut bus);
    // Still unreadable: a lower nonce is refused, not a new life.
    assert_eq!(
        t.on_frame(5 * MS, beat(10, 1), &mut probe, &mut bus),
        Verdict::Dropped
    );
    // A live process now holds the pid: its beats are a new life.
    probe.start.insert(10, 2000);
    assert_eq!(
        t.on_frame(6 * MS, beat(10, 1), &mut probe, &mut bus),
        Verdict::Accepted
    );
    let kinds = rec.kinds();
    assert_eq!(
        &kinds[kinds.len() - 4..],
        ["rejected", "new_life", "beat", "recovered"]
    );
    assert_eq!(t.get(10).unwrap().last_nonce, Some(1));
    assert!(t.is_life(10, 2000));
}

#[test]
fn full_tracker_strict_evicts_only_stalled_or_exited() {
    let (mut t, mut bus, rec) = setup(2);
    t.on_frame(0, beat(10, 1), &mut NoProbe, &mut bus);
    t.on_frame(MS, beat(11, 1), &mut NoProbe, &mut bus);
    assert_eq!(
        t.on_frame(2 * MS, beat(12, 1), &mut NoProbe, &mut bus),
        Verdict::Dropped
    );
    assert_eq!(rec.take()[2].1, Event::CapacityExceeded { pid: 12 });
    t.expire(100 * MS, &mut bus); // 10 stalls
    assert_eq!(
        t.on_frame(100 * MS, beat(12, 1), &mut NoProbe, &mut bus),
        Verdict::Accepted
    );
    let ev = rec.take();
    assert!(ev.contains(&(
        100 * MS,
        Event::Eviction {
            pid: 10,
            was_live: false
        }
    )));
    assert!(t.get(10).is_none() && t.get(12).is_some());
    t.check_invariants();
}

#[test]
fn full_tracker_balanced_evicts_least_recent_live() {
    let (mut t, mut bus, rec) = setup(2);
    t.reconfigure(TrackerSettings {
        eviction: EvictionPolicy::Balanced,
        ..settings(2)
    });
    t.on_frame(0, beat(10, 1), &mut NoProbe, &mut bus);
    t.on_frame(MS, beat(11, 1), &mut NoProbe, &mut bus);
    t.on_frame(2 * MS, beat(10, 2), &mut NoProbe, &mut bus);
    assert_eq!(
        t.on_frame(3 * MS, beat(12, 1), &mut NoProbe, &mut bus),
        Verdict::Accepted
    );
    assert!(rec.take().contains(&(
        3 * MS,
        Event::Eviction {
            pid: 11,
            was_live: true
        }
    )));
    t.check_invariants();
}

#[test]
fn per_pid_and_global_rate_limits() {
    let (mut t, mut bus, _) = setup(8);
    t.reconfigure(TrackerSettings {
        max_beat_rate: 10,
        ..settings(8)
    });
    let accepted = (1..=50)
        .filter(|&n| t.on_frame(0, beat(10, n), &mut NoProbe, &mut bus) == Verdict::Accepted)
        .count();
    assert_eq!(accepted, 10);
    let (mut t, mut bus, rec) = setup(64);
    t.reconfigure(TrackerSettings {
        global_beat_rate: 5,
        global_beat_burst: 5,
        ..settings(64)
    });
    let accepted = (0..20)
        .filter(|&p| t.on_frame(0, beat(100 + p, 1), &mut NoProbe, &mut bus) == Verdict::Accepted)
        .count();
    assert_eq!(accepted, 5);
    assert!(rec.take().iter().any(|(_, e)| matches!(
        e,
        Event::Rejected {
            reason: RejectReason::RateLimitedGlobal,
            ..
        }
    )));
}

#[test]
fn grace_after_clock_jump() {
    let (mut t, mut bus, _) = setup(8);
    t.on_frame(0, beat(10, 1), &mut NoProbe, &mut bus);
    // The observer slept through 10 s: nobody stalls for one threshold.
    t.grant_grace(10_000 * MS);
    assert_eq!(t.expire(10_000 * MS, &mut bus), 0);
    assert_eq!(t.next_deadline(), Some(10_100 * MS));
    t.on_frame(10_050 * MS, beat(10, 2), &mut NoProbe, &mut bus);
    assert_eq!(
        t.expire(10_100 * MS, &mut bus),
        0,
        "beat during grace keeps it live"
    );
    assert_eq!(t.expire(10_150 * MS, &mut bus), 1);
}

#[test]
fn ten_thousand_agents_stall_exactly_when_due() {
    let (mut t, mut bus, rec) = setup(10_000);
    for pid in 2..10_002u32 {
        // Staggered first beats, 1 µs apart.
        t.on_frame(u64::from(pid) * 1000, beat(pid, 1), &mut NoProbe, &mut bus);
    }
    rec.take();
    // Half keep beating.
    for pid in (2..10_002u32).filter(|p| p % 2 == 0) {
        t.on_frame(50 * MS, beat(pid, 2), &mut NoProbe, &mut bus);
    }
    rec.take();
    // pid p beat at p µs: the first odd pid (3) is due at 100 ms + 3 µs.
    assert_eq!(t.expire(100 * MS + 2_999, &mut bus), 0);
    assert_eq!(t.expire(100 * MS + 3_000, &mut bus), 1);
    let stalls = t.expire(111 * MS, &mut bus);
    assert_eq!(stalls, 4_999);
    let ev = rec.take();
    assert!(ev
        .iter()
        .all(|(_, e)| matches!(e, Event::Stall { pid, .. } if pid % 2 == 1)));
    assert_eq!(t.expire(150 * MS, &mut bus), 5_000);
    assert_eq!(t.counts(), (0, 10_000, 0));
    t.check_invariants();
}

mod model {
    //! Property test: the tracker against a brute-force model that scans
    //! every agent on every tick.
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Beat(u32, u64),
        Terminal(u32, u64),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (2u32..8, 0u64..20).prop_map(|(p, n)| Op::Beat(p, n)),
            1 => (2u32..8, 0u64..5).prop_map(|(p, t)| Op::Terminal(p, t)),
            2 => (0u64..150).prop_map(Op::Advance),
        ]
    }

    #[derive(Default, Clone, Copy)]
    struct M {
        nonce: Option<u64>,
        term: Option<u64>,
        last: u64,
        stalled: bool,
        exited: bool,
    }

    proptest! {
        #[test]
        fn matches_model(ops in proptest::collection::vec(op(), 1..120)) {
            let (mut t, mut bus, rec) = setup(64);
            let mut model: HashMap<u32, M> = HashMap::new();
            let mut now = 0u64;
            let thr = 100 * MS;
            for op in ops {
                let mut want: Vec<&'static str> = Vec::new();
                match op {
                    Op::Advance(ms) => {
                        now += ms * MS;
                        let mut due: Vec<(u64, u32)> = model.iter()
                            .filter(|(_, m)| !m.stalled && !m.exited && now - m.last >= thr)
                            .map(|(p, m)| (m.last, *p)).collect();
                        due.sort();
                        for (_, p) in due {
                            model.get_mut(&p).unwrap().stalled = true;
                            want.push("stall");
                        }
                        t.expire(now, &mut bus);
                    }
                    Op::Beat(p, n) => {
                        let m = model.entry(p).or_default();
                        if m.nonce.is_none_or(|last| n > last) {
                            want.push("beat");
                            if m.stalled || m.exited { want.push("recovered"); }
                            *m = M { nonce: Some(n), term: m.term, last: now, stalled: false, exited: false };
                        } else {
                            want.push("rejected");
                        }
                        t.on_frame(now, beat(p, n), &mut NoProbe, &mut bus);
                    }
                    Op::Terminal(p, ts) => {
                        let m = model.entry(p).or_default();
                        if m.term.is_none_or(|last| ts > last) {
                            want.push("exit");
                            *m = M { term: Some(ts), last: now, stalled: false, exited: true, ..*m };
                        } else {
                            want.push("rejected");
                        }
                        t.on_frame(now, terminal(p, ts), &mut NoProbe, &mut bus);
                    }
                }
                let got: Vec<&'static str> = rec.take().iter().map(|(_, e)| e.kind()).collect();
                prop_assert_eq!(got, want);
                t.check_invariants();
            }
        }
    }
}

proptest::proptest! {
    /// The batched entry point is the per-frame one with prefetching: same
    /// verdicts, same events, same order.
    #[test]
    fn batch_equals_sequential(frames in proptest::collection::vec((2u32..40, 0u64..30, proptest::bool::ANY), 0..150)) {
        let (mut a, mut bus_a, rec_a) = setup(16);
        let (mut b, mut bus_b, rec_b) = setup(16);
        let incs: Vec<Incoming> = frames
            .iter()
            .map(|&(pid, n, term)| if term { terminal(pid, n) } else { beat(pid, n) })
            .collect();
        let seq: Vec<Verdict> = incs.iter().map(|i| a.on_frame(5, *i, &mut NoProbe, &mut bus_a)).collect();
        let mut got = vec![Verdict::Dropped; incs.len()];
        b.on_batch(5, &incs, &mut NoProbe, &mut bus_b, &mut got);
        proptest::prop_assert_eq!(seq, got);
        proptest::prop_assert_eq!(rec_a.take(), rec_b.take());
        b.check_invariants();
    }
}

#[test]
fn tallies_count_beats_and_stalls_per_life() {
    let (mut t, mut bus, _rec) = setup(2);
    t.set_tally_limit(2);
    for n in 1..=3 {
        t.on_frame(n * MS, beat(10, n), &mut NoProbe, &mut bus);
    }
    t.expire(1000 * MS, &mut bus);
    t.on_frame(1001 * MS, beat(10, 4), &mut NoProbe, &mut bus);
    t.on_frame(1001 * MS, beat(11, 1), &mut NoProbe, &mut bus);
    let mut seen = Vec::new();
    t.for_each_agent(|s, tally| {
        seen.push((s.pid, *tally));
        true
    });
    seen.sort_by_key(|(p, _)| *p);
    assert_eq!(
        seen,
        vec![
            (
                10,
                Tally {
                    beats: 4,
                    stalls: 1
                }
            ),
            (
                11,
                Tally {
                    beats: 1,
                    stalls: 0
                }
            )
        ]
    );
    // A reused slot starts from zero.
    t.on_frame(1002 * MS, terminal(11, 5), &mut NoProbe, &mut bus);
    t.on_frame(1003 * MS, beat(12, 1), &mut NoProbe, &mut bus);
    let mut twelve = None;
    t.for_each_agent(|s, tally| {
        if s.pid == 12 {
            twelve = Some(*tally);
        }
        true
    });
    assert_eq!(
        twelve,
        Some(Tally {
            beats: 1,
            stalls: 0
        })
    );
    // The callback can stop early.
    let mut n = 0;
    t.for_each_agent(|_, _| {
        n += 1;
        false
    });
    assert_eq!(n, 1);
}

#[test]
fn network_agent_restarting_its_nonce_needs_a_new_session_after_silence() {
    let (mut t, mut bus, rec) = setup(8);
    let net = |nonce, new_session| Incoming {
        origin: Origin::NetworkVerified,
        new_session,
        ..beat(30, nonce)
    };
    assert_eq!(
        t.on_frame(0, net(50, true), &mut NoProbe, &mut bus),
        Verdict::Accepted
    );
    // Nonce back to 1 within the threshold: a replay, whatever the flag.
    assert_eq!(
        t.on_frame(10 * MS, net(1, true), &mut NoProbe, &mut bus),
        Verdict::Dropped
    );
    // After a threshold of silence, but not a new session: still a replay.
    assert_eq!(
        t.on_frame(200 * MS, net(1, false), &mut NoProbe, &mut bus),
        Verdict::Dropped
    );
    // A new session after the silence: a new process on the pid.
    assert_eq!(
        t.on_frame(200 * MS, net(1, true), &mut NoProbe, &mut bus),
        Verdict::Accepted
    );
    assert_eq!(
        t.on_frame(210 * MS, net(2, false), &mut NoProbe, &mut bus),
        Verdict::Accepted
    );
    assert_eq!(
        rec.kinds(),
        ["beat", "rejected", "rejected", "new_life", "beat", "beat"]
    );
    // A kernel-attested agent ignores the flag (its start time decides).
    let mut uds = beat(31, 9);
    t.on_frame(0, uds, &mut NoProbe, &mut bus);
    uds.frame.nonce = 1;
    uds.new_session = true;
    assert_eq!(
        t.on_frame(500 * MS, uds, &mut NoProbe, &mut bus),
        Verdict::Dropped
    );
}

fn stalls(rec: &Recorder) -> Vec<(u64, u32)> {
    rec.take()
        .into_iter()
        .filter_map(|(t, e)| match e {
            Event::Stall { pid, .. } => Some((t, pid)),
            _ => None,
        })
        .collect()
}

fn class(threshold_ms: u64, grace_ms: u64) -> ClassTimeouts {
    ClassTimeouts {
        threshold_ns: threshold_ms * MS,
        grace_ns: grace_ms * MS,
    }
}

#[test]
fn per_class_thresholds_stall_each_agent_at_its_own() {
    let (mut t, mut bus, rec) = setup(8);
    t.set_classes(&[class(0, 0), class(300, 0)]);
    for pid in [1, 2] {
        t.on_frame(0, beat(pid, 1), &mut NoProbe, &mut bus);
        t.on_frame(MS, beat(pid, 2), &mut NoProbe, &mut bus);
    }
    assert!(t.assign_class(2, 1));
    assert_eq!(t.next_deadline(), Some(101 * MS));
    t.expire(101 * MS, &mut bus);
    assert_eq!(stalls(&rec), [(101 * MS, 1)]);
    assert_eq!(t.next_deadline(), Some(301 * MS));
    t.expire(300 * MS, &mut bus);
    assert!(stalls(&rec).is_empty());
    t.expire(301 * MS, &mut bus);
    assert_eq!(stalls(&rec), [(301 * MS, 2)]);
    t.check_invariants();
}

#[test]
fn startup_grace_covers_the_first_silence_only() {
    let (mut t, mut bus, rec) = setup(8);
    // Class 1: 100 ms threshold, 500 ms startup grace.
    t.set_classes(&[class(0, 0), class(100, 500)]);
    t.set_admit_class(1);
    t.on_frame(0, beat(7, 1), &mut NoProbe, &mut bus);
    // A slow starter: silent after its first beat, still not stalled at
    // 599 ms (grace + threshold = 600 ms).
    t.expire(599 * MS, &mut bus);
    assert!(stalls(&rec).is_empty());
    t.on_frame(599 * MS, beat(7, 2), &mut NoProbe, &mut bus);
    // From the second beat on, its own threshold.
    t.expire(698 * MS, &mut bus);
    assert!(stalls(&rec).is_empty());
    t.expire(699 * MS, &mut bus);
    assert_eq!(stalls(&rec), [(699 * MS, 7)]);
    // Recovering is not a new start: no grace.
    t.on_frame(700 * MS, beat(7, 3), &mut NoProbe, &mut bus);
    t.expire(800 * MS, &mut bus);
    assert_eq!(stalls(&rec), [(800 * MS, 7)]);
    t.check_invariants();
}

#[test]
fn a_policy_learnt_after_the_first_beat_keeps_the_grace() {
    let (mut t, mut bus, rec) = setup(8);
    // Class 1 pending (longest of all), class 2 the agent's rule.
    t.set_classes(&[class(0, 0), class(1000, 1000), class(100, 200)]);
    t.set_admit_class(1);
    t.on_frame(0, beat(5, 1), &mut NoProbe, &mut bus);
    t.on_frame(0, beat(6, 1), &mut NoProbe, &mut bus);
    t.on_frame(10 * MS, beat(6, 2), &mut NoProbe, &mut bus);
    assert!(t.assign_class(5, 2)); // still at its first beat: 300 ms
    assert!(t.assign_class(6, 2)); // beat twice: 100 ms from its last
    t.expire(109 * MS, &mut bus);
    assert!(stalls(&rec).is_empty());
    t.expire(110 * MS, &mut bus);
    assert_eq!(stalls(&rec), [(110 * MS, 6)]);
    t.expire(300 * MS, &mut bus);
    assert_eq!(stalls(&rec), [(300 * MS, 5)]);
    t.check_invariants();
}

#[test]
fn reclassify_counts_the_silence_so_far_and_stalls_nobody_early() {
    let (mut t, mut bus, rec) = setup(16);
    t.set_classes(&[class(0, 0), class(1000, 0), class(300, 0)]);
    for pid in 1..=4 {
        t.on_frame(0, beat(pid, 1), &mut NoProbe, &mut bus);
        t.on_frame(MS, beat(pid, 2), &mut NoProbe, &mut bus);
        t.assign_class(pid, 1);
    }
    // Agents 3 and 4 keep beating; 1 and 2 are silent since 1 ms.
    for pid in [3, 4] {
        t.on_frame(450 * MS, beat(pid, 3), &mut NoProbe, &mut bus);
    }
    // Reload at 500 ms: everyone moves to the 300 ms class.
    let changed = t.reclassify(|_, _, _| 2);
    assert_eq!(changed.len(), 4);
    t.check_invariants();
    t.expire(500 * MS, &mut bus);
    let mut s = stalls(&rec);
    s.sort();
    assert_eq!(
        s,
        [(500 * MS, 1), (500 * MS, 2)],
        "only the agents silent longer than the new threshold"
    );
    t.expire(749 * MS, &mut bus);
    assert!(stalls(&rec).is_empty());
    t.expire(750 * MS, &mut bus);
    assert_eq!(stalls(&rec).len(), 2);
    t.check_invariants();
}

#[test]
fn new_life_starts_over_in_the_admission_class_with_grace() {
    let mut probe = FakeProc::default();
    probe.start.insert(40, 111);
    let (mut t, mut bus, rec) = setup(8);
    t.set_classes(&[class(0, 0), class(100, 400), class(50, 0)]);
    t.record_admissions();
    t.set_admit_class(1);
    t.on_frame(0, beat(40, 5), &mut probe, &mut bus);
    t.assign_class(40, 2);
    assert_eq!(t.take_admitted().len(), 1);
    probe.start.insert(40, 222);
    t.on_frame(10 * MS, beat(40, 1), &mut probe, &mut bus);
    let admitted = t.take_admitted();
    assert_eq!(admitted.len(), 1);
    assert_eq!(admitted[0].start_time, 222);
    assert!(t.is_life(40, 222) && !t.is_life(40, 111));
    // Back in the admission class, in grace: 10 + 100 + 400 ms.
    assert_eq!(t.next_deadline(), Some(510 * MS));
    rec.take();
    t.check_invariants();
}

#[test]
fn hundred_thousand_agents_four_thresholds_all_stall_on_time() {
    const N: u32 = 100_000;
    let (mut t, mut bus, rec) = setup(N);
    let thresholds = [100u64, 250, 400, 1000];
    let mut classes = vec![class(0, 0)];
    classes.extend(thresholds.iter().map(|&th| class(th, 0)));
    t.set_classes(&classes);
    // Last beats spread over the first 50 ms, in time order (the
    // observer's clock never goes back).
    let last_of = |pid: u32| u64::from(pid - 2) * 50 * MS / u64::from(N);
    for pid in 2..N + 2 {
        let at = last_of(pid);
        t.on_frame(at, beat(pid, 1), &mut NoProbe, &mut bus);
        t.on_frame(at, beat(pid, 2), &mut NoProbe, &mut bus);
        t.assign_class(pid, (pid % 4 + 1) as u8);
    }
    t.check_invariants();
    rec.take();
    let mut seen = 0u32;
    let mut now = 0;
    while let Some(due) = t.next_deadline() {
        now = due.max(now);
        t.expire(now, &mut bus);
        for (at, pid) in stalls(&rec) {
            let last = last_of(pid);
            let th = thresholds[(pid % 4) as usize] * MS;
            assert_eq!(
                at,
                last + th,
                "pid {pid} stalled at {at}, due {}",
                last + th
            );
            seen += 1;
        }
    }
    assert_eq!(seen, N);
    assert_eq!(t.counts(), (0, N, 0));
}

/// Every change a control-API snapshot shows marks the slot, and only
/// those: a beat, a stall, an exit, a class change; not a rejected frame.
#[test]
fn changes_mark_the_slots_a_snapshot_must_copy_again() {
    let (mut t, mut bus, _) = setup(8);
    t.set_classes(&[class(0, 0), class(300, 0)]);
    let mut probe = NoProbe;
    let drained = |t: &mut Tracker| {
        let mut c = ChangeSet::default();
        t.drain_changes(&mut c);
        c
    };
    for pid in 1..=3 {
        t.on_frame(0, beat(pid, 1), &mut probe, &mut bus);
    }
    let slot = |t: &Tracker, pid| t.slot_of(pid).unwrap();
    let c = drained(&mut t);
    assert_eq!(c.len(), 3, "admissions");
    assert!(drained(&mut t).is_empty(), "drained");
    t.on_frame(MS, beat(2, 2), &mut probe, &mut bus);
    assert_eq!(drained(&mut t), {
        let mut c = ChangeSet::default();
        c.mark(slot(&t, 2));
        c
    });
    // A replayed nonce is dropped: nothing changed.
    t.on_frame(2 * MS, beat(2, 2), &mut probe, &mut bus);
    assert!(drained(&mut t).is_empty(), "a dropped frame marks nothing");
    assert!(t.assign_class(3, 1));
    assert!(drained(&mut t).contains(slot(&t, 3)), "class change");
    assert!(t.assign_class(3, 1));
    assert!(drained(&mut t).is_empty(), "same class: no change");
    t.on_frame(3 * MS, terminal(1, 5), &mut probe, &mut bus);
    assert!(drained(&mut t).contains(slot(&t, 1)), "exit");
    t.expire(10_000 * MS, &mut bus);
    let c = drained(&mut t);
    assert!(c.contains(slot(&t, 2)) && c.contains(slot(&t, 3)), "stalls");
    let changed = t.reclassify(|_, _, _| 0);
    assert_eq!(changed, vec![3]);
    let c = drained(&mut t);
    assert_eq!(
        c.len(),
        1,
        "reclassify marks the agents whose class changed"
    );
    assert!(c.contains(slot(&t, 3)));
}
