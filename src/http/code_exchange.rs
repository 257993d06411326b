//! The Microsoft code-exchange API (seed 000): a front end trades a
//! Microsoft authorization code for a session id (`POST /api/v1/auth/oauth2`),
//! or lets authgate start the authorize step (`GET /api/v1/auth/oauth2`);
//! clients check and end sessions with the raw id in `Authorization`. Errors
//! in the API's own shape `{code, status, message[, data]}`.
use axum::Json;
use axum::extract::{FromRequest, Query, Request, State};
use axum::http::header::{AUTHORIZATION, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use std::sync::Arc;

use axum::Extension;

use super::extract::{AnyTypeJsonBody, CallbackParams, Client};
use super::{AppState, Surface, with_settings};
use crate::config::{Config, ConfigError, err};
use crate::core::handoff::{HANDOFF_PREFIX, Refusal};
use crate::core::providers::MAX_CODE_LEN;
use crate::core::secret::TokenFormat;
use crate::core::{Callback, CallbackError, Error, FinishedCallback, FlowStart, ProviderError};

/// The surface name flows and sessions are recorded under.
const SURFACE: &str = crate::core::providers::CODE_EXCHANGE_SURFACE;
/// Carries the state of a flow `GET /api/v1/auth/oauth2` started, for
/// clients that post only `{code}` afterwards.
const FLOW_COOKIE: &str = "authgate_cx_state";
const FLOW_COOKIE_PATH: &str = "/api/v1/auth/oauth2";
/// Where the provider sends the browser back for flows started here.
const CALLBACK_PATH: &str = "/api/v1/auth/oauth2/callback";

/// This surface's settings, resolved from the config.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub provider: String,
    /// authgate's own callback, where flows started here come back.
    pub callback_uri: String,
    /// Allowed redirect URIs; the first is the default.
    pub redirect_uris: Vec<String>,
    pub require_state: bool,
    pub signup: bool,
}

impl Settings {
    pub fn new(cfg: &Config) -> Self {
        let ce = &cfg.code_exchange;
        let redirect_uris = if ce.redirect_uris.is_empty() {
            vec![
                cfg.server
                    .frontend_url
                    .clone()
                    .unwrap_or_else(|| cfg.server.public_url())
                    .to_string(),
            ]
        } else {
            ce.redirect_uris.clone()
        };
        Settings {
            provider: ce.provider_name().to_string(),
            callback_uri: cfg
                .server
                .public_url()
                .join(CALLBACK_PATH.trim_start_matches('/'))
                .map(|u| u.to_string())
                .unwrap_or_default(),
            redirect_uris,
            require_state: ce.require_state,
            signup: ce.signup,
        }
    }

    /// The redirect URI a client named, if allowed, in the client's own
    /// spelling (the one the provider must see again); the default if none.
    fn redirect_uri(&self, asked: Option<&str>) -> Result<String, ApiV1Error> {
        match asked {
            None => self
                .redirect_uris
                .first()
                .cloned()
                .ok_or_else(|| ApiV1Error::new(StatusCode::BAD_REQUEST)),
            Some(uri) => self
                .redirect_uris
                .iter()
                .any(|allowed| same_redirect_uri(allowed, uri))
                .then(|| uri.to_string())
                .ok_or_else(|| ApiV1Error::new(StatusCode::BAD_REQUEST)),
        }
    }
}

/// Redirect URIs compare as spelled, except that an origin-only URI
/// (`https://app.example`, as `location.origin` gives it) equals itself
/// with a trailing `/`.
fn same_redirect_uri(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let origin_only = |s: &str| {
        url::Url::parse(s)
            .is_ok_and(|u| u.path() == "/" && u.query().is_none() && u.fragment().is_none())
            && s.matches('/').count() <= 3
    };
    origin_only(a) && origin_only(b) && a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// Paths of this API start with this.
pub const PREFIX: &str = "/api/v1/";

pub const DECLARATION: Surface = Surface {
    tag: "code exchange",
    description: "Sessions of the Microsoft code-exchange API (/api/v1/auth)",
    enabled: |s| s.code_exchange,
    router,
    errors: Some(ERRORS),
    validate,
};

fn router(cfg: &Config) -> OpenApiRouter<AppState> {
    let routes = OpenApiRouter::new()
        .routes(routes!(oauth2_start, oauth2_exchange))
        .routes(routes!(oauth2_callback))
        .route("/api/v1/auth/oauth2/callback/", get(oauth2_callback))
        .routes(routes!(valid))
        .routes(routes!(revoke))
        // A trailing slash is optional on every path of this API.
        .route(
            "/api/v1/auth/oauth2/",
            get(oauth2_start).post(oauth2_exchange),
        )
        .route("/api/v1/auth/valid/", get(valid))
        .route("/api/v1/auth/revoke/", delete(revoke));
    with_settings(routes, Settings::new(cfg))
}

/// Unknown paths and wrong methods under `/api/v1/auth` in this API's shape.
pub const ERRORS: super::error::SurfaceErrors = super::error::SurfaceErrors {
    prefix: PREFIX,
    render: |status| ApiV1Error::new(status).into_response(),
};

/// The API's error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiV1Error {
    code: u16,
    status: String,
    message: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<serde_json::Value>,
    /// Seconds for `Retry-After` (429).
    #[serde(skip)]
    retry_after: Option<i64>,
}

