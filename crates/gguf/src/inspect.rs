//! [`inspect`]: read and validate a GGUF file's header, and the model facts it states.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::arch::{Family, GENERIC_REQUIRED_KEYS, KNOWN_TOKENIZER_MODELS, is_known_architecture};
use crate::error::GgufError;
use crate::reader::{RawGguf, TensorInfo, read_header};
use crate::types::{MetadataValue, ValueType, file_type_label};

/// Facts about a GGUF file, as read by [`inspect`] (or [`read_metadata`]).
///
/// The `Serialize` form holds the summary fields only; the full metadata and tensor table are
/// reachable through the accessor methods ([`GgufInfo::metadata`], [`GgufInfo::tensors`]).
#[derive(Debug, Clone, Serialize)]
pub struct GgufInfo {
    /// The file that was read.
    pub path: PathBuf,
    /// File size in bytes.
    pub file_size: u64,
    /// GGUF format version (2 or 3).
    pub version: u32,
    /// `general.architecture`, e.g. `"qwen2"`.
    pub architecture: String,
    /// `general.name`, when present.
    pub name: Option<String>,
    /// `general.type` (`"model"`, `"adapter"`, ...), when present.
    pub general_type: Option<String>,
    /// `general.file_type` (llama.cpp's `llama_ftype`), when present.
    pub file_type: Option<u32>,
    /// Human label of `file_type`, e.g. `"Q4_K_M"`.
    pub file_type_label: Option<String>,
    /// Number of tensors.
    pub tensor_count: u64,
    /// Number of tensors per ggml type, e.g. `{"F32": 121, "Q5_0": 133, ...}`.
    pub tensor_types: BTreeMap<String, u64>,
    /// Sum of the element counts of all tensors.
    pub parameter_count: u64,
    /// Total bytes of tensor data.
    pub tensor_data_bytes: u64,
    /// `{arch}.context_length`: the training context.
    pub context_length: Option<u64>,
    /// `{arch}.embedding_length`: hidden size.
    pub embedding_length: Option<u64>,
    /// `{arch}.block_count`: number of layers.
    pub block_count: Option<u64>,
    /// `{arch}.feed_forward_length` (first layer's when per-layer).
    pub feed_forward_length: Option<u64>,
    /// `{arch}.attention.head_count` (first layer's when per-layer).
    pub head_count: Option<u64>,
    /// `{arch}.attention.head_count_kv` (first layer's when per-layer); llama.cpp defaults it
    /// to `head_count` when absent.
    pub head_count_kv: Option<u64>,
    /// Number of tokens in `tokenizer.ggml.tokens`.
    pub vocab_size: Option<u64>,
    /// `tokenizer.ggml.model`, e.g. `"gpt2"` (BPE) or `"llama"` (SentencePiece).
    pub tokenizer_model: Option<String>,
    /// `tokenizer.ggml.pre`, the BPE pre-tokenizer name, e.g. `"qwen2"`.
    pub tokenizer_pre: Option<String>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos_token_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos_token_id: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`.
    pub add_bos_token: Option<bool>,
    /// `tokenizer.chat_template` (a Jinja template).
    pub chat_template: Option<String>,
    /// True for a llama.cpp GGUF-LoRA adapter (`general.type = "adapter"`,
    /// `adapter.type = "lora"`).
    pub is_lora_adapter: bool,
    /// `adapter.lora.alpha` of an adapter.
    pub lora_alpha: Option<f32>,
    /// Data alignment in bytes (`general.alignment`, default 32).
    pub alignment: u64,
    /// Absolute offset of the tensor data section.
    pub data_offset: u64,
    #[serde(skip)]
    metadata: Vec<(String, MetadataValue)>,
    #[serde(skip)]
    tensors: Vec<TensorInfo>,
}

impl GgufInfo {
    /// The Trident model family of this file, `None` for other architectures.
    pub fn family(&self) -> Option<Family> {
        Family::from_architecture(&self.architecture)
    }

    /// Size of one attention head: `{arch}.attention.key_length` when present, else
    /// `embedding_length / head_count`.
    pub fn head_dim(&self) -> Option<u64> {
        self.arch_u64("attention.key_length").or_else(|| {
            let (e, h) = (self.embedding_length?, self.head_count?);
            (h > 0).then(|| e / h)
        })
    }

    /// All metadata entries in file order.
    pub fn metadata_entries(&self) -> &[(String, MetadataValue)] {
        &self.metadata
    }

    /// The metadata keys in file order.
    pub fn metadata_keys(&self) -> impl Iterator<Item = &str> {
        self.metadata.iter().map(|(k, _)| k.as_str())
    }

    /// The value of a metadata key.
    pub fn metadata(&self, key: &str) -> Option<&MetadataValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// A string metadata value.
    pub fn metadata_str(&self, key: &str) -> Option<&str> {
        self.metadata(key)?.as_str()
    }

    /// A non-negative integer metadata value (any integer width).
    pub fn metadata_u64(&self, key: &str) -> Option<u64> {
        self.metadata(key)?.as_u64()
    }

    /// An integer metadata value (any integer width).
    pub fn metadata_i64(&self, key: &str) -> Option<i64> {
        self.metadata(key)?.as_i64()
    }

    /// A numeric metadata value as f64 (floats and integers).
    pub fn metadata_f64(&self, key: &str) -> Option<f64> {
        self.metadata(key)?.as_f64()
    }

    /// A boolean metadata value.
    pub fn metadata_bool(&self, key: &str) -> Option<bool> {
        self.metadata(key)?.as_bool()
    }

    /// An array metadata value's items.
    pub fn metadata_array(&self, key: &str) -> Option<&[MetadataValue]> {
        self.metadata(key)?.as_array()
    }

    /// `{architecture}.{suffix}` as an integer; for per-layer arrays, the first element.
    pub fn arch_u64(&self, suffix: &str) -> Option<u64> {
        let v = self.metadata(&format!("{}.{suffix}", self.architecture))?;
        match v {
            MetadataValue::Array(_, items) => items.first()?.as_u64(),
            v => v.as_u64(),
        }
    }

    /// `{architecture}.{suffix}` as a float.
    pub fn arch_f64(&self, suffix: &str) -> Option<f64> {
        self.metadata_f64(&format!("{}.{suffix}", self.architecture))
    }

    /// The tensor table in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// One tensor's table entry by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// Read and fully validate a GGUF model or adapter file without loading tensor data.
///
/// Checks, in order (each failure is its own [`GgufError`] variant): the file exists and is
/// readable and non-empty; magic; version 2 or 3; the header, metadata and tensor table are
/// complete and well-formed (caps on lengths, no duplicate keys or tensor names, valid UTF-8,
/// known tensor types, row lengths divisible by the type's block); tensor offsets are aligned
/// and packed the way llama.cpp requires; every tensor's data lies inside the file;
/// `general.architecture` is one llama.cpp knows; for models, the keys the architecture needs
/// and a usable tokenizer (no duplicate tokens, merges for BPE) and `token_embd.weight` /
/// `output.weight` shapes that agree with `embedding_length` and the vocabulary; for LoRA
/// adapters, the `adapter.*` keys and complete `lora_a`/`lora_b` pairs.
///
/// A file that passes can be handed to llama.cpp without it aborting the process on the
/// problems listed above (it may still refuse it with an error, e.g. for a tensor of the
/// wrong shape deep inside a block).
pub fn inspect(path: &Path) -> Result<GgufInfo, GgufError> {
    let info = read_metadata(path)?;
    validate_semantics(&info)?;
    Ok(info)
}

/// Read a GGUF file and check only its *structure* (header, metadata, tensor table, offsets,
/// tensor data within the file) — not the architecture, keys or tokenizer. For tools that list
/// arbitrary GGUF files; use [`inspect`] before handing a file to llama.cpp.
pub fn read_metadata(path: &Path) -> Result<GgufInfo, GgufError> {
    let raw = read_header(path)?;
    check_tensor_layout(path, &raw)?;
    Ok(build_info(path, raw))
}

fn check_tensor_layout(path: &Path, raw: &RawGguf) -> Result<(), GgufError> {
    let mut expected = 0u64;
    for t in &raw.tensors {
        if t.offset % raw.alignment != 0 {
            return Err(GgufError::MisalignedOffset {
                path: path.to_path_buf(),
                tensor: t.name.clone(),
                offset: t.offset,
                detail: format!("not a multiple of the alignment {}", raw.alignment),
            });
        }
        if t.offset != expected {
            return Err(GgufError::MisalignedOffset {
                path: path.to_path_buf(),
                tensor: t.name.clone(),
                offset: t.offset,
                detail: format!(
                    "expected {expected}: llama.cpp requires tensors packed in table order, each padded to {} bytes",
                    raw.alignment
                ),
            });
        }
        let end = raw
            .data_offset
            .checked_add(t.offset)
            .and_then(|s| s.checked_add(t.n_bytes))
            .ok_or_else(|| GgufError::BadTensorInfo {
                path: path.to_path_buf(),
                tensor: t.name.clone(),
                detail: "data offset overflows".into(),
            })?;
        if end > raw.file_size {
            return Err(GgufError::TruncatedTensorData {
                path: path.to_path_buf(),
                tensor: t.name.clone(),
                end,
                file_size: raw.file_size,
            });
        }
        expected = t
            .n_bytes
            .checked_next_multiple_of(raw.alignment)
            .and_then(|padded| expected.checked_add(padded))
            .ok_or_else(|| GgufError::BadTensorInfo {
                path: path.to_path_buf(),
                tensor: t.name.clone(),
                detail: "data size overflows".into(),
            })?;
    }
    Ok(())
}

fn first_u64(v: &MetadataValue) -> Option<u64> {
    match v {
        MetadataValue::Array(_, items) => items.first()?.as_u64(),
        v => v.as_u64(),
    }
}

fn build_info(path: &Path, raw: RawGguf) -> GgufInfo {
    let get = |key: &str| raw.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v);
    let get_str = |key: &str| get(key).and_then(|v| v.as_str()).map(str::to_string);
    let architecture = get_str("general.architecture").unwrap_or_default();
    let arch_u64 = |suffix: &str| get(&format!("{architecture}.{suffix}")).and_then(first_u64);
    let file_type = get("general.file_type").and_then(|v| v.as_u64()).and_then(|v| u32::try_from(v).ok());
    let mut tensor_types = BTreeMap::new();
    let mut parameter_count = 0u64;
    let mut tensor_data_bytes = 0u64;
    for t in &raw.tensors {
        *tensor_types.entry(t.ggml_type.name().to_string()).or_insert(0) += 1;
        parameter_count = parameter_count.saturating_add(t.n_elements);
        tensor_data_bytes = tensor_data_bytes.saturating_add(t.n_bytes);
    }
    let general_type = get_str("general.type");
    let is_lora_adapter = general_type.as_deref() == Some("adapter")
        && get("adapter.type").and_then(|v| v.as_str()) == Some("lora");
    GgufInfo {
        path: path.to_path_buf(),
        file_size: raw.file_size,
        version: raw.version,
        name: get_str("general.name"),
        general_type,
        file_type,
        file_type_label: file_type.and_then(file_type_label).map(str::to_string),
        tensor_count: raw.tensors.len() as u64,
        tensor_types,
        parameter_count,
        tensor_data_bytes,
        context_length: arch_u64("context_length"),
        embedding_length: arch_u64("embedding_length"),
        block_count: arch_u64("block_count"),
        feed_forward_length: arch_u64("feed_forward_length"),
        head_count: arch_u64("attention.head_count"),
        head_count_kv: arch_u64("attention.head_count_kv"),
        vocab_size: get("tokenizer.ggml.tokens").and_then(|v| v.as_array()).map(|a| a.len() as u64),
        tokenizer_model: get_str("tokenizer.ggml.model"),
        tokenizer_pre: get_str("tokenizer.ggml.pre"),
        bos_token_id: get("tokenizer.ggml.bos_token_id").and_then(|v| v.as_u64()).and_then(|v| u32::try_from(v).ok()),
        eos_token_id: get("tokenizer.ggml.eos_token_id").and_then(|v| v.as_u64()).and_then(|v| u32::try_from(v).ok()),
        add_bos_token: get("tokenizer.ggml.add_bos_token").and_then(|v| v.as_bool()),
        chat_template: get_str("tokenizer.chat_template"),
        is_lora_adapter,
        lora_alpha: get("adapter.lora.alpha").and_then(|v| v.as_f64()).map(|v| v as f32),
        alignment: raw.alignment,
        data_offset: raw.data_offset,
        architecture,
        metadata: raw.metadata,
        tensors: raw.tensors,
    }
}

/// Checks that a metadata key, when present, has exactly the type llama.cpp reads it as
/// (llama.cpp either throws or, for some keys, asserts and aborts on a mismatch).
fn expect_type(info: &GgufInfo, key: &str, allowed: &[ValueType], array_of: &[ValueType]) -> Result<(), GgufError> {
    let Some(v) = info.metadata(key) else { return Ok(()) };
    let ok = match v {
        MetadataValue::Array(elem, _) => array_of.contains(elem),
        v => allowed.contains(&v.value_type()),
    };
    if ok {
        return Ok(());
    }
    let found = match v {
        MetadataValue::Array(elem, items) => format!("array of {elem:?} ({} items)", items.len()),
        v => format!("{:?} = {}", v.value_type(), v.summary()),
    };
    let mut expected: Vec<String> = allowed.iter().map(|t| format!("{t:?}")).collect();
    expected.extend(array_of.iter().map(|t| format!("array of {t:?}")));
    Err(GgufError::BadMetadata {
        path: info.path.clone(),
        key: key.to_string(),
        detail: format!("has type {found}; llama.cpp expects {}", expected.join(" or ")),
    })
}

fn bad_meta(info: &GgufInfo, key: &str, detail: impl Into<String>) -> GgufError {
    GgufError::BadMetadata { path: info.path.clone(), key: key.to_string(), detail: detail.into() }
}

fn validate_semantics(info: &GgufInfo) -> Result<(), GgufError> {
    use ValueType as T;
    let path = &info.path;
    // Keys llama.cpp reads with asserting getters (gguf_get_val_str / _f32 abort on a type
    // mismatch instead of throwing).
    expect_type(info, "general.architecture", &[T::String], &[])?;
    expect_type(info, "general.type", &[T::String], &[])?;
    expect_type(info, "general.name", &[T::String], &[])?;
    expect_type(info, "adapter.type", &[T::String], &[])?;
    expect_type(info, "adapter.lora.alpha", &[T::F32], &[])?;

    if info.metadata("general.architecture").is_none() {
        return Err(GgufError::MissingKey {
            path: path.clone(),
            key: "general.architecture".into(),
            architecture: "(none)".into(),
        });
    }
    let arch = info.architecture.as_str();
    if !is_known_architecture(arch) {
        return Err(GgufError::UnknownArchitecture { path: path.clone(), architecture: arch.to_string() });
    }

    if info.general_type.as_deref() == Some("adapter") {
        return validate_adapter(info);
    }

    // Hyper-parameters.
    let u32_keys = [
        "context_length",
        "embedding_length",
        "block_count",
        "attention.key_length",
        "attention.value_length",
        "rope.dimension_count",
        "expert_count",
        "expert_used_count",
        "attention.sliding_window",
        "vocab_size",
    ];
    for k in u32_keys {
        expect_type(info, &format!("{arch}.{k}"), &[T::U32], &[])?;
    }
    for k in ["feed_forward_length", "attention.head_count", "attention.head_count_kv"] {
        expect_type(info, &format!("{arch}.{k}"), &[T::U32], &[T::U32, T::I32])?;
    }
    for k in ["attention.layer_norm_rms_epsilon", "attention.layer_norm_epsilon", "rope.freq_base", "rope.freq_base_swa"] {
        expect_type(info, &format!("{arch}.{k}"), &[T::F32], &[])?;
    }
    let mut required: Vec<&str> = GENERIC_REQUIRED_KEYS.to_vec();
    if let Some(family) = info.family() {
        required.extend(family.required_keys().iter().copied());
    }
    for k in required {
        let key = format!("{arch}.{k}");
        if info.metadata(&key).is_none() {
            return Err(GgufError::MissingKey { path: path.clone(), key, architecture: arch.to_string() });
        }
    }
    let block_count = info.block_count.unwrap_or(0);
    if !(1..=512).contains(&block_count) {
        return Err(bad_meta(info, &format!("{arch}.block_count"), format!("{block_count} layers; llama.cpp requires 1..=512")));
    }
    for k in ["feed_forward_length", "attention.head_count", "attention.head_count_kv"] {
        let key = format!("{arch}.{k}");
        if let Some(MetadataValue::Array(_, items)) = info.metadata(&key)
            && items.len() as u64 != block_count
        {
            return Err(bad_meta(info, &key, format!("per-layer array has {} items but block_count is {block_count}", items.len())));
        }
    }
    let n_expert = info.arch_u64("expert_count").unwrap_or(0);
    let n_expert_used = info.arch_u64("expert_used_count").unwrap_or(0);
    if n_expert > 1024 || n_expert_used > n_expert || (n_expert > 0 && n_expert_used == 0) {
        return Err(bad_meta(
            info,
            &format!("{arch}.expert_used_count"),
            format!("{n_expert_used} experts used of {n_expert}; llama.cpp requires 0 < used <= count <= 1024 (or both 0)"),
        ));
    }
    let scaling_key = format!("{arch}.rope.scaling.type");
    expect_type(info, &scaling_key, &[T::String], &[])?;
    if let Some(s) = info.metadata_str(&scaling_key)
        && !["none", "linear", "yarn", "longrope"].contains(&s)
    {
        return Err(bad_meta(info, &scaling_key, format!("unknown RoPE scaling type '{s}' (llama.cpp aborts on it)")));
    }
    if let (Some(h), Some(e)) = (info.head_count, info.embedding_length)
        && h > 0
        && info.metadata(&format!("{arch}.attention.key_length")).is_none()
        && e % h != 0
    {
        return Err(bad_meta(info, &format!("{arch}.attention.head_count"), format!("embedding_length {e} is not divisible by {h} heads")));
    }

    let n_vocab = validate_tokenizer(info)?;
    validate_shapes(info, n_vocab)
}

fn validate_tokenizer(info: &GgufInfo) -> Result<Option<u64>, GgufError> {
    use ValueType as T;
    let path = &info.path;
    let missing = |detail: String| GgufError::MissingTokenizer { path: path.clone(), detail };
    expect_type(info, "tokenizer.ggml.model", &[T::String], &[])?;
    expect_type(info, "tokenizer.ggml.pre", &[T::String], &[])?;
    for k in ["bos", "eos", "eot", "eom", "unknown", "seperator", "padding", "mask"] {
        expect_type(info, &format!("tokenizer.ggml.{k}_token_id"), &[T::U32], &[])?;
    }
    for k in ["add_bos_token", "add_eos_token", "add_sep_token", "add_space_prefix"] {
        expect_type(info, &format!("tokenizer.ggml.{k}"), &[T::Bool], &[])?;
    }
    expect_type(info, "tokenizer.chat_template", &[T::String], &[])?;
    let Some(model) = info.tokenizer_model.as_deref() else {
        return Err(missing("no tokenizer.ggml.model key: the file has no tokenizer".into()));
    };
    if !KNOWN_TOKENIZER_MODELS.contains(&model) {
        return Err(missing(format!("unknown tokenizer model '{model}'")));
    }
    if model == "no_vocab" || model == "none" {
        return Ok(None);
    }
    expect_type(info, "tokenizer.ggml.tokens", &[], &[T::String])?;
    let Some(tokens) = info.metadata_array("tokenizer.ggml.tokens") else {
        return Err(missing("no tokenizer.ggml.tokens (the vocabulary)".into()));
    };
    if tokens.is_empty() {
        return Err(missing("tokenizer.ggml.tokens is empty".into()));
    }
    let n = tokens.len();
    // llama.cpp asserts (aborts) when two ids map to the same token text.
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(n);
    for (id, t) in tokens.iter().enumerate() {
        let text = t.as_str().unwrap_or_default();
        if text.is_empty() {
            continue;
        }
        if let Some(prev) = seen.insert(text, id) {
            return Err(missing(format!("token {text:?} appears twice (ids {prev} and {id}); llama.cpp aborts on duplicate tokens")));
        }
    }
    expect_type(info, "tokenizer.ggml.scores", &[], &[T::F32, T::I32])?;
    expect_type(info, "tokenizer.ggml.token_type", &[], &[T::I32])?;
    for k in ["tokenizer.ggml.scores", "tokenizer.ggml.token_type"] {
        if let Some(a) = info.metadata_array(k)
            && a.len() < n
        {
            return Err(missing(format!("{k} has {} entries for {n} tokens", a.len())));
        }
    }
    let is_bpe = matches!(model, "gpt2" | "hybriddna" | "whitespace" | "gemma4");
    if is_bpe && info.tokenizer_pre.as_deref() != Some("kimi-k2") {
        expect_type(info, "tokenizer.ggml.merges", &[], &[T::String])?;
        if info.metadata("tokenizer.ggml.merges").is_none() {
            return Err(missing(format!("BPE tokenizer '{model}' without tokenizer.ggml.merges")));
        }
    }
    Ok(Some(n as u64))
}

fn validate_shapes(info: &GgufInfo, n_vocab: Option<u64>) -> Result<(), GgufError> {
    let path = &info.path;
    let Some(n_embd) = info.embedding_length else { return Ok(()) };
    let embd = info.tensor("token_embd.weight");
    if embd.is_none() && info.family().is_some() {
        return Err(GgufError::InconsistentShape {
            path: path.clone(),
            tensor: "token_embd.weight".into(),
            detail: "tensor is missing".into(),
        });
    }
    for t in [embd, info.tensor("output.weight")].into_iter().flatten() {
        let rows = t.shape.get(1).copied().unwrap_or(1);
        let ok_embd = t.shape.first() == Some(&n_embd);
        let ok_vocab = n_vocab.is_none_or(|v| rows == v);
        if !ok_embd || !ok_vocab || t.shape.len() != 2 {
            return Err(GgufError::InconsistentShape {
                path: path.clone(),
                tensor: t.name.clone(),
                detail: format!(
                    "shape {:?}, expected [{n_embd}, {}] (embedding_length, vocabulary size)",
                    t.shape,
                    n_vocab.map_or("?".to_string(), |v| v.to_string())
                ),
            });
        }
    }
    Ok(())
}

fn validate_adapter(info: &GgufInfo) -> Result<(), GgufError> {
    let path = &info.path;
    let adapter_type = info.metadata_str("adapter.type").unwrap_or_default();
    if adapter_type != "lora" {
        return Err(bad_meta(info, "adapter.type", format!("'{adapter_type}'; only 'lora' adapters are supported")));
    }
    let mut halves: BTreeMap<&str, (bool, bool)> = BTreeMap::new();
    for t in info.tensors() {
        if let Some(base) = t.name.strip_suffix(".lora_a") {
            halves.entry(base).or_default().0 = true;
        } else if let Some(base) = t.name.strip_suffix(".lora_b") {
            halves.entry(base).or_default().1 = true;
        } else if !t.name.ends_with("_norm.weight") {
            return Err(GgufError::BadTensorInfo {
                path: path.clone(),
                tensor: t.name.clone(),
                detail: "LoRA tensor names must end in .lora_a or .lora_b".into(),
            });
        }
        if t.shape.len() != 2 && !t.name.ends_with("_norm.weight") {
            return Err(GgufError::BadTensorInfo {
                path: path.clone(),
                tensor: t.name.clone(),
                detail: format!("LoRA tensors are 2-D, found shape {:?}", t.shape),
            });
        }
    }
    for (base, (a, b)) in halves {
        if !(a && b) {
            return Err(GgufError::BadTensorInfo {
                path: path.clone(),
                tensor: base.to_string(),
                detail: format!("LoRA pair is missing its {} half", if a { "lora_b" } else { "lora_a" }),
            });
        }
    }
    Ok(())
}
