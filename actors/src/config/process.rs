//! Sections that only process workers have: `stop:`, `attach:`, `integrated:`, `limits:`, and
//! the master's `logs:`; plus the value types they use (signals, byte sizes).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use super::duration;

/// `stop:` of a process worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct StopConfig {
    /// Sent to the whole process group first (default `TERM`).
    pub signal: Signal,
    /// Grace period before `KILL` goes to the group (default `10s`).
    #[serde(with = "duration")]
    #[schemars(with = "super::schema::DurationText")]
    pub timeout: Duration,
}

impl Default for StopConfig {
    fn default() -> Self {
        Self {
            signal: Signal::Term,
            timeout: Duration::from_secs(10),
        }
    }
}

/// A signal, written by name (`TERM`, `SIGTERM`, `term`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    /// SIGTERM.
    Term,
    /// SIGINT.
    Int,
    /// SIGQUIT.
    Quit,
    /// SIGHUP.
    Hup,
    /// SIGKILL.
    Kill,
    /// SIGUSR1.
    Usr1,
    /// SIGUSR2.
    Usr2,
}

impl Signal {
    /// Parses `TERM`, `SIGTERM` or `term`.
    ///
    /// # Errors
    /// [`ValueError::UnknownSignal`], which lists the names accepted.
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        let upper = text.trim().to_ascii_uppercase();
        Ok(match upper.strip_prefix("SIG").unwrap_or(&upper) {
            "TERM" => Self::Term,
            "INT" => Self::Int,
            "QUIT" => Self::Quit,
            "HUP" => Self::Hup,
            "KILL" => Self::Kill,
            "USR1" => Self::Usr1,
            "USR2" => Self::Usr2,
            _ => {
                return Err(ValueError::UnknownSignal {
                    text: text.to_string(),
                })
            }
        })
    }

    /// The name without `SIG`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Term => "TERM",
            Self::Int => "INT",
            Self::Quit => "QUIT",
            Self::Hup => "HUP",
            Self::Kill => "KILL",
            Self::Usr1 => "USR1",
            Self::Usr2 => "USR2",
        }
    }

    /// The Linux signal number.
    pub fn number(self) -> i32 {
        match self {
            Self::Hup => 1,
            Self::Int => 2,
            Self::Quit => 3,
            Self::Kill => 9,
            Self::Usr1 => 10,
            Self::Usr2 => 12,
            Self::Term => 15,
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Signal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Signal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Signal::parse(&text).map_err(de::Error::custom)
    }
}

/// `attach:` of an unmanaged process worker: which running process to watch.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AttachConfig {
    /// The process id (exactly one of `pid` and `pid_file`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// A file holding the process id; read at every start. Refused if it is a symlink or
    /// world-writable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid_file: Option<PathBuf>,
    /// Whether `StopWorker` may signal the process (default false: stop only detaches).
    pub allow_signals: bool,
}

/// `integrated:` of an integrated process worker: how the HSU control protocol is reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct IntegratedConfig {
    /// Appended to the args with the port (`--port 40123`); empty to pass none (default `--port`).
    pub port_arg: String,
    /// Environment variable carrying the port (default `HSU_PORT`; empty for none).
    pub port_env: String,
    /// Time for the first successful Ping after spawn (default `30s`).
    #[serde(with = "duration")]
    #[schemars(with = "super::schema::DurationText")]
    pub startup_timeout: Duration,
    /// Deadline of each control call (default `1s`).
    #[serde(with = "duration")]
    #[schemars(with = "super::schema::DurationText")]
    pub call_timeout: Duration,
}

impl Default for IntegratedConfig {
    fn default() -> Self {
        Self {
            port_arg: "--port".into(),
            port_env: "HSU_PORT".into(),
            startup_timeout: Duration::from_secs(30),
            call_timeout: Duration::from_secs(1),
        }
    }
}

