//! Beats that carry application state: the payload is a queue depth, and
//! the status turns Degraded when the queue backs up.
//!
//! `cargo run -p varta-client@0.3.0 --example with_payload -- --count 20 --interval-ms 100`

mod common;

use varta_client::{BeatOutcome, Status, Varta};

fn main() -> std::io::Result<()> {
    let args = common::parse();
    let mut agent = Varta::connect(&args.socket)?;
    let mut depth: u32 = 0;
    for i in common::beats(&args) {
        // A queue that grows for a while, then drains.
        depth = if i % 20 < 12 {
            depth + 7
        } else {
            depth.saturating_sub(11)
        };
        let status = if depth > 50 {
            Status::Degraded
        } else {
            Status::Ok
        };
        if let BeatOutcome::Failed(e) = agent.beat(status, depth) {
            eprintln!("beat failed: {e}");
        }
        println!("beat {i}: status={status} queue_depth={depth}");
    }
    Ok(())
}
