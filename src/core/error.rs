//! The core's one error type. Surfaces map it onto their own wire shapes;
//! its messages are safe to show (they never contain secrets).
use super::ports::storage::StoreError;

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
    /// The request is understood but not allowed (the reason is safe to show).
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// A credential (session, token) was required and is not valid.
    #[error("not authorized")]
    Unauthorized,
    /// Too many requests; try again after this many seconds.
    #[error("rate limit exceeded; retry after {retry_after} s")]
    RateLimited { retry_after: i64 },
    /// A dependency (DNS, ...) failed; the request may succeed later.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    /// A sign-in provider refused, failed validation or was unreachable.
    #[error("{0}")]
    Provider(super::providers::ProviderError),
    #[error("storage error: {0}")]
    Store(StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The database is unreachable: the store said so (and logged it once
    /// when it happened), so a caller need not log it per request.
    pub fn is_outage(&self) -> bool {
        matches!(self, Error::Store(StoreError::Unavailable(_)))
    }

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
