//! `hsu-test-worker`: a small program whose behaviour the tests choose by flags, so that process
//! supervision is tested against a real process. Flags combine; they act in this order:
//!
//! `--count FILE`          append one line per launch to FILE
//! `--pid-file FILE`       write our PID to FILE once set up (so waiting for it means ready)
//! `--ignore-term`         ignore SIGTERM
//! `--on-term TEXT`        on SIGTERM print TEXT and exit 0
//! `--fork-grandchild FILE` start a grandchild (same process group) that ignores SIGTERM and
//!                         writes its PID to FILE
//! `--serve-http PORT`     serve HTTP on 127.0.0.1:PORT (`/health` answers 200); exit 98 if taken
//! `--leak-mb N`           allocate and touch N MiB
//! `--flood N`             print N numbered lines (`line 000001` …) to stdout
//! `--last-line TEXT`      print TEXT just before exiting
//! `--integrated`          serve HSU's control protocol (Ping, gRPC health) on `--port N`
//! `--health-file FILE`    healthy only while FILE exists (default: always healthy)
//! `--ready-delay MS`      wait MS milliseconds before serving the control protocol
//! `--report-self FILE`    write what it inherited to FILE: `sigign HEX`, `nofile SOFT`, `uid`,
//!                         `gid`, `groups`, `env HOME=…` (and USER, LOGNAME, SHELL), and
//!                         `fd N TARGET` for each descriptor above 2 open at start
//! `--first-port P`        on the first launch (per `--count` FILE) serve the control protocol
//!                         on P instead of `--port` (a port the test holds: a real conflict)
//! `--serve-socket NAME`   serve HTTP on the socket NAME handed over by systemd's protocol
//!                         (`LISTEN_FDS`), answering `--answer TEXT` (default `process`); on
//!                         SIGTERM drain (see `tests/test-module/src/serve.rs`) and exit 0
//! `--listen-self ADDR`    as `--serve-socket`, on a socket it binds itself at ADDR (port 0:
//!                         any), printing `listening on ADDRESS` (the benchmark's baseline)
//! `--report-listen FILE`  write `pid`, `LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES` and
//!                         `fd N ADDRESS` for each socket passed, to FILE
//! `--usr1-exit N`         on SIGUSR1 exit with code N (a normal exit or a crash, on demand)
//! `--exit N`              exit with code N (after the above); `--crash` aborts instead
//! `--sleep MS`            run for MS milliseconds, then exit 0 (default: until signalled)

use std::io::Write;
use std::time::Duration;

#[derive(Default)]
struct Flags {
    count: Option<String>,
    pid_file: Option<String>,
    ignore_term: bool,
    on_term: Option<String>,
    fork_grandchild: Option<String>,
    serve_http: Option<u16>,
    leak_mb: usize,
    flood: u64,
    last_line: Option<String>,
    exit: Option<i32>,
    crash: bool,
    sleep_ms: Option<u64>,
    integrated: bool,
    port: Option<u16>,
    health_file: Option<String>,
    ready_delay_ms: u64,
    first_port: Option<u16>,
    report_self: Option<String>,
    usr1_exit: Option<i32>,
    serve_socket: Option<String>,
    answer: Option<String>,
    report_listen: Option<String>,
    listen_self: Option<String>,
}

fn parse() -> Flags {
    let mut f = Flags::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| panic!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--count" => f.count = Some(value()),
            "--pid-file" => f.pid_file = Some(value()),
            "--ignore-term" => f.ignore_term = true,
            "--on-term" => f.on_term = Some(value()),
            "--fork-grandchild" => f.fork_grandchild = Some(value()),
            "--serve-http" => f.serve_http = Some(value().parse().expect("port")),
            "--leak-mb" => f.leak_mb = value().parse().expect("MiB"),
            "--flood" => f.flood = value().parse().expect("lines"),
            "--last-line" => f.last_line = Some(value()),
            "--exit" => f.exit = Some(value().parse().expect("code")),
            "--crash" => f.crash = true,
            "--sleep" => f.sleep_ms = Some(value().parse().expect("ms")),
            "--port" => f.port = Some(value().parse().expect("port")),
            "--integrated" => f.integrated = true,
            "--health-file" => f.health_file = Some(value()),
            "--ready-delay" => f.ready_delay_ms = value().parse().expect("ms"),
            "--first-port" => f.first_port = Some(value().parse().expect("port")),
            "--report-self" => f.report_self = Some(value()),
            "--usr1-exit" => f.usr1_exit = Some(value().parse().expect("code")),
            "--serve-socket" => f.serve_socket = Some(value()),
            "--answer" => f.answer = Some(value()),
            "--report-listen" => f.report_listen = Some(value()),
            "--listen-self" => f.listen_self = Some(value()),
            other => panic!("unknown flag {other}"),
        }
    }
    f
}

