//! An agent on another host: plaintext UDP (unauthenticated; the observer
//! tracks and alerts on it but will not trust it for recovery).
//!
//! `cargo run -p varta-client@0.3.0 --example udp -- --addr 127.0.0.1:9191 --count 5`

mod common;

use varta_client::{BeatOutcome, Status, Varta};

fn main() -> std::io::Result<()> {
    let args = common::parse();
    let mut agent = Varta::connect_udp(args.addr)?;
    for _ in common::beats(&args) {
        match agent.beat(Status::Ok, 0) {
            BeatOutcome::Sent => {}
            other => eprintln!("beat: {other}"),
        }
    }
    Ok(())
}
