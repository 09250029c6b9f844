//! Master-held sockets (`sockets:`), `start_first` replacements and live moves between
//! deployments, under a real loopback load client.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use hsu::{Apply, HsuConfig};

use super::*;

#[path = "../support/load.rs"]
mod load_client;
use load_client::{load, Load};

async fn socket_address(master: &actix::Addr<hsu::MasterActor>, id: &str, name: &str) -> String {
    let d = master
        .send(GetWorkerState(support::id(id)))
        .await
        .unwrap()
        .unwrap();
    d.sockets
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("{id} has no socket {name}: {:?}", d.sockets))
        .listen
        .clone()
}

/// Waits until the load client has had `n` more answers than `from`.
async fn answered(seen: &Load, more: u64) {
    let from = seen.ok.load(Ordering::SeqCst);
    support::eventually("answers under load", || {
        seen.ok.load(Ordering::SeqCst) >= from + more
    })
    .await;
}

fn specs(yaml: &str) -> Vec<hsu::WorkerSpec> {
    HsuConfig::parse(yaml, Path::new("test.yaml"))
        .unwrap()
        .validate(&|_| true, None)
        .unwrap()
}

#[actix_rt::test]
async fn a_process_gets_exactly_its_sockets_and_they_outlive_its_runs() -> TestResult {
    let dir = TempDir::new("sockets-listen");
    let (master, mut watch) = support::master_in(&dir).await;
    let report = dir.file("listen");
    let unix = dir.file("admin.sock");
    let mut config = support::process_worker(
        "w",
        &[
            "--report-listen",
            &report,
            "--serve-socket",
            "http",
            "--answer",
            "w",
        ],
    )
    .with_restart("{policy: always, backoff: {initial: 0s, max: 0s, jitter: 0.0}}");
    config.sockets = serde_yaml::from_str(&format!(
        "[{{name: http, listen: '127.0.0.1:0'}}, {{name: admin, listen: 'unix:{unix}'}}]"
    ))?;
    master.send(AddWorker(config)).await??;
    let address = socket_address(&master, "w", "http").await;
    assert_eq!(
        socket_address(&master, "w", "admin").await,
        format!("unix:{unix}")
    );
    master.send(StartWorker(id("w"))).await??;
    let pid = watch.until("w", WorkerState::Running).await.pid.unwrap();
    support::eventually("the listen report", || {
        std::fs::read_to_string(&report).is_ok_and(|t| t.contains("fd 4"))
    })
    .await;
    let text = std::fs::read_to_string(&report)?;
    assert_eq!(
        text,
        format!(
            "pid {pid}\nLISTEN_PID {pid}\nLISTEN_FDS 2\nLISTEN_FDNAMES http:admin\nfd 3 {address}\nfd 4 unix:{unix}\n"
        )
    );
    let answer = support::http(&address, "GET", "/", "").await?;
    assert!(answer.ends_with("\r\n\r\nw"), "{answer}");

    // While no instance runs, a connection waits in the master's socket and the next
    // instance answers it: nothing is refused.
    std::fs::remove_file(&report)?;
    Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .status()?;
    let waiting = tokio::spawn({
        let address = address.clone();
        async move { support::http(&address, "GET", "/", "").await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()?;
    let next = watch
        .until_where(|e| e.id.as_str() == "w" && e.to == WorkerState::Running && e.pid != Some(pid))
        .await
        .pid
        .unwrap();
    let answer = waiting.await??;
    assert!(answer.ends_with("\r\n\r\nw"), "{answer}");
    support::eventually("the second listen report", || {
        std::fs::read_to_string(&report).is_ok_and(|t| t.contains("fd 4"))
    })
    .await;
    let text = std::fs::read_to_string(&report)?;
    assert!(
        text.starts_with(&format!("pid {next}\nLISTEN_PID {next}\n"))
            && text.contains(&format!("fd 3 {address}\n")),
        "{text}"
    );

    // Removed: the sockets close, the Unix socket file goes.
    master.send(RemoveWorker(id("w"))).await??;
    assert!(
        std::net::TcpStream::connect(&address).is_err(),
        "still listening"
    );
    assert!(!Path::new(&unix).exists(), "{unix} left behind");
    Ok(())
}

#[actix_rt::test]
async fn a_taken_port_fails_the_start_naming_the_socket_and_a_later_start_binds_it() -> TestResult {
    let dir = TempDir::new("sockets-taken");
    let (master, _watch) = support::master_in(&dir).await;
    let holder = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = holder.local_addr()?.port();
    let mut config = support::process_worker("w", &["--serve-socket", "http"]);
    config.sockets =
        serde_yaml::from_str(&format!("[{{name: http, listen: '127.0.0.1:{port}'}}]"))?;
    master.send(AddWorker(config)).await??;
    let err = master.send(StartWorker(id("w"))).await?.unwrap_err();
    let text = hsu::error_chain(&err);
    assert!(
        text.contains(&format!("cannot bind socket `http` (127.0.0.1:{port})"))
            && text.contains("in use"),
        "{text}"
    );
    drop(holder);
    master.send(StartWorker(id("w"))).await??;
    let answer = support::http(&format!("127.0.0.1:{port}"), "GET", "/", "").await?;
    assert!(answer.ends_with("process"), "{answer}");
    master.send(RemoveWorker(id("w"))).await??;
    Ok(())
}

/// `restarts` start_first restarts of worker `w` under load: every request answered.
async fn restarts_under_load(
    master: &actix::Addr<hsu::MasterActor>,
    address: &str,
    restarts: usize,
) -> Arc<Load> {
    let stop = Arc::new(AtomicBool::new(false));
    let (seen, clients) = load(address.to_string(), 4, 2, stop.clone());
    answered(&seen, 20).await;
    for _ in 0..restarts {
        master
            .send(RestartWorker {
                id: id("w"),
                force: false,
            })
            .await
            .unwrap()
            .unwrap();
        answered(&seen, 10).await;
    }
    load_client::stop(&stop, clients).await;
    seen
}

#[actix_rt::test]
async fn start_first_restarts_of_a_process_fail_no_request() -> TestResult {
    let dir = TempDir::new("sockets-restart-process");
    let (master, mut watch) = support::master_in(&dir).await;
    let mut config = support::process_worker("w", &["--serve-socket", "http"])
        .with_restart("{policy: on_failure, strategy: start_first}");
    config.sockets = serde_yaml::from_str("[{name: http, listen: '127.0.0.1:0'}]")?;
    master.send(AddWorker(config)).await??;
    master.send(StartWorker(id("w"))).await??;
    let first = watch.until("w", WorkerState::Running).await.pid.unwrap();
    let address = socket_address(&master, "w", "http").await;
    let seen = restarts_under_load(&master, &address, 20).await;
    seen.assert_none_failed();
    let d = master.send(GetWorkerState(id("w"))).await??;
    assert_eq!(d.state, WorkerState::Running);
    assert_eq!(d.restart_count, 20);
    let pid = d.pid.unwrap();
    assert_ne!(pid, first);
    assert!(!support::alive(first), "the first instance was stopped");
    // One process left: the current one.
    let table = support::run_table(&dir);
    assert_eq!(table.get("w").map(|r| r.0), Some(pid), "{table:?}");
    eprintln!(
        "process: {} answered, {} retried on a fresh connection, longest {:?}",
        seen.ok.load(Ordering::SeqCst),
        seen.retried.load(Ordering::SeqCst),
        seen.longest.lock().unwrap()
    );
    master.send(RemoveWorker(id("w"))).await??;
    assert!(!support::alive(pid));
    Ok(())
}

#[actix_rt::test]
async fn start_first_restarts_of_a_module_fail_no_request() -> TestResult {
    let (master, _watch, calls) = support::master().await;
    let mut config = WorkerConfig::native("w", "test")
        .with_config("{serve_socket: http, answer: m}")
        .with_restart("{policy: on_failure, strategy: start_first}");
    config.sockets =
        serde_yaml::from_str("[{name: http, listen: '127.0.0.1:0', nonblocking: true}]")?;
    master.send(AddWorker(config)).await??;
    master.send(StartWorker(id("w"))).await??;
    let address = socket_address(&master, "w", "http").await;
    let seen = restarts_under_load(&master, &address, 20).await;
    seen.assert_none_failed();
    assert_eq!(support::Calls::get(&calls.starts), 21);
    assert_eq!(support::Calls::get(&calls.stops), 20);
    assert_eq!(
        seen.answers.lock().unwrap().keys().collect::<Vec<_>>(),
        ["m"]
    );
    eprintln!(
        "module: {} answered, {} retried, longest {:?}",
        seen.ok.load(Ordering::SeqCst),
        seen.retried.load(Ordering::SeqCst),
        seen.longest.lock().unwrap()
    );
    master.send(RemoveWorker(id("w"))).await??;
    Ok(())
}

#[actix_rt::test]
async fn a_worker_moves_native_process_plugin_native_without_a_failed_request() -> TestResult {
    let dir = TempDir::new("sockets-move");
    let (master, _watch) = support::master_in(&dir).await;
    hsu::builtin::register(&master).await?;
    master
        .send(hsu::RegisterNativeModuleFactory::new("test", || {
            Box::new(support::TestModule::new(Default::default()))
        }))
        .await??;
    let port = {
        // A fixed port is part of the config (it cannot change across forms); it is held by
        // the master from the first add on.
        let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
        probe.local_addr()?.port()
    };
    let plugin = path_str(&support::plugin("hsu_test_plugin"));
    let process = env!("CARGO_BIN_EXE_hsu-test-module");
    let common = format!(
        "restart: {{strategy: start_first}}\n    sockets: [{{name: http, listen: '127.0.0.1:{port}', nonblocking: true}}]"
    );
    let forms = [
        ("native", format!("type: module\n    module_name: test\n    config: {{serve_socket: http, answer: native}}\n    {common}")),
        ("process", format!("type: process\n    process_type: integrated\n    execution: {{executable_path: {process}}}\n    config: {{serve_socket: http, answer: process}}\n    {common}")),
        ("plugin", format!("type: module\n    module_type: plugin\n    module_name: {plugin}\n    config: {{serve_socket: http, answer: plugin}}\n    {common}")),
        ("native", format!("type: module\n    module_name: test\n    config: {{serve_socket: http, answer: native again}}\n    {common}")),
    ];
    let yaml = |form: &str| format!("workers:\n  - id: w\n    {form}\n");
    let first = specs(&yaml(&forms[0].1));
    let report = master
        .send(Apply {
            specs: first,
            dry_run: false,
        })
        .await??;
    assert_eq!(report.added, [id("w")], "{report:?}");
    let address = format!("127.0.0.1:{port}");
    let stop = Arc::new(AtomicBool::new(false));
    let (seen, clients) = load(address, 4, 2, stop.clone());
    answered(&seen, 20).await;
    for (kind, form) in &forms[1..] {
        let report = master
            .send(Apply {
                specs: specs(&yaml(form)),
                dry_run: false,
            })
            .await??;
        assert_eq!(
            (report.changed.as_slice(), report.errors.as_slice()),
            ([id("w")].as_slice(), [].as_slice()),
            "{kind}: {report:?}"
        );
        let d = master.send(GetWorkerState(id("w"))).await??;
        assert_eq!(d.state, WorkerState::Running, "{kind}");
        assert_eq!(
            (d.deployment, d.pid.is_some()),
            match *kind {
                "process" => (Deployment::Integrated, true),
                "plugin" => (Deployment::Plugin, false),
                _ => (Deployment::Native, false),
            },
            "{kind}"
        );
        answered(&seen, 20).await;
    }
    load_client::stop(&stop, clients).await;
    seen.assert_none_failed();
    let answers = seen.answers.lock().unwrap().clone();
    for form in ["native", "process", "plugin", "native again"] {
        assert!(
            answers.get(form).is_some_and(|n| *n > 0),
            "{form} never answered: {answers:?}"
        );
    }
    eprintln!(
        "moves: {answers:?}, {} retried, longest {:?}",
        seen.retried.load(Ordering::SeqCst),
        seen.longest.lock().unwrap()
    );
    master.send(RemoveWorker(id("w"))).await??;
    Ok(())
}

#[actix_rt::test]
async fn a_new_instance_that_never_gets_ready_leaves_the_old_one_serving() -> TestResult {
    let (master, _watch, _calls) = support::master().await;
    let sockets = "sockets: [{name: http, listen: '127.0.0.1:0', nonblocking: true}]";
    let worker = |config: &str, health: &str| {
        format!("workers:\n  - id: w\n    type: module\n    module_name: test\n    config: {config}\n    restart: {{strategy: start_first}}\n    start_timeout: 1s\n    {health}\n    {sockets}\n")
    };
    let healthy = "health_check: {interval: 50ms}";
    master
        .send(Apply {
            specs: specs(&worker("{serve_socket: http, answer: old}", healthy)),
            dry_run: false,
        })
        .await??;
    let address = socket_address(&master, "w", "http").await;
    let stop = Arc::new(AtomicBool::new(false));
    let (seen, clients) = load(address.clone(), 2, 1, stop.clone());
    answered(&seen, 10).await;
    for (config, why) in [
        (
            "{serve_socket: http, answer: new, start: error}",
            "scripted start failure",
        ),
        (
            "{serve_socket: http, answer: new, healthy: 'false'}",
            "not healthy within its start_timeout (1s)",
        ),
    ] {
        let report = master
            .send(Apply {
                specs: specs(&worker(config, healthy)),
                dry_run: false,
            })
            .await??;
        let (who, error) = report
            .errors
            .first()
            .cloned()
            .unwrap_or_else(|| panic!("{report:?}"));
        assert_eq!(who, id("w"));
        assert!(
            error.contains(why) && error.contains("the old one keeps running"),
            "{error}"
        );
        let d = master.send(GetWorkerState(id("w"))).await??;
        assert_eq!(d.state, WorkerState::Running);
        // The new instance is gone: a fresh connection is the old one's.
        let answer = support::http(&address, "GET", "/", "").await?;
        assert!(answer.ends_with("\r\n\r\nold"), "{answer}");
        answered(&seen, 10).await;
    }
    load_client::stop(&stop, clients).await;
    seen.assert_none_failed();
    Ok(())
}

#[actix_rt::test]
async fn failing_health_checks_replace_a_start_first_worker_while_it_still_serves() -> TestResult {
    let (master, _watch, calls) = support::master().await;
    // The first instance turns unhealthy; the next ones are healthy.
    let mut config = WorkerConfig::native("w", "test")
        .with_config("{serve_socket: http, healthy: 'false', unhealthy_starts: 1}")
        .with_restart("{policy: on_failure, strategy: start_first}")
        .with_health_check("{interval: 50ms, failure_threshold: 2}");
    config.sockets =
        serde_yaml::from_str("[{name: http, listen: '127.0.0.1:0', nonblocking: true}]")?;
    master.send(AddWorker(config)).await??;
    let address = socket_address(&master, "w", "http").await;
    let stop = Arc::new(AtomicBool::new(false));
    let (seen, clients) = load(address.clone(), 2, 1, stop.clone());
    master.send(StartWorker(id("w"))).await??;
    support::eventually("the replacement", || support::Calls::get(&calls.stops) >= 1).await;
    answered(&seen, 20).await;
    load_client::stop(&stop, clients).await;
    seen.assert_none_failed();
    let d = master.send(GetWorkerState(id("w"))).await??;
    assert_eq!(d.state, WorkerState::Running);
    assert_eq!(d.restart_count, 1);
    assert!(
        d.last_error
            .as_deref()
            .is_some_and(|e| e.contains("health check failed 2 times")),
        "{d:?}"
    );
    assert_eq!(support::Calls::get(&calls.starts), 2);
    master.send(RemoveWorker(id("w"))).await??;
    Ok(())
}

#[actix_rt::test]
async fn a_shutdown_during_a_start_first_replace_ends_the_successor_too() -> TestResult {
    let (master, _watch, calls) = support::master().await;
    let worker = |config: &str| {
        format!("workers:\n  - id: w\n    type: module\n    module_name: test\n    config: {config}\n    restart: {{strategy: start_first}}\n    start_timeout: 2s\n")
    };
    master
        .send(Apply {
            specs: specs(&worker("{task: until_cancel}")),
            dry_run: false,
        })
        .await??;
    // The new form hangs in start; the shutdown comes while it does.
    let applying = master.send(Apply {
        specs: specs(&worker("{start: hang}")),
        dry_run: false,
    });
    let applying = tokio::spawn(applying);
    support::eventually("the successor starting", || {
        support::Calls::get(&calls.starts) == 2
    })
    .await;
    let report = master.send(hsu::Shutdown).await?;
    assert_eq!(report.stopped, [id("w")], "{report:?}");
    let applied = applying.await???;
    assert!(
        applied.errors.len() == 1 && applied.errors[0].1.contains("did not become ready"),
        "{applied:?}"
    );
    assert_eq!(
        support::Calls::get(&calls.live_tasks),
        0,
        "a task left running"
    );
    Ok(())
}
