//! Module workers' `tracing` events into the same per-worker files as process output, so one
//! log pipeline serves both kinds of worker.
//!
//! Install [`layer`] in the application's subscriber (`hsu run` does). Every event recorded
//! inside a module worker's span (`worker{id=…}`, which the worker enters around all module
//! code) is appended to `<logs.directory>/<id>.log` as one line. A worker's file is opened on
//! its first event, so without the layer no file is created.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogsConfig;
use crate::process::logs::{LogSink, Stream};
use crate::WorkerId;

enum Sink {
    /// Registered; opened on the first event.
    Pending(WorkerId, LogsConfig),
    Open(Arc<LogSink>),
    /// Opening failed once; not retried (the error was printed).
    Failed,
}

type Sinks = HashMap<String, (u64, Sink)>;

fn registry() -> &'static RwLock<Sinks> {
    static SINKS: OnceLock<RwLock<Sinks>> = OnceLock::new();
    SINKS.get_or_init(Default::default)
}

/// Routes events of worker `id` to its file under `config` (module workers call this).
/// Returns the registration's token for [`unregister`].
pub fn register(id: &WorkerId, config: &LogsConfig) -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let token = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut sinks = registry().write().unwrap_or_else(|p| p.into_inner());
    sinks.insert(
        id.to_string(),
        (token, Sink::Pending(id.clone(), config.clone())),
    );
    token
}

/// Stops routing events of worker `id`, unless a newer worker of the same id registered since.
pub fn unregister(id: &WorkerId, token: u64) {
    let mut sinks = registry().write().unwrap_or_else(|p| p.into_inner());
    if sinks.get(id.as_str()).is_some_and(|(t, _)| *t == token) {
        sinks.remove(id.as_str());
    }
}

fn sink_for(id: &str) -> Option<Arc<LogSink>> {
    {
        let sinks = registry().read().unwrap_or_else(|p| p.into_inner());
        match &sinks.get(id)?.1 {
            Sink::Open(sink) => return Some(sink.clone()),
            Sink::Failed => return None,
            Sink::Pending(..) => {}
        }
    }
    let mut sinks = registry().write().unwrap_or_else(|p| p.into_inner());
    let entry = &mut sinks.get_mut(id)?.1;
    if let Sink::Pending(worker, config) = entry {
        let config = LogsConfig {
            mirror: false,
            ..config.clone()
        };
        *entry = match LogSink::open(worker, &config) {
            Ok(sink) => Sink::Open(Arc::new(sink)),
            Err(e) => {
                // Not through tracing: this is the tracing layer.
                eprintln!(
                    "hsu: cannot open the log of worker `{id}` in `{}`: {e}",
                    config.directory.display()
                );
                Sink::Failed
            }
        };
    }
    match entry {
        Sink::Open(sink) => Some(sink.clone()),
        _ => None,
    }
}

/// How worker `id`'s log writes fare, if its file was opened.
pub(crate) fn writes_of(id: &WorkerId) -> Option<crate::process::logs::LogWrites> {
    let sinks = registry().read().unwrap_or_else(|p| p.into_inner());
    match &sinks.get(id.as_str())?.1 {
        Sink::Open(sink) => Some(sink.writes()),
        _ => None,
    }
}

/// The layer that writes module workers' events to their files.
pub fn layer() -> WorkerLogLayer {
    WorkerLogLayer
}

/// See [`layer`].
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkerLogLayer;

/// The worker id stored on a `worker` span.
struct WorkerSpanId(String);

impl<S> tracing_subscriber::Layer<S> for WorkerLogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "worker" {
            return;
        }
        let mut visitor = IdVisitor(None);
        attrs.record(&mut visitor);
        if let (Some(worker), Some(span)) = (visitor.0, ctx.span(id)) {
            span.extensions_mut().insert(WorkerSpanId(worker));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        // Process output mirrored into tracing is in its file already.
        if event.metadata().target() == "hsu::output" {
            return;
        }
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        let Some(worker) = scope
            .from_root()
            .find_map(|span| span.extensions().get::<WorkerSpanId>().map(|w| w.0.clone()))
        else {
            return;
        };
        let Some(sink) = sink_for(&worker) else {
            return;
        };
        let mut line = format!(
            "{} {} {}:",
            timestamp(SystemTime::now()),
            event.metadata().level(),
            event.metadata().target()
        );
        event.record(&mut LineVisitor(&mut line));
        sink.write_lines(Stream::Tracing, &[line.as_bytes()]);
    }
}

struct IdVisitor(Option<String>);

impl Visit for IdVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "id" {
            self.0 = Some(value.to_string());
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "id" {
            self.0 = Some(format!("{value:?}").trim_matches('"').to_string());
        }
    }
}

struct LineVisitor<'a>(&'a mut String);

impl Visit for LineVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => {
                let _ = write!(self.0, " {value}");
            }
            name => {
                let _ = write!(self.0, " {name}={value:?}");
            }
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => {
                let _ = write!(self.0, " {value:?}");
            }
            name => {
                let _ = write!(self.0, " {name}={value:?}");
            }
        }
    }
}

/// RFC 3339 UTC with milliseconds, without a date library.
fn timestamp(at: SystemTime) -> String {
    let d = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_996_800_123);
        assert_eq!(timestamp(t), "2026-11-30T00:00:00.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(timestamp(leap), "2000-02-29T00:00:00.000Z");
    }
}
