//! Forward auth: nginx `auth_request`, Caddy `forward_auth` and Traefik
//! ForwardAuth ask authgate, for each request to a protected host, whether
//! it may reach the application. The rules are the core's
//! (`core::forward`); this module reads the proxies' headers and answers
//! in their protocols:
//!
//! - `GET /forward-auth` (Caddy, Traefik): 200 with the person's headers,
//!   a 302 to sign-in for a browser (401 for anything else), or 403 with a
//!   page that says why.
//! - `GET /forward-auth/nginx` (`auth_request`): 200, 401 or 403; nginx's
//!   `error_page` then shows `/.authgate/auth`, which answers as
//!   `/forward-auth` does.
//! - `GET /forward-auth/start?rd=…` on authgate: after sign-in, hands the
//!   browser over to the protected host (`/.authgate/callback` there, with a
//!   one-time code), or straight back when the session cookie is shared
//!   with the host's domain.
//! - `/.authgate/callback`, `/.authgate/logout`, `/.authgate/assets/*` on
//!   each protected host (the proxy sends `/.authgate/` to authgate).
//!
//! The original request (`X-Forwarded-Method`, `-Proto`, `-Host`, `-Uri`)
//! is believed only from `server.trusted_proxies`.
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Extension;
use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::header::{ACCEPT, LOCATION, ORIGIN, REFERRER_POLICY};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Client, cookie_values, set_cookie_on, url_encode};
use super::pages::{self, ForwardNext, ForwardText};
use super::{AppState, Surface, with_settings};
use crate::config::{Config, ConfigError, err};
use crate::core::forward::{ForwardPolicy, HostRule, Verdict, host_name};
use crate::core::{Error, return_path};

pub const DECLARATION: Surface = Surface {
    tag: "forward-auth",
    description: "Forward auth for reverse proxies (nginx auth_request, Caddy forward_auth, Traefik ForwardAuth)",
    enabled: |s| s.forward_auth,
    router,
    errors: None,
    validate,
};

/// The `[forward_auth]` section.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForwardConfig {
    /// The headers a let-through answer carries (the proxy copies them to
    /// the application).
    pub headers: HeaderNames,
    /// Groups by name: their members' e-mail addresses or user ids. A
    /// person's groups go in the groups header; rules may name them.
    pub groups: BTreeMap<String, Vec<String>>,
    /// The protected hosts (`app.example.com`, no scheme or port) and who
    /// may enter each.
    pub hosts: BTreeMap<String, HostConfig>,
}

/// The names of the headers with the person's details.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeaderNames {
    pub user: String,
    pub email: String,
    pub name: String,
    pub groups: String,
}

impl Default for HeaderNames {
    fn default() -> Self {
        HeaderNames {
            user: "X-Authgate-User".into(),
            email: "X-Authgate-Email".into(),
            name: "X-Authgate-Name".into(),
            groups: "X-Authgate-Groups".into(),
        }
    }
}

/// One protected host. No `allow_*` list: any signed-in person may enter;
/// otherwise a person must match one of them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostConfig {
    /// E-mail domains whose people may enter (`example.com`).
    pub allow_domains: Vec<String>,
    /// People who may enter: e-mail addresses or user ids.
    pub allow_users: Vec<String>,
    /// Groups (`[forward_auth.groups]`) whose members may enter.
    pub allow_groups: Vec<String>,
    /// Paths anyone may see: `/healthz` is that path, `/static/` everything
    /// under it.
    pub public_paths: Vec<String>,
}

/// The core's rules from the config.
pub fn policy(cfg: &Config) -> ForwardPolicy {
    let f = &cfg.forward_auth;
    let lower = |v: &[String]| v.iter().map(|s| s.trim().to_ascii_lowercase()).collect();
    ForwardPolicy {
        hosts: f
            .hosts
            .iter()
            .map(|(h, c)| {
                (
                    host_name(h),
                    HostRule {
                        allow_domains: lower(&c.allow_domains),
                        allow_users: lower(&c.allow_users),
                        allow_groups: c.allow_groups.clone(),
                        public_paths: c.public_paths.clone(),
                    },
                )
            })
            .collect(),
        groups: f
            .groups
            .iter()
            .map(|(g, m)| (g.clone(), lower(m)))
            .collect(),
        cookie_domain: cfg.session.cookie_domain.clone(),
    }
}

