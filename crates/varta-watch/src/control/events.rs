//! `GET /v1/events`: a sink on the event bus feeding a recent-events ring
//! and a live broadcast, and the HTTP side that turns them into JSON lines
//! (the `--export-format json` line, [`crate::export::format::write_json`]).
//!
//! The sink runs on the detection thread, so it is cheap: a beat costs
//! one atomic load unless an open stream asked for beats; other events are
//! copied (they are small `Copy` values, with the pid's identity id) into
//! a bounded ring and, when a stream is open, into a bounded
//! `tokio::sync::broadcast` whose `send` never blocks — a reader that falls
//! behind loses events, never the loop's time.
//!
//! Beats have their own broadcast: they can be a million a second, and a
//! follower of `kind=stall` must not be cut for lagging behind beats it
//! never asked for. A follower of both merges the two by the sequence
//! number the sink gives every item, so it sees events in the loop's order.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};

use crate::events::{Event, Sink};
use crate::export::format::{write_json, NameLookup};
use crate::http::ConnState;
use crate::identity::{IdentityId, Registry};
use crate::policy::Names;

/// Recent non-beat events kept for requests without `follow`.
pub const RING: usize = 1000;
/// A follower this many events behind is cut.
pub const LAG_LIMIT: usize = 4096;
/// JSON lines buffered per follower between its task and its connection.
const LINES_BUFFERED: usize = 64;
/// How often a follower whose connection does not drain is checked for lag.
const LAG_CHECK: Duration = Duration::from_millis(100);

/// One event as the API needs it.
#[derive(Clone, Copy, Debug)]
pub struct Item {
    /// Emission order across both broadcasts.
    seq: u64,
    at_ns: u64,
    wall: SystemTime,
    event: Event,
    identity: Option<IdentityId>,
}

/// The hand-over point between the sink and the HTTP thread.
#[derive(Debug)]
pub struct EventHub {
    ring: Mutex<VecDeque<Item>>,
    live: broadcast::Sender<Item>,
    /// Beats, only while an open stream asked for them.
    beats: broadcast::Sender<Item>,
    /// Open streams that asked for `kind=beat`.
    beat_readers: AtomicUsize,
    /// `varta_control_event_readers`.
    pub readers: AtomicU64,
    /// `varta_control_event_readers_dropped_total`.
    pub dropped: AtomicU64,
}

impl Default for EventHub {
    fn default() -> Self {
        EventHub {
            ring: Mutex::new(VecDeque::with_capacity(RING)),
            // Capacity = the lag limit: a receiver further behind gets
            // `Lagged` (and `len()` tells while it is not reading).
            live: broadcast::channel(LAG_LIMIT).0,
            beats: broadcast::channel(LAG_LIMIT).0,
            beat_readers: AtomicUsize::new(0),
            readers: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }
}

/// The sink (detection thread).
pub struct ControlSink {
    hub: Arc<EventHub>,
    names: Names,
    seq: u64,
}

impl ControlSink {
    /// A sink feeding `hub`, taking identities from `names`.
    pub fn new(hub: Arc<EventHub>, names: Names) -> ControlSink {
        ControlSink { hub, names, seq: 0 }
    }
}

impl Sink for ControlSink {
    #[inline]
    fn on_event(&mut self, at_ns: u64, event: &Event) {
        let beat = event.is_beat();
        if beat && self.hub.beat_readers.load(Ordering::Relaxed) == 0 {
            return;
        }
        self.seq += 1;
        let item = Item {
            seq: self.seq,
            at_ns,
            wall: SystemTime::now(),
            event: *event,
            identity: event.pid().and_then(|p| self.names.identity(p)),
        };
        if beat {
            if self.hub.beats.receiver_count() > 0 {
                let _ = self.hub.beats.send(item);
            }
            return;
        }
        {
            let mut ring = self.hub.ring.lock().unwrap_or_else(|p| p.into_inner());
            if ring.len() == RING {
                ring.pop_front();
            }
            ring.push_back(item);
        }
        if self.hub.live.receiver_count() > 0 {
            let _ = self.hub.live.send(item);
        }
    }
}

/// Which kinds a request wants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kinds(Option<Vec<&'static str>>);

impl Kinds {
    /// Parses `kind=a,b`; None: every kind but `beat`.
    pub fn parse(v: Option<&str>) -> Result<Kinds, String> {
        let Some(v) = v else {
            return Ok(Kinds(None));
        };
        let mut out = Vec::new();
        for k in v.split(',').filter(|k| !k.is_empty()) {
            match Event::KINDS.iter().find(|x| **x == k) {
                Some(x) => out.push(*x),
                None => {
                    return Err(format!(
                        "unknown event kind `{k}` in kind=; known kinds: {}",
                        Event::KINDS.join(", ")
                    ))
                }
            }
        }
        if out.is_empty() {
            return Err("kind= names no kind; give one or more, comma-separated".into());
        }
        Ok(Kinds(Some(out)))
    }

    /// Whether beats were asked for by name.
    pub fn beats(&self) -> bool {
        self.0.as_ref().is_some_and(|k| k.contains(&"beat"))
    }

