//! The smallest agent: connect to the observer's socket and beat Ok.
//!
//! ```sh
//! varta-watch &                                   # observer on defaults
//! cargo run -p varta-client@0.3.0 --example basic -- --count 10
//! ```

mod common;

use varta_client::{BeatOutcome, Status, Varta};

fn main() -> std::io::Result<()> {
    let args = common::parse();
    let mut agent = Varta::connect(&args.socket).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot reach observer at {}: {e}", args.socket.display()),
        )
    })?;
    // Ride out observer restarts: after 3 drops in a row, reconnect.
    agent.set_reconnect_after(3);
    for _ in common::beats(&args) {
        match agent.beat(Status::Ok, 0) {
            BeatOutcome::Sent => {}
            BeatOutcome::Dropped(reason) => eprintln!("beat dropped: {reason}"),
            BeatOutcome::Failed(e) => eprintln!("beat failed: {e}"),
        }
    }
    Ok(())
}
