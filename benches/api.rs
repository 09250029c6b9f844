//! Control API figures, black box: `cargo bench --bench api` (HSU_BENCH_WORKERS, default 1000).
//! Launches the built `hsu run` with N managed `sleep` workers and measures, over its Unix
//! socket:
//! - `hsu ls` end to end (the CLI process, median and p95 of 20);
//! - 32 concurrent clients each making 1,000 `GET /v1/workers` (throughput, p50/p99);
//! - the restart latency of a SIGKILLed worker (kill → its `running` event on the event
//!   stream), idle and while that load runs, and their ratio;
//! - 10,000 state changes delivered to 4 event-stream subscribers: how many each received,
//!   and any gap.
//!
//! Figures are printed, never asserted.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HSU: &str = env!("CARGO_BIN_EXE_hsu");
const CLIENTS: usize = 32;
const REQUESTS: usize = 1000;
const SUBSCRIBERS: usize = 4;
const EVENTS: u64 = 10_000;

fn main() {
    let n: usize = std::env::var("HSU_BENCH_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    println!(
        "api bench: {n} managed `sleep` workers, {} cores",
        std::thread::available_parallelism()
            .map(|c| c.get())
            .unwrap_or(1)
    );
    let dir = std::env::temp_dir().join(format!("hsu-bench-api-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut config = String::from("master: {logs: {mirror: false}}\nworkers:\n");
    for i in 0..n {
        config.push_str(&format!(
            "  - {{id: w{i}, type: process, execution: {{executable_path: /bin/sleep, args: ['100000']}}, restart: {{policy: always, max_restarts: 100000, backoff: {{initial: 0s, max: 0s, jitter: 0.0}}}}}}\n"
        ));
    }
    std::fs::write(dir.join("bench.yaml"), config).unwrap();
    let mut master = Command::new(HSU)
        .args(["run", "bench.yaml"])
        .current_dir(&dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("hsu run starts");
    let socket = dir.join("hsu-run/hsu.sock");
    wait_until_running(&socket, n);

    hsu_ls(&socket);
    let idle = restart_latency(&socket, "w1", 30);
    // The restart samples take well under the load's duration, so all run under it.
    let load = {
        let socket = socket.clone();
        std::thread::spawn(move || concurrent_gets(&socket))
    };
    std::thread::sleep(Duration::from_millis(200));
    let loaded = restart_latency(&socket, "w2", 30);
    load.join().unwrap();
    println!(
        "restart latency (kill -> running event): idle median {:.2} ms, under load median {:.2} ms, ratio {:.2}",
        ms(idle),
        ms(loaded),
        loaded.as_secs_f64() / idle.as_secs_f64()
    );
    event_fanout(&socket, n);

    let _ = request(&socket, "POST", "/v1/shutdown");
    let _ = wait_exit(&mut master);
    let _ = std::fs::remove_dir_all(&dir);
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One HTTP/1.1 request on a new connection; the status and the body.
fn request(socket: &Path, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = UnixStream::connect(socket)?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: hsu\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

fn rows(socket: &Path) -> Vec<serde_json::Value> {
    match request(socket, "GET", "/v1/workers") {
        Ok((200, body)) => serde_json::from_str(&body).unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn wait_until_running(socket: &Path, n: usize) {
    let start = Instant::now();
    loop {
        let running = rows(socket)
            .iter()
            .filter(|r| r["state"] == "running")
            .count();
        if running == n {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "only {running} of {n} running"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn hsu_ls(socket: &Path) {
    let mut samples = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let out = Command::new(HSU)
            .args(["ls", "--socket"])
            .arg(socket)
            .output()
            .unwrap();
        samples.push(t.elapsed());
        assert!(out.status.success());
    }
    println!(
        "hsu ls end to end: median {:.1} ms, p95 {:.1} ms",
        ms(percentile(samples.clone(), 0.5)),
        ms(percentile(samples, 0.95))
    );
}

/// 32 clients × 1,000 `GET /v1/workers`.
fn concurrent_gets(socket: &Path) {
    let t = Instant::now();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let socket = socket.to_path_buf();
            std::thread::spawn(move || {
                let mut latencies = Vec::with_capacity(REQUESTS);
                let mut failed = 0;
                for _ in 0..REQUESTS {
                    let t = Instant::now();
                    match request(&socket, "GET", "/v1/workers") {
                        Ok((200, _)) => latencies.push(t.elapsed()),
                        _ => failed += 1,
                    }
                }
                (latencies, failed)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut failed = 0;
    for t in threads {
        let (l, f) = t.join().unwrap();
        all.extend(l);
        failed += f;
    }
    let elapsed = t.elapsed();
    println!(
        "{CLIENTS} clients x {REQUESTS} GET /v1/workers: {} answered, {failed} failed, {:.0} req/s, p50 {:.1} ms, p99 {:.1} ms",
        all.len(),
        all.len() as f64 / elapsed.as_secs_f64(),
        ms(percentile(all.clone(), 0.5)),
        ms(percentile(all, 0.99))
    );
}

/// An event-stream subscriber: a thread reading SSE frames into `seqs`.
fn subscribe(socket: &Path) -> (std::sync::mpsc::Receiver<(String, String, u64)>, UnixStream) {
    let mut stream = UnixStream::connect(socket).unwrap();
    write!(
        stream,
        "GET /v1/events?live=true HTTP/1.1\r\nhost: hsu\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let reader = stream.try_clone().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if let Some(data) = line.strip_prefix("data: ") {
                let v: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
                let worker = v["worker"].as_str().unwrap_or("missed").to_string();
                let to = v["to"].as_str().unwrap_or("").to_string();
                let seq = v["seq"].as_u64().unwrap_or(0);
                if tx.send((worker, to, seq)).is_err() {
                    return;
                }
            }
        }
    });
    (rx, stream)
}

/// Kill → `running` event, `samples` times on worker `id`; the median.
fn restart_latency(socket: &Path, id: &str, samples: usize) -> Duration {
    let (events, _stream) = subscribe(socket);
    let mut out = Vec::new();
    for _ in 0..samples {
        let pid = rows(socket)
            .iter()
            .find(|r| r["id"] == id)
            .and_then(|r| r["pid"].as_u64())
            .expect("a pid");
        let t = Instant::now();
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        loop {
            let (worker, to, _) = events
                .recv_timeout(Duration::from_secs(30))
                .expect("the restart's events");
            if worker == id && to == "running" {
                break;
            }
        }
        out.push(t.elapsed());
    }
    percentile(out, 0.5)
}

/// 10,000 state changes (restarts by hand, 4 events each) to 4 subscribers.
fn event_fanout(socket: &Path, n: usize) {
    let subscribers: Vec<_> = (0..SUBSCRIBERS).map(|_| subscribe(socket)).collect();
    // The first frame a subscriber gets says where the stream is.
    std::thread::sleep(Duration::from_millis(200));
    let restarts = EVENTS / 4;
    let t = Instant::now();
    let workers = n.max(1);
    let threads: Vec<_> = (0..8)
        .map(|k| {
            let socket = socket.to_path_buf();
            std::thread::spawn(move || {
                let mut i = k;
                while (i as u64) < restarts {
                    let id = format!("w{}", i % workers);
                    let _ = request(&socket, "POST", &format!("/v1/workers/{id}/restart"));
                    i += 8;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let produced = t.elapsed();
    for (k, (events, _stream)) in subscribers.iter().enumerate() {
        let mut got = 0u64;
        let mut missed = 0u64;
        let mut last = 0u64;
        let mut gaps = 0u64;
        while let Ok((worker, _, seq)) = events.recv_timeout(Duration::from_secs(5)) {
            if worker == "missed" {
                missed += 1;
                continue;
            }
            if last != 0 && seq != last + 1 {
                gaps += 1;
            }
            last = seq;
            got += 1;
        }
        println!(
            "event subscriber {k}: {got} events received, {gaps} gaps, {missed} missed notices (of {} restarts in {:.1} s)",
            restarts,
            produced.as_secs_f64()
        );
    }
}

fn wait_exit(child: &mut Child) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    child.wait().ok()
}
