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
mod factors;
mod passkeys;

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

use super::extract::{
    Client, check_cookie_keys, cookie_value, cookie_values, set_cookie, set_cookie_on,
};
use super::{AppState, Surface, with_settings};
use crate::config::{Config, ConfigError, err};
use crate::core::providers::FLOW_TTL_SECS;
use crate::core::secret::{TokenFormat, ct_eq, new_token};
use crate::core::{
    Callback, CallbackError, CodeCheck, Email, Error, FirstFactor, FlowStart, Locale,
    ProviderError, SendCodeOutcome, Then, clock::rfc3339, return_path,
};

/// The `kind` of the sessions these pages make.
const SESSION_KIND: &str = "page";
/// The core's name for this surface (flows, audit).
const SURFACE: &str = "pages";
/// Binds a provider flow to the browser that went to the provider.
const FLOW_COOKIE: &str = "authgate_flow";
const FLOW_COOKIE_PATH: &str = "/login/callback";
/// Holds the state of a pending e-mail sign-in's return target.
const RETURN_COOKIE: &str = "authgate_return";
/// The locales with their own texts (as the mails).
const LOCALES: [&str; 5] = ["en", "de", "fr", "es", "nl"];
/// Pages may load authgate's own stylesheets and images from anywhere over
/// https (a configured logo); nothing runs, nothing frames them.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' https: data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// [`CSP`], with the origin of an https `pages.stylesheet_url` allowed for
/// styles too, and the origins a form's answer may redirect to allowed as
/// form actions (browsers apply `form-action` to the redirects after a
/// post): the return targets' and the OpenID clients' redirect and
/// post-logout URIs'.
fn csp(cfg: &Config) -> HeaderValue {
    let strict = HeaderValue::from_static(CSP);
    let mut policy = CSP.to_string();
    // Passkeys need authgate's one script and its calls back to authgate.
    if cfg.passkeys_on() {
        policy = policy.replacen(
            "style-src 'self'",
            "script-src 'self'; connect-src 'self'; style-src 'self'",
            1,
        );
    }
    if let Some(origin) = cfg
        .pages
        .stylesheet_url
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok())
        .filter(|u| u.scheme() == "https")
        .map(|u| u.origin().ascii_serialization())
    {
        policy = policy.replacen("style-src 'self'", &format!("style-src 'self' {origin}"), 1);
    }
    let own = cfg.server.public_url().origin().ascii_serialization();
    let mut targets: Vec<String> = cfg.server.allowed_origins(&cfg.oauth.languages);
    if cfg.surfaces.oidc {
        targets.extend(
            cfg.clients
                .values()
                .flat_map(|c| c.redirect_uris.iter().chain(&c.post_logout_redirect_uris))
                .filter_map(|u| url::Url::parse(u).ok())
                .map(|u| u.origin().ascii_serialization()),
        );
    }
    targets.retain(|o| *o != own && o.starts_with("http") && !o.contains([' ', ';', ',', '\'']));
    // Forward auth's hand-off leads to the protected hosts, on any port,
    // over the pages' own scheme.
    // authgate's own origin too: forward auth's pages on a protected host
    // ("Sign out?") lead back to authgate's sign-in.
    if cfg.surfaces.forward_auth {
        targets.push(own.clone());
        targets.extend(
            cfg.forward_auth
                .hosts
                .keys()
                .filter(|h| {
                    h.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
                })
                .map(|h| format!("{h}:*")),
        );
    }
    targets.sort();
    targets.dedup();
    if !targets.is_empty() {
        policy = policy.replacen(
            "form-action 'self'",
            &format!("form-action 'self' {}", targets.join(" ")),
            1,
        );
    }
    HeaderValue::try_from(policy).unwrap_or(strict)
}

/// The pages' CSP with the `form-action` origins of the clients the CLI
/// registered (read while the server runs; the config's are in [`csp`]
/// already): a layer over the whole application, as the OpenID provider's
/// pages and the sign-in pages both lead to them.
pub(crate) async fn csp_with_clients(
    axum::extract::State(state): axum::extract::State<super::AppState>,
    mut res: axum::response::Response,
) -> axum::response::Response {
    let origins = state.core.oidc_client_origins();
    if origins.is_empty() {
        return res;
    }
    let Some(policy) = res
        .headers()
        .get(CONTENT_SECURITY_POLICY)
        .and_then(|v| v.to_str().ok())
    else {
        return res;
    };
    let widened: Vec<String> = policy
        .split(';')
        .map(|d| {
            let d = d.trim();
            if !d.starts_with("form-action ") {
                return d.to_string();
            }
            let mut out = d.to_string();
            for o in origins.iter() {
                let safe = o.starts_with("http") && !o.contains([' ', ';', ',', '\'']);
                if safe && !d.split(' ').any(|t| t == o) {
                    out.push(' ');
                    out.push_str(o);
                }
            }
            out
        })
        .collect();
    if let Ok(v) = HeaderValue::try_from(widened.join("; ")) {
        res.headers_mut().insert(CONTENT_SECURITY_POLICY, v);
    }
    res
}

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
    /// A further stylesheet loaded after the built-in one (an https URL,
    /// whose origin the pages' CSP then allows for styles, or a path on
    /// authgate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stylesheet_url: Option<String>,
    /// The session cookie's name.
    pub cookie_name: String,
    /// Prefix the cookies with `__Host-` (Secure, Path=/, no Domain). Needs
    /// https. Unset: on whenever `server.public_url` is https.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie_host_prefix: Option<bool>,
    /// Create an account at a person's first sign-in with a provider here
    /// (e-mail codes follow `mail_login.signup`).
    pub signup: bool,
    /// A folder whose `base.html`, `login.html`, `code.html`,
    /// `account.html`, `delete.html`, `logout.html`, `error.html` replace the built-in
    /// templates of the same name (the others stay built in).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub templates_dir: Option<std::path::PathBuf>,
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
            signup: true,
            templates_dir: None,
        }
    }
}

