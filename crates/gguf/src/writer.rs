//! [`GgufWriter`]: build a GGUF v3 file in memory and write it atomically.

use std::io::Write;
use std::path::Path;

use crate::error::GgufError;
use crate::reader::{DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_DIMS, MAX_TENSOR_NAME_LEN};
use crate::types::{GgmlType, MetadataValue, ValueType};

struct PendingTensor {
    name: String,
    shape: Vec<u64>,
    ggml_type: GgmlType,
    data: Vec<u8>,
}

/// Builds a GGUF v3 file: metadata of every value type, tensors of F32, F16, BF16, Q8_0, Q5_0
/// and Q4_0 (ggml's reference quantizers, reimplemented), plus Q4_1, Q5_1, Q8_1 and the K-quants
/// through candle with the `candle` feature; data aligned to 32 bytes.
///
/// Shapes are given in **ggml order** (`shape[0]` = row length): a PyTorch `[out, in]` weight
/// whose row-major data is `w` is added as `add_tensor(name, &[in, out], &w, ty)` — the bytes
/// are the same, only the shape is reversed.
///
/// ```
/// use trident_gguf::{GgufWriter, GgmlType};
/// let mut w = GgufWriter::new();
/// w.set("general.architecture", "llama");
/// w.add_tensor("x.weight", &[32, 2], &[0.5; 64], GgmlType::Q8_0).unwrap();
/// let bytes = w.to_bytes().unwrap();
/// assert_eq!(&bytes[..4], b"GGUF");
/// ```
pub struct GgufWriter {
    metadata: Vec<(String, MetadataValue)>,
    tensors: Vec<PendingTensor>,
    alignment: u64,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

fn invalid(detail: impl Into<String>) -> GgufError {
    GgufError::InvalidWrite { detail: detail.into() }
}

#[cfg(feature = "candle")]
fn candle_dtype(t: GgmlType) -> Option<candle_core::quantized::GgmlDType> {
    use candle_core::quantized::GgmlDType;
    Some(match t {
        GgmlType::Q4_1 => GgmlDType::Q4_1,
        GgmlType::Q5_1 => GgmlDType::Q5_1,
        GgmlType::Q8_1 => GgmlDType::Q8_1,
        GgmlType::Q2_K => GgmlDType::Q2K,
        GgmlType::Q3_K => GgmlDType::Q3K,
        GgmlType::Q4_K => GgmlDType::Q4K,
        GgmlType::Q5_K => GgmlDType::Q5K,
        GgmlType::Q6_K => GgmlDType::Q6K,
        GgmlType::Q8_K => GgmlDType::Q8K,
        _ => return None,
    })
}

/// ggml's reference Q8_0 quantizer (`quantize_row_q8_0_ref`): per block of 32 values, an f16
/// scale `d = max|x| / 127` and 32 signed bytes `round(x / d)`.
pub(crate) fn quantize_q8_0(data: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 32 * 34);
    for block in data.chunks(32) {
        let amax = block.iter().fold(0f32, |m, x| m.max(x.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&half::f16::from_f32(d).to_le_bytes());
        for &x in block {
            out.push((x * id).round() as i8 as u8);
        }
    }
    out
}

/// ggml's reference Q4_0 quantizer (`quantize_row_q4_0_ref`): per block of 32, an f16 scale
/// `d = max / -8` (max = the value of largest magnitude) and 16 bytes of 4-bit codes
/// (element j in the low nibble of byte j, element 16 + j in the high nibble).
pub(crate) fn quantize_q4_0(data: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 32 * 18);
    for block in data.chunks(32) {
        let max = block.iter().fold(0f32, |m, &x| if x.abs() > m.abs() { x } else { m });
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&half::f16::from_f32(d).to_le_bytes());
        for j in 0..16 {
            let q0 = ((block[j] * id + 8.5) as i8).min(15) as u8;
            let q1 = ((block[16 + j] * id + 8.5) as i8).min(15) as u8;
            out.push(q0 | (q1 << 4));
        }
    }
    out
}

