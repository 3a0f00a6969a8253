//! LoRA adapters in the PEFT layout, their store under `$TRIDENT_HOME/adapters/NAME/vN/`,
//! import of PEFT adapters trained elsewhere, export to llama.cpp's GGUF-LoRA, checks against
//! a base model, and [`resolve_adapter`] for inference.
//!
//! # Layout of one version
//!
//! ```text
//! adapters/support-tone/v3/
//!   adapter_config.json        PEFT: peft_type LORA, r, lora_alpha, lora_dropout, target_modules
//!                               (q_proj … down_proj), base_model_name_or_path, task_type CAUSAL_LM
//!   adapter_model.safetensors  PEFT names: base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight
//!                               [r, in] and …lora_B.weight [out, r], float32
//!   trident.json               base model sha256/architecture, dataset hash, hyper-parameters,
//!                               held-out metrics, training statistics
//!   loss.csv, loss.svg         loss curves (trained adapters)
//!   adapter.gguf               GGUF-LoRA export, made on first use at inference (a cache)
//! ```
//!
//! Versions are immutable: a new training or import of the same name becomes `v(N+1)`. Every
//! version is written into a temporary sibling directory and renamed into place, so a reader
//! never sees a half-written version. Tensors are stored as float32 exactly as trained, so
//! save → load round-trips bit-exactly.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use trident_gguf::{GgmlType, LoraAdapterSpec, LoraTensorPair};
use trident_gguf::GgufInfo;
use trident_nn::LoraTarget;

use crate::{LoraError, Result};

/// File name of the PEFT configuration.
pub const CONFIG_FILE: &str = "adapter_config.json";
/// File name of the PEFT tensors.
pub const TENSORS_FILE: &str = "adapter_model.safetensors";
/// File name of Trident's metadata.
pub const META_FILE: &str = "trident.json";
/// File name of the cached GGUF-LoRA export inside a version directory.
pub const GGUF_FILE: &str = "adapter.gguf";

/// `target_modules` of a PEFT config: a list of module names (or, in PEFT, a regex string,
/// which Trident does not support).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    /// Module names such as `q_proj`.
    List(Vec<String>),
    /// A regular expression (PEFT feature; rejected on import).
    Regex(String),
}

/// PEFT's `adapter_config.json` (the fields Trident reads and writes; others are kept).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeftConfig {
    /// Always `LORA`.
    pub peft_type: String,
    /// Always `CAUSAL_LM` for Trident's adapters.
    #[serde(default)]
    pub task_type: Option<String>,
    /// Rank `r`.
    pub r: usize,
    /// `lora_alpha`; the update is scaled by `alpha / r`.
    pub lora_alpha: f64,
    /// Dropout used in training.
    #[serde(default)]
    pub lora_dropout: f64,
    /// Adapted modules (`q_proj` … `down_proj`).
    pub target_modules: TargetModules,
    /// The base model (Trident writes the GGUF file name; PEFT writes an HF repo id).
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    /// `none` (Trident trains no biases).
    #[serde(default = "default_bias")]
    pub bias: String,
    /// Whether the layer stores weights transposed (`false` for Llama-style models).
    #[serde(default)]
    pub fan_in_fan_out: bool,
    /// rsLoRA scaling (`alpha / √r`); not supported by llama.cpp's GGUF-LoRA, so rejected.
    #[serde(default)]
    pub use_rslora: bool,
    /// Per-module rank overrides (rejected when non-empty).
    #[serde(default)]
    pub rank_pattern: serde_json::Map<String, serde_json::Value>,
    /// Per-module alpha overrides (rejected when non-empty).
    #[serde(default)]
    pub alpha_pattern: serde_json::Map<String, serde_json::Value>,
    /// Inference mode flag, as PEFT writes it.
    #[serde(default)]
    pub inference_mode: bool,
    /// Every other field, preserved as read.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn default_bias() -> String {
    "none".into()
}

impl PeftConfig {
    /// A config for Trident's own adapter.
    pub fn new(r: usize, alpha: f64, dropout: f64, targets: &[LoraTarget], base: &str) -> Self {
        Self {
            peft_type: "LORA".into(),
            task_type: Some("CAUSAL_LM".into()),
            r,
            lora_alpha: alpha,
            lora_dropout: dropout,
            target_modules: TargetModules::List(targets.iter().map(|t| hf_module(*t).to_string()).collect()),
            base_model_name_or_path: Some(base.to_string()),
            bias: "none".into(),
            fan_in_fan_out: false,
            use_rslora: false,
            rank_pattern: Default::default(),
            alpha_pattern: Default::default(),
            inference_mode: true,
            extra: Default::default(),
        }
    }

