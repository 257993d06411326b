//! The HTTP base: health, readiness, metrics, OpenAPI, errors and limits.
use authgate::core::SystemClock;
use std::sync::Arc;

use crate::support::{TestDb, TestServer};

async fn server() -> (TestDb, TestServer) {
    let db = TestDb::sqlite().await;
    let core = db.core(Arc::new(SystemClock));
    let srv = TestServer::start(core).await;
    (db, srv)
}

#[tokio::test]
async fn health_live_and_ready() {
    let (db, srv) = server().await;
    let c = reqwest::Client::new();
    let r = c.get(srv.url("/health/live")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"status": "ok"})
    );
    let r = c.get(srv.url("/health/ready")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["status"],
        "ready"
    );

    // The database goes away: not ready, but still alive.
    db.store.close().await;
    let r = c.get(srv.url("/health/ready")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["status"],
        "unavailable"
    );
    assert_eq!(
        c.get(srv.url("/health/live"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn readiness_fails_when_postgres_is_unreachable() {
    let Some(base) = crate::support::pg_base_url() else {
        return;
    };
    let (_, url, _name) = crate::support::create_pg_database(&base).await;
    let store = authgate::store::connect(&url, &Default::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let core = authgate::core::Core::new(store.clone(), Arc::new(SystemClock), Default::default());
    let srv = TestServer::start(core).await;
    let c = reqwest::Client::new();
    assert_eq!(
        c.get(srv.url("/health/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    store.close().await;
    assert_eq!(
        c.get(srv.url("/health/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    crate::support::drop_pg_database(&base, &_name).await;
}

#[tokio::test]
async fn metrics_count_requests_by_route_pattern() {
    let (_db, srv) = server().await;
    let c = reqwest::Client::new();
    for _ in 0..3 {
        c.get(srv.url("/health/live")).send().await.unwrap();
    }
    c.get(srv.url("/no/such/secret-token-in-path"))
        .send()
        .await
        .unwrap();
    let r = c.get(srv.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("http_requests_total{") && l.contains("route=\"/health/live\""))
        .unwrap_or_else(|| panic!("no counter for /health/live in:\n{text}"));
    let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 3.0, "{line}");
    assert!(text.contains("http_request_duration_seconds_bucket"));
    assert!(
        !text.contains("secret-token-in-path"),
        "raw paths must not become labels"
    );
}

#[tokio::test]
async fn openapi_documents_every_route() {
    let (_db, srv) = server().await;
    let doc: serde_json::Value = reqwest::get(srv.url("/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in ["/health/live", "/health/ready", "/metrics"] {
        assert!(
            doc["paths"][path]["get"].is_object(),
            "{path} missing from {doc}"
        );
    }
    assert_eq!(
        doc,
        serde_json::to_value(authgate::http::openapi()).unwrap()
    );
    assert_eq!(
        doc["paths"]["/health/ready"]["get"]["responses"]["503"]["description"],
        "The database is unreachable"
    );
}

#[tokio::test]
async fn unknown_paths_and_methods_get_clear_json_errors() {
    let (_db, srv) = server().await;
    let c = reqwest::Client::new();
    let r = c.get(srv.url("/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "not_found"
    );
    let r = c.delete(srv.url("/health/live")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "method_not_allowed"
    );
    let r = c
        .post(srv.url("/no/such/path"))
        .header("content-type", "application/json")
        .body(vec![b'x'; 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// SIGTERM semantics of `http::serve`: stop accepting, finish requests in
/// flight, then return.
#[tokio::test]
async fn graceful_shutdown_finishes_requests_in_flight() {
    use std::time::Duration;
    let app = axum::Router::new().route(
        "/slow",
        axum::routing::get(|| async {
            tokio::time::sleep(Duration::from_millis(400)).await;
            "done"
        }),
    );
    let srv = TestServer::serve(app).await;
    let url = srv.url("/slow");
    let inflight = tokio::spawn({
        let url = url.clone();
        async move { reqwest::get(url).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let server = srv.shutdown();
    let r = inflight.await.unwrap().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "done");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(reqwest::get(url).await.is_err(), "no longer accepting");
}