fn validate(cfg: &Config, errors: &mut Vec<ConfigError>) {
    let p = &cfg.pages;
    if let Some(dir) = &p.templates_dir {
        if !dir.is_dir() {
            errors.push(err(
                "pages.templates_dir",
                format!("{} is not a folder", dir.display()),
            ));
        } else if let Err(e) = environment(Some(dir)) {
            errors.push(err("pages.templates_dir", e));
        }
    }
    let hex = p.primary_color.len() == 7
        && p.primary_color.starts_with('#')
        && p.primary_color[1..].chars().all(|c| c.is_ascii_hexdigit());
    if !hex {
        errors.push(err("pages.primary_color", "must be a colour as #rrggbb"));
    }
    check_cookie_keys(cfg, "pages", &p.cookie_name, p.cookie_host_prefix, errors);
    if let Some(d) = &cfg.session.cookie_domain {
        let own = cfg
            .server
            .public_url()
            .host_str()
            .unwrap_or_default()
            .to_string();
        let name_ok = d.contains('.')
            && !d.starts_with('.')
            && !d.ends_with('.')
            && d.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-');
        if !name_ok {
            errors.push(err(
                "session.cookie_domain",
                "must be a domain in lower case with at least one dot, without a leading dot (example.com)",
            ));
        } else if own != *d && !own.ends_with(&format!(".{d}")) {
            errors.push(err(
                "session.cookie_domain",
                format!("must be server.public_url's host ({own}) or a parent domain of it: browsers refuse the cookie otherwise"),
            ));
        }
    }
    let icons: Vec<(String, &Option<String>)> = cfg
        .providers
        .iter()
        .map(|(name, p)| (format!("providers.{name}.icon_url"), &p.icon_url))
        .collect();
    let urls = [
        ("pages.logo_url".to_string(), &p.logo_url),
        ("pages.stylesheet_url".to_string(), &p.stylesheet_url),
    ];
    for (key, url) in urls.iter().chain(icons.iter()) {
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
    /// `session.cookie_domain`: the session cookie's `Domain`.
    cookie_domain: Option<String>,
    csrf_cookie: String,
    secure: bool,
    max_age: i64,
    /// authgate's own origin: form posts must come from it.
    origin: String,
    /// `server.public_url` without its trailing slash.
    public: String,
    /// Origins a `return_to` may lead to (authgate's, the front end's and
    /// `server.allowed_redirect_origins`).
    return_origins: Vec<String>,
    code_minutes: i64,
    /// The configured providers' buttons: (name, label, icon).
    providers: Vec<(String, String, Option<String>)>,
    signup: bool,
    /// The templates: built in, or the operator's from `pages.templates_dir`.
    env: Arc<Environment<'static>>,
    /// The pages' CSP (for pages rendered outside [`page_headers`]).
    csp: HeaderValue,
    /// Second factors are on (`mfa.required` is not `off`).
    mfa: bool,
    /// Passkeys are on (`passkeys.enabled`).
    passkeys: bool,
}

impl Settings {
    pub fn new(cfg: &Config) -> Self {
        let p = &cfg.pages;
        let public = cfg.server.public_url();
        let https = public.scheme() == "https";
        let cookie_domain = cfg.session.cookie_domain.clone();
        // A cookie shared with a parent domain cannot be `__Host-`.
        let prefix = match (p.cookie_host_prefix.unwrap_or(https), &cookie_domain) {
            (false, _) => "",
            (true, None) => "__Host-",
            (true, Some(_)) => "__Secure-",
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
            cookie_domain,
            csrf_cookie: format!("{}authgate_csrf", if prefix.is_empty() { "" } else { "__Host-" }),
            secure: https || p.cookie_host_prefix == Some(true),
            max_age: cfg.session.absolute_timeout_secs,
            origin: public.origin().ascii_serialization(),
            public: public.as_str().trim_end_matches('/').to_string(),
            return_origins: {
                let mut o = vec![public.origin().ascii_serialization()];
                o.extend(cfg.server.allowed_origins(&cfg.oauth.languages));
                o
            },
            code_minutes: cfg.mail_login.code_ttl_secs / 60,
            providers: cfg
                .providers
                .iter()
                .map(|(name, p)| {
                    let label = p
                        .display_name
                        .clone()
                        .unwrap_or_else(|| match name.as_str() {
                            "microsoft" => "Microsoft".into(),
                            "google" => "Google".into(),
                            "github" => "GitHub".into(),
                            other => other.to_string(),
                        });
                    (name.clone(), label, p.icon_url.clone())
                })
                .collect(),
            signup: p.signup,
            csp: csp(cfg),
            mfa: cfg.mfa_on(),
            passkeys: cfg.passkeys_on(),
            env: environment(p.templates_dir.as_deref())
                .map(Arc::new)
                .unwrap_or_else(|e| {
                    // `config check` and the start refuse this; never reached.
                    tracing::error!(error = %e, "pages.templates_dir: using the built-in templates");
                    Arc::new(environment(None).unwrap_or_default())
                }),
        }
    }

    /// A `return_to` this page may send the person on to: a path on
    /// authgate, or a URL of an allowed origin. Anything else (another
    /// site, `//host`, `/\host`, `javascript:`) is `None`: the default page.
    fn return_target(&self, given: &str) -> Option<String> {
        if given.starts_with('/') {
            return return_path(&self.origin, given);
        }
        let url = url::Url::parse(given).ok()?;
        let origin = url.origin().ascii_serialization();
        let path = return_path(self.return_origins.iter().find(|o| **o == origin)?, given)?;
        Some(format!("{origin}{path}"))
    }

    /// The session cookie's `Set-Cookie` (shared with
    /// `session.cookie_domain` when it is set).
    fn session_set_cookie(&self, value: &str, max_age: i64) -> Option<HeaderValue> {
        set_cookie_on(
            &self.session_cookie,
            value,
            "/",
            Some(max_age),
            self.secure,
            self.cookie_domain.as_deref(),
        )
    }

    fn callback_uri(&self, provider: &str) -> String {
        format!("{}/login/callback/{provider}", self.public)
    }
}

fn router(cfg: &Config) -> OpenApiRouter<AppState> {
    let pages: Router<AppState> = passkeys::routes(factors::routes(Router::new()))
        .route("/", get(home))
        .route("/login", get(login_page))
        .route("/login/code", post(send_code))
        .route("/login/verify", post(verify_code))
        .route("/login/provider/{provider}", get(provider_start))
        // A provider's code and state are in this URL: nothing it shows
        // or links to may learn it (no form posts from here).
        .route(
            "/login/callback/{provider}",
            get(provider_callback).layer(SetResponseHeaderLayer::overriding(
                axum::http::header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            )),
        )
        .route("/account", get(account))
        .route("/account/profile", post(update_profile))
        .route("/account/sessions/end", post(end_session))
        .route("/account/sessions/end-others", post(end_other_sessions))
        .route("/account/data", get(download_data))
        .route("/account/methods/remove", post(remove_method))
        .route("/account/connect/{provider}", get(connect_start))
        .route("/account/delete", get(delete_page).post(delete_account))
        .route("/logout", post(logout))
        .route("/assets/authgate.css", get(stylesheet))
        .route("/assets/theme.css", get(theme))
        .layer(page_headers(cfg));
    with_settings(OpenApiRouter::from(pages), Settings::new(cfg))
}

/// Three header layers (see [`page_headers`]).
type HeaderLayers = tower::ServiceBuilder<
    tower::layer::util::Stack<
        SetResponseHeaderLayer<HeaderValue>,
        tower::layer::util::Stack<
            SetResponseHeaderLayer<HeaderValue>,
            tower::layer::util::Stack<
                SetResponseHeaderLayer<HeaderValue>,
                tower::layer::util::Identity,
            >,
        >,
    >,
>;

/// The headers of every page (and of the OpenID provider's, which renders
/// pages too): the strict CSP, `nosniff`, and the referrer policy.
pub(crate) fn page_headers(cfg: &Config) -> HeaderLayers {
    tower::ServiceBuilder::new()
        .layer(SetResponseHeaderLayer::overriding(
            CONTENT_SECURITY_POLICY,
            csp(cfg),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            axum::http::header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        // Not `no-referrer` on pages with forms: with it, browsers send
        // `Origin: null` on the pages' own form posts, and the origin check
        // could not tell them from a forged one. `same-origin` tells other
        // sites nothing; codes and tokens travel in bodies, except on the
        // provider callback, which says `no-referrer` itself.
        .layer(SetResponseHeaderLayer::if_not_present(
            axum::http::header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ))
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

/// The built-in templates, by name.
const TEMPLATES: [(&str, &str); 12] = [
    ("base.html", include_str!("templates/base.html")),
    ("login.html", include_str!("templates/login.html")),
    ("code.html", include_str!("templates/code.html")),
    ("account.html", include_str!("templates/account.html")),
    ("error.html", include_str!("templates/error.html")),
    ("delete.html", include_str!("templates/delete.html")),
    ("logout.html", include_str!("templates/logout.html")),
    ("consent.html", include_str!("templates/consent.html")),
    ("forward.html", include_str!("templates/forward.html")),
    (
        "second_factor.html",
        include_str!("templates/second_factor.html"),
    ),
    ("totp_setup.html", include_str!("templates/totp_setup.html")),
    (
        "recovery_codes.html",
        include_str!("templates/recovery_codes.html"),
    ),
];

/// The pages' templates (HTML auto-escaped): the built-in ones, each
/// replaced by the file of its name in `dir` when there is one. An
/// unreadable or broken file is an error naming it.
fn environment(dir: Option<&std::path::Path>) -> Result<Environment<'static>, String> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    for (name, built_in) in TEMPLATES {
        let source = match dir.map(|d| d.join(name)).filter(|f| f.exists()) {
            Some(file) => std::fs::read_to_string(&file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?,
            None => built_in.to_string(),
        };
        env.add_template_owned(name, source)
            .map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(env)
}

/// The page's language: the `lang` asked for, else the first of
/// `Accept-Language` authgate has texts for, else the person's stored
/// locale, else English.
/// The first of a space-separated list of language tags (`ui_locales`)
/// the pages have texts for.
pub(crate) fn known_locale(list: &str) -> Option<&'static str> {
    list.split(' ').find_map(|tag| {
        let primary = tag.split(['-', '_']).next()?.to_ascii_lowercase();
        LOCALES.into_iter().find(|l| *l == primary)
    })
}

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
    /// Where the stylesheets are: `/assets` on authgate, `/.authgate/assets`
    /// on a protected host (forward auth).
    assets: &'static str,
}

impl<'a> Page<'a> {
    fn new(s: &'a Settings, lang: &'static str) -> Self {
        Page {
            s,
            lang,
            status: StatusCode::OK,
            cookies: Vec::new(),
            assets: "/assets",
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
            assets => self.assets,
            languages => languages,
            ..page
        };
        let html = self
            .s
            .env
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
            // A step raced another (a factor set up meanwhile): start again.
            Error::Conflict(_) => (StatusCode::CONFLICT, "err_expired"),
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

/// A time as the pages show it: `2026-12-02 05:18 UTC` (the same in every
/// language; the `<time>` element carries the exact value).
fn shown_time(t: crate::core::Timestamp) -> String {
    let exact = rfc3339(t);
    match (exact.get(..10), exact.get(11..16)) {
        (Some(day), Some(hm)) => format!("{day} {hm} UTC"),
        _ => exact,
    }
}

pub(crate) fn see_other(to: &str, cookies: Vec<Option<HeaderValue>>) -> Response {
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
pub(crate) struct PageForm<T> {
    pub(crate) form: T,
    pub(crate) lang: &'static str,
}

/// What every page form carries.
pub(crate) trait Posted {
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
        impl $crate::http::pages::Posted for $form {
            fn csrf(&self) -> &str {
                &self.csrf
            }
            fn lang(&self) -> Option<&str> {
                self.lang.as_deref()
            }
        }
    )*};
}
use posted;

// ---- handlers

#[derive(Deserialize, Default)]
struct LangQuery {
    lang: Option<String>,
    /// `/account?saved=1` after a profile change.
    #[serde(default)]
    saved: Option<String>,
    /// `/account?connected=1` after connecting a provider.
    #[serde(default)]
    connected: Option<String>,
    /// Where to go after signing in (`/login` only): checked, then kept
    /// server-side; never read back from a URL on the way out.
    return_to: Option<String>,
    /// The address to fill in (`/login` only; an OpenID client's
    /// `login_hint`).
    login_hint: Option<String>,
    /// `/login?reauth=1`: show the sign-in form even to a signed-in person
    /// (an OpenID client asked for a new sign-in).
    reauth: Option<String>,
    /// `/login?step_up=1`: a sensitive action asked for a recent sign-in.
    step_up: Option<String>,
}

/// The live session behind this browser's cookie (exactly one cookie).
pub(crate) async fn signed_in(
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
    login_form_with(s, lang, headers, email, (error, None), status, None)
}

fn login_form_with(
    s: &Settings,
    lang: &'static str,
    headers: &HeaderMap,
    email: &str,
    (error, notice): (Option<&str>, Option<&str>),
    status: StatusCode,
    extra_cookie: Option<HeaderValue>,
) -> Response {
    let (csrf, cookie) = csrf_token(s, headers);
    let page = Page::new(s, lang)
        .status(status)
        .cookie(cookie)
        .cookie(extra_cookie);
    let error = error.map(|k| page.text(k));
    let notice = notice.map(|k| page.text(k));
    let providers: Vec<minijinja::Value> = s
        .providers
        .iter()
        .map(|(name, label, icon)| context! { name => name, label => label, icon => icon })
        .collect();
    page.render(
        "login.html",
        "sign_in_title",
        context! {
            csrf => csrf, email => email, error => error, notice => notice,
            providers => providers, passkeys => s.passkeys,
        },
    )
}

async fn login_page(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    Client(client): Client,
    headers: HeaderMap,
    query: Result<Query<LangQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = query.map(|Query(q)| q).unwrap_or_default();
    let lang = language(q.lang.as_deref(), &headers, None);
    let target = q.return_to.as_deref().and_then(|r| s.return_target(r));
    match signed_in(&state, &s, &headers).await {
        Ok(Some(_)) if q.reauth.is_none() => {
            return see_other(target.as_deref().unwrap_or("/account"), vec![]);
        }
        Ok(_) => {}
        Err(e) => return Page::new(&s, lang).core_error(&e),
    }
    // A return target is kept server-side; the browser holds only its key.
    let mut cookie = None;
    if let Some(target) = target {
        match state
            .core
            .remember_return(SURFACE, target, client.ip.as_deref())
            .await
        {
            Ok(key) => {
                cookie = set_cookie(RETURN_COOKIE, &key, "/login", Some(FLOW_TTL_SECS), s.secure)
            }
            // Too many started: the sign-in still works, to the default page.
            Err(Error::RateLimited { .. }) => {}
            Err(e) => return Page::new(&s, lang).core_error(&e),
        }
    }
    let hint = q
        .login_hint
        .as_deref()
        .filter(|h| h.len() <= 254 && h.contains('@'))
        .unwrap_or_default();
    let notice = q.step_up.is_some().then_some("step_up_needed");
    login_form_with(
        &s,
        lang,
        &headers,
        hint,
        (None, notice),
        StatusCode::OK,
        cookie,
    )
}

/// A friendly error page in the person's language (`asked`: a language the
/// request named, e.g. an OpenID client's `ui_locales`).
pub(crate) fn error_page(
    s: &Settings,
    headers: &HeaderMap,
    asked: Option<&str>,
    status: StatusCode,
    key: &str,
) -> Response {
    Page::new(s, language(asked, headers, None)).error(status, key)
}

/// [`error_page`] for a core error.
pub(crate) fn core_error_page(
    s: &Settings,
    headers: &HeaderMap,
    asked: Option<&str>,
    e: &Error,
) -> Response {
    Page::new(s, language(asked, headers, None)).core_error(e)
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
    let user = match core.user_of_mail_auth_token(&auth, &client).await {
        Ok((user, _)) => user,
        Err(e) => return Page::new(&s, lang).core_error(&e),
    };
    let landing = match cookie_value(&headers, RETURN_COOKIE) {
        Some(key) => core.peek_return(&key, SURFACE).await.ok().flatten(),
        None => None,
    };
    let first = core
        .first_factor_done(
            &user,
            crate::core::NewSession {
                kind: SESSION_KIND,
                method: crate::core::AMR_OTP,
                format: TokenFormat::UrlSafe32,
            },
            SURFACE,
            landing.clone(),
            &client,
        )
        .await;
    let first = match first {
        Ok(f) => f,
        Err(e) => return Page::new(&s, lang).core_error(&e),
    };
    match first {
        FirstFactor::Session { token, .. } => {
            let (taken, cookies) =
                factors::signed_in_cookies(&state, &s, &headers, &client, &token).await;
            see_other(taken.or(landing).as_deref().unwrap_or("/account"), cookies)
        }
        FirstFactor::Pending { token, .. } => factors::to_second_step(&s, &token, vec![]),
    }
}

/// A provider's button: to the provider (state, PKCE, nonce), the flow
/// bound to this browser by a cookie and carrying the kept return target.
async fn provider_start(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    Client(client): Client,
    headers: HeaderMap,
    axum::extract::Path(provider): axum::extract::Path<String>,
    query: Result<Query<LangQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = query.map(|Query(q)| q).unwrap_or_default();
    let lang = language(q.lang.as_deref(), &headers, None);
    if !s.providers.iter().any(|(name, _, _)| *name == provider) {
        return Page::new(&s, lang).error(StatusCode::NOT_FOUND, "err_not_found");
    }
    let core = &state.core;
    let redirect_to = match cookie_value(&headers, RETURN_COOKIE) {
        Some(key) => core.peek_return(&key, SURFACE).await.ok().flatten(),
        None => None,
    };
    let started = core
        .start_flow(FlowStart {
            provider: provider.clone(),
            surface: SURFACE,
            redirect_uri: s.callback_uri(&provider),
            language: Some(lang.to_string()),
            redirect_to,
            ip: client.ip.clone(),
            ..FlowStart::default()
        })
        .await;
    to_provider(&s, lang, &provider, started)
}

/// The provider sends the browser back: the core's one provider sign-in,
/// then the session cookie and the kept return target (default `/account`).
async fn provider_callback(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    Client(client): Client,
    headers: HeaderMap,
    axum::extract::Path(provider): axum::extract::Path<String>,
    query: Result<Query<super::extract::CallbackParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let fallback = language(None, &headers, None);
    let Ok(Query(params)) = query else {
        return Page::new(&s, fallback).error(StatusCode::BAD_REQUEST, "err_expired");
    };
    let core = &state.core;
    let flow_cookie = cookie_value(&headers, FLOW_COOKIE);
    let replacing = cookie_values(&headers, &s.session_cookie);
    let redirect_uri = s.callback_uri(&provider);
    let signed_in = match signed_in(&state, &s, &headers).await {
        Ok(v) => v.map(|(_, check)| check.user.id),
        Err(e) => return Page::new(&s, fallback).core_error(&e),
    };
    let finished = core
        .finish_callback(
            &Callback {
                provider: &provider,
                surface: SURFACE,
                redirect_uri: &redirect_uri,
                signup: s.signup,
                signed_in,
                then: Then::SignIn {
                    kind: SESSION_KIND,
                    format: TokenFormat::UrlSafe32,
                    replacing: &replacing,
                    second_step: true,
                },
                ..params.callback(flow_cookie.as_deref())
            },
            &client,
        )
        .await;
    let clear_flow = set_cookie(FLOW_COOKIE, "", FLOW_COOKIE_PATH, Some(0), s.secure);
    let flow_lang = |flow: Option<&crate::core::LoginFlow>| {
        language(flow.and_then(|f| f.language.as_deref()), &headers, None)
    };
    let (lang, status, key) = match &finished {
        Ok(f) if f.linked => {
            return see_other("/account?connected=1", vec![clear_flow]);
        }
        Ok(f) => match (&f.session, &f.pending) {
            (None, Some((token, _))) => {
                return factors::to_second_step(&s, token, vec![clear_flow]);
            }
            (Some((token, _)), _) => {
                if let Some(key) = cookie_value(&headers, RETURN_COOKIE) {
                    let _ = core.take_return(&key, SURFACE).await;
                }
                return see_other(
                    f.landing("/account"),
                    vec![
                        s.session_set_cookie(token, s.max_age),
                        clear_flow,
                        set_cookie(RETURN_COOKIE, "", "/login", Some(0), s.secure),
                    ],
                );
            }
            (None, None) => (fallback, StatusCode::INTERNAL_SERVER_ERROR, "err_internal"),
        },
        Err(CallbackError::InvalidState) => (fallback, StatusCode::BAD_REQUEST, "err_expired"),
        Err(CallbackError::ProviderError { flow, .. }) => (
            flow_lang(flow.as_deref()),
            StatusCode::BAD_REQUEST,
            "err_provider",
        ),
        Err(CallbackError::NoCode(flow)) => (
            flow_lang(Some(flow)),
            StatusCode::BAD_REQUEST,
            "err_provider",
        ),
        Err(CallbackError::Failed { error, flow }) => {
            let lang = flow_lang(flow.as_deref());
            match error {
                Error::Provider(ProviderError::Unavailable(_)) => {
                    (lang, StatusCode::BAD_GATEWAY, "err_unavailable")
                }
                Error::Provider(_) => (lang, StatusCode::BAD_REQUEST, "err_provider"),
                Error::NotFound => (lang, StatusCode::FORBIDDEN, "err_not_registered"),
                Error::Conflict(_) => (lang, StatusCode::CONFLICT, "err_link_taken"),
                Error::Unauthorized => (lang, StatusCode::BAD_REQUEST, "err_expired"),
                e => return Page::new(&s, lang).cookie(clear_flow).core_error(e),
            }
        }
    };
    Page::new(&s, lang).cookie(clear_flow).error(status, key)
}

/// The signed-in person, or the way to `/login`.
async fn require_session(
    state: &AppState,
    s: &Settings,
    headers: &HeaderMap,
    lang: Option<&str>,
) -> Result<crate::core::SessionCheck, Response> {
    match signed_in(state, s, headers).await {
        Ok(Some((_, check))) => Ok(check),
        Ok(None) => Err(see_other("/login", vec![])),
        Err(e) => Err(Page::new(s, language(lang, headers, None)).core_error(&e)),
    }
}

async fn account(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    headers: HeaderMap,
    query: Result<Query<LangQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = query.map(|Query(q)| q).unwrap_or_default();
    let check = match require_session(&state, &s, &headers, q.lang.as_deref()).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let lang = language(q.lang.as_deref(), &headers, check.user.locale.as_ref());
    let notice = if q.connected.is_some() {
        Notice::Connected
    } else if q.saved.is_some() {
        Notice::Saved
    } else {
        Notice::None
    };
    account_page(&state, &s, &headers, &check, lang, notice, None).await
}

/// What the account page confirms at its top.
#[derive(PartialEq)]
enum Notice {
    None,
    Saved,
    Connected,
}

async fn account_page(
    state: &AppState,
    s: &Settings,
    headers: &HeaderMap,
    check: &crate::core::SessionCheck,
    lang: &'static str,
    notice: Notice,
    error: Option<(&str, &str)>,
) -> Response {
    let user = &check.user;
    let sessions = match state.core.list_sessions(Some(user.id), 100).await {
        Ok(list) => list,
        Err(e) => return Page::new(s, lang).core_error(&e),
    };
    let identities = match state.core.user_identities(user.id).await {
        Ok(list) => list,
        Err(e) => return Page::new(s, lang).core_error(&e),
    };
    let factors = if s.mfa {
        match state.core.second_factors(user.id).await {
            Ok(f) => Some(f),
            Err(e) => return Page::new(s, lang).core_error(&e),
        }
    } else {
        None
    };
    let passkeys: Vec<minijinja::Value> = if s.passkeys {
        match state.core.passkeys(user.id).await {
            Ok(list) => list
                .into_iter()
                .map(|p| {
                    context! {
                        id => p.id.to_string(), name => p.name,
                        created => rfc3339(p.created_at), created_shown => shown_time(p.created_at),
                        last_used => p.last_used_at.map(rfc3339),
                        last_used_shown => p.last_used_at.map(shown_time),
                        synced => p.backup_eligible,
                    }
                })
                .collect(),
            Err(e) => return Page::new(s, lang).core_error(&e),
        }
    } else {
        Vec::new()
    };
    let label = |provider: &str| {
        s.providers
            .iter()
            .find(|(n, _, _)| n == provider)
            .map(|(_, l, _)| l.clone())
            .unwrap_or_else(|| provider.to_string())
    };
    let methods: Vec<minijinja::Value> = identities
        .iter()
        .map(|i| {
            context! {
                id => i.id.to_string(), provider => &i.provider, label => label(&i.provider),
                email => &i.email,
            }
        })
        .collect();
    let connectable: Vec<minijinja::Value> = s
        .providers
        .iter()
        .filter(|(n, _, _)| !identities.iter().any(|i| i.provider == *n))
        .map(|(name, label, _)| context! { name => name, label => label })
        .collect();
    let rows: Vec<minijinja::Value> = sessions
        .into_iter()
        .map(|x| {
            context! {
                id => x.id.to_string(),
                current => x.id == check.session.id,
                device => x.user_agent,
                ip => x.ip,
                created => rfc3339(x.created_at),
                last_seen => rfc3339(x.last_seen_at),
                created_shown => shown_time(x.created_at),
                last_seen_shown => shown_time(x.last_seen_at),
            }
        })
        .collect();
    let (csrf, cookie) = csrf_token(s, headers);
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let page = Page::new(s, lang).status(status).cookie(cookie);
    let user_lang = user
        .locale
        .as_ref()
        .map(|l| language(Some(l.as_str()), &HeaderMap::new(), None))
        .unwrap_or(lang);
    let (name, error) = match error {
        Some((given, key)) => (Some(given.to_string()), Some(page.text(key))),
        None => (user.display_name.clone(), None),
    };
    page.render(
        "account.html",
        "account_title",
        context! {
            csrf => csrf,
            email => user.email.as_ref().map(|e| e.as_str().to_string()),
            name => name,
            error => error,
            saved => notice == Notice::Saved,
            connected => notice == Notice::Connected,
            user_lang => user_lang,
            sessions => rows,
            methods => methods,
            connectable => connectable,
            mfa => s.mfa,
            passkeys_on => s.passkeys,
            passkeys => passkeys,
            totp => factors.as_ref().is_some_and(|f| f.totp),
            codes_left => factors.as_ref().map_or(0, |f| f.recovery_codes_left),
        },
    )
}

#[derive(Deserialize)]
struct ProfileForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    language: String,
}

impl Posted for ProfileForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
    fn lang(&self) -> Option<&str> {
        Some(&self.language)
    }
}

async fn update_profile(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    Client(client): Client,
    headers: HeaderMap,
    PageForm { form: f, lang }: PageForm<ProfileForm>,
) -> Response {
    let check = match require_session(&state, &s, &headers, Some(lang)).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    // Only the languages the pages speak can be chosen.
    let locale = LOCALES
        .contains(&f.language.as_str())
        .then(|| Locale::parse(&f.language).ok())
        .flatten()
        .or(check.user.locale.clone());
    match state
        .core
        .update_profile(check.user.id, Some(&f.name), locale.as_ref(), &client)
        .await
    {
        Ok(_) => see_other(&format!("/account?lang={lang}&saved=1"), vec![]),
        Err(Error::Invalid { .. }) => {
            account_page(
                &state,
                &s,
                &headers,
                &check,
                lang,
                Notice::None,
                Some((&f.name, "invalid_name")),
            )
            .await
        }
        Err(e) => Page::new(&s, lang).core_error(&e),
    }
}

#[derive(Deserialize)]
struct RemoveMethodForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    lang: Option<String>,
    #[serde(default)]
    identity: String,
}

