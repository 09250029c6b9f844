//! Deployments: one module, three deployments (native, plugin: a real `.so` built by
//! `cargo test`, and process); bad and panicking plugins, the plugin's tracing, sharing of
//! libraries. Crash quarantine and packages, which move a worker between deployments or
//! supply them, have a file each.

#[path = "../support/mod.rs"]
mod support;

mod packages;
mod quarantine;
mod sockets;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hsu::Deployment;
use hsu::{
    AddWorker, ErrorKind, GetWorkerState, ListLoadedModules, MasterError, RemoveWorker,
    RestartWorker, StartWorker, StopWorker, WorkerConfig, WorkerState,
};
use support::{id, TempDir};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn path_str(path: &Path) -> String {
    path.display().to_string()
}

/// Where the echo worker `id` serves in its `run`-th run (1 for the first start): the
/// worker binds port 0, so the address is read back from what the worker reports, never
/// picked by the test (a picked port can be taken by a concurrent test). A module reports it
/// in its diagnostics' endpoints; a process in its log ("echo listening on http://…").
async fn echo_address(
    master: &actix::Addr<hsu::MasterActor>,
    id: &str,
    run: usize,
) -> Result<String, Box<dyn std::error::Error>> {
    const PREFIX: &str = "echo listening on http://";
    let start = std::time::Instant::now();
    loop {
        let d = master.send(GetWorkerState(support::id(id))).await??;
        let reported = match (&d.module, &d.log_file) {
            (Some(module), _) => module.info.endpoints.first().cloned(),
            (None, Some(log)) => std::fs::read_to_string(log)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.split_once(PREFIX).map(|(_, rest)| rest))
                .nth(run - 1)
                .and_then(|rest| rest.split_whitespace().next())
                .map(|address| format!("http://{address}")),
            (None, None) => None,
        };
        if let Some(address) = reported {
            return Ok(address.trim_start_matches("http://").to_string());
        }
        assert!(
            start.elapsed() < support::DEADLINE,
            "{id}: no address reported for run {run}: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One scenario, the same assertions, whatever the deployment: start, serve a request, be
/// healthy, restart, serve again, stop (port closed), diagnostics of the right kind.
async fn echo_scenario(
    master: &actix::Addr<hsu::MasterActor>,
    config: WorkerConfig,
    kind: Deployment,
    has_pid: bool,
) -> TestResult {
    let id = config.id.clone();
    master.send(AddWorker(config)).await??;
    master.send(StartWorker(support::id(&id))).await??;
    let address = echo_address(master, &id, 1).await?;
    let response = support::http(&address, "POST", "/deployed", "same code").await?;
    assert!(
        response.contains(&format!("echo from {id}: POST /deployed\nsame code")),
        "{id}: {response}"
    );
    let start = std::time::Instant::now();
    loop {
        let d = master.send(GetWorkerState(support::id(&id))).await??;
        if d.health == hsu::HealthStatus::Healthy {
            assert_eq!((d.deployment, d.pid.is_some()), (kind, has_pid), "{id}");
            break;
        }
        assert!(
            start.elapsed() < support::DEADLINE,
            "{id} never healthy: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    master
        .send(RestartWorker {
            id: support::id(&id),
            force: false,
        })
        .await??;
    let address = echo_address(master, &id, 2).await?;
    let response = support::http(&address, "GET", "/again", "").await?;
    assert!(
        response.contains(&format!("echo from {id}: GET /again")),
        "{id}: {response}"
    );
    let d = master.send(GetWorkerState(support::id(&id))).await??;
    assert_eq!((d.state, d.restart_count), (WorkerState::Running, 1));
    master.send(StopWorker(support::id(&id))).await??;
    assert!(
        support::http(&address, "GET", "/", "").await.is_err(),
        "{id}: port closed after stop"
    );
    Ok(())
}

#[actix_rt::test]
async fn the_echo_module_behaves_the_same_native_as_a_plugin_and_as_a_process() -> TestResult {
    support::install_worker_logs();
    let dir = TempDir::new("deployments");
    let (master, _watch) = support::master_in(&dir).await;
    hsu::builtin::register(&master).await?;
    let health = "{interval: 20ms, timeout: 1s}";

    let native = WorkerConfig::native("echo-native", "echo")
        .with_config("{port: 0}")
        .with_health_check(health);
    echo_scenario(&master, native, Deployment::Native, false).await?;

    let plugin = WorkerConfig::plugin("echo-plugin", &path_str(&support::plugin("echo_plugin")))
        .with_config("{port: 0}")
        .with_health_check(health);
    echo_scenario(&master, plugin, Deployment::Plugin, false).await?;

    let mut process = WorkerConfig::process("echo-process", env!("CARGO_BIN_EXE_hsu-echo"), &[])
        .with_config("{port: 0}")
        .with_health_check(health);
    process.process_type = Some(hsu::config::ProcessType::Integrated);
    echo_scenario(&master, process, Deployment::Integrated, true).await?;

    // Each deployment's own log: the module's events in the master (native, and the plugin's
    // forwarded across the boundary) and the process's output.
    for (id, line) in [
        ("echo-native", "echo listening on http://127.0.0.1:"),
        ("echo-plugin", "echo listening on http://127.0.0.1:"),
        (
            "echo-process",
            "module started; serving the control protocol",
        ),
    ] {
        let log = std::fs::read_to_string(dir.0.join(format!("logs/{id}.log")))?;
        assert!(log.contains(line), "{id}: {log}");
    }
    let plugin_log = std::fs::read_to_string(dir.0.join("logs/echo-plugin.log"))?;
    assert!(plugin_log.contains("from=echo_module"), "{plugin_log}");
    Ok(())
}

#[actix_rt::test]
async fn one_library_is_loaded_once_and_shared_by_the_workers_using_it() -> TestResult {
    let dir = TempDir::new("shared-plugin");
    let (master, mut watch) = support::master_in(&dir).await;
    let path = support::plugin("hsu_test_plugin");
    for id in ["a", "b"] {
        master
            .send(AddWorker(
                WorkerConfig::plugin(id, &path_str(&path)).with_config("{}"),
            ))
            .await??;
        master.send(StartWorker(support::id(id))).await??;
        watch.until(id, WorkerState::Running).await;
    }
    let loaded = master.send(ListLoadedModules).await?;
    let ours: Vec<_> = loaded
        .iter()
        .filter(|p| p.path == path.canonicalize().unwrap())
        .collect();
    assert_eq!(ours.len(), 1, "one entry per library: {loaded:?}");
    let info = ours[0];
    assert_eq!(info.instances, 2, "{info:?}");
    assert_eq!(info.abi_version, hsu::module::plugin::ABI_VERSION);
    assert_eq!(info.crate_version, hsu::module::plugin::CRATE_VERSION);
    assert_eq!(info.target, hsu::module::plugin::TARGET);
    assert!(info.rustc_version.contains("rustc"), "{info:?}");

    let d = master.send(GetWorkerState(id("a"))).await??;
    assert_eq!(d.deployment, Deployment::Plugin);
    assert_eq!(
        d.module.as_ref().map(|m| m.info.name.as_str()),
        Some("test")
    );

    master.send(RemoveWorker(id("a"))).await??;
    let begun = std::time::Instant::now();
    while !master
        .send(ListLoadedModules)
        .await?
        .iter()
        .any(|p| p.path == info.path && p.instances == 1)
    {
        assert!(
            begun.elapsed() < support::DEADLINE,
            "instance never destroyed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Still loaded (never unloaded) and still serving the other worker.
    assert_eq!(
        master.send(GetWorkerState(id("b"))).await??.state,
        WorkerState::Running
    );
    Ok(())
}

/// Builds a tiny real shared library from Rust source with `rustc`.
fn build_library(dir: &TempDir, name: &str, source: &str) -> String {
    let src = dir.0.join(format!("{name}.rs"));
    std::fs::write(&src, source).unwrap();
    let out = dir.0.join(format!("lib{name}.so"));
    let status = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .args(["--crate-type", "cdylib", "--edition", "2021", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("rustc runs");
    assert!(status.success(), "rustc built {name}");
    path_str(&out)
}

const HEADER_PREFIX: &str = r#"
#[repr(C)]
pub struct Prefix { magic: [u8; 8], abi_version: u32, header_size: u32 }
"#;

#[actix_rt::test]
async fn bad_plugins_are_refused_with_a_clear_error_and_the_master_keeps_running() -> TestResult {
    let dir = TempDir::new("bad-plugins");
    let (master, mut watch) = support::master_in(&dir).await;

    let host_abi = hsu::module::plugin::ABI_VERSION;
    let missing = dir.file("nothing-here.so");
    let not_a_library = dir.file("text.so");
    std::fs::write(&not_a_library, "this is not an ELF file\n")?;
    let no_symbol = build_library(
        &dir,
        "nosymbol",
        "#[no_mangle] pub extern \"C\" fn something_else() -> u32 { 7 }",
    );
    let bad_magic = build_library(
        &dir,
        "badmagic",
        &format!("{HEADER_PREFIX}#[no_mangle] pub static HSU_PLUGIN_HEADER: Prefix = Prefix {{ magic: *b\"NOTHSU!!\", abi_version: {host_abi}, header_size: 16 }};"),
    );
    let bad_abi = build_library(
        &dir,
        "badabi",
        &format!("{HEADER_PREFIX}#[no_mangle] pub static HSU_PLUGIN_HEADER: Prefix = Prefix {{ magic: *b\"HSUPLUGN\", abi_version: 99, header_size: 16 }};"),
    );
    let small_header = build_library(
        &dir,
        "smallheader",
        &format!("{HEADER_PREFIX}#[no_mangle] pub static HSU_PLUGIN_HEADER: Prefix = Prefix {{ magic: *b\"HSUPLUGN\", abi_version: {host_abi}, header_size: 16 }};"),
    );
    // A full header of this ABI, but built against another hsu-module, or for another target.
    // The vtable is never reached: the checks refuse the library first.
    let full_header = |crate_version: &str, target: &str| {
        format!(
            r#"
#[repr(C)] pub struct S {{ p: *const u8, l: usize }}
unsafe impl Sync for S {{}}
#[repr(C)] pub struct H {{ magic: [u8; 8], abi: u32, size: u32, version: S, rustc: S, target: S, vtable: &'static [usize; 9] }}
static VTABLE: [usize; 9] = [0; 9];
const fn s(t: &'static str) -> S {{ S {{ p: t.as_ptr(), l: t.len() }} }}
#[no_mangle] pub static HSU_PLUGIN_HEADER: H = H {{ magic: *b"HSUPLUGN", abi: {host_abi}, size: std::mem::size_of::<H>() as u32,
    version: s("{crate_version}"), rustc: s("rustc"), target: s("{target}"), vtable: &VTABLE }};
"#
        )
    };
    let host_version = hsu::module::plugin::CRATE_VERSION;
    let host_target = hsu::module::plugin::TARGET;
    let other_version = build_library(&dir, "otherversion", &full_header("9.0.0", host_target));
    let other_target = build_library(
        &dir,
        "othertarget",
        &full_header(host_version, "mips-unknown-linux-gnu"),
    );
    let cases = [
        (
            missing.clone(),
            ErrorKind::NotFound,
            vec!["no such file".to_string()],
        ),
        (
            not_a_library.clone(),
            ErrorKind::Validation,
            vec!["cannot be loaded as a shared library".into()],
        ),
        (
            no_symbol.clone(),
            ErrorKind::Validation,
            vec![
                "has no `HSU_PLUGIN_HEADER` symbol".into(),
                "export_plugin!".into(),
            ],
        ),
        (
            bad_magic.clone(),
            ErrorKind::Validation,
            vec!["magic \"NOTHSU!!\"".into(), "expected \"HSUPLUGN\"".into()],
        ),
        (
            bad_abi.clone(),
            ErrorKind::Validation,
            vec![format!("plugin ABI version 99, this host uses {host_abi}")],
        ),
        (
            small_header.clone(),
            ErrorKind::Validation,
            vec!["16-byte header".into()],
        ),
        (
            other_version.clone(),
            ErrorKind::Validation,
            vec![format!(
                "built against hsu-module 9.0.0, this host has hsu-module {host_version}"
            )],
        ),
        (
            other_target.clone(),
            ErrorKind::Validation,
            vec![format!(
                "built for target mips-unknown-linux-gnu, this host is {host_target}"
            )],
        ),
    ];
    for (i, (path, kind, expected)) in cases.iter().enumerate() {
        let id = format!("bad{i}");
        let err = master
            .send(AddWorker(WorkerConfig::plugin(&id, path)))
            .await?
            .unwrap_err();
        let text = hsu::error_chain(&err);
        assert!(matches!(err, MasterError::Plugin { .. }), "{text}");
        assert_eq!(err.kind(), *kind, "{text}");
        assert!(text.contains(&format!("worker `{id}`")), "{text}");
        assert!(text.contains(path.as_str()), "names the path: {text}");
        for part in expected {
            assert!(text.contains(part.as_str()), "{part:?} in {text}");
        }
        // Not added: the id is free again.
        assert!(master.send(GetWorkerState(support::id(id))).await?.is_err());
        // `hsu check` reads the same verdict from the file, without loading it.
        let inspected = hsu::inspect_plugin(Path::new(path))
            .unwrap_err()
            .to_string();
        for part in expected {
            assert!(inspected.contains(part.as_str()), "{part:?} in {inspected}");
        }
    }
    // The master still works, including with a good plugin.
    let good = path_str(&support::plugin("hsu_test_plugin"));
    master
        .send(AddWorker(
            WorkerConfig::plugin("good", &good).with_config("{}"),
        ))
        .await??;
    master.send(StartWorker(id("good"))).await??;
    watch.until("good", WorkerState::Running).await;
    Ok(())
}

#[test]
fn a_plugin_file_is_inspected_without_running_any_of_its_code() {
    let dir = TempDir::new("plugin-inspect");
    let marker = dir.file("initialiser-ran");
    // A library whose initialiser (run by any dlopen) leaves a file behind.
    let trap = build_library(
        &dir,
        "trap",
        &format!(
            r#"extern "C" fn init() {{ let _ = std::fs::write({marker:?}, "ran"); }}
#[used] #[link_section = ".init_array"] static INIT: extern "C" fn() = init;
#[no_mangle] pub extern "C" fn something() -> u32 {{ 7 }}"#
        ),
    );
    let err = hsu::inspect_plugin(Path::new(&trap)).unwrap_err();
    assert!(
        err.to_string().contains("no `HSU_PLUGIN_HEADER` symbol"),
        "{err}"
    );
    assert!(
        !Path::new(&marker).exists(),
        "inspecting ran the library's code"
    );
    // The trap is real: loading it does run the initialiser.
    assert!(hsu::internals::PluginLibrary::load(Path::new(&trap)).is_err());
    assert!(Path::new(&marker).exists(), "a load runs the initialiser");
    // A real plugin: its header read from the file, string pointers through relocations.
    let good = support::plugin("hsu_test_plugin");
    let facts = hsu::inspect_plugin(&good).expect("a good plugin");
    assert_eq!(facts.crate_version, hsu::module::plugin::CRATE_VERSION);
    assert_eq!(facts.target, hsu::module::plugin::TARGET);
    assert_eq!(facts.abi_version, hsu::module::plugin::ABI_VERSION);
}

#[actix_rt::test]
async fn panics_inside_a_plugin_fail_the_worker_with_the_message_and_nothing_else() -> TestResult {
    let dir = TempDir::new("plugin-panics");
    let (master, mut watch) = support::master_in(&dir).await;
    let path = path_str(&support::plugin("hsu_test_plugin"));
    let worker = |id: &str, script: &str| {
        WorkerConfig::plugin(id, &path)
            .with_config(script)
            .with_restart("{policy: never}")
    };

    // In start: the start request fails with the panic, the worker is failed_start.
    master
        .send(AddWorker(worker("in-start", "{start: panic}")))
        .await??;
    let err = master.send(StartWorker(id("in-start"))).await?.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Panicked, "{err}");
    assert!(
        hsu::error_chain(&err).contains("scripted panic in start"),
        "{}",
        hsu::error_chain(&err)
    );
    let failed = watch.until("in-start", WorkerState::FailedStart).await;
    assert!(failed.reason.unwrap().contains("scripted panic in start"));

    // In a task: the running worker fails with the task's panic.
    master
        .send(AddWorker(worker(
            "in-task",
            "{task: panic, task_after_ms: 50}",
        )))
        .await??;
    master.send(StartWorker(id("in-task"))).await??;
    let failed = watch.until("in-task", WorkerState::Failed).await;
    let reason = failed.reason.unwrap();
    assert!(
        reason.contains("task `scripted` panicked: scripted panic in task"),
        "{reason}"
    );

    // In is_healthy: polled by the health actor; the panic fails the worker.
    master
        .send(AddWorker(
            worker("in-health", "{healthy: panic}")
                .with_health_check("{interval: 20ms, timeout: 1s}"),
        ))
        .await??;
    master.send(StartWorker(id("in-health"))).await??;
    let failed = watch.until("in-health", WorkerState::Failed).await;
    assert!(
        failed
            .reason
            .unwrap()
            .contains("scripted panic in is_healthy"),
        "{:?}",
        watch.seen.last()
    );

    // In stop: the stop request fails with the panic.
    master
        .send(AddWorker(worker("in-stop", "{stop: panic}")))
        .await??;
    master.send(StartWorker(id("in-stop"))).await??;
    let err = master.send(StopWorker(id("in-stop"))).await?.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Panicked, "{err}");
    assert!(hsu::error_chain(&err).contains("scripted panic in stop"));
    assert_eq!(
        master.send(GetWorkerState(id("in-stop"))).await??.state,
        WorkerState::Failed
    );

    // The master and other plugin workers are unaffected; a fresh start works.
    master
        .send(AddWorker(worker("fine", "{log: still here}")))
        .await??;
    master.send(StartWorker(id("fine"))).await??;
    master.send(StartWorker(id("in-task"))).await??;
    watch.until("in-task", WorkerState::Running).await;
    Ok(())
}

#[actix_rt::test]
async fn a_plugins_tracing_events_reach_the_workers_log_with_its_id() -> TestResult {
    support::install_worker_logs();
    let dir = TempDir::new("plugin-tracing");
    let (master, mut watch) = support::master_in(&dir).await;
    let path = path_str(&support::plugin("hsu_test_plugin"));
    for id in ["left", "right"] {
        master
            .send(AddWorker(
                WorkerConfig::plugin(id, &path).with_config(&format!("{{log: hello from {id}}}")),
            ))
            .await??;
        master.send(StartWorker(support::id(id))).await??;
        watch.until(id, WorkerState::Running).await;
    }
    for (id, other) in [("left", "right"), ("right", "left")] {
        let log = std::fs::read_to_string(dir.0.join(format!("logs/{id}.log")))?;
        assert!(log.contains(&format!("hello from {id}")), "{id}: {log}");
        assert!(log.contains("marker=true"), "fields travel too: {log}");
        assert!(log.contains("from=hsu_test_module"), "{log}");
        assert!(!log.contains(&format!("hello from {other}")), "{id}: {log}");
    }
    Ok(())
}
