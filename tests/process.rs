//! Process workers: real children, real signals, real files.

mod support;

use std::time::Duration;

use hsu::{
    AddWorker, ErrorKind, GetAllWorkerStates, GetWorkerState, RestartWorker, Shutdown, StartWorker,
    StopWorker, WorkerConfig, WorkerState,
};
use support::{alive, eventually, id, process_worker, read_pid, TempDir};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[actix_rt::test]
async fn managed_start_stop_restart_with_pid_file() -> TestResult {
    let dir = TempDir::new("managed");
    let (master, mut watch) = support::master_in(&dir).await;
    let ready = dir.file("ready");
    master
        .send(AddWorker(process_worker(
            "sleeper",
            &["--count", &dir.file("launches"), "--pid-file", &ready],
        )))
        .await??;
    master.send(StartWorker(id("sleeper"))).await??;
    let running = watch.until("sleeper", WorkerState::Running).await;
    assert_eq!(read_pid(&ready).await, running.pid.unwrap());
    std::fs::remove_file(&ready)?;
    let d = master.send(GetWorkerState(id("sleeper"))).await??;
    let pid = d.pid.expect("a process has a pid");
    assert_eq!(running.pid, Some(pid));
    assert_eq!(d.deployment, hsu::Deployment::Managed);
    assert_eq!(d.executable_path, support::TEST_WORKER);
    assert!(d.module.is_none());
    assert!(alive(pid));
    eventually("the run table's line", || {
        support::run_table(&dir).get("sleeper") == Some(&(pid, None))
    })
    .await;

    master
        .send(RestartWorker {
            id: id("sleeper"),
            force: false,
        })
        .await??;
    assert!(!alive(pid), "the old process is gone after a restart");
    let new_pid = master
        .send(GetWorkerState(id("sleeper")))
        .await??
        .pid
        .unwrap();
    assert_eq!(read_pid(&ready).await, new_pid);
    assert_ne!(new_pid, pid);
    assert_eq!(dir.lines("launches"), 2);

    master.send(StopWorker(id("sleeper"))).await??;
    assert!(!alive(new_pid));
    // The record (and with the last one, the run table) goes with the process.
    eventually("the run table removed", || {
        !dir.0.join("run/hsu.pids").exists()
    })
    .await;
    let d = master.send(GetWorkerState(id("sleeper"))).await??;
    assert_eq!((d.state, d.pid), (WorkerState::Stopped, None));
    let exit = d.last_exit.expect("the exit is recorded");
    assert_eq!(exit.code, Some(143), "the test worker exits 143 on SIGTERM");
    Ok(())
}

#[actix_rt::test]
async fn exit_code_and_signal_land_in_diagnostics() -> TestResult {
    let dir = TempDir::new("exits");
    let (master, mut watch) = support::master_in(&dir).await;
    master
        .send(AddWorker(process_worker("three", &["--exit", "3"])))
        .await??;
    master
        .send(AddWorker(process_worker("abort", &["--crash"])))
        .await??;
    master.send(StartWorker(id("three"))).await??;
    master.send(StartWorker(id("abort"))).await??;
    let failed = watch.until("three", WorkerState::Failed).await;
    assert_eq!(failed.reason.as_deref(), Some("process exited with code 3"));
    let d = master.send(GetWorkerState(id("three"))).await??;
    assert_eq!(d.last_exit.as_ref().unwrap().code, Some(3));
    let failed = watch.until("abort", WorkerState::Failed).await;
    assert!(failed
        .reason
        .unwrap()
        .contains("killed by signal 6 (SIGABRT)"));
    let d = master.send(GetWorkerState(id("abort"))).await??;
    assert_eq!(d.last_exit.as_ref().unwrap().signal, Some(6));
    Ok(())
}

#[actix_rt::test]
async fn policies_decide_which_exits_restart() -> TestResult {
    let dir = TempDir::new("policies");
    let (master, mut watch) = support::master_in(&dir).await;
    let fast = |policy: &str| {
        format!(
            "{{policy: {policy}, max_restarts: 2, window: 60s, backoff: {{initial: 0s, max: 0s}}}}"
        )
    };
    let cases = [
        (
            "clean-on-failure",
            "0",
            "on_failure",
            1,
            WorkerState::Stopped,
        ),
        ("clean-always", "0", "always", 3, WorkerState::Stopped),
        ("bad-never", "4", "never", 1, WorkerState::Failed),
        ("bad-on-failure", "4", "on_failure", 3, WorkerState::Failed),
    ];
    for (id, code, policy, _, _) in cases {
        let config = process_worker(id, &["--exit", code, "--count", &dir.file(id)])
            .with_restart(&fast(policy));
        master.send(AddWorker(config)).await??;
        master.send(StartWorker(support::id(id))).await??;
    }
    for (id, _, _, launches, end) in cases {
        // Wait for the final state: after it no restart is scheduled (policy or circuit).
        loop {
            watch.until(id, end).await;
            let d = master.send(GetWorkerState(support::id(id))).await??;
            let settled = match (launches, d.circuit_open) {
                (1, false) => true,
                (_, open) => open,
            };
            if settled {
                break;
            }
        }
        assert_eq!(dir.lines(id), launches, "{id}");
    }
    Ok(())
}

#[actix_rt::test]
async fn a_crash_loop_launches_exactly_max_restarts_plus_one_then_opens_the_circuit() -> TestResult
{
    let dir = TempDir::new("crashloop");
    let (master, mut watch) = support::master_in(&dir).await;
    let config = process_worker("crashy", &["--exit", "3", "--count", &dir.file("launches")]).with_restart(
        "{policy: on_failure, max_restarts: 2, window: 60s, backoff: {initial: 10ms, max: 40ms, jitter: 0.0}}",
    );
    master.send(AddWorker(config)).await??;
    master.send(StartWorker(id("crashy"))).await??;
    for _ in 0..3 {
        watch.until("crashy", WorkerState::Failed).await;
    }
    let d = master.send(GetWorkerState(id("crashy"))).await??;
    assert!(d.circuit_open);
    assert!(d.last_error.unwrap().contains("circuit open"));
    assert_eq!(dir.lines("launches"), 3, "one start and two restarts");
    Ok(())
}

#[actix_rt::test]
async fn stop_kills_a_grandchild_that_ignores_sigterm() -> TestResult {
    let dir = TempDir::new("grandchild");
    let (master, _watch) = support::master_in(&dir).await;
    let grandchild_file = dir.file("grandchild.pid");
    let mut config = process_worker(
        "family",
        &[
            "--fork-grandchild",
            &grandchild_file,
            "--on-term",
            "parent got TERM",
        ],
    );
    config.stop = Some(serde_yaml::from_str("{signal: TERM, timeout: 300ms}")?);
    master.send(AddWorker(config)).await??;
    master.send(StartWorker(id("family"))).await??;
    let grandchild = read_pid(&grandchild_file).await;
    let parent = master
        .send(GetWorkerState(id("family")))
        .await??
        .pid
        .unwrap();
    assert!(alive(grandchild) && alive(parent));
    master.send(StopWorker(id("family"))).await??;
    // StopWorker returns only when the whole group is gone.
    assert!(!alive(parent));
    assert!(
        !alive(grandchild),
        "the grandchild ignoring SIGTERM was killed"
    );
    let log = std::fs::read_to_string(dir.0.join("logs/family.log"))?;
    assert!(
        log.contains("parent got TERM"),
        "output during SIGTERM handling is kept: {log:?}"
    );
    Ok(())
}

