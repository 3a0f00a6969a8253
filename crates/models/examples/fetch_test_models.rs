//! Fetches the default models into a home folder and prints `name<TAB>path` per model.
//!
//! Used by `scripts/test` so the test suite can get its models with nothing but this crate built:
//! `cargo run -p trident-models --example fetch_test_models -- HOME [NAME...]`.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(home) = args.next().map(PathBuf::from) else {
        eprintln!("usage: fetch_test_models HOME [NAME...]");
        return ExitCode::from(2);
    };
    let names: Vec<String> = args.collect();
    let registry = match trident_models::Registry::open(&home) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let opts = trident_models::FetchOptions::default();
    match registry.fetch(&names, &opts, &mut |_| {}) {
        Ok(reports) => {
            for r in reports {
                println!("{}\t{}", r.name, r.path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(if e.is_user_error() { 2 } else { 1 })
        }
    }
}
