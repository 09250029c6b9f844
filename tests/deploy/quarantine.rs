//! Crash quarantine: a module that keeps panicking moves to its process form.

use super::*;

#[actix_rt::test]
async fn quarantine_moves_a_module_that_keeps_panicking_to_its_process_form() -> TestResult {
    let dir = TempDir::new("quarantine");
    let (master, mut watch) = support::master_in(&dir).await;
    hsu::builtin::register(&master).await?;
    master
        .send(hsu::RegisterNativeModuleFactory::new("test", || {
            Box::new(support::TestModule::new(Default::default()))
        }))
        .await??;
    let plugin = path_str(&support::plugin("hsu_test_plugin"));
    for (id, config) in [
        ("native", WorkerConfig::native("native", "test")),
        ("plugin", WorkerConfig::plugin("plugin", &plugin)),
    ] {
        let mut config = config
            .with_config("{start: panic_unless_process}")
            .with_restart("{policy: on_failure, max_restarts: 5, window: 1m, backoff: {initial: 0s, max: 0s, jitter: 0.0}}");
        config.quarantine = Some(serde_yaml::from_str("{after_panics: 2, within: 1m}")?);
        config.execution = Some(serde_yaml::from_str(&format!(
            "{{executable_path: {}}}",
            env!("CARGO_BIN_EXE_hsu-test-module")
        ))?);
        master.send(AddWorker(config.clone())).await??;
        let err = master
            .send(StartWorker(support::id(id)))
            .await?
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Panicked, "{err}");

        // Panic 1: restarted in place. Panic 2: quarantined, then running as a process.
        let first = watch.until(id, WorkerState::FailedStart).await;
        assert!(first.panicked, "{first:?}");
        let second = watch.until(id, WorkerState::FailedStart).await;
        let reason = second.reason.clone().unwrap();
        assert!(
            reason.contains("quarantined: 2 panics within 1m; now runs as an integrated process"),
            "{reason}"
        );
        let running = watch.until(id, WorkerState::Running).await;
        let pid = running.pid.expect("a process now");
        assert!(support::alive(pid));
        let d = master.send(GetWorkerState(support::id(id))).await??;
        assert_eq!(d.deployment, Deployment::Integrated, "{d:?}");
        assert_eq!(d.pid, Some(pid));
        let q = d.quarantine.expect("visible in diagnostics");
        assert_eq!((q.panics, q.within), (2, Duration::from_secs(60)));
        let was = serde_yaml::to_string(&q.was)?;
        assert_eq!(was.trim(), id);
        assert!(q.last_panic.contains("scripted panic in start"), "{q:?}");

        // `apply` compares the spec as configured, not the quarantined one: the same config
        // again changes nothing (the master keeps the configured spec beside the one it runs).
        let configured = hsu::HsuConfig {
            workers: vec![config.clone()],
            ..Default::default()
        }
        .validate(&|_| true, None)?;
        let report = master
            .send(hsu::Apply {
                specs: configured,
                dry_run: true,
            })
            .await??;
        assert!(
            report.unchanged.contains(&support::id(id)) && report.changed.is_empty(),
            "{report:?}"
        );
        let mut edited = config.clone();
        edited.restart = Some(serde_yaml::from_str(
            "{policy: on_failure, max_restarts: 6}",
        )?);
        let specs = hsu::HsuConfig {
            workers: vec![edited],
            ..Default::default()
        }
        .validate(&|_| true, None)?;
        let report = master
            .send(hsu::Apply {
                specs,
                dry_run: true,
            })
            .await??;
        assert_eq!(report.changed, [support::id(id)], "{report:?}");

        // It is an ordinary process worker now: stop and start work, the pid goes away.
        master.send(StopWorker(support::id(id))).await??;
        support::eventually("the process form is gone", || !support::alive(pid)).await;
    }
    Ok(())
}

#[actix_rt::test]
async fn quarantine_config_errors_name_the_field() -> TestResult {
    let dir = TempDir::new("quarantine-config");
    let (master, _watch) = support::master_in(&dir).await;
    let cases = [
        (
            "{id: a, type: module, module_name: test, quarantine: {after_panics: 2, within: 1m}}",
            "`execution.executable_path`: required with `quarantine`",
        ),
        (
            "{id: b, type: module, module_name: test, execution: {executable_path: /bin/true}}",
            "`execution`: a module runs inside the master",
        ),
        (
            "{id: c, type: module, module_name: test, execution: {executable_path: /bin/true}, quarantine: {after_panics: 0, within: 0s}}",
            "`quarantine.after_panics`: must be at least 1; `quarantine.within`: must be greater than 0s",
        ),
        (
            "{id: d, type: process, execution: {executable_path: /bin/true}, quarantine: {after_panics: 1, within: 1m}}",
            "`quarantine`: only module workers have `quarantine`",
        ),
    ];
    for (yaml, expected) in cases {
        let err = master
            .send(AddWorker(WorkerConfig::from_yaml(yaml)?))
            .await?
            .unwrap_err();
        assert!(err.to_string().contains(expected), "{yaml}: {err}");
    }
    Ok(())
}
