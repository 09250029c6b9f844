//! HSU's control protocol, for integrated workers: a gRPC server on 127.0.0.1 with
//! `/proto.CoreService/Ping` (as hsu-core's `coreservice.proto`) and the standard
//! `grpc.health.v1.Health/Check`, whose answer reflects a health function you give.
//!
//! The master starts an integrated worker with a free loopback port as `--port N` (and in the
//! environment as `HSU_PORT`), waits for the first successful Ping, and then uses Ping (or
//! Health/Check) as its liveness probe. Stop is a signal (SIGTERM, then SIGKILL), as for any
//! managed process; there is no stop RPC.
//!
//! The port is chosen by the master and passed on, so another program may take it first. A
//! worker that cannot bind it exits with [`EXIT_PORT_IN_USE`] before answering any Ping; the
//! master then starts it again with another port (a few times) instead of failing the start.
//!
//! ```no_run
//! # async fn run() -> Result<(), hsu_module::ModuleError> {
//! let port = hsu_module::integrated::port_from_env().expect("started by hsu");
//! hsu_module::integrated::serve(port, || async { true }, std::future::pending()).await
//! # }
//! ```
//!
//! `proto.CoreService` is described in `module/proto/coreservice.proto` (compiled at build time
//! by protox and tonic-prost-build: no system `protoc`); `grpc.health.v1.Health` is the
//! tonic-health crate's service, so unknown service names get NOT_FOUND and `Watch` streams
//! changes, as the standard says.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use crate::ModuleError;

/// Path of the Ping call.
pub const PING_PATH: &str = "/proto.CoreService/Ping";
/// Path of the standard health check call.
pub const HEALTH_CHECK_PATH: &str = "/grpc.health.v1.Health/Check";
/// The service name under which the worker reports its health (beside `""`, the whole server).
pub const CORE_SERVICE: &str = "proto.CoreService";
/// How often the health function is asked for the `grpc.health.v1` answers (Check, Watch);
/// Ping asks it at every call.
pub const HEALTH_REFRESH: Duration = Duration::from_millis(250);

/// How long calls in flight (a health `Watch` stream never ends) may delay the end of
/// [`serve`] after its shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// The protocol's messages and services: `proto.CoreService` generated from
/// `coreservice.proto`.
pub mod proto {
    #![allow(missing_docs, clippy::pedantic)]
    tonic::include_proto!("proto");
}

/// `grpc.health.v1`: messages, client and server, from tonic-health.
pub use tonic_health::pb as health;
pub use tonic_health::pb::health_check_response::ServingStatus;

/// Exit code of an integrated worker whose control port was taken (it mirrors `EADDRINUSE` on
/// Linux). The master retries the start with another port when a worker exits with it before
/// its first Ping.
pub const EXIT_PORT_IN_USE: u8 = 98;

/// Binds the control protocol's listener on `127.0.0.1:port`. Bind it first thing, before
/// slow set-up, so a taken port is found at once (see [`EXIT_PORT_IN_USE`]).
///
/// # Errors
/// When the port cannot be bound (`AddrInUse` when another socket holds it).
pub fn bind(port: u16) -> std::io::Result<tokio::net::TcpListener> {
    let listener = std::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
    listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(listener)
}

/// The port the master chose: `--port N` among the arguments, else `HSU_PORT`.
pub fn port_from_env() -> Option<u16> {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .find(|w| w[0] == "--port")
        .and_then(|w| w[1].parse().ok())
        .or_else(|| std::env::var("HSU_PORT").ok()?.parse().ok())
}

type HealthFn = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// Serves the control protocol on `127.0.0.1:port` until `shutdown` resolves.
/// `is_healthy` answers Ping (when false, Ping fails with `UNAVAILABLE`) at every call, and
/// `grpc.health.v1.Health` (SERVING or NOT_SERVING for `""` and `proto.CoreService`) as of its
/// latest answer, asked every [`HEALTH_REFRESH`].
///
/// # Errors
/// `ModuleError::Io` when the port cannot be bound (kind `AddrInUse` when it is taken), or
/// the server's failure.
pub async fn serve<H, HF, S>(port: u16, is_healthy: H, shutdown: S) -> Result<(), ModuleError>
where
    H: Fn() -> HF + Send + Sync + 'static,
    HF: Future<Output = bool> + Send + 'static,
    S: Future<Output = ()> + Send,
{
    serve_on(bind(port)?, is_healthy, shutdown).await
}

/// [`serve`] on a listener bound beforehand with [`bind`].
///
/// # Errors
/// When the server fails.
pub async fn serve_on<H, HF, S>(
    listener: tokio::net::TcpListener,
    is_healthy: H,
    shutdown: S,
) -> Result<(), ModuleError>
where
    H: Fn() -> HF + Send + Sync + 'static,
    HF: Future<Output = bool> + Send + 'static,
    S: Future<Output = ()> + Send,
{
    let health: HealthFn = Arc::new(move || Box::pin(is_healthy()));
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let refresh = health.clone();
    let reporting = async move {
        let mut last = None;
        loop {
            let serving = refresh().await;
            if last != Some(serving) {
                last = Some(serving);
                let status = if serving {
                    tonic_health::ServingStatus::Serving
                } else {
                    tonic_health::ServingStatus::NotServing
                };
                for name in ["", CORE_SERVICE] {
                    reporter.set_service_status(name, status).await;
                }
            }
            tokio::time::sleep(HEALTH_REFRESH).await;
        }
    };
    // A stop ends the server at once for new calls and waits for those in flight; a stream
    // that never ends (a health `Watch`) is cut after SHUTDOWN_GRACE.
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    let cut = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        }
    };
    let server = tonic::transport::Server::builder()
        .add_service(proto::core_service_server::CoreServiceServer::new(Core {
            health,
        }))
        .add_service(health_service)
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            shutdown,
        );
    tokio::select! {
        result = server => result.map_err(|e| ModuleError::Other(Box::new(e))),
        () = reporting => Ok(()),
        () = cut => Ok(()),
    }
}

/// `proto.CoreService`: Ping answers OK while the health function says healthy.
struct Core {
    health: HealthFn,
}

#[tonic::async_trait]
impl proto::core_service_server::CoreService for Core {
    async fn ping(
        &self,
        _: Request<proto::PingRequest>,
    ) -> Result<Response<proto::PingResponse>, Status> {
        if (self.health)().await {
            Ok(Response::new(proto::PingResponse {}))
        } else {
            Err(Status::unavailable("not healthy"))
        }
    }
}
