//! Arbitrary bytes as one audit record line: the parser must never panic,
//! and every line it accepts must be the one canonical spelling of its
//! record (formatting it again gives back exactly the same bytes) — a
//! chained line with its hex chain, an unchained one (the original 0.2.0
//! built without `audit-chain`) with `-`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use varta_audit::chain::to_hex;
use varta_audit::record::parse_line;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = parse_line(data) {
        let body = p.record.body(p.seq);
        assert_eq!(body.as_bytes(), &data[..p.body_len]);
        let chain = if p.chained {
            to_hex(&p.chain)
        } else {
            "-".to_string()
        };
        let line = format!("{body}\t{chain}");
        assert_eq!(line.as_bytes(), data);
    }
});
