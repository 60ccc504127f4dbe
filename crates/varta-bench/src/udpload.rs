//! UDP load for the `ingest-udp` scenario: datagram streams built before
//! the clock starts (every pid's nonce and AEAD counter strictly
//! increasing), `sendmmsg` sender threads, the raw `recvmmsg` drain, the
//! in-process AEAD micro-benchmark, and readers for `/proc/net/udp`,
//! `/proc/.../stat` and Prometheus text.

use std::collections::BTreeMap;
use std::io::{IoSlice, IoSliceMut, Read};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    recvmmsg, sendmmsg, setsockopt, sockopt, ControlMessage, MsgFlags, MultiHeaders, SockaddrIn,
};
use serde::Serialize;
use varta_vlp::{
    derive_agent_key, derive_iv_prefix, open_master, open_shared, seal_master,
    seal_master_with_agent_key, seal_shared, Frame, Key, Status, FRAME_LEN, MASTER_LEN, SHARED_LEN,
};

use crate::procs::Res;
use crate::scenarios::SplitMix;

/// Datagrams per `sendmmsg` / `recvmmsg` call (the observers' batch size).
pub const BATCH: usize = 32;

/// One `sendmmsg` on a connected socket of the first [`BATCH`] (or fewer)
/// of `frames`: how many the kernel took.
pub fn send_frames(
    sock: &UdpSocket,
    headers: &mut MultiHeaders<()>,
    frames: &[[u8; FRAME_LEN]],
) -> Result<usize, Errno> {
    let take = frames.len().min(BATCH);
    let iovs: [[IoSlice; 1]; BATCH] = std::array::from_fn(|k| {
        [IoSlice::new(
            frames.get(k).filter(|_| k < take).map_or(&[], |d| &d[..]),
        )]
    });
    let no_cmsgs: [ControlMessage; 0] = [];
    sendmmsg(
        sock.as_raw_fd(),
        headers,
        &iovs[..take],
        [None::<()>; BATCH],
        no_cmsgs,
        MsgFlags::empty(),
    )
    .map(|r| r.count())
}

/// CPU time of the calling thread, ns (0 if the clock cannot be read).
pub fn thread_cpu_ns() -> u64 {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(0, |t| {
        t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
    })
}

/// Pid of pid index 0; index i carries pid `FIRST_PID + i` (0 and 1 are
/// illegal on the wire).
pub const FIRST_PID: u32 = 2;

/// Receive buffer of the raw drain: 4 MiB, this kernel's `rmem_max` here.
const DRAIN_RCVBUF: usize = 4 << 20;

/// The three wire layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Plaintext,
    Shared,
    Master,
}

impl Mode {
    /// Datagram length on the wire.
    pub fn len(self) -> usize {
        match self {
            Mode::Plaintext => FRAME_LEN,
            Mode::Shared => SHARED_LEN,
            Mode::Master => MASTER_LEN,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Mode::Plaintext => "plaintext (32 B)",
            Mode::Shared => "secure, shared key (60 B)",
            Mode::Master => "secure, master key (64 B)",
        }
    }
}

/// Keys and per-pid sealing material, drawn and derived once per run.
pub struct Material {
    /// The key the senders seal with in shared-key mode (the LAST key of
    /// every key list given to an observer).
    pub shared: Key,
    pub master: Key,
    /// `iv_random` of each pid index: `derive_iv_prefix(salt, 0)` of a
    /// per-pid session salt.
    iv: Vec<[u8; 8]>,
    /// `derive_agent_key(master, pid)` of each pid index (master mode).
    agent: Vec<Key>,
}

impl Material {
    /// Random keys and salts for `pids` pids; agent keys only if `master`.
    pub fn new(pids: usize, master: bool) -> Res<Material> {
        let shared = random_key()?;
        let master_key = random_key()?;
        let mut seed = [0u8; 8];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut seed)?;
        let mut rng = SplitMix(u64::from_le_bytes(seed));
        let iv = (0..pids)
            .map(|_| {
                let mut salt = [0u8; 16];
                salt[..8].copy_from_slice(&rng.next().to_le_bytes());
                salt[8..].copy_from_slice(&rng.next().to_le_bytes());
                derive_iv_prefix(&salt, 0)
            })
            .collect();
        let agent = if master {
            (0..pids)
                .map(|i| derive_agent_key(&master_key, pid_of(i)))
                .collect()
        } else {
            Vec::new()
        };
        Ok(Material {
            shared,
            master: master_key,
            iv,
            agent,
        })
    }

    pub fn pids(&self) -> usize {
        self.iv.len()
    }
}

