//! soak, the load: agents beating over plaintext UDP at a paced rate, some
//! dying every second (a terminal frame, then a fresh pid takes the slot)
//! and a few falling silent (no terminal frame: each must stall once).
//!
//! Frames are made as they fall due, not built beforehand: ten minutes at
//! 80 k/s would be 1.5 GB of datagrams. One agent is only ever sent from
//! one thread's one socket, so its frames reach the observer in the order
//! they were made (loopback UDP between two sockets keeps order) — a
//! terminal frame can never overtake a beat of the same agent and turn a
//! clean death into a `recovered` and a false `stall`.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::MultiHeaders;
use serde::Serialize;
use varta_vlp::{Frame, Status, FRAME_LEN, NONCE_TERMINAL};

use crate::udpload::{send_frames, thread_cpu_ns, BATCH};

/// First pid handed out. Above the kernel's `PID_MAX_LIMIT` (2^22), as the
/// `scrape` load: no agent shares a pid with a process, and the observer
/// indexes these pids in its hash map, which the tracker capacity bounds.
/// (Below 2^22 the index is a flat 16 MiB table whose pages are touched as
/// fresh pids climb through it — bounded, but first-touch growth that would
/// blur a leak test.)
pub(super) const FIRST_PID: u32 = 1 << 23;

#[derive(Clone, Copy, Debug)]
struct Agent {
    pid: u32,
    /// Last nonce sent (0: none yet).
    nonce: u64,
}

/// What one sender thread's agents do, as a function of elapsed time.
pub(super) struct Fleet {
    agents: Vec<Agent>,
    /// Pids of this fleet: `FIRST_PID + offset + k × step`, k = 0, 1, …
    next_pid: u32,
    step: u32,
    /// Beats per second of the whole fleet.
    beat_rate: f64,
    deaths_per_sec: f64,
    /// One agent falls silent every this long (None: never).
    silence_every: Option<Duration>,
    beats: u64,
    deaths: u64,
    silences: u64,
    /// Victims are slots `cursor, cursor + stride, …` (mod agents):
    /// stride coprime with the fleet size, so every slot is hit once per
    /// pass and a victim is never a pid that has just started.
    cursor: usize,
    stride: usize,
    /// Pids that sent their terminal frame, in order.
    pub(super) dead: Vec<u32>,
    /// Pids that fell silent without one.
    pub(super) silenced: Vec<u32>,
}

/// A step in `1..=n` coprime with `n`, near n × 0.618 (1 for n ≤ 2).
pub(super) fn coprime_stride(n: usize) -> usize {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    if n <= 2 {
        return 1;
    }
    let mut s = (n as f64 * 0.618) as usize;
    while gcd(s, n) != 1 {
        s -= 1;
    }
    s.max(1)
}

impl Fleet {
    /// Fleet `index` of `fleets`: `agents` agents (pids interleaved with
    /// the other fleets'), `hz` beats/s each.
    pub(super) fn new(
        index: u32,
        fleets: u32,
        agents: usize,
        hz: f64,
        deaths_per_sec: f64,
        silence_every: Option<Duration>,
    ) -> Fleet {
        let mut f = Fleet {
            agents: Vec::with_capacity(agents),
            next_pid: FIRST_PID + index,
            step: fleets,
            beat_rate: agents as f64 * hz,
            deaths_per_sec,
            silence_every,
            beats: 0,
            deaths: 0,
            silences: 0,
            cursor: 0,
            stride: coprime_stride(agents),
            dead: Vec::new(),
            silenced: Vec::new(),
        };
        for _ in 0..agents {
            let pid = f.fresh_pid();
            f.agents.push(Agent { pid, nonce: 0 });
        }
        f
    }

    fn fresh_pid(&mut self) -> u32 {
        let p = self.next_pid;
        self.next_pid += self.step;
        p
    }

    /// The next victim's slot; a fresh pid takes it over.
    fn replace_victim(&mut self) -> u32 {
        let slot = self.cursor;
        self.cursor = (self.cursor + self.stride) % self.agents.len();
        let old = self.agents[slot].pid;
        let pid = self.fresh_pid();
        self.agents[slot] = Agent { pid, nonce: 0 };
        old
    }

