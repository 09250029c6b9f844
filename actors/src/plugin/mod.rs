//! Plugin libraries on the host side: `dlopen`, the header checks, and (in `module.rs`)
//! [`PluginModule`], a `WorkerModule` whose every call goes through the plugin's C-ABI vtable.
//!
//! Loading follows `hsu_module::plugin`'s rules. The library is opened with
//! `RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE` and never closed (unloading a Rust library with
//! live thread-locals crashes), so each path is loaded once per process and shared by every
//! worker that names it ([`crate::registry::RegistryActor`] keeps the table). Before calling
//! anything the host reads the header's magic, ABI version and size, then the module-crate
//! version and target; a mismatch is a [`PluginError`] naming the path and both values.
//! The plugin's `tracing` events come back through [`host_log`] and are re-emitted inside the
//! worker's span, so they land in the worker's log file like native module events.
#![allow(unsafe_code)]

mod inspect;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hsu_module::plugin::{
    CallResult, CallStatus, HostApi, PluginHeader, PluginVTable, RStr, ABI_VERSION, CRATE_VERSION,
    HEADER_SYMBOL, MAGIC, TARGET,
};
use hsu_module::{ModuleError, ModuleFactory};

pub use inspect::{inspect, inspect_bytes, HeaderFacts};

/// Why a plugin library cannot be used. Every variant names the path.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The path does not exist.
    #[error("plugin `{}`: no such file", path.display())]
    NotFound {
        /// As configured.
        path: PathBuf,
    },
    /// `dlopen` refused it: not a shared library, wrong architecture, unresolved symbols.
    #[error("plugin `{}` cannot be loaded as a shared library: {reason}", path.display())]
    Open {
        /// The library.
        path: PathBuf,
        /// The loader's message.
        reason: String,
    },
    /// A shared library, but not an hsu plugin.
    #[error("plugin `{}` has no `{symbol}` symbol: not an hsu plugin (a plugin exports one with `hsu_module::export_plugin!`)", path.display())]
    MissingSymbol {
        /// The library.
        path: PathBuf,
        /// The symbol looked for.
        symbol: &'static str,
    },
    /// The header does not start with the magic bytes.
    #[error("plugin `{}`: `{HEADER_SYMBOL}` has magic {found:?}, expected {expected:?}: not an hsu plugin header", path.display(), expected = String::from_utf8_lossy(&MAGIC))]
    BadMagic {
        /// The library.
        path: PathBuf,
        /// The first bytes found.
        found: String,
    },
    /// Built for another layout of the boundary.
    #[error("plugin `{}` uses plugin ABI version {plugin}, this host uses {host}: rebuild the plugin against hsu-module {CRATE_VERSION}", path.display())]
    AbiVersion {
        /// The library.
        path: PathBuf,
        /// The plugin's ABI version.
        plugin: u32,
        /// The host's.
        host: u32,
    },
    /// The header is smaller than this ABI's header.
    #[error("plugin `{}` has a {plugin}-byte header, this host expects {host} bytes", path.display())]
    HeaderSize {
        /// The library.
        path: PathBuf,
        /// The plugin's header size.
        plugin: u32,
        /// The host's.
        host: u32,
    },
    /// Built against an incompatible `hsu-module`.
    #[error("plugin `{}` was built against hsu-module {plugin}, this host has hsu-module {host} (compatible versions share major, and minor below 1.0)", path.display())]
    CrateVersion {
        /// The library.
        path: PathBuf,
        /// The plugin's crate version.
        plugin: String,
        /// The host's.
        host: String,
    },
    /// Built for another target.
    #[error("plugin `{}` was built for target {plugin}, this host is {host}", path.display())]
    Target {
        /// The library.
        path: PathBuf,
        /// The plugin's target.
        plugin: String,
        /// The host's.
        host: String,
    },
}

/// What is known about a loaded plugin library ([`crate::registry::ListLoadedModules`]).
#[derive(Debug, Clone)]
pub struct PluginInfo {
    /// Canonical path: the key under which it is shared.
    pub path: PathBuf,
    /// Plugin ABI version from the header.
    pub abi_version: u32,
    /// hsu-module version the plugin was built against.
    pub crate_version: String,
    /// `rustc -vV` of the plugin's compiler (`;`-separated).
    pub rustc_version: String,
    /// Target triple of the plugin.
    pub target: String,
    /// How long `dlopen` and the checks took.
    pub load_time: Duration,
    /// When it was loaded.
    pub loaded_at: SystemTime,
    /// Module instances alive now (across all workers using the library).
    pub instances: usize,
}

/// A loaded, checked plugin library. Never unloaded: the `dlopen` handle is leaked on purpose.
pub struct PluginLibrary {
    info: PluginInfo,
    vtable: &'static PluginVTable,
    /// Live [`PluginModule`]s of this library.
    instances: std::sync::atomic::AtomicUsize,
}

