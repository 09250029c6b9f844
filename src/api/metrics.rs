//! `GET /metrics`: the workers and the master in the Prometheus text format, built at each
//! scrape from the master's own records (one message to the master, no worker is asked), with
//! the `prometheus` crate (its process collector gives the master's own `process_*`).
//!
//! Per worker (label `worker`, and `deployment` where it helps): `hsu_worker_state` (one
//! series per state, 1 for the current one), `hsu_worker_up`, `hsu_worker_info`,
//! `hsu_worker_start_time_seconds`, `hsu_worker_restarts_total` (present at 0 from the moment
//! the worker is added, so the first restart shows in `increase()`),
//! `hsu_worker_health_failures_total`, `hsu_worker_cpu_seconds_total` and
//! `hsu_worker_resident_memory_bytes` (processes, from the latest sample),
//! `hsu_worker_last_exit_code` (code, or 128 + signal), `hsu_module_tasks` (a module's live
//! tasks), `hsu_module_blocked` (1 while a module call blocks a runtime thread),
//! `hsu_worker_log_write_errors_total`, `hsu_worker_log_buffered_lines` and
//! `hsu_worker_log_dropped_lines_total` (what a full disk cost), `hsu_worker_containment` (1 for
//! `cgroup`, `process_group` or `attached`); `hsu_workers`, `hsu_quarantines_total`,
//! `hsu_orphans_reaped_total` and `hsu_subreaper` (1 when the master reaps orphans).

use std::time::UNIX_EPOCH;

use prometheus::{CounterVec, Encoder, Gauge, GaugeVec, Opts, Registry, TextEncoder};

use hsu_actors::{WorkerState, WorkerSummary};

const STATES: [WorkerState; 9] = [
    WorkerState::Idle,
    WorkerState::Waiting,
    WorkerState::Starting,
    WorkerState::Running,
    WorkerState::Stopping,
    WorkerState::Stopped,
    WorkerState::FailedStart,
    WorkerState::Failed,
    WorkerState::Terminating,
];

/// Everything one scrape registers.
struct Families {
    state: GaugeVec,
    up: GaugeVec,
    info: GaugeVec,
    start_time: GaugeVec,
    restarts: CounterVec,
    health_failures: CounterVec,
    cpu: CounterVec,
    rss: GaugeVec,
    last_exit: GaugeVec,
    tasks: GaugeVec,
    blocked: GaugeVec,
    log_errors: CounterVec,
    log_buffered: GaugeVec,
    log_dropped: CounterVec,
    containment: GaugeVec,
    workers: Gauge,
    quarantines: prometheus::Counter,
    orphans: prometheus::Counter,
    subreaper: Gauge,
}

impl Families {
    fn new() -> prometheus::Result<Self> {
        let gauge =
            |name: &str, help: &str, labels: &[&str]| GaugeVec::new(Opts::new(name, help), labels);
        let counter = |name: &str, help: &str, labels: &[&str]| {
            CounterVec::new(Opts::new(name, help), labels)
        };
        Ok(Self {
            state: gauge(
                "hsu_worker_state",
                "1 for the worker's current state, 0 for the others",
                &["worker", "deployment", "state"],
            )?,
            up: gauge("hsu_worker_up", "1 while the worker runs", &["worker"])?,
            info: gauge(
                "hsu_worker_info",
                "the worker's deployment (always 1)",
                &["worker", "deployment"],
            )?,
            start_time: gauge(
                "hsu_worker_start_time_seconds",
                "when the current run started, in seconds since the Unix epoch",
                &["worker"],
            )?,
            restarts: counter(
                "hsu_worker_restarts_total",
                "restarts made, automatic and by hand",
                &["worker"],
            )?,
            health_failures: counter(
                "hsu_worker_health_failures_total",
                "failed health probes",
                &["worker"],
            )?,
            cpu: counter(
                "hsu_worker_cpu_seconds_total",
                "CPU time of the worker's process, at the latest sample",
                &["worker"],
            )?,
            rss: gauge(
                "hsu_worker_resident_memory_bytes",
                "resident memory of the worker's process, at the latest sample",
                &["worker"],
            )?,
            last_exit: gauge(
                "hsu_worker_last_exit_code",
                "how the worker's process last ended: its exit code, or 128 + the signal",
                &["worker"],
            )?,
            tasks: gauge(
                "hsu_module_tasks",
                "tasks a module worker's module spawned that still run",
                &["worker"],
            )?,
            blocked: gauge(
                "hsu_module_blocked",
                "1 while a module worker's call blocks a runtime thread",
                &["worker"],
            )?,
            log_errors: counter(
                "hsu_worker_log_write_errors_total",
                "writes of the worker's log that failed (a full disk, EIO)",
                &["worker"],
            )?,
            log_buffered: gauge(
                "hsu_worker_log_buffered_lines",
                "log lines held in memory until the file can take them",
                &["worker"],
            )?,
            log_dropped: counter(
                "hsu_worker_log_dropped_lines_total",
                "log lines dropped because the memory kept for them was full",
                &["worker"],
            )?,
            containment: gauge(
                "hsu_worker_containment",
                "how the worker's processes are contained (1 for the current way)",
                &["worker", "containment"],
            )?,
            workers: Gauge::new("hsu_workers", "workers in the table")?,
            quarantines: prometheus::Counter::new(
                "hsu_quarantines_total",
                "module workers moved to their process form by quarantine",
            )?,
            orphans: prometheus::Counter::new(
                "hsu_orphans_reaped_total",
                "orphaned descendants this master reaped (as a subreaper or PID 1)",
            )?,
            subreaper: Gauge::new(
                "hsu_subreaper",
                "1 when this master reaps orphaned descendants",
            )?,
        })
    }

