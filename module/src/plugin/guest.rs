//! The plugin side of the boundary, instantiated by [`export_plugin!`](crate::export_plugin).
//!
//! A plugin carries its own copies of tokio, tracing and std. So: module code runs on a tokio
//! runtime this library owns (its copy of tokio has no other); every entry point catches panics
//! (unwinding out of `extern "C"` aborts the host); and a `tracing` subscriber installed in
//! this library's copy of tracing forwards events to the host callback with the worker id taken
//! from the `worker{id=…}` span that wraps every call and task.

use std::ffi::c_void;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex as StdMutex, OnceLock};

use async_ffi::{FfiFuture, FutureExt as _};
use futures::FutureExt as _;
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, Mutex as AsyncMutex};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::{CallResult, CallStatus, Created, HostApi, PluginVTable, RSockets, RStr, RString};
use crate::{
    panic_message, ModuleConfig, ModuleContext, ModuleError, TaskFuture, TaskSpawner, WorkerModule,
};

/// The vtable of a plugin whose instances `create` makes.
pub const fn vtable(create: extern "C" fn() -> Created) -> PluginVTable {
    PluginVTable {
        set_host,
        create,
        destroy,
        initialize,
        start,
        stop,
        is_healthy,
        watch,
        free_string,
    }
}

/// The body of the exported `create`: one instance from `make`, panics caught.
pub fn create(make: impl FnOnce() -> Box<dyn WorkerModule>) -> Created {
    match catch_unwind(AssertUnwindSafe(make)) {
        Ok(module) => {
            let instance = Box::new(Instance {
                module: Arc::new(AsyncMutex::new(module)),
                state: StdMutex::new(State::default()),
            });
            Created {
                instance: Box::into_raw(instance).cast::<c_void>(),
                error: RString::empty(),
            }
        }
        Err(panic) => Created {
            instance: std::ptr::null_mut(),
            error: RString::new(format!(
                "creating the module panicked: {}",
                panic_message(panic)
            )),
        },
    }
}

/// One module instance, owned by the host through an opaque pointer.
struct Instance {
    module: Arc<AsyncMutex<Box<dyn WorkerModule>>>,
    state: StdMutex<State>,
}

#[derive(Default)]
struct State {
    worker: Option<(Arc<str>, tracing::Span)>,
    /// Tasks spawned from `initialize`; they live until `destroy`.
    init_run: Option<Arc<Run>>,
    /// The current start..stop run.
    run: Option<Arc<Run>>,
}

/// One run of the module: its context, cancellation, tasks and their failures.
struct Run {
    ctx: ModuleContext,
    cancel: CancellationToken,
    tasks: Arc<StdMutex<Vec<JoinHandle<()>>>>,
    failures: AsyncMutex<mpsc::UnboundedReceiver<(CallStatus, String)>>,
}

impl Run {
    fn new(
        worker: &(Arc<str>, tracing::Span),
        sockets: Vec<(String, std::os::fd::OwnedFd)>,
    ) -> Arc<Self> {
        let cancel = CancellationToken::new();
        let tasks = Arc::new(StdMutex::new(Vec::new()));
        let (report, failures) = mpsc::unbounded_channel();
        let spawner = Arc::new(GuestSpawner {
            tasks: tasks.clone(),
            report,
        });
        Arc::new(Self {
            ctx: ModuleContext::new(worker.0.clone(), cancel.clone(), worker.1.clone(), spawner)
                .with_sockets(sockets),
            cancel,
            tasks,
            failures: AsyncMutex::new(failures),
        })
    }

    fn abort(&self) {
        self.cancel.cancel();
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }

    async fn join(&self) {
        let tasks: Vec<_> = lock(&self.tasks).drain(..).collect();
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// Module tasks run on the plugin runtime; an error or panic is reported to `watch`.
struct GuestSpawner {
    tasks: Arc<StdMutex<Vec<JoinHandle<()>>>>,
    report: mpsc::UnboundedSender<(CallStatus, String)>,
}

impl TaskSpawner for GuestSpawner {
    fn spawn(&self, name: String, task: TaskFuture) {
        let report = self.report.clone();
        let handle = runtime().spawn(async move {
            let failure = match AssertUnwindSafe(task).catch_unwind().await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => (
                    CallStatus::Failed,
                    format!("task `{name}` failed: {}", crate::error_chain(&e)),
                ),
                Err(panic) => (
                    CallStatus::Panicked,
                    format!("task `{name}` panicked: {}", panic_message(panic)),
                ),
            };
            let _ = report.send(failure);
        });
        let mut tasks = lock(&self.tasks);
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle);
    }
}

