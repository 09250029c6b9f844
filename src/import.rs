//! `hsu import hsu-master-go FILE`: hsu-master-go's YAML dialect converted to this project's.
//!
//! Every field of the input is either carried over (possibly under another name, said in a
//! note when the meaning shifts) or reported as not carried over, with its path: the converter
//! takes each key it knows out of the input and reports whatever is left, so nothing is
//! dropped silently. Durations keep their Go syntax (hsu reads `1m30s` the same); workers with
//! `enabled: false` are kept, disabled. The mapping is the table in the README ("Coming from
//! hsu-master-go").

use serde_yaml::{Mapping, Value};

/// The converted config and what the conversion says about the input.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The config in this project's dialect (YAML).
    pub yaml: String,
    /// Fields not carried over, or carried with a change of meaning.
    pub notes: Vec<Note>,
}

/// One remark about one input field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The field's path in the input (`workers[0].unit.managed.control.execution.wait_delay`).
    pub path: String,
    /// Not carried over, or carried with a change.
    pub carried: bool,
    /// What happened and why.
    pub text: String,
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.carried {
            write!(f, "{}: {}", self.path, self.text)
        } else {
            write!(f, "{}: not carried over: {}", self.path, self.text)
        }
    }
}

/// Why the input could not be converted at all.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Not YAML.
    #[error("not YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    /// YAML, but not a mapping at the top.
    #[error("the top level must be a mapping with `master:` and `workers:`")]
    NotAMapping,
}

struct Converter {
    notes: Vec<Note>,
}

impl Converter {
    fn dropped(&mut self, path: &str, text: impl Into<String>) {
        self.notes.push(Note {
            path: path.to_string(),
            carried: false,
            text: text.into(),
        });
    }

    fn changed(&mut self, path: &str, text: impl Into<String>) {
        self.notes.push(Note {
            path: path.to_string(),
            carried: true,
            text: text.into(),
        });
    }

    /// Whatever is left in `map` (under `path`) was not understood: each key reported.
    fn leftovers(&mut self, path: &str, map: Mapping) {
        for (key, value) in map {
            let key = key_text(&key);
            let field = join(path, &key);
            self.dropped(
                &field,
                format!("hsu has no equivalent of `{key}` (was {})", short(&value)),
            );
        }
    }

    /// `key` of `map` as a mapping, taken out; a non-mapping value is reported.
    fn section(&mut self, map: &mut Mapping, key: &str, path: &str) -> Option<Mapping> {
        match map.remove(key)? {
            Value::Mapping(m) => Some(m),
            Value::Null => None,
            other => {
                self.dropped(
                    &join(path, key),
                    format!("expected a mapping, found {}", short(&other)),
                );
                None
            }
        }
    }

    fn string(&mut self, map: &mut Mapping, key: &str, path: &str) -> Option<String> {
        match map.remove(key)? {
            Value::String(s) => Some(s),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Null => None,
            other => {
                self.dropped(
                    &join(path, key),
                    format!("expected a text, found {}", short(&other)),
                );
                None
            }
        }
    }

    fn number(&mut self, map: &mut Mapping, key: &str, path: &str) -> Option<f64> {
        match map.remove(key)? {
            Value::Number(n) => n.as_f64(),
            Value::String(s) if s.trim().parse::<f64>().is_ok() => s.trim().parse().ok(),
            Value::Null => None,
            other => {
                self.dropped(
                    &join(path, key),
                    format!("expected a number, found {}", short(&other)),
                );
                None
            }
        }
    }

    fn boolean(&mut self, map: &mut Mapping, key: &str, path: &str) -> Option<bool> {
        match map.remove(key)? {
            Value::Bool(b) => Some(b),
            Value::Null => None,
            other => {
                self.dropped(
                    &join(path, key),
                    format!("expected true or false, found {}", short(&other)),
                );
                None
            }
        }
    }