fn validate(cfg: &Config, errors: &mut Vec<ConfigError>) {
    let f = &cfg.forward_auth;
    if !cfg.surfaces.forward_auth {
        if !f.hosts.is_empty() {
            errors.push(err(
                "forward_auth.hosts",
                "set surfaces.forward_auth = true to protect these hosts",
            ));
        }
        return;
    }
    if !cfg.surfaces.pages {
        errors.push(err(
            "surfaces.forward_auth",
            "needs surfaces.pages: people sign in on authgate's pages",
        ));
    }
    if cfg.server.trusted_proxies.is_empty() {
        errors.push(err(
            "server.trusted_proxies",
            "must list the reverse proxies' addresses: forward auth believes the original request only from them",
        ));
    }
    if f.hosts.is_empty() {
        errors.push(err(
            "forward_auth.hosts",
            "name at least one protected host ([forward_auth.hosts.\"app.example.com\"])",
        ));
    }
    let own = cfg
        .server
        .public_url()
        .host_str()
        .unwrap_or_default()
        .to_string();
    for (host, h) in &f.hosts {
        let key = |k: &str| format!("forward_auth.hosts.\"{host}\".{k}");
        let name_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
            && !host.starts_with(['.', '-'])
            && !host.ends_with('.');
        if !name_ok {
            errors.push(err(
                &format!("forward_auth.hosts.\"{host}\""),
                "must be a host name in lower case, without scheme, port or path (app.example.com)",
            ));
        } else if *host == own {
            errors.push(err(
                &format!("forward_auth.hosts.\"{host}\""),
                "is authgate's own host (server.public_url): protect the applications' hosts",
            ));
        }
        for d in &h.allow_domains {
            if d.contains('@') || !d.contains('.') || d.contains(char::is_whitespace) {
                errors.push(err(
                    &key("allow_domains"),
                    format!("{d:?} is not a domain like example.com"),
                ));
            }
        }
        for u in &h.allow_users {
            if crate::core::Email::parse(u).is_err() && uuid::Uuid::parse_str(u).is_err() {
                errors.push(err(
                    &key("allow_users"),
                    format!("{u:?} is neither an e-mail address nor a user id"),
                ));
            }
        }
        for g in &h.allow_groups {
            if !f.groups.contains_key(g) {
                errors.push(err(
                    &key("allow_groups"),
                    format!("{g:?} is not a group of [forward_auth.groups]"),
                ));
            }
        }
        for p in &h.public_paths {
            let probe = HostRule {
                public_paths: vec![p.clone()],
                ..Default::default()
            };
            if !probe.is_public(p) || p.contains(['?', '#']) {
                errors.push(err(
                    &key("public_paths"),
                    format!(
                        "{p:?} must be a plain path starting with / (a prefix when it ends with /)"
                    ),
                ));
            }
        }
    }
    for (g, members) in &f.groups {
        for m in members {
            if crate::core::Email::parse(m).is_err() && uuid::Uuid::parse_str(m).is_err() {
                errors.push(err(
                    &format!("forward_auth.groups.{g}"),
                    format!("{m:?} is neither an e-mail address nor a user id"),
                ));
            }
        }
    }
    let h = &f.headers;
    let names = [
        ("user", &h.user),
        ("email", &h.email),
        ("name", &h.name),
        ("groups", &h.groups),
    ];
    for (k, v) in names {
        if HeaderName::from_bytes(v.as_bytes()).is_err() {
            errors.push(err(
                &format!("forward_auth.headers.{k}"),
                format!("{v:?} is not a header name"),
            ));
        }
    }
    let mut lowered: Vec<String> = names.iter().map(|(_, v)| v.to_ascii_lowercase()).collect();
    lowered.sort();
    lowered.dedup();
    if lowered.len() != names.len() {
        errors.push(err(
            "forward_auth.headers",
            "the four header names must differ",
        ));
    }
}

