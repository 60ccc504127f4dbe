//! One sender thread per Alertmanager target, so a dead or slow target
//! never delays another. The alert thread drops rendered alerts into the
//! target's outbox, keyed like the firing table: a newer notification of
//! the same alert replaces an older one still waiting, so a target that
//! was down gets the latest state, not the history. The sender takes
//! everything waiting, POSTs it in chunks of [`CHUNK`] alerts, and on a
//! failure retries the rest with exponential backoff ([`backoff`]), at most
//! [`MAX_RETRIES`] times; then the rest is dropped and counted (firing
//! alerts come back with the next resend anyway).

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::model::{self, Alert, Key};
use super::stats::{AlertStats, DropReason};

/// Alerts per POST: a mass stall of 10,000 agents is ten requests.
pub const CHUNK: usize = 1000;
/// Most alerts waiting per target; beyond it new ones are dropped
/// (`queue_full`). Distinct alerts only: repeats replace each other.
pub const MAX_PENDING: usize = 262_144;
/// Retries of one batch before it is dropped (`retries_exhausted`).
pub const MAX_RETRIES: u32 = 8;
/// First retry delay; doubles per retry up to [`BACKOFF_CAP`].
pub const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Longest delay between two retries.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// At most one failure log line per target this often.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Delay before retry number `retry` (1-based): 0.5 s, 1 s, 2 s, … ≤ 30 s.
pub fn backoff(retry: u32) -> Duration {
    let shift = retry.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(1 << shift).min(BACKOFF_CAP)
}

/// Why a POST did not deliver.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    /// Worth retrying: connection refused, timeout, 5xx, 408, 429.
    #[error("{0}")]
    Retry(String),
    /// The target refused the request itself (other 4xx, a redirect).
    #[error("{0}")]
    Rejected(String),
}

/// Sends one JSON body with a timeout.
pub type Post = Box<dyn FnMut(&[u8], Duration) -> Result<(), PostError> + Send>;

#[derive(Default)]
struct Outbox {
    pending: HashMap<Key, Alert>,
    /// Set at shutdown: flush until then, then give up.
    stop_at: Option<Instant>,
    finished: bool,
}

/// The alert thread's side of one sender.
pub struct Outlet {
    state: Mutex<Outbox>,
    cv: Condvar,
}

