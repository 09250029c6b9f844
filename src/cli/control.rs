//! The client commands: `hsu ls`, `status`, `start`, `stop`, `restart`, `logs`, `shutdown`.
//! Each is one or a few API requests; exit 0 ok, 1 the operation failed, 3 unreachable.

use std::io::IsTerminal;
use std::process::ExitCode;

use comfy_table::{presets, Cell, Color, ContentArrangement, Table};
use hsu::api::{LogLine, WorkerRow};

use super::client::{Answer, ClientError, Endpoint};

/// Which workers a command acts on.
#[derive(Debug, Clone, clap::Args)]
pub struct Which {
    /// The workers.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub ids: Vec<String>,
    /// Every worker, in config order.
    #[arg(long)]
    pub all: bool,
}

const UNREACHABLE: u8 = 3;

/// Prints a client error; its exit code.
fn fail(e: &ClientError) -> ExitCode {
    eprintln!("error: {e}");
    match e {
        ClientError::Unreachable { .. } => ExitCode::from(UNREACHABLE),
        ClientError::Usage(_) => ExitCode::from(2),
        ClientError::Protocol(_) => ExitCode::FAILURE,
    }
}

/// The API's error message of a non-2xx answer.
fn message(answer: &Answer) -> String {
    answer.body["error"]["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("HTTP {}: {}", answer.status, answer.body))
}

fn ok(answer: &Answer) -> bool {
    (200..300).contains(&answer.status)
}

fn get_rows(to: &Endpoint) -> Result<Vec<WorkerRow>, ExitCode> {
    let answer = to
        .request("GET", "/v1/workers", None)
        .map_err(|e| fail(&e))?;
    if !ok(&answer) {
        eprintln!("error: {}", message(&answer));
        return Err(ExitCode::FAILURE);
    }
    serde_json::from_value(answer.body).map_err(|e| {
        eprintln!("error: unexpected answer from the master: {e}");
        ExitCode::FAILURE
    })
}

/// `hsu ls [--json]`.
pub fn ls(to: &Endpoint, json: bool) -> ExitCode {
    let rows = match get_rows(to) {
        Ok(rows) => rows,
        Err(code) => return code,
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    println!("{}", table(&rows));
    ExitCode::SUCCESS
}

/// The `hsu ls` table: colour only on a terminal and without `NO_COLOR`.
pub fn table(rows: &[WorkerRow]) -> Table {
    let colour = std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let mut table = Table::new();
    table
        .load_style(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header([
            "ID",
            "DEPLOYMENT",
            "STATE",
            "PID",
            "UPTIME",
            "RESTARTS",
            "HEALTH",
            "CPU",
            "RSS",
            "WHY",
        ]);
    for row in rows {
        let mut state = Cell::new(&row.state);
        if colour {
            state = state.fg(match row.state.as_str() {
                "running" => Color::Green,
                "failed" | "failed_start" => Color::Red,
                "starting" | "stopping" | "waiting" => Color::Yellow,
                _ => Color::Reset,
            });
        }
        let why = row
            .why
            .clone()
            .or_else(|| {
                row.state
                    .starts_with("failed")
                    .then(|| row.last_error.clone())
                    .flatten()
            })
            .unwrap_or_default();
        table.add_row([
            Cell::new(&row.id),
            Cell::new(&row.deployment),
            state,
            Cell::new(row.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into())),
            Cell::new(row.uptime_seconds.map(uptime).unwrap_or_else(|| "-".into())),
            Cell::new(row.restart_count),
            Cell::new(&row.health),
            Cell::new(
                row.cpu_percent
                    .map(|c| format!("{c:.1}%"))
                    .unwrap_or_else(|| "-".into()),
            ),
            Cell::new(row.rss_bytes.map(bytes).unwrap_or_else(|| "-".into())),
            Cell::new(why),
        ]);
    }
    table
}

/// `3d4h`, `2h05m`, `4m07s`, `12s`.
fn uptime(seconds: f64) -> String {
    let s = seconds as u64;
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s:02}s"),
        (0, _, _) => format!("{h}h{m:02}m"),
        _ => format!("{d}d{h}h"),
    }
}

