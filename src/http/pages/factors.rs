//! Second factors on the pages: the second step of a sign-in
//! (`/login/second-factor`: a TOTP code, a recovery code, or setting up
//! TOTP when the policy asks for it), and the account's own TOTP: set up
//! with a QR code made here (an SVG in a `data:` image, never sent
//! elsewhere), confirmed by one code, recovery codes shown once, made
//! again, removed. Adding, removing and new codes need a recent sign-in
//! (step-up).
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::{Extension, Router};
use base64::Engine;
use minijinja::context;
use serde::Deserialize;

use super::super::AppState;
use super::super::extract::{Client, cookie_value, cookie_values, set_cookie};
use super::{
    Page, PageForm, RETURN_COOKIE, SURFACE, Settings, csrf_token, language, require_session,
    see_other,
};
use crate::core::secret::TokenFormat;
use crate::core::totp::TotpEnrolment;
use crate::core::{
    Error, Proof, SecondFactorNeed, SecondStep, SessionCheck, mfa::PENDING_TTL_SECS,
};

/// Holds the pending sign-in's token between the two steps.
pub(super) const PENDING_COOKIE: &str = "authgate_mfa";
const PENDING_PATH: &str = "/login/second-factor";

pub(super) fn routes(router: Router<AppState>) -> Router<AppState> {
    use axum::routing::{get, post};
    router
        .route(
            PENDING_PATH,
            get(second_factor_page).post(second_factor_post),
        )
        .route("/account/totp/begin", post(account_totp_begin))
        .route("/account/totp/confirm", post(account_totp_confirm))
        .route("/account/totp/remove", post(account_totp_remove))
        .route("/account/recovery-codes", post(account_recovery_codes))
}

/// A first factor on the pages that needs a second: on to the second step,
/// the pending sign-in's token in its cookie (never a URL).
pub(super) fn to_second_step(
    s: &Settings,
    token: &str,
    mut cookies: Vec<Option<axum::http::HeaderValue>>,
) -> Response {
    cookies.push(pending_cookie(s, token));
    see_other(PENDING_PATH, cookies)
}

pub(super) fn pending_cookie(s: &Settings, token: &str) -> Option<axum::http::HeaderValue> {
    set_cookie(
        PENDING_COOKIE,
        token,
        PENDING_PATH,
        Some(PENDING_TTL_SECS),
        s.secure,
    )
}

/// The QR code of an `otpauth://` URI, as an SVG `data:` URI (made here:
/// the secret goes to no one else).
pub(super) fn qr_data_uri(uri: &str) -> Option<String> {
    let code = qrcode::QrCode::new(uri.as_bytes()).ok()?;
    let svg = code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(220, 220)
        .quiet_zone(true)
        .build();
    Some(format!(
        "data:image/svg+xml;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(svg)
    ))
}

/// The secret in groups of four, as people type it.
fn grouped(secret: &str) -> String {
    secret
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The TOTP set-up page: QR code, secret, first code.
fn setup_page(
    s: &Settings,
    headers: &HeaderMap,
    lang: &'static str,
    enrolment: &TotpEnrolment,
    action: &str,
    error: Option<&str>,
) -> Response {
    let (csrf, cookie) = csrf_token(s, headers);
    let page = Page::new(s, lang)
        .status(if error.is_some() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        })
        .cookie(cookie);
    let error = error.map(|k| page.text(k));
    page.render(
        "totp_setup.html",
        "totp_setup_title",
        context! {
            csrf => csrf, action => action, error => error,
            qr => qr_data_uri(&enrolment.uri), secret => grouped(&enrolment.secret),
            pending => action == PENDING_PATH,
        },
    )
}

/// The recovery codes, shown once, and the way on.
fn codes_page(
    s: &Settings,
    lang: &'static str,
    codes: &[String],
    next: &str,
    cookies: Vec<Option<axum::http::HeaderValue>>,
) -> Response {
    let mut page = Page::new(s, lang);
    for c in cookies {
        page = page.cookie(c);
    }
    page.render(
        "recovery_codes.html",
        "recovery_title",
        context! { codes => codes.to_vec(), next => next },
    )
}

// ---- the second step of a sign-in

/// What a person is told of a refused code: locked for now, or wrong.
fn refused_code(e: &Error, recovery: bool) -> &'static str {
    match e {
        Error::RateLimited { .. } => "err_rate_limited",
        _ if recovery => "wrong_recovery_code",
        _ => "wrong_totp_code",
    }
}