/// The runtime module code runs on: this library's copy of tokio has no other.
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("hsu-plugin")
            .enable_all()
            .build()
            // Inside `catch_unwind` of the entry point: reported as a panicked call.
            .expect("the plugin cannot start its tokio runtime")
    })
}

/// Runs the synchronous part of an entry point behind `catch_unwind`, and returns its future
/// wrapped so that every poll runs inside the plugin runtime's context (this library's tokio
/// finds its timers and sockets) and behind `catch_unwind` (a panic becomes
/// [`CallStatus::Panicked`] with its message). The host polls it on its own threads: a call
/// costs no thread switch. Dropping it (a host timeout) drops the module's future.
fn call<F>(body: impl FnOnce() -> Result<F, CallResult>) -> FfiFuture<CallResult>
where
    F: Future<Output = Result<CallResult, ModuleError>> + Send + 'static,
{
    let entered = || {
        let _context = runtime().enter();
        body()
    };
    match catch_unwind(AssertUnwindSafe(entered)) {
        Ok(Ok(future)) => InPlugin(Box::pin(future)).into_ffi(),
        Ok(Err(result)) => futures::future::ready(result).into_ffi(),
        Err(panic) => {
            let result = CallResult::with(CallStatus::Panicked, panic_message(panic));
            futures::future::ready(result).into_ffi()
        }
    }
}

/// A module call's future, polled by the host inside the plugin's runtime context.
struct InPlugin<F>(std::pin::Pin<Box<F>>);

impl<F> Future for InPlugin<F>
where
    F: Future<Output = Result<CallResult, ModuleError>>,
{
    type Output = CallResult;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<CallResult> {
        use std::task::Poll;
        let _context = runtime().enter();
        let inner = &mut self.0;
        match catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(Ok(result))) => Poll::Ready(result),
            Ok(Poll::Ready(Err(e))) => Poll::Ready(error_result(&e)),
            Err(panic) => Poll::Ready(CallResult::with(CallStatus::Panicked, panic_message(panic))),
        }
    }
}

fn error_result(e: &ModuleError) -> CallResult {
    let status = match e {
        ModuleError::Config(_) => CallStatus::Config,
        _ => CallStatus::Failed,
    };
    let text = match e {
        ModuleError::Config(m) => m.clone(),
        other => crate::error_chain(other),
    };
    CallResult::with(status, text)
}

fn info_yaml(module: &dyn WorkerModule) -> Result<CallResult, ModuleError> {
    let info = serde_yaml::to_string(&module.info())
        .map_err(|e| ModuleError::failed(format!("cannot encode the module info: {e}")))?;
    Ok(CallResult::ok(info))
}

/// # Safety (for callers)
/// `instance` is a pointer `create` returned and `destroy` has not yet consumed; the host
/// guarantees this, and only reads through it during the synchronous part of a call.
fn instance<'a>(instance: *mut c_void) -> Result<&'a Instance, CallResult> {
    if instance.is_null() {
        return Err(CallResult::with(
            CallStatus::Failed,
            "no module instance".into(),
        ));
    }
    // SAFETY: see above; `Instance` is only ever shared (`&`), its mutable parts are locked.
    Ok(unsafe { &*instance.cast::<Instance>() })
}

extern "C" fn set_host(host: HostApi) {
    let _ = catch_unwind(|| forward::install(host));
}

/// # Safety
/// `ptr` is a pointer `create` returned, given here once; nothing uses it afterwards.
unsafe extern "C" fn destroy(ptr: *mut c_void) {
    if ptr.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `ptr` came from `create` (`Box::into_raw`) and the host calls `destroy` once.
        let instance = unsafe { Box::from_raw(ptr.cast::<Instance>()) };
        let state = std::mem::take(&mut *lock(&instance.state));
        for run in [state.run, state.init_run].into_iter().flatten() {
            run.abort();
        }
        // The module's `Drop` is module code: run it on the plugin runtime, panics contained.
        let module = instance.module.clone();
        drop(instance);
        runtime().spawn(async move { drop(module) });
    }));
}