/// 32 bytes from the kernel's random pool.
pub fn random_key() -> Res<Key> {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(Key::from_bytes(b))
}

/// A key as the 64 hex characters of a key file.
pub fn key_hex(k: &Key) -> String {
    k.as_bytes().iter().map(|x| format!("{x:02x}")).collect()
}

pub fn pid_of(index: usize) -> u32 {
    FIRST_PID + index as u32
}

/// Pid indices sender `t` of `senders` owns: t, t + senders, t + 2·senders, …
pub fn owned(pids: usize, senders: usize, t: usize) -> usize {
    (pids - t).div_ceil(senders)
}

/// Pid index and round of datagram `j` of sender `t`: each sender cycles
/// through its own pids in order, one round per pass, so a pid's datagrams
/// all leave one socket in order (a pid is never split across senders).
pub fn slot(pids: usize, senders: usize, t: usize, j: usize) -> (usize, u64) {
    let own = owned(pids, senders, t);
    (t + (j % own) * senders, (j / own) as u64)
}

/// Writes the datagram of pid index `i` in `round` (`out.len() ==
/// mode.len()`). Round r carries nonce and timestamp r + 1 and AEAD
/// counter r under the pid's fixed `iv_random`: strictly increasing per
/// pid, as a client's first session would send them.
pub fn write_datagram(mode: Mode, m: &Material, i: usize, round: u64, out: &mut [u8]) {
    let pid = pid_of(i);
    let frame = Frame::new(Status::Ok, pid, round + 1, round + 1, round as u32).to_bytes();
    // `build` keeps rounds far below 2^32.
    let counter = round as u32;
    match mode {
        Mode::Plaintext => out.copy_from_slice(&frame),
        Mode::Shared => out.copy_from_slice(&seal_shared(&m.shared, m.iv[i], counter, &frame)),
        Mode::Master => out.copy_from_slice(&seal_master_with_agent_key(
            &m.agent[i],
            pid,
            m.iv[i],
            counter,
            &frame,
        )),
    }
}

/// One sender's datagrams, back to back, in send order.
pub struct Stream {
    pub len: usize,
    pub count: usize,
    pub bytes: Vec<u8>,
}

#[cfg(test)]
impl Stream {
    pub fn datagram(&self, j: usize) -> &[u8] {
        &self.bytes[j * self.len..(j + 1) * self.len]
    }
}

