//! hsu: run services as OS processes or as in-process modules under one lifecycle.
//!
//! This crate is the facade an embedding application imports: it re-exports the engine
//! ([`hsu_actors`]: master, messages, config, state machine) and the module API
//! ([`hsu_module`]), and adds the built-in demo modules and the embedded default config that
//! the `hsu` binary runs.
//!
//! ```no_run
//! use hsu::{AddWorker, MasterActor, MasterConfig, StartWorker, WorkerConfig};
//!
//! #[actix::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let master = MasterActor::launch(MasterConfig::default())?;
//!     hsu::builtin::register(&master).await?;
//!     let id = master.send(AddWorker(WorkerConfig::native("echo", "echo"))).await??;
//!     master.send(StartWorker(id)).await??;
//!     Ok(())
//! }
//! ```
#![warn(missing_docs)]

pub mod api;
pub mod builtin;
pub mod import;

pub use hsu_actors::*;
pub use hsu_module as module;
pub use hsu_module::{
    async_trait, ModuleConfig, ModuleContext, ModuleError, ModuleFactory, ModuleInfo, WorkerModule,
};

/// The config `hsu run` uses when given none: the built-in demo modules.
pub const DEFAULT_CONFIG: &str = include_str!("../examples/configs/default.yaml");

#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