#[allow(dead_code)]
#[path = "../test-module/src/serve.rs"]
mod serve;

/// What systemd's protocol handed over, as the environment and descriptors say.
fn report_listen(path: &str) {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| "-".into());
    let mut text = format!(
        "pid {}\nLISTEN_PID {}\nLISTEN_FDS {}\nLISTEN_FDNAMES {}\n",
        std::process::id(),
        var("LISTEN_PID"),
        var("LISTEN_FDS"),
        var("LISTEN_FDNAMES")
    );
    let n: i32 = var("LISTEN_FDS").parse().unwrap_or(0);
    for fd in 3..3 + n {
        let address = listener_at(fd)
            .and_then(|l| {
                let tcp = l.local_addr().map(|a| a.to_string());
                let unix = std::os::unix::net::UnixListener::from(std::os::fd::OwnedFd::from(l));
                let a = tcp.ok().or_else(|| {
                    let a = unix.local_addr().ok()?;
                    Some(format!("unix:{}", a.as_pathname()?.display()))
                });
                std::mem::forget(unix);
                a
            })
            .unwrap_or_else(|| "none".into());
        text.push_str(&format!("fd {fd} {address}\n"));
    }
    std::fs::write(path, text).expect("report file");
}

/// The descriptor `fd` as a listener, if it is open.
#[allow(unsafe_code)]
fn listener_at(fd: i32) -> Option<std::net::TcpListener> {
    std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    // SAFETY: `fd` is open (its /proc link exists) and was handed to this process by the
    // socket-activation protocol; the caller forgets or owns the listener as it needs.
    Some(unsafe { <std::net::TcpListener as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// The socket named `name` in `LISTEN_FDNAMES`, if `LISTEN_PID` is this process.
fn passed_socket(name: &str) -> std::net::TcpListener {
    let pid: u32 = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse().ok())
        .expect("LISTEN_PID");
    assert_eq!(pid, std::process::id(), "LISTEN_PID is not this process");
    let names = std::env::var("LISTEN_FDNAMES").expect("LISTEN_FDNAMES");
    let i = names
        .split(':')
        .position(|n| n == name)
        .unwrap_or_else(|| panic!("no socket named {name} in {names}"));
    listener_at(3 + i as i32).expect("the socket's descriptor")
}

fn main() {
    let flags = parse();
    if let Some(path) = &flags.report_listen {
        report_listen(path);
    }
    // Before the runtime opens descriptors of its own.
    if let Some(path) = &flags.report_self {
        report_self(path);
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run(flags));
}

/// What this process inherited: ignored and blocked signals, the open-file limit, descriptors
/// above 2.
fn report_self(path: &str) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let sigign = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .unwrap_or("")
        .trim()
        .to_string();
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let nofile = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .unwrap_or("")
        .to_string();
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or("")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut out = format!(
        "sigign {sigign}\nsigblk {}\nnofile {nofile}\nuid {}\ngid {}\ngroups {}\n",
        field("SigBlk:"),
        field("Uid:"),
        field("Gid:"),
        field("Groups:")
    );
    for var in ["HOME", "USER", "LOGNAME", "SHELL"] {
        out.push_str(&format!(
            "env {var}={}\n",
            std::env::var(var).unwrap_or_default()
        ));
    }
    // Listing the directory opens a descriptor of its own: skip it.
    let fds: Vec<(u32, String)> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| {
                    let n: u32 = e.file_name().to_string_lossy().parse().ok()?;
                    let target = std::fs::read_link(e.path()).ok()?.display().to_string();
                    Some((n, target))
                })
                .collect()
        })
        .unwrap_or_default();
    for (n, target) in fds {
        if n > 2 && !target.starts_with("/proc/") {
            out.push_str(&format!("fd {n} {target}\n"));
        }
    }
    std::fs::write(path, out).expect("report file");
}

