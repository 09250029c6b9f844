//! `package.yaml`: its types and the checks of its fields; version ordering.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

use super::{PackageError, MANIFEST};
use crate::config::WorkerType;

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

pub(super) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

pub(super) fn safe_relative(p: &str) -> bool {
    let path = Path::new(p);
    !p.is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)))
}

/// Orders versions: dotted numbers compared numerically; a `-suffix` sorts before the plain one.
pub(super) fn version_key(v: &str) -> Option<(Vec<u64>, bool, String)> {
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
