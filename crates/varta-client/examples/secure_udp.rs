//! Authenticated, encrypted beats over UDP with a shared key.
//!
//! ```sh
//! openssl rand -hex 32 > varta.key && chmod 600 varta.key
//! cargo run -p varta-client@0.3.0 --example secure_udp -- --addr 127.0.0.1:9192 --key-file varta.key --count 5
//! ```

mod common;

use varta_client::{BeatOutcome, Status, Varta};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = common::parse();
    let path = args
        .key_file
        .clone()
        .ok_or("--key-file PATH is required (64 hex characters, e.g. `openssl rand -hex 32`)")?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read key file {}: {e}", path.display()))?;
    let key = varta_vlp::parse_key_file(&text)
        .map_err(|e| format!("key file {}: {e}", path.display()))?;
    let mut agent = Varta::connect_secure_udp(args.addr, key)?;
    for _ in common::beats(&args) {
        match agent.beat(Status::Ok, 0) {
            BeatOutcome::Sent => {}
            other => eprintln!("beat: {other}"),
        }
    }
    Ok(())
}
