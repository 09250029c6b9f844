//! Operating a running `hsu run` from outside: the CLI's client commands over the Unix socket,
//! the TCP listener with its token, read-only mode, one master per run directory.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::{Running, TempFile, DEADLINE, HSU};

const WORKER: &str = env!("CARGO_BIN_EXE_hsu-test-worker");

/// `hsu ARGS… --socket SOCKET`, run to completion.
pub(super) fn client(socket: &Path, args: &[&str]) -> Output {
    Command::new(HSU)
        .args(args)
        .arg("--socket")
        .arg(socket)
        .env_remove("HSU_URL")
        .output()
        .expect("hsu client runs")
}

pub(super) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub(super) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `hsu ls --json` as JSON rows.
pub(super) fn rows(socket: &Path) -> Vec<serde_json::Value> {
    let output = client(socket, &["ls", "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    serde_json::from_slice(&output.stdout).expect("JSON rows")
}

pub(super) fn row(socket: &Path, id: &str) -> serde_json::Value {
    rows(socket)
        .into_iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no row {id}"))
}

/// Polls `hsu ls --json` until `cond` holds for `id`'s row (bounded by the deadline). A row not
/// there yet is waited for too: the API answers as soon as it listens, before every worker of
/// the config has been added.
pub(super) fn until_row(
    socket: &Path,
    id: &str,
    what: &str,
    cond: impl Fn(&serde_json::Value) -> bool,
) {
    let start = std::time::Instant::now();
    loop {
        let r = rows(socket)
            .into_iter()
            .find(|r| r["id"] == id)
            .unwrap_or(serde_json::Value::Null);
        if !r.is_null() && cond(&r) {
            return;
        }
        assert!(start.elapsed() < DEADLINE, "{id} never {what}: {r}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The status code and the body of a raw HTTP/1.1 response.
fn parse_response(response: &str) -> (u16, String) {
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Sends one request (no body, `connection: close`) on `stream` and reads the response.
fn exchange(mut stream: impl Read + Write, method: &str, path: &str, auth: &str) -> (u16, String) {
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: hsu\r\n{auth}content-length: 0\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    parse_response(&response)
}

/// One raw HTTP/1.1 request over TCP; the status code and the body.
fn http(address: &str, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    exchange(stream, method, path, &auth)
}

/// One raw HTTP/1.1 request over the master's Unix socket.
pub(super) fn unix_request(socket: &Path, method: &str, path: &str) -> (u16, String) {
    let stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    exchange(stream, method, path, "")
}

pub(super) fn socket_of(hsu: &Running) -> PathBuf {
    hsu.cwd.join("hsu-run/hsu.sock")
}

#[test]
fn hsu_ls_restart_stop_start_and_logs_operate_a_running_master() {
    let config = TempFile::new(
        "control.yaml",
        &format!(
            r#"
workers:
  - {{id: web, type: module, module_name: echo, config: {{port: 0}}}}
  - {{id: chatty, type: process, execution: {{executable_path: {WORKER}, args: [--flood, '120']}}}}
  - {{id: crashy, type: process, execution: {{executable_path: {WORKER}, args: [--exit, '3']}},
     restart: {{policy: on_failure, max_restarts: 1, window: 1m, backoff: {{initial: 10ms, max: 10ms}}}}}}
"#
        ),
    );
    let mut hsu = Running::start(&["run", config.path()]);
    hsu.wait_for("hsu running");
    let socket = socket_of(&hsu);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the socket is private to the master's user");

    // The table, in config order, with the why of the crash loop once it gave up.
    until_row(&socket, "crashy", "gave up", |r| {
        r["why"]
            .as_str()
            .is_some_and(|w| w.starts_with("circuit open"))
    });
    let table = client(&socket, &["ls"]);
    assert!(table.status.success(), "{}", stderr(&table));
    let text = stdout(&table);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].contains("ID") && lines[0].contains("WHY"),
        "{text}"
    );
    let order: Vec<&str> = lines[1..]
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(order, ["web", "chatty", "crashy"], "{text}");
    assert!(text.contains("circuit open (1 restarts in 1m)"), "{text}");

    // Restart by hand: counted as a restart, no circuit involved.
    let web = row(&socket, "web");
    assert_eq!(
        (web["state"].as_str(), web["deployment"].as_str()),
        (Some("running"), Some("native"))
    );
    let out = client(&socket, &["restart", "web"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "web: running");
    assert_eq!(row(&socket, "web")["restart_count"], 1);

    // The last lines of a process's output, across the API (once the pump wrote them all).
    let start = std::time::Instant::now();
    loop {
        let out = client(&socket, &["logs", "chatty", "-n", "3"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        if text.lines().collect::<Vec<_>>() == ["line 000118", "line 000119", "line 000120"] {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "last lines never seen: {text}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    // Stop and start; a manual start closes the crash loop's circuit (and it fails again).
    let out = client(&socket, &["stop", "web"]);
    assert_eq!(stdout(&out).trim(), "web: stopped", "{}", stderr(&out));
    let out = client(&socket, &["start", "web", "crashy"]);
    assert!(stdout(&out).contains("web: running"), "{}", stdout(&out));

    // Errors name the worker and exit 1; a bad id is refused as such.
    let out = client(&socket, &["restart", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no worker `nope`"),
        "{}",
        stderr(&out)
    );
    let out = client(&socket, &["status", "a/b"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("contains '/'"), "{}", stderr(&out));
    let out = client(&socket, &["status", "web", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["deployment"], "native");
    assert!(status["module"]["info"]["endpoints"][0]
        .as_str()
        .unwrap()
        .starts_with("http://127.0.0.1:"));

    // Every worker in one request (stop goes in reverse order).
    let out = client(&socket, &["stop", "--all"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("web: stopped") && text.contains("chatty: stopped"),
        "{text}"
    );
    assert!(rows(&socket).iter().all(|r| r["state"] != "running"));

    // `hsu shutdown` ends the master like a signal: exit 0, nothing left behind.
    let out = client(&socket, &["shutdown"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (status, log) = hsu.exited();
    let cwd = hsu.cwd.clone();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(log.contains("reason=\"a shutdown request\""), "{log}");
    // The master made its run directory, so it removes it too.
    let left: Vec<_> = std::fs::read_dir(cwd.join("hsu-run"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "run directory left: {left:?}");
    assert!(
        !cwd.join("hsu-run").exists(),
        "the empty run directory it created is left"
    );

    // Nobody listens now: exit 3 and the socket named.
    let out = client(&socket, &["ls"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("cannot reach the master at"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_second_master_on_the_same_run_directory_is_refused_naming_the_first() {
    let config = TempFile::new(
        "lock.yaml",
        &format!(
            "workers:\n  - {{id: s, type: process, execution: {{executable_path: {WORKER}}}}}\n"
        ),
    );
    let mut first = Running::start(&["run", config.path()]);
    first.wait_for("hsu running");
    let second = Command::new(HSU)
        .args(["run", config.path()])
        .current_dir(&first.cwd)
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    let text = stderr(&second);
    assert!(
        text.contains(&format!("another hsu master (PID {})", first.child.id())),
        "{text}"
    );
    // The first is untouched: its socket and worker still answer.
    let socket = socket_of(&first);
    assert_eq!(row(&socket, "s")["state"], "running");
    first.signal("TERM");
    let (status, _) = first.finish();
    assert!(status.success());
}

#[test]
fn a_run_directory_that_was_there_before_the_master_is_kept_and_emptied() {
    let dir = std::env::temp_dir().join(format!("hsu-test-{}-kept-run", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = TempFile::new(
        "kept-run.yaml",
        &format!(
            "master: {{run_directory: {d}}}\nworkers:\n  - {{id: s, type: process, execution: {{executable_path: {WORKER}}}}}\n",
            d = dir.display()
        ),
    );
    let mut hsu = Running::start(&["run", config.path()]);
    hsu.wait_for("hsu running");
    assert_eq!(row(&dir.join("hsu.sock"), "s")["state"], "running");
    hsu.signal("TERM");
    let (status, log) = hsu.finish();
    assert!(status.success(), "{log}");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .expect("the run directory the user made is still there")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "run directory left: {left:?}");
    std::fs::remove_dir(&dir).unwrap();
}

#[test]
fn the_tcp_listener_needs_the_token_and_read_only_refuses_writes() {
    let config = TempFile::new(
        "tcp.yaml",
        &format!(
            "master:\n  api: {{listen: '127.0.0.1:0', read_only: true}}\nworkers:\n  - {{id: s, type: process, execution: {{executable_path: {WORKER}}}}}\n"
        ),
    );
    let mut hsu = Running::start(&["run", config.path()]);
    let line = hsu.wait_for("transport=tcp:");
    let address = line
        .split("transport=tcp:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_string();
    hsu.wait_for("hsu running");
    let token_file = hsu.cwd.join("hsu-run/api.token");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(token.len(), 64, "32 random bytes as hex");

    let (status, body) = http(&address, "GET", "/v1/workers", None);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("\"kind\":\"unauthorized\""), "{body}");
    let (status, _) = http(&address, "GET", "/v1/workers", Some("not-the-token"));
    assert_eq!(status, 401);
    let (status, body) = http(&address, "GET", "/v1/workers", Some(&token));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"id\":\"s\""), "{body}");
    let (status, body) = http(&address, "POST", "/v1/workers/s/stop", Some(&token));
    assert_eq!(status, 403, "read-only: {body}");
    let (status, body) = http(&address, "GET", "/v1/workers/nope", Some(&token));
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("\"worker\":\"nope\""), "{body}");
    let (status, _) = http(&address, "GET", "/elsewhere", Some(&token));
    assert_eq!(status, 404);

    // The CLI over TCP, with the token from the run directory's file.
    let out = Command::new(HSU)
        .args(["ls", "--json", "--url", &address, "--token-file"])
        .arg(&token_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("\"state\": \"running\""),
        "{}",
        stdout(&out)
    );
    // Read-only covers the socket too.
    let out = client(&socket_of(&hsu), &["stop", "s"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("read-only"), "{}", stderr(&out));

    hsu.signal("TERM");
    let (status, _) = hsu.exited();
    assert!(status.success());
    assert!(
        !hsu.cwd.join("hsu-run/api.token").exists(),
        "the generated token is removed"
    );
}

#[test]
fn a_non_loopback_listen_address_is_refused_unless_allowed() {
    let config = TempFile::new(
        "remote.yaml",
        "master:\n  api: {listen: '0.0.0.0:7070'}\nworkers: []\n",
    );
    let out = Command::new(HSU)
        .args(["check", config.path()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(
        text.contains("`master.api.listen`") && text.contains("allow_remote: true"),
        "{text}"
    );
    let allowed = TempFile::new(
        "remote-ok.yaml",
        "master:\n  api: {listen: '0.0.0.0:7070', allow_remote: true}\nworkers: []\n",
    );
    let out = Command::new(HSU)
        .args(["check", allowed.path()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A client command left running (`logs -f`, `events`), its stdout lines as they come.
struct Streaming {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Streaming {
    fn start(socket: &Path, args: &[&str]) -> Self {
        use std::io::BufRead as _;
        let mut child = Command::new(HSU)
            .args(args)
            .arg("--socket")
            .arg(socket)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// Lines until one satisfies `done` (that one included), within the deadline.
    fn until(&self, done: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = std::time::Instant::now() + DEADLINE;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let stop = done(&line);
                    seen.push(line);
                    if stop {
                        return seen;
                    }
                }
                Err(_) => panic!("no awaited line; got: {seen:#?}"),
            }
        }
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn logs_follow_across_rotations_with_no_gap_and_events_stream_in_order() {
    // Rotation every few lines; the follower must still see each tick once, in order.
    let config = TempFile::new(
        "follow.yaml",
        r#"
master:
  logs: {max_size: 120B, max_files: 40, mirror: false}
workers:
  - {id: ticker, type: process, execution: {executable_path: /bin/sh, args: [-c, 'i=1; while [ $i -le 60 ]; do echo "tick $i"; i=$((i+1)); sleep 0.02; done; sleep 60']}}
  - {id: web, type: module, module_name: echo, config: {port: 0}}
"#,
    );
    let mut hsu = Running::start(&["run", config.path()]);
    hsu.wait_for("hsu running");
    let socket = socket_of(&hsu);
    let events = Streaming::start(&socket, &["events", "--json"]);
    // Every event so far comes first (the history), in order.
    let first =
        events.until(|l| l.contains("\"worker\":\"web\"") && l.contains("\"to\":\"running\""));
    let seqs: Vec<u64> = first
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "{first:#?}"
    );

    let follow = Streaming::start(&socket, &["logs", "ticker", "-f", "-n", "1000"]);
    let ticks = follow.until(|l| l == "tick 60");
    let want: Vec<String> = (1..=60).map(|n| format!("tick {n}")).collect();
    assert_eq!(
        ticks, want,
        "tail then follow: each line once, in order, across rotations"
    );
    assert!(
        hsu.cwd.join("hsu-logs/ticker.log.3").exists(),
        "the log rotated while followed"
    );

    // A restart by hand streams its events live.
    let out = client(&socket, &["restart", "web"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let live =
        events.until(|l| l.contains("\"worker\":\"web\"") && l.contains("\"to\":\"running\""));
    let states: Vec<String> = live
        .iter()
        .filter(|l| l.contains("\"worker\":\"web\""))
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["to"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        states,
        ["stopping", "stopped", "starting", "running"],
        "{live:#?}"
    );

    // Resuming after event 2 replays from event 3.
    let resumed = Streaming::start(&socket, &["events", "--json", "--since", "2"]);
    let replay = resumed.until(|_| true);
    let seq = serde_json::from_str::<serde_json::Value>(&replay[0]).unwrap()["seq"].as_u64();
    assert_eq!(seq, Some(3));
    // A number from another run of the master (beyond the newest): everything kept is news.
    let other_run = Streaming::start(&socket, &["events", "--json", "--since", "999999"]);
    let replay = other_run.until(|_| true);
    let seq = serde_json::from_str::<serde_json::Value>(&replay[0]).unwrap()["seq"].as_u64();
    assert_eq!(seq, Some(1));

    // Several workers interleaved, each line prefixed.
    let out = client(&socket, &["logs", "-n", "2"]);
    let text = stdout(&out);
    assert!(text.contains("ticker | tick 60"), "{text}");
    assert!(text.contains("web | "), "{text}");
    drop((events, follow, resumed, other_run));
    hsu.signal("TERM");
    let (status, _) = hsu.finish();
    assert!(status.success());
}

#[test]
fn metrics_describe_every_worker_and_pass_promtool() {
    let config = TempFile::new(
        "metrics.yaml",
        &format!(
            r#"
master: {{resource_interval: 50ms}}
workers:
  - {{id: web, type: module, module_name: echo, config: {{port: 0}}}}
  - {{id: proc, type: process, execution: {{executable_path: {WORKER}}}}}
  - {{id: quits, type: process, execution: {{executable_path: {WORKER}, args: [--exit, '3']}}, restart: {{policy: never}}}}
"#
        ),
    );
    let mut hsu = Running::start(&["run", config.path()]);
    hsu.wait_for("hsu running");
    let socket = socket_of(&hsu);
    until_row(&socket, "quits", "exited", |r| r["last_exit_code"] == 3);
    // Present at 0 before anything happened, so a first restart shows in increase().
    let (status, text) = unix_request(&socket, "GET", "/metrics");
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("hsu_worker_restarts_total{worker=\"web\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("hsu_worker_state{deployment=\"native\",state=\"running\",worker=\"web\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("hsu_worker_state{deployment=\"native\",state=\"failed\",worker=\"web\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("hsu_worker_info{deployment=\"managed\",worker=\"proc\"} 1"),
        "{text}"
    );
    assert!(text.contains("hsu_workers 3"), "{text}");
    assert!(
        text.contains("hsu_worker_last_exit_code{worker=\"quits\"} 3"),
        "{text}"
    );
    assert!(text.contains("process_resident_memory_bytes "), "{text}");
    // The master reaps orphans; how each process is contained; what its log writes cost.
    assert!(text.contains("hsu_subreaper 1"), "{text}");
    assert!(text.contains("hsu_orphans_reaped_total "), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("hsu_worker_containment{")
                && l.ends_with(",worker=\"proc\"} 1")
                && (l.contains("\"cgroup\"") || l.contains("\"process_group\""))),
        "{text}"
    );
    assert!(
        text.contains("hsu_worker_log_write_errors_total{worker=\"proc\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("hsu_worker_log_dropped_lines_total{worker=\"proc\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("hsu_module_blocked{worker=\"web\"} 0"),
        "{text}"
    );

    let out = client(&socket, &["restart", "web"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The process's resources appear once sampled.
    let start = std::time::Instant::now();
    let text = loop {
        let (_, text) = unix_request(&socket, "GET", "/metrics");
        if text.contains("hsu_worker_resident_memory_bytes{worker=\"proc\"}") {
            break text;
        }
        assert!(start.elapsed() < DEADLINE, "no resources sampled: {text}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(
        text.contains("hsu_worker_restarts_total{worker=\"web\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("hsu_worker_cpu_seconds_total{worker=\"proc\"}"),
        "{text}"
    );

    // The exposition format itself, checked by Prometheus's own tool where it is installed
    // (`.ci/run` installs it).
    match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(e) => eprintln!("promtool not run ({e}); install Debian's `prometheus` for it"),
    }
    hsu.signal("TERM");
    let (status, _) = hsu.finish();
    assert!(status.success());
}

const ECHO: &str = env!("CARGO_BIN_EXE_hsu-echo");

fn pids(socket: &Path) -> std::collections::HashMap<String, Option<u64>> {
    rows(socket)
        .into_iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r["pid"].as_u64()))
        .collect()
}

#[test]
fn apply_touches_only_what_changed_refuses_a_bad_config_and_sighup_reloads() {
    let first = format!(
        r#"
workers:
  - {{id: same, type: process, execution: {{executable_path: {WORKER}}}}}
  - {{id: edited, type: process, execution: {{executable_path: {WORKER}, args: [--sleep, '600000']}}}}
  - {{id: dropped, type: process, execution: {{executable_path: {WORKER}}}}}
  - {{id: moved, type: module, module_name: echo, config: {{port: 0}}}}
"#
    );
    let config = TempFile::new("apply.yaml", &first);
    let mut hsu = Running::start(&["run", config.path()]);
    hsu.wait_for("hsu running");
    let socket = socket_of(&hsu);
    let before = pids(&socket);

    let second = TempFile::new(
        "apply-2.yaml",
        &format!(
            r#"
workers:
  - {{id: added, type: process, execution: {{executable_path: {WORKER}}}}}
  - {{id: same, type: process, execution: {{executable_path: {WORKER}}}}}
  - {{id: edited, type: process, execution: {{executable_path: {WORKER}, args: [--sleep, '700000']}}}}
  - {{id: moved, type: process, process_type: integrated, execution: {{executable_path: {ECHO}}}, config: {{port: 0}}}}
"#
        ),
    );
    // The plan first: nothing changes.
    let out = client(&socket, &["apply", second.path(), "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan = stdout(&out);
    assert!(plan.contains("would be added: added"), "{plan}");
    assert!(
        plan.contains("would be restarted in their new form: edited, moved"),
        "{plan}"
    );
    assert!(plan.contains("would be removed: dropped"), "{plan}");
    assert_eq!(pids(&socket), before);

    // A bad config is refused whole; nothing changes.
    let bad = TempFile::new(
        "apply-bad.yaml",
        &format!("workers:\n  - {{id: same, type: process, execution: {{executable_path: {WORKER}}}, restrat: {{}}}}\n"),
    );
    let out = client(&socket, &["apply", bad.path()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("restrat"), "{}", stderr(&out));
    assert_eq!(pids(&socket), before);

    let out = client(&socket, &["apply", second.path()]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let after = pids(&socket);
    assert_eq!(after["same"], before["same"], "unchanged keeps its process");
    assert_ne!(after["edited"], before["edited"], "changed is restarted");
    assert!(!after.contains_key("dropped"));
    let moved = row(&socket, "moved");
    assert_eq!(
        (moved["deployment"].as_str(), moved["state"].as_str()),
        (Some("integrated"), Some("running")),
        "native -> process: {moved}"
    );
    assert_eq!(row(&socket, "same")["restart_count"], 0);
    let order: Vec<String> = rows(&socket)
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        order,
        ["added", "same", "edited", "moved"],
        "the new config's order"
    );

    // SIGHUP re-reads the file `hsu run` was given.
    std::fs::write(&config.0, &first).unwrap();
    hsu.signal("HUP");
    let line = hsu.wait_for("config reloaded");
    // The master section did not change: nothing to restart hsu for (hsu run's own defaults,
    // such as the subreaper, are not mistaken for a change).
    assert!(line.contains("needs_restart=[]"), "{line}");
    let reloaded = pids(&socket);
    assert!(
        reloaded.contains_key("dropped") && !reloaded.contains_key("added"),
        "{reloaded:?}"
    );
    assert_eq!(reloaded["same"], before["same"]);
    assert_eq!(row(&socket, "moved")["deployment"], "native");

    // Add and remove one worker.
    let one = TempFile::new(
        "one.yaml",
        &format!("{{id: extra, type: process, execution: {{executable_path: {WORKER}}}}}\n"),
    );
    let out = client(&socket, &["add", one.path()]);
    assert_eq!(stdout(&out).trim(), "extra: running", "{}", stderr(&out));
    let out = client(&socket, &["add", one.path()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    let out = client(&socket, &["rm", "extra"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!pids(&socket).contains_key("extra"));

    hsu.signal("TERM");
    let (status, _) = hsu.finish();
    assert!(status.success());
}

#[test]
fn a_second_stop_signal_forces_the_stop_and_kills_at_once() {
    let config = TempFile::new(
        "force.yaml",
        &format!(
            "workers:\n  - {{id: stubborn, type: process, execution: {{executable_path: {WORKER}, args: [--ignore-term]}}, stop: {{timeout: 60s}}}}\n"
        ),
    );
    let mut hsu = Running::start(&["run", config.path()]);
    hsu.wait_for("hsu running");
    let socket = socket_of(&hsu);
    let pid = row(&socket, "stubborn")["pid"].as_u64().unwrap() as u32;
    hsu.signal("INT");
    hsu.wait_for("a second Ctrl-C forces");
    hsu.signal("INT");
    let (status, log) = hsu.exited();
    let cwd = hsu.cwd.clone();
    assert_eq!(status.code(), Some(130), "{log}");
    assert!(log.contains("second stop signal: forcing"), "{log}");
    let gone = std::time::Instant::now();
    while std::path::Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
    {
        assert!(
            gone.elapsed() < DEADLINE,
            "the worker survived the forced stop"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // The master made its run directory, so it removes it too.
    let left: Vec<_> = std::fs::read_dir(cwd.join("hsu-run"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "run directory left: {left:?}");
    assert!(
        !cwd.join("hsu-run").exists(),
        "the empty run directory it created is left"
    );
}

#[test]
fn an_event_subscriber_that_does_not_read_is_told_how_many_events_it_missed() {
    let config = TempFile::new(
        "lag.yaml",
        "master:\n  api: {event_lag: 8}\n  logs: {mirror: false}\nworkers:\n  - {id: a, type: module, module_name: echo, config: {port: 0}}\n  - {id: b, type: module, module_name: echo, config: {port: 0}}\n",
    );
    let mut hsu = Running::start(&["run", config.path()]);
    hsu.wait_for("hsu running");
    let socket = socket_of(&hsu);
    // A subscriber that reads nothing until the end.
    let mut slow = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    write!(
        slow,
        "GET /v1/events?live=true HTTP/1.1\r\nhost: hsu\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    // Enough events to fill the socket's buffers many times over an 8-event lag.
    let mut restarts = 0;
    let mut text = String::new();
    slow.set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    while restarts < 2000 {
        for id in ["a", "b"] {
            let (status, body) =
                unix_request(&socket, "POST", &format!("/v1/workers/{id}/restart"));
            assert_eq!(status, 200, "{body}");
            restarts += 1;
        }
        if restarts % 400 == 0 {
            // Read what is buffered now; stop once a missed notice came.
            let mut buf = vec![0u8; 1 << 20];
            if let Ok(n) = slow.read(&mut buf) {
                text.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            if text.contains("event: missed") {
                break;
            }
        }
    }
    let mut rest = vec![0u8; 8 << 20];
    while let Ok(n) = slow.read(&mut rest) {
        if n == 0 {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&rest[..n]));
        if text.contains("event: missed") {
            break;
        }
    }
    let notice = text
        .split("event: missed\ndata: ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap_or_else(|| panic!("no missed notice after {restarts} restarts"));
    let missed: serde_json::Value = serde_json::from_str(notice).unwrap();
    assert!(missed["missed"].as_u64().unwrap() > 0, "{notice}");
    drop(slow);
    hsu.signal("TERM");
    let (status, _) = hsu.finish();
    assert!(status.success());
}

#[test]
fn the_next_master_kills_what_a_sigkilled_master_left_running() {
    let cwd_marker = TempFile::new("survivor-pid", "");
    let grandchild_file = cwd_marker.0.with_extension("grandchild");
    let config = TempFile::new(
        "survivor.yaml",
        &format!(
            "workers:\n  - {{id: parent, type: process, execution: {{executable_path: {WORKER}, args: [--fork-grandchild, {}]}}}}\n",
            grandchild_file.display()
        ),
    );
    let mut first = Running::start(&["run", config.path()]);
    first.wait_for("hsu running");
    let grandchild: u32 = {
        let start = std::time::Instant::now();
        loop {
            if let Some(pid) = std::fs::read_to_string(&grandchild_file)
                .ok()
                .and_then(|t| t.trim().parse().ok())
            {
                break pid;
            }
            assert!(start.elapsed() < DEADLINE, "no grandchild");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    };
    let contained = contained_by_cgroups(&first);
    let alive = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.contains(") Z ") && !s.contains(") X "))
    };
    // The run table is written off the spawning path, a moment after the spawn: the scenario
    // is a master that recorded its worker, so it is killed once the line is there.
    let recorded = std::time::Instant::now();
    while !std::fs::read_to_string(first.cwd.join("hsu-run/hsu.pids"))
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("parent "))
    {
        assert!(
            recorded.elapsed() < DEADLINE,
            "the worker never reached the run table"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // The master dies without stopping anything: its child goes (PDEATHSIG); the grandchild
    // goes with it where cgroups contain (the keeper kills the cgroup), and is left otherwise.
    first.signal("KILL");
    let _ = first.child.wait();
    if contained {
        let start = std::time::Instant::now();
        while alive(grandchild) {
            assert!(
                start.elapsed() < DEADLINE,
                "the grandchild survived the SIGKILLed master"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    } else {
        assert!(
            alive(grandchild),
            "the grandchild survived the SIGKILLed master"
        );
    }
    let table = std::fs::read_to_string(first.cwd.join("hsu-run/hsu.pids")).unwrap_or_default();
    assert!(
        table.lines().any(|l| l.starts_with("parent ")),
        "the run table was left, with the worker's line: {table:?}"
    );

    // The next master on the same run directory kills what is left before starting anything,
    // and starts exactly one new instance.
    let mut second = Stopped(
        Command::new(HSU)
            .args(["run", config.path()])
            .current_dir(&first.cwd)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let start = std::time::Instant::now();
    while alive(grandchild) {
        assert!(start.elapsed() < DEADLINE, "the survivor was never killed");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &second.0.id().to_string()])
        .status();
    let out = second.0.wait_with_output_bounded();
    if !contained {
        assert!(out.contains("killed process group"), "{out}");
    }
    let _ = std::fs::remove_file(&grandchild_file);
}

#[test]
fn what_a_master_and_its_keeper_both_killed_left_in_cgroups_is_killed_by_the_next_master() {
    let grandchild_file = TempFile::new("swept-grandchild", "");
    let _ = std::fs::remove_file(&grandchild_file.0);
    let config = TempFile::new(
        "swept.yaml",
        &format!(
            "workers:\n  - {{id: parent, type: process, execution: {{executable_path: /bin/sh, args: [-c, 'setsid {WORKER} --pid-file {} & exec sleep 300']}}}}\n",
            grandchild_file.path()
        ),
    );
    // Both masters run in a cgroup of this test's own: a master sweeps the `hsu` cgroup beside
    // itself, so any other test's master started in the shared one could otherwise sweep the
    // leftover first (and report it in its own log).
    let Some(own) = TestCgroup::new("swept") else {
        // No writable cgroup v2 here: the process-group path is tested above.
        return;
    };
    let wrapper = own.wrapper();
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let mut first = Running::start_via(&wrapper, &["run", config.path()]);
    first.wait_for("hsu running");
    if !contained_by_cgroups(&first) {
        return;
    }
    let start = std::time::Instant::now();
    let grandchild: u32 = loop {
        if let Some(pid) = std::fs::read_to_string(&grandchild_file.0)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            break pid;
        }
        assert!(start.elapsed() < DEADLINE, "no grandchild");
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    // The keeper first (so it cannot clean up), then the master.
    let keeper = keeper_of(first.child.id()).expect("the master's cgroup keeper");
    let _ = Command::new("kill")
        .args(["-KILL", &keeper.to_string()])
        .status();
    first.signal("KILL");
    let _ = first.child.wait();
    let alive = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.contains(") Z ") && !s.contains(") X "))
    };
    assert!(
        alive(grandchild),
        "nobody was left to kill the setsid grandchild"
    );
    let mut second = Running::start_via(&wrapper, &["run", config.path()]);
    let line = second.wait_for("a master that is gone");
    assert!(
        line.contains(&format!("(pid {})", first.child.id())),
        "{line}"
    );
    let start = std::time::Instant::now();
    while alive(grandchild) {
        assert!(start.elapsed() < DEADLINE, "the survivor was never killed");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    second.wait_for("hsu running");
    second.signal("TERM");
    let (status, text) = second.finish();
    assert!(status.success(), "{text}");
}

#[test]
fn a_master_stopped_by_sigterm_removes_its_cgroups_and_reaps_its_keeper_before_it_exits() {
    let config = TempFile::new(
        "keeper.yaml",
        &format!(
            "workers:\n{}",
            (0..20)
                .map(|i| format!("  - {{id: w{i}, type: process, execution: {{executable_path: /bin/sleep, args: ['300']}}}}\n"))
                .collect::<String>()
        ),
    );
    let mut master = Running::start(&["run", config.path()]);
    master.wait_for("hsu running");
    if !contained_by_cgroups(&master) {
        // No writable cgroup v2 here: no keeper, nothing to remove.
        return;
    }
    let keeper = keeper_of(master.child.id()).expect("the master's cgroup keeper");
    // The keeper's last argument is the master's instance cgroup.
    let instance = std::fs::read_to_string(format!("/proc/{keeper}/cmdline"))
        .unwrap()
        .split('\0')
        .rfind(|a| !a.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap();
    assert!(instance.join("w0").is_dir(), "{}", instance.display());
    master.signal("TERM");
    let (status, text) = master.finish();
    assert!(status.success(), "{text}");
    // At the moment the master has exited: no cgroup of its left, and its keeper neither
    // running nor a zombie waiting for init (the master reaped it).
    assert!(
        !instance.exists(),
        "the instance cgroup `{}` outlived the master",
        instance.display()
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{keeper}")).exists(),
        "the keeper {keeper} outlived the master: {:?}",
        std::fs::read_to_string(format!("/proc/{keeper}/stat"))
    );
}

#[test]
fn a_master_sizes_its_descriptor_table_for_its_configured_workers_at_launch() {
    // Disabled workers are added, not started: the table is sized for what the config holds,
    // at launch, before any thread shares it (each later growth waits for an RCU grace period).
    let n = 300;
    let config = TempFile::new(
        "fds.yaml",
        &format!(
            "workers:\n{}",
            (0..n)
                .map(|i| format!("  - {{id: w{i}, type: process, enabled: false, execution: {{executable_path: /bin/sleep, args: ['300']}}}}\n"))
                .collect::<String>()
        ),
    );
    let mut master = Running::start(&["run", config.path()]);
    master.wait_for("hsu running");
    let status = std::fs::read_to_string(format!("/proc/{}/status", master.child.id())).unwrap();
    let size: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("FDSize:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("FDSize in /proc/<pid>/status");
    let open = std::fs::read_dir(format!("/proc/{}/fd", master.child.id()))
        .unwrap()
        .count();
    // What it holds now would fit a much smaller table; 512 + 8 per worker (`sys::FDS_PER_PROCESS_WORKER`) is what it reserved.
    assert!(size >= 512 + 8 * n, "FDSize {size} with {open} open");
    assert!(open < 200, "{open} descriptors open with no worker started");
    master.signal("TERM");
    let (status, text) = master.finish();
    assert!(status.success(), "{text}");
}

/// Whether the master said (so far) that it contains its process workers by cgroups.
fn contained_by_cgroups(master: &Running) -> bool {
    master
        .seen
        .iter()
        .any(|l| l.contains("process workers are contained by cgroups"))
}

/// A cgroup v2 directory of one test's own, at the top of the hierarchy, removed (with what
/// masters made in it) when dropped.
struct TestCgroup(std::path::PathBuf);

impl TestCgroup {
    fn new(name: &str) -> Option<Self> {
        let point = hsu::internals::cgroup::hierarchy_mount_point()?;
        let dir = point.join(format!("hsu-test-{}-{name}", std::process::id()));
        std::fs::create_dir(&dir).ok()?;
        let me = Self(dir);
        // Only where a process can be moved in (root, no controllers in the way).
        let probe = Command::new("/bin/sh")
            .args(["-c", r#"echo $$ > "$0/cgroup.procs""#])
            .arg(&me.0)
            .status()
            .ok()?;
        probe.success().then_some(me)
    }

    /// `sh -c` that moves itself into the cgroup, then execs the program given after it.
    fn wrapper(&self) -> Vec<String> {
        vec![
            "/bin/sh".into(),
            "-c".into(),
            format!(
                r#"echo $$ > '{}/cgroup.procs' && exec "$0" "$@""#,
                self.0.display()
            ),
        ]
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Whatever a failed test left running goes first; masters remove their own instance
        // cgroups, and the `hsu` one beside them may be left.
        let _ = std::fs::write(self.0.join("cgroup.kill"), "1");
        let start = std::time::Instant::now();
        while std::fs::read_to_string(self.0.join("cgroup.events"))
            .is_ok_and(|e| e.contains("populated 1"))
            && start.elapsed() < DEADLINE
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let hsu = self.0.join("hsu");
        if let Ok(entries) = std::fs::read_dir(&hsu) {
            for e in entries.flatten().filter(|e| e.path().is_dir()) {
                if let Ok(inner) = std::fs::read_dir(e.path()) {
                    for i in inner.flatten().filter(|i| i.path().is_dir()) {
                        let _ = std::fs::remove_dir(i.path());
                    }
                }
                let _ = std::fs::remove_dir(e.path());
            }
        }
        let _ = std::fs::remove_dir(&hsu);
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The pid of the cgroup keeper `/bin/sh` started by master `pid`.
fn keeper_of(pid: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let child: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read_to_string(format!("/proc/{child}/cmdline")).ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).ok()?;
        let ppid: u32 = stat
            .rsplit(')')
            .next()?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        (ppid == pid && cmdline.contains("hsu-cgroup-keeper")).then_some(child)
    })
}

/// A master stopped gracefully (SIGTERM, then waited for) however the test ends, so its
/// workers never outlive it.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.0.id().to_string()])
                .status();
            let _ = self.0.wait();
        }
    }
}

trait WaitBounded {
    fn wait_with_output_bounded(&mut self) -> String;
}

impl WaitBounded for std::process::Child {
    /// Waits (bounded) for the exit and returns stderr.
    fn wait_with_output_bounded(&mut self) -> String {
        let start = std::time::Instant::now();
        while self.try_wait().ok().flatten().is_none() {
            assert!(start.elapsed() < DEADLINE, "hsu did not exit");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let mut text = String::new();
        if let Some(mut err) = self.stderr.take() {
            let _ = err.read_to_string(&mut text);
        }
        text
    }
}

#[test]
fn a_process_that_called_setsid_is_stopped_with_its_worker_or_reported_without_sigkill() {
    let escaped = TempFile::new("escaped-pid", "");
    let config = TempFile::new(
        "escape.yaml",
        &format!(
            "workers:\n  - {{id: w, type: process, execution: {{executable_path: /bin/sh, args: [-c, 'setsid sh -c \"echo \\$\\$ > {}; exec sleep 60\" & exec sleep 60']}}, stop: {{timeout: 300ms}}}}\n",
            escaped.path()
        ),
    );
    let mut hsu = Running::start(&["run", config.path()]);
    hsu.wait_for("hsu running");
    let socket = socket_of(&hsu);
    let start = std::time::Instant::now();
    let pid = loop {
        if let Some(pid) = std::fs::read_to_string(&escaped.0)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
        {
            break pid;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the escaped process never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    // Killed by the test whatever happens, should containment miss it.
    struct KillOnDrop(u32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = Command::new("kill")
                .args(["-KILL", &self.0.to_string()])
                .status();
        }
    }
    let escaped_process = KillOnDrop(pid);
    let contained = contained_by_cgroups(&hsu);
    let status = client(&socket, &["status", "w", "--json"]);
    let d: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    assert_eq!(
        d["containment"],
        if contained { "cgroup" } else { "process_group" },
        "{d}"
    );
    let out = client(&socket, &["stop", "w"]);
    assert!(out.status.success(), "{}", stderr(&out));
    if contained {
        // The cgroup holds what called setsid: the stop signal reaches it, and the worker is
        // stopped only once it is gone.
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.contains(") Z ") && !s.contains(") X "));
        assert!(!alive, "the setsid process outlived the stop of its worker");
    } else {
        // Outside the group: the stop says so instead of a misleading SIGKILL.
        let line = hsu.wait_for("held open by a process outside the group");
        assert!(!line.contains("SIGKILL"), "{line}");
    }
    drop(escaped_process);
    hsu.signal("TERM");
    let (status, log) = hsu.finish();
    assert!(status.success());
    assert!(!log.contains("sending SIGKILL"), "{log}");
    assert!(
        !log.contains("killing the worker's cgroup"),
        "TERM sufficed: {log}"
    );
}
