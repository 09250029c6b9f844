//! Running under systemd: the notify protocol for `hsu run` (`READY=1`, `STATUS=`,
//! `RELOADING=1`, `STOPPING=1`, `WATCHDOG=1`, through the `sd-notify` crate), and
//! `hsu systemd-unit`, which prints the unit files for a config.
//!
//! Nothing happens without `NOTIFY_SOCKET`: outside systemd every call is a no-op.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use sd_notify::NotifyState;

/// The notify socket of the service manager, if `hsu run` was started by one.
#[derive(Clone)]
pub struct Notifier {
    enabled: bool,
}

impl Notifier {
    /// From the environment (`NOTIFY_SOCKET`).
    pub fn from_env() -> Self {
        Self {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
        }
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(false, states) {
            tracing::warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
        }
    }

    /// The configured workers are started: `READY=1` with the counts.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// `STATUS=` only.
    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// A reload begins: `RELOADING=1` with `MONOTONIC_USEC` (what `Type=notify-reload` needs).
    pub fn reloading(&self) {
        let mut states = vec![NotifyState::Reloading, NotifyState::Status("reloading")];
        if let Ok(now) = NotifyState::monotonic_usec_now() {
            states.push(now);
        }
        self.send(&states);
    }

    /// The stop begins.
    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    /// `WATCHDOG=1`.
    fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }
}

/// "12 running, 1 failed" from the master's table.
pub fn counts(rows: &[hsu::WorkerSummary]) -> String {
    use std::collections::BTreeMap;
    let mut by_state: BTreeMap<String, usize> = BTreeMap::new();
    for row in rows {
        let state = if row.state.is_failed() {
            "failed".to_string()
        } else {
            row.state.to_string()
        };
        *by_state.entry(state).or_default() += 1;
    }
    if by_state.is_empty() {
        return "no workers".into();
    }
    let mut parts: Vec<String> = Vec::new();
    // Running first, failed second, the rest by name.
    for first in ["running", "failed"] {
        if let Some(n) = by_state.remove(first) {
            parts.push(format!("{n} {first}"));
        }
    }
    parts.extend(by_state.into_iter().map(|(s, n)| format!("{n} {s}")));
    parts.join(", ")
}

/// Keeps `STATUS=` current (every second, when it changed) and, under a watchdog
/// (`WATCHDOG_USEC`, for this process), sends `WATCHDOG=1` at half the interval — only while
/// the master answers, so a master that hangs is restarted by systemd.
pub fn spawn_keeper(notifier: Notifier, master: actix::Addr<hsu::MasterActor>) {
    if !notifier.enabled {
        return;
    }
    let watchdog = watchdog_interval().map(|w| w / 2);
    if let Some(every) = watchdog {
        tracing::info!(every = ?every, "systemd watchdog: pinging");
    }
    let tick = watchdog.map_or(Duration::from_secs(1), |w| w.min(Duration::from_secs(1)));
    actix_rt::spawn(async move {
        let mut last_status = String::new();
        let mut last_status_at = std::time::Instant::now();
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let answer = tokio::time::timeout(tick, master.send(hsu::GetAllWorkerStates)).await;
            let Ok(Ok(rows)) = answer else {
                tracing::warn!("the master did not answer within {tick:?}; no watchdog ping");
                continue;
            };
            if watchdog.is_some() {
                notifier.watchdog();
            }
            let status = counts(&rows);
            if status != last_status && last_status_at.elapsed() >= Duration::from_secs(1) {
                notifier.status(&status);
                last_status = status;
                last_status_at = std::time::Instant::now();
            }
        }
    });
}

/// `WATCHDOG_USEC`, when it is for this process: as `sd_watchdog_enabled(3)` reads it, a
/// `WATCHDOG_PID` that is set must be this process (the `sd-notify` crate's own reader also
/// requires it to be set, which systemd does but not every manager).
fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// `hsu systemd-unit [CONFIG] [--name NAME] [--output-dir DIR]`: the service unit (and a
/// socket unit for each declared socket with a fixed address) for running CONFIG under
/// systemd, on stdout or written into DIR.
pub fn unit_main(
    config: Option<PathBuf>,
    name: Option<String>,
    output_dir: Option<PathBuf>,
) -> ExitCode {
    let (loaded, specs) = match super::load(config.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            super::print_error(&e);
            return ExitCode::from(2);
        }
    };
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: cannot tell where this hsu binary is: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = match config.map(|c| std::path::absolute(&c)).transpose() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let name = name.unwrap_or_else(|| default_name(config.as_deref()));
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
    {
        eprintln!("error: `--name {name}`: a unit name is made of [A-Za-z0-9-_.@]");
        return ExitCode::from(2);
    }
    let files = units(&Unit {
        name: &name,
        exe: &exe,
        config: config.as_deref(),
        stop_timeout: loaded.master.stop_timeout,
        specs: &specs,
    });
    match output_dir {
        None => {
            for (i, (file, text)) in files.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                println!("# {file}");
                print!("{text}");
            }
        }
        Some(dir) => {
            for (file, text) in &files {
                let path = dir.join(file);
                if let Err(e) = std::fs::write(&path, text) {
                    eprintln!("error: cannot write {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
                println!("{}", path.display());
            }
        }
    }
    ExitCode::SUCCESS
}