/// Builds `senders` streams of `per_sender` datagrams each (rounded up to
/// a whole batch), one thread per stream.
pub fn build(mode: Mode, m: &Material, senders: usize, per_sender: usize) -> Res<Vec<Stream>> {
    let pids = m.pids();
    if senders == 0 || senders > pids {
        return Err("need 1 <= senders <= pids".into());
    }
    if mode == Mode::Master && m.agent.len() != pids {
        return Err("master mode needs the agent keys derived".into());
    }
    let count = per_sender.div_ceil(BATCH).max(1) * BATCH;
    if count / owned(pids, senders, senders - 1) >= u32::MAX as usize {
        return Err("too many rounds for a 32-bit AEAD counter".into());
    }
    let len = mode.len();
    let streams = std::thread::scope(|s| {
        let handles: Vec<_> = (0..senders)
            .map(|t| {
                s.spawn(move || {
                    let mut bytes = vec![0u8; count * len];
                    for (j, out) in bytes.chunks_exact_mut(len).enumerate() {
                        let (i, round) = slot(pids, senders, t, j);
                        write_datagram(mode, m, i, round, out);
                    }
                    Stream { len, count, bytes }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| "stream builder panicked"))
            .collect::<Result<Vec<_>, _>>()
    })?;
    Ok(streams)
}

/// The CPUs split between senders and receivers: the senders pin
/// themselves to the highest CPU this process may use, and while this
/// guard lives the calling thread — and so every observer process and
/// drain thread it starts — runs on the others. Dropping it restores the
/// thread's affinity.
pub struct CpuSplit {
    pub sender: usize,
    saved: nix::sched::CpuSet,
}

impl CpuSplit {
    /// None when this process may run on one CPU only.
    pub fn new() -> Res<Option<CpuSplit>> {
        use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
        let me = nix::unistd::Pid::from_raw(0);
        let saved = sched_getaffinity(me)?;
        let cpus: Vec<usize> = (0..CpuSet::count())
            .filter(|&c| saved.is_set(c).unwrap_or(false))
            .collect();
        let Some((&sender, rest)) = cpus.split_last().filter(|(_, r)| !r.is_empty()) else {
            return Ok(None);
        };
        let mut others = CpuSet::new();
        for &c in rest {
            others.set(c)?;
        }
        sched_setaffinity(me, &others)?;
        Ok(Some(CpuSplit { sender, saved }))
    }
}

impl Drop for CpuSplit {
    fn drop(&mut self) {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &self.saved);
    }
}

/// Sender threads, each sending its stream with `sendmmsg` from its own
/// socket connected to the receiver, flat out.
pub struct Senders {
    stop: Arc<AtomicBool>,
    exhausted: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    handles: Vec<JoinHandle<Res<u64>>>,
}

impl Senders {
    /// `wrap`: start over at the end of a stream (only for calibration
    /// against a socket nobody reads); otherwise a sender stops there and
    /// [`Senders::exhausted`] turns true.
    pub fn start(
        streams: &Arc<Vec<Stream>>,
        dest: SocketAddr,
        cpu: Option<usize>,
        wrap: bool,
    ) -> Res<Senders> {
        let stop = Arc::new(AtomicBool::new(false));
        let exhausted = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let mut handles = Vec::new();
        for t in 0..streams.len() {
            let sock = UdpSocket::bind("127.0.0.1:0")?;
            sock.connect(dest)?;
            let (streams, stop, exhausted, sent) = (
                streams.clone(),
                stop.clone(),
                exhausted.clone(),
                sent.clone(),
            );
            handles.push(std::thread::spawn(move || {
                if let Some(c) = cpu {
                    let mut set = nix::sched::CpuSet::new();
                    set.set(c)?;
                    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)?;
                }
                send_loop(&streams[t], &sock, &stop, &exhausted, &sent, wrap)
            }));
        }
        Ok(Senders {
            stop,
            exhausted,
            sent,
            handles,
        })
    }

    /// Datagrams the kernel accepted from all senders so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// A sender reached the end of its stream.
    pub fn exhausted(&self) -> bool {
        self.exhausted.load(Ordering::Relaxed)
    }

    /// Stops and joins every sender; returns (sent, failed sendmmsg calls).
    pub fn stop(mut self) -> Res<(u64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        let mut errors = 0;
        for h in self.handles.drain(..) {
            errors += h.join().map_err(|_| "sender thread panicked")??;
        }
        Ok((self.sent(), errors))
    }
}

