//! The systemd unit and the container of a process, from the text of
//! `/proc/<pid>/cgroup`.
//!
//! Which line: the cgroup v2 line `0::/path`; when there is none, or its
//! path is `/` (hybrid hosts keep the v2 hierarchy empty and place
//! processes in the v1 `name=systemd` one), the v1 `N:name=systemd:/path`
//! line. Other v1 controller lines are ignored: their paths are
//! per-controller and say nothing systemd or a runtime did not already say
//! in those two.
//!
//! What a path says is read component by component (see [`parse`]). Only
//! shapes that the runtimes really produce are recognised, and every id is
//! validated (64 lowercase hex digits for a container, a UUID or a 32-hex
//! static-pod hash for a pod); anything odd yields `None` rather than a
//! guess. Parsing is a single pass over the input, never panics, and every
//! string it returns is a slice of the input (a pod uid has its `_` turned
//! back into `-`), so the output is bounded by the input.

/// Container runtime that named a container cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Runtime {
    /// Docker: `/docker/<id>` (cgroupfs driver) or `docker-<id>.scope`
    /// (systemd driver, also rootless and dockershim pods).
    Docker,
    /// containerd: `cri-containerd-<id>.scope` (Kubernetes CRI, systemd
    /// driver) or `nerdctl-<id>.scope`.
    Containerd,
    /// Podman: `libpod-<id>.scope` (systemd driver, also with a `container`
    /// child cgroup) or `libpod-<id>` (cgroupfs driver).
    Podman,
    /// A Kubernetes pod's container whose path does not name the runtime:
    /// a bare `<id>` under `/kubepods/…/pod<uid>/` (cgroupfs driver, any
    /// CRI runtime — claiming containerd there would be a guess).
    Kubernetes,
    /// Another runtime (`crio-<id>.scope`), or a bare 64-hex component
    /// under a parent we do not know.
    Other,
}

/// A container named by a cgroup path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Container {
    /// Which runtime's naming matched.
    pub runtime: Runtime,
    /// Full container id (64 lowercase hex digits).
    pub id: String,
    /// Kubernetes pod uid (with `-`), when the container sits in a pod's
    /// cgroup.
    pub pod_uid: Option<String>,
}

impl Container {
    /// The short id operators know from `docker ps`: the first 12
    /// characters (the whole id if shorter).
    pub fn short(&self) -> &str {
        match self.id.char_indices().nth(SHORT_ID_LEN) {
            Some((end, _)) => &self.id[..end],
            None => &self.id,
        }
    }
}

/// Length of a short container id (`docker ps`, `crictl ps`).
pub const SHORT_ID_LEN: usize = 12;

/// What `/proc/<pid>/cgroup` says about a process.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct CgroupInfo {
    /// The systemd unit the process runs in (`nginx.service`,
    /// `session-3.scope`), if any.
    pub unit: Option<String>,
    /// The container the process runs in, if the path names one.
    pub container: Option<Container>,
}

/// Longest valid unit name (systemd's `UNIT_NAME_MAX` minus the NUL).
const UNIT_NAME_MAX: usize = 255;

/// Length of a container id.
const CONTAINER_ID_LEN: usize = 64;

/// Unit suffixes that can hold processes and name something more
/// specific than a slice.
const SPECIFIC_SUFFIXES: [&str; 5] = [".service", ".scope", ".socket", ".mount", ".timer"];

/// Runtime-named components: prefix, runtime. Each may end in `.scope`
/// (systemd cgroup driver) or not (cgroupfs driver).
const RUNTIME_PREFIXES: [(&str, Runtime); 5] = [
    ("docker-", Runtime::Docker),
    ("cri-containerd-", Runtime::Containerd),
    ("nerdctl-", Runtime::Containerd),
    ("libpod-", Runtime::Podman),
    ("crio-", Runtime::Other),
];

/// Parses the content of `/proc/<pid>/cgroup`.
///
/// The path's components are read from the root down:
///
/// - **container:** the deepest component that names one —
///   `<runtime>-<64hex>[.scope]` for the runtimes of [`Runtime`], or a bare
///   64-hex component (`/docker/<id>`, `/kubepods/…/pod<uid>/<id>`);
///   `pod_uid` comes from an enclosing `kubepods-…-pod<uid_>.slice` or
///   `/kubepods/…/pod<uid>` component. Runtime bookkeeping scopes
///   (`libpod-conmon-<id>.scope`, `crio-conmon-<id>.scope`) are neither a
///   container nor a unit, and bound the unit search like a container.
/// - **unit:** the deepest `*.service`, `*.scope`, `*.socket`, `*.mount`
///   or `*.timer` component that is not a container; failing that, the
///   deepest `*.slice`. With a container, only units *enclosing* it count
///   (`user@1000.service` for rootless podman) and slices never do: a
///   unit below the container scope belongs to the container's own systemd
///   and would collide with the host's units of the same name.
pub fn parse(text: &str) -> CgroupInfo {
    match select_path(text) {
        Some(path) => parse_path(path),
        None => CgroupInfo::default(),
    }
}

