//! Passkeys on the pages: the sign-in page's "Sign in with a passkey" (and
//! the browser's autofill, conditional mediation), and the account page's
//! list with add, rename and remove. The WebAuthn ceremonies run in
//! `/assets/passkey.js` (first-party, no inline script) against four JSON
//! endpoints; rename and remove are plain forms. The JSON endpoints take
//! the page's CSRF token in `X-CSRF-Token` and must come from authgate's
//! origin, and answer `{"error", "message"}` (the message in the person's
//! language) on every refusal.
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::super::AppState;
use super::super::extract::{Client, cookie_value};
use super::factors::{self, PENDING_COOKIE, step_up};
use super::{
    Page, PageForm, SESSION_KIND, SURFACE, Settings, language, require_session, see_other,
    trusted_post,
};
use crate::core::secret::TokenFormat;
use crate::core::{Error, NewSession, Proof, SecondStep};

/// The browser's script for the ceremonies.
const SCRIPT: &str = include_str!("assets/passkey.js");

pub(super) fn routes(router: Router<AppState>) -> Router<AppState> {
    use axum::routing::{get, post};
    router
        .route("/assets/passkey.js", get(script))
        .route("/login/passkey/options", post(sign_in_options))
        .route("/login/passkey/finish", post(sign_in_finish))
        .route(
            "/login/second-factor/passkey/options",
            post(second_step_options),
        )
        .route(
            "/login/second-factor/passkey/finish",
            post(second_step_finish),
        )
        .route("/account/passkeys/options", post(add_options))
        .route("/account/passkeys/finish", post(add_finish))
        .route("/account/passkeys/rename", post(rename))
        .route("/account/passkeys/remove", post(remove))
}

async fn script() -> Response {
    (
        [
            (
                axum::http::header::CONTENT_TYPE,
                "text/javascript; charset=utf-8",
            ),
            (axum::http::header::CACHE_CONTROL, "public, max-age=300"),
        ],
        SCRIPT,
    )
        .into_response()
}

/// A JSON refusal: a code for the script and a message for the person.
fn refusal(
    s: &Settings,
    lang: &'static str,
    status: StatusCode,
    code: &str,
    key: &str,
) -> Response {
    let message = Page::new(s, lang).text(key);
    (status, Json(json!({ "error": code, "message": message }))).into_response()
}

fn core_refusal(s: &Settings, lang: &'static str, e: &Error) -> Response {
    let (status, code, key) = match e {
        Error::Invalid { .. } => (StatusCode::BAD_REQUEST, "invalid", "passkey_refused"),
        Error::Unauthorized => (StatusCode::UNAUTHORIZED, "refused", "passkey_refused"),
        Error::Conflict(_) => (StatusCode::CONFLICT, "conflict", "passkey_taken"),
        Error::RateLimited { .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "err_rate_limited",
        ),
        Error::Disabled => (StatusCode::FORBIDDEN, "disabled", "err_disabled"),
        Error::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "err_not_found"),
        e if e.is_outage() => (
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "err_unavailable",
        ),
        Error::Unavailable(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "err_unavailable",
        ),
        e => {
            tracing::error!(error = %e, "passkey: request failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "err_internal",
            )
        }
    };
    refusal(s, lang, status, code, key)
}

#[derive(Deserialize, Default)]
struct CeremonyBody {
    #[serde(default)]
    lang: Option<String>,
    #[serde(default)]
    conditional: bool,
    #[serde(default)]
    ceremony: String,
    #[serde(default)]
    name: String,
    /// The browser's `PublicKeyCredential`, as JSON.
    #[serde(default)]
    credential: Option<Value>,
}

