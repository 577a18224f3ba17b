//! Builds every plugin in `plugins/` into a WebAssembly component (unless this machine already
//! has) and reports how long that took, how long a build that finds them cached takes, and
//! their sizes.
//!
//! ```sh
//! cargo run -p plugboard-tests --bin build-plugins
//! # a cold build, ignoring the machine's cache:
//! PLUGBOARD_WASM_CACHE=$(mktemp -d) cargo run -p plugboard-tests --bin build-plugins
//! ```

use std::process::ExitCode;
use std::time::Instant;

use plugboard_tests::error_chain;
use plugboard_tests::plugins::{self, Components};

fn timed() -> Result<(Components, f64), plugins::Error> {
    let started = Instant::now();
    let components = plugins::build()?;
    Ok((components, started.elapsed().as_secs_f64()))
}

fn main() -> ExitCode {
    let report = timed().and_then(|(components, first)| {
        let (_, cached) = timed()?;
        Ok((components, first, cached))
    });
    let (components, first, cached) = match report {
        Ok(report) => report,
        Err(e) => {
            eprintln!("building the plugins failed: {}", error_chain(&e));
            return ExitCode::FAILURE;
        }
    };
    println!("toolchain: {}", components.toolchain());
    println!("first build: {first:.2} s (cached already if this machine built these sources)");
    println!("cached build: {cached:.3} s");
    for name in components.names() {
        let size = components
            .path(name)
            .and_then(|path| {
                std::fs::metadata(&path)
                    .map(|m| m.len())
                    .map_err(|source| plugins::Error::Io {
                        action: "inspect",
                        path,
                        source,
                    })
            })
            .map_or_else(|e| e.to_string(), |len| format!("{len} bytes"));
        println!("{name}: {size}");
    }
    println!("components: {}", components.dir().display());
    ExitCode::SUCCESS
}
