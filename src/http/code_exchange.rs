//! The Microsoft code-exchange API (seed 000), session half: checking and
//! revoking the raw session ids its clients send in `Authorization`, and the
//! API's own error shape `{code, status, message[, data]}`. The sign-in
//! itself (`POST /api/v1/auth/oauth2`) comes with the providers.
use axum::Json;
use axum::extract::{FromRequest, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::extract::Client;

/// Paths of this API start with this.
pub const PREFIX: &str = "/api/v1/";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(valid))
        .routes(routes!(revoke))
        // A trailing slash is optional on every path of this API.
        .route("/api/v1/auth/valid/", get(valid))
        .route("/api/v1/auth/revoke/", delete(revoke))
}

/// The API's error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiV1Error {
    code: u16,
    status: String,
    message: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<serde_json::Value>,
}

impl ApiV1Error {
    pub fn new(status: StatusCode) -> Self {
        let (label, message) = match status.as_u16() {
            400 => (
                "Bad Request",
                "The server did not understand the request, an invalid request body or headers may have been given.",
            ),
            404 => ("Not Found", "The requested resource has not been found."),
            405 => (
                "Method Not Allowed",
                "The requested method is not allowed on this resource.",
            ),
            406 => (
                "Not Acceptable",
                "After Processing the Request Body the server did not find the content that was needed to complete the request.",
            ),
            503 => (
                "Service Unavailable",
                "The service is temporarily unavailable.",
            ),
            _ => ("Internal Server Error", "An internal error occurred."),
        };
        ApiV1Error {
            code: status.as_u16(),
            status: format!("{} - {label}", status.as_u16()),
            message,
            data: None,
        }
    }

    fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for ApiV1Error {
    fn into_response(self) -> Response {
        (self.status(), Json(self)).into_response()
    }
}

impl From<crate::core::Error> for ApiV1Error {
    fn from(e: crate::core::Error) -> Self {
        tracing::error!(error = %e, "code-exchange API: storage or internal error");
        ApiV1Error::new(StatusCode::SERVICE_UNAVAILABLE)
    }
}

/// The session id a client sends: raw in `Authorization` (as the original
/// clients do), or as `Bearer <id>`.
fn presented_session(headers: &HeaderMap) -> Option<&str> {
    let raw = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    Some(raw.strip_prefix("Bearer ").unwrap_or(raw).trim()).filter(|s| !s.is_empty())
}

#[derive(Serialize, ToSchema)]
pub struct Valid {
    valid: bool,
}

/// Is the session id in `Authorization` a live session?
#[utoipa::path(get, path = "/api/v1/auth/valid", tag = "code exchange",
    params(("Authorization" = String, Header, description = "The session id, raw (or `Bearer <id>`)")),
    responses((status = 200, description = "Whether the session is live (an enabled user, within its lifetimes)", body = Valid)))]
async fn valid(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Valid>, ApiV1Error> {
    let valid = match presented_session(&headers) {
        Some(id) => state.core.check_session(id).await?.is_some(),
        None => false,
    };
    Ok(Json(Valid { valid }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RevokeRequest {
    session_id: String,
}

/// End a session (sign out). Knowing the id is the authority to end it.
#[utoipa::path(delete, path = "/api/v1/auth/revoke", tag = "code exchange",
    request_body = RevokeRequest,
    responses(
        (status = 202, description = "The session is ended (also when it did not exist)"),
        (status = 400, description = "Malformed body", body = ApiV1Error)))]
async fn revoke(
    State(state): State<AppState>,
    Client(client): Client,
    req: Request,
) -> Result<StatusCode, ApiV1Error> {
    let Json(body) = Json::<RevokeRequest>::from_request(req, &state)
        .await
        .map_err(|_| ApiV1Error::new(StatusCode::BAD_REQUEST))?;
    state
        .core
        .revoke_session_token(&body.session_id, &client)
        .await?;
    Ok(StatusCode::ACCEPTED)
}