impl PluginLibrary {
    /// Opens `path` and checks its header. Blocks for the `dlopen` (static initialisers run).
    ///
    /// # Errors
    /// A [`PluginError`] naming the path, and both versions where versions differ.
    pub fn load(path: &Path) -> Result<Arc<Self>, PluginError> {
        let began = Instant::now();
        let canonical = path.canonicalize().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => PluginError::NotFound {
                path: path.to_path_buf(),
            },
            _ => PluginError::Open {
                path: path.to_path_buf(),
                reason: e.to_string(),
            },
        })?;
        if !canonical.is_file() {
            return Err(PluginError::Open {
                path: canonical,
                reason: "not a regular file".into(),
            });
        }
        let flags = libc::RTLD_NOW | libc::RTLD_LOCAL | libc::RTLD_NODELETE;
        // SAFETY: opening a library runs its initialisers, which is what loading a plugin
        // means; the path is canonical (contains `/`, so no search path is used).
        let library = unsafe { libloading::os::unix::Library::open(Some(&canonical), flags) }
            .map_err(|e| PluginError::Open {
                path: canonical.clone(),
                reason: e.to_string(),
            })?;
        // SAFETY: only the symbol's address is taken here; what is behind it is checked below
        // before it is trusted.
        let symbol = unsafe { library.get::<*const PluginHeader>(HEADER_SYMBOL.as_bytes()) };
        let header_ptr: *const PluginHeader = match symbol {
            Ok(symbol) => *symbol,
            Err(_) => std::ptr::null(),
        };
        // Never unloaded (see the module docs), whether or not it turns out to be a plugin.
        std::mem::forget(library);
        if header_ptr.is_null() {
            return Err(PluginError::MissingSymbol {
                path: canonical,
                symbol: HEADER_SYMBOL,
            });
        }
        let header = check_header(&canonical, header_ptr)?;
        let info = PluginInfo {
            path: canonical,
            abi_version: header.abi_version,
            crate_version: header.crate_version.to_str().into_owned(),
            rustc_version: header.rustc_version.to_str().into_owned(),
            target: header.target.to_str().into_owned(),
            load_time: Duration::ZERO,
            loaded_at: SystemTime::now(),
            instances: 0,
        };
        if info.rustc_version != hsu_module::plugin::RUSTC_VERSION {
            // Only C types cross the boundary, so another compiler is allowed; say so, since
            // it is the first suspect if the plugin misbehaves.
            tracing::info!(plugin = %info.path.display(), plugin_rustc = %info.rustc_version,
                host_rustc = hsu_module::plugin::RUSTC_VERSION, "plugin built by another rustc");
        }
        (header.vtable.set_host)(HostApi {
            log: host_log,
            max_level: max_level(),
        });
        let mut library = Self {
            info,
            vtable: header.vtable,
            instances: Default::default(),
        };
        library.info.load_time = began.elapsed();
        tracing::info!(plugin = %library.info.path.display(), version = %library.info.crate_version,
            load_time = ?library.info.load_time, "plugin loaded");
        Ok(Arc::new(library))
    }

    /// The header facts and the live instance count.
    pub fn info(&self) -> PluginInfo {
        PluginInfo {
            instances: self.instances.load(std::sync::atomic::Ordering::Relaxed),
            ..self.info.clone()
        }
    }

    /// The canonical path.
    pub fn path(&self) -> &Path {
        &self.info.path
    }

    /// A factory whose instances are modules of this library.
    pub fn factory(self: &Arc<Self>) -> ModuleFactory {
        let library = self.clone();
        ModuleFactory::new(move || Box::new(PluginModule::new(library.clone())))
    }

    /// Copies a call's text and frees it on the plugin side; maps the status. Inlined: it is
    /// on every boundary call, and `PluginModule` lives in another module (codegen unit).
    #[inline]
    fn finish(&self, result: CallResult) -> Result<(String, bool), ModuleError> {
        let text = result.text.to_string_lossy();
        // SAFETY: `result` is what this library's call returned; its text is freed once, here.
        unsafe { (self.vtable.free_string)(result.text) };
        match CallStatus::from_raw(result.status) {
            CallStatus::Ok => Ok((text, result.healthy != 0)),
            CallStatus::Failed => Err(ModuleError::Failed(text)),
            CallStatus::Config => Err(ModuleError::Config(text)),
            // Re-raised on the host side, where the worker runtime's `catch_unwind` turns it into
            // `WorkerError::Panicked` exactly as for a native module. `resume_unwind` does not
            // run the panic hook: the plugin already reported the panic.
            CallStatus::Panicked => std::panic::resume_unwind(Box::new(text)),
        }
    }
}

impl std::fmt::Debug for PluginLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginLibrary")
            .field("info", &self.info())
            .finish()
    }
}

