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

mod index;
mod install;
mod manifest;

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use index::PackageIndex;
pub use install::{install, sha256_file};
pub use manifest::{PackageManifest, PackageModule, PackageProcess};

use manifest::version_key;

/// The manifest file at the top of every package.
pub const MANIFEST: &str = "package.yaml";

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
    PackageIndex::load(root)?.find(wanted).cloned()
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
