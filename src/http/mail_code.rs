//! The e-mail code surface (TimeLimit's `/auth` API): start a sign-in by
//! mail, finish it with the code, and use the resulting `mailAuthToken`.
//! Only wire translation lives here; the rules are in `core::mail_login`.
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Client, JsonBody};
use super::{ApiError, AppState, Surface};
use crate::config::Config;
use crate::core::secret::TokenFormat;
use crate::core::{CodeCheck, Email, Error, Locale, SendCodeOutcome};

pub const DECLARATION: Surface = Surface {
    tag: "mail code",
    description: "Passwordless sign-in by a code sent by e-mail (TimeLimit's /auth API)",
    enabled: |s| s.mail_code,
    router,
    errors: None,
    // Its settings are the core's (`mail_login`), checked with the rest.
    validate: |_, _| {},
};

fn router(_: &Config) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(send_mail_login_code))
        .routes(routes!(sign_in_by_mail_code))
        .routes(routes!(sign_in_by_mail_auth_token))
        // A trailing slash is accepted too, as on the code-exchange API.
        .route(
            "/auth/send-mail-login-code-v2/",
            axum::routing::post(send_mail_login_code),
        )
        .route(
            "/auth/sign-in-by-mail-code/",
            axum::routing::post(sign_in_by_mail_code),
        )
        .route(
            "/auth/sign-in-by-mail-auth-token/",
            axum::routing::post(sign_in_by_mail_auth_token),
        )
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SendCodeRequest {
    /// Exactly one plain address, e.g. `test@timelimit.io`.
    mail: String,
    /// Language tag of the mail, e.g. `de`.
    locale: String,
    /// The session id of a device that is already signed in, if any: the
    /// mail then names that device.
    #[serde(default)]
    device_auth_token: Option<String>,
}

/// One of the three documented answers (each alone in the object).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SendCodeResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    mail_login_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mail_address_not_whitelisted: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mail_server_blacklisted: Option<bool>,
}

/// A 400 naming the field, in the base error shape.
fn bad(e: Error) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", e.to_string())
}

/// Start signing in: a code goes to the address, the answer names the login.
#[utoipa::path(post, path = "/auth/send-mail-login-code-v2", tag = "mail code",
    request_body = SendCodeRequest,
    responses(
        (status = 200, description = "`{mailLoginToken}` when the mail is queued; `{mailAddressNotWhitelisted: true}` or `{mailServerBlacklisted: true}` when the lists refuse the address", body = SendCodeResponse),
        (status = 400, description = "Malformed body or not exactly one mailbox", body = super::error::ErrorBody),
        (status = 401, description = "`deviceAuthToken` is not a live session", body = super::error::ErrorBody),
        (status = 429, description = "Rate limit exceeded (see `Retry-After`)", body = super::error::ErrorBody),
        (status = 503, description = "The mail domain's MX records could not be checked", body = super::error::ErrorBody)))]
async fn send_mail_login_code(
    State(state): State<AppState>,
    Client(client): Client,
    JsonBody(req): JsonBody<SendCodeRequest>,
) -> Result<Json<SendCodeResponse>, ApiError> {
    // Surrounding white space (a phone keyboard's trailing space) is not
    // part of the address, as in the original; the trimmed address is the
    // one checked and the one the mail goes to.
    let mail = Email::parse(req.mail.trim()).map_err(bad)?;
    let locale = Locale::parse(&req.locale).map_err(bad)?;
    let outcome = state
        .core
        .send_mail_code(mail, locale, req.device_auth_token.as_deref(), &client)
        .await?;
    let mut body = SendCodeResponse {
        mail_login_token: None,
        mail_address_not_whitelisted: None,
        mail_server_blacklisted: None,
    };
    match outcome {
        SendCodeOutcome::Sent { mail_login_token } => {
            body.mail_login_token = Some(mail_login_token)
        }
        SendCodeOutcome::NotAllowListed => body.mail_address_not_whitelisted = Some(true),
        SendCodeOutcome::DenyListed => body.mail_server_blacklisted = Some(true),
    }
    Ok(Json(body))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SignInByCodeRequest {
    mail_login_token: String,
    /// The code from the mail; spaces, `*` and case do not matter.
    received_code: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MailAuthTokenResponse {
    /// Proves the address for a short time; single use.
    mail_auth_token: String,
}

/// Finish signing in with the code from the mail.
#[utoipa::path(post, path = "/auth/sign-in-by-mail-code", tag = "mail code",
    request_body = SignInByCodeRequest,
    responses(
        (status = 200, description = "Right code", body = MailAuthTokenResponse),
        (status = 400, description = "Malformed body", body = super::error::ErrorBody),
        (status = 403, description = "Wrong code; it can be tried again", body = super::error::ErrorBody),
        (status = 410, description = "Unknown or expired login token, or no attempts left", body = super::error::ErrorBody)))]
async fn sign_in_by_mail_code(
    State(state): State<AppState>,
    Client(client): Client,
    JsonBody(req): JsonBody<SignInByCodeRequest>,
) -> Result<Json<MailAuthTokenResponse>, ApiError> {
    match state
        .core
        .check_mail_code(&req.mail_login_token, &req.received_code, &client)
        .await?
    {
        CodeCheck::Accepted { mail_auth_token } => {
            Ok(Json(MailAuthTokenResponse { mail_auth_token }))
        }
        CodeCheck::Wrong => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "wrong_code",
            "the code is wrong; try again",
        )),
        CodeCheck::Gone => Err(ApiError::new(
            StatusCode::GONE,
            "login_gone",
            "this sign-in is unknown, expired or out of attempts; request a new code",
        )),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MailAuthTokenRequest {
    mail_auth_token: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MailSessionResponse {
    /// The new session: send it as `Authorization: Bearer <sessionId>`.
    session_id: String,
    user_id: String,
    mail: String,
    /// Whether the user was created by this call.
    signup: bool,
}

/// Trade a `mailAuthToken` (once) for an authgate session.
#[utoipa::path(post, path = "/auth/sign-in-by-mail-auth-token", tag = "mail code",
    request_body = MailAuthTokenRequest,
    responses(
        (status = 200, description = "Signed in (and signed up when allowed)", body = MailSessionResponse),
        (status = 400, description = "Malformed body", body = super::error::ErrorBody),
        (status = 401, description = "Unknown, used or expired token", body = super::error::ErrorBody),
        (status = 403, description = "The user is disabled, or sign-up is off and there is no such user", body = super::error::ErrorBody)))]
async fn sign_in_by_mail_auth_token(
    State(state): State<AppState>,
    Client(client): Client,
    JsonBody(req): JsonBody<MailAuthTokenRequest>,
) -> Result<Response, ApiError> {
    let (user, session, signup) = state
        .core
        .sign_in_with_mail_auth_token(&req.mail_auth_token, TokenFormat::UrlSafe32, &client)
        .await?;
    Ok(Json(MailSessionResponse {
        session_id: session,
        user_id: user.id.to_string(),
        mail: user.email.map(|e| e.to_string()).unwrap_or_default(),
        signup,
    })
    .into_response())
}