    fn wants(&self, e: &Event) -> bool {
        match &self.0 {
            None => !e.is_beat(),
            Some(k) => k.contains(&e.kind()),
        }
    }
}

/// One pid's identity, copied on the detection thread, for formatting.
struct OneName<'a> {
    registry: &'a Registry,
    pid: Option<u32>,
    identity: Option<IdentityId>,
}

impl NameLookup for OneName<'_> {
    fn registry(&self) -> &Registry {
        self.registry
    }
    fn identity_of(&self, pid: u32) -> Option<IdentityId> {
        (Some(pid) == self.pid).then_some(self.identity).flatten()
    }
}

fn line(out: &mut Vec<u8>, item: &Item, registry: &Registry) {
    let names = OneName {
        registry,
        pid: item.event.pid(),
        identity: item.identity,
    };
    // Formatting into a Vec cannot fail but for a broken Display impl.
    let _ = write_json(out, item.at_ns, item.wall, &item.event, Some(&names));
}

/// The most recent `limit` events of `kinds` kept in the ring, as JSON lines.
pub fn recent(hub: &EventHub, kinds: &Kinds, limit: usize, registry: &Registry) -> Vec<u8> {
    let items: Vec<Item> = {
        let ring = hub.ring.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<Item> = ring
            .iter()
            .rev()
            .filter(|i| kinds.wants(&i.event))
            .take(limit)
            .copied()
            .collect();
        v.reverse();
        v
    };
    let mut out = Vec::with_capacity(items.len() * 256);
    for i in &items {
        line(&mut out, i, registry);
    }
    out
}

/// The final line of a cut stream.
pub fn dropped_line(n: u64) -> Bytes {
    Bytes::from(format!(
        "{{\"kind\":\"dropped\",\"detail\":\"reader too slow: {n} events not delivered\"}}\n"
    ))
}

