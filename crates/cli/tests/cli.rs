//! End-to-end tests of the `trident` binary: help, exit codes, `--json` errors, configuration.

mod common;

use common::{code, run, stderr, stdout, trident};

/// Subcommand names listed under "Commands:" in a help text (without `help`).
fn subcommands(help: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_commands = false;
    for line in help.lines() {
        if line.trim_end() == "Commands:" {
            in_commands = true;
            continue;
        }
        if in_commands {
            if !line.starts_with("  ") {
                break;
            }
            if let Some(name) = line.split_whitespace().next()
                && name != "help"
                // A name sits at exactly two spaces; deeper lines continue a description.
                && line.starts_with("  ")
                && !line[2..].starts_with(' ')
            {
                out.push(name.to_string());
            }
        }
    }
    out
}

#[test]
fn help_works_for_every_subcommand() {
    let home = tempfile::tempdir().unwrap();
    let mut queue: Vec<Vec<String>> = vec![vec![]];
    let mut seen = 0;
    while let Some(path) = queue.pop() {
        let out = run(trident(home.path()).args(&path).arg("--help"));
        assert_eq!(code(&out), 0, "trident {} --help: {}", path.join(" "), stderr(&out));
        let help = stdout(&out);
        assert!(help.contains("Usage:"), "trident {} --help printed no usage:\n{help}", path.join(" "));
        seen += 1;
        for sub in subcommands(&help) {
            let mut p = path.clone();
            p.push(sub);
            queue.push(p);
        }
    }
    // The top level, its 12 commands, and the subcommands of `models` and `config` at least.
    assert!(seen >= 20, "only {seen} help pages found");
}

#[test]
fn version_and_bare_invocation() {
    let home = tempfile::tempdir().unwrap();
    let out = run(trident(home.path()).arg("--version"));
    assert_eq!(code(&out), 0);
    assert!(stdout(&out).starts_with("trident "));
    // No subcommand: help on stderr and usage exit code.
    let out = run(&mut trident(home.path()));
    assert_eq!(code(&out), 2);
}

#[test]
fn bad_usage_exits_2() {
    let home = tempfile::tempdir().unwrap();
    for args in [&["--no-such-flag"][..], &["models", "--bogus"], &["nosuchcommand"], &["models", "add"]] {
        let out = run(trident(home.path()).args(args));
        assert_eq!(code(&out), 2, "trident {args:?}: {}", stderr(&out));
    }
}

#[test]
fn json_errors_have_a_stable_shape() {
    let home = tempfile::tempdir().unwrap();
    let out = run(trident(home.path()).args(["--json", "models", "path", "qwen"]));
    assert_eq!(code(&out), 2);
    let line = stderr(&out);
    let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(v["exit_code"], 2);
    assert_eq!(v["kind"], "bad_input");
    assert!(v["error"].as_str().unwrap().contains("trident models fetch qwen"), "{v}");
    assert!(v["causes"].is_array());
    assert!(stdout(&out).is_empty());
    // Without --json: a plain "error: " line.
    let out = run(trident(home.path()).args(["models", "path", "qwen"]));
    assert!(stderr(&out).starts_with("error: model 'qwen' not installed"), "{}", stderr(&out));
}

fn show(cmd: &mut std::process::Command) -> serde_json::Value {
    let out = run(cmd.args(["--json", "config", "show"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

#[test]
fn config_precedence_defaults_file_env_flags() {
    let home = tempfile::tempdir().unwrap();
    let v = show(&mut trident(home.path()));
    assert_eq!(v["settings"]["engine.threads"]["value"], 0);
    assert_eq!(v["settings"]["engine.threads"]["source"], "default");
    assert_eq!(v["settings"]["engine.threads"]["env"], "TRIDENT_ENGINE_THREADS");

    // $TRIDENT_HOME/config.toml is read when present.
    std::fs::write(home.path().join("config.toml"), "[engine]\nthreads = 2\nmodel = \"gemma\"\n[rag]\nk = 9\n").unwrap();
    let v = show(&mut trident(home.path()));
    assert_eq!(v["settings"]["engine.threads"]["value"], 2);
    assert_eq!(v["settings"]["rag.k"]["value"], 9);
    assert!(v["settings"]["engine.threads"]["source"].as_str().unwrap().starts_with("file "));

    // Environment over file.
    let v = show(trident(home.path()).env("TRIDENT_ENGINE_THREADS", "3"));
    assert_eq!(v["settings"]["engine.threads"]["value"], 3);
    assert_eq!(v["settings"]["engine.model"]["value"], "gemma");

    // Flag over environment.
    let v = show(trident(home.path()).env("TRIDENT_ENGINE_THREADS", "3").args(["--set", "engine.threads=4"]));
    assert_eq!(v["settings"]["engine.threads"]["value"], 4);
    assert_eq!(v["settings"]["engine.threads"]["source"], "--set engine.threads");

    // --config names another file; TRIDENT_CONFIG does too.
    let other = home.path().join("other.toml");
    std::fs::write(&other, "[engine]\nthreads = 6\n").unwrap();
    let v = show(trident(home.path()).arg("--config").arg(&other));
    assert_eq!(v["settings"]["engine.threads"]["value"], 6);
    assert_eq!(v["settings"]["rag.k"]["value"], 5, "the home config is not read when --config is given");
    let v = show(trident(home.path()).env("TRIDENT_CONFIG", &other));
    assert_eq!(v["settings"]["engine.threads"]["value"], 6);
}

#[test]
fn config_errors_name_file_key_and_position() {
    let home = tempfile::tempdir().unwrap();
    let cfg = home.path().join("config.toml");
    std::fs::write(&cfg, "[rag]\nk = 3\nchunk_max = 100\n").unwrap();
    let out = run(trident(home.path()).args(["config", "show"]));
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(err.contains(&cfg.display().to_string()) && err.contains("rag.chunk_max") && err.contains(":3:1"), "{err}");

    std::fs::write(&cfg, "[engine]\nthreads = \"four\"\n").unwrap();
    let out = run(trident(home.path()).args(["config", "show"]));
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains(":2:"), "{}", stderr(&out));

    std::fs::remove_file(&cfg).unwrap();
    let out = run(trident(home.path()).env("TRIDENT_RAG_K", "many").args(["config", "show"]));
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("TRIDENT_RAG_K"), "{}", stderr(&out));

    // A --config that does not exist is an error, not a silent default.
    let out = run(trident(home.path()).args(["--config", "/nonexistent/trident.toml", "config", "show"]));
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("/nonexistent/trident.toml"));
}

#[test]
fn config_path_reports_home_and_models_dir() {
    let home = tempfile::tempdir().unwrap();
    let out = run(trident(home.path()).args(["--json", "config", "path"]));
    assert_eq!(code(&out), 0);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["home"], home.path().display().to_string());
    assert_eq!(v["models_dir"], home.path().join("models").display().to_string());
    let out = run(trident(home.path()).env("TRIDENT_MODELS_DIR", "cache").args(["--json", "config", "path"]));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["models_dir"], home.path().join("cache").display().to_string());
}
