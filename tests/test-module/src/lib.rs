//! The scripted test module: its `config:` says what each call does (succeed, fail, panic,
//! hang, block), and every call is counted. One crate, three uses: native in the tests (rlib),
//! a plugin (`libhsu_test_plugin.so`, `tests/test-plugin`), and a process (`hsu-test-module`,
//! `hsu_module::run_process`), so the same misbehaviour can be tried in every deployment.
#![allow(missing_docs)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub mod serve;

use hsu_module::{async_trait, ModuleConfig, ModuleContext, ModuleError, ModuleInfo, WorkerModule};
use serde::Deserialize;

/// Counts of calls into test modules, shared by every instance the factory makes.
#[derive(Default, Debug)]
pub struct Calls {
    pub creates: AtomicU32,
    pub initializes: AtomicU32,
    pub starts: AtomicU32,
    pub stops: AtomicU32,
    pub health_checks: AtomicU32,
    /// Tasks alive right now (decremented when a task's future is dropped).
    pub live_tasks: AtomicU32,
}

impl Calls {
    pub fn get(counter: &AtomicU32) -> u32 {
        counter.load(Ordering::SeqCst)
    }
}

/// What a test module does, from its `config:`.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(default, deny_unknown_fields)]
pub struct Script {
    /// `initialize` returns an error.
    pub fail_initialize: bool,
    /// `start`: `ok`, `error`, `panic`, `hang` (async, forever), `block_ms` (blocks its thread).
    pub start: Option<String>,
    /// For `start: block`: how long to block the thread.
    pub block_ms: u64,
    /// The first N starts (across instances) fail with an error; later ones succeed.
    pub fail_first_starts: u32,
    /// `stop`: `ok`, `error`, `panic`, `hang`.
    pub stop: Option<String>,
    /// After start, a task that ends with `error` or `panic` after `task_after_ms`, or
    /// `ignore_cancel` (runs until aborted), or `until_cancel` (default, ends when cancelled).
    pub task: Option<String>,
    pub task_after_ms: u64,
    /// `is_healthy`: `true` (default), `false`, `panic`, `hang`.
    pub healthy: Option<String>,
    /// Only the first N starts fail health (then healthy), when `healthy: false`.
    pub unhealthy_starts: Option<u32>,
    /// Logged (tracing, info) by `start` with the field `marker=true`: shows where a module's
    /// events end up.
    pub log: Option<String>,
    /// Serve HTTP on the worker's socket of this name (see [`serve`]), answering `answer`
    /// (default: `module <worker id>`, or `process <worker id>` as its own process).
    pub serve_socket: Option<String>,
    pub answer: Option<String>,
}

/// A module whose behaviour is scripted by its config and whose calls are counted.
pub struct TestModule {
    calls: Arc<Calls>,
    script: Script,
    start_number: u32,
}

impl TestModule {
    pub fn new(calls: Arc<Calls>) -> Self {
        calls.creates.fetch_add(1, Ordering::SeqCst);
        Self {
            calls,
            script: Script::default(),
            start_number: 0,
        }
    }
}

struct LiveTask(Arc<Calls>);
impl Drop for LiveTask {
    fn drop(&mut self) {
        self.0.live_tasks.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl WorkerModule for TestModule {
    async fn initialize(
        &mut self,
        _: &ModuleContext,
        config: &ModuleConfig,
    ) -> Result<(), ModuleError> {
        self.calls.initializes.fetch_add(1, Ordering::SeqCst);
        self.script = config.parse()?;
        if self.script.fail_initialize {
            return Err(ModuleError::failed("scripted initialize failure"));
        }
        Ok(())
    }

    async fn start(&mut self, ctx: &ModuleContext) -> Result<(), ModuleError> {
        let n = self.calls.starts.fetch_add(1, Ordering::SeqCst) + 1;
        self.start_number = n;
        if n <= self.script.fail_first_starts {
            return Err(ModuleError::failed(format!("scripted start failure #{n}")));
        }
        if let Some(line) = &self.script.log {
            tracing::info!(marker = true, "{line}");
        }
        match self.script.start.as_deref().unwrap_or("ok") {
            "ok" => {}
            "error" => return Err(ModuleError::failed("scripted start failure")),
            "panic" => panic!("scripted panic in start"),
            // Inside the master (native or plugin) it panics; as its own process (where the
            // master passes HSU_PORT) it runs: the case `quarantine:` is for.
            "panic_unless_process" if std::env::var_os("HSU_PORT").is_none() => {
                panic!("scripted panic in start (not in a process)")
            }
            "panic_unless_process" => {}
            "hang" => std::future::pending::<()>().await,
            "block" => std::thread::sleep(Duration::from_millis(self.script.block_ms)),
            other => return Err(ModuleError::Config(format!("unknown start script {other}"))),
        }
        if let Some(name) = &self.script.serve_socket {
            let listener = ctx.tcp_listener(name)?;
            let answer = self.script.answer.clone().unwrap_or_else(|| {
                let form = if std::env::var_os("HSU_PORT").is_some() {
                    "process"
                } else {
                    "module"
                };
                format!("{form} {}", ctx.worker_id())
            });
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let cancel = ctx.cancellation();
            ctx.spawn("serve", async move {
                let serving = tokio::spawn(serve::serve(listener, answer, stopped));
                cancel.cancelled().await;
                let _ = stop.send(true);
                let _ = serving.await;
                Ok(())
            });
        }
        let task = self
            .script
            .task
            .clone()
            .unwrap_or_else(|| "until_cancel".into());
        let after = Duration::from_millis(self.script.task_after_ms);
        let cancel = ctx.cancellation();
        self.calls.live_tasks.fetch_add(1, Ordering::SeqCst);
        let live = LiveTask(self.calls.clone());
        ctx.spawn("scripted", async move {
            let _live = live;
            match task.as_str() {
                "error" => {
                    tokio::time::sleep(after).await;
                    Err(ModuleError::failed("scripted task failure"))
                }
                "panic" => {
                    tokio::time::sleep(after).await;
                    panic!("scripted panic in task")
                }
                "ignore_cancel" => loop {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                },
                _ => {
                    cancel.cancelled().await;
                    Ok(())
                }
            }
        });
        Ok(())
    }

    async fn stop(&mut self, _: &ModuleContext) -> Result<(), ModuleError> {
        self.calls.stops.fetch_add(1, Ordering::SeqCst);
        match self.script.stop.as_deref().unwrap_or("ok") {
            "error" => Err(ModuleError::failed("scripted stop failure")),
            "panic" => panic!("scripted panic in stop"),
            "hang" => std::future::pending().await,
            _ => Ok(()),
        }
    }

    async fn is_healthy(&self) -> bool {
        self.calls.health_checks.fetch_add(1, Ordering::SeqCst);
        match self.script.healthy.as_deref().unwrap_or("true") {
            "false" => self
                .script
                .unhealthy_starts
                .is_some_and(|n| self.start_number > n),
            "panic" => panic!("scripted panic in is_healthy"),
            "hang" => std::future::pending().await,
            _ => true,
        }
    }

    fn info(&self) -> ModuleInfo {
        ModuleInfo::new("test", "0.0.1")
            .description("scripted test module")
            .author("tests")
    }
}
