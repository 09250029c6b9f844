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
