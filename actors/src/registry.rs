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
use crate::runtime::WorkerRuntime;

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

    /// Adds the factory's `config:` check ([`ModuleFactory::with_validate`]).
    pub fn with_validate<V>(mut self, validate: V) -> Self
    where
        V: Fn(&hsu_module::ModuleConfig) -> Result<(), hsu_module::ModuleError>
            + Send
            + Sync
            + 'static,
    {
        self.factory = self.factory.with_validate(validate);
        self
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
pub struct RegistryActor {
    /// By name; sorted so error messages list names in a stable order.
    factories: BTreeMap<String, ModuleFactory>,
    /// By canonical path. Never removed: a library is never unloaded.
    plugins: BTreeMap<PathBuf, Arc<PluginLibrary>>,
    /// Where `dlopen` (and the path look-ups before it) run: never this actor's thread, which
    /// is the master's arbiter (a library's static initialisers may take any time).
    runtime: WorkerRuntime,
}

impl RegistryActor {
    /// An empty registry loading plugins on `runtime`'s blocking pool.
    pub fn new(runtime: WorkerRuntime) -> Self {
        Self {
            factories: BTreeMap::new(),
            plugins: BTreeMap::new(),
            runtime,
        }
    }
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
                    line: None,
                    column: None,
                    index: None,
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
    type Result = ResponseActFuture<Self, Result<ModuleFactory, PluginError>>;

    /// The path is made canonical, and a library not loaded yet is `dlopen`ed and checked, on
    /// the worker runtime's blocking pool; this actor only looks up and records. Two first
    /// loads of one path may overlap: both get the library recorded first (the dynamic loader
    /// hands out one mapping per path, and libraries are never unloaded).
    fn handle(&mut self, msg: LoadPlugin, _: &mut Context<Self>) -> Self::Result {
        let path = msg.0;
        let runtime = self.runtime.clone();
        let canonical = {
            let path = path.clone();
            self.runtime
                .handle()
                .spawn_blocking(move || path.canonicalize().unwrap_or(path))
        };
        let fallback = path.clone();
        Box::pin(
            async move { canonical.await.unwrap_or(fallback) }
                .into_actor(self)
                .then(move |key, act, _| {
                    if let Some(library) = act.plugins.get(&key) {
                        return Box::pin(fut::ready(Ok(library.factory())))
                            as ResponseActFuture<Self, _>;
                    }
                    let loading = runtime.handle().spawn_blocking({
                        let path = path.clone();
                        move || PluginLibrary::load(&path)
                    });
                    Box::pin(
                        async move {
                            loading.await.unwrap_or_else(|e| {
                                Err(PluginError::Open {
                                    path,
                                    reason: format!("the loading task ended: {e}"),
                                })
                            })
                        }
                        .into_actor(act)
                        .map(|loaded, act, _| {
                            let library = loaded?;
                            let library = act
                                .plugins
                                .entry(library.path().to_path_buf())
                                .or_insert(library)
                                .clone();
                            Ok(library.factory())
                        }),
                    )
                }),
        )
    }
}

impl Handler<ListLoadedModules> for RegistryActor {
    type Result = MessageResult<ListLoadedModules>;

    fn handle(&mut self, _: ListLoadedModules, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.plugins.values().map(|l| l.info()).collect())
    }
}
