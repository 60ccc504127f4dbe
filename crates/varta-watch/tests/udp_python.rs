//! The original's Python client — PyPI `varta==0.2.0` — beats into this
//! observer over all three UDP modes: plaintext, shared-key and master-key
//! ChaCha20-Poly1305. Each agent is a real Python process using the
//! package's public API (`Varta.connect_udp`, `Varta.connect_secure_udp`,
//! `Varta.connect_secure_udp_with_master`). The observer must track it under
//! its pid, record every beat, and report a stall once it goes quiet while
//! still alive. In the secure modes an agent holding the wrong key must not
//! be tracked.
//!
//! The package lives in a venv at `<target dir>/varta-py-0.2.0` (the target
//! dir is `$CARGO_TARGET_DIR`, else `<workspace>/target`; `VARTA_PY_VENV`
//! names another, ready venv instead). `.ci/run` prepares it; when it is
//! missing this test creates it the same way: `python3 -m venv`, then
//! `pip install 'varta[secure]==0.2.0'` (the `secure` extra pulls in
//! `cryptography`, without which the two AEAD modes raise). A test skips —
//! printing why and passing — only when pip failed because PyPI could not be
//! reached; any other failure fails it.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{die_with_parent, spawn_guarded, ChildGuard, Observer, PATIENCE};

/// Venv directory name under the target dir; `.ci/run` uses the same one.
const VENV_NAME: &str = "varta-py-0.2.0";
/// What gets installed (also in `.ci/run`).
const REQUIREMENT: &str = "varta[secure]==0.2.0";
/// Succeeds only in a venv that can run every mode below.
const VENV_CHECK: &str = "import varta, cryptography.hazmat.primitives.ciphers.aead; \
                          assert varta.__version__ == '0.2.0', varta.__version__";

/// Beats each agent sends before falling silent, and their spacing.
const BEATS: usize = 10;
const INTERVAL_MS: u64 = 50;
/// The payload every beat carries (`AGENT_PY` sends 7).
const PAYLOAD: &str = "7";

/// The agent: connects with the constructor for `mode`, prints its pid and
/// each beat's outcome, beats `beats` times, prints `done`, then sleeps —
/// alive but silent — until the test kills it.
const AGENT_PY: &str = r#"
import os, sys, time
import varta

mode, host, port, key_file, beats, interval_ms = sys.argv[1:]
addr = (host, int(port))
if mode == "plaintext":
    agent = varta.Varta.connect_udp(addr)
else:
    with open(key_file) as f:
        key = bytes.fromhex(f.read().strip())
    if mode == "shared":
        agent = varta.Varta.connect_secure_udp(addr, key)
    elif mode == "master":
        agent = varta.Varta.connect_secure_udp_with_master(addr, key)
    else:
        sys.exit("unknown mode " + mode)
print("pid", os.getpid(), flush=True)
for _ in range(int(beats)):
    print("beat", agent.beat(varta.Status.OK, 7), flush=True)
    time.sleep(int(interval_ms) / 1000)
print("done", flush=True)
time.sleep(3600)
"#;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Plaintext,
    Shared,
    Master,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Plaintext => "plaintext",
            Mode::Shared => "shared",
            Mode::Master => "master",
        }
    }
}

#[test]
fn python_client_plaintext_udp_is_tracked_and_stalls() {
    python_agent_is_tracked_and_stalls(Mode::Plaintext);
}

#[test]
fn python_client_shared_key_udp_is_tracked_and_stalls() {
    python_agent_is_tracked_and_stalls(Mode::Shared);
}

#[test]
fn python_client_master_key_udp_is_tracked_and_stalls() {
    python_agent_is_tracked_and_stalls(Mode::Master);
}

