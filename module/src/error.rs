//! The error a module returns to the master.

/// Why a module call failed. The master wraps it with the worker id and the call
/// (`worker `api`: start failed: …`).
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// The `config:` section is wrong; the message names the field.
    #[error("invalid config: {0}")]
    Config(String),
    /// The module could not do what was asked.
    #[error("{0}")]
    Failed(String),
    /// An I/O error, for instance binding a port.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Any other error from a library the module uses.
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl ModuleError {
    /// Shorthand for [`ModuleError::Failed`].
    pub fn failed(message: impl Into<String>) -> Self {
        Self::Failed(message.into())
    }
}

/// The message of `error` followed by each of its sources: `a: b: c`. The one printer of error
/// chains, used by the master, the CLI and the plugin side alike; it relies on the rule that a
/// message never repeats its own `source` (each layer says what it was doing, the source says
/// why).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    use std::fmt::Write as _;
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let _ = write!(text, ": {s}");
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot start `api`")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_chain_says_each_layer_once_in_order() {
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "No such file or directory",
        ));
        assert_eq!(
            error_chain(&e),
            "cannot start `api`: No such file or directory"
        );
        // Transparent variants add no layer of their own.
        let io = ModuleError::from(std::io::Error::other("address in use"));
        assert_eq!(error_chain(&io), "address in use");
    }
}
