//! The FreeSewing sign-in surface (seed 001): `POST /oauth/init` makes a
//! flow, `GET /oauth/authorize` sends the browser to the provider,
//! `GET /oauth/callback/from/:provider` finishes the provider step and sends
//! the browser to the front end with a one-time confirmation, and
//! `POST /oauth/login` trades that for the account and a session.
//!
//! Errors are bare statuses with their reason phrase as a text body, as the
//! original's `res.sendStatus(...)`.
use axum::Json;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::header::{LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use std::sync::Arc;

use axum::Extension;

use super::extract::{CallbackParams, Client, JsonBody};
use super::{AppState, Surface, with_settings};
use crate::config::{Config, ConfigError, err};
use crate::core::secret::TokenFormat;
use crate::core::{
    Callback, CallbackError, Consent, Error, FinishedCallback, FlowStart, User, clock::rfc3339,
};

const SURFACE: &str = "oauth";
/// Binds a flow to the browser that went to the provider: set by
/// `/oauth/authorize`, required by the callback.
const FLOW_COOKIE: &str = "authgate_oauth_state";
const FLOW_COOKIE_PATH: &str = "/oauth/callback";

/// This surface's settings: its config section, and what is resolved from
/// the rest of the config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: OauthConfig,
    /// The providers offered (`oauth.providers`, else every configured one).
    pub providers: Vec<String>,
    /// The front end's URL without a trailing slash (`{frontend}`).
    pub frontend: String,
    /// authgate's public URL without a trailing slash (callback URLs).
    pub public: String,
}

impl Settings {
    pub fn new(cfg: &Config) -> Self {
        let o = &cfg.oauth;
        let providers = if o.providers.is_empty() {
            cfg.providers.keys().cloned().collect()
        } else {
            o.providers.clone()
        };
        let frontend = cfg
            .server
            .frontend_url
            .clone()
            .unwrap_or_else(|| cfg.server.public_url());
        let public = cfg.server.public_url();
        Settings {
            config: o.clone(),
            providers,
            frontend: frontend.as_str().trim_end_matches('/').to_string(),
            public: public.as_str().trim_end_matches('/').to_string(),
        }
    }

    fn callback_uri(&self, provider: &str) -> String {
        format!("{}/oauth/callback/from/{provider}", self.public)
    }
}

pub const DECLARATION: Surface = Surface {
    tag: "oauth",
    description: "Sign-in and sign-up with a provider through a one-time confirmation (FreeSewing's /oauth API)",
    enabled: |s| s.oauth,
    router,
    errors: None,
    validate,
};

fn router(cfg: &Config) -> OpenApiRouter<AppState> {
    let routes = OpenApiRouter::new()
        .routes(routes!(init))
        .routes(routes!(authorize))
        .routes(routes!(callback))
        .routes(routes!(login))
        .routes(routes!(create_account));
    with_settings(routes, Settings::new(cfg))
}

/// A bare status with its reason phrase, like Express's `sendStatus`.
fn status(code: StatusCode) -> Response {
    (code, code.canonical_reason().unwrap_or_default()).into_response()
}

fn fail(e: Error) -> Response {
    match e {
        Error::Invalid { .. } => status(StatusCode::BAD_REQUEST),
        Error::Unauthorized | Error::NotFound | Error::Provider(_) => {
            status(StatusCode::UNAUTHORIZED)
        }
        Error::Disabled | Error::Forbidden(_) => status(StatusCode::FORBIDDEN),
        Error::RateLimited { retry_after } => {
            let mut r = status(StatusCode::TOO_MANY_REQUESTS);
            r.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                HeaderValue::from(retry_after),
            );
            r
        }
        other if other.is_outage() => status(StatusCode::SERVICE_UNAVAILABLE),
        other => {
            tracing::error!(error = %other, "oauth surface: storage or internal error");
            status(StatusCode::SERVICE_UNAVAILABLE)
        }
    }
}

fn flow_cookie(value: &str, max_age: i64, secure: bool) -> Option<HeaderValue> {
    super::extract::set_cookie(FLOW_COOKIE, value, FLOW_COOKIE_PATH, Some(max_age), secure)
}

