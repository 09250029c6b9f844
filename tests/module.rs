//! Native module workers through the master: lifecycle, isolation, supervision, health.

mod support;

use std::time::Duration;

use hsu::{
    AddWorker, ErrorKind, GetAllWorkerStates, GetWorkerState, RemoveWorker, RestartWorker,
    Shutdown, StartWorker, StopWorker, WorkerConfig, WorkerState,
};
use support::{id, test_worker, Calls};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[actix_rt::test]
async fn start_stop_restart_go_through_the_state_machine() -> TestResult {
    let (master, mut watch, calls) = support::master().await;
    master.send(AddWorker(test_worker("svc", "{}"))).await??;
    let d = master.send(GetWorkerState(id("svc"))).await??;
    assert_eq!(d.state, WorkerState::Idle);
    assert_eq!(Calls::get(&calls.initializes), 1);

    master.send(StartWorker(id("svc"))).await??;
    let d = master.send(GetWorkerState(id("svc"))).await??;
    assert_eq!(d.state, WorkerState::Running);
    assert_eq!(d.deployment, hsu::Deployment::Native);
    assert_eq!(d.pid, None, "modules have no pid");
    assert_eq!(d.executable_path, "in-proc-module:test");
    let module = d.module.expect("module diagnostics");
    assert_eq!(module.info.name, "test");
    assert_eq!(module.info.version, "0.0.1");
    assert!(module.loaded_at.is_some());
    assert!(d.started_at.is_some() && d.uptime.is_some());

    master
        .send(RestartWorker {
            id: id("svc"),
            force: false,
        })
        .await??;
    assert_eq!(Calls::get(&calls.stops), 1);
    assert_eq!(Calls::get(&calls.starts), 2);
    let d = master.send(GetWorkerState(id("svc"))).await??;
    assert_eq!(d.state, WorkerState::Running);
    assert_eq!(d.restart_count, 1);

    master.send(StopWorker(id("svc"))).await??;
    assert_eq!(
        Calls::get(&calls.live_tasks),
        0,
        "the module's task ended with the stop"
    );
    let d = master.send(GetWorkerState(id("svc"))).await??;
    assert_eq!((d.state, d.uptime), (WorkerState::Stopped, None));

    // A clean stop keeps the instance: the next start does not initialize again.
    master.send(StartWorker(id("svc"))).await??;
    assert_eq!(Calls::get(&calls.initializes), 1);
    master.send(StopWorker(id("svc"))).await??;

    let expected = [
        "idle -> starting",
        "starting -> running",
        "running -> stopping",
        "stopping -> stopped",
        "stopped -> starting",
        "starting -> running",
        "running -> stopping",
        "stopping -> stopped",
        "stopped -> starting",
        "starting -> running",
        "running -> stopping",
        "stopping -> stopped",
    ];
    for want in expected {
        let e = watch.until_where(|_| true).await;
        assert_eq!(format!("{} -> {}", e.from, e.to), want);
    }
    // Invalid transitions are errors, not overwrites.
    let err = master.send(StopWorker(id("svc"))).await?.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidState);
    assert!(
        err.to_string().contains("`svc`") && err.to_string().contains("stopped"),
        "{err}"
    );
    Ok(())
}

#[actix_rt::test]
async fn two_instances_of_one_factory_serve_with_their_own_config() -> TestResult {
    let (master, _watch, _) = support::master().await;
    for id in ["echo-a", "echo-b"] {
        let config = WorkerConfig::native(id, "echo").with_config("{host: 127.0.0.1, port: 0}");
        master.send(AddWorker(config)).await??;
        master.send(StartWorker(support::id(id))).await??;
    }
    let mut addresses = Vec::new();
    for id in ["echo-a", "echo-b"] {
        let d = master.send(GetWorkerState(support::id(id))).await??;
        let endpoint = d.module.unwrap().info.endpoints[0].clone();
        let address = endpoint.trim_start_matches("http://").to_string();
        let response = support::http(&address, "POST", "/greet", "hi").await?;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(
            response.contains(&format!("echo from {id}: POST /greet\nhi")),
            "{response}"
        );
        addresses.push(address);
    }
    assert_ne!(addresses[0], addresses[1]);
    master.send(StopWorker(id("echo-a"))).await??;
    assert!(
        support::http(&addresses[0], "GET", "/", "").await.is_err(),
        "a stopped echo closes its port"
    );
    assert!(support::http(&addresses[1], "GET", "/health", "")
        .await?
        .ends_with("ok\n"));
    master.send(Shutdown).await?;
    Ok(())
}

