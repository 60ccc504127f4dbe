//! Only for feature `baked-config` (the safety profile): loads
//! `$VARTA_CONFIG_FILE` with varta-config — the code `--config` runs at
//! start-up — and writes it to `$OUT_DIR/baked_config.rs` as Rust literals.
//! An invalid file fails the build with the line the runtime would print.
//! Every other build does nothing here.

fn main() {
    #[cfg(feature = "baked-config")]
    baked::run();
}

#[cfg(feature = "baked-config")]
mod baked {
    use std::path::{Path, PathBuf};

    use varta_config as config;

    const VAR: &str = "VARTA_CONFIG_FILE";

    /// Prints `line` the way the binary prints a configuration error and
    /// fails the build.
    fn fail(line: &str) -> ! {
        eprintln!("varta-watch: error: {line}");
        std::process::exit(1);
    }

    pub fn run() {
        println!("cargo::rerun-if-env-changed={VAR}");
        let Some(file) = std::env::var_os(VAR) else {
            fail(&format!(
                "feature baked-config needs {VAR}=/absolute/path/to/varta-watch.toml at build time"
            ));
        };
        let path = PathBuf::from(file);
        if !path.is_absolute() {
            // Build scripts run in the package directory, not where cargo
            // was started: a relative path would silently mean another file.
            fail(&format!(
                "{VAR} must be an absolute path, not {}",
                path.display()
            ));
        }
        println!("cargo::rerun-if-changed={}", path.display());
        let cfg = match config::bake::load_file(&path) {
            Ok(c) => c,
            Err(e) => fail(&e.to_string()),
        };
        let source = match config::bake::to_rust(&cfg) {
            Ok(s) => s,
            Err(e) => fail(&format!("config file {}: {e}", path.display())),
        };
        let out = Path::new(&std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
            .join("baked_config.rs");
        if let Err(e) = std::fs::write(&out, source) {
            fail(&format!("cannot write {}: {e}", out.display()));
        }
    }
}
