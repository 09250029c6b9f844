//! `HealthActor`: polls the health of running workers and reports each result to the master.
//!
//! One actor for every worker and probe kind, so probe scheduling and failure counting live in
//! one place: it counts failures in a row and says when a report reaches the threshold. Each
//! probe runs as its own future with its own timeout: a slow probe never delays another
//! worker's. A probe that times out counts as failed, never as passed.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use actix::prelude::*;

use crate::config::{HealthCheckConfig, ProbeType};
use crate::error::error_chain;
use crate::runtime::WorkerRuntime;
use crate::worker::CheckHealth;
use crate::WorkerId;

/// How a worker's health is probed.
#[derive(Clone)]
pub enum Probe {
    /// Ask the worker actor (`module`, `process`, `ping`, `grpc_health`).
    Worker(Recipient<CheckHealth>, ProbeType, String),
    /// GET a URL; a 2xx status passes.
    Http(String),
    /// Connect to `host:port`.
    Tcp(String),
    /// Run a command; exit status 0 passes.
    Exec(Vec<String>),
}

impl Probe {
    /// The probe `config` asks for, given the worker's own kind of probe and its address.
    pub fn from_config(
        config: &HealthCheckConfig,
        default: ProbeType,
        worker: Recipient<CheckHealth>,
    ) -> Self {
        match config.probe.unwrap_or(default) {
            ProbeType::Http => Self::Http(config.url.clone().unwrap_or_default()),
            ProbeType::Tcp => Self::Tcp(config.address.clone().unwrap_or_default()),
            ProbeType::Exec => Self::Exec(config.command.clone()),
            other => Self::Worker(worker, other, config.service.clone()),
        }
    }
}

/// Starts polling `id` (sent by the master when the worker becomes running). Replaces an
/// earlier watch of the same id.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WatchHealth {
    /// The worker.
    pub id: WorkerId,
    /// How to probe it.
    pub probe: Probe,
    /// Interval, timeout, threshold, initial delay.
    pub config: HealthCheckConfig,
}

/// Stops polling `id` (the worker left `running`). Results of probes in flight are dropped.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct UnwatchHealth(pub WorkerId);

/// Event: the result of one probe, sent to the master.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct HealthReport {
    /// The worker.
    pub id: WorkerId,
    /// The probe passed.
    pub healthy: bool,
    /// Failed probes in a row, this one included (0 when healthy).
    pub consecutive_failures: u32,
    /// The configured threshold (for the log line).
    pub failure_threshold: u32,
    /// This failure reached the threshold: the worker is unhealthy for good and should be
    /// failed. The watch ends with this report (no further probes of this run).
    pub threshold_reached: bool,
    /// Why it failed.
    pub error: Option<String>,
    /// When the probe finished.
    pub at: SystemTime,
}

struct Watch {
    /// Distinguishes this watch from earlier ones of the same id.
    token: u64,
    probe: Probe,
    config: HealthCheckConfig,
    consecutive_failures: u32,
}

/// Schedules and runs probes.
pub struct HealthActor {
    watched: HashMap<WorkerId, Watch>,
    next_token: u64,
    /// Where results go: the master.
    reports: Recipient<HealthReport>,
    /// Where network and exec probes run, off the actors' thread.
    runtime: WorkerRuntime,
}

impl HealthActor {
    /// A health actor reporting to `reports`, running probes on `runtime`.
    pub fn new(reports: Recipient<HealthReport>, runtime: WorkerRuntime) -> Self {
        Self {
            watched: HashMap::new(),
            next_token: 0,
            reports,
            runtime,
        }
    }

    fn probe(&mut self, id: WorkerId, token: u64, ctx: &mut Context<Self>) {
        let Some(watch) = self.watched.get(&id).filter(|w| w.token == token) else {
            return;
        };
        let probing = probe_once(&watch.probe, watch.config.timeout, &self.runtime);
        ctx.spawn(probing.into_actor(self).map(move |result, act, ctx| {
            let Some(watch) = act.watched.get_mut(&id).filter(|w| w.token == token) else {
                return;
            };
            match &result {
                Ok(()) => watch.consecutive_failures = 0,
                Err(_) => watch.consecutive_failures += 1,
            }
            let threshold_reached =
                result.is_err() && watch.consecutive_failures >= watch.config.failure_threshold;
            act.reports.do_send(HealthReport {
                id: id.clone(),
                healthy: result.is_ok(),
                consecutive_failures: watch.consecutive_failures,
                failure_threshold: watch.config.failure_threshold,
                threshold_reached,
                error: result.err(),
                at: SystemTime::now(),
            });
            if threshold_reached {
                act.watched.remove(&id);
                return;
            }
            let interval = watch.config.interval;
            ctx.run_later(interval, move |act, ctx| act.probe(id, token, ctx));
        }));
    }
}

