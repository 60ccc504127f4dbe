//! The recovery thread. It owns every child, the policy table and the audit
//! log, and sleeps in its own epoll until a request arrives, a child exits
//! (pidfd), a capture pipe has output, or a deadline (retry, timeout, kill
//! ladder) comes due. Nothing here ever runs on the detection thread:
//! spawning (fork/exec), reaping, pipe reads and audit submission all
//! happen here, so a mass stall with a slow command cannot delay detection.

use std::collections::BTreeSet;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use rustc_hash::FxHashMap;
use rustix::process::{Pid, Signal};
use varta_audit::Record;

use super::child::{excerpt_source, ReadEnd, Running, Stream};
use super::command::{AgentInfo, CommandTemplate};
use super::policy::{Cap, Decision, Key, Policy, Trigger, TriggerKind};
use super::{RecoveryStats, Report, Request};
use crate::audit::AuditLog;
use crate::clock::ObserverClock;
use crate::config::RecoveryConfig;
use crate::events::RecoveryOutcome;
use crate::export::metrics::Observations;
use crate::identity::Registry;

/// The recovery part of one `[[agent]]` rule, ready to use.
#[derive(Debug, Default)]
pub(super) struct RuleCommand {
    /// Its `recovery-exec`, replacing the global command.
    template: Option<CommandTemplate>,
    /// `recovery = false`.
    disabled: bool,
    /// Its storm cap.
    cap: Cap,
    /// The name it requires (its `missing` runs its command).
    required_name: Option<String>,
}

/// Every rule's recovery part, by rule index.
pub(super) fn rule_commands(cfg: &RecoveryConfig) -> Vec<RuleCommand> {
    let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    cfg.rules
        .iter()
        .enumerate()
        .map(|(i, r)| RuleCommand {
            template: r
                .exec
                .as_deref()
                .and_then(|e| CommandTemplate::for_rule(e, i, cfg)),
            disabled: r.disabled,
            cap: Cap {
                max_attempts: r.max_attempts,
                window_ns: r.window.map(ns),
            },
            required_name: r.required_name.clone(),
        })
        .collect()
}

/// The runner's own wake-up (requests from the detection thread).
pub(super) const WAKER: Token = Token(0);

/// Longest excerpt of captured output kept in an audit `complete` record.
const EXCERPT_BYTES: usize = 120;

/// Token of a child's pidfd (`k` = 0), stdout (1) or stderr (2).
fn token(child: u32, k: usize) -> Token {
    Token(1 + child as usize * 3 + k)
}

fn untoken(t: Token) -> (u32, usize) {
    let v = t.0 - 1;
    ((v / 3) as u32, v % 3)
}

/// Everything the thread needs, moved into it at start.
pub(super) struct Runner {
    pub poll: Poll,
    pub requests: Receiver<Request>,
    pub reports: SyncSender<Report>,
    pub main_waker: Arc<Waker>,
    pub policy: Policy,
    /// The global command (None when only rules set one).
    pub template: Option<CommandTemplate>,
    /// The rules' recovery parts, by rule index.
    pub rules: Vec<RuleCommand>,
    /// Turns trigger identities into names (set by the tap's `with_names`).
    pub registry: Option<Arc<Registry>>,
    pub timeout: Option<Duration>,
    pub kill_grace: Duration,
    pub capture_cap: usize,
    pub audit: Option<AuditLog>,
    pub clock: ObserverClock,
    pub stats: Arc<RecoveryStats>,
    /// Per-pid summaries for the control API.
    pub history: Arc<super::history::RecoveryHistory>,
    pub children: FxHashMap<u32, Running>,
    /// (deadline, child pid): start the kill ladder.
    pub timeouts: BTreeSet<(Instant, u32)>,
    /// (deadline, process group): SIGKILL what is left of the group.
    pub group_kills: BTreeSet<(Instant, u32)>,
    /// Pipes that hit their read budget and still have data.
    pub pending_reads: Vec<(u32, Stream)>,
    pub wake_main: bool,
    /// Recovery durations and table reclaims for metrics, when served.
    pub observations: Option<Arc<Observations>>,
    /// `policy.reclaims()` already reported to `observations`.
    pub reclaims_seen: u64,
}

impl Runner {
    fn now_ns(&mut self) -> u64 {
        self.clock.now().0
    }