/// ggml's reference Q5_0 quantizer (`quantize_row_q5_0_ref`): per block of 32, an f16 scale
/// `d = max / -16`, a u32 of fifth bits and 16 bytes of low nibbles (layout as Q4_0).
pub(crate) fn quantize_q5_0(data: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 32 * 22);
    for block in data.chunks(32) {
        let max = block.iter().fold(0f32, |m, &x| if x.abs() > m.abs() { x } else { m });
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qh = 0u32;
        let mut qs = [0u8; 16];
        for j in 0..16 {
            let q0 = ((block[j] * id + 16.5) as i8).min(31) as u8;
            let q1 = ((block[16 + j] * id + 16.5) as i8).min(31) as u8;
            qs[j] = (q0 & 0x0F) | ((q1 & 0x0F) << 4);
            qh |= u32::from((q0 & 0x10) >> 4) << j;
            qh |= u32::from((q1 & 0x10) >> 4) << (j + 16);
        }
        out.extend_from_slice(&half::f16::from_f32(d).to_le_bytes());
        out.extend_from_slice(&qh.to_le_bytes());
        out.extend_from_slice(&qs);
    }
    out
}

/// Encode f32 values as `ggml_type`; `shape` in ggml order, already validated.
pub(crate) fn encode(name: &str, shape: &[u64], data: &[f32], ggml_type: GgmlType) -> Result<Vec<u8>, GgufError> {
    let _ = shape;
    Ok(match ggml_type {
        GgmlType::F32 => data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        GgmlType::F16 => data.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect(),
        GgmlType::BF16 => data.iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes()).collect(),
        GgmlType::Q8_0 => quantize_q8_0(data),
        GgmlType::Q4_0 => quantize_q4_0(data),
        GgmlType::Q5_0 => quantize_q5_0(data),
        #[cfg(feature = "candle")]
        t if candle_dtype(t).is_some() => {
            use candle_core::quantized::QTensor;
            use candle_core::{Device, Tensor};
            let dtype = candle_dtype(t).expect("checked by the guard");
            let dims: Vec<usize> = shape.iter().rev().map(|&d| d as usize).collect();
            Tensor::from_slice(data, dims.as_slice(), &Device::Cpu)
                .and_then(|x| QTensor::quantize(&x, dtype))
                .and_then(|q| q.data().map(|d| d.into_owned()))
                .map_err(|e| GgufError::Quantize { tensor: name.to_string(), detail: e.to_string() })?
        }
        t => {
            return Err(invalid(format!(
                "tensor '{name}': no quantizer for {t} (F32, F16, BF16, Q8_0, Q5_0 and Q4_0 are built in; \
                 enable the `candle` feature for Q4_1, Q5_1, Q8_1 and the K-quants)"
            )));
        }
    })
}

impl GgufWriter {
    /// An empty writer (alignment 32).
    pub fn new() -> Self {
        GgufWriter { metadata: Vec::new(), tensors: Vec::new(), alignment: DEFAULT_ALIGNMENT }
    }

