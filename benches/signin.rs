//! The full OpenID sign-in of the cookie surface against the local real
//! `oidc-provider` (an Entra-like tenant) with Graph faked on 127.0.0.1:
//! `cargo bench --bench signin` (needs `npm ci` in tests/peers/oidc and
//! node; `AUTHGATE_TEST_NODE` names it). Prints latency percentiles of
//! authgate's two requests per sign-in:
//! - `GET /auth/login`: authgate alone (flow row, PKCE, authorize URL);
//! - `GET /auth/callback`: authgate plus its calls out (the peer's token
//!   endpoint, Graph `/me`; the JWKS is cached after the first).
//!
//! The provider's own pages (login and consent forms) are outside both.
//! Bounded: SIGNINS sign-ins (default 200), one at a time.
#[allow(dead_code, unused_imports, unused_macros)]
#[path = "../tests/it/support.rs"]
mod support;

use std::time::{Duration, Instant};

use support::{
    App, OidcPeer, PEER_PUBLIC_URL, TestDb, authorize_at_peer, graph_me, microsoft_provider,
};

const TENANT: &str = "5b0e8c1d-2f3a-4b5c-9d6e-7f8091a2b3c4";

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let node = std::env::var("AUTHGATE_TEST_NODE").unwrap_or_else(|_| "node".into());
    let n: usize = std::env::var("SIGNINS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let peer = OidcPeer::entra_megan(&node, TENANT, &[]).await;
    let graph = graph_me("oid-megan", "Megan Bowen", "megan@contoso.example").await;
    let db = TestDb::sqlite().await;
    let app = App::start(&db, |c| {
        c.server.public_url = Some(PEER_PUBLIC_URL.parse().unwrap());
        c.server.frontend_url = Some("http://front.example".parse().unwrap());
        c.providers.insert(
            "microsoft".into(),
            microsoft_provider(&peer, TENANT, &graph),
        );
        c.vault.keys = vec![authgate::core::Vault::new_key().unwrap().into()];
    })
    .await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let (mut login, mut callback) = (Vec::new(), Vec::new());
    let started = Instant::now();
    for _ in 0..n {
        if started.elapsed() > Duration::from_secs(300) {
            break;
        }
        let t = Instant::now();
        let r = client.get(app.url("/auth/login")).send().await.unwrap();
        login.push(t.elapsed());
        let flow = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("authgate_auth_state="))
            .and_then(|v| v.split(';').next())
            .unwrap()
            .to_string();
        let back = authorize_at_peer(r.headers()["location"].to_str().unwrap(), "megan").await;
        let t = Instant::now();
        let r = client
            .get(app.url(&format!("/auth/callback?{}", back.query().unwrap())))
            .header("cookie", flow)
            .send()
            .await
            .unwrap();
        callback.push(t.elapsed());
        assert_eq!(
            r.headers()["location"].to_str().unwrap(),
            "http://front.example/dashboard",
            "every sign-in must succeed"
        );
    }
    println!("{} sign-ins against the local oidc-provider", login.len());
    println!(
        "GET /auth/login     p50 {:.2} ms  p99 {:.2} ms",
        pct(&mut login, 0.5),
        pct(&mut login, 0.99)
    );
    println!(
        "GET /auth/callback  p50 {:.2} ms  p99 {:.2} ms  (includes the peer's token endpoint and Graph)",
        pct(&mut callback, 0.5),
        pct(&mut callback, 0.99)
    );
}
