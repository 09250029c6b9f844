//! Checks that need more than serde: type-specific required fields, value ranges, duplicate
//! ids and unknown factories. Every problem is reported, each naming its worker and field.

use std::collections::{HashMap, HashSet};
use std::fmt;

use hsu_module::ModuleConfig;
use serde::Serialize;

use super::{
    Condition, DependencySpec, DeploymentSpec, GroupSpec, HealthCheckConfig, HsuConfig,
    IntegratedConfig, LinePattern, MasterConfig, ModuleType, ProbeType, ProcessSpec, ProcessType,
    QuarantineSpec, RestartConfig, StopConfig, WorkerConfig, WorkerSpec, WorkerType,
};
use crate::packages::PackageIndex;
use crate::WorkerId;

/// One thing wrong with a config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ValidationIssue {
    /// The worker it concerns (`workers[3]` when the id itself is unusable), or none for `master:`.
    pub worker: Option<String>,
    /// The YAML path of the field, e.g. `restart.backoff.multiplier`.
    pub field: String,
    /// What is wrong and what would be right.
    pub message: String,
    /// 1-based line in the file (of the field, else of its worker), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// 1-based column, with `line`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// Which entry of `workers:` it concerns (0-based), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
}

impl fmt::Display for ValidationIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.worker {
            Some(w) => write!(f, "worker `{w}`: `{}`: {}", self.field, self.message),
            None => write!(f, "`{}`: {}", self.field, self.message),
        }
    }
}

struct Issues<'a> {
    worker: Option<String>,
    index: Option<usize>,
    out: &'a mut Vec<ValidationIssue>,
}

impl Issues<'_> {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.out.push(ValidationIssue {
            worker: self.worker.clone(),
            field: field.into(),
            message: message.into(),
            line: None,
            column: None,
            index: self.index,
        });
    }
}

/// Validates one worker and fills in `master`'s defaults. Pure: a `package:` is resolved
/// against `packages`, a snapshot read beforehand ([`PackageIndex::load`]).
///
/// # Errors
/// Every problem found, each naming the worker and field.
pub fn validate_worker(
    config: &WorkerConfig,
    master: &MasterConfig,
    packages: &PackageIndex,
) -> Result<WorkerSpec, Vec<ValidationIssue>> {
    let mut out = Vec::new();
    let spec = check_worker(config, master, packages, None, &mut out);
    match spec {
        Some(spec) if out.is_empty() => Ok(spec),
        _ => Err(out),
    }
}

