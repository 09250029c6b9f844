//! Master-held sockets: requests per second and latency through a socket the master holds and
//! hands to a process worker, next to the same server binding its own socket (the kernel serves
//! both: no difference is expected); and the latency during `start_first` restarts next to
//! none. The server is `hsu-test-worker` (`tests/test-module/src/serve.rs`), the client the
//! tests' loopback load client, 8 keep-alive connections.
//!
//! `cargo bench --bench sockets` (`HSU_BENCH_SECONDS`, default 3, per figure).

use std::io::BufRead;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hsu::{AddWorker, MasterActor, MasterConfig, RestartWorker, StartWorker, WorkerConfig};

#[path = "../tests/support/load.rs"]
mod load_client;

const WORKER: &str = env!("CARGO_BIN_EXE_hsu-test-worker");
const CLIENTS: usize = 8;

struct Figures {
    rps: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    failed: u64,
    retried: u64,
}

fn figures(seen: &load_client::Load, took: Duration) -> Figures {
    let mut l = seen.latencies.lock().unwrap().clone();
    l.sort_unstable();
    let at = |q: f64| {
        Duration::from_micros(u64::from(
            l.get(((l.len() as f64 - 1.0) * q) as usize)
                .copied()
                .unwrap_or(0),
        ))
    };
    Figures {
        rps: seen.ok.load(Ordering::SeqCst) as f64 / took.as_secs_f64(),
        p50: at(0.5),
        p99: at(0.99),
        max: at(1.0),
        failed: seen.failed.load(Ordering::SeqCst),
        retried: seen.retried.load(Ordering::SeqCst),
    }
}

fn print(label: &str, f: &Figures) {
    println!(
        "{label:<46} {:>9.0} req/s  p50 {:>7.1?}  p99 {:>7.1?}  max {:>8.1?}  failed {}  retried {}",
        f.rps, f.p50, f.p99, f.max, f.failed, f.retried
    );
}

/// Load on `address` for `seconds`, calling `during` meanwhile (it may restart the server).
async fn measure<F: std::future::Future<Output = ()>>(
    address: &str,
    seconds: f64,
    during: impl FnOnce(Arc<AtomicBool>) -> F,
) -> Figures {
    let stop = Arc::new(AtomicBool::new(false));
    let (seen, clients) = load_client::load(address.to_string(), CLIENTS, 0, stop.clone());
    // Warm-up: connections open, first requests done.
    while seen.ok.load(Ordering::SeqCst) < 100 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    seen.latencies.lock().unwrap().clear();
    let from = seen.ok.load(Ordering::SeqCst);
    let t = Instant::now();
    let timer = {
        let stop = stop.clone();
        async move {
            tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
            stop.store(true, Ordering::SeqCst);
        }
    };
    futures::future::join(timer, during(stop.clone())).await;
    for c in clients {
        let _ = c.await;
    }
    let took = t.elapsed();
    seen.ok.fetch_sub(from, Ordering::SeqCst);
    figures(&seen, took)
}

fn main() {
    let seconds: f64 = std::env::var("HSU_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3.0);
    println!(
        "sockets bench: {CLIENTS} keep-alive clients, {seconds} s a figure, {} cores",
        std::thread::available_parallelism()
            .map(|c| c.get())
            .unwrap_or(1)
    );
    let dir = std::env::temp_dir().join(format!("hsu-bench-sockets-{}", std::process::id()));
    let system = actix_rt::System::new();
    let run_dir = dir.clone();
    system.block_on(async move {
        let dir = run_dir;
        // The baseline: the same server on a socket it binds itself.
        let mut own = std::process::Command::new(WORKER)
            .args(["--listen-self", "127.0.0.1:0"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("test worker");
        let mut line = String::new();
        std::io::BufReader::new(own.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("its address");
        let own_address = line.trim().trim_start_matches("listening on ").to_string();
        let bound = measure(&own_address, seconds, |_| async {}).await;
        let _ = own.kill();
        let _ = own.wait();

        let mut config = MasterConfig::default();
        config.logs.directory = dir.join("logs");
        config.logs.mirror = false;
        config.run_directory = dir.join("run");
        let master = MasterActor::launch(config).expect("master");
        let mut worker = WorkerConfig::process("w", WORKER, &["--serve-socket", "http"])
            .with_restart("{policy: on_failure, strategy: start_first}");
        worker.sockets = serde_yaml::from_str("[{name: http, listen: '127.0.0.1:0'}]").unwrap();
        master.send(AddWorker(worker)).await.unwrap().unwrap();
        let id = hsu::WorkerId::new("w").unwrap();
        master.send(StartWorker(id.clone())).await.unwrap().unwrap();
        let d = master.send(hsu::GetWorkerState(id.clone())).await.unwrap().unwrap();
        let address = d.sockets[0].listen.clone();
        let held = measure(&address, seconds, |_| async {}).await;
        let restarts = std::cell::Cell::new(0u32);
        let restarting = measure(&address, seconds, |stop| {
            let master = master.clone();
            let id = id.clone();
            let restarts = &restarts;
            async move {
                while !stop.load(Ordering::SeqCst) {
                    master
                        .send(RestartWorker { id: id.clone(), force: false })
                        .await
                        .unwrap()
                        .unwrap();
                    restarts.set(restarts.get() + 1);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        })
        .await;
        print("bound by the worker itself", &bound);
        print("held by the master (LISTEN_FDS)", &held);
        print(&format!("held, {} start_first restarts meanwhile", restarts.get()), &restarting);
        println!(
            "ratio held / self-bound: {:.2}x req/s; longest request during restarts {:.1?} vs {:.1?} without",
            held.rps / bound.rps,
            restarting.max,
            held.max
        );
        let _ = master.send(hsu::Shutdown).await;
    });
    let _ = std::fs::remove_dir_all(&dir);
}
