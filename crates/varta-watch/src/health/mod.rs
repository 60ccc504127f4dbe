//! The observer watching itself: a liveness record the event loop updates
//! on every iteration ([`LoopHealth`]), and everything that reads it —
//! systemd notifications ([`notify`]), the self-watchdog, the heartbeat
//! file (both on the watchdog thread, [`supervisor`]) and the hardware
//! watchdog kicked from the loop ([`hw`]).
//!
//! The loop is event-driven and may sleep indefinitely when idle, so an
//! idle loop would look wedged. When anything consumes liveness, the loop
//! also wakes on a *liveness tick* (`Pulse`); with no consumer it never
//! does, so an idle observer without watchdogs still costs nothing.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::time::{clock_gettime, ClockId};

use crate::clock::{kernel_clock, ObserverClock};
use crate::config::ClockSource;
use crate::tracker::Tracker;

#[cfg(feature = "fault-injection")]
pub(crate) mod fault;
mod heartbeat;
pub mod hw;
mod hw_sys;
pub mod notify;
pub mod supervisor;

/// Startup check of `--heartbeat-file`: its directory exists and it is not
/// a directory itself.
pub(crate) fn heartbeat_check(path: &std::path::Path) -> Result<(), String> {
    heartbeat::check(path)
}

/// Liveness tick when nothing asks for a faster one: an idle loop wakes 4
/// times a second, which keeps the heartbeat file and every "is it alive"
/// judgement within a second of the truth.
pub const DEFAULT_TICK: Duration = Duration::from_millis(250);
/// Fastest liveness tick, however short systemd's `WatchdogSec` is.
const MIN_TICK: Duration = Duration::from_millis(10);
/// The loop counts as alive while it ticked within this many ticks: room
/// for one late wake-up and one late observation on a busy machine.
const ALIVE_TICKS: u32 = 4;
/// `STATUS=` counts are published by the loop at most this often.
const STATUS_EVERY_NS: u64 = 1_000_000_000;

/// What the event loop tells the rest of the process about itself. Written
/// only by the loop; read by the watchdog thread and the HTTP server.
pub struct LoopHealth {
    iterations: AtomicU64,
    last_tick_ns: AtomicU64,
    /// The liveness tick in ns; 0 while the loop has no liveness deadline.
    tick_ns: AtomicU64,
    live: AtomicU32,
    stalled: AtomicU32,
    exited: AtomicU32,
    /// Bumped after each publication of the three counts above.
    status_seq: AtomicU64,
    clock: ClockId,
    origin_ns: u64,
}

fn read_ns(id: ClockId) -> u64 {
    // Both clocks exist on every supported kernel; 0 only freezes time.
    let ts = clock_gettime(id).unwrap_or_else(|_| nix::sys::time::TimeSpec::new(0, 0));
    (ts.tv_sec() as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec() as u64)
}

impl LoopHealth {
    /// A record on the same time axis as `clock` (observer ns since start).
    pub fn new(clock: &ObserverClock, source: ClockSource) -> LoopHealth {
        LoopHealth {
            iterations: AtomicU64::new(0),
            last_tick_ns: AtomicU64::new(0),
            tick_ns: AtomicU64::new(0),
            live: AtomicU32::new(0),
            stalled: AtomicU32::new(0),
            exited: AtomicU32::new(0),
            status_seq: AtomicU64::new(0),
            clock: kernel_clock(source),
            origin_ns: clock.to_kernel_ns(0),
        }
    }

    /// One loop iteration finished at observer time `now_ns`.
    #[inline]
    pub(crate) fn tick(&self, now_ns: u64) {
        // Time first, count second (Release): a reader that sees the new
        // count (Acquire) also sees a time at least as new.
        self.last_tick_ns.store(now_ns, Ordering::Relaxed);
        self.iterations.fetch_add(1, Ordering::Release);
    }

    /// Loop iterations completed since start.
    pub fn iterations(&self) -> u64 {
        self.iterations.load(Ordering::Acquire)
    }