    /// A Go duration (`30s`, `1m30s`), kept as written if hsu reads it; a bare number of
    /// seconds (some configs write those) gets its unit.
    fn duration(&mut self, map: &mut Mapping, key: &str, path: &str) -> Option<String> {
        let field = join(path, key);
        let text = match map.remove(key)? {
            Value::String(s) => s,
            Value::Number(n) => {
                let text = format!("{n}s");
                self.changed(&field, format!("a bare number, read as seconds: `{text}`"));
                text
            }
            Value::Null => return None,
            other => {
                self.dropped(
                    &field,
                    format!("expected a duration, found {}", short(&other)),
                );
                return None;
            }
        };
        match hsu_actors::config::duration::parse(&text) {
            Ok(_) => Some(text),
            Err(e) => {
                self.dropped(&field, e.to_string());
                None
            }
        }
    }

    fn master(&mut self, mut input: Mapping, out: &mut Mapping) {
        let path = "master";
        if let Some(port) = self.string(&mut input, "port", path) {
            self.dropped(
                "master.port",
                format!("hsu-master-go served its gRPC API on port {port}; hsu's control API is HTTP on a Unix socket in `master.run_directory` (add `master.api.listen: 127.0.0.1:{port}` for TCP with a token)"),
            );
        }
        if let Some(level) = self.string(&mut input, "log_level", path) {
            let lower = level.to_ascii_lowercase();
            let level = match lower.as_str() {
                "warning" => "warn".to_string(),
                "fatal" | "panic" => {
                    self.changed("master.log_level", format!("`{level}` is `error` here"));
                    "error".to_string()
                }
                _ => lower,
            };
            if ["error", "warn", "info", "debug", "trace"].contains(&level.as_str()) {
                out.insert("log_level".into(), level.into());
            } else {
                self.dropped(
                    "master.log_level",
                    format!("`{level}` is not a level (error, warn, info, debug, trace)"),
                );
            }
        }
        if let Some(d) = self.duration(&mut input, "force_shutdown_timeout", path) {
            self.changed(
                "master.force_shutdown_timeout",
                "carried as `master.stop_timeout`: each worker's stop is bounded by it (a worker's own `stop.timeout` comes first)",
            );
            out.insert("stop_timeout".into(), d.into());
        }
        self.leftovers(path, input);
    }

    fn log_collection(&mut self, input: Mapping) {
        // hsu always captures every worker's stdout and stderr into `master.logs.directory`
        // (`<id>.log`, rotated): nothing to switch on or aggregate.
        for (key, value) in input {
            let key = key_text(&key);
            self.dropped(
                &join("log_collection", &key),
                format!("hsu writes each worker's stdout and stderr to `<master.logs.directory>/<id>.log` (rotated; `master.logs`), with no other collection (was {})", short(&value)),
            );
        }
    }

    fn worker(&mut self, index: usize, input: Value) -> Option<Mapping> {
        let path = format!("workers[{index}]");
        let Value::Mapping(mut input) = input else {
            self.dropped(
                &path,
                format!("expected a mapping, found {}", short(&input)),
            );
            return None;
        };
        let mut out = Mapping::new();
        let Some(id) = self.string(&mut input, "id", &path) else {
            self.dropped(&path, "a worker without `id` cannot be carried over");
            return None;
        };
        out.insert("id".into(), id.clone().into());
        let kind = self
            .string(&mut input, "type", &path)
            .unwrap_or_else(|| "managed".into());
        if !["managed", "integrated", "unmanaged"].contains(&kind.as_str()) {
            self.dropped(&join(&path, "type"), format!("`{kind}` is not managed, integrated or unmanaged; worker `{id}` not carried over"));
            return None;
        }
        out.insert("type".into(), "process".into());
        out.insert("process_type".into(), kind.clone().into());
        if let Some(profile) = self.string(&mut input, "profile_type", &path) {
            self.dropped(&join(&path, "profile_type"), format!("hsu has no worker profiles (`{profile}`): restart, health and limits are set on the worker"));
        }
        let enabled = self.boolean(&mut input, "enabled", &path);
        let unit_path = join(&path, "unit");
        let unit = self.section(&mut input, "unit", &path);
        self.leftovers(&path, input);
        let mut unit = unit?;
        let body_path = join(&unit_path, &kind);
        let body = self.section(&mut unit, &kind, &unit_path);
        self.leftovers(&unit_path, unit);
        let Some(mut body) = body else {
            self.dropped(
                &body_path,
                format!("worker `{id}` has no `unit.{kind}:` section; not carried over"),
            );
            return None;
        };
        if let Some(mut metadata) = self.section(&mut body, "metadata", &body_path) {
            let meta = join(&body_path, "metadata");
            for key in ["name", "description"] {
                if let Some(text) = self.string(&mut metadata, key, &meta) {
                    self.dropped(&join(&meta, key), format!("hsu has no `{key}` field (was {text:?}); the worker is known by its id `{id}`"));
                }
            }
            self.leftovers(&meta, metadata);
        }
        let control_path = join(&body_path, "control");
        let mut control = self
            .section(&mut body, "control", &body_path)
            .unwrap_or_default();
        if kind == "unmanaged" {
            self.unmanaged(
                &id,
                &mut body,
                &body_path,
                &mut control,
                &control_path,
                &mut out,
            )?;
        } else {
            self.managed(&mut control, &control_path, &mut out);
        }
        self.leftovers(&control_path, control);
        if let Some(health) = self.section(&mut body, "health_check", &body_path) {
            let health = self.health(health, &join(&body_path, "health_check"), &kind);
            // Over what `discovery.check_interval` set, if anything.
            let mut merged = match out.remove("health_check") {
                Some(Value::Mapping(m)) => m,
                _ => Mapping::new(),
            };
            merged.extend(health);
            if !merged.is_empty() {
                out.insert("health_check".into(), Value::Mapping(merged));
            }
        }
        self.leftovers(&body_path, body);
        if enabled == Some(false) {
            out.insert("enabled".into(), false.into());
        }
        Some(out)
    }