async fn remove_method(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    Client(client): Client,
    headers: HeaderMap,
    PageForm { form: f, lang }: PageForm<RemoveMethodForm>,
) -> Response {
    let check = match require_session(&state, &s, &headers, Some(lang)).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Ok(id) = uuid::Uuid::parse_str(&f.identity) else {
        return Page::new(&s, lang).error(StatusCode::NOT_FOUND, "err_not_found");
    };
    match state.core.remove_identity(check.user.id, id, &client).await {
        Ok(()) => see_other("/account?saved=1", vec![]),
        Err(Error::NotFound) => Page::new(&s, lang).error(StatusCode::NOT_FOUND, "err_not_found"),
        Err(Error::Forbidden(_)) => {
            Page::new(&s, lang).error(StatusCode::CONFLICT, "err_last_method")
        }
        Err(e) => Page::new(&s, lang).core_error(&e),
    }
}

/// "Connect <provider>": to the provider, for the signed-in person's own
/// account; the return goes through the same callback as a sign-in.
async fn connect_start(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    Client(client): Client,
    headers: HeaderMap,
    axum::extract::Path(provider): axum::extract::Path<String>,
    query: Result<Query<LangQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = query.map(|Query(q)| q).unwrap_or_default();
    let check = match require_session(&state, &s, &headers, q.lang.as_deref()).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let lang = language(q.lang.as_deref(), &headers, check.user.locale.as_ref());
    if !s.providers.iter().any(|(name, _, _)| *name == provider) {
        return Page::new(&s, lang).error(StatusCode::NOT_FOUND, "err_not_found");
    }
    let started = state
        .core
        .start_link_flow(
            check.user.id,
            FlowStart {
                provider: provider.clone(),
                surface: SURFACE,
                redirect_uri: s.callback_uri(&provider),
                language: Some(lang.to_string()),
                ip: client.ip.clone(),
                ..FlowStart::default()
            },
        )
        .await;
    to_provider(&s, lang, &provider, started)
}

