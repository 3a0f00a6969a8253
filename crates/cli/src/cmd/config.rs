//! `trident config`: the effective configuration and where each value comes from.

use crate::config::{Context, default_keys, env_name};

/// Arguments of `trident config`.
#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ConfigCommand {
    /// Print every setting with its value and source (default, file, env, --set).
    Show,
    /// Print the data directory and the config file in use.
    Path,
}

/// Runs `trident config`.
pub fn run(args: ConfigArgs, ctx: &Context) -> anyhow::Result<()> {
    match args.command {
        ConfigCommand::Show => show(ctx),
        ConfigCommand::Path => {
            if ctx.json {
                crate::output::print_json(&serde_json::json!({
                    "home": ctx.home,
                    "config_file": ctx.config_file,
                    "models_dir": ctx.models_dir(),
                }))
            } else {
                println!("home         {}", ctx.home.display());
                match &ctx.config_file {
                    Some(f) => println!("config file  {}", f.display()),
                    None => println!("config file  (none; would be {})", ctx.home.join("config.toml").display()),
                }
                println!("models       {}", ctx.models_dir().display());
                Ok(())
            }
        }
    }
}

fn show(ctx: &Context) -> anyhow::Result<()> {
    let table = crate::config::to_table(&ctx.config);
    let mut rows = Vec::new();
    for (key, _) in default_keys() {
        let (section, k) = key.split_once('.').expect("keys are section.key");
        let value = table.get(section).and_then(|s| s.get(k)).cloned().unwrap_or(toml::Value::String(String::new()));
        let source = ctx.sources.get(&key).cloned().unwrap_or_else(|| "default".into());
        rows.push((key.clone(), value, source, env_name(&key)));
    }
    if ctx.json {
        let mut obj = serde_json::Map::new();
        for (key, value, source, env) in rows {
            obj.insert(key, serde_json::json!({"value": value, "source": source, "env": env}));
        }
        crate::output::print_json(&serde_json::json!({
            "home": ctx.home,
            "config_file": ctx.config_file,
            "settings": obj,
        }))
    } else {
        let mut lines = vec![vec!["KEY".to_string(), "VALUE".into(), "SOURCE".into()]];
        lines.extend(rows.into_iter().map(|(k, v, s, _)| vec![k, v.to_string(), s]));
        crate::output::print_table(&lines);
        Ok(())
    }
}
