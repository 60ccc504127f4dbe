//! Child processes: the two observer binaries (found or built), observer
//! runs, sender processes, and the guards that kill them on every path.

use std::fs::File;
use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Root of the workspace this harness was built from: where `cargo build`
/// and the default upstream cache live.
pub fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// "exited with exit status: 1" / "could not run cargo: ..." for messages.
fn describe(status: &std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(s) => format!("exited with {s}"),
        Err(e) => format!("could not be run: {e}"),
    }
}

fn cargo() -> String {
    // `cargo run` exports CARGO; use the same toolchain that built us.
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

/// CLOCK_MONOTONIC in ns: the one clock the harness and every sender share,
/// so timestamps taken in different processes compare directly.
pub fn monotonic_ns() -> u64 {
    // clock_gettime(CLOCK_MONOTONIC) cannot fail on Linux with a valid id.
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |ts| {
        ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
    })
}

/// A private temp dir, on tmpfs when available: export files then cost no
/// disk I/O (an fdatasync is nearly free), so the disk never decides a result.
pub fn bench_dir() -> Res<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    let mut b = tempfile::Builder::new();
    b.prefix("varta-bench-");
    if shm.is_dir() {
        if let Ok(d) = b.tempdir_in(shm) {
            return Ok(d);
        }
    }
    Ok(b.tempdir()?)
}

/// The two observer binaries under test.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub ours: PathBuf,
    pub original: PathBuf,
}

impl Binaries {
    pub fn resolve() -> Res<Binaries> {
        Ok(Binaries {
            ours: ours_observer()?,
            original: original_observer()?,
        })
    }
}

/// Our `varta-watch`, next to this executable (target/release). Under
/// `cargo run` it is rebuilt first (a no-op when fresh) so a stale binary is
/// never measured; otherwise it is built only when missing.
fn ours_observer() -> Res<PathBuf> {
    let exe = std::env::current_exe()?;
    let exe_dir = exe.parent().ok_or("executable has no parent directory")?;
    // A debug harness still measures the release observer.
    let release_dir = if exe_dir.file_name().is_some_and(|n| n == "release") {
        exe_dir.to_path_buf()
    } else {
        exe_dir.join("../release")
    };
    let bin = release_dir.join("varta-watch");
    let under_cargo = std::env::var_os("CARGO").is_some();
    if under_cargo || !bin.exists() {
        eprintln!("varta-bench: cargo build --release -p varta-watch --bin varta-watch");
        let status = Command::new(cargo())
            .args([
                "build",
                "--release",
                "-p",
                "varta-watch",
                "--bin",
                "varta-watch",
            ])
            .current_dir(workspace_root())
            .status();
        let ok = matches!(status, Ok(s) if s.success());
        if !ok && !bin.exists() {
            return Err(format!(
                "our observer {} is missing and `cargo build --release -p varta-watch --bin varta-watch` \
                 {}; build it by hand in {}",
                bin.display(),
                describe(&status),
                workspace_root().display()
            )
            .into());
        }
        if !ok {
            eprintln!(
                "varta-bench: warning: the build failed; measuring the existing {}",
                bin.display()
            );
        }
    }
    Ok(bin)
}

/// target/release of this workspace (the harness's own dir when it is a
/// release build).
fn release_dir() -> Res<PathBuf> {
    let exe = std::env::current_exe()?;
    let exe_dir = exe.parent().ok_or("executable has no parent directory")?;
    Ok(if exe_dir.file_name().is_some_and(|n| n == "release") {
        exe_dir.to_path_buf()
    } else {
        exe_dir.join("../release")
    })
}