    /// The targets named by `target_modules`.
    ///
    /// # Errors
    /// A regex or an unknown module name.
    pub fn targets(&self) -> std::result::Result<Vec<LoraTarget>, String> {
        match &self.target_modules {
            TargetModules::Regex(r) => Err(format!("target_modules is a regular expression ({r:?}); give a list of module names")),
            TargetModules::List(l) => {
                let mut v = Vec::new();
                for m in l {
                    // PEFT may write full paths ("model.layers.0.self_attn.q_proj"): the last part names it.
                    let last = m.rsplit('.').next().unwrap_or(m);
                    v.push(LoraTarget::parse(last).map_err(|e| e.to_string())?);
                }
                v.sort();
                v.dedup();
                Ok(v)
            }
        }
    }
}

/// The HF module name of a target (`q_proj` …).
pub fn hf_module(t: LoraTarget) -> &'static str {
    t.peft_module().rsplit('.').next().unwrap_or("")
}

/// The base model an adapter was made for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseRef {
    /// The GGUF file it was trained/imported against (informational).
    pub path: String,
    /// SHA-256 of that file: using the adapter with a different file is refused.
    pub sha256: String,
    /// `general.architecture`.
    pub architecture: String,
}

/// The dataset an adapter was trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetRef {
    /// Training file.
    pub path: String,
    /// Its SHA-256.
    pub sha256: String,
    /// Samples trained on.
    pub samples: usize,
    /// Samples skipped (longer than `max_len`).
    pub skipped: usize,
    /// Held-out file, when given.
    pub heldout_path: Option<String>,
    /// Its SHA-256.
    pub heldout_sha256: Option<String>,
}

/// Held-out metrics recorded with an adapter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldoutMetrics {
    /// Mean next-token cross-entropy over the answer tokens (nats).
    pub loss: f64,
    /// `exp(loss)`.
    pub perplexity: f64,
    /// Held-out loss of the base model (adapter off) on the same tokens.
    pub base_loss: Option<f64>,
    /// Answer tokens scored.
    pub tokens: usize,
    /// Samples scored.
    pub samples: usize,
}

/// Training statistics recorded with an adapter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingStats {
    /// Optimizer steps done.
    pub steps: usize,
    /// Planned steps.
    pub planned_steps: usize,
    /// Tokens fed to the model (without padding).
    pub tokens: u64,
    /// Wall-clock training time (seconds, over all resumed runs).
    pub seconds: f64,
    /// Mean tokens per second.
    pub tokens_per_s: f64,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// The step whose weights were kept (the best held-out loss, or the last step).
    pub kept_step: usize,
    /// How many times the run was resumed from a checkpoint.
    pub resumed: usize,
}

/// Trident's metadata of an adapter version (`trident.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TridentMeta {
    /// Format version of this file.
    pub format: u32,
    /// Adapter name.
    pub name: String,
    /// Version number (the `N` of `vN`).
    pub version: u32,
    /// When it was stored (RFC 3339).
    pub created: String,
    /// `trained` or `imported`.
    pub source: String,
    /// The base model.
    pub base: BaseRef,
    /// The training data, for trained adapters.
    pub dataset: Option<DatasetRef>,
    /// Training hyper-parameters (as given to the trainer).
    pub hyper: Option<serde_json::Value>,
    /// Held-out metrics at the kept weights.
    pub heldout: Option<HeldoutMetrics>,
    /// Training statistics.
    pub training: Option<TrainingStats>,
    /// Where an imported adapter came from.
    pub imported_from: Option<String>,
    /// Trident version that wrote it.
    pub tool_version: String,
}

/// One LoRA matrix: row-major float32.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraMatrix {
    /// `[rows, cols]`: `[r, in]` for A, `[out, r]` for B.
    pub shape: [usize; 2],
    /// Row-major values.
    pub data: Vec<f32>,
}

/// A whole adapter in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Adapter {
    /// PEFT configuration.
    pub config: PeftConfig,
    /// Trident metadata.
    pub meta: TridentMeta,
    /// Tensors by PEFT name.
    pub tensors: BTreeMap<String, LoraMatrix>,
}

/// Which half of a LoRA pair a tensor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    /// `lora_A` (`[r, in]`).
    A,
    /// `lora_B` (`[out, r]`).
    B,
}

/// Parses a PEFT tensor name into (layer, target, half). Accepts the adapter-name infix PEFT
/// writes in memory (`lora_A.default.weight`) and names without the `base_model.model.` prefix.
pub fn parse_peft_name(name: &str) -> Option<(usize, LoraTarget, Half)> {
    let rest = name.strip_prefix("base_model.model.").unwrap_or(name);
    let rest = rest.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (group, rest) = rest.split_once('.')?;
    let (module, rest) = rest.split_once('.')?;
    let target = LoraTarget::parse(module).ok()?;
    // `mlp.q_proj` or `self_attn.up_proj` are not modules of a Llama-style layer.
    if target.peft_module() != format!("{group}.{module}") {
        return None;
    }
    let (half, rest) = if let Some(r) = rest.strip_prefix("lora_A.") {
        (Half::A, r)
    } else if let Some(r) = rest.strip_prefix("lora_B.") {
        (Half::B, r)
    } else {
        return None;
    };
    match rest {
        "weight" | "default.weight" => Some((layer, target, half)),
        _ => None,
    }
}

