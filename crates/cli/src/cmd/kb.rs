//! `trident kb` (not implemented yet).

use crate::config::Context;

/// Arguments of `trident kb`.
#[derive(Debug, clap::Args)]
pub struct KbArgs {}

/// Runs `trident kb`.
pub fn run(_args: KbArgs, _ctx: &Context) -> anyhow::Result<()> {
    Err(crate::bad_input!("`trident kb` is not implemented yet"))
}