/// Runs `cargo <args>` in the workspace under `cargo run` or when `bin` is
/// missing (as for our observer); a failed build with an existing `bin`
/// measures that `bin`, with a warning.
fn cargo_built(bin: PathBuf, args: &[&str]) -> Res<PathBuf> {
    let under_cargo = std::env::var_os("CARGO").is_some();
    if !under_cargo && bin.exists() {
        return Ok(bin);
    }
    let shown = format!("cargo {}", args.join(" "));
    eprintln!("varta-bench: {shown}");
    let status = Command::new(cargo())
        .args(args)
        .current_dir(workspace_root())
        .status();
    let ok = matches!(status, Ok(s) if s.success());
    if !ok && !bin.exists() {
        return Err(format!(
            "{} is missing and `{shown}` {}; build it by hand in {}",
            bin.display(),
            describe(&status),
            workspace_root().display()
        )
        .into());
    }
    if !ok {
        eprintln!(
            "varta-bench: warning: the build failed; using the existing {}",
            bin.display()
        );
    }
    Ok(bin)
}

/// The `recovery` scenario's recovery command, `varta-bench-recovery-probe`
/// (a second binary of this package, which `cargo run` does not build).
pub fn recovery_probe() -> Res<PathBuf> {
    cargo_built(
        release_dir()?.join("varta-bench-recovery-probe"),
        &[
            "build",
            "--release",
            "-p",
            "varta-bench",
            "--bin",
            "varta-bench-recovery-probe",
        ],
    )
}

/// Target dir of our observer built with `--features test-hooks`: its own,
/// so that build never replaces target/release/varta-watch.
const HOOKS_TARGET: &str = "target/varta-bench-hooks";

/// Our `varta-watch` built with `--features test-hooks` (slow-fsync hook
/// `VARTA_TEST_AUDIT_FSYNC_DELAY_MS`), in [`HOOKS_TARGET`].
pub fn ours_with_test_hooks() -> Res<PathBuf> {
    let dir = workspace_root().join(HOOKS_TARGET);
    let dir_arg = dir.to_string_lossy().into_owned();
    cargo_built(
        dir.join("release/varta-watch"),
        &[
            "build",
            "--release",
            "-p",
            "varta-watch",
            "--bin",
            "varta-watch",
            "--features",
            "test-hooks",
            "--target-dir",
            &dir_arg,
        ],
    )
}

/// `$VARTA_BENCH_CACHE`, else `<workspace>/target/varta-bench-cache`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("VARTA_BENCH_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/varta-bench-cache"))
}

const UPSTREAM_FEATURES: &str = "prometheus-exporter,secure-udp,unsafe-plaintext-udp";

/// The original varta-watch 0.2.0, built once from crates.io into the cache.
fn original_observer() -> Res<PathBuf> {
    let root = cache_dir();
    let bin = root.join("bin/varta-watch");
    if bin.exists() {
        return Ok(bin);
    }
    eprintln!(
        "varta-bench: building the original varta-watch 0.2.0 from crates.io into {} \
         (about 5 minutes on 2 cores; reused afterwards)",
        root.display()
    );
    let status = Command::new(cargo())
        .args(["install", "varta-watch", "--version", "0.2.0", "--features"])
        .arg(UPSTREAM_FEATURES)
        .arg("--root")
        .arg(&root)
        .status();
    match status {
        Ok(s) if s.success() && bin.exists() => Ok(bin),
        _ => Err(format!(
            "could not build the original observer: `cargo install` {}. Build it by hand with\n  \
             cargo install varta-watch --version 0.2.0 --features {UPSTREAM_FEATURES} --root {}\n\
             or point VARTA_BENCH_CACHE at a directory whose bin/varta-watch is that build",
            describe(&status),
            root.display()
        )
        .into()),
    }
}

/// Kills (SIGKILL) and reaps its child when dropped, on every path.
pub struct ChildGuard {
    pub child: Child,
}

impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL and reap now; returns when the process is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub fn terminate(&mut self, grace: Duration) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.kill();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

/// Which observer binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    Ours,
    Original,
}

impl Which {
    pub fn label(self) -> &'static str {
        match self {
            Which::Ours => "varta-watch (ours)",
            Which::Original => "varta-watch 0.2.0 (original)",
        }
    }
}

