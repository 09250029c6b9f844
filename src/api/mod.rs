//! The control API: HTTP/1.1 + JSON under `/v1`, what `hsu ls`, `hsu restart`, `hsu logs` …
//! talk to. `hsu run` serves it on a Unix socket (and optionally on loopback TCP with a bearer
//! token, see [`server`]); an embedding actix-web application mounts the same routes with
//! [`scope`].
//!
//! Every answer is JSON. Errors are `{"error": {"kind", "message", "worker"?}}` with a status
//! that says what happened: 400 a malformed request (a bad id, an unknown query field), 401 no
//! or a wrong token, 403 a write on a read-only API, 404 no such worker, 409 the worker's state
//! does not allow it, 413 a body too large, 422 an invalid config, 424 a start its `depends_on:`
//! prevented (a dependency failed, the wait timed out or was cancelled), 502 the worker itself
//! failed (its start or stop), 503 the master is shutting down, 504 a worker took too long. A request
//! never gets a 500 for being malformed.

pub mod events;
pub mod metrics;
pub mod server;

use std::sync::Arc;
use std::time::Instant;

use actix::Addr;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse, ResponseError};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};

use hsu_actors::{
    ErrorKind, GetAllWorkerStates, GetWorkerState, MasterActor, MasterConfig, MasterError,
    RestartWorker, StartWorker, StopWorker, WorkerId, WorkerSummary,
};

/// Largest request body accepted, in bytes.
pub const MAX_BODY: usize = 256 * 1024;
/// Most log lines one request returns.
pub const MAX_LOG_LINES: usize = 100_000;

/// What the routes need: the master, its settings (log files), and how to end `hsu run`.
#[derive(Clone)]
pub struct ApiState {
    master: Addr<MasterActor>,
    config: Arc<MasterConfig>,
    info: Arc<MasterInfo>,
    started: Instant,
    shutdown: Arc<tokio::sync::Notify>,
    events: Arc<events::EventHub>,
    /// The `GET /v1/workers` answer being computed, shared by every request that arrives
    /// meanwhile (one master query and one serialisation for all of them).
    listing: Arc<std::sync::Mutex<Option<SharedListing>>>,
    /// The last listing, its time and the newest event number when it was asked for: served
    /// again while no event has happened and it is younger than [`LISTING_TTL`].
    listed: Arc<std::sync::Mutex<Option<(Instant, u64, web::Bytes)>>>,
}

/// How long an unchanged listing is served again (its uptimes and resource figures age by at
/// most this much; any state change makes it stale at once).
pub const LISTING_TTL: std::time::Duration = std::time::Duration::from_millis(100);

type SharedListing =
    futures::future::Shared<futures::future::BoxFuture<'static, Result<web::Bytes, String>>>;

impl ApiState {
    /// State for the routes of `master`, whose settings are `config`. `config_path` is shown
    /// in `/v1/master`; `transports` lists where the API is served; `events` is a subscription
    /// to the master (`Subscribe`), taken early so the event stream misses nothing. Call it
    /// inside the actix system.
    pub fn new(
        master: Addr<MasterActor>,
        config: MasterConfig,
        config_path: Option<String>,
        transports: Vec<String>,
        events: tokio::sync::mpsc::UnboundedReceiver<hsu_actors::WorkerStateChanged>,
    ) -> Self {
        let lag = config.api.event_lag;
        Self {
            master,
            config: Arc::new(config),
            info: Arc::new(MasterInfo {
                version: env!("CARGO_PKG_VERSION").to_string(),
                pid: std::process::id(),
                uptime_seconds: 0.0,
                config_path,
                transports,
            }),
            started: Instant::now(),
            shutdown: Arc::new(tokio::sync::Notify::new()),
            events: events::EventHub::start(events, lag),
            listing: Default::default(),
            listed: Default::default(),
        }
    }

    /// A change made through the API: the next listing is computed afresh (its events may
    /// not have reached the event hub yet).
    fn forget_listing(&self) {
        *self.listed.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Resolves once a client asked the master to shut down (`POST /v1/shutdown`).
    pub async fn shutdown_requested(&self) {
        self.shutdown.notified().await;
    }
}

/// The OpenAPI document of the API, generated from the handlers' annotations.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "hsu control API",
        description = "Operate a running hsu master: workers, logs, events, apply, metrics. Over TCP every request needs `Authorization: Bearer TOKEN`."
    ),
    paths(
        master_info,
        list_workers,
        add_worker,
        get_worker,
        remove_worker,
        start_worker,
        stop_worker,
        restart_worker,
        all_workers,
        worker_logs,
        logs,
        metrics_text,
        event_stream,
        list_packages,
        install_package,
        apply,
        reload,
        shutdown
    ),
    components(schemas(
        MasterInfo,
        WorkerRow,
        LogLines,
        LogLine,
        ErrorBody,
        ErrorDetail,
        ApplyAnswer,
        PackageRow,
        InstallRequest,
        events::EventBody
    ))
)]
pub struct ApiDoc;

async fn openapi() -> HttpResponse {
    use utoipa::OpenApi as _;
    HttpResponse::Ok().json(ApiDoc::openapi())
}

