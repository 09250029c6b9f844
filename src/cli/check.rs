//! `hsu check CONFIG…`: validates each file and prints every problem with its worker and field.

use std::path::PathBuf;
use std::process::ExitCode;

/// Exit 0 when every file is valid, 1 otherwise.
pub fn main(paths: &[PathBuf]) -> ExitCode {
    let mut ok = true;
    for path in paths {
        match super::load(Some(path)) {
            Ok((_, specs)) => println!("ok: {} ({} workers)", path.display(), specs.len()),
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
