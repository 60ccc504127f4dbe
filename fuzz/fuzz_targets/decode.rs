//! Arbitrary bytes into the frame decoder: must never panic, and anything
//! it accepts must re-encode to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use varta_vlp::{Frame, FRAME_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(bytes) = <[u8; FRAME_LEN]>::try_from(data) else {
        return;
    };
    if let Ok(frame) = Frame::decode(&bytes) {
        assert_eq!(frame.to_bytes(), bytes);
    }
});
