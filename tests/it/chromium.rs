//! End to end in a real headless Chromium (driven over WebDriver by
//! fantoccini): a small front end on its own origin signs in through
//! `/auth/login`, the browser fills in the provider's (real oidc-provider)
//! login and consent forms, lands on `/dashboard`, which shows `/auth/me`'s
//! name; logout works and `/auth/me` then answers 401.
//!
//! `AUTHGATE_TEST_CHROMEDRIVER` names chromedriver (Debian
//! `chromium-driver`); `AUTHGATE_TEST_CHROMIUM` the browser (default
//! `/usr/bin/chromium`).
use std::time::{Duration, Instant};

use axum::response::Html;
use axum::routing::get;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::support::{
    App, OidcPeer, Peer, TestDb, TestServer, free_port, graph_me, microsoft_provider, peer_program,
    wait_for_port,
};

const TENANT: &str = "7d2e4f60-1a3b-4c5d-8e9f-0a1b2c3d4e5f";
const ADMIN_TOKEN: &str = "consultflow-backend-admin-token-0123456789";

/// The application's own back end, calling authgate's admin endpoints.
struct BackEnd<'a> {
    app: &'a App,
}

impl BackEnd<'_> {
    async fn introspect(&self, session: &str) -> serde_json::Value {
        let r = reqwest::Client::new()
            .post(self.app.url("/admin/sessions/introspect"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "session": session }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["cache-control"], "no-store");
        r.json().await.unwrap()
    }

    async fn provider_token(&self, user_id: &str, admin: Option<&str>) -> (u16, serde_json::Value) {
        let mut r = reqwest::Client::new()
            .post(self.app.url("/admin/provider-token"))
            .json(&json!({"user_id": user_id, "provider": "microsoft"}));
        if let Some(t) = admin {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or_default())
    }
}

/// The front end: a sign-in link, a dashboard that asks authgate who is
/// signed in and can log out, and a login page that shows the error.
fn front_end(authgate: &str) -> axum::Router {
    let index = format!(
        r#"<!doctype html><title>front</title>
<a id="signin" href="{authgate}/auth/login">Sign in with Microsoft</a>"#
    );
    let dashboard = format!(
        r#"<!doctype html><title>dashboard</title>
<p id="name"></p><button id="logout">Log out</button><p id="after"></p>
<script>
const A = "{authgate}";
fetch(A + "/auth/me", {{credentials: "include"}})
  .then(r => r.json())
  .then(me => {{ document.getElementById("name").textContent = me.name || ("error: " + me.error); }});
document.getElementById("logout").onclick = async () => {{
  const out = await fetch(A + "/auth/logout", {{method: "POST", credentials: "include"}});
  const body = await out.json();
  const me = await fetch(A + "/auth/me", {{credentials: "include"}});
  document.getElementById("after").textContent =
    (body.success === true ? "logged out" : "logout failed") + ", me " + me.status;
}};
</script>"#
    );
    let login = r#"<!doctype html><title>login</title>
<p id="error"></p>
<script>document.getElementById("error").textContent =
  new URLSearchParams(location.search).get("error") || "";</script>"#;
    axum::Router::new()
        .route("/", get(move || async move { Html(index) }))
        .route("/dashboard", get(move || async move { Html(dashboard) }))
        .route("/login", get(move || async move { Html(login) }))
}

/// Chromium under chromedriver, with its own profile; `javascript: false`
/// turns script off (a person who browses without it).
pub struct Browser {
    pub client: Client,
    _driver: Peer,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn start(driver: &str, chromium: &str, javascript: bool) -> Browser {
        Self::start_with(driver, chromium, javascript, &[]).await
    }