/// Validates a whole file: each worker, the master section, duplicate ids and (for native
/// modules) whether `factory_known` knows the factory name. Pure: `package:` is resolved
/// against `packages` ([`PackageIndex::for_config`] reads it).
///
/// # Errors
/// Every problem found, in file order.
pub fn validate_config(
    config: &HsuConfig,
    factory_known: &dyn Fn(&str) -> bool,
    packages: &PackageIndex,
) -> Result<Vec<WorkerSpec>, Vec<ValidationIssue>> {
    let mut out = Vec::new();
    check_restart(
        &config.master.restart,
        "master.restart",
        &mut Issues {
            worker: None,
            index: None,
            out: &mut out,
        },
    );
    for (field, d) in [
        ("master.start_timeout", config.master.start_timeout),
        ("master.stop_timeout", config.master.stop_timeout),
    ] {
        if d.is_zero() {
            out.push(ValidationIssue {
                worker: None,
                field: field.into(),
                message: "must be greater than 0s".into(),
                line: None,
                column: None,
                index: None,
            });
        }
    }
    if let Some(listen) = &config.master.api.listen {
        match listen.parse::<std::net::SocketAddr>() {
            Err(e) => out.push(ValidationIssue {
                worker: None,
                field: "master.api.listen".into(),
                message: format!("{listen:?} is not an address with a port ({e}); write e.g. 127.0.0.1:7070"),
                line: None,
                column: None,
index: None,
            }),
            Ok(address) if !address.ip().is_loopback() && !config.master.api.allow_remote => {
                out.push(ValidationIssue {
                    worker: None,
                    field: "master.api.listen".into(),
                    message: format!(
                        "{address} is not a loopback address: the control API would be reachable from the network; set `allow_remote: true` to mean it"
                    ),
                    line: None,
                    column: None,
index: None,
                })
            }
            Ok(_) => {}
        }
    }
    if config.master.api.event_lag == 0 {
        out.push(ValidationIssue {
            worker: None,
            field: "master.api.event_lag".into(),
            message: "must be at least 1".into(),
            line: None,
            column: None,
            index: None,
        });
    }
    if config.master.module_threads == Some(0) {
        out.push(ValidationIssue {
            worker: None,
            field: "master.module_threads".into(),
            message: "must be at least 1".into(),
            line: None,
            column: None,
            index: None,
        });
    }
    let mut seen = HashSet::new();
    let mut specs = Vec::new();
    for (index, worker) in config.workers.iter().enumerate() {
        if let Some(spec) = check_worker(worker, &config.master, packages, Some(index), &mut out) {
            if !seen.insert(spec.id.clone()) {
                out.push(ValidationIssue {
                    worker: Some(spec.id.to_string()),
                    field: "id".into(),
                    message: format!(
                        "duplicate id (workers[{index}] repeats an id used earlier in the file)"
                    ),
                    line: None,
                    column: None,
                    index: Some(index),
                });
            }
            if let DeploymentSpec::Module {
                module_type: ModuleType::Native,
                module_name,
                ..
            } = &spec.deployment
            {
                if !factory_known(module_name) {
                    out.push(ValidationIssue {
                        worker: Some(spec.id.to_string()),
                        field: "module_name".into(),
                        message: format!(
                            "no native module factory named `{module_name}` is registered"
                        ),
                        line: None,
                        column: None,
                        index: Some(index),
                    });
                }
            }
            specs.push(spec);
        }
    }
    check_dependencies(&config.workers, &specs, &mut out);
    check_socket_clashes(&specs, &config.workers, &mut out);
    if let Err(issues) = validate_groups(config) {
        out.extend(issues);
    }
    if out.is_empty() {
        Ok(specs)
    } else {
        Err(out)
    }
}

