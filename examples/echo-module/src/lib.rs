//! `echo`: a small HTTP/1.1 service. `GET /health` answers `ok`; any other request is answered
//! with its method, path and body. Config: `{host: 127.0.0.1, port: 0}` (port 0 picks a free
//! one; the address is logged and listed in the module's endpoints).
//!
//! One module, three deployments, chosen by YAML only (see `examples/configs/echo-*.yaml`):
//! `module_type: native` (`hsu` registers it as `echo`), `module_type: plugin` (`examples/echo-plugin`,
//! `libecho_plugin.so`, one line: `export_plugin!`), or `process_type: integrated` (the `hsu-echo`
//! binary, `hsu_module::run_process(EchoModule::default)`).
#![warn(missing_docs)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hsu_module::{async_trait, ModuleConfig, ModuleContext, ModuleError, ModuleInfo, WorkerModule};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest request accepted (head and body), in bytes.
const MAX_REQUEST: usize = 64 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct EchoConfig {
    /// Address to bind; loopback by default.
    host: String,
    /// Port; 0 picks a free one.
    port: u16,
}

impl Default for EchoConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 0,
        }
    }
}

/// The echo service.
#[derive(Debug, Default)]
pub struct EchoModule {
    config: Option<EchoConfig>,
    address: Option<SocketAddr>,
    /// True while the accept loop runs: what `is_healthy` reports.
    serving: Arc<AtomicBool>,
}

impl EchoModule {
    /// Checks a `config:` section as `initialize` reads it (the factory's check, run by
    /// `hsu check` without creating anything).
    ///
    /// # Errors
    /// `ModuleError::Config` naming the field.
    pub fn validate(config: &ModuleConfig) -> Result<(), ModuleError> {
        Self::read_config(config).map(drop)
    }

    fn read_config(config: &ModuleConfig) -> Result<EchoConfig, ModuleError> {
        let parsed: EchoConfig = config.parse()?;
        parsed
            .host
            .parse::<std::net::IpAddr>()
            .map_err(|e| ModuleError::Config(format!("`host`: {e}: {:?}", parsed.host)))?;
        Ok(parsed)
    }
}

#[async_trait]
impl WorkerModule for EchoModule {
    async fn initialize(
        &mut self,
        _: &ModuleContext,
        config: &ModuleConfig,
    ) -> Result<(), ModuleError> {
        self.config = Some(Self::read_config(config)?);
        Ok(())
    }

    async fn start(&mut self, ctx: &ModuleContext) -> Result<(), ModuleError> {
        let config = self
            .config
            .as_ref()
            .ok_or_else(|| ModuleError::failed("not initialised"))?;
        let listener = TcpListener::bind((config.host.as_str(), config.port)).await?;
        let address = listener.local_addr()?;
        self.address = Some(address);
        tracing::info!(%address, "echo listening on http://{address}");
        let worker = ctx.worker_id().to_string();
        let cancel = ctx.cancellation();
        let serving = self.serving.clone();
        serving.store(true, Ordering::SeqCst);
        ctx.spawn("accept", async move {
            let mut connections = tokio::task::JoinSet::new();
            let result = loop {
                tokio::select! {
                    _ = cancel.cancelled() => break Ok(()),
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            let worker = worker.clone();
                            connections.spawn(async move {
                                let served = tokio::time::timeout(Duration::from_secs(10), serve(stream, &worker)).await;
                                if let Ok(Err(e)) = served {
                                    tracing::debug!(error = %e, "echo connection failed");
                                }
                            });
                        }
                        Err(e) if is_transient(&e) => {
                            tracing::warn!(error = %e, "accept failed; retrying");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => break Err(ModuleError::Io(e)),
                    },
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            };
            serving.store(false, Ordering::SeqCst);
            result
        });
        Ok(())
    }

    async fn stop(&mut self, _: &ModuleContext) -> Result<(), ModuleError> {
        self.address = None;
        Ok(())
    }

    async fn is_healthy(&self) -> bool {
        self.serving.load(Ordering::SeqCst)
    }

    fn info(&self) -> ModuleInfo {
        let info = ModuleInfo::new("echo", env!("CARGO_PKG_VERSION"))
            .description("HTTP echo service on loopback")
            .author("hsu");
        match self.address {
            Some(a) => info.endpoint(format!("http://{a}")),
            None => info,
        }
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    ) || e.raw_os_error().is_some_and(|c| c == 24 || c == 23) // EMFILE, ENFILE
}

async fn serve(mut stream: TcpStream, worker: &str) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_REQUEST {
            return respond(&mut stream, "413 Payload Too Large", "request too large\n").await;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split_whitespace();
    let (method, path) = (
        request_line.next().unwrap_or(""),
        request_line.next().unwrap_or(""),
    );
    if method.is_empty() || path.is_empty() {
        return respond(&mut stream, "400 Bad Request", "malformed request line\n").await;
    }
    let length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    if length > MAX_REQUEST {
        return respond(&mut stream, "413 Payload Too Large", "request too large\n").await;
    }
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body_end = buf.len().min(head_end + length);
    let body = String::from_utf8_lossy(&buf[head_end..body_end]);
    if path == "/health" {
        return respond(&mut stream, "200 OK", "ok\n").await;
    }
    let text = format!("echo from {worker}: {method} {path}\n{body}");
    respond(&mut stream, "200 OK", &text).await
}

async fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
