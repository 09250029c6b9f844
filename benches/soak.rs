//! Crash-loop soak: `cargo bench --bench soak` (HSU_SOAK_CYCLES, default 10,000). A managed
//! worker that exits 1 at once, restarted with no backoff; a module whose `start` panics,
//! restarted likewise; and a managed worker that leaves an orphan behind (`sh -c "sleep 0.001
//! &"`) before it exits 1, with the master as subreaper: each for N cycles. Prints the master's
//! RSS, open descriptors, threads, its zombie and live children, and the orphans reaped, at 0,
//! N/2 and N cycles: they should stay flat (zombies and live orphans at 0 once settled).
//! Figures only, never asserted; it runs outside CI.

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
        config.subreaper = Some(true);
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
        let orphaner = WorkerConfig::process(
            "orphaner",
            "/bin/sh",
            &["-c", "sh -c 'sleep 0.001 &'; exit 1"],
        )
        .with_restart(restart);
        for (worker, fails_in) in [
            (process, WorkerState::Failed),
            (module, WorkerState::FailedStart),
            (orphaner, WorkerState::Failed),
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
            let _ = master.send(hsu::StopWorker(id.clone())).await;
            // Orphans are reaped after a grace of a second: look once it has passed.
            tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
            figures(&format!("{id} (stopped, settled)"), failures);
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
    let (mut zombies, mut live) = (0, 0);
    for stat in std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
    {
        let rest = stat.rsplit(')').next().unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.get(1) == Some(&me.as_str()) {
            if f.first() == Some(&"Z") {
                zombies += 1;
            } else {
                live += 1;
            }
        }
    }
    println!(
        "{what} after {cycles:>6} cycles: RSS {:>6} KiB, {fds} fds, {threads} threads, {zombies} zombie / {live} live children, {} orphans reaped",
        own_rss_kib(),
        hsu::orphans_reaped()
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