fn check_worker(
    config: &WorkerConfig,
    master: &MasterConfig,
    packages: &PackageIndex,
    index: Option<usize>,
    out: &mut Vec<ValidationIssue>,
) -> Option<WorkerSpec> {
    let before = out.len();
    let id = WorkerId::new(&config.id);
    let mut issues = Issues {
        worker: Some(match (&id, index) {
            (Ok(id), _) => id.to_string(),
            (Err(_), Some(i)) => format!("workers[{i}]"),
            (Err(_), None) => config.id.clone(),
        }),
        index,
        out,
    };
    if let Err(message) = &id {
        issues.add("id", message.to_string());
    }
    // `package:` fills in the executable or library from the installed package.
    let resolved;
    let config = if config.package.is_some() {
        match packages.resolve(config) {
            Ok(r) => {
                resolved = r;
                &resolved
            }
            Err(e) => {
                issues.add("package", crate::error::error_chain(&e));
                return None;
            }
        }
    } else {
        config
    };
    let module_config = ModuleConfig::new(config.config.clone().unwrap_or(serde_yaml::Value::Null));
    let kind = match config.worker_type {
        WorkerType::Module => check_module(config, module_config, &mut issues),
        WorkerType::Process => check_process(config, module_config, &mut issues),
    };
    let restart = config
        .restart
        .clone()
        .unwrap_or_else(|| master.restart.clone());
    check_restart(&restart, "restart", &mut issues);
    if config.schedule.is_some() && restart.policy == super::RestartPolicy::Always {
        issues.add(
            "restart.policy",
            "`always` would start a scheduled worker again as soon as it ends; use `never` (or `on_failure` to retry a failed run)",
        );
    }
    let health_check = config.health_check.clone().unwrap_or_else(|| HealthCheckConfig {
        // A managed child's exit is an event already: polling that it is alive would only
        // cost CPU. Other kinds probe by default (modules: is_healthy; integrated: Ping;
        // unmanaged: still the same process).
        enabled: !matches!(&kind, DeploymentSpec::Process(p) if p.process_type == ProcessType::Managed),
        ..HealthCheckConfig::default()
    });
    check_probe(&health_check, &kind, &mut issues);
    if health_check.enabled {
        if health_check.interval.is_zero() {
            issues.add("health_check.interval", "must be greater than 0s");
        }
        if health_check.timeout.is_zero() {
            issues.add("health_check.timeout", "must be greater than 0s");
        }
        if health_check.failure_threshold == 0 {
            issues.add("health_check.failure_threshold", "must be at least 1");
        }
    }
    if !config.env_file.is_empty() && config.worker_type == WorkerType::Module {
        issues.add(
            "env_file",
            "processes only: a module runs inside the master and has no environment of its own",
        );
    }
    let schedule = match &config.schedule {
        None => None,
        Some(text) => {
            let local = config.schedule_timezone == Some(super::TimeZone::Local);
            match crate::schedule::Schedule::parse(text, local) {
                Ok(s) => Some(s),
                Err(e) => {
                    issues.add(
                        "schedule",
                        format!("{text:?} is not a cron expression: {e}"),
                    );
                    None
                }
            }
        }
    };
    if config.schedule.is_none() && config.schedule_timezone.is_some() {
        issues.add("schedule_timezone", "only means something with `schedule:`");
    }
    let quarantine = check_quarantine(config, &kind, &mut issues);
    let (sockets, problems) = super::sockets::check(&config.sockets);
    for (field, message) in problems {
        issues.add(field, message);
    }
    if !sockets.is_empty()
        && matches!(&kind, DeploymentSpec::Process(p) if p.process_type == ProcessType::Unmanaged)
    {
        issues.add(
            "sockets",
            "an unmanaged process was started by someone else and cannot be handed sockets",
        );
    }
    let depends_on = check_depends_on(config, &mut issues);
    let start_timeout = config.start_timeout.unwrap_or(master.start_timeout);
    let stop_timeout = config.stop_timeout.unwrap_or(master.stop_timeout);
    for (field, d) in [
        ("start_timeout", start_timeout),
        ("stop_timeout", stop_timeout),
    ] {
        if d.is_zero() {
            issues.add(field, "must be greater than 0s");
        }
    }
    if issues.out.len() != before {
        return None;
    }
    Some(WorkerSpec {
        id: id.ok()?,
        deployment: kind,
        restart,
        health_check,
        start_timeout,
        stop_timeout,
        quarantine,
        depends_on,
        schedule,
        sockets,
        enabled: config.enabled,
    })
}

/// Two workers listening on the same address: the second could never bind it.
fn check_socket_clashes(
    specs: &[WorkerSpec],
    workers: &[WorkerConfig],
    out: &mut Vec<ValidationIssue>,
) {
    let mut seen: HashMap<&super::ListenAddress, &WorkerId> = HashMap::new();
    for spec in specs {
        for (i, socket) in spec.sockets.iter().enumerate() {
            if super::sockets::is_port_zero(&socket.listen) {
                continue;
            }
            match seen.get(&socket.listen) {
                Some(other) if *other != &spec.id => out.push(ValidationIssue {
                    worker: Some(spec.id.to_string()),
                    field: format!("sockets[{i}].listen"),
                    message: format!(
                        "{} is also a socket of worker `{other}`: only one of them could listen there",
                        socket.listen
                    ),
                    line: None,
                    column: None,
                    index: workers.iter().position(|w| w.id == spec.id.as_str()),
                }),
                _ => {
                    seen.insert(&socket.listen, &spec.id);
                }
            }
        }
    }
}

