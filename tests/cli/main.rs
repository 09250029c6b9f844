//! The `hsu` binary: `run` with real signals and a real HTTP request, `check` on every example;
//! operating a running master through its control API (`control`).

mod control;
mod import;
mod reaping;
mod semantics;
mod systemd;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const HSU: &str = env!("CARGO_BIN_EXE_hsu");
const DEADLINE: Duration = Duration::from_secs(30);

/// A running `hsu`, killed if the test panics, and its stderr lines as they come.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    cwd: PathBuf,
}

impl Running {
    fn start(args: &[&str]) -> Self {
        Self::start_via(&[], args)
    }

    /// `hsu ARGS` run by `wrapper` (e.g. `unshare --pid --fork`), which is then the child.
    fn start_via(wrapper: &[&str], args: &[&str]) -> Self {
        Self::start_with(wrapper, &[], args)
    }

    /// As [`start_via`](Self::start_via), with `env` added to hsu's environment.
    fn start_with(wrapper: &[&str], env: &[(&str, &str)], args: &[&str]) -> Self {
        // A directory of its own, so default log and run directories land there.
        let cwd = std::env::temp_dir().join(format!(
            "hsu-test-{}-cwd-{}",
            std::process::id(),
            args.join("_").replace('/', "_")
        ));
        std::fs::create_dir_all(&cwd).unwrap();
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(HSU);
                c
            }
            None => Command::new(HSU),
        };
        let mut child = command
            .args(args)
            .current_dir(&cwd)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("hsu starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
            cwd,
        }
    }

    /// Waits for a stderr line containing `text` (seen before or arriving now); returns it.
    /// The deadline bounds the whole wait, however many other lines arrive meanwhile.
    fn wait_for(&mut self, text: &str) -> String {
        if let Some(line) = self.seen.iter().find(|l| l.contains(text)) {
            return line.clone();
        }
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line with {text:?}; stderr so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the exit; returns the status and the rest of stderr.
    fn finish(mut self) -> (std::process::ExitStatus, String) {
        self.exited()
    }

    /// As [`finish`](Self::finish), keeping `cwd` (which dropping `self` removes) to look at
    /// what the master left in it.
    fn exited(&mut self) -> (std::process::ExitStatus, String) {
        let start = std::time::Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "hsu did not exit; stderr so far:\n{}",
                self.seen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        // The rest of stderr, until EOF (bounded: a leaked descriptor must not hang the test).
        loop {
            match self.lines.recv_timeout(DEADLINE) {
                Ok(line) => self.seen.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "hsu exited but its stderr stayed open (a child kept it?):\n{}",
                    self.seen.join("\n")
                ),
            }
        }
        (status, std::mem::take(&mut self.seen).join("\n"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.cwd);
    }
}

/// A directory of its own under the temp dir, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("hsu-sem-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
    /// The path of `name` in it.
    fn file(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }

    /// Writes `name` in it; its path.
    fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A file in the temp dir, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> Self {
        let path = std::env::temp_dir().join(format!("hsu-test-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        Self(path)
    }
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn http_get(address: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn run_serves_the_configured_workers_and_sigterm_stops_them_with_exit_0() {
    let config = TempFile::new(
        "run.yaml",
        "workers:
  - {id: web, type: module, module_name: echo, config: {port: 0}}
  - {id: tick, type: module, module_name: ticker, config: {interval: 50ms, message: beat}}
",
    );
    let mut hsu = Running::start(&["run", config.path()]);
    let line = hsu.wait_for("echo listening on http://");
    let address = line
        .split("http://")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    hsu.wait_for("beat");
    let response = http_get(&address, "/from-test");
    assert!(
        response.contains("echo from web: GET /from-test"),
        "{response}"
    );
    hsu.signal("TERM");
    let (status, stderr) = hsu.finish();
    assert!(status.success(), "{status:?}\n{stderr}");
    assert!(stderr.contains("all workers stopped"), "{stderr}");
    // Reverse order: tick (added last) stops first.
    let stopping = |id: &str| {
        stderr
            .lines()
            .position(|l| l.contains(&format!("id={id}")) && l.contains("to=stopping"))
            .unwrap_or_else(|| panic!("{id} never stopping:\n{stderr}"))
    };
    assert!(stopping("tick") < stopping("web"), "{stderr}");
    assert!(
        TcpStream::connect(&address).is_err(),
        "the port is closed after exit"
    );
}

#[test]
fn run_without_config_runs_the_embedded_demo_and_ctrl_c_stops_it() {
    let mut hsu = Running::start(&["run"]);
    hsu.wait_for("hsu running the embedded default config");
    hsu.signal("INT");
    let (status, stderr) = hsu.finish();
    assert!(status.success(), "{status:?}\n{stderr}");
    assert!(stderr.contains("signal=\"SIGINT\""), "{stderr}");
}

#[test]
fn run_refuses_an_invalid_config_with_exit_2() {
    let config = TempFile::new(
        "invalid.yaml",
        "workers:\n  - {id: a, type: module, module_name: nope}\n",
    );
    let output = Command::new(HSU)
        .args(["run", config.path()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("worker `a`: `module_name`: no native module factory named `nope`"),
        "{stderr}"
    );
}

#[test]
fn check_accepts_every_example_config() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/configs");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    let check = |args: &[&str], files: &[String]| {
        let output = Command::new(HSU)
            .arg("check")
            .args(args)
            .args(files)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.success(), stdout, stderr)
    };
    // The rules: every example.
    let (ok, stdout, stderr) = check(&["--config-only"], &files);
    assert!(ok, "{stdout}\n{stderr}");
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok: ")).count(),
        files.len()
    );
    // And this machine: the examples' programs exist (the test binaries are built), their
    // paths meaning the examples' directory. The plugin example needs `cargo build -p
    // echo-plugin` first; without it, check says which file is missing, resolved.
    let plugin = dir.join("../../target/debug/libecho_plugin.so");
    let (need_build, ready): (Vec<String>, Vec<String>) = files
        .iter()
        .cloned()
        .partition(|f| f.ends_with("echo-plugin.yaml") && !plugin.exists());
    let (ok, stdout, stderr) = check(&[], &ready);
    assert!(ok, "{stdout}\n{stderr}");
    for file in &need_build {
        let (ok, _, stderr) = check(&[], std::slice::from_ref(file));
        assert!(!ok);
        assert!(
            stderr.contains("examples/configs/../../target/debug/libecho_plugin.so`: no such file"),
            "{stderr}"
        );
    }
}