    fn managed(&mut self, control: &mut Mapping, path: &str, out: &mut Mapping) {
        if let Some(mut exec) = self.section(control, "execution", path) {
            let exec_path = join(path, "execution");
            let mut execution = Mapping::new();
            if let Some(program) = self.string(&mut exec, "executable_path", &exec_path) {
                execution.insert("executable_path".into(), program.into());
            }
            match exec.remove("args") {
                Some(Value::Sequence(args)) => {
                    let args: Vec<Value> = args
                        .into_iter()
                        .filter_map(|a| match a {
                            Value::String(s) => Some(s.into()),
                            Value::Number(n) => Some(n.to_string().into()),
                            Value::Bool(b) => Some(b.to_string().into()),
                            _ => None,
                        })
                        .collect();
                    if !args.is_empty() {
                        execution.insert("args".into(), Value::Sequence(args));
                    }
                }
                Some(Value::Null) | None => {}
                Some(other) => self.dropped(
                    &join(&exec_path, "args"),
                    format!("expected a list, found {}", short(&other)),
                ),
            }
            match exec.remove("environment") {
                Some(Value::Sequence(vars)) => {
                    let mut env = Mapping::new();
                    for (i, var) in vars.into_iter().enumerate() {
                        let field = format!("{}[{i}]", join(&exec_path, "environment"));
                        match var {
                            Value::String(s) => match s.split_once('=') {
                                Some((k, v)) if !k.is_empty() => {
                                    env.insert(k.into(), v.into());
                                }
                                _ => self.dropped(&field, format!("{s:?} is not KEY=VALUE")),
                            },
                            other => self.dropped(
                                &field,
                                format!("expected \"KEY=VALUE\", found {}", short(&other)),
                            ),
                        }
                    }
                    if !env.is_empty() {
                        execution.insert("env".into(), Value::Mapping(env));
                    }
                }
                Some(Value::Mapping(map)) => {
                    execution.insert("env".into(), Value::Mapping(map));
                }
                Some(Value::Null) | None => {}
                Some(other) => self.dropped(
                    &join(&exec_path, "environment"),
                    format!("expected a list of KEY=VALUE, found {}", short(&other)),
                ),
            }
            if let Some(dir) = self.string(&mut exec, "working_directory", &exec_path) {
                execution.insert("working_directory".into(), dir.into());
            }
            if let Some(d) = self.duration(&mut exec, "wait_delay", &exec_path) {
                self.dropped(&join(&exec_path, "wait_delay"), format!("Go's exec.Cmd.WaitDelay ({d}) waits for a child's output after it exits; hsu reads output to the end by itself"));
            }
            self.leftovers(&exec_path, exec);
            out.insert("execution".into(), Value::Mapping(execution));
        }
        let mut restart = Mapping::new();
        if let Some(policy) = self.string(control, "restart_policy", path) {
            let field = join(path, "restart_policy");
            match policy.replace('-', "_").to_ascii_lowercase().as_str() {
                "always" => {
                    restart.insert("policy".into(), "always".into());
                }
                "on_failure" | "onfailure" => {
                    restart.insert("policy".into(), "on_failure".into());
                }
                "never" | "no" => {
                    restart.insert("policy".into(), "never".into());
                }
                _ => self.dropped(
                    &field,
                    format!("`{policy}` is not always, on-failure or never"),
                ),
            }
        }
        if let Some(mut aware) = self.section(control, "context_aware_restart", path) {
            let aware_path = join(path, "context_aware_restart");
            if let Some(mut default) = self.section(&mut aware, "default", &aware_path) {
                let default_path = join(&aware_path, "default");
                let mut backoff = Mapping::new();
                if let Some(n) = self.number(&mut default, "max_retries", &default_path) {
                    restart.insert("max_restarts".into(), (n.max(0.0) as u64).into());
                    self.changed(&join(&default_path, "max_retries"), "carried as `restart.max_restarts`: counted within `restart.window` (default 60s), not over the worker's lifetime");
                }
                if let Some(d) = self.duration(&mut default, "retry_delay", &default_path) {
                    backoff.insert("initial".into(), d.into());
                }
                if let Some(rate) = self.number(&mut default, "backoff_rate", &default_path) {
                    backoff.insert("multiplier".into(), rate.into());
                }
                if !backoff.is_empty() {
                    restart.insert("backoff".into(), Value::Mapping(backoff));
                }
                self.leftovers(&default_path, default);
            }
            if let Some(d) = self.duration(&mut aware, "startup_grace_period", &aware_path) {
                self.dropped(&join(&aware_path, "startup_grace_period"), format!("hsu has no grace period after start ({d}); `health_check.initial_delay` delays the first health check"));
            }
            self.leftovers(&aware_path, aware);
        }
        if !restart.is_empty() {
            out.insert("restart".into(), Value::Mapping(restart));
        }
        if let Some(limits) = self.section(control, "limits", path) {
            let limits = self.limits(limits, &join(path, "limits"));
            if !limits.is_empty() {
                out.insert("limits".into(), Value::Mapping(limits));
            }
        }
        if let Some(d) = self.duration(control, "graceful_timeout", path) {
            out.insert(
                "stop".into(),
                Value::Mapping(Mapping::from_iter([("timeout".into(), d.into())])),
            );
        }
    }