impl ApiV1Error {
    pub fn new(status: StatusCode) -> Self {
        let (label, message) = match status.as_u16() {
            400 => (
                "Bad Request",
                "The server did not understand the request, an invalid request body or headers may have been given.",
            ),
            403 => ("Forbidden", "The account is not allowed to sign in."),
            404 => ("Not Found", "The requested resource has not been found."),
            405 => (
                "Method Not Allowed",
                "The requested method is not allowed on this resource.",
            ),
            429 => (
                "Too Many Requests",
                "Too many requests have been made; try again later.",
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
            retry_after: None,
        }
    }

    fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for ApiV1Error {
    fn into_response(self) -> Response {
        let retry_after = self.retry_after;
        let mut r = (self.status(), Json(self)).into_response();
        if let Some(secs) = retry_after {
            r.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        r
    }
}

impl ApiV1Error {
    /// 406 with an OAuth-style error document under `data`.
    fn not_acceptable(data: serde_json::Value) -> Self {
        ApiV1Error {
            data: Some(data),
            ..ApiV1Error::new(StatusCode::NOT_ACCEPTABLE)
        }
    }
}

impl From<Error> for ApiV1Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Invalid { .. } => ApiV1Error::new(StatusCode::BAD_REQUEST),
            Error::NotFound => ApiV1Error::new(StatusCode::NOT_FOUND),
            Error::Disabled | Error::Forbidden(_) => ApiV1Error::new(StatusCode::FORBIDDEN),
            Error::RateLimited { retry_after } => ApiV1Error {
                retry_after: Some(retry_after),
                ..ApiV1Error::new(StatusCode::TOO_MANY_REQUESTS)
            },
            // A flow state that is unknown, used, expired or not this API's.
            Error::Unauthorized => ApiV1Error::not_acceptable(json!({
                "error": "invalid_state",
                "error_description": "The sign-in flow is unknown, already used or expired; start again."
            })),
            // The provider's own error document, as the original passed it on.
            Error::Provider(ProviderError::Rejected { body, .. }) => {
                ApiV1Error::not_acceptable(body)
            }
            Error::Provider(ProviderError::Invalid(m)) => ApiV1Error::not_acceptable(json!({
                "error": "invalid_response",
                "error_description": m
            })),
            Error::Provider(ProviderError::Unavailable(m)) => ApiV1Error::not_acceptable(json!({
                "error": "temporarily_unavailable",
                "error_description": m
            })),
            other if other.is_outage() => ApiV1Error::new(StatusCode::SERVICE_UNAVAILABLE),
            other => {
                tracing::error!(error = %other, "code-exchange API: storage or internal error");
                ApiV1Error::new(StatusCode::SERVICE_UNAVAILABLE)
            }
        }
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
    let AnyTypeJsonBody(body) = AnyTypeJsonBody::<RevokeRequest>::from_request(req, &state)
        .await
        .map_err(|_| ApiV1Error::new(StatusCode::BAD_REQUEST))?;
    state
        .core
        .revoke_session_token(&body.session_id, &client)
        .await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExchangeRequest {
    /// The authorization code Microsoft sent to the redirect URI.
    code: String,
    /// The redirect URI the authorize step used (one of
    /// `code_exchange.redirect_uris`; default the first). `?redirect=` in
    /// the query says the same.
    #[serde(default)]
    uri: Option<String>,
    /// The `state` the redirect URI received, when authgate started the
    /// flow (`GET /api/v1/auth/oauth2`); binds the code to its PKCE verifier
    /// and nonce.
    #[serde(default)]
    state: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExchangeResponse {
    /// 16 random bytes, base64: send it raw in `Authorization`.
    session_id: String,
}

fn flow_cookie(headers: &HeaderMap) -> Option<String> {
    super::extract::cookie_value(headers, FLOW_COOKIE)
}

fn set_flow_cookie(value: &str, max_age: i64, secure: bool) -> Option<HeaderValue> {
    super::extract::set_cookie(FLOW_COOKIE, value, FLOW_COOKIE_PATH, Some(max_age), secure)
}

/// Trade a Microsoft authorization code for a session.
#[utoipa::path(post, path = "/api/v1/auth/oauth2", tag = "code exchange",
    request_body = ExchangeRequest,
    responses(
        (status = 200, description = "Signed in", body = ExchangeResponse),
        (status = 400, description = "Malformed body, or a redirect URI that is not allowed", body = ApiV1Error),
        (status = 403, description = "The user is disabled", body = ApiV1Error),
        (status = 404, description = "No user matches the Microsoft account", body = ApiV1Error),
        (status = 406, description = "The OAuth flow failed; `data` holds the provider's error document", body = ApiV1Error)))]
async fn oauth2_exchange(
    State(state): State<AppState>,
    Extension(settings): Extension<Arc<Settings>>,
    Client(client): Client,
    req: Request,
) -> Result<Response, ApiV1Error> {
    if state.core.provider(&settings.provider).is_none() {
        // No provider configured: this endpoint does not exist here.
        return Err(ApiV1Error::new(StatusCode::NOT_FOUND));
    }
    let cookie_state = flow_cookie(req.headers());
    // MCT CO2's front end names the redirect URI in the query, as for the
    // authorize step (`?redirect=<location.origin>`), not in the body.
    let query_redirect = Query::<StartParams>::try_from_uri(req.uri())
        .map_err(|_| ApiV1Error::new(StatusCode::BAD_REQUEST))?
        .0
        .redirect;
    let AnyTypeJsonBody(body) = AnyTypeJsonBody::<ExchangeRequest>::from_request(req, &state)
        .await
        .map_err(|_| ApiV1Error::new(StatusCode::BAD_REQUEST))?;
    if body.code.trim().is_empty() || body.code.len() > MAX_CODE_LEN {
        return Err(ApiV1Error::new(StatusCode::BAD_REQUEST));
    }
    let asked = body.uri.or(query_redirect);
    let uri = settings.redirect_uri(asked.as_deref())?;
    let core = &state.core;
    let user = if body.code.starts_with(HANDOFF_PREFIX) {
        // A flow started here and finished at authgate's callback (state,
        // flow cookie, PKCE, nonce and `iss` were checked there): its
        // outcome, once.
        core.take_handoff(&body.code, SURFACE).await.map_err(|e| match e {
            Error::Unauthorized => ApiV1Error::not_acceptable(json!({
                "error": "invalid_grant",
                "error_description": "The code is unknown, already used or expired; sign in again."
            })),
            other => ApiV1Error::from(other),
        })?
    } else if body.state.is_some() || cookie_state.is_some() {
        // A provider's code with a state: flows started here come back to
        // authgate's callback, never to the client, so a state posted here
        // was taken from someone else's flow (login CSRF). Spend it.
        if let Some(st) = body.state.or(cookie_state) {
            let _ = core.take_flow(&st, Some(&settings.provider), SURFACE).await;
        }
        return Err(ApiV1Error::not_acceptable(json!({
            "error": "invalid_state",
            "error_description": "A sign-in started with GET /api/v1/auth/oauth2 finishes at authgate's callback: post the code the redirect URI receives from there."
        })));
    } else if settings.require_state {
        return Err(ApiV1Error::not_acceptable(json!({
            "error": "invalid_request",
            "error_description": "start the sign-in with GET /api/v1/auth/oauth2"
        })));
    } else {
        // The original's clients that ran the authorize step themselves:
        // no PKCE or nonce can be checked (documented; `require_state`
        // turns this off).
        let profile = core
            .redeem_code(
                &settings.provider,
                &body.code,
                &uri,
                None,
                crate::core::AuthResponse::Relayed,
                &client,
            )
            .await?;
        core.resolve_user(&profile, SURFACE, settings.signup, None, &client)
            .await?
            .user
    };
    let (token, _) = core
        .sign_in(
            &user,
            SURFACE,
            crate::core::AMR_FED,
            TokenFormat::Base64x16,
            &client,
        )
        .await?;
    Ok(Json(ExchangeResponse { session_id: token }).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct StartParams {
    /// Where Microsoft sends the browser back (one of
    /// `code_exchange.redirect_uris`; default the first).
    redirect: Option<String>,
}

/// Start the Microsoft authorize step: 301 to Microsoft with state, PKCE and
/// nonce. The state comes back to the redirect URI and also sits in a
/// short-lived cookie for clients that post only `{code}`.
#[utoipa::path(get, path = "/api/v1/auth/oauth2", tag = "code exchange",
    params(StartParams),
    responses(
        (status = 301, description = "To the provider's authorize URL"),
        (status = 400, description = "A redirect URI that is not allowed", body = ApiV1Error),
        (status = 406, description = "The provider could not be reached", body = ApiV1Error),
        (status = 429, description = "Too many sign-ins started from this address (see `Retry-After`)", body = ApiV1Error)))]
async fn oauth2_start(
    State(state): State<AppState>,
    Extension(settings): Extension<Arc<Settings>>,
    Client(client): Client,
    query: Result<Query<StartParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiV1Error> {
    let Query(params) = query.map_err(|_| ApiV1Error::new(StatusCode::BAD_REQUEST))?;
    if state.core.provider(&settings.provider).is_none() {
        return Err(ApiV1Error::new(StatusCode::NOT_FOUND));
    }
    let client_redirect = settings.redirect_uri(params.redirect.as_deref())?;
    let started = state
        .core
        .start_flow(FlowStart {
            provider: settings.provider.clone(),
            surface: SURFACE,
            redirect_uri: settings.callback_uri.clone(),
            redirect_to: Some(client_redirect),
            ip: client.ip,
            ..FlowStart::default()
        })
        .await?;
    let location = HeaderValue::from_str(started.authorize_url.as_str())
        .map_err(|_| ApiV1Error::new(StatusCode::SERVICE_UNAVAILABLE))?;
    let mut response = StatusCode::MOVED_PERMANENTLY.into_response();
    response.headers_mut().insert(LOCATION, location);
    if let Some(cookie) = set_flow_cookie(
        &started.state,
        crate::core::providers::FLOW_TTL_SECS,
        state.http.secure_cookies,
    ) {
        response.headers_mut().insert(SET_COOKIE, cookie);
    }
    Ok(response)
}

/// The provider sends the browser back here for a flow `GET
/// /api/v1/auth/oauth2` started. authgate checks the state against this
/// browser's flow cookie, redeems the code with the flow's PKCE verifier,
/// validates the ID token (nonce, `iss`), reads Graph and finds the user;
/// then it sends the browser on to the client's redirect URI with a
/// one-time code of its own in `?code=`, which the client posts as it would
/// the provider's. The outcome (a session, or the 403, 404 or 406 the
/// client would have got) waits for that post, once, for two minutes.
#[utoipa::path(get, path = "/api/v1/auth/oauth2/callback", tag = "code exchange",
    params(CallbackParams),
    responses(
        (status = 302, description = "To the client's redirect URI with `?code=<one-time code>`"),
        (status = 406, description = "No state, an unknown, used or expired one, or one this browser did not start", body = ApiV1Error)))]
