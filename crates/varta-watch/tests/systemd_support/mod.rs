//! Shared by the systemd and watchdog tests: a real `NOTIFY_SOCKET`
//! (filesystem path or abstract name) that records every datagram with its
//! arrival time, and an observer started with a chosen environment.
#![allow(dead_code)]

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::{self, Observer, PATIENCE};

/// Every variable systemd hands a service; removed from each observer we
/// start unless the test sets it, so a test run under systemd is not
/// confused by the runner's own.
const SYSTEMD_VARS: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// A bound notification socket plus a thread that records what arrives.
pub struct NotifySocket {
    /// The value for `$NOTIFY_SOCKET`.
    pub env: String,
    messages: Arc<Mutex<Vec<(Instant, String)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl NotifySocket {
    /// A filesystem socket at `dir/notify.sock`.
    pub fn path(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind notify socket");
        Self::serve(sock, path.display().to_string())
    }

    /// An abstract-namespace socket, `@varta-test-<pid>-<n>`.
    pub fn abstract_name() -> NotifySocket {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "varta-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).expect("bind abstract notify socket");
        Self::serve(sock, format!("@{name}"))
    }

    fn serve(sock: UnixDatagram, env: String) -> NotifySocket {
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (messages.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !s.load(Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    m.lock().unwrap().push((Instant::now(), text));
                }
            }
        });
        NotifySocket {
            env,
            messages,
            stop,
            thread: Some(thread),
        }
    }

    /// Everything received so far, in order.
    pub fn messages(&self) -> Vec<(Instant, String)> {
        self.messages.lock().unwrap().clone()
    }

    /// Arrival times of datagrams holding the line `line`.
    pub fn times_of(&self, line: &str) -> Vec<Instant> {
        self.messages()
            .into_iter()
            .filter(|(_, m)| m.lines().any(|l| l == line))
            .map(|(t, _)| t)
            .collect()
    }

    /// Waits until `cond` holds over the messages, or fails naming `what`.
    pub fn wait_until(&self, what: &str, cond: impl Fn(&[(Instant, String)]) -> bool) {
        let start = Instant::now();
        while !cond(&self.messages()) {
            assert!(
                start.elapsed() < PATIENCE,
                "timed out waiting for {what}; received: {:?}",
                self.messages()
                    .into_iter()
                    .map(|(_, m)| m)
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the real binary in `dir` (also its working directory, so a
/// core dump from an abort stays inside the test's directory) with `args`,
/// the systemd variables in `env` and no others, and waits for it to
/// listen. Core dumps are disabled for it: the aborts are expected.
pub fn start_observer(dir: tempfile::TempDir, args: &[&str], env: &[(&str, &str)]) -> Observer {
    let socket = dir.path().join("obs.sock");
    let export = dir.path().join("events.tsv");
    let mut all = vec![
        "--socket".to_string(),
        socket.to_str().unwrap().to_string(),
        "--export-file".to_string(),
        export.to_str().unwrap().to_string(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    start_binary(&common::bin(), dir, &all, env, socket, export)
}

/// [`start_observer`] for any build of the observer: `bin` with exactly
/// `args`, listening on `socket` and exporting to `export` (the safety
/// profile takes no arguments: both are compiled in).
pub fn start_binary(
    bin: &Path,
    dir: tempfile::TempDir,
    args: &[String],
    env: &[(&str, &str)],
    socket: PathBuf,
    export: PathBuf,
) -> Observer {
    let stderr_path = dir.path().join("stderr.log");
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .current_dir(dir.path())
        .env("VARTA_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap());
    for var in SYSTEMD_VARS {
        cmd.env_remove(var);
    }
    cmd.env_remove(WEDGE_ENV);
    cmd.env_remove(WATCHDOG_STOP_ENV);
    for (k, v) in env {
        cmd.env(k, v);
    }
    // SAFETY: runs between fork and exec and only calls setrlimit(2),
    // which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let none = nix::libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if nix::libc::setrlimit(nix::libc::RLIMIT_CORE, &none) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = common::spawn_guarded(&mut cmd).expect("spawn varta-watch");
    let obs = Observer {
        child,
        dir,
        socket,
        export,
        stderr_path,
    };
    obs.wait_until("observer listening", || {
        obs.stderr().contains("listening on")
            && UnixDatagram::unbound()
                .and_then(|s| s.connect(&obs.socket))
                .is_ok()
    });
    obs
}

/// The fault-injection variable that wedges the loop after N iterations.
pub const WEDGE_ENV: &str = "VARTA_FAULT_WEDGE_AFTER";
/// The fault-injection variable that hangs the watchdog thread after N
/// of its rounds.
pub const WATCHDOG_STOP_ENV: &str = "VARTA_FAULT_WATCHDOG_STOP_AFTER";

/// Waits for the wedge's log line; returns when it was seen (at most a
/// poll interval after the loop stopped).
pub fn wait_for_wedge(obs: &Observer) -> Instant {
    obs.wait_until("the loop to wedge", || {
        obs.stderr()
            .contains("fault injection: wedging the event loop")
    });
    Instant::now()
}

/// After the loop wedged (its log line seen at `wedged_at`): the process
/// dies of SIGABRT within `limit` + 1 s (and not before half of it), the
/// self-watchdog said why, systemd's `WATCHDOG=1` pings stopped within
/// the alive window of the wedge and none came until the end, and no
/// `STOPPING=1` was sent (an abort is not a clean stop).
pub fn assert_self_watchdog_abort(
    obs: &mut Observer,
    notify: &NotifySocket,
    wedged_at: Instant,
    limit: Duration,
) {
    assert_eq!(
        wait_signal(obs),
        Some(nix::libc::SIGABRT),
        "{}",
        obs.stderr()
    );
    let ended = Instant::now();
    let took = ended - wedged_at;
    assert!(
        took <= limit + Duration::from_secs(1),
        "aborted {took:?} after the wedge; limit {limit:?} + 1 s"
    );
    assert!(took >= limit / 2, "aborted too early: {took:?}");
    let log = obs.stderr();
    assert!(
        log.contains("self-watchdog: the event loop has been stuck for"),
        "{log}"
    );
    assert!(
        log.contains(&format!("(limit {} s); aborting", limit.as_secs())),
        "{log}"
    );
    // Pings stopped within the alive window (4 ticks) of the wedge — the
    // log line is seen a little after it — and none came in the rest of
    // the time until the abort.
    let pings = notify.times_of("WATCHDOG=1");
    let last = *pings.last().expect("pings while healthy");
    assert!(
        last < wedged_at + Duration::from_millis(500),
        "a ping {:?} after the wedge",
        last - wedged_at
    );
    assert!(ended - last > Duration::from_secs(1), "pings until the end");
    assert!(
        notify.times_of("STOPPING=1").is_empty(),
        "an abort is not a clean stop"
    );
}

/// Waits for the observer to end and returns the signal that ended it.
pub fn wait_signal(obs: &mut Observer) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    let start = Instant::now();
    loop {
        if let Some(st) = obs.child.try_wait().unwrap() {
            return st.signal();
        }
        assert!(
            start.elapsed() < PATIENCE,
            "observer did not end; stderr:\n{}",
            obs.stderr()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The heartbeat file at `path`, parsed; None while it does not exist.
pub fn read_heartbeat(path: &Path) -> Option<(u64, u64)> {
    std::fs::read_to_string(path)
        .ok()
        .map(|t| parse_heartbeat(&t))
}

/// Parses `<iterations> <ns>\n`; panics on anything else.
pub fn parse_heartbeat(text: &str) -> (u64, u64) {
    let line = text
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("heartbeat {text:?} must end with one newline"));
    let (a, b) = line
        .split_once(' ')
        .unwrap_or_else(|| panic!("heartbeat {text:?} must be two numbers"));
    (
        a.parse().unwrap_or_else(|_| panic!("count in {text:?}")),
        b.parse().unwrap_or_else(|_| panic!("ns in {text:?}")),
    )
}
