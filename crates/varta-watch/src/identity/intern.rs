//! The identity registry: every distinct identity record once, behind a
//! small copyable id.
//!
//! Many pids share one identity (a hundred nginx workers are one
//! `nginx.service` record), so whole records are interned: the tracker and
//! the event stream carry a 4-byte [`IdentityId`], and the strings exist
//! once. Names are interned a second time on their own ([`NameId`]), so
//! metrics can aggregate per name with an integer key even when records
//! differ in other fields (same unit, two executables).
//!
//! **Bounded.** At most `max_records` records (including
//! [`IdentityId::UNKNOWN`]); when full, a *new* record gets `UNKNOWN` and
//! [`Registry::overflows`] counts it, while records already known keep
//! resolving. Each string field is cleaned and capped
//! ([`crate::identity::sanitize`], the `MAX_*` constants), so a record is at
//! most about 1 KiB with its bookkeeping: the default 65,536 records cost
//! at most ~64 MiB in the worst case of hostile, all-distinct, maximal
//! records, and well under a MiB for a few hundred agent kinds. Distinct names never outnumber records. Records
//! are never removed: ids stay valid for as long as the registry lives, so
//! a reader holding one never sees it change meaning.
//!
//! **Concurrency.** One writer (the detection loop, at admission) and many
//! readers (recovery, HTTP) share it through an `RwLock`; readers take it
//! only to clone an `Arc` out, writers only to push into a `Vec` and two
//! maps. Lock poisoning is ignored: nothing panics while holding the lock,
//! and the data is append-only, so it cannot be left half-updated in a way
//! that matters.
//!
//! The maps use std's randomly keyed SipHash, not the Fx hash of the pid
//! index: `comm` and `exe` are chosen by the processes being watched, and
//! a predictable hash would let one process degrade every lookup.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use super::name::{self, sanitize, MAX_NAME_LEN, UNKNOWN};
use super::procread::RawIdentity;

/// Cap on `comm` in a record (the kernel's own limit is 15 bytes for user
/// processes, 64 for kernel threads).
pub const MAX_COMM_LEN: usize = 64;
/// Cap on `exe` in a record. Paths are cut, not dropped: the head of a
/// path still tells an operator where the binary lives.
pub const MAX_EXE_LEN: usize = 256;
/// Cap on `unit` in a record (systemd's own limit is 255).
pub const MAX_UNIT_LEN: usize = 255;
/// Cap on `container` in a record (it holds the 12-character short id;
/// room for other runtimes' longer forms).
pub const MAX_CONTAINER_LEN: usize = 64;

/// Default [`Registry`] capacity.
pub const DEFAULT_MAX_RECORDS: usize = 65_536;

/// What an agent is. Strings are shared (`Arc<str>`); two records are the
/// same identity when every field is equal.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IdentityRecord {
    /// Operator-facing name (default rule, a template, or `peer:{IP}`).
    pub name: Arc<str>,
    /// `/proc/<pid>/comm`.
    pub comm: Option<Arc<str>>,
    /// Executable path.
    pub exe: Option<Arc<str>>,
    /// systemd unit.
    pub unit: Option<Arc<str>>,
    /// Container short id (12 characters).
    pub container: Option<Arc<str>>,
    /// Real uid.
    pub uid: Option<u32>,
    /// Network agents: the peer address.
    pub peer: Option<SocketAddr>,
}

impl IdentityRecord {
    /// The record of [`IdentityId::UNKNOWN`]: named `unknown`, nothing else
    /// known.
    pub fn unknown() -> IdentityRecord {
        IdentityRecord {
            name: Arc::from(UNKNOWN),
            comm: None,
            exe: None,
            unit: None,
            container: None,
            uid: None,
            peer: None,
        }
    }

    /// A kernel-attested agent's record: the `/proc` facts and the name
    /// chosen for them ([`name::default_name`] or a
    /// [`NameTemplate`](super::NameTemplate)'s rendering).
    pub fn from_raw(raw: &RawIdentity, name: &str) -> IdentityRecord {
        IdentityRecord {
            name: Arc::from(name),
            comm: raw.comm.as_deref().map(Arc::from),
            exe: raw.exe.as_deref().map(Arc::from),
            unit: raw.unit.as_deref().map(Arc::from),
            container: raw.container.as_ref().map(|c| Arc::from(c.short())),
            uid: raw.uid,
            peer: None,
        }
    }

