//! `workers:` entries, as written in YAML. One flat struct, as in the seeds, so that serde can
//! name the line of every mistake; [`super::validate`] then checks the type-specific rules and
//! turns it into a [`crate::WorkerSpec`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;
use super::process::{AttachConfig, IntegratedConfig, LimitsConfig, StopConfig};

/// One worker. `id` and `type` are required; which other keys apply depends on `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Unique name, 1–64 characters from `[A-Za-z0-9._-]`.
    pub id: String,
    /// `module` (runs inside the master) or `process` (an OS process).
    #[serde(rename = "type")]
    pub worker_type: WorkerType,
    /// Modules only: `native` (default; a factory compiled into the master) or `plugin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_type: Option<ModuleType>,
    /// Modules only: the registered factory name (native) or library path (plugin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_name: Option<String>,
    /// Processes only: `managed` (default), `integrated` or `unmanaged`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_type: Option<ProcessType>,
    /// Free-form settings handed to the module's `initialize` (or to the process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<super::schema::AnyValue>")]
    pub config: Option<serde_yaml::Value>,
    /// `name` or `name:version` of an installed package providing the code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    /// Processes only: what to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution: Option<ExecutionConfig>,
    /// Supervision; absent means the master's `restart:` default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartConfig>,
    /// Health polling; absent means the defaults of [`HealthCheckConfig`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckConfig>,
    /// Processes only: how to stop it (signal, grace period).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopConfig>,
    /// Unmanaged processes only: which process to attach to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<AttachConfig>,
    /// Integrated processes only: how the control protocol is reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrated: Option<IntegratedConfig>,
    /// Processes only: memory and CPU limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsConfig>,
    /// Module workers only: after repeated panics, run the module as its integrated process
    /// form (`execution:`) instead, where a panic can no longer reach the master.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<QuarantineConfig>,
    /// How long `start` may take (default: the master's `start_timeout`, 30s).
    #[serde(
        default,
        with = "duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<super::schema::DurationText>")]
    pub start_timeout: Option<Duration>,
    /// How long `stop` may take (default: the master's `stop_timeout`, 30s).
    #[serde(
        default,
        with = "duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<super::schema::DurationText>")]
    pub stop_timeout: Option<Duration>,
    /// Workers that must reach a condition before this one starts (see
    /// [`super::depends`]); shutdown stops this one before them.
    #[serde(
        default,
        deserialize_with = "super::depends::deserialize",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    #[schemars(with = "super::schema::DependsOnSchema")]
    pub depends_on: super::DependsOn,
    /// Processes only: files of `KEY=VALUE` lines added to `execution.env` at load (one path
    /// or a list; relative to the config file's directory).
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schemars(with = "super::schema::OneOrManyPaths")]
    pub env_file: Vec<PathBuf>,
    /// Start the worker at these times: a cron expression, five fields (`"0 3 * * *"`) or six
    /// with seconds first (`"*/10 * * * * *"`), or `@hourly`-style. A run still going at the
    /// next time is not started twice (that time is skipped and counted). Not started by
    /// `hsu run` itself; `hsu start` runs it at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The time zone `schedule` is read in: `utc` (default) or `local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_timezone: Option<TimeZone>,
    /// `false`: the worker is checked and added, but `hsu run` (and `apply`) do not start it;
    /// `hsu start` does (default `true`; supervisord's `autostart`).
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub enabled: bool,
    /// Listening sockets the master binds and holds across restarts (see
    /// [`super::sockets`]); managed and integrated processes and modules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sockets: Vec<super::SocketConfig>,
}

/// Which clock a `schedule:` reads.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum TimeZone {
    /// Coordinated universal time.
    #[default]
    Utc,
    /// The machine's local time zone.
    Local,
}

fn yes() -> bool {
    true
}

fn is_yes(v: &bool) -> bool {
    *v
}

/// `x` or `[x, y]`.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
    #[derive(Deserialize, schemars::JsonSchema)]
    #[serde(untagged)]
    enum OneOrMany {
        One(PathBuf),
        Many(Vec<PathBuf>),
    }
    match Option::<OneOrMany>::deserialize(d)? {
        None => Ok(Vec::new()),
        Some(OneOrMany::One(p)) => Ok(vec![p]),
        Some(OneOrMany::Many(v)) => Ok(v),
    }
}

