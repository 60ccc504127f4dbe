//! Reading the secure UDP listener's key files, shared by validation (a
//! typo must stop the start, not surface as decrypt failures once agents
//! beat) and the listener that keeps the keys. Keys are read under the
//! secret-file rules and zeroized on drop (`varta_vlp::Key`).

use std::path::Path;

use varta_vlp::Key;

use crate::udp::KeyFiles;

fn read(path: &Path, option: &str) -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
    varta_audit::secret_file::read_secret_file(path).map_err(|e| format!("{option} {e}"))
}

fn text<'a>(bytes: &'a [u8], path: &Path, option: &str) -> Result<&'a str, String> {
    std::str::from_utf8(bytes).map_err(|_| {
        format!(
            "{option} {}: is not text; it must hold 64 hex characters per key (create one with `varta keygen FILE`)",
            path.display()
        )
    })
}

/// Reads every configured key file: the shared keys (`--key-file`, then
/// every `--accepted-key-file`) and the master key. Errors name the option,
/// the file and, for a malformed key, the line and column — never key
/// material.
pub fn read_keys(files: &KeyFiles) -> Result<(Vec<Key>, Option<Key>), String> {
    let mut shared = Vec::new();
    if let Some(p) = &files.key_file {
        let bytes = read(p, "key-file")?;
        let key = varta_vlp::parse_key_file(text(&bytes, p, "key-file")?)
            .map_err(|e| format!("key-file {}: {e}", p.display()))?;
        shared.push(key);
    }
    for p in &files.accepted {
        let bytes = read(p, "accepted-key-file")?;
        let keys = varta_vlp::parse_key_list(text(&bytes, p, "accepted-key-file")?)
            .map_err(|e| format!("accepted-key-file {}: {e}", p.display()))?;
        shared.extend(keys);
    }
    let master = match &files.master {
        Some(p) => {
            let bytes = read(p, "master-key-file")?;
            Some(
                varta_vlp::parse_key_file(text(&bytes, p, "master-key-file")?)
                    .map_err(|e| format!("master-key-file {}: {e}", p.display()))?,
            )
        }
        None => None,
    };
    if shared.is_empty() && master.is_none() {
        return Err("no secure-UDP key configured".into());
    }
    Ok((shared, master))
}
