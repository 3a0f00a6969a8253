//! `trident bench` (not implemented yet).

use crate::config::Context;

/// Arguments of `trident bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {}

/// Runs `trident bench`.
pub fn run(_args: BenchArgs, _ctx: &Context) -> anyhow::Result<()> {
    Err(crate::bad_input!("`trident bench` is not implemented yet"))
}
