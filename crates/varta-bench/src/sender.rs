//! The hidden `sender` subcommand: one agent process, beating with OUR
//! varta-client (one handle per socket, all carrying this process's pid).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use varta_client::{BeatOutcome, Status, Varta};

use crate::procs::{monotonic_ns, Res};

pub struct SenderArgs {
    pub sockets: Vec<PathBuf>,
    pub interval_ms: Option<u64>,
    pub report: bool,
    pub lifetime: Duration,
    /// Stop beating (but stay alive, like a hung process) once a byte or
    /// EOF arrives on stdin.
    pub stop_on_stdin: bool,
}

pub fn run(args: &SenderArgs) -> Res<()> {
    // Die with the harness even if it is killed before its guards run.
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
    if nix::unistd::getppid() == nix::unistd::Pid::from_raw(1) {
        return Ok(());
    }
    let deadline = Instant::now() + args.lifetime;
    let mut agents = Vec::with_capacity(args.sockets.len());
    for path in &args.sockets {
        let agent = loop {
            match Varta::connect(path) {
                Ok(a) => break a,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => return Err(format!("cannot connect to {}: {e}", path.display()).into()),
            }
        };
        agents.push(agent);
    }
    // std's stdout is line-buffered; binary records must leave at once.
    let mut out = std::io::stdout().lock();
    out.write_all(b"R")?;
    out.flush()?;
    let stop = args.stop_on_stdin.then(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        std::thread::spawn(move || {
            let mut byte = [0u8; 1];
            let _ = std::io::stdin().read(&mut byte);
            f.store(true, Ordering::Relaxed);
        });
        flag
    });
    match args.interval_ms {
        None => flood(&mut agents, deadline),
        Some(ms) => paced(
            &mut agents,
            deadline,
            ms,
            args.report.then_some(&mut out),
            stop.as_deref(),
        )?,
    }
    Ok(())
}

/// As fast as possible. EAGAIN (a full receive queue, which is 10 datagrams
/// by default) is expected: keep beating, exactly as an agent would.
fn flood(agents: &mut [Varta], deadline: Instant) {
    let mut payload = 0u32;
    loop {
        // Checking the clock every 64 beats keeps it off the hot path.
        for _ in 0..64 {
            for a in agents.iter_mut() {
                let _ = a.beat(Status::Ok, payload);
            }
            payload = payload.wrapping_add(1);
        }
        if Instant::now() >= deadline {
            return;
        }
    }
}

/// One beat per handle every `ms`, on an absolute schedule (no drift).
/// With `report`, each delivered beat's nonce and send time go to stdout
/// right after the send, so the harness knows when the last beat left.
/// Once `stop` is set the agent falls silent but lives on until `deadline`
/// (or until killed): its last reported beat is its last beat.
fn paced(
    agents: &mut [Varta],
    deadline: Instant,
    ms: u64,
    mut report: Option<&mut std::io::StdoutLock<'_>>,
    stop: Option<&AtomicBool>,
) -> Res<()> {
    let period = Duration::from_millis(ms);
    let mut next = Instant::now();
    while next < deadline {
        if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            if let Some(rest) = deadline.checked_duration_since(Instant::now()) {
                std::thread::sleep(rest);
            }
            return Ok(());
        }
        for (i, a) in agents.iter_mut().enumerate() {
            let nonce = a.next_nonce() | (i as u64) << crate::procs::REPORT_SOCKET_SHIFT;
            if a.beat(Status::Ok, 0) == BeatOutcome::Sent {
                if let Some(out) = report.as_deref_mut() {
                    let t = monotonic_ns();
                    let mut rec = [0u8; crate::procs::REPORT_LEN];
                    rec[..8].copy_from_slice(&nonce.to_le_bytes());
                    rec[8..].copy_from_slice(&t.to_le_bytes());
                    // A closed pipe means the harness is gone: stop.
                    out.write_all(&rec)?;
                    out.flush()?;
                }
            }
        }
        next += period;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    Ok(())
}
