//! `AddWorker`: validate, reserve the id, look up the factory (or load the plugin), create the
//! worker actor, `initialize` it, insert it into the table. The waiting happens in a plain
//! future; short self-messages touch the table.

use actix::prelude::*;

use super::messages::{AddConfigured, AddWorker, AddWorkerSpec, Added};
use super::table::{Entry, WorkerAddr};
use super::MasterActor;
use crate::config::{
    validate_worker, DeploymentSpec, ModuleType, ValidationIssue, WorkerConfig, WorkerSpec,
};
use crate::error::{error_chain, MasterError};
use crate::packages::PackageIndex;
use crate::registry::{GetFactory, LoadPlugin};
use crate::worker::module_worker::{ModuleWorkerActor, ModuleWorkerSetup};
use crate::worker::process_worker::{ProcessWorkerActor, ProcessWorkerSetup};
use crate::worker::Deployment;
use crate::WorkerId;

/// A worker actor just created by [`MasterActor::create_worker`].
pub(super) struct Created {
    pub addr: WorkerAddr,
    pub kind: Deployment,
    pub instance: u64,
    /// Its cgroup's name under the master's (processes).
    pub cgroup: String,
}

impl MasterActor {
    /// Starts the actor for a validated worker (`factory` for modules), on `sockets` (the
    /// worker's, shared by all its instances). A `successor` (a `start_first` replacement,
    /// running beside the instance it replaces) gets a cgroup of its own.
    pub(super) fn create_worker(
        &mut self,
        spec: &WorkerSpec,
        factory: Option<hsu_module::ModuleFactory>,
        sockets: std::sync::Arc<crate::sockets::WorkerSockets>,
        successor: bool,
        ctx: &mut Context<Self>,
    ) -> Created {
        let events = ctx.address().recipient();
        self.next_instance += 1;
        let instance = self.next_instance;
        let cgroup = if successor {
            format!("{}~{instance}", spec.id)
        } else {
            spec.id.to_string()
        };
        match (&spec.deployment, factory) {
            (
                DeploymentSpec::Module {
                    module_type,
                    module_name,
                    config,
                },
                Some(factory),
            ) => {
                let setup = ModuleWorkerSetup {
                    id: spec.id.clone(),
                    module_name: module_name.clone(),
                    factory,
                    config: config.clone(),
                    runtime: self.runtime.clone(),
                    instance,
                    events,
                    start_timeout: spec.start_timeout,
                    stop_timeout: spec.stop_timeout,
                    logs: self.config.logs.clone(),
                    sockets,
                };
                Created {
                    addr: WorkerAddr::Module(ModuleWorkerActor::new(setup).start()),
                    kind: Deployment::from(*module_type),
                    instance,
                    cgroup,
                }
            }
            (DeploymentSpec::Process(process), _) => {
                let setup = ProcessWorkerSetup {
                    id: spec.id.clone(),
                    spec: process.clone(),
                    runtime: self.runtime.clone(),
                    spawner: self.spawner.clone(),
                    instance,
                    events,
                    logs: self.config.logs.clone(),
                    run_table: self.run_table.clone(),
                    cgroups: self.cgroups.clone(),
                    cgroup_name: cgroup.clone(),
                    sockets,
                };
                Created {
                    addr: WorkerAddr::Process(ProcessWorkerActor::new(setup).start()),
                    kind: Deployment::from(process.process_type),
                    instance,
                    cgroup,
                }
            }
            (DeploymentSpec::Module { .. }, None) => {
                unreachable!("native modules are looked up first")
            }
        }
    }

    /// A worker's sockets, bound now (a socket that cannot be bound yet is bound again at
    /// each start, whose failure then says why). `keep`: the sockets of the form it replaces.
    pub(super) fn bind_sockets(
        spec: &WorkerSpec,
        keep: Option<&crate::sockets::WorkerSockets>,
    ) -> std::sync::Arc<crate::sockets::WorkerSockets> {
        let sockets = crate::sockets::WorkerSockets::new(&spec.id, &spec.sockets, keep);
        if let Err(e) = sockets.ensure() {
            tracing::error!(worker = %spec.id, error = %error_chain(&e), "a socket cannot be bound yet; each start tries again");
        }
        sockets
    }

