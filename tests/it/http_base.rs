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
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");
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
    // The served document is the full one less the surfaces that are off
    // by default (forward auth needs its hosts configured).
    let full = serde_json::to_value(authgate::http::openapi()).unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        assert_eq!(item, &full["paths"][path], "{path}");
    }
    let off: Vec<&String> = full["paths"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|p| doc["paths"].get(p.as_str()).is_none())
        .collect();
    assert!(
        !off.is_empty()
            && off
                .iter()
                .all(|p| p.starts_with("/forward-auth") || p.starts_with("/.authgate/")),
        "{off:?}"
    );
    assert_eq!(doc["components"], full["components"]);
    assert_eq!(doc["tags"], full["tags"]);
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

/// Connect from another loopback address (a client of its own).
async fn connect_from(ip: [u8; 4], to: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::from((ip, 0))).unwrap();
    socket.connect(to).await.unwrap()
}

/// Whether the server closed the connection within `within` (it sent EOF
/// or reset it).
async fn closed_within(stream: &mut tokio::net::TcpStream, within: std::time::Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout(within, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// The attack found that idle connections used up the file descriptors and
/// trickled headers stayed open for 40 s. Now: connections over the
/// per-client bound are closed at once, idle and slow ones after the header
/// timeout, and everyone else is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_cannot_exhaust_the_server() {
    use tokio::io::AsyncWriteExt;
    let db = TestDb::sqlite().await;
    let core = db.core(Arc::new(SystemClock));
    let cfg = authgate::config::Config::default();
    let app = authgate::http::app(authgate::http::AppState::new(core, &cfg), &cfg);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let limits = authgate::http::ConnectionLimits {
        header_timeout: std::time::Duration::from_secs(1),
        max_connections: 10_000,
        max_per_client: 50,
        exempt: Vec::new(),
    };
    let server = tokio::spawn(authgate::http::serve_with(
        listener,
        app,
        async {
            let _ = stopped.await;
        },
        std::time::Duration::from_secs(2),
        limits,
    ));
    // One client opens four times its bound and sends nothing.
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(connect_from([127, 0, 0, 2], addr).await);
    }
    // Everyone else is still served.
    let health = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        reqwest::get(format!("http://{addr}/health/live")),
    )
    .await
    .expect("health answered during the attack")
    .unwrap();
    assert_eq!(health.status(), 200);
    // 150 were closed at once; the 50 admitted ones after the header timeout.
    let mut at_once = 0;
    for s in idle.iter_mut() {
        if closed_within(s, std::time::Duration::from_millis(200)).await {
            at_once += 1;
        }
    }
    assert!(at_once >= 150, "closed at once: {at_once}");
    for s in idle.iter_mut() {
        assert!(closed_within(s, std::time::Duration::from_secs(5)).await);
    }
    // Its place is free again: a new connection from it is served.
    let mut again = connect_from([127, 0, 0, 2], addr).await;
    again
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    use tokio::io::AsyncReadExt;
    again.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A head trickled a header line at a time is cut off at the timeout,
    // long before the trickle would end.
    let mut slow = connect_from([127, 0, 0, 3], addr).await;
    slow.write_all(b"GET /health/live HTTP/1.1\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut cut = false;
    for i in 0..40 {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        if slow
            .write_all(format!("X-Trickle-{i}: y\r\n").as_bytes())
            .await
            .is_err()
        {
            cut = true;
            break;
        }
        if closed_within(&mut slow, std::time::Duration::from_millis(1)).await {
            cut = true;
            break;
        }
    }
    assert!(cut, "the trickling client was never cut off");
    assert!(started.elapsed() < std::time::Duration::from_secs(9));
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// PostgreSQL gone (a relay in front of it cut: connections refused, open
/// ones broken), then back. The first request that finds it gone waits for
/// the pool once; after that every request is refused at once with a 503
/// and `Retry-After` (each answered well within the pool's acquire timeout,
/// which the client's own timeout stands for), and recovery is noticed by
/// the background probe without a restart. (SQLite is a file: it has no
/// outage of this kind.)
#[tokio::test]
async fn a_database_outage_is_answered_at_once_and_recovery_is_seen() {
    use crate::support::{TcpRelay, free_port};
    use std::time::Duration;
    let Some(base) = crate::support::pg_base_url() else {
        return;
    };
    let target = {
        let u = url::Url::parse(&base).unwrap();
        let host = u.host_str().unwrap().to_string();
        tokio::net::lookup_host((host.as_str(), u.port().unwrap_or(5432)))
            .await
            .unwrap()
            .next()
            .unwrap()
    };
    let (_, direct, name) = crate::support::create_pg_database(&base).await;
    let relay = TcpRelay::start(free_port(), target, Duration::ZERO).await;
    let port = relay.port;
    let mut through = url::Url::parse(&direct).unwrap();
    through.set_host(Some("127.0.0.1")).unwrap();
    through.set_port(Some(port)).unwrap();
    let acquire_timeout = Duration::from_secs(8);
    let store = authgate::store::connect(
        through.as_str(),
        &authgate::store::ConnectOptions {
            max_connections: 4,
            acquire_timeout,
        },
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let core = authgate::core::Core::new(store, Arc::new(SystemClock), Default::default());
    let srv = TestServer::start(core).await;
    let ready = srv.url("/health/ready");
    let c = reqwest::Client::new();
    assert_eq!(c.get(&ready).send().await.unwrap().status(), 200);

    relay.stop();
    // The first request finds the database gone (it may wait for the pool).
    let first = c.get(&ready).send().await.unwrap();
    assert_eq!(first.status(), 503);
    // From now on no request waits: a client that gives up after half the
    // pool's acquire timeout still gets every answer.
    let impatient = reqwest::Client::builder()
        .timeout(acquire_timeout / 2)
        .build()
        .unwrap();
    for i in 0..20 {
        // Readiness, and a request that needs the database (an e-mail code).
        let r = if i % 2 == 0 {
            impatient.get(&ready)
        } else {
            impatient
                .post(srv.url("/auth/send-mail-login-code-v2"))
                .json(&serde_json::json!({"mail": "outage@example.com", "locale": "en"}))
        }
        .send()
        .await
        .unwrap_or_else(|e| panic!("request {i} waited on the dead database: {e}"));
        assert_eq!(r.status(), 503, "request {i}");
        assert_eq!(r.headers()["retry-after"], "1", "request {i}");
    }

    // Back at the same address: seen without a restart.
    let relay = TcpRelay::start(port, target, Duration::ZERO).await;
    crate::support::wait_for_status(&ready, 200).await;
    drop(relay);
    crate::support::drop_pg_database(&base, &name).await;
}