/// The answer to a started provider flow: 302 to the provider with the
/// flow cookie, or the error page.
fn to_provider(
    s: &Settings,
    lang: &'static str,
    provider: &str,
    started: Result<crate::core::StartedFlow, Error>,
) -> Response {
    match started {
        Ok(flow) => {
            let mut r = StatusCode::FOUND.into_response();
            if let Ok(v) = HeaderValue::from_str(flow.authorize_url.as_str()) {
                r.headers_mut().insert(LOCATION, v);
            }
            let cookie = set_cookie(
                FLOW_COOKIE,
                &flow.state,
                FLOW_COOKIE_PATH,
                Some(FLOW_TTL_SECS),
                s.secure,
            );
            r.headers_mut().extend(cookie.map(|c| (SET_COOKIE, c)));
            r
        }
        Err(Error::Provider(e)) => {
            tracing::warn!(provider, error = %e, "page: cannot start a provider sign-in");
            Page::new(s, lang).error(StatusCode::BAD_GATEWAY, "err_unavailable")
        }
        Err(e) => Page::new(s, lang).core_error(&e),
    }
}

#[derive(Deserialize)]
struct EndSessionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    lang: Option<String>,
    #[serde(default)]
    session: String,
}

async fn end_session(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    Client(client): Client,
    headers: HeaderMap,
    PageForm { form: f, lang }: PageForm<EndSessionForm>,
) -> Response {
    let check = match require_session(&state, &s, &headers, Some(lang)).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Ok(id) = uuid::Uuid::parse_str(&f.session) else {
        return Page::new(&s, lang).error(StatusCode::NOT_FOUND, "err_not_found");
    };
    match state.core.end_own_session(check.user.id, id, &client).await {
        Ok(()) => see_other("/account", vec![]),
        Err(Error::NotFound) => Page::new(&s, lang).error(StatusCode::NOT_FOUND, "err_not_found"),
        Err(e) => Page::new(&s, lang).core_error(&e),
    }
}