#[actix_rt::test]
async fn a_child_ignoring_sigterm_is_killed_after_the_grace_period() -> TestResult {
    let dir = TempDir::new("ignoreterm");
    let (master, _watch) = support::master_in(&dir).await;
    let ready = dir.file("ready");
    let mut config = process_worker("stubborn", &["--ignore-term", "--pid-file", &ready]);
    config.stop = Some(serde_yaml::from_str("{timeout: 200ms}")?);
    master.send(AddWorker(config)).await??;
    master.send(StartWorker(id("stubborn"))).await??;
    read_pid(&ready).await;
    master.send(StopWorker(id("stubborn"))).await??;
    let d = master.send(GetWorkerState(id("stubborn"))).await??;
    assert_eq!(d.state, WorkerState::Stopped);
    assert_eq!(d.last_exit.unwrap().signal, Some(9));
    Ok(())
}

#[actix_rt::test]
async fn a_hundred_thousand_lines_survive_rotation_without_gap_duplicate_or_split() -> TestResult {
    let dir = TempDir::new("flood");
    let mut config = support::config_in(&dir);
    config.logs.max_size = hsu::config::ByteSize(200 * 1024);
    config.logs.max_files = 20;
    let (master, mut watch) = support::launch(config).await;
    let worker = process_worker(
        "flood",
        &["--flood", "100000", "--last-line", "the end", "--exit", "0"],
    );
    master.send(AddWorker(worker)).await??;
    master.send(StartWorker(id("flood"))).await??;
    watch.until("flood", WorkerState::Stopped).await;
    let logs = dir.0.join("logs");
    let mut files: Vec<u32> = std::fs::read_dir(&logs)?
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_prefix("flood.log.")?
                .parse()
                .ok()
        })
        .collect();
    files.sort_unstable_by(|a, b| b.cmp(a));
    assert!(files.len() >= 5, "at least 5 rotations, got {files:?}");
    let mut text = String::new();
    for n in &files {
        let part = std::fs::read_to_string(logs.join(format!("flood.log.{n}")))?;
        assert!(part.ends_with('\n'), "file {n} ends with a whole line");
        assert!(part.len() as u64 <= 200 * 1024);
        text.push_str(&part);
    }
    text.push_str(&std::fs::read_to_string(logs.join("flood.log"))?);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 100_001);
    for (i, line) in lines[..100_000].iter().enumerate() {
        assert_eq!(*line, format!("line {:06}", i + 1));
    }
    assert_eq!(
        lines[100_000], "the end",
        "the last line before exit is kept"
    );
    Ok(())
}

#[actix_rt::test]
async fn stdout_and_stderr_flooding_at_once_both_reach_the_log_whole_and_in_order() -> TestResult {
    // One task pumps both pipes: neither may starve the other or lose a line.
    let dir = TempDir::new("two-floods");
    let (master, mut watch) = support::master_in(&dir).await;
    let worker = WorkerConfig::from_yaml(
        r#"{id: floods, type: process, execution: {executable_path: /bin/sh, args: ['-c', 'seq -f "out %06g" 1 50000 & seq -f "err %06g" 1 50000 >&2; wait']}}"#,
    )?;
    master.send(AddWorker(worker)).await??;
    master.send(StartWorker(id("floods"))).await??;
    watch.until("floods", WorkerState::Stopped).await;
    let text = std::fs::read_to_string(dir.0.join("logs").join("floods.log"))?;
    for stream in ["out", "err"] {
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(stream)).collect();
        assert_eq!(lines.len(), 50_000, "{stream}");
        for (i, line) in lines.iter().enumerate() {
            assert_eq!(*line, format!("{stream} {:06}", i + 1));
        }
    }
    assert_eq!(text.lines().count(), 100_000, "nothing else, nothing split");
    Ok(())
}

#[actix_rt::test]
async fn a_missing_executable_is_a_clear_error_and_the_master_keeps_answering() -> TestResult {
    let dir = TempDir::new("missing");
    let (master, _watch) = support::master_in(&dir).await;
    let config = WorkerConfig::process("ghost", "/nonexistent/bin/ghost", &[])
        .with_restart("{policy: never}");
    master.send(AddWorker(config)).await??;
    let err = master.send(StartWorker(id("ghost"))).await?.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    let text = hsu::error_chain(&err);
    assert!(
        text.contains("worker `ghost`: cannot start `/nonexistent/bin/ghost`"),
        "{text}"
    );
    assert!(text.contains("No such file or directory"), "{text}");
    let d = master.send(GetWorkerState(id("ghost"))).await??;
    assert_eq!(d.state, WorkerState::FailedStart);
    assert_eq!(master.send(GetAllWorkerStates).await?.len(), 1);
    Ok(())
}

#[actix_rt::test]
async fn spawn_failures_count_against_the_restart_budget() -> TestResult {
    let dir = TempDir::new("missing-restart");
    let (master, mut watch) = support::master_in(&dir).await;
    let config = WorkerConfig::process("ghost", "/nonexistent/ghost", &[]).with_restart(
        "{policy: on_failure, max_restarts: 2, window: 60s, backoff: {initial: 0s, max: 0s}}",
    );
    master.send(AddWorker(config)).await??;
    assert!(master.send(StartWorker(id("ghost"))).await?.is_err());
    for _ in 0..3 {
        watch.until("ghost", WorkerState::FailedStart).await;
    }
    assert!(
        master
            .send(GetWorkerState(id("ghost")))
            .await??
            .circuit_open
    );
    Ok(())
}

#[actix_rt::test]
async fn unmanaged_attach_detects_exit_and_signals_only_when_allowed() -> TestResult {
    let dir = TempDir::new("unmanaged");
    let (master, mut watch) = support::master_in(&dir).await;
    // Started by the test, not by hsu; each is ready (SIGTERM handler set) once its pid file exists.
    let mut first = std::process::Command::new(support::TEST_WORKER)
        .args(["--pid-file", &dir.file("first.ready")])
        .spawn()?;
    let mut second = std::process::Command::new(support::TEST_WORKER)
        .args(["--pid-file", &dir.file("second.ready")])
        .spawn()?;
    read_pid(&dir.file("first.ready")).await;
    read_pid(&dir.file("second.ready")).await;
    let pid_file = dir.file("second.pid");
    std::fs::write(&pid_file, second.id().to_string())?;

    let attach = |id: &str, attach: String| {
        WorkerConfig::from_yaml(&format!("{{id: {id}, type: process, process_type: unmanaged, attach: {attach}, restart: {{policy: never}}}}"))
    };
    master
        .send(AddWorker(attach(
            "by-pid",
            format!("{{pid: {}}}", first.id()),
        )?))
        .await??;
    master
        .send(AddWorker(attach(
            "by-file",
            format!("{{pid_file: {pid_file}, allow_signals: true}}"),
        )?))
        .await??;
    master.send(StartWorker(id("by-pid"))).await??;
    master.send(StartWorker(id("by-file"))).await??;
    let d = master.send(GetWorkerState(id("by-pid"))).await??;
    assert_eq!(
        (d.state, d.pid, d.deployment),
        (
            WorkerState::Running,
            Some(first.id()),
            hsu::Deployment::Unmanaged
        )
    );
    assert_eq!(d.executable_path, support::TEST_WORKER);

    // Without allow_signals, stop only detaches.
    master.send(StopWorker(id("by-pid"))).await??;
    assert!(alive(first.id()), "not signalled");
    // Attach again, then the process exits on its own: an event, no polling by the test.
    master.send(StartWorker(id("by-pid"))).await??;
    first.kill()?;
    let failed = watch.until("by-pid", WorkerState::Failed).await;
    assert!(failed.reason.unwrap().contains("exited"));
    first.wait()?;

    // With allow_signals, stop sends SIGTERM to exactly that process.
    master.send(StopWorker(id("by-file"))).await??;
    let status = second.wait()?;
    assert_eq!(status.code(), Some(143));
    master.send(Shutdown).await?;
    Ok(())
}

