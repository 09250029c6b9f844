//! Under systemd: the notify protocol seen on a datagram socket the test binds as
//! `NOTIFY_SOCKET`, sockets handed over by `systemd-socket-activate`, and the unit files of
//! `hsu systemd-unit` checked by `systemd-analyze verify`.

use std::os::unix::net::UnixDatagram;
use std::time::Instant;

use super::*;

/// Messages on the notify socket until one contains `text`; returns them all, with when each
/// came.
fn until(socket: &UnixDatagram, text: &str) -> Vec<(Instant, String)> {
    let deadline = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no notify message with {text:?}; got {seen:?}"
        );
        socket.set_read_timeout(Some(left)).unwrap();
        let n = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no notify message with {text:?} ({e}); got {seen:?}"));
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        let done = message.contains(text);
        seen.push((Instant::now(), message));
        if done {
            return seen;
        }
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

#[test]
fn under_systemd_hsu_notifies_ready_status_reloads_stops_and_pings_the_watchdog() {
    let dir = Dir::new("notify");
    let notify = dir.file("notify.sock");
    let socket = UnixDatagram::bind(&notify).unwrap();
    let env_file = dir.file("worker.env");
    let config = TempFile::new(
        "notify.yaml",
        &format!(
            "workers:\n  - id: a\n    type: process\n    execution: {{executable_path: /bin/sh, args: ['-c', 'env > {env_file}; exec sleep 600']}}\n  - id: b\n    type: process\n    execution: {{executable_path: /bin/sleep, args: ['600']}}\n"
        ),
    );
    let hsu = Running::start_with(
        &[],
        &[("NOTIFY_SOCKET", &notify), ("WATCHDOG_USEC", "1000000")],
        &["run", config.path()],
    );
    let messages = until(&socket, "READY=1");
    let ready = &messages.last().unwrap().1;
    assert!(
        ready.contains("STATUS=2 running"),
        "{ready:?} after {messages:?}"
    );

    // The watchdog: at half of WATCHDOG_USEC, never a gap as long as WATCHDOG_USEC itself.
    let start = Instant::now();
    let mut pings = vec![start];
    let mut buf = [0u8; 4096];
    while start.elapsed() < Duration::from_millis(2600) {
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let n = socket.recv(&mut buf).expect("a watchdog ping within 2s");
        if String::from_utf8_lossy(&buf[..n]).contains("WATCHDOG=1") {
            pings.push(Instant::now());
        }
    }
    let gaps: Vec<Duration> = pings.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        (4..=8).contains(&gaps.len()) && gaps.iter().all(|g| *g < Duration::from_secs(1)),
        "pings every 500 ms expected, gaps {gaps:?}"
    );

    // The master's notify socket and watchdog are its own, not its workers'.
    let env = std::fs::read_to_string(&env_file).unwrap();
    for key in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "LISTEN_FDS"] {
        assert!(
            !env.contains(&format!("{key}=")),
            "{key} reached a worker:\n{env}"
        );
    }

    hsu.signal("HUP");
    let reload = until(&socket, "RELOADING=1");
    let reloading = &reload.last().unwrap().1;
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading:?}");
    let after = until(&socket, "READY=1");
    assert!(
        after.last().unwrap().1.contains("STATUS=2 running"),
        "{after:?}"
    );

    hsu.signal("TERM");
    until(&socket, "STOPPING=1");
    let (status, stderr) = hsu.finish();
    assert!(status.success(), "{status:?}\n{stderr}");
}

