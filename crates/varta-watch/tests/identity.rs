//! Identity of REAL processes, read from `/proc` through the real probe
//! (`ProcFs` as `ProcessProbe::identity`): a plain child, a process that
//! has exited (reaped, and a zombie), and processes moved into
//! systemd-style and container-style cgroups.
//!
//! The cgroup tests create cgroups under the cgroup v2 hierarchy (found in
//! `/proc/self/mountinfo`, not assumed at `/sys/fs/cgroup`) when running
//! as root with it writable, e.g. `<v2>/varta-test-<pid>-<n>.slice/
//! demo.service`, move a `sleep` child in through `cgroup.procs`, read
//! its identity, then move it back, kill it and remove the cgroups — in a
//! `Drop` guard, so also when an assertion fails. The same assertions
//! also run against a fake `/proc` tree holding the same cgroup file
//! content — the only route where cgroup v2 is not writable (the reason is
//! printed), and a check of the fake itself where it is.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{spawn_guarded, ChildGuard, PATIENCE};
use varta_watch::identity::{self, procread, RawIdentity, Runtime};
use varta_watch::ingest::procfs::ProcFs;
use varta_watch::tracker::ProcessProbe;

const ID: &str = "4c01db0b339c3d1bd6c4f3e8e5e8ba2c7b1e9f0a0d3c1b2a39485766554433ff";
const POD_UID: &str = "0b2c5a8e-3d4f-4c1a-9e7b-2f6d8a1c3e5b";

fn sleep_path() -> String {
    fs::canonicalize("/bin/sleep")
        .expect("/bin/sleep")
        .to_str()
        .expect("utf-8 path")
        .to_owned()
}

fn our_uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