/// Each entry of `depends_on:` on its own: a usable id, not the worker itself, a pattern that
/// compiles, a timeout above zero. (Whether the id exists and cycles are the file's checks.)
fn check_depends_on(config: &WorkerConfig, issues: &mut Issues<'_>) -> Vec<DependencySpec> {
    let mut out = Vec::new();
    for (name, dep) in &config.depends_on {
        let field = format!("depends_on.{name}");
        let id = match WorkerId::new(name) {
            Ok(id) => id,
            Err(e) => {
                issues.add(field, e.to_string());
                continue;
            }
        };
        if *name == config.id {
            issues.add(field, "a worker cannot depend on itself");
            continue;
        }
        let pattern = match &dep.condition {
            Condition::LogLine(p) => match LinePattern::new(p) {
                Ok(p) => Some(p),
                Err(e) => {
                    issues.add(
                        format!("{field}.log_line"),
                        format!("not a regular expression: {e}"),
                    );
                    continue;
                }
            },
            _ => None,
        };
        if dep.timeout.is_some_and(|t| t.is_zero()) {
            issues.add(format!("{field}.timeout"), "must be greater than 0s");
        }
        out.push(DependencySpec {
            id,
            condition: dep.condition.clone(),
            pattern,
            timeout: dep.timeout,
        });
    }
    out
}

/// Across the file: every dependency is a worker of the file, can reach its condition, and no
/// worker waits on itself through others. Looks at every worker's `depends_on:` as written (a
/// worker with other problems too), and at the validated dependencies' settings.
fn check_dependencies(
    workers: &[WorkerConfig],
    specs: &[WorkerSpec],
    out: &mut Vec<ValidationIssue>,
) {
    let by_id: HashMap<&str, &WorkerSpec> = specs.iter().map(|s| (s.id.as_str(), s)).collect();
    let in_file: HashSet<&str> = workers.iter().map(|w| w.id.as_str()).collect();
    for (index, worker) in workers.iter().enumerate() {
        for (name, dep) in &worker.depends_on {
            if *name == worker.id || WorkerId::new(name).is_err() {
                continue; // reported with the worker
            }
            let mut issue = |message: String| {
                out.push(ValidationIssue {
                    worker: Some(worker.id.clone()),
                    field: format!("depends_on.{name}"),
                    message,
                    line: None,
                    column: None,
                    index: Some(index),
                })
            };
            let Some(target) = by_id.get(name.as_str()) else {
                if !in_file.contains(name.as_str()) {
                    issue(format!("no worker `{name}` in this config"));
                }
                // Otherwise the worker is there but invalid: its own problems are reported.
                continue;
            };
            match dep.condition {
                Condition::Healthy if !target.health_check.enabled => issue(format!(
                    "`{name}` has no health check (its health_check.enabled is false), so it never becomes healthy; give it a `health_check:` or depend on `started`"
                )),
                Condition::CompletedSuccessfully
                    if target.restart.policy == super::RestartPolicy::Always =>
                {
                    issue(format!(
                        "`{name}` has restart.policy `always`, so it is started again whenever it completes; give it `restart: {{policy: never}}` (a one-shot job) or depend on `started`"
                    ))
                }
                _ => {}
            }
        }
    }
    let graph: Vec<(&str, Vec<&str>)> = workers
        .iter()
        .map(|w| {
            (
                w.id.as_str(),
                // Itself is reported as such, not as a cycle.
                w.depends_on
                    .keys()
                    .map(String::as_str)
                    .filter(|d| *d != w.id)
                    .collect(),
            )
        })
        .collect();
    for cycle in dependency_cycles(&graph) {
        let first = cycle[0].to_string();
        out.push(ValidationIssue {
            worker: Some(first.clone()),
            field: "depends_on".into(),
            message: format!(
                "dependency cycle: {} -> {first}; none of them could ever start",
                cycle.join(" -> ")
            ),
            line: None,
            column: None,
            index: None,
        });
    }
}