/// SHA-256 of a file, hex.
///
/// # Errors
/// [`LoraError::Read`].
pub fn file_sha256(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|source| LoraError::Read { path: path.to_path_buf(), source })?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|source| LoraError::Read { path: path.to_path_buf(), source })?;
    Ok(hex::encode(h.finalize()))
}

/// SHA-256 of a (large, rarely changing) model file, cached in `cache_file` by path, size and
/// modification time so that using an adapter does not re-hash a 400 MB base every time.
///
/// # Errors
/// [`LoraError::Read`] when the file cannot be read. A broken cache is ignored.
pub fn file_sha256_cached(path: &Path, cache_file: &Path) -> Result<String> {
    let md = std::fs::metadata(path).map_err(|source| LoraError::Read { path: path.to_path_buf(), source })?;
    let mtime = md.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_nanos()).unwrap_or(0);
    let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let key = format!("{}|{}|{}", canon.display(), md.len(), mtime);
    let mut cache: BTreeMap<String, String> =
        std::fs::read(cache_file).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    if let Some(h) = cache.get(&key) {
        return Ok(h.clone());
    }
    let h = file_sha256(path)?;
    cache.insert(key, h.clone());
    if let Ok(bytes) = serde_json::to_vec_pretty(&cache) {
        // A cache: failing to write it only costs a re-hash next time.
        let _ = write_atomic(cache_file, &bytes);
    }
    Ok(h)
}

/// Writes `bytes` to `path` through a temporary sibling and a rename (never half-written).
///
/// # Errors
/// [`LoraError::Write`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let werr = |source| LoraError::Write { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(werr)?;
    }
    let tmp = tmp_sibling(path);
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.map_err(werr)
}

/// A unique temporary name next to `path` (dot-prefixed, so listings skip it).
pub(crate) fn tmp_sibling(path: &Path) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let file = path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{file}.tmp-{}-{n}", std::process::id()))
}

fn bad(path: &Path, reason: impl Into<String>) -> LoraError {
    LoraError::BadAdapter { path: path.to_path_buf(), reason: reason.into() }
}

impl Adapter {
    /// The LoRA rank.
    pub fn rank(&self) -> usize {
        self.config.r
    }

    /// The adapted (layer, target) pairs, in canonical order.
    pub fn modules(&self) -> Vec<(usize, LoraTarget)> {
        let mut v: Vec<(usize, LoraTarget)> =
            self.tensors.keys().filter_map(|n| parse_peft_name(n)).filter(|(_, _, h)| *h == Half::A).map(|(l, t, _)| (l, t)).collect();
        v.sort();
        v
    }

