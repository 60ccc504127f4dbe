//! The top-level command line: global options, one variant per subcommand
//! group, and the exit-status convention every subcommand follows.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::client::{ClientError, Control};
use crate::ui::ColorWhen;
use crate::{agents, audit, events, frame, gen, keygen, reload, status};

/// Exit status: the check passed / the command succeeded.
pub const EXIT_OK: u8 = 0;
/// Exit status: the check ran and found a problem, or the observer could
/// not be reached or refused the request.
pub const EXIT_FAIL: u8 = 1;
/// Exit status: the input could not be read or the arguments are unusable
/// (clap's own usage errors use 2 as well).
pub const EXIT_UNUSABLE: u8 = 2;

/// Operator tools for Varta, the process-liveness watchdog.
///
/// `status`, `agents`, `agent`, `events` and `reload` ask the running
/// observer (varta-watch) over its control socket; `frame decode`,
/// `keygen` and `audit verify` work offline.
///
/// Exit status: 0 success, 1 a check failed or the command could not be
/// done (the observer unreachable, an error answer), 2 unreadable input or
/// bad usage.
#[derive(Debug, Parser)]
#[command(
    name = "varta",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Options shared by every subcommand.
    #[command(flatten)]
    pub global: Global,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by every subcommand.
#[derive(Debug, Args)]
pub struct Global {
    /// The observer's control socket (varta-watch --control-socket).
    /// Default: $VARTA_CONTROL_SOCKET, else the observer's default:
    /// $XDG_RUNTIME_DIR/varta.ctl, /run/varta/varta.ctl when run as root,
    /// /tmp/varta-UID/varta.ctl without XDG_RUNTIME_DIR.
    #[arg(long, global = true, value_name = "PATH")]
    pub control_socket: Option<PathBuf>,

    /// The observer's beat socket (varta-watch --socket), for an observer
    /// started with its own --socket and no --control-socket: its control
    /// socket is that path with the extension .ctl, as varta-watch derives
    /// it. --control-socket wins over it, it wins over
    /// $VARTA_CONTROL_SOCKET.
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Give up on the observer after this many milliseconds (connecting
    /// and the whole answer; a followed event stream only waits this long
    /// for its start).
    #[arg(long, global = true, value_name = "MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: u64,

    /// Colour: `auto` on a terminal unless NO_COLOR is set, `always`,
    /// `never`.
    #[arg(long, global = true, value_name = "WHEN", default_value = "auto")]
    pub color: ColorWhen,
}

impl Global {
    /// The control socket to use: `--control-socket`, else `--socket`
    /// with the extension `.ctl`, else `$VARTA_CONTROL_SOCKET`, else the
    /// observer's default (`varta.ctl` beside the default beat socket).
    pub fn control_path(&self) -> PathBuf {
        if let Some(p) = &self.control_socket {
            return p.clone();
        }
        if let Some(beat) = &self.socket {
            return beat.with_extension("ctl");
        }
        match std::env::var_os(CONTROL_SOCKET_ENV) {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => default_control_socket(),
        }
    }

    /// A client for the control socket.
    pub fn control(&self) -> Result<Control, ClientError> {
        Control::new(self.control_path(), Duration::from_millis(self.timeout_ms))
    }
}

/// The environment variable naming the control socket.
pub const CONTROL_SOCKET_ENV: &str = "VARTA_CONTROL_SOCKET";

/// `varta.ctl` in the directory of varta-vlp's default beat socket — the
/// observer derives its default the same way.
pub fn default_control_socket() -> PathBuf {
    let sock = varta_vlp::default_socket_path();
    sock.with_file_name("varta.ctl")
}

/// Subcommand groups.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Summary of the observer, and the agents that need attention.
    ///
    /// Shows version, uptime, listeners, threshold, rules, agents per
    /// state and the last reload, then a table of stalled, given-up and
    /// missing agents (at most --max-rows; `varta agents --state stalled`
    /// lists them all).
    ///
    /// Exit status: 0 the observer answered (whatever the agents' states);
    /// 1 it could not be reached or refused.
    #[command(after_help = "Examples:\n  varta status\n  varta status --json | jq .status.counts")]
    Status(status::StatusArgs),

