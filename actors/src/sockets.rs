//! Master-held listening sockets (`sockets:` of a worker). The master binds them once and keeps
//! them for the worker's lifetime: every instance of the worker — each restart, a `start_first`
//! successor running beside its predecessor, the new form after a move between deployments —
//! gets the same listening socket, so the kernel's accept queue never closes and no connection
//! is refused while the worker is replaced.
//!
//! A socket that cannot be bound when the worker is added (the port is busy) is bound again at
//! each start, and the start fails with why until it can be. Sockets handed to `hsu` itself by
//! systemd (`LISTEN_FDS`, see [`adopt_inherited`]) are used instead of binding, matched by
//! `FileDescriptorName=` `<worker>.<socket>` (or the bare socket name).

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::config::{ListenAddress, SocketSpec};
use crate::WorkerId;

/// One bound listening socket.
#[derive(Debug)]
pub struct HeldSocket {
    /// As configured.
    pub spec: SocketSpec,
    /// Where it listens in fact (port 0 resolved).
    pub local: ListenAddress,
    fd: OwnedFd,
    /// A Unix socket file this master created (removed when the socket goes).
    created: Option<PathBuf>,
    /// It came from systemd.
    pub inherited: bool,
}

impl HeldSocket {
    /// The descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A new descriptor for the same socket (for a module, which owns what it gets).
    ///
    /// # Errors
    /// When the descriptor cannot be duplicated (out of descriptors).
    pub fn duplicate(&self) -> io::Result<OwnedFd> {
        self.fd.try_clone()
    }
}

