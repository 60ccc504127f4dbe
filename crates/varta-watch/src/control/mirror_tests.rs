//! The mirror and the chunked copy against the tracker and the policy
//! engine they copy:
//! every tracked agent once, with its state, beat, class, identity and
//! rule, after admissions, evictions, slot reuse and new lives.

use std::net::SocketAddr;
use std::sync::Arc;

use varta_vlp::{Frame, Status};

use super::*;
use crate::config::{EvictionPolicy, Loaded};
use crate::events::{EventBus, Origin};
use crate::identity::Registry;
use crate::policy::Policy;
use crate::tracker::{Incoming, NoProbe, SlotState, TrackerSettings};

const MS: u64 = 1_000_000;

/// The loop's snapshot state: mirror, change history, buffer pool.
#[derive(Default)]
struct Snapper {
    mirror: Mirror,
    changes: Changes,
    pool: Pool,
}

/// The observer's pieces a snapshot reads, wired as the daemon does.
struct World {
    tracker: Tracker,
    policy: Policy,
    bus: EventBus,
    _poll: mio::Poll,
    _dir: tempfile::TempDir,
}

/// Two rules: peers in 10.0.0.0/8 get rule #1 (index 0), other
/// plaintext-UDP agents rule #2 (index 1).
fn world(capacity: u32) -> World {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("varta.toml");
    std::fs::write(
        &file,
        "[[agent]]\nmatch = { peer = \"10.0.0.0/8\" }\nthreshold-ms = 2000\n\
         [[agent]]\nmatch = { origin = \"network_unverified\" }\nthreshold-ms = 3000\n",
    )
    .unwrap();
    let args = ["varta-watch", "--config", file.to_str().unwrap()];
    let Ok(Loaded::Run(cfg)) = crate::config::load(args.map(Into::into)) else {
        panic!("config");
    };
    let poll = mio::Poll::new().unwrap();
    let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
    let policy = Policy::new(&cfg, Arc::new(Registry::new(1024)), waker, 0).unwrap();
    let mut tracker = Tracker::new(TrackerSettings {
        capacity,
        threshold_ns: 100 * MS,
        eviction: EvictionPolicy::Balanced,
        max_beat_rate: 0,
        global_beat_rate: 0,
        global_beat_burst: 0,
        own_pidns: 0,
        allow_cross_namespace: false,
    });
    policy.setup(&mut tracker);
    let mut bus = EventBus::new();
    bus.add(Box::new(policy.sink()));
    World {
        tracker,
        policy,
        bus,
        _poll: poll,
        _dir: dir,
    }
}

impl World {
    /// One plaintext-UDP frame from `pid` at `ip`, then the policy's
    /// after-batch step, as the loop runs them.
    fn frame(&mut self, now_ms: u64, pid: u32, ip: [u8; 4], nonce: u64, status: Status) {
        let peer = SocketAddr::from((ip, 4000 + (pid as u16)));
        self.incoming(
            now_ms,
            Incoming {
                pid,
                frame: Frame::new(
                    status,
                    pid,
                    now_ms,
                    nonce,
                    (pid * 10).wrapping_add(nonce as u32),
                ),
                origin: Origin::NetworkUnverified,
                pidns: None,
                new_session: true,
                peer: Some(peer),
            },
        );
    }

    /// A Unix-socket beat: its identity comes from the identity thread,
    /// later (never, here: the test does not apply its answers).
    fn uds(&mut self, now_ms: u64, pid: u32) {
        self.incoming(
            now_ms,
            Incoming {
                pid,
                frame: Frame::new(Status::Ok, pid, now_ms, 1, 0),
                origin: Origin::KernelAttested,
                pidns: None,
                new_session: false,
                peer: None,
            },
        );
    }

    fn incoming(&mut self, now_ms: u64, inc: Incoming) {
        let now = now_ms * MS;
        self.tracker.on_frame(now, inc, &mut NoProbe, &mut self.bus);
        self.tracker.expire(now, &mut self.bus);
        self.policy
            .after_batch(now, &mut self.tracker, &mut self.bus);
        self.bus.end_of_batch(now);
    }