/// # Safety
/// `ptr` is a pointer `create` returned that `destroy` has not consumed (the host's promise,
/// see [`PluginVTable`]).
unsafe extern "C" fn initialize(
    ptr: *mut c_void,
    worker: RStr<'_>,
    config: RStr<'_>,
    sockets: RSockets<'_>,
) -> FfiFuture<CallResult> {
    let sockets = sockets.to_owned_fds();
    call(|| {
        let instance = instance(ptr)?;
        let worker: Arc<str> = worker.to_str().into();
        let config: serde_yaml::Value = serde_yaml::from_str(&config.to_str()).map_err(|e| {
            CallResult::with(CallStatus::Config, format!("the config is not YAML: {e}"))
        })?;
        let span = tracing::info_span!("worker", id = %worker);
        let tag = (worker, span.clone());
        let run = Run::new(&tag, sockets);
        {
            let mut state = lock(&instance.state);
            state.worker = Some(tag);
            if let Some(old) = state.init_run.replace(run.clone()) {
                old.abort();
            }
        }
        let module = instance.module.clone();
        Ok(async move {
            let mut m = module.lock().await;
            m.initialize(&run.ctx, &ModuleConfig::new(config)).await?;
            info_yaml(&**m)
        }
        .instrument(span))
    })
}

/// # Safety
/// `ptr` is a pointer `create` returned that `destroy` has not consumed (the host's promise,
/// see [`PluginVTable`]).
unsafe extern "C" fn start(ptr: *mut c_void, sockets: RSockets<'_>) -> FfiFuture<CallResult> {
    let sockets = sockets.to_owned_fds();
    call(|| {
        let instance = instance(ptr)?;
        let (run, span) = {
            let mut state = lock(&instance.state);
            let Some(worker) = state.worker.clone() else {
                return Err(CallResult::with(
                    CallStatus::Failed,
                    "start before initialize".into(),
                ));
            };
            let run = Run::new(&worker, sockets);
            if let Some(old) = state.run.replace(run.clone()) {
                old.abort();
            }
            (run, worker.1)
        };
        let module = instance.module.clone();
        Ok(async move {
            let mut m = module.lock().await;
            m.start(&run.ctx).await?;
            info_yaml(&**m)
        }
        .instrument(span))
    })
}

/// # Safety
/// `ptr` is a pointer `create` returned that `destroy` has not consumed (the host's promise,
/// see [`PluginVTable`]).
unsafe extern "C" fn stop(ptr: *mut c_void) -> FfiFuture<CallResult> {
    call(|| {
        let instance = instance(ptr)?;
        let (run, span) = {
            let mut state = lock(&instance.state);
            let span = state.worker.as_ref().map(|w| w.1.clone());
            (state.run.take(), span.unwrap_or_else(tracing::Span::none))
        };
        let module = instance.module.clone();
        Ok(async move {
            let Some(run) = run else {
                return Ok(CallResult::ok(String::new()));
            };
            // As in the host: the token is cancelled before `stop` runs.
            run.cancel.cancel();
            let stopped = module.lock().await.stop(&run.ctx).await;
            run.join().await;
            stopped.map(|()| CallResult::ok(String::new()))
        }
        .instrument(span))
    })
}

/// # Safety
/// `ptr` is a pointer `create` returned that `destroy` has not consumed (the host's promise,
/// see [`PluginVTable`]).
unsafe extern "C" fn is_healthy(ptr: *mut c_void) -> FfiFuture<CallResult> {
    call(|| {
        let instance = instance(ptr)?;
        let span = lock(&instance.state)
            .worker
            .as_ref()
            .map_or_else(tracing::Span::none, |w| w.1.clone());
        let module = instance.module.clone();
        Ok(async move {
            let healthy = module.lock().await.is_healthy().await;
            let mut result = CallResult::ok(String::new());
            result.healthy = u8::from(healthy);
            Ok(result)
        }
        .instrument(span))
    })
}