/// The `/v1` routes, to mount in an actix-web `App` (`App::new().service(hsu::api::scope(state))`).
/// Authentication is the mounting application's (see [`server`] for what `hsu run` does).
pub fn scope(state: ApiState) -> actix_web::Scope {
    web::scope("/v1")
        .app_data(web::Data::new(state))
        .app_data(
            web::JsonConfig::default()
                .limit(MAX_BODY)
                .error_handler(|e, _| {
                    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string()).into()
                }),
        )
        .app_data(web::QueryConfig::default().error_handler(|e, _| {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string()).into()
        }))
        .app_data(web::PathConfig::default().error_handler(|e, _| {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string()).into()
        }))
        .service(resource("/openapi.json", "GET").route(web::get().to(openapi)))
        .service(resource("/master", "GET").route(web::get().to(master_info)))
        .service(
            resource("/workers", "GET, POST")
                .route(web::get().to(list_workers))
                .route(web::post().to(add_worker)),
        )
        .service(
            resource("/workers/{id}", "GET, DELETE")
                .route(web::get().to(get_worker))
                .route(web::delete().to(remove_worker)),
        )
        .service(resource("/workers/{id}/start", "POST").route(web::post().to(start_worker)))
        .service(resource("/workers/{id}/stop", "POST").route(web::post().to(stop_worker)))
        .service(resource("/workers/{id}/restart", "POST").route(web::post().to(restart_worker)))
        .service(resource("/workers/{id}/logs", "GET").route(web::get().to(worker_logs)))
        .service(resource("/all/{action}", "POST").route(web::post().to(all_workers)))
        .service(resource("/logs", "GET").route(web::get().to(logs)))
        .service(resource("/metrics", "GET").route(web::get().to(metrics_text)))
        .service(resource("/events", "GET").route(web::get().to(event_stream)))
        .service(
            resource("/packages", "GET, POST")
                .route(web::get().to(list_packages))
                .route(web::post().to(install_package)),
        )
        .service(resource("/apply", "POST").route(web::post().to(apply)))
        .service(resource("/reload", "POST").route(web::post().to(reload)))
        .service(resource("/shutdown", "POST").route(web::post().to(shutdown)))
        .default_service(web::to(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint").error_response()
        }))
}

/// A route whose other methods are answered 405 with `Allow: allow` (as JSON, like every
/// error).
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move {
        let mut response = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("this endpoint takes {allow} (see /v1/openapi.json)"),
        )
        .error_response();
        response.headers_mut().insert(
            actix_web::http::header::ALLOW,
            actix_web::http::header::HeaderValue::from_static(allow),
        );
        response
    }))
}

/// `GET /v1/master`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MasterInfo {
    /// hsu's version.
    pub version: String,
    /// The master's process id.
    pub pid: u32,
    /// Seconds since the API started.
    pub uptime_seconds: f64,
    /// The config file `hsu run` was given (none for the embedded default).
    pub config_path: Option<String>,
    /// Where the API is served: `unix:PATH`, `tcp:ADDRESS`.
    pub transports: Vec<String>,
}

/// One row of `GET /v1/workers`: what `hsu ls` shows.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkerRow {
    /// The worker.
    pub id: String,
    /// `native`, `plugin`, `managed`, `integrated` or `unmanaged`.
    pub deployment: String,
    /// Its state (`running`, `failed`, …).
    pub state: String,
    /// The OS process while running.
    pub pid: Option<u32>,
    /// Seconds in the current run.
    pub uptime_seconds: Option<f64>,
    /// Restarts made, automatic and by hand.
    pub restart_count: u32,
    /// `unknown`, `healthy` or `unhealthy`.
    pub health: String,
    /// CPU over the last sample, percent of one core (processes).
    pub cpu_percent: Option<f64>,
    /// Resident memory (processes).
    pub rss_bytes: Option<u64>,
    /// Why it is in this state ("retry in 3.2s (2/5 in 1m)", "circuit open …").
    pub why: Option<String>,
    /// The last error.
    pub last_error: Option<String>,
    /// How the process last ended: its exit code, or 128 + the signal that killed it.
    pub last_exit_code: Option<i32>,
    /// The supervision group it is a member of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// A group's row (deployment `group`): its members, in start order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
    /// A scheduled worker's next run (seconds since the Unix epoch) and counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleRow>,
}

/// The `schedule` of a [`WorkerRow`].
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduleRow {
    /// The cron expression.
    pub cron: String,
    /// `UTC` or `local`.
    pub zone: String,
    /// The next run, seconds since the Unix epoch.
    pub next_run: Option<f64>,
    /// Runs started.
    pub runs: u64,
    /// Times skipped because the previous run was still going.
    pub skipped: u64,
    /// Times missed while the master was paused or busy.
    pub missed: u64,
}

impl From<hsu_actors::GroupSummary> for WorkerRow {
    /// A supervision group as a row of `hsu ls`: deployment `group`, its state, and why.
    fn from(g: hsu_actors::GroupSummary) -> Self {
        let why = g.reason.clone().or_else(|| {
            Some(format!(
                "{} ({}/{} restarts in {})",
                json_name(&g.strategy),
                g.restarts_in_window,
                g.max_restarts,
                hsu_actors::config::duration::format(g.window)
            ))
        });
        Self {
            id: g.id.to_string(),
            deployment: "group".into(),
            state: json_name(&g.state),
            pid: None,
            uptime_seconds: None,
            restart_count: g.restarts_total,
            health: "unknown".into(),
            cpu_percent: None,
            rss_bytes: None,
            why,
            last_error: g.reason,
            last_exit_code: None,
            group: g.parent.map(|p| p.to_string()),
            members: g.members.iter().map(|m| m.to_string()).collect(),
            schedule: None,
        }
    }
}

/// An exit as one number: the code, or 128 + the signal (as shells report it).
pub fn exit_number(exit: &hsu_actors::ExitInfo) -> Option<i32> {
    exit.code.or(exit.signal.map(|s| 128 + s))
}