fn redirect(to: &str, cookie: Option<HeaderValue>) -> Response {
    let Ok(location) = HeaderValue::from_str(to) else {
        return status(StatusCode::SERVICE_UNAVAILABLE);
    };
    let mut r = StatusCode::FOUND.into_response();
    r.headers_mut().insert(LOCATION, location);
    if let Some(c) = cookie {
        r.headers_mut().insert(SET_COOKIE, c);
    }
    r
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InitRequest {
    /// `google`, `github` or `microsoft` (as configured).
    provider: String,
    /// One of `oauth.languages` (default `en`, `de`, `es`, `fr`, `nl`).
    language: String,
}

#[derive(Serialize, ToSchema)]
pub struct InitResponse {
    /// Send the browser to `GET /oauth/authorize?state=<state>`.
    state: String,
}

/// Start a provider sign-in: a single-use flow (state, PKCE, nonce; 10
/// minutes) for this provider and language.
#[utoipa::path(post, path = "/oauth/init", tag = "oauth",
    request_body = InitRequest,
    responses(
        (status = 200, description = "The flow's state", body = InitResponse),
        (status = 400, description = "Unknown provider or language, or a malformed body"),
        (status = 429, description = "Too many sign-ins started from this address (see `Retry-After`)")))]
async fn init(
    State(state): State<AppState>,
    Extension(settings): Extension<Arc<Settings>>,
    Client(client): Client,
    req: Request,
) -> Response {
    let Ok(JsonBody(body)) = JsonBody::<InitRequest>::from_request(req, &state).await else {
        return status(StatusCode::BAD_REQUEST);
    };
    if !settings.providers.contains(&body.provider)
        || state.core.provider(&body.provider).is_none()
        || !settings.config.languages.contains(&body.language)
    {
        return status(StatusCode::BAD_REQUEST);
    }
    match state
        .core
        .start_flow(FlowStart {
            redirect_uri: settings.callback_uri(&body.provider),
            provider: body.provider,
            surface: SURFACE,
            language: Some(body.language),
            ip: client.ip,
            ..FlowStart::default()
        })
        .await
    {
        Ok(started) => Json(InitResponse {
            state: started.state,
        })
        .into_response(),
        Err(Error::Provider(e)) => {
            tracing::warn!(error = %e, "oauth init: provider unavailable");
            status(StatusCode::SERVICE_UNAVAILABLE)
        }
        Err(e) => fail(e),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct AuthorizeParams {
    /// The state `/oauth/init` returned.
    state: String,
}

/// Send the browser to the provider for a flow (302), binding the flow to
/// this browser with a short-lived cookie the callback checks.
#[utoipa::path(get, path = "/oauth/authorize", tag = "oauth",
    params(AuthorizeParams),
    responses(
        (status = 302, description = "To the provider's authorize URL"),
        (status = 401, description = "Unknown, used or expired state")))]
async fn authorize(
    State(state): State<AppState>,
    query: Result<Query<AuthorizeParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(params)) = query else {
        return status(StatusCode::UNAUTHORIZED);
    };
    let flow = match state.core.peek_flow(&params.state, SURFACE).await {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    match state.core.flow_authorize_url(&params.state, &flow).await {
        Ok(url) => redirect(
            url.as_str(),
            flow_cookie(
                &params.state,
                crate::core::providers::FLOW_TTL_SECS,
                state.http.secure_cookies,
            ),
        ),
        Err(e) => fail(e),
    }
}

/// The provider sends the browser here. Success: 302 to the front end with a
/// one-time confirmation (`oauth.login_redirect` for a returning person,
/// `oauth.signup_redirect` for a new one).
#[utoipa::path(get, path = "/oauth/callback/from/{provider}", tag = "oauth",
    params(("provider" = String, Path, description = "The provider the flow was made for"), CallbackParams),
    responses(
        (status = 302, description = "To the front end with the confirmation"),
        (status = 401, description = "Unknown, used or expired state; a state of another provider or browser; a provider failure"),
        (status = 403, description = "The user is disabled")))]
