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
//! The messages are written by hand with prost's derive (no `protoc` needed); they are
//! wire-compatible with the `.proto` files.

use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};

use crate::ModuleError;

/// Path of the Ping call.
pub const PING_PATH: &str = "/proto.CoreService/Ping";
/// Path of the standard health check call.
pub const HEALTH_CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

/// The protocol's messages.
pub mod proto {
    /// `proto.PingRequest` (empty).
    #[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
    pub struct PingRequest {}

    /// `proto.PingResponse` (empty).
    #[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
    pub struct PingResponse {}

    /// `grpc.health.v1.HealthCheckRequest`.
    #[derive(Clone, PartialEq, Eq, prost::Message)]
    pub struct HealthCheckRequest {
        /// The service asked about; empty for the whole server.
        #[prost(string, tag = "1")]
        pub service: String,
    }

    /// `grpc.health.v1.HealthCheckResponse`.
    #[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
    pub struct HealthCheckResponse {
        /// A [`ServingStatus`].
        #[prost(enumeration = "ServingStatus", tag = "1")]
        pub status: i32,
    }

    /// `grpc.health.v1.HealthCheckResponse.ServingStatus`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum ServingStatus {
        /// Unknown.
        Unknown = 0,
        /// Serving.
        Serving = 1,
        /// Not serving.
        NotServing = 2,
        /// The service name is not known.
        ServiceUnknown = 3,
    }
}

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
/// `is_healthy` answers both Health/Check (SERVING or NOT_SERVING) and, when false, makes Ping
/// fail with `UNAVAILABLE`.
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
    tonic::transport::Server::builder()
        .add_service(CoreService {
            health: health.clone(),
        })
        .add_service(HealthService { health })
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            shutdown,
        )
        .await
        .map_err(|e| ModuleError::Other(Box::new(e)))
}

type BoxResponse = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

struct Ping(HealthFn);

impl UnaryService<proto::PingRequest> for Ping {
    type Response = proto::PingResponse;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Self::Response>, Status>> + Send>>;

    fn call(&mut self, _: Request<proto::PingRequest>) -> Self::Future {
        let health = self.0.clone();
        Box::pin(async move {
            if health().await {
                Ok(Response::new(proto::PingResponse {}))
            } else {
                Err(Status::unavailable("not healthy"))
            }
        })
    }
}

struct Check(HealthFn);

impl UnaryService<proto::HealthCheckRequest> for Check {
    type Response = proto::HealthCheckResponse;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Self::Response>, Status>> + Send>>;

    fn call(&mut self, _: Request<proto::HealthCheckRequest>) -> Self::Future {
        let health = self.0.clone();
        Box::pin(async move {
            let status = if health().await {
                proto::ServingStatus::Serving
            } else {
                proto::ServingStatus::NotServing
            };
            Ok(Response::new(proto::HealthCheckResponse {
                status: status as i32,
            }))
        })
    }
}

fn unimplemented() -> BoxResponse {
    Box::pin(async { Ok(Status::unimplemented("no such method").into_http()) })
}

/// A gRPC service with one unary method, answered by `$method` (which gets the health
/// function); any other path is UNIMPLEMENTED. What tonic-build would generate, by hand.
macro_rules! one_method_service {
    ($(#[$doc:meta])* $service:ident, $name:literal, $path:expr, $method:ident) => {
        $(#[$doc])*
        #[derive(Clone)]
        struct $service {
            health: HealthFn,
        }

        impl NamedService for $service {
            const NAME: &'static str = $name;
        }

        impl tonic::codegen::Service<http::Request<Body>> for $service {
            type Response = http::Response<Body>;
            type Error = Infallible;
            type Future = BoxResponse;

            fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
                Poll::Ready(Ok(()))
            }

            fn call(&mut self, request: http::Request<Body>) -> Self::Future {
                if request.uri().path() != $path {
                    return unimplemented();
                }
                let method = $method(self.health.clone());
                Box::pin(async move {
                    let mut grpc = Grpc::new(tonic_prost::ProstCodec::default());
                    Ok(grpc.unary(method, request).await)
                })
            }
        }
    };
}

one_method_service!(
    /// `proto.CoreService`.
    CoreService, "proto.CoreService", PING_PATH, Ping
);
one_method_service!(
    /// `grpc.health.v1.Health`.
    HealthService, "grpc.health.v1.Health", HEALTH_CHECK_PATH, Check
);
