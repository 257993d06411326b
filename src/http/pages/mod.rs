//! authgate's own pages (issue 18, first step): `GET /` sends a person to
//! their account or to sign-in; `GET /login` signs in by a code sent by
//! e-mail (address → "check your mail" → code → signed in, with the same
//! rules, limits, lists and outbox as the e-mail code API); `GET /account`
//! shows the signed-in person and their sessions; `POST /logout` ends the
//! session.
//!
//! Server-rendered HTML (minijinja, auto-escaped) that works without
//! JavaScript, in five locales, with no inline script or style: the strict
//! `Content-Security-Policy` allows only authgate's own stylesheets. Every
//! form POST carries a CSRF token that must equal this browser's CSRF
//! cookie, and must come from authgate's own origin. Failures are a page in
//! the person's language, never a JSON body.
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use axum::extract::{Form, Query, State};
use axum::http::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use minijinja::{Environment, context};
use serde::{Deserialize, Serialize};
use tower_http::set_header::SetResponseHeaderLayer;
use utoipa_axum::router::OpenApiRouter;

use super::extract::{Client, check_cookie_keys, cookie_value, cookie_values, set_cookie};
use super::{AppState, Surface, with_settings};
use crate::config::{Config, ConfigError, err};
use crate::core::secret::{TokenFormat, ct_eq, new_token};
use crate::core::{CodeCheck, Email, Error, Locale, SendCodeOutcome, clock::rfc3339};

/// The `kind` of the sessions these pages make.
const SESSION_KIND: &str = "page";
/// The locales with their own texts (as the mails).
const LOCALES: [&str; 5] = ["en", "de", "fr", "es", "nl"];
/// Pages may load authgate's own stylesheets and images from anywhere over
/// https (a configured logo); nothing runs, nothing frames them.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' https: data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub const DECLARATION: Surface = Surface {
    tag: "pages",
    description: "authgate's own sign-in and account pages (HTML)",
    enabled: |s| s.pages,
    router,
    errors: None,
    validate,
};

/// The pages' config section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PagesConfig {
    /// The product the pages name (default: `mail_login.product_name`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product_name: Option<String>,
    /// A logo shown instead of the product's name (an https or site URL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logo_url: Option<String>,
    /// The colour of buttons, links and focus rings (`#rrggbb`).
    pub primary_color: String,
    /// A further stylesheet loaded after the built-in one (an https URL;
    /// it must be allowed by the CSP, so only authgate's own origin works
    /// unless served from there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stylesheet_url: Option<String>,
    /// The session cookie's name.
    pub cookie_name: String,
    /// Prefix the cookies with `__Host-` (Secure, Path=/, no Domain). Needs
    /// https. Unset: on whenever `server.public_url` is https.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie_host_prefix: Option<bool>,
}

impl Default for PagesConfig {
    fn default() -> Self {
        PagesConfig {
            product_name: None,
            logo_url: None,
            primary_color: "#1f4fc1".into(),
            stylesheet_url: None,
            cookie_name: "authgate_session".into(),
            cookie_host_prefix: None,
        }
    }
}

fn validate(cfg: &Config, errors: &mut Vec<ConfigError>) {
    let p = &cfg.pages;
    let hex = p.primary_color.len() == 7
        && p.primary_color.starts_with('#')
        && p.primary_color[1..].chars().all(|c| c.is_ascii_hexdigit());
    if !hex {
        errors.push(err("pages.primary_color", "must be a colour as #rrggbb"));
    }
    check_cookie_keys(cfg, "pages", &p.cookie_name, p.cookie_host_prefix, errors);
    for (key, url) in [
        ("pages.logo_url", &p.logo_url),
        ("pages.stylesheet_url", &p.stylesheet_url),
    ] {
        if let Some(u) = url
            && !(u.starts_with("https://") || (u.starts_with('/') && !u.starts_with("//")))
        {
            errors.push(err(key, "must be an https URL or a path on authgate"));
        }
    }
}