async fn callback(
    State(state): State<AppState>,
    Extension(settings): Extension<Arc<Settings>>,
    Client(client): Client,
    Path(provider): Path<String>,
    headers: HeaderMap,
    query: Result<Query<CallbackParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let core = &state.core;
    let Ok(Query(params)) = query else {
        return status(StatusCode::UNAUTHORIZED);
    };
    let bound_to = super::extract::cookie_value(&headers, FLOW_COOKIE);
    let finished = core
        .finish_callback(
            &Callback {
                provider: &provider,
                surface: SURFACE,
                redirect_uri: &settings.callback_uri(&provider),
                signup: settings.config.signup,
                client_built: settings.config.client_built_authorize.contains(&provider),
                ..params.callback(bound_to.as_deref())
            },
            &client,
        )
        .await;
    let FinishedCallback { flow, resolved, .. } = match finished {
        Ok(f) => f,
        // The browser that comes back must be the one that went to the
        // provider (no login CSRF by a forwarded callback URL).
        Err(
            CallbackError::InvalidState
            | CallbackError::ProviderError { .. }
            | CallbackError::NoCode(_),
        ) => return status(StatusCode::UNAUTHORIZED),
        Err(CallbackError::Failed { error, .. }) => return fail(error),
    };
    let template = if resolved.created {
        &settings.config.signup_redirect
    } else {
        &settings.config.login_redirect
    };
    // Always a fresh secret made here, known only to the browser this
    // redirect goes to: never the flow's state, which whoever called
    // `/oauth/init` knows (it would hand them the new account).
    let issued = core
        .issue_confirmation(
            &resolved.user,
            resolved.created,
            SURFACE,
            None,
            template.contains("{validation}"),
            settings.config.confirmation_ttl_secs,
        )
        .await;
    let (confirmation, validation) = match issued {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let to = OauthConfig::fill(
        template,
        &[
            ("frontend", &settings.frontend),
            ("confirmation", &confirmation),
            ("validation", validation.as_deref().unwrap_or_default()),
            ("provider", &provider),
            ("language", flow.language.as_deref().unwrap_or_default()),
        ],
    );
    redirect(&to, flow_cookie("", 0, state.http.secure_cookies))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// From the front-end URL the callback redirected to.
    confirmation: String,
    /// Required when the redirect carried one.
    #[serde(default)]
    validation: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    /// The account, in the original's shape.
    #[schema(value_type = Object)]
    account: Value,
    /// People (measurement sets) by handle; none are kept by authgate.
    #[schema(value_type = Object)]
    people: Value,
    /// The session token: send it as `Authorization: Bearer <token>`.
    token: String,
    /// The account was created by this sign-in.
    signup: bool,
}

/// Trade a confirmation (once, within `oauth.confirmation_ttl_secs`) for the
/// account and a session.
#[utoipa::path(post, path = "/oauth/login", tag = "oauth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in", body = LoginResponse),
        (status = 400, description = "Malformed body"),
        (status = 401, description = "Unknown, used, expired or mismatched confirmation"),
        (status = 403, description = "The user is disabled")))]
