//! The deployment files against the real binary: every `--flag` the
//! Kubernetes manifest (`deploy/kubernetes/varta-watch.yaml`) and the
//! deployment guide (`docs/deployment.md`) pass to `varta-watch` must be
//! one its `--help` lists, the ConfigMap's TOML must be a config the binary
//! accepts, and the DaemonSet's container must start with exactly its args
//! and volumes (paths moved into a temporary directory) and answer its
//! probes. A renamed flag or key therefore fails here, naming the file.
//!
//! There is no cluster in CI: the test plays the kubelet's part for the
//! one pod (volumes laid out as kubelet lays them, the init container's
//! script run, `$(VAR)` args expanded from the container's env).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, spawn_guarded, PATIENCE};
use serde::Deserialize;
use serde_norway::Value;

const MANIFEST: &str = "deploy/kubernetes/varta-watch.yaml";
const GUIDE: &str = "docs/deployment.md";
const CONTAINER: &str = "varta-watch";
/// A valid bearer token for the Secret the manifest expects.
const TOKEN: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

#[test]
fn agent_entry() {
    common::maybe_run_agent();
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

/// Every long flag `varta-watch --help` lists.
fn help_flags() -> BTreeSet<String> {
    let out = Command::new(bin()).arg("--help").output().unwrap();
    assert!(out.status.success(), "varta-watch --help failed");
    let text = String::from_utf8(out.stdout).unwrap();
    let flags: BTreeSet<String> = text
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let l = l
                .strip_prefix("-h, ")
                .or(l.strip_prefix("-V, "))
                .unwrap_or(l);
            let name: String = l
                .strip_prefix("--")?
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            Some(format!("--{name}"))
        })
        .collect();
    // Guards the parser itself: a help layout change must not make every
    // lookup below vacuous.
    for f in ["--socket", "--threshold-ms", "--prom-addr", "--config"] {
        assert!(flags.contains(f), "help parser lost {f}: {flags:?}");
    }
    flags
}

/// `--name=value` or `--name` → `--name`.
fn flag_of(arg: &str) -> Option<&str> {
    arg.starts_with("--")
        .then(|| arg.split_once('=').map_or(arg, |(f, _)| f))
}

struct Manifest {
    docs: Vec<Value>,
}

impl Manifest {
    fn load() -> Manifest {
        let text = std::fs::read_to_string(repo_file(MANIFEST)).unwrap();
        let docs = serde_norway::Deserializer::from_str(&text)
            .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{MANIFEST}: {e}")))
            .filter(|v| !v.is_null())
            .collect();
        Manifest { docs }
    }

    fn object(&self, kind: &str) -> &Value {
        self.docs
            .iter()
            .find(|d| d["kind"].as_str() == Some(kind))
            .unwrap_or_else(|| panic!("{MANIFEST} has no {kind}"))
    }

    fn pod(&self) -> &Value {
        &self.object("DaemonSet")["spec"]["template"]["spec"]
    }

