//! What a master that died without stopping (SIGKILL, a crash, a power cut of the container)
//! left in its run directory: `hsu.pids` (`run_table.rs`; `<id>.pid` and `<id>.port` files from
//! masters before it), and possibly processes. Its
//! direct children die with it (`PR_SET_PDEATHSIG`), but their descendants in the same
//! process group do not. The next master (holding the run directory's lock, so the previous
//! one is certainly gone) kills those groups before it starts anything: never two instances of
//! one worker.
//!
//! A group is only killed when it is certainly the old worker's: when no process has the
//! leader's PID any more (the kernel never hands out a PID still used as a process group id,
//! so group P can only be the old one), or when the process with that PID started before its
//! pid file was written (the old leader itself). A PID reused by a later process is left alone.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::sys;

/// Kills what the previous master of `run_directory` left running and removes its run files.
/// Returns one line per thing done, for the log.
pub fn clean_up(run_directory: &Path) -> Vec<String> {
    let mut done = Vec::new();
    let table = run_directory.join(super::run_table::FILE);
    if let Ok(text) = std::fs::read_to_string(&table) {
        let written = std::fs::metadata(&table).and_then(|m| m.modified()).ok();
        for (worker, pid, _) in text.lines().filter_map(super::run_table::parse_line) {
            kill_left(worker, pid, written, &mut done);
        }
        let _ = std::fs::remove_file(&table);
    }
    let Ok(entries) = std::fs::read_dir(run_directory) else {
        return done;
    };
    // One file per worker, as masters before `hsu.pids` wrote them.
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ext == "port" {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        if ext != "pid" {
            continue;
        }
        let worker = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let written = entry.metadata().and_then(|m| m.modified()).ok();
        let pid = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok());
        let _ = std::fs::remove_file(&path);
        if let Some(pid) = pid {
            kill_left(&worker, pid, written, &mut done);
        }
    }
    done
}

/// Kills group `pid` of `worker` if it is certainly the one the old master recorded (at
/// `written`).
fn kill_left(worker: &str, pid: i32, written: Option<SystemTime>, done: &mut Vec<String>) {
    if pid <= 1 {
        return;
    }
    let ours = match sys::read_stat(pid) {
        // No process has the PID: group `pid` can only be the old worker's.
        Err(_) => true,
        Ok(stat) => match (started_at(stat.start_time), written) {
            (Some(started), Some(written)) => started <= written + Duration::from_secs(1),
            _ => false,
        },
    };
    if !ours || !sys::group_alive(pid) {
        return;
    }
    let _ = sys::signal_group(pid, libc::SIGKILL);
    done.push(format!(
        "worker `{worker}`: killed process group {pid}, left running by a master that did not stop"
    ));
}

/// When a process started, from its start time in clock ticks after boot.
fn started_at(ticks: u64) -> Option<SystemTime> {
    let boot: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let seconds = boot as f64 + ticks as f64 / sys::clock_ticks() as f64;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs_f64(seconds))
}
