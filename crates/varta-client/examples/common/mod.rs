//! Argument handling shared by the examples (kept tiny so each example reads
//! as a usage sample, not as CLI code).
#![allow(dead_code)]

use std::time::Duration;

/// `--socket PATH`, `--addr HOST:PORT`, `--count N`, `--interval-ms MS`,
/// `--key-file PATH`; environment `VARTA_SOCKET` / `VARTA_ADDR` also work.
pub struct Args {
    pub socket: std::path::PathBuf,
    pub addr: std::net::SocketAddr,
    pub count: Option<u64>,
    pub interval: Duration,
    pub key_file: Option<std::path::PathBuf>,
}

pub fn parse() -> Args {
    let mut args = Args {
        socket: std::env::var_os("VARTA_SOCKET")
            .map(Into::into)
            .unwrap_or_else(varta_client::default_socket_path),
        addr: std::env::var("VARTA_ADDR")
            .ok()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| "127.0.0.1:9191".parse().unwrap()),
        count: None,
        interval: Duration::from_millis(500),
        key_file: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--socket" => args.socket = value.into(),
            "--addr" => {
                args.addr = value
                    .parse()
                    .unwrap_or_else(|e| usage(&format!("--addr {value:?}: {e}")))
            }
            "--count" => {
                args.count = Some(
                    value
                        .parse()
                        .unwrap_or_else(|e| usage(&format!("--count {value:?}: {e}"))),
                )
            }
            "--interval-ms" => {
                args.interval = Duration::from_millis(
                    value
                        .parse()
                        .unwrap_or_else(|e| usage(&format!("--interval-ms {value:?}: {e}"))),
                )
            }
            "--key-file" => args.key_file = Some(value.into()),
            other => usage(&format!("unknown flag {other}")),
        }
    }
    args
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "error: {problem}\nusage: [--socket PATH] [--addr HOST:PORT] [--count N] [--interval-ms MS] [--key-file PATH]"
    );
    std::process::exit(2)
}

/// Beats up to `count` times (forever without `--count`).
pub fn beats(args: &Args) -> impl Iterator<Item = u64> {
    let count = args.count.unwrap_or(u64::MAX);
    let interval = args.interval;
    (0..count).inspect(move |i| {
        if *i > 0 {
            std::thread::sleep(interval);
        }
    })
}
