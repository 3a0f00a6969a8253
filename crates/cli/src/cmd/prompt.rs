//! `trident prompt` (not implemented yet).

use crate::config::Context;

/// Arguments of `trident prompt`.
#[derive(Debug, clap::Args)]
pub struct PromptArgs {}

/// Runs `trident prompt`.
pub fn run(_args: PromptArgs, _ctx: &Context) -> anyhow::Result<()> {
    Err(crate::bad_input!("`trident prompt` is not implemented yet"))
}
