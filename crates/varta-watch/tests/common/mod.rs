//! Helpers for tests that run the real `varta-watch` binary and real agent
//! processes. Agents are this test binary re-executed in "agent mode"
//! (`agent_entry` test + environment), so they link the real varta-client.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
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

/// Starts this test binary as an agent process.
pub fn spawn_agent(mode: &str, socket: &Path, interval_ms: u64) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "agent_entry", "--nocapture", "--test-threads=1"])
        .env(AGENT_ENV, mode)
        .env(SOCKET_ENV, socket)
        .env(INTERVAL_ENV, interval_ms.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn agent")
}

/// A running observer with its own directory, socket and export file.
pub struct Observer {
    pub child: Child,
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
        let child = Command::new(bin())
            .arg("--socket")
            .arg(&socket)
            .arg("--export-file")
            .arg(&export)
            .args(args)
            .env("VARTA_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .expect("spawn varta-watch");
        let obs = Observer {
            child,
            dir,
            socket,
            export,
            stderr_path,
        };
        // Existence is not enough (a stale file may be there already):
        // wait until a live socket accepts a connection.
        obs.wait_until("socket bound", || {
            UnixDatagram::unbound()
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
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary to completion (for config errors, --help).
pub fn run(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().unwrap()
}

pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