impl From<WorkerSummary> for WorkerRow {
    fn from(s: WorkerSummary) -> Self {
        Self {
            id: s.id.to_string(),
            deployment: s.deployment.to_string(),
            state: s.state.to_string(),
            pid: s.pid,
            uptime_seconds: s.uptime.map(|d| d.as_secs_f64()),
            restart_count: s.restart_count,
            health: json_name(&s.health),
            cpu_percent: s.resources.map(|r| r.cpu_percent),
            rss_bytes: s.resources.map(|r| r.rss_bytes),
            why: s.why,
            last_error: s.last_error,
            last_exit_code: s.last_exit.as_ref().and_then(exit_number),
            group: s.group.map(|g| g.to_string()),
            members: Vec::new(),
            schedule: s.schedule.map(|c| ScheduleRow {
                cron: c.cron,
                zone: c.zone.to_string(),
                next_run: c
                    .next_run
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_secs_f64()),
                runs: c.runs,
                skipped: c.skipped,
                missed: c.missed,
            }),
        }
    }
}

/// `GET /v1/workers/{id}/logs`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogLines {
    /// The worker.
    pub worker: String,
    /// Oldest first.
    pub lines: Vec<String>,
}

/// The JSON body of every error.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// A stable word: `not_found`, `invalid_state`, `unauthorized`, …
    pub kind: String,
    /// The whole message, cause chain included.
    pub message: String,
    /// The worker it concerns, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The config field it concerns, if any (the first problem's, for an invalid config).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Every problem of an invalid config, each with its worker and field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub issues: Vec<hsu_actors::config::ValidationIssue>,
}

/// An error answered by the API.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: Box<ErrorBody>,
}

impl ApiError {
    /// An error with `status`, `kind` and `message`.
    pub fn new(status: StatusCode, kind: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: Box::new(ErrorBody {
                error: ErrorDetail {
                    kind: kind.to_string(),
                    message: message.into(),
                    worker: None,
                    field: None,
                    issues: Vec::new(),
                },
            }),
        }
    }

    fn worker(mut self, id: &str) -> Self {
        self.body.error.worker = Some(id.to_string());
        self
    }

    /// 401, for a missing or wrong token.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid `Authorization: Bearer TOKEN` header is required",
        )
    }

    /// 403, for a write on a read-only API.
    pub fn read_only() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "read_only",
            "this API is read-only (master.api.read_only)",
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.body.error.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(&*self.body)
    }
}

impl From<MasterError> for ApiError {
    fn from(e: MasterError) -> Self {
        let (status, kind) = match (&e, e.kind()) {
            // A package that cannot be installed is the request's problem (a path that does
            // not exist or holds no valid package), not the master's.
            (MasterError::Package { .. }, ErrorKind::NotFound) => {
                (StatusCode::NOT_FOUND, "not_found")
            }
            (MasterError::Package { .. }, ErrorKind::Conflict) => {
                (StatusCode::CONFLICT, "conflict")
            }
            (MasterError::Package { .. }, _) => (StatusCode::UNPROCESSABLE_ENTITY, "package"),
            (_, kind) => Self::status_of(kind),
        };
        let worker = match &e {
            MasterError::NotFound { id }
            | MasterError::Conflict { id }
            | MasterError::Mailbox { id, .. }
            | MasterError::Dependency { id, .. } => Some(id.to_string()),
            MasterError::Worker(w) => Some(w.worker().to_string()),
            _ => None,
        };
        let mut error = Self::new(status, kind, hsu_actors::error_chain(&e));
        error.body.error.worker = worker;
        if let MasterError::Validation { id, issues } = &e {
            error.body.error.worker = Some(id.clone());
            error.body.error.field = issues.first().map(|i| i.field.clone());
            error.body.error.issues = issues.clone();
        }
        error
    }
}

impl ApiError {
    /// The status and kind word of an error class.
    fn status_of(kind: ErrorKind) -> (StatusCode, &'static str) {
        match kind {
            ErrorKind::Validation => (StatusCode::UNPROCESSABLE_ENTITY, "validation"),
            ErrorKind::Conflict => (StatusCode::CONFLICT, "conflict"),
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ErrorKind::InvalidState => (StatusCode::CONFLICT, "invalid_state"),
            ErrorKind::Timeout => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            ErrorKind::ModuleFailed => (StatusCode::BAD_GATEWAY, "module_failed"),
            ErrorKind::Panicked => (StatusCode::BAD_GATEWAY, "panicked"),
            ErrorKind::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ErrorKind::Unsupported => (StatusCode::UNPROCESSABLE_ENTITY, "unsupported"),
            ErrorKind::Io => (StatusCode::BAD_GATEWAY, "io"),
            ErrorKind::Dependency => (StatusCode::FAILED_DEPENDENCY, "dependency"),
            _ => (StatusCode::BAD_GATEWAY, "failed"),
        }
    }
}

impl From<hsu_actors::ConfigError> for ApiError {
    fn from(e: hsu_actors::ConfigError) -> Self {
        let mut error = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            hsu_actors::error_chain(&e),
        );
        if let hsu_actors::ConfigError::Invalid { issues, .. } = &e {
            error.body.error.field = issues.first().map(|i| i.field.clone());
            error.body.error.worker = issues.first().and_then(|i| i.worker.clone());
            error.body.error.issues = issues.clone();
        }
        error
    }
}

