//! The local registry: catalogue models installed under the models folder plus local GGUF
//! files registered with `trident models add` (kept in `registry.json`, written atomically).

use crate::error::{Error, Result, io_err};
use crate::fetch::{self, FetchEvent, FetchOptions, FetchReport};
use crate::gguf_info;
use crate::manifest::{Kind, Manifest, ModelSpec};
use serde::{Deserialize, Serialize};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Name of the registry file inside the models folder.
pub const REGISTRY_FILE: &str = "registry.json";

/// Where a model in the list comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A catalogue model (fetched with `trident models fetch`).
    Catalogue,
    /// A local file registered with `trident models add`.
    Local,
}

/// One model as `trident models list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ModelEntry {
    /// The name to use on the command line.
    pub name: String,
    /// The catalogue's long name (catalogue models only).
    pub full_name: Option<String>,
    /// LLM or embedding model.
    pub kind: Kind,
    /// File format (`gguf`, `e5-q4`, `safetensors-dir`).
    pub format: String,
    /// Catalogue or local.
    pub source: Source,
    /// Whether the file is present.
    pub installed: bool,
    /// Architecture (`qwen2`), or `?` when unknown.
    pub architecture: String,
    /// Quantization (`Q4_K_M`), or `?` when unknown.
    pub quantization: String,
    /// Size in bytes (installed size, or the catalogue's when not installed).
    pub size: u64,
    /// Path of the file or folder.
    pub path: PathBuf,
    /// One-line description (catalogue models).
    pub description: String,
}

/// A local model recorded in `registry.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalModel {
    /// Registered name.
    pub name: String,
    /// Absolute path of the GGUF file.
    pub path: PathBuf,
    /// Architecture read when it was added.
    pub architecture: String,
    /// Quantization read when it was added.
    pub quantization: String,
    /// Size in bytes when it was added.
    pub size: u64,
    /// When it was added (seconds since the Unix epoch).
    pub added_unix: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    version: u32,
    models: Vec<LocalModel>,
}

/// The installed models: the catalogue (from the manifest) plus registered local files.
#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
    manifest: Manifest,
    local: Vec<LocalModel>,
}

impl Registry {
    /// Opens the registry of `$TRIDENT_HOME` (models folder `home/models`), with the manifest
    /// named by `$TRIDENT_MODELS_MANIFEST` or the built-in one.
    pub fn open(home: &Path) -> Result<Registry> {
        Registry::open_in(&home.join("models"), Manifest::from_env()?)
    }

    /// Opens the registry of a given models folder with a given manifest.
    pub fn open_in(models_dir: &Path, manifest: Manifest) -> Result<Registry> {
        let file = models_dir.join(REGISTRY_FILE);
        let local = match std::fs::read_to_string(&file) {
            Ok(text) => {
                let parsed: RegistryFile = serde_json::from_str(&text)
                    .map_err(|e| Error::Registry { path: file.clone(), message: format!("malformed ({e}); fix or delete it") })?;
                if parsed.version != 1 {
                    return Err(Error::Registry { path: file, message: format!("unsupported version {}", parsed.version) });
                }
                parsed.models
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err("cannot read", &file, e)),
        };
        Ok(Registry { dir: models_dir.to_path_buf(), manifest, local })
    }

    /// The models folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The catalogue.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Where a catalogue model is (or would be) installed.
    pub fn catalogue_path(&self, spec: &ModelSpec) -> PathBuf {
        self.dir.join(&spec.file)
    }