    /// List tracked agents, ordered by pid, page by page as the observer
    /// sends them.
    #[command(
        after_help = "Examples:\n  varta agents\n  varta agents --state stalled,given_up --name 'nginx*'\n  varta agents --json | jq -r 'select(.origin != \"kernel_attested\") | .pid'"
    )]
    Agents(agents::AgentsArgs),

    /// Everything the observer knows about one agent.
    #[command(after_help = "Examples:\n  varta agent 4242\n  varta agent 4242 --json")]
    Agent(agents::AgentArgs),

    /// Recent events, or a live stream of them with --follow.
    ///
    /// With --follow it runs until Ctrl-C (exit 0) or until the observer
    /// ends the stream (it says why, e.g. a reader too slow was dropped;
    /// exit 1).
    #[command(
        after_help = "Examples:\n  varta events --limit 20\n  varta events --follow --kind stall,recovered,exit\n  varta events --follow --json > events.ndjson"
    )]
    Events(events::EventsArgs),

    /// Re-read the observer's configuration (the same as SIGHUP) and show
    /// what changed.
    ///
    /// Exit status: 0 applied or unchanged; 1 refused (the error says
    /// why) or the observer could not be reached.
    #[command(after_help = "Examples:\n  varta reload")]
    Reload(reload::ReloadArgs),

    /// Explain VLP wire frames.
    #[command(subcommand)]
    Frame(frame::FrameCommand),

    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  varta completions bash > /etc/bash_completion.d/varta\n  varta completions zsh > \"${fpath[1]}/_varta\"\n  varta completions fish > ~/.config/fish/completions/varta.fish"
    )]
    Completions(gen::CompletionsArgs),

    /// Print the man page, or write one page per subcommand into a
    /// directory.
    #[command(
        after_help = "Examples:\n  varta man | man -l -\n  varta man --out /usr/local/share/man/man1"
    )]
    Man(gen::ManArgs),

    /// Work with the observer's recovery audit log.
    #[command(subcommand)]
    Audit(audit::AuditCommand),

    /// Write a new random key file for the observer's key and token
    /// options.
    ///
    /// Writes 32 bytes from the operating system's random source as 64
    /// lowercase hex characters and a newline to PATH, created with mode
    /// 0600 (your umask can only narrow it) and owned by you: the form
    /// varta-watch's --key-file, --master-key-file, --prom-token-file and
    /// --recovery-audit-key-file read (and `varta audit verify --key-file`).
    /// --accepted-key-file takes one key per line: create it with `varta
    /// keygen FILE`, then append further keys with `varta keygen - >> FILE`.
    ///
    /// The key is never printed, except with PATH `-`, which writes it to
    /// standard output (and nowhere else) for appending or piping. An
    /// existing PATH is left alone unless --force; a symlink at PATH is
    /// refused even with --force.
    ///
    /// Exit status: 0 the key was written; 1 it was not (one line on stderr
    /// says why).
    #[command(
        after_help = "Examples:\n  varta keygen /etc/varta/audit.key          # for --recovery-audit-key-file\n  varta keygen --force /etc/varta/prom.token  # rotate the /metrics token\n  varta keygen - >> /etc/varta/accepted.keys  # one more key for --accepted-key-file"
    )]
    Keygen(keygen::KeygenArgs),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    let g = &cli.global;
    let code = match cli.command {
        Command::Status(args) => status::run(g, &args),
        Command::Agents(args) => agents::run_list(g, &args),
        Command::Agent(args) => agents::run_one(g, &args),
        Command::Events(args) => events::run(g, &args),
        Command::Reload(args) => reload::run(g, &args),
        Command::Frame(cmd) => frame::run(g, cmd),
        Command::Completions(args) => gen::completions(&args),
        Command::Man(args) => gen::man(&args),
        Command::Audit(cmd) => audit::run(cmd),
        Command::Keygen(args) => keygen::run(args),
    };
    ExitCode::from(code)
}

/// Prints a one-line error for unusable input (exit 2).
pub fn unusable(msg: impl std::fmt::Display) -> u8 {
    eprintln!("varta: {msg}");
    EXIT_UNUSABLE
}

/// Prints a one-line error (exit 1).
pub fn fail(msg: impl std::fmt::Display) -> u8 {
    eprintln!("varta: {msg}");
    EXIT_FAIL
}

/// Why an observer subcommand stopped early.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    /// The control API call failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Writing to standard output failed.
    #[error("writing to standard output: {0}")]
    Output(#[from] std::io::Error),
}

/// The exit status of an observer subcommand: its own on success, 0 when
/// standard output was closed by the reader, else 1 with one line on
/// stderr.
pub fn report(r: Result<u8, CmdError>) -> u8 {
    match r {
        Ok(code) => code,
        Err(CmdError::Output(e)) if crate::ui::is_broken_pipe(&e) => EXIT_OK,
        Err(e) => fail(e),
    }
}

/// The exit status of a finished write to standard output: a reader that
/// went away (`| head`) is success, any other write error a failure.
pub fn finish_output(r: std::io::Result<()>) -> u8 {
    match r {
        Ok(()) => EXIT_OK,
        Err(e) if crate::ui::is_broken_pipe(&e) => EXIT_OK,
        Err(e) => fail(format_args!("writing to standard output: {e}")),
    }
}