/// The `lines` asked for (`default` when none); more than [`MAX_LOG_LINES`] is refused, not
/// quietly cut.
fn log_lines(asked: Option<usize>, default: usize) -> Result<usize, ApiError> {
    match asked {
        None => Ok(default),
        Some(n) if n <= MAX_LOG_LINES => Ok(n),
        Some(n) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("`lines` is {n}; at most {MAX_LOG_LINES} lines are returned at once"),
        )),
    }
}

/// The master did not answer: it is going away.
fn gone(e: actix::MailboxError) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        format!("the master did not answer: {e}"),
    )
}

fn parse_id(text: &str) -> Result<WorkerId, ApiError> {
    WorkerId::new(text).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string()).worker(text)
    })
}

/// The snake_case name serde gives a unit variant.
fn json_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// `GET /metrics` (and `/v1/metrics`): the Prometheus text format.
#[utoipa::path(get, path = "/v1/metrics", responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 502, body = ErrorBody), (status = 503, body = ErrorBody), (status = 504, body = ErrorBody)))]
pub async fn metrics_text(state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    // Workers without limits are sampled only when asked: now.
    state
        .master
        .send(hsu_actors::RefreshResources)
        .await
        .map_err(gone)?;
    let rows = state.master.send(GetAllWorkerStates).await.map_err(gone)?;
    let facts = state
        .master
        .send(hsu_actors::GetWorkerMetrics)
        .await
        .map_err(gone)?;
    let text = metrics::render(&rows, &facts).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics",
            format!("cannot encode the metrics: {e}"),
        )
    })?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}

#[utoipa::path(get, path = "/v1/master", responses((status = 200, body = MasterInfo)))]
async fn master_info(state: web::Data<ApiState>) -> web::Json<MasterInfo> {
    let mut info = (*state.info).clone();
    info.uptime_seconds = state.started.elapsed().as_secs_f64();
    web::Json(info)
}

#[utoipa::path(get, path = "/v1/workers", responses((status = 200, body = [WorkerRow]), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 502, body = ErrorBody), (status = 503, body = ErrorBody), (status = 504, body = ErrorBody)))]
/// Requests that arrive while a listing is being computed share it: under many concurrent
/// clients the master answers one query at a time instead of a queue of them, so its
/// mailbox stays free for supervision (a restart is not delayed behind a backlog of
/// listings). Each answer is at least as new as the moment its request arrived, minus one
/// query in flight.
async fn list_workers(state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    use futures::FutureExt as _;
    let newest = state.events.newest();
    if let Some((at, seen, body)) = state
        .listed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
    {
        if seen == newest && at.elapsed() < LISTING_TTL {
            return Ok(HttpResponse::Ok()
                .content_type("application/json")
                .body(body));
        }
    }
    let flight = {
        let mut slot = state.listing.lock().unwrap_or_else(|p| p.into_inner());
        match slot.as_ref() {
            Some(flight) => flight.clone(),
            None => {
                let master = state.master.clone();
                let flight = async move {
                    master
                        .send(hsu_actors::RefreshResources)
                        .await
                        .map_err(|e| e.to_string())?;
                    let rows = master
                        .send(GetAllWorkerStates)
                        .await
                        .map_err(|e| e.to_string())?;
                    let groups = master
                        .send(hsu_actors::GetGroups)
                        .await
                        .map_err(|e| e.to_string())?;
                    // Workers, then the supervision groups (deployment `group`).
                    let rows: Vec<WorkerRow> = rows
                        .into_iter()
                        .map(WorkerRow::from)
                        .chain(groups.into_iter().map(WorkerRow::from))
                        .collect();
                    serde_json::to_vec(&rows)
                        .map(web::Bytes::from)
                        .map_err(|e| e.to_string())
                }
                .boxed()
                .shared();
                *slot = Some(flight.clone());
                flight
            }
        }
    };
    let answer = flight.clone().await;
    {
        // The first to finish frees the slot for the next listing.
        let mut slot = state.listing.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_some_and(|f| f.ptr_eq(&flight)) {
            *slot = None;
        }
    }
    match answer {
        Ok(body) => {
            *state.listed.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((Instant::now(), newest, body.clone()));
            Ok(HttpResponse::Ok()
                .content_type("application/json")
                .body(body))
        }
        Err(e) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("the master did not answer: {e}"),
        )),
    }
}

