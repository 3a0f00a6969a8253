//! `trident quickstart` (not implemented yet).

use crate::config::Context;

/// Arguments of `trident quickstart`.
#[derive(Debug, clap::Args)]
pub struct QuickstartArgs {}

/// Runs `trident quickstart`.
pub fn run(_args: QuickstartArgs, _ctx: &Context) -> anyhow::Result<()> {
    Err(crate::bad_input!("`trident quickstart` is not implemented yet"))
}