#[actix_rt::test]
async fn bad_pids_and_pid_files_are_refused_clearly() -> TestResult {
    let dir = TempDir::new("badpid");
    let (master, _watch) = support::master_in(&dir).await;
    let writable = dir.file("world-writable.pid");
    std::fs::write(&writable, "12345")?;
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&writable)?.permissions(),
        0o666,
    );
    std::fs::set_permissions(
        &writable,
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )?;
    let link = dir.file("link.pid");
    std::os::unix::fs::symlink(&writable, &link)?;
    let garbage = dir.file("garbage.pid");
    std::fs::write(&garbage, "not a pid")?;
    let cases = [
        ("gone", format!("{{pid: {}}}", i32::MAX), "no such process"),
        (
            "missing-file",
            format!("{{pid_file: {}}}", dir.file("absent.pid")),
            "cannot read pid file",
        ),
        (
            "writable",
            format!("{{pid_file: {writable}}}"),
            "world-writable",
        ),
        ("symlink", format!("{{pid_file: {link}}}"), "symlink"),
        (
            "garbage",
            format!("{{pid_file: {garbage}}}"),
            "does not hold a PID",
        ),
    ];
    for (id, attach, expected) in cases {
        let config = WorkerConfig::from_yaml(&format!(
            "{{id: {id}, type: process, process_type: unmanaged, attach: {attach}, restart: {{policy: never}}}}"
        ))?;
        master.send(AddWorker(config)).await??;
        let err = master
            .send(StartWorker(support::id(id)))
            .await?
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!("worker `{id}`")) && text.contains(expected),
            "{id}: {text}"
        );
    }
    let init = WorkerConfig::from_yaml(
        "{id: init, type: process, process_type: unmanaged, attach: {pid: 1}}",
    )?;
    let err = master.send(AddWorker(init)).await?.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Validation);
    assert!(err.to_string().contains("PID 1"), "{err}");
    Ok(())
}

#[actix_rt::test]
async fn http_tcp_and_exec_probes_restart_after_the_threshold() -> TestResult {
    let dir = TempDir::new("probes");
    let (master, mut watch) = support::master_in(&dir).await;
    // Bound, never listening: connections are refused, and nobody else can take the port.
    let (_closed_socket, closed) = support::closed_port()?;
    let probes = [
        ("http", format!("{{type: http, url: 'http://127.0.0.1:{closed}/health', interval: 20ms, timeout: 1s, failure_threshold: 2}}")),
        ("tcp", format!("{{type: tcp, address: '127.0.0.1:{closed}', interval: 20ms, timeout: 1s, failure_threshold: 2}}")),
        ("exec", "{type: exec, command: [/bin/false], interval: 20ms, timeout: 1s, failure_threshold: 2}".to_string()),
    ];
    for (id, health) in &probes {
        let config = process_worker(id, &["--count", &dir.file(id)])
            .with_health_check(health)
            .with_restart("{policy: on_failure, max_restarts: 1, window: 60s, backoff: {initial: 0s, max: 0s}}");
        master.send(AddWorker(config)).await??;
        master.send(StartWorker(support::id(id))).await??;
    }
    for (id, _) in &probes {
        let failed = watch.until(id, WorkerState::Failed).await;
        assert!(failed
            .reason
            .unwrap()
            .contains("health check failed 2 times in a row"));
        watch.until(id, WorkerState::Running).await;
        watch.until(id, WorkerState::Failed).await;
        assert!(
            master
                .send(GetWorkerState(support::id(id)))
                .await??
                .circuit_open
        );
        assert_eq!(dir.lines(id), 2, "{id}: launched, then restarted once");
    }

    // A passing http probe against the worker's own server. The port is picked here and
    // passed on, so another test may take it first: the worker then exits with 98 and this
    // tries another port.
    for attempt in 1.. {
        let port = support::pick_port()?;
        let id = format!("served-{attempt}");
        let config = process_worker(&id, &["--serve-http", &port.to_string()])
            .with_health_check(&format!("{{type: http, url: 'http://127.0.0.1:{port}/health', interval: 20ms, failure_threshold: 100}}"));
        master.send(AddWorker(config)).await??;
        master.send(StartWorker(support::id(&id))).await??;
        let start = std::time::Instant::now();
        let healthy = loop {
            let d = master.send(GetWorkerState(support::id(&id))).await??;
            if d.health == hsu::HealthStatus::Healthy {
                break true;
            }
            if d.last_exit.as_ref().is_some_and(|e| e.code == Some(98)) && attempt < 5 {
                break false;
            }
            assert!(start.elapsed() < support::DEADLINE, "never healthy: {d:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        if healthy {
            break;
        }
    }
    master.send(Shutdown).await?;
    Ok(())
}

#[actix_rt::test]
async fn limits_and_module_only_fields_are_refused_for_modules() -> TestResult {
    let dir = TempDir::new("limits-module");
    let (master, _watch) = support::master_in(&dir).await;
    let config = WorkerConfig::from_yaml(
        "{id: m, type: module, module_name: echo, limits: {memory_max: 1GiB}}",
    )?;
    let err = master.send(AddWorker(config)).await?.unwrap_err();
    assert!(
        err.to_string()
            .contains("in-process modules cannot be limited"),
        "{err}"
    );
    Ok(())
}

#[actix_rt::test]
async fn shutdown_stops_every_process_and_leaves_none() -> TestResult {
    let dir = TempDir::new("shutdown");
    let (master, _watch) = support::master_in(&dir).await;
    let mut pids = Vec::new();
    for i in 0..5 {
        let id = format!("p{i}");
        master.send(AddWorker(process_worker(&id, &[]))).await??;
        master.send(StartWorker(support::id(&id))).await??;
        pids.push(
            master
                .send(GetWorkerState(support::id(id)))
                .await??
                .pid
                .unwrap(),
        );
    }
    let report = master.send(Shutdown).await?;
    assert_eq!(report.stopped.len(), 5);
    for pid in pids {
        assert!(!alive(pid));
    }
    eventually("run files removed", || {
        std::fs::read_dir(dir.0.join("run"))
            .map(|d| d.count() == 0)
            .unwrap_or(true)
    })
    .await;
    Ok(())
}

/// Process `pid`'s cgroup, from its own /proc entry and the cgroup2 mount.
fn cgroup_of(pid: u32) -> std::io::Result<std::path::PathBuf> {
    let relative = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        .expect("a cgroup v2 line");
    let mount = std::fs::read_to_string("/proc/self/mountinfo")?
        .lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split_whitespace().next()? == "cgroup2")
                .then(|| left.split_whitespace().nth(4).map(str::to_string))?
        })
        .expect("a cgroup2 mount");
    Ok(std::path::Path::new(&mount).join(relative.trim_start_matches('/')))
}

