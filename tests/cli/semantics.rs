//! A config means what it says, tried as a new user would: `hsu check` refuses what `hsu run`
//! could not run, relative paths mean the file's directory, a worker that cannot be added is
//! shown failed (and a config with nothing runnable fails), `depends_on` is visible in `hsu ls`.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use super::control::{client, row, socket_of, stderr, until_row};
use super::{Dir, Running, HSU};

const WORKER: &str = env!("CARGO_BIN_EXE_hsu-test-worker");

#[test]
fn check_refuses_what_this_machine_cannot_run_naming_each_worker_and_field() {
    let dir = Dir::new("check-host");
    dir.write("not-executable.sh", "#!/bin/sh\n");
    let config = dir.write(
        "app.yaml",
        "workers:
  - {id: web, type: module, module_name: echo, config: {port: 99999}}
  - {id: tick, type: module, module_name: ticker, config: {interval: 0s}}
  - {id: plug, type: module, module_type: plugin, module_name: plugins/libnothere.so}
  - {id: notplugin, type: module, module_type: plugin, module_name: /bin/sh}
  - {id: prog, type: process, execution: {executable_path: ./bin/missing}}
  - {id: mode, type: process, execution: {executable_path: ./not-executable.sh}}
  - {id: who, type: process, execution: {executable_path: /bin/sleep, user: no-such-user-hsu, working_directory: nowhere}}
  - {id: bare, type: process, execution: {executable_path: no-such-command-hsu}}
  - {id: fine, type: process, execution: {executable_path: sleep, args: ['1']}}
",
    );
    let output = Command::new(HSU).args(["check", &config]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    let base = dir.0.display().to_string();
    for expected in [
        "worker `web`: `config`: module `echo` refuses it: invalid config: invalid value: integer `99999`, expected u16".to_string(),
        "worker `tick`: `config`: module `ticker` refuses it: invalid config: `interval`: must be greater than 0s".into(),
        format!("worker `plug`: `module_name`: plugin `{base}/plugins/libnothere.so`: no such file"),
        "worker `notplugin`: `module_name`: plugin `/bin/sh` has no `HSU_PLUGIN_HEADER` symbol".into(),
        format!("worker `prog`: `execution.executable_path`: `{base}/bin/missing`: no such file"),
        format!("worker `mode`: `execution.executable_path`: `{base}/not-executable.sh`: not executable (mode 644)"),
        "worker `who`: `execution.user`: no user `no-such-user-hsu` on this machine".into(),
        format!("worker `who`: `execution.working_directory`: `{base}/nowhere`: no such file or directory"),
        "worker `bare`: `execution.executable_path`: no executable `no-such-command-hsu` in PATH".into(),
    ] {
        assert!(text.contains(&expected), "{expected:?} in:\n{text}");
    }
    assert!(!text.contains("worker `fine`"), "{text}");
    assert!(text.contains(": 9 problem(s):"), "{text}");
    // The file alone is fine.
    let output = Command::new(HSU)
        .args(["check", "--config-only", &config])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn relative_paths_mean_the_config_files_directory_not_the_current_one() {
    let dir = Dir::new("relative");
    std::fs::create_dir_all(dir.0.join("data")).unwrap();
    // A program beside the config that records where it runs.
    let script = dir.write("where.sh", "#!/bin/sh\npwd > where-i-ran\nexec sleep 60\n");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.write(
        "app.yaml",
        "master: {logs: {directory: my-logs}}\nworkers:\n  - {id: rel, type: process, execution: {executable_path: ./where.sh, working_directory: data}}\n",
    );
    // Started from a directory of its own (Running's), not the config's.
    let mut hsu = Running::start(&["run", &config]);
    hsu.wait_for("hsu running");
    let recorded = dir.0.join("data/where-i-ran");
    let start = std::time::Instant::now();
    // The shell creates the file before `pwd` writes the line: wait for the whole line.
    while !std::fs::read_to_string(&recorded).is_ok_and(|t| t.ends_with('\n')) {
        assert!(start.elapsed() < super::DEADLINE, "the script never ran");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let ran_in = std::fs::read_to_string(&recorded).unwrap();
    assert_eq!(ran_in.trim(), dir.0.join("data").display().to_string());
    assert!(dir.0.join("my-logs").is_dir(), "logs beside the config");
    assert!(!hsu.cwd.join("my-logs").exists());
    // A default stays relative to the current directory.
    assert!(hsu.cwd.join("hsu-run").exists());
    hsu.signal("TERM");
    let (status, text) = hsu.finish();
    assert!(status.success(), "{text}");
}

#[test]
fn a_worker_that_cannot_be_added_is_listed_failed_and_a_config_with_nothing_runnable_fails() {
    let dir = Dir::new("kept-failed");
    let config = dir.write(
        "app.yaml",
        "workers:
  - {id: web, type: module, module_name: echo, config: {port: 0}}
  - {id: broken, type: module, module_type: plugin, module_name: libgone.so, restart: {policy: never}}
",
    );
    let mut hsu = Running::start(&["run", &config]);
    hsu.wait_for("hsu running");
    let socket = socket_of(&hsu);
    until_row(&socket, "broken", "failed_start", |r| {
        r["state"] == "failed_start"
    });
    let broken = row(&socket, "broken");
    let error = broken["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        error.contains(&format!("{}/libgone.so`: no such file", dir.0.display())),
        "{broken}"
    );
    assert_eq!(row(&socket, "web")["state"], "running");
    // `hsu start broken` says why, and the master goes on.
    let output = client(&socket, &["start", "broken"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("no such file"),
        "{}",
        stderr(&output)
    );
    hsu.signal("TERM");
    let (status, text) = hsu.finish();
    assert!(status.success(), "{text}");

    let only_bad = dir.write(
        "bad.yaml",
        "workers:\n  - {id: broken, type: module, module_type: plugin, module_name: libgone.so}\n",
    );
    let output = Command::new(HSU)
        .args(["run", &only_bad])
        .current_dir(&dir.0)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert!(text.contains("no worker of"), "{text}");
    assert!(
        text.contains("worker `broken`") && text.contains("no such file"),
        "{text}"
    );
    assert!(
        !dir.0.join("hsu-run/hsu.sock").exists(),
        "the socket is removed"
    );
}

#[test]
fn hsu_ls_shows_a_worker_waiting_for_its_dependency_and_why() {
    let dir = Dir::new("waiting");
    let health = dir.0.join("db-is-healthy");
    let config = dir.write(
        "app.yaml",
        &format!(
            "workers:
  - id: db
    type: process
    execution: {{executable_path: {WORKER}}}
    health_check: {{type: exec, command: [/bin/test, -f, {health}], interval: 50ms, failure_threshold: 10000}}
  - id: api
    type: module
    module_name: echo
    config: {{port: 0}}
    depends_on: {{db: healthy}}
",
            health = health.display()
        ),
    );
    let hsu = Running::start(&["run", &config]);
    let socket = socket_of(&hsu);
    let start = std::time::Instant::now();
    while !socket.exists() {
        assert!(start.elapsed() < super::DEADLINE, "no socket");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    until_row(&socket, "api", "waiting", |r| r["state"] == "waiting");
    let api = row(&socket, "api");
    assert!(
        api["why"]
            .as_str()
            .unwrap()
            .starts_with("waiting for db (healthy)"),
        "{api}"
    );
    let table = client(&socket, &["ls"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("waiting for db (healthy)"), "{text}");
    // And in the worker's diagnostics.
    let status = client(&socket, &["status", "api", "--json"]);
    let d: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    assert_eq!(d["state"], "waiting", "{d}");
    assert!(
        d["why"]
            .as_str()
            .unwrap()
            .starts_with("waiting for db (healthy)"),
        "{d}"
    );
    std::fs::write(&health, "").unwrap();
    until_row(&socket, "api", "running", |r| r["state"] == "running");
    hsu.signal("TERM");
    let (status, text) = hsu.finish();
    assert!(status.success(), "{text}");
}

/// A YAML file as the JSON an editor's schema check sees.
fn yaml_as_json(text: &str) -> serde_json::Value {
    let value: serde_yaml::Value = serde_yaml::from_str(text).expect("YAML");
    serde_json::to_value(value).expect("JSON")
}

#[test]
fn the_schema_accepts_every_example_and_catches_mistakes_an_editor_should_underline() {
    let output = Command::new(HSU).arg("schema").output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let schema: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/configs");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let config = yaml_as_json(&std::fs::read_to_string(&path).unwrap());
            let errors: Vec<String> = validator
                .iter_errors(&config)
                .map(|e| e.to_string())
                .collect();
            assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 5);
    for (bad, what) in [
        (
            "workers: [{id: a, type: module, module_name: echo, restrat: {}}]",
            "restrat",
        ),
        ("workers: [{id: a, type: modul}]", "modul"),
        ("master: {stop_timeout: 10}", "10"),
        (
            "workers: [{id: a, type: process, stop: {signal: TERN}}]",
            "TERN",
        ),
        (
            "workers: [{id: a, type: module, depends_on: {db: ready}}]",
            "ready",
        ),
        ("master: {logs: {max_size: 10 MiBs}}", "MiBs"),
    ] {
        let config = yaml_as_json(bad);
        let errors: Vec<String> = validator
            .iter_errors(&config)
            .map(|e| e.to_string())
            .collect();
        assert!(!errors.is_empty(), "{bad} passed the schema");
        assert!(
            errors.iter().any(|e| e.contains(what)),
            "{bad}: {errors:#?}"
        );
    }
    // What the schema accepts, hsu reads: durations with spaces, sizes, conditions.
    let good = "master: {stop_timeout: 1h 30m, logs: {max_size: 1KB}}\nworkers:\n  - {id: db, type: process, execution: {executable_path: /bin/sleep}, stop: {signal: sigint}}\n  - {id: api, type: module, module_name: echo, depends_on: {db: {condition: started, timeout: 30s}}}\n";
    assert!(validator.is_valid(&yaml_as_json(good)));
    assert!(hsu::HsuConfig::parse(good, std::path::Path::new("good.yaml")).is_ok());
}

#[test]
fn groups_from_the_yaml_show_in_hsu_ls_restart_by_id_and_a_shutdown_group_ends_hsu_run() {
    let dir = Dir::new("groups");
    let runs = dir.0.join("db-runs");
    let config = dir.write(
        "app.yaml",
        &format!(
            "workers:
  - {{id: db, type: process, execution: {{executable_path: {WORKER}, args: [--count, {runs}, --usr1-exit, '3']}}, restart: {{policy: always, backoff: {{initial: 0s}}}}}}
  - {{id: api, type: module, module_name: echo, config: {{port: 0}}, restart: {{policy: always}}}}
  - {{id: loner, type: module, module_name: ticker}}
groups:
  - {{id: backend, strategy: one_for_all, max_restarts: 1, window: 1m, on_exhausted: shutdown, members: [db, api]}}
",
            runs = runs.display()
        ),
    );
    let mut hsu = Running::start(&["run", &config]);
    hsu.wait_for("hsu running");
    let socket = socket_of(&hsu);
    until_row(&socket, "backend", "running", |r| r["state"] == "running");
    let backend = row(&socket, "backend");
    assert_eq!(backend["deployment"], "group", "{backend}");
    assert_eq!(backend["members"], serde_json::json!(["db", "api"]));
    assert_eq!(row(&socket, "db")["group"], "backend");
    // The group's own diagnostics, and a member's.
    let status = client(&socket, &["status", "backend", "--json"]);
    let g: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    assert_eq!(g["strategy"], "one_for_all", "{g}");
    assert_eq!(g["max_restarts"], 1, "{g}");
    let status = client(&socket, &["status", "db", "--json"]);
    let d: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    assert_eq!(d["group"], "backend", "{d}");
    assert_eq!(row(&socket, "loner")["state"], "running");
    // A restart of the group by id restarts both, through the CLI.
    let output = client(&socket, &["restart", "backend"]);
    assert!(output.status.success(), "{}", stderr(&output));
    until_row(&socket, "db", "relaunched", |_| {
        std::fs::read_to_string(&runs).map_or(0, |t| t.lines().count()) == 2
    });
    // Two crashes within the window: the group is over its intensity, and on_exhausted stops
    // the master with the reason, exit 1.
    for n in [3, 4] {
        let pid = row(&socket, "db")["pid"].as_u64().expect("db runs") as i32;
        let _ = hsu::internals::sys::signal_process(pid, 10);
        if n == 3 {
            until_row(&socket, "db", "relaunched after its crash", |_| {
                std::fs::read_to_string(&runs).map_or(0, |t| t.lines().count()) == 3
            });
            until_row(&socket, "db", "running", |r| {
                r["state"] == "running" && r["pid"].as_u64() != Some(pid as u64)
            });
        }
    }
    let (status, text) = hsu.finish();
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains("stopped because group `backend`: max intensity: 2 restarts in 1m"),
        "{text}"
    );
}

#[test]
fn a_paused_master_reports_the_scheduled_runs_it_missed_and_runs_once() {
    let dir = Dir::new("schedule-pause");
    let runs = dir.0.join("job-runs");
    let config = dir.write(
        "app.yaml",
        &format!(
            "workers:
  - {{id: job, type: process, execution: {{executable_path: {WORKER}, args: [--count, {runs}, --sleep, '50']}}, restart: {{policy: never}}, schedule: '* * * * * *'}}
",
            runs = runs.display()
        ),
    );
    let mut hsu = Running::start(&["run", &config]);
    hsu.wait_for("hsu running");
    let socket = socket_of(&hsu);
    until_row(&socket, "job", "ran twice", |r| {
        r["schedule"]["runs"].as_u64() >= Some(2)
    });
    // Paused for 3.5 s: three or more times pass while it cannot act.
    let before = row(&socket, "job")["schedule"]["runs"].as_u64().unwrap();
    hsu.signal("STOP");
    std::thread::sleep(std::time::Duration::from_millis(3500));
    hsu.signal("CONT");
    let line = hsu.wait_for("missed");
    assert!(
        line.contains("scheduled run(s) while the master was paused or busy; running once now"),
        "{line}"
    );
    let missed: u64 = line
        .split("missed=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(missed >= 2, "{line}");
    until_row(&socket, "job", "counted the misses", |r| {
        r["schedule"]["missed"].as_u64() >= Some(missed)
    });
    // The late time started one run, not one per missed time (one more on-time run may have
    // come since, and one may have started just before the pause).
    let after = row(&socket, "job")["schedule"]["runs"].as_u64().unwrap();
    assert!(
        after <= before + 3 && after < before + missed + 2,
        "runs {before} -> {after} after missing {missed}"
    );
    hsu.signal("TERM");
    let (status, text) = hsu.finish();
    assert!(status.success(), "{text}");
}

/// `hsu ls --json` rows of `socket` whose state is `running`.
fn running(socket: &std::path::Path) -> usize {
    super::control::rows(socket)
        .iter()
        .filter(|r| r["state"] == "running")
        .count()
}

#[test]
fn more_workers_than_the_launch_window_waiting_for_one_listed_after_them_all_start() {
    // Starts that wait for a dependency take no slot of the launch window: with 80 of them
    // ahead of their dependency in a window of 64, the dependency would never be reached.
    let mut config = String::from("workers:\n");
    for n in 0..80 {
        config.push_str(&format!("  - {{id: dep{n}, type: process, execution: {{executable_path: /bin/sleep, args: ['600']}}, depends_on: {{base: started}}}}\n"));
    }
    config.push_str(
        "  - {id: base, type: process, execution: {executable_path: /bin/sleep, args: ['600']}}\n",
    );
    let dir = Dir::new("window-deps");
    let path = dir.write("app.yaml", &config);
    let mut hsu = Running::start(&["run", &path]);
    hsu.wait_for("hsu running");
    let socket = socket_of(&hsu);
    assert_eq!(running(&socket), 81);
    hsu.signal("TERM");
    let (status, text) = hsu.finish();
    assert!(status.success(), "{text}");
}

#[test]
fn starts_that_do_not_finish_do_not_hold_back_the_workers_after_them() {
    // 70 plugin workers whose `start` never returns, more than the launch window, then 10
    // processes: each slow start leaves the window after its hold, so the processes run.
    let exe = std::env::current_exe().unwrap();
    let plugin = [
        exe.parent().unwrap(),
        exe.parent().unwrap().parent().unwrap(),
    ]
    .iter()
    .map(|d| d.join("libhsu_test_plugin.so"))
    .find(|p| p.exists())
    .expect("the test plugin is built by cargo test --workspace");
    // A start may take an hour here.
    let mut config = String::from("master: {start_timeout: 1h}\nworkers:\n");
    for n in 0..70 {
        config.push_str(&format!(
            "  - {{id: hang{n}, type: module, module_type: plugin, module_name: {}, config: {{start: hang}}}}\n",
            plugin.display()
        ));
    }
    for n in 0..10 {
        config.push_str(&format!("  - {{id: p{n}, type: process, execution: {{executable_path: /bin/sleep, args: ['600']}}}}\n"));
    }
    let dir = Dir::new("window-hang");
    let path = dir.write("app.yaml", &config);
    let mut hsu = Running::start(&["run", &path]);
    let socket = socket_of(&hsu);
    let start = std::time::Instant::now();
    while !socket.exists() {
        assert!(start.elapsed() < super::DEADLINE, "no socket");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // Long before any start could time out: all ten processes run.
    let start = std::time::Instant::now();
    while running(&socket) < 10 {
        assert!(
            start.elapsed() < super::DEADLINE,
            "the processes are held back: {:?}",
            super::control::rows(&socket)
                .iter()
                .map(|r| format!("{} {}", r["id"], r["state"]))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(super::control::rows(&socket)
        .iter()
        .filter(|r| r["id"].as_str().unwrap().starts_with('p'))
        .all(|r| r["state"] == "running"));
    // A stop waits for the starts in progress; the second signal forces it.
    hsu.signal("TERM");
    hsu.wait_for("a second Ctrl-C forces");
    hsu.signal("TERM");
    let (status, text) = hsu.finish();
    assert_eq!(status.code(), Some(130), "{text}");
}
