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

/// Why a text is not a valid [`WorkerId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The id is empty.
    #[error("worker id is empty")]
    Empty,
    /// Longer than [`MAX_ID_LEN`] bytes.
    #[error("worker id `{id}` is {len} characters long; the limit is {MAX_ID_LEN}")]
    TooLong {
        /// The id given.
        id: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A character outside `[A-Za-z0-9._-]`.
    #[error("worker id `{id}` contains {bad:?}; use only letters, digits, `.`, `_` and `-`")]
    BadCharacter {
        /// The id given.
        id: String,
        /// The first character not allowed.
        bad: char,
    },
    /// `.` or `..`.
    #[error("worker id `{id}` is reserved")]
    Reserved {
        /// The id given.
        id: String,
    },
}

impl WorkerId {
    /// Checks `id` against the rule.
    ///
    /// # Errors
    /// [`IdError`] saying which rule `id` breaks.
    pub fn new(id: &str) -> Result<Self, IdError> {
        if id.is_empty() {
            return Err(IdError::Empty);
        }
        if id.len() > MAX_ID_LEN {
            return Err(IdError::TooLong {
                id: id.to_string(),
                len: id.len(),
            });
        }
        if let Some(bad) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(IdError::BadCharacter {
                id: id.to_string(),
                bad,
            });
        }
        if id == "." || id == ".." {
            return Err(IdError::Reserved { id: id.to_string() });
        }
        Ok(Self(Arc::from(id)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for WorkerId {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, IdError> {
        Self::new(&value)
    }
}

impl TryFrom<&str> for WorkerId {
    type Error = IdError;
    fn try_from(value: &str) -> Result<Self, IdError> {
        Self::new(value)
    }
}

impl std::str::FromStr for WorkerId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::new(s)
    }
}

impl AsRef<str> for WorkerId {
    fn as_ref(&self) -> &str {
        &self.0
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
        assert!(WorkerId::new("").unwrap_err().to_string().contains("empty"));
        assert!(WorkerId::new(&"a".repeat(65))
            .unwrap_err()
            .to_string()
            .contains("limit is 64"));
        assert_eq!(
            WorkerId::new("a b").unwrap_err(),
            IdError::BadCharacter {
                id: "a b".into(),
                bad: ' '
            }
        );
        assert!(WorkerId::new("a b")
            .unwrap_err()
            .to_string()
            .contains("' '"));
        assert!(WorkerId::new("a/b").is_err());
        assert!(WorkerId::new("..").is_err());
    }
}