    /// Appends every frame due by `elapsed` to `out`, in the order they
    /// must reach the observer: deaths and silences first (the victim's
    /// slot then beats under its new pid), then beats round-robin over
    /// the slots.
    pub(super) fn step(&mut self, elapsed: Duration, out: &mut Vec<[u8; FRAME_LEN]>) {
        if self.agents.is_empty() {
            return;
        }
        let secs = elapsed.as_secs_f64();
        let deaths_due = (secs * self.deaths_per_sec) as u64;
        while self.deaths < deaths_due {
            self.deaths += 1;
            let slot = self.cursor;
            let a = self.agents[slot];
            out.push(terminal(a));
            self.dead.push(a.pid);
            self.replace_victim();
        }
        if let Some(every) = self.silence_every {
            let due = (secs / every.as_secs_f64()) as u64;
            while self.silences < due {
                self.silences += 1;
                let pid = self.replace_victim();
                self.silenced.push(pid);
            }
        }
        let beats_due = (secs * self.beat_rate) as u64;
        let n = self.agents.len() as u64;
        while self.beats < beats_due {
            let a = &mut self.agents[(self.beats % n) as usize];
            a.nonce += 1;
            out.push(Frame::new(Status::Ok, a.pid, a.nonce, a.nonce, 0).to_bytes());
            self.beats += 1;
        }
    }

    /// Every agent still beating sends its terminal frame (the end of the
    /// run: nothing may be left to stall).
    pub(super) fn shutdown(&mut self, out: &mut Vec<[u8; FRAME_LEN]>) {
        for a in std::mem::take(&mut self.agents) {
            out.push(terminal(a));
            self.dead.push(a.pid);
        }
    }

    #[cfg(test)]
    pub(super) fn beat_rate(&self) -> f64 {
        self.beat_rate
    }
}

/// The dying gasp: Critical with the terminal nonce (docs/protocol.md).
fn terminal(a: Agent) -> [u8; FRAME_LEN] {
    Frame::new(Status::Critical, a.pid, a.nonce + 1, NONCE_TERMINAL, 0).to_bytes()
}

/// What one sender thread did.
#[derive(Serialize, Default, Clone)]
pub(super) struct SenderReport {
    /// Datagrams the kernel accepted.
    pub(super) sent: u64,
    /// Failed `sendmmsg` calls, and datagrams given up after 100 failures.
    pub(super) errors: u64,
    pub(super) abandoned: u64,
    /// Longest gap between two pacing steps, ms (how far the thread fell
    /// behind its schedule at worst; a gap's frames go out in one burst).
    pub(super) max_gap_ms: f64,
    /// Thread CPU over its run / run time.
    pub(super) cpu_cores: f64,
    #[serde(skip)]
    pub(super) dead: Vec<u32>,
    #[serde(skip)]
    pub(super) silenced: Vec<u32>,
}

/// Sends `frames` in order in `sendmmsg` batches of [`BATCH`].
fn send_all(
    sock: &UdpSocket,
    headers: &mut MultiHeaders<()>,
    frames: &[[u8; FRAME_LEN]],
    r: &mut SenderReport,
    counter: &AtomicU64,
) {
    let mut pos = 0;
    let mut failures = 0;
    while pos < frames.len() {
        match send_frames(sock, headers, &frames[pos..]) {
            Ok(n) => {
                pos += n;
                r.sent += n as u64;
                counter.fetch_add(n as u64, Ordering::Relaxed);
                failures = 0;
            }
            Err(Errno::EINTR) => {}
            Err(_) => {
                r.errors += 1;
                failures += 1;
                if failures >= 100 {
                    // Skip one datagram rather than spin forever; counted,
                    // so the verdict can say a death may not have been sent.
                    r.abandoned += 1;
                    pos += 1;
                    failures = 0;
                }
            }
        }
    }
}

