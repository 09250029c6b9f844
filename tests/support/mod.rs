//! Shared test parts: a master with a subscription, a scriptable test module whose every call
//! is counted, and waiting on events (never on time) with one deadline that only bounds a hang.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use hsu::{
    MasterActor, MasterConfig, RegisterNativeModuleFactory, Subscribe, WorkerState,
    WorkerStateChanged,
};
use tokio::sync::mpsc::UnboundedReceiver;

/// Routes module workers' tracing events to their log files, as `hsu run` does (once per test
/// binary: a process has one global subscriber).
pub fn install_worker_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use tracing_subscriber::layer::SubscriberExt as _;
        let subscriber = tracing_subscriber::registry()
            .with(hsu::worker_logs_layer())
            .with(tracing_subscriber::filter::LevelFilter::INFO);
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber per binary");
    });
}

/// A worker id from a test's literal or variable (a bad one is a bug in the test).
pub fn id(text: impl AsRef<str>) -> hsu::WorkerId {
    hsu::WorkerId::new(text.as_ref()).expect("a valid worker id in the test")
}

/// Bounds a hang; when it fires the test panics with what it saw.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A master with the built-in modules and the `test` factory registered, and a watch on its
/// events.
pub async fn master() -> (Addr<MasterActor>, Watch, Arc<Calls>) {
    master_with(MasterConfig::default()).await
}

/// [`master`] with a master configuration of the test's own.
#[allow(dead_code)]
pub async fn master_with(config: MasterConfig) -> (Addr<MasterActor>, Watch, Arc<Calls>) {
    let master = MasterActor::launch(config).expect("master starts");
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

pub use hsu_test_module::{Calls, TestModule};

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

    /// [`lines`](Self::lines) once there are at least `n` (bounded by DEADLINE): a worker is
    /// `running` once it has exec'd, and writes its launch line a moment later.
    #[allow(dead_code)]
    pub async fn lines_once(&self, name: &str, n: usize) -> usize {
        eventually(&format!("{n} lines in {name}"), || self.lines(name) >= n).await;
        self.lines(name)
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

/// A port on 127.0.0.1 that refuses connections for as long as the socket is kept: bound, so
/// no other socket can take it, and never listening.
pub fn closed_port() -> std::io::Result<(tokio::net::TcpSocket, u16)> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind("127.0.0.1:0".parse().unwrap())?;
    let port = socket.local_addr()?.port();
    Ok((socket, port))
}

/// A port free at the moment of the call, for a program that must be told its port (bound and
/// released, so someone else may take it before the program binds it: the caller retries on
/// "address in use"). Where the program can bind port 0 and report the address, prefer that.
pub fn pick_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The path of a workspace plugin (`echo_plugin`, `hsu_test_plugin`): `cargo test` builds the
/// cdylib dev-dependencies into the directory of the test binary (`target/<profile>/deps`).
pub fn plugin(crate_name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let path = exe
        .parent()
        .expect("test binary directory")
        .join(format!("lib{crate_name}.so"));
    assert!(
        path.is_file(),
        "{} missing: it is built by `cargo test` as a dev-dependency of hsu",
        path.display()
    );
    path
}

/// `<dir>/run/hsu.pids` as a map: worker id → (PID, control port).
#[allow(dead_code)]
pub fn run_table(dir: &TempDir) -> std::collections::HashMap<String, (u32, Option<u16>)> {
    std::fs::read_to_string(dir.0.join("run").join(hsu::internals::run_table::FILE))
        .unwrap_or_default()
        .lines()
        .filter_map(hsu::internals::run_table::parse_line)
        .map(|(id, pid, port)| (id.to_string(), (pid as u32, port)))
        .collect()
}
