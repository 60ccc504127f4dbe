//! Helpers for tests that run the real `varta-watch` binary and real agent
//! processes. Agents are this test binary re-executed in "agent mode"
//! (`agent_entry` test + environment), so they link the real varta-client.
//!
//! Cleanup contract: every process a test starts is owned by a
//! [`ChildGuard`] (or an [`Observer`], which holds one), so it is killed and
//! reaped when the test ends — also when the test panics. Processes started
//! here additionally get `PR_SET_PDEATHSIG(SIGKILL)`, so even a test binary
//! killed outright (timeout, SIGKILL) takes its children with it. Temporary
//! files live in `tempfile` directories owned by the same values.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::ops::{Deref, DerefMut};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const AGENT_ENV: &str = "VARTA_TEST_AGENT";
pub const SOCKET_ENV: &str = "VARTA_TEST_SOCKET";
pub const INTERVAL_ENV: &str = "VARTA_TEST_INTERVAL_MS";

/// Generous bound for "eventually" in tests; never a performance assertion.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_varta-watch"))
}

/// Runs the agent behaviour named in the environment, if any, then exits.
pub fn maybe_run_agent() {
    let Ok(mode) = std::env::var(AGENT_ENV) else {
        return;
    };
    let socket = std::env::var(SOCKET_ENV).expect("socket env");
    let interval = Duration::from_millis(
        std::env::var(INTERVAL_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(50),
    );
    match mode.as_str() {
        "beat" => {
            let mut agent = varta_client::Varta::connect(&socket).expect("connect");
            agent.set_reconnect_after(2);
            loop {
                let _ = agent.beat(varta_client::Status::Ok, 0);
                std::thread::sleep(interval);
            }
        }
        "panic" => {
            varta_client::install_panic_handler(&socket).expect("install");
            let mut agent = varta_client::Varta::connect(&socket).expect("connect");
            for _ in 0..3 {
                let _ = agent.beat(varta_client::Status::Ok, 0);
                std::thread::sleep(interval);
            }
            panic!("agent panics on purpose");
        }
        "once" => {
            let mut agent = varta_client::Varta::connect(&socket).expect("connect");
            assert_eq!(
                agent.beat(varta_client::Status::Ok, 1),
                varta_client::BeatOutcome::Sent
            );
        }
        "quiet" => {
            // Beats VARTA_TEST_BEATS times (default 1), then stays alive
            // and silent: a stall, or a slow starter inside its grace.
            let beats: u32 = std::env::var("VARTA_TEST_BEATS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            let mut agent = varta_client::Varta::connect(&socket).expect("connect");
            for _ in 0..beats {
                let _ = agent.beat(varta_client::Status::Ok, 0);
                std::thread::sleep(interval);
            }
            std::thread::sleep(Duration::from_secs(3600));
        }
        "upstream" => {
            // An agent built with the original varta-client 0.2.0.
            let mut agent = upstream_client::Varta::connect(&socket).expect("connect");
            loop {
                let _ = agent.beat(upstream_client::Status::Degraded, 7);
                std::thread::sleep(interval);
            }
        }
        other => panic!("unknown agent mode {other}"),
    }
}

/// A spawned process that is killed (SIGKILL) and reaped when dropped, so
/// no test leaves it behind, whichever way the test ends. Derefs to
/// [`Child`]: `guard.id()`, `guard.kill()`, `guard.wait()`,
/// `guard.try_wait()`, `guard.stderr` all work as on the `Child` itself, and
/// an explicit `kill()` + `wait()` before the drop is harmless.
#[derive(Debug)]
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// Takes ownership of an already spawned child.
    pub fn new(child: Child) -> ChildGuard {
        ChildGuard(child)
    }

    /// The process id as a nix `Pid` (for `kill(2)` with a chosen signal).
    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.0.id() as i32)
    }
}

impl From<Child> for ChildGuard {
    fn from(child: Child) -> ChildGuard {
        ChildGuard(child)
    }
}

impl Deref for ChildGuard {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        reap(&mut self.0);
    }
}