/// One sender thread: steps `fleet` from `start` until `duration` (or
/// `stop`), sleeping 200 µs between steps, then sends every remaining
/// agent's terminal frame.
pub(super) fn run_sender(
    sock: &UdpSocket,
    mut fleet: Fleet,
    start: Instant,
    duration: Duration,
    stop: &AtomicBool,
    counter: &AtomicU64,
) -> SenderReport {
    let cpu0 = thread_cpu_ns();
    let mut r = SenderReport::default();
    let mut headers = MultiHeaders::<()>::preallocate(BATCH, None);
    let mut frames = Vec::with_capacity(4096);
    let mut last = Duration::ZERO;
    while !stop.load(Ordering::Relaxed) {
        let el = start.elapsed().min(duration);
        r.max_gap_ms = r.max_gap_ms.max((el - last).as_secs_f64() * 1e3);
        last = el;
        frames.clear();
        fleet.step(el, &mut frames);
        send_all(sock, &mut headers, &frames, &mut r, counter);
        if el >= duration {
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    frames.clear();
    fleet.shutdown(&mut frames);
    send_all(sock, &mut headers, &frames, &mut r, counter);
    r.cpu_cores = (thread_cpu_ns() - cpu0) as f64 / start.elapsed().as_nanos().max(1) as f64;
    r.dead = fleet.dead;
    r.silenced = fleet.silenced;
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn decode(d: &[u8; FRAME_LEN]) -> Frame {
        Frame::decode(d).unwrap()
    }

    #[test]
    fn strides_are_coprime() {
        for n in 1..500 {
            let s = coprime_stride(n);
            let mut seen = vec![false; n];
            let mut c = 0;
            for _ in 0..n {
                seen[c] = true;
                c = (c + s) % n;
            }
            assert!(seen.iter().all(|&x| x), "n {n} stride {s}");
        }
    }

    #[test]
    fn fleet_keeps_every_agent_in_order_and_ends_with_one_terminal_frame() {
        // 100 agents at 10 Hz, 5 deaths/s, a silence every 2 s, over 10 s.
        let mut f = Fleet::new(1, 2, 100, 10.0, 5.0, Some(Duration::from_secs(2)));
        let mut out = Vec::new();
        for ms in (0..10_000).step_by(7).chain([10_000]) {
            f.step(Duration::from_millis(ms), &mut out);
        }
        assert_eq!(f.beat_rate(), 1000.0);
        f.shutdown(&mut out);
        let frames: Vec<Frame> = out.iter().map(decode).collect();
        let beats = frames.iter().filter(|x| !x.is_terminal()).count();
        assert_eq!(beats, 10_000);
        // 50 deaths + 100 at shutdown, 5 silences.
        assert_eq!(f.dead.len(), 150);
        assert_eq!(f.silenced.len(), 5);
        // Per pid: nonces 1, 2, 3, … and, for the dead, one terminal frame
        // after the last beat; nothing at all after it.
        let mut last: HashMap<u32, u64> = HashMap::new();
        let mut ended: HashMap<u32, bool> = HashMap::new();
        for x in &frames {
            assert_eq!((x.pid - FIRST_PID) % 2, 1, "fleet 1 of 2 owns odd offsets");
            assert!(
                !ended.get(&x.pid).copied().unwrap_or(false),
                "frame after terminal"
            );
            if x.is_terminal() {
                ended.insert(x.pid, true);
            } else {
                let n = last.entry(x.pid).or_insert(0);
                assert_eq!(x.nonce, *n + 1);
                *n = x.nonce;
            }
        }
        let mut dead = f.dead.clone();
        dead.sort_unstable();
        dead.dedup();
        assert_eq!(dead.len(), 150, "each pid dies once");
        for p in &f.dead {
            assert_eq!(ended.get(p), Some(&true));
        }
        for p in &f.silenced {
            assert!(
                !ended.contains_key(p),
                "a silenced agent sends no terminal frame"
            );
            assert!(last.contains_key(p), "and had beaten before");
            assert!(!f.dead.contains(p));
        }
    }

    #[test]
    fn rates_follow_elapsed_time() {
        let mut f = Fleet::new(0, 1, 10, 4.0, 2.0, None);
        let mut out = Vec::new();
        f.step(Duration::from_millis(2500), &mut out);
        // 100 beats and 5 deaths by 2.5 s.
        assert_eq!(out.len(), 105);
        out.clear();
        f.step(Duration::from_millis(2500), &mut out);
        assert!(out.is_empty(), "nothing is due twice");
    }
}