/// What the handlers need, resolved from the config.
struct Settings {
    user: HeaderName,
    email: HeaderName,
    name: HeaderName,
    groups: HeaderName,
    /// `server.public_url` without its trailing slash.
    public: String,
    /// The names a session cookie may come in on an https host (the
    /// host's own `__Host-` one and the shared `__Secure-` one; over https
    /// only prefixed names count, so a sibling host cannot plant a
    /// session), and on an http host (the plain name). Empty: unused.
    https_cookies: [String; 2],
    http_cookies: [String; 2],
    /// authgate's own host is under `session.cookie_domain`.
    shared_cookie: bool,
    max_age: i64,
    pages: Arc<pages::Settings>,
}

impl Settings {
    fn new(cfg: &Config) -> Self {
        let h = &cfg.forward_auth.headers;
        let name = |n: &str, default: &'static str| {
            HeaderName::from_bytes(n.as_bytes()).unwrap_or(HeaderName::from_static(default))
        };
        let public = cfg.server.public_url();
        let own = public.host_str().unwrap_or_default().to_string();
        Settings {
            user: name(&h.user, "x-authgate-user"),
            email: name(&h.email, "x-authgate-email"),
            name: name(&h.name, "x-authgate-name"),
            groups: name(&h.groups, "x-authgate-groups"),
            public: public.as_str().trim_end_matches('/').to_string(),
            https_cookies: if cfg.pages.cookie_host_prefix == Some(false) {
                [cfg.pages.cookie_name.clone(), String::new()]
            } else {
                [
                    format!("__Host-{}", cfg.pages.cookie_name),
                    format!("__Secure-{}", cfg.pages.cookie_name),
                ]
            },
            http_cookies: [cfg.pages.cookie_name.clone(), String::new()],
            shared_cookie: policy(cfg).cookie_reaches(&own),
            max_age: cfg.session.absolute_timeout_secs,
            pages: Arc::new(pages::Settings::new(cfg)),
        }
    }

    /// The cookie names a session may come in on a host of this scheme:
    /// the host's own (a hand-off's) first, then the shared one.
    fn cookie_names(&self, https: bool) -> &[String; 2] {
        if https {
            &self.https_cookies
        } else {
            &self.http_cookies
        }
    }

    /// The session tokens this request carries for a host of this scheme.
    fn tokens(&self, headers: &HeaderMap, https: bool) -> Vec<String> {
        self.cookie_names(https)
            .iter()
            .filter(|n| !n.is_empty())
            .flat_map(|n| cookie_values(headers, n))
            .take(4)
            .collect()
    }
}

fn router(cfg: &Config) -> OpenApiRouter<AppState> {
    // The checks answer proxies, tens of thousands of times a second: no
    // page headers on their empty 200s (their pages set them).
    let checks = OpenApiRouter::new()
        .routes(routes!(check))
        .routes(routes!(check_nginx));
    let r = OpenApiRouter::new()
        .routes(routes!(start))
        .routes(routes!(host_auth))
        .routes(routes!(callback))
        .routes(routes!(logout_page, logout))
        .routes(routes!(stylesheet))
        .routes(routes!(theme))
        .layer(pages::page_headers(cfg))
        .merge(checks);
    with_settings(r, Settings::new(cfg))
}

/// The request the proxy is asking about.
struct Original {
    https: bool,
    /// As the browser sent it (`app.example.com:8443`).
    host: String,
    /// Path and query.
    uri: String,
}

impl Original {
    fn origin(&self) -> String {
        format!(
            "{}://{}",
            if self.https { "https" } else { "http" },
            self.host
        )
    }

    fn url(&self) -> String {
        format!("{}{}", self.origin(), self.uri)
    }
}

/// Why the original request is not known.
enum Unknown {
    /// The peer is not one of `server.trusted_proxies`.
    Untrusted,
    /// A trusted proxy left out a header (`X-Forwarded-Host`, `-Uri`).
    Missing(&'static str),
}

/// The TCP peer's address (the proxy's, when one is in front).
struct Peer(Option<IpAddr>);

impl FromRequestParts<AppState> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(a)| a.ip()),
        ))
    }
}