    fn container(&self, list: &str, name: &str) -> &Value {
        seq(&self.pod()[list])
            .iter()
            .find(|c| c["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("{MANIFEST}: no {list} entry named {name}"))
    }

    /// The ConfigMap's TOML, by file name.
    fn config_files(&self) -> BTreeMap<String, String> {
        let data = &self.object("ConfigMap")["data"];
        data.as_mapping()
            .expect("ConfigMap data")
            .iter()
            .map(|(k, v)| (k.as_str().unwrap().into(), v.as_str().unwrap().into()))
            .collect()
    }
}

fn seq(v: &Value) -> &[Value] {
    v.as_sequence().map_or(&[], |s| s.as_slice())
}

fn strings(v: &Value) -> Vec<String> {
    seq(v)
        .iter()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

/// `--name=value` arguments as a map (flags without a value map to "").
fn arg_map(args: &[String]) -> BTreeMap<&str, &str> {
    args.iter()
        .filter_map(|a| flag_of(a).map(|f| (f, a.split_once('=').map_or("", |(_, v)| v))))
        .collect()
}

#[test]
fn every_flag_and_config_key_of_the_manifest_is_in_help() {
    let help = help_flags();
    let m = Manifest::load();
    let args = strings(&m.container("containers", CONTAINER)["args"]);
    let mut checked = 0;
    let mut missing = Vec::new();
    for flag in args.iter().filter_map(|a| flag_of(a)) {
        checked += 1;
        if !help.contains(flag) {
            missing.push(format!("container {CONTAINER} arg {flag}"));
        }
    }
    for (file, text) in m.config_files() {
        let table: toml::Table = text
            .parse()
            .unwrap_or_else(|e| panic!("{MANIFEST}: ConfigMap {file}: {e}"));
        // `[[agent]]` rules exist only in the file; the binary run below
        // validates their keys.
        for key in table.keys().filter(|k| *k != "agent") {
            checked += 1;
            let flag = format!("--{}", key.replace('_', "-"));
            if !help.contains(&flag) {
                missing.push(format!("ConfigMap {file} key {key}"));
            }
        }
    }
    assert!(
        checked >= 8,
        "only {checked} flags and keys found in {MANIFEST}"
    );
    assert!(
        missing.is_empty(),
        "{MANIFEST} uses flags `varta-watch --help` does not list (renamed or removed?): {}",
        missing.join(", ")
    );
}

#[test]
fn the_daemonset_is_wired_as_its_comments_say() {
    let m = Manifest::load();
    let pod = m.pod();
    let c = m.container("containers", CONTAINER);
    let args = strings(&c["args"]);
    let a = arg_map(&args);
    assert_eq!(
        pod["hostPID"].as_bool(),
        Some(true),
        "agents in other pods need hostPID"
    );
    assert_eq!(pod["automountServiceAccountToken"].as_bool(), Some(false));
    assert!(a.contains_key("--allow-cross-namespace-agents"));
    let uid = pod["securityContext"]["runAsUser"]
        .as_u64()
        .expect("runAsUser");
    assert!(uid > 0 && pod["securityContext"]["runAsGroup"].as_u64().is_some());

    // The socket is on the node's /run/varta, shared with agent pods.
    let host_vol = seq(&pod["volumes"])
        .iter()
        .find(|v| v["hostPath"]["path"].as_str() == Some("/run/varta"))
        .expect("a hostPath volume for /run/varta");
    let mount = seq(&c["volumeMounts"])
        .iter()
        .find(|vm| vm["name"] == host_vol["name"])
        .expect("the observer mounts the /run/varta hostPath");
    let socket = Path::new(a["--socket"]);
    assert_eq!(
        socket.parent(),
        Some(Path::new(mount["mountPath"].as_str().unwrap()))
    );

    // One port everywhere: --prom-addr, the named container port, probes,
    // scrape annotation, Service.
    let port: u16 = a["--prom-addr"]
        .rsplit_once(':')
        .unwrap()
        .1
        .parse()
        .unwrap();
    let named = seq(&c["ports"])
        .iter()
        .find(|p| p["name"].as_str() == Some("metrics"))
        .expect("a port named metrics");
    assert_eq!(named["containerPort"].as_u64(), Some(port.into()));
    for (probe, path) in [
        ("livenessProbe", "/-/healthy"),
        ("readinessProbe", "/-/ready"),
    ] {
        assert_eq!(c[probe]["httpGet"]["path"].as_str(), Some(path), "{probe}");
        assert_eq!(
            c[probe]["httpGet"]["port"].as_str(),
            Some("metrics"),
            "{probe}"
        );
    }
    let ann = &m.object("DaemonSet")["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(
        ann["prometheus.io/port"].as_str(),
        Some(port.to_string().as_str())
    );
    let svc = &m.object("Service")["spec"]["ports"][0];
    assert_eq!(svc["targetPort"].as_str(), Some("metrics"));

    // `kubectl exec POD -- varta status` finds the control socket.
    let env_socket = seq(&c["env"])
        .iter()
        .find(|e| e["name"].as_str() == Some("VARTA_CONTROL_SOCKET"))
        .and_then(|e| e["value"].as_str());
    assert_eq!(env_socket, Some(a["--control-socket"]));
    for key in ["cpu", "memory"] {
        assert!(!c["resources"]["requests"][key].is_null(), "requests.{key}");
    }
    assert!(!c["resources"]["limits"]["memory"].is_null());
}

/// Replaces every in-container path under a mount with its directory in
/// `vols`, longest mount first and only at a path boundary (so
/// `/run/varta` does not match inside `/run/varta-control`).
fn rewrite(s: &str, mounts: &[(String, PathBuf)]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    'outer: while !rest.is_empty() {
        for (from, to) in mounts {
            if let Some(after) = rest.strip_prefix(from.as_str()) {
                let boundary = after.chars().next().is_none_or(|c| {
                    !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
                });
                let at_start = out
                    .chars()
                    .last()
                    .is_none_or(|c| !c.is_ascii_alphanumeric());
                if boundary && at_start {
                    out.push_str(to.to_str().unwrap());
                    rest = after;
                    continue 'outer;
                }
            }
        }
        let c = rest.chars().next().unwrap();
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Lays out the pod's volumes as the kubelet does and returns each
/// container mount (mountPath → host directory), longest first.
fn lay_out_volumes(m: &Manifest, root: &Path, c: &Value) -> Vec<(String, PathBuf)> {
    let mode =
        |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    let configs = m.config_files();
    let mut mounts = Vec::new();
    for vm in seq(&c["volumeMounts"]) {
        let name = vm["name"].as_str().unwrap();
        let vol = seq(&m.pod()["volumes"])
            .iter()
            .find(|v| v["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("{MANIFEST}: mount of undeclared volume {name}"));
        let dir = root.join("volumes").join(name);
        if !dir.exists() {
            std::fs::create_dir_all(&dir).unwrap();
            if !vol["hostPath"].is_null() {
                mode(&dir, 0o755); // DirectoryOrCreate: root, 0755
            } else if !vol["emptyDir"].is_null() {
                mode(&dir, 0o777); // kubelet creates emptyDir world-writable
            } else if !vol["secret"].is_null() {
                let f = dir.join("token");
                std::fs::write(&f, format!("{TOKEN}\n")).unwrap();
                mode(&f, 0o400);
            } else if !vol["configMap"].is_null() {
                for (file, text) in &configs {
                    std::fs::write(dir.join(file), text).unwrap();
                }
            } else {
                panic!("{MANIFEST}: volume {name} of a kind this test does not lay out");
            }
        }
        mounts.push((vm["mountPath"].as_str().unwrap().to_owned(), dir));
    }
    mounts.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    mounts
}

/// `$(VAR)` in args, expanded from the container's env as the kubelet does.
fn expand(arg: &str, c: &Value) -> String {
    let mut s = arg.to_owned();
    for e in seq(&c["env"]) {
        let name = e["name"].as_str().unwrap();
        let value = e["value"].as_str().unwrap_or("test-node");
        s = s.replace(&format!("$({name})"), value);
    }
    assert!(
        !s.contains("$("),
        "{MANIFEST}: {arg} refers to a variable the container's env lacks"
    );
    s
}

#[test]
fn the_daemonset_container_starts_with_its_args_volumes_and_config() {
    let m = Manifest::load();
    let dir = tempfile::tempdir().unwrap();
    let uid = nix::unistd::geteuid().as_raw().to_string();
    let gid = nix::unistd::getegid().as_raw().to_string();
    let pod_uid = m.pod()["securityContext"]["runAsUser"]
        .as_u64()
        .unwrap()
        .to_string();
    let pod_gid = m.pod()["securityContext"]["runAsGroup"]
        .as_u64()
        .unwrap()
        .to_string();

    // The init container's script, on the same volumes, with the pod's
    // uid/gid replaced by ours (we run as one user, not as root then 10001).
    let init = m.container("initContainers", "prepare");
    let init_mounts = lay_out_volumes(&m, dir.path(), init);
    let cmd = strings(&init["command"]);
    assert_eq!(cmd[..2], ["/bin/sh", "-ec"], "init command shape");
    let script = rewrite(&cmd[2], &init_mounts)
        .replace(&format!("{pod_uid}:{pod_gid}"), &format!("{uid}:{gid}"))
        .replace(
            &format!("-o {pod_uid} -g {pod_gid}"),
            &format!("-o {uid} -g {gid}"),
        );
    let st = Command::new("/bin/sh")
        .args(["-ec", &script])
        .status()
        .unwrap();
    assert!(st.success(), "init script failed: {script}");

    let c = m.container("containers", CONTAINER);
    let mounts = lay_out_volumes(&m, dir.path(), c);
    // The config file is read from the (rewritten) ConfigMap volume.
    for (mount, vdir) in &mounts {
        let is_config = seq(&c["volumeMounts"]).iter().any(|vm| {
            vm["mountPath"].as_str() == Some(mount.as_str())
                && seq(&m.pod()["volumes"])
                    .iter()
                    .any(|v| v["name"] == vm["name"] && !v["configMap"].is_null())
        });
        if is_config {
            for (file, text) in m.config_files() {
                std::fs::write(vdir.join(file), rewrite(&text, &mounts)).unwrap();
            }
        }
    }
    let args: Vec<String> = strings(&c["args"])
        .iter()
        .map(|a| match a.split_once('=') {
            // Any free port on loopback instead of 0.0.0.0:9464.
            Some(("--prom-addr", _)) => "--prom-addr=127.0.0.1:0".to_owned(),
            _ => rewrite(&expand(a, c), &mounts),
        })
        .collect();
    let a = arg_map(&args);
    let socket = PathBuf::from(a["--socket"]);
    let control = PathBuf::from(a["--control-socket"]);

    let mut obs = spawn_guarded(
        Command::new(bin())
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .unwrap();
    // stdout: `metrics: http://ADDR/metrics`, then `control: PATH`. EOF
    // first means it refused to start: say why, from stderr.
    let mut stdout = BufReader::new(obs.stdout.take().unwrap());
    let mut lines = Vec::new();
    for _ in 0..2 {
        let mut l = String::new();
        if stdout.read_line(&mut l).unwrap() == 0 {
            let mut err = String::new();
            let _ = obs.stderr.take().unwrap().read_to_string(&mut err);
            panic!("varta-watch {args:?} did not start:\n{err}");
        }
        lines.push(l.trim().to_owned());
    }
    let addr: SocketAddr = lines[0]
        .strip_prefix("metrics: http://")
        .and_then(|s| s.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("metrics line: {lines:?}"))
        .parse()
        .unwrap();
    assert_eq!(lines[1], format!("control: {}", control.display()));
    assert!(
        socket.exists(),
        "beat socket {} not bound",
        socket.display()
    );

    // The probes' paths answer 200 without a token.
    for probe in ["readinessProbe", "livenessProbe"] {
        let path = c[probe]["httpGet"]["path"].as_str().unwrap();
        assert_eq!(common::http_get(addr, path, None).0, 200, "{probe} {path}");
    }
    // The token the init container installed is the one /metrics wants,
    // and a beat on the hostPath socket is tracked.
    let mut agent = varta_client::Varta::connect(&socket).unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let _ = agent.beat(varta_client::Status::Ok, 0);
        let (code, body) = common::http_get(addr, "/metrics", Some(TOKEN));
        assert_eq!(code, 200, "/metrics with the Secret's token");
        if body.lines().any(|l| l == "varta_agents{state=\"alive\"} 1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the beat was never tracked:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    nix::sys::signal::kill(obs.pid(), nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(s) = obs.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "clean exit on SIGTERM");
}

/// `varta-watch` invocations in the guide's ```sh blocks: the flags after
/// the command word, up to a shell separator or comment.
fn guide_flags() -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(repo_file(GUIDE)).unwrap();
    let mut out = Vec::new();
    let mut in_sh = false;
    let mut joined = String::new();
    let mut start = 0;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with("```") {
            in_sh = !in_sh && (t == "```sh" || t == "```bash");
            continue;
        }
        if !in_sh {
            continue;
        }
        if joined.is_empty() {
            start = i + 1;
        }
        match t.strip_suffix('\\') {
            Some(head) => {
                joined.push_str(head);
                joined.push(' ');
                continue;
            }
            None => joined.push_str(t),
        }
        let mut words = joined.split_whitespace();
        while let Some(w) = words.by_ref().next() {
            if w == "varta-watch" || w.ends_with("/varta-watch") {
                for w in words.by_ref() {
                    if w.starts_with('#') || ["|", ";", "&&", "&", "||", ">", "2>&1"].contains(&w) {
                        break;
                    }
                    if let Some(f) = flag_of(w.trim_matches(|c| c == '"' || c == '\'')) {
                        out.push((start, f.to_owned()));
                    }
                }
            }
        }
        joined.clear();
    }
    out
}

#[test]
fn the_guides_shell_examples_use_real_flags() {
    let help = help_flags();
    let flags = guide_flags();
    assert!(
        flags.len() >= 10,
        "only {} varta-watch flags found in {GUIDE}'s sh blocks",
        flags.len()
    );
    let missing: Vec<String> = flags
        .iter()
        .filter(|(_, f)| !help.contains(f))
        .map(|(line, f)| format!("{GUIDE}:{line}: {f}"))
        .collect();
    assert!(
        missing.is_empty(),
        "flags in the guide that `varta-watch --help` does not list (renamed or removed?):\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_rewrite_respects_path_boundaries() {
    let mounts = vec![
        ("/run/varta-control".to_owned(), PathBuf::from("/t/c")),
        ("/run/varta".to_owned(), PathBuf::from("/t/r")),
    ];
    assert_eq!(
        rewrite(
            "--socket=/run/varta/varta.sock /run/varta-control/x /run/vartax /a/run/varta",
            &mounts
        ),
        "--socket=/t/r/varta.sock /t/c/x /run/vartax /a/run/varta"
    );
}
