//! The HTTP server: one axum router with the shared base (health, metrics,
//! OpenAPI, errors, layers) and one module per API surface (added by the
//! surface issues). Surfaces translate wire formats to [`Core`] calls only.
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

use crate::config::{Config, ServerConfig, SurfacesConfig};
use crate::core::Core;

pub mod admin;
pub mod browser;
pub mod code_exchange;
pub mod error;
pub mod extract;
pub mod health;
pub mod mail_code;
pub mod metrics;
pub mod oauth;

pub use error::ApiError;

/// Everything a handler may use. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub core: Core,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    pub http: Arc<HttpSettings>,
}

/// The parts of the configuration the HTTP layer itself needs.
#[derive(Debug, Clone, Default)]
pub struct HttpSettings {
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub admin_token: Option<String>,
    pub surfaces: SurfacesConfig,
    /// Cookies get `Secure` (authgate is served over https).
    pub secure_cookies: bool,
    pub code_exchange: code_exchange::Settings,
    pub oauth: oauth::Settings,
    pub browser: browser::Settings,
}

impl AppState {
    pub fn new(core: Core, config: &Config) -> Self {
        AppState {
            core,
            metrics: metrics::handle(),
            http: Arc::new(HttpSettings {
                trusted_proxies: config.server.trusted_proxies.clone(),
                admin_token: config.admin.token.clone(),
                surfaces: config.surfaces.clone(),
                secure_cookies: config.server.public_url().scheme() == "https",
                code_exchange: code_exchange::Settings::new(config),
                oauth: oauth::Settings::new(config),
                browser: browser::Settings::new(config),
            }),
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "authgate",
        description = "Self-hosted authentication server: sessions, Microsoft/Google/GitHub sign-in and e-mail codes.",
        license(name = "Apache-2.0")
    ),
    tags(
        (name = "operations", description = "Health, readiness, metrics and this document"),
        (name = "code exchange", description = "Sessions of the Microsoft code-exchange API (/api/v1/auth)"),
        (name = "oauth", description = "Sign-in and sign-up with a provider through a one-time confirmation (FreeSewing's /oauth API)"),
        (name = "browser", description = "Cookie sessions for a browser front end, with Microsoft sign-in and a token vault (ConsultFlow's /auth API)"),
        (name = "mail code", description = "Passwordless sign-in by a code sent by e-mail (TimeLimit's /auth API)"),
        (name = "admin", description = "For the application's back end; `Authorization: Bearer <admin.token>`")
    )
)]
struct ApiDoc;

/// Every route of the enabled surfaces, with its OpenAPI description.
fn api(surfaces: &SurfacesConfig) -> OpenApiRouter<AppState> {
    let no_store = SetResponseHeaderLayer::overriding(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    let mut api = OpenApiRouter::with_openapi(ApiDoc::openapi()).merge(health::router());
    if surfaces.mail_code {
        api = api.merge(mail_code::router().layer(no_store.clone()));
    }
    if surfaces.code_exchange {
        api = api.merge(code_exchange::router().layer(no_store.clone()));
    }
    if surfaces.oauth {
        api = api.merge(oauth::router().layer(no_store.clone()));
    }
    if surfaces.browser {
        api = api.merge(browser::router().layer(no_store.clone()));
    }
    api.merge(admin::router().layer(no_store))
}

/// The OpenAPI document of every surface (served at `/openapi.json` with the
/// enabled ones, printed by `authgate openapi`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    api(&SurfacesConfig::default()).split_for_parts().1
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The complete application with its layers.
/// Browsers may call authgate from the front end's origin and the other
/// configured origins, with credentials (cookies); from nowhere else.
fn cors(server: &ServerConfig) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins: Vec<HeaderValue> = server
        .frontend_url
        .iter()
        .map(|u| u.origin().ascii_serialization())
        .chain(
            server
                .allowed_redirect_origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_string()),
        )
        .filter_map(|o| HeaderValue::from_str(&o).ok())
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

pub fn app(state: AppState, server: &ServerConfig) -> Router {
    let (router, doc) = api(&state.http.surfaces).split_for_parts();
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
        // Bodies are limited where they are read (extractors), so an
        // oversized body is the surface's own 400, not a bare 413.
        .layer(DefaultBodyLimit::max(server.body_limit_bytes))
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
        .layer(cors(server))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(SetSensitiveResponseHeadersLayer::new([header::SET_COOKIE]))
        .layer(SetSensitiveRequestHeadersLayer::new([header::AUTHORIZATION, header::COOKIE]))
        .with_state(state)
}

/// Serve until `shutdown` resolves; then stop accepting and let requests in
/// flight finish (bounded by `grace`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        let _ = tx.send(());
    });
    let server = tokio::spawn(async move { server.await });
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => return r.map_err(std::io::Error::other)?,
        _ = rx => {}
    }
    match tokio::time::timeout(grace, &mut server).await {
        Ok(r) => r.map_err(std::io::Error::other)?,
        Err(_) => {
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "requests still running after the grace period; stopping anyway"
            );
            Ok(())
        }
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
