//! The `hsu` command: `hsu run [CONFIG]`, `hsu check CONFIG…`, `hsu package …`.

mod cli;

use std::process::ExitCode;

const USAGE: &str = "\
hsu: run services as OS processes or in-process modules under one lifecycle

usage:
  hsu run [CONFIG]     run the workers of CONFIG (YAML); without CONFIG, the built-in demo
  hsu check CONFIG...  validate config files and print every problem
  hsu package install DIR|TARBALL | list | remove NAME[:VERSION]  [--root DIR]
                       manage installed packages (default root: hsu-packages); a worker's
                       `package: name[:version]` runs one
  hsu --help | --version

Ctrl-C or SIGTERM stops all workers gracefully. RUST_LOG overrides the log level.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("run") if args.len() <= 2 => cli::run::main(args.get(1).map(Into::into)),
        Some("check") if args.len() >= 2 => cli::check::main(&args[1..]),
        Some("package") => cli::package::main(&args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some("-V" | "--version") => {
            println!("hsu {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