#[actix_rt::test]
async fn failing_initialize_rejects_add_worker() -> TestResult {
    let (master, _watch, _) = support::master().await;
    let err = master
        .send(AddWorker(test_worker(
            "bad-init",
            "{fail_initialize: true}",
        )))
        .await?
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ModuleFailed);
    let text = hsu::error_chain(&err);
    assert!(
        text.contains("`bad-init`")
            && text.contains("initialize")
            && text.contains("scripted initialize failure"),
        "{text}"
    );
    let missing = master
        .send(GetWorkerState(id("bad-init")))
        .await?
        .unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound);
    // The id is free again.
    master
        .send(AddWorker(test_worker("bad-init", "{}")))
        .await??;
    Ok(())
}

#[actix_rt::test]
async fn panic_in_start_gives_failed_start_and_the_master_keeps_answering() -> TestResult {
    let (master, _watch, _) = support::master().await;
    master
        .send(AddWorker(test_worker("healthy", "{}")))
        .await??;
    master.send(StartWorker(id("healthy"))).await??;
    let config = test_worker("panicky", "{start: panic}").with_restart("{policy: never}");
    master.send(AddWorker(config)).await??;
    let err = master.send(StartWorker(id("panicky"))).await?.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Panicked);
    let d = master.send(GetWorkerState(id("panicky"))).await??;
    assert_eq!(d.state, WorkerState::FailedStart);
    assert!(
        d.last_error
            .as_deref()
            .unwrap_or("")
            .contains("scripted panic in start"),
        "{:?}",
        d.last_error
    );
    let all = master.send(GetAllWorkerStates).await?;
    assert_eq!(all.len(), 2);
    assert_eq!(
        all[0].state,
        WorkerState::Running,
        "the other worker is untouched"
    );
    Ok(())
}

#[actix_rt::test]
async fn panics_in_stop_and_is_healthy_fail_only_that_worker() -> TestResult {
    let (master, mut watch, _) = support::master().await;
    master
        .send(AddWorker(test_worker("bad-stop", "{stop: panic}")))
        .await??;
    master.send(StartWorker(id("bad-stop"))).await??;
    let err = master.send(StopWorker(id("bad-stop"))).await?.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Panicked);
    let d = master.send(GetWorkerState(id("bad-stop"))).await??;
    assert_eq!(d.state, WorkerState::Failed);
    assert!(d.last_error.unwrap().contains("scripted panic in stop"));

    let config = test_worker("bad-health", "{healthy: panic}")
        .with_restart("{policy: never}")
        .with_health_check("{interval: 10ms, failure_threshold: 5}");
    master.send(AddWorker(config)).await??;
    master.send(StartWorker(id("bad-health"))).await??;
    let failed = watch.until("bad-health", WorkerState::Failed).await;
    assert!(failed
        .reason
        .unwrap()
        .contains("scripted panic in is_healthy"));
    // Still serving requests.
    master.send(StartWorker(id("bad-stop"))).await??;
    Ok(())
}

#[actix_rt::test]
async fn hanging_start_times_out_while_state_queries_are_answered() -> TestResult {
    let (master, mut watch, _) = support::master().await;
    let mut config = test_worker("hang", "{start: hang}").with_restart("{policy: never}");
    config.start_timeout = Some(Duration::from_millis(300));
    master.send(AddWorker(config)).await??;
    let starting = master.send(StartWorker(id("hang")));
    let pending = actix_rt::spawn(starting);
    watch.until("hang", WorkerState::Starting).await;
    // The start hangs, yet the master and the worker answer.
    let d = master.send(GetWorkerState(id("hang"))).await??;
    assert_eq!(d.state, WorkerState::Starting);
    let err = pending.await??.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(err.to_string().contains("`hang`: start timed out"), "{err}");
    let d = master.send(GetWorkerState(id("hang"))).await??;
    assert_eq!(d.state, WorkerState::FailedStart);
    Ok(())
}

