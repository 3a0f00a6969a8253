//! `trident data` (not implemented yet).

use crate::config::Context;

/// Arguments of `trident data`.
#[derive(Debug, clap::Args)]
pub struct DataArgs {}

/// Runs `trident data`.
pub fn run(_args: DataArgs, _ctx: &Context) -> anyhow::Result<()> {
    Err(crate::bad_input!("`trident data` is not implemented yet"))
}