    /// Set a metadata key (replacing an earlier value of the same key, keeping its position).
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<MetadataValue>) -> &mut Self {
        let key = key.into();
        let value = value.into();
        if let Some(slot) = self.metadata.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = value;
        } else {
            self.metadata.push((key, value));
        }
        self
    }

    /// Set a string-array key.
    pub fn set_str_array<S: AsRef<str>>(&mut self, key: impl Into<String>, items: &[S]) -> &mut Self {
        let items = items.iter().map(|s| MetadataValue::String(s.as_ref().to_string())).collect();
        self.set(key, MetadataValue::Array(ValueType::String, items))
    }

    /// Set an i32-array key.
    pub fn set_i32_array(&mut self, key: impl Into<String>, items: &[i32]) -> &mut Self {
        self.set(key, MetadataValue::Array(ValueType::I32, items.iter().map(|&v| MetadataValue::I32(v)).collect()))
    }

    /// Set an f32-array key.
    pub fn set_f32_array(&mut self, key: impl Into<String>, items: &[f32]) -> &mut Self {
        self.set(key, MetadataValue::Array(ValueType::F32, items.iter().map(|&v| MetadataValue::F32(v)).collect()))
    }

    /// Set a bool-array key.
    pub fn set_bool_array(&mut self, key: impl Into<String>, items: &[bool]) -> &mut Self {
        self.set(key, MetadataValue::Array(ValueType::Bool, items.iter().map(|&v| MetadataValue::Bool(v)).collect()))
    }

    /// The value currently set for `key`.
    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn check_new_tensor(&self, name: &str, shape: &[u64], ggml_type: GgmlType) -> Result<u64, GgufError> {
        if name.is_empty() || name.len() > MAX_TENSOR_NAME_LEN {
            return Err(invalid(format!("tensor name '{name}' must be 1..={MAX_TENSOR_NAME_LEN} bytes")));
        }
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(invalid(format!("duplicate tensor name '{name}'")));
        }
        if shape.is_empty() || shape.len() > MAX_DIMS as usize {
            return Err(invalid(format!("tensor '{name}': {} dimensions, need 1..=4", shape.len())));
        }
        let n = shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .ok_or_else(|| invalid(format!("tensor '{name}': shape {shape:?} overflows")))?;
        if shape[0] % ggml_type.block_size() != 0 {
            return Err(invalid(format!(
                "tensor '{name}': row length {} is not a multiple of the {ggml_type} block size {}",
                shape[0],
                ggml_type.block_size()
            )));
        }
        Ok(n)
    }

    /// Add a tensor from f32 values (row-major, `shape` in ggml order), encoded as `ggml_type`.
    pub fn add_tensor(&mut self, name: &str, shape: &[u64], data: &[f32], ggml_type: GgmlType) -> Result<&mut Self, GgufError> {
        let n = self.check_new_tensor(name, shape, ggml_type)?;
        if data.len() as u64 != n {
            return Err(invalid(format!("tensor '{name}': shape {shape:?} needs {n} values, got {}", data.len())));
        }
        let bytes = encode(name, shape, data, ggml_type)?;
        self.tensors.push(PendingTensor { name: name.to_string(), shape: shape.to_vec(), ggml_type, data: bytes });
        Ok(self)
    }

    /// Add a tensor from already-encoded bytes (e.g. copied from another GGUF file).
    pub fn add_tensor_bytes(&mut self, name: &str, shape: &[u64], ggml_type: GgmlType, bytes: Vec<u8>) -> Result<&mut Self, GgufError> {
        let n = self.check_new_tensor(name, shape, ggml_type)?;
        let need = ggml_type.byte_size(n).ok_or_else(|| invalid(format!("tensor '{name}' too large")))?;
        if bytes.len() as u64 != need {
            return Err(invalid(format!("tensor '{name}': {ggml_type} {shape:?} needs {need} bytes, got {}", bytes.len())));
        }
        self.tensors.push(PendingTensor { name: name.to_string(), shape: shape.to_vec(), ggml_type, data: bytes });
        Ok(self)
    }

    /// Number of tensors added so far.
    pub fn tensor_count(&self) -> usize {
        self.tensors.len()
    }

    /// The whole file as bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, GgufError> {
        let mut out = Vec::new();
        out.extend_from_slice(&GGUF_MAGIC);
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            if key.is_empty() {
                return Err(invalid("empty metadata key"));
            }
            if key == "general.alignment" && *value != MetadataValue::U32(self.alignment as u32) {
                return Err(invalid("general.alignment is managed by the writer (always 32)"));
            }
            write_str(&mut out, key);
            write_value(&mut out, key, value, true)?;
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            write_str(&mut out, &t.name);
            out.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
            for d in &t.shape {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ggml_type.id().to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offset += (t.data.len() as u64).next_multiple_of(self.alignment);
        }
        pad(&mut out, self.alignment);
        for t in &self.tensors {
            out.extend_from_slice(&t.data);
            pad(&mut out, self.alignment);
        }
        Ok(out)
    }

    /// Write the file to `path` (through a temporary file in the same directory, renamed into
    /// place, so a failed write leaves no half-written model behind).
    pub fn write(&self, path: &Path) -> Result<(), GgufError> {
        let bytes = self.to_bytes()?;
        let tmp = path.with_extension(format!(
            "{}.tmp{}",
            path.extension().and_then(|e| e.to_str()).unwrap_or("gguf"),
            std::process::id()
        ));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        result.map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            GgufError::Write { path: path.to_path_buf(), source }
        })
    }
}