/// Kills `child` unless it was already reaped, then reaps it. Errors are
/// ignored: the process may have exited (or been waited for) already, and
/// `Child` remembers a collected status, so no signal reaches a recycled pid.
pub fn reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Makes `cmd`'s process receive SIGKILL when the thread that spawned it
/// dies (the test's thread, or the whole test binary on a timeout kill):
/// the backstop for the one path `Drop` cannot cover.
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    let parent = std::process::id() as i32;
    // SAFETY: the closure runs between fork and exec and only makes the
    // async-signal-safe prctl(2) and getppid(2) calls.
    unsafe {
        cmd.pre_exec(move || {
            if nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before the prctl took effect.
            if nix::libc::getppid() != parent {
                return Err(std::io::Error::other("test process already gone"));
            }
            Ok(())
        })
    }
}

/// Spawns `cmd` under a [`ChildGuard`], dying with the test process.
pub fn spawn_guarded(cmd: &mut Command) -> std::io::Result<ChildGuard> {
    die_with_parent(cmd).spawn().map(ChildGuard)
}

/// Starts this test binary as an agent process. The returned guard kills
/// and reaps the agent when dropped.
pub fn spawn_agent(mode: &str, socket: &Path, interval_ms: u64) -> ChildGuard {
    spawn_guarded(
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "agent_entry", "--nocapture", "--test-threads=1"])
            .env(AGENT_ENV, mode)
            .env(SOCKET_ENV, socket)
            .env(INTERVAL_ENV, interval_ms.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .expect("spawn agent")
}

/// A running observer with its own directory, socket and export file.
/// Dropping it kills and reaps the process, then removes the directory.
pub struct Observer {
    /// Declared before `dir`: fields drop in order, so the process is gone
    /// before its directory is removed.
    pub child: ChildGuard,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub export: PathBuf,
    pub stderr_path: PathBuf,
}