fn peer_trusted(state: &AppState, peer: Option<IpAddr>) -> bool {
    peer.is_some_and(|ip| state.http.trusted_proxies.iter().any(|n| n.contains(&ip)))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The original request from a trusted proxy's `X-Forwarded-*` headers.
/// `uri`: the path to use when the proxy sends none (the host's own
/// `/.authgate/*` requests carry their path themselves).
fn original(
    state: &AppState,
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    own_uri: Option<&str>,
) -> Result<Original, Unknown> {
    if !peer_trusted(state, peer) {
        return Err(Unknown::Untrusted);
    }
    let host = header(headers, "x-forwarded-host")
        .or_else(|| own_uri.and(header(headers, "host")))
        .and_then(|h| h.split(',').next())
        .map(str::trim)
        .filter(|h| h.len() <= 255 && !h.contains(['/', '\\', '@', ' ']))
        .ok_or(Unknown::Missing("X-Forwarded-Host"))?;
    let uri = header(headers, "x-forwarded-uri")
        .or(own_uri)
        .filter(|u| u.starts_with('/') && u.len() <= 8192)
        .ok_or(Unknown::Missing("X-Forwarded-Uri"))?;
    let https = header(headers, "x-forwarded-proto")
        .and_then(|p| p.split(',').next())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    Ok(Original {
        https,
        host: host.to_string(),
        uri: uri.to_string(),
    })
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

fn unknown_answer(u: Unknown) -> Response {
    match u {
        Unknown::Untrusted => {
            tracing::debug!(
                "forward auth: a request not from server.trusted_proxies; forwarded headers ignored"
            );
            plain(
                StatusCode::FORBIDDEN,
                "forward auth answers only the proxies of server.trusted_proxies\n",
            )
        }
        Unknown::Missing(h) => {
            tracing::warn!(header = h, "forward auth: the proxy sent no {h}");
            plain(
                StatusCode::BAD_REQUEST,
                "the proxy must send X-Forwarded-Host and X-Forwarded-Uri\n",
            )
        }
    }
}

/// Does the request come from a browser (one that takes an HTML page)?
fn browser(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"))
}

/// The `lang` a URL's query names (the pages' language links).
fn asked_lang(uri: &str) -> Option<String> {
    let query = uri.split_once('?')?.1;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "lang")
        .map(|(_, v)| v.chars().take(16).collect())
}

/// The proxies' two protocols.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Caddy, Traefik, nginx's error page: redirects and pages.
    Redirects,
    /// nginx `auth_request`: 200, 401 or 403 only.
    StatusOnly,
}