/// The `groups:` of a file, checked against its workers and each other: ids unique among
/// workers and groups, members that exist and belong to one group only, no group inside
/// itself, `on_exhausted` at the top only, and no member that depends on a later member of
/// its group (members start in order: it would wait forever).
///
/// # Errors
/// Every problem, each naming the group and field.
pub fn validate_groups(config: &HsuConfig) -> Result<Vec<GroupSpec>, Vec<ValidationIssue>> {
    let mut out = Vec::new();
    let mut issue = |field: String, message: String| {
        out.push(ValidationIssue {
            worker: None,
            field,
            message,
            line: None,
            column: None,
            index: None,
        })
    };
    let workers: HashMap<&str, &WorkerConfig> =
        config.workers.iter().map(|w| (w.id.as_str(), w)).collect();
    let mut group_ids: HashMap<&str, usize> = HashMap::new();
    for (i, g) in config.groups.iter().enumerate() {
        let field = format!("groups[{i}].id");
        if let Err(e) = WorkerId::new(&g.id) {
            issue(field, e.to_string());
        } else if workers.contains_key(g.id.as_str()) {
            issue(
                field,
                format!(
                    "`{}` is a worker's id too; groups and workers share one namespace",
                    g.id
                ),
            );
        } else if group_ids.insert(g.id.as_str(), i).is_some() {
            issue(field, format!("duplicate group id `{}`", g.id));
        }
    }
    let mut parent: HashMap<&str, &str> = HashMap::new();
    for (i, g) in config.groups.iter().enumerate() {
        if g.members.is_empty() {
            issue(
                format!("groups[{i}].members"),
                format!("group `{}` has no members", g.id),
            );
        }
        if g.window.is_zero() {
            issue(
                format!("groups[{i}].window"),
                "must be greater than 0s".into(),
            );
        }
        let mut seen = HashSet::new();
        for (j, m) in g.members.iter().enumerate() {
            let field = format!("groups[{i}].members[{j}]");
            if *m == g.id {
                issue(field, format!("group `{}` cannot contain itself", g.id));
            } else if !workers.contains_key(m.as_str()) && !group_ids.contains_key(m.as_str()) {
                issue(field, format!("no worker or group `{m}`"));
            } else if !seen.insert(m.as_str()) {
                issue(field, format!("`{m}` is listed twice in group `{}`", g.id));
            } else if let Some(other) = parent.insert(m.as_str(), g.id.as_str()) {
                issue(
                    field,
                    format!("`{m}` is a member of group `{other}` already; a member belongs to one group"),
                );
            }
        }
        for (j, m) in g.members.iter().enumerate() {
            if workers.get(m.as_str()).is_some_and(|w| !w.enabled) {
                issue(
                    format!("groups[{i}].members[{j}]"),
                    format!("`{m}` has `enabled: false`; a group starts its members itself: leave the member enabled (or take it out of the group)"),
                );
            }
            if workers
                .get(m.as_str())
                .is_some_and(|w| w.schedule.is_some())
            {
                issue(
                    format!("groups[{i}].members[{j}]"),
                    format!("`{m}` runs on a schedule; a group restarts its members itself, so a scheduled worker cannot be one"),
                );
            }
        }
        // Members start in order, each once the one before runs.
        for (j, m) in g.members.iter().enumerate() {
            let Some(w) = workers.get(m.as_str()) else {
                continue;
            };
            for later in &g.members[j + 1..] {
                if w.depends_on.contains_key(later.as_str()) {
                    issue(
                        format!("groups[{i}].members[{j}]"),
                        format!("`{m}` depends on `{later}`, which starts after it in group `{}`; list `{later}` first", g.id),
                    );
                }
            }
        }
    }
    for (i, g) in config.groups.iter().enumerate() {
        if g.on_exhausted.is_some() && parent.contains_key(g.id.as_str()) {
            issue(
                format!("groups[{i}].on_exhausted"),
                format!(
                    "group `{}` is a member of `{}`: its failure goes to that group; only a top-level group has `on_exhausted`",
                    g.id, parent[g.id.as_str()]
                ),
            );
        }
    }
    let graph: Vec<(&str, Vec<&str>)> = config
        .groups
        .iter()
        .map(|g| {
            (
                g.id.as_str(),
                g.members
                    .iter()
                    .map(String::as_str)
                    .filter(|m| group_ids.contains_key(m) && *m != g.id)
                    .collect(),
            )
        })
        .collect();
    for cycle in dependency_cycles(&graph) {
        let first = cycle[0];
        issue(
            format!("groups[{}].members", group_ids[first]),
            format!(
                "groups inside each other: {} -> {first}",
                cycle.join(" -> ")
            ),
        );
    }
    if !out.is_empty() {
        return Err(out);
    }
    Ok(config
        .groups
        .iter()
        .filter_map(|g| {
            Some(GroupSpec {
                id: WorkerId::new(&g.id).ok()?,
                strategy: g.strategy,
                max_restarts: g.max_restarts,
                window: g.window,
                on_exhausted: g.on_exhausted.unwrap_or_default(),
                members: g
                    .members
                    .iter()
                    .filter_map(|m| WorkerId::new(m).ok())
                    .collect(),
                parent: parent
                    .get(g.id.as_str())
                    .and_then(|p| WorkerId::new(p).ok()),
            })
        })
        .collect())
}