/// A `sleep 30` child, returned once it runs `sleep` (between fork and
/// exec it still shows the test binary's comm and exe).
fn spawn_sleep() -> ChildGuard {
    let child = spawn_guarded(
        Command::new("/bin/sleep")
            .arg("30")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .expect("spawn sleep");
    let exe = PathBuf::from(format!("/proc/{}/exe", child.id()));
    let sleep = PathBuf::from(sleep_path());
    let deadline = Instant::now() + PATIENCE;
    while fs::read_link(&exe).ok().as_ref() != Some(&sleep) {
        assert!(Instant::now() < deadline, "child never ran {sleep:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

#[test]
fn plain_child() {
    let child = spawn_sleep();
    let pid = child.id();
    let mut probe = ProcFs::default();
    let id = probe.identity(pid).expect("a live child has an identity");
    assert_eq!(id.comm.as_deref(), Some("sleep"));
    assert_eq!(id.exe.as_deref(), Some(sleep_path().as_str()));
    assert_eq!(id.uid, Some(our_uid()));
    // It inherited our cgroup: whatever unit and container we are in.
    let ours = identity::cgroup::parse(&fs::read_to_string("/proc/self/cgroup").unwrap());
    assert_eq!(
        (id.unit.clone(), id.container.clone()),
        (ours.unit, ours.container)
    );
    // The free function and the probe agree.
    assert_eq!(procread::read(Path::new("/proc"), pid), Some(id.clone()));
    // The default name is its comm (or unit, when we run in one).
    let name = identity::default_name(&id);
    assert!(
        name == "sleep" || id.unit.as_deref() == Some(name.as_str()),
        "{name}"
    );
}

/// SIGKILLs `child` and waits until it is a zombie (exited, not reaped).
fn kill_to_zombie(child: &ChildGuard) {
    let pid = child.id();
    nix::sys::signal::kill(child.pid(), nix::sys::signal::Signal::SIGKILL).expect("kill");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("zombie stat");
        let state = stat
            .rsplit_once(')')
            .map(|(_, r)| r.trim_start().chars().next());
        if state == Some(Some('Z')) {
            return;
        }
        assert!(Instant::now() < deadline, "never became a zombie: {stat}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn exited_process_is_none() {
    // Reaped: the pid is gone.
    let mut child = spawn_guarded(&mut Command::new("/bin/true")).expect("spawn true");
    let pid = child.id();
    child.wait().expect("wait");
    assert_eq!(ProcFs::default().identity(pid), None);
    assert_eq!(
        identity::attested_record(None, None, pid).name.as_ref(),
        "unknown"
    );

    // A zombie: exited, not yet reaped; /proc/<pid> still exists.
    let child = spawn_sleep();
    let pid = child.id();
    kill_to_zombie(&child);
    assert_eq!(ProcFs::default().identity(pid), None);
    drop(child);
}

/// Another user's process: its `exe` link is refused (no ptrace access),
/// everything else is still read. As root, the reading thread drops to
/// `nobody` on its own (a per-thread `setresuid`, not glibc's
/// process-wide one), so it sees what an unprivileged observer sees.
#[test]
fn another_users_process_keeps_all_but_exe() {
    let child = spawn_sleep();
    let pid = child.id();
    let (pid, expect_uid) = if nix::unistd::geteuid().is_root() {
        (pid, 0)
    } else {
        let owner = fs::metadata("/proc/1").map(|m| std::os::unix::fs::MetadataExt::uid(&m));
        match owner {
            Ok(uid) if uid != our_uid() => (1, uid),
            _ => {
                eprintln!("skipped: no process of another user to read");
                return;
            }
        }
    };
    let read_unprivileged = move || {
        std::thread::spawn(move || {
            if nix::unistd::geteuid().is_root() {
                let nobody = Some(rustix::process::Uid::from_raw(65534));
                rustix::thread::set_thread_res_uid(nobody, nobody, nobody).expect("drop to nobody");
            }
            ProcFs::default().identity(pid)
        })
        .join()
        .expect("reader thread")
    };
    let id = read_unprivileged().expect("a live process of another user has an identity");
    assert_eq!(id.exe, None, "exe is refused: {id:?}");
    assert!(id.comm.is_some(), "{id:?}");
    assert_eq!(id.uid, Some(expect_uid));
    if pid == child.id() {
        // Its zombie: the refused link no longer hides the exit, `status`
        // tells it.
        kill_to_zombie(&child);
        assert_eq!(read_unprivileged(), None);
    }
    drop(child);
}

/// Where cgroups can be made for real, or why not.
struct V2 {
    mountpoint: PathBuf,
}

/// cgroup v2 mount from `/proc/self/mountinfo`, checked writable by
/// making (and removing) a probe cgroup.
fn writable_v2() -> Result<V2, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("not running as root".into());
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
    let (root, mountpoint) = mountinfo
        .lines()
        .find_map(|line| {
            // `id parent maj:min root mountpoint opts [tags] - fstype src sopts`
            let (left, right) = line.split_once(" - ")?;
            (right.split(' ').next() == Some("cgroup2")).then(|| {
                let f: Vec<&str> = left.split(' ').collect();
                (f.get(3).copied(), f.get(4).copied())
            })
        })
        .ok_or("no cgroup2 mount in /proc/self/mountinfo")?;
    let (Some(root), Some(mountpoint)) = (root, mountpoint) else {
        return Err("unparsable cgroup2 mountinfo line".into());
    };
    if root != "/" {
        // Paths in /proc/<pid>/cgroup would then carry a prefix we did not
        // choose (and whose units would count).
        return Err(format!("cgroup2 is mounted from {root}, not its root"));
    }
    if mountpoint.contains('\\') {
        return Err(format!("escaped cgroup2 mountpoint {mountpoint}"));
    }
    let mountpoint = PathBuf::from(mountpoint);
    let probe = mountpoint.join(format!("varta-test-{}-probe", std::process::id()));
    fs::create_dir(&probe).map_err(|e| format!("mkdir {}: {e}", probe.display()))?;
    let _ = fs::remove_dir(&probe);
    Ok(V2 { mountpoint })
}

/// A child in a cgroup we made. Dropping it moves the child back to its
/// original cgroup, kills and reaps it, and removes the cgroups, deepest
/// first.
struct InCgroup {
    child: Option<ChildGuard>,
    /// `cgroup.procs` of the child's original cgroup.
    home: PathBuf,
    /// Created cgroups, outermost first.
    dirs: Vec<PathBuf>,
}

impl InCgroup {
    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }
}

impl Drop for InCgroup {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            let _ = fs::write(&self.home, child.id().to_string());
        }
        // Killed and reaped by ChildGuard.
        drop(self.child.take());
        for dir in self.dirs.iter().rev() {
            // A killed task leaves its cgroup asynchronously: rmdir may see
            // EBUSY for a moment.
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if Instant::now() >= deadline => {
                        eprintln!("could not remove {}: {e}", dir.display());
                        break;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
    }
}

/// A unique top-level test slice name.
fn test_slice() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "varta-test-{}-{}.slice",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The `0::` path of `pid`.
fn v2_path(pid: u32) -> String {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup file");
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup v2 line")
        .to_owned()
}

/// Moves a fresh `sleep` into `<v2>/<slice>/<rel>` (made here).
fn place_real(v2: &V2, rel: &str) -> InCgroup {
    let child = spawn_sleep();
    let home_path = v2_path(child.id());
    let mut placed = InCgroup {
        home: v2
            .mountpoint
            .join(home_path.trim_start_matches('/'))
            .join("cgroup.procs"),
        child: Some(child),
        dirs: Vec::new(),
    };
    let mut dir = v2.mountpoint.clone();
    for comp in rel.split('/') {
        dir.push(comp);
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        placed.dirs.push(dir.clone());
    }
    fs::write(dir.join("cgroup.procs"), placed.pid().to_string())
        .unwrap_or_else(|e| panic!("move into {}: {e}", dir.display()));
    // The kernel now reports the path we made.
    assert_eq!(v2_path(placed.pid()), format!("/{rel}"));
    placed
}

/// A fake `/proc/<pid>` of a `sleep` whose cgroup file says `0::/<rel>`.
fn fake_proc(pid: u32, rel: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join(pid.to_string());
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("comm"), "sleep\n").unwrap();
    let uid = our_uid();
    fs::write(
        dir.join("status"),
        format!("Name:\tsleep\nState:\tS (sleeping)\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n"),
    )
    .unwrap();
    fs::write(dir.join("cgroup"), format!("1:name=systemd:/\n0::/{rel}\n")).unwrap();
    std::os::unix::fs::symlink(sleep_path(), dir.join("exe")).unwrap();
    root
}

/// The identity of a `sleep` in cgroup `<test slice>/<rel>`, by route:
/// for real when cgroup v2 is writable (else the reason is printed), and
/// always also through a fake `/proc` holding the same cgroup file, so
/// both routes are exercised wherever the suite runs.
fn identities_in_cgroup(rel: &str) -> Vec<(&'static str, RawIdentity)> {
    let rel = format!("{}/{rel}", test_slice());
    let mut found = Vec::new();
    match writable_v2() {
        Ok(v2) => {
            let placed = place_real(&v2, &rel);
            eprintln!("real cgroup v2 at {}: /{rel}", v2.mountpoint.display());
            let id = ProcFs::default()
                .identity(placed.pid())
                .expect("a live child has an identity");
            drop(placed);
            found.push(("real cgroup", id));
        }
        Err(reason) => {
            eprintln!(
                "cgroup v2 is not writable ({reason}): checking /{rel} through a fake /proc only"
            )
        }
    }
    let child = spawn_sleep();
    let fake = fake_proc(child.id(), &rel);
    let id = ProcFs::at(fake.path())
        .identity(child.id())
        .expect("the fake process has an identity");
    found.push(("fake /proc", id));
    found
}

fn assert_sleep(route: &str, id: &RawIdentity) {
    assert_eq!(id.comm.as_deref(), Some("sleep"), "{route}");
    assert_eq!(id.exe.as_deref(), Some(sleep_path().as_str()), "{route}");
    assert_eq!(id.uid, Some(our_uid()), "{route}");
}

#[test]
fn systemd_service_cgroup() {
    for (route, id) in identities_in_cgroup("demo.service") {
        assert_sleep(route, &id);
        assert_eq!(id.unit.as_deref(), Some("demo.service"), "{route}");
        assert_eq!(id.container, None, "{route}");
        assert_eq!(identity::default_name(&id), "demo.service", "{route}");
    }
}

#[test]
fn docker_scope_cgroup() {
    let template = identity::NameTemplate::parse("{comm}@{container}").unwrap();
    for (route, id) in identities_in_cgroup(&format!("docker-{ID}.scope")) {
        assert_sleep(route, &id);
        let c = id.container.clone().expect("a container");
        assert_eq!(
            (c.runtime, c.id.as_str(), c.pod_uid),
            (Runtime::Docker, ID, None),
            "{route}"
        );
        // The scope is the container; no service encloses it.
        assert_eq!(id.unit, None, "{route}");
        assert_eq!(identity::default_name(&id), "sleep@4c01db0b339c", "{route}");
        assert_eq!(template.render(&id, 1), "sleep@4c01db0b339c", "{route}");
    }
}

#[test]
fn kubernetes_pod_cgroup() {
    let pod = POD_UID.replace('-', "_");
    let rel = format!("kubepods-burstable-pod{pod}.slice/cri-containerd-{ID}.scope");
    for (route, id) in identities_in_cgroup(&rel) {
        assert_sleep(route, &id);
        let c = id.container.expect("a container");
        assert_eq!(c.runtime, Runtime::Containerd, "{route}");
        assert_eq!(c.id, ID, "{route}");
        assert_eq!(c.pod_uid.as_deref(), Some(POD_UID), "{route}");
        assert_eq!(id.unit, None, "{route}");
    }
}

#[test]
fn podman_container_cgroup_under_a_service() {
    // A container scope inside a service (as with a rootless runtime under
    // the user manager): the service is the unit, the scope the container.
    let rel = format!("runtime.service/libpod-{ID}.scope/container");
    for (route, id) in identities_in_cgroup(&rel) {
        assert_sleep(route, &id);
        let c = id.container.expect("a container");
        assert_eq!((c.runtime, c.id.as_str()), (Runtime::Podman, ID), "{route}");
        assert_eq!(id.unit.as_deref(), Some("runtime.service"), "{route}");
    }
}
