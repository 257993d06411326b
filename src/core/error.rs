//! The core's one error type. Surfaces map it onto their own wire shapes;
//! its messages are safe to show (they never contain secrets).
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input that breaks a rule; `field` names what was wrong.
    #[error("invalid {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("not found")]
    NotFound,
    /// A uniqueness rule would be broken (e.g. a second user with one e-mail).
    #[error("{0} already exists")]
    Conflict(&'static str),
    #[error("the user is disabled")]
    Disabled,
    #[error("storage error: {0}")]
    Store(StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Error::Invalid {
            field,
            message: message.into(),
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => Error::Conflict(what),
            other => Error::Store(other),
        }
    }
}
