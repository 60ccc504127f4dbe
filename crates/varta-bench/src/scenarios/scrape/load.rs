//! The UDP load: one separate process (the hidden `scrape-load`
//! subcommand) that beats for many agents at once over plaintext UDP, so an
//! observer can track 100 k agents on a machine whose `pid_max` is 32768.
//!
//! Every agent is a pid with its own nonce, 1 for its first beat and one
//! more every round; its 32-byte frame (status ok, the send time as the
//! timestamp) goes to its observer's UDP port in `sendmmsg` batches over a
//! connected socket. Plaintext UDP carries no kernel attestation, so the
//! pids need not be live processes: the observers take the frame's pid as
//! is (origin `network_unverified`). Each round of `interval` is cut into
//! 10 ms ticks and every agent beats in the same tick of every round, so
//! the beats of a round are spread evenly and each agent beats every
//! `interval` exactly (absolute schedule: a late tick is caught up, not
//! skipped, and the lag is reported).

use std::io::{IoSlice, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use nix::sys::socket::{sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrIn};
use serde::{Deserialize, Serialize};
use varta_vlp::{Frame, Status, FRAME_LEN};

use crate::procs::{monotonic_ns, ChildGuard, Res};

/// Length of one tick of the schedule.
const TICK: Duration = Duration::from_millis(10);

/// Datagrams per `sendmmsg` call.
const BATCH: usize = 256;

/// A tick that starts later than this after its due time counts as late.
const LATE: Duration = Duration::from_millis(50);

/// Agents `first_pid .. first_pid + count` beating the UDP port `addr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    pub first_pid: u32,
    pub count: u32,
}

impl FromStr for Target {
    type Err = String;

    /// `IP:PORT,FIRST_PID,COUNT`.
    fn from_str(s: &str) -> Result<Target, String> {
        let mut it = s.split(',');
        let (Some(a), Some(f), Some(n), None) = (it.next(), it.next(), it.next(), it.next()) else {
            return Err(format!("{s:?}: expected IP:PORT,FIRST_PID,COUNT"));
        };
        let t = Target {
            addr: a.parse().map_err(|e| format!("{a:?}: {e}"))?,
            first_pid: f.parse().map_err(|e| format!("{f:?}: {e}"))?,
            count: n.parse().map_err(|e| format!("{n:?}: {e}"))?,
        };
        if t.first_pid < 2 || t.first_pid.checked_add(t.count).is_none() {
            return Err(format!("{s:?}: pids must lie in 2..=u32::MAX"));
        }
        Ok(t)
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{},{},{}", self.addr, self.first_pid, self.count)
    }
}

/// Arguments of the hidden `scrape-load` subcommand.
#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// IP:PORT,FIRST_PID,COUNT: COUNT agents, pids from FIRST_PID, beating
    /// that UDP port; repeatable.
    #[arg(long = "target", required = true)]
    pub targets: Vec<Target>,
    /// Every agent beats once per this many ms.
    #[arg(long)]
    pub interval_ms: u64,
    /// Sender threads; each takes an equal share of every target's agents.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
}

/// What the load process measured, printed by it as one JSON line.
#[derive(Default, Serialize, Deserialize, Clone, Debug)]
pub struct LoadStats {
    pub secs: f64,
    /// Datagrams handed to the kernel, per target (in `--target` order).
    pub sent: Vec<u64>,
    /// Failed `sendmmsg` calls (e.g. ECONNREFUSED once an observer is gone).
    pub send_errors: u64,
    /// Ticks of all threads, and those that started more than 50 ms late.
    pub ticks: u64,
    pub late_ticks: u64,
    /// Largest delay of a tick behind its schedule, ms.
    pub max_lag_ms: f64,
    /// CPU the load process used (user + system), seconds; filled in by
    /// the harness from /proc.
    #[serde(default)]
    pub cpu_secs: f64,
}

impl LoadStats {
    fn merge(&mut self, o: &LoadStats) {
        if self.sent.len() < o.sent.len() {
            self.sent.resize(o.sent.len(), 0);
        }
        for (a, b) in self.sent.iter_mut().zip(&o.sent) {
            *a += b;
        }
        self.send_errors += o.send_errors;
        self.ticks += o.ticks;
        self.late_ticks += o.late_ticks;
        self.max_lag_ms = self.max_lag_ms.max(o.max_lag_ms);
    }
}

/// One thread's share of one target: agents `first .. first + n`.
struct Share {
    sock: UdpSocket,
    first: u32,
    n: u32,
}

/// Agents `[lo, hi)` of `n` beat in slot `slot` of `slots`.
fn slot_range(n: u32, slot: u64, slots: u64) -> (u32, u32) {
    let at = |s: u64| (u64::from(n) * s / slots) as u32;
    (at(slot), at(slot + 1))
}

