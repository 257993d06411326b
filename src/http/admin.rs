//! Endpoints for the application's own back end, guarded by `admin.token`
//! (`Authorization: Bearer <token>`).
use axum::Json;
use axum::extract::{FromRef, FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Client, JsonBody};
use super::{ApiError, AppState, Surface};
use crate::config::Config;
use crate::core::secret::ct_eq;

pub const DECLARATION: Surface = Surface {
    tag: "admin",
    description: "For the application's back end; `Authorization: Bearer <admin.token>`",
    // Always routed; without `admin.token` every call is refused.
    enabled: |_| true,
    router,
    errors: None,
    validate: |_, _| {},
};

fn router(_: &Config) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(verify_mail_auth_token))
        .routes(routes!(introspect_session))
        .routes(routes!(provider_token))
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
        match (
            app.http
                .admin_token
                .as_ref()
                .map(crate::config::Secret::expose),
            presented,
        ) {
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VerifyMailAuthTokenRequest {
    /// The `mailAuthToken` the application's client handed its back end.
    mail_auth_token: String,
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
    request_body = VerifyMailAuthTokenRequest,
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The token was valid and is now used up", body = VerifiedMailResponse),
        (status = 400, description = "Malformed body", body = super::error::ErrorBody),
        (status = 401, description = "Missing or wrong admin token", body = super::error::ErrorBody),
        (status = 410, description = "Unknown, used or expired mailAuthToken", body = super::error::ErrorBody)))]
async fn verify_mail_auth_token(
    _: Admin,
    State(state): State<AppState>,
    JsonBody(req): JsonBody<VerifyMailAuthTokenRequest>,
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IntrospectRequest {
    /// The session id (or token) a client sent the application's back end:
    /// a cookie value, an `Authorization` header, a FreeSewing token.
    session: String,
}

#[derive(Serialize, ToSchema)]
pub struct IntrospectedUser {
    #[schema(value_type = String, format = "uuid")]
    id: uuid::Uuid,
    email: Option<String>,
    name: Option<String>,
    locale: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct IntrospectedSession {
    /// The session's public id (for lists and revocation; not a credential).
    #[schema(value_type = String, format = "uuid")]
    id: uuid::Uuid,
    /// The surface or tool that made it.
    kind: String,
    created_at: String,
    /// When it ends unless used again (the idle or the absolute end,
    /// whichever comes first).
    expires_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct IntrospectResponse {
    /// A live session of an enabled user.
    active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<IntrospectedUser>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<IntrospectedSession>,
}

/// For the application's own back end: whose is this session? Answered as
/// a session check is (from the session cache, revocations seen at once),
/// with the user's id, e-mail, name and locale. Not a session: `{"active":
/// false}`. The id travels in the body, never in a URL.
#[utoipa::path(post, path = "/admin/sessions/introspect", tag = "admin",
    request_body = IntrospectRequest,
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Whether the session is live, and whose", body = IntrospectResponse),
        (status = 400, description = "Malformed body", body = super::error::ErrorBody),
        (status = 401, description = "Missing or wrong admin token", body = super::error::ErrorBody)))]
async fn introspect_session(
    _: Admin,
    State(state): State<AppState>,
    JsonBody(req): JsonBody<IntrospectRequest>,
) -> Result<Json<IntrospectResponse>, ApiError> {
    use crate::core::clock::rfc3339;
    let Some(check) = state.core.check_session(&req.session).await? else {
        return Ok(Json(IntrospectResponse {
            active: false,
            user: None,
            session: None,
        }));
    };
    let u = &check.user;
    let s = &check.session;
    Ok(Json(IntrospectResponse {
        active: true,
        user: Some(IntrospectedUser {
            id: u.id,
            email: u.email.as_ref().map(|e| e.to_string()),
            name: u.display_name.clone(),
            locale: u.locale.as_ref().map(|l| l.as_str().to_string()),
        }),
        session: Some(IntrospectedSession {
            id: s.id,
            kind: s.kind.clone(),
            created_at: rfc3339(s.created_at),
            expires_at: rfc3339(s.ends_at()),
        }),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderTokenRequest {
    /// The user (from the session introspection).
    #[schema(value_type = String, format = "uuid")]
    user_id: uuid::Uuid,
    /// The provider whose token is wanted, e.g. `microsoft`.
    provider: String,
}

#[derive(Serialize, ToSchema)]
pub struct ProviderTokenResponse {
    access_token: String,
    /// When the provider said it expires (RFC 3339), if it did.
    expires_at: Option<String>,
    scope: Option<String>,
}

/// For the application's own back end: the person's current access token at
/// a provider (for calls such as Microsoft Graph), refreshed by authgate when
/// it has expired. Every read is audited (`provider_token.read`); the token
/// is never logged.
#[utoipa::path(post, path = "/admin/provider-token", tag = "admin",
    request_body = ProviderTokenRequest,
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The current access token", body = ProviderTokenResponse),
        (status = 400, description = "Malformed body", body = super::error::ErrorBody),
        (status = 401, description = "Missing or wrong admin token", body = super::error::ErrorBody),
        (status = 404, description = "No token is kept for this user at this provider (none yet, or no vault key)", body = super::error::ErrorBody),
        (status = 410, description = "The token expired and the provider refused to refresh it: the person must sign in again", body = super::error::ErrorBody)))]
async fn provider_token(
    _: Admin,
    State(state): State<AppState>,
    Client(client): Client,
    JsonBody(req): JsonBody<ProviderTokenRequest>,
) -> Result<Json<ProviderTokenResponse>, ApiError> {
    match state
        .core
        .provider_access_token_for_backend(req.user_id, &req.provider, &client)
        .await
    {
        Ok(Some(t)) => Ok(Json(ProviderTokenResponse {
            access_token: t.token,
            expires_at: t.expires_at.map(crate::core::clock::rfc3339),
            scope: t.scope,
        })),
        Ok(None) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_token",
            "no token is kept for this user at this provider",
        )),
        Err(crate::core::Error::Unauthorized) => Err(ApiError::new(
            StatusCode::GONE,
            "reauthentication_required",
            "the token expired and the provider refused to refresh it; the person must sign in again",
        )),
        Err(e) => Err(e.into()),
    }
}