#[actix_rt::test]
async fn a_removed_workers_cgroup_is_removed_with_it() -> TestResult {
    let dir = TempDir::new("cgroup-removed");
    let (master, mut watch) = support::master_in(&dir).await;
    master
        .send(AddWorker(process_worker("gone", &[])))
        .await??;
    master.send(StartWorker(id("gone"))).await??;
    watch.until("gone", WorkerState::Running).await;
    let d = master.send(GetWorkerState(id("gone"))).await??;
    if d.containment != Some("cgroup") {
        return Ok(()); // process groups only on this machine: nothing to remove
    }
    let pid = d.pid.expect("a pid");
    let cgroup = cgroup_of(pid)?;
    assert!(cgroup.is_dir(), "{}", cgroup.display());
    master.send(hsu::RemoveWorker(id("gone"))).await??;
    eventually("the worker's cgroup removed", || !cgroup.exists()).await;
    assert!(!alive(pid));
    master.send(Shutdown).await?;
    Ok(())
}

#[actix_rt::test]
async fn shutdown_removes_the_instance_cgroup_and_reaps_its_keeper_before_it_replies() -> TestResult
{
    let dir = TempDir::new("cgroup-shutdown");
    let (master, mut watch) = support::master_in(&dir).await;
    master
        .send(AddWorker(process_worker("last", &[])))
        .await??;
    master.send(StartWorker(id("last"))).await??;
    watch.until("last", WorkerState::Running).await;
    let d = master.send(GetWorkerState(id("last"))).await??;
    if d.containment != Some("cgroup") {
        return Ok(()); // process groups only on this machine: nothing to remove
    }
    let pid = d.pid.expect("a pid");
    let worker_cgroup = cgroup_of(pid)?;
    let instance = worker_cgroup
        .parent()
        .expect("an instance cgroup")
        .to_path_buf();
    // This master's keeper: the shell whose last argument is its instance cgroup.
    let keeper = std::fs::read_dir("/proc")?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| {
                let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
                args.iter().any(|a| *a == b"hsu-cgroup-keeper")
                    && args
                        .iter()
                        .any(|a| *a == instance.as_os_str().as_encoded_bytes())
            })
        })
        .expect("the master's cgroup keeper");
    let report = master.send(Shutdown).await?;
    assert_eq!(report.stopped, vec![id("last")]);
    // At the reply, with the master still alive (not dropped): nothing of its containment is
    // left, and the keeper is reaped, not a zombie.
    assert!(
        !instance.exists(),
        "{} outlived the shutdown",
        instance.display()
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{keeper}")).exists(),
        "the keeper {keeper} outlived the shutdown"
    );
    assert!(!alive(pid));
    drop(master);
    Ok(())
}

#[actix_rt::test]
async fn workers_without_limits_are_sampled_when_asked_not_every_interval() -> TestResult {
    let dir = TempDir::new("sample-on-demand");
    let mut config = support::config_in(&dir);
    config.resource_interval = Duration::from_millis(20);
    let (master, mut watch) = support::launch(config).await;
    master
        .send(AddWorker(process_worker("idle", &[])))
        .await??;
    master.send(StartWorker(id("idle"))).await??;
    watch.until("idle", WorkerState::Running).await;
    // Many intervals pass: nothing samples a worker without limits on its own.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = master.send(GetWorkerState(id("idle"))).await??;
    assert!(before.resources.is_none(), "{:?}", before.resources);
    // Asked (as `hsu ls`, `hsu status` and /metrics ask), it is sampled at once.
    master.send(hsu::RefreshResources).await?;
    let after = master.send(GetWorkerState(id("idle"))).await??;
    let usage = after.resources.expect("sampled when asked");
    assert!(usage.rss_bytes > 0, "{usage:?}");
    master.send(Shutdown).await?;
    Ok(())
}

#[actix_rt::test]
async fn a_memory_limit_violation_restarts_the_worker() -> TestResult {
    let dir = TempDir::new("memlimit");
    let mut config = support::config_in(&dir);
    config.resource_interval = Duration::from_millis(50);
    let (master, mut watch) = support::launch(config).await;
    let worker = process_worker(
        "hog",
        &["--leak-mb", "64", "--count", &dir.file("launches")],
    )
    .with_restart(
        "{policy: on_failure, max_restarts: 1, window: 60s, backoff: {initial: 0s, max: 0s}}",
    );
    let mut worker = worker;
    worker.limits = Some(serde_yaml::from_str(
        "{memory_max: 32MiB, on_violation: restart, grace: 2}",
    )?);
    master.send(AddWorker(worker)).await??;
    // A worker under its limit is sampled but left alone.
    let mut calm = process_worker("calm", &[]);
    calm.limits = Some(serde_yaml::from_str(
        "{memory_max: 1GiB, on_violation: restart, grace: 1}",
    )?);
    master.send(AddWorker(calm)).await??;
    master.send(StartWorker(id("calm"))).await??;
    master.send(StartWorker(id("hog"))).await??;
    let failed = watch.until("hog", WorkerState::Failed).await;
    let reason = failed.reason.unwrap();
    assert!(
        reason.contains("limit exceeded: memory: RSS") && reason.contains("memory_max 32MiB"),
        "{reason}"
    );
    watch.until("hog", WorkerState::Running).await;
    watch.until("hog", WorkerState::Failed).await;
    assert!(master.send(GetWorkerState(id("hog"))).await??.circuit_open);
    assert_eq!(dir.lines("launches"), 2);
    let calm = master.send(GetWorkerState(id("calm"))).await??;
    assert_eq!(calm.state, WorkerState::Running);
    let usage = calm.resources.expect("sampled");
    assert!(usage.rss_bytes > 0 && usage.rss_bytes < 1 << 30);
    master.send(Shutdown).await?;
    Ok(())
}