/// Signed in (a second step, a passkey): the browser's previous session
/// ends (one browser, one session) and the kept return target is spent.
/// That target, and the cookies that say so.
pub(super) async fn signed_in_cookies(
    state: &AppState,
    s: &Settings,
    headers: &HeaderMap,
    client: &crate::core::ClientMeta,
    session: &str,
) -> (Option<String>, Vec<Option<axum::http::HeaderValue>>) {
    let core = &state.core;
    for old in cookie_values(headers, &s.session_cookie) {
        if let Err(e) = core.revoke_session_token(&old, client).await {
            tracing::warn!(error = %e, "sign-in: cannot end the browser's previous session");
        }
    }
    let landing = match cookie_value(headers, RETURN_COOKIE) {
        Some(key) => core.take_return(&key, SURFACE).await.ok().flatten(),
        None => None,
    };
    let cookies = vec![
        s.session_set_cookie(session, s.max_age),
        set_cookie(PENDING_COOKIE, "", PENDING_PATH, Some(0), s.secure),
        set_cookie(RETURN_COOKIE, "", "/login", Some(0), s.secure),
    ];
    (landing, cookies)
}

#[derive(Deserialize, Default)]
struct SecondFactorQuery {
    lang: Option<String>,
}

async fn second_factor_page(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    Client(client): Client,
    headers: HeaderMap,
    query: Result<
        axum::extract::Query<SecondFactorQuery>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Response {
    let q = query.map(|axum::extract::Query(q)| q).unwrap_or_default();
    let Some(token) = cookie_value(&headers, PENDING_COOKIE) else {
        let lang = language(q.lang.as_deref(), &headers, None);
        return Page::new(&s, lang).error(StatusCode::GONE, "err_expired");
    };
    step_page(
        &state,
        &s,
        &headers,
        &client,
        &token,
        q.lang.as_deref(),
        None,
    )
    .await
}

/// The second step of the pending sign-in `token`, in the language asked
/// for (else the person's): setting up TOTP when that is due (the one in
/// progress, else a new one), else what the person can show; with the
/// refusal `error` (400) when a try was refused.
async fn step_page(
    state: &AppState,
    s: &Settings,
    headers: &HeaderMap,
    client: &crate::core::ClientMeta,
    token: &str,
    asked: Option<&str>,
    error: Option<&str>,
) -> Response {
    let core = &state.core;
    let pending = match core.pending_sign_in(token, SURFACE).await {
        Ok(p) => p,
        Err(e) => return Page::new(s, language(asked, headers, None)).core_error(&e),
    };
    let lang = language(asked, headers, pending.user.locale.as_ref());
    if pending.need == SecondFactorNeed::Enrol {
        let issuer = &core.mfa_policy().issuer;
        let enrolment = match core.totp_enrolment_in_progress(&pending.user, issuer).await {
            Ok(Some(e)) => Ok(e),
            Ok(None) => core.begin_pending_totp(token, SURFACE, client).await,
            Err(e) => Err(e),
        };
        return match enrolment {
            Ok(e) => setup_page(s, headers, lang, &e, PENDING_PATH, error),
            Err(e) => Page::new(s, lang).core_error(&e),
        };
    }
    let (csrf, cookie) = csrf_token(s, headers);
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let page = Page::new(s, lang).status(status).cookie(cookie);
    let error = error.map(|k| page.text(k));
    page.render(
        "second_factor.html",
        "second_factor_title",
        context! {
            csrf => csrf, error => error, totp => pending.totp, passkey => pending.passkey,
        },
    )
}

#[derive(Deserialize)]
struct SecondFactorForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    lang: Option<String>,
    /// `totp`, `recovery` or `enrol`.
    #[serde(default)]
    proof: String,
    #[serde(default)]
    code: String,
}

async fn second_factor_post(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    Client(client): Client,
    headers: HeaderMap,
    PageForm { form: f, lang }: PageForm<SecondFactorForm>,
) -> Response {
    let Some(token) = cookie_value(&headers, PENDING_COOKIE) else {
        return Page::new(&s, lang).error(StatusCode::GONE, "err_expired");
    };
    let proof = match f.proof.as_str() {
        "totp" => Proof::Totp(&f.code),
        "recovery" => Proof::Recovery(&f.code),
        "enrol" => Proof::Enrol(&f.code),
        _ => return Page::new(&s, lang).error(StatusCode::BAD_REQUEST, "err_forbidden"),
    };
    let core = &state.core;
    let step = core
        .second_factor_done(&token, SURFACE, proof, TokenFormat::UrlSafe32, &client)
        .await;
    let clear = set_cookie(PENDING_COOKIE, "", PENDING_PATH, Some(0), s.secure);
    match step {
        Ok(SecondStep::Done {
            token: session,
            then,
            recovery_codes,
            ..
        }) => {
            let landing = then.unwrap_or_else(|| "/account".into());
            let (_, cookies) = signed_in_cookies(&state, &s, &headers, &client, &session).await;
            match recovery_codes {
                Some(codes) => codes_page(&s, lang, &codes, &landing, cookies),
                None => see_other(&landing, cookies),
            }
        }
        Ok(SecondStep::Refused {
            error,
            pending: Some(again),
        }) => {
            let key = refused_code(&error, matches!(proof, Proof::Recovery(_)));
            let mut r =
                step_page(&state, &s, &headers, &client, &again, Some(lang), Some(key)).await;
            if let Some(c) = pending_cookie(&s, &again) {
                r.headers_mut().append(axum::http::header::SET_COOKIE, c);
            }
            r
        }
        Ok(SecondStep::Refused { error, .. }) | Err(error) => {
            Page::new(&s, lang).cookie(clear).core_error(&error)
        }
    }
}

