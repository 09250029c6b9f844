//! Static facts about a module, shown in diagnostics.

use serde::{Deserialize, Serialize};

/// What a module says about itself ([`crate::WorkerModule::info`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ModuleInfo {
    /// Short name, e.g. `echo`.
    pub name: String,
    /// The module's own version (semver).
    pub version: String,
    /// One line on what it does.
    pub description: String,
    /// Who maintains it.
    pub author: String,
    /// Addresses it serves, e.g. `http://127.0.0.1:8080` (filled in once known).
    pub endpoints: Vec<String>,
}

impl ModuleInfo {
    /// Name and version; the other fields empty.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            ..Self::default()
        }
    }

    /// Sets the description.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = text.into();
        self
    }

    /// Sets the author.
    pub fn author(mut self, text: impl Into<String>) -> Self {
        self.author = text.into();
        self
    }

    /// Adds an endpoint.
    pub fn endpoint(mut self, address: impl Into<String>) -> Self {
        self.endpoints.push(address.into());
        self
    }
}
