//! What `hsu run` serves the control API on, and who may use it.
//!
//! - A Unix socket `<run_directory>/hsu.sock`, created fresh at start (a socket left by a
//!   master that died is replaced; the run directory's lock, [`RunLock`], guarantees no live
//!   master owns it) with mode 0600: the file system is the access control, as for
//!   `supervisorctl`'s default socket.
//! - Optionally a TCP listener (`master.api.listen`), loopback unless `allow_remote: true`. It
//!   always requires `Authorization: Bearer TOKEN`, compared in constant time; the token is
//!   read from `token_file` or generated at start into `<run_directory>/api.token` (0600).
//! - `read_only: true` serves only GET requests on both.
//!
//! The socket and a generated token file are removed when the server stops.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use actix_web::body::MessageBody;
use actix_web::dev::{ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpServer, ResponseError};

use super::{scope, ApiError, ApiState};
use hsu_actors::config::ApiConfig;

/// The socket's file name inside the run directory.
pub const SOCKET: &str = "hsu.sock";
/// The generated token's file name inside the run directory.
pub const TOKEN: &str = "api.token";
/// The lock's file name inside the run directory.
pub const LOCK: &str = "hsu.lock";

/// Who may do what on one listener.
#[derive(Clone)]
struct Policy {
    /// Required bearer token (TCP); none on the Unix socket.
    token: Option<String>,
    read_only: bool,
}

/// Checks the token and the read-only rule before any route runs.
async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let policy = req.app_data::<web::Data<Policy>>().cloned();
    if let Some(policy) = policy {
        if let Some(token) = &policy.token {
            let given = req
                .headers()
                .get(actix_web::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            if !constant_time_eq::constant_time_eq(given.as_bytes(), token.as_bytes()) {
                return Err(ApiError::unauthorized().into());
            }
        }
        if policy.read_only && req.method() != actix_web::http::Method::GET {
            return Err(ApiError::read_only().into());
        }
    }
    next.call(req).await
}

/// The running listeners; [`ControlServer::stop`] ends them and removes their files.
pub struct ControlServer {
    handles: Vec<ServerHandle>,
    socket: Option<PathBuf>,
    generated_token: Option<PathBuf>,
    /// Where the API is served: `unix:PATH`, `tcp:ADDRESS`.
    pub transports: Vec<String>,
}

impl ControlServer {
    /// Binds the listeners `config` asks for, then serves the state `make_state` builds
    /// (given the transports as bound: `unix:PATH`, `tcp:127.0.0.1:PORT`) on them, on the
    /// current actix system (one extra thread per listener). The run directory must be locked
    /// by this process ([`RunLock`]).
    ///
    /// # Errors
    /// When a listener cannot be bound, the socket path holds something that is not a socket,
    /// or the token cannot be read or written.
    pub fn start(
        config: &ApiConfig,
        run_directory: &Path,
        make_state: impl FnOnce(Vec<String>) -> ApiState,
    ) -> io::Result<ControlServer> {
        let mut server = ControlServer {
            handles: Vec::new(),
            socket: None,
            generated_token: None,
            transports: Vec::new(),
        };
        let mut listeners = Vec::new();
        if config.socket {
            let path = run_directory.join(SOCKET);
            let listener = bind_socket(&path)?;
            server.socket = Some(path.clone());
            server.transports.push(format!("unix:{}", path.display()));
            listeners.push((Listener::Unix(listener), None));
        }
        if let Some(listen) = &config.listen {
            let token = match &config.token_file {
                Some(file) => read_token(file)?,
                None => {
                    let file = run_directory.join(TOKEN);
                    let token = new_token()?;
                    write_private(&file, &token)?;
                    server.generated_token = Some(file);
                    token
                }
            };
            let listener = std::net::TcpListener::bind(listen.as_str())?;
            server
                .transports
                .push(format!("tcp:{}", listener.local_addr()?));
            listeners.push((Listener::Tcp(listener), Some(token)));
        }
        let state = make_state(server.transports.clone());
        for (listener, token) in listeners {
            let policy = Policy {
                token,
                read_only: config.read_only,
            };
            server.handles.push(serve(state.clone(), policy, listener)?);
        }
        Ok(server)
    }

