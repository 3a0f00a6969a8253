//! `trident chat`: interactive, streaming chat with history (`/reset`, `/exit`). A non-tty
//! stdin is read as one conversation script: each line is a user turn.

use std::io::{BufRead, IsTerminal, Write};

use trident_engine::{Backend, ChatMessage, FinishReason, GenerateRequest};

use super::generate::{ModelArgs, SamplingArgs, engine_err, load_model, stream_to_stdout};
use crate::config::Context;

/// Arguments of `trident chat`.
#[derive(Debug, clap::Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// System prompt.
    #[arg(long, short = 's')]
    pub system: Option<String>,
}

fn fresh_history(system: &Option<String>) -> Vec<ChatMessage> {
    system.iter().map(|s| ChatMessage::system(s.clone())).collect()
}

/// Runs `trident chat`.
pub fn run(args: ChatArgs, ctx: &Context) -> anyhow::Result<()> {
    let backend = load_model(&args.model, 1, ctx)?;
    let adapter = args.sampling.adapter(&backend, ctx)?;
    let mut template_req = GenerateRequest::default();
    args.sampling.apply(&mut template_req, adapter, ctx)?;
    let interactive = std::io::stdin().is_terminal();
    if interactive && !ctx.json {
        let info = backend.info();
        eprintln!(
            "chat with {} ({}){} — /reset clears the history, /exit quits",
            info.name.as_deref().unwrap_or(&info.architecture),
            info.path.display(),
            if info.has_chat_template { "" } else { " [no chat template in the GGUF: using ChatML]" }
        );
    }
    let mut history = fresh_history(&args.system);
    let mut transcript = Vec::new();
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            eprint!("> ");
            let _ = std::io::stderr().flush();
        }
        let Some(line) = lines.next() else { break };
        let line = line?;
        let text = line.trim_end_matches('\r');
        match text.trim() {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                history = fresh_history(&args.system);
                if interactive {
                    eprintln!("(history cleared)");
                }
                continue;
            }
            _ => {}
        }
        history.push(ChatMessage::user(text));
        let mut req = template_req.clone();
        req.prompt = trident_engine::Prompt::Chat(history.clone());
        let stream = !ctx.json;
        let mut on_token = stream_to_stdout(stream);
        let g = match backend.generate(&req, Some(&mut on_token)) {
            Ok(g) => g,
            Err(e) => {
                history.pop();
                let e = engine_err(e);
                if interactive {
                    eprintln!("error: {e}");
                    continue;
                }
                return Err(e);
            }
        };
        drop(on_token);
        if stream {
            let _ = writeln!(std::io::stdout());
            if g.finish_reason == FinishReason::Length {
                eprintln!("[reply cut at {} tokens]", g.usage.completion_tokens);
            }
        }
        tracing::info!(cached = g.usage.cached_tokens, prompt = g.usage.prompt_tokens, "turn");
        history.push(ChatMessage::assistant(g.text.clone()));
        transcript.push(serde_json::json!({ "user": text, "assistant": g.text, "usage": g.usage }));
    }
    if ctx.json {
        crate::output::print_json(&serde_json::json!({ "turns": transcript }))?;
    }
    Ok(())
}