/// The `scrape-load` process: beats until stdin closes, then one JSON line
/// of [`LoadStats`] on stdout.
pub fn load(a: &LoadArgs) -> Res<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
    if nix::unistd::getppid() == nix::unistd::Pid::from_raw(1) {
        return Ok(());
    }
    let threads = a.threads.max(1);
    let interval = Duration::from_millis(a.interval_ms.max(TICK.as_millis() as u64));
    let slots = (interval.as_nanos() / TICK.as_nanos()).max(1) as u64;
    let tick = interval / slots as u32;
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..threads {
        let mut shares = Vec::new();
        for g in &a.targets {
            let (lo, hi) = slot_range(g.count, t as u64, threads as u64);
            let sock = UdpSocket::bind(if g.addr.is_ipv4() {
                "127.0.0.1:0"
            } else {
                "[::1]:0"
            })?;
            sock.connect(g.addr)?;
            shares.push(Share {
                sock,
                first: g.first_pid + lo,
                n: hi - lo,
            });
        }
        let stop = stop.clone();
        handles.push(std::thread::spawn(move || {
            beat_loop(&shares, start, tick, slots, &stop)
        }));
    }
    let mut out = std::io::stdout().lock();
    out.write_all(b"R")?;
    out.flush()?;
    let mut byte = [0u8; 1];
    let _ = std::io::stdin().read(&mut byte);
    stop.store(true, Ordering::Relaxed);
    let mut total = LoadStats {
        sent: vec![0; a.targets.len()],
        ..LoadStats::default()
    };
    for h in handles {
        let s = h.join().map_err(|_| "a load thread panicked")?;
        total.merge(&s);
    }
    total.secs = start.elapsed().as_secs_f64();
    writeln!(out, "{}", serde_json::to_string(&total)?)?;
    out.flush()?;
    Ok(())
}

/// One sender thread: tick `k` is due at `start + k·tick`; in it, every
/// share's agents of slot `k mod slots` beat with nonce `k / slots + 1`.
fn beat_loop(
    shares: &[Share],
    start: Instant,
    tick: Duration,
    slots: u64,
    stop: &AtomicBool,
) -> LoadStats {
    let mut st = LoadStats {
        sent: vec![0; shares.len()],
        ..LoadStats::default()
    };
    let mut frames: Vec<[u8; FRAME_LEN]> = Vec::with_capacity(BATCH);
    let mut headers = MultiHeaders::<SockaddrIn>::preallocate(BATCH, None);
    let no_addrs = [None::<SockaddrIn>; BATCH];
    let mut k: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let due = start + tick * k as u32;
        let now = Instant::now();
        match due.checked_duration_since(now) {
            Some(wait) => std::thread::sleep(wait),
            None => {
                let lag = now - due;
                st.max_lag_ms = st.max_lag_ms.max(lag.as_secs_f64() * 1e3);
                if lag > LATE {
                    st.late_ticks += 1;
                }
            }
        }
        let nonce = k / slots + 1;
        let ts = monotonic_ns();
        for (si, sh) in shares.iter().enumerate() {
            let (lo, hi) = slot_range(sh.n, k % slots, slots);
            let mut i = lo;
            while i < hi {
                let end = hi.min(i + BATCH as u32);
                frames.clear();
                frames.extend(
                    (i..end).map(|j| Frame::new(Status::Ok, sh.first + j, ts, nonce, 0).to_bytes()),
                );
                let (sent, failed) = send_all(&sh.sock, &mut headers, &frames, &no_addrs);
                st.sent[si] += sent;
                st.send_errors += failed;
                i = end;
            }
        }
        st.ticks += 1;
        k += 1;
    }
    st
}