    /// Stops accepting, lets requests in flight finish, removes the socket and a generated
    /// token file.
    pub async fn stop(self) {
        for handle in &self.handles {
            handle.stop(true).await;
        }
        if let Some(path) = &self.socket {
            let _ = std::fs::remove_file(path);
        }
        if let Some(path) = &self.generated_token {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A bound listener of either kind.
enum Listener {
    Unix(std::os::unix::net::UnixListener),
    Tcp(std::net::TcpListener),
}

/// One HTTP server with one worker thread, its own signal handling off (`hsu run` handles
/// signals), on `listener`; spawned on the current actix system.
fn serve(state: ApiState, policy: Policy, listener: Listener) -> io::Result<ServerHandle> {
    let policy = web::Data::new(policy);
    let http = HttpServer::new(move || {
        App::new()
            .app_data(policy.clone())
            .app_data(web::Data::new(state.clone()))
            .wrap(from_fn(guard))
            .route("/metrics", web::get().to(super::metrics_text))
            .service(scope(state.clone()))
            .default_service(web::to(|| async {
                ApiError::new(
                    actix_web::http::StatusCode::NOT_FOUND,
                    "not_found",
                    "no such endpoint (the API is under /v1)",
                )
                .error_response()
            }))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1);
    let http = match listener {
        Listener::Unix(l) => http.listen_uds(l)?,
        Listener::Tcp(l) => http.listen(l)?,
    };
    let server = http.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Ok(handle)
}

/// Binds a fresh Unix socket at `path` with mode 0600, replacing a stale socket (the caller
/// holds the run directory's lock, so no live master owns it). Anything else at `path` is
/// left alone and refused.
fn bind_socket(path: &Path) -> io::Result<std::os::unix::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "`{}` exists and is not a socket; refusing to replace it",
                    path.display()
                ),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    // Connecting needs write permission on the socket: with 0600 only this user can. (Bound
    // under the usual umask it is at most 0755 before this line, which already lets no one
    // else connect.)
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// A new random token: 32 bytes from the OS, as hex.
fn new_token() -> io::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| io::Error::other(format!("no randomness: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The token in `file` (trimmed); an empty file is an error, never an empty token.
fn read_token(file: &Path) -> io::Result<String> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot read the API token file `{}`: {e}", file.display()),
        )
    })?;
    let token = text.trim().to_string();
    if token.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the API token file `{}` is empty", file.display()),
        ));
    }
    Ok(token)
}

/// Writes `text` to a new file only this user can read.
fn write_private(path: &Path, text: &str) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(file, "{text}")
}

/// One master per run directory: an exclusive lock on `<run_directory>/hsu.lock`, held for the
/// master's life, with its PID in the file. A second `hsu run` with the same run directory is
/// refused, naming the first one's PID (it would otherwise overwrite its pid files and socket).
#[derive(Debug)]
pub struct RunLock {
    file: std::fs::File,
    path: PathBuf,
    /// The run directory, when this master created it: removed at the end if it is empty
    /// then, so a stopped master leaves nothing behind where nothing was before.
    created: Option<PathBuf>,
}

impl RunLock {
    /// Takes the lock.
    ///
    /// # Errors
    /// `WouldBlock` naming the PID of the master that holds it, or the file error.
    pub fn acquire(run_directory: &Path) -> io::Result<RunLock> {
        use std::io::{Read as _, Seek as _, Write as _};
        use std::os::unix::fs::MetadataExt;
        let created = (!run_directory.exists()).then(|| run_directory.to_path_buf());
        std::fs::create_dir_all(run_directory)?;
        let path = run_directory.join(LOCK);
        let mut tries = 0;
        loop {
            let mut file = match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
            {
                Ok(file) => file,
                // A master that is exiting removed the (empty) directory it had created
                // between our `create_dir_all` and this open: make it again.
                Err(e) if e.kind() == io::ErrorKind::NotFound && tries < 3 => {
                    tries += 1;
                    std::fs::create_dir_all(run_directory)?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    let mut text = String::new();
                    let _ = file.read_to_string(&mut text);
                    let pid = text.trim();
                    return Err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        format!(
                            "another hsu master (PID {}) runs with run directory `{}`; stop it first or give this config another `master.run_directory`",
                            if pid.is_empty() { "unknown" } else { pid },
                            run_directory.display()
                        ),
                    ));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            }
            // The previous holder removes the file when it exits: if it did so between our
            // open and our lock, we hold a lock on a file nobody else will open. Try again.
            let same = match (file.metadata(), std::fs::metadata(&path)) {
                (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
                _ => false,
            };
            if !same {
                continue;
            }
            file.set_len(0)?;
            file.rewind()?;
            writeln!(file, "{}", std::process::id())?;
            return Ok(RunLock {
                file,
                path,
                created,
            });
        }
    }
}

impl RunLock {
    /// Removes the lock file (while still locked, so the next master creates a fresh one),
    /// unlocks, and removes the run directory if this master created it and it is empty now
    /// (it is left when anything is still in it). What dropping the lock does, for an exit
    /// that runs no destructor.
    pub fn release(&self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
        if let Some(dir) = &self.created {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        self.release();
    }
}