    /// A network agent's record: named `peer:{IP}` ([`name::peer_name`]),
    /// with `peer` holding the address **with port 0**. The port changes on
    /// every reconnect; keeping it would make each reconnect a new record
    /// and let one host fill the registry by cycling source ports.
    pub fn for_peer(addr: SocketAddr) -> IdentityRecord {
        IdentityRecord {
            name: Arc::from(name::peer_name(addr)),
            peer: Some(SocketAddr::new(addr.ip().to_canonical(), 0)),
            ..IdentityRecord::unknown()
        }
    }

    /// The record with every string cleaned and capped, so that what is
    /// stored is bounded whatever the caller built.
    fn bounded(self) -> IdentityRecord {
        fn cap(s: Arc<str>, max: usize) -> Arc<str> {
            let clean = sanitize(&s, max);
            if *clean == *s {
                s
            } else {
                Arc::from(clean)
            }
        }
        let name = cap(self.name, MAX_NAME_LEN);
        IdentityRecord {
            name: if name.trim().is_empty() {
                Arc::from(UNKNOWN)
            } else {
                name
            },
            comm: self.comm.map(|s| cap(s, MAX_COMM_LEN)),
            exe: self.exe.map(|s| cap(s, MAX_EXE_LEN)),
            unit: self.unit.map(|s| cap(s, MAX_UNIT_LEN)),
            container: self.container.map(|s| cap(s, MAX_CONTAINER_LEN)),
            uid: self.uid,
            peer: self.peer,
        }
    }
}

/// A registered identity. Copy, 4 bytes; valid for the registry's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdentityId(pub u32);

impl IdentityId {
    /// The unknown identity, pre-registered in every registry.
    pub const UNKNOWN: IdentityId = IdentityId(0);
}

/// A registered name string (per-name metrics). Copy, 4 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NameId(pub u32);

impl NameId {
    /// The name `unknown`, pre-registered in every registry.
    pub const UNKNOWN: NameId = NameId(0);
}

struct Inner {
    records: Vec<Arc<IdentityRecord>>,
    /// Parallel to `records`.
    record_names: Vec<NameId>,
    by_record: HashMap<Arc<IdentityRecord>, IdentityId>,
    names: Vec<Arc<str>>,
    by_name: HashMap<Arc<str>, NameId>,
}

/// The bounded, thread-safe identity interner. See the module docs.
pub struct Registry {
    inner: RwLock<Inner>,
    max_records: usize,
    overflows: AtomicU64,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new(DEFAULT_MAX_RECORDS)
    }
}

impl Registry {
    /// A registry of at most `max_records` records, [`IdentityId::UNKNOWN`]
    /// included (so at least 1; at most `u32::MAX`).
    pub fn new(max_records: usize) -> Registry {
        let unknown = Arc::new(IdentityRecord::unknown());
        let name = Arc::clone(&unknown.name);
        let inner = Inner {
            records: vec![Arc::clone(&unknown)],
            record_names: vec![NameId::UNKNOWN],
            by_record: HashMap::from([(unknown, IdentityId::UNKNOWN)]),
            names: vec![Arc::clone(&name)],
            by_name: HashMap::from([(name, NameId::UNKNOWN)]),
        };
        Registry {
            inner: RwLock::new(inner),
            max_records: max_records.clamp(1, u32::MAX as usize),
            overflows: AtomicU64::new(0),
        }
    }

    /// The id of `rec` (cleaned and capped first), registering it if new.
    /// Identical records get the same id. A new record when the registry
    /// is full gets [`IdentityId::UNKNOWN`] and counts an overflow.
    pub fn intern(&self, rec: IdentityRecord) -> IdentityId {
        let rec = rec.bounded();
        if let Some(&id) = self.read().by_record.get(&rec) {
            return id;
        }
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        // Another writer may have added it between the two locks.
        if let Some(&id) = inner.by_record.get(&rec) {
            return id;
        }
        if inner.records.len() >= self.max_records {
            drop(inner);
            self.overflows.fetch_add(1, Ordering::Relaxed);
            return IdentityId::UNKNOWN;
        }
        // Both lengths are below max_records ≤ u32::MAX: the casts fit.
        let name_id = match inner.by_name.get(&rec.name) {
            Some(&n) => n,
            None => {
                let n = NameId(inner.names.len() as u32);
                inner.names.push(Arc::clone(&rec.name));
                inner.by_name.insert(Arc::clone(&rec.name), n);
                n
            }
        };
        let id = IdentityId(inner.records.len() as u32);
        let rec = Arc::new(rec);
        inner.records.push(Arc::clone(&rec));
        inner.record_names.push(name_id);
        inner.by_record.insert(rec, id);
        id
    }

