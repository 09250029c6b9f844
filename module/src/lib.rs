//! The module author's side of hsu: one trait, [`WorkerModule`], that a service implements once.
//!
//! The master's YAML then decides where the service runs: compiled into the master as a
//! `native` module (created by a registered [`ModuleFactory`]), loaded as a `plugin`, or in a
//! process of its own. This crate is deliberately light (no actix, no runtime) so that plugin
//! libraries and worker binaries can depend on it cheaply.
//!
//! ```
//! use hsu_module::{async_trait, ModuleConfig, ModuleContext, ModuleError, ModuleInfo, WorkerModule};
//!
//! #[derive(Default)]
//! struct Hello { greeting: String }
//!
//! #[async_trait]
//! impl WorkerModule for Hello {
//!     async fn initialize(&mut self, _ctx: &ModuleContext, config: &ModuleConfig) -> Result<(), ModuleError> {
//!         self.greeting = config.get_or("greeting", "hello".to_string())?;
//!         Ok(())
//!     }
//!     async fn start(&mut self, ctx: &ModuleContext) -> Result<(), ModuleError> {
//!         let greeting = self.greeting.clone();
//!         let cancel = ctx.cancellation();
//!         // A long-running task: the master watches it; an error or panic fails the worker.
//!         ctx.spawn("greeter", async move {
//!             cancel.cancelled().await;
//!             tracing::info!(%greeting, "stopping");
//!             Ok(())
//!         });
//!         Ok(())
//!     }
//!     // `stop` and `is_healthy` have defaults (nothing more to stop; healthy while running).
//!     fn info(&self) -> ModuleInfo { ModuleInfo::new("hello", "0.1.0") }
//! }
//! ```
#![warn(missing_docs)]

mod context;
mod error;
mod info;
#[cfg(feature = "integrated")]
pub mod integrated;
#[cfg(feature = "plugin")]
pub mod plugin;
#[cfg(feature = "process")]
mod process;
#[cfg(feature = "process")]
pub use process::run_process;

pub use async_trait::async_trait;
pub use context::{ModuleConfig, ModuleContext, TaskFuture, TaskSpawner};
pub use error::{error_chain, ModuleError};
pub use info::ModuleInfo;
pub use tokio_util::sync::CancellationToken;

use std::sync::Arc;

/// A service that the master can run. Write it once; the config chooses the deployment.
///
/// The master calls, in order: [`initialize`](Self::initialize) once when the worker is added,
/// then any number of [`start`](Self::start)/[`stop`](Self::stop) pairs, and
/// [`is_healthy`](Self::is_healthy) while the worker runs. Every call runs on the master's
/// module runtime (a multi-threaded tokio runtime, never the master's own thread), under a
/// timeout and behind `catch_unwind`: a panic or a hang fails this worker only.
///
/// Long-running work belongs in tasks started with [`ModuleContext::spawn`], not in `start`:
/// `start` should return once the service is ready.
#[async_trait]
pub trait WorkerModule: Send + Sync + 'static {
    /// Reads the worker's `config:` section. An error here makes `AddWorker` fail.
    async fn initialize(
        &mut self,
        ctx: &ModuleContext,
        config: &ModuleConfig,
    ) -> Result<(), ModuleError>;

    /// Starts serving. Returns when the service is ready; spawn its long-running work with
    /// [`ModuleContext::spawn`]. An error puts the worker in `failed_start`.
    async fn start(&mut self, ctx: &ModuleContext) -> Result<(), ModuleError>;

    /// Stops serving. The context's cancellation token is already cancelled when this runs;
    /// tasks still running after `stop` returns are awaited until the stop timeout, then aborted.
    ///
    /// The default does nothing more: enough for a module whose tasks end when the token is
    /// cancelled. Override it to flush, deregister or close what the tasks do not.
    async fn stop(&mut self, ctx: &ModuleContext) -> Result<(), ModuleError> {
        let _ = ctx;
        Ok(())
    }

    /// Polled by the master's health actor while the worker runs. `false` for
    /// `failure_threshold` polls in a row fails the worker (and may restart it).
    ///
    /// The default answers `true`: a module is then healthy while it runs, and a task that
    /// fails or panics still fails the worker at once. Override it with a real check (a
    /// listener that still accepts, a connection that still answers).
    async fn is_healthy(&self) -> bool {
        true
    }

    /// Static facts about the module, shown in diagnostics.
    fn info(&self) -> ModuleInfo;
}

/// Checks a `config:` section without creating an instance (see [`ModuleFactory::with_validate`]).
pub type ValidateConfig = dyn Fn(&ModuleConfig) -> Result<(), ModuleError> + Send + Sync;

/// Creates a fresh, uninitialised module instance. Registered under a name with the master;
/// each worker (and each restart after a failure) gets its own instance, so several workers of
/// one factory with different `config:` coexist.
///
/// A factory may also offer a check of the `config:` section ([`Self::with_validate`]), which
/// `hsu check` runs on every worker of the factory without creating or starting anything: a
/// mistake such as `port: 99999` is then reported with the file's other problems instead of at
/// `initialize`.
#[derive(Clone)]
pub struct ModuleFactory {
    make: Arc<dyn Fn() -> Box<dyn WorkerModule> + Send + Sync>,
    validate: Option<Arc<ValidateConfig>>,
}

impl ModuleFactory {
    /// Wraps a constructor, for instance `ModuleFactory::new(|| Box::new(MyModule::default()))`.
    pub fn new<F>(make: F) -> Self
    where
        F: Fn() -> Box<dyn WorkerModule> + Send + Sync + 'static,
    {
        Self {
            make: Arc::new(make),
            validate: None,
        }
    }

    /// Adds a check of the `config:` section; it should accept exactly what `initialize`
    /// accepts (the usual way: both call one parsing function).
    pub fn with_validate<V>(mut self, validate: V) -> Self
    where
        V: Fn(&ModuleConfig) -> Result<(), ModuleError> + Send + Sync + 'static,
    {
        self.validate = Some(Arc::new(validate));
        self
    }

    /// Builds one new instance.
    pub fn create(&self) -> Box<dyn WorkerModule> {
        (self.make)()
    }

    /// Checks `config` with the factory's check; `Ok` when it offers none.
    ///
    /// # Errors
    /// What the check says is wrong.
    pub fn validate(&self, config: &ModuleConfig) -> Result<(), ModuleError> {
        match &self.validate {
            Some(check) => check(config),
            None => Ok(()),
        }
    }

    /// Whether the factory offers a config check.
    pub fn validates(&self) -> bool {
        self.validate.is_some()
    }
}

impl std::fmt::Debug for ModuleFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ModuleFactory")
    }
}

/// The text of a panic payload (`panic!("…")` gives a `String` or a `&str`), for reporting a
/// caught panic.
pub fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(s) => s.to_string(),
            Err(_) => "panic with a non-text payload".to_string(),
        },
    }
}
