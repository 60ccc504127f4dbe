//! Property tests for the codec and the sealed layouts.

use proptest::prelude::*;
use varta_vlp::{
    crc32c, crc32c_portable, open_master, open_shared, seal_master, seal_shared, DecodeError,
    Frame, Key, Status, NONCE_TERMINAL,
};

fn legal_frame() -> impl Strategy<Value = Frame> {
    (
        prop_oneof![
            Just(Status::Ok),
            Just(Status::Degraded),
            Just(Status::Critical)
        ],
        2u32..=u32::MAX,
        0u64..u64::MAX,
        any::<u64>(),
        any::<u32>(),
    )
        .prop_map(|(status, pid, ts, nonce, payload)| {
            // NONCE_TERMINAL is legal only on Critical frames.
            let nonce = if nonce == NONCE_TERMINAL && status != Status::Critical {
                nonce - 1
            } else {
                nonce
            };
            Frame::new(status, pid, ts, nonce, payload)
        })
}

/// Independent statement of spec §1's check order, used as the oracle.
fn reference_kind(b: &[u8; 32]) -> Option<&'static str> {
    let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
    if b[0] != 0x56 || b[1] != 0x41 {
        return Some("bad_magic");
    }
    if b[2] != 2 {
        return Some("bad_version");
    }
    if crc32c_portable(&b[..28]) != u32_at(28) {
        return Some("bad_crc");
    }
    if b[3] > 3 {
        return Some("bad_status");
    }
    if b[3] == 3 {
        return Some("stall_on_wire");
    }
    if u32_at(4) < 2 {
        return Some("bad_pid");
    }
    if u64_at(8) == u64::MAX {
        return Some("bad_timestamp");
    }
    if u64_at(16) == u64::MAX && b[3] != 2 {
        return Some("bad_nonce");
    }
    None
}

/// Mostly-structured bytes: valid header and CRC most of the time so the
/// later checks are actually reached.
fn near_frame() -> impl Strategy<Value = [u8; 32]> {
    (
        any::<[u8; 32]>(),
        0u8..8,
        prop_oneof![Just(0u32), Just(1), Just(2), any::<u32>()],
        prop_oneof![Just(u64::MAX), any::<u64>()],
        prop_oneof![Just(u64::MAX), any::<u64>()],
        any::<bool>(),
    )
        .prop_map(|(mut b, status, pid, ts, nonce, fix)| {
            if fix {
                b[0] = 0x56;
                b[1] = 0x41;
                b[2] = 2;
                b[3] = status;
                b[4..8].copy_from_slice(&pid.to_le_bytes());
                b[8..16].copy_from_slice(&ts.to_le_bytes());
                b[16..24].copy_from_slice(&nonce.to_le_bytes());
                let crc = crc32c(&b[..28]);
                b[28..32].copy_from_slice(&crc.to_le_bytes());
            }
            b
        })
}

fn key() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn roundtrip(frame in legal_frame()) {
        let wire = frame.to_bytes();
        prop_assert_eq!(Frame::decode(&wire), Ok(frame));
    }

    #[test]
    fn decode_matches_reference_order(bytes in near_frame()) {
        // Never panics, and the first failing check is the spec's.
        let got = Frame::decode(&bytes);
        prop_assert_eq!(got.err().map(|e: DecodeError| e.kind()), reference_kind(&bytes));
        if let Ok(f) = got {
            // An accepted frame is canonical: re-encoding gives the same bytes.
            prop_assert_eq!(f.to_bytes(), bytes);
        }
    }

    #[test]
    fn every_single_bit_flip_is_rejected(frame in legal_frame()) {
        let wire = frame.to_bytes();
        for bit in 0..256 {
            let mut b = wire;
            b[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(Frame::decode(&b).is_err(), "bit {} accepted", bit);
        }
    }

    #[test]
    fn hardware_and_portable_crc_agree(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        prop_assert_eq!(crc32c(&data), crc32c_portable(&data));
    }

}

proptest! {
    // Each case opens ~500 tampered datagrams; fewer cases, same coverage per case.
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn shared_seal_rejects_every_bit_flip(k in key(), frame in legal_frame(), iv in any::<[u8; 8]>(), ctr in any::<u32>()) {
        let key = Key::from_bytes(k);
        let plain = frame.to_bytes();
        let sealed = seal_shared(&key, iv, ctr, &plain);
        prop_assert_eq!(open_shared(&key, &sealed), Ok(plain));
        for bit in 0..sealed.len() * 8 {
            let mut s = sealed;
            s[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(open_shared(&key, &s).is_err(), "bit {} accepted", bit);
        }
    }

    #[test]
    fn master_seal_rejects_every_bit_flip(k in key(), frame in legal_frame(), iv in any::<[u8; 8]>(), ctr in any::<u32>()) {
        let master = Key::from_bytes(k);
        let plain = frame.to_bytes();
        let sealed = seal_master(&master, frame.pid, iv, ctr, &plain);
        prop_assert_eq!(open_master(&master, &sealed), Ok((frame.pid, plain)));
        for bit in 0..sealed.len() * 8 {
            let mut s = sealed;
            s[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(open_master(&master, &s).is_err(), "bit {} accepted", bit);
        }
    }

    #[test]
    fn open_never_panics(shared in proptest::collection::vec(any::<u8>(), 60), master in proptest::collection::vec(any::<u8>(), 64)) {
        let key = Key::from_bytes([7; 32]);
        let _ = open_shared(&key, &shared.try_into().unwrap());
        let _ = open_master(&key, &master.try_into().unwrap());
    }

    #[test]
    fn key_hex_never_panics(s in "\\PC{0,80}") {
        let _ = Key::from_hex(&s);
        let _ = varta_vlp::parse_key_list(&s);
    }
}