async fn end_other_sessions(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    Client(client): Client,
    headers: HeaderMap,
    PageForm { lang, .. }: PageForm<LogoutForm>,
) -> Response {
    let check = match require_session(&state, &s, &headers, Some(lang)).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match state
        .core
        .end_other_sessions(check.user.id, check.session.id, &client)
        .await
    {
        Ok(_) => see_other("/account", vec![]),
        Err(e) => Page::new(&s, lang).core_error(&e),
    }
}

/// "Download my data": everything authgate holds on the person, as JSON.
async fn download_data(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    headers: HeaderMap,
) -> Response {
    let check = match require_session(&state, &s, &headers, None).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match state.core.personal_data(check.user.id).await {
        Ok(data) => {
            let mut r = axum::Json(data).into_response();
            r.headers_mut().insert(
                axum::http::header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"authgate-data.json\""),
            );
            r
        }
        Err(e) => {
            Page::new(&s, language(None, &headers, check.user.locale.as_ref())).core_error(&e)
        }
    }
}

async fn delete_page(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    headers: HeaderMap,
    query: Result<Query<LangQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = query.map(|Query(q)| q).unwrap_or_default();
    let check = match require_session(&state, &s, &headers, q.lang.as_deref()).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let lang = language(q.lang.as_deref(), &headers, check.user.locale.as_ref());
    if let Some(r) = factors::step_up(&state, &check, lang, "/account/delete") {
        return r;
    }
    let (csrf, cookie) = csrf_token(&s, &headers);
    Page::new(&s, lang).cookie(cookie).render(
        "delete.html",
        "delete_title",
        context! { csrf => csrf },
    )
}

