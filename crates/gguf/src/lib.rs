//! GGUF files: inspection and validation before llama.cpp sees them, model facts (architecture,
//! quantization, context, chat template), and a writer for tiny random test models and
//! GGUF-LoRA adapters.
//!
//! # Entry points
//!
//! - [`inspect`] — read and validate a model or adapter file; returns [`GgufInfo`]. Every file
//!   must pass it before it is handed to llama.cpp (which aborts the process on some bad files).
//! - [`read_metadata`] — structure-only read for listing arbitrary GGUF files.
//! - [`GgufWriter`] — write GGUF v3 files (all metadata types; F32, F16, BF16, Q8_0, Q5_0, Q4_0
//!   built in; Q4_1, Q5_1, Q8_1 and the K-quants through candle with the `candle` feature).
//! - [`write_lora_adapter`] / [`inspect_adapter_against`] — llama.cpp's GGUF-LoRA format.
//! - `testing` (cargo feature `testing`) — tiny random-weight models of every [`Family`] that
//!   llama.cpp loads and runs (proved by `tests/llama_load.rs`).
//!
//! Cargo features: `testing` (the tiny models), `candle` (extra quantizers through
//! `candle-core`; off by default so the crate builds in seconds).
//!
//! # File-format invariants relied on
//!
//! All integers are little-endian. A file is:
//!
//! 1. magic `GGUF`, `u32` version (2 or 3 — v1 and big-endian files are rejected), `u64`
//!    tensor count, `u64` metadata count;
//! 2. metadata entries: `u64`-length-prefixed UTF-8 key (non-empty, unique), `u32` value type
//!    (0..=12), value; strings are `u64` length + bytes; arrays are `u32` element type + `u64`
//!    count + elements, never nested;
//! 3. tensor-table entries: name (unique, at most 63 bytes — ggml's `GGML_MAX_NAME`), `u32`
//!    dimension count (≤ 4), `u64` dimensions in ggml order (`ne[0]` = row length, i.e. a
//!    PyTorch `[out, in]` matrix is stored as `[in, out]`), `u32` ggml type, `u64` offset
//!    relative to the data section;
//! 4. padding to `general.alignment` (a power-of-two `u32`, default 32), then the data section.
//!
//! llama.cpp additionally requires — and [`inspect`] checks — that each tensor's row length is
//! a multiple of its type's block size, that tensors are packed in table order with each one's
//! data padded to the alignment (offset of tensor *i* = sum of the padded sizes before it), and
//! that every tensor's data ends within the file. Lengths read from a file are checked against
//! the bytes left in it before anything is allocated, so a corrupt header cannot make the reader
//! allocate more than the file's size.
//!
//! The semantic checks mirror the places where llama.cpp (the version vendored by
//! `llama-cpp-sys-2` 0.1.161) would abort rather than return an error: duplicate token texts,
//! `block_count` outside 1..=512, unknown RoPE scaling types, keys of the wrong value type read
//! by asserting getters (`general.type`, `adapter.lora.alpha`, …).

mod arch;
mod error;
mod inspect;
mod lora;
mod reader;
mod types;
mod writer;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use arch::{
    Family, GENERIC_REQUIRED_KEYS, KNOWN_ARCHITECTURES, KNOWN_TOKENIZER_MODELS, is_known_architecture,
};
pub use error::GgufError;
pub use inspect::{GgufInfo, inspect, read_metadata};
pub use lora::{LoraAdapterSpec, LoraTensorPair, inspect_adapter_against, write_lora_adapter};
pub use reader::{DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_ARRAY_LEN, MAX_STRING_LEN, TensorInfo};
pub use types::{GgmlType, MetadataValue, ValueType, file_type_label};
pub use writer::GgufWriter;

/// Result type of this crate.
pub type Result<T, E = GgufError> = std::result::Result<T, E>;