    /// Observer time (ns since start) at which the last iteration finished.
    pub fn last_tick_ns(&self) -> u64 {
        self.last_tick_ns.load(Ordering::Relaxed)
    }

    /// Observer time now, on the loop's clock and origin.
    pub fn now_ns(&self) -> u64 {
        read_ns(self.clock).saturating_sub(self.origin_ns)
    }

    /// How long ago the last iteration finished (observer clock).
    pub fn since_last_tick(&self) -> Duration {
        Duration::from_nanos(self.now_ns().saturating_sub(self.last_tick_ns()))
    }

    /// The liveness tick the loop wakes on, if any consumer asked for one
    /// ([`crate::daemon::Daemon::need_liveness`]).
    pub fn liveness_tick(&self) -> Option<Duration> {
        match self.tick_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// Longest silence of a healthy loop: a few liveness ticks.
    pub fn alive_window(&self) -> Duration {
        self.liveness_tick().unwrap_or(DEFAULT_TICK) * ALIVE_TICKS
    }

    /// Whether the loop ticked within [`Self::alive_window`]. Meaningful
    /// only while the loop has a liveness tick (an idle loop without one
    /// legitimately sleeps for hours). With `--clock-source boottime` a
    /// resume from suspend reads "not alive" until the loop's first
    /// wake-up after it; [`Progress`] never does.
    pub fn is_alive(&self) -> bool {
        self.since_last_tick() < self.alive_window()
    }

    /// `(live, stalled, exited)` agents as last published by the loop, and
    /// the publication number (0: nothing published yet).
    pub fn agent_counts(&self) -> (u64, [u32; 3]) {
        let seq = self.status_seq.load(Ordering::Acquire);
        let counts = [
            self.live.load(Ordering::Relaxed),
            self.stalled.load(Ordering::Relaxed),
            self.exited.load(Ordering::Relaxed),
        ];
        (seq, counts)
    }

    fn publish_counts(&self, (live, stalled, exited): (u32, u32, u32)) {
        self.live.store(live, Ordering::Relaxed);
        self.stalled.store(stalled, Ordering::Relaxed);
        self.exited.store(exited, Ordering::Relaxed);
        self.status_seq.fetch_add(1, Ordering::Release);
    }

    fn set_tick(&self, tick: Option<Duration>) {
        let ns = tick.map_or(0, |t| u64::try_from(t.as_nanos()).unwrap_or(u64::MAX));
        self.tick_ns.store(ns, Ordering::Relaxed);
    }
}

/// Judges liveness by watching the iteration counter change, timed on
/// `CLOCK_MONOTONIC` ([`Instant`]) by the observing thread itself. Unlike
/// [`LoopHealth::since_last_tick`] it cannot misread a suspend under
/// `--clock-source boottime` as a wedge (monotonic time stops during
/// suspend), which matters to anything that aborts the process on it.
#[derive(Debug)]
pub struct Progress {
    seen: u64,
    changed_at: Instant,
}

impl Progress {
    /// Starts watching at `now`; the loop gets the benefit of the doubt.
    pub fn new(health: &LoopHealth, now: Instant) -> Progress {
        Progress {
            seen: health.iterations(),
            changed_at: now,
        }
    }