/// Keeps the reader gauges right however the stream ends.
struct ReaderGuard {
    hub: Arc<EventHub>,
    beats: bool,
}

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        self.hub.readers.fetch_sub(1, Ordering::Relaxed);
        if self.beats {
            self.hub.beat_readers.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Starts a follower: returns the receiving end of its JSON lines (the
/// response body). The task ends when the client goes away or lags more
/// than [`LAG_LIMIT`] events.
pub fn follow(
    hub: Arc<EventHub>,
    kinds: Kinds,
    registry: Arc<Registry>,
    conn: Arc<ConnState>,
) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(LINES_BUFFERED);
    let beats = kinds.beats();
    hub.readers.fetch_add(1, Ordering::Relaxed);
    if beats {
        hub.beat_readers.fetch_add(1, Ordering::Relaxed);
    }
    let mut feed = Feed {
        live: hub.live.subscribe(),
        beats: beats.then(|| hub.beats.subscribe()),
        pending: [None, None],
    };
    let guard = ReaderGuard {
        hub: hub.clone(),
        beats,
    };
    conn.start_streaming();
    tokio::spawn(async move {
        let _guard = guard;
        let mut tick = tokio::time::interval(LAG_CHECK);
        let mut buf = Vec::with_capacity(512);
        let cut = |n: u64, tx: &mpsc::Sender<Bytes>| {
            hub.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                not_delivered = n,
                "control API: event stream reader too slow, disconnected"
            );
            let _ = tx.try_send(dropped_line(n));
            conn.cut();
        };
        loop {
            tokio::select! {
                permit = tx.reserve() => {
                    let Ok(permit) = permit else { return }; // client gone
                    let item = loop {
                        match feed.next().await {
                            Ok(i) if kinds.wants(&i.event) => break i,
                            Ok(_) => continue,
                            Err(broadcast::error::RecvError::Lagged(n)) => {
                                drop(permit);
                                cut(n, &tx);
                                return;
                            }
                            Err(broadcast::error::RecvError::Closed) => return,
                        }
                    };
                    buf.clear();
                    line(&mut buf, &item, &registry);
                    permit.send(Bytes::copy_from_slice(&buf));
                }
                _ = tick.tick() => {
                    // The connection is not draining: count what waits.
                    let waiting = feed.waiting();
                    if waiting >= LAG_LIMIT {
                        cut(waiting as u64, &tx);
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// A follower's subscriptions: non-beat events, and beats if asked for,
/// merged in emission order.
struct Feed {
    live: broadcast::Receiver<Item>,
    beats: Option<broadcast::Receiver<Item>>,
    /// The next item of each receiver, taken but not yet delivered.
    pending: [Option<Item>; 2],
}

type Recv = Result<Item, broadcast::error::RecvError>;

impl Feed {
    /// Items waiting in the broadcasts (the lag).
    fn waiting(&self) -> usize {
        self.live
            .len()
            .max(self.beats.as_ref().map_or(0, |b| b.len()))
    }

    /// Fills an empty pending slot from its receiver without waiting.
    fn fill(
        slot: &mut Option<Item>,
        rx: &mut broadcast::Receiver<Item>,
    ) -> Result<(), broadcast::error::RecvError> {
        use broadcast::error::{RecvError, TryRecvError};
        if slot.is_none() {
            match rx.try_recv() {
                Ok(i) => *slot = Some(i),
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Lagged(n)) => return Err(RecvError::Lagged(n)),
                Err(TryRecvError::Closed) => return Err(RecvError::Closed),
            }
        }
        Ok(())
    }

    /// The next item in emission order. Both broadcasts are fed by one
    /// thread, so once an item of one is visible every earlier item of the
    /// other is too: comparing what is there now is enough.
    async fn next(&mut self) -> Recv {
        loop {
            Self::fill(&mut self.pending[0], &mut self.live)?;
            if let Some(b) = self.beats.as_mut() {
                Self::fill(&mut self.pending[1], b)?;
            }
            let pick = match (&self.pending[0], &self.pending[1]) {
                (Some(a), Some(b)) => Some(usize::from(b.seq < a.seq)),
                (Some(_), None) => Some(0),
                (None, Some(_)) => Some(1),
                (None, None) => None,
            };
            if let Some(k) = pick {
                if let Some(item) = self.pending[k].take() {
                    return Ok(item);
                }
            }
            // Nothing waiting: sleep until either receiver has an item.
            let got: (usize, Recv) = match self.beats.as_mut() {
                Some(b) => tokio::select! {
                    r = self.live.recv() => (0, r),
                    r = b.recv() => (1, r),
                },
                None => (0, self.live.recv().await),
            };
            self.pending[got.0] = Some(got.1?);
        }
    }
}

/// A response body fed by a channel of chunks.
pub struct ChannelBody(pub mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_and_default() {
        let d = Kinds::parse(None).unwrap();
        assert!(!d.wants(&Event::Ctrunc.clone()) || !Event::Ctrunc.is_beat());
        assert!(!d.beats());
        let k = Kinds::parse(Some("stall,beat")).unwrap();
        assert!(k.beats());
        assert!(Kinds::parse(Some("stal")).unwrap_err().contains("stal"));
        assert!(Kinds::parse(Some("")).is_err());
    }

    fn beat(pid: u32) -> Event {
        Event::Beat {
            pid,
            nonce: 1,
            status: varta_vlp::Status::Ok,
            payload: 0,
            origin: crate::events::Origin::KernelAttested,
        }
    }

    #[test]
    fn a_follower_of_beats_and_events_gets_them_in_loop_order() {
        let hub = Arc::new(EventHub::default());
        let reg = Arc::new(Registry::new(16));
        hub.beat_readers.fetch_add(1, Ordering::Relaxed);
        let mut feed = Feed {
            live: hub.live.subscribe(),
            beats: Some(hub.beats.subscribe()),
            pending: [None, None],
        };
        let mut sink = ControlSink::new(hub.clone(), Names::new(reg));
        let sent = [
            beat(1),
            Event::NewLife { pid: 2 },
            beat(3),
            beat(4),
            Event::NewLife { pid: 5 },
            beat(6),
        ];
        for (i, e) in sent.iter().enumerate() {
            sink.on_event(i as u64, e);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let got: Vec<u32> = rt.block_on(async {
            let mut v = Vec::new();
            for _ in 0..sent.len() {
                v.push(feed.next().await.unwrap().event.pid().unwrap());
            }
            v
        });
        assert_eq!(got, [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn beats_never_make_a_non_beat_follower_lag() {
        let hub = Arc::new(EventHub::default());
        let reg = Arc::new(Registry::new(16));
        // Another stream asked for beats; this one did not.
        hub.beat_readers.fetch_add(1, Ordering::Relaxed);
        let _beat_reader = hub.beats.subscribe();
        let feed = Feed {
            live: hub.live.subscribe(),
            beats: None,
            pending: [None, None],
        };
        let mut sink = ControlSink::new(hub.clone(), Names::new(reg));
        for i in 0..(LAG_LIMIT as u32 * 2) {
            sink.on_event(u64::from(i), &beat(i));
        }
        sink.on_event(0, &Event::NewLife { pid: 7 });
        assert_eq!(feed.waiting(), 1);
    }

    #[test]
    fn ring_is_bounded_and_skips_beats_without_readers() {
        let hub = Arc::new(EventHub::default());
        let reg = Arc::new(Registry::new(16));
        let mut sink = ControlSink::new(hub.clone(), Names::new(reg.clone()));
        for i in 0..(RING as u32 + 10) {
            sink.on_event(u64::from(i), &Event::NewLife { pid: i });
            sink.on_event(u64::from(i), &beat(i));
        }
        let body = recent(&hub, &Kinds::parse(None).unwrap(), 5, &reg);
        let text = String::from_utf8(body).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5);
        let last: serde_json::Value = serde_json::from_str(lines[4]).unwrap();
        assert_eq!(last["kind"], "new_life");
        assert_eq!(last["pid"], RING as u64 + 9);
        assert_eq!(hub.ring.lock().unwrap().len(), RING);
    }
}