#[actix_rt::test]
async fn a_blocking_module_does_not_stall_the_master() -> TestResult {
    let (master, mut watch, _) = support::master().await;
    master
        .send(AddWorker(test_worker(
            "blocker",
            "{start: block, block_ms: 1500}",
        )))
        .await??;
    let pending = actix_rt::spawn(master.send(StartWorker(id("blocker"))));
    watch.until("blocker", WorkerState::Starting).await;
    // While its thread is blocked, other workers are added, started and stopped.
    master.send(AddWorker(test_worker("other", "{}"))).await??;
    master.send(StartWorker(id("other"))).await??;
    assert_eq!(
        master.send(GetWorkerState(id("blocker"))).await??.state,
        WorkerState::Starting
    );
    master.send(StopWorker(id("other"))).await??;
    pending.await???;
    assert_eq!(
        master.send(GetWorkerState(id("blocker"))).await??.state,
        WorkerState::Running
    );
    Ok(())
}

/// A module whose `start` blocks its thread for 3 s under a 1 s `start_timeout`, restarted at
/// once each time: it holds one of the two module threads at most, its restarts are refused
/// while that call blocks, and a healthy neighbour probed every 50 ms is never failed. (Before:
/// each retry blocked one more thread, and the neighbour's probes timed out.)
#[actix_rt::test]
async fn a_module_that_blocks_its_thread_holds_one_thread_and_its_neighbours_stay_healthy(
) -> TestResult {
    let config = hsu::MasterConfig {
        module_threads: Some(2),
        ..hsu::MasterConfig::default()
    };
    let (master, watch, calls) = support::master_with(config).await;
    let mut blocker = test_worker("blocker", "{start: block, block_ms: 3000}").with_restart(
        "{policy: always, max_restarts: 1000, window: 60s, backoff: {initial: 0s, max: 0s, jitter: 0.0}}",
    );
    blocker.start_timeout = Some(Duration::from_secs(1));
    let steady = test_worker("steady", "{}")
        .with_health_check("{interval: 50ms, timeout: 300ms, failure_threshold: 2}");
    master.send(AddWorker(steady)).await??;
    master.send(StartWorker(id("steady"))).await??;
    master.send(AddWorker(blocker)).await??;
    let err = master
        .send(StartWorker(id("blocker")))
        .await?
        .expect_err("the blocked start fails");
    assert!(err.to_string().contains("blocked a worker thread"), "{err}");
    // While the call blocks, diagnostics say so, and restarts are refused without a thread.
    let d = master.send(GetWorkerState(id("blocker"))).await??;
    let blocked = d
        .module
        .as_ref()
        .and_then(|m| m.blocked.clone())
        .expect("diagnostics show the blocked call");
    assert_eq!(blocked.call, "start");
    let checks = Calls::get(&calls.health_checks);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    // The neighbour was probed all along (its probes did not wait for a thread) and never failed.
    assert!(
        Calls::get(&calls.health_checks) >= checks + 20,
        "{} probes in 3.5 s",
        Calls::get(&calls.health_checks) - checks
    );
    assert_eq!(
        watch.count("steady", WorkerState::Failed),
        0,
        "{:?}",
        watch.transitions()
    );
    let s = master.send(GetWorkerState(id("steady"))).await??;
    assert_eq!((s.state, s.restart_count), (WorkerState::Running, 0));
    // Two starts reached the module: the first, and one after it returned at 3 s.
    assert_eq!(
        Calls::get(&calls.starts),
        3,
        "steady's start and blocker's two"
    );
    let d = master.send(GetWorkerState(id("blocker"))).await??;
    assert!(
        d.last_error
            .as_deref()
            .unwrap_or("")
            .contains("refused until it returns")
            || d.state == WorkerState::Starting,
        "{d:?}"
    );
    Ok(())
}

