//! The HTTP server: one axum router with the shared base (health, metrics,
//! OpenAPI, errors, layers) and one module per API surface, each declaring
//! itself in a [`Surface`] listed in [`SURFACES`]. Surfaces translate wire
//! formats to [`Core`] calls only.
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::routing::get;
use axum::{Json, middleware};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::{
    SetSensitiveRequestHeadersLayer, SetSensitiveResponseHeadersLayer,
};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::config::{Config, ConfigError, ServerConfig, SurfacesConfig};
use crate::core::Core;

pub mod admin;
pub mod browser;
pub mod code_exchange;
pub mod error;
pub mod extract;
pub mod forward;
pub mod health;
pub mod mail_code;
pub mod metrics;
pub mod oauth;
pub mod oidc;
pub mod pages;

pub use error::ApiError;

/// Everything a handler may use. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub core: Core,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    pub http: Arc<HttpSettings>,
}

/// The parts of the configuration the HTTP base itself needs (a surface's
/// own settings travel with its routes).
#[derive(Debug, Clone, Default)]
pub struct HttpSettings {
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub admin_token: Option<crate::config::Secret>,
    /// Cookies get `Secure` (authgate is served over https).
    pub secure_cookies: bool,
}

impl AppState {
    pub fn new(core: Core, config: &Config) -> Self {
        AppState {
            core,
            metrics: metrics::handle(),
            http: Arc::new(HttpSettings {
                trusted_proxies: config.server.trusted_proxies.clone(),
                admin_token: config.admin.token.clone(),
                secure_cookies: config.server.public_url().scheme() == "https",
            }),
        }
    }
}

/// What a surface declares about itself: each surface module has one
/// (`pub const DECLARATION`) and [`SURFACES`] lists them. Adding a surface is a
/// module under `http/` and a line there (with its `[surfaces]` switch and
/// its config section, which the module declares).
pub struct Surface {
    /// The OpenAPI tag its routes carry, and what the tag says.
    pub tag: &'static str,
    pub description: &'static str,
    /// Whether `[surfaces]` serves it.
    pub enabled: fn(&SurfacesConfig) -> bool,
    /// Its routes, with its settings resolved from the config.
    pub router: fn(&Config) -> OpenApiRouter<AppState>,
    /// Its error shape under its path prefix, for the base's 404 and 405.
    pub errors: Option<error::SurfaceErrors>,
    /// The checks of its config section.
    pub validate: fn(&Config, &mut Vec<ConfigError>),
}

/// Every surface, in the order of the OpenAPI document.
pub const SURFACES: &[Surface] = &[
    code_exchange::DECLARATION,
    oauth::DECLARATION,
    browser::DECLARATION,
    pages::DECLARATION,
    oidc::DECLARATION,
    forward::DECLARATION,
    mail_code::DECLARATION,
    admin::DECLARATION,
];

/// Attach a surface's settings to its routes (its handlers take
/// `Extension<Arc<S>>`).
pub fn with_settings<S: Send + Sync + 'static>(
    router: OpenApiRouter<AppState>,
    settings: S,
) -> OpenApiRouter<AppState> {
    router.layer(axum::Extension(Arc::new(settings)))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "authgate",
        description = "Self-hosted authentication server: sessions, Microsoft/Google/GitHub sign-in and e-mail codes.",
        license(name = "Apache-2.0")
    ),
    tags((name = "operations", description = "Health, readiness, metrics and this document"))
)]
struct ApiDoc;

/// Every route of the surfaces `serve` says, with its OpenAPI description.
fn api(config: &Config, serve: impl Fn(&Surface) -> bool) -> OpenApiRouter<AppState> {
    let no_store = SetResponseHeaderLayer::overriding(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    let mut doc = ApiDoc::openapi();
    let tags = doc.tags.get_or_insert_with(Vec::new);
    for s in SURFACES {
        tags.push(
            utoipa::openapi::tag::TagBuilder::new()
                .name(s.tag)
                .description(Some(s.description))
                .build(),
        );
    }
    let mut api = OpenApiRouter::with_openapi(doc).merge(health::router());
    for s in SURFACES.iter().filter(|s| serve(s)) {
        api = api.merge((s.router)(config).layer(no_store.clone()));
    }
    api
}

/// The surfaces' error shapes by path prefix.
pub(crate) fn surface_errors() -> impl Iterator<Item = &'static error::SurfaceErrors> {
    SURFACES.iter().filter_map(|s| s.errors.as_ref())
}

/// The OpenAPI document of every surface (served at `/openapi.json` with the
/// enabled ones, printed by `authgate openapi`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    api(&Config::default(), |_| true).split_for_parts().1
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The complete application with its layers.
/// Browsers may call authgate from the front end's origin and the other
/// configured origins, with credentials (cookies); from nowhere else.
fn cors(server: &ServerConfig, languages: &[String]) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins: Vec<HeaderValue> = server
        .allowed_origins(languages)
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_credentials(true)
        .allow_methods([
            axum::http::Method::GET,
            axum::http::Method::POST,
            axum::http::Method::DELETE,
        ])
        .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION])
        .max_age(Duration::from_secs(600))
}

