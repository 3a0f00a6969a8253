//! The engine as the answerer's [`Generator`]: any [`trident_engine::Backend`] (the llama.cpp
//! backend in the product), greedy decoding, the model's own chat template, an optional LoRA
//! adapter per request.

use crate::answer::{ChatMessage, Generator};
use crate::{RagError, Result};
use std::path::Path;
use trident_engine::{AdapterRef, Backend, GenerateRequest, LlamaBackend, LlamaConfig};

/// A generator over an engine backend.
pub struct EngineGenerator<B: Backend = LlamaBackend> {
    backend: B,
    adapter: Option<AdapterRef>,
    name: String,
}

/// Parses `--adapter NAME[:scale]` into the name (or path) and the scale (default 1.0).
pub fn parse_adapter_spec(spec: &str) -> Result<(String, f32)> {
    let bad = |why: &str| RagError::BadInput(format!("--adapter {spec:?}: {why} (expected NAME or PATH, optionally :SCALE)"));
    // Only a numeric suffix is a scale, so a path with a colon elsewhere stays a path.
    let (name, scale) = match spec.rsplit_once(':').map(|(n, s)| (n, s.parse::<f32>())) {
        Some((n, Ok(s))) => (n, s),
        _ => (spec, 1.0),
    };
    if name.trim().is_empty() {
        return Err(bad("empty name"));
    }
    if !scale.is_finite() || !(0.0..=4.0).contains(&scale) {
        return Err(bad("scale must be between 0 and 4"));
    }
    Ok((name.to_string(), scale))
}

impl EngineGenerator<LlamaBackend> {
    /// Loads a GGUF model with `config` (the file is validated by the engine first).
    pub fn load(model: &Path, config: &LlamaConfig) -> Result<Self> {
        let backend = LlamaBackend::load(model, config).map_err(|e| RagError::Generate(format!("{}: {e}", model.display())))?;
        Ok(Self::new(backend))
    }
}

impl<B: Backend> EngineGenerator<B> {
    /// Wraps a loaded backend.
    pub fn new(backend: B) -> Self {
        let name = backend.info().name.clone().unwrap_or_else(|| backend.info().path.display().to_string());
        Self { backend, adapter: None, name }
    }

    /// Loads a GGUF-LoRA adapter file and applies it at `scale` to every answer.
    pub fn with_adapter_file(mut self, path: &Path, scale: f32) -> Result<Self> {
        if !path.is_file() {
            return Err(RagError::BadInput(format!("adapter file not found: {}", path.display())));
        }
        let name = path.display().to_string();
        self.backend.load_adapter(&name, path).map_err(|e| RagError::BadInput(format!("adapter {}: {e}", path.display())))?;
        self.adapter = Some(AdapterRef::new(name, scale));
        Ok(self)
    }

    /// Applies an adapter already loaded into the backend (e.g. resolved from the adapter
    /// store by `trident lora`) at its scale to every answer.
    pub fn with_loaded_adapter(mut self, adapter: AdapterRef) -> Self {
        self.adapter = Some(adapter);
        self
    }

    /// The backend (for callers that also chat or score).
    pub fn backend(&self) -> &B {
        &self.backend
    }
}

impl<B: Backend> Generator for EngineGenerator<B> {
    fn name(&self) -> &str {
        &self.name
    }
    fn generate(&self, messages: &[ChatMessage], max_new_tokens: usize) -> Result<String> {
        let msgs = messages.iter().map(|m| trident_engine::ChatMessage::new(m.role.clone(), m.content.clone())).collect();
        // Chat requests default to greedy decoding: answers must be reproducible.
        let mut req = GenerateRequest::chat(msgs).with_max_tokens(max_new_tokens);
        req.adapters = self.adapter.clone().into_iter().collect();
        let out = self.backend.generate(&req, None).map_err(|e| RagError::Generate(e.to_string()))?;
        Ok(out.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adapter_specs() {
        assert_eq!(parse_adapter_spec("support").unwrap(), ("support".into(), 1.0));
        assert_eq!(parse_adapter_spec("a/b.gguf:0.5").unwrap(), ("a/b.gguf".into(), 0.5));
        assert!(parse_adapter_spec(":1").is_err());
        assert!(parse_adapter_spec("x:9").is_err());
    }
}