#[actix_rt::test]
async fn start_failures_restart_with_backoff_until_max_restarts_then_circuit_opens() -> TestResult {
    let (master, mut watch, calls) = support::master().await;
    let config = test_worker("crashy", "{start: error}").with_restart(
        "{policy: on_failure, max_restarts: 2, window: 60s, backoff: {initial: 20ms, max: 100ms, multiplier: 2.0, jitter: 0.0}}",
    );
    master.send(AddWorker(config)).await??;
    assert!(master.send(StartWorker(id("crashy"))).await?.is_err());
    for _ in 0..3 {
        watch.until("crashy", WorkerState::FailedStart).await;
    }
    let d = master.send(GetWorkerState(id("crashy"))).await??;
    assert!(d.circuit_open, "{d:?}");
    assert_eq!(d.state, WorkerState::FailedStart);
    assert!(
        d.last_error.as_deref().unwrap().contains("circuit open"),
        "{:?}",
        d.last_error
    );
    assert_eq!(Calls::get(&calls.starts), 3, "one start and two restarts");
    assert_eq!(d.restart_count, 2);
    // Each failed start made a fresh instance (create + initialize).
    assert_eq!(Calls::get(&calls.creates), 3);

    // A manual start closes the circuit and grants a fresh budget.
    assert!(master.send(StartWorker(id("crashy"))).await?.is_err());
    watch.until("crashy", WorkerState::FailedStart).await;
    assert!(
        !master
            .send(GetWorkerState(id("crashy")))
            .await??
            .circuit_open
    );
    Ok(())
}

#[actix_rt::test]
async fn a_failing_start_recovers_when_a_restart_succeeds() -> TestResult {
    let (master, mut watch, calls) = support::master().await;
    master
        .send(AddWorker(test_worker("flaky", "{fail_first_starts: 2}")))
        .await??;
    assert!(master.send(StartWorker(id("flaky"))).await?.is_err());
    watch.until("flaky", WorkerState::Running).await;
    assert_eq!(Calls::get(&calls.starts), 3);
    let d = master.send(GetWorkerState(id("flaky"))).await??;
    assert_eq!(
        (d.state, d.restart_count, d.circuit_open),
        (WorkerState::Running, 2, false)
    );
    Ok(())
}

#[actix_rt::test]
async fn task_error_and_task_panic_fail_the_worker_and_restart_it() -> TestResult {
    let (master, mut watch, calls) = support::master().await;
    for (id, task) in [("task-err", "error"), ("task-panic", "panic")] {
        let config = test_worker(id, &format!("{{task: {task}, task_after_ms: 10}}")).with_restart(
            "{policy: on_failure, max_restarts: 1, window: 60s, backoff: {initial: 0s, max: 0s}}",
        );
        master.send(AddWorker(config)).await??;
        master.send(StartWorker(support::id(id))).await??;
        let failed = watch.until(id, WorkerState::Failed).await;
        let reason = failed.reason.unwrap();
        let want = if task == "error" {
            "scripted task failure"
        } else {
            "scripted panic in task"
        };
        assert!(
            reason.contains(want) && reason.contains("task `scripted`"),
            "{reason}"
        );
        watch.until(id, WorkerState::Running).await;
        // The restarted run fails again and the budget (1) is spent.
        watch.until(id, WorkerState::Failed).await;
        let d = master.send(GetWorkerState(support::id(id))).await??;
        assert!(d.circuit_open);
    }
    assert_eq!(Calls::get(&calls.starts), 4);
    Ok(())
}

#[actix_rt::test]
async fn an_unhealthy_module_is_restarted_after_the_threshold() -> TestResult {
    let (master, mut watch, calls) = support::master().await;
    let config = test_worker("sick", "{healthy: 'false', unhealthy_starts: 1}")
        .with_health_check("{interval: 10ms, timeout: 1s, failure_threshold: 3}");
    master.send(AddWorker(config)).await??;
    master.send(StartWorker(id("sick"))).await??;
    let failed = watch.until("sick", WorkerState::Failed).await;
    assert!(
        failed
            .reason
            .as_deref()
            .unwrap()
            .contains("health check failed 3 times in a row"),
        "{failed:?}"
    );
    assert!(Calls::get(&calls.health_checks) >= 3);
    watch.until("sick", WorkerState::Running).await;
    // The second run is healthy: wait for a passing probe to be recorded.
    let checks = Calls::get(&calls.health_checks);
    support::eventually("two more health checks", || {
        Calls::get(&calls.health_checks) >= checks + 2
    })
    .await;
    let d = master.send(GetWorkerState(id("sick"))).await??;
    assert_eq!(d.state, WorkerState::Running);
    assert_eq!(d.health, hsu::HealthStatus::Healthy);
    assert_eq!(d.restart_count, 1);
    Ok(())
}