    /// A snapshot copied `chunk` records at a time (a whole-mirror copy:
    /// one step per 4 chunks; a copy of changes: at most one per chunk).
    fn snapshot(&mut self, sn: &mut Snapper, chunk: usize) -> AgentsSnapshot {
        let names = self.policy.names();
        let mut c = Copier::with_chunk(
            &mut sn.mirror,
            &mut sn.changes,
            &sn.pool,
            &mut self.tracker,
            &names,
            chunk,
        );
        let full = c.is_full();
        let mut steps = 1;
        while !c.step(&sn.mirror) {
            steps += 1;
        }
        let slots = self.tracker.slot_count();
        if full {
            let per_step = COPY_CHUNK.min(chunk * 4);
            assert_eq!(steps, slots.div_ceil(per_step).max(1));
        } else {
            assert!(steps <= slots.div_ceil(chunk).max(1), "{steps} steps");
        }
        c.finish(&self.tracker, |_| Extras::default(), 0)
    }

    /// The snapshot equals the tracker and the names, agent by agent.
    fn check(&self, snap: &AgentsSnapshot) {
        let names = self.policy.names();
        let tracked = self.tracker.snapshot();
        assert_eq!(
            snap.records().count(),
            tracked.len(),
            "one record per agent"
        );
        assert_eq!(snap.order().len(), tracked.len());
        for a in &tracked {
            let r = snap.find(a.pid).expect("tracked pid in the snapshot");
            assert_eq!(r.pid, a.pid);
            assert_eq!(r.state(), a.state, "pid {}", a.pid);
            assert_eq!(r.nonce(), a.last_nonce);
            assert_eq!(r.last_beat_ns, a.last_beat_ns);
            assert_eq!(r.status(), a.status);
            assert_eq!(r.payload, a.payload);
            assert_eq!(r.origin(), a.origin);
            let slot = self.tracker.slots()[self.tracker.slot_of(a.pid).unwrap() as usize];
            assert_eq!(r.class(), slot.class());
            assert_eq!(r.identity(), names.identity(a.pid), "pid {}", a.pid);
            assert_eq!(r.rule(), names.rule(a.pid), "pid {}", a.pid);
            assert_eq!(
                snap.name_entry(a.pid),
                names.identity(a.pid).map(|id| (id, names.rule(a.pid)))
            );
        }
    }
}

#[test]
fn chunked_copy_equals_tracker_state() {
    let mut w = world(8);
    let mut sn = Snapper::default();
    // Eight agents: even pids in 10/8 (rule 0), odd ones elsewhere (rule 1).
    let ip = |pid: u32| {
        if pid % 2 == 0 {
            [10, 0, 0, 1]
        } else {
            [192, 168, 0, 1]
        }
    };
    for pid in 1..=8 {
        w.frame(0, pid, ip(pid), 5, Status::Ok);
    }
    // One exits, one degrades.
    w.frame(10, 3, ip(3), varta_vlp::NONCE_TERMINAL, Status::Critical);
    w.frame(10, 4, ip(4), 6, Status::Degraded);
    for chunk in [1, 3, 8, CHUNK] {
        let s = w.snapshot(&mut sn, chunk);
        w.check(&s);
    }
    let s = w.snapshot(&mut sn, 3);
    assert_eq!(s.find(2).and_then(|r| r.rule()), Some(0));
    assert_eq!(s.find(5).and_then(|r| r.rule()), Some(1));
    assert_eq!(s.find(3).map(|r| r.state()), Some(SlotState::Exited));
    drop(s);

    // Full: pid 9 (rule 0) takes the exited agent's slot, pid 10
    // (rule 1) evicts the oldest live one. Their slots named other agents.
    let slot3 = w.tracker.slot_of(3).unwrap();
    w.frame(20, 9, [10, 9, 9, 9], 1, Status::Ok);
    assert_eq!(w.tracker.slot_of(9), Some(slot3), "slot reused");
    assert_eq!(w.tracker.slot_of(3), None);
    w.frame(20, 10, ip(10 + 1), 1, Status::Ok);
    assert_eq!(w.tracker.len(), 8);
    let s = w.snapshot(&mut sn, 3);
    w.check(&s);
    assert!(s.find(3).is_none());
    assert_eq!(s.find(9).and_then(|r| r.rule()), Some(0));
    assert_eq!(s.find(10).and_then(|r| r.rule()), Some(1));

    // A new life: pid 6 silent past the threshold, then a new session
    // with a lower nonce, now from outside 10/8 (rule 1); the others
    // stall meanwhile (rule thresholds 2 s and 3 s).
    w.frame(10_000, 6, [172, 16, 0, 1], 1, Status::Ok);
    let s = w.snapshot(&mut sn, 2);
    w.check(&s);
    assert_eq!(
        s.find(6).and_then(|r| r.rule()),
        Some(1),
        "renamed by its new life"
    );
    assert_eq!(s.find(6).and_then(|r| r.nonce()), Some(1));
    assert!(s.records().any(|r| r.state() == SlotState::Stalled));
    // A Unix-socket agent evicts one (every slot is named): unnamed
    // until the identity thread answers.
    assert!(s.records().all(|r| r.identity().is_some()));
    w.uds(10_001, 4_000_000);
    assert_eq!(w.tracker.len(), 8, "a slot was reused");
    let s = w.snapshot(&mut sn, 3);
    w.check(&s);
    assert_eq!(s.find(4_000_000).map(|r| r.identity()), Some(None));
    // Dropped, the buffer goes back to the pool for the next snapshot.
    drop(s);
    assert!(sn
        .pool
        .take()
        .is_some_and(|b| b.generation == 8 && b.records.len() == 8));
    let s = w.snapshot(&mut sn, CHUNK);
    w.check(&s);
}

