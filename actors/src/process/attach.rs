//! Attaching to a process the master did not start (unmanaged workers), without ever mistaking
//! a newcomer that reuses its PID for it.
//!
//! Identity is the PID plus the start time from `/proc/PID/stat`, checked at attach and before
//! every signal; a pidfd (Linux 5.3+) pins the process itself, so signals sent through it can
//! never reach another process.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

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

/// Finds and pins the process named by `config`.
///
/// # Errors
/// A sentence naming the PID or file and what is wrong: PID 0 or 1, no such process, a pid
/// file that is missing, a symlink, world-writable, or not a number.
pub fn attach(config: &AttachConfig) -> Result<Attached, String> {
    let pid = match (config.pid, &config.pid_file) {
        (Some(pid), _) => pid,
        (None, Some(path)) => read_pid_file(path)?,
        (None, None) => return Err("no `pid` or `pid_file` to attach to".into()),
    };
    let pid = i32::try_from(pid).map_err(|_| format!("PID {pid} is out of range"))?;
    if pid <= 1 {
        return Err(format!(
            "refusing to attach to PID {pid}: it is not a service"
        ));
    }
    if pid == std::process::id() as i32 {
        return Err(format!(
            "refusing to attach to PID {pid}: that is the master itself"
        ));
    }
    let identity =
        Identity::of(pid).map_err(|e| format!("cannot attach to PID {pid}: {}", describe(&e)))?;
    let pidfd = match PidFd::open(pid) {
        Ok(fd) => Some(fd),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
            return Err(format!("cannot attach to PID {pid}: no such process"))
        }
        Err(_) => None,
    };
    // The process could have been replaced between reading its identity and opening the
    // pidfd: check again now that it is pinned.
    if !identity.is_current() {
        return Err(format!(
            "cannot attach to PID {pid}: it exited while attaching"
        ));
    }
    Ok(Attached { identity, pidfd })
}

fn describe(e: &io::Error) -> String {
    if e.kind() == io::ErrorKind::NotFound {
        "no such process".into()
    } else {
        e.to_string()
    }
}

/// Reads a PID file, refusing files that another user could have planted or changed.
fn read_pid_file(path: &Path) -> Result<u32, String> {
    let shown = path.display();
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| format!("cannot read pid file `{shown}`: {e}"))?;
    if meta.file_type().is_symlink() {
        return Err(format!("refusing pid file `{shown}`: it is a symlink"));
    }
    if !meta.is_file() {
        return Err(format!("refusing pid file `{shown}`: not a regular file"));
    }
    if meta.permissions().mode() & 0o002 != 0 {
        return Err(format!("refusing pid file `{shown}`: it is world-writable"));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read pid file `{shown}`: {e}"))?;
    text.trim()
        .parse::<u32>()
        .map_err(|_| format!("pid file `{shown}` does not hold a PID: {:?}", text.trim()))
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
        .contains("no such process"));
        let me = std::process::id();
        assert!(attach(&AttachConfig {
            pid: Some(me),
            ..Default::default()
        })
        .unwrap_err()
        .contains("master itself"));
    }
}