/// Every cycle of a dependency graph (each node with the names it depends on), each once, as
/// the names along it, starting at the one that comes first.
pub(crate) fn dependency_cycles<'a>(graph: &[(&'a str, Vec<&'a str>)]) -> Vec<Vec<&'a str>> {
    let index: HashMap<&str, usize> = graph
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (*id, i))
        .collect();
    // 0 = not seen, 1 = on the current path, 2 = done.
    let mut mark = vec![0u8; graph.len()];
    let mut cycles = Vec::new();
    for start in 0..graph.len() {
        if mark[start] != 0 {
            continue;
        }
        // Iterative depth-first search: (node, next edge to follow).
        let mut path: Vec<(usize, usize)> = vec![(start, 0)];
        mark[start] = 1;
        while let Some(&mut (node, ref mut edge)) = path.last_mut() {
            let deps = &graph[node].1;
            if *edge == deps.len() {
                mark[node] = 2;
                path.pop();
                continue;
            }
            let next = index.get(deps[*edge]).copied();
            *edge += 1;
            let Some(next) = next else { continue };
            match mark[next] {
                0 => {
                    mark[next] = 1;
                    path.push((next, 0));
                }
                1 => {
                    let from = path.iter().position(|(n, _)| *n == next).unwrap_or(0);
                    cycles.push(path[from..].iter().map(|(n, _)| graph[*n].0).collect());
                }
                _ => {}
            }
        }
    }
    cycles
}

fn check_module(
    config: &WorkerConfig,
    module_config: ModuleConfig,
    issues: &mut Issues<'_>,
) -> DeploymentSpec {
    if config.execution.is_some() && config.quarantine.is_none() {
        issues.add(
            "execution",
            "a module runs inside the master: `execution` on a module worker is only its process form for `quarantine`",
        );
    }
    if config.limits.is_some() {
        issues.add(
            "limits",
            "in-process modules cannot be limited (they share the master's memory and CPU); deploy the service as a process worker to limit it",
        );
    }
    for (field, set) in [
        ("process_type", config.process_type.is_some()),
        ("stop", config.stop.is_some()),
        ("attach", config.attach.is_some()),
        ("integrated", config.integrated.is_some()),
    ] {
        if set {
            issues.add(field, format!("only process workers have `{field}`"));
        }
    }
    let module_type = config.module_type.unwrap_or_default();
    let module_name = config.module_name.clone().unwrap_or_default();
    if module_name.trim().is_empty() {
        issues.add(
            "module_name",
            match module_type {
                ModuleType::Native => {
                    "required for module workers: the name of a registered native module factory"
                }
                ModuleType::Plugin => "required for module workers: the path of the plugin library",
            },
        );
    }
    DeploymentSpec::Module {
        module_type,
        module_name,
        config: module_config,
    }
}