/// The path of the v2 line, or of the v1 `name=systemd` line when the v2
/// path is missing or the root.
fn select_path(text: &str) -> Option<&str> {
    let mut v2 = None;
    let mut systemd = None;
    for line in text.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(hierarchy), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if hierarchy == "0" && controllers.is_empty() {
            // A v2 cgroup removed while a (zombie) member still points to
            // it is shown with this suffix.
            v2.get_or_insert(path.strip_suffix(" (deleted)").unwrap_or(path));
        } else if controllers.split(',').any(|c| c == "name=systemd") {
            systemd.get_or_insert(path);
        }
    }
    match v2 {
        Some(p) if p != "/" && !p.is_empty() => Some(p),
        _ => systemd.or(v2),
    }
}

/// What one path component means.
enum Kind<'a> {
    Container(Runtime, &'a str),
    /// A Kubernetes pod cgroup, with the pod uid as written (`_` or `-`).
    Pod(&'a str),
    /// Runtime bookkeeping (a conmon scope): no container, no unit.
    RuntimeScope,
    /// A unit that can hold processes (not a slice).
    Unit,
    Slice,
    /// Nothing we know.
    Other,
}

fn parse_path(path: &str) -> CgroupInfo {
    // Deepest finds so far, as (component index, value).
    let mut container: Option<(usize, Runtime, &str)> = None;
    // Deepest container or runtime scope: only units above it count.
    let mut boundary: Option<usize> = None;
    let mut pod: Option<(usize, &str)> = None;
    let mut unit: Option<(usize, &str)> = None;
    let mut slice: Option<&str> = None;
    let mut in_kubepods = false;
    let mut parent = "";
    for (i, comp) in path.split('/').filter(|c| !c.is_empty()).enumerate() {
        match classify(comp, parent, in_kubepods) {
            Kind::Container(runtime, id) => {
                container = Some((i, runtime, id));
                boundary = Some(i);
            }
            Kind::RuntimeScope => boundary = Some(i),
            Kind::Pod(uid) => pod = Some((i, uid)),
            Kind::Unit => unit = Some((i, comp)),
            Kind::Slice => slice = Some(comp),
            Kind::Other => {}
        }
        in_kubepods |=
            comp == "kubepods" || comp.starts_with("kubepods.") || comp.starts_with("kubepods-");
        parent = comp;
    }
    let unit = match boundary {
        Some(at) => unit.filter(|&(i, _)| i < at).map(|(_, u)| u),
        None => unit.map(|(_, u)| u).or(slice),
    };
    CgroupInfo {
        unit: unit.map(str::to_owned),
        container: container.map(|(at, runtime, id)| Container {
            runtime,
            id: id.to_owned(),
            pod_uid: pod
                .filter(|&(i, _)| i < at)
                .map(|(_, u)| u.replace('_', "-")),
        }),
    }
}

fn classify<'a>(comp: &'a str, parent: &str, in_kubepods: bool) -> Kind<'a> {
    if is_container_id(comp) {
        let runtime = if parent == "docker" {
            Runtime::Docker
        } else if in_kubepods {
            Runtime::Kubernetes
        } else {
            Runtime::Other
        };
        return Kind::Container(runtime, comp);
    }
    let stem = comp.strip_suffix(".scope").unwrap_or(comp);
    for (prefix, runtime) in RUNTIME_PREFIXES {
        if let Some(rest) = stem.strip_prefix(prefix) {
            if is_container_id(rest) {
                return Kind::Container(runtime, rest);
            }
            if rest.strip_prefix("conmon-").is_some_and(is_container_id) {
                return Kind::RuntimeScope;
            }
        }
    }
    if let Some(uid) = pod_uid(comp, in_kubepods) {
        return Kind::Pod(uid);
    }
    if !is_unit_name(comp) {
        Kind::Other
    } else if comp.ends_with(".slice") {
        Kind::Slice
    } else {
        Kind::Unit
    }
}