    /// The safetensors bytes of the tensors (float32, PEFT names).
    ///
    /// # Errors
    /// [`LoraError::BadAdapter`] when serialisation fails.
    pub fn safetensors_bytes(&self) -> Result<Vec<u8>> {
        let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = self
            .tensors
            .iter()
            .map(|(n, m)| (n.clone(), m.data.iter().flat_map(|v| v.to_le_bytes()).collect(), m.shape.to_vec()))
            .collect();
        let views = bytes
            .iter()
            .map(|(n, b, s)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).map(|v| (n.clone(), v))
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| bad(Path::new(TENSORS_FILE), e.to_string()))?;
        let mut info = HashMap::new();
        info.insert("format".to_string(), "pt".to_string());
        safetensors::serialize(views, Some(info)).map_err(|e| bad(Path::new(TENSORS_FILE), e.to_string()))
    }

    /// Writes the adapter into the new directory `dir` (which must not exist): everything is
    /// written into a temporary sibling and renamed into place at the end.
    ///
    /// # Errors
    /// [`LoraError::OutDir`] when `dir` exists; [`LoraError::Write`].
    pub fn write_dir(&self, dir: &Path, extra_files: &[(&str, Vec<u8>)]) -> Result<()> {
        if dir.exists() {
            return Err(LoraError::OutDir { path: dir.to_path_buf(), reason: "already exists (versions are immutable)".into() });
        }
        let parent = dir.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|source| LoraError::Write { path: parent.to_path_buf(), source })?;
        let tmp = tmp_sibling(dir);
        let res = (|| -> Result<()> {
            std::fs::create_dir(&tmp).map_err(|source| LoraError::Write { path: tmp.clone(), source })?;
            let ser = |what: &'static str, v: &dyn erased::Ser| v.to_json().map_err(|source| LoraError::Serialize { what, source });
            let files: Vec<(&str, Vec<u8>)> = vec![
                (CONFIG_FILE, ser("adapter_config.json", &self.config)?),
                (META_FILE, ser("trident.json", &self.meta)?),
                (TENSORS_FILE, self.safetensors_bytes()?),
            ];
            for (name, bytes) in files.iter().map(|(n, b)| (*n, b)).chain(extra_files.iter().map(|(n, b)| (*n, b))) {
                let p = tmp.join(name);
                let mut f = std::fs::File::create(&p).map_err(|source| LoraError::Write { path: p.clone(), source })?;
                f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|source| LoraError::Write { path: p.clone(), source })?;
            }
            std::fs::rename(&tmp, dir).map_err(|source| LoraError::Write { path: dir.to_path_buf(), source })
        })();
        if res.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        res
    }

    /// Reads an adapter directory (Trident's or a plain PEFT one: `trident.json` is optional
    /// here, `meta` then gets placeholders) and validates it: config fields, every tensor a
    /// known PEFT LoRA name, float32/16/bf16 2-D, complete A/B pairs of rank `r`, targets as
    /// configured.
    ///
    /// # Errors
    /// [`LoraError::BadAdapter`] naming the file, tensor or field.
    pub fn read_dir(dir: &Path) -> Result<Adapter> {
        if !dir.is_dir() {
            return Err(bad(dir, "not a directory"));
        }
        let cfg_path = dir.join(CONFIG_FILE);
        let cfg_bytes = std::fs::read(&cfg_path).map_err(|e| bad(&cfg_path, format!("cannot read: {e}")))?;
        let config: PeftConfig = serde_json::from_slice(&cfg_bytes).map_err(|e| bad(&cfg_path, format!("invalid: {e}")))?;
        if !config.peft_type.eq_ignore_ascii_case("LORA") {
            return Err(bad(&cfg_path, format!("peft_type is {:?}, only LORA is supported", config.peft_type)));
        }
        if config.r == 0 {
            return Err(bad(&cfg_path, "r is 0"));
        }
        if !(config.lora_alpha.is_finite() && config.lora_alpha > 0.0) {
            return Err(bad(&cfg_path, format!("lora_alpha {} is not a positive number", config.lora_alpha)));
        }
        if config.use_rslora {
            return Err(bad(&cfg_path, "use_rslora is not supported (llama.cpp scales by alpha / r)"));
        }
        if !config.rank_pattern.is_empty() || !config.alpha_pattern.is_empty() {
            return Err(bad(&cfg_path, "rank_pattern/alpha_pattern are not supported (one rank and alpha for all modules)"));
        }
        if config.bias != "none" {
            return Err(bad(&cfg_path, format!("bias {:?} is not supported (only \"none\")", config.bias)));
        }
        if config.fan_in_fan_out {
            return Err(bad(&cfg_path, "fan_in_fan_out is not supported (Llama-style models use false)"));
        }
        let targets = config.targets().map_err(|r| bad(&cfg_path, format!("target_modules: {r}")))?;

        let meta_path = dir.join(META_FILE);
        let meta = match std::fs::read(&meta_path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| bad(&meta_path, format!("invalid: {e}")))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => TridentMeta {
                format: 1,
                name: String::new(),
                version: 0,
                created: String::new(),
                source: "imported".into(),
                base: BaseRef { path: config.base_model_name_or_path.clone().unwrap_or_default(), sha256: String::new(), architecture: String::new() },
                dataset: None,
                hyper: None,
                heldout: None,
                training: None,
                imported_from: Some(dir.display().to_string()),
                tool_version: env!("CARGO_PKG_VERSION").into(),
            },
            Err(e) => return Err(bad(&meta_path, format!("cannot read: {e}"))),
        };

        let t_path = dir.join(TENSORS_FILE);
        let bytes = std::fs::read(&t_path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound && dir.join("adapter_model.bin").exists() {
                bad(&t_path, "missing; adapter_model.bin (pickle) is not supported, save with safe_serialization=True")
            } else {
                bad(&t_path, format!("cannot read: {e}"))
            }
        })?;
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(&t_path, format!("invalid or truncated safetensors: {e}")))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let Some((_, target, half)) = parse_peft_name(&name) else {
                return Err(bad(&t_path, format!("tensor {name:?} is not a PEFT LoRA tensor of a decoder layer projection")));
            };
            if !targets.contains(&target) {
                return Err(bad(&t_path, format!("tensor {name:?} adapts {} which target_modules does not list", hf_module(target))));
            }
            let shape: [usize; 2] = match view.shape() {
                [a, b] => [*a, *b],
                s => return Err(bad(&t_path, format!("tensor {name:?} has shape {s:?}, expected 2 dims"))),
            };
            let r_dim = if half == Half::A { shape[0] } else { shape[1] };
            if r_dim != config.r {
                return Err(bad(&t_path, format!("tensor {name:?} has shape {shape:?}: rank {r_dim}, config says r = {}", config.r)));
            }
            let raw = view.data();
            let data: Vec<f32> = match view.dtype() {
                safetensors::Dtype::F32 => raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
                safetensors::Dtype::F16 => raw.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
                safetensors::Dtype::BF16 => raw.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
                d => return Err(bad(&t_path, format!("tensor {name:?} has dtype {d:?}; expected F32, F16 or BF16"))),
            };
            if data.len() != shape[0] * shape[1] {
                return Err(bad(&t_path, format!("tensor {name:?}: {} values for shape {shape:?}", data.len())));
            }
            if let Some(i) = data.iter().position(|v| !v.is_finite()) {
                return Err(bad(&t_path, format!("tensor {name:?} holds a non-finite value at index {i}")));
            }
            // Normalise PEFT's in-memory `.default.` infix to the saved form.
            let canon = name.replace(".default.weight", ".weight");
            let canon = if canon.starts_with("base_model.model.") { canon } else { format!("base_model.model.{canon}") };
            tensors.insert(canon, LoraMatrix { shape, data });
        }
        if tensors.is_empty() {
            return Err(bad(&t_path, "holds no LoRA tensors"));
        }
        let a = Adapter { config, meta, tensors };
        for (layer, t) in a.modules() {
            let nb = trident_nn::peft_name(layer, t, "B");
            if !a.tensors.contains_key(&nb) {
                return Err(bad(&t_path, format!("{} has lora_A but no lora_B", trident_nn::peft_name(layer, t, "A"))));
            }
        }
        for name in a.tensors.keys() {
            if let Some((l, t, Half::B)) = parse_peft_name(name) {
                if !a.tensors.contains_key(&trident_nn::peft_name(l, t, "A")) {
                    return Err(bad(&t_path, format!("{name} has no lora_A")));
                }
            }
        }
        Ok(a)
    }

    /// Checks that this adapter fits the base model `base` (inspected as `info`, with SHA-256
    /// `base_sha256`): same file hash when one is recorded, same architecture, and every
    /// adapted projection exists with `A: [r, in]`, `B: [out, r]` matching the base weight.
    ///
    /// # Errors
    /// [`LoraError::WrongBase`] naming the failed check.
    pub fn check_base(&self, label: &str, base: &Path, info: &GgufInfo, base_sha256: &str) -> Result<()> {
        let wrong = |reason: String| LoraError::WrongBase { adapter: label.to_string(), base: base.to_path_buf(), reason };
        if !self.meta.base.architecture.is_empty() && self.meta.base.architecture != info.architecture {
            return Err(wrong(format!(
                "made for architecture {}, the base is {}",
                self.meta.base.architecture, info.architecture
            )));
        }
        // Shapes first: a shape mismatch says more than a hash mismatch.
        self.check_shapes(info).map_err(wrong)?;
        if !self.meta.base.sha256.is_empty() && self.meta.base.sha256 != base_sha256 {
            return Err(wrong(format!(
                "made for the model file with SHA-256 {} ({}), this file's is {}",
                self.meta.base.sha256, self.meta.base.path, base_sha256
            )));
        }
        Ok(())
    }

    /// The shape part of [`Self::check_base`].
    fn check_shapes(&self, info: &GgufInfo) -> std::result::Result<(), String> {
        for (name, m) in &self.tensors {
            let Some((layer, t, half)) = parse_peft_name(name) else { continue };
            let wname = format!("blk.{layer}.{}.weight", t.gguf_stem());
            let w = info.tensor(&wname).ok_or_else(|| format!("{name}: the base has no tensor {wname} (it has fewer layers?)"))?;
            // GGUF dims are [in, out].
            let (inf, outf) = (w.shape.first().copied().unwrap_or(0) as usize, w.shape.get(1).copied().unwrap_or(1) as usize);
            let want = match half {
                Half::A => [self.config.r, inf],
                Half::B => [outf, self.config.r],
            };
            if m.shape != want {
                return Err(format!("{name} has shape {:?}, the base's {wname} needs {want:?}", m.shape));
            }
        }
        Ok(())
    }

    /// The llama.cpp GGUF-LoRA form of this adapter for a base of architecture `arch`.
    pub fn gguf_spec(&self, arch: &str) -> LoraAdapterSpec {
        let tensors = self
            .modules()
            .into_iter()
            .map(|(layer, t)| {
                let a = &self.tensors[&trident_nn::peft_name(layer, t, "A")];
                let b = &self.tensors[&trident_nn::peft_name(layer, t, "B")];
                LoraTensorPair {
                    base: format!("blk.{layer}.{}.weight", t.gguf_stem()),
                    rank: a.shape[0],
                    in_features: a.shape[1],
                    out_features: b.shape[0],
                    a: a.data.clone(),
                    b: b.data.clone(),
                }
            })
            .collect();
        LoraAdapterSpec {
            architecture: arch.to_string(),
            alpha: self.config.lora_alpha as f32,
            name: (!self.meta.name.is_empty()).then(|| format!("{}@v{}", self.meta.name, self.meta.version)),
            dtype: GgmlType::F32,
            tensors,
        }
    }

    /// Writes the GGUF-LoRA export to `out` atomically and checks it against the base the way
    /// llama.cpp will.
    ///
    /// # Errors
    /// [`LoraError::Gguf`] (write or fit check), [`LoraError::Write`].
    pub fn export_gguf(&self, base_info: &GgufInfo, out: &Path) -> Result<()> {
        let tmp = tmp_sibling(out);
        if let Some(d) = out.parent() {
            std::fs::create_dir_all(d).map_err(|source| LoraError::Write { path: d.to_path_buf(), source })?;
        }
        let res = (|| -> Result<()> {
            trident_gguf::write_lora_adapter(&tmp, &self.gguf_spec(&base_info.architecture))?;
            trident_gguf::inspect_adapter_against(&tmp, base_info)?;
            std::fs::rename(&tmp, out).map_err(|source| LoraError::Write { path: out.to_path_buf(), source })
        })();
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        res
    }

    /// The tensors as candle tensors keyed by PEFT name (for [`trident_nn::CausalLm::load_lora`]).
    ///
    /// # Errors
    /// [`LoraError::Tensor`].
    pub fn to_tensors(&self) -> Result<HashMap<String, candle_core::Tensor>> {
        let mut out = HashMap::new();
        for (n, m) in &self.tensors {
            out.insert(n.clone(), candle_core::Tensor::from_slice(&m.data, (m.shape[0], m.shape[1]), &candle_core::Device::Cpu)?);
        }
        Ok(out)
    }
}

