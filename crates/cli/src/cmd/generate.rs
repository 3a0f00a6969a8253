//! `trident generate` (not implemented yet).

use crate::config::Context;

/// Arguments of `trident generate`.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {}

/// Runs `trident generate`.
pub fn run(_args: GenerateArgs, _ctx: &Context) -> anyhow::Result<()> {
    Err(crate::bad_input!("`trident generate` is not implemented yet"))
}