/// `quarantine:` needs a module worker with an `execution:` (its integrated process form).
fn check_quarantine(
    config: &WorkerConfig,
    kind: &DeploymentSpec,
    issues: &mut Issues<'_>,
) -> Option<QuarantineSpec> {
    let q = config.quarantine.as_ref()?;
    let DeploymentSpec::Module {
        config: module_config,
        ..
    } = kind
    else {
        issues.add(
            "quarantine",
            "only module workers have `quarantine` (a process is already isolated)",
        );
        return None;
    };
    if q.after_panics == 0 {
        issues.add("quarantine.after_panics", "must be at least 1");
    }
    if q.within.is_zero() {
        issues.add("quarantine.within", "must be greater than 0s");
    }
    let execution = match &config.execution {
        Some(e) if !e.executable_path.trim().is_empty() => e.clone(),
        _ => {
            issues.add(
                "execution.executable_path",
                "required with `quarantine`: the module's integrated process form (a binary calling hsu_module::run_process)",
            );
            return None;
        }
    };
    Some(QuarantineSpec {
        after_panics: q.after_panics,
        within: q.within,
        process: std::sync::Arc::new(ProcessSpec {
            process_type: ProcessType::Integrated,
            execution: Some(execution),
            config: module_config.clone(),
            stop: StopConfig::default(),
            attach: None,
            integrated: IntegratedConfig::default(),
            limits: None,
        }),
    })
}

fn check_process(
    config: &WorkerConfig,
    module_config: ModuleConfig,
    issues: &mut Issues<'_>,
) -> DeploymentSpec {
    if config.module_type.is_some() {
        issues.add("module_type", "only module workers have `module_type`");
    }
    if config.module_name.is_some() {
        issues.add("module_name", "only module workers have `module_name`");
    }
    let process_type = config.process_type.unwrap_or_default();
    match (&config.execution, process_type) {
        (None, ProcessType::Managed | ProcessType::Integrated) => issues.add(
            "execution.executable_path",
            "required for managed and integrated process workers",
        ),
        (Some(_), ProcessType::Unmanaged) => issues.add(
            "execution",
            "an unmanaged process is attached to, not started: use `attach`",
        ),
        (Some(e), _) if e.executable_path.trim().is_empty() => {
            issues.add("execution.executable_path", "must not be empty")
        }
        _ => {}
    }
    match (&config.attach, process_type) {
        (None, ProcessType::Unmanaged) => issues.add(
            "attach",
            "required for unmanaged workers: `attach: {pid: N}` or `attach: {pid_file: PATH}`",
        ),
        (Some(a), ProcessType::Unmanaged) => match (a.pid, &a.pid_file) {
            (Some(_), Some(_)) => issues.add("attach", "give `pid` or `pid_file`, not both"),
            (None, None) => issues.add("attach", "give `pid` or `pid_file`"),
            (Some(pid @ (0 | 1)), None) => issues.add(
                "attach.pid",
                format!("refusing to attach to PID {pid}: it is not a service"),
            ),
            _ => {}
        },
        (Some(_), _) => issues.add("attach", "only unmanaged workers attach to a process"),
        (None, _) => {}
    }
    if config.integrated.is_some() && process_type != ProcessType::Integrated {
        issues.add("integrated", "only integrated workers have `integrated`");
    }
    let integrated = config.integrated.clone().unwrap_or_default();
    if integrated.startup_timeout.is_zero() || integrated.call_timeout.is_zero() {
        issues.add("integrated", "timeouts must be greater than 0s");
    }
    if let Some(limits) = &config.limits {
        if limits.memory_max.is_some_and(|m| m.0 == 0) {
            issues.add("limits.memory_max", "must be greater than 0");
        }
        if limits
            .cpu_percent_max
            .is_some_and(|c| !(c.is_finite() && c > 0.0))
        {
            issues.add("limits.cpu_percent_max", "must be a number greater than 0");
        }
        if limits.grace == 0 {
            issues.add("limits.grace", "must be at least 1");
        }
    }
    let stop = config.stop.clone().unwrap_or_default();
    if stop.timeout.is_zero() {
        issues.add("stop.timeout", "must be greater than 0s");
    }
    DeploymentSpec::Process(std::sync::Arc::new(ProcessSpec {
        process_type,
        execution: config.execution.clone(),
        config: module_config,
        stop,
        attach: config.attach.clone(),
        integrated,
        limits: config.limits.clone(),
    }))
}