/// Runs `probe` once with `timeout` (a timeout is a failure); network and exec probes run on
/// `runtime`.
pub(crate) fn probe_once(
    probe: &Probe,
    timeout: Duration,
    runtime: &WorkerRuntime,
) -> futures::future::BoxFuture<'static, Result<(), String>> {
    match probe {
        Probe::Worker(worker, probe, service) => {
            let sent = worker.send(CheckHealth {
                probe: *probe,
                service: service.clone(),
                timeout,
            });
            let probe = *probe;
            Box::pin(async move {
                // The worker enforces `timeout`; ours is a backstop if its mailbox is stuck.
                match tokio::time::timeout(timeout * 2, sent).await {
                    Err(_) => Err(format!("no answer within {timeout:?}")),
                    Ok(Err(e)) => Err(format!("worker did not answer: {e}")),
                    Ok(Ok(Err(e))) => Err(error_chain(&e)),
                    Ok(Ok(Ok(false))) => Err(match probe {
                        ProbeType::Module => "is_healthy returned false".to_string(),
                        ProbeType::Process => "process is not alive".to_string(),
                        other => format!("{other:?} probe failed"),
                    }),
                    Ok(Ok(Ok(true))) => Ok(()),
                }
            })
        }
        Probe::Http(url) => off_thread(runtime, timeout, probe_http(url.clone())),
        Probe::Tcp(address) => off_thread(runtime, timeout, probe_tcp(address.clone())),
        // Its own timeout first: the probe kills and reaps its child itself (see `probe_exec`).
        Probe::Exec(command) => off_thread(
            runtime,
            timeout + EXEC_KILL_WAIT,
            probe_exec(command.clone(), timeout),
        ),
    }
}

/// Runs `probe` on the worker runtime with `timeout`; a timeout is a failure.
fn off_thread(
    runtime: &WorkerRuntime,
    timeout: Duration,
    probe: impl std::future::Future<Output = Result<(), String>> + Send + 'static,
) -> futures::future::BoxFuture<'static, Result<(), String>> {
    let task = runtime.handle().spawn(probe);
    Box::pin(async move {
        let abort = task.abort_handle();
        match tokio::time::timeout(timeout, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(format!("probe task failed: {e}")),
            Err(_) => {
                // Dropping the probe kills an exec probe's child (kill_on_drop).
                abort.abort();
                Err(format!("timed out after {timeout:?}"))
            }
        }
    })
}

/// Largest probe answer read, in bytes; the rest is left unread (and the connection closed).
const MAX_PROBE_BODY: usize = 64 * 1024;

/// `GET url` with hyper's HTTP/1.1 client; passes on a 2xx status. The whole answer is read
/// (up to 64 KiB) before the connection is closed, so the server sees a clean close, not a
/// reset of a half-read response.
async fn probe_http(url: String) -> Result<(), String> {
    use http_body_util::{BodyExt, Empty};
    let uri: hyper::Uri = url.parse().map_err(|e| format!("not a URL: {url}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("not an http:// URL: {url}"));
    }
    let host = uri
        .host()
        .ok_or_else(|| format!("no host in {url}"))?
        .to_string();
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("cannot talk HTTP to {host}:{port}: {e}"))?;
    let driving = tokio::spawn(connection);
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, format!("{host}:{port}"))
        .header(hyper::header::USER_AGENT, "hsu-health")
        .body(Empty::<hyper::body::Bytes>::new())
        .map_err(|e| format!("bad request for {url}: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("GET {url} failed: {e}"))?;
    let status = response.status();
    // Read the answer to its end (bounded), so the close is clean.
    let mut body = response.into_body();
    let mut read = 0usize;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                read += f.data_ref().map_or(0, |d| d.len());
                if read > MAX_PROBE_BODY {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    drop(sender);
    driving.abort();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("GET {url} answered {}", status.as_u16()))
    }
}

/// Connects to `address`.
async fn probe_tcp(address: String) -> Result<(), String> {
    tokio::net::TcpStream::connect(&address)
        .await
        .map(drop)
        .map_err(|e| format!("cannot connect to {address}: {e}"))
}

/// How long an exec probe that timed out may take to be killed and reaped before the probe
/// task itself is dropped.
const EXEC_KILL_WAIT: Duration = Duration::from_secs(1);

/// Runs `command`; passes on exit status 0. One still running after `timeout` is killed and
/// reaped here: dropped running, tokio would put it in its queue of orphans, which it reaps on
/// SIGCHLD, and so install a SIGCHLD handler for good (which the master does without: see
/// `process::reaper`).
async fn probe_exec(command: Vec<String>, timeout: Duration) -> Result<(), String> {
    let (program, args) = command.split_first().ok_or("empty command")?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run `{program}`: {e}"))?;
    // Waited for here: the orphan reaper leaves it alone.
    let _own = child.id().map(crate::process::reaper::Claimed::new);
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => status.map_err(|e| format!("cannot run `{program}`: {e}"))?,
        Err(_) => {
            let _ = child.kill().await;
            return Err(format!("timed out after {timeout:?}"));
        }
    };
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{program}` {status}"))
    }
}

impl Actor for HealthActor {
    type Context = Context<Self>;
}

impl Handler<WatchHealth> for HealthActor {
    type Result = ();

    fn handle(&mut self, msg: WatchHealth, ctx: &mut Context<Self>) {
        self.next_token += 1;
        let token = self.next_token;
        let delay = msg.config.initial_delay;
        let id = msg.id.clone();
        self.watched.insert(
            msg.id,
            Watch {
                token,
                probe: msg.probe,
                config: msg.config,
                consecutive_failures: 0,
            },
        );
        ctx.run_later(delay, move |act, ctx| act.probe(id, token, ctx));
    }
}

impl Handler<UnwatchHealth> for HealthActor {
    type Result = ();

    fn handle(&mut self, msg: UnwatchHealth, _: &mut Context<Self>) {
        self.watched.remove(&msg.0);
    }
}
