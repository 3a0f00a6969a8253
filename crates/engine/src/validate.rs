//! Checks a GGUF file before llama.cpp sees it (llama.cpp aborts the process on some bad
//! files, and `llama-cpp-2` `debug_assert!`s that the path exists): it must exist, have the
//! GGUF header, a well-formed metadata section, known tensor types, and every tensor's data
//! inside the file.
//!
//! A stand-in until `trident_gguf::inspect` exists; it reads only the header region (no
//! tensor data), so it is cheap.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use crate::error::EngineError;

/// What the check learned about the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufSummary {
    /// `general.architecture` (empty when absent).
    pub architecture: String,
    /// `general.type` (`model`, `adapter`, or empty).
    pub file_type: String,
    /// Number of tensors.
    pub n_tensors: u64,
}

/// (bytes per block, elements per block) for each ggml type id llama.cpp can load.
fn type_size(t: u32) -> Option<(u64, u64)> {
    Some(match t {
        0 => (4, 1),
        1 => (2, 1),
        2 => (18, 32),
        3 => (20, 32),
        6 => (22, 32),
        7 => (24, 32),
        8 => (34, 32),
        9 => (36, 32),
        10 => (84, 256),
        11 => (110, 256),
        12 => (144, 256),
        13 => (176, 256),
        14 => (210, 256),
        15 => (292, 256),
        16 => (66, 256),
        17 => (74, 256),
        18 => (98, 256),
        19 => (50, 256),
        20 => (18, 32),
        21 => (110, 256),
        22 => (82, 256),
        23 => (136, 256),
        24 => (1, 1),
        25 => (2, 1),
        26 => (4, 1),
        27 => (8, 1),
        28 => (8, 1),
        29 => (56, 256),
        30 => (2, 1),
        34 => (54, 256),
        35 => (66, 256),
        39 => (17, 32),
        _ => return None,
    })
}

struct Reader<R> {
    r: R,
    pos: u64,
    len: u64,
}

