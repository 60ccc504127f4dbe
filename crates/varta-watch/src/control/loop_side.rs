//! The detection loop's handle on the control API: creation (socket bound
//! before the HTTP thread starts), one snapshot chunk per wake-up, reload
//! requests handed to the daemon, and the bookkeeping `/v1/status` reads.

use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use tokio::sync::watch;

use super::mirror::{Changes, Copier, Mirror, SYNC_AT};
use super::snapshot::{Extras, Pool};
use super::socket::ControlSocket;
use super::{lock, ControlApi, LastReload, ReloadOutcome, ReloadReply, Settings, Shared};
use crate::identity::{NameId, Registry};
use crate::ingest::BindError;
use crate::policy::Names;
use crate::recovery::history::RecoveryHistory;
use crate::tracker::Tracker;

/// The loop side of the control API.
pub struct ControlLoop {
    shared: Arc<Shared>,
    copier: Option<Copier>,
    /// Every slot as a record, kept current from the change marks.
    mirror: Mirror,
    /// Slots changed between recent snapshots.
    changes: Changes,
    reloads: Receiver<ReloadReply>,
    socket: ControlSocket,
}

impl ControlLoop {
    /// Binds the control socket and prepares the shared state. Returns the
    /// loop side, the [`ControlApi`] for the HTTP server and the listener
    /// it serves.
    pub fn bind(
        path: &std::path::Path,
        waker: Arc<mio::Waker>,
        registry: Arc<Registry>,
        history: Option<Arc<RecoveryHistory>>,
        settings: Settings,
    ) -> Result<(ControlLoop, ControlApi, std::os::unix::net::UnixListener), BindError> {
        let (socket, listener) = ControlSocket::bind(path)?;
        let (tx, rx) = std::sync::mpsc::channel();
        let shared = Arc::new(Shared {
            wanted: Default::default(),
            waker,
            latest: Default::default(),
            published: watch::channel(0).0,
            pool: Pool::default(),
            reloads: std::sync::Mutex::new(tx),
            settings: std::sync::Mutex::new(settings),
            last_reload: Default::default(),
            listeners: Default::default(),
            started: std::time::Instant::now(),
            registry,
            history,
            stats: Default::default(),
        });
        Ok((
            ControlLoop {
                shared: shared.clone(),
                copier: None,
                mirror: Mirror::default(),
                changes: Changes::default(),
                reloads: rx,
                socket,
            },
            ControlApi::new(shared),
            listener,
        ))
    }

    /// State shared with the HTTP side.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The control socket's path.
    pub fn path(&self) -> &std::path::Path {
        self.socket.path()
    }

    /// Reload requests waiting; answer each with the outcome.
    pub fn take_reloads(&self) -> Vec<ReloadReply> {
        self.reloads.try_iter().collect()
    }

    /// Records a reload (from the API or SIGHUP) and the settings now in
    /// force.
    pub fn note_reload(&self, outcome: &ReloadOutcome, cfg: &crate::config::Config) {
        let at_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        *lock(&self.shared.last_reload) = Some(LastReload {
            at_unix_ms,
            outcome: outcome.clone(),
        });
        *lock(&self.shared.settings) = Settings::of(cfg);
    }

    /// On a loop wake-up: starts a snapshot if one is wanted, copies one
    /// chunk of it, and publishes it after the last one. More to copy
    /// re-wakes the loop, so ingest batches run between chunks.
    pub fn step(
        &mut self,
        now_ns: u64,
        tracker: &mut Tracker,
        names: &Names,
        extras: impl FnOnce(&Tracker) -> Extras,
    ) {
        // Copier::start syncs the mirror first; that sync counts as this
        // snapshot's loop time (maintain() times the background ones).
        if self.copier.is_none() && self.shared.wanted.swap(false, Ordering::AcqRel) {
            self.copier = Some(Copier::start(
                &mut self.mirror,
                &mut self.changes,
                &self.shared.pool,
                tracker,
                names,
            ));
        }
        let Some(c) = &mut self.copier else {
            return;
        };
        if !c.step(&self.mirror) {
            let _ = self.shared.waker.wake();
            return;
        }
        let c = self.copier.take().expect("checked above");
        let snap = c.finish(tracker, extras, now_ns);
        let stats = &self.shared.stats;
        stats.snapshot_seconds.observe(snap.loop_time.as_secs_f64());
        stats
            .snapshot_chunk_seconds
            .observe(snap.longest_chunk.as_secs_f64());
        tracing::debug!(
            slots = tracker.slot_count(),
            copied = snap.copied,
            full = snap.full,
            loop_us = snap.loop_time.as_micros() as u64,
            longest_chunk_us = snap.longest_chunk.as_micros() as u64,
            "control API: agents snapshot published"
        );
        // The old snapshot, if no request holds it any more, returns its
        // buffers to the pool as it drops here.
        *lock(&self.shared.latest) = Some(Arc::new(snap));
        self.shared.published.send_modify(|g| *g += 1);
    }

    /// After an ingest batch: once [`SYNC_AT`] changed slots are pending,
    /// applies them to the mirror (never while a snapshot copies from it),
    /// so a snapshot never starts with more than that to apply.
    pub fn maintain(&mut self, tracker: &mut Tracker, names: &Names) {
        if self.copier.is_some() || tracker.pending_changes() < SYNC_AT {
            return;
        }
        let t = std::time::Instant::now();
        let n = self.mirror.sync(tracker, names, &mut self.changes.current);
        let stats = &self.shared.stats;
        let d = t.elapsed();
        stats.mirror_sync_seconds.observe(d.as_secs_f64());
        stats.mirror_synced.fetch_add(n as u64, Ordering::Relaxed);
        stats.mirror_syncs.fetch_add(1, Ordering::Relaxed);
        stats
            .mirror_sync_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Whether a snapshot copy is under way (the loop must come back).
    pub fn copying(&self) -> bool {
        self.copier.is_some()
    }
}

/// The extras of a snapshot: classes and counts from the tracker, the
/// given-up count from recovery, missing names from the policy engine.
pub fn extras(tracker: &Tracker, given_up: u64, required: &[(NameId, bool)]) -> Extras {
    Extras {
        class_threshold_ns: (0..tracker.class_count())
            .map(|c| tracker.class_timeouts(c as u8).threshold_ns)
            .collect(),
        counts: tracker.counts(),
        given_up,
        missing: required
            .iter()
            .filter(|(_, present)| !present)
            .map(|(n, _)| *n)
            .collect(),
    }
}