/// Delete the account: every session ends; the audit history stays.
async fn delete_account(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    Client(client): Client,
    headers: HeaderMap,
    PageForm { lang, .. }: PageForm<LogoutForm>,
) -> Response {
    let check = match require_session(&state, &s, &headers, Some(lang)).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Some(r) = factors::step_up(&state, &check, lang, "/account/delete") {
        return r;
    }
    let key = crate::core::UserKey::Id(check.user.id);
    match state.core.delete_user(&key, &client).await {
        Ok(_) => see_other(
            &format!("/login?lang={lang}"),
            vec![s.session_set_cookie("", 0)],
        ),
        Err(e) => Page::new(&s, lang).core_error(&e),
    }
}

#[derive(Deserialize)]
struct LogoutForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    lang: Option<String>,
    /// The key of where to go afterwards (an OpenID client's
    /// `post_logout_redirect_uri`, kept server-side).
    #[serde(default)]
    then: Option<String>,
}

posted!(
    SendCodeForm,
    VerifyForm,
    LogoutForm,
    EndSessionForm,
    RemoveMethodForm
);

async fn logout(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    Client(client): Client,
    headers: HeaderMap,
    PageForm { form, lang }: PageForm<LogoutForm>,
) -> Response {
    let then = match form.then.as_deref() {
        Some(key) => state
            .core
            .take_return(key, LOGOUT_SURFACE)
            .await
            .ok()
            .flatten(),
        None => None,
    };
    sign_out(
        &state,
        &s,
        &client,
        &headers,
        Some(lang),
        then.as_deref().unwrap_or("/login"),
    )
    .await
}