    /// Resolves a model name or path to a file (or folder, for folder models):
    /// a catalogue short or long name (must be installed), a registered name, or an existing
    /// path.
    pub fn resolve(&self, name_or_path: &str) -> Result<PathBuf> {
        if let Some(spec) = self.manifest.get(name_or_path) {
            let path = self.catalogue_path(spec);
            return if path.exists() { Ok(path) } else { Err(Error::NotInstalled { name: spec.name.clone() }) };
        }
        if let Some(local) = self.local.iter().find(|m| m.name == name_or_path) {
            return if local.path.exists() {
                Ok(local.path.clone())
            } else {
                Err(Error::RegisteredFileMissing { name: local.name.clone(), path: local.path.clone() })
            };
        }
        let p = Path::new(name_or_path);
        if !name_or_path.is_empty() && p.exists() {
            return Ok(p.to_path_buf());
        }
        let mut known = self.manifest.names();
        known.extend(self.local.iter().map(|m| m.name.clone()));
        Err(Error::UnknownModel { name: name_or_path.to_string(), known })
    }

    /// Installed models: catalogue models present on disk, then registered local files.
    pub fn list(&self) -> Vec<ModelEntry> {
        self.list_all().into_iter().filter(|e| e.installed).collect()
    }

    /// Every catalogue model (installed or not) and every registered local file.
    pub fn list_all(&self) -> Vec<ModelEntry> {
        let mut out = Vec::new();
        for spec in &self.manifest.models {
            let path = self.catalogue_path(spec);
            let installed = path.exists();
            let (mut architecture, mut quantization) =
                (spec.architecture.clone().unwrap_or_else(|| "?".into()), spec.quantization.clone().unwrap_or_else(|| "?".into()));
            if installed && spec.format == "gguf" {
                if let Ok(f) = gguf_info::read_facts(&path) {
                    (architecture, quantization) = (f.architecture, f.quantization);
                }
            }
            out.push(ModelEntry {
                name: spec.name.clone(),
                full_name: Some(spec.full_name.clone()),
                kind: spec.kind,
                format: spec.format.clone(),
                source: Source::Catalogue,
                installed,
                architecture,
                quantization,
                size: spec.installed_size(),
                path,
                description: spec.description.clone(),
            });
        }
        for m in &self.local {
            let installed = m.path.exists();
            let size = std::fs::metadata(&m.path).map(|md| md.len()).unwrap_or(m.size);
            out.push(ModelEntry {
                name: m.name.clone(),
                full_name: None,
                kind: Kind::Llm,
                format: "gguf".into(),
                source: Source::Local,
                installed,
                architecture: m.architecture.clone(),
                quantization: m.quantization.clone(),
                size,
                path: m.path.clone(),
                description: String::new(),
            });
        }
        out
    }

    /// Registers a local GGUF file after validating it (readable GGUF, supported
    /// architecture). The name defaults to the file stem; `force` replaces a registration of
    /// the same name.
    pub fn add(&mut self, path: &Path, name: Option<&str>, force: bool) -> Result<ModelEntry> {
        if !path.is_file() {
            return Err(Error::InvalidGguf { path: path.into(), message: "no such file".into() });
        }
        let facts = gguf_info::validate_llm(path)?;
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
        let name = name.unwrap_or(stem).to_string();
        check_name(&name)?;
        if self.manifest.get(&name).is_some() {
            return Err(Error::BadName { name, reason: "it is a catalogue model's name; choose another with --name".into() });
        }
        if let Some(i) = self.local.iter().position(|m| m.name == name) {
            if !force {
                return Err(Error::BadName {
                    name,
                    reason: format!("already registered for {} (use --force to replace)", self.local[i].path.display()),
                });
            }
            self.local.remove(i);
        }
        let abs = std::fs::canonicalize(path).map_err(|e| io_err("cannot resolve", path, e))?;
        let size = std::fs::metadata(&abs).map_err(|e| io_err("cannot read", &abs, e))?.len();
        let added_unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        self.local.push(LocalModel {
            name: name.clone(),
            path: abs,
            architecture: facts.architecture,
            quantization: facts.quantization,
            size,
            added_unix,
        });
        self.save()?;
        Ok(self.list_all().into_iter().find(|e| e.source == Source::Local && e.name == name).expect("entry was just added"))
    }

