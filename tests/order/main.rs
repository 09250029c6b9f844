//! `depends_on:`: starts wait for real conditions of real processes and modules (running, a
//! passing health check, a one-shot job's exit 0, a line of output), failures and timeouts
//! are reported by the dependents, shutdown runs in reverse dependency order, and stops,
//! restarts and concurrent requests during a wait leave one instance and no wedged state.
//! Ordering is checked on the event stream, never by timing.

#[path = "../support/mod.rs"]
mod support;

mod groups;

use std::sync::Arc;

use actix::Addr;
use hsu::{
    AddWorker, ErrorKind, GetWorkerSummary, MasterActor, RestartWorker, Shutdown, StartWorker,
    StopWorker, WorkerConfig, WorkerState, WorkerStateChanged,
};
use support::{id, process_worker, test_worker, Calls, TempDir, Watch};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A master with logs and run files under `dir` and the `test` module factory.
async fn master(dir: &TempDir) -> (Addr<MasterActor>, Watch, Arc<Calls>) {
    support::install_worker_logs();
    let (master, watch) = support::master_in(dir).await;
    let calls = Arc::new(Calls::default());
    let c = calls.clone();
    master
        .send(hsu::RegisterNativeModuleFactory::new("test", move || {
            Box::new(support::TestModule::new(c.clone()))
        }))
        .await
        .unwrap()
        .unwrap();
    (master, watch, calls)
}

fn with_deps(mut worker: WorkerConfig, yaml: &str) -> WorkerConfig {
    let parsed = WorkerConfig::from_yaml(&format!(
        "{{id: x, type: module, module_name: m, depends_on: {yaml}}}"
    ))
    .expect("a valid depends_on literal");
    worker.depends_on = parsed.depends_on;
    worker
}

/// Sends a start without waiting for its reply (a waiting start replies late).
fn start_later(
    master: &Addr<MasterActor>,
    name: &str,
) -> tokio::task::JoinHandle<Result<(), hsu::MasterError>> {
    let master = master.clone();
    let name = id(name);
    actix_rt::spawn(async move { master.send(StartWorker(name)).await.unwrap() })
}

