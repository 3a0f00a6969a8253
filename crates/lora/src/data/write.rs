//! Writing a prepared dataset atomically: everything goes to a temporary directory next to
//! the target, is flushed to disk, and only then replaces the target in one rename. A failure
//! at any point leaves the target as it was (or absent) and removes the temporary directory.

use super::report::OutputFile;
use super::{Prepared, Report, Sample};
use crate::{LoraError, Result};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The files a prepared dataset directory holds.
pub const DATASET_FILES: [&str; 3] = ["train.jsonl", "heldout.jsonl", "report.json"];

fn jsonl(samples: &[Sample]) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    for s in samples {
        serde_json::to_writer(&mut buf, s).map_err(|source| LoraError::Serialize { what: "sample", source })?;
        buf.push(b'\n');
    }
    Ok(buf)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let err = |source| LoraError::Write { path: path.to_path_buf(), source };
    let mut f = std::fs::File::create(path).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)
}

/// Refuses to replace a directory that holds anything but a prepared dataset.
fn check_target(out: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(out) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(LoraError::Write { path: out.to_path_buf(), source }),
    };
    if !meta.is_dir() {
        return Err(LoraError::OutDir { path: out.to_path_buf(), reason: "exists and is not a directory".into() });
    }
    let entries = std::fs::read_dir(out).map_err(|source| LoraError::Write { path: out.to_path_buf(), source })?;
    for e in entries {
        let e = e.map_err(|source| LoraError::Write { path: out.to_path_buf(), source })?;
        let name = e.file_name();
        if !DATASET_FILES.iter().any(|f| name == *f) {
            return Err(LoraError::OutDir {
                path: out.to_path_buf(),
                reason: format!(
                    "holds {:?}, which is not part of a prepared dataset; choose an empty or new directory",
                    name.to_string_lossy()
                ),
            });
        }
    }
    Ok(())
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `prepared` into `out` (replacing a previous prepared dataset there) and returns the
/// final report, with output hashes and the dataset hash filled in.
pub fn write_dataset(out: &Path, prepared: Prepared) -> Result<Report> {
    check_target(out)?;
    let Prepared { train, heldout, mut report } = prepared;
    let train_bytes = jsonl(&train)?;
    let heldout_bytes = jsonl(&heldout)?;
    let mut all = Sha256::new();
    all.update(&train_bytes);
    all.update(&heldout_bytes);
    report.dataset_sha256 = Some(hex::encode(all.finalize()));
    report.outputs.insert("train.jsonl".into(), OutputFile { rows: train.len(), sha256: hex::encode(Sha256::digest(&train_bytes)) });
    report
        .outputs
        .insert("heldout.jsonl".into(), OutputFile { rows: heldout.len(), sha256: hex::encode(Sha256::digest(&heldout_bytes)) });
    let report_bytes = serde_json::to_vec_pretty(&report).map_err(|source| LoraError::Serialize { what: "report", source })?;

    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|source| LoraError::Write { path: parent.clone(), source })?;
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "dataset".into());
    let nonce = format!("{}-{}", std::process::id(), chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0));
    let tmp = TempDir(parent.join(format!(".{name}.tmp-{nonce}")));
    std::fs::create_dir(&tmp.0).map_err(|source| LoraError::Write { path: tmp.0.clone(), source })?;
    write_file(&tmp.0.join("train.jsonl"), &train_bytes)?;
    write_file(&tmp.0.join("heldout.jsonl"), &heldout_bytes)?;
    write_file(&tmp.0.join("report.json"), &report_bytes)?;

    // Swap: move an old dataset aside, move the new one in, then drop the old one.
    let old = parent.join(format!(".{name}.old-{nonce}"));
    let had_old = out.exists();
    if had_old {
        std::fs::rename(out, &old).map_err(|source| LoraError::Write { path: out.to_path_buf(), source })?;
    }
    if let Err(source) = std::fs::rename(&tmp.0, out) {
        if had_old {
            let _ = std::fs::rename(&old, out);
        }
        return Err(LoraError::Write { path: out.to_path_buf(), source });
    }
    if had_old {
        let _ = std::fs::remove_dir_all(&old);
    }
    if let Ok(d) = std::fs::File::open(&parent) {
        let _ = d.sync_all();
    }
    Ok(report)
}
