//! One module, deployed as its own process: [`run_process`] hosts a [`WorkerModule`] in a
//! `main` as an *integrated* worker, so the same code runs in the master or beside it, chosen
//! by YAML (`type: process, process_type: integrated, execution: {executable_path: …}`).
//!
//! ```no_run
//! # use hsu_module::*;
//! # #[derive(Default)] struct MyModule;
//! # #[async_trait] impl WorkerModule for MyModule {
//! #   async fn initialize(&mut self, _: &ModuleContext, _: &ModuleConfig) -> Result<(), ModuleError> { Ok(()) }
//! #   async fn start(&mut self, _: &ModuleContext) -> Result<(), ModuleError> { Ok(()) }
//! #   fn info(&self) -> ModuleInfo { ModuleInfo::new("my", "1.0.0") } }
//! fn main() -> std::process::ExitCode {
//!     hsu_module::run_process(MyModule::default)
//! }
//! ```

use std::panic::AssertUnwindSafe;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;

use crate::{ModuleConfig, ModuleContext, TaskFuture, TaskSpawner, WorkerModule};

/// How long `stop` may take after SIGTERM; the master's own stop timeout is the real bound.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the module made by `make` as an integrated worker process, and returns the exit code
/// for `main`:
///
/// 1. reads its id from `HSU_WORKER_ID` and the control port from `--port N` or `HSU_PORT`,
///    and binds that port on 127.0.0.1 (exit code [`crate::integrated::EXIT_PORT_IN_USE`] if it
///    is taken, so the master retries with another);
/// 2. serves HSU's control protocol there (Ping, and gRPC health reflecting `is_healthy`;
///    both say "not serving" until `start` is done) until SIGTERM or SIGINT, or until a module
///    task fails;
/// 3. reads the module's `config:` from `HSU_CONFIG` (YAML, set by the master; empty if
///    absent) and its `sockets:` from `LISTEN_FDS` (systemd's protocol, as the master passes
///    them: [`ModuleContext::socket`] finds them by name), calls `initialize`, then `start`;
/// 4. cancels the context, calls `stop`, and exits: 0 after a requested stop, 1 after a
///    task failure (so the master's `on_failure` policy restarts it), 2 on bad setup or a
///    failed `initialize`/`start`.
///
/// `tracing` events go to stderr, which the master writes to the worker's log.
pub fn run_process<M, F>(make: F) -> ExitCode
where
    M: WorkerModule,
    F: FnOnce() -> M,
{
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start a runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let module = make();
    match runtime.block_on(host(module)) {
        Ok(code) => code,
        Err(message) => {
            tracing::error!("{message}");
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

/// The sockets the master handed over by systemd's protocol (`LISTEN_PID` this process,
/// `LISTEN_FDS`, `LISTEN_FDNAMES`), by name: the same ones a module gets in the master.
#[allow(unsafe_code)]
fn inherited_sockets() -> Result<Vec<(String, std::os::fd::OwnedFd)>, String> {
    let fds = sd_notify::listen_fds_with_names(false)
        .map_err(|e| format!("the sockets passed (LISTEN_FDS, LISTEN_FDNAMES): {e}"))?;
    Ok(fds
        .map(|(fd, name)| {
            // SAFETY: the protocol hands descriptors 3.. to this process (LISTEN_PID is ours,
            // checked by sd_notify, which also checked each is open and made it
            // close-on-exec); each is taken here once and owned from here on.
            let owned =
                unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
            (name, owned)
        })
        .collect())
}

async fn host<M: WorkerModule>(module: M) -> Result<ExitCode, String> {
    let id = std::env::var("HSU_WORKER_ID").unwrap_or_else(|_| "module".to_string());
    let port = crate::integrated::port_from_env()
        .ok_or("no control port: run this under hsu as an integrated worker (it passes --port N and HSU_PORT)")?;
    // The port was picked by the master and may have been taken since: bind it before
    // anything slow, and say so by the exit code, so the master retries with another port.
    let listener = match crate::integrated::bind(port) {
        Ok(listener) => listener,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            eprintln!("error: worker `{id}`: control port 127.0.0.1:{port} is in use: {e}");
            return Ok(ExitCode::from(crate::integrated::EXIT_PORT_IN_USE));
        }
        Err(e) => {
            return Err(format!(
                "worker `{id}`: cannot bind the control port 127.0.0.1:{port}: {e}"
            ))
        }
    };
    let config = match std::env::var("HSU_CONFIG") {
        Ok(text) => ModuleConfig::new(
            serde_yaml::from_str(&text)
                .map_err(|e| format!("HSU_CONFIG is not valid YAML: {e}"))?,
        ),
        Err(_) => ModuleConfig::default(),
    };
    let span = tracing::info_span!("worker", id = %id);
    let cancel = CancellationToken::new();
    let (failures, mut failed) = mpsc::unbounded_channel::<String>();
    let tasks = Arc::new(std::sync::Mutex::new(Vec::new()));
    let ctx = ModuleContext::new(
        id.as_str(),
        cancel.clone(),
        span,
        Arc::new(Spawner {
            failures,
            tasks: tasks.clone(),
        }),
    )
    .with_sockets(inherited_sockets()?);
    let module = Arc::new(Mutex::new(module));
    // The control protocol answers from now on; Ping fails (UNAVAILABLE) until `start` is done,
    // so the master sees "not ready yet" rather than a connection that hangs.
    let started = Arc::new(AtomicBool::new(false));
    let health = {
        let module = module.clone();
        let started = started.clone();
        move || {
            let module = module.clone();
            let started = started.load(Ordering::SeqCst);
            async move { started && module.lock().await.is_healthy().await }
        }
    };
    let (reason_tx, reason_rx) = tokio::sync::oneshot::channel::<Option<String>>();
    let stop = CancellationToken::new();
    let server = tokio::spawn(crate::integrated::serve_on(
        listener,
        health,
        stop.clone().cancelled_owned(),
    ));
    let watcher = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let reason = wait_for_stop(&mut failed).await;
            let _ = reason_tx.send(reason);
            stop.cancel();
        })
    };
    let set_up = async {
        module
            .lock()
            .await
            .initialize(&ctx, &config)
            .await
            .map_err(|e| format!("worker `{id}`: initialize failed: {e}"))?;
        module
            .lock()
            .await
            .start(&ctx)
            .await
            .map_err(|e| format!("worker `{id}`: start failed: {e}"))
    };
    if let Err(e) = set_up.await {
        watcher.abort();
        stop.cancel();
        let _ = server.await;
        return Err(e);
    }
    started.store(true, Ordering::SeqCst);
    tracing::info!(worker = %id, port, "module started; serving the control protocol");

    let served = server.await;
    watcher.abort();
    match served {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return Err(format!(
                "worker `{id}`: control protocol on 127.0.0.1:{port} failed: {e}"
            ))
        }
        Err(e) => return Err(format!("worker `{id}`: control protocol task ended: {e}")),
    }
    let failure = reason_rx.await.unwrap_or(None);

    cancel.cancel();
    let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
    let stopping = async { module.lock().await.stop(&ctx).await };
    match tokio::time::timeout_at(deadline, stopping).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(worker = %id, error = %e, "stop failed"),
        Err(_) => tracing::warn!(worker = %id, "stop did not finish within {STOP_TIMEOUT:?}"),
    }
    // The tasks end once cancelled (what they began finished); those that do not by the
    // deadline are aborted with the runtime.
    let running: Vec<_> = tasks
        .lock()
        .map(|mut t| t.drain(..).collect())
        .unwrap_or_default();
    if tokio::time::timeout_at(deadline, futures::future::join_all(running))
        .await
        .is_err()
    {
        tracing::warn!(worker = %id, "tasks still running {STOP_TIMEOUT:?} after the stop; ending them");
    }
    Ok(match failure {
        None => {
            tracing::info!(worker = %id, "stopped");
            ExitCode::SUCCESS
        }
        Some(reason) => {
            tracing::error!(worker = %id, "{reason}");
            ExitCode::FAILURE
        }
    })
}

/// `None` on SIGTERM/SIGINT; the failure on a failed task.
async fn wait_for_stop(failed: &mut mpsc::UnboundedReceiver<String>) -> Option<String> {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return failed.recv().await;
    };
    tokio::select! {
        _ = term.recv() => None,
        _ = int.recv() => None,
        reason = failed.recv() => reason,
    }
}

/// Runs module tasks on this process's runtime; an error or panic ends the process. The
/// tasks are kept, so the process waits for them at the stop (as the master does for a
/// module inside it): a task that drains its connections finishes before the process exits.
struct Spawner {
    failures: mpsc::UnboundedSender<String>,
    tasks: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl TaskSpawner for Spawner {
    fn spawn(&self, name: String, task: TaskFuture) {
        let failures = self.failures.clone();
        let handle = tokio::spawn(async move {
            let failure = match AssertUnwindSafe(task).catch_unwind().await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => format!("task `{name}` failed: {e}"),
                Err(panic) => {
                    let text = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "non-text panic".into());
                    format!("task `{name}` panicked: {text}")
                }
            };
            let _ = failures.send(failure);
        });
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.retain(|t| !t.is_finished());
            tasks.push(handle);
        }
    }
}
