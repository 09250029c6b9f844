//! The plugin boundary: how a [`WorkerModule`](crate::WorkerModule) compiled into a shared
//! library (`cdylib`) is driven by a master built separately.
//!
//! Rust has no stable ABI, so nothing Rust-specific crosses the boundary: no `Box<dyn Trait>`,
//! no `String`, no panics. A plugin exports one `#[repr(C)]` [`PluginHeader`] under the symbol
//! [`HEADER_SYMBOL`]; the host reads its magic, ABI version and size before anything else, then
//! the versions and target, and only then calls the [`PluginVTable`]'s `extern "C"` functions.
//! Async calls return [`FfiFuture`]s (the `async-ffi` crate), which the host awaits on its own
//! runtime while the module's code runs on the plugin's own tokio runtime.
//!
//! Module authors write one line, [`export_plugin!`](crate::export_plugin), in a crate with
//! `crate-type = ["cdylib"]`:
//!
//! ```ignore
//! hsu_module::export_plugin!(EchoModule::default);
//! ```
//!
//! Rules both sides keep (each is a crash otherwise):
//! - a panic never unwinds out of an `extern "C"` function: the plugin catches it and reports
//!   [`CallStatus::Panicked`] with the message;
//! - whoever allocates frees: strings the plugin returns ([`RString`]) go back through
//!   [`PluginVTable::free_string`]; strings the host passes ([`RStr`]) are copied by the plugin
//!   before the call returns;
//! - a plugin is never unloaded (the host keeps the library open for the life of the process).

#![allow(unsafe_code)]

#[doc(hidden)]
pub mod guest;

use std::borrow::Cow;
use std::ffi::c_void;
use std::marker::PhantomData;

pub use async_ffi::FfiFuture;

/// The first eight bytes of every header.
pub const MAGIC: [u8; 8] = *b"HSUPLUGN";
/// Version of the layout of [`PluginHeader`] and [`PluginVTable`]. A host loads only plugins
/// of its own ABI version.
pub const ABI_VERSION: u32 = 2;
/// The symbol under which a plugin exports its header.
pub const HEADER_SYMBOL: &str = "HSU_PLUGIN_HEADER";
/// The version of this crate (`hsu-module`) that the plugin was built against.
pub const CRATE_VERSION: &str = env!("CARGO_PKG_VERSION");
/// `rustc -vV` of the compiler that built this crate, one line per `;`.
pub const RUSTC_VERSION: &str = env!("HSU_RUSTC_VERSION");
/// The target triple this crate was built for.
pub const TARGET: &str = env!("HSU_TARGET");

/// A borrowed UTF-8 string: a pointer and a length. In the header it points at the plugin's
/// static memory (never unloaded); as a call argument it is valid only during the call.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RStr<'a> {
    ptr: *const u8,
    len: usize,
    _life: PhantomData<&'a str>,
}

// SAFETY: an `RStr` is a `&str` in C layout: shared, immutable bytes.
unsafe impl Send for RStr<'_> {}
// SAFETY: as above.
unsafe impl Sync for RStr<'_> {}

impl<'a> RStr<'a> {
    /// Borrows `s`.
    pub const fn new(s: &'a str) -> Self {
        Self {
            ptr: s.as_ptr(),
            len: s.len(),
            _life: PhantomData,
        }
    }

    /// The text. Invalid UTF-8 (a broken plugin) is replaced, never trusted.
    pub fn to_str(&self) -> Cow<'a, str> {
        if self.ptr.is_null() {
            return Cow::Borrowed("");
        }
        // SAFETY: built by `new` from a `&'a str` on one side of the boundary; the other side
        // reads it while it is alive (static header memory, or during the call).
        let bytes = unsafe { std::slice::from_raw_parts(self.ptr, self.len) };
        String::from_utf8_lossy(bytes)
    }
}

/// A listening socket lent to a plugin call (the worker's `sockets:`): its name and descriptor,
/// both valid during the call only; the plugin duplicates the descriptor it keeps.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RSocket<'a> {
    /// The socket's name.
    pub name: RStr<'a>,
    /// Its descriptor (the host's; not to be closed by the plugin).
    pub fd: i32,
}

/// A borrowed slice of [`RSocket`]s, valid during the call.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RSockets<'a> {
    ptr: *const RSocket<'a>,
    len: usize,
    _life: PhantomData<&'a [RSocket<'a>]>,
}

// SAFETY: a shared, immutable slice of plain values in C layout.
unsafe impl Send for RSockets<'_> {}

