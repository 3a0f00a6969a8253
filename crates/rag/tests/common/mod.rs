//! Helpers shared by the rag integration tests.

use std::path::{Path, PathBuf};

/// `../shared/kb` (the sample knowledge base) when present; `None`, with a notice, otherwise.
pub fn shared_kb() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/kb");
    if p.join("docs").is_dir() {
        Some(p)
    } else {
        eprintln!("notice: ../shared/kb not found; skipping");
        None
    }
}
