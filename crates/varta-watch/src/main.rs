//! `varta-watch`: parse configuration, set up logging, run the observer.
//! Exit codes: 0 clean shutdown (or --help), 2 invalid configuration,
//! 1 runtime failure.

use std::process::ExitCode;

use varta_watch::config::{self, Loaded, LogFormat};
use varta_watch::daemon::Daemon;
use varta_watch::health::notify::SystemdEnv;

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VARTA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let config = match config::load(std::env::args_os()) {
        Ok(Loaded::Run(c)) => c,
        Ok(Loaded::Help(text) | Loaded::Version(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("varta-watch: error: {e}");
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    init_logging(config.log_format);
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let mut daemon = match Daemon::new(config.clone(), None, Vec::new()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("varta-watch: error: {e}");
            return ExitCode::from(1);
        }
    };
    daemon.set_systemd(SystemdEnv::from_env());
    tracing::info!(
        socket = %daemon.socket_path().display(),
        threshold_ms = config.threshold.as_millis() as u64,
        tracker_capacity = config.tracker_capacity,
        rcvbuf_granted = daemon.granted_rcvbuf(),
        "varta-watch listening on {}",
        daemon.socket_path().display()
    );
    // Bound addresses on stdout, one line each (metrics first, as before
    // UDP existed), so a script that asked for port 0 can read the port.
    // Written without println!: a reader that closed the pipe must not
    // take the observer down.
    use std::io::Write;
    let mut stdout = std::io::stdout();
    if let Some(addr) = daemon.metrics_addr() {
        let _ = writeln!(stdout, "metrics: http://{addr}/metrics");
        let _ = stdout.flush();
        tracing::info!(%addr, "serving /metrics, /-/healthy and /-/ready on http://{addr}");
    }
    if let Some(path) = daemon.control_path() {
        let _ = writeln!(stdout, "control: {}", path.display());
        let _ = stdout.flush();
        tracing::info!(path = %path.display(), "control API listening on {}", path.display());
    }
    if let Some((addr, mode)) = daemon.udp_addr() {
        let _ = writeln!(stdout, "udp: {addr}");
        let _ = stdout.flush();
        let keys = daemon.udp_keys().unwrap_or_default();
        tracing::info!(%addr, mode, keys = %keys, "udp listening on {addr} ({mode})");
    }
    match daemon.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("varta-watch: error: {e}");
            ExitCode::from(1)
        }
    }
}