#[test]
fn check_reports_the_line_and_field_of_a_mistake() {
    let config = TempFile::new(
        "typo.yaml",
        "workers:\n  - id: a\n    type: module\n    module_name: echo\n    health_check:\n      intervall: 5s\n",
    );
    let output = Command::new(HSU)
        .args(["check", config.path()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("{}:6:", config.path())),
        "{stderr}"
    );
    assert!(stderr.contains("unknown field `intervall`"), "{stderr}");
}

#[test]
fn usage_errors_exit_2() {
    let output = Command::new(HSU).arg("frobnicate").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr).to_lowercase();
    assert!(stderr.contains("usage:"), "{stderr}");
    assert!(
        stderr.contains("frobnicate"),
        "names the unknown command: {stderr}"
    );
    // `--help` of a subcommand is help, not a config file named `--help`.
    let output = Command::new(HSU).args(["run", "--help"]).output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("Usage: hsu run [CONFIG]"), "{stdout}");
    let output = Command::new(HSU)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("_hsu"));
}

#[test]
fn children_die_with_the_master_even_when_it_is_sigkilled() {
    let dir = std::env::temp_dir().join(format!("hsu-test-{}-sigkill", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let worker = env!("CARGO_BIN_EXE_hsu-test-worker");
    let config = TempFile::new(
        "sigkill.yaml",
        &format!(
            "master: {{logs: {{directory: {d}/logs}}, run_directory: {d}/run}}
workers:
  - {{id: a, type: process, execution: {{executable_path: {worker}, args: [--pid-file, {d}/a.pid, --ignore-term]}}}}
  - {{id: b, type: process, execution: {{executable_path: {worker}, args: [--pid-file, {d}/b.pid]}}}}
",
            d = dir.display()
        ),
    );
    let mut hsu = Running::start(&["run", config.path()]);
    hsu.wait_for("hsu running");
    let read_pid = |name: &str| -> u32 {
        let path = dir.join(name);
        let start = std::time::Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(&path) {
                if let Ok(pid) = text.trim().parse() {
                    return pid;
                }
            }
            assert!(start.elapsed() < DEADLINE, "no pid file {}", path.display());
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let pids = [read_pid("a.pid"), read_pid("b.pid")];
    hsu.signal("KILL");
    let (status, _) = hsu.finish();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    let alive = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                !matches!(
                    s.rsplit(')')
                        .next()
                        .and_then(|r| r.split_whitespace().next()),
                    Some("Z" | "X")
                )
            })
            .unwrap_or(false)
    };
    let start = std::time::Instant::now();
    while pids.iter().any(|&p| alive(p)) {
        assert!(
            start.elapsed() < DEADLINE,
            "children outlived the master: {pids:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn module_tracing_and_process_output_share_the_per_worker_log_files() {
    let dir = std::env::temp_dir().join(format!("hsu-test-{}-logs", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let worker = env!("CARGO_BIN_EXE_hsu-test-worker");
    let config = TempFile::new(
        "logs.yaml",
        &format!(
            "master: {{logs: {{directory: {d}/logs}}, run_directory: {d}/run}}
workers:
  - {{id: tick, type: module, module_name: ticker, config: {{interval: 20ms, message: beat}}}}
  - {{id: proc, type: process, execution: {{executable_path: {worker}, args: [--flood, '3', --sleep, '60000']}}}}
",
            d = dir.display()
        ),
    );
    let mut hsu = Running::start(&["run", config.path()]);
    hsu.wait_for("hsu running");
    // The console mirror of the process output shows it has been read.
    hsu.wait_for("line 000003");
    let tick_log = dir.join("logs/tick.log");
    let start = std::time::Instant::now();
    while !std::fs::read_to_string(&tick_log).is_ok_and(|t| t.matches("beat").count() >= 3) {
        assert!(
            start.elapsed() < DEADLINE,
            "no ticks in {}",
            tick_log.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    hsu.signal("TERM");
    let (status, stderr) = hsu.finish();
    assert!(status.success(), "{stderr}");
    let ticks = std::fs::read_to_string(&tick_log).unwrap();
    let first = ticks.lines().find(|l| l.contains("beat")).unwrap();
    assert!(
        first.contains(" INFO hsu::builtin::ticker: beat count=1"),
        "{first}"
    );
    let output = std::fs::read_to_string(dir.join("logs/proc.log")).unwrap();
    assert_eq!(output, "line 000001\nline 000002\nline 000003\n");
    let _ = std::fs::remove_dir_all(&dir);
}