async fn answer(
    state: &AppState,
    s: &Settings,
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    mode: Mode,
    own_uri: Option<&str>,
) -> Response {
    let o = match original(state, peer, headers, own_uri) {
        Ok(o) => o,
        Err(u) => return unknown_answer(u),
    };
    let tokens = s.tokens(headers, o.https);
    let verdict = match state.core.forward_check(&o.host, &o.uri, &tokens).await {
        Ok(v) => v,
        Err(e) => {
            if !e.is_outage() {
                tracing::error!(error = %e, "forward auth: check failed");
            }
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "authgate cannot answer right now\n",
            );
        }
    };
    // The host's name is for the refusals' logs and pages only.
    let host = || host_name(&o.host);
    match verdict {
        Verdict::Allow(check) => {
            // All four, empty when unknown (nobody on a public path): Caddy
            // 2.6 passes an absent one on as its unresolved placeholder.
            let value = |v: Option<&str>| {
                v.and_then(|v| HeaderValue::from_str(v).ok())
                    .unwrap_or(HeaderValue::from_static(""))
            };
            let (user, email, name, groups) = match &check {
                Some(c) => {
                    let groups = state.core.forward_policy().groups_of(&c.user).join(",");
                    (
                        value(Some(&c.user.id.to_string())),
                        value(c.user.email.as_ref().map(|e| e.as_str())),
                        value(c.user.display_name.as_deref()),
                        value(Some(&groups)),
                    )
                }
                None => (value(None), value(None), value(None), value(None)),
            };
            let mut h = HeaderMap::with_capacity(4);
            h.insert(s.user.clone(), user);
            h.insert(s.email.clone(), email);
            h.insert(s.name.clone(), name);
            h.insert(s.groups.clone(), groups);
            (StatusCode::OK, h).into_response()
        }
        Verdict::SignIn if mode == Mode::Redirects && browser(headers) => {
            let to = format!(
                "{}/forward-auth/start?rd={}",
                s.public,
                url_encode(&o.url())
            );
            let mut r = StatusCode::FOUND.into_response();
            if let Ok(v) = HeaderValue::from_str(&to) {
                r.headers_mut().insert(LOCATION, v);
            }
            r
        }
        Verdict::SignIn => plain(StatusCode::UNAUTHORIZED, "sign in first\n"),
        Verdict::Denied(c) => {
            let host = host();
            tracing::info!(host = %host, user = %c.user.id, "forward auth: refused by the host's rule");
            if mode == Mode::StatusOnly {
                return plain(StatusCode::FORBIDDEN, "not allowed\n");
            }
            let who = c
                .user
                .email
                .as_ref()
                .map(|e| e.as_str().to_string())
                .or(c.user.display_name.clone())
                .unwrap_or_else(|| c.user.id.to_string());
            pages::forward_page(
                &s.pages,
                headers,
                StatusCode::FORBIDDEN,
                ForwardText {
                    lang: asked_lang(&o.uri).as_deref(),
                    title: "forward_denied_title",
                    message: "forward_denied",
                    host: &host,
                    who: &who,
                },
                ForwardNext::Link("/.authgate/logout", "forward_other_account"),
            )
        }
        Verdict::NotProtected => {
            let host = host();
            tracing::warn!(host = %host, "forward auth: asked about a host that is not in forward_auth.hosts");
            if mode == Mode::StatusOnly {
                return plain(StatusCode::FORBIDDEN, "not a protected host\n");
            }
            pages::forward_page(
                &s.pages,
                headers,
                StatusCode::FORBIDDEN,
                ForwardText {
                    lang: asked_lang(&o.uri).as_deref(),
                    title: "forward_not_protected_title",
                    message: "forward_not_protected",
                    host: &host,
                    who: "",
                },
                ForwardNext::Link("/", "forward_open_again"),
            )
        }
    }
}

/// Caddy `forward_auth`, Traefik ForwardAuth: may this request through?
#[utoipa::path(get, path = "/forward-auth", tag = "forward-auth",
    params(
        ("X-Forwarded-Host" = String, Header, description = "The host the browser asked for (believed from server.trusted_proxies only)"),
        ("X-Forwarded-Uri" = String, Header, description = "Its path and query"),
        ("X-Forwarded-Proto" = Option<String>, Header, description = "`https` or `http`"),
        ("X-Forwarded-Method" = Option<String>, Header, description = "Its method")),
    responses(
        (status = 200, description = "Let it through; the person's id, e-mail, name and groups in the configured headers"),
        (status = 302, description = "A browser not signed in: to sign-in, then back to the original URL"),
        (status = 401, description = "Not signed in, and not a browser (no text/html in Accept)"),
        (status = 403, description = "Signed in but refused by the host's rule, or a host not protected: a page that says why"),
        (status = 400, description = "A trusted proxy sent no X-Forwarded-Host or X-Forwarded-Uri")))]
async fn check(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    Peer(peer): Peer,
    headers: HeaderMap,
) -> Response {
    answer(&state, &s, peer, &headers, Mode::Redirects, None).await
}

/// nginx `auth_request`: 200, 401 (sign in) or 403 (refused).
#[utoipa::path(get, path = "/forward-auth/nginx", tag = "forward-auth",
    responses(
        (status = 200, description = "Let it through, with the person's headers"),
        (status = 401, description = "Not signed in (nginx's error_page then shows /.authgate/auth)"),
        (status = 403, description = "Refused by the host's rule, or not a protected host")))]
async fn check_nginx(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    Peer(peer): Peer,
    headers: HeaderMap,
) -> Response {
    answer(&state, &s, peer, &headers, Mode::StatusOnly, None).await
}

