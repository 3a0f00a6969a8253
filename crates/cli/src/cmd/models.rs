//! `trident models` (not implemented yet).

use crate::config::Context;

/// Arguments of `trident models`.
#[derive(Debug, clap::Args)]
pub struct ModelsArgs {}

/// Runs `trident models`.
pub fn run(_args: ModelsArgs, _ctx: &Context) -> anyhow::Result<()> {
    Err(crate::bad_input!("`trident models` is not implemented yet"))
}