fn python_agent_is_tracked_and_stalls(mode: Mode) {
    let Some(python) = python(mode) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key = write_key(dir.path(), "agent.key");
    let wrong_key = write_key(dir.path(), "wrong.key");
    let key_arg = key.to_str().unwrap().to_owned();
    let mut args = vec!["--threshold-ms", "500", "--udp-port", "0"];
    match mode {
        Mode::Plaintext => {
            args.extend(["--i-accept-plaintext-udp", "--udp-bind-addr", "127.0.0.1"])
        }
        Mode::Shared => args.extend(["--key-file", &key_arg]),
        Mode::Master => args.extend(["--master-key-file", &key_arg]),
    }
    let obs = Observer::start_in(dir, &args);
    let addr = obs.udp_addr();
    // Explicit for plaintext; the default for a secure listener, as in the
    // original.
    assert!(addr.ip().is_loopback(), "{mode:?} listener bound to {addr}");

    // First an agent with the wrong key: every beat leaves its socket, none
    // may be accepted.
    let intruder = (mode != Mode::Plaintext).then(|| {
        let mut a = PyAgent::spawn(&python, &obs, "wrong-key", mode, addr, Some(&wrong_key));
        a.wait_done(&obs);
        a
    });

    let key_for_agent = (mode != Mode::Plaintext).then_some(key.as_path());
    let mut agent = PyAgent::spawn(&python, &obs, "agent", mode, addr, key_for_agent);
    let pid = agent.wait_done(&obs);
    // The stall that follows the last beat (a loaded machine may also have
    // seen a gap of more than the threshold mid-run).
    let ns = |line: &[String]| line[0].parse::<u64>().unwrap();
    let mut stall = Vec::new();
    obs.wait_until("a stall after the last beat", || {
        let last_beat = obs.of_kind("beat", Some(pid)).last().map(|l| ns(l));
        let last_stall = obs.of_kind("stall", Some(pid)).pop();
        match (last_beat, last_stall) {
            (Some(beat), Some(s)) if ns(&s) > beat => {
                stall = s;
                true
            }
            _ => false,
        }
    });
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the stall is for a live agent that went quiet, but it exited; its stderr:\n{}",
        agent.stderr()
    );

    let beats = obs.of_kind("beat", Some(pid));
    let nonces: Vec<&str> = beats.iter().map(|l| l[3].as_str()).collect();
    let expected: Vec<String> = (1..=BEATS).map(|n| n.to_string()).collect();
    assert_eq!(
        nonces,
        expected,
        "{mode:?}: every beat recorded once, nonces 1..={BEATS} in order; export:\n{:?}",
        obs.lines()
    );
    for beat in &beats {
        assert_eq!((beat[4].as_str(), beat[5].as_str()), ("ok", PAYLOAD));
    }
    assert_eq!(stall[4], "stall");

    if let Some(intruder) = intruder {
        // Its datagrams were all sent (and, one socket read in order, all
        // handled) before the agent's first beat; had any been accepted its
        // pid would have beaten and, silent since, stalled before the agent.
        let ipid = intruder.pid.unwrap();
        assert!(
            obs.of_kind("beat", Some(ipid)).is_empty()
                && obs.of_kind("stall", Some(ipid)).is_empty(),
            "{mode:?}: an agent with the wrong key was tracked; export:\n{:?}",
            obs.lines()
        );
        // And each of its datagrams was refused as a decrypt failure (the
        // master layout carries its pid in clear, the shared one no pid).
        let (layout, pid_column) = match mode {
            Mode::Master => ("master", ipid.to_string()),
            _ => ("shared", "-".to_owned()),
        };
        let failures = obs.of_kind("decrypt_failure", None);
        assert_eq!(
            failures.len(),
            BEATS,
            "{mode:?}: one decrypt failure per wrong-key beat; export:\n{:?}",
            obs.lines()
        );
        for failure in &failures {
            assert_eq!(failure[2], pid_column, "{failure:?}");
            assert!(
                failure[5].starts_with(&format!("{layout} from=")),
                "{failure:?}"
            );
        }
    }
}

/// A Python agent process and the files holding its output.
struct PyAgent {
    child: ChildGuard,
    label: &'static str,
    stdout: PathBuf,
    stderr: PathBuf,
    pid: Option<u32>,
}

