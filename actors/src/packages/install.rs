//! Installing a package: unpack (tarballs) or copy (directories) into a staging directory inside
//! the root, verify every file's sha256, rename into place; nothing is left on failure.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{io, InstalledPackage, PackageError, PackageManifest, MANIFEST};

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
            } else if !kind.is_file() {
                // A symlink would be hashed and copied through to whatever it points at (a
                // file outside the package, or one changed later); devices and fifos are no
                // package content either.
                return Err(PackageError::Manifest {
                    path: path.clone(),
                    message: if kind.is_symlink() {
                        "is a symlink; a package holds only regular files and directories".into()
                    } else {
                        "is not a regular file; a package holds only regular files and directories"
                            .into()
                    },
                });
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
    // The rwx bits are kept; setuid, setgid and sticky are not, even when root installs.
    archive.set_preserve_permissions(false);
    let entries = archive
        .entries()
        .map_err(io("cannot read the archive", tarball))?;
    for entry in entries {
        let mut entry = entry.map_err(io("cannot read the archive", tarball))?;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            let name = entry
                .path()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            return Err(PackageError::Manifest {
                path: tarball.to_path_buf(),
                message: format!(
                    "`{name}` is a {}; a package holds only regular files and directories",
                    if kind.is_symlink() {
                        "symlink"
                    } else if kind.is_hard_link() {
                        "hard link"
                    } else {
                        "special file"
                    }
                ),
            });
        }
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
