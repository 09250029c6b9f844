//! `sockets:` of a worker: listening sockets the master binds once and holds for the worker's
//! lifetime, across its restarts, upgrades and moves between deployments. A process receives
//! them by systemd's socket-activation protocol (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`,
//! descriptors from 3, in the order written); a module through its `ModuleContext`, by name.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One entry of `sockets:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SocketConfig {
    /// The socket's name: `LISTEN_FDNAMES` carries it to a process, a module asks for it by it.
    /// 1–255 characters from `[A-Za-z0-9._-]` (what systemd allows in a `FileDescriptorName=`).
    pub name: String,
    /// `127.0.0.1:8080`, `[::1]:8080`, or a Unix stream socket: `unix:/run/app.sock` (or a path
    /// with a `/`; relative to the config file's directory). Port 0 takes a free port, kept
    /// for the worker's lifetime.
    pub listen: String,
    /// Allow a TCP address that is not loopback (default `false`: refused).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_remote: bool,
    /// Hand the socket over in non-blocking mode (systemd's `NonBlocking=`; default `false`).
    /// The mode belongs to the socket, which every instance of the worker shares.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nonblocking: bool,
    /// The listen backlog (default 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u32>,
}

/// Where a socket listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListenAddress {
    /// TCP.
    Tcp(SocketAddr),
    /// A Unix stream socket at this path.
    Unix(PathBuf),
}

impl ListenAddress {
    /// Parses `listen:`.
    ///
    /// # Errors
    /// A message saying what is accepted.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("`unix:` needs a path, e.g. unix:/run/app.sock".into());
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        if text.contains('/') {
            return Ok(Self::Unix(PathBuf::from(text)));
        }
        text.parse::<SocketAddr>().map(Self::Tcp).map_err(|e| {
            format!("{text:?} is not an address with a port ({e}); write e.g. 127.0.0.1:8080, [::1]:8080 or unix:/run/app.sock")
        })
    }
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(a) => write!(f, "{a}"),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A validated `sockets:` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SocketSpec {
    /// Its name.
    pub name: String,
    /// Where it listens.
    pub listen: ListenAddress,
    /// Handed over non-blocking.
    pub nonblocking: bool,
    /// Listen backlog.
    pub backlog: u32,
}

/// The default listen backlog.
pub const DEFAULT_BACKLOG: u32 = 1024;

/// Checks a worker's `sockets:`: names usable and unique, addresses parsed, loopback unless
/// allowed. Returns the specs and the problems (`(field, message)`).
pub(super) fn check(sockets: &[SocketConfig]) -> (Vec<SocketSpec>, Vec<(String, String)>) {
    let mut specs: Vec<SocketSpec> = Vec::new();
    let mut issues = Vec::new();
    for (i, s) in sockets.iter().enumerate() {
        let field = |f: &str| format!("sockets[{i}].{f}");
        let name_ok = !s.name.is_empty()
            && s.name.len() <= 255
            && s.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !name_ok {
            issues.push((
                field("name"),
                format!(
                    "{:?} is not a socket name: 1–255 characters from [A-Za-z0-9._-]",
                    s.name
                ),
            ));
        } else if specs.iter().any(|o| o.name == s.name) {
            issues.push((
                field("name"),
                format!("`{}` names two sockets of this worker", s.name),
            ));
        }
        if s.backlog == Some(0) {
            issues.push((field("backlog"), "must be at least 1".into()));
        }
        let listen = match ListenAddress::parse(&s.listen) {
            Ok(l) => l,
            Err(e) => {
                issues.push((field("listen"), e));
                continue;
            }
        };
        if let ListenAddress::Tcp(addr) = &listen {
            if !addr.ip().is_loopback() && !s.allow_remote {
                issues.push((field("listen"), format!("{addr} is not a loopback address: the worker would be reachable from the network; set `allow_remote: true` on the socket to mean it")));
            }
        }
        if let Some(o) = specs
            .iter()
            .find(|o| o.listen == listen && !is_port_zero(&listen))
        {
            issues.push((
                field("listen"),
                format!("`{}` listens there already", o.name),
            ));
        }
        specs.push(SocketSpec {
            name: s.name.clone(),
            listen,
            nonblocking: s.nonblocking,
            backlog: s.backlog.unwrap_or(DEFAULT_BACKLOG),
        });
    }
    (specs, issues)
}

/// True for a TCP address with port 0 (each one binds a port of its own).
pub fn is_port_zero(listen: &ListenAddress) -> bool {
    matches!(listen, ListenAddress::Tcp(a) if a.port() == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(name: &str, listen: &str) -> SocketConfig {
        SocketConfig {
            name: name.into(),
            listen: listen.into(),
            allow_remote: false,
            nonblocking: false,
            backlog: None,
        }
    }

    #[test]
    fn addresses_names_and_loopback_are_checked() {
        let (specs, issues) = check(&[
            socket("http", "127.0.0.1:8080"),
            socket("admin", "unix:/tmp/a.sock"),
            socket("rel", "./run/b.sock"),
        ]);
        assert!(issues.is_empty(), "{issues:?}");
        assert_eq!(specs[1].listen, ListenAddress::Unix("/tmp/a.sock".into()));
        assert_eq!(specs[2].listen, ListenAddress::Unix("./run/b.sock".into()));
        assert_eq!(specs[0].backlog, DEFAULT_BACKLOG);

        let (_, issues) = check(&[
            socket("http", "0.0.0.0:8080"),
            socket("http", "127.0.0.1:80"),
            socket("bad name", "localhost:80"),
            socket("x", "127.0.0.1:80"),
        ]);
        let fields: Vec<&str> = issues.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "sockets[0].listen",
                "sockets[1].name",
                "sockets[2].name",
                "sockets[2].listen",
                "sockets[3].listen"
            ],
            "{issues:?}"
        );
        assert!(issues[0].1.contains("allow_remote"), "{}", issues[0].1);
        assert!(
            issues[4].1.contains("`http` listens there"),
            "{}",
            issues[4].1
        );
    }
}