    /// Removes a model: unregisters a local file (the file stays), or deletes an installed
    /// catalogue model. Returns the path concerned.
    pub fn remove(&mut self, name: &str) -> Result<PathBuf> {
        if let Some(i) = self.local.iter().position(|m| m.name == name) {
            let m = self.local.remove(i);
            self.save()?;
            return Ok(m.path);
        }
        if let Some(spec) = self.manifest.get(name) {
            let path = self.catalogue_path(spec);
            if !path.exists() {
                return Err(Error::NotInstalled { name: spec.name.clone() });
            }
            let r = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            r.map_err(|e| io_err("cannot remove", &path, e))?;
            return Ok(path);
        }
        let mut known = self.manifest.names();
        known.extend(self.local.iter().map(|m| m.name.clone()));
        Err(Error::UnknownModel { name: name.into(), known })
    }

    /// Fetches catalogue models by name (none: the defaults). All names are checked before
    /// anything is downloaded.
    pub fn fetch(
        &self,
        names: &[String],
        opts: &FetchOptions,
        progress: &mut dyn FnMut(FetchEvent<'_>),
    ) -> Result<Vec<FetchReport>> {
        let specs: Vec<&ModelSpec> = if names.is_empty() {
            self.manifest.defaults()
        } else {
            let mut specs = Vec::new();
            for n in names {
                let spec = self
                    .manifest
                    .get(n)
                    .ok_or_else(|| Error::UnknownModel { name: n.clone(), known: self.manifest.names() })?;
                if !specs.iter().any(|s: &&ModelSpec| s.name == spec.name) {
                    specs.push(spec);
                }
            }
            specs
        };
        specs.into_iter().map(|spec| fetch::fetch_model(&self.dir, spec, opts, progress)).collect()
    }

    fn save(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| io_err("cannot create", &self.dir, e))?;
        let path = self.dir.join(REGISTRY_FILE);
        let body = RegistryFile { version: 1, models: self.local.clone() };
        let json = serde_json::to_vec_pretty(&body).expect("registry serialises");
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir).map_err(|e| io_err("cannot create a temporary file in", &self.dir, e))?;
        tmp.write_all(&json).map_err(|e| io_err("cannot write", tmp.path(), e))?;
        tmp.as_file().sync_all().map_err(|e| io_err("cannot write", &path, e))?;
        tmp.persist(&path).map_err(|e| io_err("cannot replace", &path, e.error))?;
        Ok(())
    }
}

