//! `RegistryActor`: the named native module factories and the loaded plugin libraries. An
//! actor so that registration at run time from any thread is a message, and lookups never race
//! it. A plugin path is loaded once and shared by every worker naming it (plugins are never
//! unloaded, see [`crate::plugin`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use actix::prelude::*;
use hsu_module::ModuleFactory;

use crate::error::MasterError;
use crate::plugin::{PluginError, PluginInfo, PluginLibrary};

/// Registers a native module factory under `name`, the `module_name` that configs use.
/// Send it to the master (which forwards it) or to the registry. Fails if the name is taken.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), MasterError>")]
pub struct RegisterNativeModuleFactory {
    /// The name configs refer to.
    pub name: String,
    /// Creates instances.
    pub factory: ModuleFactory,
}

impl RegisterNativeModuleFactory {
    /// Registers `make` under `name`.
    pub fn new<F>(name: &str, make: F) -> Self
    where
        F: Fn() -> Box<dyn hsu_module::WorkerModule> + Send + Sync + 'static,
    {
        Self {
            name: name.to_string(),
            factory: ModuleFactory::new(make),
        }
    }
}

/// Looks a factory up. Replies with it, or with the names that are registered.
#[derive(Debug, Message)]
#[rtype(result = "Result<ModuleFactory, Vec<String>>")]
pub struct GetFactory(pub String);

/// Lists registered factory names, sorted.
#[derive(Debug, Message)]
#[rtype(result = "Vec<String>")]
pub struct ListFactories;

/// Loads the plugin library at a path (once; later requests share it) and replies with a
/// factory of its modules. Relative paths are taken from the master's working directory.
#[derive(Debug, Message)]
#[rtype(result = "Result<ModuleFactory, PluginError>")]
pub struct LoadPlugin(pub PathBuf);

/// Lists the loaded plugin libraries with their header facts and live instance counts, sorted
/// by path. Send it to the master (which forwards it) or to the registry.
#[derive(Debug, Message, Default)]
#[rtype(result = "Vec<PluginInfo>")]
pub struct ListLoadedModules;

/// Holds the factories and plugin libraries.
#[derive(Default)]
pub struct RegistryActor {
    /// By name; sorted so error messages list names in a stable order.
    factories: BTreeMap<String, ModuleFactory>,
    /// By canonical path. Never removed: a library is never unloaded.
    plugins: BTreeMap<PathBuf, Arc<PluginLibrary>>,
}

impl Actor for RegistryActor {
    type Context = Context<Self>;
}

impl Handler<RegisterNativeModuleFactory> for RegistryActor {
    type Result = Result<(), MasterError>;

    fn handle(&mut self, msg: RegisterNativeModuleFactory, _: &mut Context<Self>) -> Self::Result {
        if msg.name.trim().is_empty() {
            return Err(MasterError::Validation {
                id: String::new(),
                issues: vec![crate::config::ValidationIssue {
                    worker: None,
                    field: "module_name".into(),
                    message: "a factory name must not be empty".into(),
                }],
            });
        }
        if self.factories.contains_key(&msg.name) {
            return Err(MasterError::FactoryConflict { name: msg.name });
        }
        tracing::debug!(name = %msg.name, "native module factory registered");
        self.factories.insert(msg.name, msg.factory);
        Ok(())
    }
}

impl Handler<GetFactory> for RegistryActor {
    type Result = Result<ModuleFactory, Vec<String>>;

    fn handle(&mut self, msg: GetFactory, _: &mut Context<Self>) -> Self::Result {
        self.factories
            .get(&msg.0)
            .cloned()
            .ok_or_else(|| self.factories.keys().cloned().collect())
    }
}

impl Handler<ListFactories> for RegistryActor {
    type Result = MessageResult<ListFactories>;

    fn handle(&mut self, _: ListFactories, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.factories.keys().cloned().collect())
    }
}

impl Handler<LoadPlugin> for RegistryActor {
    type Result = Result<ModuleFactory, PluginError>;

    /// `dlopen` runs here, on the registry's thread: it takes about a millisecond for a small
    /// library (see the bench) and happens once per path.
    fn handle(&mut self, msg: LoadPlugin, _: &mut Context<Self>) -> Self::Result {
        let key = msg.0.canonicalize().unwrap_or_else(|_| msg.0.clone());
        if let Some(library) = self.plugins.get(&key) {
            return Ok(library.factory());
        }
        let library = PluginLibrary::load(&msg.0)?;
        let factory = library.factory();
        self.plugins.insert(library.path().to_path_buf(), library);
        Ok(factory)
    }
}

impl Handler<ListLoadedModules> for RegistryActor {
    type Result = MessageResult<ListLoadedModules>;

    fn handle(&mut self, _: ListLoadedModules, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.plugins.values().map(|l| l.info()).collect())
    }
}