impl Drop for HeldSocket {
    fn drop(&mut self) {
        if let Some(path) = &self.created {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Why a socket could not be had.
#[derive(Debug, thiserror::Error)]
#[error("socket `{name}` ({listen}): cannot {what}: {source}")]
pub struct SocketError {
    /// The socket's name.
    pub name: String,
    /// Its address.
    pub listen: String,
    /// What failed (`bind`, `listen`, …).
    pub what: &'static str,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

impl SocketError {
    /// As the worker's error (its start fails with it).
    pub fn for_worker(self, id: &WorkerId) -> crate::error::WorkerError {
        crate::error::WorkerError::Io {
            id: id.clone(),
            what: format!("{} socket `{}` ({})", self.what, self.name, self.listen),
            source: self.source,
        }
    }
}

/// A worker's sockets: bound at add, kept across its instances, dropped with the worker.
#[derive(Debug)]
pub struct WorkerSockets {
    id: WorkerId,
    specs: Vec<SocketSpec>,
    held: Mutex<Vec<Option<Arc<HeldSocket>>>>,
}

impl WorkerSockets {
    /// The sockets of `id`, none bound yet. `keep` (a worker's former sockets, on a replace)
    /// hands over each socket whose spec is unchanged, so it is never closed in between.
    pub fn new(id: &WorkerId, specs: &[SocketSpec], keep: Option<&WorkerSockets>) -> Arc<Self> {
        let kept: Vec<Option<Arc<HeldSocket>>> = specs
            .iter()
            .map(|spec| {
                keep.and_then(|old| {
                    old.held
                        .lock()
                        .ok()
                        .and_then(|held| held.iter().flatten().find(|h| h.spec == *spec).cloned())
                })
            })
            .collect();
        Arc::new(Self {
            id: id.clone(),
            specs: specs.to_vec(),
            held: Mutex::new(kept),
        })
    }

    /// None configured.
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// Every socket, binding those not bound yet, in the order configured.
    ///
    /// # Errors
    /// The first socket that cannot be bound (those bound stay bound).
    pub fn ensure(&self) -> Result<Vec<Arc<HeldSocket>>, SocketError> {
        if self.specs.is_empty() {
            return Ok(Vec::new());
        }
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        for (slot, spec) in held.iter_mut().zip(&self.specs) {
            if slot.is_none() {
                let socket = bind(&self.id, spec)?;
                tracing::info!(worker = %self.id, socket = %spec.name, listen = %socket.local, inherited = socket.inherited, "listening");
                *slot = Some(Arc::new(socket));
            }
        }
        Ok(held.iter().flatten().cloned().collect())
    }

    /// `(name, address)` of each socket bound, for diagnostics.
    pub fn bound(&self) -> Vec<(String, String)> {
        self.held
            .lock()
            .map(|h| {
                h.iter()
                    .flatten()
                    .map(|s| (s.spec.name.clone(), s.local.to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn bind(id: &WorkerId, spec: &SocketSpec) -> Result<HeldSocket, SocketError> {
    let fail = |what, source| SocketError {
        name: spec.name.clone(),
        listen: spec.listen.to_string(),
        what,
        source,
    };
    if let Some(fd) = take_inherited(id, &spec.name) {
        let socket = socket2::Socket::from(fd);
        let local = local_address(&socket).map_err(|e| fail("use the socket systemd passed", e))?;
        if !same_address(&local, &spec.listen) {
            tracing::warn!(worker = %id, socket = %spec.name, passed = %local, configured = %spec.listen, "systemd passed a socket on another address than configured; using it");
        }
        socket
            .set_nonblocking(spec.nonblocking)
            .map_err(|e| fail("set its mode", e))?;
        return Ok(HeldSocket {
            spec: spec.clone(),
            local,
            fd: socket.into(),
            created: None,
            inherited: true,
        });
    }
    use socket2::{Domain, SockAddr, Socket, Type};
    let (socket, created) = match &spec.listen {
        ListenAddress::Tcp(addr) => {
            let socket = Socket::new(Domain::for_address(*addr), Type::STREAM, None)
                .map_err(|e| fail("create", e))?;
            socket
                .set_reuse_address(true)
                .map_err(|e| fail("set SO_REUSEADDR", e))?;
            if addr.is_ipv6() {
                let _ = socket.set_only_v6(true);
            }
            socket
                .bind(&SockAddr::from(*addr))
                .map_err(|e| fail("bind", e))?;
            (socket, None)
        }
        ListenAddress::Unix(path) => {
            remove_stale(path).map_err(|e| fail("bind", e))?;
            let socket =
                Socket::new(Domain::UNIX, Type::STREAM, None).map_err(|e| fail("create", e))?;
            let addr = SockAddr::unix(path).map_err(|e| fail("bind", e))?;
            socket.bind(&addr).map_err(|e| fail("bind", e))?;
            (socket, Some(path.clone()))
        }
    };
    let backlog = i32::try_from(spec.backlog).unwrap_or(i32::MAX);
    socket.listen(backlog).map_err(|e| fail("listen", e))?;
    socket
        .set_nonblocking(spec.nonblocking)
        .map_err(|e| fail("set its mode", e))?;
    let local = local_address(&socket).map_err(|e| fail("read its address", e))?;
    Ok(HeldSocket {
        spec: spec.clone(),
        local,
        fd: socket.into(),
        created,
        inherited: false,
    })
}

/// A socket file left by a process that is gone (nothing accepts on it) is removed; anything
/// else at the path is an error, never deleted.
fn remove_stale(path: &std::path::Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket (not removed)",
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another program listens there",
        )),
        Err(_) => std::fs::remove_file(path),
    }
}

fn local_address(socket: &socket2::Socket) -> io::Result<ListenAddress> {
    let addr = socket.local_addr()?;
    if let Some(a) = addr.as_socket() {
        return Ok(ListenAddress::Tcp(a));
    }
    if let Some(p) = addr.as_pathname() {
        return Ok(ListenAddress::Unix(p.to_path_buf()));
    }
    Err(io::Error::other("neither a TCP nor a named Unix socket"))
}

fn same_address(a: &ListenAddress, b: &ListenAddress) -> bool {
    match (a, b) {
        (ListenAddress::Tcp(a), ListenAddress::Tcp(b)) => {
            a.ip() == b.ip() && (b.port() == 0 || a.port() == b.port())
        }
        _ => a == b,
    }
}

/// Sockets systemd passed to this process, by `FileDescriptorName=`, not yet claimed.
static INHERITED: Mutex<Option<HashMap<String, OwnedFd>>> = Mutex::new(None);

/// Takes the sockets systemd passed to this process (`LISTEN_PID` = this process,
/// `LISTEN_FDS`, `LISTEN_FDNAMES`), marks them close-on-exec, and keeps them for the workers
/// whose `sockets:` match their names. Call it first thing in `main`, before anything opens a
/// descriptor. Returns the names taken.
pub fn adopt_inherited() -> Vec<String> {
    let Ok(fds) = sd_notify::listen_fds_with_names(false) else {
        return Vec::new();
    };
    let mut map = HashMap::new();
    for (fd, name) in fds {
        // The descriptors are this process's from here on (the protocol hands them over).
        if let Some(owned) = crate::process::sys::adopt_fd(fd) {
            map.insert(name, owned);
        }
    }
    let names: Vec<String> = map.keys().cloned().collect();
    if let Ok(mut inherited) = INHERITED.lock() {
        *inherited = Some(map);
    }
    names
}

/// Names passed by systemd that no worker has claimed (for a warning once workers are added).
pub fn unclaimed_inherited() -> Vec<String> {
    INHERITED
        .lock()
        .ok()
        .and_then(|i| i.as_ref().map(|m| m.keys().cloned().collect()))
        .unwrap_or_default()
}

/// Closes the sockets passed by systemd that no worker claimed.
pub fn close_unclaimed() {
    if let Ok(mut inherited) = INHERITED.lock() {
        if let Some(map) = inherited.as_mut() {
            map.clear();
        }
    }
}

fn take_inherited(id: &WorkerId, name: &str) -> Option<OwnedFd> {
    let mut inherited = INHERITED.lock().ok()?;
    let map = inherited.as_mut()?;
    map.remove(&format!("{id}.{name}"))
        .or_else(|| map.remove(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::sockets::DEFAULT_BACKLOG;

    /// A directory of the test's own, removed on drop.
    struct Dir(PathBuf);
    impl Dir {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("hsu-sockets-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
        fn path(&self) -> &std::path::Path {
            &self.0
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn spec(name: &str, listen: &str) -> SocketSpec {
        SocketSpec {
            name: name.into(),
            listen: ListenAddress::parse(listen).unwrap(),
            nonblocking: false,
            backlog: DEFAULT_BACKLOG,
        }
    }

    #[test]
    fn sockets_are_bound_once_kept_across_a_replace_and_files_removed_at_the_end() {
        let dir = Dir::new("kept");
        let path = dir.path().join("a.sock");
        let id = WorkerId::new("w").unwrap();
        let specs = [
            spec("http", "127.0.0.1:0"),
            spec("admin", &format!("unix:{}", path.display())),
        ];
        let first = WorkerSockets::new(&id, &specs, None);
        let held = first.ensure().unwrap();
        let ListenAddress::Tcp(addr) = held[0].local else {
            panic!("{:?}", held[0].local)
        };
        assert_ne!(addr.port(), 0);
        assert!(path.exists());
        // A connection made now waits in the queue, whoever accepts it later.
        let mut waiting = std::net::TcpStream::connect(addr).unwrap();
        // Same specs: the very same sockets.
        let second = WorkerSockets::new(&id, &specs, Some(&first));
        drop(held);
        drop(first);
        let again = second.ensure().unwrap();
        assert_eq!(again[0].local, ListenAddress::Tcp(addr));
        let listener = std::net::TcpListener::from(again[0].duplicate().unwrap());
        let (mut accepted, _) = listener.accept().unwrap();
        use std::io::{Read, Write};
        waiting.write_all(b"x").unwrap();
        let mut b = [0u8];
        accepted.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"x");
        drop((again, second, listener));
        assert!(!path.exists(), "the socket file goes with the socket");
    }

    #[test]
    fn a_live_socket_file_or_another_file_is_never_taken_over() {
        let dir = Dir::new("taken");
        let id = WorkerId::new("w").unwrap();
        let live = dir.path().join("live.sock");
        let _other = std::os::unix::net::UnixListener::bind(&live).unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "keep me").unwrap();
        for (path, why) in [(&live, "another program listens"), (&plain, "not a socket")] {
            let s =
                WorkerSockets::new(&id, &[spec("s", &format!("unix:{}", path.display()))], None);
            let e = s.ensure().unwrap_err().to_string();
            assert!(e.contains(why) && e.contains("socket `s`"), "{e}");
        }
        assert_eq!(std::fs::read_to_string(&plain).unwrap(), "keep me");
        // A stale one (nobody listens) is replaced.
        let stale = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        let s = WorkerSockets::new(
            &id,
            &[spec("s", &format!("unix:{}", stale.display()))],
            None,
        );
        s.ensure().unwrap();
        std::os::unix::net::UnixStream::connect(&stale).unwrap();
    }
}