async fn oauth2_callback(
    State(state): State<AppState>,
    Extension(settings): Extension<Arc<Settings>>,
    Client(client): Client,
    headers: HeaderMap,
    query: Result<Query<CallbackParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiV1Error> {
    if state.core.provider(&settings.provider).is_none() {
        return Err(ApiV1Error::new(StatusCode::NOT_FOUND));
    }
    let Query(params) = query.map_err(|_| ApiV1Error::new(StatusCode::BAD_REQUEST))?;
    let core = &state.core;
    let cookie = flow_cookie(&headers);
    let finished = core
        .finish_callback(
            &Callback {
                provider: &settings.provider,
                surface: SURFACE,
                redirect_uri: &settings.callback_uri,
                signup: settings.signup,
                ..params.callback(cookie.as_deref())
            },
            &client,
        )
        .await;
    let invalid_state = || {
        ApiV1Error::not_acceptable(json!({
            "error": "invalid_state",
            "error_description": "The sign-in flow is unknown, already used or expired, or another browser started it; start again."
        }))
    };
    let (flow, outcome) = match finished {
        Ok(FinishedCallback { flow, resolved, .. }) => (flow, Ok(resolved.user.id)),
        Err(CallbackError::InvalidState) | Err(CallbackError::ProviderError { flow: None, .. }) => {
            return Err(invalid_state());
        }
        Err(CallbackError::ProviderError {
            error,
            flow: Some(flow),
        }) => {
            let description: String = params
                .error_description
                .unwrap_or_default()
                .chars()
                .take(512)
                .collect();
            let body = json!({"error": error, "error_description": description});
            (
                *flow,
                Err(Refusal::Provider(ProviderError::Rejected {
                    stage: "authorize",
                    status: 400,
                    body,
                })),
            )
        }
        Err(CallbackError::NoCode(flow)) => (
            *flow,
            Err(Refusal::Provider(ProviderError::Invalid(
                "the provider sent no code".into(),
            ))),
        ),
        Err(CallbackError::Failed { error, flow }) => match (Refusal::from_error(error), flow) {
            (Ok(refusal), Some(flow)) => (*flow, Err(refusal)),
            // Nowhere to send the browser on to: answered here.
            (Ok(refusal), None) => return Err(ApiV1Error::from(Error::from(refusal))),
            (Err(other), _) => return Err(ApiV1Error::from(other)),
        },
    };
    let Some(mut to) = flow
        .redirect_to
        .as_deref()
        .and_then(|r| url::Url::parse(r).ok())
    else {
        return Err(invalid_state());
    };
    let code = core.hand_off(SURFACE, outcome).await?;
    to.query_pairs_mut().append_pair("code", &code);
    let location = HeaderValue::from_str(to.as_str())
        .map_err(|_| ApiV1Error::new(StatusCode::SERVICE_UNAVAILABLE))?;
    let mut response = StatusCode::FOUND.into_response();
    response.headers_mut().insert(LOCATION, location);
    if let Some(clear) = set_flow_cookie("", 0, state.http.secure_cookies) {
        response.headers_mut().insert(SET_COOKIE, clear);
    }
    Ok(response)
}

/// The Microsoft code-exchange API (seed 000).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CodeExchangeConfig {
    /// The provider whose codes `POST /api/v1/auth/oauth2` redeems.
    /// Unset: `microsoft` when it is configured; otherwise the surface
    /// answers 404 (a name given here must be configured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Redirect URIs a client may name (`uri`, `?redirect=`); the first is
    /// the default. Empty: the front end's URL (`server.frontend_url`).
    /// Compared as spelled, except that an origin-only URI matches with or
    /// without its trailing `/` (`https://app.example` = `https://app.example/`).
    pub redirect_uris: Vec<String>,
    /// Refuse codes whose authorize step authgate did not start (no `state`
    /// in the body and no flow cookie). Off by default for the original's
    /// clients, which post only `{code}`.
    pub require_state: bool,
    /// Create a user on first sign-in (off: the user must exist).
    pub signup: bool,
}

