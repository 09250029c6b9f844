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
    let e = parse_error("master:\n  stop_timeout: 10w\n");
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

#[test]
fn depends_on_names_unknown_workers_cycles_and_conditions_that_cannot_be_met() {
    let m = |id: &str, deps: &str| {
        format!("  - {{id: {id}, type: module, module_name: echo, depends_on: {deps}}}\n")
    };
    // A cycle is refused naming every member, once.
    let yaml = format!(
        "workers:\n{}{}{}{}",
        m("a", "[b]"),
        m("b", "{c: healthy}"),
        m("c", "[a]"),
        m("d", "[a]")
    );
    let issue = one_issue(&yaml);
    assert_eq!(issue.worker.as_deref(), Some("a"));
    assert_eq!(issue.field, "depends_on");
    assert!(
        issue.message.contains("dependency cycle: a -> b -> c -> a"),
        "{issue}"
    );

    let issue = one_issue(&format!("workers:\n{}", m("api", "[dbb]")));
    assert_eq!(issue.field, "depends_on.dbb");
    assert!(
        issue.message.contains("no worker `dbb` in this config"),
        "{issue}"
    );

    let issue = one_issue(&format!("workers:\n{}", m("api", "[api]")));
    assert!(issue.message.contains("cannot depend on itself"), "{issue}");

    // `healthy` of a worker that is never probed, `completed_successfully` of one that is
    // always restarted, a pattern that is no regex, a zero timeout.
    let yaml = "workers:
  - {id: db, type: process, execution: {executable_path: /bin/sleep}}
  - {id: job, type: process, execution: {executable_path: /bin/true}, restart: {policy: always}}
  - {id: log, type: process, execution: {executable_path: /bin/true}}
  - id: api
    type: module
    module_name: echo
    depends_on:
      db: healthy
      job: completed_successfully
      log: {log_line: 'ready ('}
      web: {condition: started, timeout: 0s}
  - {id: web, type: module, module_name: echo}
";
    let all = issues(yaml);
    let text: Vec<String> = all.iter().map(|i| i.to_string()).collect();
    assert_eq!(all.len(), 4, "{text:#?}");
    assert!(
        text[0].contains("`depends_on.log.log_line`: not a regular expression"),
        "{text:#?}"
    );
    assert!(
        text[1].contains("`depends_on.web.timeout`: must be greater than 0s"),
        "{text:#?}"
    );
    assert!(
        text[2].contains("`depends_on.db`: `db` has no health check"),
        "{text:#?}"
    );
    assert!(
        text[3].contains("`depends_on.job`: `job` has restart.policy `always`"),
        "{text:#?}"
    );

    // A dependency that exists but is itself invalid is not called unknown.
    let yaml = format!(
        "workers:\n  - {{id: db, type: module}}\n{}",
        m("api", "[db]")
    );
    let issue = one_issue(&yaml);
    assert_eq!(issue.worker.as_deref(), Some("db"));

    let e =
        parse_error("workers: [{id: a, type: module, module_name: echo, depends_on: {b: ready}}]");
    assert!(
        e.contains("unknown variant `ready`") && e.contains("bad.yaml:1:"),
        "{e}"
    );
}

#[test]
fn every_problem_has_its_file_line_and_column_once() {
    let yaml = "workers:
  - id: a
    type: module
    module_name: echo
  - id: b
    type: module
    module_name: echo
    health_check:
      interval: 0s
  - id: a
    type: module
    module_name: nope
    depends_on: [zz]
";
    let config = HsuConfig::parse(yaml, Path::new("conf/app.yaml")).unwrap();
    let err = config
        .validate(&|n| n == "echo", Some(Path::new("conf/app.yaml")))
        .unwrap_err();
    let text = err.to_string();
    // The interval at its key; the duplicate id at the second `id:`; the unknown factory at its
    // worker's module_name; the unknown dependency at its key.
    for expected in [
        "conf/app.yaml:9:7: worker `b`: `health_check.interval`: must be greater than 0s",
        "conf/app.yaml:10:5: worker `a`: `id`: duplicate id",
        "conf/app.yaml:12:5: worker `a`: `module_name`: no native module factory named `nope`",
        "conf/app.yaml:13:5: worker `a`: `depends_on.zz`: no worker `zz` in this config",
    ] {
        assert!(text.contains(expected), "{expected:?} in\n{text}");
    }
    // serde's own errors: the position once, not again at the end of the message.
    let e = parse_error("workers:\n  - id: a\n    type: modul\n");
    assert!(e.starts_with("conf/bad.yaml:3:11: "), "{e}");
    assert!(!e.contains("at line"), "{e}");
}