/// The pod uid of `kubepods[-<qos>]-pod<uid_>.slice` (systemd driver,
/// `-` escaped as `_`) or, under a `kubepods` ancestor, `pod<uid>`
/// (cgroupfs driver).
fn pod_uid(comp: &str, in_kubepods: bool) -> Option<&str> {
    let raw = if let Some(stem) = comp
        .strip_suffix(".slice")
        .filter(|s| s.starts_with("kubepods-"))
    {
        let (_, last) = stem.rsplit_once('-')?;
        last.strip_prefix("pod")?
    } else if in_kubepods {
        comp.strip_prefix("pod")?
    } else {
        return None;
    };
    is_pod_uid(raw).then_some(raw)
}

/// A UUID (`8-4-4-4-12`, with `-` or the systemd driver's `_`) or a
/// 32-hex static-pod hash, lowercase.
fn is_pod_uid(s: &str) -> bool {
    let b = s.as_bytes();
    match b.len() {
        32 => b.iter().all(|&c| is_lower_hex(c)),
        36 => b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-' || c == b'_',
            _ => is_lower_hex(c),
        }),
        _ => false,
    }
}

fn is_container_id(s: &str) -> bool {
    s.len() == CONTAINER_ID_LEN && s.bytes().all(is_lower_hex)
}

fn is_lower_hex(c: u8) -> bool {
    c.is_ascii_digit() || (b'a'..=b'f').contains(&c)
}

