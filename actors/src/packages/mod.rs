//! Packages: a service's files plus a `package.yaml`, installed under a packages root as
//! `<root>/<name>/<version>/`, and named by workers as `package: "name:version"` (or `name` for
//! the newest version).
//!
//! ```yaml
//! name: echo
//! version: 1.2.0
//! description: HTTP echo service
//! supported_types: [process, module]
//! process: {executable_path: bin/hsu-echo, args: []}
//! module: {module_path: lib/libecho_plugin.so}
//! checksum:                       # sha256 of every file besides package.yaml
//!   bin/hsu-echo: 9f86d081…
//!   lib/libecho_plugin.so: 2c26b46b…
//! ```
//!
//! Install is all or nothing: the files are checked (every file listed, every listed file
//! present, every sha256 equal) in a staging directory inside the root, which is then renamed
//! into place; any failure removes the staging directory. Installing a version that is already
//! installed succeeds only if its files are identical.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{ExecutionConfig, ModuleType, ProcessType, WorkerConfig, WorkerType};

/// The manifest file at the top of every package.
pub const MANIFEST: &str = "package.yaml";

/// `package.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageManifest {
    /// Letters, digits, `.`, `_`, `-`.
    pub name: String,
    /// Dotted numbers, e.g. `1.2.0` (a `-suffix` is allowed).
    pub version: String,
    /// One line.
    #[serde(default)]
    pub description: String,
    /// `process` and/or `module`.
    pub supported_types: Vec<WorkerType>,
    /// How to run it as a process (required with `process` support).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<PackageProcess>,
    /// How to load it as a plugin module (required with `module` support).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<PackageModule>,
    /// Other packages it needs, `name` or `name:version` (recorded; not installed for you).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<String>,
    /// A default `health_check:` for workers of this package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<crate::config::HealthCheckConfig>,
    /// sha256 (hex) of every file besides `package.yaml`, by path relative to the package.
    pub checksum: BTreeMap<String, String>,
}

/// `process:` of a manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageProcess {
    /// Relative to the package.
    pub executable_path: String,
    /// Arguments.
    #[serde(default)]
    pub args: Vec<String>,
}

/// `module:` of a manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageModule {
    /// The plugin library, relative to the package.
    pub module_path: String,
    /// The exported symbol; hsu plugins always export `HSU_PLUGIN_HEADER` (the default).
    #[serde(default = "default_entry_point")]
    pub entry_point: String,
}

fn default_entry_point() -> String {
    hsu_module::plugin::HEADER_SYMBOL.to_string()
}

/// An installed package.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstalledPackage {
    /// Its manifest.
    pub manifest: PackageManifest,
    /// `<root>/<name>/<version>`.
    pub path: PathBuf,
}

/// What went wrong with a package. Every variant names the package or the path.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// Reading, writing, renaming.
    #[error("{what} `{}`", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `package.yaml` is missing or wrong.
    #[error("`{}`: {message}", path.display())]
    Manifest {
        /// The manifest (or the source that lacks one).
        path: PathBuf,
        /// What is wrong, naming the field.
        message: String,
    },
    /// A file's sha256 differs from the manifest.
    #[error("package {package}: checksum mismatch for `{file}`: manifest says {expected}, file has {actual}")]
    Checksum {
        /// `name:version`.
        package: String,
        /// Relative path.
        file: String,
        /// From the manifest.
        expected: String,
        /// Computed.
        actual: String,
    },
    /// A file listed in `checksum` is not in the package.
    #[error("package {package}: `{file}` is listed in `checksum` but missing")]
    MissingFile {
        /// `name:version`.
        package: String,
        /// Relative path.
        file: String,
    },
    /// A file in the package is not listed in `checksum`.
    #[error("package {package}: `{file}` is not listed in `checksum` (every file must be)")]
    UnlistedFile {
        /// `name:version`.
        package: String,
        /// Relative path.
        file: String,
    },
    /// The same version is installed with other files.
    #[error("package {package} is already installed with different files; remove it first (`hsu package remove {package}`)")]
    Conflict {
        /// `name:version`.
        package: String,
    },
    /// No such package or version.
    #[error("package `{wanted}` is not installed under `{}` (installed: {})", root.display(), if installed.is_empty() { "none".to_string() } else { installed.join(", ") })]
    NotInstalled {
        /// As asked.
        wanted: String,
        /// The packages root.
        root: PathBuf,
        /// What is there, `name:version`.
        installed: Vec<String>,
    },
    /// The worker's type is not one the package supports.
    #[error("package {package} supports {supported}, not `{wanted}`")]
    UnsupportedType {
        /// `name:version`.
        package: String,
        /// What the worker is.
        wanted: String,
        /// What the package offers.
        supported: String,
    },
    /// The worker gives both a package and what the package would provide.
    #[error("`package` provides {field}: give one or the other")]
    Ambiguous {
        /// The conflicting field.
        field: &'static str,
    },
}