// ---- the account's TOTP

/// A sensitive action: the session must be recent, else (`Some`) the way
/// to a new sign-in that comes back to `back_to`.
pub(super) fn step_up(
    state: &AppState,
    check: &SessionCheck,
    lang: &'static str,
    back_to: &str,
) -> Option<Response> {
    state.core.require_recent_sign_in(&check.session).err()?;
    let back = super::super::extract::url_encode(back_to);
    Some(see_other(
        &format!("/login?reauth=1&step_up=1&return_to={back}&lang={lang}"),
        vec![],
    ))
}

#[derive(Deserialize)]
struct AccountForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    lang: Option<String>,
    #[serde(default)]
    code: String,
}

super::posted!(AccountForm, SecondFactorForm);

/// The signed-in person of a TOTP form, with second factors on and a
/// recent sign-in (each of these forms is a sensitive action: step-up).
async fn account_of(
    state: &AppState,
    s: &Settings,
    headers: &HeaderMap,
    lang: &'static str,
) -> Result<(SessionCheck, &'static str), Response> {
    let check = require_session(state, s, headers, Some(lang)).await?;
    if !s.mfa {
        return Err(Page::new(s, lang).error(StatusCode::NOT_FOUND, "err_not_found"));
    }
    let lang = language(Some(lang), headers, check.user.locale.as_ref());
    if let Some(r) = step_up(state, &check, lang, "/account") {
        return Err(r);
    }
    Ok((check, lang))
}

async fn account_totp_begin(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    Client(client): Client,
    headers: HeaderMap,
    PageForm { lang, .. }: PageForm<AccountForm>,
) -> Response {
    let (check, lang) = match account_of(&state, &s, &headers, lang).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let core = &state.core;
    let issuer = core.mfa_policy().issuer.clone();
    match core.begin_totp(&check.user, &issuer, &client).await {
        Ok(e) => setup_page(&s, &headers, lang, &e, "/account/totp/confirm", None),
        Err(Error::Conflict(_)) => see_other(&format!("/account?lang={lang}"), vec![]),
        Err(e) => Page::new(&s, lang).core_error(&e),
    }
}

async fn account_totp_confirm(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    Client(client): Client,
    headers: HeaderMap,
    PageForm { form: f, lang }: PageForm<AccountForm>,
) -> Response {
    let (check, lang) = match account_of(&state, &s, &headers, lang).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let core = &state.core;
    match core.confirm_totp(check.user.id, &f.code, &client).await {
        Ok(codes) => codes_page(&s, lang, &codes, "/account", vec![]),
        Err(e @ (Error::Unauthorized | Error::RateLimited { .. })) => {
            let key = refused_code(&e, false);
            let issuer = &core.mfa_policy().issuer;
            match core.totp_enrolment_in_progress(&check.user, issuer).await {
                Ok(Some(en)) => {
                    setup_page(&s, &headers, lang, &en, "/account/totp/confirm", Some(key))
                }
                Ok(None) => see_other(&format!("/account?lang={lang}"), vec![]),
                Err(e) => Page::new(&s, lang).core_error(&e),
            }
        }
        Err(Error::Conflict(_) | Error::NotFound) => {
            see_other(&format!("/account?lang={lang}"), vec![])
        }
        Err(e) => Page::new(&s, lang).core_error(&e),
    }
}

async fn account_totp_remove(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    Client(client): Client,
    headers: HeaderMap,
    PageForm { lang, .. }: PageForm<AccountForm>,
) -> Response {
    let (check, lang) = match account_of(&state, &s, &headers, lang).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    match state.core.remove_totp(check.user.id, &client).await {
        Ok(_) => see_other(&format!("/account?lang={lang}&saved=1"), vec![]),
        Err(e) => Page::new(&s, lang).core_error(&e),
    }
}

async fn account_recovery_codes(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    Client(client): Client,
    headers: HeaderMap,
    PageForm { lang, .. }: PageForm<AccountForm>,
) -> Response {
    let (check, lang) = match account_of(&state, &s, &headers, lang).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let core = &state.core;
    match core.second_factors(check.user.id).await {
        Ok(f) if f.totp => {}
        Ok(_) => return see_other(&format!("/account?lang={lang}"), vec![]),
        Err(e) => return Page::new(&s, lang).core_error(&e),
    }
    match core.regenerate_recovery_codes(check.user.id, &client).await {
        Ok(codes) => codes_page(&s, lang, &codes, "/account", vec![]),
        Err(e) => Page::new(&s, lang).core_error(&e),
    }
}
