//! What an agent *is*: names for operators instead of bare pids.
//!
//! A pid says nothing to an operator and is reused; "`nginx.service` is
//! stalled" or "`worker@4c01db0b339c` exited" does. For a kernel-attested
//! (Unix socket) agent the observer reads, from `/proc/<pid>`, its `comm`,
//! executable path, real uid, systemd unit and container
//! ([`procread::read`], through [`ProcessProbe::identity`]); a UDP agent
//! is known only by its peer address.
//!
//! | piece | does |
//! |---|---|
//! | [`cgroup`] | `/proc/<pid>/cgroup` text → systemd unit, container (docker, containerd/CRI, podman, CRI-O, Kubernetes pod uid) |
//! | [`procread`] | `/proc/<pid>` → [`RawIdentity`]; `None` when the process is gone |
//! | [`name`] | the default name rule, [`NameTemplate`]s, cleaning and capping |
//! | [`intern`] | [`Registry`]: bounded, thread-safe interning of whole records → [`IdentityId`], names → [`NameId`] |
//!
//! **Names.** By default: the unit if there is one (`nginx.service`,
//! `session-3.scope`); else `{comm}@{container short id}`; else `comm`;
//! else `unknown` ([`default_name`]). An operator's rule can set a
//! template instead (`"{unit}"`, `"{comm}@{container}"`). A UDP agent is
//! `peer:{IP}` ([`peer_name`]): without the port, which changes on every
//! reconnect. A process that exited before it could be read is `unknown` —
//! the expected end of a race with exit, never an error.
//!
//! **Cost model.** Resolving reads four small `/proc` files and one link
//! (a few microseconds, see [`procread`]); it is done when an agent life is
//! admitted, never per beat. Afterwards an agent carries a 4-byte
//! [`IdentityId`]; looking a record up is a read lock and an `Arc` clone.
//!
//! **Bounds.** Every `/proc` read has a byte cap; every name is at most
//! [`MAX_NAME_LEN`] bytes with control characters replaced; the registry
//! holds at most its capacity of records (then hands out
//! [`IdentityId::UNKNOWN`] and counts an overflow), each field capped. So
//! hostile processes — any name, any cgroup path, any number of pids —
//! cannot make the observer's memory grow without bound.
//!
//! [`ProcessProbe::identity`]: crate::tracker::ProcessProbe::identity

pub mod cgroup;
pub mod intern;
pub mod name;
pub mod procread;

pub use cgroup::{CgroupInfo, Container, Runtime};
pub use intern::{IdentityId, IdentityRecord, NameId, Registry};
pub use name::{default_name, peer_name, sanitize, NameTemplate, MAX_NAME_LEN, UNKNOWN};
pub use procread::RawIdentity;

/// The record of a kernel-attested agent `pid`: named by `template` if
/// given, else by the default rule; the unknown record when `raw` is None
/// (the process was gone).
pub fn attested_record(
    raw: Option<&RawIdentity>,
    template: Option<&NameTemplate>,
    pid: u32,
) -> IdentityRecord {
    let Some(raw) = raw else {
        return IdentityRecord::unknown();
    };
    let name = match template {
        Some(t) => t.render(raw, pid),
        None => default_name(raw),
    };
    IdentityRecord::from_raw(raw, &name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attested_records() {
        let raw = RawIdentity {
            comm: Some("sleep".into()),
            uid: Some(0),
            ..RawIdentity::default()
        };
        assert_eq!(&*attested_record(Some(&raw), None, 5).name, "sleep");
        let t = NameTemplate::parse("{comm}-{pid}").unwrap();
        assert_eq!(&*attested_record(Some(&raw), Some(&t), 5).name, "sleep-5");
        assert_eq!(
            attested_record(None, Some(&t), 5),
            IdentityRecord::unknown()
        );
        let reg = Registry::new(4);
        assert_eq!(
            reg.intern(attested_record(None, None, 5)),
            IdentityId::UNKNOWN
        );
    }
}
