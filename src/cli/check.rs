//! `hsu check CONFIG…`: validates each file, then checks what the machine must offer (programs,
//! plugin files, users, each module's own `config:` check) without running anything, and
//! prints every problem with its worker and field.

use std::path::PathBuf;
use std::process::ExitCode;

/// Exit 0 when every file is valid, 1 otherwise. `config_only`: the rules only.
pub fn main(paths: &[PathBuf], config_only: bool) -> ExitCode {
    let mut ok = true;
    for path in paths {
        match super::load(Some(path)) {
            Ok((config, specs)) => {
                let issues = if config_only {
                    Vec::new()
                } else {
                    config.located(super::preflight(&specs))
                };
                if issues.is_empty() {
                    println!("ok: {} ({} workers)", path.display(), specs.len());
                } else {
                    ok = false;
                    super::print_error(&hsu::ConfigError::Invalid {
                        path: Some(path.clone()),
                        issues,
                    });
                }
            }
            Err(e) => {
                ok = false;
                super::print_error(&e);
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