/// The control protocol on the wire, as an HSU worker written in Go sees it: `Ping` by its path
/// `/proto.CoreService/Ping` with empty protobuf messages, `grpc.health.v1.Health/Check` by its
/// path with `service` as field 1, SERVING for "" and `proto.CoreService`, NOT_FOUND for an
/// unknown name (before: SERVING for any name), and `Watch` streaming a change (before:
/// UNIMPLEMENTED). Served by `hsu_module::integrated::serve_on` on 127.0.0.1, called with
/// tonic's generic client and hand-written message types (no generated code on this side).
#[actix_rt::test]
async fn the_integrated_protocol_keeps_hsus_wire_names_and_the_standard_health_service(
) -> TestResult {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use tonic::codegen::http::uri::PathAndQuery;

    #[derive(Clone, PartialEq, prost::Message)]
    struct Empty {}
    #[derive(Clone, PartialEq, prost::Message)]
    struct CheckRequest {
        #[prost(string, tag = "1")]
        service: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct CheckResponse {
        #[prost(int32, tag = "1")]
        status: i32,
    }
    const SERVING: i32 = 1;
    const NOT_SERVING: i32 = 2;

    assert!(
        prost::Message::encode_to_vec(&hsu::module::integrated::proto::PingRequest {}).is_empty()
    );
    let healthy = Arc::new(AtomicBool::new(true));
    let listener = hsu::module::integrated::bind(0)?;
    let port = listener.local_addr()?.port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let flag = healthy.clone();
    let server = tokio::spawn(hsu::module::integrated::serve_on(
        listener,
        move || {
            let flag = flag.clone();
            async move { flag.load(Ordering::SeqCst) }
        },
        async {
            let _ = stopped.await;
        },
    ));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
        .connect()
        .await?;
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    let ping = |mut grpc: tonic::client::Grpc<tonic::transport::Channel>| async move {
        grpc.ready().await?;
        grpc.unary::<Empty, Empty, _>(
            tonic::Request::new(Empty {}),
            PathAndQuery::from_static("/proto.CoreService/Ping"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .map(drop)
        .map_err(Box::<dyn std::error::Error + Send + Sync>::from)
    };
    ping(grpc.clone()).await.map_err(|e| e.to_string())?;
    let check = |mut grpc: tonic::client::Grpc<tonic::transport::Channel>, service: &str| {
        let service = service.to_string();
        async move {
            grpc.ready()
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            grpc.unary::<CheckRequest, CheckResponse, _>(
                tonic::Request::new(CheckRequest { service }),
                PathAndQuery::from_static("/grpc.health.v1.Health/Check"),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .map(|r| r.into_inner().status)
        }
    };
    // The health service reports after its first refresh.
    let start = std::time::Instant::now();
    while check(grpc.clone(), "").await.ok() != Some(SERVING) {
        assert!(start.elapsed() < Duration::from_secs(10), "never SERVING");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(check(grpc.clone(), "proto.CoreService").await?, SERVING);
    let unknown = check(grpc.clone(), "no.such.Service")
        .await
        .expect_err("unknown name");
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");

    // Watch: the current status at once, then the change.
    grpc.ready().await?;
    let mut watch = grpc
        .server_streaming::<CheckRequest, CheckResponse, _>(
            tonic::Request::new(CheckRequest {
                service: String::new(),
            }),
            PathAndQuery::from_static("/grpc.health.v1.Health/Watch"),
            tonic_prost::ProstCodec::default(),
        )
        .await?
        .into_inner();
    assert_eq!(watch.message().await?.map(|m| m.status), Some(SERVING));
    healthy.store(false, Ordering::SeqCst);
    let next = tokio::time::timeout(Duration::from_secs(10), watch.message()).await??;
    assert_eq!(next.map(|m| m.status), Some(NOT_SERVING));
    // Ping asks at every call: UNAVAILABLE while not healthy.
    let err = ping(grpc.clone()).await.expect_err("not healthy");
    assert!(err.to_string().contains("not healthy"), "{err}");

    // The master's client speaks the same: Ping refused, Check NOT_SERVING, unknown NOT_FOUND.
    let runtime = hsu::WorkerRuntime::new(1)?;
    let client = hsu::ControlClient::new(port, Duration::from_secs(5), &runtime)?;
    assert!(client.ping(Duration::from_secs(5)).await.is_err());
    assert!(!client.health("", Duration::from_secs(5)).await?);
    let e = client
        .health("no.such.Service", Duration::from_secs(5))
        .await
        .expect_err("unknown");
    assert!(
        e.to_string().contains("NotFound") || e.to_string().contains("not found"),
        "{e}"
    );
    healthy.store(true, Ordering::SeqCst);
    client.ping(Duration::from_secs(5)).await?;
    let _ = stop.send(());
    server.await??;
    drop(channel);
    Ok(())
}

fn integrated_worker(id: &str, args: &[&str]) -> WorkerConfig {
    let mut config = process_worker(id, &[&["--integrated"], args].concat());
    config.process_type = Some(hsu::config::ProcessType::Integrated);
    config
}

#[actix_rt::test]
async fn integrated_worker_is_ready_at_first_ping_probed_by_ping_and_stopped_by_signal(
) -> TestResult {
    let dir = TempDir::new("integrated");
    let (master, mut watch) = support::master_in(&dir).await;
    let healthy = dir.file("healthy");
    std::fs::write(&healthy, "")?;
    let config = integrated_worker(
        "core",
        &[
            "--ready-delay",
            "300",
            "--health-file",
            &healthy,
            "--count",
            &dir.file("launches"),
        ],
    )
    .with_health_check("{type: ping, interval: 20ms, timeout: 1s, failure_threshold: 2}")
    .with_restart(
        "{policy: on_failure, max_restarts: 1, window: 60s, backoff: {initial: 0s, max: 0s}}",
    );
    master.send(AddWorker(config)).await??;
    master.send(StartWorker(id("core"))).await??;
    // Start returned: the worker answered Ping (after its 300ms delay).
    let d = master.send(GetWorkerState(id("core"))).await??;
    assert_eq!(
        (d.state, d.deployment),
        (WorkerState::Running, hsu::Deployment::Integrated)
    );
    eventually("the port recorded", || {
        support::run_table(&dir).contains_key("core")
    })
    .await;
    let port = support::run_table(&dir)["core"].1.expect("a port recorded");
    let client =
        hsu::ControlClient::new(port, Duration::from_secs(1), &hsu::WorkerRuntime::new(1)?)
            .map_err(|e| e.to_string())?;
    client.ping(Duration::from_secs(1)).await?;
    assert!(client.health("", Duration::from_secs(1)).await?);

    // Unhealthy: Ping answers UNAVAILABLE, the probe fails twice, the worker is restarted.
    std::fs::remove_file(&healthy)?;
    let failed = watch.until("core", WorkerState::Failed).await;
    assert!(
        failed
            .reason
            .as_deref()
            .unwrap()
            .contains("health check failed 2 times"),
        "{failed:?}"
    );
    std::fs::write(&healthy, "")?;
    watch.until("core", WorkerState::Running).await;
    assert_eq!(dir.lines_once("launches", 2).await, 2);

    let pid = master.send(GetWorkerState(id("core"))).await??.pid.unwrap();
    master.send(StopWorker(id("core"))).await??;
    assert!(!alive(pid));
    eventually("the record removed", || {
        !support::run_table(&dir).contains_key("core")
    })
    .await;
    Ok(())
}

#[actix_rt::test]
async fn grpc_health_probe_fails_a_not_serving_worker() -> TestResult {
    let dir = TempDir::new("grpc-health");
    let (master, mut watch) = support::master_in(&dir).await;
    let healthy = dir.file("healthy");
    std::fs::write(&healthy, "")?;
    let config = integrated_worker("svc", &["--health-file", &healthy])
        .with_health_check("{type: grpc_health, interval: 20ms, failure_threshold: 2}");
    master.send(AddWorker(config)).await??;
    master.send(StartWorker(id("svc"))).await??;
    std::fs::remove_file(&healthy)?;
    let failed = watch.until("svc", WorkerState::Failed).await;
    assert!(failed
        .reason
        .unwrap()
        .contains("health check failed 2 times"));
    assert_eq!(
        master.send(GetWorkerState(id("svc"))).await??.pid,
        None,
        "stopped after failing"
    );
    Ok(())
}

#[actix_rt::test]
async fn an_integrated_worker_that_never_answers_fails_to_start_and_leaves_nothing() -> TestResult {
    let dir = TempDir::new("not-ready");
    let (master, _watch) = support::master_in(&dir).await;
    let pid_file = dir.file("pid");
    let mut config =
        integrated_worker("mute", &["--ready-delay", "60000", "--pid-file", &pid_file]);
    config.integrated = Some(serde_yaml::from_str(
        "{startup_timeout: 500ms, call_timeout: 100ms}",
    )?);
    master.send(AddWorker(config)).await??;
    let err = master.send(StartWorker(id("mute"))).await?.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(
        err.to_string()
            .contains("no successful Ping within startup_timeout 500ms"),
        "{err}"
    );
    let pid = read_pid(&pid_file).await;
    assert!(!alive(pid), "the process that never got ready was stopped");
    assert_eq!(
        master.send(GetWorkerState(id("mute"))).await??.state,
        WorkerState::FailedStart
    );

    // A process that exits before answering fails at once, with its exit status.
    let mut config = process_worker("quitter", &["--exit", "2"]);
    config.process_type = Some(hsu::config::ProcessType::Integrated);
    master.send(AddWorker(config)).await??;
    let err = master.send(StartWorker(id("quitter"))).await?.unwrap_err();
    assert!(
        err.to_string()
            .contains("exited with code 2 before answering Ping"),
        "{err}"
    );
    Ok(())
}

#[actix_rt::test]
async fn an_integrated_worker_whose_control_port_was_taken_is_started_again_on_another(
) -> TestResult {
    let dir = TempDir::new("port-taken");
    let (master, mut watch) = support::master_in(&dir).await;
    // A port this test holds: the first launch tries to serve on it and cannot bind it.
    let held = std::net::TcpListener::bind("127.0.0.1:0")?;
    let taken = held.local_addr()?.port().to_string();
    let config = integrated_worker(
        "moved",
        &["--first-port", &taken, "--count", &dir.file("launches")],
    );
    master.send(AddWorker(config)).await??;
    master.send(StartWorker(id("moved"))).await??;
    assert_eq!(
        dir.lines("launches"),
        2,
        "launched again after the conflict"
    );
    eventually("the port recorded", || {
        support::run_table(&dir).contains_key("moved")
    })
    .await;
    let port = support::run_table(&dir)["moved"]
        .1
        .expect("a port recorded");
    assert_ne!(port.to_string(), taken);
    let d = master.send(GetWorkerState(id("moved"))).await??;
    assert_eq!(d.state, WorkerState::Running);
    // One start, seen once: the retry is inside it, not a failure and a restart.
    watch.until("moved", WorkerState::Running).await;
    assert_eq!(watch.count("moved", WorkerState::FailedStart), 0);
    master.send(Shutdown).await?;
    drop(held);
    Ok(())
}

#[actix_rt::test]
async fn an_integrated_worker_ready_just_before_its_startup_timeout_is_running() -> TestResult {
    // Polled at 20, 60, 140, 300 ms and then every 250 ms: the last poll before the deadline
    // is at 4.8 s. A worker ready at 4.85 s must still count as ready within 5 s.
    let dir = TempDir::new("late-ready");
    let (master, _watch) = support::master_in(&dir).await;
    let mut config = integrated_worker("late", &["--ready-delay", "4850"]);
    config.integrated = Some(serde_yaml::from_str(
        "{startup_timeout: 5s, call_timeout: 1s}",
    )?);
    master.send(AddWorker(config)).await??;
    master.send(StartWorker(id("late"))).await??;
    assert_eq!(
        master.send(GetWorkerState(id("late"))).await??.state,
        WorkerState::Running
    );
    master.send(Shutdown).await?;
    Ok(())
}

#[actix_rt::test]
#[allow(unsafe_code)]
async fn workers_inherit_no_ignored_or_blocked_signal_no_stray_descriptor_and_the_usual_open_file_limit(
) -> TestResult {
    use std::os::fd::AsRawFd;
    let dir = TempDir::new("hygiene");
    // What a careless starter leaves behind: SIGQUIT ignored (`nohup`, a shell's `&`), SIGUSR2
    // blocked (inherited by the master's threads started below) and a descriptor without
    // close-on-exec.
    let leaked = std::fs::File::create(dir.0.join("leaked"))?;
    // SAFETY: plain syscalls on a descriptor we own, on the process's signal table and on this
    // thread's signal mask (a local set); the duplicate is closed and the mask restored below.
    let fd = unsafe {
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::dup(leaked.as_raw_fd())
    };
    assert!(fd > 2);
    // Many descriptors of the master's below the number where it keeps its long-lived ones
    // (512): this spawn's own descriptors are then numbered high, and the child's partial copy
    // of the table (`close_range(CLOSE_RANGE_UNSHARE)`) is a large one; still nothing leaks.
    // Copies of the careless one, without close-on-exec either.
    let crowd: Vec<std::os::fd::OwnedFd> = (0..600)
        .map(|_| {
            // SAFETY: dup of a descriptor we own; the copy is owned (and closed) by the Vec.
            let copy = unsafe { libc::dup(leaked.as_raw_fd()) };
            assert!(copy > 2);
            // SAFETY: a fresh descriptor nothing else owns.
            unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(copy) }
        })
        .collect();
    let (master, mut watch) = support::master_in(&dir).await;
    let report = dir.file("report");
    master
        .send(AddWorker(process_worker(
            "clean",
            &["--report-self", &report],
        )))
        .await??;
    master.send(StartWorker(id("clean"))).await??;
    watch.until("clean", WorkerState::Running).await;
    eventually("the report", || {
        std::fs::read_to_string(&report).is_ok_and(|t| t.contains("nofile"))
    })
    .await;
    let text = std::fs::read_to_string(&report)?;
    // SAFETY: closes the duplicate made above; restores the signal table and the mask.
    unsafe {
        libc::close(fd);
        libc::signal(libc::SIGQUIT, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
    let sigign = text
        .lines()
        .find_map(|l| l.strip_prefix("sigign "))
        .map(|h| u64::from_str_radix(h, 16).unwrap())
        .unwrap();
    assert_eq!(
        sigign & (1 << (libc::SIGQUIT - 1)),
        0,
        "SIGQUIT is not ignored: {text}"
    );
    // The master's spawning threads block SIGUSR2 (from this thread), and all signals around a
    // clone: the worker starts with no signal blocked.
    let sigblk = text
        .lines()
        .find_map(|l| l.strip_prefix("sigblk "))
        .map(|h| u64::from_str_radix(h, 16).unwrap())
        .unwrap();
    assert_eq!(sigblk, 0, "no signal is blocked in the worker: {text}");
    // By what it opens (the worker's own descriptors may have the same numbers as the
    // master's copies: the number tells nothing).
    let leaked_path = dir.0.join("leaked").display().to_string();
    assert!(
        !text.lines().any(|l| l.ends_with(&leaked_path)),
        "no descriptor of the master's reached the worker: {text}"
    );
    drop(crowd);
    // The master raised its own soft limit; the worker has the one the master started with.
    let limits = std::fs::read_to_string("/proc/self/limits")?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let (master_soft, hard): (u64, u64) = {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f[3].parse()?, f[4].parse()?)
    };
    let worker_soft: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("nofile "))
        .unwrap()
        .parse()?;
    assert!(
        worker_soft <= master_soft
            && (worker_soft < master_soft || master_soft < hard || worker_soft == hard),
        "worker {worker_soft}, master {master_soft}, hard {hard}"
    );
    master.send(Shutdown).await?;
    Ok(())
}

#[actix_rt::test]
async fn a_worker_run_as_another_user_gets_its_groups_and_login_environment() -> TestResult {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("user");
    let shared = dir.0.join("shared");
    std::fs::create_dir_all(&shared)?;
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777))?;
    let report = shared.join("report").display().to_string();
    let (master, _watch) = support::master_in(&dir).await;
    let mut config = process_worker("as-nobody", &["--report-self", &report]);
    if let Some(exec) = config.execution.as_mut() {
        exec.user = Some("nobody".into());
    }
    master.send(AddWorker(config)).await??;
    let started = master.send(StartWorker(id("as-nobody"))).await?;
    // SAFETY-free check of who we are: /proc.
    let root = std::fs::read_to_string("/proc/self/status")?
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if !root {
        let err = started.unwrap_err();
        assert!(
            hsu::error_chain(&err).contains("only root can switch users"),
            "{err}"
        );
        return Ok(());
    }
    started?;
    eventually("the report", || {
        std::fs::read_to_string(&report).is_ok_and(|t| t.contains("env SHELL"))
    })
    .await;
    let text = std::fs::read_to_string(&report)?;
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or("")
            .to_string()
    };
    let uid = value("uid ");
    assert!(uid.starts_with("65534,"), "{text}");
    // The user's groups, as initgroups sets them (not none at all).
    assert!(value("groups ").split(',').any(|g| g == "65534"), "{text}");
    assert_eq!(value("env USER="), "nobody", "{text}");
    assert_eq!(value("env LOGNAME="), "nobody", "{text}");
    assert!(
        !value("env HOME=").is_empty() && value("env HOME=") != "/root",
        "{text}"
    );
    master.send(Shutdown).await?;
    Ok(())
}

#[actix_rt::test]
async fn exec_failures_say_why_and_a_bare_name_is_found_on_the_workers_own_path() -> TestResult {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("exec-errors");
    let bin = dir.0.join("bin");
    std::fs::create_dir_all(&bin)?;
    let script = |name: &str, text: &str, mode: u32| -> std::io::Result<String> {
        let path = bin.join(name);
        std::fs::write(&path, text)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
        Ok(path.display().to_string())
    };
    let no_interpreter = script("no-interp", "#!/nonexistent/interpreter\n", 0o755)?;
    let not_executable = script("plain", "#!/bin/sh\nexit 0\n", 0o644)?;
    let marker = dir.file("found");
    script(
        "hsu-found-on-path",
        &format!("#!/bin/sh\necho \"$0\" > {marker}\nexec sleep 30\n"),
        0o755,
    )?;
    let (master, mut watch) = support::master_in(&dir).await;
    let start_error = |name: &str, path: &str| {
        let master = master.clone();
        let (name, path) = (name.to_string(), path.to_string());
        async move {
            let config = WorkerConfig::process(&name, &path, &[]).with_restart("{policy: never}");
            master.send(AddWorker(config)).await.unwrap().unwrap();
            let err = master
                .send(StartWorker(id(&name)))
                .await
                .unwrap()
                .unwrap_err();
            hsu::error_chain(&err)
        }
    };
    let text = start_error("interp", &no_interpreter).await;
    assert!(text.contains("interpreter"), "{text}");
    let text = start_error("plain", &not_executable).await;
    assert!(
        text.contains("Permission denied") && text.contains("not executable"),
        "{text}"
    );
    let text = start_error("nowhere", "hsu-no-such-program").await;
    assert!(text.contains("not found in PATH"), "{text}");
    // The worker's own PATH is searched, as execvp would with the child's environment.
    let mut config =
        WorkerConfig::process("on-path", "hsu-found-on-path", &[]).with_restart("{policy: never}");
    if let Some(exec) = config.execution.as_mut() {
        exec.env.insert(
            "PATH".into(),
            format!("/nonexistent:{}:/usr/bin:/bin", bin.display()),
        );
    }
    master.send(AddWorker(config)).await??;
    master.send(StartWorker(id("on-path"))).await??;
    watch.until("on-path", WorkerState::Running).await;
    eventually("the script's report", || {
        std::fs::read_to_string(&marker).is_ok_and(|t| t.contains("bin/hsu-found-on-path"))
    })
    .await;
    // Every failed start left nothing behind, and the master still answers.
    assert_eq!(master.send(GetAllWorkerStates).await?.len(), 4);
    master.send(Shutdown).await?;
    Ok(())
}

#[actix_rt::test]
async fn a_missing_working_directory_is_named_as_such() -> TestResult {
    let dir = TempDir::new("workdir");
    let (master, _watch) = support::master_in(&dir).await;
    let mut config = process_worker("lost", &[]);
    if let Some(exec) = config.execution.as_mut() {
        exec.working_directory = Some(dir.0.join("no-such-dir"));
    }
    master.send(AddWorker(config)).await??;
    let err = master.send(StartWorker(id("lost"))).await?.unwrap_err();
    let text = hsu::error_chain(&err);
    assert!(
        text.contains("working_directory") && text.contains("no-such-dir"),
        "{text}"
    );
    Ok(())
}

#[actix_rt::test]
async fn an_http_probe_reads_the_whole_answer_so_the_server_sees_no_reset() -> TestResult {
    let dir = TempDir::new("probe-reset");
    // A directory listing of some size: a probe that stops reading early resets the
    // connection while the server still writes, and python logs a ConnectionResetError.
    let served = dir.0.join("served");
    std::fs::create_dir_all(&served)?;
    for i in 0..200 {
        std::fs::write(
            served.join(format!("file-{i:04}-with-a-long-name.txt")),
            "x",
        )?;
    }
    let (master, _watch) = support::master_in(&dir).await;
    for attempt in 1.. {
        let port = support::pick_port()?.to_string();
        let wid = format!("py-{attempt}");
        let mut config = WorkerConfig::process(
            &wid,
            "python3",
            &["-u", "-m", "http.server", &port, "--bind", "127.0.0.1", "--directory", served.to_str().unwrap()],
        )
        .with_restart("{policy: never}")
        .with_health_check(&format!(
            "{{type: http, url: 'http://127.0.0.1:{port}/', interval: 20ms, failure_threshold: 1000}}"
        ));
        config.stop = Some(serde_yaml::from_str("{signal: INT, timeout: 5s}")?);
        master.send(AddWorker(config)).await??;
        master.send(StartWorker(id(&wid))).await??;
        // Thirty probes answered (or the port was taken: try another).
        let start = std::time::Instant::now();
        let log = dir.0.join(format!("logs/{wid}.log"));
        let ok = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.matches("\"GET / HTTP/1.1\" 200").count() >= 30 {
                break true;
            }
            let d = master.send(GetWorkerState(id(&wid))).await??;
            if d.state != WorkerState::Running && attempt < 5 {
                break false;
            }
            assert!(
                start.elapsed() < support::DEADLINE,
                "probes never answered: {text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if !ok {
            continue;
        }
        master.send(StopWorker(id(&wid))).await??;
        let text = std::fs::read_to_string(&log)?;
        assert!(
            !text.contains("ConnectionResetError") && !text.contains("BrokenPipeError"),
            "the server saw resets:\n{text}"
        );
        break;
    }
    Ok(())
}

/// A worker that starts `sh -c "<test worker> ARGS; :"`: the memory and the descendants are
/// the test worker's, one level below the worker's own process (the `; :` keeps the shell
/// from exec'ing).
fn shell_worker(id: &str, inner: &str) -> WorkerConfig {
    WorkerConfig::process(
        id,
        "/bin/sh",
        &["-c", &format!("{} {inner}; :", support::TEST_WORKER)],
    )
    .with_restart("{policy: never}")
}

#[actix_rt::test]
async fn a_memory_limit_counts_the_whole_tree_not_only_the_top_process() -> TestResult {
    let dir = TempDir::new("memlimit-tree");
    let mut config = support::config_in(&dir);
    config.resource_interval = Duration::from_millis(50);
    let (master, mut watch) = support::launch(config).await;
    let mut worker = shell_worker("tree", "--leak-mb 96");
    worker.limits = Some(serde_yaml::from_str(
        "{memory_max: 48MiB, on_violation: stop, grace: 2}",
    )?);
    master.send(AddWorker(worker)).await??;
    master.send(StartWorker(id("tree"))).await??;
    // The shell itself is small; what it started holds the memory.
    let stopped = watch
        .until_where(|e| e.id.as_str() == "tree" && e.from == WorkerState::Stopping)
        .await;
    let d = master.send(GetWorkerState(id("tree"))).await??;
    let reason = d.last_error.clone().unwrap_or_default();
    assert!(
        reason.contains("limit exceeded: memory") && reason.contains("memory_max 48MiB"),
        "{reason} {stopped:?}"
    );
    master.send(Shutdown).await?;
    Ok(())
}

/// The exit is reaped while the output is pumped (one task does both): what a background
/// process of the child writes just after the child exited, into the pipe it inherited,
/// still reaches the log, and the exit is reported once it is in (not only after the
/// drain wait).
#[actix_rt::test]
async fn output_written_just_after_the_exit_by_what_inherited_the_pipe_reaches_the_log(
) -> TestResult {
    let dir = TempDir::new("late-output");
    let (master, mut watch) = support::master_in(&dir).await;
    master
        .send(AddWorker(
            WorkerConfig::process(
                "late",
                "/bin/sh",
                &["-c", "echo early; (sleep 0.3; echo late) & exit 3"],
            )
            .with_restart("{policy: never}"),
        ))
        .await??;
    master.send(StartWorker(id("late"))).await??;
    let failed = watch.until("late", WorkerState::Failed).await;
    let log = std::fs::read_to_string(dir.0.join("logs/late.log"))?;
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines, ["early", "late"], "{log:?} {failed:?}");
    let d = master.send(GetWorkerState(id("late"))).await??;
    assert_eq!(d.last_exit.as_ref().and_then(|e| e.code), Some(3), "{d:?}");
    master.send(Shutdown).await?;
    Ok(())
}