fn lock(m: &Mutex<Outbox>) -> MutexGuard<'_, Outbox> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Outlet {
    /// Queues `alerts` for the target `stats.targets[index]`.
    pub fn push(&self, alerts: &[(Key, Alert)], stats: &AlertStats, index: usize) {
        let mut o = lock(&self.state);
        let mut full = 0;
        for (k, a) in alerts {
            if o.pending.len() >= MAX_PENDING && !o.pending.contains_key(k) {
                full += 1;
                continue;
            }
            o.pending.insert(k.clone(), a.clone());
        }
        drop(o);
        if full > 0 {
            stats.targets[index].add_dropped(DropReason::QueueFull, full);
        }
        self.cv.notify_one();
    }

    /// Asks the sender to flush what it has and stop by `at`.
    pub fn stop(&self, at: Instant) {
        lock(&self.state).stop_at = Some(at);
        self.cv.notify_all();
    }

    /// Waits until the sender has stopped, at most until `deadline`.
    pub fn wait_finished(&self, deadline: Instant) -> bool {
        let mut o = lock(&self.state);
        while !o.finished {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            o = self
                .cv
                .wait_timeout(o, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

/// Starts the sender thread of `stats.targets[index]`.
pub fn start(
    index: usize,
    post: Post,
    timeout: Duration,
    stats: Arc<AlertStats>,
) -> std::io::Result<Arc<Outlet>> {
    let outlet = Arc::new(Outlet {
        state: Mutex::new(Outbox::default()),
        cv: Condvar::new(),
    });
    let worker = Worker {
        outlet: outlet.clone(),
        post,
        timeout,
        stats,
        index,
        inflight: Vec::new(),
        retries: 0,
        retry_at: None,
        last_log: None,
        suppressed: 0,
    };
    std::thread::Builder::new()
        .name(format!("varta-alert-{index}"))
        .spawn(move || worker.run())?;
    Ok(outlet)
}

struct Worker {
    outlet: Arc<Outlet>,
    post: Post,
    timeout: Duration,
    stats: Arc<AlertStats>,
    index: usize,
    /// Taken from the outbox, not yet delivered.
    inflight: Vec<(Key, Alert)>,
    retries: u32,
    retry_at: Option<Instant>,
    last_log: Option<Instant>,
    suppressed: u64,
}

impl Worker {
    fn run(mut self) {
        super::lower_priority();
        while let Some(stop_at) = self.next_batch() {
            self.send(stop_at);
        }
    }

    /// Waits until there is something to send (merging the outbox into
    /// the in-flight batch); None once stopped. Returns the shutdown
    /// deadline, if one is set.
    fn next_batch(&mut self) -> Option<Option<Instant>> {
        let outlet = self.outlet.clone();
        let mut o = lock(&outlet.state);
        loop {
            let now = Instant::now();
            let idle = self.inflight.is_empty() && o.pending.is_empty();
            if let Some(stop) = o.stop_at {
                if idle || now >= stop {
                    let left = self.inflight.len() + o.pending.len();
                    if left > 0 {
                        self.stats.targets[self.index].add_dropped(DropReason::Shutdown, left);
                        tracing::warn!(target_url = %self.url(), alerts = left, "alerts not delivered before shutdown");
                    }
                    o.finished = true;
                    outlet.cv.notify_all();
                    return None;
                }
            }
            let due = self.retry_at.is_none_or(|r| now >= r);
            if !idle && due {
                break;
            }
            let wake = match (self.retry_at.filter(|_| !idle), o.stop_at) {
                (Some(r), Some(s)) => Some(r.min(s)),
                (r, s) => r.or(s),
            };
            o = match wake {
                Some(w) => {
                    outlet
                        .cv
                        .wait_timeout(o, w.saturating_duration_since(now))
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => outlet.cv.wait(o).unwrap_or_else(|e| e.into_inner()),
            };
        }
        if !o.pending.is_empty() {
            let newer = std::mem::take(&mut o.pending);
            self.inflight.retain(|(k, _)| !newer.contains_key(k));
            self.inflight.extend(newer);
        }
        Some(o.stop_at)
    }

    fn url(&self) -> &str {
        &self.stats.targets[self.index].target
    }

    /// POSTs the in-flight batch chunk by chunk; schedules a retry of what
    /// is left after a failure.
    fn send(&mut self, stop_at: Option<Instant>) {
        let stats = self.stats.clone();
        let t = &stats.targets[self.index];
        let mut done = 0;
        let mut failure = None;
        for chunk in self.inflight.chunks(CHUNK) {
            let timeout = match stop_at {
                Some(s) => self
                    .timeout
                    .min(s.saturating_duration_since(Instant::now())),
                None => self.timeout,
            };
            if timeout.is_zero() {
                break;
            }
            let body = model::body(chunk.iter().map(|(_, a)| a));
            t.add_request();
            match (self.post)(&body, timeout) {
                Ok(()) => {
                    t.add_sent(chunk.len());
                    done += chunk.len();
                }
                Err(PostError::Rejected(why)) => {
                    t.add_dropped(DropReason::Rejected, chunk.len());
                    done += chunk.len();
                    failure = Some(format!("refused (not retried): {why}"));
                }
                Err(PostError::Retry(why)) => {
                    // The target is down or overloaded: the other chunks
                    // would fail the same way; retry them all later.
                    t.add_failed(chunk.len());
                    failure = Some(why);
                    break;
                }
            }
        }
        self.inflight.drain(..done);
        if self.inflight.is_empty() {
            self.retries = 0;
            self.retry_at = None;
        } else if self.retries >= MAX_RETRIES {
            t.add_dropped(DropReason::RetriesExhausted, self.inflight.len());
            failure = Some(format!(
                "{}; gave up after {} retries, dropped {} alerts (firing ones come back with the next resend)",
                failure.unwrap_or_default(),
                self.retries,
                self.inflight.len()
            ));
            self.inflight.clear();
            self.retries = 0;
            self.retry_at = None;
        } else {
            self.retries += 1;
            self.retry_at = Some(Instant::now() + backoff(self.retries));
        }
        if let Some(why) = failure {
            self.log_failure(&why);
        }
    }

    /// At most one line per [`LOG_EVERY`] per target.
    fn log_failure(&mut self, why: &str) {
        let now = Instant::now();
        if self
            .last_log
            .is_some_and(|l| now.duration_since(l) < LOG_EVERY)
        {
            self.suppressed += 1;
            return;
        }
        self.last_log = Some(now);
        let suppressed = std::mem::take(&mut self.suppressed);
        tracing::warn!(
            target_url = %self.url(),
            error = %why,
            retry = self.retries,
            waiting = self.inflight.len(),
            suppressed,
            "cannot push alerts to Alertmanager"
        );
    }
}

/// The real POST: `ureq` over HTTP or HTTPS (rustls), JSON body,
/// optional `Authorization`, no redirects, no proxy from the environment
/// (an alert path must not depend on a shell's `http_proxy`).
pub fn ureq_post(
    base: &str,
    authorization: Option<zeroize::Zeroizing<String>>,
    timeout: Duration,
) -> Post {
    let url = format!("{base}/api/v2/alerts");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .timeout_global(Some(timeout))
        .user_agent(concat!("varta-watch/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    Box::new(move |body: &[u8], timeout: Duration| {
        let mut req = agent.post(&url).header("Content-Type", "application/json");
        if let Some(a) = &authorization {
            req = req.header("Authorization", a.as_str());
        }
        let mut resp = req
            .config()
            .timeout_global(Some(timeout))
            .build()
            .send(body)
            .map_err(|e| PostError::Retry(e.to_string()))?;
        let status = resp.status().as_u16();
        // Read the (small) answer so the connection can be reused, and to
        // quote it in the log.
        let text = resp
            .body_mut()
            .with_config()
            .limit(4096)
            .read_to_string()
            .unwrap_or_default();
        let what = || format!("HTTP {status}: {}", text.trim());
        match status {
            200..=299 => Ok(()),
            408 | 429 | 500..=599 => Err(PostError::Retry(what())),
            300..=399 => Err(PostError::Rejected(format!(
                "{}; redirects are not followed, give the final URL",
                what()
            ))),
            _ => Err(PostError::Rejected(what())),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(2));
        assert_eq!(backoff(7), Duration::from_secs(30));
        assert_eq!(backoff(u32::MAX), BACKOFF_CAP);
        let total: Duration = (1..=MAX_RETRIES).map(backoff).sum();
        assert!(total < Duration::from_secs(120), "bounded: {total:?}");
    }

    fn alert(n: u32) -> (Key, Alert) {
        let f = super::super::model::Facts {
            key: Key::Stalled(n),
            agent: Default::default(),
            since: std::time::SystemTime::UNIX_EPOCH,
            starts_at: std::time::SystemTime::UNIX_EPOCH,
        };
        let a = f.render(&Arc::from("h"), f.since, f.since);
        (Key::Stalled(n), a)
    }

    #[test]
    fn chunks_retries_and_flushes() {
        let stats = Arc::new(AlertStats::new(&["t".into()]));
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        // Fails the first call, then accepts.
        let post: Post = Box::new(move |body: &[u8], _| {
            let v: serde_json::Value = serde_json::from_slice(body).unwrap();
            assert!(v.as_array().unwrap().len() <= CHUNK);
            match c.fetch_add(1, Ordering::SeqCst) {
                0 => Err(PostError::Retry("down".into())),
                _ => Ok(()),
            }
        });
        let out = start(0, post, Duration::from_secs(1), stats.clone()).unwrap();
        let batch: Vec<_> = (0..2500).map(alert).collect();
        out.push(&batch, &stats, 0);
        let t = &stats.targets[0];
        let start = Instant::now();
        while t.sent() < 2500 {
            assert!(start.elapsed() < Duration::from_secs(10), "not delivered");
            std::thread::sleep(Duration::from_millis(10));
        }
        // One failed attempt of the first chunk, then three chunks.
        assert_eq!(t.failed(), 1000);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        out.stop(Instant::now() + Duration::from_secs(1));
        assert!(out.wait_finished(Instant::now() + Duration::from_secs(2)));
    }

    #[test]
    fn gives_up_at_shutdown_deadline() {
        let stats = Arc::new(AlertStats::new(&["t".into()]));
        let post: Post = Box::new(|_: &[u8], _| Err(PostError::Retry("down".into())));
        let out = start(0, post, Duration::from_secs(1), stats.clone()).unwrap();
        out.push(&[alert(1), alert(2)], &stats, 0);
        let t0 = Instant::now();
        out.stop(t0 + Duration::from_millis(300));
        assert!(out.wait_finished(t0 + Duration::from_secs(3)));
        assert!(t0.elapsed() < Duration::from_secs(2));
        assert_eq!(stats.targets[0].dropped_here(DropReason::Shutdown), 2);
        assert!(stats.targets[0].failed() >= 2);
    }
}

#[cfg(test)]
mod tls_tests {
    use super::*;

    /// https goes through rustls (ring provider built in): a peer that is
    /// no TLS server is a retryable error, never a panic of the sender.
    #[test]
    fn https_to_a_non_tls_peer_is_a_retryable_error() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                use std::io::Write;
                let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
            }
        });
        let mut post = ureq_post(&format!("https://{addr}"), None, Duration::from_secs(2));
        match post(b"[]", Duration::from_secs(2)) {
            Err(PostError::Retry(e)) => assert!(!e.is_empty()),
            other => panic!("{other:?}"),
        }
        t.join().unwrap();
    }
}
