//! `trident`: adapt a local LLM to a company's work by prompt engineering, RAG and LoRA,
//! and measure which one works.
//!
//! Exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad input.

mod cmd;
mod config;
mod error;
mod output;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Command-line options shared by every subcommand.
#[derive(Debug, Parser)]
#[command(
    name = "trident",
    version,
    about = "Adapt a local LLM by prompt engineering, RAG and LoRA, and measure which works",
    long_about = "Adapt a local LLM to your company's work by prompt engineering, RAG over your documents \
and LoRA fine-tuning, and measure the three side by side. Everything runs on your machine.\n\n\
Exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad input.\n\
Configuration: defaults < TOML file (--config or $TRIDENT_HOME/config.toml) < TRIDENT_* environment < flags.",
    arg_required_else_help = true
)]
pub struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace). Quiet by default.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Print results as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// Configuration file (TOML). Default: $TRIDENT_HOME/config.toml when it exists.
    #[arg(long, global = true, env = "TRIDENT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory. Default: the platform data dir (e.g. ~/.local/share/trident).
    #[arg(long, global = true, env = "TRIDENT_HOME")]
    pub home: Option<PathBuf>,
    /// Override one setting, over file and environment (repeatable): --set engine.threads=4.
    /// Keys: see `trident config show` and docs/config.md.
    #[arg(long = "set", global = true, value_name = "SECTION.KEY=VALUE")]
    pub set: Vec<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch, list and register models.
    Models(cmd::models::ModelsArgs),
    /// Raw text completion with a local model.
    Generate(cmd::generate::GenerateArgs),
    /// Interactive, streaming chat with a local model.
    Chat(cmd::chat::ChatArgs),
    /// Benchmarks (writes results to bench/ when asked).
    Bench(cmd::bench::BenchArgs),
    /// Knowledge bases: ingest, sync, search.
    Kb(cmd::kb::KbArgs),
    /// Answer a question from a knowledge base, with citations.
    Ask(cmd::ask::AskArgs),
    /// Prompt library: specs, versions, labels, render, run, lint.
    Prompt(cmd::prompt::PromptArgs),
    /// Training datasets: check and prepare.
    Data(cmd::data::DataArgs),
    /// LoRA adapters: train, list, show, evaluate, export.
    Lora(cmd::lora::LoraArgs),
    /// Evaluation.
    Eval(cmd::eval::EvalArgs),
    /// Fetch the default models, ingest the example knowledge base and answer a few questions.
    Quickstart(cmd::quickstart::QuickstartArgs),
    /// Show the effective configuration and where each value comes from.
    Config(cmd::config::ConfigArgs),
}

fn main() {
    let cli = Cli::parse();
    output::init_logging(cli.verbose);
    let code = match config::Context::load(&cli).and_then(|ctx| cmd::run(cli.command, &ctx)) {
        Ok(()) => 0,
        Err(err) => {
            let code = error::exit_code(&err);
            output::print_error(&err, cli.json);
            code
        }
    };
    std::process::exit(code);
}