#[utoipa::path(get, path = "/v1/workers/{id}", params(("id" = String, Path, description = "the worker id", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$")), responses((status = 200, description = "the worker's diagnostics", body = Object), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 502, body = ErrorBody), (status = 503, body = ErrorBody), (status = 504, body = ErrorBody)))]
async fn get_worker(
    state: web::Data<ApiState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    state
        .master
        .send(hsu_actors::RefreshResources)
        .await
        .map_err(gone)?;
    let diagnostics = state
        .master
        .send(GetWorkerState(id.clone()))
        .await
        .map_err(gone)?;
    match diagnostics {
        Ok(d) => Ok(HttpResponse::Ok().json(d)),
        // A supervision group: its summary (strategy, state, members, intensity, reason).
        Err(e @ MasterError::NotFound { .. }) => match group(state.get_ref(), &id).await? {
            Some(g) => Ok(HttpResponse::Ok().json(g)),
            None => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// The supervision group `id`, if there is one of that id.
async fn group(
    state: &ApiState,
    id: &WorkerId,
) -> Result<Option<hsu_actors::GroupSummary>, ApiError> {
    let groups = state
        .master
        .send(hsu_actors::GetGroups)
        .await
        .map_err(gone)?;
    Ok(groups.into_iter().find(|g| &g.id == id))
}

/// The row of `id` after an operation, so a client sees the outcome in one round trip.
async fn row(state: &ApiState, id: &WorkerId) -> Result<WorkerRow, ApiError> {
    let summary = state
        .master
        .send(hsu_actors::GetWorkerSummary(id.clone()))
        .await
        .map_err(gone)?;
    match summary {
        Ok(summary) => Ok(WorkerRow::from(summary)),
        // A group's id: its row.
        Err(e @ MasterError::NotFound { .. }) => match group(state, id).await? {
            Some(g) => Ok(WorkerRow::from(g)),
            None => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    }
}

#[utoipa::path(post, path = "/v1/workers/{id}/start", params(("id" = String, Path, description = "the worker id", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$")), responses((status = 200, body = WorkerRow), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 424, body = ErrorBody), (status = 502, body = ErrorBody), (status = 503, body = ErrorBody), (status = 504, body = ErrorBody)))]
async fn start_worker(
    state: web::Data<ApiState>,
    id: web::Path<String>,
) -> Result<web::Json<WorkerRow>, ApiError> {
    lifecycle(&state, &id, StartWorker).await
}

/// Sends the lifecycle request `make(id)` and answers the worker's row after it.
async fn lifecycle<M>(
    state: &ApiState,
    id: &str,
    make: impl FnOnce(WorkerId) -> M,
) -> Result<web::Json<WorkerRow>, ApiError>
where
    M: actix::Message<Result = Result<(), MasterError>> + Send + 'static,
    MasterActor: actix::Handler<M>,
{
    let id = parse_id(id)?;
    let done = state.master.send(make(id.clone())).await.map_err(gone)?;
    state.forget_listing();
    done?;
    Ok(web::Json(row(state, &id).await?))
}

#[utoipa::path(post, path = "/v1/workers/{id}/stop", params(("id" = String, Path, description = "the worker id", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$")), responses((status = 200, body = WorkerRow), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 502, body = ErrorBody), (status = 503, body = ErrorBody), (status = 504, body = ErrorBody)))]
async fn stop_worker(
    state: web::Data<ApiState>,
    id: web::Path<String>,
) -> Result<web::Json<WorkerRow>, ApiError> {
    lifecycle(&state, &id, StopWorker).await
}

/// `?force=true`: start even if the stop fails.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RestartQuery {
    #[serde(default)]
    force: bool,
}

#[utoipa::path(post, path = "/v1/workers/{id}/restart", params(("id" = String, Path, description = "the worker id", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$"), RestartQuery), responses((status = 200, body = WorkerRow), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 424, body = ErrorBody), (status = 502, body = ErrorBody), (status = 503, body = ErrorBody), (status = 504, body = ErrorBody)))]
async fn restart_worker(
    state: web::Data<ApiState>,
    id: web::Path<String>,
    query: web::Query<RestartQuery>,
) -> Result<web::Json<WorkerRow>, ApiError> {
    let force = query.force;
    lifecycle(&state, &id, |id| RestartWorker { id, force }).await
}

/// `POST /v1/all/{start|stop|restart}` (`?force=true` for restart): every worker, in config
/// order for start and restart, in reverse order for stop; every worker is tried. Answers each
/// worker's row (or error) in config order.
#[utoipa::path(post, path = "/v1/all/{action}", params(("action" = String, Path, description = "start, stop or restart", pattern = r"^(start|stop|restart)$"), RestartQuery), responses((status = 200, description = "per worker: its row, or `{id, error}`", body = [Object]), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn all_workers(
    state: web::Data<ApiState>,
    action: web::Path<String>,
    query: web::Query<RestartQuery>,
) -> Result<HttpResponse, ApiError> {
    let action = action.into_inner();
    if !matches!(action.as_str(), "start" | "stop" | "restart") {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no action `{action}`: start, stop or restart"),
        ));
    }
    let rows = state.master.send(GetAllWorkerStates).await.map_err(gone)?;
    let mut ids: Vec<WorkerId> = rows.into_iter().map(|r| r.id).collect();
    if action == "stop" {
        ids.reverse();
    }
    let mut results = Vec::with_capacity(ids.len());
    for id in ids {
        let done = match action.as_str() {
            "start" => state.master.send(StartWorker(id.clone())).await,
            "stop" => state.master.send(StopWorker(id.clone())).await,
            _ => {
                state
                    .master
                    .send(RestartWorker {
                        id: id.clone(),
                        force: query.force,
                    })
                    .await
            }
        }
        .map_err(gone)?;
        results.push((id, done.err().map(|e| hsu_actors::error_chain(&e))));
    }
    state.forget_listing();
    if action == "stop" {
        results.reverse();
    }
    let mut out = Vec::with_capacity(results.len());
    for (id, error) in results {
        out.push(match error {
            None => serde_json::to_value(row(&state, &id).await?).unwrap_or_default(),
            Some(e) => serde_json::json!({"id": id.to_string(), "error": e}),
        });
    }
    Ok(HttpResponse::Ok().json(out))
}

/// `?lines=N` (default 100).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct LogsQuery {
    #[param(minimum = 0, maximum = 100000)]
    lines: Option<usize>,
}

#[utoipa::path(get, path = "/v1/workers/{id}/logs", params(("id" = String, Path, description = "the worker id", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$"), LogsQuery), responses((status = 200, body = LogLines), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 502, body = ErrorBody), (status = 503, body = ErrorBody), (status = 504, body = ErrorBody)))]
async fn worker_logs(
    state: web::Data<ApiState>,
    id: web::Path<String>,
    query: web::Query<LogsQuery>,
) -> Result<web::Json<LogLines>, ApiError> {
    let id = parse_id(&id)?;
    // The worker must exist: an unknown id is a 404, not an empty log.
    row(&state, &id).await?;
    let lines = log_lines(query.lines, 100)?;
    let logs = state.config.logs.clone();
    let worker = id.clone();
    let read = web::block(move || hsu_actors::worker_log_tail(&logs, &worker, lines))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("reading the log was interrupted: {e}"),
            )
        })?
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "io",
                format!("cannot read the log of `{id}`: {e}"),
            )
            .worker(id.as_str())
        })?;
    Ok(web::Json(LogLines {
        worker: id.to_string(),
        lines: read,
    }))
}

