//! Shared test parts: a master with a subscription, a scriptable test module whose every call
//! is counted, and waiting on events (never on time) with one deadline that only bounds a hang.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use hsu::{
    async_trait, MasterActor, MasterConfig, ModuleConfig, ModuleContext, ModuleError, ModuleInfo,
    RegisterNativeModuleFactory, Subscribe, WorkerModule, WorkerState, WorkerStateChanged,
};
use serde::Deserialize;
use tokio::sync::mpsc::UnboundedReceiver;

/// Bounds a hang; when it fires the test panics with what it saw.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A master with the built-in modules and the `test` factory registered, and a watch on its
/// events.
pub async fn master() -> (Addr<MasterActor>, Watch, Arc<Calls>) {
    let master = MasterActor::launch(MasterConfig::default()).expect("master starts");
    hsu::builtin::register(&master)
        .await
        .expect("builtins register");
    let calls = Arc::new(Calls::default());
    let c = calls.clone();
    master
        .send(RegisterNativeModuleFactory::new("test", move || {
            Box::new(TestModule::new(c.clone()))
        }))
        .await
        .unwrap()
        .unwrap();
    let events = master.send(Subscribe).await.unwrap();
    (master, Watch::new(events), calls)
}

/// Every event the master published, and waiting for one. Each worker has its own cursor, so
/// waiting for one worker's event never skips another's.
pub struct Watch {
    events: UnboundedReceiver<WorkerStateChanged>,
    /// Everything received so far, in order.
    pub seen: Vec<WorkerStateChanged>,
    /// Per worker id (and "" for any worker): index in `seen` of the next event to examine.
    cursors: std::collections::HashMap<String, usize>,
}

impl Watch {
    pub fn new(events: UnboundedReceiver<WorkerStateChanged>) -> Self {
        Self {
            events,
            seen: Vec::new(),
            cursors: Default::default(),
        }
    }

    /// Waits until `id` enters `state`, after the last event of `id` already waited for.
    pub async fn until(&mut self, id: &str, state: WorkerState) -> WorkerStateChanged {
        self.wait(id, |e| e.id.as_str() == id && e.to == state)
            .await
    }

    /// Waits for the next event (of any worker) matching `pred`.
    pub async fn until_where(
        &mut self,
        pred: impl Fn(&WorkerStateChanged) -> bool,
    ) -> WorkerStateChanged {
        self.wait("", pred).await
    }

    async fn wait(
        &mut self,
        key: &str,
        pred: impl Fn(&WorkerStateChanged) -> bool,
    ) -> WorkerStateChanged {
        let mut next = self.cursors.get(key).copied().unwrap_or(0);
        // One deadline for the whole wait, however many other events arrive meanwhile.
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            while next < self.seen.len() {
                let e = &self.seen[next];
                next += 1;
                if pred(e) {
                    self.cursors.insert(key.to_string(), next);
                    return e.clone();
                }
            }
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(e)) => self.seen.push(e),
                Ok(None) => panic!("event stream ended; seen: {:#?}", self.transitions()),
                Err(_) => panic!(
                    "no matching event within {DEADLINE:?}; seen: {:#?}",
                    self.transitions()
                ),
            }
        }
    }

    /// `id: from -> to` lines of what was seen.
    pub fn transitions(&self) -> Vec<String> {
        self.seen
            .iter()
            .map(|e| format!("{}: {} -> {}", e.id, e.from, e.to))
            .collect()
    }

    /// How many times `id` entered `state` so far.
    pub fn count(&self, id: &str, state: WorkerState) -> usize {
        self.seen
            .iter()
            .filter(|e| e.id.as_str() == id && e.to == state)
            .count()
    }
}

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
        match self.script.start.as_deref().unwrap_or("ok") {
            "ok" => {}
            "error" => return Err(ModuleError::failed("scripted start failure")),
            "panic" => panic!("scripted panic in start"),
            "hang" => std::future::pending::<()>().await,
            "block" => std::thread::sleep(Duration::from_millis(self.script.block_ms)),
            other => return Err(ModuleError::Config(format!("unknown start script {other}"))),
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

/// A `test` module worker with `config:` from YAML and a fast restart policy.
pub fn test_worker(id: &str, script: &str) -> hsu::WorkerConfig {
    hsu::WorkerConfig::native(id, "test")
        .with_config(script)
        .with_restart("{policy: on_failure, max_restarts: 3, window: 60s, backoff: {initial: 0s, max: 0s, jitter: 0.0}}")
}

/// Sends one HTTP/1.1 request to a loopback address and returns the whole response.
pub async fn http(address: &str, method: &str, path: &str, body: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {address}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

/// The test worker binary.
pub const TEST_WORKER: &str = env!("CARGO_BIN_EXE_hsu-test-worker");

/// A directory of its own for one test (logs, run files, counters); removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("hsu-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub fn file(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }

    /// Lines in a counter file (one per launch); 0 if absent.
    pub fn lines(&self, name: &str) -> usize {
        std::fs::read_to_string(self.0.join(name))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Master settings whose logs and run files go under `dir`.
pub fn config_in(dir: &TempDir) -> MasterConfig {
    let mut config = MasterConfig::default();
    config.logs.directory = dir.0.join("logs");
    config.logs.mirror = false;
    config.run_directory = dir.0.join("run");
    config
}

/// A master whose logs and run files go under `dir`.
pub async fn master_in(dir: &TempDir) -> (Addr<MasterActor>, Watch) {
    launch(config_in(dir)).await
}

/// A master with `config` and a watch on its events.
pub async fn launch(config: MasterConfig) -> (Addr<MasterActor>, Watch) {
    let master = MasterActor::launch(config).expect("master starts");
    let events = master.send(Subscribe).await.unwrap();
    (master, Watch::new(events))
}

/// A managed test-worker process with `args`, restarts off unless set.
pub fn process_worker(id: &str, args: &[&str]) -> hsu::WorkerConfig {
    hsu::WorkerConfig::process(id, TEST_WORKER, args).with_restart("{policy: never}")
}

/// Whether a live (non-zombie) process `pid` exists.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X"))
        }
        Err(_) => false,
    }
}

/// Waits (bounded by DEADLINE) until `cond` holds: for facts with no event, such as a
/// grandchild's death seen from outside.
pub async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads a PID written by a test worker, waiting for the file.
pub async fn read_pid(path: &str) -> u32 {
    eventually(&format!("pid file {path}"), || {
        std::fs::read_to_string(path).is_ok_and(|t| t.trim().parse::<u32>().is_ok())
    })
    .await;
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// A free port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
