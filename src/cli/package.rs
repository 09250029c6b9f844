//! `hsu package install SOURCE | list | remove NAME[:VERSION]`, each with `--root DIR` (default
//! `hsu-packages`, the master's default `packages_directory`).

use std::path::PathBuf;
use std::process::ExitCode;

use hsu::packages;

/// What to do with packages.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Install a package directory or a `.tar`/`.tar.gz` (every file's sha256 is checked;
    /// all or nothing).
    Install {
        /// The directory or tarball with a `package.yaml`.
        source: PathBuf,
    },
    /// List installed packages.
    List,
    /// Remove `name:version`, or every version of `name`.
    Remove {
        /// `name[:version]`.
        wanted: String,
    },
}

/// Runs one package subcommand; exit 0 on success, 1 on failure.
pub fn main(root: Option<PathBuf>, action: Action) -> ExitCode {
    let root = root.unwrap_or_else(|| hsu::MasterConfig::default().packages_directory);
    let result = match action {
        Action::Install { source } => packages::install(&source, &root).map(|p| {
            println!("installed {} at {}", p.manifest.id(), p.path.display());
        }),
        Action::List => packages::list(&root).map(|all| {
            if all.is_empty() {
                println!("no packages under {}", root.display());
            }
            for p in all {
                let types: Vec<_> = p
                    .manifest
                    .supported_types
                    .iter()
                    .map(|t| format!("{t:?}").to_lowercase())
                    .collect();
                println!(
                    "{}\t{}\t{}\t{}",
                    p.manifest.id(),
                    types.join(","),
                    p.path.display(),
                    p.manifest.description
                );
            }
        }),
        Action::Remove { wanted } => packages::remove(&root, &wanted).map(|removed| {
            for id in removed {
                println!("removed {id}");
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            super::print_error(&e);
            ExitCode::FAILURE
        }
    }
}