/// `GET /v1/logs?workers=a,b&lines=N&follow=true`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct LogsOfQuery {
    /// Comma-separated ids; all workers when absent.
    workers: Option<String>,
    #[param(minimum = 0, maximum = 100000)]
    lines: Option<usize>,
    #[serde(default)]
    follow: bool,
}

/// One line of `GET /v1/logs` (newline-delimited JSON).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogLine {
    /// Whose.
    pub worker: String,
    /// The line.
    pub line: String,
}

/// How often a followed log is polled.
const FOLLOW_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// The last lines of several workers, each worker's in order, then (with `follow`) every new
/// line as it is written, across rotations, as newline-delimited JSON. Ends when the client
/// goes away.
#[utoipa::path(get, path = "/v1/logs", params(LogsOfQuery), responses((status = 200, description = "newline-delimited JSON, one LogLine per line", content_type = "application/x-ndjson", body = LogLine), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 502, body = ErrorBody), (status = 503, body = ErrorBody), (status = 504, body = ErrorBody)))]
async fn logs(
    state: web::Data<ApiState>,
    query: web::Query<LogsOfQuery>,
) -> Result<HttpResponse, ApiError> {
    let all = state.master.send(GetAllWorkerStates).await.map_err(gone)?;
    let ids: Vec<WorkerId> = match &query.workers {
        None => all.iter().map(|r| r.id.clone()).collect(),
        Some(list) => {
            let mut ids = Vec::new();
            for text in list.split(',').filter(|t| !t.is_empty()) {
                let id = parse_id(text)?;
                if !all.iter().any(|r| r.id == id) {
                    return Err(MasterError::NotFound { id }.into());
                }
                ids.push(id);
            }
            ids
        }
    };
    let lines = log_lines(query.lines, 10)?;
    let follow = query.follow;
    let logs = state.config.logs.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<web::Bytes, actix_web::Error>>(256);
    let encode = |worker: &WorkerId, line: String| {
        let mut text = serde_json::to_string(&LogLine {
            worker: worker.to_string(),
            line,
        })
        .unwrap_or_default();
        text.push('\n');
        web::Bytes::from(text)
    };
    // Start (tail + follower) on the blocking pool: it reads files.
    let started = web::block(move || {
        ids.into_iter()
            .map(|id| hsu_actors::LogFollower::start(&logs, &id, lines).map(|f| (id, f)))
            .collect::<std::io::Result<Vec<_>>>()
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("reading the logs was interrupted: {e}"),
        )
    })?
    .map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "io",
            format!("cannot read a log: {e}"),
        )
    })?;
    let mut followers = Vec::new();
    let mut backlog = Vec::new();
    for (id, (follower, before)) in started {
        backlog.extend(before.into_iter().map(|line| Ok(encode(&id, line))));
        followers.push((id, follower));
    }
    if follow {
        actix_rt::spawn(async move {
            let mut followers = followers;
            loop {
                tokio::time::sleep(FOLLOW_POLL).await;
                let polled = web::block(move || {
                    let new: Vec<(WorkerId, std::io::Result<Vec<String>>)> = followers
                        .iter_mut()
                        .map(|(id, f)| (id.clone(), f.poll()))
                        .collect();
                    (followers, new)
                })
                .await;
                let Ok((back, new)) = polled else { return };
                followers = back;
                for (id, lines) in new {
                    for line in lines.unwrap_or_default() {
                        if tx.send(Ok(encode(&id, line))).await.is_err() {
                            return; // the client went away
                        }
                    }
                }
                if tx.is_closed() {
                    return;
                }
            }
        });
    } else {
        drop(tx);
    }
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .streaming(futures::stream::iter(backlog).chain(tokio_stream_of(rx))))
}

/// A receiver as a stream.
fn tokio_stream_of<T: 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

/// The request body as text, at most [`MAX_BODY`] bytes (413 beyond, as JSON like every error).
async fn body_text(mut payload: web::Payload) -> Result<String, ApiError> {
    let mut bytes = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("cannot read the body: {e}"),
            )
        })?;
        if bytes.len() + chunk.len() > MAX_BODY {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the body is larger than {MAX_BODY} bytes"),
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes.to_vec()).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the body is not UTF-8",
        )
    })
}

/// `?start=false`: add without starting.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AddQuery {
    start: Option<bool>,
}

/// `POST /v1/workers` with one worker's config (YAML or JSON) as the body: validated like the
/// config file, added, and started unless `?start=false`.
#[utoipa::path(post, path = "/v1/workers", params(AddQuery), request_body(description = "one worker's config, as in `workers:`", content((Object = "application/yaml"), (Object = "application/json"))), responses((status = 201, body = WorkerRow), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 502, body = ErrorBody), (status = 503, body = ErrorBody), (status = 504, body = ErrorBody)))]
async fn add_worker(
    state: web::Data<ApiState>,
    query: web::Query<AddQuery>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let text = body_text(payload).await?;
    let config = hsu_actors::WorkerConfig::from_yaml(&text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!(" (line {}, column {})", l.line(), l.column()))
            .unwrap_or_default();
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            format!("invalid worker config{at}: {e}"),
        )
    })?;
    let added = state
        .master
        .send(hsu_actors::AddWorker(config))
        .await
        .map_err(gone)?;
    state.forget_listing();
    let id = added?;
    if query.start.unwrap_or(true) {
        let started = state
            .master
            .send(StartWorker(id.clone()))
            .await
            .map_err(gone)?;
        state.forget_listing();
        started?;
    }
    Ok(HttpResponse::Created().json(row(&state, &id).await?))
}

