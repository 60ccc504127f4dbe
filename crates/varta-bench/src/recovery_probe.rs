//! `varta-bench-recovery-probe FILE PID`: the recovery command of the
//! `recovery` scenario. The first thing it does is read CLOCK_MONOTONIC; it
//! then appends `PID NS\n` to FILE in one `write(2)` on an `O_APPEND`
//! descriptor (so concurrent probes never interleave) and exits. The harness
//! pairs NS with the stalled agent's last beat: how long after the stall was
//! due the observer had its recovery command running.
//!
//! It takes everything from argv: the observers clear the environment of
//! recovery children.

#![forbid(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Before anything else: this is "the recovery child has been exec'd".
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |ts| {
        ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
    });
    let mut args = std::env::args_os().skip(1);
    let (Some(file), Some(pid)) = (args.next(), args.next()) else {
        eprintln!("usage: varta-bench-recovery-probe FILE PID");
        return ExitCode::from(2);
    };
    let line = format!("{} {now}\n", pid.to_string_lossy());
    let written = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&file)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "varta-bench-recovery-probe: {}: {e}",
                std::path::Path::new(&file).display()
            );
            ExitCode::FAILURE
        }
    }
}
