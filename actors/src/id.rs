//! `WorkerId`: a validated worker name.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Longest id accepted, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// A worker's id: 1–64 characters from `[A-Za-z0-9._-]`. Safe to use in file names (logs, PID
/// files) and URLs, which is why the rule is strict. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WorkerId(Arc<str>);

impl WorkerId {
    /// Checks `id` against the rule.
    ///
    /// # Errors
    /// A message saying which rule `id` breaks.
    pub fn new(id: &str) -> Result<Self, String> {
        if id.is_empty() {
            return Err("worker id is empty".into());
        }
        if id.len() > MAX_ID_LEN {
            return Err(format!(
                "worker id `{id}` is {} characters long; the limit is {MAX_ID_LEN}",
                id.len()
            ));
        }
        if let Some(bad) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(format!(
                "worker id `{id}` contains {bad:?}; use only letters, digits, `.`, `_` and `-`"
            ));
        }
        if id == "." || id == ".." {
            return Err(format!("worker id `{id}` is reserved"));
        }
        Ok(Self(Arc::from(id)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for WorkerId {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        Self::new(&value)
    }
}

impl From<WorkerId> for String {
    fn from(id: WorkerId) -> String {
        id.0.to_string()
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl std::borrow::Borrow<str> for WorkerId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_allowed_alphabet() {
        assert!(WorkerId::new("api-1.v2_b").is_ok());
        assert!(WorkerId::new(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn refuses_empty_long_and_odd_ids() {
        assert!(WorkerId::new("").unwrap_err().contains("empty"));
        assert!(WorkerId::new(&"a".repeat(65))
            .unwrap_err()
            .contains("limit is 64"));
        assert!(WorkerId::new("a b").unwrap_err().contains("' '"));
        assert!(WorkerId::new("a/b").is_err());
        assert!(WorkerId::new("..").is_err());
    }
}