/// End this browser's session and go on to `to`.
pub(crate) async fn sign_out(
    state: &AppState,
    s: &Settings,
    client: &crate::core::ClientMeta,
    headers: &HeaderMap,
    asked: Option<&str>,
    to: &str,
) -> Response {
    for old in cookie_values(headers, &s.session_cookie) {
        if let Err(e) = state.core.revoke_session_token(&old, client).await {
            return Page::new(s, language(asked, headers, None)).core_error(&e);
        }
    }
    see_other(to, vec![s.session_set_cookie("", 0)])
}

/// The core's name for a sign-out an OpenID client asked for (its
/// post-logout target, kept while the person confirms).
pub(crate) const LOGOUT_SURFACE: &str = "oidc_logout";

/// "Do you want to sign out?": the confirmation an OpenID client's
/// logout request gets when it cannot prove it is about this session. The
/// form posts to `/logout`, which goes on to `then`'s target.
pub(crate) fn logout_confirmation(
    s: &Settings,
    headers: &HeaderMap,
    asked: Option<&str>,
    then: Option<&str>,
) -> Response {
    let (csrf, cookie) = csrf_token(s, headers);
    Page::new(s, language(asked, headers, None))
        .cookie(cookie)
        .render(
            "logout.html",
            "logout_title",
            context! { csrf => csrf, then => then },
        )
}

