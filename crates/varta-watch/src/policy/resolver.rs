//! The identity thread: reads `/proc/<pid>` for newly admitted agents off
//! the detection loop, so 100 k new agents a second cost the loop a queue
//! push each, not four file reads.

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use mio::Waker;

use crate::identity::{procread, RawIdentity};

/// Requests waiting for the thread at most; beyond it new agents are named
/// `unknown` at once (counted) instead of queueing without bound.
pub const QUEUE: usize = 16_384;

/// One answer: the life it is for, and what `/proc` said (None: gone).
pub type Reply = (u32, u64, Option<RawIdentity>);

/// Handle of the identity thread.
pub struct Resolver {
    requests: Option<SyncSender<(u32, u64)>>,
    replies: Receiver<Reply>,
    thread: Option<JoinHandle<()>>,
}

impl Resolver {
    /// Starts the thread; `waker` wakes the loop when answers wait.
    pub fn start(proc_root: PathBuf, waker: Arc<Waker>) -> std::io::Result<Resolver> {
        let (req_tx, req_rx) = mpsc::sync_channel::<(u32, u64)>(QUEUE);
        let (rep_tx, rep_rx) = mpsc::sync_channel::<Reply>(QUEUE);
        let thread = std::thread::Builder::new()
            .name("varta-identity".into())
            .spawn(move || {
                // Below the detection loop: identity is a nicety, stalls
                // are the job.
                let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 10);
                while let Ok(first) = req_rx.recv() {
                    let mut next = Some(first);
                    // Answer everything queued, then wake the loop once.
                    while let Some((pid, start)) = next {
                        let raw = procread::read(&proc_root, pid);
                        if rep_tx.send((pid, start, raw)).is_err() {
                            return;
                        }
                        next = req_rx.try_recv().ok();
                    }
                    let _ = waker.wake();
                }
            })?;
        Ok(Resolver {
            requests: Some(req_tx),
            replies: rep_rx,
            thread: Some(thread),
        })
    }

    /// Queues a lookup; false when the queue is full (the caller names the
    /// agent `unknown` and counts it).
    pub fn request(&self, pid: u32, start_time: u64) -> bool {
        match self
            .requests
            .as_ref()
            .map(|r| r.try_send((pid, start_time)))
        {
            Some(Ok(())) => true,
            Some(Err(TrySendError::Full(_) | TrySendError::Disconnected(_))) | None => false,
        }
    }

    /// Answers waiting now.
    pub fn drain(&self) -> impl Iterator<Item = Reply> + '_ {
        self.replies.try_iter()
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        // Closing the request side ends the thread's loop; drain replies
        // so a thread blocked on a full reply queue can finish.
        self.requests = None;
        while self.replies.try_recv().is_ok() {}
        if let Some(t) = self.thread.take() {
            while !t.is_finished() {
                while self.replies.try_recv().is_ok() {}
                std::thread::yield_now();
            }
            let _ = t.join();
        }
    }
}