impl Observer {
    /// Starts `varta-watch --socket DIR/obs.sock --export-file DIR/events.tsv ARGS`.
    pub fn start(args: &[&str]) -> Observer {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, args)
    }

    pub fn start_in(dir: tempfile::TempDir, args: &[&str]) -> Observer {
        let socket = dir.path().join("obs.sock");
        let export = dir.path().join("events.tsv");
        let stderr_path = dir.path().join("stderr.log");
        let child = spawn_guarded(
            Command::new(bin())
                .arg("--socket")
                .arg(&socket)
                .arg("--export-file")
                .arg(&export)
                .args(args)
                .env("VARTA_LOG", "info")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&stderr_path).unwrap()),
        )
        .expect("spawn varta-watch");
        let obs = Observer {
            child,
            dir,
            socket,
            export,
            stderr_path,
        };
        // Existence is not enough (a stale file may be there already), and
        // neither is a socket that accepts connections: the observer enables
        // SO_PASSCRED only after bind(2), and a datagram sent in between
        // arrives without credentials (rejected as foreign_uid / pid 0). So
        // wait for the startup line, logged once the listener is complete.
        obs.wait_until("observer listening", || {
            obs.stderr().contains("listening on")
                && UnixDatagram::unbound()
                    .and_then(|s| s.connect(&obs.socket))
                    .is_ok()
        });
        obs
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn wait_until(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let start = Instant::now();
        while !cond() {
            assert!(
                start.elapsed() < PATIENCE,
                "timed out waiting for {what}; observer stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Where the UDP listener is bound (for `--udp-port 0`): waits for the
    /// `udp listening on IP:PORT` log line and parses the address from it.
    pub fn udp_addr(&self) -> std::net::SocketAddr {
        let mut addr = None;
        self.wait_until("udp listening on IP:PORT", || {
            addr = self
                .stderr()
                .split("udp listening on ")
                .nth(1)
                .and_then(|rest| {
                    rest.split(|c: char| c.is_whitespace() || matches!(c, '"' | ',' | ';' | ')'))
                        .next()?
                        .parse()
                        .ok()
                });
            addr.is_some()
        });
        addr.unwrap()
    }

    /// Export lines split on tabs.
    pub fn lines(&self) -> Vec<Vec<String>> {
        let Ok(f) = std::fs::File::open(&self.export) else {
            return Vec::new();
        };
        BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .map(|l| l.split('\t').map(str::to_owned).collect())
            .collect()
    }

    /// Lines of one kind (column 2), optionally for one pid (column 3).
    pub fn of_kind(&self, kind: &str, pid: Option<u32>) -> Vec<Vec<String>> {
        self.lines()
            .into_iter()
            .filter(|l| l.len() == 6 && l[1] == kind)
            .filter(|l| pid.is_none_or(|p| l[2] == p.to_string()))
            .collect()
    }

    pub fn wait_for(&self, kind: &str, pid: Option<u32>) -> Vec<String> {
        let mut found = None;
        self.wait_until(&format!("{kind} line for {pid:?}"), || {
            found = self.of_kind(kind, pid).into_iter().next();
            found.is_some()
        });
        found.unwrap()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// Waits for exit and returns the status code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            assert!(start.elapsed() < PATIENCE, "observer did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A raw client socket connected to the observer.
    pub fn raw(&self) -> UnixDatagram {
        let s = UnixDatagram::unbound().unwrap();
        s.connect(&self.socket).unwrap();
        s
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        // Explicit so the process is reaped before `dir` is removed even if
        // the field order above ever changes.
        reap(&mut self.child);
    }
}

/// Runs the binary to completion (for config errors, --help). `output()`
/// always waits for the process, so nothing outlives the call.
pub fn run(args: &[&str]) -> Output {
    die_with_parent(Command::new(bin()).args(args))
        .output()
        .unwrap()
}

/// Anything that owns a [`Child`]: a bare `Child` or a [`ChildGuard`].
pub trait AsChild {
    fn as_child(&self) -> &Child;
    fn as_child_mut(&mut self) -> &mut Child;
}

impl AsChild for Child {
    fn as_child(&self) -> &Child {
        self
    }
    fn as_child_mut(&mut self) -> &mut Child {
        self
    }
}

impl AsChild for ChildGuard {
    fn as_child(&self) -> &Child {
        &self.0
    }
    fn as_child_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// The older spelling of [`ChildGuard`], kept so existing call sites compile:
/// `KillOnDrop(child)` wraps a bare `Child` *or* the guard that
/// [`spawn_agent`] now returns, and `.0` still reaches something that acts
/// as a `Child` (`agent.0.id()`, `agent.0.kill()`). New code should use the
/// guard from [`spawn_agent`] / [`spawn_guarded`] directly.
pub struct KillOnDrop<C: AsChild = Child>(pub C);

impl<C: AsChild> Deref for KillOnDrop<C> {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_child()
    }
}

impl<C: AsChild> DerefMut for KillOnDrop<C> {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_child_mut()
    }
}

impl<C: AsChild> Drop for KillOnDrop<C> {
    fn drop(&mut self) {
        reap(self.0.as_child_mut());
    }
}

/// An agent running in its own PID namespace under `unshare`. Dropping it
/// tears the whole namespace down and reaps everything in it.
///
/// Killing `unshare` alone is not enough: its forked child (`sh`, pid 1 of
/// the namespace) would be re-parented to init and the agent would beat
/// forever. So the drop first SIGKILLs the namespace's init — which makes
/// the kernel kill every other process of the namespace and reap them
/// before init itself exits — then kills and reaps `unshare`, which has
/// reaped init by then. `--kill-child` (plus the guard's parent-death
/// signal) covers a test binary that is killed before any drop runs.
pub struct NamespacedAgent {
    pub unshare: ChildGuard,
}

impl Drop for NamespacedAgent {
    fn drop(&mut self) {
        for init in children_of(self.unshare.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(init),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        // unshare reaps init and exits on its own; give it the chance, so
        // init is not left a zombie re-parented to the system's init. Then
        // `self.unshare` (a ChildGuard) kills, if need be, and reaps it.
        let start = std::time::Instant::now();
        while matches!(self.unshare.try_wait(), Ok(None)) && start.elapsed() < PATIENCE {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Pids whose parent is `pid`, from `/proc/*/stat`.
pub fn children_of(pid: u32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            // "pid (comm) state ppid ...": comm may hold spaces, so split
            // after the last ')'.
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|st| {
                    let rest = &st[st.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// Whether `pid` still exists (zombies included) in our PID namespace.
pub fn alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Runs the agent in a new PID namespace (`unshare --pid --fork`), where its
/// own pid differs from the kernel's view.
pub fn spawn_namespaced_agent(socket: &std::path::Path) -> Option<NamespacedAgent> {
    spawn_namespaced_agent_mode(socket, "beat")
}

/// [`spawn_namespaced_agent`] with another agent behaviour of
/// [`maybe_run_agent`] (`panic`: three beats, then its exit frame). None
/// without root or `unshare(1)`.
pub fn spawn_namespaced_agent_mode(
    socket: &std::path::Path,
    mode: &str,
) -> Option<NamespacedAgent> {
    let unshare = ["/usr/bin/unshare", "/bin/unshare"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())?;
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let exe = std::env::current_exe().unwrap();
    // `sh` is pid 1 in the new namespace, so the agent gets a pid >= 2.
    let script = format!(
        "'{}' --exact agent_entry --nocapture --test-threads=1 & wait",
        exe.display()
    );
    let unshare = spawn_guarded(
        std::process::Command::new(unshare)
            .args([
                "--pid",
                "--fork",
                "--kill-child",
                "--mount-proc",
                "sh",
                "-c",
                &script,
            ])
            .env(AGENT_ENV, mode)
            .env(SOCKET_ENV, socket)
            .env(INTERVAL_ENV, "20")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    )
    .ok()?;
    Some(NamespacedAgent { unshare })
}

/// An observer serving `/metrics` on a free loopback port.
pub struct MetricsObserver {
    /// The observer process.
    pub child: ChildGuard,
    /// Where `/metrics` is served (read from its stdout line).
    pub addr: std::net::SocketAddr,
    /// Its beat socket.
    pub socket: PathBuf,
}

/// Starts `varta-watch` in `dir` with `--prom-addr 127.0.0.1:0`, a token
/// file holding `token` (mode 0600) and `extra` flags; returns once the
/// bound address has been printed.
pub fn start_metrics_observer(dir: &Path, token: &str, extra: &[&str]) -> MetricsObserver {
    use std::os::unix::fs::PermissionsExt;
    let token_file = dir.join("prom.token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let socket = dir.join("obs.sock");
    let mut child = spawn_guarded(
        Command::new(bin())
            .args(["--socket", socket.to_str().unwrap()])
            .args(["--prom-addr", "127.0.0.1:0"])
            .args(["--prom-token-file", token_file.to_str().unwrap()])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    )
    .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("metrics: http://")
        .and_then(|s| s.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("address line on stdout: {line:?}"))
        .parse()
        .unwrap();
    MetricsObserver {
        child,
        addr,
        socket,
    }
}

/// `GET http://{addr}{path}` with an optional bearer token, through a real
/// HTTP client (ureq, already a dependency for the Alertmanager push):
/// (status, body). Any status is returned, not treated as an error; a
/// connection failure panics with the address.
pub fn http_get(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut req = agent.get(format!("http://{addr}{path}"));
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let mut resp = req
        .call()
        .unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"));
    let code = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 * 1024 * 1024)
        .read_to_string()
        .unwrap_or_else(|e| panic!("GET http://{addr}{path}: reading the body: {e}"));
    (code, body)
}

/// A `--recovery-exec` value running a script in `dir` that exits 0:
/// recovery that succeeds and leaves an audit record, nothing else.
pub fn exit0_recovery(dir: &Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("recover.sh");
    std::fs::write(&p, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
    format!("{} {{pid}}", p.display())
}