#[test]
fn sockets_handed_over_by_systemd_socket_activate_reach_the_worker() {
    let Some(activate) = which("systemd-socket-activate") else {
        eprintln!("SKIPPED: no systemd-socket-activate here (Debian's `systemd` package has it)");
        return;
    };
    let dir = Dir::new("activate");
    let worker = env!("CARGO_BIN_EXE_hsu-test-worker");
    // systemd-socket-activate binds the port itself; a port taken meanwhile makes it fail,
    // and another is tried.
    for attempt in 0..3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = TempFile::new(
            &format!("activate-{attempt}.yaml"),
            &format!(
                "master: {{run_directory: {run}}}\nworkers:\n  - id: web\n    type: process\n    execution: {{executable_path: {worker}, args: [--serve-socket, http, --answer, activated]}}\n    sockets: [{{name: http, listen: '127.0.0.1:{port}'}}]\n",
                run = dir.file("run"),
            ),
        );
        let listen = format!("127.0.0.1:{port}");
        let mut hsu = Running::start_with(
            &[
                activate.to_str().unwrap(),
                "-l",
                &listen,
                "--fdname=web.http",
                "-E",
                "RUST_LOG=info",
            ],
            &[],
            &["run", config.path()],
        );
        let line = hsu.wait_for("");
        if line.contains("Address already in use") {
            continue;
        }
        // A connection made before the worker runs waits in the socket's queue (and is what
        // launches hsu, where systemd-socket-activate waits for one).
        let first = std::thread::spawn({
            let listen = listen.clone();
            move || http_get(&listen, "/")
        });
        hsu.wait_for("sockets passed by the service manager");
        let bound = hsu.wait_for("socket=http");
        assert!(bound.contains("inherited=true"), "{bound}");
        let answer = first.join().unwrap();
        assert!(answer.ends_with("activated"), "{answer}");
        let answer = http_get(&listen, "/");
        assert!(answer.ends_with("activated"), "{answer}");
        hsu.signal("TERM");
        let (status, stderr) = hsu.finish();
        assert!(status.success(), "{status:?}\n{stderr}");
        return;
    }
    panic!("three ports taken in a row");
}

#[test]
fn the_generated_units_pass_systemd_analyze_verify() {
    let dir = Dir::new("units");
    let config = dir.file("app.yaml");
    std::fs::write(
        &config,
        format!(
            "workers:\n  - id: web\n    type: process\n    execution: {{executable_path: /bin/sleep, args: ['600']}}\n    sockets:\n      - {{name: http, listen: '127.0.0.1:18080'}}\n      - {{name: admin, listen: 'unix:{}'}}\n      - {{name: spare, listen: '127.0.0.1:0'}}\n",
            dir.file("admin.sock")
        ),
    )
    .unwrap();
    let out = dir.file("units");
    std::fs::create_dir_all(&out).unwrap();
    let made = Command::new(HSU)
        .args(["systemd-unit", &config, "--output-dir", &out])
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let stderr = String::from_utf8_lossy(&made.stderr);
    assert!(
        stderr.contains("socket `spare` listens on port 0"),
        "{stderr}"
    );
    let files: Vec<String> = String::from_utf8_lossy(&made.stdout)
        .lines()
        .map(String::from)
        .collect();
    let names: Vec<&str> = files
        .iter()
        .map(|f| f.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "hsu-app.service",
            "hsu-app-web-http.socket",
            "hsu-app-web-admin.socket"
        ]
    );
    let service = std::fs::read_to_string(&files[0]).unwrap();
    for line in [
        "Type=notify".to_string(),
        format!("ExecStart={HSU} run {config}"),
        "ExecReload=/bin/kill -HUP $MAINPID".into(),
        "KillMode=mixed".into(),
        "Requires=hsu-app-web-http.socket hsu-app-web-admin.socket".into(),
    ] {
        assert!(
            service.lines().any(|l| l == line),
            "no {line:?} in\n{service}"
        );
    }
    let socket = std::fs::read_to_string(&files[1]).unwrap();
    assert!(
        socket.contains(
            "ListenStream=127.0.0.1:18080\nFileDescriptorName=web.http\nService=hsu-app.service"
        ),
        "{socket}"
    );
    let Some(analyze) = which("systemd-analyze") else {
        eprintln!("SKIPPED the verify: no systemd-analyze here");
        return;
    };
    let verified = Command::new(analyze)
        .arg("verify")
        .args(&files)
        .output()
        .unwrap();
    assert!(
        verified.status.success() && verified.stderr.is_empty(),
        "{verified:?}"
    );
}
