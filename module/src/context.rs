//! What the host hands to every module call: identity, cancellation, tracing span, task spawner,
//! and the worker's `config:` section.

use std::future::Future;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tracing::Span;

use crate::ModuleError;

/// A module's long-running task, as handed to the host.
pub type TaskFuture = Pin<Box<dyn Future<Output = Result<(), ModuleError>> + Send + 'static>>;

/// Implemented by the host: runs a module's task and watches how it ends. A task that returns
/// an error or panics while the worker runs fails the worker.
pub trait TaskSpawner: Send + Sync {
    /// Starts `task`, named `name` in logs and errors.
    fn spawn(&self, name: String, task: TaskFuture);
}

/// The context of one module call. Cheap to clone; a new one is made for every start, so its
/// cancellation token fires exactly once, when that run stops.
#[derive(Clone)]
pub struct ModuleContext {
    worker_id: Arc<str>,
    cancel: CancellationToken,
    span: Span,
    spawner: Arc<dyn TaskSpawner>,
    sockets: Arc<[(String, OwnedFd)]>,
}

impl ModuleContext {
    /// Built by the host. `span` should be the worker's span (`worker{id=…}`).
    pub fn new(
        worker_id: impl Into<Arc<str>>,
        cancel: CancellationToken,
        span: Span,
        spawner: Arc<dyn TaskSpawner>,
    ) -> Self {
        Self {
            worker_id: worker_id.into(),
            cancel,
            span,
            spawner,
            sockets: Arc::new([]),
        }
    }

    /// The worker's listening sockets (its `sockets:`), by name, held by the host for the
    /// worker's lifetime. Set by the host.
    pub fn with_sockets(mut self, sockets: Vec<(String, OwnedFd)>) -> Self {
        self.sockets = sockets.into();
        self
    }

    /// The worker's sockets, name and descriptor (the context's own; borrowed), in the order
    /// configured.
    pub fn sockets(&self) -> impl Iterator<Item = (&str, std::os::fd::BorrowedFd<'_>)> {
        use std::os::fd::AsFd;
        self.sockets.iter().map(|(n, fd)| (n.as_str(), fd.as_fd()))
    }

    /// The names of the worker's sockets, in the order configured.
    pub fn socket_names(&self) -> Vec<&str> {
        self.sockets.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// A new descriptor for socket `name` (the host keeps its own: the listening socket stays
    /// open across restarts and while a successor instance takes over).
    ///
    /// # Errors
    /// [`ModuleError::Config`] when the worker has no socket of that name;
    /// [`ModuleError::Failed`] when it cannot be duplicated.
    pub fn socket(&self, name: &str) -> Result<OwnedFd, ModuleError> {
        let (_, fd) = self
            .sockets
            .iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| {
                ModuleError::Config(format!(
                    "no socket named `{name}` in this worker's `sockets:` (it has: {})",
                    if self.sockets.is_empty() {
                        "none".to_string()
                    } else {
                        self.socket_names().join(", ")
                    }
                ))
            })?;
        fd.try_clone()
            .map_err(|e| ModuleError::failed(format!("socket `{name}`: cannot duplicate: {e}")))
    }

    /// Socket `name` as a TCP listener. Its blocking mode is the socket's (`nonblocking:` in
    /// the config); to serve it with tokio, make it non-blocking with `nonblocking: true`
    /// (a mode set here would change it for every instance, which share the socket).
    ///
    /// # Errors
    /// As [`socket`](Self::socket), or [`ModuleError::Config`] when it is not a TCP socket.
    pub fn tcp_listener(&self, name: &str) -> Result<std::net::TcpListener, ModuleError> {
        let listener = std::net::TcpListener::from(self.socket(name)?);
        listener.local_addr().map_err(|e| {
            ModuleError::Config(format!("socket `{name}` is not a TCP socket ({e})"))
        })?;
        Ok(listener)
    }

    /// Socket `name` as a Unix stream listener (see [`tcp_listener`](Self::tcp_listener)).
    ///
    /// # Errors
    /// As [`socket`](Self::socket), or [`ModuleError::Config`] when it is not a Unix socket.
    pub fn unix_listener(
        &self,
        name: &str,
    ) -> Result<std::os::unix::net::UnixListener, ModuleError> {
        let listener = std::os::unix::net::UnixListener::from(self.socket(name)?);
        match listener.local_addr() {
            Ok(a) if a.as_pathname().is_some() => Ok(listener),
            _ => Err(ModuleError::Config(format!(
                "socket `{name}` is not a Unix socket"
            ))),
        }
    }

    /// The worker's id from the config.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Cancelled when this run of the module is asked to stop (before `stop` is called).
    pub fn cancellation(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// True once this run has been asked to stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// The worker's tracing span; events inside it carry the worker id.
    pub fn span(&self) -> &Span {
        &self.span
    }

    /// Runs `task` on the module runtime inside the worker's span. If it returns an error or
    /// panics while the worker is running, the worker fails (and the restart policy applies).
    /// Tasks should end when [`cancellation`](Self::cancellation) fires.
    pub fn spawn<F>(&self, name: &str, task: F)
    where
        F: Future<Output = Result<(), ModuleError>> + Send + 'static,
    {
        use tracing::Instrument;
        let span = self.span.clone();
        self.spawner
            .spawn(name.to_string(), Box::pin(task.instrument(span)));
    }
}

impl std::fmt::Debug for ModuleContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleContext")
            .field("worker_id", &self.worker_id)
            .field("cancelled", &self.cancel.is_cancelled())
            .field("sockets", &self.socket_names())
            .finish()
    }
}

/// A worker's `config:` section, exactly as written in the YAML (an empty mapping if absent).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModuleConfig(serde_yaml::Value);

impl ModuleConfig {
    /// Wraps a YAML value.
    pub fn new(value: serde_yaml::Value) -> Self {
        Self(value)
    }

    /// The raw YAML value.
    pub fn value(&self) -> &serde_yaml::Value {
        &self.0
    }

    /// Deserialises the whole section into the module's own config type.
    ///
    /// # Errors
    /// [`ModuleError::Config`] naming the offending field.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ModuleError> {
        let value = if self.0.is_null() {
            serde_yaml::Value::Mapping(Default::default())
        } else {
            self.0.clone()
        };
        serde_yaml::from_value(value).map_err(|e| ModuleError::Config(e.to_string()))
    }

    /// Reads one key, or `default` when it is absent.
    ///
    /// # Errors
    /// [`ModuleError::Config`] when the key is present with the wrong type.
    pub fn get_or<T: DeserializeOwned>(&self, key: &str, default: T) -> Result<T, ModuleError> {
        match self.0.get(key) {
            None | Some(serde_yaml::Value::Null) => Ok(default),
            Some(v) => serde_yaml::from_value(v.clone())
                .map_err(|e| ModuleError::Config(format!("`{key}`: {e}"))),
        }
    }
}