    fn register(self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.state))?;
        registry.register(Box::new(self.up))?;
        registry.register(Box::new(self.info))?;
        registry.register(Box::new(self.start_time))?;
        registry.register(Box::new(self.restarts))?;
        registry.register(Box::new(self.health_failures))?;
        registry.register(Box::new(self.cpu))?;
        registry.register(Box::new(self.rss))?;
        registry.register(Box::new(self.last_exit))?;
        registry.register(Box::new(self.tasks))?;
        registry.register(Box::new(self.blocked))?;
        registry.register(Box::new(self.log_errors))?;
        registry.register(Box::new(self.log_buffered))?;
        registry.register(Box::new(self.log_dropped))?;
        registry.register(Box::new(self.containment))?;
        registry.register(Box::new(self.orphans))?;
        registry.register(Box::new(self.subreaper))?;
        registry.register(Box::new(self.workers))?;
        registry.register(Box::new(self.quarantines))?;
        Ok(())
    }
}

/// The exposition text for `workers` and this process.
///
/// # Errors
/// Only if a metric definition is invalid (a bug, caught by the tests).
pub fn render(
    workers: &[WorkerSummary],
    facts: &[hsu_actors::WorkerMetrics],
) -> prometheus::Result<String> {
    let f = Families::new()?;
    for w in facts {
        let id = w.id.as_str();
        if let Some(tasks) = w.module_tasks {
            f.tasks.with_label_values(&[id]).set(tasks as f64);
            f.blocked
                .with_label_values(&[id])
                .set(if w.blocked { 1.0 } else { 0.0 });
        }
        if let Some(writes) = w.log_writes {
            f.log_errors
                .with_label_values(&[id])
                .inc_by(writes.write_errors as f64);
            f.log_buffered
                .with_label_values(&[id])
                .set(writes.buffered_lines as f64);
            f.log_dropped
                .with_label_values(&[id])
                .inc_by(writes.dropped_lines as f64);
        }
        if let Some(how) = w.containment {
            f.containment.with_label_values(&[id, how]).set(1.0);
        }
    }
    f.orphans.inc_by(hsu_actors::orphans_reaped() as f64);
    f.subreaper.set(if hsu_actors::reaping_orphans() {
        1.0
    } else {
        0.0
    });
    for s in workers {
        let id = s.id.as_str();
        let deployment = s.deployment.as_str();
        for candidate in STATES {
            f.state
                .with_label_values(&[id, deployment, candidate.as_str()])
                .set(if s.state == candidate { 1.0 } else { 0.0 });
        }
        let running = s.state == WorkerState::Running;
        f.up.with_label_values(&[id])
            .set(if running { 1.0 } else { 0.0 });
        f.info.with_label_values(&[id, deployment]).set(1.0);
        if let Some(at) = s.started_at {
            let seconds = at
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or_default();
            f.start_time.with_label_values(&[id]).set(seconds);
        }
        f.restarts
            .with_label_values(&[id])
            .inc_by(f64::from(s.restart_count));
        f.health_failures
            .with_label_values(&[id])
            .inc_by(s.health_failures_total as f64);
        if let Some(usage) = s.resources {
            if let Some(seconds) = usage.cpu_seconds {
                f.cpu.with_label_values(&[id]).inc_by(seconds);
            }
            f.rss.with_label_values(&[id]).set(usage.rss_bytes as f64);
        }
        if let Some(code) = s.last_exit.as_ref().and_then(crate::api::exit_number) {
            f.last_exit.with_label_values(&[id]).set(f64::from(code));
        }
        if s.quarantined {
            f.quarantines.inc();
        }
    }
    f.workers.set(workers.len() as f64);
    let registry = Registry::new();
    f.register(&registry)?;
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    let mut out = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}