impl Drop for Senders {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// Returns the number of failed `sendmmsg` calls.
fn send_loop(
    stream: &Stream,
    sock: &UdpSocket,
    stop: &AtomicBool,
    exhausted: &AtomicBool,
    sent: &AtomicU64,
    wrap: bool,
) -> Res<u64> {
    let fd = sock.as_raw_fd();
    // `()` addresses: the socket is connected. (A zero-sized address type
    // also keeps nix's result iterator from reading uninitialised ones; the
    // kernel writes nothing back into a send header.)
    let mut headers = MultiHeaders::<()>::preallocate(BATCH, None);
    let addrs = [None::<()>; BATCH];
    let no_cmsgs: [ControlMessage; 0] = [];
    let (len, mut pos, mut errors, mut in_a_row) = (stream.len, 0usize, 0u64, 0u32);
    while !stop.load(Ordering::Relaxed) {
        if pos == stream.count {
            if !wrap {
                exhausted.store(true, Ordering::Relaxed);
                return Ok(errors);
            }
            pos = 0;
        }
        let take = (stream.count - pos).min(BATCH);
        let chunk = &stream.bytes[pos * len..(pos + take) * len];
        let iovs: [[IoSlice; 1]; BATCH] = std::array::from_fn(|k| {
            [IoSlice::new(
                chunk.get(k * len..(k + 1) * len).unwrap_or(&[]),
            )]
        });
        match sendmmsg(
            fd,
            &mut headers,
            &iovs[..take],
            addrs,
            no_cmsgs,
            MsgFlags::empty(),
        ) {
            Ok(r) => {
                let n = r.count();
                pos += n;
                sent.fetch_add(n as u64, Ordering::Relaxed);
                in_a_row = 0;
            }
            Err(Errno::EINTR) => {}
            Err(e) => {
                errors += 1;
                in_a_row += 1;
                if in_a_row > 10_000 {
                    return Err(format!("sendmmsg keeps failing: {e}").into());
                }
            }
        }
    }
    Ok(errors)
}

/// Send rate (datagrams/s) of `senders` threads on `cpu`, flat out into a
/// socket nobody reads: the senders' own limit, for sizing the streams.
pub fn calibrate(m: &Material, senders: usize, cpu: Option<usize>) -> Res<f64> {
    let sink = UdpSocket::bind("127.0.0.1:0")?;
    let streams = Arc::new(build(Mode::Plaintext, m, senders, 4 * 1024)?);
    let s = Senders::start(&streams, sink.local_addr()?, cpu, true)?;
    std::thread::sleep(Duration::from_millis(100));
    let (n0, t0) = (s.sent(), Instant::now());
    std::thread::sleep(Duration::from_millis(400));
    let (n1, t1) = (s.sent(), Instant::now());
    s.stop()?;
    Ok((n1 - n0) as f64 / (t1 - t0).as_secs_f64())
}

/// The raw drain: the socket pattern of our observer's UDP ingest without
/// its work: sleep in poll(2) until the socket is readable, then
/// `recvmmsg(MSG_DONTWAIT)` batches of [`BATCH`] until a short one; count
/// the datagrams of the expected length. On its own thread.
pub struct Drain {
    pub addr: SocketAddr,
    count: Arc<AtomicU64>,
    tid: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Drain {
    pub fn start(len: usize) -> Res<Drain> {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        let _ = setsockopt(&sock, sockopt::RcvBuf, &DRAIN_RCVBUF);
        let addr = sock.local_addr()?;
        let count = Arc::new(AtomicU64::new(0));
        let tid = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, id, s) = (count.clone(), tid.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            id.store(nix::unistd::gettid().as_raw() as u64, Ordering::Relaxed);
            drain_loop(&sock, len, &c, &s);
        });
        let d = Drain {
            addr,
            count,
            tid,
            stop,
            handle: Some(handle),
        };
        let until = Instant::now() + Duration::from_secs(5);
        while d.tid.load(Ordering::Relaxed) == 0 {
            if Instant::now() > until {
                return Err("the drain thread did not start".into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(d)
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// utime + stime of the drain thread, in clock ticks.
    pub fn cpu_ticks(&self) -> Res<u64> {
        let tid = self.tid.load(Ordering::Relaxed);
        stat_ticks(&format!("/proc/self/task/{tid}/stat"))
    }
}

fn drain_loop(sock: &UdpSocket, len: usize, count: &AtomicU64, stop: &AtomicBool) {
    let fd = sock.as_raw_fd();
    // Source addresses are read, as an observer reads them (and the kernel
    // then rewrites every header's address length anyway).
    let mut headers = MultiHeaders::<SockaddrIn>::preallocate(BATCH, None);
    let mut bufs = [[0u8; 64]; BATCH];
    while !stop.load(Ordering::Relaxed) {
        // The timeout only lets the loop notice `stop`.
        let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
        if !matches!(poll(&mut fds, PollTimeout::from(50u8)), Ok(n) if n > 0) {
            continue;
        }
        loop {
            let mut iovs = bufs.each_mut().map(|b| [IoSliceMut::new(b)]);
            let Ok(r) = recvmmsg(fd, &mut headers, &mut iovs, MsgFlags::MSG_DONTWAIT, None) else {
                break;
            };
            let (mut got, mut ok) = (0, 0u64);
            for m in r {
                got += 1;
                ok += u64::from(m.bytes == len);
            }
            count.fetch_add(ok, Ordering::Relaxed);
            if got < BATCH {
                break;
            }
        }
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// utime + stime (fields 14 and 15, man 5 proc) of a `/proc/…/stat` file.
pub fn stat_ticks(path: &str) -> Res<u64> {
    parse_stat_ticks(&std::fs::read_to_string(path)?)
        .ok_or_else(|| format!("malformed {path}").into())
}

fn parse_stat_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces and parentheses: fields
    // are counted after its last ')', which is followed by field 3.
    let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Receive queue (bytes) and drops of one UDP socket, from `/proc/net/udp`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockStat {
    pub rx_queue: u64,
    pub drops: u64,
}

/// The socket bound to 127.0.0.1:`port` with no peer, if listed.
pub fn udp_stat(port: u16) -> Res<Option<SockStat>> {
    Ok(parse_udp_stat(
        &std::fs::read_to_string("/proc/net/udp")?,
        port,
    ))
}

fn parse_udp_stat(text: &str, port: u16) -> Option<SockStat> {
    let local = format!("0100007F:{port:04X}");
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.get(1) != Some(&local.as_str()) || f.get(2) != Some(&"00000000:0000") {
            return None;
        }
        let rx = f.get(4)?.split_once(':')?.1;
        Some(SockStat {
            rx_queue: u64::from_str_radix(rx, 16).ok()?,
            drops: f.get(12)?.parse().ok()?,
        })
    })
}

/// Counter samples (`name{labels}` → value) of the given families in a
/// Prometheus text body, zeros left out.
pub fn counters(body: &str, families: &[&str]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        if !families.contains(&name) {
            continue;
        }
        if let Ok(v) = value.parse::<f64>() {
            if v != 0.0 {
                *out.entry(series.to_string()).or_insert(0.0) += v;
            }
        }
    }
    out
}

/// ns per call of the AEAD open paths, in this process.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct AeadMicro {
    /// `open_shared` with the right key (tag verifies, frame decrypted).
    pub open_shared_ok_ns: f64,
    /// `open_shared` with a wrong key (the tag fails): what each further
    /// accepted key costs an observer that tries every key.
    pub open_shared_wrong_key_ns: f64,
    /// `open_master`: HKDF-SHA256 agent-key derivation + open.
    pub open_master_ns: f64,
}

pub fn aead_micro(calls: usize) -> Res<AeadMicro> {
    let (key, wrong, master) = (random_key()?, random_key()?, random_key()?);
    let n = 1024;
    let shared: Vec<[u8; SHARED_LEN]> = (0..n)
        .map(|i| {
            let f = Frame::new(Status::Ok, 1000 + i as u32, 1, 1, 0).to_bytes();
            seal_shared(&key, [7; 8], i as u32, &f)
        })
        .collect();
    let sealed_master: Vec<[u8; MASTER_LEN]> = (0..n)
        .map(|i| {
            let pid = 1000 + i as u32;
            let f = Frame::new(Status::Ok, pid, 1, 1, 0).to_bytes();
            seal_master(&master, pid, [7; 8], i as u32, &f)
        })
        .collect();
    let time = |f: &mut dyn FnMut(usize) -> bool| -> Res<f64> {
        let t = Instant::now();
        for c in 0..calls {
            if !std::hint::black_box(f(c % n)) {
                return Err("AEAD micro-benchmark: unexpected open result".into());
            }
        }
        Ok(t.elapsed().as_nanos() as f64 / calls as f64)
    };
    Ok(AeadMicro {
        open_shared_ok_ns: time(&mut |i| open_shared(&key, &shared[i]).is_ok())?,
        open_shared_wrong_key_ns: time(&mut |i| open_shared(&wrong, &shared[i]).is_err())?,
        open_master_ns: time(&mut |i| open_master(&master, &sealed_master[i]).is_ok())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use varta_vlp::DecodeError;

    fn open(mode: Mode, m: &Material, d: &[u8]) -> (Frame, [u8; 8], u32) {
        let (plain, iv, ctr) = match mode {
            Mode::Plaintext => {
                let mut f = [0u8; FRAME_LEN];
                f.copy_from_slice(d);
                (f, [0; 8], 0)
            }
            Mode::Shared => {
                let s: &[u8; SHARED_LEN] = d.try_into().unwrap();
                let iv: [u8; 8] = d[..8].try_into().unwrap();
                let ctr = u32::from_le_bytes(d[8..12].try_into().unwrap());
                (open_shared(&m.shared, s).unwrap(), iv, ctr)
            }
            Mode::Master => {
                let s: &[u8; MASTER_LEN] = d.try_into().unwrap();
                let iv: [u8; 8] = d[4..12].try_into().unwrap();
                let ctr = u32::from_le_bytes(d[12..16].try_into().unwrap());
                (open_master(&m.master, s).unwrap().1, iv, ctr)
            }
        };
        let f: Result<Frame, DecodeError> = Frame::decode(&plain);
        (f.unwrap(), iv, ctr)
    }

    #[test]
    fn slots_partition_pids_and_cycle() {
        let (pids, senders) = (10, 3);
        assert_eq!(
            (0..senders).map(|t| owned(pids, senders, t)).sum::<usize>(),
            pids
        );
        let mut seen = vec![0; pids];
        for t in 0..senders {
            for j in 0..owned(pids, senders, t) {
                let (i, r) = slot(pids, senders, t, j);
                assert_eq!((i % senders, r), (t, 0));
                seen[i] += 1;
            }
            // The next pass starts over with round 1.
            assert_eq!(slot(pids, senders, t, owned(pids, senders, t)), (t, 1));
        }
        assert!(seen.iter().all(|&n| n == 1));
    }

    #[test]
    fn every_datagram_is_fresh_and_opens() {
        let (pids, senders) = (50, 2);
        let m = Material::new(pids, true).unwrap();
        for mode in [Mode::Plaintext, Mode::Shared, Mode::Master] {
            let streams = build(mode, &m, senders, 130).unwrap();
            let mut owner: HashMap<u32, usize> = HashMap::new();
            // Per pid: last (nonce, iv, counter) seen, in send order.
            let mut last: HashMap<u32, (u64, [u8; 8], u32)> = HashMap::new();
            for (t, s) in streams.iter().enumerate() {
                assert_eq!((s.count % BATCH, s.len), (0, mode.len()));
                assert!(s.count >= 130);
                for j in 0..s.count {
                    let (f, iv, ctr) = open(mode, &m, s.datagram(j));
                    assert!((FIRST_PID..FIRST_PID + pids as u32).contains(&f.pid));
                    assert_eq!(*owner.entry(f.pid).or_insert(t), t, "pid split");
                    if let Some(&(n, piv, pctr)) = last.get(&f.pid) {
                        assert_eq!(f.nonce, n + 1);
                        if mode != Mode::Plaintext {
                            assert_eq!((iv, ctr), (piv, pctr + 1));
                        }
                    } else {
                        assert_eq!((f.nonce, ctr), (1, 0));
                    }
                    last.insert(f.pid, (f.nonce, iv, ctr));
                }
            }
            assert_eq!(last.len(), pids, "{mode:?}: every pid sent");
        }
        // Distinct pids never share an iv_random.
        let mut ivs = m.iv.clone();
        ivs.sort_unstable();
        ivs.dedup();
        assert_eq!(ivs.len(), pids);
    }

    #[test]
    fn parses_proc_files() {
        let udp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
            \x20 12: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 5\n\
            \x20 13: 0100007F:1F90 00000000:0000 07 00000000:00000A00 00:00000000 00000000     0        0 2 2 0000000000000000 77\n";
        assert_eq!(
            parse_udp_stat(udp, 0x1f90),
            Some(SockStat {
                rx_queue: 0xa00,
                drops: 77
            })
        );
        // Connected sockets (a peer) are senders, not the listener.
        assert_eq!(parse_udp_stat(udp, 0xd431), None);
        let stat = "42 (a b) c) R 1 2 3 4 5 6 7 8 9 10 111 222 0 0 20 0";
        assert_eq!(parse_stat_ticks(stat), Some(333));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn sums_counter_families() {
        let body = "# HELP varta_rejected_total x\n# TYPE varta_rejected_total counter\n\
            varta_rejected_total{reason=\"out_of_order\"} 3\n\
            varta_rejected_total{reason=\"capacity\"} 0\n\
            varta_sender_state_full_total 12\nvarta_sender_state_full_totalx 1\n\
            varta_beats_total{pid=\"5\"} 9\n";
        let c = counters(
            body,
            &["varta_rejected_total", "varta_sender_state_full_total"],
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c["varta_rejected_total{reason=\"out_of_order\"}"], 3.0);
        assert_eq!(c["varta_sender_state_full_total"], 12.0);
    }

    #[test]
    fn key_hex_round_trips() {
        let k = random_key().unwrap();
        assert_eq!(Key::from_hex(&key_hex(&k)).unwrap(), k);
    }
}