impl PyAgent {
    fn spawn(
        python: &Path,
        obs: &Observer,
        label: &'static str,
        mode: Mode,
        addr: SocketAddr,
        key: Option<&Path>,
    ) -> PyAgent {
        let stdout = obs.dir.path().join(format!("{label}.out"));
        let stderr = obs.dir.path().join(format!("{label}.err"));
        let child = spawn_guarded(
            Command::new(python)
                .arg("-I")
                .arg("-c")
                .arg(AGENT_PY)
                .arg(mode.name())
                .arg(addr.ip().to_string())
                .arg(addr.port().to_string())
                .arg(key.map_or("-".into(), |k| k.to_str().unwrap().to_owned()))
                .arg(BEATS.to_string())
                .arg(INTERVAL_MS.to_string())
                .stdin(Stdio::null())
                .stdout(File::create(&stdout).unwrap())
                .stderr(File::create(&stderr).unwrap()),
        )
        .expect("spawn the Python agent");
        PyAgent {
            child,
            label,
            stdout,
            stderr,
            pid: None,
        }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until the agent has sent all its beats (each one accepted by
    /// the kernel) and returns its pid, as it reported it.
    fn wait_done(&mut self, obs: &Observer) -> u32 {
        let start = Instant::now();
        let out = loop {
            let out = self.stdout();
            if out.lines().any(|l| l == "done") {
                break out;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "Python {} exited early ({status}); stdout:\n{out}\nstderr:\n{}",
                    self.label,
                    self.stderr()
                );
            }
            assert!(
                start.elapsed() < PATIENCE,
                "Python {} did not finish beating; stdout:\n{out}\nstderr:\n{}\nobserver stderr:\n{}",
                self.label,
                self.stderr(),
                obs.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let pid: u32 = out
            .lines()
            .find_map(|l| l.strip_prefix("pid "))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no pid line from Python {}: {out}", self.label));
        assert_eq!(pid, self.child.id(), "the agent beats with its own pid");
        let outcomes: Vec<&str> = out.lines().filter(|l| l.starts_with("beat ")).collect();
        assert_eq!(
            outcomes,
            vec!["beat sent"; BEATS],
            "Python {}: every beat sent",
            self.label
        );
        self.pid = Some(pid);
        pid
    }
}

/// A fresh random 32-byte key as 64 hex characters in a new 0600 file.
fn write_key(dir: &Path, name: &str) -> PathBuf {
    let mut key = [0u8; 32];
    File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut key)
        .unwrap();
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let path = dir.join(name);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap()
        .write_all(format!("{hex}\n").as_bytes())
        .unwrap();
    path
}

/// The state of the venv, settled once per test process.
enum Venv {
    Ready(PathBuf),
    PypiUnreachable(String),
    Broken(String),
}

/// The venv's interpreter; `None` after printing why when PyPI could not be
/// reached to install the package.
fn python(mode: Mode) -> Option<PathBuf> {
    static VENV: OnceLock<Venv> = OnceLock::new();
    match VENV.get_or_init(prepare_venv) {
        Venv::Ready(python) => Some(python.clone()),
        Venv::PypiUnreachable(why) => {
            // Straight to the process's stderr: libtest hides eprintln!
            // output of passing tests.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED udp_python {}: PyPI is unreachable, so {REQUIREMENT} could not be installed:\n{why}",
                mode.name()
            );
            None
        }
        Venv::Broken(why) => panic!("{why}"),
    }
}

fn target_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    // A relative CARGO_TARGET_DIR is taken from the workspace root, where
    // `.ci/run` runs cargo.
    workspace.join(std::env::var_os("CARGO_TARGET_DIR").unwrap_or_else(|| "target".into()))
}

fn venv_ok(python: &Path) -> Result<(), String> {
    let out = run(Command::new(python).args(["-I", "-c", VENV_CHECK]))
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(describe(&out))
    }
}

