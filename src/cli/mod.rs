//! One file per subcommand.

pub mod check;
pub mod client;
pub mod control;
pub mod import;
pub mod launch;
pub mod package;
pub mod run;
pub mod systemd;

use std::path::Path;

/// The control socket's file name in the run directory.
pub const SOCKET_FILE: &str = hsu::api::server::SOCKET;
/// The generated API token's file name in the run directory.
pub const TOKEN_FILE: &str = hsu::api::server::TOKEN;

use hsu::{ConfigError, HsuConfig, WorkerSpec};

/// Loads and validates a config file (or the embedded default when `path` is `None`) against
/// the built-in module names (the factories `hsu run` can create) and the installed packages.
/// This is the one validation: `hsu run` hands the specs to the master as they are.
pub fn load(path: Option<&Path>) -> Result<(HsuConfig, Vec<WorkerSpec>), ConfigError> {
    let known = |name: &str| hsu::builtin::NAMES.contains(&name);
    match path {
        // A refused file ends this process: parsed on two threads (see `load_beside`).
        Some(path) => {
            let config = HsuConfig::load_beside(path)?;
            let specs = config.validate(&known, Some(path))?;
            Ok((config, specs))
        }
        None => {
            let origin = Path::new("<embedded default config>");
            let config = HsuConfig::parse(hsu::DEFAULT_CONFIG, origin)?;
            let specs = config.validate(&known, Some(origin))?;
            Ok((config, specs))
        }
    }
}

/// What the machine says about validated workers ([`hsu::preflight`]), with the built-in
/// factories' `config:` checks: what `hsu check` reports and `hsu run` warns of.
pub fn preflight(specs: &[WorkerSpec]) -> Vec<hsu::config::ValidationIssue> {
    let factories = hsu::builtin::factories();
    hsu::preflight(specs, &|name| {
        factories
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.factory.clone())
    })
}

/// Prints `error: …` with the whole cause chain.
pub fn print_error(error: &dyn std::error::Error) {
    eprintln!("error: {}", hsu::error_chain(error));
}