/// Sends every frame with `sendmmsg` (resuming after a partial send);
/// returns (datagrams sent, failed calls). A failed call skips the rest of
/// the batch: the error (ECONNREFUSED, ENOBUFS) is about the socket, not
/// one datagram.
fn send_all(
    sock: &UdpSocket,
    headers: &mut MultiHeaders<SockaddrIn>,
    frames: &[[u8; FRAME_LEN]],
    no_addrs: &[Option<SockaddrIn>],
) -> (u64, u64) {
    let mut done = 0;
    let mut sent = 0u64;
    while done < frames.len() {
        let iovs: Vec<[IoSlice<'_>; 1]> =
            frames[done..].iter().map(|f| [IoSlice::new(f)]).collect();
        match sendmmsg(
            sock.as_raw_fd(),
            headers,
            &iovs,
            no_addrs,
            [] as [ControlMessage<'_>; 0],
            MsgFlags::empty(),
        ) {
            Ok(r) => {
                let n = r.count();
                if n == 0 {
                    return (sent, 1);
                }
                sent += n as u64;
                done += n;
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return (sent, 1),
        }
    }
    (sent, 0)
}

/// A running load process; [`UdpLoad::stop`] closes its stdin and reads
/// its stats.
pub(super) struct UdpLoad {
    guard: ChildGuard,
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
}

impl UdpLoad {
    pub(super) fn start(
        exe: &std::path::Path,
        targets: &[Target],
        interval_ms: u64,
        threads: usize,
    ) -> Res<UdpLoad> {
        let mut cmd = Command::new(exe);
        cmd.arg("scrape-load")
            .args(["--interval-ms", &interval_ms.to_string()])
            .args(["--threads", &threads.to_string()]);
        for t in targets {
            cmd.args(["--target", &t.to_string()]);
        }
        let child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start the UDP load ({}): {e}", exe.display()))?;
        let mut guard = ChildGuard { child };
        let stdin = guard.child.stdin.take();
        let mut stdout = guard.child.stdout.take();
        let mut byte = [0u8; 1];
        let ready = stdout
            .as_mut()
            .is_some_and(|o| o.read_exact(&mut byte).is_ok());
        if !ready {
            return Err("the UDP load process exited before starting".into());
        }
        Ok(UdpLoad {
            guard,
            stdin,
            stdout,
        })
    }

    pub(super) fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// An error if the load process has exited.
    pub(super) fn check_running(&mut self) -> Res<()> {
        match self.guard.child.try_wait() {
            Ok(Some(status)) => Err(format!("the UDP load process exited ({status})").into()),
            _ => Ok(()),
        }
    }

    pub(super) fn stop(mut self) -> Res<LoadStats> {
        let cpu = cpu_secs(self.guard.pid());
        drop(self.stdin.take());
        let mut text = String::new();
        if let Some(o) = self.stdout.as_mut() {
            o.read_to_string(&mut text)?;
        }
        let _ = self.guard.child.wait();
        let mut s: LoadStats = serde_json::from_str(text.trim())
            .map_err(|e| format!("the UDP load process reported garbage ({e}): {text:?}"))?;
        s.cpu_secs = cpu.unwrap_or(f64::NAN);
        Ok(s)
    }
}

/// utime + stime of a live process, seconds (all its threads).
pub(super) fn cpu_secs(pid: u32) -> Option<f64> {
    let ticks = crate::udpload::stat_ticks(&format!("/proc/{pid}/stat")).ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100);
    Some(ticks as f64 / hz as f64)
}

/// Datagrams the kernel dropped at the full receive queue of the UDP
/// socket bound to 127.0.0.1:`port`: beats lost because the observer did
/// not read them in time.
pub(super) fn udp_drops(port: u16) -> Option<u64> {
    crate::udpload::udp_stat(port)
        .ok()
        .flatten()
        .map(|s| s.drops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_cover_every_agent_once() {
        for (n, slots) in [(100_000u32, 100u64), (7, 100), (3762, 200), (0, 5)] {
            let mut next = 0;
            for s in 0..slots {
                let (lo, hi) = slot_range(n, s, slots);
                assert_eq!(lo, next);
                assert!(hi >= lo);
                next = hi;
            }
            assert_eq!(next, n);
        }
    }

    #[test]
    fn parses_targets() {
        let t: Target = "127.0.0.1:9000,5000000,100000".parse().unwrap();
        assert_eq!(t.first_pid, 5_000_000);
        assert_eq!(t.to_string().parse::<Target>().unwrap(), t);
        assert!("127.0.0.1:9000,1,5".parse::<Target>().is_err());
        assert!("127.0.0.1:9000,5".parse::<Target>().is_err());
    }

    #[test]
    fn beats_reach_a_socket_in_order() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        let shares = [Share {
            sock: tx,
            first: 1000,
            n: 3,
        }];
        let stop = AtomicBool::new(false);
        let start = Instant::now();
        // Two rounds of one slot each, then stop.
        std::thread::scope(|s| {
            let h = s.spawn(|| beat_loop(&shares, start, Duration::from_millis(20), 1, &stop));
            std::thread::sleep(Duration::from_millis(30));
            stop.store(true, Ordering::Relaxed);
            let st = h.join().unwrap();
            assert_eq!(st.sent[0], 3 * st.ticks);
            assert!(st.ticks >= 2);
        });
        let mut got = Vec::new();
        let mut buf = [0u8; FRAME_LEN];
        for _ in 0..6 {
            rx.recv(&mut buf).unwrap();
            let f = Frame::decode(&buf).unwrap();
            got.push((f.nonce, f.pid));
        }
        assert_eq!(
            got,
            [
                (1, 1000),
                (1, 1001),
                (1, 1002),
                (2, 1000),
                (2, 1001),
                (2, 1002)
            ]
        );
    }
}