/// `DELETE /v1/workers/{id}`: stopped (if running) and removed.
#[utoipa::path(delete, path = "/v1/workers/{id}", params(("id" = String, Path, description = "the worker id", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$")), responses((status = 200, description = "removed", body = Object), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 502, body = ErrorBody), (status = 503, body = ErrorBody), (status = 504, body = ErrorBody)))]
async fn remove_worker(
    state: web::Data<ApiState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let removed = state
        .master
        .send(hsu_actors::RemoveWorker(id.clone()))
        .await
        .map_err(gone)?;
    state.forget_listing();
    removed?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"removed": id.to_string()})))
}

/// One installed package.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PackageRow {
    /// `name:version`.
    pub id: String,
    /// What it says it is.
    pub description: String,
    /// `process`, `module`.
    pub supported_types: Vec<String>,
    /// Where it is installed.
    pub path: String,
}

impl From<hsu_actors::packages::InstalledPackage> for PackageRow {
    fn from(p: hsu_actors::packages::InstalledPackage) -> Self {
        Self {
            id: p.manifest.id(),
            description: p.manifest.description.clone(),
            supported_types: p
                .manifest
                .supported_types
                .iter()
                .map(|t| format!("{t:?}").to_lowercase())
                .collect(),
            path: p.path.display().to_string(),
        }
    }
}

#[utoipa::path(get, path = "/v1/packages", responses((status = 200, body = [PackageRow]), (status = 502, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn list_packages(state: web::Data<ApiState>) -> Result<web::Json<Vec<PackageRow>>, ApiError> {
    let root = state.config.packages_directory.clone();
    let listed = web::block(move || hsu_actors::packages::list(&root))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            )
        })?
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "io", hsu_actors::error_chain(&e)))?;
    Ok(web::Json(
        listed.into_iter().map(PackageRow::from).collect(),
    ))
}

/// `POST /v1/packages`: install from a directory or tarball on the master's host.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallRequest {
    /// A package directory or a `.tar`/`.tar.gz`, as a path on the master's host.
    pub source: String,
}

#[utoipa::path(post, path = "/v1/packages", request_body = InstallRequest, responses((status = 201, body = PackageRow), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 502, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn install_package(
    state: web::Data<ApiState>,
    body: web::Json<InstallRequest>,
) -> Result<HttpResponse, ApiError> {
    let installed = state
        .master
        .send(hsu_actors::InstallPackage(body.into_inner().source.into()))
        .await
        .map_err(gone)??;
    Ok(HttpResponse::Created().json(PackageRow::from(installed)))
}

/// What `apply` and `reload` answer.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApplyAnswer {
    /// New workers, added and started.
    pub added: Vec<String>,
    /// Workers no longer configured, stopped and removed.
    pub removed: Vec<String>,
    /// Workers replaced by their new form and started.
    pub changed: Vec<String>,
    /// Workers left exactly as they were (same process, uptime, counters).
    pub unchanged: Vec<String>,
    /// Steps that failed: `[worker, error]`.
    #[schema(value_type = Vec<Vec<String>>)]
    pub errors: Vec<(String, String)>,
    /// `master:` settings that differ but apply only at the next start of `hsu run`.
    pub needs_restart: Vec<String>,
    /// Nothing was changed.
    pub dry_run: bool,
}

/// `?dry_run=true`: only the plan.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ApplyQuery {
    #[serde(default)]
    dry_run: bool,
    /// What the body is called in error messages (the CLI sends the file's path).
    #[param(max_length = 4096)]
    origin: Option<String>,
}

impl ApplyQuery {
    /// The schema's bound on `origin`, enforced.
    fn checked(&self) -> Result<&Self, ApiError> {
        match &self.origin {
            Some(o) if o.len() > 4096 => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "`origin` is longer than 4096 bytes",
            )),
            _ => Ok(self),
        }
    }
}

/// `POST /v1/apply` with a whole config as the body.
#[utoipa::path(post, path = "/v1/apply", params(ApplyQuery), request_body(description = "a whole config", content((Object = "application/yaml"), (Object = "application/json"))), responses((status = 200, body = ApplyAnswer), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 502, body = ErrorBody), (status = 503, body = ErrorBody), (status = 504, body = ErrorBody)))]
async fn apply(
    state: web::Data<ApiState>,
    query: web::Query<ApplyQuery>,
    payload: web::Payload,
) -> Result<web::Json<ApplyAnswer>, ApiError> {
    let text = body_text(payload).await?;
    if text.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the body must be a config (YAML or JSON); use /v1/reload to re-read the master's own file",
        ));
    }
    let origin = query
        .checked()?
        .origin
        .as_deref()
        .unwrap_or("<request body>");
    let config = hsu_actors::HsuConfig::parse(&text, std::path::Path::new(origin))?;
    Ok(web::Json(
        apply_config(&state, config, None, query.dry_run).await?,
    ))
}

