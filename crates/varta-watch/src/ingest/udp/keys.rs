//! The secure listener's key set: shared keys (`--key-file` and every
//! `--accepted-key-file`) and the optional master key. Keys are read under
//! the secret-file rules, zeroized when dropped (`varta_vlp::secure::Key`),
//! never cloned, logged or shown by `Debug`.

use varta_vlp as secure;
use varta_vlp::FRAME_LEN;
use varta_vlp::{AuthError, Key, MASTER_LEN, SHARED_LEN};

use crate::config::KeyFiles;

/// The keys one secure listener tries.
pub struct KeySet {
    shared: Vec<Key>,
    master: Option<Key>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Counts only: key material never reaches a formatter.
        f.write_str(&self.describe())
    }
}

/// What opening a 64-byte master-key datagram came to.
#[derive(Debug, PartialEq, Eq)]
pub enum MasterOpen {
    /// Verified; the frame's pid equals the cleartext pid.
    Ok {
        /// The authenticated pid.
        pid: u32,
        /// The 32-byte VLP frame, still to be decoded.
        plain: [u8; FRAME_LEN],
    },
    /// No master key is configured, or the tag did not verify.
    Failed,
    /// The tag verified but the sealed frame names another pid.
    PidMismatch {
        /// Cleartext (authenticated) pid.
        wire_pid: u32,
        /// pid inside the frame.
        frame_pid: u32,
    },
}

impl KeySet {
    /// Reads every configured key file. Errors name the option, the file
    /// and, for a malformed key, the line and column — never key material.
    pub fn load(files: &KeyFiles) -> Result<KeySet, String> {
        let (shared, master) = varta_config::keys::read_keys(files)?;
        Ok(KeySet { shared, master })
    }

    /// A set from keys in hand (tests, benchmarks).
    pub fn from_keys(shared: Vec<Key>, master: Option<Key>) -> KeySet {
        KeySet { shared, master }
    }

    /// Number of shared keys.
    pub fn shared_len(&self) -> usize {
        self.shared.len()
    }

    /// Whether a master key is configured.
    pub fn has_master(&self) -> bool {
        self.master.is_some()
    }

    /// `2 shared keys, master key` — for logs; no key material.
    pub fn describe(&self) -> String {
        let n = self.shared.len();
        let mut s = format!("{n} shared key{}", if n == 1 { "" } else { "s" });
        if self.master.is_some() {
            s.push_str(", master key");
        }
        s
    }

    /// Tries every shared key on a 60-byte datagram — all of them, even
    /// after one succeeded, so the time taken does not reveal which key
    /// index matched. Returns the plaintext of the first key that verified
    /// and the number of AEAD attempts made.
    pub fn open_shared(&self, sealed: &[u8; SHARED_LEN]) -> (Option<[u8; FRAME_LEN]>, u32) {
        let mut found = None;
        for key in &self.shared {
            let r = secure::open_shared(key, sealed);
            if found.is_none() {
                found = r.ok();
            }
        }
        (found, self.shared.len() as u32)
    }

    /// Opens a 64-byte master-key datagram: derives the agent key for the
    /// cleartext pid, verifies, and checks the sealed frame's pid. Returns
    /// the outcome and the AEAD attempts made (0 without a master key).
    pub fn open_master(&self, sealed: &[u8; MASTER_LEN]) -> (MasterOpen, u32) {
        let Some(master) = &self.master else {
            return (MasterOpen::Failed, 0);
        };
        let outcome = match secure::open_master(master, sealed) {
            Ok((pid, plain)) => MasterOpen::Ok { pid, plain },
            Err(AuthError::BadTag) => MasterOpen::Failed,
            Err(AuthError::PidMismatch {
                wire_pid,
                frame_pid,
            }) => MasterOpen::PidMismatch {
                wire_pid,
                frame_pid,
            },
        };
        (outcome, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use varta_vlp::{Frame, Status};

    fn key(b: u8) -> Key {
        Key::from_bytes([b; 32])
    }

    fn plain(pid: u32) -> [u8; FRAME_LEN] {
        Frame::new(Status::Ok, pid, 1, 1, 0).to_bytes()
    }

    #[test]
    fn every_key_is_tried_and_the_matching_one_opens() {
        let set = KeySet::from_keys(vec![key(1), key(2), key(3)], None);
        let sealed = secure::seal_shared(&key(2), [7; 8], 0, &plain(42));
        let (out, attempts) = set.open_shared(&sealed);
        assert_eq!(out, Some(plain(42)));
        assert_eq!(attempts, 3);
        let wrong = secure::seal_shared(&key(9), [7; 8], 0, &plain(42));
        assert_eq!(set.open_shared(&wrong), (None, 3));
    }

    #[test]
    fn master_mode_checks_the_pid() {
        let set = KeySet::from_keys(Vec::new(), Some(key(5)));
        let sealed = secure::seal_master(&key(5), 77, [1; 8], 3, &plain(77));
        assert_eq!(
            set.open_master(&sealed),
            (
                MasterOpen::Ok {
                    pid: 77,
                    plain: plain(77)
                },
                1
            )
        );
        let lying = secure::seal_master(&key(5), 77, [1; 8], 4, &plain(78));
        assert_eq!(
            set.open_master(&lying).0,
            MasterOpen::PidMismatch {
                wire_pid: 77,
                frame_pid: 78
            }
        );
        let no_master = KeySet::from_keys(vec![key(5)], None);
        assert_eq!(no_master.open_master(&sealed), (MasterOpen::Failed, 0));
    }

    #[test]
    fn debug_shows_no_key_material() {
        let set = KeySet::from_keys(vec![key(0xab)], Some(key(0xcd)));
        let shown = format!("{set:?}");
        assert_eq!(shown, "1 shared key, master key");
    }
}
