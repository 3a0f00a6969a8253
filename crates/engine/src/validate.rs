//! Every GGUF passes [`trident_gguf::inspect`] before llama.cpp sees it (llama.cpp aborts the
//! process on some bad files, and `llama-cpp-2` `debug_assert!`s that the path exists); its
//! errors become [`EngineError`]s.

use std::path::Path;

use trident_gguf::{GgufError, GgufInfo};

use crate::error::EngineError;

fn convert(path: &Path, e: GgufError) -> EngineError {
    match e {
        GgufError::NotFound { .. } => EngineError::FileNotFound { path: path.to_path_buf() },
        other => EngineError::InvalidGguf { path: path.to_path_buf(), reason: strip_path(path, &other.to_string()) },
    }
}

/// The gguf crate's messages start with the path; the engine's error prints it already.
fn strip_path(path: &Path, msg: &str) -> String {
    let prefix = format!("{}: ", path.display());
    msg.strip_prefix(&prefix).unwrap_or(msg).to_string()
}

/// Checks that `path` is a model llama.cpp can load safely.
///
/// # Errors
/// [`EngineError::FileNotFound`], or [`EngineError::InvalidGguf`] with the reason (also for a
/// LoRA adapter given as a model).
pub fn check_model(path: &Path) -> Result<GgufInfo, EngineError> {
    if path.to_str().is_none() {
        return Err(EngineError::InvalidGguf { path: path.to_path_buf(), reason: "path is not valid UTF-8".into() });
    }
    let info = trident_gguf::inspect(path).map_err(|e| convert(path, e))?;
    if info.general_type.as_deref() == Some("adapter") {
        return Err(EngineError::InvalidGguf {
            path: path.to_path_buf(),
            reason: "this is a LoRA adapter, not a model (load it with --adapter)".into(),
        });
    }
    Ok(info)
}

/// Checks that `path` is a GGUF-LoRA adapter that fits the base model `base`.
///
/// # Errors
/// [`EngineError::Adapter`] with the reason.
pub fn check_adapter(name: &str, path: &Path, base: &GgufInfo) -> Result<GgufInfo, EngineError> {
    let adapter = |reason: String| EngineError::Adapter { name: name.to_string(), reason };
    if path.to_str().is_none() {
        return Err(adapter("path is not valid UTF-8".into()));
    }
    if !path.exists() {
        return Err(adapter(format!("file not found: {}", path.display())));
    }
    trident_gguf::inspect_adapter_against(path, base).map_err(|e| adapter(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::Write;

    #[test]
    fn missing_empty_foreign_and_truncated_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.gguf");
        assert!(matches!(check_model(&missing), Err(EngineError::FileNotFound { .. })));
        let empty = dir.path().join("empty.gguf");
        File::create(&empty).unwrap();
        let e = check_model(&empty).unwrap_err();
        assert!(matches!(e, EngineError::InvalidGguf { .. }), "{e}");
        assert!(e.to_string().contains("empty"), "{e}");
        let text = dir.path().join("text.gguf");
        File::create(&text).unwrap().write_all(b"hello world, not a model").unwrap();
        let e = check_model(&text).unwrap_err();
        assert!(e.to_string().contains("not a GGUF"), "{e}");
        assert!(e.is_user_error());
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        b.extend(5u64.to_le_bytes());
        let trunc = dir.path().join("t.gguf");
        std::fs::write(&trunc, &b).unwrap();
        let e = check_model(&trunc).unwrap_err();
        assert!(matches!(e, EngineError::InvalidGguf { .. }), "{e}");
        assert!(check_model(dir.path()).is_err());
        let e = check_adapter("x", &missing, &fake_base()).unwrap_err();
        assert!(matches!(e, EngineError::Adapter { .. }));
    }

    fn fake_base() -> GgufInfo {
        // Any readable GGUF works as a base for the "missing adapter" check, which fails first.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.gguf");
        let mut w = trident_gguf::GgufWriter::new();
        w.set("general.architecture", "llama");
        w.write(&p).unwrap();
        trident_gguf::read_metadata(&p).unwrap()
    }
}