/// `POST /v1/reload`: the file `hsu run` was given, read again and applied (as SIGHUP).
#[utoipa::path(post, path = "/v1/reload", params(ApplyQuery), responses((status = 200, body = ApplyAnswer), (status = 422, body = ErrorBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 502, body = ErrorBody), (status = 503, body = ErrorBody), (status = 504, body = ErrorBody)))]
async fn reload(
    state: web::Data<ApiState>,
    query: web::Query<ApplyQuery>,
) -> Result<web::Json<ApplyAnswer>, ApiError> {
    Ok(web::Json(
        reload_config(&state, query.checked()?.dry_run).await?,
    ))
}

/// Reads the config `hsu run` was started with (the embedded default when none) and applies
/// it: what `POST /v1/reload` and SIGHUP do.
///
/// # Errors
/// The file cannot be read or is invalid (nothing changes then), or the master is gone.
pub async fn reload_config(state: &ApiState, dry_run: bool) -> Result<ApplyAnswer, ApiError> {
    let path = state.info.config_path.clone();
    let config = match &path {
        None => hsu_actors::HsuConfig::parse(
            crate::DEFAULT_CONFIG,
            std::path::Path::new("<embedded default config>"),
        )?,
        Some(p) => {
            let p = std::path::PathBuf::from(p);
            web::block(move || hsu_actors::HsuConfig::load(&p))
                .await
                .map_err(|e| {
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        e.to_string(),
                    )
                })??
        }
    };
    apply_config(state, config, path.as_deref(), dry_run).await
}

/// Validates `config` whole (any problem rejects it and nothing changes), then applies it.
async fn apply_config(
    state: &ApiState,
    config: hsu_actors::HsuConfig,
    origin: Option<&str>,
    dry_run: bool,
) -> Result<ApplyAnswer, ApiError> {
    let factories = state
        .master
        .send(hsu_actors::ListModuleFactories)
        .await
        .map_err(gone)??;
    let needs_restart = master_changes(&state.config, &config.master);
    let origin = origin.map(std::path::PathBuf::from);
    // Checked with the workers below; read here, while the config is at hand.
    let groups = hsu_actors::config::validate_groups(&config).unwrap_or_default();
    let specs = web::block(move || {
        config.validate(
            &|name| factories.iter().any(|f| f == name),
            origin.as_deref(),
        )
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        )
    })??;
    let report = state
        .master
        .send(hsu_actors::Apply { specs, dry_run })
        .await
        .map_err(gone)?;
    state.forget_listing();
    let report = report?;
    let mut group_errors = Vec::new();
    if !dry_run {
        // The new tree; groups that are new or changed are started (members already running
        // are left as they are).
        let top: Vec<WorkerId> = groups
            .iter()
            .filter(|g| g.parent.is_none())
            .map(|g| g.id.clone())
            .collect();
        let fresh = state
            .master
            .send(hsu_actors::SetGroups(groups))
            .await
            .map_err(gone)?;
        for id in top.into_iter().filter(|id| fresh.contains(id)) {
            if let Err(e) = state
                .master
                .send(hsu_actors::StartWorker(id.clone()))
                .await
                .map_err(gone)?
            {
                group_errors.push((id.to_string(), hsu_actors::error_chain(&e)));
            }
        }
    }
    let names = |v: Vec<WorkerId>| v.into_iter().map(|i| i.to_string()).collect();
    Ok(ApplyAnswer {
        added: names(report.added),
        removed: names(report.removed),
        changed: names(report.changed),
        unchanged: names(report.unchanged),
        errors: report
            .errors
            .into_iter()
            .map(|(id, e)| (id.to_string(), e))
            .chain(group_errors)
            .collect(),
        needs_restart,
        dry_run: report.dry_run,
    })
}

/// The `master:` keys whose new value differs and that only a new start of `hsu run` applies.
/// (`restart`, `start_timeout` and `stop_timeout` are defaults of the workers' specs, so a
/// change to them shows as changed workers instead.)
fn master_changes(now: &MasterConfig, new: &MasterConfig) -> Vec<String> {
    const LIVE: [&str; 3] = ["restart", "start_timeout", "stop_timeout"];
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(now), serde_json::to_value(new))
    else {
        return Vec::new();
    };
    a.iter()
        .filter(|(key, value)| !LIVE.contains(&key.as_str()) && b.get(*key) != Some(value))
        .map(|(key, _)| format!("master.{key}"))
        .collect()
}

/// `?since=N`: the same as `Last-Event-ID: N`; `?live=true`: only events from now on.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    #[serde(default)]
    live: bool,
    #[param(minimum = 0, maximum = 9007199254740991_u64)]
    since: Option<u64>,
}

#[utoipa::path(get, path = "/v1/events", params(EventsQuery, ("Last-Event-ID" = Option<u64>, Header, description = "resume after this event")), responses((status = 200, description = "server-sent events: `event: state` with an EventBody, `event: missed` with a count", content_type = "text/event-stream", body = String), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 502, body = ErrorBody), (status = 503, body = ErrorBody), (status = 504, body = ErrorBody)))]
async fn event_stream(
    state: web::Data<ApiState>,
    request: actix_web::HttpRequest,
    query: web::Query<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    let header = match request.headers().get("last-event-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        "`Last-Event-ID` must be an event number",
                    )
                })?,
        ),
    };
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .streaming(state.events.stream(header.or(query.since), query.live)))
}

#[utoipa::path(post, path = "/v1/shutdown", responses((status = 202, description = "stopping every worker", body = Object)))]
async fn shutdown(state: web::Data<ApiState>) -> HttpResponse {
    state.shutdown.notify_one();
    HttpResponse::Accepted().json(serde_json::json!({"shutting_down": true}))
}