/// `limits:` of a process worker. Modules cannot have it: in-process code cannot be limited.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest resident memory (`"512MiB"`, `"1GB"`, or bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_max: Option<ByteSize>,
    /// Largest CPU use in percent of one core (e.g. `150.0` = one and a half cores).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_percent_max: Option<f64>,
    /// What to do about a violation: `log` (default), `restart` or `stop`.
    pub on_violation: OnViolation,
    /// Samples in a row over a limit before acting (default 3).
    pub grace: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            memory_max: None,
            cpu_percent_max: None,
            on_violation: OnViolation::Log,
            grace: 3,
        }
    }
}

/// The action on a limit violation.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum OnViolation {
    /// Only log it.
    #[default]
    Log,
    /// Fail the worker; the restart policy restarts it.
    Restart,
    /// Stop the worker on purpose (no restart).
    Stop,
}

/// The master's `logs:`: where process output goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LogsConfig {
    /// Directory of the per-worker files `<id>.log`, `<id>.log.1`, … (default `hsu-logs`).
    pub directory: PathBuf,
    /// Size at which a file is rotated (default `10MiB`).
    pub max_size: ByteSize,
    /// Rotated files kept besides the current one (default 5).
    pub max_files: u32,
    /// Also emit every line as a `tracing` event with the worker id (default true).
    pub mirror: bool,
}

impl Default for LogsConfig {
    fn default() -> Self {
        Self {
            directory: PathBuf::from("hsu-logs"),
            max_size: ByteSize(10 * 1024 * 1024),
            max_files: 5,
            mirror: true,
        }
    }
}

/// Why a size or a signal name in the config does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// Not a signal hsu sends.
    #[error("unknown signal {text:?}; use TERM, INT, QUIT, HUP, KILL, USR1 or USR2")]
    UnknownSignal {
        /// The text.
        text: String,
    },
    /// No number where a size should start.
    #[error("invalid size {text:?}: expected e.g. \"512MiB\"")]
    BadSize {
        /// The text.
        text: String,
    },
    /// A unit hsu does not know.
    #[error("invalid size {text:?}: unknown unit {unit:?} (use B, KB, KiB, MB, MiB, GB, GiB)")]
    UnknownSizeUnit {
        /// The text.
        text: String,
        /// The unit.
        unit: String,
    },
}

/// A number of bytes, written `"10MiB"`, `"512KiB"`, `"1GB"` or as a plain integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `"10MiB"`, `"10MB"`, `"1.5GiB"`, `"4096"`.
    ///
    /// # Errors
    /// [`ValueError`] saying what is wrong with `text`.
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        let s = text.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let number: f64 = number.parse().map_err(|_| ValueError::BadSize {
            text: text.to_string(),
        })?;
        let factor: f64 = match unit.trim() {
            "" | "B" => 1.0,
            "K" | "KB" => 1e3,
            "KiB" => 1024.0,
            "M" | "MB" => 1e6,
            "MiB" => 1024.0 * 1024.0,
            "G" | "GB" => 1e9,
            "GiB" => 1024.0 * 1024.0 * 1024.0,
            other => {
                return Err(ValueError::UnknownSizeUnit {
                    text: text.to_string(),
                    unit: other.to_string(),
                })
            }
        };
        Ok(Self((number * factor) as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b >= 1 << 30 && b.is_multiple_of(1 << 30) {
            write!(f, "{}GiB", b >> 30)
        } else if b >= 1 << 20 && b.is_multiple_of(1 << 20) {
            write!(f, "{}MiB", b >> 20)
        } else if b >= 1 << 10 && b.is_multiple_of(1 << 10) {
            write!(f, "{}KiB", b >> 10)
        } else {
            write!(f, "{b}B")
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as \"512MiB\" or a number of bytes")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("10MiB").unwrap().0, 10 << 20);
        assert_eq!(ByteSize::parse("1GB").unwrap().0, 1_000_000_000);
        assert_eq!(ByteSize::parse("4096").unwrap().0, 4096);
        assert!(ByteSize::parse("10 parsecs").is_err());
        assert_eq!(ByteSize(10 << 20).to_string(), "10MiB");
    }

    #[test]
    fn signals() {
        assert_eq!(Signal::parse("SIGTERM").unwrap(), Signal::Term);
        assert_eq!(Signal::parse("hup").unwrap().number(), 1);
        assert!(Signal::parse("SIGFOO").is_err());
    }
}