    fn limits(&mut self, mut input: Mapping, path: &str) -> Mapping {
        let mut out = Mapping::new();
        let mut policies = Vec::new();
        if let Some(mut memory) = self.section(&mut input, "memory", path) {
            let mem = join(path, "memory");
            let rss = self.number(&mut memory, "max_rss", &mem);
            let mb = self.number(&mut memory, "limit_mb", &mem);
            match (rss, mb) {
                (Some(bytes), other) => {
                    out.insert("memory_max".into(), (bytes.max(0.0) as u64).into());
                    if let Some(mb) = other {
                        self.dropped(
                            &join(&mem, "limit_mb"),
                            format!("`max_rss` is the limit already ({mb} MB not used)"),
                        );
                    }
                }
                (None, Some(mb)) => {
                    out.insert(
                        "memory_max".into(),
                        format!("{}MiB", mb.max(0.0) as u64).into(),
                    );
                }
                (None, None) => {}
            }
            if let Some(w) = self.number(&mut memory, "warning_threshold", &mem) {
                self.dropped(
                    &join(&mem, "warning_threshold"),
                    format!(
                        "hsu has no warning threshold ({w}); `hsu ls` and /metrics show the RSS"
                    ),
                );
            }
            if let Some(p) = self.string(&mut memory, "policy", &mem) {
                policies.push((join(&mem, "policy"), p));
            }
            self.leftovers(&mem, memory);
        }
        if let Some(mut cpu) = self.section(&mut input, "cpu", path) {
            let cpu_path = join(path, "cpu");
            if let Some(p) = self.number(&mut cpu, "max_percent", &cpu_path) {
                out.insert("cpu_percent_max".into(), p.into());
            }
            if let Some(p) = self.string(&mut cpu, "policy", &cpu_path) {
                policies.push((join(&cpu_path, "policy"), p));
            }
            self.leftovers(&cpu_path, cpu);
        }
        if let Some(p) = self.string(&mut input, "policy", path) {
            policies.push((join(path, "policy"), p));
        }
        // One action here for every limit: the strictest one asked for.
        let rank = |p: &str| match p {
            "log" | "warn" | "none" => Some(0),
            "restart" | "graceful_restart" => Some(1),
            "graceful_shutdown" | "immediate_kill" | "stop" | "kill" => Some(2),
            _ => None,
        };
        let mut chosen: Option<(u8, &str)> = None;
        for (field, p) in &policies {
            let lower = p.to_ascii_lowercase().replace('-', "_");
            match rank(&lower) {
                Some(r) => {
                    let action = ["log", "restart", "stop"][r as usize];
                    if lower != action {
                        self.changed(field, format!("`{p}` is `on_violation: {action}` here"));
                    }
                    if chosen.is_none_or(|(best, _)| r > best) {
                        chosen = Some((r, action));
                    }
                }
                None => self.dropped(
                    field,
                    format!("`{p}` is not log, restart, graceful_shutdown or immediate_kill"),
                ),
            }
        }
        if policies.len() > 1 {
            if let Some((_, action)) = chosen {
                self.changed(
                    path,
                    format!(
                        "one action for every limit here: the strictest, `on_violation: {action}`"
                    ),
                );
            }
        }
        if let Some((_, action)) = chosen {
            out.insert("on_violation".into(), action.into());
        }
        self.leftovers(path, input);
        out
    }