#[actix_rt::test]
async fn a_stop_on_purpose_is_never_restarted() -> TestResult {
    let (master, mut watch, calls) = support::master().await;
    let always = "{policy: always, max_restarts: 5, window: 60s, backoff: {initial: 0s, max: 0s}}";
    master
        .send(AddWorker(
            test_worker("keep-down", "{}").with_restart(always),
        ))
        .await??;
    master.send(StartWorker(id("keep-down"))).await??;
    master.send(StopWorker(id("keep-down"))).await??;

    // A pending restart is cancelled by a stop, too.
    let slow = "{policy: on_failure, max_restarts: 5, window: 60s, backoff: {initial: 300ms, max: 300ms, jitter: 0.0, immediate_first: false}}";
    let config = test_worker("pending", "{task: error, task_after_ms: 0}").with_restart(slow);
    master.send(AddWorker(config)).await??;
    master.send(StartWorker(id("pending"))).await??;
    watch.until("pending", WorkerState::Failed).await;
    master.send(StopWorker(id("pending"))).await??;

    // Canary: fails after both stops, with a longer backoff; once it has been restarted,
    // any restart of the stopped workers would have happened before.
    let canary = "{policy: on_failure, max_restarts: 5, window: 60s, backoff: {initial: 600ms, max: 600ms, jitter: 0.0, immediate_first: false}}";
    master
        .send(AddWorker(
            test_worker("canary", "{task: error, task_after_ms: 0}").with_restart(canary),
        ))
        .await??;
    master.send(StartWorker(id("canary"))).await??;
    watch.until("canary", WorkerState::Failed).await;
    watch.until("canary", WorkerState::Running).await;

    assert_eq!(
        master.send(GetWorkerState(id("keep-down"))).await??.state,
        WorkerState::Stopped
    );
    assert_eq!(
        master.send(GetWorkerState(id("pending"))).await??.state,
        WorkerState::Stopped
    );
    assert_eq!(watch.count("keep-down", WorkerState::Starting), 1);
    assert_eq!(watch.count("pending", WorkerState::Starting), 1);
    assert_eq!(
        Calls::get(&calls.starts),
        4,
        "keep-down 1, pending 1, canary 2"
    );
    Ok(())
}

#[actix_rt::test]
async fn tasks_that_ignore_cancellation_are_aborted_at_the_stop_timeout() -> TestResult {
    let (master, _watch, calls) = support::master().await;
    let mut config = test_worker("stubborn", "{task: ignore_cancel}");
    config.stop_timeout = Some(Duration::from_millis(200));
    master.send(AddWorker(config)).await??;
    master.send(StartWorker(id("stubborn"))).await??;
    assert_eq!(Calls::get(&calls.live_tasks), 1);
    master.send(StopWorker(id("stubborn"))).await??;
    // Abort drops the task's future on the runtime; wait for the drop to land.
    support::eventually("the aborted task dropped", || {
        Calls::get(&calls.live_tasks) == 0
    })
    .await;
    assert_eq!(
        master.send(GetWorkerState(id("stubborn"))).await??.state,
        WorkerState::Stopped
    );
    Ok(())
}

#[actix_rt::test]
async fn a_hanging_stop_times_out_and_force_restart_still_starts() -> TestResult {
    let (master, _watch, calls) = support::master().await;
    let mut config = test_worker("slow-stop", "{stop: hang}");
    config.stop_timeout = Some(Duration::from_millis(200));
    master.send(AddWorker(config)).await??;
    master.send(StartWorker(id("slow-stop"))).await??;
    let err = master
        .send(RestartWorker {
            id: id("slow-stop"),
            force: false,
        })
        .await?
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(
        master.send(GetWorkerState(id("slow-stop"))).await??.state,
        WorkerState::Failed
    );
    master.send(StartWorker(id("slow-stop"))).await??;
    master
        .send(RestartWorker {
            id: id("slow-stop"),
            force: true,
        })
        .await??;
    assert_eq!(
        master.send(GetWorkerState(id("slow-stop"))).await??.state,
        WorkerState::Running
    );
    assert_eq!(Calls::get(&calls.starts), 3);
    Ok(())
}