/// `12.3MiB`.
fn bytes(n: u64) -> String {
    let n = n as f64;
    if n >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1}GiB", n / (1024.0 * 1024.0 * 1024.0))
    } else if n >= 1024.0 * 1024.0 {
        format!("{:.1}MiB", n / (1024.0 * 1024.0))
    } else {
        format!("{:.0}KiB", n / 1024.0)
    }
}

/// `hsu status ID [--json]`.
pub fn status(to: &Endpoint, id: &str, json: bool) -> ExitCode {
    let answer = match to.request("GET", &format!("/v1/workers/{}", path_part(id)), None) {
        Ok(a) => a,
        Err(e) => return fail(&e),
    };
    if !ok(&answer) {
        eprintln!("error: {}", message(&answer));
        return ExitCode::FAILURE;
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&answer.body).unwrap_or_default()
        );
    } else {
        // The diagnostics as `key: value` lines: times and durations as people read them,
        // other nested values as compact JSON.
        if let serde_json::Value::Object(fields) = &answer.body {
            for (key, value) in fields {
                let shown = match value {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => "-".into(),
                    other => readable(other).unwrap_or_else(|| other.to_string()),
                };
                println!("{key}: {shown}");
            }
        }
    }
    ExitCode::SUCCESS
}

/// A `SystemTime` (`{secs_since_epoch, nanos_since_epoch}`) as UTC time and how long ago, a
/// `Duration` (`{secs, nanos}`) as hsu writes durations; `None` for anything else.
fn readable(value: &serde_json::Value) -> Option<String> {
    let object = value.as_object()?;
    let field = |k: &str| object.get(k).and_then(serde_json::Value::as_u64);
    if object.len() == 2 {
        if let (Some(secs), Some(nanos)) = (field("secs_since_epoch"), field("nanos_since_epoch")) {
            let at = chrono::DateTime::from_timestamp(secs as i64, nanos as u32)?;
            let ago = chrono::Utc::now().signed_duration_since(at).to_std().ok();
            let ago = ago.map_or(String::new(), |d| {
                format!(
                    " ({} ago)",
                    hsu::config::duration::format(std::time::Duration::from_secs(d.as_secs()))
                )
            });
            return Some(format!("{}{ago}", at.format("%Y-%m-%d %H:%M:%S UTC")));
        }
        if let (Some(secs), Some(nanos)) = (field("secs"), field("nanos")) {
            let d = std::time::Duration::new(secs, nanos as u32);
            // Milliseconds are enough to read.
            let d = std::time::Duration::from_millis(d.as_millis() as u64);
            return Some(hsu::config::duration::format(d));
        }
    }
    None
}