fn check_restart(restart: &RestartConfig, prefix: &str, issues: &mut Issues<'_>) {
    let b = &restart.backoff;
    if !(b.multiplier.is_finite() && b.multiplier >= 1.0) {
        issues.add(
            format!("{prefix}.backoff.multiplier"),
            format!("must be a number of at least 1.0, not {}", b.multiplier),
        );
    }
    if !(0.0..=1.0).contains(&b.jitter) {
        issues.add(
            format!("{prefix}.backoff.jitter"),
            format!("must be a fraction from 0.0 to 1.0, not {}", b.jitter),
        );
    }
    if b.max < b.initial {
        issues.add(
            format!("{prefix}.backoff.max"),
            "must not be smaller than `backoff.initial`",
        );
    }
    if restart.window.is_zero() {
        issues.add(format!("{prefix}.window"), "must be greater than 0s");
    }
}

fn check_probe(health: &HealthCheckConfig, kind: &DeploymentSpec, issues: &mut Issues<'_>) {
    let probe = health.probe.unwrap_or_else(|| kind.default_probe());
    let is_module = matches!(kind, DeploymentSpec::Module { .. });
    let integrated =
        matches!(kind, DeploymentSpec::Process(p) if p.process_type == ProcessType::Integrated);
    match probe {
        ProbeType::Module if !is_module => {
            issues.add("health_check.type", "`module` probes only module workers")
        }
        ProbeType::Process if is_module => issues.add(
            "health_check.type",
            "`process` probes only process workers; a module's probe is `module`",
        ),
        ProbeType::Ping | ProbeType::GrpcHealth if !integrated => issues.add(
            "health_check.type",
            "`ping` and `grpc_health` probe integrated process workers only",
        ),
        ProbeType::Http => match &health.url {
            None => issues.add("health_check.url", "required for `http` probes"),
            Some(url) if !url.starts_with("http://") => issues.add(
                "health_check.url",
                format!("must start with http:// (got {url:?})"),
            ),
            _ => {}
        },
        ProbeType::Tcp => match &health.address {
            None => issues.add(
                "health_check.address",
                "required for `tcp` probes (host:port)",
            ),
            Some(a)
                if a.rsplit_once(':')
                    .is_none_or(|(_, p)| p.parse::<u16>().is_err()) =>
            {
                issues.add(
                    "health_check.address",
                    format!("expected host:port, got {a:?}"),
                )
            }
            _ => {}
        },
        ProbeType::Exec if health.command.is_empty() => issues.add(
            "health_check.command",
            "required for `exec` probes: [program, args…]",
        ),
        _ => {}
    }
    for (field, set, wanted) in [
        ("url", health.url.is_some(), "http"),
        ("address", health.address.is_some(), "tcp"),
        ("command", !health.command.is_empty(), "exec"),
    ] {
        let used = matches!(
            (probe, wanted),
            (ProbeType::Http, "http") | (ProbeType::Tcp, "tcp") | (ProbeType::Exec, "exec")
        );
        if set && !used {
            issues.add(
                format!("health_check.{field}"),
                format!("only used by `{wanted}` probes"),
            );
        }
    }
}