impl WorkerConfig {
    /// A native module worker with no `config:`: the usual start for embedding code.
    pub fn native(id: &str, module_name: &str) -> Self {
        Self {
            id: id.to_string(),
            worker_type: WorkerType::Module,
            module_type: Some(ModuleType::Native),
            module_name: Some(module_name.to_string()),
            process_type: None,
            config: None,
            package: None,
            execution: None,
            restart: None,
            health_check: None,
            stop: None,
            attach: None,
            integrated: None,
            limits: None,
            quarantine: None,
            start_timeout: None,
            stop_timeout: None,
            depends_on: Default::default(),
            env_file: Vec::new(),
            schedule: None,
            schedule_timezone: None,
            sockets: Vec::new(),
            enabled: true,
        }
    }

    /// A plugin module worker loading the library at `path`.
    pub fn plugin(id: &str, path: &str) -> Self {
        Self {
            module_type: Some(ModuleType::Plugin),
            ..Self::native(id, path)
        }
    }

    /// A managed process worker running `executable_path` with `args`.
    pub fn process(id: &str, executable_path: &str, args: &[&str]) -> Self {
        Self {
            worker_type: WorkerType::Process,
            module_type: None,
            module_name: None,
            process_type: Some(ProcessType::Managed),
            execution: Some(ExecutionConfig {
                executable_path: executable_path.to_string(),
                args: args.iter().map(|a| a.to_string()).collect(),
                ..ExecutionConfig::default()
            }),
            ..Self::native(id, "")
        }
    }

    /// Parses one worker from YAML text (handy in tests and embedding code).
    ///
    /// # Errors
    /// The YAML error, naming the field and line.
    pub fn from_yaml(text: &str) -> Result<Self, serde_yaml::Error> {
        serde_yaml::from_str(text)
    }

    /// Sets `config:` from YAML text.
    ///
    /// # Panics
    /// If `yaml` is not valid YAML: meant for literals in code.
    pub fn with_config(mut self, yaml: &str) -> Self {
        self.config = Some(serde_yaml::from_str(yaml).expect("valid YAML literal"));
        self
    }

    /// Sets `restart:` from YAML text.
    ///
    /// # Panics
    /// If `yaml` is not a valid `restart:` section: meant for literals in code.
    pub fn with_restart(mut self, yaml: &str) -> Self {
        self.restart = Some(serde_yaml::from_str(yaml).expect("valid restart: literal"));
        self
    }

    /// Adds `id` to `depends_on:` with `condition`.
    pub fn depending_on(mut self, id: &str, condition: super::Condition) -> Self {
        self.depends_on
            .insert(id.to_string(), super::Dependency::on(condition));
        self
    }

    /// Sets `health_check:` from YAML text.
    ///
    /// # Panics
    /// If `yaml` is not a valid `health_check:` section: meant for literals in code.
    pub fn with_health_check(mut self, yaml: &str) -> Self {
        self.health_check = Some(serde_yaml::from_str(yaml).expect("valid health_check: literal"));
        self
    }
}

/// Where a worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkerType {
    /// An OS process.
    Process,
    /// In the master's own process.
    Module,
}

/// How a module's code gets into the master.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ModuleType {
    /// Compiled in; created by a factory registered under `module_name`.
    #[default]
    Native,
    /// A shared library loaded at run time from `module_name`.
    Plugin,
}

/// How the master relates to a process.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ProcessType {
    /// Spawned and supervised by the master.
    #[default]
    Managed,
    /// Spawned, and speaks HSU's gRPC control/health protocol.
    Integrated,
    /// Already running; attached by PID and watched.
    Unmanaged,
}

/// `execution:` of a process worker.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ExecutionConfig {
    /// The program to run (required).
    pub executable_path: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
    /// Working directory (default: the master's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<PathBuf>,
    /// Run as this user (name or numeric uid); needs the master to run as root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// `restart:`. Every key has a default, so `restart: {}` equals the defaults below.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RestartConfig {
    /// `never`, `on_failure` (default) or `always`.
    pub policy: RestartPolicy,
    /// Automatic restarts allowed within `window` (default 5). One more failure opens the
    /// circuit: the worker stays failed until started by hand.
    pub max_restarts: u32,
    /// The sliding window for `max_restarts` (default `60s`).
    #[serde(with = "duration")]
    #[schemars(with = "super::schema::DurationText")]
    pub window: Duration,
    /// Delay before each automatic restart.
    pub backoff: BackoffConfig,
    /// `stop_first` (default): the old instance stops, then the new one starts. `start_first`:
    /// the new instance starts beside the old one (on the same `sockets:`), and the old one is
    /// stopped once the new one is ready; if it never gets ready, the old one keeps running.
    /// Used whenever a running worker is replaced: restarted by hand (`hsu restart`,
    /// `RestartWorker`), changed by `apply` (also to another deployment: a live move), or
    /// restarted by the policy while it still runs (failed health checks, a limit with
    /// `on_violation: restart`). After a crash the old instance is gone already, and the
    /// policy starts a new one as usual.
    #[serde(skip_serializing_if = "RestartStrategy::is_default")]
    pub strategy: RestartStrategy,
}