    /// How long the counter has not moved, as seen at `now`.
    pub fn stuck_for(&mut self, health: &LoopHealth, now: Instant) -> Duration {
        let n = health.iterations();
        if n != self.seen {
            self.seen = n;
            self.changed_at = now;
        }
        now.saturating_duration_since(self.changed_at)
    }
}

/// The liveness tick for a set of consumers: the default, or faster when
/// systemd's watchdog interval needs several ticks per ping.
pub(crate) fn tick_for(systemd_watchdog: Option<Duration>) -> Duration {
    // Pings go out every half interval and each needs a tick observed
    // within the alive window: 8 ticks per interval leave that margin.
    systemd_watchdog
        .map(|w| (w / 8).clamp(MIN_TICK, DEFAULT_TICK))
        .unwrap_or(DEFAULT_TICK)
}

/// The loop's side of liveness: bumps [`LoopHealth`] every iteration, and
/// on each liveness tick kicks the hardware watchdog and publishes agent
/// counts for `STATUS=`. Owned by the daemon; no syscalls but the kick.
pub(crate) struct Pulse {
    health: Arc<LoopHealth>,
    tick_ns: Option<u64>,
    next_ns: u64,
    hw: Option<hw::HwWatchdog>,
    /// Publish counts (someone sends `STATUS=`).
    status: bool,
    published: Option<(u32, u32, u32)>,
    status_next_ns: u64,
    /// Counts changed inside the 1 s window: publish at this time.
    status_pending: Option<u64>,
}

impl Pulse {
    /// No liveness tick, no hardware watchdog, no status until configured.
    pub(crate) fn new(health: Arc<LoopHealth>) -> Pulse {
        Pulse {
            health,
            tick_ns: None,
            next_ns: 0,
            hw: None,
            status: false,
            published: None,
            status_next_ns: 0,
            status_pending: None,
        }
    }

    /// Holds the opened hardware watchdog; it is kicked on every tick.
    pub(crate) fn set_hw(&mut self, hw: hw::HwWatchdog) {
        self.hw = Some(hw);
    }

    /// Whether a hardware watchdog is held (it needs a liveness tick).
    pub(crate) fn has_hw(&self) -> bool {
        self.hw.is_some()
    }

    /// Starts (or with `None` stops) the liveness tick and count publishing.
    pub(crate) fn configure(&mut self, tick: Option<Duration>, status: bool, now_ns: u64) {
        self.health.set_tick(tick);
        self.tick_ns = tick.map(|t| u64::try_from(t.as_nanos()).unwrap_or(u64::MAX));
        self.next_ns = now_ns;
        self.status = status;
    }

    /// Call once per loop iteration, after the iteration's work.
    #[inline]
    pub(crate) fn on_iteration(&mut self, now_ns: u64, tracker: &Tracker) {
        self.health.tick(now_ns);
        if let Some(tick) = self.tick_ns {
            if now_ns >= self.next_ns {
                self.next_ns = now_ns.saturating_add(tick);
                if let Some(hw) = &mut self.hw {
                    hw.kick(now_ns);
                }
            }
        }
        if self.status {
            let counts = tracker.counts();
            if self.published != Some(counts) {
                if now_ns >= self.status_next_ns {
                    self.health.publish_counts(counts);
                    self.published = Some(counts);
                    self.status_next_ns = now_ns.saturating_add(STATUS_EVERY_NS);
                    self.status_pending = None;
                } else {
                    self.status_pending = Some(self.status_next_ns);
                }
            }
        }
    }