async fn login(State(state): State<AppState>, Client(client): Client, req: Request) -> Response {
    let Ok(JsonBody(body)) = JsonBody::<LoginRequest>::from_request(req, &state).await else {
        return status(StatusCode::BAD_REQUEST);
    };
    if body.confirmation.is_empty() || body.validation.as_deref() == Some("") {
        return status(StatusCode::BAD_REQUEST);
    }
    let core = &state.core;
    let (user, signup) = match core
        .redeem_confirmation(
            &body.confirmation,
            body.validation.as_deref(),
            SURFACE,
            &client,
        )
        .await
    {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let consent = match core.consent(user.id).await {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let (account, token) = match signed_in(core, &user, &consent, &client).await {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    Json(LoginResponse {
        account,
        people: json!({}),
        token,
        signup,
    })
    .into_response()
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccountRequest {
    /// The confirmation from `/confirm/signup/<confirmation>/`.
    id: String,
    /// The person's choices; `profile` must be true (no consent, no account).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    consent: Option<ConsentChoices>,
}

/// The front end's consent choices (`model` is its older name for
/// `measurements`).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConsentChoices {
    #[serde(default)]
    profile: bool,
    #[serde(default)]
    model: Option<bool>,
    #[serde(default)]
    measurements: Option<bool>,
    #[serde(default, rename = "openData")]
    open_data: bool,
}

#[derive(Serialize, ToSchema)]
pub struct CreateAccountResponse {
    #[schema(value_type = Object)]
    account: Value,
    #[schema(value_type = Object)]
    people: Value,
    #[schema(value_type = Object)]
    patterns: Value,
    token: String,
}

/// Finish a sign-up the way the original's `POST /account` did: trade the
/// sign-up confirmation (once) with the person's consent for the account
/// and a session. The consent is recorded on the user.
#[utoipa::path(post, path = "/account", tag = "oauth",
    request_body = CreateAccountRequest,
    responses(
        (status = 200, description = "Account created and signed in", body = CreateAccountResponse),
        (status = 400, description = "Malformed body, or `consentRequired` (no consent to the profile)"),
        (status = 401, description = "Unknown, used or expired confirmation"),
        (status = 403, description = "The user is disabled")))]
async fn create_account(
    State(state): State<AppState>,
    Client(client): Client,
    req: Request,
) -> Response {
    let Ok(JsonBody(body)) = JsonBody::<CreateAccountRequest>::from_request(req, &state).await
    else {
        return status(StatusCode::BAD_REQUEST);
    };
    if body.id.is_empty() {
        return status(StatusCode::BAD_REQUEST);
    }
    let choices = body.consent.unwrap_or_default();
    if !choices.profile {
        // The original's answer, word for word.
        return (StatusCode::BAD_REQUEST, "consentRequired").into_response();
    }
    let core = &state.core;
    let (user, _) = match core
        .redeem_confirmation(&body.id, None, SURFACE, &client)
        .await
    {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let consent: Consent = [
        ("profile".to_string(), true),
        (
            "measurements".to_string(),
            choices.measurements.or(choices.model).unwrap_or(false),
        ),
        ("openData".to_string(), choices.open_data),
    ]
    .into_iter()
    .collect();
    if let Err(e) = core.record_consent(&user, &consent, &client).await {
        return fail(e);
    }
    let (account, token) = match signed_in(core, &user, &consent, &client).await {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    Json(CreateAccountResponse {
        account,
        people: json!({}),
        patterns: json!({}),
        token,
    })
    .into_response()
}

/// A new session for `user`, and the account as the answer shows it.
async fn signed_in(
    core: &crate::core::Core,
    user: &User,
    consent: &Consent,
    client: &crate::core::ClientMeta,
) -> Result<(Value, String), Error> {
    let (token, _) = core
        .sign_in(
            user,
            SURFACE,
            crate::core::AMR_FED,
            TokenFormat::UrlSafe32,
            client,
        )
        .await?;
    Ok((account(user, consent, core.now()), token))
}

/// The account as the original's `user.account()` shaped it.
fn account(user: &User, consent: &Consent, now: i64) -> Value {
    let choice = |k: &str| consent.get(k).copied().unwrap_or(false);
    let email = user.email.as_ref().map(|e| e.as_str().to_string());
    let username = user
        .display_name
        .clone()
        .or_else(|| {
            email
                .as_deref()
                .and_then(|e| e.split('@').next())
                .map(String::from)
        })
        .unwrap_or_else(|| user.id.simple().to_string());
    json!({
        "handle": user.id.to_string(),
        "username": username,
        "email": email,
        "role": "user",
        "status": if user.disabled { "blocked" } else { "active" },
        "settings": {
            "language": user.locale.as_ref().map(|l| l.as_str()).unwrap_or("en"),
            "units": "metric"
        },
        "consent": {
            "profile": choice("profile"),
            "measurements": choice("measurements"),
            "openData": choice("openData")
        },
        "time": {"created": rfc3339(user.created_at), "login": rfc3339(now)},
        "patron": 0,
        "bio": "",
        "picture": "",
        "social": {"twitter": "", "instagram": "", "github": ""},
        "newsletter": false
    })
}

/// The FreeSewing sign-in surface (seed 001): `/oauth/*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OauthConfig {
    /// Providers offered here (empty: every configured one).
    pub providers: Vec<String>,
    /// Languages `/oauth/init` accepts; stored as the user's locale.
    pub languages: Vec<String>,
    /// Create an account for a person seen for the first time.
    pub signup: bool,
    /// Where a returning person is sent: `{frontend}`, `{confirmation}`,
    /// `{validation}`, `{provider}`, `{language}` are filled in. (`{state}`
    /// is refused: whoever called `/oauth/init` knows it.)
    pub login_redirect: String,
    /// Where a new person is sent (same placeholders).
    pub signup_redirect: String,
    /// How long a confirmation may wait for `/oauth/login`.
    pub confirmation_ttl_secs: i64,
    /// Providers whose authorize URL the front end builds itself from
    /// `/oauth/init`'s state (freesewing.org does, for GitHub and Google).
    /// Weaker, so off (empty) by default: their callbacks are accepted
    /// without the browser's flow cookie (login CSRF is possible), and their
    /// codes are redeemed without PKCE or nonce (the client sent none). The
    /// state stays single use, bound to its provider, and lives ten minutes.
    pub client_built_authorize: Vec<String>,
}

impl Default for OauthConfig {
    fn default() -> Self {
        OauthConfig {
            providers: Vec::new(),
            languages: ["en", "de", "es", "fr", "nl"].map(String::from).to_vec(),
            signup: true,
            login_redirect: "{frontend}/login/callback/{confirmation}/{validation}".into(),
            signup_redirect: "{frontend}/confirm/signup/{confirmation}/".into(),
            confirmation_ttl_secs: 300,
            client_built_authorize: Vec::new(),
        }
    }
}

impl OauthConfig {
    /// Fill a redirect template.
    pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
        let mut out = template.to_string();
        for (k, v) in values {
            out = out.replace(&format!("{{{k}}}"), v);
        }
        out
    }
}

/// Checks of this surface's config section (`config check`, start).
fn validate(cfg: &Config, errors: &mut Vec<ConfigError>) {
    let o = &cfg.oauth;
    for (key, list) in [
        ("oauth.providers", &o.providers),
        ("oauth.client_built_authorize", &o.client_built_authorize),
    ] {
        for p in list {
            if !cfg.providers.contains_key(p) {
                errors.push(err(key, format!("{p:?} is not a configured provider")));
            }
        }
    }
    if o.languages.is_empty()
        || o.languages
            .iter()
            .any(|l| crate::core::Locale::parse(l).is_err())
    {
        errors.push(err(
            "oauth.languages",
            "must be a non-empty list of language codes",
        ));
    }
    if !(30..=3600).contains(&o.confirmation_ttl_secs) {
        errors.push(err(
            "oauth.confirmation_ttl_secs",
            "must be between 30 and 3600",
        ));
    }
    let frontend = cfg
        .server
        .frontend_url
        .clone()
        .unwrap_or_else(|| cfg.server.public_url());
    for (key, template) in [
        ("oauth.login_redirect", &o.login_redirect),
        ("oauth.signup_redirect", &o.signup_redirect),
    ] {
        // Every language a flow may carry must land on an allowed origin.
        let off_origin = o.languages.iter().any(|language| {
            let origins = cfg.server.allowed_origins(std::slice::from_ref(language));
            let sample = OauthConfig::fill(
                template,
                &[
                    ("frontend", frontend.as_str().trim_end_matches('/')),
                    ("confirmation", "c"),
                    ("validation", "v"),
                    ("provider", "p"),
                    ("language", language),
                ],
            );
            !url::Url::parse(&sample)
                .is_ok_and(|u| origins.contains(&u.origin().ascii_serialization()))
        });
        if off_origin {
            errors.push(err(
                    key,
                    "must be a URL on the front end's origin or server.allowed_redirect_origins (for every language)",
                ));
        }
        if template.contains("{state}") {
            errors.push(err(
                key,
                "must not carry {state}: whoever called /oauth/init knows it; use {confirmation}",
            ));
        } else if !template.contains("{confirmation}") {
            errors.push(err(key, "must carry {confirmation}"));
        }
    }
}