/// On a protected host, through the proxy: what `/forward-auth` would
/// answer for the original request (nginx's `error_page` for 401 and 403).
#[utoipa::path(get, path = "/.authgate/auth", tag = "forward-auth",
    responses(
        (status = 302, description = "To sign-in"),
        (status = 401, description = "Not signed in, not a browser"),
        (status = 403, description = "A page that says why")))]
async fn host_auth(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    Peer(peer): Peer,
    headers: HeaderMap,
) -> Response {
    answer(&state, &s, peer, &headers, Mode::Redirects, None).await
}

#[derive(Deserialize, utoipa::IntoParams)]
struct StartQuery {
    /// The URL to go back to: on a protected host.
    rd: Option<String>,
}

/// Where `rd` may lead: a URL on a protected host, as (host, origin, path).
fn return_target(core: &crate::core::Core, rd: &str) -> Option<(String, String, String)> {
    if rd
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
    {
        return None;
    }
    let url = url::Url::parse(rd).ok()?;
    if !matches!(url.scheme(), "http" | "https")
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return None;
    }
    let host = url.host_str()?;
    core.forward_policy().host(host)?;
    let origin = url.origin().ascii_serialization();
    let path = return_path(&origin, rd)?;
    let authority = origin.split_once("://").map(|(_, a)| a)?.to_string();
    Some((authority, origin, path))
}

/// After sign-in on authgate: hand the browser over to the protected host
/// it came from (or go straight back when the shared cookie reaches it).
/// A target that is not on a protected host leads to the account page.
#[utoipa::path(get, path = "/forward-auth/start", tag = "forward-auth",
    params(StartQuery),
    responses(
        (status = 303, description = "To sign-in, to the host's /.authgate/callback with a one-time code, or to the target")))]
async fn start(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    headers: HeaderMap,
    query: Result<Query<StartQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let rd = query.ok().and_then(|Query(q)| q.rd);
    let Some((authority, origin, path)) =
        rd.as_deref().and_then(|rd| return_target(&state.core, rd))
    else {
        return pages::see_other("/account", vec![]);
    };
    let target = format!("{origin}{path}");
    let signed_in = match pages::signed_in(&state, &s.pages, &headers).await {
        Ok(v) => v,
        Err(e) => return pages::core_error_page(&s.pages, &headers, None, &e),
    };
    let Some((_, check)) = signed_in else {
        let back = format!("/forward-auth/start?rd={}", url_encode(&target));
        return pages::see_other(&format!("/login?return_to={}", url_encode(&back)), vec![]);
    };
    if s.shared_cookie && state.core.forward_policy().cookie_reaches(&authority) {
        return pages::see_other(&target, vec![]);
    }
    match state
        .core
        .forward_hand_off(&authority, &check.session)
        .await
    {
        Ok(code) => {
            let mut r = pages::see_other(
                &format!(
                    "{origin}/.authgate/callback?code={code}&rd={}",
                    url_encode(&path)
                ),
                vec![],
            );
            r.headers_mut()
                .insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
            r
        }
        Err(e) => pages::core_error_page(&s.pages, &headers, None, &e),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
struct CallbackQuery {
    /// The one-time hand-off code.
    code: Option<String>,
    /// The path to go on to on this host.
    rd: Option<String>,
}

/// On a protected host: trade the hand-off code for this host's session
/// cookie, then go on to the path the person asked for.
#[utoipa::path(get, path = "/.authgate/callback", tag = "forward-auth",
    params(CallbackQuery),
    responses(
        (status = 303, description = "Signed in on this host: to the path asked for"),
        (status = 400, description = "An unknown, used or expired code: a page"),
        (status = 403, description = "Not through a trusted proxy")))]
