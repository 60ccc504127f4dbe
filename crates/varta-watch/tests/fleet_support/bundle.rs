//! Copies of the observability bundle for a bounded run: the rules and the
//! Alertmanager example exactly as shipped, except for their waiting times
//! (and the receivers' URL). Each copy is compared with its original line
//! by line, so an expression, a metric name, a label, a route or an
//! inhibition in the bundle is what the fleet test runs, never a copy of it.

use std::path::{Path, PathBuf};

/// `for:` of every alert rule in the copy. Long enough that the bundle's
/// `changes(...[2m]) == 0` (VartaObserverLoopStalled) cannot fire on the
/// first scrape of a healthy observer (it needs one scrape interval more
/// than the two samples it takes to see a change), short enough for a
/// bounded test.
pub const RULE_FOR: &str = "5s";
/// Alertmanager waiting times in the copy. `repeat_interval` stays as
/// shipped (1h, 4h): a repeat inside the test would be a duplicate.
pub const GROUP_WAIT: &str = "1s";
pub const GROUP_INTERVAL: &str = "2s";

pub fn bundle_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../observability")
}

/// Rewrites the value of each `key:` line for which `value` returns one,
/// keeping the indentation. Returns the copy and how many lines changed.
fn rewrite(text: &str, mut value: impl FnMut(&str, &str) -> Option<String>) -> (String, usize) {
    let mut changed = 0;
    let mut out = String::new();
    for line in text.lines() {
        let body = line.trim_start();
        let indent = &line[..line.len() - body.len()];
        let new = body
            .split_once(':')
            .and_then(|(k, v)| Some((k, value(k, v.trim())?)))
            .map(|(k, v)| format!("{indent}{k}: {v}"));
        match new {
            Some(n) if n != line => {
                changed += 1;
                out += &n;
            }
            _ => out += line,
        }
        out.push('\n');
    }
    (out, changed)
}

/// Asserts `copy` differs from `original` only in lines whose key (text
/// before the first `:`) is one of `keys`, and that the key is unchanged.
fn assert_only_keys_differ(original: &str, copy: &str, keys: &[&str]) {
    let (a, b): (Vec<_>, Vec<_>) = (original.lines().collect(), copy.lines().collect());
    assert_eq!(a.len(), b.len(), "the copy has other lines than the bundle");
    for (x, y) in a.iter().zip(&b) {
        if x == y {
            continue;
        }
        let key = |l: &str| l.split_once(':').map(|(k, _)| k.to_string());
        let k = key(x).unwrap_or_default();
        assert!(
            key(y) == key(x) && keys.contains(&k.trim()),
            "the copy changes more than {keys:?}:\n  bundle: {x}\n  copy:   {y}"
        );
    }
}

/// Writes both Prometheus rule files into `dir` with every `for:` set to
/// [`RULE_FOR`]; returns their paths.
pub fn rule_copies(dir: &Path) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    let mut shortened = 0;
    for file in ["varta-alerts.yml", "varta-recording.yml"] {
        let original = std::fs::read_to_string(bundle_dir().join("prometheus").join(file)).unwrap();
        let (copy, n) = rewrite(&original, |k, _| (k == "for").then(|| RULE_FOR.to_string()));
        assert_only_keys_differ(&original, &copy, &["for"]);
        shortened += n;
        let path = dir.join(file);
        std::fs::write(&path, copy).unwrap();
        paths.push(path);
    }
    // VartaAgentsStalled and VartaObserverDown (both `for: 1m`) at least.
    assert!(
        shortened >= 2,
        "no `for:` shortened: has the bundle changed?"
    );
    paths
}

/// The bundle's alertmanager.yml with short group waits and every receiver
/// URL (`http://127.0.0.1:5001/varta/...`) pointed at `webhook`, keeping
/// the path, so routing by severity is tested as shipped.
pub fn alertmanager_copy(dir: &Path, webhook: &str) -> PathBuf {
    let original =
        std::fs::read_to_string(bundle_dir().join("alertmanager/alertmanager.yml")).unwrap();
    let (copy, n) = rewrite(&original, |k, v| match k {
        "group_wait" => Some(GROUP_WAIT.into()),
        "group_interval" => Some(GROUP_INTERVAL.into()),
        "- url" => {
            let url = v.trim_matches('\'');
            let path = url.strip_prefix("http://")?.split_once('/')?.1;
            Some(format!("'{webhook}/{path}'"))
        }
        _ => None,
    });
    assert_only_keys_differ(&original, &copy, &["group_wait", "group_interval", "- url"]);
    assert!(
        n >= 3,
        "receivers not found in the bundle's alertmanager.yml"
    );
    let path = dir.join("alertmanager.yml");
    std::fs::write(&path, copy).unwrap();
    path
}
