//! `hsu run [CONFIG]`: locks the run directory (one master per run directory), starts a master
//! and its control API, adds and starts every worker, and on Ctrl-C, SIGTERM or `hsu shutdown`
//! stops them all and exits 0.

use std::path::PathBuf;
use std::process::ExitCode;

use hsu::api::server::{ControlServer, RunLock};
use hsu::api::ApiState;
use hsu::{AddConfigured, MasterActor, Shutdown};

/// Runs until a signal; exit 0 after a graceful stop, 1 on a failure to start the master, 2 on
/// a bad config.
pub fn main(path: Option<PathBuf>) -> ExitCode {
    // Sockets systemd passed (socket activation) are taken before anything else opens a
    // descriptor; workers whose `sockets:` match their names get them instead of a bind.
    let adopted = hsu::sockets::adopt_inherited();
    let notifier = super::systemd::Notifier::from_env();
    let (config, specs) = match super::load(path.as_deref()) {
        Ok(loaded) => loaded,
        Err(e) => {
            super::print_error(&e);
            return ExitCode::from(2);
        }
    };
    // Still one thread: the descriptor table grows for all the workers now, not in steps
    // that each wait for the kernel's RCU grace period once threads share it.
    let processes = specs
        .iter()
        .filter(|s| {
            !matches!(
                s.deployment.deployment(),
                hsu::Deployment::Native | hsu::Deployment::Plugin
            )
        })
        .count();
    let reserved = hsu::internals::sys::reserve_fds(processes);
    init_tracing(config.master.log_level.as_str());
    if let Err(e) = reserved {
        tracing::warn!(error = %e, "cannot raise the open-file limit or size the descriptor table; many process workers may hit EMFILE");
    }
    if !adopted.is_empty() {
        tracing::info!(sockets = ?adopted, "sockets passed by the service manager (LISTEN_FDS)");
    }
    let source = path
        .as_ref()
        .map_or("the embedded default config".to_string(), |p| {
            p.display().to_string()
        });
    // What `hsu check` would refuse still runs (a program may appear later), but is said.
    for issue in super::preflight(&specs) {
        tracing::warn!("{issue}");
    }
    let run_directory = config.master.run_directory.clone();
    // Before anything is spawned or written: a second master here would take over the first
    // one's pid files and socket.
    let run_lock = match RunLock::acquire(&run_directory) {
        Ok(lock) => lock,
        Err(e) => {
            super::print_error(&e);
            return ExitCode::FAILURE;
        }
    };
    // The previous master of this run directory may have died without stopping its workers:
    // what it left running goes before anything new starts.
    for line in hsu::clean_up_run_directory(&run_directory) {
        tracing::warn!("{line}");
    }
    // Held until `main` returns; the forced stop releases it itself (it exits at once).
    let lock = &run_lock;
    let system = actix_rt::System::new();
    let result = system.block_on(async move {
        // Installed first, so a signal during start-up also stops gracefully, and SIGHUP
        // (which would otherwise end the process) reloads instead.
        let mut signals = StopSignals::register()?;
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        // Orphans of the workers' trees come to this master and are reaped (a container's init
        // does the same as PID 1). Only the launch gets this default: the config kept for
        // reloads stays as written, so a reload compares like with like.
        let mut launched = config.master.clone();
        launched.subreaper.get_or_insert(true);
        let master = MasterActor::launch(launched)?;
        hsu::builtin::register(&master).await?;
        super::systemd::spawn_keeper(notifier.clone(), master.clone());
        // Subscribed before any worker is added, so the event stream has every event.
        let events = master.send(hsu::Subscribe).await?;
        let mut state = None;
        let api = ControlServer::start(&config.master.api, &run_directory, |transports| {
            let made = ApiState::new(
                master.clone(),
                config.master.clone(),
                path.as_ref().map(|p| p.display().to_string()),
                transports,
                events,
            );
            state = Some(made.clone());
            made
        })
        .map_err(|e| format!("cannot serve the control API: {e}"))?;
        let state = state.ok_or("the control API has no state")?;
        for transport in &api.transports {
            tracing::info!(%transport, "control API listening");
        }
        // Groups first, so members are started (in order) by their top-level group; other
        // workers start on their own.
        let groups = hsu::config::validate_groups(&config).map_err(|issues| {
            hsu::ConfigError::Invalid {
                path: path.clone(),
                issues,
            }
        })?;
        // Not needed from here on (a reload reads the file again): its memory goes to the
        // workers added next rather than staying beside them.
        drop(config);
        let members: std::collections::HashSet<hsu::WorkerId> =
            groups.iter().flat_map(|g| g.members.iter().cloned()).collect();
        let top: Vec<hsu::WorkerId> = groups
            .iter()
            .filter(|g| g.parent.is_none())
            .map(|g| g.id.clone())
            .collect();
        master.send(hsu::SetGroups(groups)).await?;
        let mut exhausted = master.send(hsu::WaitExhausted).await?;
        // Started by their schedule, not at launch; disabled ones (`enabled: false`) by hand.
        let scheduled: std::collections::HashSet<hsu::WorkerId> = specs
            .iter()
            .filter(|s| s.schedule.is_some() || !s.enabled)
            .map(|s| s.id.clone())
            .collect();
        for spec in specs.iter().filter(|s| !s.enabled) {
            tracing::info!(worker = %spec.id, "disabled (enabled: false): added, not started; `hsu start {}` starts it", spec.id);
        }
        // Each started as soon as it is added (queued behind the add), answered whenever its
        // start is done: the first worker runs while the others are still being added.
        let launcher = super::launch::Launcher::new(master.clone());
        let mut failed_at_add = Vec::new();
        let mut workers = 0;
        let mut failures = Vec::new();
        let configured = specs.len();
        // Validated once, above: the master takes the specs as they are. A worker whose code
        // cannot be loaded or whose initialize fails is in the table all the same, failed.
        // Each starts as soon as it is added (its `depends_on:` permitting: a dependency not
        // added yet is waited for like one not running yet).
        for spec in specs {
            let id = spec.id.clone();
            let can_wait = !spec.depends_on.is_empty();
            match master.send(AddConfigured(spec)).await? {
                Ok(done) => {
                    if let Some(e) = &done.error {
                        failures.push(format!("worker `{id}`: {e}"));
                    }
                    workers += 1;
                    if !members.contains(&done.id) && !scheduled.contains(&done.id) {
                        if done.error.is_none() {
                            launcher.start(done.id, can_wait);
                        } else {
                            // Tried once more with the others, unless nothing can run.
                            failed_at_add.push(done.id);
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(worker = %id, error = %hsu::error_chain(&e), "worker not added");
                    failures.push(hsu::error_chain(&e));
                }
            }
        }
        if configured > 0 && failures.len() == configured {
            // Nothing of the config can run: say so and fail, rather than idle with nothing.
            let _ = master.send(Shutdown).await;
            api.stop().await;
            return Err(format!(
                "no worker of {source} can run:\n  {}",
                failures.join("\n  ")
            )
            .into());
        }
        for id in failed_at_add {
            launcher.start(id, true);
        }
        // A group starts its members in order, waiting for each.
        for id in top {
            launcher.start(id, true);
        }
        let unclaimed = hsu::sockets::unclaimed_inherited();
        if !unclaimed.is_empty() {
            tracing::warn!(sockets = ?unclaimed, "sockets passed by the service manager that no worker's `sockets:` names (FileDescriptorName= <worker>.<socket>); closed");
            hsu::sockets::close_unclaimed();
        }
        // Started all at once, each as soon as its `depends_on:` allows; signals are
        // answered meanwhile (a worker may wait long for what it depends on).
        let starting = launcher.finish();
        tokio::pin!(starting);
        let mut started = false;
        let mut failed = None;
        let mut exhausted_seen = false;
        loop {
            tokio::select! {
                _ = &mut starting, if !started => {
                    started = true;
                    tracing::info!(workers, "hsu running {source}; Ctrl-C or SIGTERM stops it");
                    let rows = master.send(hsu::GetAllWorkerStates).await.unwrap_or_default();
                    notifier.ready(&super::systemd::counts(&rows));
                }
                signal = signals.next() => {
                    tracing::info!(signal, "stopping all workers (a second Ctrl-C forces)");
                    break;
                }
                () = state.shutdown_requested() => {
                    tracing::info!(reason = "a shutdown request", "stopping all workers");
                    break;
                }
                reason = &mut exhausted, if !exhausted_seen => {
                    exhausted_seen = true;
                    if let Ok(reason) = reason {
                        tracing::error!(%reason, "a group with `on_exhausted: shutdown` failed; stopping all workers");
                        failed = Some(reason);
                        break;
                    }
                }
                _ = hangup.recv() => {
                    notifier.reloading();
                    reload(&state).await;
                    let rows = master.send(hsu::GetAllWorkerStates).await.unwrap_or_default();
                    notifier.ready(&super::systemd::counts(&rows));
                }
            }
        }
        notifier.stopping();
        let report = tokio::select! {
            report = master.send(Shutdown) => report?,
            _ = signals.next() => force(&master, &run_directory, lock).await,
        };
        for (id, error) in &report.errors {
            tracing::warn!(worker = %id, %error, "stop failed");
        }
        tracing::info!(stopped = report.stopped.len(), "all workers stopped; bye");
        api.stop().await;
        if let Some(reason) = failed {
            return Err(format!("stopped because {reason}").into());
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    });
    // After a shutdown, everything the master ran is stopped and cleaned up (workers, plugins'
    // `destroy`, sockets, cgroups and their keeper, the run table). What is left is memory:
    // the worker table, the event history, the actors' queues. Freeing it piece by piece was
    // the last 5–7 ms of a stop of 1,000 workers (most of it in glibc's `free`) and changes
    // nothing the exit does not, so it is left to the exit. A run that failed before its
    // shutdown is dropped: that is what cleans up after it.
    if result.is_ok() {
        std::mem::forget(system);
    } else {
        drop(system);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            super::print_error(e.as_ref());
            ExitCode::FAILURE
        }
    }
}

/// SIGHUP: the config file read again and applied; a bad one changes nothing.
async fn reload(state: &ApiState) {
    tracing::info!(signal = "SIGHUP", "reloading the config");
    match hsu::api::reload_config(state, false).await {
        Ok(a) => tracing::info!(
            added = ?a.added,
            removed = ?a.removed,
            changed = ?a.changed,
            unchanged = a.unchanged.len(),
            errors = ?a.errors,
            needs_restart = ?a.needs_restart,
            "config reloaded"
        ),
        Err(e) => tracing::error!(error = %e, "reload refused; nothing changed"),
    }
}

/// SIGTERM and SIGINT, registered at once (so one during start-up is not lost).
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn register() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// The next one, by name.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// A second stop signal while the graceful stop runs: no more waiting. Every worker process
/// group gets SIGKILL, the run files are removed, and the master exits 130.
async fn force(
    master: &actix::Addr<MasterActor>,
    run_directory: &std::path::Path,
    lock: &RunLock,
) -> ! {
    tracing::warn!("second stop signal: forcing, killing every worker process now");
    if let Ok(rows) = master.send(hsu::GetAllWorkerStates).await {
        for row in rows {
            if let Some(pid) = row.pid {
                let _ = hsu::internals::sys::signal_group(pid as i32, libc::SIGKILL);
            }
        }
    }
    let _ = std::fs::remove_file(run_directory.join(hsu::internals::run_table::FILE));
    for file in [hsu::api::server::SOCKET, hsu::api::server::TOKEN] {
        let _ = std::fs::remove_file(run_directory.join(file));
    }
    lock.release();
    std::process::exit(130)
}

fn init_tracing(level: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let console = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(console)
        // Module workers' events also go to their own log files, beside process output.
        .with(hsu::worker_logs_layer())
        .try_init();
}