impl PackageError {
    /// The category, for callers that branch on errors.
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            Self::Io { .. } => ErrorKind::Io,
            Self::Conflict { .. } => ErrorKind::Conflict,
            Self::NotInstalled { .. } => ErrorKind::NotFound,
            Self::UnsupportedType { .. } => ErrorKind::Unsupported,
            Self::Manifest { .. }
            | Self::Checksum { .. }
            | Self::MissingFile { .. }
            | Self::UnlistedFile { .. }
            | Self::Ambiguous { .. } => ErrorKind::Validation,
        }
    }
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> PackageError + 'a {
    move |source| PackageError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

impl PackageManifest {
    /// `name:version`.
    pub fn id(&self) -> String {
        format!("{}:{}", self.name, self.version)
    }

    /// Reads and checks `dir/package.yaml` (fields only; files are checked by [`install`]).
    ///
    /// # Errors
    /// [`PackageError::Manifest`] naming the field.
    pub fn load(dir: &Path) -> Result<Self, PackageError> {
        let path = dir.join(MANIFEST);
        let text = fs::read_to_string(&path).map_err(|e| PackageError::Manifest {
            path: path.clone(),
            message: format!("cannot read the manifest: {e}"),
        })?;
        let manifest: Self = serde_yaml::from_str(&text).map_err(|e| PackageError::Manifest {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let bad = |message: String| PackageError::Manifest {
            path: path.clone(),
            message,
        };
        if !valid_name(&manifest.name) {
            return Err(bad(format!(
                "`name`: {:?} must be letters, digits, `.`, `_` or `-`",
                manifest.name
            )));
        }
        if version_key(&manifest.version).is_none() || !valid_name(&manifest.version) {
            return Err(bad(format!(
                "`version`: {:?} must be dotted numbers such as 1.2.0",
                manifest.version
            )));
        }
        if manifest.supported_types.is_empty() {
            return Err(bad(
                "`supported_types`: list `process`, `module` or both".into()
            ));
        }
        for t in &manifest.supported_types {
            match t {
                WorkerType::Process if manifest.process.is_none() => {
                    return Err(bad(
                        "`process`: required when `supported_types` has process".into(),
                    ))
                }
                WorkerType::Module if manifest.module.is_none() => {
                    return Err(bad(
                        "`module`: required when `supported_types` has module".into()
                    ))
                }
                _ => {}
            }
        }
        if let Some(m) = &manifest.module {
            if m.entry_point != hsu_module::plugin::HEADER_SYMBOL {
                return Err(bad(format!(
                    "`module.entry_point`: hsu plugins export `{}`, not `{}`",
                    hsu_module::plugin::HEADER_SYMBOL,
                    m.entry_point
                )));
            }
        }
        let mut referenced = Vec::new();
        if let Some(p) = &manifest.process {
            referenced.push(("process.executable_path", &p.executable_path));
        }
        if let Some(m) = &manifest.module {
            referenced.push(("module.module_path", &m.module_path));
        }
        for (field, file) in referenced {
            if !manifest.checksum.contains_key(file) {
                return Err(bad(format!(
                    "`{field}`: `{file}` is not listed in `checksum`"
                )));
            }
        }
        for file in manifest.checksum.keys() {
            if !safe_relative(file) {
                return Err(bad(format!(
                    "`checksum`: `{file}` must be a relative path inside the package"
                )));
            }
        }
        Ok(manifest)
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn safe_relative(p: &str) -> bool {
    let path = Path::new(p);
    !p.is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)))
}

/// Orders versions: dotted numbers compared numerically; a `-suffix` sorts before the plain one.
fn version_key(v: &str) -> Option<(Vec<u64>, bool, String)> {
    let (numbers, suffix) = match v.split_once('-') {
        Some((n, s)) => (n, Some(s)),
        None => (v, None),
    };
    let parts = numbers
        .split('.')
        .map(|p| p.parse::<u64>().ok())
        .collect::<Option<Vec<_>>>()?;
    Some((
        parts,
        suffix.is_none(),
        suffix.unwrap_or_default().to_string(),
    ))
}

/// sha256 of a file, as lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String, PackageError> {
    let mut file = fs::File::open(path).map_err(io("cannot read", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(io("cannot read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Every regular file under `dir`, relative, with `/` separators.
fn files_under(dir: &Path) -> Result<Vec<String>, PackageError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).map_err(io("cannot list", &d))? {
            let entry = entry.map_err(io("cannot list", &d))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(io("cannot stat", &path))?;
            if kind.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Checks every file of the package in `dir` against the manifest.
fn verify(dir: &Path, manifest: &PackageManifest) -> Result<(), PackageError> {
    let package = manifest.id();
    for (file, expected) in &manifest.checksum {
        let path = dir.join(file);
        if !path.is_file() {
            return Err(PackageError::MissingFile {
                package,
                file: file.clone(),
            });
        }
        let actual = sha256_file(&path)?;
        if !actual.eq_ignore_ascii_case(expected.trim()) {
            return Err(PackageError::Checksum {
                package,
                file: file.clone(),
                expected: expected.clone(),
                actual,
            });
        }
    }
    for file in files_under(dir)? {
        if file != MANIFEST && !manifest.checksum.contains_key(&file) {
            return Err(PackageError::UnlistedFile { package, file });
        }
    }
    Ok(())
}

/// A directory removed when dropped (unless kept).
struct Staging(Option<PathBuf>);

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_dir_all(p);
        }
    }
}

fn staging_dir(root: &Path, what: &str) -> Result<Staging, PackageError> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = root.join(format!(".{what}-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&path);
    fs::create_dir_all(&path).map_err(io("cannot create", &path))?;
    Ok(Staging(Some(path)))
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), PackageError> {
    for file in files_under(from)? {
        let (src, dst) = (from.join(&file), to.join(&file));
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent).map_err(io("cannot create", parent))?;
        }
        fs::copy(&src, &dst).map_err(io("cannot copy", &src))?;
    }
    Ok(())
}

/// Unpacks a `.tar`, `.tar.gz` or `.tgz` into `into`; returns the directory holding
/// `package.yaml` (the top, or its only subdirectory).
fn unpack(tarball: &Path, into: &Path) -> Result<PathBuf, PackageError> {
    let file = fs::File::open(tarball).map_err(io("cannot read", tarball))?;
    let name = tarball.to_string_lossy();
    let reader: Box<dyn Read> = if name.ends_with(".gz") || name.ends_with(".tgz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    let entries = archive
        .entries()
        .map_err(io("cannot read the archive", tarball))?;
    for entry in entries {
        let mut entry = entry.map_err(io("cannot read the archive", tarball))?;
        // `unpack_in` refuses paths that leave `into` (`..`, absolute).
        let inside = entry
            .unpack_in(into)
            .map_err(io("cannot unpack the archive", tarball))?;
        if !inside {
            return Err(PackageError::Manifest {
                path: tarball.to_path_buf(),
                message: "the archive has a path outside the package".into(),
            });
        }
    }
    if into.join(MANIFEST).is_file() {
        return Ok(into.to_path_buf());
    }
    let dirs: Vec<_> = fs::read_dir(into)
        .map_err(io("cannot list", into))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    match dirs.as_slice() {
        [only] if only.join(MANIFEST).is_file() => Ok(only.clone()),
        _ => Err(PackageError::Manifest {
            path: tarball.to_path_buf(),
            message: format!("no `{MANIFEST}` at the top of the archive"),
        }),
    }
}

/// Installs the package at `source` (a directory or a tarball) under `root`.
///
/// # Errors
/// Any [`PackageError`]; nothing is left under `root` by a failed install.
pub fn install(source: &Path, root: &Path) -> Result<InstalledPackage, PackageError> {
    fs::create_dir_all(root).map_err(io("cannot create the packages root", root))?;
    let meta = fs::metadata(source).map_err(io("cannot read the package", source))?;
    let _unpacked;
    let dir = if meta.is_dir() {
        source.to_path_buf()
    } else {
        let staging = staging_dir(root, "unpack")?;
        let top = unpack(source, staging.0.as_deref().unwrap_or(root))?;
        _unpacked = staging;
        top
    };
    let manifest = PackageManifest::load(&dir)?;
    verify(&dir, &manifest)?;
    let target = root.join(&manifest.name).join(&manifest.version);
    if target.exists() {
        // Reinstalling a version: fine if it is the same files, refused otherwise.
        let installed = PackageManifest::load(&target)?;
        return if installed.checksum == manifest.checksum && verify(&target, &installed).is_ok() {
            tracing::info!(package = %manifest.id(), "already installed with the same files");
            Ok(InstalledPackage {
                manifest,
                path: target,
            })
        } else {
            Err(PackageError::Conflict {
                package: manifest.id(),
            })
        };
    }
    let mut staging = staging_dir(root, "install")?;
    let staged = staging.0.clone().unwrap_or_default();
    copy_tree(&dir, &staged)?;
    // The copy is what gets installed: check it again (a source changing under us, a short
    // write) before it becomes visible.
    verify(&staged, &manifest)?;
    let parent = root.join(&manifest.name);
    fs::create_dir_all(&parent).map_err(io("cannot create", &parent))?;
    fs::rename(&staged, &target).map_err(io("cannot move into place", &target))?;
    staging.0 = None;
    tracing::info!(package = %manifest.id(), path = %target.display(), "package installed");
    Ok(InstalledPackage {
        manifest,
        path: target,
    })
}

/// Every installed package, by name then version.
///
/// # Errors
/// When the root cannot be listed (a missing root is an empty list).
pub fn list(root: &Path) -> Result<Vec<InstalledPackage>, PackageError> {
    let mut out = Vec::new();
    let Ok(names) = fs::read_dir(root) else {
        return Ok(out);
    };
    for name in names.filter_map(Result::ok) {
        let name_path = name.path();
        if name.file_name().to_string_lossy().starts_with('.') || !name_path.is_dir() {
            continue;
        }
        for version in fs::read_dir(&name_path)
            .map_err(io("cannot list", &name_path))?
            .filter_map(Result::ok)
        {
            let path = version.path();
            match PackageManifest::load(&path) {
                Ok(manifest) => out.push(InstalledPackage { manifest, path }),
                Err(e) => {
                    tracing::warn!(error = %crate::error_chain(&e), "skipping a broken package directory")
                }
            }
        }
    }
    out.sort_by(|a, b| {
        (a.manifest.name.as_str(), version_key(&a.manifest.version))
            .cmp(&(b.manifest.name.as_str(), version_key(&b.manifest.version)))
    });
    Ok(out)
}

/// The package `wanted` (`name:version`, or `name` for the newest version).
///
/// # Errors
/// [`PackageError::NotInstalled`] listing what is installed.
pub fn find(root: &Path, wanted: &str) -> Result<InstalledPackage, PackageError> {
    let (name, version) = match wanted.split_once(':') {
        Some((n, v)) => (n.trim(), Some(v.trim())),
        None => (wanted.trim(), None),
    };
    let all = list(root)?;
    all.iter()
        .filter(|p| p.manifest.name == name && version.is_none_or(|v| p.manifest.version == v))
        .max_by_key(|p| version_key(&p.manifest.version))
        .cloned()
        .ok_or_else(|| PackageError::NotInstalled {
            wanted: wanted.to_string(),
            root: root.to_path_buf(),
            installed: all.iter().map(|p| p.manifest.id()).collect(),
        })
}

/// Removes `wanted` (`name:version`, or `name` for every version). Returns what was removed.
///
/// # Errors
/// [`PackageError::NotInstalled`], or the removal failing.
pub fn remove(root: &Path, wanted: &str) -> Result<Vec<String>, PackageError> {
    let mut removed = Vec::new();
    let targets: Vec<_> = if wanted.contains(':') {
        vec![find(root, wanted)?]
    } else {
        let all: Vec<_> = list(root)?
            .into_iter()
            .filter(|p| p.manifest.name == wanted.trim())
            .collect();
        if all.is_empty() {
            find(root, wanted)?;
        }
        all
    };
    for p in targets {
        // Renamed away first, so a half-removed package is never seen as installed.
        let doomed = root.join(format!(
            ".remove-{}-{}-{}",
            p.manifest.name,
            p.manifest.version,
            std::process::id()
        ));
        fs::rename(&p.path, &doomed).map_err(io("cannot remove", &p.path))?;
        fs::remove_dir_all(&doomed).map_err(io("cannot remove", &doomed))?;
        removed.push(p.manifest.id());
        if let Some(parent) = p.path.parent() {
            let _ = fs::remove_dir(parent); // only if now empty
        }
    }
    Ok(removed)
}

/// Fills in what a worker's `package:` provides: for a process worker `execution` (the
/// package's executable and args), for a module worker `module_type: plugin` and `module_name`
/// (the library), and for a module worker with `quarantine:` also its process form. Workers
/// without `package:` are returned unchanged.
///
/// # Errors
/// The package is not installed, does not support the worker's type, or the worker also gives
/// the field the package provides.
pub fn resolve(config: &WorkerConfig, root: &Path) -> Result<WorkerConfig, PackageError> {
    let Some(wanted) = &config.package else {
        return Ok(config.clone());
    };
    let package = find(root, wanted)?;
    let m = &package.manifest;
    let unsupported = || PackageError::UnsupportedType {
        package: m.id(),
        wanted: match config.worker_type {
            WorkerType::Process => "process".into(),
            WorkerType::Module => "module".into(),
        },
        supported: m
            .supported_types
            .iter()
            .map(|t| match t {
                WorkerType::Process => "process",
                WorkerType::Module => "module",
            })
            .collect::<Vec<_>>()
            .join(" and "),
    };
    let supports = |t: WorkerType| m.supported_types.contains(&t);
    let process_form = || {
        m.process.as_ref().map(|p| ExecutionConfig {
            executable_path: package.path.join(&p.executable_path).display().to_string(),
            args: p.args.clone(),
            ..ExecutionConfig::default()
        })
    };
    let mut out = config.clone();
    match config.worker_type {
        WorkerType::Process => {
            if !supports(WorkerType::Process) {
                return Err(unsupported());
            }
            if config.execution.is_some() {
                return Err(PackageError::Ambiguous {
                    field: "`execution`",
                });
            }
            if config.process_type == Some(ProcessType::Unmanaged) {
                return Err(unsupported());
            }
            out.execution = process_form();
        }
        WorkerType::Module => {
            if !supports(WorkerType::Module) {
                return Err(unsupported());
            }
            if config.module_name.is_some() || config.module_type == Some(ModuleType::Native) {
                return Err(PackageError::Ambiguous {
                    field: "the plugin library (`module_type: plugin`, `module_name`)",
                });
            }
            let module = m.module.as_ref().ok_or_else(unsupported)?;
            out.module_type = Some(ModuleType::Plugin);
            out.module_name = Some(package.path.join(&module.module_path).display().to_string());
            if config.quarantine.is_some()
                && config.execution.is_none()
                && supports(WorkerType::Process)
            {
                out.execution = process_form();
            }
        }
    }
    if out.health_check.is_none() {
        out.health_check = m.health_check.clone();
    }
    out.package = None;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_numerically() {
        let mut v = vec!["1.10.0", "1.2.0", "1.2.0-rc1", "0.9"];
        v.sort_by_key(|s| version_key(s));
        assert_eq!(v, ["0.9", "1.2.0-rc1", "1.2.0", "1.10.0"]);
        assert!(version_key("one").is_none());
    }

    #[test]
    fn paths_must_stay_inside() {
        assert!(safe_relative("bin/x"));
        assert!(!safe_relative("../x"));
        assert!(!safe_relative("/etc/passwd"));
        assert!(!safe_relative("a/../../b"));
    }
}