pub fn app(state: AppState, config: &Config) -> Router {
    let server = &config.server;
    let (mut router, doc) = api(config, |s| (s.enabled)(&config.surfaces)).split_for_parts();
    if config.surfaces.oidc && config.surfaces.pages {
        router = router.layer(middleware::map_response_with_state(
            state.clone(),
            pages::csp_with_clients,
        ));
    }
    let doc = Arc::new(doc);
    router
        .route("/openapi.json", get(move || async move { Json(doc.as_ref().clone()) }))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(middleware::from_fn(metrics::track))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(server.request_timeout_secs),
        ))
        // Bodies are limited where they are read (extractors), after
        // decompression, so an oversized body (or a compression bomb) is the
        // surface's own 400, not a bare 413 and never a memory spike.
        .layer(DefaultBodyLimit::max(server.body_limit_bytes))
        // Clients such as TimeLimit's app gzip every body. An encoding not
        // understood is passed on as it is and fails to parse: a 400.
        .layer(
            tower_http::decompression::RequestDecompressionLayer::new()
                .gzip(true)
                .deflate(true)
                .pass_through_unaccepted(true),
        )
        .layer(CatchPanicLayer::custom(error::panic_response))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                let id = req
                    .headers()
                    .get(&REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                // The path only: query strings may carry codes or states.
                tracing::debug_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
            }),
        )
        .layer(cors(server, &config.oauth.languages))
        // Answers (callbacks above all) may carry codes in their URL: never
        // pass it on to another site.
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(middleware::map_response(retry_after_on_503))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(SetSensitiveResponseHeadersLayer::new([header::SET_COOKIE]))
        .layer(SetSensitiveRequestHeadersLayer::new([header::AUTHORIZATION, header::COOKIE]))
        .with_state(state)
}

/// Every 503 says when to come back: a database outage is noticed by a
/// probe within about 50 ms of its end, so a second is a fair first wait.
async fn retry_after_on_503(mut r: axum::response::Response) -> axum::response::Response {
    if r.status() == StatusCode::SERVICE_UNAVAILABLE
        && !r.headers().contains_key(header::RETRY_AFTER)
    {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

/// How connections are bounded (see `server.*` in the README).
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// The request head must arrive within this; an idle keep-alive
    /// connection is closed after it too.
    pub header_timeout: Duration,
    /// Open connections in all; more are closed at once.
    pub max_connections: usize,
    /// Open connections from one address (trusted proxies excepted).
    pub max_per_client: usize,
    /// Addresses the per-client bound does not apply to (reverse proxies).
    pub exempt: Vec<ipnet::IpNet>,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits::new(&ServerConfig::default())
    }
}

impl ConnectionLimits {
    pub fn new(server: &ServerConfig) -> Self {
        ConnectionLimits {
            header_timeout: Duration::from_secs(server.header_timeout_secs),
            max_connections: server.max_connections,
            max_per_client: server.max_connections_per_client,
            exempt: server.trusted_proxies.clone(),
        }
    }
}

/// Open connections, in all and per client address.
#[derive(Default)]
struct Connections {
    per_client: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
    total: std::sync::atomic::AtomicUsize,
}

/// One admitted connection; gives its place back when dropped.
struct Admitted {
    conns: Arc<Connections>,
    ip: Option<std::net::IpAddr>,
}

impl Connections {
    fn admit(
        self: &Arc<Self>,
        ip: std::net::IpAddr,
        limits: &ConnectionLimits,
    ) -> Option<Admitted> {
        use std::sync::atomic::Ordering;
        if self.total.fetch_add(1, Ordering::AcqRel) >= limits.max_connections {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let counted = if limits.exempt.iter().any(|n| n.contains(&ip)) {
            None
        } else {
            let mut map = self
                .per_client
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let n = map.entry(ip).or_insert(0);
            if *n >= limits.max_per_client {
                drop(map);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return None;
            }
            *n += 1;
            Some(ip)
        };
        Some(Admitted {
            conns: self.clone(),
            ip: counted,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering;
        self.conns.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.ip {
            let mut map = self
                .conns
                .per_client
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
    }
}

/// Serve until `shutdown` resolves; then stop accepting and let requests in
/// flight finish (bounded by `grace`). Default connection limits.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    serve_with(listener, app, shutdown, grace, ConnectionLimits::default()).await
}

/// [`serve`] with these connection limits: a connection that sends no
/// complete request head within `header_timeout` (a new one, or an idle
/// keep-alive one) is closed, and connections over the limits are closed
/// as soon as they are accepted, so idle or trickling clients cannot use
/// up the process's file descriptors.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    grace: Duration,
    limits: ConnectionLimits,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt;

    // HTTP/1.1 only: it is what browsers, apps and reverse proxies speak to
    // authgate, and unlike protocol sniffing it starts the header timer the
    // moment a connection is accepted.
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let conns = Arc::new(Connections::default());
    let mut refused_logged = std::time::Instant::now() - Duration::from_secs(60);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment
                    // rather than spin, and go on serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(admitted) = conns.admit(peer.ip(), &limits) else {
            if refused_logged.elapsed() > Duration::from_secs(10) {
                refused_logged = std::time::Instant::now();
                tracing::warn!(client = %peer.ip(), "connection refused: too many open connections (in all or from this client)");
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(
            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                app.clone().oneshot(req.map(axum::body::Body::new))
            },
        );
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _admitted = admitted;
            let _ = conn.await;
        });
    }
    drop(listener);
    match tokio::time::timeout(grace, graceful.shutdown()).await {
        Ok(()) => Ok(()),
        Err(_) => {
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "requests still running after the grace period; stopping anyway"
            );
            Ok(())
        }
    }
}

/// Raise the soft limit of open files to the hard limit (many systems start
/// processes at 1,024): returns the limit now in force.
pub fn raise_open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(error = %e, "cannot raise the open-files limit");
                rlimit::getrlimit(rlimit::Resource::NOFILE)
                    .ok()
                    .map(|(soft, _)| soft)
            }
        }
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    // Register the handlers now, not at the first poll: a SIGTERM that
    // arrives right after the server is ready must still be a graceful stop.
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {},
                        _ = int.recv() => {},
                    }
                }
                (Err(e), _) | (_, Err(e)) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM/SIGINT");
                    std::future::pending::<()>().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    }
}
