//! The watchdog thread: judges the event loop by its iteration counter
//! and, while the loop is alive, pings systemd (`WATCHDOG=1`), sends
//! `STATUS=` and rewrites the heartbeat file; when the loop has been stuck
//! for `--self-watchdog-secs`, aborts the process.
//!
//! Everything here runs off the detection path: a slow disk under the
//! heartbeat file or a backed-up notify socket never delays the loop, and a
//! wedged loop — whatever wedged it — stops the pings and the heartbeat.

use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::heartbeat::HeartbeatFile;
use super::notify::Notifier;
use super::{LoopHealth, Progress};

/// The heartbeat file is rewritten at most this often.
const HEARTBEAT_EVERY: Duration = Duration::from_millis(100);
/// How often the thread wakes when it only forwards `STATUS=`.
const STATUS_POLL: Duration = Duration::from_secs(1);
/// Notification failures are logged at most this often.
const NOTIFY_LOG_EVERY: Duration = Duration::from_secs(10);

/// What the watchdog thread does.
#[derive(Debug, Default)]
pub struct Plan {
    /// Where `STATUS=` and `WATCHDOG=1` go.
    pub notifier: Option<Arc<Notifier>>,
    /// `WATCHDOG=1` is sent at this period (half of `$WATCHDOG_USEC`).
    pub ping_every: Option<Duration>,
    /// Abort when the loop has not ticked for this long.
    pub self_watchdog: Option<Duration>,
    /// `--heartbeat-file`.
    pub heartbeat: Option<PathBuf>,
}

impl Plan {
    /// Whether the thread has anything to do.
    pub fn is_empty(&self) -> bool {
        self.notifier.is_none() && self.self_watchdog.is_none() && self.heartbeat.is_none()
    }

    /// Whether anything here judges the loop by its ticks (and so needs
    /// the loop to tick while idle). `STATUS=` alone does not.
    pub fn needs_ticks(&self) -> bool {
        self.ping_every.is_some() || self.self_watchdog.is_some() || self.heartbeat.is_some()
    }
}