/// Reads the fixed prefix, then the rest only if the prefix says it is our layout.
fn check_header(
    path: &Path,
    ptr: *const PluginHeader,
) -> Result<&'static PluginHeader, PluginError> {
    #[repr(C)]
    struct Prefix {
        magic: [u8; 8],
        abi_version: u32,
        header_size: u32,
    }
    // SAFETY: the symbol is in the library's mapped data, which stays mapped (never unloaded).
    // The prefix is plain bytes and integers, valid for any bit pattern; `read_unaligned`
    // makes no alignment assumption about a foreign symbol.
    let prefix = unsafe { std::ptr::read_unaligned(ptr.cast::<Prefix>()) };
    check_prefix(path, prefix.magic, prefix.abi_version, prefix.header_size)?;
    if ptr.align_offset(std::mem::align_of::<PluginHeader>()) != 0 {
        return Err(PluginError::Open {
            path: path.to_path_buf(),
            reason: format!("`{HEADER_SYMBOL}` is not aligned as a plugin header"),
        });
    }
    // SAFETY: magic, ABI version and size match this host's layout, and the pointer is aligned:
    // the header was written by `PluginHeader::new` of a compatible hsu-module, in memory that
    // is never unmapped.
    let header: &'static PluginHeader = unsafe { &*ptr };
    check_versions(
        path,
        &header.crate_version.to_str(),
        &header.target.to_str(),
    )?;
    Ok(header)
}

/// The header's first fields: magic, ABI version, size.
fn check_prefix(
    path: &Path,
    magic: [u8; 8],
    abi_version: u32,
    header_size: u32,
) -> Result<(), PluginError> {
    if magic != MAGIC {
        return Err(PluginError::BadMagic {
            path: path.to_path_buf(),
            found: String::from_utf8_lossy(&magic).into_owned(),
        });
    }
    if abi_version != ABI_VERSION {
        return Err(PluginError::AbiVersion {
            path: path.to_path_buf(),
            plugin: abi_version,
            host: ABI_VERSION,
        });
    }
    let host_size = std::mem::size_of::<PluginHeader>() as u32;
    if header_size < host_size {
        return Err(PluginError::HeaderSize {
            path: path.to_path_buf(),
            plugin: header_size,
            host: host_size,
        });
    }
    Ok(())
}

/// The module-crate version and target the plugin was built for.
fn check_versions(path: &Path, crate_version: &str, target: &str) -> Result<(), PluginError> {
    if !compatible(crate_version, CRATE_VERSION) {
        return Err(PluginError::CrateVersion {
            path: path.to_path_buf(),
            plugin: crate_version.to_string(),
            host: CRATE_VERSION.to_string(),
        });
    }
    if target != TARGET {
        return Err(PluginError::Target {
            path: path.to_path_buf(),
            plugin: target.to_string(),
            host: TARGET.to_string(),
        });
    }
    Ok(())
}

/// Semver compatibility: same major, and same minor while major is 0.
fn compatible(plugin: &str, host: &str) -> bool {
    let parts = |v: &str| -> Option<(u64, u64)> {
        let mut it = v.split(['.', '-', '+']);
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    };
    match (parts(plugin), parts(host)) {
        (Some((pa, pb)), Some((ha, hb))) => pa == ha && (ha != 0 || pb == hb),
        _ => false,
    }
}

fn max_level() -> u32 {
    use tracing::level_filters::LevelFilter;
    match LevelFilter::current() {
        LevelFilter::OFF => 0,
        LevelFilter::ERROR => 1,
        LevelFilter::WARN => 2,
        LevelFilter::INFO => 3,
        LevelFilter::DEBUG => 4,
        _ => 5,
    }
}

/// Receives the plugin's tracing events and emits them in the host, inside the worker's span
/// (`worker{id=…}`), so subscribers and the per-worker log files see them as the worker's.
extern "C" fn host_log(level: u32, worker: RStr<'_>, target: RStr<'_>, message: RStr<'_>) {
    // Nothing may unwind into the plugin.
    let _ = std::panic::catch_unwind(|| {
        let (worker, target, message) = (worker.to_str(), target.to_str(), message.to_str());
        let span = if worker.is_empty() {
            tracing::Span::none()
        } else {
            tracing::info_span!("worker", id = %worker)
        };
        let _entered = span.enter();
        match level {
            1 => tracing::error!(target: "hsu::plugin", from = %target, "{message}"),
            2 => tracing::warn!(target: "hsu::plugin", from = %target, "{message}"),
            3 => tracing::info!(target: "hsu::plugin", from = %target, "{message}"),
            4 => tracing::debug!(target: "hsu::plugin", from = %target, "{message}"),
            _ => tracing::trace!(target: "hsu::plugin", from = %target, "{message}"),
        }
    });
}

mod module;

pub use module::PluginModule;

#[cfg(test)]
mod tests {
    use super::compatible;

    #[test]
    fn crate_versions() {
        assert!(compatible("0.1.0", "0.1.7"));
        assert!(!compatible("0.2.0", "0.1.0"));
        assert!(compatible("1.2.0", "1.9.1"));
        assert!(!compatible("2.0.0", "1.0.0"));
        assert!(!compatible("garbage", "0.1.0"));
    }
}