fn default_name(config: Option<&Path>) -> String {
    let stem = config
        .and_then(|c| c.file_stem())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "default".into());
    let clean: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("hsu-{clean}")
}

/// What the units are made from.
pub struct Unit<'a> {
    /// The unit name without `.service`.
    pub name: &'a str,
    /// The hsu binary.
    pub exe: &'a Path,
    /// The config file (absolute), or the embedded default.
    pub config: Option<&'a Path>,
    /// The master's `stop_timeout`.
    pub stop_timeout: Duration,
    /// The validated workers.
    pub specs: &'a [hsu::WorkerSpec],
}

/// `(file name, text)` of the service unit, then of one socket unit per fixed socket.
pub fn units(unit: &Unit<'_>) -> Vec<(String, String)> {
    let quote = |p: &Path| {
        let text = p.display().to_string();
        if text.contains([' ', '"', '\\']) {
            format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
        } else {
            text
        }
    };
    let mut sockets = Vec::new();
    for spec in unit.specs {
        for socket in &spec.sockets {
            if hsu::config::sockets::is_port_zero(&socket.listen) {
                eprintln!(
                    "note: worker `{}`: socket `{}` listens on port 0 (any free port): hsu binds it itself, no socket unit",
                    spec.id, socket.name
                );
                continue;
            }
            let listen = match &socket.listen {
                hsu::config::ListenAddress::Tcp(a) => a.to_string(),
                hsu::config::ListenAddress::Unix(p) => p.display().to_string(),
            };
            let fd_name = format!("{}.{}", spec.id, socket.name);
            let file = format!("{}-{}-{}.socket", unit.name, spec.id, socket.name);
            let text = format!(
                "[Unit]\nDescription=Socket `{sock}` of worker `{id}` (hsu, {name}.service)\nPartOf={name}.service\n\n[Socket]\nListenStream={listen}\nFileDescriptorName={fd_name}\nService={name}.service\nBacklog={backlog}\n{nonblocking}\n[Install]\nWantedBy=sockets.target\n",
                sock = socket.name,
                id = spec.id,
                name = unit.name,
                backlog = socket.backlog,
                nonblocking = if socket.nonblocking { "NonBlocking=yes\n" } else { "" },
            );
            sockets.push((file, text));
        }
    }
    let exec = match unit.config {
        Some(c) => format!("{} run {}", quote(unit.exe), quote(c)),
        None => format!("{} run", quote(unit.exe)),
    };
    let directory = unit
        .config
        .and_then(|c| c.parent())
        .map(|d| format!("WorkingDirectory={}\n", quote(d)))
        .unwrap_or_default();
    let socket_names: Vec<&str> = sockets.iter().map(|(f, _)| f.as_str()).collect();
    let socket_lines = if socket_names.is_empty() {
        String::new()
    } else {
        format!(
            "Requires={names}\nAfter={names}\n",
            names = socket_names.join(" ")
        )
    };
    let stop = unit.stop_timeout + Duration::from_secs(10);
    let service = format!(
        "[Unit]\nDescription=hsu master: {what}\nDocumentation=man:systemd.service(5)\nAfter=network.target\n{socket_lines}\n[Service]\n\
# hsu says READY=1 once its workers are started, STATUS= with their counts, RELOADING=1 on\n\
# a reload and STOPPING=1 at the stop; WATCHDOG=1 while its master answers.\n\
Type=notify\nNotifyAccess=main\nExecStart={exec}\nExecReload=/bin/kill -HUP $MAINPID\n{directory}\
# SIGTERM to hsu alone: it stops its workers in dependency order; what is left after the\n\
# timeout gets SIGKILL.\n\
KillMode=mixed\nTimeoutStopSec={stop}\nWatchdogSec=30\nRestart=on-failure\n\
# hsu places each worker in a cgroup of its own under its service's.\n\
Delegate=yes\n\n[Install]\nWantedBy=multi-user.target\n",
        what = unit
            .config
            .map_or("the built-in demo".to_string(), |c| c.display().to_string()),
        stop = stop.as_secs(),
    );
    let mut files = vec![(format!("{}.service", unit.name), service)];
    files.extend(sockets);
    files
}
