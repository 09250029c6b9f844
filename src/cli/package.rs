//! `hsu package install SOURCE | list | remove NAME[:VERSION]`, each with `--root DIR` (default
//! `hsu-packages`, the master's default `packages_directory`).

use std::path::PathBuf;
use std::process::ExitCode;

use hsu::packages;

/// Runs one package subcommand; exit 0 on success, 1 on failure, 2 on bad usage.
pub fn main(args: &[String]) -> ExitCode {
    let mut root = hsu::MasterConfig::default().packages_directory;
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "--root" {
            match it.next() {
                Some(dir) => root = PathBuf::from(dir),
                None => return usage(),
            }
        } else {
            rest.push(arg.as_str());
        }
    }
    let result = match rest.as_slice() {
        ["install", source] => packages::install(source.as_ref(), &root).map(|p| {
            println!("installed {} at {}", p.manifest.id(), p.path.display());
        }),
        ["list"] => packages::list(&root).map(|all| {
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
        ["remove", wanted] => packages::remove(&root, wanted).map(|removed| {
            for id in removed {
                println!("removed {id}");
            }
        }),
        _ => return usage(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            super::print_error(&e);
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: hsu package install DIR|TARBALL | list | remove NAME[:VERSION]  [--root DIR]"
    );
    ExitCode::from(2)
}
