//! One module per subcommand; each has an `Args` struct and a `run` function.

pub mod ask;
pub mod bench;
pub mod chat;
pub mod config;
pub mod data;
pub mod eval;
pub mod generate;
pub mod kb;
pub mod lora;
pub mod models;
pub mod prompt;
pub mod quickstart;

use crate::{Command, config::Context};

/// Dispatches a parsed subcommand.
pub fn run(command: Command, ctx: &Context) -> anyhow::Result<()> {
    match command {
        Command::Models(a) => models::run(a, ctx),
        Command::Generate(a) => generate::run(a, ctx),
        Command::Chat(a) => chat::run(a, ctx),
        Command::Bench(a) => bench::run(a, ctx),
        Command::Kb(a) => kb::run(a, ctx),
        Command::Ask(a) => ask::run(a, ctx),
        Command::Prompt(a) => prompt::run(a, ctx),
        Command::Data(a) => data::run(a, ctx),
        Command::Lora(a) => lora::run(a, ctx),
        Command::Eval(a) => eval::run(a, ctx),
        Command::Quickstart(a) => quickstart::run(a, ctx),
        Command::Config(a) => config::run(a, ctx),
    }
}