/// The running watchdog thread. [`Supervisor::stop`] ends it.
pub struct Supervisor {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Supervisor {
    /// Starts the thread. `tick` is the loop's liveness tick: the thread
    /// wakes as often, so every judgement is at most one tick late.
    pub fn start(
        plan: Plan,
        health: Arc<LoopHealth>,
        tick: Duration,
    ) -> std::io::Result<Supervisor> {
        let (stop, stopped) = mpsc::channel::<()>();
        let period = if plan.needs_ticks() {
            tick
        } else {
            STATUS_POLL
        };
        let thread = std::thread::Builder::new()
            .name("varta-watchdog".into())
            .spawn(move || Watch::new(plan, health, period).run(&stopped))?;
        Ok(Supervisor {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it, so nothing (e.g. a stray
    /// `WATCHDOG=1` after `STOPPING=1`) is sent once this returns.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        // Dropping the sender wakes the thread's recv_timeout at once.
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Thread state.
struct Watch {
    plan: Plan,
    health: Arc<LoopHealth>,
    period: Duration,
    progress: Progress,
    alive_window: Duration,
    next_ping: Instant,
    heartbeat: Option<HeartbeatFile>,
    heartbeat_written: Option<u64>,
    next_heartbeat: Instant,
    heartbeat_log_after: Instant,
    status_sent: u64,
    notify_log_after: Instant,
    /// Rounds done, for the `fault-injection` hook.
    #[cfg(feature = "fault-injection")]
    rounds: u64,
}

impl Watch {
    fn new(plan: Plan, health: Arc<LoopHealth>, period: Duration) -> Watch {
        let now = Instant::now();
        let heartbeat = plan.heartbeat.as_deref().map(HeartbeatFile::new);
        Watch {
            progress: Progress::new(&health, now),
            alive_window: health.alive_window(),
            health,
            period,
            next_ping: now,
            heartbeat,
            heartbeat_written: None,
            next_heartbeat: now,
            heartbeat_log_after: now,
            status_sent: 0,
            notify_log_after: now,
            #[cfg(feature = "fault-injection")]
            rounds: 0,
            plan,
        }
    }

    fn run(mut self, stopped: &mpsc::Receiver<()>) {
        loop {
            match stopped.recv_timeout(self.period) {
                Err(RecvTimeoutError::Timeout) => {}
                // Stop requested (sender dropped) or an explicit message.
                _ => return,
            }
            #[cfg(feature = "fault-injection")]
            {
                super::fault::maybe_stop_watchdog(self.rounds);
                self.rounds += 1;
            }
            self.round(Instant::now());
        }
    }

    fn round(&mut self, now: Instant) {
        let stuck = self.progress.stuck_for(&self.health, now);
        if let Some(limit) = self.plan.self_watchdog {
            if stuck >= limit {
                tracing::error!(
                    stuck_ms = stuck.as_millis() as u64,
                    limit_secs = limit.as_secs(),
                    iterations = self.health.iterations(),
                    "self-watchdog: the event loop has been stuck for {:.1} s (limit {} s); aborting",
                    stuck.as_secs_f64(),
                    limit.as_secs()
                );
                std::process::abort();
            }
        }
        if stuck >= self.alive_window {
            // Wedged (or not scheduled): no ping, no heartbeat, no status.
            // systemd's watchdog and external heartbeat readers see it.
            return;
        }
        if let (Some(every), Some(n)) = (self.plan.ping_every, &self.plan.notifier) {
            if now >= self.next_ping {
                self.next_ping = now + every;
                let r = n.send("WATCHDOG=1");
                self.report_notify(now, r);
            }
        }
        if let Some(n) = &self.plan.notifier {
            let (seq, [live, stalled, exited]) = self.health.agent_counts();
            if seq != self.status_sent {
                self.status_sent = seq;
                let r = n.send(&status_line(live, stalled, exited));
                self.report_notify(now, r);
            }
        }
        self.write_heartbeat(now);
    }

    fn write_heartbeat(&mut self, now: Instant) {
        let Some(hb) = &self.heartbeat else { return };
        let n = self.health.iterations();
        // Only a loop that moved since the last write is news.
        if now < self.next_heartbeat || self.heartbeat_written == Some(n) {
            return;
        }
        self.next_heartbeat = now + HEARTBEAT_EVERY;
        self.heartbeat_written = Some(n);
        if let Err(e) = hb.write(n, self.health.last_tick_ns()) {
            if now >= self.heartbeat_log_after {
                self.heartbeat_log_after = now + NOTIFY_LOG_EVERY;
                tracing::error!(file = %hb.path().display(), error = %e, "cannot write the heartbeat file");
            }
        }
    }

    fn report_notify(&mut self, now: Instant, r: std::io::Result<()>) {
        if let Err(e) = r {
            if now >= self.notify_log_after {
                self.notify_log_after = now + NOTIFY_LOG_EVERY;
                let target = self.plan.notifier.as_ref().map(|n| n.target().to_string());
                tracing::warn!(notify_socket = target.unwrap_or_default(), error = %e, "cannot notify systemd");
            }
        }
    }
}

/// The one-line `STATUS=` summary.
pub fn status_line(live: u32, stalled: u32, exited: u32) -> String {
    let tracked = u64::from(live) + u64::from(stalled) + u64::from(exited);
    format!("STATUS=tracking {tracked} agents: {live} alive, {stalled} stalled, {exited} exited")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ObserverClock;
    use crate::config::ClockSource;
    use std::os::unix::net::UnixDatagram;

    fn health() -> Arc<LoopHealth> {
        let clock = ObserverClock::new(ClockSource::Monotonic);
        Arc::new(LoopHealth::new(&clock, ClockSource::Monotonic))
    }

    fn recv_all(rx: &UnixDatagram) -> Vec<String> {
        rx.set_nonblocking(true).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(n) = rx.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }

    #[test]
    fn pings_status_and_heartbeat_only_while_the_counter_moves() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("notify.sock");
        let rx = UnixDatagram::bind(&sock).unwrap();
        let hb_path = dir.path().join("hb");
        let h = health();
        let plan = Plan {
            notifier: Some(Arc::new(Notifier::new(sock.as_os_str()).unwrap())),
            ping_every: Some(Duration::from_millis(100)),
            self_watchdog: None,
            heartbeat: Some(hb_path.clone()),
        };
        let t0 = Instant::now();
        let mut w = Watch::new(plan, h.clone(), Duration::from_millis(250));
        h.publish_counts((2, 1, 0));
        h.tick(1_000);
        w.round(t0 + Duration::from_millis(10));
        assert_eq!(
            recv_all(&rx),
            [
                "WATCHDOG=1",
                "STATUS=tracking 3 agents: 2 alive, 1 stalled, 0 exited"
            ]
        );
        assert_eq!(std::fs::read_to_string(&hb_path).unwrap(), "1 1000\n");

        // Alive (ticked recently) but inside the ping period and the
        // heartbeat spacing: nothing new.
        h.tick(2_000);
        w.round(t0 + Duration::from_millis(50));
        assert!(recv_all(&rx).is_empty());
        assert_eq!(std::fs::read_to_string(&hb_path).unwrap(), "1 1000\n");

        h.tick(3_000);
        w.round(t0 + Duration::from_millis(200));
        assert_eq!(recv_all(&rx), ["WATCHDOG=1"]);
        assert_eq!(std::fs::read_to_string(&hb_path).unwrap(), "3 3000\n");

        // The counter stops: past the alive window, no more pings or writes.
        let later = t0 + Duration::from_millis(200) + w.alive_window;
        w.round(later);
        w.round(later + Duration::from_millis(500));
        assert!(recv_all(&rx).is_empty());
        assert_eq!(std::fs::read_to_string(&hb_path).unwrap(), "3 3000\n");
    }

    #[test]
    fn supervisor_thread_stops_promptly() {
        let h = health();
        let plan = Plan {
            self_watchdog: Some(Duration::from_secs(3600)),
            ..Plan::default()
        };
        assert!(plan.needs_ticks() && !plan.is_empty());
        let s = Supervisor::start(plan, h, Duration::from_secs(30)).unwrap();
        let t = Instant::now();
        s.stop();
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn status_line_is_one_line() {
        assert_eq!(
            status_line(5, 2, 1),
            "STATUS=tracking 8 agents: 5 alive, 2 stalled, 1 exited"
        );
    }
}
