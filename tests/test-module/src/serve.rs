//! A small HTTP/1.1 server for the socket tests, shared by the test module (every deployment)
//! and `hsu-test-worker --serve-socket`: it answers every request with `answer`, keeps
//! connections alive, and drains on stop — it stops accepting (the listening socket is the
//! master's and stays open, so what waits in its queue goes to the next instance), answers
//! the requests it has begun and the first request of every connection it accepted with
//! `Connection: close`, and closes idle kept-alive connections.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// Serves `listener` until `stop` turns true, then drains (at most 5 s).
pub async fn serve(
    listener: std::net::TcpListener,
    answer: String,
    mut stop: watch::Receiver<bool>,
) {
    listener
        .set_nonblocking(true)
        .expect("the socket can be made non-blocking");
    let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
    let mut connections = tokio::task::JoinSet::new();
    let template = stop.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(connection(stream, answer.clone(), template.clone()));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            },
            _ = stopped(&mut stop) => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
}

async fn connection(
    mut stream: tokio::net::TcpStream,
    answer: String,
    mut stop: watch::Receiver<bool>,
) {
    let mut buf = Vec::with_capacity(1024);
    let mut served = 0u64;
    loop {
        // Idle: wait for a request, or close on stop. A connection that has had no answer
        // yet is waited for: its client sent (or is sending) a request it expects answered.
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = if buf.is_empty() && served > 0 {
                tokio::select! {
                    n = stream.read(&mut chunk) => n,
                    _ = stopped(&mut stop) => return,
                }
            } else {
                stream.read(&mut chunk).await
            };
            match n {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        buf.drain(..end);
        let closing = *stop.borrow() || head.contains("connection: close");
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n{answer}",
            answer.len(),
            if closing { "close" } else { "keep-alive" }
        );
        if stream.write_all(response.as_bytes()).await.is_err() || closing {
            return;
        }
        served += 1;
    }
}

/// Resolves once `stop` is true (the guard `wait_for` returns is not held across awaits).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
