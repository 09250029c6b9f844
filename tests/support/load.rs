//! A bounded loopback HTTP/1.1 load client (keep-alive and fresh connections), shared by the
//! socket tests and `benches/sockets.rs`: what answered, what failed, and every latency.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the load client saw.
#[derive(Debug, Default)]
pub struct Load {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    /// Requests re-sent on a fresh connection because a kept-alive one was closed before any
    /// byte of the answer came (what HTTP clients do for idempotent requests).
    pub retried: AtomicU64,
    pub answers: Mutex<std::collections::BTreeMap<String, u64>>,
    pub errors: Mutex<Vec<String>>,
    pub longest: Mutex<Duration>,
    /// Every request's latency, in microseconds, in the order they ended.
    pub latencies: Mutex<Vec<u32>>,
}

impl Load {
    /// Panics unless every request was answered (retries on a fresh connection allowed).
    pub fn assert_none_failed(&self) {
        assert_eq!(
            self.failed.load(Ordering::SeqCst),
            0,
            "failed requests: {:?}",
            self.errors.lock().unwrap()
        );
    }

    fn failed(&self, what: String) {
        self.failed.fetch_add(1, Ordering::SeqCst);
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < 10 {
            errors.push(what);
        }
    }
}

/// One GET on `stream`; `Ok(None)` if the connection was closed before any byte of the
/// answer. Returns the body and whether the server closes the connection.
async fn request(stream: &mut tokio::net::TcpStream) -> std::io::Result<Option<(String, bool)>> {
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(n) => n,
            Err(e) if buf.is_empty() && e.kind() == std::io::ErrorKind::ConnectionReset => 0,
            Err(e) => return Err(e),
        };
        if n == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("cut short after {} bytes", buf.len()),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no length in {head:?}")))?;
        if body.len() >= length {
            if !head.starts_with("HTTP/1.1 200") {
                return Err(std::io::Error::other(format!("answered {head:?}")));
            }
            return Ok(Some((body.to_string(), head.contains("Connection: close"))));
        }
    }
}

/// Requests to `address` until `stop`: `keep_alive` clients reuse their connection, the
/// others open a fresh one per request. Every request is bounded by 10 s.
pub fn load(
    address: String,
    keep_alive: usize,
    fresh: usize,
    stop: Arc<AtomicBool>,
) -> (Arc<Load>, Vec<tokio::task::JoinHandle<()>>) {
    let seen = Arc::new(Load::default());
    let mut clients = Vec::new();
    for i in 0..keep_alive + fresh {
        let reuse = i < keep_alive;
        let (address, stop, seen) = (address.clone(), stop.clone(), seen.clone());
        clients.push(tokio::spawn(async move {
            let mut conn: Option<tokio::net::TcpStream> = None;
            while !stop.load(Ordering::SeqCst) {
                let began = std::time::Instant::now();
                let one = async {
                    let mut retried = false;
                    loop {
                        let reused = conn.is_some();
                        let mut stream = match conn.take() {
                            Some(s) => s,
                            None => tokio::net::TcpStream::connect(&address)
                                .await
                                .map_err(|e| format!("connect: {e}"))?,
                        };
                        match request(&mut stream).await {
                            Ok(Some((body, closing))) => {
                                if reuse && !closing {
                                    conn = Some(stream);
                                }
                                return Ok((body, retried));
                            }
                            Ok(None) if reused && !retried => retried = true,
                            Ok(None) => return Err("closed before answering".to_string()),
                            Err(e) => return Err(format!("request: {e}")),
                        }
                    }
                };
                match tokio::time::timeout(Duration::from_secs(10), one).await {
                    Ok(Ok((body, retried))) => {
                        seen.ok.fetch_add(1, Ordering::SeqCst);
                        if retried {
                            seen.retried.fetch_add(1, Ordering::SeqCst);
                        }
                        *seen.answers.lock().unwrap().entry(body).or_default() += 1;
                    }
                    Ok(Err(e)) => seen.failed(e),
                    Err(_) => seen.failed("no answer within 10s".into()),
                }
                let took = began.elapsed();
                let mut longest = seen.longest.lock().unwrap();
                *longest = (*longest).max(took);
                drop(longest);
                seen.latencies
                    .lock()
                    .unwrap()
                    .push(took.as_micros().min(u32::MAX as u128) as u32);
            }
        }));
    }
    (seen, clients)
}

/// Stops the clients of [`load`] and waits for them.
pub async fn stop(stop: &AtomicBool, clients: Vec<tokio::task::JoinHandle<()>>) {
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        let _ = c.await;
    }
}