    /// The factory a module worker's code comes from: from the registry (a plugin is loaded
    /// there, once per path); processes need none.
    pub(super) fn lookup_code(
        &self,
        spec: &WorkerSpec,
    ) -> futures::future::BoxFuture<'static, Result<Option<hsu_module::ModuleFactory>, MasterError>>
    {
        // Modules need their factory from the registry (a plugin is loaded there, once per
        // path); processes need nothing.
        let lookup = match &spec.deployment {
            DeploymentSpec::Module {
                module_type: ModuleType::Plugin,
                module_name,
                ..
            } => {
                let registry = self.registry.clone();
                let path = std::path::PathBuf::from(module_name);
                let id = spec.id.clone();
                futures::future::Either::Left(futures::future::Either::Left(async move {
                    match registry.send(LoadPlugin(path)).await {
                        Ok(Ok(factory)) => Ok(Some(factory)),
                        Ok(Err(source)) => Err(MasterError::Plugin { id, source }),
                        Err(source) => Err(MasterError::Unanswered {
                            actor: "registry",
                            source,
                        }),
                    }
                }))
            }
            DeploymentSpec::Module { module_name, .. } => {
                let registry = self.registry.clone();
                let name = module_name.clone();
                let id = spec.id.clone();
                futures::future::Either::Left(futures::future::Either::Right(async move {
                    match registry.send(GetFactory(name.clone())).await {
                        Ok(Ok(factory)) => Ok(Some(factory)),
                        Ok(Err(registered)) => Err(MasterError::UnknownFactory {
                            id,
                            name,
                            registered,
                        }),
                        Err(source) => Err(MasterError::Unanswered {
                            actor: "registry",
                            source,
                        }),
                    }
                }))
            }
            DeploymentSpec::Process(_) => futures::future::Either::Right(async { Ok(None) }),
        };
        Box::pin(lookup)
    }
}

impl Handler<AddWorker> for MasterActor {
    type Result = ResponseFuture<Result<WorkerId, MasterError>>;

    /// Validates (a pure check) and goes on as [`AddWorkerSpec`]. A config naming a `package:`
    /// first needs the installed packages: they are read on the worker runtime, never on this
    /// thread, and the validation then runs here (`Admit`).
    fn handle(&mut self, msg: AddWorker, ctx: &mut Context<Self>) -> Self::Result {
        let config = msg.0;
        if self.shutting_down {
            return Box::pin(async move { Err(MasterError::ShuttingDown { id: config.id }) });
        }
        if config.package.is_none() {
            let packages = PackageIndex::empty(&self.config.packages_directory);
            return self.admit(config, &packages, ctx);
        }
        let root = self.config.packages_directory.clone();
        let reading = self
            .runtime
            .handle()
            .spawn_blocking(move || PackageIndex::load(&root));
        let me = ctx.address();
        Box::pin(async move {
            let packages = match reading.await {
                Ok(Ok(packages)) => packages,
                Ok(Err(e)) => {
                    return Err(MasterError::Validation {
                        id: config.id,
                        issues: vec![ValidationIssue {
                            worker: None,
                            field: "package".into(),
                            message: error_chain(&e),
                            line: None,
                            column: None,
                            index: None,
                        }],
                    })
                }
                Err(source) => {
                    return Err(MasterError::Interrupted {
                        what: "reading the installed packages",
                        source,
                    })
                }
            };
            me.send(Admit { config, packages })
                .await
                .map_err(|source| MasterError::Unanswered {
                    actor: "master",
                    source,
                })?
        })
    }
}

impl Handler<AddWorkerSpec> for MasterActor {
    type Result = ResponseFuture<Result<WorkerId, MasterError>>;

    /// Reserves the id at once (a concurrent add of it conflicts), then waits for the registry
    /// and the worker's `initialize` in a future of its own: thousands of adds in flight cost
    /// the master nothing while they wait (a `ResponseActFuture` would be polled with every
    /// other one on each wake-up). Short self-messages create and insert the worker.
    fn handle(&mut self, msg: AddWorkerSpec, ctx: &mut Context<Self>) -> Self::Result {
        if self.shutting_down {
            let id = msg.0.id.to_string();
            return Box::pin(async move { Err(MasterError::ShuttingDown { id }) });
        }
        let adding = self.add_spec(msg.0, false, ctx);
        Box::pin(async move { adding.await.map(|(id, _)| id) })
    }
}

impl Handler<AddConfigured> for MasterActor {
    type Result = ResponseFuture<Result<Added, MasterError>>;

