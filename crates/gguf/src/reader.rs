//! Low-level GGUF header reader: magic, version, metadata and tensor table, never tensor data.
//!
//! Every length read from the file is checked against the bytes that remain before anything is
//! allocated, so a corrupt or hostile header cannot make us allocate more than the file's size
//! (and never more than the fixed caps below).

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, ErrorKind, Read};
use std::path::{Path, PathBuf};

use crate::error::GgufError;
use crate::types::{GgmlType, MetadataValue, ValueType};

/// The four magic bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Default data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Longest metadata string we accept (llama.cpp's own cap is 1 GiB; real chat templates are
/// tens of KiB).
pub const MAX_STRING_LEN: u64 = 64 << 20;
/// Most elements in one metadata array (llama.cpp's cap).
pub const MAX_ARRAY_LEN: u64 = 1 << 30;
/// Longest tensor name llama.cpp accepts is `GGML_MAX_NAME - 1` bytes.
pub const MAX_TENSOR_NAME_LEN: usize = 63;
/// ggml tensors have at most four dimensions.
pub const MAX_DIMS: u32 = 4;

/// One entry of the tensor table.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions in ggml order: `shape[0]` is the row length (fastest-varying). A PyTorch
    /// `[out, in]` weight is stored as ggml `[in, out]`.
    pub shape: Vec<u64>,
    /// Element type.
    pub ggml_type: GgmlType,
    /// Offset of the data relative to the start of the data section.
    pub offset: u64,
    /// Number of elements (product of `shape`).
    pub n_elements: u64,
    /// Size of the data in bytes.
    pub n_bytes: u64,
}

/// The parsed header of a GGUF file.
#[derive(Debug, Clone)]
pub(crate) struct RawGguf {
    pub version: u32,
    pub metadata: Vec<(String, MetadataValue)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute offset of the data section (header end, padded to the alignment).
    pub data_offset: u64,
    pub file_size: u64,
}

struct Reader {
    inner: BufReader<File>,
    pos: u64,
    file_size: u64,
    path: PathBuf,
    /// What is being read, for "truncated" messages.
    what: String,
}

impl Reader {
    fn remaining(&self) -> u64 {
        self.file_size.saturating_sub(self.pos)
    }

    fn truncated(&self) -> GgufError {
        GgufError::TruncatedHeader {
            path: self.path.clone(),
            detail: format!(
                "file ends at byte {} while reading {}",
                self.file_size, self.what
            ),
        }
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let mut buf = [0u8; N];
        match self.inner.read_exact(&mut buf) {
            Ok(()) => {
                self.pos += N as u64;
                Ok(buf)
            }
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => Err(self.truncated()),
            Err(source) => Err(GgufError::Unreadable { path: self.path.clone(), source }),
        }
    }