/// `hsu start|stop|restart ID…|--all [--force]`: one request per worker, in order; every
/// worker is tried, and the exit code is 1 if any failed.
pub fn act(to: &Endpoint, which: &Which, action: &str, force: bool) -> ExitCode {
    let query = if force { "?force=true" } else { "" };
    if which.all {
        // One request: the master goes through every worker (stop in reverse order).
        let answer = match to.request("POST", &format!("/v1/all/{action}{query}"), None) {
            Ok(a) => a,
            Err(e) => return fail(&e),
        };
        if !ok(&answer) {
            eprintln!("error: {}", message(&answer));
            return ExitCode::FAILURE;
        }
        let mut failed = false;
        for row in answer.body.as_array().into_iter().flatten() {
            let id = row["id"].as_str().unwrap_or("?");
            match row["error"].as_str() {
                Some(e) => {
                    failed = true;
                    eprintln!("error: {e}");
                }
                None => println!("{id}: {}", row["state"].as_str().unwrap_or("?")),
            }
        }
        return if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    each(&which.ids, |id| {
        let path = format!("/v1/workers/{}/{action}{query}", path_part(id));
        to.request("POST", &path, None).map(|answer| {
            let state = answer.body["state"].as_str().unwrap_or("?").to_string();
            (answer, state)
        })
    })
}

/// One request per worker, in order, printing `id: outcome`; every worker is tried, and the
/// exit code is 1 if any failed (3 at once if the master is unreachable).
fn each(
    ids: &[String],
    request: impl Fn(&str) -> Result<(Answer, String), ClientError>,
) -> ExitCode {
    let mut failed = false;
    for id in ids {
        match request(id) {
            Err(e) => return fail(&e),
            Ok((answer, outcome)) if ok(&answer) => println!("{id}: {outcome}"),
            Ok((answer, _)) => {
                failed = true;
                eprintln!("error: {}", message(&answer));
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `hsu logs [ID…] [-n N] [-f]`.
pub fn logs(to: &Endpoint, ids: &[String], lines: usize, follow: bool) -> ExitCode {
    let mut path = format!("/v1/logs?lines={lines}&follow={follow}");
    if !ids.is_empty() {
        let list: Vec<String> = ids.iter().map(|id| path_part(id)).collect();
        path.push_str(&format!("&workers={}", list.join(",")));
    }
    let prefix = ids.len() != 1;
    let mut garbled = false;
    let streamed = to.stream_lines(&path, |text| {
        if text.is_empty() {
            return;
        }
        match serde_json::from_str::<LogLine>(text) {
            Ok(l) if prefix => println!("{} | {}", l.worker, l.line),
            Ok(l) => println!("{}", l.line),
            Err(_) => garbled = true,
        }
        if follow {
            use std::io::Write as _;
            let _ = std::io::stdout().flush();
        }
    });
    match streamed {
        Err(e) => fail(&e),
        Ok(Some(answer)) => {
            eprintln!("error: {}", message(&answer));
            ExitCode::FAILURE
        }
        Ok(None) if garbled => {
            eprintln!("error: unexpected lines from the master");
            ExitCode::FAILURE
        }
        Ok(None) => ExitCode::SUCCESS,
    }
}

/// `hsu events [--since N] [--json]`: until interrupted (or the master goes).
pub fn events(to: &Endpoint, since: Option<u64>, json: bool) -> ExitCode {
    let path = match since {
        Some(n) => format!("/v1/events?since={n}"),
        None => "/v1/events".to_string(),
    };
    let mut event = String::new();
    let streamed = to.stream_lines(&path, |line| {
        if let Some(name) = line.strip_prefix("event: ") {
            event = name.to_string();
        } else if let Some(data) = line.strip_prefix("data: ") {
            if json {
                println!("{data}");
                return;
            }
            let v: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
            if event == "missed" {
                println!("(missed {} events)", v["missed"]);
            } else {
                let reason = v["reason"]
                    .as_str()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default();
                println!(
                    "{} {}: {} -> {}{reason}",
                    v["seq"],
                    v["worker"].as_str().unwrap_or("?"),
                    v["from"].as_str().unwrap_or("?"),
                    v["to"].as_str().unwrap_or("?")
                );
            }
            use std::io::Write as _;
            let _ = std::io::stdout().flush();
        }
    });
    match streamed {
        Err(e) => fail(&e),
        Ok(Some(answer)) => {
            eprintln!("error: {}", message(&answer));
            ExitCode::FAILURE
        }
        Ok(None) => ExitCode::SUCCESS,
    }
}

/// `hsu apply [CONFIG] [--dry-run]`: prints the plan (and what failed).
pub fn apply(to: &Endpoint, file: Option<&std::path::Path>, dry_run: bool) -> ExitCode {
    let query = if dry_run { "?dry_run=true" } else { "" };
    let answer = match file {
        Some(path) => {
            // Read here, so its relative paths mean this file's directory and its mistakes
            // are named with this file's lines; the master gets the resolved config.
            let text = match hsu::HsuConfig::load(path).and_then(|c| {
                serde_yaml::to_string(&c).map_err(|e| hsu::ConfigError::Parse {
                    path: path.to_path_buf(),
                    line: None,
                    column: None,
                    message: e.to_string(),
                })
            }) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: {}", hsu::error_chain(&e));
                    // An unreadable file is a usage error; a bad config is refused as the
                    // master would refuse it.
                    return match e {
                        hsu::ConfigError::Read { .. } => ExitCode::from(2),
                        _ => ExitCode::FAILURE,
                    };
                }
            };
            let origin = percent_encode(&path.display().to_string(), b"-._~/");
            let sep = if query.is_empty() { '?' } else { '&' };
            to.request_text(
                "POST",
                &format!("/v1/apply{query}{sep}origin={origin}"),
                text,
            )
        }
        None => to.request("POST", &format!("/v1/reload{query}"), None),
    };
    let answer = match answer {
        Ok(a) => a,
        Err(e) => return fail(&e),
    };
    if !ok(&answer) {
        eprintln!("error: {}", message(&answer));
        return ExitCode::FAILURE;
    }
    let list = |key: &str| -> Vec<String> {
        answer.body[key]
            .as_array()
            .map(|v| {
                v.iter()
                    .map(|x| x.as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let verb = if dry_run { "would be " } else { "" };
    for (key, what) in [
        ("added", "added"),
        ("changed", "restarted in their new form"),
        ("removed", "removed"),
    ] {
        let ids = list(key);
        if !ids.is_empty() {
            println!("{verb}{what}: {}", ids.join(", "));
        }
    }
    println!("unchanged: {}", list("unchanged").len());
    let restart = list("needs_restart");
    if !restart.is_empty() {
        println!(
            "needs a restart of hsu run to take effect: {}",
            restart.join(", ")
        );
    }
    let mut failed = false;
    if let Some(errors) = answer.body["errors"].as_array() {
        for e in errors {
            failed = true;
            eprintln!("error: {}", e[1].as_str().unwrap_or(""));
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `hsu add FILE [--no-start]`.
pub fn add(to: &Endpoint, file: &std::path::Path, start: bool) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read `{}`: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let path = if start {
        "/v1/workers".to_string()
    } else {
        "/v1/workers?start=false".to_string()
    };
    match to.request_text("POST", &path, text) {
        Err(e) => fail(&e),
        Ok(answer) if ok(&answer) => {
            println!(
                "{}: {}",
                answer.body["id"].as_str().unwrap_or("?"),
                answer.body["state"].as_str().unwrap_or("?")
            );
            ExitCode::SUCCESS
        }
        Ok(answer) => {
            eprintln!("error: {}", message(&answer));
            ExitCode::FAILURE
        }
    }
}

/// `hsu rm ID…`.
pub fn remove(to: &Endpoint, ids: &[String]) -> ExitCode {
    each(ids, |id| {
        to.request("DELETE", &format!("/v1/workers/{}", path_part(id)), None)
            .map(|answer| (answer, "removed".to_string()))
    })
}

/// `hsu shutdown`.
pub fn shutdown(to: &Endpoint) -> ExitCode {
    match to.request("POST", "/v1/shutdown", None) {
        Err(e) => fail(&e),
        Ok(answer) if ok(&answer) => {
            println!("shutting down");
            ExitCode::SUCCESS
        }
        Ok(answer) => {
            eprintln!("error: {}", message(&answer));
            ExitCode::FAILURE
        }
    }
}

/// A worker id as a path segment: ids are `[A-Za-z0-9._-]` when valid; anything else is
/// percent-encoded so the master answers "invalid id" instead of routing elsewhere.
fn path_part(id: &str) -> String {
    percent_encode(id, b"._-")
}

/// `text` with every byte but ASCII letters, digits and `keep` percent-encoded.
fn percent_encode(text: &str, keep: &[u8]) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || keep.contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
