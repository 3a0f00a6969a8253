//! `trident eval` (not implemented yet).

use crate::config::Context;

/// Arguments of `trident eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {}

/// Runs `trident eval`.
pub fn run(_args: EvalArgs, _ctx: &Context) -> anyhow::Result<()> {
    Err(crate::bad_input!("`trident eval` is not implemented yet"))
}