    /// The record of `id`; the unknown record for an id this registry did
    /// not hand out.
    pub fn get(&self, id: IdentityId) -> Arc<IdentityRecord> {
        let inner = self.read();
        let found = inner
            .records
            .get(id.0 as usize)
            .unwrap_or(&inner.records[0]);
        Arc::clone(found)
    }

    /// The name of `id` (shorthand for `get(id).name`).
    pub fn name(&self, id: IdentityId) -> Arc<str> {
        Arc::clone(&self.get(id).name)
    }

    /// The name id of record `id`; [`NameId::UNKNOWN`] for an id this
    /// registry did not hand out.
    pub fn name_id(&self, id: IdentityId) -> NameId {
        self.read()
            .record_names
            .get(id.0 as usize)
            .copied()
            .unwrap_or(NameId::UNKNOWN)
    }

    /// The name string of `name`; `unknown` for an id this registry did
    /// not hand out.
    pub fn name_str(&self, name: NameId) -> Arc<str> {
        let inner = self.read();
        Arc::clone(inner.names.get(name.0 as usize).unwrap_or(&inner.names[0]))
    }

    /// Records registered, `UNKNOWN` included.
    pub fn len(&self) -> usize {
        self.read().records.len()
    }

    /// Never true: `UNKNOWN` is always registered. (For clippy's
    /// `len_without_is_empty`.)
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Distinct names registered, `unknown` included.
    pub fn name_count(&self) -> usize {
        self.read().names.len()
    }

    /// The record limit given at construction (after clamping).
    pub fn capacity(&self) -> usize {
        self.max_records
    }

    /// New records refused because the registry was full.
    pub fn overflows(&self) -> u64 {
        self.overflows.load(Ordering::Relaxed)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Container, Runtime};

    fn nginx(exe: &str) -> IdentityRecord {
        let raw = RawIdentity {
            comm: Some("nginx".into()),
            exe: Some(exe.into()),
            uid: Some(33),
            unit: Some("nginx.service".into()),
            container: None,
        };
        IdentityRecord::from_raw(&raw, &name::default_name(&raw))
    }

    #[test]
    fn identical_records_share_an_id() {
        let reg = Registry::new(16);
        let a = reg.intern(nginx("/usr/sbin/nginx"));
        for _ in 0..100 {
            assert_eq!(reg.intern(nginx("/usr/sbin/nginx")), a);
        }
        assert_ne!(a, IdentityId::UNKNOWN);
        assert_eq!(reg.len(), 2);
        assert_eq!(&*reg.get(a).name, "nginx.service");
        assert_eq!(reg.get(a).uid, Some(33));
        // Same name, other exe: another record, the same name id.
        let b = reg.intern(nginx("/opt/nginx/sbin/nginx"));
        assert_ne!(a, b);
        assert_eq!(reg.name_id(a), reg.name_id(b));
        assert_ne!(reg.name_id(a), NameId::UNKNOWN);
        assert_eq!(&*reg.name_str(reg.name_id(a)), "nginx.service");
        assert_eq!(reg.name_count(), 2);
        // The unknown record interns to UNKNOWN.
        assert_eq!(reg.intern(IdentityRecord::unknown()), IdentityId::UNKNOWN);
        assert_eq!(&*reg.name(IdentityId::UNKNOWN), "unknown");
        assert_eq!(reg.name_id(IdentityId::UNKNOWN), NameId::UNKNOWN);
    }

    #[test]
    fn bounded_when_full() {
        let reg = Registry::new(3);
        let a = reg.intern(nginx("/a"));
        let b = reg.intern(nginx("/b"));
        assert_eq!(reg.intern(nginx("/c")), IdentityId::UNKNOWN);
        assert_eq!(reg.intern(nginx("/d")), IdentityId::UNKNOWN);
        assert_eq!(reg.overflows(), 2);
        // Known records still resolve.
        assert_eq!(reg.intern(nginx("/a")), a);
        assert_eq!(reg.intern(nginx("/b")), b);
        assert_eq!(reg.overflows(), 2);
        assert_eq!(reg.len(), 3);
        assert_eq!(reg.capacity(), 3);
        // Ids never handed out read as unknown.
        assert_eq!(&*reg.get(IdentityId(99)).name, "unknown");
        assert_eq!(reg.name_id(IdentityId(99)), NameId::UNKNOWN);
        assert_eq!(&*reg.name_str(NameId(99)), "unknown");
        // A zero capacity still holds UNKNOWN.
        let tiny = Registry::new(0);
        assert_eq!(tiny.capacity(), 1);
        assert_eq!(tiny.intern(nginx("/a")), IdentityId::UNKNOWN);
        assert_eq!(tiny.overflows(), 1);
    }

