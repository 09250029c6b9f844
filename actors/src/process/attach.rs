//! Attaching to a process the master did not start (unmanaged workers), without ever mistaking
//! a newcomer that reuses its PID for it.
//!
//! Identity is the PID plus the start time from `/proc/PID/stat`, checked at attach and before
//! every signal; a pidfd (Linux 5.3+) pins the process itself, so signals sent through it can
//! never reach another process.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::sys::{self, PidFd};
use crate::config::AttachConfig;

/// A process as it was when first seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// Its PID.
    pub pid: i32,
    /// Its start time in clock ticks after boot.
    pub start_time: u64,
}

impl Identity {
    /// The identity of the live process `pid`.
    ///
    /// # Errors
    /// When no such process exists, or it is a zombie.
    pub fn of(pid: i32) -> io::Result<Self> {
        let stat = sys::read_stat(pid)?;
        if stat.state == 'Z' || stat.state == 'X' {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("PID {pid} has exited"),
            ));
        }
        Ok(Self {
            pid,
            start_time: stat.start_time,
        })
    }

    /// Whether `pid` still names the same, live process.
    pub fn is_current(&self) -> bool {
        Identity::of(self.pid).is_ok_and(|now| now == *self)
    }
}

/// An attached process.
#[derive(Debug)]
pub struct Attached {
    /// Who it is.
    pub identity: Identity,
    /// A handle on exactly this process, where the kernel has pidfds.
    pub pidfd: Option<PidFd>,
}

impl Attached {
    /// Signals the process if, and only if, it is still the one attached to. `Ok(false)` when
    /// it has exited or been replaced (nothing is sent then).
    ///
    /// # Errors
    /// The OS error of the signal (e.g. EPERM).
    pub fn signal(&self, signal: i32) -> io::Result<bool> {
        match &self.pidfd {
            Some(fd) => fd.send_signal(signal),
            None if self.identity.is_current() => sys::signal_process(self.identity.pid, signal),
            None => Ok(false),
        }
    }

    /// Whether the attached process is alive and still the same one.
    pub fn is_alive(&self) -> bool {
        let exited = self.pidfd.as_ref().is_some_and(|fd| fd.has_exited());
        !exited && self.identity.is_current()
    }
}

/// Why an unmanaged worker cannot attach to its process. Each names the PID or file.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// Neither `pid` nor `pid_file` is set.
    #[error("no `pid` or `pid_file` to attach to")]
    Nothing,
    /// The PID does not fit a `pid_t`.
    #[error("PID {0} is out of range")]
    OutOfRange(u32),
    /// PID 0 or 1.
    #[error("refusing to attach to PID {0}: it is not a service")]
    NotAService(i32),
    /// The master's own PID.
    #[error("refusing to attach to PID {0}: that is the master itself")]
    Itself(i32),
    /// No process has the PID.
    #[error("cannot attach to PID {0}: no such process")]
    NoSuchProcess(i32),
    /// The process's identity cannot be read.
    #[error("cannot attach to PID {pid}: {error}")]
    Unreadable {
        /// The PID.
        pid: i32,
        /// The `/proc` error, part of this message (not a separate cause).
        error: io::Error,
    },
    /// It exited (or was replaced) while being attached.
    #[error("cannot attach to PID {0}: it exited while attaching")]
    Exited(i32),
    /// The pid file cannot be read.
    #[error("cannot read pid file `{}`: {error}", path.display())]
    PidFileUnreadable {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
    /// The pid file could have been planted or changed by another user, or is not a file.
    #[error("refusing pid file `{}`: {why}", path.display())]
    PidFileRefused {
        /// The file.
        path: PathBuf,
        /// `it is a symlink`, `not a regular file`, `it is world-writable`.
        why: &'static str,
    },
    /// The pid file does not hold a number.
    #[error("pid file `{}` does not hold a PID: {text:?}", path.display())]
    PidFileGarbage {
        /// The file.
        path: PathBuf,
        /// What it holds (trimmed).
        text: String,
    },
}