#[actix_rt::test]
async fn unknown_ids_are_not_found_for_every_request() -> TestResult {
    let (master, _watch, _) = support::master().await;
    let errors = [
        master.send(GetWorkerState(id("ghost"))).await?.unwrap_err(),
        master.send(StartWorker(id("ghost"))).await?.unwrap_err(),
        master.send(StopWorker(id("ghost"))).await?.unwrap_err(),
        master
            .send(RestartWorker {
                id: id("ghost"),
                force: true,
            })
            .await?
            .unwrap_err(),
        master.send(RemoveWorker(id("ghost"))).await?.unwrap_err(),
    ];
    for e in errors {
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(e.to_string(), "no worker `ghost`");
    }
    Ok(())
}

#[actix_rt::test]
async fn add_worker_refuses_bad_ids_duplicates_and_unknown_factories() -> TestResult {
    let (master, _watch, _) = support::master().await;
    master.send(AddWorker(test_worker("one", "{}"))).await??;
    let dup = master
        .send(AddWorker(test_worker("one", "{}")))
        .await?
        .unwrap_err();
    assert_eq!(dup.kind(), ErrorKind::Conflict);
    assert_eq!(dup.to_string(), "worker `one` already exists");

    let bad = master
        .send(AddWorker(test_worker("no spaces", "{}")))
        .await?
        .unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::Validation);
    assert!(bad.to_string().contains("`id`"), "{bad}");

    let unknown = master
        .send(AddWorker(WorkerConfig::native("x", "nope")))
        .await?
        .unwrap_err();
    assert_eq!(unknown.kind(), ErrorKind::NotFound);
    assert!(
        unknown
            .to_string()
            .contains("no native module factory named `nope`"),
        "{unknown}"
    );
    assert!(
        unknown.to_string().contains("echo, test, ticker"),
        "{unknown}"
    );

    let plugin = WorkerConfig::from_yaml(
        "{id: p, type: module, module_type: plugin, module_name: ./libnope.so}",
    )?;
    let missing = master.send(AddWorker(plugin)).await?.unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound);
    assert!(
        hsu::error_chain(&missing).contains("plugin `./libnope.so`: no such file"),
        "{missing}"
    );
    assert_eq!(master.send(GetAllWorkerStates).await?.len(), 1);
    Ok(())
}

#[actix_rt::test]
async fn remove_stops_a_running_worker() -> TestResult {
    let (master, mut watch, calls) = support::master().await;
    master.send(AddWorker(test_worker("gone", "{}"))).await??;
    master.send(StartWorker(id("gone"))).await??;
    master.send(RemoveWorker(id("gone"))).await??;
    watch.until("gone", WorkerState::Terminating).await;
    assert_eq!(Calls::get(&calls.stops), 1);
    assert_eq!(Calls::get(&calls.live_tasks), 0);
    assert!(master.send(GetAllWorkerStates).await?.is_empty());
    Ok(())
}

#[actix_rt::test]
async fn shutdown_stops_everything_concurrently_a_slow_worker_delaying_no_other() -> TestResult {
    let (master, mut watch, calls) = support::master().await;
    // `slow` hangs in stop until its 500ms stop timeout; the others must not wait for it.
    let mut slow = test_worker("slow", "{stop: hang}");
    slow.stop_timeout = Some(Duration::from_millis(500));
    master.send(AddWorker(slow)).await??;
    master.send(StartWorker(id("slow"))).await??;
    for id in ["second", "third"] {
        master.send(AddWorker(test_worker(id, "{}"))).await??;
        master.send(StartWorker(support::id(id))).await??;
    }
    let report = master.send(Shutdown).await?;
    let order: Vec<String> = report.stopped.iter().map(|id| id.to_string()).collect();
    assert_eq!(
        order,
        ["third", "second"],
        "reported in reverse order of addition"
    );
    assert_eq!(report.errors.len(), 1);
    assert!(
        report.errors[0].1.contains("stop timed out"),
        "{:?}",
        report.errors
    );
    // Both fast workers were stopped before the slow one gave up.
    let mut ends = Vec::new();
    while ends.len() < 3 {
        let e = watch.until_where(|e| e.from == WorkerState::Stopping).await;
        ends.push(e.id.to_string());
    }
    assert_eq!(ends.last().map(String::as_str), Some("slow"), "{ends:?}");
    assert_eq!(Calls::get(&calls.live_tasks), 0);
    let refused = master
        .send(AddWorker(test_worker("late", "{}")))
        .await?
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Unavailable);
    Ok(())
}