impl<'a> RSockets<'a> {
    /// Borrows `sockets`.
    pub fn new(sockets: &'a [RSocket<'a>]) -> Self {
        Self {
            ptr: sockets.as_ptr(),
            len: sockets.len(),
            _life: PhantomData,
        }
    }

    /// Copies of the sockets, each descriptor duplicated (close-on-exec): what the module's
    /// context hands out. A descriptor that cannot be duplicated is left out.
    pub fn to_owned_fds(&self) -> Vec<(String, std::os::fd::OwnedFd)> {
        if self.ptr.is_null() || self.len == 0 {
            return Vec::new();
        }
        // SAFETY: built by `new` from a live slice on the host's side, read during the call.
        let sockets = unsafe { std::slice::from_raw_parts(self.ptr, self.len) };
        sockets
            .iter()
            .filter_map(|s| {
                // SAFETY: the host lends an open descriptor for the duration of the call; it
                // is only duplicated here, never closed.
                let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(s.fd) };
                Some((s.name.to_str().into_owned(), fd.try_clone_to_owned().ok()?))
            })
            .collect()
    }
}

/// A string allocated by the plugin and handed to the host. The host copies it and gives it
/// back through [`PluginVTable::free_string`], so the plugin's allocator frees it.
#[repr(C)]
pub struct RString {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: an owned byte buffer with no thread affinity.
unsafe impl Send for RString {}

impl RString {
    /// An empty string (no allocation).
    pub const fn empty() -> Self {
        Self {
            ptr: std::ptr::null_mut(),
            len: 0,
        }
    }

    /// Hands `s` over; the receiver must return it to the allocating side's `free_string`.
    pub fn new(s: String) -> Self {
        if s.is_empty() {
            return Self::empty();
        }
        let bytes = Box::into_raw(s.into_bytes().into_boxed_slice());
        Self {
            ptr: bytes.cast::<u8>(),
            len: bytes.len(),
        }
    }

    /// A copy of the text (lossy for invalid UTF-8).
    pub fn to_string_lossy(&self) -> String {
        if self.ptr.is_null() {
            return String::new();
        }
        // SAFETY: `ptr`/`len` come from a boxed slice made by `new` and not yet freed.
        let bytes = unsafe { std::slice::from_raw_parts(self.ptr, self.len) };
        String::from_utf8_lossy(bytes).into_owned()
    }

    /// Frees the buffer. Call it only on the side that allocated it (the plugin's
    /// `free_string` does).
    pub fn free(self) {
        if self.ptr.is_null() {
            return;
        }
        // SAFETY: `ptr`/`len` are exactly the boxed slice leaked in `new`, freed once here.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.ptr, self.len)) });
    }
}

/// How a plugin call ended.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallStatus {
    /// Done; `text` holds the call's output (the module info as YAML, or nothing).
    Ok = 0,
    /// The module returned an error; `text` is its message.
    Failed = 1,
    /// The module rejected its config; `text` names the field.
    Config = 2,
    /// The module panicked; `text` is the panic message.
    Panicked = 3,
}

impl CallStatus {
    /// The status a raw value stands for; unknown values (a broken plugin) count as panics.
    pub fn from_raw(raw: u32) -> Self {
        match raw {
            0 => Self::Ok,
            1 => Self::Failed,
            2 => Self::Config,
            _ => Self::Panicked,
        }
    }
}

/// The result of one async plugin call. Plain integers, not Rust enums or `bool`s, so that no
/// value a plugin writes can be an invalid value on the host side.
#[repr(C)]
pub struct CallResult {
    /// How it ended: a [`CallStatus`] as `u32`.
    pub status: u32,
    /// `is_healthy`'s answer (1 healthy, 0 not); 0 for other calls.
    pub healthy: u8,
    /// Output or message; the host frees it with [`PluginVTable::free_string`].
    pub text: RString,
}

impl CallResult {
    /// Success with `text`.
    pub fn ok(text: String) -> Self {
        Self::with(CallStatus::Ok, text)
    }

    /// A result of `status` carrying `text`.
    pub fn with(status: CallStatus, text: String) -> Self {
        Self {
            status: status as u32,
            healthy: 0,
            text: RString::new(text),
        }
    }
}

/// What `create` returns: an instance, or a null instance and the reason.
#[repr(C)]
pub struct Created {
    /// The plugin's instance; passed back to every call and finally to `destroy`.
    pub instance: *mut c_void,
    /// Why creation failed (empty on success).
    pub error: RString,
}

/// A `tracing` event from inside the plugin: level (1 = error … 5 = trace), worker id (empty
/// outside a worker), target and the formatted message with its fields.
pub type LogFn = extern "C" fn(level: u32, worker: RStr<'_>, target: RStr<'_>, message: RStr<'_>);

/// What the host gives the plugin once, right after the header checks.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct HostApi {
    /// Receives the plugin's tracing events.
    pub log: LogFn,
    /// The most verbose level the host records (0 = off … 5 = trace); the plugin drops the rest.
    pub max_level: u32,
}