/// The consent page: may the third-party client `name` have `scopes`?
/// The answer goes to the OpenID provider with the parked request's key.
pub(crate) fn consent_page(
    s: &Settings,
    headers: &HeaderMap,
    asked: Option<&str>,
    name: &str,
    scopes: &[String],
    request: &str,
) -> Response {
    let (csrf, cookie) = csrf_token(s, headers);
    let lang = language(asked, headers, None);
    let t = texts().get(lang);
    // Known scopes in words; a client's own ones (`reports.read`) as they are.
    let described: Vec<String> = scopes
        .iter()
        .map(|sc| {
            t.and_then(|t| t.get(&format!("scope_{sc}")))
                .cloned()
                .unwrap_or_else(|| sc.clone())
        })
        .collect();
    Page::new(s, lang).cookie(cookie).render(
        "consent.html",
        "consent_title",
        context! { csrf => csrf, client => name, scopes => described, request => request },
    )
}

/// Where a page on a protected host leads (forward auth).
pub(crate) enum ForwardNext<'a> {
    /// A link: its target and its text's key.
    Link(&'a str, &'static str),
    /// The sign-out form (posting to `/.authgate/logout`).
    SignOut,
}

/// What a forward-auth page says: its title's and message's keys, and
/// the host and person the message names.
pub(crate) struct ForwardText<'a> {
    /// The language the request named (`?lang=` of the original URL).
    pub lang: Option<&'a str>,
    pub title: &'static str,
    pub message: &'static str,
    pub host: &'a str,
    pub who: &'a str,
}

/// A page forward auth shows on a protected host: its stylesheets come
/// through the host's `/.authgate/` path. The message's text has
/// `{host}`, `{who}` and `{product}` filled in.
pub(crate) fn forward_page(
    s: &Settings,
    headers: &HeaderMap,
    status: StatusCode,
    text: ForwardText<'_>,
    next: ForwardNext<'_>,
) -> Response {
    let mut page = Page::new(s, language(text.lang, headers, None)).status(status);
    page.assets = "/.authgate/assets";
    let message = page
        .text(text.message)
        .replace("{host}", text.host)
        .replace("{who}", text.who)
        .replace("{product}", &s.product);
    let (link, link_text, form) = match next {
        ForwardNext::Link(to, key) => (Some(to.to_string()), page.text(key), false),
        ForwardNext::SignOut => (None, String::new(), true),
    };
    let mut r = page.render(
        "forward.html",
        text.title,
        context! { message => message, link => link, link_text => link_text, form => form, alert => status.is_client_error() },
    );
    // The forward-auth check itself is not behind `page_headers` (its
    // answers are mostly an empty 200): its pages carry them here.
    let h = r.headers_mut();
    h.insert(CONTENT_SECURITY_POLICY, s.csp.clone());
    h.insert(
        axum::http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.entry(axum::http::header::REFERRER_POLICY)
        .or_insert(HeaderValue::from_static("same-origin"));
    r
}

/// The built-in stylesheet.
pub(crate) async fn stylesheet() -> Response {
    css(include_str!("assets/authgate.css").to_string())
}

async fn theme(Extension(s): Extension<Arc<Settings>>) -> Response {
    theme_of(&s)
}

/// The theme stylesheet (the primary colour).
pub(crate) fn theme_of(s: &Settings) -> Response {
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
    fn times_are_shown_to_the_minute_in_utc() {
        assert_eq!(shown_time(1_734_688_800), "2024-12-20 10:00 UTC");
    }

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
    fn a_shared_session_cookie_names_its_domain() {
        let mut cfg = Config::default();
        cfg.server.public_url = Some("https://auth.example.com".parse().unwrap());
        let own = Settings::new(&cfg);
        assert_eq!(own.session_cookie, "__Host-authgate_session");
        let set = own.session_set_cookie("t", 60).unwrap();
        assert!(!set.to_str().unwrap().contains("Domain"), "{set:?}");
        cfg.session.cookie_domain = Some("example.com".into());
        let shared = Settings::new(&cfg);
        assert_eq!(shared.session_cookie, "__Secure-authgate_session");
        assert_eq!(shared.csrf_cookie, "__Host-authgate_csrf");
        let set = shared.session_set_cookie("t", 60).unwrap();
        assert_eq!(
            set.to_str().unwrap(),
            "__Secure-authgate_session=t; Path=/; Max-Age=60; HttpOnly; SameSite=Lax; Domain=example.com; Secure"
        );
    }

    #[test]
    fn every_template_renders() {
        let env = environment(None).unwrap();
        for name in [
            "login.html",
            "code.html",
            "account.html",
            "error.html",
            "delete.html",
            "logout.html",
            "consent.html",
            "forward.html",
        ] {
            assert!(env.get_template(name).is_ok(), "{name}");
        }
    }
}