/// One thing that happens to the agents between or during snapshots.
#[derive(Clone, Debug)]
enum Op {
    /// A UDP beat of pid (1..=24) from 10/8 or elsewhere; `back` sends a
    /// lower nonce than the last (a new life attempt).
    Beat { pid: u32, inside: bool, back: bool },
    /// A terminal frame.
    Exit { pid: u32 },
    /// A Unix-socket beat (identity never resolved here).
    Uds { pid: u32 },
    /// Time passes (agents stall).
    Wait { ms: u64 },
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        6 => (1u32..=24, any::<bool>(), proptest::bool::weighted(0.1))
            .prop_map(|(pid, inside, back)| Op::Beat { pid, inside, back }),
        1 => (1u32..=24).prop_map(|pid| Op::Exit { pid }),
        1 => (1u32..=4).prop_map(|pid| Op::Uds { pid: 4_000_000 + pid }),
        1 => (1u64..4_000).prop_map(|ms| Op::Wait { ms }),
    ]
}

struct Driver {
    w: World,
    now_ms: u64,
    nonce: std::collections::HashMap<u32, u64>,
}

impl Driver {
    fn apply(&mut self, op: &Op) {
        self.now_ms += 1;
        match *op {
            Op::Beat { pid, inside, back } => {
                let n = self.nonce.entry(pid).or_insert(0);
                *n = if back {
                    n.saturating_sub(1).max(1)
                } else {
                    *n + 1
                };
                let ip = if inside {
                    [10, 1, 2, 3]
                } else {
                    [192, 168, 1, 1]
                };
                let (now, n) = (self.now_ms, *n);
                self.w.frame(now, pid, ip, n, Status::Ok);
            }
            Op::Exit { pid } => {
                let now = self.now_ms;
                self.w.frame(
                    now,
                    pid,
                    [10, 1, 2, 3],
                    varta_vlp::NONCE_TERMINAL,
                    Status::Critical,
                );
            }
            Op::Uds { pid } => {
                let now = self.now_ms;
                self.w.uds(now, pid);
            }
            Op::Wait { ms } => {
                self.now_ms += ms;
                let now = self.now_ms;
                self.w.tracker.expire(now * MS, &mut self.w.bus);
                self.w
                    .policy
                    .on_wake(now * MS, &mut self.w.tracker, &mut self.w.bus);
                self.w.bus.end_of_batch(now * MS);
            }
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

    /// Copies of changes only never miss one: whatever happened between
    /// and during snapshots (admissions, beats, exits, stalls, evictions,
    /// slot reuse, new lives, renaming, snapshots kept by slow readers),
    /// a snapshot taken with nothing happening during its copy equals the
    /// tracker and the names exactly — through both alternating buffers.
    #[test]
    fn copies_of_changes_equal_a_full_copy(
        rounds in proptest::collection::vec(
            (
                proptest::collection::vec(op(), 0..30),
                proptest::collection::vec(op(), 0..6),
                1usize..6,
                proptest::prelude::any::<bool>(),
            ),
            1..12,
        )
    ) {
        let mut d = Driver { w: world(12), now_ms: 0, nonce: Default::default() };
        let mut sn = Snapper::default();
        let mut held = Vec::new();
        for (between, during, chunk, keep) in rounds {
            for (k, o) in between.iter().enumerate() {
                d.apply(o);
                if k % 7 == 6 {
                    // A background sync between snapshots (the loop's
                    // maintain() once enough changes are pending).
                    let names = d.w.policy.names();
                    sn.mirror.sync(&mut d.w.tracker, &names, &mut sn.changes.current);
                }
            }
            // A snapshot with things happening between its chunks: not
            // exact, but it must leave the buffers consistent.
            let names = d.w.policy.names();
            let mut c = Copier::with_chunk(
                &mut sn.mirror,
                &mut sn.changes,
                &sn.pool,
                &mut d.w.tracker,
                &names,
                chunk,
            );
            let mut ops = during.iter();
            while !c.step(&sn.mirror) {
                if let Some(o) = ops.next() {
                    d.apply(o);
                }
            }
            let s = c.finish(&d.w.tracker, |_| Extras::default(), 0);
            if keep {
                // A reader still holds it: the next copy gets no buffer
                // back and must copy every slot.
                held.push(s);
            } else {
                drop(s);
            }
            for _ in 0..2 {
                let s = d.w.snapshot(&mut sn, chunk);
                d.w.check(&s);
            }
            if held.len() > 2 {
                held.clear();
            }
        }
    }
}

/// Whole words of changed slots take the streaming copy, a change set of
/// more than half the slots becomes a full copy, and both stay exact. As
/// in the daemon, the newest snapshot stays published while the next is
/// copied, so two buffers alternate.
#[test]
fn dense_changes_stream_and_switch_to_full_copies() {
    let mut w = world(300);
    let mut sn = Snapper::default();
    let mut published = None;
    let mut next = |w: &mut World, sn: &mut Snapper| {
        let s = std::sync::Arc::new(w.snapshot(sn, 50));
        w.check(&s);
        published = Some(s.clone());
        (s.full, s.copied)
    };
    for pid in 1..=300 {
        w.frame(0, pid, [10, 0, 0, 1], 1, Status::Ok);
    }
    assert_eq!(next(&mut w, &mut sn), (true, 300), "no buffer yet");
    assert_eq!(next(&mut w, &mut sn), (true, 300), "the first is held");
    assert_eq!(next(&mut w, &mut sn), (false, 0), "nothing changed");
    // 100 changed slots (a whole word and some) since the buffer the
    // next snapshot reuses.
    let beat = |w: &mut World, pids: std::ops::RangeInclusive<u32>, nonce| {
        for pid in pids {
            w.frame(nonce, pid, [10, 0, 0, 1], nonce, Status::Degraded);
        }
    };
    beat(&mut w, 1..=100, 2);
    assert_eq!(next(&mut w, &mut sn), (false, 100));
    // The other buffer is two intervals behind: those 100 and 40 more.
    beat(&mut w, 101..=140, 2);
    assert_eq!(next(&mut w, &mut sn), (false, 140));
    beat(&mut w, 141..=160, 2);
    assert_eq!(next(&mut w, &mut sn), (false, 60));
    beat(&mut w, 161..=260, 2);
    assert_eq!(next(&mut w, &mut sn), (false, 120));
    // 100 + 70 of 300 changed since the next buffer: past half, a full
    // copy reads faster.
    beat(&mut w, 261..=300, 2);
    beat(&mut w, 1..=30, 3);
    assert_eq!(next(&mut w, &mut sn), (true, 300), "170 of 300 changed");
}
