//! Arbitrary bytes into both sealed layouts under a fixed key: must never
//! panic; anything that opens must also decode-or-reject cleanly, and a
//! master-key datagram that opens carries its cleartext pid inside.
#![no_main]

use libfuzzer_sys::fuzz_target;
use varta_vlp::{open_master, open_shared, Frame, Key, MASTER_LEN, SHARED_LEN};

fuzz_target!(|data: &[u8]| {
    let key = Key::from_bytes([0x5a; 32]);
    if let Ok(sealed) = <[u8; SHARED_LEN]>::try_from(data) {
        if let Ok(plain) = open_shared(&key, &sealed) {
            let _ = Frame::decode(&plain);
        }
    }
    if let Ok(sealed) = <[u8; MASTER_LEN]>::try_from(data) {
        if let Ok((pid, plain)) = open_master(&key, &sealed) {
            if let Ok(frame) = Frame::decode(&plain) {
                assert_eq!(frame.pid, pid);
            }
        }
    }
});
