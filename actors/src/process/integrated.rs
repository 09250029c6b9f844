//! The master's side of HSU's control protocol: Ping and gRPC health calls to an integrated
//! worker on 127.0.0.1, each under a deadline. The channel and its connection live on the
//! worker runtime, never on an arbiter.

use std::time::Duration;

use hsu_module::integrated::EXIT_PORT_IN_USE;
use tokio::sync::watch;

use hsu_module::integrated::health::health_client::HealthClient;
use hsu_module::integrated::health::HealthCheckRequest;
use hsu_module::integrated::proto::core_service_client::CoreServiceClient;
use hsu_module::integrated::{proto, ServingStatus, HEALTH_CHECK_PATH, PING_PATH};
use tonic::transport::{Channel, Endpoint};

use super::ExitInfo;
use crate::config::IntegratedConfig;
use crate::runtime::WorkerRuntime;

/// Why a control call failed. The texts of the transport and of the worker's status are kept as
/// text: they cross a network and are shown, not matched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The endpoint URI could not be built.
    #[error("invalid control endpoint: {0}")]
    Endpoint(String),
    /// No connection to the worker.
    #[error("not reachable: {0}")]
    Unreachable(String),
    /// The worker answered with a non-OK gRPC status.
    #[error("{path}: {code} {message}")]
    Status {
        /// The call.
        path: &'static str,
        /// The gRPC code, in words.
        code: String,
        /// The worker's message.
        message: String,
    },
    /// No answer in time.
    #[error("{path}: no answer within {after:?}")]
    Timeout {
        /// The call.
        path: &'static str,
        /// The limit.
        after: Duration,
    },
    /// The call's task ended early (the runtime is shutting down).
    #[error("{path}: {reason}")]
    Interrupted {
        /// The call.
        path: &'static str,
        /// The task's end, in words.
        reason: String,
    },
}

/// A lazily connecting client for one integrated worker.
#[derive(Clone, Debug)]
pub struct ControlClient {
    channel: Channel,
    runtime: WorkerRuntime,
    call_timeout: Duration,
}

impl ControlClient {
    /// A client for `127.0.0.1:port`; it connects on first use and reconnects as needed.
    ///
    /// # Errors
    /// Only if the URI could not be built (it always can for a port).
    pub fn new(
        port: u16,
        call_timeout: Duration,
        runtime: &WorkerRuntime,
    ) -> Result<Self, ControlError> {
        let endpoint = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .map_err(|e| ControlError::Endpoint(e.to_string()))?
            .connect_timeout(call_timeout)
            .timeout(call_timeout);
        // The channel's background task is spawned on the runtime entered here.
        let _entered = runtime.handle().enter();
        Ok(Self {
            channel: endpoint.connect_lazy(),
            runtime: runtime.clone(),
            call_timeout,
        })
    }

    /// `/proto.CoreService/Ping`; Ok when it answers in time.
    ///
    /// # Errors
    /// [`ControlError`]: unreachable, a non-OK status (UNAVAILABLE when not healthy), timeout.
    pub async fn ping(&self, limit: Duration) -> Result<(), ControlError> {
        self.call(PING_PATH, limit, |channel, request| async move {
            CoreServiceClient::new(channel)
                .ping(request.map(|()| proto::PingRequest {}))
                .await
                .map(drop)
        })
        .await
    }

    /// `/grpc.health.v1.Health/Check` for `service`; true when SERVING.
    ///
    /// # Errors
    /// [`ControlError`]: unreachable, a non-OK status (NOT_FOUND for a service the worker does
    /// not know), timeout.
    pub async fn health(&self, service: &str, limit: Duration) -> Result<bool, ControlError> {
        let service = service.to_string();
        self.call(HEALTH_CHECK_PATH, limit, |channel, request| async move {
            HealthClient::new(channel)
                .check(request.map(|()| HealthCheckRequest { service }))
                .await
                .map(|r| r.into_inner().status == ServingStatus::Serving as i32)
        })
        .await
    }

    /// Runs one call on the worker runtime with a deadline (sent as `grpc-timeout` too).
    async fn call<T, F, Fut>(
        &self,
        path: &'static str,
        limit: Duration,
        call: F,
    ) -> Result<T, ControlError>
    where
        T: Send + 'static,
        F: FnOnce(Channel, tonic::Request<()>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, tonic::Status>> + Send + 'static,
    {
        let channel = self.channel.clone();
        let deadline = limit.min(self.call_timeout);
        let task = self.runtime.handle().spawn(async move {
            // Connected first, so "nothing listens" is told apart from a worker's answer.
            tonic::client::Grpc::new(channel.clone())
                .ready()
                .await
                .map_err(|e| ControlError::Unreachable(e.to_string()))?;
            let mut request = tonic::Request::new(());
            request.set_timeout(deadline);
            call(channel, request)
                .await
                .map_err(|s| ControlError::Status {
                    path,
                    code: s.code().to_string(),
                    message: s.message().to_string(),
                })
        });
        let abort = task.abort_handle();
        match tokio::time::timeout(deadline, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(ControlError::Interrupted {
                path,
                reason: e.to_string(),
            }),
            Err(_) => {
                abort.abort();
                Err(ControlError::Timeout {
                    path,
                    after: deadline,
                })
            }
        }
    }
}

/// A free port on 127.0.0.1, chosen by the kernel.
///
/// # Errors
/// When no socket can be bound.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

/// Why an integrated worker did not become ready.
#[derive(Debug, Clone, PartialEq)]
pub struct NotReady {
    /// In words, for the worker's error.
    pub reason: String,
    /// It exited with [`EXIT_PORT_IN_USE`] before answering: its control port was taken, and
    /// a launch with another port may well succeed.
    pub port_in_use: bool,
}

/// Waits for the first successful Ping of a new run, polling with a growing pause (20 ms up
/// to 250 ms) until `startup_timeout`, the last Ping sent at the deadline itself (it may take
/// its `call_timeout` to answer); fails at once if the process exits first (`exited`).
///
/// # Errors
/// [`NotReady`] on exit before the first Ping, or when `startup_timeout` passes.
pub async fn wait_ready(
    control: &ControlClient,
    mut exited: watch::Receiver<Option<ExitInfo>>,
    config: &IntegratedConfig,
) -> Result<(), NotReady> {
    let deadline = tokio::time::Instant::now() + config.startup_timeout;
    let mut pause = Duration::from_millis(20);
    let mut last_error;
    loop {
        if let Some(info) = exited.borrow_and_update().clone() {
            return Err(NotReady {
                reason: format!("process {info} before answering Ping"),
                port_in_use: info.code == Some(i32::from(EXIT_PORT_IN_USE)),
            });
        }
        // The last Ping is sent at the deadline itself, so the worker gets the whole
        // `startup_timeout` to be ready; that one Ping may take its `call_timeout` to answer.
        match control.ping(config.call_timeout).await {
            Ok(()) => return Ok(()),
            Err(e) => last_error = e,
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(NotReady {
                reason: format!(
                    "no successful Ping within startup_timeout {} (last error: {last_error})",
                    crate::config::duration::format(config.startup_timeout)
                ),
                port_in_use: false,
            });
        }
        // Wake early if the process exits meanwhile; never sleep past the deadline.
        let _ = tokio::time::timeout(pause.min(deadline - now), exited.changed()).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}
