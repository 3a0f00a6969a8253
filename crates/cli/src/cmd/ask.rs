//! `trident ask`: answer a question from a knowledge base, with citations.

use crate::cmd::generate::{ModelArgs, load_model};
use crate::cmd::kb::{FilterArgs, KbName, open_existing};
use crate::config::Context;
use anyhow::Result;
use trident_engine::{AdapterRef, Backend, GenerateRequest, LlamaBackend};
use trident_rag::{AnswerConfig, ChatMessage, Generator, KbOptions};

/// Arguments of `trident ask`.
#[derive(Debug, clap::Args)]
pub struct AskArgs {
    /// The question.
    pub question: String,
    #[command(flatten)]
    pub kb: KbName,
    #[command(flatten)]
    pub filters: FilterArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub answering: AnswerArgs,
    /// LoRA adapter: a GGUF-LoRA file.
    #[arg(long)]
    pub adapter: Option<String>,
    /// Do not call a model: answer with the best-matching sentence of the sources (extractive).
    #[arg(long)]
    pub no_model: bool,
}

/// Answering settings shared by `ask` and `eval rag`.
#[derive(Debug, Clone, clap::Args)]
pub struct AnswerArgs {
    /// Chunks retrieved.
    #[arg(long, default_value_t = 5)]
    pub k: usize,
    /// Evidence threshold (0..1): below it the answer is "I don't know", without the model.
    #[arg(long, default_value_t = 0.5)]
    pub min_evidence: f32,
    /// Most tokens generated.
    #[arg(long, default_value_t = 200)]
    pub max_new_tokens: usize,
}

impl AnswerArgs {
    /// The answering configuration.
    pub fn config(&self) -> Result<AnswerConfig> {
        if self.k == 0 || self.k > 50 {
            return Err(crate::bad_input!("--k must be 1..=50"));
        }
        if !(0.0..=1.0).contains(&self.min_evidence) {
            return Err(crate::bad_input!("--min-evidence must be between 0 and 1"));
        }
        Ok(AnswerConfig { k: self.k, min_evidence: self.min_evidence, max_new_tokens: self.max_new_tokens.max(1), ..AnswerConfig::default() })
    }
}

/// The engine as the RAG answerer's generator (greedy, the model's own chat template).
pub struct EngineGenerator {
    backend: LlamaBackend,
    adapter: Option<AdapterRef>,
    name: String,
}

impl EngineGenerator {
    /// Loads the model (and adapter) named by the flags.
    pub fn load(model: &ModelArgs, adapter: Option<&str>, ctx: &Context) -> Result<Self> {
        let backend = load_model(model, 1, ctx)?;
        let adapter = match adapter {
            Some(a) => {
                let path = std::path::Path::new(a);
                if !path.exists() {
                    return Err(crate::bad_input!("adapter file not found: {a}"));
                }
                backend.load_adapter(a, path).map_err(crate::cmd::generate::engine_err)?;
                Some(AdapterRef::new(a, 1.0))
            }
            None => None,
        };
        let name = backend.info().name.clone().unwrap_or_else(|| backend.info().path.display().to_string());
        Ok(Self { backend, adapter, name })
    }
}

impl Generator for EngineGenerator {
    fn name(&self) -> &str {
        &self.name
    }
    fn generate(&self, messages: &[ChatMessage], max_new_tokens: usize) -> trident_rag::Result<String> {
        let msgs = messages.iter().map(|m| trident_engine::ChatMessage::new(m.role.clone(), m.content.clone())).collect();
        let mut req = GenerateRequest::chat(msgs).with_max_tokens(max_new_tokens);
        req.adapters = self.adapter.clone().into_iter().collect();
        let out = self.backend.generate(&req, None).map_err(|e| trident_rag::RagError::Generate(e.to_string()))?;
        Ok(out.text)
    }
}

/// Runs `trident ask`.
pub fn run(args: AskArgs, ctx: &Context) -> Result<()> {
    if args.question.trim().is_empty() {
        return Err(crate::bad_input!("the question is empty"));
    }
    let cfg = args.answering.config()?;
    let kb = open_existing(ctx, &args.kb.kb, KbOptions::default())?;
    let req = args.filters.request(&args.question, cfg.k)?;
    let generator = if args.no_model { None } else { Some(EngineGenerator::load(&args.model, args.adapter.as_deref(), ctx)?) };
    let a = trident_rag::answer::answer(&kb, &args.question, &req, generator.as_ref().map(|g| g as &dyn Generator), &cfg)?;
    if ctx.json {
        let citations: Vec<_> = a
            .citations
            .iter()
            .map(|c| {
                serde_json::json!({"source": c.source, "title": c.title, "version": c.version, "version_label": c.version_label,
                    "section": c.section, "page": c.page, "chunk_id": c.chunk_id, "score": c.score})
            })
            .collect();
        return crate::output::print_json(&serde_json::json!({
            "answer": a.answer, "citations": citations, "refused": a.refused, "reason": a.reason,
            "timings": {"retrieve_ms": a.timings.retrieve_ms, "generate_ms": a.timings.generate_ms}
        }));
    }
    println!("{}", a.answer);
    if !a.citations.is_empty() {
        println!();
        for c in &a.citations {
            let label = c.version_label.as_deref().map(|l| format!(", {l}")).unwrap_or_default();
            let section = if c.section.is_empty() { String::new() } else { format!(" § {}", c.section) };
            println!("[{}] {} (v{}{label}){section} — {}", c.n, c.title, c.version, c.source);
        }
    }
    Ok(())
}