    /// Runs until a shutdown request has been carried out.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut shutdown_by: Option<Instant> = None;
        loop {
            let timeout = self.poll_timeout(shutdown_by);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "recovery thread: epoll_wait failed; recovery stops");
                    break;
                }
            }
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {}
                    t => {
                        let (child, k) = untoken(t);
                        match k {
                            0 => self.reap(child),
                            1 => self.read_pipe(child, Stream::Out),
                            _ => self.read_pipe(child, Stream::Err),
                        }
                    }
                }
            }
            for (child, which) in std::mem::take(&mut self.pending_reads) {
                self.read_pipe(child, which);
            }
            if shutdown_by.is_none() {
                if let Some(grace) = self.drain_requests() {
                    shutdown_by = Some(self.begin_shutdown(grace));
                }
            }
            self.run_deadlines(shutdown_by.is_some());
            self.flush_reports();
            if let Some(by) = shutdown_by {
                if self.children.is_empty() || Instant::now() >= by {
                    break;
                }
            }
        }
        self.finish();
    }

    fn poll_timeout(&self, shutdown_by: Option<Instant>) -> Option<Duration> {
        if !self.pending_reads.is_empty() {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let mut next: Option<Instant> = [
            self.timeouts.first().map(|&(t, _)| t),
            self.group_kills.first().map(|&(t, _)| t),
            shutdown_by,
        ]
        .into_iter()
        .flatten()
        .min();
        if shutdown_by.is_none() {
            if let Some(at_ns) = self.policy.next_deadline() {
                let mut clock = self.clock.clone();
                let wait = Duration::from_nanos(at_ns.saturating_sub(clock.now().0));
                next = Some(next.map_or(now + wait, |n| n.min(now + wait)));
            }
        }
        // Round up so a wake-up is never a hair early and spins.
        next.map(|t| t.saturating_duration_since(now) + Duration::from_micros(100))
    }

    /// Handles queued requests; returns the shutdown grace if asked to stop.
    fn drain_requests(&mut self) -> Option<Duration> {
        loop {
            match self.requests.try_recv() {
                Ok(Request::Trigger(t)) => {
                    let now = self.now_ns();
                    self.decide(now, t);
                }
                Ok(Request::Beat(key)) => {
                    if self.policy.beat(key) {
                        let pid = match key {
                            Key::Pid(pid) => pid,
                            Key::Name(_) => 0,
                        };
                        self.history.cleared(pid);
                        self.report(pid, 0, RecoveryOutcome::GivenUpCleared);
                    }
                }
                Ok(Request::Registry(r)) => self.registry = Some(r.0),
                Ok(Request::Reconfigure(cfg)) => {
                    self.policy.reconfigure(super::policy_settings(&cfg));
                    self.template = CommandTemplate::new(&cfg);
                    self.rules = rule_commands(&cfg);
                    self.timeout = cfg.timeout;
                    self.kill_grace = cfg.kill_grace;
                    self.capture_cap = if cfg.capture {
                        cfg.capture_bytes as usize
                    } else {
                        0
                    };
                }
                Ok(Request::Shutdown(grace)) => return Some(grace),
                Err(TryRecvError::Empty) => return None,
                // The daemon is gone without asking: stop, children get
                // the ladder with the default kill grace.
                Err(TryRecvError::Disconnected) => return Some(self.kill_grace),
            }
        }
    }

    /// Which command `t` runs: `Some(None)` the global one, `Some(Some(i))`
    /// rule `i`'s; None: no recovery (no command, or `recovery = false`).
    /// Fills in the rule of a `missing` trigger (the rule requiring the
    /// name) and the rule's storm cap.
    fn resolve(&mut self, t: &mut Trigger) -> Option<Option<usize>> {
        if t.kind == TriggerKind::Missing && t.rule.is_none() {
            if let (Some(reg), Some(name)) = (&self.registry, t.name) {
                let name = reg.name_str(name);
                t.rule = self
                    .rules
                    .iter()
                    .position(|r| r.required_name.as_deref() == Some(&*name))
                    .and_then(|i| u16::try_from(i).ok());
            }
        }
        let rule = t.rule.map(usize::from).filter(|&i| i < self.rules.len());
        if let Some(i) = rule {
            let r = &self.rules[i];
            if r.disabled {
                let n = self.stats.suppressed.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::debug!(
                        pid = t.pid,
                        rule = i + 1,
                        suppressed_total = n,
                        "not recovered: its [[agent]] rule says recovery = false"
                    );
                }
                return None;
            }
            t.cap = r.cap;
            if r.template.is_some() {
                return Some(Some(i));
            }
        }
        self.template.as_ref().map(|_| None)
    }

    fn command_for(&self, which: Option<usize>) -> Option<&CommandTemplate> {
        match which {
            Some(i) => self.rules.get(i).and_then(|r| r.template.as_ref()),
            None => self.template.as_ref(),
        }
    }

    /// Who `t` is about, as far as the registry knows.
    fn who(&self, t: &Trigger) -> AgentInfo {
        let mut who = AgentInfo::pid(t.pid);
        let Some(reg) = &self.registry else {
            return who;
        };
        if t.kind == TriggerKind::Missing {
            who.name = t.name.map(|n| reg.name_str(n));
        } else if let Some(id) = t.identity {
            let rec = reg.get(id);
            who.name = Some(rec.name.clone());
            who.unit = rec.unit.clone();
            who.container = rec.container.clone();
            who.comm = rec.comm.clone();
            who.exe = rec.exe.clone();
        }
        who
    }

    fn decide(&mut self, now_ns: u64, mut t: Trigger) {
        let Some(which) = self.resolve(&mut t) else {
            return;
        };
        match self.policy.decide(now_ns, t) {
            Decision::Spawn => self.spawn(now_ns, t, which),
            Decision::Debounced { .. } => self.report(t.pid, 0, RecoveryOutcome::Debounced),
            Decision::Refused(reason) => {
                let who = audit_agent(&self.who(&t));
                self.audit_for(
                    Record::Refused {
                        wallclock_ms: varta_audit::wallclock_ms_now(),
                        observer_ns: now_ns,
                        agent_pid: t.pid,
                        reason: reason.as_str().to_string(),
                    },
                    who,
                );
                self.report(t.pid, 0, RecoveryOutcome::Refused(reason));
            }
            Decision::GivenUp => {
                let who = audit_agent(&self.who(&t));
                self.audit_for(
                    Record::Refused {
                        wallclock_ms: varta_audit::wallclock_ms_now(),
                        observer_ns: now_ns,
                        agent_pid: t.pid,
                        reason: "given_up".to_string(),
                    },
                    who,
                );
                self.report(t.pid, 0, RecoveryOutcome::GivenUp);
            }
        }
    }

    fn spawn(&mut self, now_ns: u64, t: Trigger, which: Option<usize>) {
        let who = self.who(&t);
        let Some(template) = self.command_for(which) else {
            self.policy.child_done(t.key());
            return;
        };
        let (mut cmd, template_len) = template.command(&who, t.kind);
        let program = template.argv(&who).swap_remove(0);
        let source = template.source().to_string();
        let audit_who = audit_agent(&who);
        let spawned = cmd
            .spawn()
            .and_then(|c| Running::new(t.key(), t.pid, t.kind, c, now_ns, self.capture_cap));
        let mut running = match spawned {
            Ok(r) => r,
            Err(e) => {
                self.policy.child_done(t.key());
                let errno = e.raw_os_error().unwrap_or(0);
                tracing::debug!(pid = t.pid, program, error = %e, "recovery spawn failed");
                self.audit_for(
                    Record::Complete {
                        wallclock_ms: varta_audit::wallclock_ms_now(),
                        observer_ns: now_ns,
                        agent_pid: t.pid,
                        child_pid: 0,
                        outcome: "spawn_failed".to_string(),
                        exit_code: None,
                        signal: None,
                        duration_ns: 0,
                        stdout_len: 0,
                        stderr_len: 0,
                        truncated: false,
                        excerpt: None,
                    },
                    audit_who,
                );
                self.report(t.pid, 0, RecoveryOutcome::SpawnFailed { errno });
                return;
            }
        };
        running.who = audit_who.clone();
        let child = running.pid();
        let registry = self.poll.registry();
        let mut ok = registry
            .register(
                &mut SourceFd(&running.pidfd.as_raw_fd()),
                token(child, 0),
                Interest::READABLE,
            )
            .is_ok();
        for (k, fd) in running.pipe_fds().into_iter().enumerate() {
            if let Some(fd) = fd {
                ok &= registry
                    .register(&mut SourceFd(&fd), token(child, k + 1), Interest::READABLE)
                    .is_ok();
            }
        }
        if !ok {
            // Without its pidfd registered the exit would never wake us;
            // should never happen (epoll only fails on ENOMEM here).
            tracing::error!(
                pid = t.pid,
                child,
                "cannot watch the recovery child; it will be killed"
            );
        }
        self.audit_for(
            Record::Spawn {
                wallclock_ms: varta_audit::wallclock_ms_now(),
                observer_ns: now_ns,
                agent_pid: t.pid,
                child_pid: child,
                mode: "exec".to_string(),
                program,
                source,
                template_len: u32::try_from(template_len).unwrap_or(u32::MAX),
            },
            audit_who,
        );
        if let Some(timeout) = self.timeout {
            self.timeouts.insert((running.started + timeout, child));
        }
        self.children.insert(child, running);
        self.stats
            .running
            .store(self.children.len() as u64, Ordering::Relaxed);
        self.report(t.pid, child, RecoveryOutcome::Spawned);
        if !ok {
            self.start_ladder(child, Instant::now());
        }
        // The child may have exited before its pidfd was registered; an
        // already-readable pidfd still reports readiness on registration
        // (epoll checks the current state), so nothing is missed.
    }

    fn read_pipe(&mut self, child: u32, which: Stream) {
        let Some(r) = self.children.get_mut(&child) else {
            return;
        };
        let fd: Option<RawFd> = r.pipe_fds()[match which {
            Stream::Out => 0,
            Stream::Err => 1,
        }];
        match r.read(which) {
            ReadEnd::Drained => {}
            ReadEnd::Budget => self.pending_reads.push((child, which)),
            ReadEnd::Closed => {
                if let Some(fd) = fd {
                    let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
                }
            }
        }
    }

    /// The pidfd is readable: the child has exited. Reap it and write its
    /// `complete` record.
    fn reap(&mut self, child: u32) {
        let Some(r) = self.children.get_mut(&child) else {
            return;
        };
        let status = match r.try_reap() {
            Ok(Some(s)) => Ok(s),
            Ok(None) => return,
            Err(e) => Err(e),
        };
        let Some(mut r) = self.children.remove(&child) else {
            return;
        };
        self.stats
            .running
            .store(self.children.len() as u64, Ordering::Relaxed);
        // Last output written before exit is still in the pipes.
        let _ = r.read(Stream::Out);
        let _ = r.read(Stream::Err);
        let registry = self.poll.registry();
        let _ = registry.deregister(&mut SourceFd(&r.pidfd.as_raw_fd()));
        for fd in r.pipe_fds().into_iter().flatten() {
            let _ = registry.deregister(&mut SourceFd(&fd));
        }
        r.close_pipes();
        self.pending_reads.retain(|&(c, _)| c != child);
        self.timeouts.retain(|&(_, c)| c != child);
        self.policy.child_done(r.key);
        let now_ns = self.now_ns();
        let duration_ns = u64::try_from(r.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let (out, err) = r.captured();
        let (audit_outcome, exit_code, signal, outcome) = match status {
            Ok(s) => {
                use std::os::unix::process::ExitStatusExt;
                let sig = s.signal();
                let code = s.code();
                let outcome = if r.killed {
                    RecoveryOutcome::Killed
                } else if s.success() {
                    RecoveryOutcome::ReapedZero
                } else {
                    RecoveryOutcome::ReapedNonzero {
                        code: code.unwrap_or_else(|| 128 + sig.unwrap_or(0)),
                    }
                };
                let label = if r.killed { "killed" } else { "reaped" };
                (label, code, sig, outcome)
            }
            Err(e) => {
                tracing::error!(child, error = %e, "cannot reap recovery child");
                (
                    "reap_failed",
                    None,
                    None,
                    RecoveryOutcome::ReapedNonzero { code: -1 },
                )
            }
        };
        if let Some(o) = &self.observations {
            o.record_recovery_duration(duration_ns);
        }
        let excerpt = (self.capture_cap > 0)
            .then(|| varta_audit::escape_excerpt(excerpt_source(out, err, EXCERPT_BYTES)));
        let who = r.who.clone();
        self.audit_for(
            Record::Complete {
                wallclock_ms: varta_audit::wallclock_ms_now(),
                observer_ns: now_ns,
                agent_pid: r.agent,
                child_pid: child,
                outcome: audit_outcome.to_string(),
                exit_code,
                signal,
                duration_ns,
                stdout_len: out.len() as u32,
                stderr_len: err.len() as u32,
                truncated: r.truncated,
                excerpt,
            },
            who,
        );
        self.report(r.agent, child, outcome);
    }

    /// SIGTERM to the child's whole process group now, SIGKILL to what is
    /// left of it after the kill grace.
    fn start_ladder(&mut self, child: u32, now: Instant) {
        let grace = self.kill_grace;
        self.ladder(child, now, grace);
    }

    fn ladder(&mut self, child: u32, now: Instant, grace: Duration) {
        let Some(r) = self.children.get_mut(&child) else {
            return;
        };
        if !r.killed {
            r.killed = true;
            signal_group(child, Signal::TERM);
        }
        // Even if the child itself dies of SIGTERM, a grandchild that
        // ignores it must not linger: the group gets SIGKILL regardless.
        self.group_kills.insert((now + grace, child));
    }

    fn run_deadlines(&mut self, shutting_down: bool) {
        let now = Instant::now();
        while let Some(&(at, child)) = self.timeouts.first() {
            if at > now {
                break;
            }
            self.timeouts.pop_first();
            tracing::debug!(child, "recovery child overran recovery-timeout-ms");
            self.start_ladder(child, now);
        }
        while let Some(&(at, pgid)) = self.group_kills.first() {
            if at > now {
                break;
            }
            self.group_kills.pop_first();
            signal_group(pgid, Signal::KILL);
        }
        if !shutting_down {
            let now_ns = self.now_ns();
            for t in self.policy.due(now_ns) {
                self.decide(now_ns, t);
            }
        }
    }

    fn begin_shutdown(&mut self, grace: Duration) -> Instant {
        let now = Instant::now();
        let kill_at = grace.min(self.kill_grace).min(grace / 2 + grace / 4);
        let pids: Vec<u32> = self.children.keys().copied().collect();
        if !pids.is_empty() {
            tracing::info!(
                children = pids.len(),
                grace_ms = grace.as_millis() as u64,
                "shutdown: stopping running recovery children"
            );
        }
        for child in pids {
            self.ladder(child, now, kill_at);
        }
        now + grace
    }

    /// After the loop: anything still running is SIGKILLed and reaped so
    /// its `complete` record is written, then the audit log is flushed.
    fn finish(mut self) {
        let pids: Vec<u32> = self.children.keys().copied().collect();
        for child in pids {
            if let Some(r) = self.children.get_mut(&child) {
                r.killed = true;
                signal_group(child, Signal::KILL);
                // SIGKILL cannot be ignored: the wait is short.
                let _ = r.child.wait();
            }
            // `wait` collected the status; `reap` sees it again through
            // `try_wait` and writes the record.
            self.reap(child);
        }
        self.flush_reports();
        if let Some(audit) = self.audit.take() {
            let report = audit.shutdown(Instant::now() + Duration::from_secs(5));
            tracing::debug!(?report, "audit log closed");
        }
    }

    /// Submits `rec` about `who` (its name and unit fill schema v3's
    /// columns).
    fn audit_for(&mut self, rec: Record, who: Option<varta_audit::Agent>) {
        if let Some(a) = &self.audit {
            // A full queue is counted by the audit log itself.
            let _ = a.submit_for(rec, who);
        }
    }

    fn report(&mut self, pid: u32, child: u32, outcome: RecoveryOutcome) {
        if pid != 0 && outcome != RecoveryOutcome::GivenUpCleared {
            let key = Key::Pid(pid);
            let policy = &self.policy;
            self.history.record(
                pid,
                super::history::History {
                    attempts: policy.attempts(key),
                    last_outcome: Some(outcome.as_str()),
                    given_up: policy.is_given_up(key),
                },
                |p| policy.has(Key::Pid(p)),
            );
        }
        match self.reports.try_send(Report {
            pid,
            child,
            outcome,
        }) {
            Ok(()) => self.wake_main = true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.reports_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn flush_reports(&mut self) {
        self.stats
            .given_up
            .store(u64::from(self.policy.given_up_count()), Ordering::Relaxed);
        if let Some(o) = &self.observations {
            for _ in self.reclaims_seen..self.policy.reclaims() {
                o.record_recovery_table_reclaim();
            }
        }
        self.reclaims_seen = self.policy.reclaims();
        if std::mem::take(&mut self.wake_main) {
            let _ = self.main_waker.wake();
        }
    }
}

/// The audit columns of `who`: its name (`unknown` when not known) and unit.
fn audit_agent(who: &AgentInfo) -> Option<varta_audit::Agent> {
    Some(varta_audit::Agent {
        name: who
            .name
            .as_deref()
            .unwrap_or(super::command::UNKNOWN)
            .to_string(),
        unit: who.unit.as_deref().map(str::to_string),
    })
}

fn signal_group(pgid: u32, sig: Signal) {
    if let Some(pid) = i32::try_from(pgid).ok().and_then(Pid::from_raw) {
        // ESRCH: the group is already gone, which is the goal.
        let _ = rustix::process::kill_process_group(pid, sig);
    }
}