    fn handle(&mut self, msg: AddConfigured, ctx: &mut Context<Self>) -> Self::Result {
        if self.shutting_down {
            let id = msg.0.id.to_string();
            return Box::pin(async move { Err(MasterError::ShuttingDown { id }) });
        }
        let adding = self.add_spec(msg.0, true, ctx);
        Box::pin(async move { adding.await.map(|(id, error)| Added { id, error }) })
    }
}

/// The module a worker gets when its code could not be had (its plugin did not load, its
/// factory is gone): every start fails with why, so the worker shows it and its restart
/// policy applies.
struct Unavailable(String);

#[hsu_module::async_trait]
impl hsu_module::WorkerModule for Unavailable {
    async fn initialize(
        &mut self,
        _: &hsu_module::ModuleContext,
        _: &hsu_module::ModuleConfig,
    ) -> Result<(), hsu_module::ModuleError> {
        Err(hsu_module::ModuleError::failed(self.0.clone()))
    }

    async fn start(
        &mut self,
        _: &hsu_module::ModuleContext,
    ) -> Result<(), hsu_module::ModuleError> {
        Err(hsu_module::ModuleError::failed(self.0.clone()))
    }

    fn info(&self) -> hsu_module::ModuleInfo {
        hsu_module::ModuleInfo::new("unavailable", "0").description(self.0.clone())
    }
}

/// Self-message of `AddWorker` for a config naming a package: validate it against the
/// installed packages read off the master's thread, then add it.
struct Admit {
    config: WorkerConfig,
    packages: PackageIndex,
}

impl Message for Admit {
    type Result = Result<WorkerId, MasterError>;
}

impl Handler<Admit> for MasterActor {
    type Result = ResponseFuture<Result<WorkerId, MasterError>>;

    fn handle(&mut self, msg: Admit, ctx: &mut Context<Self>) -> Self::Result {
        if self.shutting_down {
            let id = msg.config.id;
            return Box::pin(async move { Err(MasterError::ShuttingDown { id }) });
        }
        self.admit(msg.config, &msg.packages, ctx)
    }
}