/// JSON serialisation of the two metadata types without generic plumbing.
mod erased {
    pub trait Ser {
        fn to_json(&self) -> serde_json::Result<Vec<u8>>;
    }
    impl<T: serde::Serialize> Ser for T {
        fn to_json(&self) -> serde_json::Result<Vec<u8>> {
            let mut v = serde_json::to_vec_pretty(self)?;
            v.push(b'\n');
            Ok(v)
        }
    }
}

/// `NAME[@VERSION][:SCALE]` as given to `--adapter` and `trident lora show|rm|eval|export`.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterSpec {
    /// Adapter name (or a path to a GGUF-LoRA file / a PEFT directory).
    pub name: String,
    /// Version (`None`: the latest).
    pub version: Option<u32>,
    /// Scale (`None`: 1.0).
    pub scale: Option<f32>,
}

impl AdapterSpec {
    /// Parses `support-tone`, `support-tone@3`, `support-tone@v3:0.5`, `support-tone:0.5`.
    ///
    /// # Errors
    /// [`LoraError::BadOption`] for an empty name or a bad version/scale.
    pub fn parse(spec: &str) -> Result<Self> {
        let badopt = |reason: String| LoraError::BadOption { option: "adapter".into(), reason };
        let (rest, scale) = match spec.rsplit_once(':') {
            Some((r, s)) if !r.is_empty() && !s.contains('/') && !s.contains('\\') => {
                let v: f32 = s.parse().map_err(|_| badopt(format!("{spec:?}: scale {s:?} is not a number")))?;
                if !v.is_finite() {
                    return Err(badopt(format!("{spec:?}: scale must be finite")));
                }
                (r, Some(v))
            }
            _ => (spec, None),
        };
        let (name, version) = match rest.rsplit_once('@') {
            Some((n, v)) => {
                let num = v.strip_prefix('v').unwrap_or(v);
                let ver: u32 = num.parse().map_err(|_| badopt(format!("{spec:?}: version {v:?} is not a number")))?;
                if ver == 0 {
                    return Err(badopt(format!("{spec:?}: versions start at 1")));
                }
                (n, Some(ver))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(badopt(format!("{spec:?}: empty adapter name")));
        }
        Ok(Self { name: name.to_string(), version, scale })
    }
}

/// Checks an adapter name: letters, digits, `.`, `_`, `-`, not starting with `.`, ≤ 64 chars.
///
/// # Errors
/// [`LoraError::BadOption`].
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(LoraError::BadOption {
            option: "name".into(),
            reason: format!("{name:?}: use letters, digits, '.', '_', '-' (at most 64, not starting with '.')"),
        })
    }
}

