//! `trident chat` (not implemented yet).

use crate::config::Context;

/// Arguments of `trident chat`.
#[derive(Debug, clap::Args)]
pub struct ChatArgs {}

/// Runs `trident chat`.
pub fn run(_args: ChatArgs, _ctx: &Context) -> anyhow::Result<()> {
    Err(crate::bad_input!("`trident chat` is not implemented yet"))
}
