//! The base error shape for authgate's own routes (operations, admin):
//! `{"error": "<code>", "message": "<safe text>"}`. Surfaces answer in their
//! own seed's shapes; they map [`crate::core::Error`] themselves.
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `not_found`.
    pub error: &'static str,
    /// Human-readable explanation; never contains secrets or internals.
    pub message: String,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
    /// Seconds for a `Retry-After` header (429, 503).
    pub retry_after: Option<i64>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                error,
                message: message.into(),
            },
            retry_after: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(secs.max(1)),
            );
        }
        response
    }
}

impl From<crate::core::Error> for ApiError {
    fn from(e: crate::core::Error) -> Self {
        use crate::core::Error as E;
        match e {
            E::Invalid { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", e.to_string())
            }
            E::NotFound => ApiError::new(StatusCode::NOT_FOUND, "not_found", "not found"),
            E::Conflict(_) => ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string()),
            E::Disabled => ApiError::new(StatusCode::FORBIDDEN, "disabled", "the user is disabled"),
            E::Forbidden(why) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", why),
            E::Unauthorized => {
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "not authorized")
            }
            E::RateLimited { retry_after } => ApiError {
                retry_after: Some(retry_after),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "too many requests; try again later",
                )
            },
            E::Unavailable(ref m) => ApiError {
                retry_after: Some(5),
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m.clone())
            },
            E::Provider(ref p) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "provider_error", p.to_string())
            }
            E::Store(ref inner) => {
                // The full chain goes to the log; the client learns only that
                // the service is unavailable.
                if e.is_outage() {
                    tracing::debug!(error = %inner, "storage unavailable");
                } else {
                    tracing::error!(error = %inner, "storage error");
                }
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the service is temporarily unavailable",
                )
            }
            E::Internal(ref m) => {
                tracing::error!(error = %m, "internal error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
            }
        }
    }
}

/// A surface's own error shape for the paths under its prefix: unknown
/// paths and wrong methods there are answered as the surface's clients
/// expect. Surfaces declare theirs; this module knows none of them.
#[derive(Debug, Clone, Copy)]
pub struct SurfaceErrors {
    pub prefix: &'static str,
    pub render: fn(StatusCode) -> Response,
}

fn surface_error(uri: &axum::http::Uri, status: StatusCode) -> Option<Response> {
    super::surface_errors()
        .find(|s| uri.path().starts_with(s.prefix))
        .map(|s| (s.render)(status))
}

/// Unknown path: in the error shape of the API the path belongs to.
pub async fn not_found(uri: axum::http::Uri) -> Response {
    surface_error(&uri, StatusCode::NOT_FOUND).unwrap_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint").into_response()
    })
}

/// Known path, wrong method: in the error shape of the path's API.
pub async fn method_not_allowed(uri: axum::http::Uri) -> Response {
    surface_error(&uri, StatusCode::METHOD_NOT_ALLOWED).unwrap_or_else(|| {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this endpoint",
        )
        .into_response()
    })
}

/// A handler panicked (a bug): answer with a plain 500, log without payload.
pub fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error",
    )
    .into_response()
}
