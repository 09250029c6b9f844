//! Module figures: `cargo bench --bench modules` (HSU_BENCH_MODULES, default 10000). Prints:
//! - plugin load time (`dlopen` + header checks), median of several copies of the echo plugin;
//! - one `is_healthy` call through the plugin boundary vs the same call on the native module;
//! - N native module workers: time to add all, start all, stop all (one master).

mod common;
use common::own_rss_kib;

use std::sync::Arc;
use std::time::{Duration, Instant};

use hsu::internals::{PluginLibrary, PluginModule};
use hsu::module::{
    async_trait, CancellationToken, ModuleConfig, ModuleContext, ModuleError, ModuleInfo,
    TaskFuture, TaskSpawner, WorkerModule,
};
use hsu::{
    AddWorker, MasterActor, MasterConfig, RegisterNativeModuleFactory, Shutdown, StartWorker,
    StopWorker, WorkerConfig,
};

const CALLS: u32 = 100_000;

fn main() {
    let n: usize = std::env::var("HSU_BENCH_MODULES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    println!(
        "modules bench: {} cores",
        std::thread::available_parallelism()
            .map(|c| c.get())
            .unwrap_or(1)
    );
    let plugin = plugin_path();
    load_time(&plugin);
    boundary_call(&plugin);
    many_workers(n);
}

/// `cargo bench` builds the cdylib dev-dependencies beside the bench binary.
fn plugin_path() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("bench binary path");
    let path = exe.parent().unwrap().join("libecho_plugin.so");
    assert!(path.is_file(), "{} missing", path.display());
    path
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn load_time(plugin: &std::path::Path) {
    // A library is loaded once per path (and never unloaded): time fresh copies.
    let dir = std::env::temp_dir().join(format!("hsu-bench-plugins-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut samples = Vec::new();
    for i in 0..9 {
        let copy = dir.join(format!("libecho_plugin_{i}.so"));
        std::fs::copy(plugin, &copy).unwrap();
        let t = Instant::now();
        let library = PluginLibrary::load(&copy).expect("plugin loads");
        samples.push(t.elapsed());
        assert!(library.info().load_time <= samples[i]);
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "plugin load (dlopen + header checks), median of 9: {:?} (min {:?}, max {:?})",
        median(samples.clone()),
        samples.iter().min().unwrap(),
        samples.iter().max().unwrap()
    );
}

struct Spawner;
impl TaskSpawner for Spawner {
    fn spawn(&self, _: String, task: TaskFuture) {
        tokio::spawn(task);
    }
}

fn boundary_call(plugin: &std::path::Path) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ctx = ModuleContext::new(
            "bench",
            CancellationToken::new(),
            tracing::Span::none(),
            Arc::new(Spawner),
        );
        let config = ModuleConfig::new(serde_yaml::from_str("{port: 0}").unwrap());
        let mut native = echo_module::EchoModule::default();
        native.initialize(&ctx, &config).await.unwrap();
        let library = PluginLibrary::load(plugin).expect("plugin loads");
        let mut via_plugin = PluginModule::new(library);
        via_plugin.initialize(&ctx, &config).await.unwrap();
        for (name, module) in [
            ("native", &native as &dyn WorkerModule),
            ("plugin", &via_plugin as &dyn WorkerModule),
        ] {
            for _ in 0..1000 {
                module.is_healthy().await;
            }
            let t = Instant::now();
            for _ in 0..CALLS {
                std::hint::black_box(module.is_healthy().await);
            }
            let per = t.elapsed() / CALLS;
            println!("is_healthy {name:>6}: {per:?} per call ({CALLS} calls)");
        }
    });
}

/// The smallest module: the cost measured is hsu's.
struct Noop;

#[async_trait]
impl WorkerModule for Noop {
    async fn initialize(&mut self, _: &ModuleContext, _: &ModuleConfig) -> Result<(), ModuleError> {
        Ok(())
    }
    async fn start(&mut self, _: &ModuleContext) -> Result<(), ModuleError> {
        Ok(())
    }
    fn info(&self) -> ModuleInfo {
        ModuleInfo::new("noop", "0")
    }
}

fn many_workers(n: usize) {
    let system = actix_rt::System::new();
    system.block_on(async move {
        let mut config = MasterConfig::default();
        let dir = std::env::temp_dir().join(format!("hsu-bench-modules-{}", std::process::id()));
        config.logs.directory = dir.join("logs");
        config.run_directory = dir.join("run");
        let master = MasterActor::launch(config).unwrap();
        master
            .send(RegisterNativeModuleFactory::new("noop", || Box::new(Noop)))
            .await
            .unwrap()
            .unwrap();
        let ids: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
        let rss_before = own_rss_kib();

        let t = Instant::now();
        let adds = ids.iter().map(|id| {
            master.send(AddWorker(
                WorkerConfig::native(id, "noop").with_health_check("{enabled: false}"),
            ))
        });
        let ids: Vec<hsu::WorkerId> = futures::future::join_all(adds)
            .await
            .into_iter()
            .map(|r| r.unwrap().unwrap())
            .collect();
        let add = t.elapsed();

        let t = Instant::now();
        let starts = ids.iter().map(|id| master.send(StartWorker(id.clone())));
        for r in futures::future::join_all(starts).await {
            r.unwrap().unwrap();
        }
        let start = t.elapsed();
        let rss_running = own_rss_kib();

        let t = Instant::now();
        let stops = ids.iter().map(|id| master.send(StopWorker(id.clone())));
        for r in futures::future::join_all(stops).await {
            r.unwrap().unwrap();
        }
        let stop = t.elapsed();

        println!(
            "{n} native module workers: add {add:?}, start {start:?}, stop {stop:?}; RSS +{} MiB while running",
            (rss_running.saturating_sub(rss_before)) / 1024
        );
        let _ = master.send(Shutdown).await;
        let _ = std::fs::remove_dir_all(&dir);
    });
}