    /// The next time the loop must wake for liveness or a pending status.
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        let tick = self.tick_ns.map(|_| self.next_ns);
        match (tick, self.status_pending) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Clean exit: writes the magic `V` so the hardware watchdog does not
    /// reset the host. Any other exit leaves it armed, on purpose.
    pub(crate) fn disarm_hw(&mut self) {
        if let Some(hw) = self.hw.take() {
            hw.disarm();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> Arc<LoopHealth> {
        let clock = ObserverClock::new(ClockSource::Monotonic);
        Arc::new(LoopHealth::new(&clock, ClockSource::Monotonic))
    }

    #[test]
    fn tick_counts_and_times_iterations() {
        let h = health();
        assert_eq!((h.iterations(), h.last_tick_ns()), (0, 0));
        h.tick(5);
        h.tick(9);
        assert_eq!((h.iterations(), h.last_tick_ns()), (2, 9));
        let now = h.now_ns();
        h.tick(now);
        assert!(h.since_last_tick() < Duration::from_secs(1));
        // No liveness tick configured: the default window applies.
        assert_eq!(h.alive_window(), DEFAULT_TICK * ALIVE_TICKS);
        assert!(h.is_alive());
    }

    #[test]
    fn progress_measures_time_since_the_counter_moved() {
        let h = health();
        let t0 = Instant::now();
        let mut p = Progress::new(&h, t0);
        assert_eq!(
            p.stuck_for(&h, t0 + Duration::from_secs(2)),
            Duration::from_secs(2)
        );
        h.tick(1);
        let t3 = t0 + Duration::from_secs(3);
        assert_eq!(p.stuck_for(&h, t3), Duration::ZERO);
        assert_eq!(
            p.stuck_for(&h, t3 + Duration::from_millis(700)),
            Duration::from_millis(700)
        );
    }

    #[test]
    fn tick_follows_systemd_interval() {
        assert_eq!(tick_for(None), DEFAULT_TICK);
        assert_eq!(tick_for(Some(Duration::from_secs(10))), DEFAULT_TICK);
        assert_eq!(
            tick_for(Some(Duration::from_millis(400))),
            Duration::from_millis(50)
        );
        assert_eq!(tick_for(Some(Duration::from_millis(1))), MIN_TICK);
    }

    #[test]
    fn pulse_wakes_only_when_configured_and_publishes_status_at_most_once_a_second() {
        use crate::events::{EventBus, Origin};
        use crate::tracker::{Incoming, NoProbe};
        const S: u64 = 1_000_000_000;
        let h = health();
        let mut p = Pulse::new(h.clone());
        let mut tracker = Tracker::new(crate::tracker::TrackerSettings {
            capacity: 4,
            threshold_ns: 100 * S,
            eviction: crate::config::EvictionPolicy::Strict,
            max_beat_rate: 0,
            global_beat_rate: 0,
            global_beat_burst: 0,
            own_pidns: 0,
            allow_cross_namespace: false,
        });
        let mut bus = EventBus::new();
        let mut beat = |t: &mut Tracker, pid: u32| {
            let frame = varta_vlp::Frame::new(varta_vlp::Status::Ok, pid, 0, 1, 0);
            let inc = Incoming {
                pid,
                frame,
                origin: Origin::KernelAttested,
                pidns: None,
                new_session: false,
                peer: None,
            };
            t.on_frame(0, inc, &mut NoProbe, &mut bus);
        };
        p.on_iteration(10, &tracker);
        assert_eq!(p.next_deadline(), None, "no consumer: no extra wake-ups");
        assert_eq!(h.iterations(), 1);
        assert_eq!(h.agent_counts().0, 0);

        p.configure(Some(Duration::from_millis(250)), true, 20);
        p.on_iteration(20, &tracker);
        assert_eq!(p.next_deadline(), Some(20 + 250_000_000));
        assert_eq!(h.agent_counts(), (1, [0, 0, 0]), "first counts published");
        assert_eq!(h.liveness_tick(), Some(Duration::from_millis(250)));

        // A change within the second is held back, with a deadline to
        // publish it at, and published when that comes.
        beat(&mut tracker, 7);
        p.on_iteration(S / 2, &tracker);
        assert_eq!(h.agent_counts().0, 1);
        assert_eq!(p.next_deadline(), Some(S / 2 + 250_000_000));
        p.on_iteration(S / 2 + 250_000_000, &tracker);
        assert_eq!(p.next_deadline(), Some(S), "the next tick is sooner");
        p.on_iteration(S, &tracker);
        assert_eq!(h.agent_counts().0, 1, "still inside the second");
        assert_eq!(p.next_deadline(), Some(S + 20), "the status is sooner");
        p.on_iteration(S + 20, &tracker);
        assert_eq!(h.agent_counts(), (2, [1, 0, 0]));
        // Unchanged counts are not re-published.
        p.on_iteration(5 * S, &tracker);
        assert_eq!(h.agent_counts().0, 2);
        assert_eq!(h.iterations(), 7);
        p.configure(None, false, 0);
        assert_eq!(h.liveness_tick(), None);
    }
}