    #[test]
    fn fields_are_cleaned_and_capped() {
        let reg = Registry::new(8);
        let rec = IdentityRecord {
            name: Arc::from("x".repeat(1000)),
            comm: Some(Arc::from("a\nb")),
            exe: Some(Arc::from("/".repeat(10_000))),
            unit: Some(Arc::from("u".repeat(1000))),
            container: Some(Arc::from("c".repeat(1000))),
            uid: Some(1),
            peer: None,
        };
        let got = reg.get(reg.intern(rec));
        assert_eq!(got.name.len(), MAX_NAME_LEN);
        assert_eq!(got.comm.as_deref(), Some("a?b"));
        assert_eq!(got.exe.as_ref().map(|s| s.len()), Some(MAX_EXE_LEN));
        assert_eq!(got.unit.as_ref().map(|s| s.len()), Some(MAX_UNIT_LEN));
        assert_eq!(
            got.container.as_ref().map(|s| s.len()),
            Some(MAX_CONTAINER_LEN)
        );
        // An empty name is `unknown`.
        let blank = IdentityRecord {
            name: Arc::from(""),
            ..IdentityRecord::unknown()
        };
        assert_eq!(reg.intern(blank), IdentityId::UNKNOWN);
    }

    #[test]
    fn records_from_raw_and_peer() {
        let raw = RawIdentity {
            comm: Some("app".into()),
            exe: None,
            uid: Some(0),
            unit: None,
            container: Some(Container {
                runtime: Runtime::Podman,
                id: "4c01db0b339c3d1bd6c4f3e8e5e8ba2c7b1e9f0a0d3c1b2a39485766554433ff".into(),
                pod_uid: None,
            }),
        };
        let rec = IdentityRecord::from_raw(&raw, &name::default_name(&raw));
        assert_eq!(&*rec.name, "app@4c01db0b339c");
        assert_eq!(rec.container.as_deref(), Some("4c01db0b339c"));

        let reg = Registry::new(8);
        let a = reg.intern(IdentityRecord::for_peer("10.0.0.7:4000".parse().unwrap()));
        // Reconnect from another port, or seen through a dual-stack socket.
        assert_eq!(
            reg.intern(IdentityRecord::for_peer("10.0.0.7:4001".parse().unwrap())),
            a
        );
        assert_eq!(
            reg.intern(IdentityRecord::for_peer(
                "[::ffff:10.0.0.7]:5".parse().unwrap()
            )),
            a
        );
        let rec = reg.get(a);
        assert_eq!(&*rec.name, "peer:10.0.0.7");
        assert_eq!(rec.peer, Some("10.0.0.7:0".parse().unwrap()));
        assert_eq!((rec.comm.as_deref(), rec.uid), (None, None));
    }

    #[test]
    fn readers_and_a_writer_concurrently() {
        let reg = Arc::new(Registry::new(1_000));
        let writer = {
            let reg = Arc::clone(&reg);
            std::thread::spawn(move || {
                (0..2_000)
                    .map(|i| reg.intern(nginx(&format!("/bin/{}", i % 1_200))))
                    .collect::<Vec<_>>()
            })
        };
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let reg = Arc::clone(&reg);
                std::thread::spawn(move || {
                    for i in 0..20_000u32 {
                        let id = IdentityId(i % 1_000);
                        let rec = reg.get(id);
                        let name = reg.name_str(reg.name_id(id));
                        // Either not yet registered (unknown) or complete.
                        assert!(&*rec.name == "unknown" || &*rec.name == "nginx.service");
                        assert!(&*name == "unknown" || &*name == "nginx.service");
                    }
                })
            })
            .collect();
        let ids = writer.join().unwrap();
        for r in readers {
            r.join().unwrap();
        }
        assert_eq!(reg.len(), 1_000);
        // Exes 0..999 fill the 999 free records; 999..1200 overflow on
        // the first pass, the second pass (0..800) only hits known ones.
        let unknown = ids.iter().filter(|&&id| id == IdentityId::UNKNOWN).count() as u64;
        assert_eq!(reg.overflows(), unknown);
        assert_eq!(unknown, 201);
    }
}
