//! Orphans: `hsu run` is a child subreaper, so descendants whose parent exited come to it and
//! are reaped; as PID 1 of a PID namespace (a container's init) it reaps every orphan there and
//! a SIGTERM stops it cleanly. Its own children's exit statuses are never taken by the reaper.

use std::path::Path;
use std::time::{Duration, Instant};

use super::control::{socket_of, unix_request, until_row};
use super::{Running, TempFile, DEADLINE};

/// A worker that leaves `n` orphans behind (each `sleep` outlives the `sh` that started it),
/// then stays; and one that exits 7 after a while, never restarted.
fn orphan_config(name: &str, n: u32) -> TempFile {
    TempFile::new(
        name,
        &format!(
            r#"
workers:
  - id: orphans
    type: process
    execution:
      executable_path: /bin/sh
      args: ['-c', 'i=0; while [ $i -lt {n} ]; do sh -c "sleep 0.01 &"; i=$((i+1)); done; echo made; exec sleep 600']
  - id: exits
    type: process
    execution: {{executable_path: /bin/sh, args: ['-c', 'sleep 0.5; exit 7']}}
    restart: {{policy: never}}
"#
        ),
    )
}

/// PIDs (as this /proc sees them) of `parent`'s children that are zombies.
fn zombies_of(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
                let mut f = rest.split_whitespace();
                f.next() == Some("Z") && f.next() == Some(parent.to_string().as_str())
            })
        })
        .collect()
}

fn orphans_reaped(socket: &Path) -> u64 {
    let (_, text) = unix_request(socket, "GET", "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix("hsu_orphans_reaped_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Waits until every orphan is reaped (the count says so, and `hsu` has no zombie child),
/// and the worker that exited 7 is seen with its own status.
fn assert_all_reaped(hsu: &Running, hsu_pid: u32, n: u64) {
    let socket = socket_of(hsu);
    until_row(&socket, "exits", "exited 7", |r| r["last_exit_code"] == 7);
    let start = Instant::now();
    loop {
        let reaped = orphans_reaped(&socket);
        let zombies = zombies_of(hsu_pid);
        if reaped >= n && zombies.is_empty() {
            break;
        }
        // The reaper looks every second and reaps after a one-second grace; its full sweep,
        // which would find them anyway, runs only every 30 s.
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{reaped} of {n} orphans reaped within 10 s, zombies of hsu: {zombies:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn orphans_of_a_workers_tree_are_reaped_and_its_own_exit_status_is_kept() {
    let config = orphan_config("orphans.yaml", 200);
    let mut hsu = Running::start(&["run", config.path()]);
    hsu.wait_for("hsu running");
    let pid = hsu.child.id();
    // By the clock, not by SIGCHLD: no handler is installed, so the kernel drops the signal of
    // every child's exit where it is made (a handler ran in one of hsu's threads and woke all
    // its runtimes, once per exit).
    assert!(!catches(pid, libc::SIGCHLD), "hsu catches SIGCHLD");
    assert!(catches(pid, libc::SIGTERM), "hsu does not catch SIGTERM");
    assert_all_reaped(&hsu, pid, 200);
    hsu.signal("TERM");
    let (status, _) = hsu.finish();
    assert!(status.success());
}

/// As PID 1 of a new PID namespace (`unshare --pid --fork --mount-proc`, as root): orphans of
/// the whole namespace come to hsu; none is left a zombie, and SIGTERM stops it with exit 0.
#[test]
fn as_pid_1_hsu_reaps_every_orphan_and_stops_on_sigterm() {
    let probe = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: cannot make a PID namespace here (needs root and unshare): {probe:?}");
        return;
    }
    let config = orphan_config("pid1.yaml", 300);
    let mut hsu = Running::start_via(
        &["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"],
        &["run", config.path()],
    );
    hsu.wait_for("hsu running");
    // unshare's child is hsu, PID 1 inside.
    let unshare = hsu.child.id();
    let inner = children_of(unshare);
    assert_eq!(inner.len(), 1, "unshare's children: {inner:?}");
    let pid = inner[0];
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let nspid = status
        .lines()
        .find(|l| l.starts_with("NSpid:"))
        .unwrap_or_default()
        .to_string();
    assert!(
        nspid.trim_end().ends_with("\t1"),
        "hsu is not PID 1: {nspid}"
    );
    assert_all_reaped(&hsu, pid, 300);
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let (status, stderr) = hsu.finish();
    assert!(status.success(), "{status:?}\n{stderr}");
    assert!(stderr.contains("all workers stopped"), "{stderr}");
}

fn children_of(parent: u32) -> Vec<u32> {
    let start = Instant::now();
    loop {
        let found = children_of_now(parent);
        if !found.is_empty() || start.elapsed() > DEADLINE {
            return found;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An exec probe that outlives its timeout is killed and reaped by the probe itself: no zombie
/// and no `sleep` of it is left, and hsu still catches no SIGCHLD (dropped running, tokio would
/// have queued the child as an orphan and installed a SIGCHLD handler to reap it).
#[test]
fn an_exec_probe_that_times_out_is_killed_and_reaped_and_hsu_still_takes_no_sigchld() {
    let config = TempFile::new(
        "slow-probe.yaml",
        r#"
workers:
  - id: probed
    type: process
    execution: {executable_path: /bin/sleep, args: ['600']}
    health_check: {type: exec, command: [/bin/sleep, '7'], interval: 100ms, timeout: 100ms, failure_threshold: 1000000}
"#,
    );
    let mut hsu = Running::start(&["run", config.path()]);
    hsu.wait_for("hsu running");
    let pid = hsu.child.id();
    let probes = || {
        children_of_now(pid)
            .into_iter()
            .filter(|c| {
                std::fs::read_to_string(format!("/proc/{c}/cmdline"))
                    .is_ok_and(|cmd| cmd == "/bin/sleep\u{0}7\u{0}")
            })
            .count()
    };
    // Several probes have run and timed out.
    let start = Instant::now();
    let mut seen = 0;
    while start.elapsed() < Duration::from_millis(1500) {
        seen = seen.max(probes());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(seen >= 1, "no probe was seen running");
    // At most the one running now is left; none waits as a zombie for longer than a probe.
    let left = probes();
    assert!(left <= 1, "{left} probe processes left running or unreaped");
    assert!(
        !catches(pid, libc::SIGCHLD),
        "hsu catches SIGCHLD after a probe timed out"
    );
    hsu.signal("TERM");
    let (status, stderr) = hsu.finish();
    assert!(status.success(), "{status:?}\n{stderr}");
}

/// Whether process `pid` has a handler for `signal` (its `SigCgt` mask).
fn catches(pid: u32, signal: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let caught = status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .map(|h| u64::from_str_radix(h.trim(), 16).unwrap())
        .unwrap();
    caught & (1 << (signal - 1)) != 0
}

/// `parent`'s children (as /proc sees them) at this moment, zombies included.
fn children_of_now(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
                rest.split_whitespace().nth(1) == Some(parent.to_string().as_str())
            })
        })
        .collect()
}