/// What the handlers need, resolved from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    product: String,
    logo_url: Option<String>,
    stylesheet_url: Option<String>,
    primary_color: String,
    session_cookie: String,
    csrf_cookie: String,
    secure: bool,
    max_age: i64,
    /// authgate's own origin: form posts must come from it.
    origin: String,
    code_minutes: i64,
}

impl Settings {
    pub fn new(cfg: &Config) -> Self {
        let p = &cfg.pages;
        let public = cfg.server.public_url();
        let https = public.scheme() == "https";
        let prefix = if p.cookie_host_prefix.unwrap_or(https) {
            "__Host-"
        } else {
            ""
        };
        Settings {
            product: p
                .product_name
                .clone()
                .unwrap_or_else(|| cfg.mail_login.product_name.clone()),
            logo_url: p.logo_url.clone(),
            stylesheet_url: p.stylesheet_url.clone(),
            primary_color: p.primary_color.clone(),
            session_cookie: format!("{prefix}{}", p.cookie_name),
            csrf_cookie: format!("{prefix}authgate_csrf"),
            secure: https || p.cookie_host_prefix == Some(true),
            max_age: cfg.session.absolute_timeout_secs,
            origin: public.origin().ascii_serialization(),
            code_minutes: cfg.mail_login.code_ttl_secs / 60,
        }
    }
}

fn router(cfg: &Config) -> OpenApiRouter<AppState> {
    let pages: Router<AppState> = Router::new()
        .route("/", get(home))
        .route("/login", get(login_page))
        .route("/login/code", post(send_code))
        .route("/login/verify", post(verify_code))
        .route("/account", get(account))
        .route("/logout", post(logout))
        .route("/assets/authgate.css", get(stylesheet))
        .route("/assets/theme.css", get(theme))
        .layer(SetResponseHeaderLayer::overriding(
            CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            axum::http::header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        // Not `no-referrer`: with it, browsers send `Origin: null` on the
        // pages' own form posts, and the origin check could not tell them
        // from a forged one. `same-origin` tells other sites nothing (and
        // no page URL carries a secret: codes and tokens travel in bodies).
        .layer(SetResponseHeaderLayer::overriding(
            axum::http::header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ));
    with_settings(OpenApiRouter::from(pages), Settings::new(cfg))
}

// ---- texts and templates

type Texts = BTreeMap<String, String>;

fn texts() -> &'static BTreeMap<&'static str, Texts> {
    static TEXTS: OnceLock<BTreeMap<&'static str, Texts>> = OnceLock::new();
    TEXTS.get_or_init(|| {
        let files = [
            ("en", include_str!("locales/en.toml")),
            ("de", include_str!("locales/de.toml")),
            ("fr", include_str!("locales/fr.toml")),
            ("es", include_str!("locales/es.toml")),
            ("nl", include_str!("locales/nl.toml")),
        ];
        files
            .into_iter()
            .map(|(l, text)| (l, toml::from_str(text).unwrap_or_default()))
            .collect()
    })
}

fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
        for (name, source) in [
            ("base.html", include_str!("templates/base.html")),
            ("login.html", include_str!("templates/login.html")),
            ("code.html", include_str!("templates/code.html")),
            ("account.html", include_str!("templates/account.html")),
            ("error.html", include_str!("templates/error.html")),
        ] {
            if let Err(e) = env.add_template(name, source) {
                tracing::error!(template = name, error = %e, "a built-in page template does not parse");
            }
        }
        env
    })
}

