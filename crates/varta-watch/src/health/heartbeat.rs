//! `--heartbeat-file`: `<loop_count> <observer_ns>\n`, the original 0.2.0's
//! format, replaced atomically so a reader never sees a torn line.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Writes the heartbeat file through a temporary file in the same
/// directory (rename is atomic only within one filesystem).
#[derive(Debug)]
pub(crate) struct HeartbeatFile {
    path: PathBuf,
    tmp: PathBuf,
}

/// The line for `iterations` loop iterations, the last at `observer_ns`.
pub(crate) fn line(iterations: u64, observer_ns: u64) -> String {
    format!("{iterations} {observer_ns}\n")
}

impl HeartbeatFile {
    /// Targets `path`; the temporary file is `.<name>.<pid>.tmp` beside it.
    pub(crate) fn new(path: &Path) -> HeartbeatFile {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "heartbeat".into());
        let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        HeartbeatFile {
            path: path.to_path_buf(),
            tmp,
        }
    }

    /// The file written.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the file's content with `line(iterations, observer_ns)`.
    pub(crate) fn write(&self, iterations: u64, observer_ns: u64) -> io::Result<()> {
        let result = self.replace(line(iterations, observer_ns).as_bytes());
        if result.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
        result
    }

    fn replace(&self, bytes: &[u8]) -> io::Result<()> {
        // O_NOFOLLOW: in a shared directory someone could plant a symlink
        // at the predictable temporary name to make us overwrite its target.
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&self.tmp)?;
        f.write_all(bytes)?;
        drop(f);
        std::fs::rename(&self.tmp, &self.path)
    }
}

/// Startup check: the directory must exist and the path must not be a
/// directory, so a typo is an error at start rather than a log line every
/// 100 ms.
pub(crate) fn check(path: &Path) -> Result<(), String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(format!(
            "heartbeat-file {}: directory {} does not exist",
            path.display(),
            dir.display()
        ));
    }
    if path.is_dir() {
        return Err(format!(
            "heartbeat-file {}: is a directory; name a file",
            path.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_original_format_and_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hb");
        let hb = HeartbeatFile::new(&path);
        hb.write(1, 250_000_000).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1 250000000\n");
        hb.write(2, 500_000_000).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "2 500000000\n");
        // Only the file itself remains: the temporary was renamed over it.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["hb"]);
    }

    #[test]
    fn a_planted_symlink_is_not_followed_and_no_temporary_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hb");
        let hb = HeartbeatFile::new(&path);
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, &hb.tmp).unwrap();
        assert!(hb.write(1, 1).is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert!(!hb.tmp.exists() && !path.exists());
    }

    #[test]
    fn startup_check_names_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check(&dir.path().join("hb")).is_ok());
        let e = check(&dir.path().join("missing/hb")).unwrap_err();
        assert!(e.contains("does not exist"), "{e}");
        let e = check(dir.path()).unwrap_err();
        assert!(e.contains("is a directory"), "{e}");
    }
}