#[test]
fn deeply_nested_yaml_is_refused_at_once_with_its_position() {
    let deep = format!("workers: {}1{}\n", "[".repeat(20_000), "]".repeat(20_000));
    let e = parse_error(&deep);
    assert!(e.contains("nested more than 64 levels deep"), "{e}");
    assert!(e.starts_with("conf/bad.yaml:1:"), "{e}");
}

/// A config file in a directory of its own (with `files` beside it); removed on drop.
struct Files(std::path::PathBuf);

impl Files {
    fn new(name: &str, files: &[(&str, &str)]) -> Self {
        let dir = std::env::temp_dir().join(format!("hsu-config-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (file, text) in files {
            std::fs::write(dir.join(file), text).unwrap();
        }
        Self(dir)
    }
    fn load(&self) -> Result<HsuConfig, ConfigError> {
        HsuConfig::load(&self.0.join("app.yaml"))
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn variables_in_values_are_replaced_from_the_environment_and_unset_ones_are_named() {
    // Names of this test alone, so no other test reads them meanwhile.
    std::env::set_var("HSU_TEST_PORT", "8123");
    std::env::set_var("HSU_TEST_WORDS", "two: words # and more");
    let files = Files::new(
        "interpolate",
        &[(
            "app.yaml",
            "workers:
  # ${NOT_INTERPOLATED_IN_COMMENTS}
  - id: web
    type: module
    module_name: echo
    config: {port: ${HSU_TEST_PORT}, host: \"${HSU_TEST_HOST:-127.0.0.1}\", note: '${HSU_TEST_WORDS}', cost: $$5}
",
        )],
    );
    let config = files.load().expect("interpolated");
    let c = config.workers[0].config.as_ref().unwrap();
    assert_eq!(c["port"].as_u64(), Some(8123));
    assert_eq!(c["host"].as_str(), Some("127.0.0.1"));
    assert_eq!(c["note"].as_str(), Some("two: words # and more"));
    assert_eq!(c["cost"].as_str(), Some("$5"));

    let files = Files::new(
        "unset",
        &[(
            "app.yaml",
            "workers:\n  - {id: web, type: module, module_name: echo, config: {port: ${HSU_TEST_UNSET_PORT}}}\n  - {id: x, type: module, module_name: echo, config: {note: ${HSU_TEST_WORDS}}}\n",
        )],
    );
    let e = files.load().unwrap_err().to_string();
    assert!(
        e.contains(
            "app.yaml: 2:63: `${HSU_TEST_UNSET_PORT}`: the variable HSU_TEST_UNSET_PORT is not set"
        ),
        "{e}"
    );
    assert!(e.contains("3:61: `${HSU_TEST_WORDS}`: its value would change the YAML around it; put the value in quotes"), "{e}");
}

#[test]
fn env_files_fill_a_process_environment_and_env_wins() {
    let files = Files::new(
        "env-file",
        &[
            ("app.env", "# shared\nA=from-file\nB=\"two words\"\n"),
            ("more.env", "C=3\n"),
            (
                "app.yaml",
                "workers:
  - id: p
    type: process
    execution: {executable_path: /bin/sleep, env: {A: from-env}}
    env_file: [app.env, more.env]
",
            ),
        ],
    );
    let config = files.load().expect("loads");
    let env = &config.workers[0].execution.as_ref().unwrap().env;
    assert_eq!(env["A"], "from-env");
    assert_eq!(env["B"], "two words");
    assert_eq!(env["C"], "3");

    let files = Files::new(
        "env-file-bad",
        &[
            ("bad.env", "A=1\nnot a pair\n"),
            (
                "app.yaml",
                "workers:
  - {id: p, type: process, execution: {executable_path: /bin/sleep}, env_file: [bad.env, gone.env]}
  - {id: m, type: module, module_name: echo, env_file: bad.env}
",
            ),
        ],
    );
    let e = files.load().unwrap_err().to_string();
    assert!(
        e.contains("app.yaml:2:70: worker `p`: `env_file`: `"),
        "{e}"
    );
    assert!(e.contains("bad.env` line 2: expected KEY=VALUE"), "{e}");
    assert!(
        e.contains("cannot read `") && e.contains("gone.env`"),
        "{e}"
    );
    let config = HsuConfig::parse(
        "workers:\n  - {id: m, type: module, module_name: echo, env_file: x.env}\n",
        Path::new("m.yaml"),
    )
    .unwrap();
    let e = config.validate(&|_| true, None).unwrap_err().to_string();
    assert!(
        e.contains("2:46: worker `m`: `env_file`: processes only"),
        "{e}"
    );
}

#[test]
fn durations_may_be_spaced_and_sizes_say_which_kilo_they_mean() {
    let config = HsuConfig::parse(
        "master: {stop_timeout: 1h 30m, start_timeout: 1d, logs: {max_size: 1KB}}\n",
        Path::new("x.yaml"),
    )
    .unwrap();
    assert_eq!(config.master.stop_timeout.as_secs(), 5400);
    assert_eq!(config.master.start_timeout.as_secs(), 86400);
    assert_eq!(config.master.logs.max_size.0, 1000, "KB is 1000 bytes");
    let config =
        HsuConfig::parse("master: {logs: {max_size: 1KiB}}\n", Path::new("x.yaml")).unwrap();
    assert_eq!(config.master.logs.max_size.0, 1024, "KiB is 1024 bytes");
}

#[test]
fn groups_name_unknown_members_double_membership_cycles_and_impossible_orders() {
    let yaml = "workers:
  - {id: db, type: module, module_name: echo}
  - {id: api, type: module, module_name: echo, depends_on: [db]}
  - {id: web, type: module, module_name: echo}
groups:
  - {id: backend, members: [api, db, ghost]}
  - {id: front, strategy: rest_for_one, members: [web, db, inner], on_exhausted: shutdown}
  - {id: inner, members: [front], on_exhausted: stay}
  - {id: web, members: [web]}
  - {id: empty, members: []}
";
    let text: Vec<String> = issues(yaml).iter().map(|i| i.to_string()).collect();
    let all = text.join("\n");
    for expected in [
        "`groups[3].id`: `web` is a worker's id too",
        "`groups[0].members[2]`: no worker or group `ghost`",
        "`groups[0].members[0]`: `api` depends on `db`, which starts after it in group `backend`; list `db` first",
        "`groups[1].members[1]`: `db` is a member of group `backend` already",
        "`groups[4].members`: group `empty` has no members",
        "`groups[2].on_exhausted`: group `inner` is a member of `front`",
        "`groups[1].on_exhausted`: group `front` is a member of `inner`",
        "groups inside each other: front -> inner -> front",
    ] {
        assert!(all.contains(expected), "{expected:?} in\n{all}");
    }
    let good = "workers:
  - {id: db, type: module, module_name: echo}
  - {id: api, type: module, module_name: echo, depends_on: [db]}
groups:
  - {id: backend, strategy: one_for_all, max_restarts: 4, window: 30s, members: [db, api]}
  - {id: top, members: [backend], on_exhausted: shutdown}
";
    let config = HsuConfig::parse(good, Path::new("g.yaml")).unwrap();
    let groups = hsu::config::validate_groups(&config).unwrap();
    assert_eq!(groups[0].parent.as_ref().map(|p| p.as_str()), Some("top"));
    assert_eq!(groups[0].strategy, hsu::config::Strategy::OneForAll);
    assert_eq!(groups[1].on_exhausted, hsu::config::OnExhausted::Shutdown);
    assert_eq!(groups[1].max_restarts, 3, "the default intensity");
}

#[test]
fn schedules_are_cron_expressions_for_jobs_outside_groups() {
    let yaml = "workers:
  - {id: a, type: module, module_name: echo, schedule: '61 * * * *'}
  - {id: b, type: module, module_name: echo, schedule: '@hourly', restart: {policy: always}}
  - {id: c, type: module, module_name: echo, schedule_timezone: local}
  - {id: d, type: module, module_name: echo, schedule: '*/10 * * * * *', schedule_timezone: local}
groups:
  - {id: g, members: [d]}
";
    let text: Vec<String> = issues(yaml).iter().map(|i| i.to_string()).collect();
    let all = text.join("\n");
    for expected in [
        "worker `a`: `schedule`: \"61 * * * *\" is not a cron expression",
        "worker `b`: `restart.policy`: `always` would start a scheduled worker again",
        "worker `c`: `schedule_timezone`: only means something with `schedule:`",
        "`groups[0].members[0]`: `d` runs on a schedule",
    ] {
        assert!(all.contains(expected), "{expected:?} in\n{all}");
    }
    let ok = "workers:\n  - {id: d, type: module, module_name: echo, schedule: '0 3 * * *', schedule_timezone: local, restart: {policy: never}}\n";
    let config = HsuConfig::parse(ok, Path::new("s.yaml")).unwrap();
    let specs = validate_config(&config, &|_| true, &PackageIndex::default()).unwrap();
    let schedule = specs[0].schedule.as_ref().unwrap();
    assert_eq!((schedule.text(), schedule.zone()), ("0 3 * * *", "local"));
}