impl<R: Read> Reader<R> {
    fn bytes(&mut self, n: u64, what: &str) -> Result<Vec<u8>, String> {
        if self.pos.saturating_add(n) > self.len {
            return Err(format!("truncated while reading {what} at byte {}", self.pos));
        }
        let mut b = vec![0u8; n as usize];
        self.r.read_exact(&mut b).map_err(|e| format!("read error at byte {}: {e}", self.pos))?;
        self.pos += n;
        Ok(b)
    }
    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let b = self.bytes(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &str) -> Result<u64, String> {
        let b = self.bytes(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(&b);
        Ok(u64::from_le_bytes(a))
    }
    fn string(&mut self, what: &str) -> Result<String, String> {
        let n = self.u64(what)?;
        if n > 1 << 30 {
            return Err(format!("{what}: string length {n} is implausible"));
        }
        let b = self.bytes(n, what)?;
        String::from_utf8(b).map_err(|_| format!("{what}: not UTF-8"))
    }
    /// Reads (and mostly skips) a value of type `t`; returns it when it is a string or u32.
    fn value(&mut self, t: u32, what: &str, depth: u32) -> Result<Value, String> {
        let fixed = |t: u32| -> Option<u64> {
            match t {
                0 | 1 | 7 => Some(1),
                2 | 3 => Some(2),
                4..=6 => Some(4),
                10..=12 => Some(8),
                _ => None,
            }
        };
        match t {
            8 => Ok(Value::Str(self.string(what)?)),
            4 => Ok(Value::U32(self.u32(what)?)),
            9 if depth == 0 => {
                let et = self.u32(what)?;
                let n = self.u64(what)?;
                if let Some(sz) = fixed(et) {
                    let total = n
                        .checked_mul(sz)
                        .ok_or_else(|| format!("{what}: array too large"))?;
                    self.skip(total, what)?;
                } else {
                    if n > self.len {
                        return Err(format!("{what}: array length {n} is implausible"));
                    }
                    for _ in 0..n {
                        self.value(et, what, depth + 1)?;
                    }
                }
                Ok(Value::Other)
            }
            _ => match fixed(t) {
                Some(sz) => {
                    self.skip(sz, what)?;
                    Ok(Value::Other)
                }
                None => Err(format!("{what}: unknown value type {t}")),
            },
        }
    }
    fn skip(&mut self, n: u64, what: &str) -> Result<(), String> {
        if self.pos.saturating_add(n) > self.len {
            return Err(format!("truncated while reading {what} at byte {}", self.pos));
        }
        let copied = std::io::copy(&mut (&mut self.r).take(n), &mut std::io::sink())
            .map_err(|e| format!("read error: {e}"))?;
        if copied != n {
            return Err(format!("truncated while reading {what}"));
        }
        self.pos += n;
        Ok(())
    }
}

enum Value {
    Str(String),
    U32(u32),
    Other,
}

/// Checks `path` is a loadable GGUF file.
///
/// # Errors
/// [`EngineError::FileNotFound`] or [`EngineError::InvalidGguf`] with the reason.
pub fn check_gguf(path: &Path) -> Result<GgufSummary, EngineError> {
    let invalid = |reason: String| EngineError::InvalidGguf { path: path.to_path_buf(), reason };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(EngineError::FileNotFound { path: path.to_path_buf() });
        }
        Err(e) => return Err(invalid(format!("cannot read: {e}"))),
    };
    if !meta.is_file() {
        return Err(invalid("not a regular file".into()));
    }
    if path.to_str().is_none() {
        return Err(invalid("path is not valid UTF-8".into()));
    }
    let file = File::open(path).map_err(|e| invalid(format!("cannot open: {e}")))?;
    let mut r = Reader { r: BufReader::with_capacity(1 << 16, file), pos: 0, len: meta.len() };
    if meta.len() == 0 {
        return Err(invalid("the file is empty".into()));
    }
    let magic = r.bytes(4, "magic").map_err(|_| invalid("too short for a GGUF header".into()))?;
    if magic != b"GGUF" {
        return Err(invalid(format!("not a GGUF file (magic {:?})", String::from_utf8_lossy(&magic))));
    }
    let version = r.u32("version").map_err(invalid)?;
    if !(2..=3).contains(&version) {
        return Err(invalid(format!("unsupported GGUF version {version}")));
    }
    let n_tensors = r.u64("tensor count").map_err(invalid)?;
    let n_kv = r.u64("metadata count").map_err(invalid)?;
    if n_tensors > 1 << 20 || n_kv > 1 << 20 {
        return Err(invalid(format!("implausible counts: {n_tensors} tensors, {n_kv} metadata keys")));
    }
    let mut architecture = String::new();
    let mut file_type = String::new();
    let mut alignment: u64 = 32;
    for i in 0..n_kv {
        let key = r.string(&format!("metadata key #{i}")).map_err(invalid)?;
        let t = r.u32(&key).map_err(invalid)?;
        match (key.as_str(), r.value(t, &key, 0).map_err(invalid)?) {
            ("general.architecture", Value::Str(s)) => architecture = s,
            ("general.type", Value::Str(s)) => file_type = s,
            ("general.alignment", Value::U32(a)) => {
                if a == 0 || !a.is_power_of_two() {
                    return Err(invalid(format!("general.alignment {a} is not a power of two")));
                }
                alignment = u64::from(a);
            }
            _ => {}
        }
    }
    let mut extents = Vec::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let name = r.string(&format!("tensor #{i} name")).map_err(invalid)?;
        let n_dims = r.u32(&name).map_err(invalid)?;
        if n_dims == 0 || n_dims > 4 {
            return Err(invalid(format!("tensor {name}: {n_dims} dimensions")));
        }
        let mut n_elems: u64 = 1;
        let mut first = 0;
        for d in 0..n_dims {
            let dim = r.u64(&name).map_err(invalid)?;
            if d == 0 {
                first = dim;
            }
            n_elems = n_elems
                .checked_mul(dim)
                .ok_or_else(|| invalid(format!("tensor {name}: shape overflows")))?;
        }
        let ty = r.u32(&name).map_err(invalid)?;
        let (block_bytes, block_elems) = type_size(ty)
            .ok_or_else(|| invalid(format!("tensor {name}: unsupported tensor type {ty}")))?;
        if first % block_elems != 0 {
            return Err(invalid(format!(
                "tensor {name}: row of {first} elements is not a multiple of the block size {block_elems}"
            )));
        }
        let offset = r.u64(&name).map_err(invalid)?;
        let size = (n_elems / block_elems)
            .checked_mul(block_bytes)
            .ok_or_else(|| invalid(format!("tensor {name}: size overflows")))?;
        extents.push((name, offset, size));
    }
    let data_start = r.pos.div_ceil(alignment) * alignment;
    for (name, offset, size) in extents {
        let end = data_start.checked_add(offset).and_then(|x| x.checked_add(size));
        match end {
            Some(end) if end <= meta.len() => {}
            _ => {
                return Err(invalid(format!(
                    "tensor {name} data (offset {offset}, {size} bytes) is not within the file \
                     ({} bytes): truncated or corrupt",
                    meta.len()
                )));
            }
        }
    }
    Ok(GgufSummary { architecture, file_type, n_tensors })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn missing_empty_and_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.gguf");
        assert!(matches!(check_gguf(&missing), Err(EngineError::FileNotFound { .. })));
        let empty = dir.path().join("empty.gguf");
        File::create(&empty).unwrap();
        let e = check_gguf(&empty).unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
        let text = dir.path().join("text.gguf");
        File::create(&text).unwrap().write_all(b"hello world, not a model").unwrap();
        let e = check_gguf(&text).unwrap_err();
        assert!(e.to_string().contains("not a GGUF"), "{e}");
        assert!(e.is_user_error());
        assert!(check_gguf(dir.path()).is_err());
    }

    #[test]
    fn header_only_file_is_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.gguf");
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        b.extend(5u64.to_le_bytes());
        std::fs::write(&p, &b).unwrap();
        let e = check_gguf(&p).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
    }
}