/// The page's language: the `lang` asked for, else the first of
/// `Accept-Language` authgate has texts for, else the person's stored
/// locale, else English.
fn language(asked: Option<&str>, headers: &HeaderMap, stored: Option<&Locale>) -> &'static str {
    let known = |tag: &str| {
        let primary = tag
            .split(['-', '_'])
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        LOCALES.into_iter().find(|l| *l == primary)
    };
    if let Some(l) = asked.and_then(known) {
        return l;
    }
    if let Some(accept) = headers
        .get(axum::http::header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
    {
        let mut tags: Vec<(f32, &str)> = accept
            .split(',')
            .filter_map(|part| {
                let mut it = part.trim().split(';');
                let tag = it.next()?.trim();
                let q = it
                    .find_map(|p| p.trim().strip_prefix("q="))
                    .and_then(|q| q.parse().ok())
                    .unwrap_or(1.0);
                (q > 0.0).then_some((q, tag))
            })
            .collect();
        tags.sort_by(|a, b| b.0.total_cmp(&a.0));
        if let Some(l) = tags.into_iter().find_map(|(_, t)| known(t)) {
            return l;
        }
    }
    stored.and_then(|l| known(l.as_str())).unwrap_or("en")
}

/// One rendered page.
struct Page<'a> {
    s: &'a Settings,
    lang: &'static str,
    status: StatusCode,
    cookies: Vec<HeaderValue>,
}

impl<'a> Page<'a> {
    fn new(s: &'a Settings, lang: &'static str) -> Self {
        Page {
            s,
            lang,
            status: StatusCode::OK,
            cookies: Vec::new(),
        }
    }

    fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    fn cookie(mut self, c: Option<HeaderValue>) -> Self {
        self.cookies.extend(c);
        self
    }

    fn t(&self) -> &'static Texts {
        let all = texts();
        all.get(self.lang)
            .or_else(|| all.get("en"))
            .unwrap_or_else(|| {
                static EMPTY: OnceLock<Texts> = OnceLock::new();
                EMPTY.get_or_init(Texts::new)
            })
    }

    /// A text of this page's language.
    fn text(&self, key: &str) -> String {
        self.t().get(key).cloned().unwrap_or_default()
    }

    fn render(self, template: &str, title_key: &str, page: minijinja::Value) -> Response {
        let t = self.t();
        let languages: Vec<_> = LOCALES
            .iter()
            .map(|l| {
                let name = texts()
                    .get(l)
                    .and_then(|t| t.get("language_name"))
                    .cloned()
                    .unwrap_or_default();
                context! { code => *l, name => name }
            })
            .collect();
        let ctx = context! {
            lang => self.lang,
            t => t,
            title => t.get(title_key),
            product => &self.s.product,
            logo_url => &self.s.logo_url,
            stylesheet_url => &self.s.stylesheet_url,
            languages => languages,
            ..page
        };
        let html = environment()
            .get_template(template)
            .and_then(|tpl| tpl.render(ctx));
        let html = match html {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(template, error = %e, "cannot render a page");
                return (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
            }
        };
        let mut r = (self.status, html).into_response();
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        for c in self.cookies {
            r.headers_mut().append(SET_COOKIE, c);
        }
        r
    }

    /// The friendly error page: the message under `key`, a way back.
    fn error(self, status: StatusCode, key: &str) -> Response {
        let message = self.text(key);
        self.status(status)
            .render("error.html", "error_title", context! { message => message })
    }

    /// The error page for a core error.
    fn core_error(self, e: &Error) -> Response {
        let (status, key) = match e {
            Error::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "err_rate_limited"),
            Error::Disabled => (StatusCode::FORBIDDEN, "err_disabled"),
            Error::Forbidden(_) | Error::NotFound => (StatusCode::FORBIDDEN, "err_not_registered"),
            Error::Unauthorized => (StatusCode::GONE, "err_expired"),
            Error::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "err_unavailable"),
            e if e.is_outage() => (StatusCode::SERVICE_UNAVAILABLE, "err_unavailable"),
            e => {
                tracing::error!(error = %e, "page: request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "err_internal")
            }
        };
        self.error(status, key)
    }
}

fn see_other(to: &str, cookies: Vec<Option<HeaderValue>>) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(LOCATION, v);
    }
    for c in cookies.into_iter().flatten() {
        r.headers_mut().append(SET_COOKIE, c);
    }
    r
}

// ---- CSRF

