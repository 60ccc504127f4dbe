//! `cargo bench -p varta-vlp`: ns per encode, decode, CRC-32C, seal and open,
//! printed as a table (median and min over batches).
//!
//! A plain timing loop rather than criterion: the point is one readable table
//! that later issues' harness can parse, and these ops are long enough
//! (≥ 10 ns) that `Instant` over 100k-iteration batches is precise.

use std::hint::black_box;
use std::time::Instant;
use varta_vlp::{crc32c, open_master, open_shared, seal_master, seal_shared, Frame, Key, Status};

const BATCH: u32 = 100_000;
const BATCHES: usize = 15;

fn measure(name: &str, iters: u32, mut op: impl FnMut()) {
    let mut per_op: Vec<f64> = (0..BATCHES)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                op();
            }
            t.elapsed().as_nanos() as f64 / f64::from(iters)
        })
        .collect();
    per_op.sort_by(f64::total_cmp);
    println!(
        "| {name:<22} | {:>9.1} | {:>9.1} | {:>9.1} |",
        per_op[BATCHES / 2],
        per_op[0],
        per_op[BATCHES - 1]
    );
}

fn main() {
    // `cargo test --benches` runs this with --bench absent; keep it quick then.
    let quick = !std::env::args().any(|a| a == "--bench");
    let n = if quick { 100 } else { BATCH };
    let frame = Frame::new(Status::Degraded, 12345, 1_234_567_890, 100, 0xdead_beef);
    let wire = frame.to_bytes();
    let key = Key::from_bytes([0x42; 32]);
    let sealed = seal_shared(&key, [1; 8], 7, &wire);
    let sealed_m = seal_master(&key, 12345, [1; 8], 7, &wire);
    let mut out = [0u8; 32];
    let mut ctr = 0u32;

    println!("| op                     | median ns |    min ns |    max ns |");
    println!("|------------------------|-----------|-----------|-----------|");
    measure("crc32c (28 B)", n, || {
        black_box(crc32c(black_box(&wire[..28])));
    });
    measure("encode", n, || {
        black_box(&frame).encode(black_box(&mut out))
    });
    measure("decode", n, || {
        black_box(Frame::decode(black_box(&wire)).ok());
    });
    measure("seal_shared", n / 10, || {
        ctr = ctr.wrapping_add(1);
        black_box(seal_shared(&key, [1; 8], ctr, black_box(&wire)));
    });
    measure("open_shared", n / 10, || {
        black_box(open_shared(&key, black_box(&sealed)).ok());
    });
    measure("seal_master (+HKDF)", n / 10, || {
        ctr = ctr.wrapping_add(1);
        black_box(seal_master(&key, 12345, [1; 8], ctr, black_box(&wire)));
    });
    measure("open_master (+HKDF)", n / 10, || {
        black_box(open_master(&key, black_box(&sealed_m)).ok());
    });
}
