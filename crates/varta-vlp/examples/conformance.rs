//! Runs a VLP conformance-vector file and prints one line per failure.
//!
//! `cargo run -p varta-vlp --example conformance -- path/to/vectors.json`
//! (defaults to the public vectors vendored in `tests/data/`). Exit code 1 if
//! any vector fails, 2 if the file cannot be read or parsed.

#[path = "../tests/vectors/mod.rs"]
mod vectors;

fn main() {
    let path = std::env::args().nth(1).unwrap_or_else(|| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/vlp-vectors-public.json"
        )
        .to_string()
    });
    match vectors::run_file(std::path::Path::new(&path)) {
        Ok(report) => {
            for f in &report.failures {
                println!("FAIL {f}");
            }
            println!(
                "{path}: {} passed, {} failed",
                report.passed,
                report.failures.len()
            );
            std::process::exit(i32::from(!report.failures.is_empty()));
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
}
