//! Supervision groups: OTP's strategy matrix over a module and processes in one group, checked
//! by launch counters and PIDs (what the group decided is read back from the master after the
//! member's end event, never waited for by time), escalation through two levels, and a
//! top-level failure that leaves the master up or asks for its shutdown.

use std::time::Duration;

use actix::Addr;
use hsu::config::{GroupSpec, OnExhausted, Strategy};
use hsu::{
    AddWorker, GetGroups, GroupState, GroupSummary, MasterActor, SetGroups, Shutdown, StartWorker,
    WaitExhausted, WorkerState,
};

use super::support::{self, id, process_worker, test_worker, Calls, TempDir};
use super::TestResult;

fn group(name: &str, strategy: Strategy, max_restarts: u32, members: &[&str]) -> GroupSpec {
    GroupSpec {
        id: id(name),
        strategy,
        max_restarts,
        window: Duration::from_secs(60),
        on_exhausted: OnExhausted::Stay,
        members: members.iter().map(id).collect(),
        parent: None,
    }
}

async fn group_row(master: &Addr<MasterActor>, name: &str) -> GroupSummary {
    master
        .send(GetGroups)
        .await
        .unwrap()
        .into_iter()
        .find(|g| g.id.as_str() == name)
        .expect("the group")
}

/// Polls the group's summary until `pred` holds (bounded by the support deadline).
async fn until_group(
    master: &Addr<MasterActor>,
    name: &str,
    what: &str,
    pred: impl Fn(&GroupSummary) -> bool,
) -> GroupSummary {
    let start = std::time::Instant::now();
    loop {
        let row = group_row(master, name).await;
        if pred(&row) {
            return row;
        }
        assert!(
            start.elapsed() < support::DEADLINE,
            "{name}: {what}: {row:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn signal(pid: u32, sig: i32) {
    let sent = hsu::internals::sys::signal_process(pid as i32, sig).expect("kill");
    assert!(sent, "kill({pid}, {sig}): no such process");
}

#[derive(Debug, Clone, Copy)]
enum End {
    /// SIGTERM: the worker prints and exits 0.
    Normal,
    /// SIGUSR1: the worker exits 3.
    Crash,
    /// SIGKILL.
    Killed,
}

#[actix_rt::test]
async fn the_otp_strategy_matrix_over_a_module_and_processes_in_one_group() -> TestResult {
    use hsu::config::RestartPolicy::*;
    for strategy in [
        Strategy::OneForOne,
        Strategy::OneForAll,
        Strategy::RestForOne,
    ] {
        for policy in [Always, OnFailure, Never] {
            for end in [End::Normal, End::Crash, End::Killed] {
                one_case(strategy, policy, end).await?;
            }
        }
    }
    Ok(())
}

/// Group [a (module), b (process, the one that ends), c (process)].
async fn one_case(strategy: Strategy, policy: hsu::config::RestartPolicy, end: End) -> TestResult {
    let case = format!("{strategy:?} {policy:?} {end:?}");
    let dir = TempDir::new(&format!("group-{strategy:?}-{policy:?}-{end:?}"));
    let (master, mut watch, calls) = super::master(&dir).await;
    let (b_runs, b_pid, c_pid) = (dir.file("b-runs"), dir.file("b.pid"), dir.file("c.pid"));
    let policy_yaml = match policy {
        hsu::config::RestartPolicy::Always => "always",
        hsu::config::RestartPolicy::OnFailure => "on_failure",
        hsu::config::RestartPolicy::Never => "never",
    };
    master
        .send(AddWorker(
            test_worker("a", "{}").with_restart("{policy: always}"),
        ))
        .await??;
    master
        .send(AddWorker(
            process_worker(
                "b",
                &[
                    "--count",
                    &b_runs,
                    "--pid-file",
                    &b_pid,
                    "--on-term",
                    "bye",
                    "--usr1-exit",
                    "3",
                ],
            )
            .with_restart(&format!(
                "{{policy: {policy_yaml}, backoff: {{initial: 0s, max: 0s, jitter: 0.0}}}}"
            )),
        ))
        .await??;
    master
        .send(AddWorker(
            process_worker("c", &["--pid-file", &c_pid]).with_restart("{policy: always}"),
        ))
        .await??;
    master
        .send(SetGroups(vec![group("g", strategy, 10, &["a", "b", "c"])]))
        .await?;
    master.send(StartWorker(id("g"))).await??;
    let first_b = support::read_pid(&b_pid).await;
    let first_c = support::read_pid(&c_pid).await;
    assert_eq!(Calls::get(&calls.starts), 1, "{case}");
    let _ = std::fs::remove_file(&b_pid);
    let _ = std::fs::remove_file(&c_pid);
    signal(
        first_b,
        match end {
            End::Normal => libc::SIGTERM,
            End::Crash => libc::SIGUSR1,
            End::Killed => libc::SIGKILL,
        },
    );
    let ended = watch
        .until_where(|e| {
            e.id.as_str() == "b"
                && e.from == WorkerState::Running
                && matches!(e.to, WorkerState::Stopped | WorkerState::Failed)
        })
        .await;
    let counts = match policy {
        hsu::config::RestartPolicy::Always => true,
        hsu::config::RestartPolicy::OnFailure => !matches!(end, End::Normal),
        hsu::config::RestartPolicy::Never => false,
    };
    assert_eq!(
        ended.to,
        if matches!(end, End::Normal) {
            WorkerState::Stopped
        } else {
            WorkerState::Failed
        },
        "{case}"
    );
    // The decision is made when the end is seen: a restart is under way, or nothing is.
    let row = group_row(&master, "g").await;
    if !counts {
        assert_eq!(row.state, GroupState::Running, "{case}: {row:?}");
        assert_eq!(row.restarts_total, 0, "{case}");
        assert_eq!(dir.lines("b-runs"), 1, "{case}: b not launched again");
        assert_eq!(Calls::get(&calls.starts), 1, "{case}: a untouched");
        assert!(support::alive(first_c), "{case}: c untouched");
        master.send(Shutdown).await?;
        return Ok(());
    }
    until_group(&master, "g", "done restarting", |g| {
        g.state == GroupState::Running && g.restarts_total == 1
    })
    .await;
    assert_eq!(
        dir.lines_once("b-runs", 2).await,
        2,
        "{case}: b launched again"
    );
    let a_restarted = strategy == Strategy::OneForAll;
    let c_restarted = strategy != Strategy::OneForOne;
    assert_eq!(
        Calls::get(&calls.starts),
        if a_restarted { 2 } else { 1 },
        "{case}: a"
    );
    if c_restarted {
        let new_c = support::read_pid(&c_pid).await;
        assert_ne!(new_c, first_c, "{case}: c restarted");
        assert!(!support::alive(first_c), "{case}: the old c is gone");
    } else {
        assert!(support::alive(first_c), "{case}: c untouched");
        assert!(
            !std::path::Path::new(&c_pid).exists(),
            "{case}: c not relaunched"
        );
    }
    master.send(Shutdown).await?;
    Ok(())
}

#[actix_rt::test]
async fn a_group_over_its_intensity_fails_as_a_unit_and_escalates_to_its_parent() -> TestResult {
    let dir = TempDir::new("group-escalation");
    let (master, mut watch, calls) = super::master(&dir).await;
    let (runs, pid) = (dir.file("x-runs"), dir.file("x.pid"));
    master
        .send(AddWorker(
            process_worker(
                "x",
                &["--count", &runs, "--pid-file", &pid, "--usr1-exit", "3"],
            )
            .with_restart("{policy: always, backoff: {initial: 0s, max: 0s, jitter: 0.0}}"),
        ))
        .await??;
    master
        .send(AddWorker(
            test_worker("m", "{}").with_restart("{policy: always}"),
        ))
        .await??;
    let mut inner = group("inner", Strategy::OneForAll, 1, &["x", "m"]);
    inner.parent = Some(id("top"));
    let top = group("top", Strategy::OneForOne, 5, &["inner"]);
    master.send(SetGroups(vec![top, inner])).await?;
    master.send(StartWorker(id("top"))).await??;
    let crash = || async {
        let p = support::read_pid(&pid).await;
        let _ = std::fs::remove_file(&pid);
        signal(p, libc::SIGUSR1);
        p
    };
    // First crash: inner restarts both (one_for_all).
    crash().await;
    until_group(&master, "inner", "restarted once", |g| {
        g.state == GroupState::Running && g.restarts_total == 1
    })
    .await;
    assert_eq!(dir.lines_once("x-runs", 2).await, 2);
    assert_eq!(Calls::get(&calls.starts), 2, "m restarted with x");
    // Second crash within the window: inner is over its intensity (1), stops every member and
    // fails; top restarts it (one_for_one), fresh.
    let mark = watch.seen.len();
    let old = crash().await;
    until_group(&master, "top", "restarted inner", |g| {
        g.state == GroupState::Running && g.restarts_total == 1
    })
    .await;
    let inner = until_group(&master, "inner", "running again", |g| {
        g.state == GroupState::Running
    })
    .await;
    assert_eq!(
        inner.restarts_in_window, 0,
        "a restarted group starts with a fresh budget"
    );
    assert_eq!(dir.lines_once("x-runs", 3).await, 3);
    assert!(!support::alive(old));
    assert_eq!(
        Calls::get(&calls.starts),
        3,
        "m stopped with its group and started again"
    );
    // The failed group stopped its members in reverse order (m, then x), then started them in
    // order (x, then m).
    watch.until("m", WorkerState::Running).await;
    watch.until("m", WorkerState::Running).await;
    let after = |id: &str, to: WorkerState| {
        watch.seen[mark..]
            .iter()
            .position(|e| e.id.as_str() == id && e.to == to)
            .unwrap_or_else(|| panic!("{id} -> {to}: {:#?}", watch.transitions()))
    };
    assert!(after("m", WorkerState::Stopping) < after("x", WorkerState::Stopping));
    assert!(after("x", WorkerState::Starting) < after("m", WorkerState::Starting));
    master.send(Shutdown).await?;
    Ok(())
}

#[actix_rt::test]
async fn a_top_level_group_that_fails_stays_failed_or_asks_for_the_shutdown() -> TestResult {
    for on_exhausted in [OnExhausted::Stay, OnExhausted::Shutdown] {
        let dir = TempDir::new(&format!("group-top-{on_exhausted:?}"));
        let (master, _watch, _) = super::master(&dir).await;
        let pid = dir.file("x.pid");
        master
            .send(AddWorker(
                process_worker("x", &["--pid-file", &pid, "--usr1-exit", "3"])
                    .with_restart("{policy: always}"),
            ))
            .await??;
        master
            .send(AddWorker(test_worker("bystander", "{}")))
            .await??;
        master.send(StartWorker(id("bystander"))).await??;
        let mut g = group("g", Strategy::OneForOne, 0, &["x"]);
        g.on_exhausted = on_exhausted;
        master.send(SetGroups(vec![g])).await?;
        let exhausted = master.send(WaitExhausted).await?;
        master.send(StartWorker(id("g"))).await??;
        let p = support::read_pid(&pid).await;
        signal(p, libc::SIGUSR1);
        let row = until_group(&master, "g", "failed", |g| g.state == GroupState::Failed).await;
        assert_eq!(
            row.reason.as_deref(),
            Some("max intensity: 1 restarts in 1m")
        );
        // The master answers and the rest runs.
        let bystander = master
            .send(hsu::GetWorkerSummary(id("bystander")))
            .await??;
        assert_eq!(bystander.state, WorkerState::Running);
        let x = master.send(hsu::GetWorkerSummary(id("x"))).await??;
        assert!(!x.state.is_failed() || x.pid.is_none(), "{x:?}");
        match on_exhausted {
            OnExhausted::Stay => {
                // Started by hand, it runs again.
                master.send(StartWorker(id("g"))).await??;
                assert_eq!(group_row(&master, "g").await.state, GroupState::Running);
                drop(exhausted);
            }
            OnExhausted::Shutdown => {
                let reason = tokio::time::timeout(support::DEADLINE, exhausted).await??;
                assert_eq!(reason, "group `g`: max intensity: 1 restarts in 1m");
            }
        }
        master.send(Shutdown).await?;
    }
    Ok(())
}

#[actix_rt::test]
async fn a_temporary_sibling_stopped_by_one_for_all_is_not_started_again() -> TestResult {
    let dir = TempDir::new("group-temporary");
    let (master, _watch, _) = super::master(&dir).await;
    let (t_runs, p_pid) = (dir.file("t-runs"), dir.file("p.pid"));
    master
        .send(AddWorker(process_worker("t", &["--count", &t_runs])))
        .await??;
    master
        .send(AddWorker(
            process_worker("p", &["--pid-file", &p_pid, "--usr1-exit", "3"])
                .with_restart("{policy: always, backoff: {initial: 0s, max: 0s, jitter: 0.0}}"),
        ))
        .await??;
    master
        .send(SetGroups(vec![group(
            "g",
            Strategy::OneForAll,
            5,
            &["t", "p"],
        )]))
        .await?;
    master.send(StartWorker(id("g"))).await??;
    let first = support::read_pid(&p_pid).await;
    let _ = std::fs::remove_file(&p_pid);
    signal(first, libc::SIGUSR1);
    until_group(&master, "g", "restarted", |g| {
        g.state == GroupState::Running && g.restarts_total == 1
    })
    .await;
    assert_ne!(support::read_pid(&p_pid).await, first, "p restarted");
    let t = master.send(hsu::GetWorkerSummary(id("t"))).await??;
    assert_eq!(t.state, WorkerState::Stopped, "t stopped along: {t:?}");
    assert_eq!(dir.lines("t-runs"), 1, "t (never) not started again");
    master.send(Shutdown).await?;
    Ok(())
}

#[actix_rt::test]
async fn a_failure_escalates_through_two_levels_to_the_group_that_can_restart() -> TestResult {
    let dir = TempDir::new("group-two-levels");
    let (master, _watch, calls) = super::master(&dir).await;
    let (runs, pid) = (dir.file("x-runs"), dir.file("x.pid"));
    master
        .send(AddWorker(
            process_worker(
                "x",
                &["--count", &runs, "--pid-file", &pid, "--usr1-exit", "3"],
            )
            .with_restart("{policy: always, backoff: {initial: 0s, max: 0s, jitter: 0.0}}"),
        ))
        .await??;
    master
        .send(AddWorker(
            test_worker("m", "{}").with_restart("{policy: always}"),
        ))
        .await??;
    // leaf and middle tolerate no restart: x's crash fails leaf, leaf's failure fails middle,
    // and top restarts middle (which starts leaf, which starts x).
    let mut leaf = group("leaf", Strategy::OneForOne, 0, &["x"]);
    leaf.parent = Some(id("middle"));
    let mut middle = group("middle", Strategy::OneForAll, 0, &["m", "leaf"]);
    middle.parent = Some(id("top"));
    let top = group("top", Strategy::OneForOne, 5, &["middle"]);
    master.send(SetGroups(vec![top, middle, leaf])).await?;
    master.send(StartWorker(id("top"))).await??;
    let first = support::read_pid(&pid).await;
    let _ = std::fs::remove_file(&pid);
    signal(first, libc::SIGUSR1);
    until_group(&master, "top", "restarted middle", |g| {
        g.state == GroupState::Running && g.restarts_total == 1
    })
    .await;
    for name in ["middle", "leaf"] {
        let g = until_group(&master, name, "running", |g| g.state == GroupState::Running).await;
        assert_eq!(
            g.restarts_total, 0,
            "{name} did not restart anything itself: {g:?}"
        );
    }
    assert_ne!(support::read_pid(&pid).await, first);
    assert_eq!(dir.lines_once("x-runs", 2).await, 2);
    assert_eq!(Calls::get(&calls.starts), 2, "m restarted with middle");
    master.send(Shutdown).await?;
    Ok(())
}