fn pad(out: &mut Vec<u8>, alignment: u64) {
    let len = out.len() as u64;
    out.resize(len.next_multiple_of(alignment) as usize, 0);
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn write_value(out: &mut Vec<u8>, key: &str, v: &MetadataValue, with_type: bool) -> Result<(), GgufError> {
    if with_type {
        out.extend_from_slice(&v.value_type().id().to_le_bytes());
    }
    match v {
        MetadataValue::U8(x) => out.push(*x),
        MetadataValue::I8(x) => out.push(*x as u8),
        MetadataValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::Bool(x) => out.push(u8::from(*x)),
        MetadataValue::String(s) => write_str(out, s),
        MetadataValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetadataValue::Array(elem, items) => {
            if *elem == ValueType::Array {
                return Err(invalid(format!("metadata '{key}': nested arrays are not allowed")));
            }
            out.extend_from_slice(&elem.id().to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                if item.value_type() != *elem {
                    return Err(invalid(format!(
                        "metadata '{key}': array of {elem:?} holds a {:?}",
                        item.value_type()
                    )));
                }
                write_value(out, key, item, false)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_matches_reference_layout() {
        let data: Vec<f32> = (0..32).map(|i| i as f32 - 16.0).collect();
        let q = quantize_q8_0(&data);
        assert_eq!(q.len(), 34);
        let d = half::f16::from_le_bytes([q[0], q[1]]).to_f32();
        assert!((d - 16.0 / 127.0).abs() < 1e-3);
        assert_eq!(q[2] as i8, -127);
        // Dequantized values are within half a step of the input.
        for (i, &x) in data.iter().enumerate() {
            assert!(((q[2 + i] as i8) as f32 * d - x).abs() <= d * 0.51, "{i}");
        }
    }

    /// Decode ggml's Q4_0 / Q5_0 blocks (as `dequantize_row_q{4,5}_0`) for the round-trip tests.
    fn dequant(block: &[u8], five_bit: bool) -> Vec<f32> {
        let d = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
        let (qh, qs) = if five_bit {
            (u32::from_le_bytes(block[2..6].try_into().unwrap()), &block[6..22])
        } else {
            (0, &block[2..18])
        };
        let mut out = vec![0f32; 32];
        for j in 0..16 {
            let (mut x0, mut x1) = (i32::from(qs[j] & 0x0F), i32::from(qs[j] >> 4));
            if five_bit {
                x0 |= (((qh >> j) & 1) << 4) as i32;
                x1 |= (((qh >> (j + 16)) & 1) << 4) as i32;
                out[j] = (x0 - 16) as f32 * d;
                out[j + 16] = (x1 - 16) as f32 * d;
            } else {
                out[j] = (x0 - 8) as f32 * d;
                out[j + 16] = (x1 - 8) as f32 * d;
            }
        }
        out
    }

    #[test]
    fn q4_0_and_q5_0_round_trip_within_one_step() {
        let data: Vec<f32> = (0..64).map(|i| ((i as f32) * 0.37).sin() * 3.0).collect();
        for (five, q) in [(false, quantize_q4_0(&data)), (true, quantize_q5_0(&data))] {
            let size = if five { 22 } else { 18 };
            assert_eq!(q.len(), 2 * size);
            for (b, chunk) in q.chunks(size).zip(data.chunks(32)) {
                let d = half::f16::from_le_bytes([b[0], b[1]]).to_f32().abs();
                for (x, y) in dequant(b, five).iter().zip(chunk) {
                    assert!((x - y).abs() <= d * 1.01, "five={five}: {x} vs {y} (step {d})");
                }
            }
        }
        // All-zero blocks decode to zeros (ggml stores d = -0.0 and the mid code 16).
        let z = encode("t", &[32], &[0.0; 32], GgmlType::Q5_0).unwrap();
        assert!(dequant(&z, true).iter().all(|x| *x == 0.0));
    }

    #[test]
    fn rejects_bad_requests() {
        let mut w = GgufWriter::new();
        assert!(w.add_tensor("a", &[30], &[0.0; 30], GgmlType::Q8_0).is_err());
        assert!(w.add_tensor("a", &[4], &[0.0; 3], GgmlType::F32).is_err());
        w.add_tensor("a", &[4], &[0.0; 4], GgmlType::F32).unwrap();
        assert!(w.add_tensor("a", &[4], &[0.0; 4], GgmlType::F32).is_err());
        let long = "x".repeat(64);
        assert!(w.add_tensor(&long, &[4], &[0.0; 4], GgmlType::F32).is_err());
        w.set("bad", MetadataValue::Array(ValueType::U32, vec![MetadataValue::I32(1)]));
        let e = w.to_bytes().unwrap_err();
        assert!(!e.is_user_error());
    }
}
