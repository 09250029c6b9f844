//! The `hsu` command. `hsu run` runs a config; the client commands (`ls`, `status`, `start`,
//! `stop`, `restart`, `logs`, `shutdown`) operate a running one through its control API.
//!
//! Exit codes: 0 ok, 1 the operation failed, 2 usage (or an invalid config for `run`), 3 the
//! master cannot be reached.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// Run services as OS processes or in-process modules under one lifecycle.
///
/// Ctrl-C or SIGTERM stops `hsu run` gracefully. RUST_LOG overrides the log level.
#[derive(Debug, Parser)]
#[command(name = "hsu", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the workers of CONFIG (YAML); without CONFIG, the built-in demo.
    Run {
        /// The config file.
        config: Option<PathBuf>,
    },
    /// Validate config files and print every problem with its file, line, worker and field:
    /// the rules, then what this machine must offer (programs, directories, users, plugin
    /// headers read from the files, each module's own config check). Nothing is run.
    Check {
        /// The config files.
        #[arg(required = true)]
        configs: Vec<PathBuf>,
        /// Check the files alone, not this machine (for configs meant for another host).
        #[arg(long)]
        config_only: bool,
    },
    /// Manage installed packages (a worker's `package: name[:version]` runs one).
    Package {
        /// The packages directory (default: the master's default, `hsu-packages`).
        #[arg(long, global = true)]
        root: Option<PathBuf>,
        #[command(subcommand)]
        action: cli::package::Action,
    },
    /// List the workers of a running master: state, pid, uptime, restarts, health, CPU, memory
    /// and why.
    #[command(visible_alias = "list")]
    Ls {
        #[command(flatten)]
        to: cli::client::Endpoint,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show everything the master knows about one worker.
    Status {
        #[command(flatten)]
        to: cli::client::Endpoint,
        /// The worker.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Start workers (a manual start also closes an open restart circuit).
    Start {
        #[command(flatten)]
        to: cli::client::Endpoint,
        #[command(flatten)]
        which: cli::control::Which,
    },
    /// Stop workers (no automatic restart follows).
    Stop {
        #[command(flatten)]
        to: cli::client::Endpoint,
        #[command(flatten)]
        which: cli::control::Which,
    },
    /// Restart workers: stop if running, then start.
    Restart {
        #[command(flatten)]
        to: cli::client::Endpoint,
        #[command(flatten)]
        which: cli::control::Which,
        /// Start even if the stop fails or times out.
        #[arg(long)]
        force: bool,
    },
    /// Print the last lines of workers' logs (process output and module tracing alike, across
    /// rotated files), and with -f every new line as it is written. Several workers (or all,
    /// without IDs) are interleaved, each line prefixed with its worker.
    Logs {
        #[command(flatten)]
        to: cli::client::Endpoint,
        /// The workers [default: all].
        ids: Vec<String>,
        /// How many lines of each log before following.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        /// Keep printing new lines until interrupted.
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Print every worker state change as it happens (resumable with --since).
    Events {
        #[command(flatten)]
        to: cli::client::Endpoint,
        /// Start after this event number (the `seq` of an event seen before).
        #[arg(long)]
        since: Option<u64>,
        /// Print each event as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Apply a changed config to the running master: only what changed is touched
    /// (unchanged workers keep their process, uptime and counters). Without CONFIG, the master
    /// reads its own config file again (as on SIGHUP).
    Apply {
        #[command(flatten)]
        to: cli::client::Endpoint,
        /// The new config [default: the file the master was started with].
        file: Option<PathBuf>,
        /// Show the plan, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Add a worker (a YAML file with one worker's config, as in `workers:`) and start it.
    Add {
        #[command(flatten)]
        to: cli::client::Endpoint,
        /// The worker's config file.
        file: PathBuf,
        /// Add it without starting it.
        #[arg(long)]
        no_start: bool,
    },
    /// Stop and remove workers.
    #[command(visible_alias = "remove")]
    Rm {
        #[command(flatten)]
        to: cli::client::Endpoint,
        /// The workers.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Stop every worker and end the master.
    Shutdown {
        #[command(flatten)]
        to: cli::client::Endpoint,
    },
    /// Print the JSON Schema of the config file (for editors: see the README's Config
    /// reference).
    Schema,
    /// Print a shell completion script.
    /// Convert a config written for another supervisor into this project's YAML (stdout, or
    /// `-o FILE`). Every field is carried over or listed on stderr with its path; exit 3 when
    /// some were not carried over, 2 when the result does not pass `hsu check`.
    Import {
        /// The dialect of FILE.
        dialect: cli::import::Dialect,
        /// The file to convert.
        file: PathBuf,
        /// Write the result here instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Print the systemd units for running CONFIG as a service (as `pm2 startup` does):
    /// `Type=notify` (hsu reports ready, status, reloads and stops, and pings the watchdog),
    /// and one `.socket` unit per declared socket, so the sockets outlive a restart of hsu.
    SystemdUnit {
        /// The config file (default: the built-in demo).
        config: Option<PathBuf>,
        /// The service's name (default `hsu-<config file stem>`).
        #[arg(long)]
        name: Option<String>,
        /// Write the unit files into DIR (e.g. /etc/systemd/system) instead of printing them.
        #[arg(long, value_name = "DIR")]
        output_dir: Option<PathBuf>,
    },
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version are not errors.
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if !matches!(cli.command, Command::Run { .. }) {
        hsu::internals::sys::default_sigpipe();
    }
    match cli.command {
        Command::Run { config } => cli::run::main(config),
        Command::Import {
            dialect,
            file,
            output,
        } => cli::import::main(dialect, &file, output),
        Command::SystemdUnit {
            config,
            name,
            output_dir,
        } => cli::systemd::unit_main(config, name, output_dir),
        Command::Check {
            configs,
            config_only,
        } => cli::check::main(&configs, config_only),
        Command::Package { root, action } => cli::package::main(root, action),
        Command::Ls { to, json } => cli::control::ls(&to, json),
        Command::Status { to, id, json } => cli::control::status(&to, &id, json),
        Command::Start { to, which } => cli::control::act(&to, &which, "start", false),
        Command::Stop { to, which } => cli::control::act(&to, &which, "stop", false),
        Command::Restart { to, which, force } => cli::control::act(&to, &which, "restart", force),
        Command::Logs {
            to,
            ids,
            lines,
            follow,
        } => cli::control::logs(&to, &ids, lines, follow),
        Command::Events { to, since, json } => cli::control::events(&to, since, json),
        Command::Shutdown { to } => cli::control::shutdown(&to),
        Command::Apply { to, file, dry_run } => cli::control::apply(&to, file.as_deref(), dry_run),
        Command::Add { to, file, no_start } => cli::control::add(&to, &file, !no_start),
        Command::Rm { to, ids } => cli::control::remove(&to, &ids),
        Command::Schema => {
            let schema = hsu::config::config_schema();
            match serde_json::to_string_pretty(&schema) {
                Ok(text) => {
                    println!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "hsu", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
    }
}
