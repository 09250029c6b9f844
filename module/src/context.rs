//! What the host hands to every module call: identity, cancellation, tracing span, task spawner,
//! and the worker's `config:` section.

use std::future::Future;
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
