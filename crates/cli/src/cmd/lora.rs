//! `trident lora` (not implemented yet).

use crate::config::Context;

/// Arguments of `trident lora`.
#[derive(Debug, clap::Args)]
pub struct LoraArgs {}

/// Runs `trident lora`.
pub fn run(_args: LoraArgs, _ctx: &Context) -> anyhow::Result<()> {
    Err(crate::bad_input!("`trident lora` is not implemented yet"))
}
