//! A dying gasp: beat a few times, then panic. The installed hook sends a
//! terminal frame first, so the observer raises `exit` at once instead of a
//! `stall` after the threshold.
//!
//! `cargo run -p varta-client@0.3.0 --example with_panic_handler -- --count 3 --interval-ms 200`

mod common;

use varta_client::{Status, Varta};

fn main() -> std::io::Result<()> {
    let args = common::parse();
    varta_client::install_panic_handler(&args.socket)?;
    let mut agent = Varta::connect(&args.socket)?;
    for i in common::beats(&args) {
        let outcome = agent.beat(Status::Ok, 0);
        println!("beat {i}: {outcome}");
    }
    panic!(
        "simulated fatal error after {} beats",
        args.count.unwrap_or(0)
    );
}