/// A unit name systemd would accept, of a type that can hold processes:
/// non-empty prefix of `[A-Za-z0-9:_.\-@\\]`, a known suffix, at most 255
/// bytes.
fn is_unit_name(comp: &str) -> bool {
    if comp.len() > UNIT_NAME_MAX {
        return false;
    }
    let Some(prefix) = SPECIFIC_SUFFIXES
        .iter()
        .chain(&[".slice"])
        .find_map(|suffix| comp.strip_suffix(suffix))
    else {
        return false;
    };
    !prefix.is_empty()
        && prefix
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b":_.-@\\".contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ID: &str = "4c01db0b339c3d1bd6c4f3e8e5e8ba2c7b1e9f0a0d3c1b2a39485766554433ff";
    const ID2: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn v2(path: &str) -> CgroupInfo {
        parse(&format!("0::{path}\n"))
    }

    fn container(runtime: Runtime, id: &str, pod: Option<&str>) -> Option<Container> {
        Some(Container {
            runtime,
            id: id.into(),
            pod_uid: pod.map(Into::into),
        })
    }

    #[test]
    fn systemd_units() {
        let unit = |p: &str| v2(p).unit;
        assert_eq!(
            unit("/system.slice/nginx.service").as_deref(),
            Some("nginx.service")
        );
        assert_eq!(
            unit("/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service").as_deref(),
            Some("foo.service")
        );
        assert_eq!(
            unit("/user.slice/user-1000.slice/session-3.scope").as_deref(),
            Some("session-3.scope")
        );
        // A process in user@.service's own cgroup (systemd --user itself).
        assert_eq!(
            unit("/user.slice/user-1000.slice/user@1000.service/init.scope").as_deref(),
            Some("init.scope")
        );
        // Escaped and templated names.
        assert_eq!(
            unit("/system.slice/system-getty.slice/getty@tty1.service").as_deref(),
            Some("getty@tty1.service")
        );
        assert_eq!(
            unit("/system.slice/systemd-fsck@dev-disk-by\\x2duuid-1234.service").as_deref(),
            Some("systemd-fsck@dev-disk-by\\x2duuid-1234.service")
        );
        assert_eq!(
            unit("/system.slice/cups.socket").as_deref(),
            Some("cups.socket")
        );
        assert_eq!(
            unit("/system.slice/home.mount").as_deref(),
            Some("home.mount")
        );
        assert_eq!(
            unit("/system.slice/backup.timer").as_deref(),
            Some("backup.timer")
        );
        // Sub-cgroups a service makes for itself keep the service.
        assert_eq!(
            unit("/system.slice/foo.service/worker/0").as_deref(),
            Some("foo.service")
        );
        // A slice only when nothing more specific.
        assert_eq!(unit("/system.slice").as_deref(), Some("system.slice"));
        assert_eq!(
            unit("/user.slice/user-1000.slice").as_deref(),
            Some("user-1000.slice")
        );
        assert_eq!(unit("/init.scope").as_deref(), Some("init.scope"));
        // Not units.
        assert_eq!(unit("/"), None);
        assert_eq!(unit("/foo/bar"), None);
        assert_eq!(unit("/.service"), None);
        assert_eq!(unit("/a b.service"), None);
        assert_eq!(unit("/nginx.device"), None);
        assert_eq!(unit(&format!("/{}.service", "a".repeat(300))), None);
        assert_eq!(v2("/system.slice/nginx.service").container, None);
    }

    #[test]
    fn docker_cgroupfs() {
        let info = v2(&format!("/docker/{ID}"));
        assert_eq!(info.container, container(Runtime::Docker, ID, None));
        assert_eq!(info.unit, None);
        // Docker in docker: the innermost container.
        let info = v2(&format!("/docker/{ID2}/docker/{ID}"));
        assert_eq!(info.container, container(Runtime::Docker, ID, None));
    }

    #[test]
    fn docker_systemd() {
        let info = v2(&format!("/system.slice/docker-{ID}.scope"));
        assert_eq!(info.container, container(Runtime::Docker, ID, None));
        // The scope is the container, not the unit; system.slice does not
        // enclose it as a service.
        assert_eq!(info.unit, None);
        // Rootless docker under the user's manager: its service encloses.
        let info = v2(&format!(
            "/user.slice/user-1000.slice/user@1000.service/app.slice/docker.service/docker-{ID}.scope"
        ));
        assert_eq!(info.container, container(Runtime::Docker, ID, None));
        assert_eq!(info.unit.as_deref(), Some("docker.service"));
        // systemd inside the container: its units are not host units.
        let info = v2(&format!(
            "/system.slice/docker-{ID}.scope/system.slice/nginx.service"
        ));
        assert_eq!(info.container, container(Runtime::Docker, ID, None));
        assert_eq!(info.unit, None);
    }

    #[test]
    fn containerd_cri_systemd_driver() {
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0b2c5a8e_3d4f_4c1a_9e7b_2f6d8a1c3e5b.slice/cri-containerd-{ID}.scope"
        );
        let info = v2(&path);
        assert_eq!(
            info.container,
            container(
                Runtime::Containerd,
                ID,
                Some("0b2c5a8e-3d4f-4c1a-9e7b-2f6d8a1c3e5b")
            )
        );
        assert_eq!(info.unit, None);
        // Guaranteed QoS: no QoS slice level.
        let info = v2(&format!(
            "/kubepods.slice/kubepods-pod0b2c5a8e_3d4f_4c1a_9e7b_2f6d8a1c3e5b.slice/cri-containerd-{ID}.scope"
        ));
        assert_eq!(
            info.container.and_then(|c| c.pod_uid).as_deref(),
            Some("0b2c5a8e-3d4f-4c1a-9e7b-2f6d8a1c3e5b")
        );
        // nerdctl (containerd without Kubernetes).
        let info = v2(&format!("/system.slice/nerdctl-{ID}.scope"));
        assert_eq!(info.container, container(Runtime::Containerd, ID, None));
    }

    #[test]
    fn kubernetes_cgroupfs_driver() {
        let uid = "0b2c5a8e-3d4f-4c1a-9e7b-2f6d8a1c3e5b";
        let info = v2(&format!("/kubepods/burstable/pod{uid}/{ID}"));
        assert_eq!(
            info.container,
            container(Runtime::Kubernetes, ID, Some(uid))
        );
        assert_eq!(info.unit, None);
        let info = v2(&format!("/kubepods/besteffort/pod{uid}/{ID}"));
        assert_eq!(
            info.container,
            container(Runtime::Kubernetes, ID, Some(uid))
        );
        // Guaranteed pods sit directly under /kubepods.
        let info = v2(&format!("/kubepods/pod{uid}/{ID}"));
        assert_eq!(
            info.container,
            container(Runtime::Kubernetes, ID, Some(uid))
        );
        // A static pod's uid is its 32-hex config hash.
        let hash = "2d6ec0d1f1cf5dd8f3c03c0a76e5e2d2";
        let info = v2(&format!("/kubepods/burstable/pod{hash}/{ID}"));
        assert_eq!(
            info.container,
            container(Runtime::Kubernetes, ID, Some(hash))
        );
        // CRI-O with the cgroupfs driver names itself.
        let info = v2(&format!("/kubepods/burstable/pod{uid}/crio-{ID}"));
        assert_eq!(info.container, container(Runtime::Other, ID, Some(uid)));
        // The pod cgroup alone (no container) is no container.
        assert_eq!(
            v2(&format!("/kubepods/burstable/pod{uid}")),
            CgroupInfo::default()
        );
        // `pod<uid>` outside kubepods is not a pod.
        let info = v2(&format!("/elsewhere/pod{uid}/{ID}"));
        assert_eq!(info.container, container(Runtime::Other, ID, None));
    }

    #[test]
    fn crio_systemd_driver() {
        let info = v2(&format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0b2c5a8e_3d4f_4c1a_9e7b_2f6d8a1c3e5b.slice/crio-{ID}.scope"
        ));
        assert_eq!(
            info.container,
            container(
                Runtime::Other,
                ID,
                Some("0b2c5a8e-3d4f-4c1a-9e7b-2f6d8a1c3e5b")
            )
        );
        // conmon's own scope is neither container nor unit.
        assert_eq!(
            v2(&format!("/kubepods.slice/crio-conmon-{ID}.scope")),
            CgroupInfo::default()
        );
    }

    #[test]
    fn podman() {
        let info = v2(&format!("/machine.slice/libpod-{ID}.scope"));
        assert_eq!(info.container, container(Runtime::Podman, ID, None));
        assert_eq!(info.unit, None);
        // --systemd=always / split cgroups: the payload is in `container`.
        let info = v2(&format!("/machine.slice/libpod-{ID}.scope/container"));
        assert_eq!(info.container, container(Runtime::Podman, ID, None));
        assert_eq!(info.unit, None);
        // A podman pod.
        let info = v2(&format!(
            "/machine.slice/machine-libpod_pod_{ID2}.slice/libpod-{ID}.scope/container"
        ));
        assert_eq!(info.container, container(Runtime::Podman, ID, None));
        // Rootless: the user manager's service encloses it.
        let info = v2(&format!(
            "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"
        ));
        assert_eq!(info.container, container(Runtime::Podman, ID, None));
        assert_eq!(info.unit.as_deref(), Some("user@1000.service"));
        // cgroupfs driver.
        let info = v2(&format!("/libpod_parent/libpod-{ID}"));
        assert_eq!(info.container, container(Runtime::Podman, ID, None));
        // conmon.
        assert_eq!(
            v2(&format!("/machine.slice/libpod-conmon-{ID}.scope")),
            CgroupInfo::default()
        );
    }

    #[test]
    fn bare_id_elsewhere_is_other() {
        let info = v2(&format!("/actions_job/{ID}"));
        assert_eq!(info.container, container(Runtime::Other, ID, None));
    }

    #[test]
    fn odd_ids_are_not_containers() {
        let short = &ID[..63];
        let upper = ID.to_uppercase();
        for path in [
            format!("/docker/{short}"),
            format!("/docker/{ID}0"),
            format!("/docker/{upper}"),
            format!("/system.slice/docker-{short}.scope"),
            format!("/system.slice/docker-{ID}x.scope"),
            format!("/system.slice/docker-{}.scope", "g".repeat(64)),
            "/kubepods/burstable/podnot-a-uid/x".to_string(),
        ] {
            assert_eq!(v2(&path).container, None, "{path}");
        }
        // An invalid pod uid: the container is found, the pod is not.
        let info = v2(&format!("/kubepods/burstable/pod1234/{ID}"));
        assert_eq!(info.container, container(Runtime::Kubernetes, ID, None));
        // `docker-<bad>.scope` is still a valid unit name: a scope.
        assert_eq!(
            v2(&format!("/system.slice/docker-{short}.scope")).unit,
            Some(format!("docker-{short}.scope"))
        );
    }

    #[test]
    fn v1_fallback_and_line_selection() {
        // Hybrid host: v2 empty at the root, systemd in the named hierarchy.
        let text = format!(
            "12:pids:/system.slice/docker-{ID}.scope\n\
             11:memory:/system.slice/docker-{ID}.scope\n\
             1:name=systemd:/system.slice/docker-{ID}.scope\n\
             0::/\n"
        );
        assert_eq!(parse(&text).container, container(Runtime::Docker, ID, None));
        // Pure v1 (no v2 line), cgroupfs docker.
        let text = format!("4:memory:/docker/{ID}\n1:name=systemd:/docker/{ID}\n");
        assert_eq!(parse(&text).container, container(Runtime::Docker, ID, None));
        // A non-root v2 path wins over the v1 line.
        let text = "1:name=systemd:/system.slice/old.service\n0::/system.slice/new.service\n";
        assert_eq!(parse(text).unit.as_deref(), Some("new.service"));
        // Other v1 lines are not read.
        assert_eq!(
            parse("4:memory:/system.slice/x.service\n0::/\n"),
            CgroupInfo::default()
        );
        // name=systemd among several controllers of one hierarchy.
        assert_eq!(
            parse("1:cpu,name=systemd:/system.slice/y.service\n")
                .unit
                .as_deref(),
            Some("y.service")
        );
        // A path with a colon is kept whole.
        assert_eq!(
            parse("0::/a:b.service\n").unit.as_deref(),
            Some("a:b.service")
        );
        // A removed cgroup (zombie member).
        assert_eq!(
            parse("0::/system.slice/gone.service (deleted)\n")
                .unit
                .as_deref(),
            Some("gone.service")
        );
        // This machine's shape: everything at the root.
        let here =
            "9:name=systemd:/\n4:memory:/process_api/c9c104399d23ad589d0b66d3b31ee4f7\n0::/\n";
        assert_eq!(parse(here), CgroupInfo::default());
    }

    #[test]
    fn garbage_is_nothing() {
        for text in [
            "",
            "\n",
            "0",
            "0:",
            "::::",
            "0::",
            "garbage\n\n\0",
            "0::////",
        ] {
            assert_eq!(parse(text), CgroupInfo::default(), "{text:?}");
        }
    }

    #[test]
    fn short_id() {
        let c = Container {
            runtime: Runtime::Docker,
            id: ID.into(),
            pod_uid: None,
        };
        assert_eq!(c.short(), "4c01db0b339c");
        let c = Container {
            id: "abc".into(),
            ..c
        };
        assert_eq!(c.short(), "abc");
    }

    /// Components real paths are made of, to exercise every branch.
    fn component() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("docker".to_string()),
            Just("kubepods".to_string()),
            Just("kubepods.slice".to_string()),
            Just("system.slice".to_string()),
            Just("user@1000.service".to_string()),
            Just("nginx.service".to_string()),
            Just("session-3.scope".to_string()),
            Just("container".to_string()),
            Just(ID.to_string()),
            Just(format!("docker-{ID}.scope")),
            Just(format!("libpod-conmon-{ID}.scope")),
            Just(format!("cri-containerd-{ID2}.scope")),
            Just("pod0b2c5a8e-3d4f-4c1a-9e7b-2f6d8a1c3e5b".to_string()),
            Just("kubepods-burstable-pod0b2c5a8e_3d4f_4c1a_9e7b_2f6d8a1c3e5b.slice".to_string()),
            "[a-z0-9_.@:-]{0,12}",
            "\\PC{0,8}",
        ]
    }

    /// Every output string is a slice of the input (a pod uid after `_` →
    /// `-`), so nothing is invented and nothing outgrows the input.
    fn assert_from_input(text: &str, info: &CgroupInfo) -> Result<(), TestCaseError> {
        if let Some(u) = &info.unit {
            prop_assert!(text.contains(u.as_str()), "unit {u:?} not in {text:?}");
            prop_assert!(u.len() <= UNIT_NAME_MAX);
        }
        if let Some(c) = &info.container {
            prop_assert!(
                text.contains(c.id.as_str()),
                "id {:?} not in {text:?}",
                c.id
            );
            prop_assert_eq!(c.id.len(), CONTAINER_ID_LEN);
            if let Some(p) = &c.pod_uid {
                prop_assert!(
                    text.contains(p.as_str()) || text.contains(&p.replace('-', "_")),
                    "pod uid {p:?} not in {text:?}"
                );
            }
        }
        Ok(())
    }

    proptest! {
        /// Arbitrary text never panics and yields only input substrings.
        #[test]
        fn arbitrary_text(text in "\\PC{0,300}|[0-9:/a-z,=.@ -]{0,300}") {
            let info = parse(&text);
            assert_from_input(&text, &info)?;
        }

        /// Real-looking paths from random components: same properties, and
        /// a unit and a container never name the same component.
        #[test]
        fn assembled_paths(
            comps in proptest::collection::vec(component(), 0..8),
            v1 in any::<bool>(),
        ) {
            let path = format!("/{}", comps.join("/"));
            let text = if v1 {
                format!("1:name=systemd:{path}\n0::/\n")
            } else {
                format!("0::{path}\n")
            };
            let info = parse(&text);
            assert_from_input(&text, &info)?;
            if let (Some(u), Some(c)) = (&info.unit, &info.container) {
                prop_assert!(!u.contains(c.id.as_str()));
            }
        }
    }
}
