//! Process supervision figures: `cargo bench --bench supervise` (HSU_BENCH_WORKERS, default
//! 1000). Prints, for N `sleep` children:
//! - a bare floor measured in the same run: fork+exec of N children with std, and restart
//!   latency as kill → reap → spawn again → alive;
//! - hsu: time to start N managed workers until all are running, SIGKILL → running again
//!   latency (median, p95) with no backoff, stop-all time, and the master's RSS and idle CPU.

mod common;
use common::own_rss_kib;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hsu::{
    AddWorker, MasterActor, MasterConfig, Shutdown, StartWorker, Subscribe, WorkerConfig,
    WorkerState,
};

const RESTART_SAMPLES: usize = 100;

fn main() {
    let n: usize = std::env::var("HSU_BENCH_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let _ = hsu::internals::sys::raise_fd_limit();
    println!(
        "supervise bench: {n} `sleep` children, {} cores",
        std::thread::available_parallelism()
            .map(|c| c.get())
            .unwrap_or(1)
    );
    floor(n);
    floor_with_options(n);
    hsu_figures(n);
}

fn sleep_child() -> Child {
    Command::new("sleep")
        .arg("100000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sleep")
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn floor(n: usize) {
    let t = Instant::now();
    let mut children: Vec<Child> = (0..n).map(|_| sleep_child()).collect();
    let start = t.elapsed();
    let mut samples = Vec::with_capacity(RESTART_SAMPLES);
    for child in children.iter_mut().take(RESTART_SAMPLES) {
        let t = Instant::now();
        child.kill().unwrap();
        child.wait().unwrap();
        let next = sleep_child();
        while !alive(next.id()) {}
        samples.push(t.elapsed());
        *child = next;
    }
    let t = Instant::now();
    for c in &mut children {
        let _ = c.kill();
    }
    for c in &mut children {
        let _ = c.wait();
    }
    let stop = t.elapsed();
    let (median, p95) = percentiles(&mut samples);
    println!("floor  start {n}: {:>8.1} ms | restart median {:>6.3} ms p95 {:>6.3} ms | kill+reap all {:>7.1} ms",
        ms(start), ms(median), ms(p95), ms(stop));
}

/// The same spawns through hsu's own fork+exec (`child::spawn`: own process group,
/// PR_SET_PDEATHSIG, signals reset, descriptors closed, piped stdout/stderr, the exec-error
/// report), from one thread, without the master around it.
fn floor_with_options(n: usize) {
    use hsu::internals::child::{self, Plan};
    use std::ffi::CString;
    use std::os::fd::OwnedFd;
    let path = CString::new("/bin/sleep").unwrap();
    let envp: Vec<CString> = std::env::vars()
        .map(|(k, v)| CString::new(format!("{k}={v}")).unwrap())
        .collect();
    let t = Instant::now();
    let mut children = Vec::with_capacity(n);
    let mut pipes = Vec::with_capacity(2 * n);
    for _ in 0..n {
        let (out_r, out_w) = std::io::pipe().unwrap();
        let (err_r, err_w) = std::io::pipe().unwrap();
        let stdin = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let plan = Plan {
            programs: vec![path.clone()],
            program: "/bin/sleep".into(),
            argv: vec![path.clone(), CString::new("100000").unwrap()],
            envp: envp.clone(),
            cwd: None,
            stdio: [
                child::above_stdio(stdin).unwrap(),
                child::above_stdio(out_w.into()).unwrap(),
                child::above_stdio(err_w.into()).unwrap(),
            ],
            cgroup: None,
            user: None,
            nofile: None,
            listen: Vec::new(),
        };
        children.push(child::spawn(&plan).unwrap().pid);
        pipes.push((out_r, err_r));
    }
    let start = t.elapsed();
    for &pid in &children {
        let _ = hsu::internals::sys::signal_process(pid as i32, 9);
    }
    for &pid in &children {
        while !matches!(hsu::internals::sys::try_wait(pid), Ok(Some(_)) | Err(_)) {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    drop(pipes);
    println!(
        "floor' start {n}: {:>8.1} ms | (hsu's own fork+exec: group, PDEATHSIG, pipes, hygiene; one thread)",
        ms(start)
    );
}

fn hsu_figures(n: usize) {
    let dir = std::env::temp_dir().join(format!("hsu-bench-{}", std::process::id()));
    let system = actix_rt::System::new();
    system.block_on(async move {
        let mut config = MasterConfig::default();
        config.logs.directory = dir.join("logs");
        config.logs.mirror = false;
        let run_directory = std::path::Path::new("/dev/shm").join(format!("hsu-bench-run-{}", std::process::id()));
        config.run_directory = run_directory.clone();
        let master = MasterActor::launch(config).expect("master");
        let mut events = master.send(Subscribe).await.unwrap();
        for i in 0..n {
            let worker = WorkerConfig::process(&format!("w{i}"), "/bin/sleep", &["100000"])
                .with_restart("{policy: always, max_restarts: 1000000, window: 1s, backoff: {initial: 0s, max: 0s, jitter: 0.0}}");
            master.send(AddWorker(worker)).await.unwrap().unwrap();
        }
        let threads_before = thread_cpu();
        let t = Instant::now();
        let starts: Vec<_> = (0..n).map(|i| master.send(StartWorker(hsu::WorkerId::new(&format!("w{i}")).expect("valid id")))).collect();
        futures::future::join_all(starts).await;
        let mut pids = HashMap::new();
        while pids.len() < n {
            let e = events.recv().await.unwrap();
            if e.to == WorkerState::Running {
                pids.insert(e.id.to_string(), e.pid.unwrap());
            }
        }
        let start = t.elapsed();
        if std::env::var("HSU_BENCH_TRACE").is_ok() {
            let after = thread_cpu();
            for (name, ticks) in after {
                let before = threads_before.iter().find(|(n, _)| *n == name).map(|(_, t)| *t).unwrap_or(0);
                println!("  thread {name}: {} ms CPU during start", (ticks - before) * 1000 / hsu::internals::sys::clock_ticks());
            }
        }

        let mut samples = Vec::with_capacity(RESTART_SAMPLES);
        for i in 0..RESTART_SAMPLES.min(n) {
            let id = format!("w{i}");
            let pid = pids[&id];
            let t = Instant::now();
            Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
            let kill_cost = t.elapsed();
            loop {
                let e = events.recv().await.unwrap();
                if std::env::var("HSU_BENCH_TRACE").is_ok() && e.id.as_str() == id {
                    println!("  {:>8.3} ms {} -> {}", ms(t.elapsed().saturating_sub(kill_cost)), e.from, e.to);
                }
                if e.id.as_str() == id && e.to == WorkerState::Running {
                    // The `kill` command itself is not the supervisor's time.
                    samples.push(t.elapsed().saturating_sub(kill_cost));
                    pids.insert(id.clone(), e.pid.unwrap());
                    break;
                }
            }
        }
        let (median, p95) = percentiles(&mut samples);

        // Idle: let restarts and first probes settle, then measure over a quiet window.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (cpu0, t0) = (own_cpu_ticks(), Instant::now());
        let idle_threads = thread_cpu();
        tokio::time::sleep(Duration::from_secs(10)).await;
        if std::env::var("HSU_BENCH_TRACE").is_ok() {
            for (name, ticks) in thread_cpu() {
                let before = idle_threads.iter().find(|(n, _)| *n == name).map(|(_, t)| *t).unwrap_or(0);
                println!("  idle thread {name}: {} ms CPU in 10 s", (ticks - before) * 1000 / hsu::internals::sys::clock_ticks());
            }
        }
        let idle_cpu = (own_cpu_ticks() - cpu0) as f64 / hsu::internals::sys::clock_ticks() as f64 / t0.elapsed().as_secs_f64() * 100.0;
        let rss = own_rss_kib();

        let t = Instant::now();
        let report = master.send(Shutdown).await.unwrap();
        let stop = t.elapsed();
        assert_eq!(report.stopped.len(), n);
        println!("hsu    start {n}: {:>8.1} ms | restart median {:>6.3} ms p95 {:>6.3} ms | stop all      {:>7.1} ms",
            ms(start), ms(median), ms(p95), ms(stop));
        println!("hsu    master with {n} children: RSS {:.1} MiB, idle CPU {:.2}% of a core", rss as f64 / 1024.0, idle_cpu);
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&run_directory);
    });
}

/// CPU ticks per thread name of this process.
fn thread_cpu() -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let name = stat[stat.find('(').unwrap() + 1..stat.rfind(')').unwrap()].to_string();
        let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
            .split_whitespace()
            .collect();
        let ticks = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, t)) => *t += ticks,
            None => out.push((name, ticks)),
        }
    }
    out
}

fn own_cpu_ticks() -> u64 {
    hsu::internals::sys::read_stat(std::process::id() as i32)
        .map(|s| s.cpu_ticks)
        .unwrap_or(0)
}

fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.95))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