/// This browser's CSRF token, and the cookie to set when it is new.
fn csrf_token(s: &Settings, headers: &HeaderMap) -> (String, Option<HeaderValue>) {
    if let Some(t) = cookie_value(headers, &s.csrf_cookie).filter(|t| t.len() == 43) {
        return (t, None);
    }
    let token = new_token(TokenFormat::UrlSafe32).unwrap_or_default();
    let cookie = set_cookie(&s.csrf_cookie, &token, "/", None, s.secure);
    (token, cookie)
}

/// A form post is this page's own: from authgate's origin (`Origin`, else
/// `Referer`: `server.public_url`'s, or the very host the request was sent
/// to, so that a newcomer who opens `http://localhost:3001/` is not
/// refused), with the CSRF token of this browser's cookie.
fn trusted_post(s: &Settings, headers: &HeaderMap, token: &str) -> bool {
    let origin = headers
        .get(axum::http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            headers
                .get(axum::http::header::REFERER)
                .and_then(|v| v.to_str().ok())
                .and_then(|r| url::Url::parse(r).ok())
                .map(|u| u.origin().ascii_serialization())
        });
    let cookie = cookie_value(headers, &s.csrf_cookie);
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok());
    let same_host = |o: &str| {
        let rest = o
            .strip_prefix("https://")
            .or_else(|| o.strip_prefix("http://"));
        rest.is_some() && rest == host
    };
    origin
        .as_deref()
        .is_some_and(|o| o == s.origin || same_host(o))
        && cookie.is_some_and(|c| !token.is_empty() && ct_eq(c.as_bytes(), token.as_bytes()))
}

/// A form one of the pages posted: parsed, from this page's origin with
/// this browser's CSRF token, in the page's language. Anything else is
/// answered with the friendly error page (400 or 403).
struct PageForm<T> {
    form: T,
    lang: &'static str,
}

/// What every page form carries.
trait Posted {
    fn csrf(&self) -> &str;
    fn lang(&self) -> Option<&str> {
        None
    }
}

impl<T> axum::extract::FromRequest<AppState> for PageForm<T>
where
    T: serde::de::DeserializeOwned + Posted + Send,
{
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &AppState) -> Result<Self, Response> {
        let Some(s) = req.extensions().get::<Arc<Settings>>().cloned() else {
            return Err((StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response());
        };
        let headers = req.headers().clone();
        let Ok(Form(form)) = Form::<T>::from_request(req, state).await else {
            let lang = language(None, &headers, None);
            return Err(Page::new(&s, lang).error(StatusCode::BAD_REQUEST, "err_forbidden"));
        };
        let lang = language(form.lang(), &headers, None);
        if !trusted_post(&s, &headers, form.csrf()) {
            return Err(Page::new(&s, lang).error(StatusCode::FORBIDDEN, "err_forbidden"));
        }
        Ok(PageForm { form, lang })
    }
}

macro_rules! posted {
    ($($form:ty),*) => {$(
        impl Posted for $form {
            fn csrf(&self) -> &str {
                &self.csrf
            }
            fn lang(&self) -> Option<&str> {
                self.lang.as_deref()
            }
        }
    )*};
}

// ---- handlers

#[derive(Deserialize, Default)]
struct LangQuery {
    lang: Option<String>,
}

/// The live session behind this browser's cookie (exactly one cookie).
async fn signed_in(
    state: &AppState,
    s: &Settings,
    headers: &HeaderMap,
) -> Result<Option<(String, crate::core::SessionCheck)>, Error> {
    let mut tokens = cookie_values(headers, &s.session_cookie);
    if tokens.len() != 1 {
        return Ok(None);
    }
    let token = tokens.remove(0);
    Ok(state
        .core
        .check_session(&token)
        .await?
        .map(|check| (token, check)))
}

async fn home(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    headers: HeaderMap,
) -> Response {
    match signed_in(&state, &s, &headers).await {
        Ok(Some(_)) => see_other("/account", vec![]),
        Ok(None) => see_other("/login", vec![]),
        Err(e) => Page::new(&s, language(None, &headers, None)).core_error(&e),
    }
}