    fn unmanaged(
        &mut self,
        id: &str,
        body: &mut Mapping,
        body_path: &str,
        control: &mut Mapping,
        control_path: &str,
        out: &mut Mapping,
    ) -> Option<()> {
        let discovery_path = join(body_path, "discovery");
        let Some(mut discovery) = self.section(body, "discovery", body_path) else {
            self.dropped(
                &discovery_path,
                format!("unmanaged worker `{id}` has no `discovery:`; not carried over"),
            );
            return None;
        };
        let method = self
            .string(&mut discovery, "method", &discovery_path)
            .unwrap_or_default();
        let mut attach = Mapping::new();
        match method.replace('_', "-").as_str() {
            "pid-file" => {
                match self.string(&mut discovery, "pid_file", &discovery_path) {
                    Some(file) => {
                        attach.insert("pid_file".into(), file.into());
                    }
                    None => {
                        self.dropped(&discovery_path, format!("`method: pid-file` without `pid_file`; worker `{id}` not carried over"));
                        return None;
                    }
                }
            }
            other => {
                self.dropped(&join(&discovery_path, "method"), format!("hsu attaches to a process by `pid` or `pid_file` only, not by `{other}`; worker `{id}` not carried over (write its pid to a file and use `attach.pid_file`)"));
                self.leftovers(&discovery_path, discovery);
                return None;
            }
        }
        if let Some(d) = self.duration(&mut discovery, "check_interval", &discovery_path) {
            self.changed(&join(&discovery_path, "check_interval"), "carried as `health_check.interval` (the process probe checks it is still the same process)");
            out.insert(
                "health_check".into(),
                Value::Mapping(Mapping::from_iter([("interval".into(), d.into())])),
            );
        }
        self.leftovers(&discovery_path, discovery);
        if let Some(can) = self.boolean(control, "can_terminate", control_path) {
            attach.insert("allow_signals".into(), can.into());
        }
        if let Some(can) = self.boolean(control, "can_restart", control_path) {
            if can {
                self.dropped(&join(control_path, "can_restart"), "hsu cannot start an unmanaged process again (it did not start it); a stop only detaches or signals it");
            }
        }
        if let Some(d) = self.duration(control, "graceful_timeout", control_path) {
            out.insert(
                "stop".into(),
                Value::Mapping(Mapping::from_iter([("timeout".into(), d.into())])),
            );
        }
        out.insert("attach".into(), Value::Mapping(attach));
        Some(())
    }