async fn callback(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    Peer(peer): Peer,
    Client(client): Client,
    headers: HeaderMap,
    query: Result<Query<CallbackQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let o = match original(&state, peer, &headers, Some("/.authgate/callback")) {
        Ok(o) => o,
        Err(u) => return unknown_answer(u),
    };
    let q = query.map(|Query(q)| q).ok();
    let code = q
        .as_ref()
        .and_then(|q| q.code.as_deref())
        .unwrap_or_default();
    let host = host_name(&o.host);
    match state
        .core
        .take_forward_hand_off(code, &o.host, &client)
        .await
    {
        Ok((token, session)) => {
            let to = q
                .as_ref()
                .and_then(|q| q.rd.as_deref())
                .and_then(|rd| return_path(&o.origin(), rd))
                .unwrap_or_else(|| "/".into());
            let name = &s.cookie_names(o.https)[0];
            let max_age = (session.expires_at - state.core.now()).clamp(0, s.max_age);
            let mut r = pages::see_other(
                &to,
                vec![set_cookie_on(
                    name,
                    &token,
                    "/",
                    Some(max_age),
                    o.https,
                    None,
                )],
            );
            // This URL held a code: tell no one where the browser came from.
            r.headers_mut()
                .insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
            r
        }
        Err(Error::Unauthorized) => pages::forward_page(
            &s.pages,
            &headers,
            StatusCode::BAD_REQUEST,
            ForwardText {
                lang: asked_lang(&o.uri).as_deref(),
                title: "error_title",
                message: "forward_expired",
                host: &host,
                who: "",
            },
            ForwardNext::Link("/", "forward_open_again"),
        ),
        Err(e) => pages::core_error_page(&s.pages, &headers, None, &e),
    }
}

/// On a protected host: "Sign out?", a form that posts to this path.
#[utoipa::path(get, path = "/.authgate/logout", tag = "forward-auth",
    responses((status = 200, description = "The sign-out question")))]
async fn logout_page(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    Peer(peer): Peer,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let own = uri
        .path_and_query()
        .map_or("/.authgate/logout", |p| p.as_str());
    let o = match original(&state, peer, &headers, Some(own)) {
        Ok(o) => o,
        Err(u) => return unknown_answer(u),
    };
    pages::forward_page(
        &s.pages,
        &headers,
        StatusCode::OK,
        ForwardText {
            lang: asked_lang(&o.uri).as_deref(),
            title: "logout_title",
            message: "forward_logout_question",
            host: &host_name(&o.host),
            who: "",
        },
        ForwardNext::SignOut,
    )
}

/// On a protected host: sign out here, of authgate, and of every other
/// protected host this sign-in was handed to. Only a post from this host's
/// own pages (its `Origin`) is taken.
#[utoipa::path(post, path = "/.authgate/logout", tag = "forward-auth",
    responses(
        (status = 303, description = "Signed out: to this host's /, which asks to sign in again"),
        (status = 403, description = "A post from another origin, or not through a trusted proxy")))]
async fn logout(
    State(state): State<AppState>,
    Extension(s): Extension<Arc<Settings>>,
    Peer(peer): Peer,
    Client(client): Client,
    headers: HeaderMap,
) -> Response {
    let o = match original(&state, peer, &headers, Some("/.authgate/logout")) {
        Ok(o) => o,
        Err(u) => return unknown_answer(u),
    };
    let from_here = header(&headers, ORIGIN.as_str()).is_some_and(|v| v == o.origin());
    if !from_here {
        return pages::forward_page(
            &s.pages,
            &headers,
            StatusCode::FORBIDDEN,
            ForwardText {
                lang: asked_lang(&o.uri).as_deref(),
                title: "error_title",
                message: "err_forbidden",
                host: &host_name(&o.host),
                who: "",
            },
            ForwardNext::Link("/.authgate/logout", "forward_open_again"),
        );
    }
    for token in s.tokens(&headers, o.https) {
        if let Err(e) = state.core.end_session_family(&token, &client).await {
            return pages::core_error_page(&s.pages, &headers, None, &e);
        }
    }
    let names = s.cookie_names(o.https);
    let mut cookies = vec![set_cookie_on(&names[0], "", "/", Some(0), o.https, None)];
    if let Some(d) = &state.core.forward_policy().cookie_domain
        && state.core.forward_policy().cookie_reaches(&o.host)
    {
        let shared = if names[1].is_empty() {
            &names[0]
        } else {
            &names[1]
        };
        cookies.push(set_cookie_on(shared, "", "/", Some(0), o.https, Some(d)));
    }
    pages::see_other("/", cookies)
}

