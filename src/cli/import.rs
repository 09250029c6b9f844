//! `hsu import hsu-master-go FILE`: a config in hsu-master-go's dialect, converted (see
//! [`hsu::import`]); what is not carried over is listed on stderr with its path, and the
//! result is checked as `hsu check --config-only` would.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The dialects `hsu import` reads.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Dialect {
    /// hsu-master-go's YAML (`master:`, `log_collection:`, `workers: [{id, type, unit: …}]`).
    HsuMasterGo,
}

/// Converts `file`; writes the result to `output` (or stdout). Exit 0 when everything was
/// carried over, 3 when some fields were not (listed on stderr), 1 when the file cannot be
/// read or converted, 2 when the result does not pass the config checks.
pub fn main(dialect: Dialect, file: &Path, output: Option<PathBuf>) -> ExitCode {
    let Dialect::HsuMasterGo = dialect;
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    let imported = match hsu::import::hsu_master_go(&text) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    let header = format!(
        "# Converted by `hsu import hsu-master-go {}`.\n",
        file.display()
    );
    let yaml = format!("{header}{}", imported.yaml);
    // The result must load: checked against the rules (not this machine: the config may be
    // meant for another host), as if it sat where it is written.
    let origin = output
        .clone()
        .unwrap_or_else(|| file.with_extension("hsu.yaml"));
    let checked = hsu::HsuConfig::parse(&yaml, &origin)
        .and_then(|c| c.validate(&|name| hsu::builtin::NAMES.contains(&name), Some(&origin)));
    for note in &imported.notes {
        eprintln!("{}: {note}", file.display());
    }
    if let Err(e) = &checked {
        eprintln!(
            "error: the converted config does not pass the checks: {}",
            hsu::error_chain(e)
        );
    }
    match &output {
        Some(path) => {
            if let Err(e) = std::fs::write(path, &yaml) {
                eprintln!("error: cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
        None => print!("{yaml}"),
    }
    let dropped = imported.notes.iter().filter(|n| !n.carried).count();
    if checked.is_err() {
        ExitCode::from(2)
    } else if dropped > 0 {
        eprintln!(
            "{}: {dropped} field(s) not carried over (listed above); the rest is converted",
            file.display()
        );
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}