    fn health(&mut self, mut input: Mapping, path: &str, kind: &str) -> Mapping {
        let mut out = Mapping::new();
        let probe = self.string(&mut input, "type", path).unwrap_or_default();
        let probe_field = join(path, "type");
        match probe.as_str() {
            "http" => {
                out.insert("type".into(), "http".into());
                if let Some(mut http) = self.section(&mut input, "http", path) {
                    let http_path = join(path, "http");
                    if let Some(url) = self.string(&mut http, "url", &http_path) {
                        out.insert("url".into(), url.into());
                    }
                    self.leftovers(&http_path, http);
                }
            }
            "grpc" => {
                let mut grpc = self.section(&mut input, "grpc", path).unwrap_or_default();
                let grpc_path = join(path, "grpc");
                let address = self.string(&mut grpc, "address", &grpc_path);
                let service = self.string(&mut grpc, "service", &grpc_path);
                if kind == "integrated" {
                    out.insert("type".into(), "grpc_health".into());
                    if let Some(service) = service {
                        out.insert("service".into(), service.into());
                    }
                    if let Some(address) = address {
                        self.dropped(&join(&grpc_path, "address"), format!("hsu asks an integrated worker's gRPC health on the control port it gives the worker, not at {address}"));
                    }
                } else if let Some(address) = address {
                    self.changed(&probe_field, format!("a gRPC health check of a {kind} worker is a TCP connect to {address} here (hsu's gRPC health probe is for integrated workers)"));
                    out.insert("type".into(), "tcp".into());
                    out.insert("address".into(), address.into());
                    if let Some(service) = service {
                        self.dropped(
                            &join(&grpc_path, "service"),
                            format!("no service name in a TCP check (was {service:?})"),
                        );
                    }
                } else {
                    self.dropped(&grpc_path, "a gRPC check without `address`");
                }
                self.leftovers(&grpc_path, grpc);
            }
            "tcp" => {
                let mut tcp = self.section(&mut input, "tcp", path).unwrap_or_default();
                let tcp_path = join(path, "tcp");
                let address = self.string(&mut tcp, "address", &tcp_path);
                let port = self.string(&mut tcp, "port", &tcp_path);
                let full = match (address, port) {
                    (Some(a), Some(p)) if !a.contains(':') || a.ends_with(']') => {
                        Some(format!("{a}:{p}"))
                    }
                    (Some(a), _) => Some(a),
                    (None, Some(p)) => Some(format!("127.0.0.1:{p}")),
                    (None, None) => None,
                };
                match full {
                    Some(a) => {
                        out.insert("type".into(), "tcp".into());
                        out.insert("address".into(), a.into());
                    }
                    None => self.dropped(&tcp_path, "a TCP check without `address` or `port`"),
                }
                self.leftovers(&tcp_path, tcp);
            }
            "exec" => {
                let mut exec = self.section(&mut input, "exec", path).unwrap_or_default();
                let exec_path = join(path, "exec");
                let mut command: Vec<Value> = Vec::new();
                if let Some(program) = self.string(&mut exec, "command", &exec_path) {
                    command.push(program.into());
                }
                if let Some(Value::Sequence(args)) = exec.remove("args") {
                    command.extend(args.into_iter().filter_map(|a| match a {
                        Value::String(s) => Some(Value::String(s)),
                        Value::Number(n) => Some(n.to_string().into()),
                        _ => None,
                    }));
                }
                if command.is_empty() {
                    self.dropped(&exec_path, "an exec check without `command`");
                } else {
                    out.insert("type".into(), "exec".into());
                    out.insert("command".into(), Value::Sequence(command));
                }
                self.leftovers(&exec_path, exec);
            }
            "process" => {
                out.insert("type".into(), "process".into());
            }
            "" => {}
            other => self.dropped(
                &probe_field,
                format!("`{other}` is not http, grpc, tcp, exec or process"),
            ),
        }
        if let Some(mut run) = self.section(&mut input, "run_options", path) {
            let run_path = join(path, "run_options");
            if let Some(enabled) = self.boolean(&mut run, "enabled", &run_path) {
                out.insert("enabled".into(), enabled.into());
            }
            for (from, to) in [
                ("interval", "interval"),
                ("timeout", "timeout"),
                ("initial_delay", "initial_delay"),
            ] {
                if let Some(d) = self.duration(&mut run, from, &run_path) {
                    out.insert(to.into(), d.into());
                }
            }
            if let Some(n) = self.number(&mut run, "retries", &run_path) {
                self.changed(
                    &join(&run_path, "retries"),
                    "carried as `failure_threshold`: failed checks in a row that fail the worker",
                );
                out.insert("failure_threshold".into(), (n.max(1.0) as u64).into());
            }
            self.leftovers(&run_path, run);
        }
        // The probe's own sections under another type are not used.
        for other in ["http", "grpc", "tcp", "exec"] {
            if let Some(section) = input.remove(other) {
                self.dropped(
                    &join(path, other),
                    format!("`type: {probe}` does not use it (was {})", short(&section)),
                );
            }
        }
        self.leftovers(path, input);
        out
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        other => short(other),
    }
}

