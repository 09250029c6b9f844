//! `hsu import hsu-master-go`: realistic configs in hsu-master-go's dialect (managed with
//! limits and logging, integrated with gRPC health, unmanaged by pid file) convert to configs
//! that pass `hsu check`, and every input field is either carried over or named on stderr.

use super::*;

fn fixture(name: &str) -> String {
    format!(
        "{}/tests/fixtures/hsu-master-go/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Every leaf of `value` with its path (`a.b[0].c`); a list of plain values is one leaf.
fn leaves(value: &serde_yaml::Value, path: String, out: &mut Vec<String>) {
    use serde_yaml::Value;
    match value {
        Value::Mapping(m) => {
            for (k, v) in m {
                let key = k.as_str().unwrap().to_string();
                let p = if path.is_empty() {
                    key
                } else {
                    format!("{path}.{key}")
                };
                leaves(v, p, out);
            }
        }
        Value::Sequence(s) if s.iter().any(|v| v.is_mapping()) => {
            for (i, v) in s.iter().enumerate() {
                leaves(v, format!("{path}[{i}]"), out);
            }
        }
        _ => out.push(path),
    }
}

/// Converts `name`; returns the output config, the stderr lines, and the exit code.
fn import(name: &str, out: &Path) -> (serde_yaml::Value, Vec<String>, i32) {
    let run = Command::new(HSU)
        .args([
            "import",
            "hsu-master-go",
            &fixture(name),
            "-o",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    let config = serde_yaml::from_str(&std::fs::read_to_string(out).unwrap()).unwrap();
    let check = Command::new(HSU)
        .args(["check", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "hsu check refused the import of {name}: {check:?}"
    );
    (
        config,
        stderr.lines().map(String::from).collect(),
        run.status.code().unwrap(),
    )
}

#[test]
fn hsu_master_go_configs_convert_carry_every_field_or_name_it_and_pass_check() {
    let dir = std::env::temp_dir().join(format!("hsu-test-{}-import", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    // Managed, with limits, restart tuning, log collection: every leaf of the input is either
    // in a note (not carried, or carried with a change) or one of the fields mapped as is.
    let (config, notes, code) = import("managed.yaml", &dir.join("managed.yaml"));
    assert_eq!(code, 3, "some fields are not carried over: {notes:?}");
    let input: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(fixture("managed.yaml")).unwrap()).unwrap();
    let mut all = Vec::new();
    leaves(&input, String::new(), &mut all);
    let noted: Vec<String> = notes
        .iter()
        .filter_map(|l| l.split_once(": ").map(|(_, rest)| rest))
        .filter_map(|rest| rest.split_once(": ").map(|(path, _)| path.to_string()))
        .collect();
    let mapped = [
        "master.log_level",
        "workers[0].id",
        "workers[0].type",
        "workers[0].enabled",
        "workers[0].unit.managed.control.execution.executable_path",
        "workers[0].unit.managed.control.execution.args",
        "workers[0].unit.managed.control.execution.environment",
        "workers[0].unit.managed.control.execution.working_directory",
        "workers[0].unit.managed.control.restart_policy",
        "workers[0].unit.managed.control.context_aware_restart.default.retry_delay",
        "workers[0].unit.managed.control.context_aware_restart.default.backoff_rate",
        "workers[0].unit.managed.control.limits.memory.max_rss",
        "workers[0].unit.managed.control.limits.memory.policy",
        "workers[0].unit.managed.control.limits.cpu.max_percent",
        "workers[0].unit.managed.control.graceful_timeout",
        "workers[0].unit.managed.health_check.type",
        "workers[0].unit.managed.health_check.http.url",
        "workers[0].unit.managed.health_check.run_options.enabled",
        "workers[0].unit.managed.health_check.run_options.interval",
        "workers[0].unit.managed.health_check.run_options.timeout",
        "workers[0].unit.managed.health_check.run_options.initial_delay",
        "workers[1].id",
        "workers[1].type",
        "workers[1].enabled",
        "workers[1].unit.managed.control.execution.executable_path",
        "workers[1].unit.managed.control.execution.args",
        "workers[1].unit.managed.control.restart_policy",
        "workers[1].unit.managed.control.limits.memory.limit_mb",
    ];
    let unaccounted: Vec<&String> = all
        .iter()
        .filter(|leaf| !mapped.contains(&leaf.as_str()))
        .filter(|leaf| !noted.iter().any(|n| leaf.starts_with(n.as_str())))
        .collect();
    assert!(
        unaccounted.is_empty(),
        "silently dropped: {unaccounted:?}\nnotes: {notes:#?}"
    );
    for path in [
        "master.port",
        "log_collection.global_aggregation",
        "workers[0].unit.managed.metadata.description",
        "workers[0].unit.managed.control.execution.wait_delay",
        "workers[0].unit.managed.control.limits.memory.warning_threshold",
    ] {
        assert!(
            noted.iter().any(|n| n == path),
            "{path} not named: {notes:#?}"
        );
    }
    let web = &config["workers"][0];
    assert_eq!(web["execution"]["env"]["PORT"], "8080");
    assert_eq!(web["limits"]["memory_max"], 536870912);
    assert_eq!(web["limits"]["on_violation"], "restart");
    assert_eq!(web["health_check"]["type"], "http");
    assert_eq!(web["stop"]["timeout"], "20s");
    assert_eq!(config["master"]["stop_timeout"], "30s");
    // Disabled, kept.
    let report = &config["workers"][1];
    assert_eq!(
        (report["id"].as_str(), report["enabled"].as_bool()),
        (Some("nightly-report"), Some(false))
    );
    assert_eq!(report["limits"]["memory_max"], "256MiB");

    // Integrated with gRPC health: the probe is hsu's gRPC health on the worker's control
    // port; durations keep Go's syntax.
    let (config, notes, _) = import("integrated.yaml", &dir.join("integrated.yaml"));
    let orders = &config["workers"][0];
    assert_eq!(
        (orders["type"].as_str(), orders["process_type"].as_str()),
        (Some("process"), Some("integrated"))
    );
    assert_eq!(orders["health_check"]["type"], "grpc_health");
    assert_eq!(orders["health_check"]["service"], "orders.v1.Orders");
    assert_eq!(orders["stop"]["timeout"], "1m30s");
    assert!(
        notes
            .iter()
            .any(|n| n.contains("health_check.grpc.address: not carried over")),
        "{notes:#?}"
    );

    // Unmanaged by pid file.
    let (config, _, _) = import("unmanaged.yaml", &dir.join("unmanaged.yaml"));
    let pg = &config["workers"][0];
    assert_eq!(pg["attach"]["pid_file"], "/var/run/postgresql/main.pid");
    assert_eq!(pg["attach"]["allow_signals"], false);
    assert_eq!(pg["health_check"]["address"], "127.0.0.1:5432");
    assert_eq!(config["master"]["log_level"], "warn");

    // A discovery hsu cannot do is named, and the worker is not carried (never half-made).
    let other = dir.join("by-name.yaml");
    std::fs::write(&other, "workers:\n  - id: db\n    type: unmanaged\n    unit:\n      unmanaged:\n        discovery: {method: process-name, process_name: postgres}\n").unwrap();
    let run = Command::new(HSU)
        .args(["import", "hsu-master-go", other.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("workers[0].unit.unmanaged.discovery.method: not carried over")
            && stderr.contains("worker `db` not carried over"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