fn login_form(
    s: &Settings,
    lang: &'static str,
    headers: &HeaderMap,
    email: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let (csrf, cookie) = csrf_token(s, headers);
    let page = Page::new(s, lang).status(status).cookie(cookie);
    let error = error.map(|k| page.text(k));
    page.render(
        "login.html",
        "sign_in_title",
        context! { csrf => csrf, email => email, error => error },
    )
}

async fn login_page(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    headers: HeaderMap,
    query: Result<Query<LangQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = query.map(|Query(q)| q).unwrap_or_default();
    let lang = language(q.lang.as_deref(), &headers, None);
    match signed_in(&state, &s, &headers).await {
        Ok(Some(_)) => see_other("/account", vec![]),
        Ok(None) => login_form(&s, lang, &headers, "", None, StatusCode::OK),
        Err(e) => Page::new(&s, lang).core_error(&e),
    }
}

#[derive(Deserialize)]
struct SendCodeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    lang: Option<String>,
    #[serde(default)]
    email: String,
}

async fn send_code(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    Client(client): Client,
    headers: HeaderMap,
    PageForm { form: f, lang }: PageForm<SendCodeForm>,
) -> Response {
    let given = f.email.trim();
    let Ok(mail) = Email::parse(given) else {
        return login_form(
            &s,
            lang,
            &headers,
            given,
            Some("invalid_email"),
            StatusCode::BAD_REQUEST,
        );
    };
    let locale = Locale::parse(lang).unwrap_or_else(|_| Locale::from_stored("en".into()));
    match state
        .core
        .send_mail_code(mail.clone(), locale, None, &client)
        .await
    {
        Ok(SendCodeOutcome::Sent { mail_login_token }) => {
            code_form(&s, lang, &headers, &mail_login_token, mail.as_str(), None)
        }
        Ok(SendCodeOutcome::NotAllowListed | SendCodeOutcome::DenyListed) => login_form(
            &s,
            lang,
            &headers,
            given,
            Some("not_allowed"),
            StatusCode::FORBIDDEN,
        ),
        Err(e) => Page::new(&s, lang).core_error(&e),
    }
}

fn code_form(
    s: &Settings,
    lang: &'static str,
    headers: &HeaderMap,
    login: &str,
    email: &str,
    error: Option<&str>,
) -> Response {
    let (csrf, cookie) = csrf_token(s, headers);
    let status = if error.is_some() {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::OK
    };
    let page = Page::new(s, lang).status(status).cookie(cookie);
    let error = error.map(|k| page.text(k));
    page.render(
        "code.html",
        "check_mail_title",
        context! {
            csrf => csrf, login => login, email => email, error => error,
            minutes => s.code_minutes.to_string(),
        },
    )
}

#[derive(Deserialize)]
struct VerifyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    lang: Option<String>,
    #[serde(default)]
    login: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    code: String,
}

async fn verify_code(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    Client(client): Client,
    headers: HeaderMap,
    PageForm { form: f, lang }: PageForm<VerifyForm>,
) -> Response {
    let core = &state.core;
    let auth = match core.check_mail_code(&f.login, &f.code, &client).await {
        Ok(CodeCheck::Accepted { mail_auth_token }) => mail_auth_token,
        Ok(CodeCheck::Wrong) => {
            return code_form(&s, lang, &headers, &f.login, &f.email, Some("wrong_code"));
        }
        Ok(CodeCheck::Gone) => return Page::new(&s, lang).error(StatusCode::GONE, "err_expired"),
        Err(e) => return Page::new(&s, lang).core_error(&e),
    };
    // One browser, one session: a session this browser had ends.
    for old in cookie_values(&headers, &s.session_cookie) {
        if let Err(e) = core.revoke_session_token(&old, &client).await {
            tracing::warn!(error = %e, "page sign-in: cannot end the previous session");
        }
    }
    let signed = core
        .sign_in_with_mail_auth_token_as(&auth, SESSION_KIND, TokenFormat::UrlSafe32, &client)
        .await;
    match signed {
        Ok((_, token, _)) => see_other(
            "/account",
            vec![set_cookie(
                &s.session_cookie,
                &token,
                "/",
                Some(s.max_age),
                s.secure,
            )],
        ),
        Err(e) => Page::new(&s, lang).core_error(&e),
    }
}

