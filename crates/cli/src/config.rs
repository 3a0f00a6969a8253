//! Configuration: defaults < TOML file < `TRIDENT_*` environment variables < flags.

use crate::Cli;
use anyhow::{Context as _, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Settings read from the TOML file (every field optional; defaults below).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[engine]` section.
    pub engine: EngineConfig,
}

/// `[engine]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Default model name or path (`TRIDENT_MODEL`).
    pub model: String,
    /// CPU threads for inference (`TRIDENT_THREADS`); 0 = all cores.
    pub threads: usize,
    /// Context length in tokens (`TRIDENT_CTX`).
    pub ctx: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self { model: "qwen".into(), threads: 0, ctx: 4096 }
    }
}

/// Everything a command needs: resolved config, data directory, output mode.
#[derive(Debug, Clone)]
pub struct Context {
    /// The merged configuration.
    pub config: Config,
    /// `$TRIDENT_HOME`.
    pub home: PathBuf,
    /// `--json` was given.
    pub json: bool,
}

impl Context {
    /// Resolves home and config from flags, environment and file.
    pub fn load(cli: &Cli) -> Result<Self> {
        let home = match &cli.home {
            Some(h) => h.clone(),
            None => directories::ProjectDirs::from("", "", "trident")
                .map(|d| d.data_dir().to_path_buf())
                .context("cannot determine a data directory; set TRIDENT_HOME")?,
        };
        let file = cli.config.clone().unwrap_or_else(|| home.join("config.toml"));
        let mut config = if file.exists() || cli.config.is_some() {
            read_config(&file)?
        } else {
            Config::default()
        };
        apply_env(&mut config)?;
        Ok(Self { config, home, json: cli.json })
    }
}

fn read_config(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| crate::bad_input!("cannot read config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| crate::bad_input!("config file {}: {e}", path.display()))
}

fn apply_env(config: &mut Config) -> Result<()> {
    if let Ok(v) = std::env::var("TRIDENT_MODEL") {
        config.engine.model = v;
    }
    if let Ok(v) = std::env::var("TRIDENT_THREADS") {
        config.engine.threads = v.parse().map_err(|_| crate::bad_input!("TRIDENT_THREADS={v:?} is not a number"))?;
    }
    if let Ok(v) = std::env::var("TRIDENT_CTX") {
        config.engine.ctx = v.parse().map_err(|_| crate::bad_input!("TRIDENT_CTX={v:?} is not a number"))?;
    }
    Ok(())
}