/// The plugin's functions. Every async call returns an [`FfiFuture`] that owns what it needs;
/// the instance pointer is only read during the synchronous part of the call.
///
/// The entries that take a pointer (or a string the plugin allocated) are `unsafe`: the caller
/// promises that `instance` is a pointer `create` returned and `destroy` has not consumed
/// (and, for `destroy`, that nothing uses it afterwards), and that a string given to
/// `free_string` is one this plugin returned and is freed once.
#[repr(C)]
pub struct PluginVTable {
    /// Installs the host's callbacks (the tracing forwarder). Called once, before `create`.
    pub set_host: extern "C" fn(host: HostApi),
    /// A new, uninitialised module instance.
    pub create: extern "C" fn() -> Created,
    /// Ends an instance: cancels its runs, aborts its tasks, drops the module.
    pub destroy: unsafe extern "C" fn(instance: *mut c_void),
    /// `WorkerModule::initialize` with the worker id, the `config:` section as YAML and the
    /// worker's sockets.
    pub initialize: unsafe extern "C" fn(
        instance: *mut c_void,
        worker: RStr<'_>,
        config_yaml: RStr<'_>,
        sockets: RSockets<'_>,
    ) -> FfiFuture<CallResult>,
    /// `WorkerModule::start` in a new run with the worker's sockets; `text` is the module info
    /// as YAML.
    pub start:
        unsafe extern "C" fn(instance: *mut c_void, sockets: RSockets<'_>) -> FfiFuture<CallResult>,
    /// Cancels the run, calls `WorkerModule::stop`, waits for the run's tasks.
    pub stop: unsafe extern "C" fn(instance: *mut c_void) -> FfiFuture<CallResult>,
    /// `WorkerModule::is_healthy`, in `healthy`.
    pub is_healthy: unsafe extern "C" fn(instance: *mut c_void) -> FfiFuture<CallResult>,
    /// Resolves when a task of the current run fails (status `Failed` or `Panicked`), or with
    /// `Ok` once the run is cancelled.
    pub watch: unsafe extern "C" fn(instance: *mut c_void) -> FfiFuture<CallResult>,
    /// Frees a string this plugin returned.
    pub free_string: unsafe extern "C" fn(s: RString),
}

/// The header a plugin exports as [`HEADER_SYMBOL`]. The first three fields never move, so any
/// host can read them from any plugin and refuse a mismatch without touching the rest.
#[repr(C)]
pub struct PluginHeader {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// [`ABI_VERSION`] of the plugin.
    pub abi_version: u32,
    /// `size_of::<PluginHeader>()` in the plugin.
    pub header_size: u32,
    /// [`CRATE_VERSION`] of the plugin.
    pub crate_version: RStr<'static>,
    /// [`RUSTC_VERSION`] of the plugin.
    pub rustc_version: RStr<'static>,
    /// [`TARGET`] of the plugin.
    pub target: RStr<'static>,
    /// The functions.
    pub vtable: &'static PluginVTable,
}

impl PluginHeader {
    /// The header of a plugin built against this crate.
    pub const fn new(vtable: &'static PluginVTable) -> Self {
        Self {
            magic: MAGIC,
            abi_version: ABI_VERSION,
            header_size: std::mem::size_of::<PluginHeader>() as u32,
            crate_version: RStr::new(CRATE_VERSION),
            rustc_version: RStr::new(RUSTC_VERSION),
            target: RStr::new(TARGET),
            vtable,
        }
    }
}

/// Exports a [`WorkerModule`](crate::WorkerModule) from a `cdylib` crate as an hsu plugin.
/// The argument makes one new instance: a path to a function or closure returning the module
/// (`MyModule::new`, `MyModule::default`, `|| MyModule { … }`). Use it once per library.
///
/// The generated code catches every panic on the plugin side, runs the module on a tokio runtime
/// owned by the plugin, and forwards the plugin's `tracing` events to the host with the worker
/// id, so they land in the worker's log.
#[macro_export]
macro_rules! export_plugin {
    ($make:expr) => {
        #[doc(hidden)]
        extern "C" fn __hsu_plugin_create() -> $crate::plugin::Created {
            $crate::plugin::guest::create(|| {
                ::std::boxed::Box::new(($make)()) as ::std::boxed::Box<dyn $crate::WorkerModule>
            })
        }

        #[doc(hidden)]
        static __HSU_PLUGIN_VTABLE: $crate::plugin::PluginVTable =
            $crate::plugin::guest::vtable(__hsu_plugin_create);

        /// The hsu plugin header (see `hsu_module::plugin`).
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub static HSU_PLUGIN_HEADER: $crate::plugin::PluginHeader =
            $crate::plugin::PluginHeader::new(&__HSU_PLUGIN_VTABLE);
    };
}
