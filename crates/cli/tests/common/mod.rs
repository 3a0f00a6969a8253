//! Helpers shared by the end-to-end tests: run the real `trident` binary in a temporary home.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A `trident` command with a clean environment: no inherited `TRIDENT_*` variables, the given
/// home, and no config file unless the test writes one.
pub fn trident(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_trident"));
    for (k, _) in std::env::vars() {
        if k.starts_with("TRIDENT_") || k == "RUST_LOG" {
            c.env_remove(k);
        }
    }
    c.env("TRIDENT_HOME", home);
    c
}

/// Runs it and returns the output.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("the trident binary runs")
}

/// Exit code (panics on a signal: a crash is never acceptable).
pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or_else(|| panic!("trident died from a signal: {}", String::from_utf8_lossy(&out.stderr)))
}

/// stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