/// One stored adapter version.
#[derive(Debug, Clone, Serialize)]
pub struct StoredVersion {
    /// Adapter name.
    pub name: String,
    /// Version number.
    pub version: u32,
    /// Its directory.
    pub dir: PathBuf,
    /// Its metadata (`None` when `trident.json` cannot be read).
    pub meta: Option<TridentMeta>,
    /// Size of `adapter_model.safetensors` in bytes.
    pub size_bytes: u64,
}

/// The adapter store: `$TRIDENT_HOME/adapters/`.
#[derive(Debug, Clone)]
pub struct AdapterStore {
    root: PathBuf,
}

impl AdapterStore {
    /// The store under a Trident home directory.
    pub fn new(home: &Path) -> Self {
        Self { root: home.join("adapters") }
    }

    /// `$TRIDENT_HOME/adapters`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where model-file hashes are cached.
    pub fn hash_cache(&self) -> PathBuf {
        self.root.join(".sha256-cache.json")
    }

    /// The directory of a training run's checkpoints for `name`.
    pub fn run_dir(&self, name: &str) -> PathBuf {
        self.root.join(name).join(".train")
    }

    /// The versions of `name`, ascending.
    ///
    /// # Errors
    /// [`LoraError::Read`] when the directory cannot be listed.
    pub fn versions(&self, name: &str) -> Result<Vec<u32>> {
        let dir = self.root.join(name);
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(LoraError::Read { path: dir, source }),
        };
        let mut v: Vec<u32> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join(CONFIG_FILE).exists())
            .filter_map(|e| e.file_name().to_str().and_then(|s| s.strip_prefix('v')).and_then(|n| n.parse().ok()))
            .collect();
        v.sort();
        Ok(v)
    }

    /// Every stored version of every adapter, by name then version.
    ///
    /// # Errors
    /// [`LoraError::Read`].
    pub fn list(&self) -> Result<Vec<StoredVersion>> {
        let mut out = Vec::new();
        let rd = match std::fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(source) => return Err(LoraError::Read { path: self.root.clone(), source }),
        };
        let mut names: Vec<String> =
            rd.filter_map(|e| e.ok()).filter(|e| e.path().is_dir()).filter_map(|e| e.file_name().to_str().map(String::from)).filter(|n| !n.starts_with('.')).collect();
        names.sort();
        for name in names {
            for v in self.versions(&name)? {
                out.push(self.stored(&name, v));
            }
        }
        Ok(out)
    }

    fn stored(&self, name: &str, version: u32) -> StoredVersion {
        let dir = self.root.join(name).join(format!("v{version}"));
        let meta = std::fs::read(dir.join(META_FILE)).ok().and_then(|b| serde_json::from_slice(&b).ok());
        let size_bytes = std::fs::metadata(dir.join(TENSORS_FILE)).map(|m| m.len()).unwrap_or(0);
        StoredVersion { name: name.to_string(), version, dir, meta, size_bytes }
    }

    fn known(&self) -> String {
        let l = self.list().unwrap_or_default();
        if l.is_empty() {
            "none".into()
        } else {
            l.iter().map(|s| format!("{}@{}", s.name, s.version)).collect::<Vec<_>>().join(", ")
        }
    }

    /// The stored version a spec names (the latest when no version is given).
    ///
    /// # Errors
    /// [`LoraError::UnknownAdapter`].
    pub fn find(&self, spec: &AdapterSpec) -> Result<StoredVersion> {
        validate_name(&spec.name).map_err(|_| LoraError::UnknownAdapter { spec: spec.name.clone(), known: self.known() })?;
        let versions = self.versions(&spec.name)?;
        let v = match spec.version {
            Some(v) if versions.contains(&v) => v,
            None if !versions.is_empty() => *versions.last().expect("non-empty"),
            _ => {
                let s = match spec.version {
                    Some(v) => format!("{}@{v}", spec.name),
                    None => spec.name.clone(),
                };
                return Err(LoraError::UnknownAdapter { spec: s, known: self.known() });
            }
        };
        Ok(self.stored(&spec.name, v))
    }

    /// Stores `adapter` as the next version of `name` (setting its name, version and creation
    /// time) with optional extra files (loss curves). Returns the stored version.
    ///
    /// # Errors
    /// Bad name, write failures.
    pub fn save(&self, name: &str, adapter: &mut Adapter, extra_files: &[(&str, Vec<u8>)]) -> Result<StoredVersion> {
        validate_name(name)?;
        let next = self.versions(name)?.last().copied().unwrap_or(0) + 1;
        adapter.meta.name = name.to_string();
        adapter.meta.version = next;
        adapter.meta.created = chrono::Utc::now().to_rfc3339();
        adapter.write_dir(&self.root.join(name).join(format!("v{next}")), extra_files)?;
        Ok(self.stored(name, next))
    }

    /// Removes one version, or every version (and any training checkpoint) of `name`.
    /// Returns the removed versions.
    ///
    /// # Errors
    /// [`LoraError::UnknownAdapter`], [`LoraError::Write`].
    pub fn remove(&self, name: &str, version: Option<u32>) -> Result<Vec<u32>> {
        let versions = self.versions(name)?;
        let gone: Vec<u32> = match version {
            Some(v) => {
                if !versions.contains(&v) {
                    return Err(LoraError::UnknownAdapter { spec: format!("{name}@{v}"), known: self.known() });
                }
                vec![v]
            }
            None => {
                if versions.is_empty() && !self.run_dir(name).exists() {
                    return Err(LoraError::UnknownAdapter { spec: name.into(), known: self.known() });
                }
                versions
            }
        };
        for v in &gone {
            let dir = self.root.join(name).join(format!("v{v}"));
            // Rename first so a concurrent reader never sees a half-deleted version.
            let tmp = tmp_sibling(&dir);
            std::fs::rename(&dir, &tmp).map_err(|source| LoraError::Write { path: dir.clone(), source })?;
            std::fs::remove_dir_all(&tmp).map_err(|source| LoraError::Write { path: tmp.clone(), source })?;
        }
        if version.is_none() {
            let d = self.root.join(name);
            std::fs::remove_dir_all(&d).map_err(|source| LoraError::Write { path: d, source })?;
        }
        Ok(gone)
    }

    /// Imports a PEFT adapter directory trained elsewhere for the base model `base`: validates
    /// it, checks its shapes against the base, records the base's hash and stores it as the
    /// next version of `name`.
    ///
    /// # Errors
    /// [`LoraError::BadAdapter`], [`LoraError::WrongBase`], write failures. Nothing is stored
    /// on error.
    pub fn import(&self, dir: &Path, name: &str, base: &Path) -> Result<StoredVersion> {
        validate_name(name)?;
        let mut a = Adapter::read_dir(dir)?;
        let info = trident_gguf::inspect(base)?;
        let sha = file_sha256_cached(base, &self.hash_cache())?;
        // A foreign PEFT adapter records an HF repo id, not our file: check shapes only.
        a.meta.base.sha256.clear();
        a.meta.base.architecture.clear();
        a.check_base(&dir.display().to_string(), base, &info, &sha)?;
        a.meta.base = BaseRef { path: base.display().to_string(), sha256: sha, architecture: info.architecture.clone() };
        a.meta.source = "imported".into();
        a.meta.imported_from = Some(dir.display().to_string());
        a.meta.tool_version = env!("CARGO_PKG_VERSION").into();
        a.config.base_model_name_or_path =
            Some(a.config.base_model_name_or_path.clone().unwrap_or_else(|| base.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()));
        self.save(name, &mut a, &[])
    }
}