#[actix_rt::test]
async fn what_a_worker_left_behind_with_setsid_goes_when_it_ends_and_when_it_is_stopped(
) -> TestResult {
    let dir = TempDir::new("setsid-tree");
    let (master, mut watch) = support::master_in(&dir).await;
    let escaped = dir.file("escaped.pid");
    // Leaves a setsid'd child behind and exits at once.
    master
        .send(AddWorker(
            WorkerConfig::process(
                "leaver",
                "/bin/sh",
                &[
                    "-c",
                    &format!(
                        "/usr/bin/setsid {} --pid-file {escaped} &",
                        support::TEST_WORKER
                    ),
                ],
            )
            .with_restart("{policy: never}"),
        ))
        .await??;
    master.send(StartWorker(id("leaver"))).await??;
    let pid = support::read_pid(&escaped).await;
    watch.until("leaver", WorkerState::Stopped).await;
    let d = master.send(GetWorkerState(id("leaver"))).await??;
    match d.containment {
        Some("cgroup") => {
            support::eventually("the setsid child is killed with its worker's run", || {
                !support::alive(pid)
            })
            .await
        }
        other => {
            assert_eq!(other, Some("process_group"));
            // Outside any group the master can reach: the test cleans up.
            let _ = hsu::internals::sys::signal_process(pid as i32, libc::SIGKILL);
        }
    }
    // Stopped by hand: a running worker's setsid descendants go with the stop.
    let escaped = dir.file("escaped2.pid");
    master
        .send(AddWorker(
            WorkerConfig::process(
                "holder",
                "/bin/sh",
                &[
                    "-c",
                    &format!(
                        "/usr/bin/setsid {} --pid-file {escaped} & exec sleep 300",
                        support::TEST_WORKER
                    ),
                ],
            )
            .with_restart("{policy: never}"),
        ))
        .await??;
    master.send(StartWorker(id("holder"))).await??;
    let pid = support::read_pid(&escaped).await;
    let contained = master
        .send(GetWorkerState(id("holder")))
        .await??
        .containment
        == Some("cgroup");
    master.send(StopWorker(id("holder"))).await??;
    if contained {
        assert!(
            !support::alive(pid),
            "stopped means the whole cgroup is empty"
        );
    } else {
        let _ = hsu::internals::sys::signal_process(pid as i32, libc::SIGKILL);
    }
    master.send(Shutdown).await?;
    Ok(())
}

/// `master.cgroups: false` turns cgroup placement off: a process worker is contained by its
/// process group, and diagnostics say so.
#[actix_rt::test]
async fn cgroups_false_contains_by_process_group_and_says_so() -> TestResult {
    let dir = TempDir::new("no-cgroups");
    let mut config = support::config_in(&dir);
    config.cgroups = false;
    let (master, _watch) = support::launch(config).await;
    master
        .send(AddWorker(process_worker("plain", &[])))
        .await??;
    master.send(StartWorker(id("plain"))).await??;
    let d = master.send(GetWorkerState(id("plain"))).await??;
    assert_eq!(d.containment, Some("process_group"));
    let pid = d.pid.expect("running");
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    assert!(!cgroup.contains("/hsu/"), "{cgroup}");
    master.send(Shutdown).await?;
    assert!(!alive(pid));
    Ok(())
}