async fn account(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    headers: HeaderMap,
    query: Result<Query<LangQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = query.map(|Query(q)| q).unwrap_or_default();
    let (_, check) = match signed_in(&state, &s, &headers).await {
        Ok(Some(v)) => v,
        Ok(None) => return see_other("/login", vec![]),
        Err(e) => return Page::new(&s, language(q.lang.as_deref(), &headers, None)).core_error(&e),
    };
    let user = check.user;
    let lang = language(q.lang.as_deref(), &headers, user.locale.as_ref());
    let sessions = match state.core.list_sessions(Some(user.id), 100).await {
        Ok(list) => list,
        Err(e) => return Page::new(&s, lang).core_error(&e),
    };
    let rows: Vec<minijinja::Value> = sessions
        .into_iter()
        .map(|x| {
            context! {
                current => x.id == check.session.id,
                device => x.user_agent,
                ip => x.ip,
                created => rfc3339(x.created_at),
                last_seen => rfc3339(x.last_seen_at),
            }
        })
        .collect();
    let (csrf, cookie) = csrf_token(&s, &headers);
    let page = Page::new(&s, lang).cookie(cookie);
    let language_name = page.text("language_name");
    page.render(
        "account.html",
        "account_title",
        context! {
            csrf => csrf,
            email => user.email.as_ref().map(|e| e.as_str().to_string()),
            name => user.display_name,
            language_name => language_name,
            sessions => rows,
        },
    )
}

#[derive(Deserialize)]
struct LogoutForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    lang: Option<String>,
}

posted!(SendCodeForm, VerifyForm, LogoutForm);

async fn logout(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    Client(client): Client,
    headers: HeaderMap,
    PageForm { lang, .. }: PageForm<LogoutForm>,
) -> Response {
    for old in cookie_values(&headers, &s.session_cookie) {
        if let Err(e) = state.core.revoke_session_token(&old, &client).await {
            return Page::new(&s, lang).core_error(&e);
        }
    }
    see_other(
        "/login",
        vec![set_cookie(&s.session_cookie, "", "/", Some(0), s.secure)],
    )
}

async fn stylesheet() -> Response {
    css(include_str!("assets/authgate.css").to_string())
}

async fn theme(Extension(s): Extension<Arc<Settings>>) -> Response {
    css(format!(":root {{ --primary: {}; }}\n", s.primary_color))
}

fn css(body: String) -> Response {
    let mut r = body.into_response();
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_locale_has_every_text() {
        let all = texts();
        let en = &all["en"];
        assert!(en.len() > 30);
        for l in LOCALES {
            let t = &all[l];
            let missing: Vec<_> = en.keys().filter(|k| !t.contains_key(*k)).collect();
            assert!(missing.is_empty(), "{l} lacks {missing:?}");
            assert_eq!(t.len(), en.len(), "{l} has texts English lacks");
        }
    }

    #[test]
    fn the_language_is_asked_then_accepted_then_stored() {
        let mut h = HeaderMap::new();
        assert_eq!(language(None, &h, None), "en");
        h.insert(
            axum::http::header::ACCEPT_LANGUAGE,
            HeaderValue::from_static("it;q=1, nl-BE;q=0.8, de;q=0.9"),
        );
        assert_eq!(language(None, &h, None), "de");
        assert_eq!(language(Some("fr"), &h, None), "fr");
        assert_eq!(language(Some("xx"), &h, None), "de");
        let stored = Locale::parse("es").unwrap();
        assert_eq!(language(None, &HeaderMap::new(), Some(&stored)), "es");
    }

    #[test]
    fn every_template_renders() {
        let env = environment();
        for name in ["login.html", "code.html", "account.html", "error.html"] {
            assert!(env.get_template(name).is_ok(), "{name}");
        }
    }
}