/// Exports a stored version to GGUF-LoRA at `out` after checking it against `base`.
///
/// # Errors
/// As [`Adapter::check_base`] and [`Adapter::export_gguf`].
pub fn export_version(store: &AdapterStore, found: &StoredVersion, base: &Path, out: &Path) -> Result<()> {
    let a = Adapter::read_dir(&found.dir)?;
    let info = trident_gguf::inspect(base)?;
    let sha = file_sha256_cached(base, &store.hash_cache())?;
    a.check_base(&format!("{}@{}", found.name, found.version), base, &info, &sha)?;
    a.export_gguf(&info, out)
}

/// An adapter ready for the engine: load `gguf` under `key` with
/// [`trident_engine::Backend::load_adapter`] (unless already loaded) and pass
/// `AdapterRef::new(key, scale)` per request.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedAdapter {
    /// The name to load it under (`name@vN`, or the file path for a raw GGUF-LoRA file).
    pub key: String,
    /// The GGUF-LoRA file.
    pub gguf: PathBuf,
    /// The scale to apply (1.0 unless the spec gives one).
    pub scale: f32,
    /// The stored version's directory (`None` for a raw GGUF-LoRA file).
    pub dir: Option<PathBuf>,
}

/// Resolves `--adapter NAME[@VERSION][:SCALE]` (or a path to a GGUF-LoRA file) for the base
/// model file `base`: finds the stored version, checks that it was made for this base (file
/// hash, architecture, tensor shapes), and exports its GGUF-LoRA form next to the PEFT files
/// on first use (`vN/adapter.gguf`, a cache reused afterwards).
///
/// # Errors
/// [`LoraError::UnknownAdapter`], [`LoraError::WrongBase`], [`LoraError::BadAdapter`],
/// [`LoraError::BadOption`] for a malformed spec.
pub fn resolve_adapter(home: &Path, spec: &str, base: &Path) -> Result<ResolvedAdapter> {
    let parsed = AdapterSpec::parse(spec)?;
    let as_path = Path::new(&parsed.name);
    if parsed.name.ends_with(".gguf") || parsed.name.contains('/') {
        if !as_path.is_file() {
            return Err(LoraError::BadOption { option: "adapter".into(), reason: format!("adapter file not found: {}", parsed.name) });
        }
        // A raw GGUF-LoRA file: the engine checks it against the base when loading it.
        return Ok(ResolvedAdapter { key: parsed.name.clone(), gguf: as_path.to_path_buf(), scale: parsed.scale.unwrap_or(1.0), dir: None });
    }
    let store = AdapterStore::new(home);
    let found = store.find(&parsed)?;
    let label = format!("{}@{}", found.name, found.version);
    let adapter = Adapter::read_dir(&found.dir)?;
    let info = trident_gguf::inspect(base)?;
    let sha = file_sha256_cached(base, &store.hash_cache())?;
    adapter.check_base(&label, base, &info, &sha)?;
    let gguf = found.dir.join(GGUF_FILE);
    if !gguf.is_file() {
        adapter.export_gguf(&info, &gguf)?;
    }
    Ok(ResolvedAdapter { key: label, gguf, scale: parsed.scale.unwrap_or(1.0), dir: Some(found.dir) })
}

#[cfg(test)]
mod tests;
