//! Only for feature `baked-config` (the safety profile): loads
//! `$VARTA_CONFIG_FILE` with varta-config — the code `--config` runs at
//! start-up — and writes it to `$OUT_DIR/baked_config.rs` as Rust literals.
//! An invalid file fails the build with the line the runtime would print.
//! Also written: `BAKED_FROM` and `BAKED_SHA256`, the file and its digest,
//! which the binary logs at every start.
//! Every other build does nothing here.

fn main() {
    #[cfg(feature = "baked-config")]
    baked::run();
}

#[cfg(feature = "baked-config")]
mod baked {
    use std::path::{Path, PathBuf};

    use sha2::{Digest, Sha256};
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
        // Which file, byte for byte, this binary was built from: logged at
        // every start, comparable with `sha256sum` of the certified file.
        // Read before and after the loader reads it: a file edited in
        // between would make the digest name other bytes than were baked.
        let read = || match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => fail(&format!("config file {}: {e}", path.display())),
        };
        let bytes = read();
        let cfg = match config::bake::load_file(&path) {
            Ok(c) => c,
            Err(e) => fail(&e.to_string()),
        };
        if read() != bytes {
            fail(&format!(
                "config file {} changed while it was being baked; build again",
                path.display()
            ));
        }
        let source = match config::bake::to_rust(&cfg) {
            Ok(s) => s,
            Err(e) => fail(&format!("config file {}: {e}", path.display())),
        };
        let digest: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        // Test builds only: the typed config as build.rs loaded it, for
        // the round-trip check (VARTA_FAULT_CHECK_BAKED) of the literals.
        #[cfg(feature = "fault-injection")]
        let source = format!(
            "{source}\n/// `Debug` of the configuration build.rs loaded.\npub const BAKED_DEBUG: &str = {:?};\n",
            format!("{:?}", config::bake::baked_view(&cfg))
        );
        let source = format!(
            "{source}\n/// The file the configuration was baked from.\npub const BAKED_FROM: &str = {:?};\n\
             /// SHA-256 of that file's bytes.\npub const BAKED_SHA256: &str = {digest:?};\n",
            path.display().to_string()
        );
        let out = Path::new(&std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
            .join("baked_config.rs");
        if let Err(e) = std::fs::write(&out, source) {
            fail(&format!("cannot write {}: {e}", out.display()));
        }
    }
}