/// Polls `name`'s summary (bounded by the support deadline) until `pred` holds.
async fn until_row(
    master: &Addr<MasterActor>,
    name: &str,
    what: &str,
    pred: impl Fn(&hsu::WorkerSummary) -> bool,
) -> hsu::WorkerSummary {
    let start = std::time::Instant::now();
    loop {
        let row = summary(master, name).await;
        if pred(&row) {
            return row;
        }
        assert!(
            start.elapsed() < support::DEADLINE,
            "{name}: {what}: {row:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Index in the event stream of `id` entering `state` (the `n`-th time, from 1).
fn at(seen: &[WorkerStateChanged], id: &str, state: WorkerState, n: usize) -> usize {
    seen.iter()
        .enumerate()
        .filter(|(_, e)| e.id.as_str() == id && e.to == state)
        .nth(n - 1)
        .map(|(i, _)| i)
        .unwrap_or_else(|| panic!("{id} never entered {state} ({n})"))
}

async fn summary(master: &Addr<MasterActor>, name: &str) -> hsu::WorkerSummary {
    master
        .send(GetWorkerSummary(id(name)))
        .await
        .unwrap()
        .unwrap()
}

#[actix_rt::test]
async fn a_chain_of_mixed_kinds_starts_in_order_of_its_conditions_and_stops_in_reverse(
) -> TestResult {
    let dir = TempDir::new("order-chain");
    let (master, mut watch, _) = master(&dir).await;
    let health = dir.file("db-healthy");
    // db: a process, healthy once the test creates its health file.
    let db = process_worker("db", &[]).with_health_check(&format!(
        "{{type: exec, command: [/bin/test, -f, {health}], interval: 20ms, timeout: 2s, failure_threshold: 1000}}"
    ));
    // api: a module that waits for db to be healthy; web: a process that waits for api.
    let api = with_deps(test_worker("api", "{}"), "{db: healthy}");
    let web = with_deps(process_worker("web", &[]), "[api]");
    // Added dependents first: the order of addition means nothing.
    for w in [web, api, db] {
        master.send(AddWorker(w)).await??;
    }
    let starts: Vec<_> = ["web", "api", "db"]
        .iter()
        .map(|w| start_later(&master, w))
        .collect();
    let waiting = watch.until("api", WorkerState::Waiting).await;
    assert_eq!(waiting.reason.as_deref(), Some("waiting for db (healthy)"));
    let waiting = watch.until("web", WorkerState::Waiting).await;
    assert!(
        waiting
            .reason
            .as_deref()
            .unwrap()
            .starts_with("waiting for api (started)"),
        "{waiting:?}"
    );
    watch.until("db", WorkerState::Running).await;
    // db runs but fails its probe: api keeps waiting, visibly.
    until_row(&master, "db", "probed unhealthy twice", |r| {
        r.health_failures_total >= 2
    })
    .await;
    let row = summary(&master, "api").await;
    assert_eq!(row.state, WorkerState::Waiting);
    assert!(
        row.why
            .as_deref()
            .unwrap()
            .starts_with("waiting for db (healthy)"),
        "{row:?}"
    );
    assert_eq!(row.last_error, None, "waiting is no error");
    std::fs::write(&health, "")?;
    watch.until("web", WorkerState::Running).await;
    for start in starts {
        start.await??;
    }
    let seen = &watch.seen;
    assert!(at(seen, "db", WorkerState::Running, 1) < at(seen, "api", WorkerState::Starting, 1));
    assert!(at(seen, "api", WorkerState::Running, 1) < at(seen, "web", WorkerState::Starting, 1));

    let report = master.send(Shutdown).await?;
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(report.stopped.len(), 3);
    watch.until("db", WorkerState::Terminating).await;
    let seen = &watch.seen;
    assert!(at(seen, "web", WorkerState::Stopped, 1) < at(seen, "api", WorkerState::Stopping, 1));
    assert!(at(seen, "api", WorkerState::Stopped, 1) < at(seen, "db", WorkerState::Stopping, 1));
    Ok(())
}

#[actix_rt::test]
async fn a_slow_stop_delays_only_what_it_depends_on() -> TestResult {
    let dir = TempDir::new("order-slow-stop");
    let (master, mut watch, _) = master(&dir).await;
    // slow ignores SIGTERM: its stop takes the whole 3 s grace period.
    let ready = dir.file("slow.pid");
    let mut slow = with_deps(
        process_worker("slow", &["--ignore-term", "--pid-file", &ready]),
        "[base]",
    );
    slow.stop = Some(serde_yaml::from_str("{timeout: 3s}")?);
    let workers = [
        process_worker("base", &[]),
        slow,
        process_worker("db", &[]),
        with_deps(process_worker("api", &[]), "[db]"),
    ];
    for w in workers {
        let name = w.id.clone();
        master.send(AddWorker(w)).await??;
        start_later(&master, &name);
    }
    for w in ["base", "slow", "db", "api"] {
        watch.until(w, WorkerState::Running).await;
    }
    // Its SIGTERM handler is in place once it wrote its pid.
    support::read_pid(&ready).await;
    master.send(Shutdown).await?;
    for w in ["base", "slow", "db", "api"] {
        watch.until(w, WorkerState::Terminating).await;
    }
    let seen = &watch.seen;
    // The unrelated branch is done before the slow worker; base waited for it.
    assert!(at(seen, "db", WorkerState::Stopped, 1) < at(seen, "slow", WorkerState::Stopped, 1));
    assert!(at(seen, "slow", WorkerState::Stopped, 1) < at(seen, "base", WorkerState::Stopping, 1));
    assert!(at(seen, "api", WorkerState::Stopped, 1) < at(seen, "db", WorkerState::Stopping, 1));
    Ok(())
}

#[actix_rt::test]
async fn a_migration_job_gates_its_dependent_on_exit_zero_and_blocks_it_on_failure() -> TestResult {
    let dir = TempDir::new("order-job");
    let (master, mut watch, calls) = master(&dir).await;
    let runs = dir.file("migrate-runs");
    master
        .send(AddWorker(process_worker(
            "migrate",
            &["--count", &runs, "--sleep", "100"],
        )))
        .await??;
    master
        .send(AddWorker(with_deps(
            test_worker("api", "{}"),
            "{migrate: completed_successfully}",
        )))
        .await??;
    let api = start_later(&master, "api");
    watch.until("api", WorkerState::Waiting).await;
    master.send(StartWorker(id("migrate"))).await??;
    api.await??;
    watch.until("api", WorkerState::Running).await;
    let seen = &watch.seen;
    assert!(
        at(seen, "migrate", WorkerState::Stopped, 1) < at(seen, "api", WorkerState::Starting, 1)
    );
    let exit = summary(&master, "migrate")
        .await
        .last_exit
        .expect("an exit");
    assert_eq!(exit.code, Some(0));
    assert_eq!(Calls::get(&calls.starts), 1);

    // A job that fails: its dependent is blocked and says why, and is not restarted.
    master
        .send(AddWorker(process_worker("bad-job", &["--exit", "3"])))
        .await??;
    master
        .send(AddWorker(with_deps(
            test_worker("api2", "{}"),
            "{bad-job: completed_successfully}",
        )))
        .await??;
    let api2 = start_later(&master, "api2");
    watch.until("api2", WorkerState::Waiting).await;
    master.send(StartWorker(id("bad-job"))).await??;
    let failed = watch.until("api2", WorkerState::FailedStart).await;
    let reason = failed.reason.unwrap();
    assert!(
        reason.contains("dependency bad-job (completed_successfully) failed")
            && reason.contains("exit"),
        "{reason}"
    );
    let err = api2.await?.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Dependency);
    assert_eq!(Calls::get(&calls.starts), 1, "api2 never started");
    // Its restart policy (on_failure, no backoff) did not loop it through waits.
    assert_eq!(watch.count("api2", WorkerState::Waiting), 1);
    master.send(Shutdown).await?;
    Ok(())
}

#[actix_rt::test]
async fn log_lines_of_a_process_and_of_a_module_release_their_dependents() -> TestResult {
    let dir = TempDir::new("order-log-line");
    let (master, mut watch, _) = master(&dir).await;
    master
        .send(AddWorker(process_worker("printer", &["--flood", "5"])))
        .await??;
    master
        .send(AddWorker(test_worker(
            "announcer",
            "{log: 'module is ready to serve'}",
        )))
        .await??;
    master
        .send(AddWorker(with_deps(
            process_worker("reader", &[]),
            r#"{printer: {log_line: 'line 0+5$'}, announcer: {log_line: 'ready to serve'}}"#,
        )))
        .await??;
    let reader = start_later(&master, "reader");
    let waiting = watch.until("reader", WorkerState::Waiting).await;
    assert!(
        waiting
            .reason
            .as_deref()
            .unwrap()
            .contains("printer (log_line \"line 0+5$\")"),
        "{waiting:?}"
    );
    master.send(StartWorker(id("printer"))).await??;
    master.send(StartWorker(id("announcer"))).await??;
    reader.await??;
    watch.until("reader", WorkerState::Running).await;
    let seen = &watch.seen;
    // A log line needs no `running` (the module prints it inside its `start`), only a run.
    assert!(
        at(seen, "announcer", WorkerState::Starting, 1)
            < at(seen, "reader", WorkerState::Starting, 1)
    );
    assert!(
        at(seen, "printer", WorkerState::Starting, 1)
            < at(seen, "reader", WorkerState::Starting, 1)
    );
    master.send(Shutdown).await?;
    Ok(())
}

#[actix_rt::test]
async fn a_wait_that_times_out_fails_naming_it_and_the_restart_policy_applies() -> TestResult {
    let dir = TempDir::new("order-timeout");
    let (master, mut watch, calls) = master(&dir).await;
    // never-healthy: its probe always fails (but not often enough to fail it).
    master
        .send(AddWorker(process_worker("never-healthy", &[]).with_health_check(
            "{type: exec, command: [/bin/false], interval: 20ms, timeout: 2s, failure_threshold: 1000}",
        )))
        .await??;
    master.send(StartWorker(id("never-healthy"))).await??;
    let api = with_deps(
        test_worker("api", "{}"),
        "{never-healthy: {condition: healthy, timeout: 200ms}}",
    )
    .with_restart("{policy: on_failure, max_restarts: 1, window: 60s, backoff: {initial: 0s, max: 0s, jitter: 0.0}}");
    master.send(AddWorker(api)).await??;
    let err = master
        .send(StartWorker(id("api")))
        .await?
        .expect_err("the wait times out");
    assert_eq!(err.kind(), ErrorKind::Dependency);
    let text = err.to_string();
    assert!(
        text.contains("timed out after 200ms waiting for never-healthy (healthy)"),
        "{text}"
    );
    // One automatic restart: it waits again, times out again, and the circuit opens.
    watch.until("api", WorkerState::FailedStart).await;
    watch.until("api", WorkerState::FailedStart).await;
    until_row(&master, "api", "circuit open", |r| r.circuit_open).await;
    assert_eq!(watch.count("api", WorkerState::Waiting), 2);
    assert_eq!(Calls::get(&calls.starts), 0);
    master.send(Shutdown).await?;
    Ok(())
}

#[actix_rt::test]
async fn stop_restart_and_concurrent_requests_while_waiting_leave_one_instance() -> TestResult {
    let dir = TempDir::new("order-races");
    let (master, mut watch, _) = master(&dir).await;
    let health = dir.file("db-healthy");
    let runs = dir.file("api-runs");
    master
        .send(AddWorker(process_worker("db", &[]).with_health_check(&format!(
            "{{type: exec, command: [/bin/test, -f, {health}], interval: 20ms, timeout: 2s, failure_threshold: 1000}}"
        ))))
        .await??;
    master.send(StartWorker(id("db"))).await??;
    master
        .send(AddWorker(with_deps(
            process_worker("api", &["--count", &runs]),
            "{db: healthy}",
        )))
        .await??;

    // Stop while waiting: the start is answered with the cancellation, the worker is stopped,
    // and db becoming healthy later does not start it.
    let first = start_later(&master, "api");
    watch.until("api", WorkerState::Waiting).await;
    master.send(StopWorker(id("api"))).await??;
    let err = first.await?.unwrap_err();
    assert!(
        err.to_string()
            .contains("stopped while waiting for db (healthy)"),
        "{err}"
    );
    assert_eq!(summary(&master, "api").await.state, WorkerState::Stopped);

    // Start, then restart four times concurrently, all while waiting.
    let mut replies = vec![start_later(&master, "api")];
    watch.until("api", WorkerState::Waiting).await;
    for _ in 0..4 {
        let master = master.clone();
        replies.push(actix_rt::spawn(async move {
            master
                .send(RestartWorker {
                    id: id("api"),
                    force: false,
                })
                .await
                .unwrap()
        }));
    }
    until_row(&master, "api", "restarts joined the wait", |r| {
        r.restart_count >= 4
    })
    .await;
    std::fs::write(&health, "")?;
    for reply in replies {
        // The first start runs it; joined requests see it run (or, for one that came in
        // behind the start, that it is already running).
        let _ = reply.await?;
    }
    watch.until("api", WorkerState::Running).await;
    let row = summary(&master, "api").await;
    assert_eq!(row.state, WorkerState::Running);
    support::eventually("one launch", || dir.lines("api-runs") >= 1).await;
    assert_eq!(
        dir.lines("api-runs"),
        1,
        "exactly one instance was launched"
    );
    assert_eq!(watch.count("api", WorkerState::Starting), 1);

    master.send(Shutdown).await?;
    assert_eq!(dir.lines("api-runs"), 1);
    Ok(())
}

#[actix_rt::test]
async fn a_stop_during_an_automatic_restart_that_waits_for_its_dependency_sticks() -> TestResult {
    let dir = TempDir::new("order-restart-wait");
    let (master, mut watch, _) = master(&dir).await;
    let (runs, pid) = (dir.file("api-runs"), dir.file("api.pid"));
    master.send(AddWorker(process_worker("db", &[]))).await??;
    master.send(StartWorker(id("db"))).await??;
    master
        .send(AddWorker(with_deps(
            process_worker(
                "api",
                &["--count", &runs, "--pid-file", &pid, "--usr1-exit", "3"],
            )
            .with_restart("{policy: on_failure, backoff: {initial: 0s, max: 0s, jitter: 0.0}}"),
            "[db]",
        )))
        .await??;
    master.send(StartWorker(id("api"))).await??;
    // db goes down on purpose, then api crashes: its automatic restart waits for db.
    master.send(StopWorker(id("db"))).await??;
    let p = support::read_pid(&pid).await;
    let _ = hsu::internals::sys::signal_process(p as i32, libc::SIGUSR1);
    let waiting = watch.until("api", WorkerState::Waiting).await;
    assert!(
        waiting
            .reason
            .as_deref()
            .unwrap()
            .contains("`db` is stopped; start it"),
        "{waiting:?}"
    );
    // Stopped while its restart waits: it stays stopped when db comes back.
    master.send(StopWorker(id("api"))).await??;
    watch.until("api", WorkerState::Stopped).await;
    master
        .send(AddWorker(with_deps(process_worker("canary", &[]), "[db]")))
        .await??;
    let canary = start_later(&master, "canary");
    watch.until("canary", WorkerState::Waiting).await;
    master.send(StartWorker(id("db"))).await??;
    canary.await??;
    // The canary's wait was released by db running; api's would have been too.
    assert_eq!(summary(&master, "api").await.state, WorkerState::Stopped);
    assert_eq!(dir.lines("api-runs"), 1, "not launched again");
    master.send(Shutdown).await?;
    Ok(())
}

#[actix_rt::test]
async fn a_diamond_starts_its_join_after_both_branches_and_stops_it_first() -> TestResult {
    let dir = TempDir::new("order-diamond");
    let (master, mut watch, _) = master(&dir).await;
    // base <- left, right <- top (a module), mixed kinds.
    for w in [
        with_deps(test_worker("top", "{}"), "[left, right]"),
        with_deps(process_worker("left", &[]), "[base]"),
        with_deps(test_worker("right", "{}"), "[base]"),
        process_worker("base", &[]),
    ] {
        let name = w.id.clone();
        master.send(AddWorker(w)).await??;
        start_later(&master, &name);
    }
    watch.until("top", WorkerState::Running).await;
    let seen = &watch.seen;
    for branch in ["left", "right"] {
        assert!(
            at(seen, "base", WorkerState::Running, 1) < at(seen, branch, WorkerState::Starting, 1)
        );
        assert!(
            at(seen, branch, WorkerState::Running, 1) < at(seen, "top", WorkerState::Starting, 1)
        );
    }
    master.send(Shutdown).await?;
    watch.until("base", WorkerState::Terminating).await;
    let seen = &watch.seen;
    for branch in ["left", "right"] {
        assert!(
            at(seen, "top", WorkerState::Stopped, 1) < at(seen, branch, WorkerState::Stopping, 1)
        );
        assert!(
            at(seen, branch, WorkerState::Stopped, 1) < at(seen, "base", WorkerState::Stopping, 1)
        );
    }
    Ok(())
}

#[actix_rt::test]
async fn a_dependency_that_fails_for_good_blocks_its_dependents_transitively() -> TestResult {
    let dir = TempDir::new("order-blocked");
    let (master, mut watch, calls) = master(&dir).await;
    master
        .send(AddWorker(
            test_worker("db", "{start: error}").with_restart("{policy: never}"),
        ))
        .await??;
    master
        .send(AddWorker(with_deps(test_worker("api", "{}"), "[db]")))
        .await??;
    master
        .send(AddWorker(with_deps(test_worker("web", "{}"), "[api]")))
        .await??;
    let web = start_later(&master, "web");
    let api = start_later(&master, "api");
    watch.until("web", WorkerState::Waiting).await;
    assert!(master.send(StartWorker(id("db"))).await?.is_err());
    let failed = watch.until("api", WorkerState::FailedStart).await;
    assert!(
        failed
            .reason
            .as_deref()
            .unwrap()
            .contains("dependency db (started) failed: `db` is failed_start (")
            && failed
                .reason
                .as_deref()
                .unwrap()
                .contains("scripted start failure"),
        "{failed:?}"
    );
    let failed = watch.until("web", WorkerState::FailedStart).await;
    assert!(
        failed
            .reason
            .as_deref()
            .unwrap()
            .contains("dependency api (started) failed"),
        "{failed:?}"
    );
    assert_eq!(api.await?.unwrap_err().kind(), ErrorKind::Dependency);
    assert_eq!(web.await?.unwrap_err().kind(), ErrorKind::Dependency);
    // db's one start attempt; neither dependent ever ran.
    assert_eq!(Calls::get(&calls.starts), 1);
    // A dependency added while the dependent waits for it releases it.
    master
        .send(AddWorker(with_deps(test_worker("late", "{}"), "[later]")))
        .await??;
    let late = start_later(&master, "late");
    let waiting = watch.until("late", WorkerState::Waiting).await;
    assert!(
        waiting
            .reason
            .as_deref()
            .unwrap()
            .contains("`later` is not added"),
        "{waiting:?}"
    );
    master.send(AddWorker(test_worker("later", "{}"))).await??;
    master.send(StartWorker(id("later"))).await??;
    late.await??;
    master.send(Shutdown).await?;
    Ok(())
}

#[actix_rt::test]
async fn a_cycle_through_the_running_workers_is_refused_naming_its_members() -> TestResult {
    let dir = TempDir::new("order-cycle");
    let (master, _watch, _) = master(&dir).await;
    master
        .send(AddWorker(with_deps(test_worker("a", "{}"), "[b]")))
        .await??;
    master
        .send(AddWorker(with_deps(test_worker("b", "{}"), "[c]")))
        .await??;
    let err = master
        .send(AddWorker(with_deps(test_worker("c", "{}"), "[a]")))
        .await?
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Validation);
    assert!(err.to_string().contains("c -> a -> b -> c"), "{err}");
    master.send(Shutdown).await?;
    Ok(())
}

#[actix_rt::test]
async fn a_scheduled_job_runs_at_its_times_and_skips_a_time_while_still_running() -> TestResult {
    let dir = TempDir::new("order-schedule");
    let (master, _watch, _) = master(&dir).await;
    let runs = dir.file("job-runs");
    // Every second; each run takes 2.5 s, so some times find it still running.
    let mut job = process_worker("job", &["--count", &runs, "--sleep", "2500"]);
    job.schedule = Some("* * * * * *".into());
    master.send(AddWorker(job)).await??;
    // Not started at add: it waits for its time.
    let row = summary(&master, "job").await;
    assert_eq!(row.state, WorkerState::Idle);
    let schedule = row.schedule.clone().expect("a schedule");
    assert_eq!(schedule.cron, "* * * * * *");
    assert_eq!(schedule.zone, "UTC");
    assert!(schedule
        .next_run
        .is_some_and(|t| t > std::time::SystemTime::now() - std::time::Duration::from_secs(1)));
    assert!(
        row.why.as_deref().unwrap_or("").starts_with("next run "),
        "{row:?}"
    );
    let row = until_row(&master, "job", "ran twice and skipped", |r| {
        r.schedule
            .as_ref()
            .is_some_and(|s| s.runs >= 2 && s.skipped >= 1)
    })
    .await;
    let s = row.schedule.unwrap();
    // Every run started is one launch, never two at once (a skipped time started nothing).
    support::eventually("the launches written", || {
        dir.lines("job-runs") as u64 >= s.runs
    })
    .await;
    let launches = dir.lines("job-runs") as u64;
    assert!(
        launches == s.runs || launches == s.runs + 1,
        "{launches} launches, {s:?}"
    );
    master.send(Shutdown).await?;
    Ok(())
}

#[actix_rt::test]
async fn a_disabled_worker_is_added_by_apply_but_started_only_by_hand() -> TestResult {
    let dir = TempDir::new("disabled");
    let (master, mut watch, calls) = master(&dir).await;
    let yaml = "workers:\n  - {id: on, type: module, module_name: test}\n  - {id: off, type: module, module_name: test, enabled: false}\n";
    let specs =
        hsu::HsuConfig::parse(yaml, std::path::Path::new("t.yaml"))?.validate(&|_| true, None)?;
    let report = master
        .send(hsu::Apply {
            specs,
            dry_run: false,
        })
        .await??;
    assert_eq!(report.added, [id("on"), id("off")]);
    watch.until("on", WorkerState::Running).await;
    let off = master.send(GetWorkerSummary(id("off"))).await??;
    assert_eq!(off.state, WorkerState::Idle);
    assert_eq!(
        off.why.as_deref(),
        Some("disabled (enabled: false): `hsu start` starts it")
    );
    assert_eq!(Calls::get(&calls.starts), 1);
    master.send(StartWorker(id("off"))).await??;
    let off = master.send(GetWorkerSummary(id("off"))).await??;
    assert_eq!((off.state, off.why), (WorkerState::Running, None));
    master.send(Shutdown).await?;
    Ok(())
}