    fn u8(&mut self) -> Result<u8, GgufError> {
        Ok(self.bytes::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, GgufError> {
        Ok(u16::from_le_bytes(self.bytes()?))
    }
    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }
    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    /// A length-prefixed UTF-8 string of at most `cap` bytes.
    fn string(&mut self, cap: u64, key: &str) -> Result<String, GgufError> {
        let len = self.u64()?;
        if len > self.remaining() {
            return Err(GgufError::TruncatedHeader {
                path: self.path.clone(),
                detail: format!(
                    "string of {len} bytes at byte {} runs past the end of the file ({} bytes) while reading {}",
                    self.pos, self.file_size, self.what
                ),
            });
        }
        if len > cap {
            return Err(GgufError::BadMetadata {
                path: self.path.clone(),
                key: key.to_string(),
                detail: format!("string of {len} bytes exceeds the limit of {cap} bytes"),
            });
        }
        let mut buf = vec![0u8; len as usize];
        match self.inner.read_exact(&mut buf) {
            Ok(()) => self.pos += len,
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Err(self.truncated()),
            Err(source) => return Err(GgufError::Unreadable { path: self.path.clone(), source }),
        }
        String::from_utf8(buf).map_err(|e| GgufError::BadMetadata {
            path: self.path.clone(),
            key: key.to_string(),
            detail: format!("string is not valid UTF-8: {e}"),
        })
    }

    fn scalar(&mut self, t: ValueType, key: &str) -> Result<MetadataValue, GgufError> {
        Ok(match t {
            ValueType::U8 => MetadataValue::U8(self.u8()?),
            ValueType::I8 => MetadataValue::I8(self.u8()? as i8),
            ValueType::U16 => MetadataValue::U16(self.u16()?),
            ValueType::I16 => MetadataValue::I16(self.u16()? as i16),
            ValueType::U32 => MetadataValue::U32(self.u32()?),
            ValueType::I32 => MetadataValue::I32(self.u32()? as i32),
            ValueType::F32 => MetadataValue::F32(f32::from_bits(self.u32()?)),
            ValueType::Bool => MetadataValue::Bool(self.u8()? != 0),
            ValueType::String => MetadataValue::String(self.string(MAX_STRING_LEN, key)?),
            ValueType::U64 => MetadataValue::U64(self.u64()?),
            ValueType::I64 => MetadataValue::I64(self.u64()? as i64),
            ValueType::F64 => MetadataValue::F64(f64::from_bits(self.u64()?)),
            ValueType::Array => {
                return Err(GgufError::BadMetadata {
                    path: self.path.clone(),
                    key: key.to_string(),
                    detail: "nested arrays are not supported by llama.cpp".into(),
                });
            }
        })
    }

    fn value_type(&mut self, key: &str) -> Result<ValueType, GgufError> {
        let id = self.u32()?;
        ValueType::from_id(id).ok_or_else(|| GgufError::BadMetadata {
            path: self.path.clone(),
            key: key.to_string(),
            detail: format!("unknown value type id {id}"),
        })
    }

    fn value(&mut self, key: &str) -> Result<MetadataValue, GgufError> {
        let t = self.value_type(key)?;
        if t != ValueType::Array {
            return self.scalar(t, key);
        }
        let elem = self.value_type(key)?;
        let n = self.u64()?;
        let min_elem = elem.scalar_size().unwrap_or(8);
        if n.checked_mul(min_elem).is_none_or(|need| need > self.remaining()) {
            return Err(GgufError::TruncatedHeader {
                path: self.path.clone(),
                detail: format!(
                    "array of {n} {elem:?} elements at byte {} cannot fit in the remaining {} bytes of the file while reading {}",
                    self.pos,
                    self.remaining(),
                    self.what
                ),
            });
        }
        if n > MAX_ARRAY_LEN {
            return Err(GgufError::BadMetadata {
                path: self.path.clone(),
                key: key.to_string(),
                detail: format!("array of {n} elements exceeds the limit of {MAX_ARRAY_LEN}"),
            });
        }
        // Capacity grows only as elements are actually read.
        let mut items = Vec::with_capacity(n.min(1 << 16) as usize);
        for _ in 0..n {
            items.push(self.scalar(elem, key)?);
        }
        Ok(MetadataValue::Array(elem, items))
    }
}

/// Parse the header of `path`: magic, version, metadata and tensor table. Checks the
/// structure llama.cpp's `gguf_init_from_file` checks (and the caps above) but not the model
/// semantics — see [`crate::inspect`] for those.
pub(crate) fn read_header(path: &Path) -> Result<RawGguf, GgufError> {
    let file = File::open(path).map_err(|source| {
        if source.kind() == ErrorKind::NotFound {
            GgufError::NotFound { path: path.to_path_buf() }
        } else {
            GgufError::Unreadable { path: path.to_path_buf(), source }
        }
    })?;
    let meta = file
        .metadata()
        .map_err(|source| GgufError::Unreadable { path: path.to_path_buf(), source })?;
    if meta.is_dir() {
        return Err(GgufError::Unreadable {
            path: path.to_path_buf(),
            source: std::io::Error::other("is a directory"),
        });
    }
    let file_size = meta.len();
    if file_size == 0 {
        return Err(GgufError::Empty { path: path.to_path_buf() });
    }
    let mut r = Reader {
        inner: BufReader::with_capacity(1 << 16, file),
        pos: 0,
        file_size,
        path: path.to_path_buf(),
        what: "the magic".into(),
    };

    // Magic.
    if file_size < 4 {
        let mut found = vec![0u8; file_size as usize];
        r.inner
            .read_exact(&mut found)
            .map_err(|source| GgufError::Unreadable { path: path.to_path_buf(), source })?;
        return Err(GgufError::BadMagic { path: path.to_path_buf(), found });
    }
    let magic = r.bytes::<4>()?;
    if magic != GGUF_MAGIC {
        return Err(GgufError::BadMagic { path: path.to_path_buf(), found: magic.to_vec() });
    }

    // Version.
    r.what = "the version".into();
    let version = r.u32()?;
    if version != 2 && version != 3 {
        let hint = if version != 0 && version & 0xFFFF == 0 {
            " (looks like a big-endian file)".to_string()
        } else if version == 1 {
            " (GGUF v1 is no longer supported; re-convert the model)".to_string()
        } else {
            String::new()
        };
        return Err(GgufError::UnsupportedVersion { path: path.to_path_buf(), version, hint });
    }

    // Counts. Each metadata entry takes at least 8 (key length) + 1 (key) + 4 (type) + 1 bytes,
    // each tensor-table entry at least 8 + 1 + 4 + 8 + 4 + 8 bytes.
    r.what = "the tensor count".into();
    let n_tensors = r.u64()?;
    r.what = "the metadata count".into();
    let n_kv = r.u64()?;
    let rem = r.remaining();
    if n_kv.checked_mul(14).is_none_or(|need| need > rem) {
        return Err(GgufError::TruncatedHeader {
            path: path.to_path_buf(),
            detail: format!(
                "header claims {n_kv} metadata entries, more than the remaining {rem} bytes can hold"
            ),
        });
    }
    if n_tensors.checked_mul(33).is_none_or(|need| need > rem) {
        return Err(GgufError::TruncatedHeader {
            path: path.to_path_buf(),
            detail: format!(
                "header claims {n_tensors} tensors, more than the remaining {rem} bytes can hold"
            ),
        });
    }

    // Metadata.
    let mut metadata = Vec::with_capacity(n_kv.min(4096) as usize);
    let mut seen_keys = HashSet::new();
    for i in 0..n_kv {
        r.what = format!("the key of metadata entry {i}");
        let key = r.string(65_535, &format!("#{i}"))?;
        if key.is_empty() {
            return Err(GgufError::BadMetadata {
                path: path.to_path_buf(),
                key: format!("#{i}"),
                detail: "empty key".into(),
            });
        }
        if !seen_keys.insert(key.clone()) {
            return Err(GgufError::BadMetadata {
                path: path.to_path_buf(),
                key,
                detail: "duplicate key".into(),
            });
        }
        r.what = format!("the value of metadata key '{key}'");
        let value = r.value(&key)?;
        metadata.push((key, value));
    }

    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, MetadataValue::U32(a))) if *a != 0 && a.is_power_of_two() => u64::from(*a),
        Some((k, v)) => {
            return Err(GgufError::BadMetadata {
                path: path.to_path_buf(),
                key: k.clone(),
                detail: format!("must be a power-of-two u32, found {}", v.summary()),
            });
        }
    };

    // Tensor table.
    let mut tensors = Vec::with_capacity(n_tensors.min(1 << 16) as usize);
    let mut seen_names = HashSet::new();
    for i in 0..n_tensors {
        r.what = format!("the name of tensor {i}");
        let name = r.string(1 << 16, &format!("tensor #{i}"))?;
        let bad = |detail: String| GgufError::BadTensorInfo {
            path: path.to_path_buf(),
            tensor: name.clone(),
            detail,
        };
        if name.len() > MAX_TENSOR_NAME_LEN {
            return Err(bad(format!(
                "name is {} bytes long; llama.cpp allows at most {MAX_TENSOR_NAME_LEN}",
                name.len()
            )));
        }
        if !seen_names.insert(name.clone()) {
            return Err(bad("duplicate tensor name".into()));
        }
        r.what = format!("the shape of tensor '{name}'");
        let n_dims = r.u32()?;
        if n_dims > MAX_DIMS {
            return Err(bad(format!("{n_dims} dimensions; ggml supports at most {MAX_DIMS}")));
        }
        let mut shape = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            let d = r.u64()?;
            if d > i64::MAX as u64 {
                return Err(bad(format!("dimension {d} is negative or too large")));
            }
            shape.push(d);
        }
        let n_elements = shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(|| bad(format!("shape {shape:?} overflows the element count")))?;
        r.what = format!("the type of tensor '{name}'");
        let type_id = r.u32()?;
        let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownTensorType {
            path: path.to_path_buf(),
            tensor: name.clone(),
            type_id,
        })?;
        let row = shape.first().copied().unwrap_or(1);
        if row % ggml_type.block_size() != 0 {
            return Err(bad(format!(
                "row length {row} is not a multiple of the {ggml_type} block size {}",
                ggml_type.block_size()
            )));
        }
        let n_bytes = ggml_type
            .byte_size(n_elements)
            .ok_or_else(|| bad(format!("shape {shape:?} overflows the byte size")))?;
        r.what = format!("the data offset of tensor '{name}'");
        let offset = r.u64()?;
        tensors.push(TensorInfo { name, shape, ggml_type, offset, n_elements, n_bytes });
    }

    let header_end = r.pos;
    let data_offset = header_end.div_ceil(alignment) * alignment;
    Ok(RawGguf { version, metadata, tensors, alignment, data_offset, file_size })
}
