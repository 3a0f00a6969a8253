//! `trident ask` (not implemented yet).

use crate::config::Context;

/// Arguments of `trident ask`.
#[derive(Debug, clap::Args)]
pub struct AskArgs {}

/// Runs `trident ask`.
pub fn run(_args: AskArgs, _ctx: &Context) -> anyhow::Result<()> {
    Err(crate::bad_input!("`trident ask` is not implemented yet"))
}
