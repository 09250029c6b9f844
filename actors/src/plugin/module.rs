//! [`PluginModule`]: a [`WorkerModule`] over a plugin's vtable, so the host's module worker
//! actor drives a plugin exactly like a native module.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::sync::Arc;

use hsu_module::plugin::{RSocket, RSockets, RStr};
use hsu_module::{async_trait, ModuleConfig, ModuleContext, ModuleError, ModuleInfo, WorkerModule};

use super::PluginLibrary;

/// The plugin's opaque instance pointer.
#[derive(Clone, Copy)]
struct Instance(*mut c_void);

// SAFETY: the plugin instance is `Box<Instance>` on the plugin side, whose state is behind
// mutexes and `Arc`s and is `Send + Sync` there; the pointer is only passed back to it.
unsafe impl Send for Instance {}
// SAFETY: as above.
unsafe impl Sync for Instance {}

/// A module of a plugin library, driven through its vtable. The host's worker actor treats it
/// like any native module: same timeouts, same `catch_unwind`, same task supervision.
pub struct PluginModule {
    library: Arc<PluginLibrary>,
    instance: Result<Instance, String>,
    info: ModuleInfo,
}

impl PluginModule {
    /// Creates one instance on the plugin side (a failure is reported by `initialize`).
    pub fn new(library: Arc<PluginLibrary>) -> Self {
        let created = (library.vtable.create)();
        library
            .instances
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let reason = created.error.to_string_lossy();
        // SAFETY: the error string is what this library's `create` returned, freed once, here.
        unsafe { (library.vtable.free_string)(created.error) };
        let instance = if created.instance.is_null() {
            Err(reason)
        } else {
            Ok(Instance(created.instance))
        };
        let name = library
            .info
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self {
            library,
            instance,
            info: ModuleInfo::new(name, ""),
        }
    }

    fn instance(&self) -> Result<Instance, ModuleError> {
        match &self.instance {
            Ok(i) => Ok(*i),
            Err(reason) => Err(ModuleError::Failed(reason.clone())),
        }
    }

    fn set_info(&mut self, yaml: &str) {
        match serde_yaml::from_str::<ModuleInfo>(yaml) {
            Ok(info) => self.info = info,
            Err(e) => tracing::warn!(error = %e, "plugin returned unreadable module info"),
        }
    }
}

impl Drop for PluginModule {
    fn drop(&mut self) {
        if let Ok(instance) = &self.instance {
            // SAFETY: the instance came from this library's `create`; this is its one
            // `destroy`, and `self` (its only holder) is going away.
            unsafe { (self.library.vtable.destroy)(instance.0) };
        }
        self.library
            .instances
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// `ctx`'s sockets as the ABI lends them (borrowed from `ctx`).
fn lent_sockets(ctx: &ModuleContext) -> Vec<RSocket<'_>> {
    use std::os::fd::AsRawFd;
    ctx.sockets()
        .map(|(name, fd)| RSocket {
            name: RStr::new(name),
            fd: fd.as_raw_fd(),
        })
        .collect()
}

#[async_trait]
impl WorkerModule for PluginModule {
    async fn initialize(
        &mut self,
        ctx: &ModuleContext,
        config: &ModuleConfig,
    ) -> Result<(), ModuleError> {
        let instance = self.instance()?;
        let yaml = serde_yaml::to_string(config.value())
            .map_err(|e| ModuleError::Config(format!("cannot encode the config: {e}")))?;
        // SAFETY: a live instance of this library (destroyed only when `self` drops); the
        // strings outlive the synchronous part of the call, the only time they are read.
        let sockets = lent_sockets(ctx);
        let call = unsafe {
            (self.library.vtable.initialize)(
                instance.0,
                RStr::new(ctx.worker_id()),
                RStr::new(&yaml),
                RSockets::new(&sockets),
            )
        };
        let (info, _) = self.library.finish(call.await)?;
        self.set_info(&info);
        Ok(())
    }

    async fn start(&mut self, ctx: &ModuleContext) -> Result<(), ModuleError> {
        let instance = self.instance()?;
        let sockets = lent_sockets(ctx);
        // SAFETY: a live instance of this library (destroyed only when `self` drops); the
        // sockets (names and descriptors of `ctx`) outlive the synchronous part of the call,
        // where the plugin duplicates them.
        let call = unsafe { (self.library.vtable.start)(instance.0, RSockets::new(&sockets)) };
        let (info, _) = self.library.finish(call.await)?;
        self.set_info(&info);
        // The plugin's tasks run on its own runtime; this host task ends when one of them fails
        // (failing the worker, as a native task would) or when the run is cancelled.
        // SAFETY: as above; the future owns what it needs and outlives no instance read.
        let watch = unsafe { (self.library.vtable.watch)(instance.0) };
        let library = self.library.clone();
        ctx.spawn(
            "plugin",
            async move { library.finish(watch.await).map(drop) },
        );
        Ok(())
    }

    async fn stop(&mut self, _: &ModuleContext) -> Result<(), ModuleError> {
        let instance = self.instance()?;
        // SAFETY: a live instance of this library (destroyed only when `self` drops).
        let call = unsafe { (self.library.vtable.stop)(instance.0) };
        self.library.finish(call.await).map(drop)
    }

    async fn is_healthy(&self) -> bool {
        let Ok(instance) = self.instance() else {
            return false;
        };
        // SAFETY: a live instance of this library (destroyed only when `self` drops).
        let call = unsafe { (self.library.vtable.is_healthy)(instance.0) };
        matches!(self.library.finish(call.await), Ok((_, true)))
    }

    fn info(&self) -> ModuleInfo {
        self.info.clone()
    }
}