/// A value in a few words, for notes.
fn short(value: &Value) -> String {
    let text = serde_yaml::to_string(value).unwrap_or_default();
    let text = text.trim().replace('\n', " ");
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}

/// Converts a config in hsu-master-go's dialect.
///
/// # Errors
/// When the text is not YAML or not a mapping; everything else becomes a note.
pub fn hsu_master_go(text: &str) -> Result<Imported, ImportError> {
    let Value::Mapping(mut input) = serde_yaml::from_str::<Value>(text)? else {
        return Err(ImportError::NotAMapping);
    };
    let mut c = Converter { notes: Vec::new() };
    let mut out = Mapping::new();
    if let Some(master) = c.section(&mut input, "master", "") {
        let mut m = Mapping::new();
        c.master(master, &mut m);
        if !m.is_empty() {
            out.insert("master".into(), Value::Mapping(m));
        }
    }
    if let Some(logs) = c.section(&mut input, "log_collection", "") {
        c.log_collection(logs);
    }
    let mut workers = Vec::new();
    match input.remove("workers") {
        Some(Value::Sequence(list)) => {
            for (i, w) in list.into_iter().enumerate() {
                if let Some(w) = c.worker(i, w) {
                    workers.push(Value::Mapping(w));
                }
            }
        }
        Some(Value::Null) | None => {}
        Some(other) => c.dropped(
            "workers",
            format!("expected a list, found {}", short(&other)),
        ),
    }
    out.insert("workers".into(), Value::Sequence(workers));
    c.leftovers("", input);
    Ok(Imported {
        yaml: serde_yaml::to_string(&Value::Mapping(out))?,
        notes: c.notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_carried_or_reported() {
        let input = r#"
master: {port: 50055, log_level: debug, force_shutdown_timeout: 45s, colour: blue}
workers:
  - id: w
    type: managed
    enabled: false
    mystery: 1
    unit:
      managed:
        metadata: {name: W, description: a worker}
        control:
          execution: {executable_path: /bin/sleep, args: ["60"], environment: ["A=1", "B=x=y", "broken"], wait_delay: 1s}
          restart_policy: on-failure
          graceful_timeout: 1m30s
        health_check: {type: tcp, tcp: {address: 127.0.0.1, port: 80}, run_options: {interval: 5s, retries: 4}}
"#;
        let out = hsu_master_go(input).unwrap();
        let yaml: Value = serde_yaml::from_str(&out.yaml).unwrap();
        let w = &yaml["workers"][0];
        assert_eq!(w["execution"]["env"]["B"], Value::from("x=y"));
        assert_eq!(w["stop"]["timeout"], Value::from("1m30s"));
        assert_eq!(w["health_check"]["address"], Value::from("127.0.0.1:80"));
        assert_eq!(w["health_check"]["failure_threshold"], Value::from(4));
        assert_eq!(w["restart"]["policy"], Value::from("on_failure"));
        assert_eq!(w["enabled"], Value::from(false));
        assert_eq!(yaml["master"]["stop_timeout"], Value::from("45s"));
        let dropped: Vec<&str> = out
            .notes
            .iter()
            .filter(|n| !n.carried)
            .map(|n| n.path.as_str())
            .collect();
        for path in [
            "master.port",
            "master.colour",
            "workers[0].mystery",
            "workers[0].unit.managed.metadata.name",
            "workers[0].unit.managed.metadata.description",
            "workers[0].unit.managed.control.execution.environment[2]",
            "workers[0].unit.managed.control.execution.wait_delay",
        ] {
            assert!(
                dropped.contains(&path),
                "{path} not reported: {:?}",
                out.notes
            );
        }
    }
}
