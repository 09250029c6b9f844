//! Config parsing and validation: every rule gives an error naming the worker and field.

use std::path::Path;

use hsu::config::{validate_config, HsuConfig, ValidationIssue};
use hsu::packages::PackageIndex;
use hsu::ConfigError;

fn issues(yaml: &str) -> Vec<ValidationIssue> {
    let config = HsuConfig::parse(yaml, Path::new("test.yaml")).expect("parses");
    validate_config(&config, &|name| name == "echo", &PackageIndex::default()).expect_err("invalid")
}

fn one_issue(yaml: &str) -> ValidationIssue {
    let mut all = issues(yaml);
    assert_eq!(all.len(), 1, "{all:#?}");
    all.remove(0)
}

fn parse_error(yaml: &str) -> String {
    HsuConfig::parse(yaml, Path::new("conf/bad.yaml"))
        .unwrap_err()
        .to_string()
}

#[test]
fn a_valid_file_gives_specs_with_defaults_filled_in() {
    let yaml = "
master:
  start_timeout: 5s
  restart: {policy: always, max_restarts: 7}
workers:
  - {id: a, type: module, module_name: echo}
  - id: b
    type: module
    module_name: echo
    restart: {policy: never}
    health_check: {interval: 1s}
    stop_timeout: 1500ms
  - id: p
    type: process
    execution: {executable_path: /bin/sleep, args: ['10'], env: {A: b}}
";
    let config = HsuConfig::parse(yaml, Path::new("x.yaml")).unwrap();
    let specs = validate_config(&config, &|n| n == "echo", &PackageIndex::default()).unwrap();
    assert_eq!(specs.len(), 3);
    assert_eq!(specs[0].start_timeout.as_secs(), 5);
    assert_eq!(
        specs[0].restart.max_restarts, 7,
        "the master's restart default applies"
    );
    assert_eq!(specs[1].restart.policy, hsu::config::RestartPolicy::Never);
    assert_eq!(specs[1].stop_timeout.as_millis(), 1500);
    assert_eq!(specs[1].health_check.interval.as_secs(), 1);
    assert_eq!(specs[1].health_check.failure_threshold, 3);
}

#[test]
fn worker_id_rules() {
    let bad = one_issue("workers: [{id: 'has space', type: module, module_name: echo}]");
    assert_eq!(
        (bad.worker.as_deref(), bad.field.as_str()),
        (Some("workers[0]"), "id")
    );
    assert!(bad.message.contains("' '"), "{}", bad.message);
    let empty = one_issue("workers: [{id: '', type: module, module_name: echo}]");
    assert!(empty.message.contains("empty"));
    let long = one_issue(&format!(
        "workers: [{{id: {}, type: module, module_name: echo}}]",
        "x".repeat(65)
    ));
    assert!(long.message.contains("limit is 64"));
}

#[test]
fn duplicate_ids_are_reported_with_their_position() {
    let dup = one_issue("workers: [{id: a, type: module, module_name: echo}, {id: a, type: module, module_name: echo}]");
    assert_eq!(
        (dup.worker.as_deref(), dup.field.as_str()),
        (Some("a"), "id")
    );
    assert!(dup.message.contains("duplicate") && dup.message.contains("workers[1]"));
}

#[test]
fn unknown_factory_names_the_module_name() {
    let unknown = one_issue("workers: [{id: a, type: module, module_name: nope}]");
    assert_eq!(unknown.field, "module_name");
    assert!(unknown.message.contains("`nope`"));
}

#[test]
fn type_specific_fields_are_required_and_exclusive() {
    let no_name = one_issue("workers: [{id: a, type: module}]");
    assert_eq!(no_name.field, "module_name");
    let exec_on_module = one_issue(
        "workers: [{id: a, type: module, module_name: echo, execution: {executable_path: /bin/true}}]",
    );
    assert_eq!(exec_on_module.field, "execution");
    let no_exec = one_issue("workers: [{id: p, type: process}]");
    assert_eq!(no_exec.field, "execution.executable_path");
    let name_on_process = one_issue(
        "workers: [{id: p, type: process, module_name: x, execution: {executable_path: /bin/true}}]",
    );
    assert_eq!(name_on_process.field, "module_name");
}

#[test]
fn ranges_of_restart_health_and_timeouts_are_checked() {
    let all = issues(
        "workers:
  - id: a
    type: module
    module_name: echo
    restart: {window: 0s, backoff: {multiplier: 0.5, jitter: 2.0, initial: 10s, max: 1s}}
    health_check: {interval: 0s, failure_threshold: 0}
    start_timeout: 0s
",
    );
    let fields: Vec<&str> = all.iter().map(|i| i.field.as_str()).collect();
    for f in [
        "restart.window",
        "restart.backoff.multiplier",
        "restart.backoff.jitter",
        "restart.backoff.max",
        "health_check.interval",
        "health_check.failure_threshold",
        "start_timeout",
    ] {
        assert!(fields.contains(&f), "{f} missing from {fields:?}");
    }
    assert!(all.iter().all(|i| i.worker.as_deref() == Some("a")));
}

#[test]
fn every_problem_is_reported_at_once() {
    let all = issues(
        "workers:
  - {id: a, type: module}
  - {id: 'b/c', type: module, module_name: echo}
  - {id: d, type: process}
",
    );
    assert_eq!(all.len(), 3, "{all:#?}");
}

#[test]
fn parse_errors_name_the_file_line_and_field() {
    let unknown = parse_error("workers:\n  - id: a\n    type: module\n    modul_name: echo\n");
    assert!(unknown.starts_with("conf/bad.yaml:"), "{unknown}");
    assert!(unknown.contains("modul_name"), "{unknown}");
    assert!(
        unknown.contains(":4:") || unknown.contains("line 4"),
        "{unknown}"
    );

    let bad_type = parse_error("workers:\n  - id: a\n    type: daemon\n");
    assert!(
        bad_type.contains("daemon") && bad_type.contains(":3:"),
        "{bad_type}"
    );

    let nested = parse_error("workers:\n  - id: a\n    type: module\n    module_name: echo\n    restart:\n      polcy: never\n");
    assert!(
        nested.contains("polcy") && nested.contains(":6:"),
        "{nested}"
    );

    let missing_type = parse_error("workers:\n  - id: a\n");
    assert!(missing_type.contains("type"), "{missing_type}");
}

#[test]
fn bare_numbers_are_refused_as_durations() {
    let e = parse_error("master:\n  stop_timeout: 10\n");
    assert!(e.contains("ambiguous") && e.contains("\"10s\""), "{e}");
    let e = parse_error("master:\n  stop_timeout: 10d\n");
    assert!(e.contains("unknown unit"), "{e}");
}

#[test]
fn unreadable_file_is_named() {
    let e = HsuConfig::load(Path::new("/nonexistent/hsu.yaml")).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }));
    assert!(e.to_string().contains("/nonexistent/hsu.yaml"));
}

#[test]
fn the_embedded_default_config_is_valid() {
    let config = HsuConfig::parse(hsu::DEFAULT_CONFIG, Path::new("default")).unwrap();
    let specs = validate_config(
        &config,
        &|n| hsu::builtin::NAMES.contains(&n),
        &PackageIndex::default(),
    )
    .unwrap();
    assert!(specs.len() >= 2);
}