fn check_name(name: &str) -> Result<()> {
    let bad = |reason: &str| Err(Error::BadName { name: name.into(), reason: reason.into() });
    if name.is_empty() || name.len() > 100 {
        return bad("must be 1 to 100 characters");
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        return bad("use only letters, digits, '.', '_' and '-'");
    }
    if name.starts_with('.') || name.starts_with('-') {
        return bad("must not start with '.' or '-'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf_info::testing::{write_tiny, write_unknown_arch};

    fn registry(dir: &Path) -> Registry {
        Registry::open_in(&dir.join("models"), Manifest::builtin()).unwrap()
    }

    #[test]
    fn resolves_names_paths_and_explains_missing_models() {
        let home = tempfile::tempdir().unwrap();
        let reg = registry(home.path());
        let e = reg.resolve("qwen").unwrap_err();
        assert_eq!(e.to_string(), "model 'qwen' not installed — run `trident models fetch qwen`");
        assert!(e.is_user_error());
        let e = reg.resolve("gemma-3-270m-q4_k_m").unwrap_err();
        assert!(e.to_string().contains("trident models fetch gemma"), "{e}");
        let e = reg.resolve("nosuch").unwrap_err();
        assert!(matches!(e, Error::UnknownModel { .. }) && e.to_string().contains("qwen"), "{e}");
        // Once the file is there, the short name resolves to it.
        std::fs::create_dir_all(reg.dir()).unwrap();
        let p = reg.dir().join("gemma-3-270m-q4_k_m.gguf");
        std::fs::write(&p, b"x").unwrap();
        assert_eq!(reg.resolve("gemma").unwrap(), p);
        // Any existing path resolves to itself.
        assert_eq!(reg.resolve(p.to_str().unwrap()).unwrap(), p);
        let listed: Vec<_> = reg.list().into_iter().map(|e| e.name).collect();
        assert_eq!(listed, ["gemma"]);
        assert_eq!(reg.list_all().len(), Manifest::builtin().models.len());
    }

    #[test]
    fn add_validates_registers_and_persists() {
        let home = tempfile::tempdir().unwrap();
        let model = home.path().join("my-llama.gguf");
        write_tiny(&model);
        let mut reg = registry(home.path());
        let entry = reg.add(&model, None, false).unwrap();
        assert_eq!((entry.name.as_str(), entry.architecture.as_str()), ("my-llama", "llama"));
        // Reopened from disk.
        let reg2 = registry(home.path());
        assert_eq!(reg2.resolve("my-llama").unwrap(), std::fs::canonicalize(&model).unwrap());
        assert_eq!(reg2.list().len(), 1);
        // Same name again needs --force; catalogue names are refused.
        let mut reg2 = reg2;
        assert!(matches!(reg2.add(&model, None, false).unwrap_err(), Error::BadName { .. }));
        assert!(reg2.add(&model, None, true).is_ok());
        assert!(reg2.add(&model, Some("qwen"), false).unwrap_err().to_string().contains("catalogue"));
        assert!(reg2.add(&model, Some("../x"), false).is_err());
        // Unknown architecture and non-GGUF files are user errors, and change nothing.
        let odd = home.path().join("odd.gguf");
        write_unknown_arch(&odd);
        let e = reg2.add(&odd, None, false).unwrap_err();
        assert!(matches!(e, Error::Gguf(trident_gguf::GgufError::UnknownArchitecture { .. })) && e.is_user_error(), "{e}");
        let text = home.path().join("notes.gguf");
        std::fs::write(&text, "hello").unwrap();
        let e = reg2.add(&text, None, false).unwrap_err();
        assert!(matches!(e, Error::Gguf(_)) && e.is_user_error(), "{e}");
        assert_eq!(registry(home.path()).list().len(), 1);
        // Removing unregisters; the file stays.
        assert_eq!(reg2.remove("my-llama").unwrap(), std::fs::canonicalize(&model).unwrap());
        assert!(model.exists());
        assert!(registry(home.path()).list().is_empty());
    }

    #[test]
    fn a_registered_file_that_vanished_is_explained() {
        let home = tempfile::tempdir().unwrap();
        let model = home.path().join("gone.gguf");
        write_tiny(&model);
        let mut reg = registry(home.path());
        reg.add(&model, None, false).unwrap();
        std::fs::remove_file(&model).unwrap();
        let e = reg.resolve("gone").unwrap_err();
        assert!(matches!(e, Error::RegisteredFileMissing { .. }), "{e}");
    }

    #[test]
    fn a_malformed_registry_file_is_an_error_not_a_reset() {
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join("models");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(REGISTRY_FILE), "{not json").unwrap();
        let e = Registry::open_in(&dir, Manifest::builtin()).unwrap_err();
        assert!(e.to_string().contains("registry.json"), "{e}");
    }

    #[test]
    fn fetch_rejects_unknown_names_before_downloading() {
        let home = tempfile::tempdir().unwrap();
        let reg = registry(home.path());
        let opts = FetchOptions { python: "/nonexistent/python".into(), ..FetchOptions::default() };
        let e = reg.fetch(&["gemma".into(), "nosuch".into()], &opts, &mut |_| {}).unwrap_err();
        assert!(matches!(e, Error::UnknownModel { .. }) && e.is_user_error(), "{e}");
    }
}