/// The pages' stylesheet, on a protected host.
#[utoipa::path(get, path = "/.authgate/assets/authgate.css", tag = "forward-auth",
    responses((status = 200, description = "CSS", content_type = "text/css")))]
async fn stylesheet() -> Response {
    pages::stylesheet().await
}

/// The pages' theme, on a protected host.
#[utoipa::path(get, path = "/.authgate/assets/theme.css", tag = "forward-auth",
    responses((status = 200, description = "CSS", content_type = "text/css")))]
async fn theme(Extension(s): Extension<Arc<Settings>>) -> Response {
    pages::theme_of(&s.pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(edit: impl FnOnce(&mut Config)) -> Vec<String> {
        let mut cfg = Config::default();
        cfg.server.public_url = Some("https://auth.example.com".parse().unwrap());
        cfg.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        cfg.surfaces.forward_auth = true;
        cfg.forward_auth
            .hosts
            .insert("app.example.com".into(), HostConfig::default());
        edit(&mut cfg);
        let mut e = Vec::new();
        validate(&cfg, &mut e);
        e.into_iter().map(|e| e.key).collect()
    }

    #[test]
    fn forward_auth_configs_are_checked() {
        assert!(errors(|_| {}).is_empty(), "{:?}", errors(|_| {}));
        assert_eq!(
            errors(|c| c.server.trusted_proxies.clear()),
            ["server.trusted_proxies"]
        );
        assert_eq!(
            errors(|c| c.surfaces.pages = false),
            ["surfaces.forward_auth"]
        );
        assert_eq!(
            errors(|c| c.forward_auth.hosts.clear()),
            ["forward_auth.hosts"]
        );
        let host = |h: HostConfig| {
            errors(move |c| {
                c.forward_auth.hosts.insert("app.example.com".into(), h);
            })
        };
        assert_eq!(
            host(HostConfig {
                allow_users: vec!["not an address".into()],
                allow_domains: vec!["a@b.c".into()],
                allow_groups: vec!["nobody".into()],
                public_paths: vec!["static/".into(), "/a/../b".into(), "/ok/".into()],
            }),
            [
                "forward_auth.hosts.\"app.example.com\".allow_domains",
                "forward_auth.hosts.\"app.example.com\".allow_users",
                "forward_auth.hosts.\"app.example.com\".allow_groups",
                "forward_auth.hosts.\"app.example.com\".public_paths",
                "forward_auth.hosts.\"app.example.com\".public_paths",
            ]
        );
        for bad in [
            "https://app.example.com",
            "App.example.com",
            "app.example.com:8080",
            "auth.example.com",
        ] {
            let e = errors(|c| {
                c.forward_auth
                    .hosts
                    .insert(bad.into(), HostConfig::default());
            });
            assert_eq!(e, [format!("forward_auth.hosts.\"{bad}\"")], "{bad}");
        }
        assert_eq!(
            errors(|c| c.forward_auth.headers.email = "X-Authgate-User".into()),
            ["forward_auth.headers"]
        );
        assert_eq!(
            errors(|c| c.forward_auth.headers.name = "bad header".into()),
            ["forward_auth.headers.name"]
        );
        // Hosts without the switch are a mistake, not silently ignored.
        assert_eq!(
            errors(|c| c.surfaces.forward_auth = false),
            ["forward_auth.hosts"]
        );
    }

    #[test]
    fn the_cookie_domain_must_cover_authgate() {
        let check = |domain: &str| {
            let mut cfg = Config::default();
            cfg.server.public_url = Some("https://auth.example.com".parse().unwrap());
            cfg.session.cookie_domain = Some(domain.into());
            cfg.validate().err().map(|e| e.to_string())
        };
        assert_eq!(check("example.com"), None);
        assert_eq!(check("auth.example.com"), None);
        for bad in ["other.com", ".example.com", "com", "Example.com"] {
            let e = check(bad).unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(e.contains("session.cookie_domain"), "{bad}: {e}");
        }
    }
}