impl MasterActor {
    /// Validates `config` (pure) and adds it.
    fn admit(
        &mut self,
        config: WorkerConfig,
        packages: &PackageIndex,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<Result<WorkerId, MasterError>> {
        match validate_worker(&config, &self.config, packages) {
            Ok(spec) => {
                let adding = self.add_spec(spec, false, ctx);
                Box::pin(async move { adding.await.map(|(id, _)| id) })
            }
            Err(issues) => Box::pin(async move {
                Err(MasterError::Validation {
                    id: config.id,
                    issues,
                })
            }),
        }
    }

    /// Adds a validated worker: reserve the id, look up the factory or load the plugin,
    /// create the actor, `initialize`, insert. With `keep_failed`, a worker whose code cannot
    /// be had or whose `initialize` fails is inserted all the same, with the error (the reply's
    /// second part), so a config's worker is never silently dropped.
    fn add_spec(
        &mut self,
        spec: WorkerSpec,
        keep_failed: bool,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<Result<(WorkerId, Option<String>), MasterError>> {
        let id = spec.id.clone();
        if self.workers.contains_key(&id) || self.adding.contains(&id) {
            return Box::pin(async move { Err(MasterError::Conflict { id }) });
        }
        if let Some(cycle) = self.cycle_through(&spec) {
            let issues = vec![ValidationIssue {
                worker: Some(id.to_string()),
                field: "depends_on".into(),
                message: format!(
                    "dependency cycle with the workers running: {} -> {id}",
                    cycle.join(" -> ")
                ),
                line: None,
                column: None,
                index: None,
            }];
            return Box::pin(async move {
                Err(MasterError::Validation {
                    id: id.to_string(),
                    issues,
                })
            });
        }
        self.adding.insert(id.clone());
        let lookup = self.lookup_code(&spec);
        let me = ctx.address();
        Box::pin(async move {
            let mut failure = None;
            let factory = match lookup.await {
                Ok(f) => f,
                Err(e) if keep_failed => {
                    let text = error_chain(&e);
                    tracing::error!(worker = %id, error = %text, "its code cannot be loaded; kept as failed");
                    let reason = text.clone();
                    failure = Some(text);
                    Some(hsu_module::ModuleFactory::new(move || {
                        Box::new(Unavailable(reason.clone()))
                    }))
                }
                Err(e) => {
                    me.do_send(AbortAdd(id));
                    return Err(e);
                }
            };
            let mailbox = |source| MasterError::Unanswered {
                actor: "master",
                source,
            };
            let created = me
                .send(CreateWorker {
                    spec: spec.clone(),
                    factory,
                })
                .await
                .map_err(mailbox)?;
            let initialized = created.0.addr.initialize().await;
            me.send(FinishAdd {
                spec,
                created,
                initialized,
                keep_failed,
                failure,
            })
            .await
            .map_err(mailbox)?
        })
    }
}

/// Self-message of `AddWorker`: bind its sockets, start the worker's actor.
#[derive(Message)]
#[rtype(result = "(Created, std::sync::Arc<crate::sockets::WorkerSockets>)")]
struct CreateWorker {
    spec: WorkerSpec,
    factory: Option<hsu_module::ModuleFactory>,
}

impl Handler<CreateWorker> for MasterActor {
    type Result = MessageResult<CreateWorker>;

    fn handle(&mut self, msg: CreateWorker, ctx: &mut Context<Self>) -> Self::Result {
        let parked = self.parked_sockets.remove(&msg.spec.id);
        let sockets = Self::bind_sockets(&msg.spec, parked.as_deref());
        let created = self.create_worker(&msg.spec, msg.factory, sockets.clone(), false, ctx);
        MessageResult((created, sockets))
    }
}

/// Self-message of `AddWorker`: the lookup failed; free the id.
#[derive(Message)]
#[rtype(result = "()")]
struct AbortAdd(WorkerId);

impl Handler<AbortAdd> for MasterActor {
    type Result = ();

    fn handle(&mut self, msg: AbortAdd, _: &mut Context<Self>) {
        self.adding.remove(&msg.0);
    }
}

/// Self-message of `AddWorker`: `initialize` answered; insert the worker, or end it.
#[derive(Message)]
#[rtype(result = "Result<(WorkerId, Option<String>), MasterError>")]
struct FinishAdd {
    spec: WorkerSpec,
    created: (Created, std::sync::Arc<crate::sockets::WorkerSockets>),
    initialized: Result<Result<(), crate::error::WorkerError>, actix::MailboxError>,
    keep_failed: bool,
    /// Why its code could not be had (kept with `keep_failed`).
    failure: Option<String>,
}

impl Handler<FinishAdd> for MasterActor {
    type Result = Result<(WorkerId, Option<String>), MasterError>;

    fn handle(&mut self, msg: FinishAdd, ctx: &mut Context<Self>) -> Self::Result {
        let FinishAdd {
            spec,
            created: (created, sockets),
            initialized,
            keep_failed,
            failure,
        } = msg;
        let id = spec.id.clone();
        let addr = created.addr;
        self.adding.remove(&id);
        let failed = match initialized {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(MasterError::Worker(e)),
            Err(source) => Some(MasterError::Mailbox {
                id: id.clone(),
                source,
            }),
        };
        // Kept: in the table with the error; its starts fail the same way until fixed.
        let kept = match (failed, keep_failed) {
            (Some(MasterError::Worker(e)), true) => {
                Some(failure.unwrap_or_else(|| error_chain(&e)))
            }
            (Some(e), _) => {
                tracing::warn!(worker = %id, error = %error_chain(&e), "worker not added");
                actix::spawn(async move {
                    let _ = addr.terminate().await;
                });
                return Err(e);
            }
            (None, _) => None,
        };
        if self.shutting_down {
            actix::spawn(async move {
                let _ = addr.terminate().await;
            });
            return Err(MasterError::ShuttingDown { id: id.to_string() });
        }
        let kind = spec.deployment.deployment();
        match &kept {
            None => tracing::info!(worker = %id, deployment = %kind, "worker added"),
            Some(e) => {
                tracing::error!(worker = %id, deployment = %kind, error = %e, "worker added, but it cannot start until this is fixed")
            }
        }
        self.order.push(id.clone());
        let mut entry = Entry::new(addr, spec, kind, created.instance);
        entry.sockets = sockets;
        entry.cgroup = created.cgroup;
        entry.last_error = kept.clone();
        self.workers.insert(id.clone(), Box::new(entry));
        if let Some(spec) = self.workers.get(&id).map(|e| &e.spec) {
            if spec.depends_on.iter().any(|d| d.pattern.is_some()) {
                self.refresh_line_watches_of(&spec.clone(), ctx);
            }
        }
        // Workers waiting for this one being added.
        self.dependencies_changed(&id, ctx);
        self.arm_schedule(&id, ctx);
        Ok((id, kept))
    }
}