    /// [`Browser::start`] with more Chromium flags (e.g. host-resolver rules
    /// that send made-up host names to 127.0.0.1).
    pub async fn start_with(
        driver: &str,
        chromium: &str,
        javascript: bool,
        extra: &[&str],
    ) -> Browser {
        let port = free_port();
        let driver = Peer(
            std::process::Command::new(driver)
                .arg(format!("--port={port}"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("start chromedriver"),
        );
        wait_for_port(port, "chromedriver").await;
        let profile = tempfile::tempdir().unwrap();
        let mut caps = serde_json::Map::new();
        let mut options = json!({
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", format!("--user-data-dir={}", profile.path().display()),
            ],
        });
        if let Some(args) = options["args"].as_array_mut() {
            args.extend(extra.iter().map(|a| json!(a)));
        }
        if !javascript {
            options["prefs"] = json!({ "profile.managed_default_content_settings.javascript": 2 });
        }
        caps.insert("goog:chromeOptions".into(), options);
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session with Chromium");
        Browser {
            client,
            _driver: driver,
            _profile: profile,
        }
    }

    /// The programs, or `None` (skipped; a failure under CI).
    pub fn programs() -> Option<(String, String)> {
        let driver = peer_program("AUTHGATE_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")?;
        let chromium =
            std::env::var("AUTHGATE_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        Some((driver, chromium))
    }
}

/// Wait (bounded) until the element's text is not empty; returns it.
pub async fn text_of(c: &Client, css: &str) -> String {
    let start = Instant::now();
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            let t = e.text().await.unwrap_or_default();
            if !t.trim().is_empty() {
                return t;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{css} stayed empty at {:?}",
            c.current_url().await.ok()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Click the element once it is there (bounded); a page still replacing
/// itself (stale element) is tried again.
pub async fn click(c: &Client, css: &str) {
    let start = Instant::now();
    loop {
        let clicked = match c.find(Locator::Css(css)).await {
            Ok(e) => e.click().await.is_ok(),
            Err(_) => false,
        };
        if clicked {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{css} never clickable at {:?}",
            c.current_url().await.ok()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait (bounded) until nothing matches `css` (the page moved on).
pub async fn gone(c: &Client, css: &str) {
    let start = Instant::now();
    while c.find(Locator::Css(css)).await.is_ok() {
        assert!(start.elapsed() < Duration::from_secs(20), "{css} stayed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn type_into(c: &Client, css: &str, text: &str) {
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .send_keys(text)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_dashboard_logout_in_a_real_browser() {
    let Some(driver) = peer_program("AUTHGATE_TEST_CHROMEDRIVER", "/usr/bin/chromedriver") else {
        return;
    };
    let Some(node) = OidcPeer::node() else { return };
    let chromium =
        std::env::var("AUTHGATE_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());

    // authgate's port first: the provider must know its callback URL.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    // ConsultFlow's own set-up: the front end and authgate on `localhost`
    // names (the front end's API base is `http://localhost:3001`).
    let authgate = format!("http://localhost:{}", listener.local_addr().unwrap().port());
    let front_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front = format!(
        "http://localhost:{}",
        front_listener.local_addr().unwrap().port()
    );

    let peer = OidcPeer::entra_megan(&node, TENANT, &[format!("{authgate}/auth/callback")]).await;
    let graph = graph_me("oid-megan", "Megan Bowen", "megan@contoso.example").await;
    let db = TestDb::sqlite().await;
    let app = App::start_on(listener, &db, |c| {
        c.server.public_url = Some(authgate.parse().unwrap());
        c.server.frontend_url = Some(front.parse().unwrap());
        c.providers.insert(
            "microsoft".into(),
            microsoft_provider(&peer, TENANT, &graph),
        );
        c.vault.keys = vec![authgate::core::Vault::new_key().unwrap().into()];
        c.admin.token = Some(ADMIN_TOKEN.into());
    })
    .await;
    let _front = TestServer::serve_on(front_listener, front_end(&authgate)).await;

    let browser = Browser::start(&driver, &chromium, true).await;
    let c = browser.client.clone();

    let outcome = async {
        c.goto(&front).await.unwrap();
        click(&c, "#signin").await;
        // The provider's login form, then its consent form.
        type_into(&c, "input[name=login]", "megan").await;
        type_into(&c, "input[name=password]", "any password").await;
        click(&c, "button[type=submit]").await;
        gone(&c, "input[name=login]").await;
        click(&c, "button[type=submit]").await;

        assert_eq!(text_of(&c, "#name").await, "Megan Bowen");
        let url = c.current_url().await.unwrap();
        assert_eq!(url.as_str(), format!("{front}/dashboard"));

        // The session cookie as the browser keeps it.
        let cookies = c.get_all_cookies().await.unwrap();
        let sid = cookies
            .iter()
            .find(|k| k.name() == "connect.sid")
            .unwrap_or_else(|| panic!("no connect.sid among {cookies:?}"));
        assert_eq!(sid.http_only(), Some(true), "{sid:?}");
        assert_eq!(format!("{:?}", sid.same_site()), "Some(Lax)", "{sid:?}");
        assert_eq!(sid.path(), Some("/"), "{sid:?}");
        assert_ne!(sid.secure(), Some(true), "plain http here: {sid:?}");
        assert!(
            sid.domain().is_none_or(|d| !d.starts_with('.')),
            "a host-only cookie: {sid:?}"
        );
        assert!(sid.value().len() >= 43);
        // The flow cookie is gone once used.
        assert!(
            !cookies.iter().any(|k| k.name() == "authgate_auth_state"),
            "{cookies:?}"
        );
        // JavaScript cannot read it (HttpOnly).
        let visible = c.execute("return document.cookie", vec![]).await.unwrap();
        assert!(!visible.to_string().contains("connect.sid"), "{visible}");

        // ConsultFlow's own back end gets the cookie with every call to it:
        // it asks authgate whose session it is, then for the person's Graph
        // token (refreshed by authgate once expired), as a proxy set-up
        // would (see "moving ConsultFlow to authgate" in the README).
        let backend = BackEnd { app: &app };
        assert_eq!(
            backend.introspect("not-a-session").await,
            json!({"active": false})
        );
        let who = backend.introspect(sid.value()).await;
        assert_eq!(who["active"], true, "{who}");
        assert_eq!(who["user"]["email"], "megan@contoso.example", "{who}");
        assert_eq!(who["user"]["name"], "Megan Bowen", "{who}");
        assert_eq!(who["session"]["kind"], "cookie", "{who}");
        let user_id = who["user"]["id"].as_str().unwrap().to_string();
        let kept = app
            .core
            .provider_access_token(user_id.parse().unwrap(), "microsoft")
            .await
            .unwrap()
            .unwrap();
        let (status, token) = backend.provider_token(&user_id, Some(ADMIN_TOKEN)).await;
        assert_eq!(status, 200, "{token}");
        assert_eq!(token["access_token"].as_str(), Some(kept.token.as_str()));
        let graph_me = reqwest::Client::new()
            .get(format!("{}/v1.0/me", graph.uri()))
            .bearer_auth(token["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(graph_me.status(), 200);
        // Expired: authgate refreshes it at the provider first.
        db.exec("UPDATE provider_tokens SET expires_at = 1").await;
        let (status, fresh) = backend.provider_token(&user_id, Some(ADMIN_TOKEN)).await;
        assert_eq!(status, 200, "{fresh}");
        assert_ne!(fresh["access_token"], token["access_token"]);
        let (status, _) = backend
            .provider_token(&user_id, Some("wrong-token-wrong-token-wrong-token"))
            .await;
        assert_eq!(status, 401);
        let reads: Vec<_> = app
            .core
            .audit_events(Some(user_id.parse().unwrap()), 100)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == "provider_token.read")
            .collect();
        assert_eq!(reads.len(), 2, "every read audited");
        for e in &reads {
            let detail = e.detail.clone().unwrap_or_default();
            assert!(detail.contains("\"given\""), "{detail}");
            assert!(!detail.contains(fresh["access_token"].as_str().unwrap()));
        }

        click(&c, "#logout").await;
        assert_eq!(text_of(&c, "#after").await, "logged out, me 401");
        assert_eq!(
            backend.introspect(sid.value()).await,
            json!({"active": false})
        );
        let cookies = c.get_all_cookies().await.unwrap();
        assert!(
            !cookies.iter().any(|k| k.name() == "connect.sid"),
            "the cookie is cleared: {cookies:?}"
        );

        // Signing in again from the same browser (the provider remembers
        // the person and the consent: straight back to the dashboard).
        c.goto(&format!("{authgate}/auth/login")).await.unwrap();
        assert_eq!(text_of(&c, "#name").await, "Megan Bowen");
    }
    .await;
    let _ = c.close().await;
    outcome
}

/// A WebDriver command fantoccini has no method for, sent as it is (the
/// WebAuthn extension's virtual authenticators).
#[derive(Debug)]
struct Raw {
    path: String,
    method: axum::http::Method,
    body: Option<serde_json::Value>,
}

impl fantoccini::wd::WebDriverCompatibleCommand for Raw {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!(
            "session/{}/{}",
            session.unwrap_or_default(),
            self.path
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (axum::http::Method, Option<String>) {
        (
            self.method.clone(),
            self.body.as_ref().map(|b| b.to_string()),
        )
    }
}

async fn raw(
    c: &Client,
    method: axum::http::Method,
    path: String,
    body: Option<serde_json::Value>,
) -> serde_json::Value {
    c.issue_cmd(Raw { path, method, body })
        .await
        .unwrap_or_else(|e| panic!("WebDriver WebAuthn command: {e}"))
}

/// A virtual authenticator (CTAP2, internal, resident keys, user
/// verification that always succeeds): its id.
pub async fn add_virtual_authenticator(c: &Client) -> String {
    let id = raw(
        c,
        axum::http::Method::POST,
        "webauthn/authenticator".into(),
        Some(json!({
            "protocol": "ctap2", "transport": "internal", "hasResidentKey": true,
            "hasUserVerification": true, "isUserConsenting": true, "isUserVerified": true,
        })),
    )
    .await;
    id.as_str().expect("an authenticator id").to_string()
}

pub async fn remove_virtual_authenticator(c: &Client, id: &str) {
    raw(
        c,
        axum::http::Method::DELETE,
        format!("webauthn/authenticator/{id}"),
        None,
    )
    .await;
}

/// The credentials a virtual authenticator holds.
pub async fn authenticator_credentials(c: &Client, id: &str) -> Vec<serde_json::Value> {
    let v = raw(
        c,
        axum::http::Method::GET,
        format!("webauthn/authenticator/{id}/credentials"),
        None,
    )
    .await;
    v.as_array().cloned().unwrap_or_default()
}

/// Put a credential into a virtual authenticator (one authgate never
/// registered): `private_key` is PKCS#8, all bytes base64url.
pub async fn add_authenticator_credential(c: &Client, id: &str, credential: serde_json::Value) {
    raw(
        c,
        axum::http::Method::POST,
        format!("webauthn/authenticator/{id}/credential"),
        Some(credential),
    )
    .await;
}