/// `--tracker-capacity` both observers get by default: room for every agent
/// of the scenarios that do not ask for more.
pub const TRACKER_CAPACITY: usize = 4096;

/// One running observer, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Observer {
    guard: ChildGuard,
    log: PathBuf,
    pub socket: PathBuf,
    pub export: Option<PathBuf>,
}

pub struct ObserverSpec<'a> {
    pub which: Which,
    pub dir: &'a Path,
    pub threshold_ms: u64,
    pub export: bool,
    /// `--tracker-capacity` ([`TRACKER_CAPACITY`] unless a scenario needs more).
    pub tracker_capacity: usize,
    /// Extra flags given to both observers alike.
    pub extra: &'a [&'a str],
    /// Safety net: the observer exits by itself this long after start even
    /// if the harness dies without killing it.
    pub lifetime: Duration,
}

impl Observer {
    pub fn start(bins: &Binaries, spec: &ObserverSpec) -> Res<Observer> {
        Observer::start_with_env(bins, spec, &[])
    }

    /// As [`Observer::start`], with extra environment variables.
    pub fn start_with_env(
        bins: &Binaries,
        spec: &ObserverSpec,
        env: &[(&str, String)],
    ) -> Res<Observer> {
        let tag = match spec.which {
            Which::Ours => "ours",
            Which::Original => "orig",
        };
        let socket = spec.dir.join(format!("{tag}.sock"));
        let export = spec.export.then(|| spec.dir.join(format!("{tag}.tsv")));
        let log = spec.dir.join(format!("{tag}.log"));
        let bin = match spec.which {
            Which::Ours => &bins.ours,
            Which::Original => &bins.original,
        };
        let mut cmd = Command::new(bin);
        // The same flags for both: limits off and room for every agent, so
        // neither observer drops beats by policy.
        cmd.arg("--socket")
            .arg(&socket)
            .args(["--threshold-ms", &spec.threshold_ms.to_string()])
            .args(["--global-beat-rate", "0", "--max-beat-rate", "0"])
            .args(["--tracker-capacity", &spec.tracker_capacity.to_string()])
            .args([
                "--shutdown-after-secs",
                &spec.lifetime.as_secs().max(1).to_string(),
            ])
            .args(spec.extra)
            .envs(env.iter().map(|(k, v)| (k, v)));
        if let Some(e) = &export {
            cmd.arg("--export-file").arg(e);
        }
        let log_file = File::create(&log)?;
        cmd.stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let mut obs = Observer {
            guard: ChildGuard { child },
            log,
            socket,
            export,
        };
        obs.wait_ready(spec.which)?;
        Ok(obs)
    }

    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// Ready = its socket accepts a connect.
    fn wait_ready(&mut self, which: Which) -> Res<()> {
        let until = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = self.guard.child.try_wait() {
                return Err(format!(
                    "{} exited at startup ({status}): {}",
                    which.label(),
                    self.log_tail()
                )
                .into());
            }
            if UnixDatagram::unbound()
                .and_then(|s| s.connect(&self.socket))
                .is_ok()
            {
                return Ok(());
            }
            if Instant::now() > until {
                return Err(format!(
                    "{} did not bind {} within 15 s: {}",
                    which.label(),
                    self.socket.display(),
                    self.log_tail()
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// An error naming the observer and its last log lines if it has
    /// exited (crashed, or stopped by itself) since it started.
    pub fn check_running(&mut self, label: &str) -> Res<()> {
        match self.guard.child.try_wait() {
            Ok(Some(status)) => {
                // A panic's message is above its backtrace: quote it.
                let text = std::fs::read_to_string(&self.log).unwrap_or_default();
                let panic = text
                    .lines()
                    .position(|l| l.contains("panicked at"))
                    .map(|i| {
                        let lines: Vec<&str> = text.lines().skip(i).take(2).collect();
                        format!(" {} |", lines.join(" "))
                    })
                    .unwrap_or_default();
                Err(format!(
                    "{label} exited during the run ({status}):{panic} {}",
                    self.log_tail()
                )
                .into())
            }
            _ => Ok(()),
        }
    }

    /// The file the observer's stdout and stderr go to.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Its last five log lines, joined, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    pub fn stop(mut self) {
        self.guard.terminate(Duration::from_secs(3));
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.guard.terminate(Duration::from_secs(1));
    }
}

/// What a sender process does (arguments of the hidden `sender` subcommand).
pub struct SenderSpec<'a> {
    pub sockets: &'a [&'a Path],
    /// None: beat flat out.
    pub interval_ms: Option<u64>,
    /// Write (nonce, CLOCK_MONOTONIC ns) of every delivered beat to stdout.
    pub report: bool,
    /// The sender exits by itself after this long (a safety net).
    pub lifetime: Duration,
}

/// A started sender and its stdout (ready byte, then reports).
pub struct Sender {
    pub guard: ChildGuard,
    pub stdout: Option<ChildStdout>,
    /// With [`spawn_stoppable_senders`]: write a byte (or drop it) and the
    /// sender stops beating but stays alive.
    pub stdin: Option<ChildStdin>,
}

/// Starts `n` senders (re-executions of this binary) and waits until every
/// one has connected to every socket. Call from the main thread: a sender's
/// PR_SET_PDEATHSIG fires when the thread that spawned it exits.
pub fn spawn_senders(n: usize, spec: &SenderSpec) -> Res<Vec<Sender>> {
    spawn(n, spec, false)
}

/// As [`spawn_senders`], but each sender falls silent (without exiting)
/// when its [`Sender::stdin`] gets a byte: a hung agent, whose pid stays
/// valid for a recovery command.
pub fn spawn_stoppable_senders(n: usize, spec: &SenderSpec) -> Res<Vec<Sender>> {
    spawn(n, spec, true)
}

fn spawn(n: usize, spec: &SenderSpec, stoppable: bool) -> Res<Vec<Sender>> {
    let exe = std::env::current_exe()?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut cmd = Command::new(&exe);
        cmd.arg("sender")
            .args(["--lifetime-ms", &spec.lifetime.as_millis().to_string()]);
        for s in spec.sockets {
            cmd.arg("--socket").arg(s);
        }
        if let Some(ms) = spec.interval_ms {
            cmd.args(["--interval-ms", &ms.to_string()]);
        }
        if spec.report {
            cmd.arg("--report");
        }
        if stoppable {
            cmd.arg("--stop-on-stdin");
        }
        let child = cmd
            .stdin(if stoppable {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start sender {}: {e}", exe.display()))?;
        let mut guard = ChildGuard { child };
        let stdout = guard.child.stdout.take();
        let stdin = guard.child.stdin.take();
        out.push(Sender {
            guard,
            stdout,
            stdin,
        });
    }
    // Each sender writes one byte once connected; EOF means it gave up.
    for s in &mut out {
        let mut byte = [0u8; 1];
        let ok = s
            .stdout
            .as_mut()
            .is_some_and(|o| o.read_exact(&mut byte).is_ok());
        if !ok {
            return Err(format!("sender {} exited before connecting", s.guard.pid()).into());
        }
    }
    Ok(out)
}

/// Writes a sender's record: nonce and CLOCK_MONOTONIC ns, little-endian.
/// A sender beating several sockets puts the socket's index (its
/// `--socket` position) in the nonce's top byte ([`REPORT_SOCKET_SHIFT`]);
/// with one socket the record is the plain nonce.
pub const REPORT_LEN: usize = 16;

/// Bit position of the socket index in a report's nonce field (nonces of a
/// bench run stay far below 2^56).
pub const REPORT_SOCKET_SHIFT: u32 = 56;