/// How a running worker is replaced.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RestartStrategy {
    /// Stop the old instance, then start the new one.
    #[default]
    StopFirst,
    /// Start the new instance, wait until it is ready, then stop the old one.
    StartFirst,
}

impl RestartStrategy {
    fn is_default(&self) -> bool {
        *self == Self::StopFirst
    }
}

impl Default for RestartConfig {
    fn default() -> Self {
        Self {
            policy: RestartPolicy::OnFailure,
            max_restarts: 5,
            window: Duration::from_secs(60),
            backoff: BackoffConfig::default(),
            strategy: RestartStrategy::StopFirst,
        }
    }
}

/// When a worker is restarted automatically.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RestartPolicy {
    /// Never: a failed worker stays failed.
    Never,
    /// After a failed start, a failing task or panic, failed health checks, or a non-zero exit.
    #[default]
    OnFailure,
    /// As `on_failure`, and also after a process exits with status 0.
    Always,
}

/// `restart.backoff:`: exponential delay, `initial * multiplier^n` capped at `max`, each delay
/// varied by up to ±`jitter` (a fraction) so that many workers do not restart in lockstep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct BackoffConfig {
    /// First delay (default `1s`; `0s` restarts at once).
    #[serde(with = "duration")]
    #[schemars(with = "super::schema::DurationText")]
    pub initial: Duration,
    /// Largest delay (default `30s`).
    #[serde(with = "duration")]
    #[schemars(with = "super::schema::DurationText")]
    pub max: Duration,
    /// Growth per restart within the window (default 2.0; at least 1.0).
    pub multiplier: f64,
    /// Random variation as a fraction of the delay, 0.0–1.0 (default 0.1).
    pub jitter: f64,
    /// The first restart after a quiet `window` (no restart within it: a crash after a
    /// stable run) happens at once; the delays above apply from the second restart within the
    /// window on, to crash loops (default `true`; `false` delays every restart).
    pub immediate_first: bool,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.1,
            immediate_first: true,
        }
    }
}

/// `health_check:`. The probe defaults to the worker's own kind: `module` (`is_healthy`) for
/// modules, `process` (alive) for managed and unmanaged processes, `ping` for integrated ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Poll at all (default true).
    pub enabled: bool,
    /// The probe: `module`, `process`, `http`, `tcp`, `exec`, `ping` or `grpc_health`.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeType>,
    /// `http`: the URL to GET; a 2xx status passes (`http://127.0.0.1:8080/health`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `tcp`: `host:port` to connect to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// `exec`: program and arguments; exit status 0 passes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// `grpc_health`: the service name to ask about (default empty: the whole server).
    pub service: String,
    /// Time between polls (default `10s`).
    #[serde(with = "duration")]
    #[schemars(with = "super::schema::DurationText")]
    pub interval: Duration,
    /// A poll that takes longer counts as failed (default `5s`).
    #[serde(with = "duration")]
    #[schemars(with = "super::schema::DurationText")]
    pub timeout: Duration,
    /// Failed polls in a row that fail the worker (default 3).
    pub failure_threshold: u32,
    /// Wait after the worker is running before the first poll (default `0s`).
    #[serde(with = "duration")]
    #[schemars(with = "super::schema::DurationText")]
    pub initial_delay: Duration,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            probe: None,
            url: None,
            address: None,
            command: Vec::new(),
            service: String::new(),
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            failure_threshold: 3,
            initial_delay: Duration::ZERO,
        }
    }
}

/// Kinds of health probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProbeType {
    /// The module's `is_healthy` (modules only).
    Module,
    /// The process is alive (processes only).
    Process,
    /// HTTP GET `url` answers 2xx.
    Http,
    /// A TCP connection to `address` succeeds.
    Tcp,
    /// `command` exits with status 0.
    Exec,
    /// HSU's `/proto.CoreService/Ping` answers (integrated processes).
    Ping,
    /// `grpc.health.v1.Health/Check` answers SERVING (integrated processes).
    GrpcHealth,
}

/// `quarantine:` of a module worker: `after_panics` panics of module code within `within`
/// move the worker to its integrated process form, given by the worker's `execution:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QuarantineConfig {
    /// Panics (in any module call or task) that trigger the move; at least 1.
    pub after_panics: u32,
    /// The window in which they are counted, e.g. `10m`.
    #[serde(with = "super::duration")]
    #[schemars(with = "super::schema::DurationText")]
    pub within: Duration,
}