impl CodeExchangeConfig {
    /// The provider this surface uses: the configured one, else `microsoft`.
    pub fn provider_name(&self) -> &str {
        self.provider.as_deref().unwrap_or("microsoft")
    }
}

/// Checks of this surface's config section (`config check`, start).
fn validate(cfg: &Config, errors: &mut Vec<ConfigError>) {
    let ce = &cfg.code_exchange;
    if let Some(p) = ce.provider.as_ref().filter(|_| cfg.surfaces.code_exchange)
        && !cfg.providers.contains_key(p)
    {
        errors.push(err(
            "code_exchange.provider",
            format!("{p:?} is not a configured provider"),
        ));
    }
    for u in &ce.redirect_uris {
        let ok = url::Url::parse(u).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https") && u.host().is_some() && u.fragment().is_none()
        });
        if !ok {
            errors.push(err(
                "code_exchange.redirect_uris",
                format!("{u} must be an absolute http(s) URL without a fragment"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_compare_as_spelled_origins_with_or_without_slash() {
        let s = Settings {
            redirect_uris: vec![
                "https://co2.example/".into(),
                "https://app.example/cb".into(),
            ],
            ..Settings::default()
        };
        // MCT CO2 sends `location.origin`: no slash. It is the spelling kept.
        assert_eq!(
            s.redirect_uri(Some("https://co2.example")).unwrap(),
            "https://co2.example"
        );
        assert_eq!(
            s.redirect_uri(Some("https://co2.example/")).unwrap(),
            "https://co2.example/"
        );
        assert!(s.redirect_uri(Some("https://co2.example/x")).is_err());
        assert!(s.redirect_uri(Some("https://co2.example//")).is_err());
        assert!(
            s.redirect_uri(Some("https://app.example/cb/")).is_err(),
            "paths are exact"
        );
        assert!(s.redirect_uri(Some("https://app.example")).is_err());
        assert_eq!(s.redirect_uri(None).unwrap(), "https://co2.example/");
    }
}
