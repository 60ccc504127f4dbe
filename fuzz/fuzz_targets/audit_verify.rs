//! Arbitrary bytes as audit file content: the verifier must never panic,
//! and when it accepts a file it must have checked every line. The v2
//! header is prepended so that short inputs reach the record checks.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use varta_audit::{ChainKey, Verifier, HEADER_V2};

fuzz_target!(|data: &[u8]| {
    let mut file = HEADER_V2.as_bytes().to_vec();
    file.extend_from_slice(data);
    let mut v = Verifier::new(ChainKey::Plain);
    if v.check_reader(Path::new("fuzz"), &file[..]).is_ok() {
        let lines = data.iter().filter(|&&b| b == b'\n').count() as u64;
        assert!(data.is_empty() || data.ends_with(b"\n"));
        assert_eq!(v.finish().records, lines);
    }
    // Raw, without the header, too.
    let _ = Verifier::new(ChainKey::Plain).check_reader(Path::new("fuzz"), data);
});
