//! Crash-loop soak: `cargo bench --bench soak` (HSU_SOAK_CYCLES, default 10,000). A managed
//! worker that exits 1 at once, restarted with no backoff, and a module whose `start` panics,
//! restarted likewise, each for N cycles. Prints the master's RSS, open descriptors, threads,
//! and the zombies among its children at 0, N/2 and N cycles: they should stay flat (and the
//! zombies at 0). Figures only, never asserted; it runs outside CI.

mod common;
use common::own_rss_kib;

use std::time::Instant;

use hsu::{
    async_trait, AddWorker, MasterActor, MasterConfig, ModuleConfig, ModuleContext, ModuleError,
    ModuleInfo, RegisterNativeModuleFactory, Shutdown, StartWorker, Subscribe, WorkerConfig,
    WorkerModule, WorkerState,
};

fn main() {
    let cycles: u64 = std::env::var("HSU_SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    println!("soak bench: {cycles} crash/restart cycles per worker kind");
    // Ten thousand caught panics: their messages are the point, not their printing.
    std::panic::set_hook(Box::new(|_| {}));
    let dir = std::env::temp_dir().join(format!("hsu-soak-{}", std::process::id()));
    let system = actix_rt::System::new();
    let run_dir = dir.clone();
    system.block_on(async move {
        let dir = run_dir;
        let mut config = MasterConfig::default();
        config.logs.directory = dir.join("logs");
        config.logs.mirror = false;
        config.run_directory = dir.join("run");
        let master = MasterActor::launch(config).expect("master");
        master
            .send(RegisterNativeModuleFactory::new("panics", || Box::new(Panics)))
            .await
            .unwrap()
            .unwrap();
        let restart = "{policy: always, max_restarts: 100000000, window: 1s, backoff: {initial: 0s, max: 0s, jitter: 0.0}}";
        let process = WorkerConfig::process("crashy", "/bin/sh", &["-c", "exit 1"])
            .with_restart(restart);
        let module = WorkerConfig::native("panicky", "panics")
            .with_restart(restart)
            .with_health_check("{enabled: false}");
        for (worker, fails_in) in [
            (process, WorkerState::Failed),
            (module, WorkerState::FailedStart),
        ] {
            let mut events = master.send(Subscribe).await.unwrap();
            let id = master.send(AddWorker(worker)).await.unwrap().unwrap();
            figures(id.as_str(), 0);
            let t = Instant::now();
            let _ = master.send(StartWorker(id.clone())).await.unwrap();
            let mut failures = 0u64;
            while failures < cycles {
                let Some(event) = events.recv().await else { break };
                if event.id == id && event.to == fails_in {
                    failures += 1;
                    if failures == cycles / 2 {
                        figures(id.as_str(), failures);
                    }
                }
            }
            figures(id.as_str(), failures);
            println!(
                "{id}: {failures} cycles in {:.1} s ({:.2} ms per cycle)",
                t.elapsed().as_secs_f64(),
                t.elapsed().as_secs_f64() * 1000.0 / failures.max(1) as f64
            );
            let _ = master.send(hsu::StopWorker(id)).await;
        }
        let _ = master.send(Shutdown).await;
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// RSS, descriptors, threads and zombie children of this process, on one line.
fn figures(what: &str, cycles: u64) {
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    let threads = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    let me = std::process::id().to_string();
    let zombies = std::fs::read_dir("/proc").map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
            .filter(|stat| {
                let rest = stat.rsplit(')').next().unwrap_or("");
                let f: Vec<&str> = rest.split_whitespace().collect();
                f.first() == Some(&"Z") && f.get(1) == Some(&me.as_str())
            })
            .count()
    });
    println!(
        "{what} after {cycles:>6} cycles: RSS {:>6} KiB, {fds} fds, {threads} threads, {zombies} zombie children",
        own_rss_kib()
    );
}

/// A module whose `start` panics: every start fails, and is restarted.
struct Panics;

#[async_trait]
impl WorkerModule for Panics {
    async fn initialize(&mut self, _: &ModuleContext, _: &ModuleConfig) -> Result<(), ModuleError> {
        Ok(())
    }
    async fn start(&mut self, _: &ModuleContext) -> Result<(), ModuleError> {
        panic!("soak: start panics")
    }
    fn info(&self) -> ModuleInfo {
        ModuleInfo::new("panics", "0")
    }
}