async fn run(flags: Flags) {
    // Before the runtime opens descriptors of its own.
    if let Some(path) = &flags.report_self {
        report_self(path);
    }
    // First, so that a SIGTERM sent once the pid file exists finds the handler in place.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    let mut usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
        .expect("SIGUSR1 handler");
    if let Some(path) = &flags.count {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("count file");
        writeln!(file, "launch {}", std::process::id()).expect("count line");
    }
    let first_launch = flags.count.as_ref().is_some_and(|path| {
        std::fs::read_to_string(path).is_ok_and(|text| text.lines().count() == 1)
    });
    let handles_term = flags.ignore_term || flags.on_term.is_some();
    if let Some(path) = &flags.fork_grandchild {
        let exe = std::env::current_exe().expect("own path");
        let mut grandchild = std::process::Command::new(exe)
            .args(["--ignore-term", "--pid-file", path])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("grandchild");
        // Reap it if it dies while we live; if we die first, it is reparented.
        std::thread::spawn(move || grandchild.wait());
    }
    if let Some(port) = flags.serve_http {
        let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(listener) => listener,
            Err(e) => {
                // A test that picked this port retries with another on this exit code.
                eprintln!("cannot serve http on 127.0.0.1:{port}: {e}");
                std::process::exit(hsu_module::integrated::EXIT_PORT_IN_USE.into());
            }
        };
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = [0u8; 1024];
                    let _ = stream.read(&mut buf).await;
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n").await;
                });
            }
        });
    }
    let mut draining = None;
    let own = flags.listen_self.as_ref().map(|address| {
        let listener = std::net::TcpListener::bind(address).expect("bind --listen-self");
        println!("listening on {}", listener.local_addr().expect("address"));
        std::io::stdout().flush().ok();
        listener
    });
    if let Some(listener) = own.or_else(|| flags.serve_socket.as_deref().map(passed_socket)) {
        let answer = flags.answer.clone().unwrap_or_else(|| "process".into());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let serving = tokio::spawn(serve::serve(listener, answer, stopped));
        draining = Some((stop, serving));
    }
    if flags.integrated {
        let port = flags
            .first_port
            .filter(|_| first_launch)
            .or(flags.port)
            .or_else(hsu_module::integrated::port_from_env)
            .expect("--integrated needs --port or HSU_PORT");
        let health_file = flags.health_file.clone();
        let delay = Duration::from_millis(flags.ready_delay_ms);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let healthy = move || {
                let healthy = health_file
                    .as_ref()
                    .is_none_or(|f| std::path::Path::new(f).exists());
                async move { healthy }
            };
            if let Err(e) =
                hsu_module::integrated::serve(port, healthy, std::future::pending()).await
            {
                eprintln!("control protocol failed: {e}");
                // The master retries with another port when this one was taken meanwhile.
                let in_use = matches!(&e, hsu_module::ModuleError::Io(io) if io.kind() == std::io::ErrorKind::AddrInUse);
                std::process::exit(if in_use {
                    hsu_module::integrated::EXIT_PORT_IN_USE.into()
                } else {
                    70
                });
            }
        });
    }
    let _leak: Vec<u8> = if flags.leak_mb > 0 {
        let mut v = vec![0u8; flags.leak_mb << 20];
        for i in (0..v.len()).step_by(4096) {
            v[i] = 1;
        }
        v
    } else {
        Vec::new()
    };
    // Written once set up: a test that waits for it knows the worker is ready.
    if let Some(path) = &flags.pid_file {
        let tmp = format!("{path}.tmp");
        std::fs::write(&tmp, std::process::id().to_string()).expect("pid file");
        std::fs::rename(&tmp, path).expect("pid file");
    }
    if flags.flood > 0 {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
        for i in 1..=flags.flood {
            writeln!(out, "line {i:06}").expect("stdout");
        }
        out.flush().expect("stdout");
    }
    let finish = |code: i32| -> ! {
        if let Some(text) = &flags.last_line {
            println!("{text}");
        }
        std::io::stdout().flush().ok();
        if flags.crash {
            std::process::abort();
        }
        std::process::exit(code)
    };
    if flags.exit.is_some() || flags.crash {
        finish(flags.exit.unwrap_or(0));
    }
    let sleep = async {
        match flags.sleep_ms {
            Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = &mut sleep => finish(0),
            _ = usr1.recv(), if flags.usr1_exit.is_some() => finish(flags.usr1_exit.unwrap_or(0)),
            _ = term.recv() => {
                if let Some((stop, serving)) = draining.take() {
                    let _ = stop.send(true);
                    let _ = serving.await;
                    finish(0);
                }
                if let Some(text) = &flags.on_term {
                    println!("{text}");
                    finish(0);
                }
                if !handles_term {
                    finish(143);
                }
                // --ignore-term: keep running.
            }
        }
    }
}