/// A JSON post from one of the pages: parsed, from authgate's origin with
/// this browser's CSRF token (header), passkeys on.
fn posted(
    s: &Settings,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(CeremonyBody, &'static str), Box<Response>> {
    let fallback = language(None, headers, None);
    if !s.passkeys {
        return Err(Box::new(refusal(
            s,
            fallback,
            StatusCode::NOT_FOUND,
            "not_found",
            "err_not_found",
        )));
    }
    let token = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !trusted_post(s, headers, token) {
        return Err(Box::new(refusal(
            s,
            fallback,
            StatusCode::FORBIDDEN,
            "forbidden",
            "err_forbidden",
        )));
    }
    let Ok(b) = serde_json::from_slice::<CeremonyBody>(body) else {
        return Err(Box::new(refusal(
            s,
            fallback,
            StatusCode::BAD_REQUEST,
            "invalid",
            "passkey_refused",
        )));
    };
    let lang = language(b.lang.as_deref(), headers, None);
    Ok((b, lang))
}

/// The credential as the core takes it (JSON text); missing: malformed.
fn credential_of(b: &CeremonyBody) -> Result<String, Error> {
    b.credential
        .as_ref()
        .filter(|v| v.is_object())
        .map(Value::to_string)
        .ok_or(Error::Invalid {
            field: "credential",
            message: "missing".into(),
        })
}

async fn sign_in_options(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    Client(client): Client,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (b, lang) = match posted(&s, &headers, &body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    match state
        .core
        .begin_passkey_sign_in(b.conditional, client.ip.as_deref())
        .await
    {
        Ok(c) => ceremony_json(c),
        Err(e) => core_refusal(&s, lang, &e),
    }
}

async fn sign_in_finish(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    Client(client): Client,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (b, lang) = match posted(&s, &headers, &body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let core = &state.core;
    let session = NewSession {
        kind: SESSION_KIND,
        method: "",
        format: TokenFormat::UrlSafe32,
    };
    let signed = match credential_of(&b) {
        Ok(c) => {
            core.finish_passkey_sign_in(&b.ceremony, &c, session, &client)
                .await
        }
        Err(e) => Err(e),
    };
    let token = match signed {
        Ok((token, _)) => token,
        Err(e) => return core_refusal(&s, lang, &e),
    };
    let (landing, cookies) =
        factors::signed_in_cookies(&state, &s, &headers, &client, &token).await;
    json_with_cookies(
        json!({ "next": landing.as_deref().unwrap_or("/account") }),
        cookies,
    )
}

/// A JSON answer that also sets cookies.
fn json_with_cookies(body: Value, cookies: Vec<Option<axum::http::HeaderValue>>) -> Response {
    let mut r = Json(body).into_response();
    for c in cookies.into_iter().flatten() {
        r.headers_mut().append(axum::http::header::SET_COOKIE, c);
    }
    r
}

/// A started ceremony, for the script.
fn ceremony_json(c: crate::core::passkeys::Ceremony) -> Response {
    Json(json!({ "ceremony": c.token, "options": c.options })).into_response()
}

/// The second step of a pending sign-in, with the person's own passkey.
async fn second_step_options(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (_, lang) = match posted(&s, &headers, &body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let Some(pending) = cookie_value(&headers, PENDING_COOKIE) else {
        return refusal(&s, lang, StatusCode::GONE, "expired", "err_expired");
    };
    match state.core.begin_pending_passkey(&pending, SURFACE).await {
        Ok(c) => ceremony_json(c),
        Err(Error::Unauthorized) => refusal(&s, lang, StatusCode::GONE, "expired", "err_expired"),
        Err(e) => core_refusal(&s, lang, &e),
    }
}

async fn second_step_finish(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    Client(client): Client,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (b, lang) = match posted(&s, &headers, &body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let Some(pending) = cookie_value(&headers, PENDING_COOKIE) else {
        return refusal(&s, lang, StatusCode::GONE, "expired", "err_expired");
    };
    let credential = b
        .credential
        .as_ref()
        .map(Value::to_string)
        .unwrap_or_default();
    let proof = Proof::Passkey {
        ceremony: &b.ceremony,
        credential: &credential,
    };
    let step = state
        .core
        .second_factor_done(&pending, SURFACE, proof, TokenFormat::UrlSafe32, &client)
        .await;
    match step {
        Ok(SecondStep::Done { token, then, .. }) => {
            let (_, cookies) =
                factors::signed_in_cookies(&state, &s, &headers, &client, &token).await;
            let landing = then.unwrap_or_else(|| "/account".into());
            json_with_cookies(json!({ "next": landing }), cookies)
        }
        Ok(SecondStep::Refused { error, pending }) => {
            let mut r = core_refusal(&s, lang, &error);
            if let Some(c) = pending.and_then(|p| factors::pending_cookie(&s, &p)) {
                r.headers_mut().append(axum::http::header::SET_COOKIE, c);
            }
            r
        }
        Err(Error::Unauthorized) => refusal(&s, lang, StatusCode::GONE, "expired", "err_expired"),
        Err(e) => core_refusal(&s, lang, &e),
    }
}

/// The signed-in person of a JSON post, with a recent sign-in (step-up):
/// else a refusal whose `next` leads to the new sign-in.
async fn recent_person(
    state: &AppState,
    s: &Settings,
    headers: &HeaderMap,
    lang: &'static str,
) -> Result<crate::core::SessionCheck, Response> {
    let check = match super::signed_in(state, s, headers).await {
        Ok(Some((_, check))) => check,
        Ok(None) => {
            return Err(refusal(
                s,
                lang,
                StatusCode::UNAUTHORIZED,
                "signed_out",
                "err_expired",
            ));
        }
        Err(e) => return Err(core_refusal(s, lang, &e)),
    };
    if let Some(to) = step_up(state, &check, lang, "/account") {
        let next = to
            .headers()
            .get(axum::http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("/login")
            .to_string();
        let message = Page::new(s, lang).text("step_up_needed");
        return Err((
            StatusCode::FORBIDDEN,
            Json(json!({ "error": "step_up", "message": message, "next": next })),
        )
            .into_response());
    }
    Ok(check)
}

async fn add_options(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (_, lang) = match posted(&s, &headers, &body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let check = match recent_person(&state, &s, &headers, lang).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match state.core.begin_passkey_registration(&check.user).await {
        Ok(c) => ceremony_json(c),
        Err(e) => core_refusal(&s, lang, &e),
    }
}

async fn add_finish(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    Client(client): Client,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (b, lang) = match posted(&s, &headers, &body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let check = match recent_person(&state, &s, &headers, lang).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let added = match credential_of(&b) {
        Ok(c) => {
            state
                .core
                .finish_passkey_registration(&check.user, &b.ceremony, &b.name, &c, &client)
                .await
        }
        Err(e) => Err(e),
    };
    match added {
        Ok(p) => Json(json!({ "next": format!("/account?lang={lang}&saved=1"), "id": p.id }))
            .into_response(),
        Err(e) => core_refusal(&s, lang, &e),
    }
}

#[derive(Deserialize)]
struct PasskeyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    lang: Option<String>,
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
}

super::posted!(PasskeyForm);

async fn rename(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    Client(client): Client,
    headers: HeaderMap,
    PageForm { form: f, lang }: PageForm<PasskeyForm>,
) -> Response {
    let check = match require_session(&state, &s, &headers, Some(lang)).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Ok(id) = uuid::Uuid::parse_str(&f.id) else {
        return Page::new(&s, lang).error(StatusCode::BAD_REQUEST, "err_not_found");
    };
    match state
        .core
        .rename_passkey(check.user.id, id, &f.name, &client)
        .await
    {
        Ok(true) => see_other(&format!("/account?lang={lang}&saved=1"), vec![]),
        Ok(false) => Page::new(&s, lang).error(StatusCode::NOT_FOUND, "err_not_found"),
        Err(Error::Invalid { .. }) => {
            Page::new(&s, lang).error(StatusCode::BAD_REQUEST, "passkey_name_too_long")
        }
        Err(e) => Page::new(&s, lang).core_error(&e),
    }
}

async fn remove(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    Client(client): Client,
    headers: HeaderMap,
    PageForm { form: f, lang }: PageForm<PasskeyForm>,
) -> Response {
    let check = match require_session(&state, &s, &headers, Some(lang)).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Some(r) = step_up(&state, &check, lang, "/account") {
        return r;
    }
    let Ok(id) = uuid::Uuid::parse_str(&f.id) else {
        return Page::new(&s, lang).error(StatusCode::BAD_REQUEST, "err_not_found");
    };
    match state.core.remove_passkey(check.user.id, id, &client).await {
        Ok(true) => see_other(&format!("/account?lang={lang}&saved=1"), vec![]),
        Ok(false) => Page::new(&s, lang).error(StatusCode::NOT_FOUND, "err_not_found"),
        Err(e) => Page::new(&s, lang).core_error(&e),
    }
}
