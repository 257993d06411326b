//! Endpoints for the application's own back end, guarded by `admin.token`
//! (`Authorization: Bearer <token>`).
use axum::Json;
use axum::extract::{FromRef, FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::JsonBody;
use super::mail_code::MailAuthTokenRequest;
use super::{ApiError, AppState};
use crate::core::secret::ct_eq;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(verify_mail_auth_token))
}

/// Proof that the caller holds the admin token.
pub struct Admin;

impl<S> FromRequestParts<S> for Admin
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let app = AppState::from_ref(state);
        let presented = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match (app.http.admin_token.as_deref(), presented) {
            (Some(expected), Some(given)) if ct_eq(expected.as_bytes(), given.as_bytes()) => {
                Ok(Admin)
            }
            _ => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid admin token is required",
            )),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct VerifiedMailResponse {
    /// The address the token proves, as the person typed it.
    mail: String,
    /// The locale sent with the code request.
    locale: String,
}

/// Verify and consume a `mailAuthToken` (single use): the address it proves.
#[utoipa::path(post, path = "/admin/mail-auth-token/verify", tag = "admin",
    request_body = MailAuthTokenRequest,
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The token was valid and is now used up", body = VerifiedMailResponse),
        (status = 400, description = "Malformed body", body = super::error::ErrorBody),
        (status = 401, description = "Missing or wrong admin token", body = super::error::ErrorBody),
        (status = 410, description = "Unknown, used or expired mailAuthToken", body = super::error::ErrorBody)))]
async fn verify_mail_auth_token(
    _: Admin,
    State(state): State<AppState>,
    JsonBody(req): JsonBody<MailAuthTokenRequest>,
) -> Result<Json<VerifiedMailResponse>, ApiError> {
    match state
        .core
        .take_mail_auth_token(&req.mail_auth_token)
        .await?
    {
        Some(v) => Ok(Json(VerifiedMailResponse {
            mail: v.mail.to_string(),
            locale: v.locale,
        })),
        None => Err(ApiError::new(
            StatusCode::GONE,
            "token_gone",
            "the mailAuthToken is unknown, used or expired",
        )),
    }
}