/// # Safety
/// `ptr` is a pointer `create` returned that `destroy` has not consumed (the host's promise,
/// see [`PluginVTable`]).
unsafe extern "C" fn watch(ptr: *mut c_void) -> FfiFuture<CallResult> {
    call(|| {
        let instance = instance(ptr)?;
        let run = lock(&instance.state).run.clone();
        Ok(async move {
            let Some(run) = run else {
                return Ok(CallResult::ok(String::new()));
            };
            let mut failures = run.failures.lock().await;
            tokio::select! {
                failure = failures.recv() => Ok(match failure {
                    Some((status, message)) => CallResult::with(status, message),
                    None => CallResult::ok(String::new()),
                }),
                () = run.cancel.cancelled() => Ok(CallResult::ok(String::new())),
            }
        })
    })
}

/// # Safety
/// `s` is a string this plugin returned, freed once.
unsafe extern "C" fn free_string(s: RString) {
    let _ = catch_unwind(AssertUnwindSafe(|| s.free()));
}

fn lock<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The plugin's tracing subscriber: every event goes to the host's `log` callback.
mod forward {
    use std::fmt::Write as _;
    use std::sync::OnceLock;

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id};
    use tracing::{Event, Level, Subscriber};
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::layer::{Context, SubscriberExt as _};
    use tracing_subscriber::registry::LookupSpan;
    use tracing_subscriber::Layer;

    use super::{HostApi, RStr};

    static HOST: OnceLock<HostApi> = OnceLock::new();

    pub(super) fn install(host: HostApi) {
        if HOST.set(host).is_err() {
            return;
        }
        let filter = match host.max_level {
            0 => LevelFilter::OFF,
            1 => LevelFilter::ERROR,
            2 => LevelFilter::WARN,
            3 => LevelFilter::INFO,
            4 => LevelFilter::DEBUG,
            _ => LevelFilter::TRACE,
        };
        let subscriber = tracing_subscriber::registry().with(Forward.with_filter(filter));
        // A plugin that installed its own subscriber keeps it.
        let _ = tracing::subscriber::set_global_default(subscriber);
    }

    struct Forward;

    /// The worker id recorded on a `worker{id=…}` span.
    struct WorkerTag(String);

    impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Forward {
        fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
            if attrs.metadata().name() != "worker" {
                return;
            }
            let mut fields = Fields::default();
            attrs.record(&mut fields);
            if let (Some(worker), Some(span)) = (fields.id, ctx.span(id)) {
                span.extensions_mut().insert(WorkerTag(worker));
            }
        }

        fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
            let Some(host) = HOST.get() else { return };
            let worker = ctx
                .event_scope(event)
                .and_then(|scope| {
                    scope
                        .into_iter()
                        .find_map(|span| span.extensions().get::<WorkerTag>().map(|t| t.0.clone()))
                })
                .unwrap_or_default();
            let mut fields = Fields::default();
            event.record(&mut fields);
            let level = match *event.metadata().level() {
                Level::ERROR => 1,
                Level::WARN => 2,
                Level::INFO => 3,
                Level::DEBUG => 4,
                Level::TRACE => 5,
            };
            (host.log)(
                level,
                RStr::new(&worker),
                RStr::new(event.metadata().target()),
                RStr::new(&fields.text),
            );
        }
    }

    /// `message` first, then `key=value` for the other fields.
    #[derive(Default)]
    struct Fields {
        id: Option<String>,
        text: String,
    }

    impl Visit for Fields {
        fn record_str(&mut self, field: &Field, value: &str) {
            self.record(field, value);
        }

        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.record(field, format_args!("{value:?}"));
        }
    }

    impl Fields {
        fn record(&mut self, field: &Field, value: impl std::fmt::Display) {
            match field.name() {
                "id" if self.id.is_none() => self.id = Some(value.to_string()),
                "message" => {
                    let rest = std::mem::take(&mut self.text);
                    let _ = write!(self.text, "{value}");
                    if !rest.is_empty() {
                        let _ = write!(self.text, " {rest}");
                    }
                }
                name => {
                    if !self.text.is_empty() {
                        self.text.push(' ');
                    }
                    let _ = write!(self.text, "{name}={value}");
                }
            }
        }
    }
}