/// Finds and pins the process named by `config`.
///
/// # Errors
/// [`AttachError`]: PID 0 or 1, no such process, a pid file that is missing, a symlink,
/// world-writable, or not a number.
pub fn attach(config: &AttachConfig) -> Result<Attached, AttachError> {
    let pid = match (config.pid, &config.pid_file) {
        (Some(pid), _) => pid,
        (None, Some(path)) => read_pid_file(path)?,
        (None, None) => return Err(AttachError::Nothing),
    };
    let pid = i32::try_from(pid).map_err(|_| AttachError::OutOfRange(pid))?;
    if pid <= 1 {
        return Err(AttachError::NotAService(pid));
    }
    if pid == std::process::id() as i32 {
        return Err(AttachError::Itself(pid));
    }
    let identity = Identity::of(pid).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            AttachError::NoSuchProcess(pid)
        } else {
            AttachError::Unreadable { pid, error: e }
        }
    })?;
    let pidfd = match PidFd::open(pid) {
        Ok(fd) => Some(fd),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
            return Err(AttachError::NoSuchProcess(pid))
        }
        Err(_) => None,
    };
    // The process could have been replaced between reading its identity and opening the
    // pidfd: check again now that it is pinned.
    if !identity.is_current() {
        return Err(AttachError::Exited(pid));
    }
    Ok(Attached { identity, pidfd })
}

/// Reads a PID file, refusing files that another user could have planted or changed.
fn read_pid_file(path: &Path) -> Result<u32, AttachError> {
    let unreadable = |error| AttachError::PidFileUnreadable {
        path: path.to_path_buf(),
        error,
    };
    let refused = |why| AttachError::PidFileRefused {
        path: path.to_path_buf(),
        why,
    };
    let meta = std::fs::symlink_metadata(path).map_err(unreadable)?;
    if meta.file_type().is_symlink() {
        return Err(refused("it is a symlink"));
    }
    if !meta.is_file() {
        return Err(refused("not a regular file"));
    }
    if meta.permissions().mode() & 0o002 != 0 {
        return Err(refused("it is world-writable"));
    }
    let text = std::fs::read_to_string(path).map_err(unreadable)?;
    text.trim()
        .parse::<u32>()
        .map_err(|_| AttachError::PidFileGarbage {
            path: path.to_path_buf(),
            text: text.trim().to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_process_is_never_signalled() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let attached = attach(&AttachConfig {
            pid: Some(child.id()),
            ..Default::default()
        })
        .unwrap();
        assert!(attached.is_alive());
        // The same PID with another start time: what a reused PID looks like.
        let impostor = Attached {
            identity: Identity {
                pid,
                start_time: attached.identity.start_time + 1,
            },
            pidfd: None,
        };
        assert!(!impostor.is_alive());
        assert!(
            !impostor.signal(libc::SIGTERM).unwrap(),
            "nothing is sent to a newcomer"
        );
        assert!(attached.is_alive(), "the real process got no signal");
        assert!(attached.signal(libc::SIGKILL).unwrap());
        child.wait().unwrap();
        assert!(!attached.is_alive());
        assert!(!attached.signal(libc::SIGTERM).unwrap());
    }

    #[test]
    fn refuses_init_missing_and_self() {
        assert!(attach(&AttachConfig {
            pid: Some(1),
            ..Default::default()
        })
        .unwrap_err()
        .to_string()
        .contains("PID 1"));
        assert!(attach(&AttachConfig {
            pid: Some(0),
            ..Default::default()
        })
        .is_err());
        assert!(attach(&AttachConfig {
            pid: Some(i32::MAX as u32),
            ..Default::default()
        })
        .unwrap_err()
        .to_string()
        .contains("no such process"));
        let me = std::process::id();
        assert!(attach(&AttachConfig {
            pid: Some(me),
            ..Default::default()
        })
        .unwrap_err()
        .to_string()
        .contains("master itself"));
    }
}