fn prepare_venv() -> Venv {
    if let Some(dir) = std::env::var_os("VARTA_PY_VENV") {
        let python = Path::new(&dir).join("bin/python");
        return match venv_ok(&python) {
            Ok(()) => Venv::Ready(python),
            Err(e) => Venv::Broken(format!(
                "VARTA_PY_VENV={} is not a venv with {REQUIREMENT}: {e}",
                Path::new(&dir).display()
            )),
        };
    }
    let target = target_dir();
    let dir = target.join(VENV_NAME);
    let python = dir.join("bin/python");
    // Another test process may be building the same venv.
    std::fs::create_dir_all(&target).unwrap();
    let lock_file = File::create(target.join(format!("{VENV_NAME}.lock"))).unwrap();
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock the venv");
    if venv_ok(&python).is_ok() {
        return Venv::Ready(python);
    }
    let created = run(Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&dir));
    match created {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            return Venv::Broken(format!(
                "python3 -m venv {} failed: {}",
                dir.display(),
                describe(&out)
            ))
        }
        Err(e) => return Venv::Broken(format!("cannot run python3 -m venv: {e}")),
    }
    // Bounded: 10 s per network operation, one retry.
    let installed = run(Command::new(&python).args([
        "-I",
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "--timeout",
        "10",
        "--retries",
        "1",
        REQUIREMENT,
    ]));
    match installed {
        Ok(out) if out.status.success() => match venv_ok(&python) {
            Ok(()) => Venv::Ready(python),
            Err(e) => Venv::Broken(format!("{REQUIREMENT} installed but unusable: {e}")),
        },
        Ok(out) if pip_network_failure(&describe(&out)) => {
            let why = String::from_utf8_lossy(&out.stderr)
                .lines()
                .filter(|l| pip_network_failure(l))
                .collect::<Vec<_>>()
                .join("\n");
            Venv::PypiUnreachable(why)
        }
        Ok(out) => Venv::Broken(format!(
            "pip install {REQUIREMENT} failed (not a network failure): {}",
            describe(&out)
        )),
        Err(e) => Venv::Broken(format!("cannot run pip: {e}")),
    }
}

fn run(cmd: &mut Command) -> std::io::Result<Output> {
    die_with_parent(cmd.stdin(Stdio::null())).output()
}

fn describe(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Whether pip's output shows it could not reach the index (the markers
/// pip/urllib3 print for refused, unresolvable, timed-out or proxy-failed
/// connections). `.ci/run` greps for the same ones.
fn pip_network_failure(output: &str) -> bool {
    [
        "connection broken by",
        "Failed to establish a new connection",
        "Max retries exceeded",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "Temporary failure in name resolution",
        "Network is unreachable",
    ]
    .iter()
    .any(|m| output.contains(m))
}

#[test]
fn pip_network_failures_are_told_from_other_failures() {
    // As pip 23 prints them with the index refused, unresolvable, or
    // behind a dead proxy.
    for unreachable in [
        "WARNING: Retrying (Retry(total=0, connect=None, read=None, redirect=None, status=None)) after connection broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPConnection object at 0x7fe7786743d0>: Failed to establish a new connection: [Errno 111] Connection refused')': /simple/varta/\nERROR: No matching distribution found for varta[secure]==0.2.0",
        "WARNING: Retrying (Retry(total=0, connect=None, read=None, redirect=None, status=None)) after connection broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPSConnection object at 0x7fde29978450>: Failed to establish a new connection: [Errno -2] Name or service not known')': /simple/varta/",
        "after connection broken by 'ProxyError('Cannot connect to proxy.', NewConnectionError(...))': /simple/varta/",
    ] {
        assert!(pip_network_failure(unreachable), "{unreachable}");
    }
    for other in [
        "ERROR: Could not find a version that satisfies the requirement varta[secure]==0.2.0 (from versions: 0.1.0)\nERROR: No matching distribution found for varta[secure]==0.2.0",
        "/usr/bin/python3: No module named pip",
        "ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device",
    ] {
        assert!(!pip_network_failure(other), "{other}");
    }
}
