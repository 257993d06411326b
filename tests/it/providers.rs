//! Sign-in providers through the code-exchange API (seed 000).
//!
//! - A real OpenID provider (`oidc-provider`, see tests/peers/oidc) plays an
//!   Entra tenant and Google: real authorize step, codes, signed ID tokens.
//! - A provider the test controls (wiremock serving tokens the test signs
//!   with its own keys) plays every forgery: bad signature, `alg: none`,
//!   HMAC with the public key, wrong issuer/audience/nonce, expiry, key
//!   rotation, a foreign tenant claiming a known e-mail (nOAuth).
//! - Microsoft Graph is faked over HTTP from its documented `/me` response.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use authgate::config::{Config, ProviderConfig};
use authgate::core::{ClientMeta, NewUser, User, UserKey};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use wiremock::matchers::{header_regex, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::support::{
    App, OidcPeer, PEER_CLIENT_ID, PEER_CLIENT_SECRET, PEER_PUBLIC_URL, PEER_REDIRECT, TestDb,
    authorize_at_peer, mount_graph_me, on_both_databases, query_param,
};

const TENANT: &str = "6e0b4a52-1c1d-4a1e-9d43-0c3f1f5a7a01";
const FOREIGN_TENANT: &str = "a4d1b3f0-77c2-4e0b-8a55-2b9a4b9e0b02";

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn microsoft(cfg: &mut Config, authority: &str, tenant: &str, graph: &str) {
    cfg.providers.insert(
        "microsoft".into(),
        ProviderConfig {
            client_id: PEER_CLIENT_ID.into(),
            client_secret: Some(PEER_CLIENT_SECRET.into()),
            authority: Some(authority.parse().unwrap()),
            tenant: Some(tenant.into()),
            graph_url: Some(graph.parse().unwrap()),
            timeout_secs: Some(2),
            ..Default::default()
        },
    );
    cfg.code_exchange.redirect_uris = vec![PEER_REDIRECT.parse().unwrap()];
    cfg.server.public_url = Some(PEER_PUBLIC_URL.parse().unwrap());
}

async fn add_user(app: &App, email: &str) -> User {
    app.core
        .add_user(
            NewUser::parse(email, None, None).unwrap(),
            &ClientMeta::default(),
        )
        .await
        .unwrap()
}

/// `GET /api/v1/auth/oauth2`: the authorize URL and the flow cookie.
async fn start(app: &App) -> (reqwest::Url, String) {
    let r = no_redirects()
        .get(app.url("/api/v1/auth/oauth2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 301);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let location = reqwest::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    (location, cookie)
}

async fn exchange(app: &App, body: Value, cookie: Option<&str>) -> (u16, Value, Option<String>) {
    let mut r = reqwest::Client::new()
        .post(app.url("/api/v1/auth/oauth2"))
        .json(&body);
    if let Some(c) = cookie {
        r = r.header("cookie", c);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let set_cookie = r
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_string());
    (status, r.json().await.unwrap(), set_cookie)
}

async fn is_valid(app: &App, session_id: &str) -> bool {
    let r: Value = reqwest::Client::new()
        .get(app.url("/api/v1/auth/valid"))
        .header("authorization", session_id)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["valid"].as_bool().unwrap()
}

fn assert_session_id(v: &Value) -> String {
    let id = v["sessionId"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 24, "{id}");
    assert!(id.ends_with("=="));
    assert_eq!(STANDARD.decode(&id).unwrap().len(), 16);
    id
}

fn entra_accounts() -> Value {
    json!({
        "alice": {"tid": TENANT, "oid": "oid-alice", "email": "alice@contoso.example", "name": "Alice"},
        "bob": {"tid": TENANT, "oid": "oid-bob", "email": "bob@contoso.example", "name": "Bob"},
        "carol": {"tid": TENANT, "oid": "oid-carol", "email": "carol@contoso.example", "name": "Carol", "xms_edov": true},
    })
}

/// The browser back at authgate's callback with the provider's answer
/// (`query`), carrying the flow cookie `cookie` (a `Set-Cookie` value, or
/// none); then, if the callback sends it on to the front end, the front end
/// posting the one-time code it got, as MCT CO2's `Auth.oauth2` does (the
/// redirect URI in the query, a text/plain body). Returns the final status
/// and body.
async fn callback_then_exchange(app: &App, query: &str, cookie: Option<&str>) -> (u16, Value) {
    let mut r = no_redirects().get(app.url(&format!("/api/v1/auth/oauth2/callback?{query}")));
    if let Some(c) = cookie {
        r = r.header("cookie", c.split(';').next().unwrap());
    }
    let r = r.send().await.unwrap();
    if r.status() != 302 {
        let status = r.status().as_u16();
        return (status, r.json().await.unwrap_or(Value::Null));
    }
    let cleared = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cleared.starts_with("authgate_cx_state=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    let to = reqwest::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(
        format!("{}://{}{}", to.scheme(), to.authority(), to.path()),
        PEER_REDIRECT,
        "on to the front end's redirect URI"
    );
    let code = query_param(&to, "code").expect("a one-time code");
    assert!(code.starts_with("ag1."), "{code}");
    let r = reqwest::Client::new()
        .post(app.url(&format!(
            "/api/v1/auth/oauth2?redirect={}",
            url::form_urlencoded::byte_serialize(PEER_REDIRECT.as_bytes()).collect::<String>()
        )))
        .header("content-type", "text/plain;charset=UTF-8")
        .body(json!({ "code": code }).to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The callback for a provider code and state, with the flow cookie.
async fn finish(app: &App, code: &str, state: &str, cookie: &str) -> (u16, Value) {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("code", code)
        .append_pair("state", state)
        .finish();
    callback_then_exchange(app, &query, Some(cookie)).await
}

/// One full sign-in at the real provider, as the browser and MCT CO2's
/// front end do it: authgate starts the flow, the person signs in at the
/// provider, authgate's callback sends the browser on with a one-time code,
/// the front end posts it.
async fn sign_in_at_peer(app: &App, account: &str) -> (u16, Value) {
    let (authorize, cookie) = start(app).await;
    let back = authorize_at_peer(authorize.as_str(), account).await;
    assert_eq!(back.path(), "/api/v1/auth/oauth2/callback");
    callback_then_exchange(app, back.query().unwrap(), Some(&cookie)).await
}

async fn entra_sign_in_trades_a_code_for_a_session(db: &TestDb) {
    let Some(node) = OidcPeer::node() else { return };
    let peer = OidcPeer::entra(&node, TENANT, entra_accounts()).await;
    let graph = MockServer::start().await;
    let app = App::start(db, |c| microsoft(c, &peer.base(), TENANT, &graph.uri())).await;
    let alice = add_user(&app, "alice@contoso.example").await;

    let (authorize, cookie) = start(&app).await;
    assert!(
        authorize
            .as_str()
            .starts_with(&format!("{}/{TENANT}/oauth2/v2.0/authorize?", peer.base())),
        "{authorize}"
    );
    let state = query_param(&authorize, "state").unwrap();
    assert_eq!(state.len(), 43);
    assert_eq!(
        query_param(&authorize, "code_challenge_method").unwrap(),
        "S256"
    );
    assert_eq!(query_param(&authorize, "code_challenge").unwrap().len(), 43);
    assert_eq!(query_param(&authorize, "nonce").unwrap().len(), 43);
    assert_eq!(
        query_param(&authorize, "redirect_uri").unwrap(),
        format!("{PEER_PUBLIC_URL}/api/v1/auth/oauth2/callback"),
        "the provider comes back to authgate, not to the front end"
    );
    assert_eq!(
        query_param(&authorize, "client_id").unwrap(),
        PEER_CLIENT_ID
    );
    assert!(
        cookie.starts_with(&format!("authgate_cx_state={state};")),
        "{cookie}"
    );
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"));

    mount_graph_me(&graph, "oid-alice", "alice@contoso.example", "Alice").await;
    let back = authorize_at_peer(authorize.as_str(), "alice").await;
    assert_eq!(query_param(&back, "state").unwrap(), state);
    assert_eq!(query_param(&back, "iss").unwrap(), peer.issuer);
    // Login CSRF: the attacker's code and state posted from the victim's
    // front end, without the browser's flow cookie, buy nothing, and the
    // flow is spent.
    let code = query_param(&back, "code").unwrap();
    let body = json!({"code": code, "state": state, "uri": PEER_REDIRECT});
    let (status, v, _) = exchange(&app, body, None).await;
    assert_eq!(status, 406, "{v}");
    assert_eq!(v["data"]["error"], "invalid_state");
    assert_eq!(v["code"], 406);
    assert_eq!(v["status"], "406 - Not Acceptable");
    let (status, v) = callback_then_exchange(&app, back.query().unwrap(), Some(&cookie)).await;
    assert_eq!(
        (status, &v["data"]["error"]),
        (406, &json!("invalid_state")),
        "spent"
    );

    // A callback URL forwarded to another browser (no flow cookie): refused.
    let (authorize, _) = start(&app).await;
    let back = authorize_at_peer(authorize.as_str(), "alice").await;
    let (status, v) = callback_then_exchange(&app, back.query().unwrap(), None).await;
    assert_eq!(status, 406, "{v}");
    assert_eq!(v["data"]["error"], "invalid_state");

    // The browser that started it: on to the front end with a one-time
    // code, which the front end trades once.
    let (authorize, cookie) = start(&app).await;
    let back = authorize_at_peer(authorize.as_str(), "alice").await;
    let r = no_redirects()
        .get(app.url(&format!(
            "/api/v1/auth/oauth2/callback?{}",
            back.query().unwrap()
        )))
        .header("cookie", cookie.split(';').next().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");
    let to = reqwest::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let handoff = query_param(&to, "code").unwrap();
    let (status, v, _) = exchange(&app, json!({ "code": handoff }), None).await;
    assert_eq!(status, 200, "{v}");
    let first = assert_session_id(&v);
    assert!(is_valid(&app, &first).await);
    // The Microsoft account is now linked by (tenant, object id).
    let ids = app.core.user_identities(alice.id).await.unwrap();
    assert_eq!(ids.len(), 1);
    assert_eq!(
        (
            ids[0].provider.as_str(),
            ids[0].issuer.as_str(),
            ids[0].subject.as_str()
        ),
        ("microsoft", TENANT, "oid-alice")
    );
    assert!(ids[0].email_verified, "a single configured tenant vouches");
    // The same one-time code again: spent.
    let (status, v, _) = exchange(&app, json!({ "code": handoff }), None).await;
    assert_eq!(status, 406);
    assert_eq!(v["data"]["error"], "invalid_grant");

    let (status, v) = sign_in_at_peer(&app, "alice").await;
    assert_eq!(status, 200, "{v}");
    let second = assert_session_id(&v);
    assert_ne!(first, second);
    assert_eq!(app.core.user_identities(alice.id).await.unwrap().len(), 1);
    // Graph was asked with the access token once per finished sign-in.
    assert_eq!(graph.received_requests().await.unwrap().len(), 2);
}

async fn unknown_and_disabled_users_get_no_session(db: &TestDb) {
    let Some(node) = OidcPeer::node() else { return };
    let peer = OidcPeer::entra(&node, TENANT, entra_accounts()).await;
    let graph = MockServer::start().await;
    let app = App::start(db, |c| microsoft(c, &peer.base(), TENANT, &graph.uri())).await;

    mount_graph_me(&graph, "oid-bob", "bob@contoso.example", "Bob").await;
    let (status, v) = sign_in_at_peer(&app, "bob").await;
    assert_eq!(status, 404);
    assert_eq!(
        v,
        json!({"code": 404, "status": "404 - Not Found", "message": "The requested resource has not been found."})
    );
    // No sign-up on this surface: still nobody with that address.
    assert!(
        app.core
            .find_user(&UserKey::parse("bob@contoso.example").unwrap())
            .await
            .is_err()
    );

    let bob = add_user(&app, "bob@contoso.example").await;
    app.core
        .set_user_disabled(&UserKey::Id(bob.id), true, &ClientMeta::default())
        .await
        .unwrap();
    let (status, v) = sign_in_at_peer(&app, "bob").await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["status"], "403 - Forbidden");
    assert!(
        app.core
            .list_sessions(Some(bob.id), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn provider_errors_are_406_with_the_providers_document(db: &TestDb) {
    let Some(node) = OidcPeer::node() else { return };
    let peer = OidcPeer::entra(&node, TENANT, entra_accounts()).await;
    let graph = MockServer::start().await;
    let app = App::start(db, |c| microsoft(c, &peer.base(), TENANT, &graph.uri())).await;
    add_user(&app, "alice@contoso.example").await;

    // A code the provider never issued (a client that ran the authorize
    // step itself and posts only {code}).
    let (status, v, _) = exchange(&app, json!({"code": "0.AQUAsUvtTf9rs0Ku-forged"}), None).await;
    assert_eq!(status, 406, "{v}");
    assert_eq!(v["data"]["error"], "invalid_grant");
    assert!(v["data"]["error_description"].is_string());

    // Graph refuses the token: its error document is passed on.
    let graph_error = json!({"error": {
        "code": "InvalidAuthenticationToken",
        "message": "Access token validation failure.",
        "innerError": {"date": "2026-11-24T09:00:00", "request-id": "0f4e", "client-request-id": "0f4e"}
    }});
    Mock::given(method("GET"))
        .and(path("/v1.0/me"))
        .respond_with(ResponseTemplate::new(401).set_body_json(graph_error.clone()))
        .mount(&graph)
        .await;
    let (status, v) = sign_in_at_peer(&app, "alice").await;
    assert_eq!(status, 406);
    assert_eq!(v["data"], graph_error);

    // Malformed bodies and redirect URIs that are not allowed: 400.
    let bad_request = json!({"code": 400, "status": "400 - Bad Request", "message": "The server did not understand the request, an invalid request body or headers may have been given."});
    for body in [
        json!({}),
        json!({"code": ""}),
        json!({"code": 5}),
        json!({"code": "x", "uri": "https://evil.example/cb"}),
        json!({"code": "x", "extra": true}),
        json!(["code"]),
    ] {
        let (status, v, _) = exchange(&app, body.clone(), None).await;
        assert_eq!((status, &v), (400, &bad_request), "{body}");
    }
    let r = no_redirects()
        .get(app.url("/api/v1/auth/oauth2/?redirect=https://evil.example/cb"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

async fn multi_tenant_links_an_email_only_when_microsoft_vouches(db: &TestDb) {
    let Some(node) = OidcPeer::node() else { return };
    let peer = OidcPeer::entra(&node, TENANT, entra_accounts()).await;
    let graph = MockServer::start().await;
    let app = App::start(db, |c| {
        microsoft(c, &peer.base(), "organizations", &graph.uri())
    })
    .await;
    let alice = add_user(&app, "alice@contoso.example").await;
    let carol = add_user(&app, "carol@contoso.example").await;

    // Any tenant may sign in here, so an address alone proves nothing.
    mount_graph_me(&graph, "oid-alice", "alice@contoso.example", "Alice").await;
    let (status, _) = sign_in_at_peer(&app, "alice").await;
    assert_eq!(status, 404);
    assert!(app.core.user_identities(alice.id).await.unwrap().is_empty());

    // With xms_edov (the domain owner verified the address) it links.
    mount_graph_me(&graph, "oid-carol", "carol@contoso.example", "Carol").await;
    let (status, v) = sign_in_at_peer(&app, "carol").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(app.core.user_identities(carol.id).await.unwrap().len(), 1);
}

fn google(cfg: &mut Config, issuer: &str, signup: bool) {
    cfg.providers.insert(
        "google".into(),
        ProviderConfig {
            client_id: PEER_CLIENT_ID.into(),
            client_secret: Some(PEER_CLIENT_SECRET.into()),
            issuer: Some(issuer.parse().unwrap()),
            ..Default::default()
        },
    );
    cfg.code_exchange.provider = Some("google".into());
    cfg.code_exchange.signup = signup;
    cfg.code_exchange.redirect_uris = vec![PEER_REDIRECT.parse().unwrap()];
    cfg.server.public_url = Some(PEER_PUBLIC_URL.parse().unwrap());
}

async fn google_links_only_verified_addresses(db: &TestDb) {
    let Some(node) = OidcPeer::node() else { return };
    let peer = OidcPeer::google(
        &node,
        json!({
            "g-ann": {"email": "ann@gmail.example", "email_verified": true, "name": "Ann"},
            "g-eve": {"email": "victim@example.org", "email_verified": false, "name": "Eve"},
        }),
    )
    .await;
    let app = App::start(db, |c| google(c, &peer.issuer, true)).await;
    let ann = add_user(&app, "ann@gmail.example").await;
    let victim = add_user(&app, "victim@example.org").await;

    let (status, v) = sign_in_at_peer(&app, "g-ann").await;
    assert_eq!(status, 200, "{v}");
    let ids = app.core.user_identities(ann.id).await.unwrap();
    assert_eq!(ids.len(), 1);
    assert_eq!(
        (ids[0].issuer.as_str(), ids[0].subject.as_str()),
        (peer.issuer.as_str(), "g-ann")
    );

    // An unverified address never reaches the account that owns it: Eve
    // gets an account of her own, without that address.
    let (status, v) = sign_in_at_peer(&app, "g-eve").await;
    assert_eq!(status, 200, "{v}");
    let eve = session_user(&app, &assert_session_id(&v)).await;
    assert_ne!(eve.id, victim.id);
    assert_eq!(eve.email, None);
    assert!(
        app.core
            .user_identities(victim.id)
            .await
            .unwrap()
            .is_empty()
    );

    // A returning person is found by the identity, not the address.
    let (status, v) = sign_in_at_peer(&app, "g-eve").await;
    assert_eq!(status, 200);
    assert_eq!(session_user(&app, &assert_session_id(&v)).await.id, eve.id);
}

async fn session_user(app: &App, id: &str) -> User {
    app.core.check_session(id).await.unwrap().unwrap().user
}

// ---------------------------------------------------------------- forgeries

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/it/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn jwk(file: &str, kid: &str) -> Value {
    let mut k: Value = serde_json::from_slice(&fixture(&format!("{file}.jwk.json"))).unwrap();
    k["kid"] = json!(kid);
    k["use"] = json!("sig");
    k["alg"] = json!("RS256");
    k
}

fn sign(claims: &Value, kid: &str, key: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    let key = EncodingKey::from_rsa_pem(&fixture(&format!("{key}.pem"))).unwrap();
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

/// The JWKS endpoint of the controlled provider: swappable keys, counted.
#[derive(Clone)]
struct Jwks {
    keys: Arc<Mutex<Vec<Value>>>,
    hits: Arc<AtomicUsize>,
}

impl Respond for Jwks {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        self.hits.fetch_add(1, Ordering::SeqCst);
        ResponseTemplate::new(200).set_body_json(json!({"keys": *self.keys.lock().unwrap()}))
    }
}

/// A Microsoft-shaped provider whose tokens the test writes and signs.
struct Forge {
    server: MockServer,
    jwks: Jwks,
}

impl Forge {
    async fn start() -> Forge {
        let server = MockServer::start().await;
        let jwks = Jwks {
            keys: Arc::new(Mutex::new(vec![jwk("idp-1", "idp-1")])),
            hits: Arc::new(AtomicUsize::new(0)),
        };
        for tenant in [TENANT, "organizations"] {
            Mock::given(method("GET"))
                .and(path(format!("/{tenant}/discovery/v2.0/keys")))
                .respond_with(jwks.clone())
                .mount(&server)
                .await;
        }
        Forge { server, jwks }
    }

    fn authority(&self) -> String {
        self.server.uri()
    }

    fn issuer(&self, tenant: &str) -> String {
        format!("{}/{tenant}/v2.0", self.server.uri())
    }

    /// Good claims for `nonce`, from `tenant`, for object id `oid`.
    fn claims(&self, tenant: &str, oid: &str, nonce: &str) -> Value {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        json!({
            "iss": self.issuer(tenant), "aud": PEER_CLIENT_ID, "sub": format!("pairwise-{oid}"),
            "tid": tenant, "oid": oid, "nonce": nonce, "iat": now, "nbf": now, "exp": now + 3600,
            "name": "Somebody", "preferred_username": "victim@contoso.example",
            "email": "victim@contoso.example"
        })
    }

    /// The next token request (one) answers with `body` and `status`.
    async fn token_answer(&self, tenant_path: &str, status: u16, body: Value) {
        Mock::given(method("POST"))
            .and(path(format!("/{tenant_path}/oauth2/v2.0/token")))
            .respond_with(ResponseTemplate::new(status).set_body_json(body))
            .up_to_n_times(1)
            .mount(&self.server)
            .await;
    }

    async fn id_token_answer(&self, tenant_path: &str, id_token: String) {
        self.token_answer(
            tenant_path,
            200,
            json!({"token_type": "Bearer", "scope": "openid profile email User.Read",
                   "expires_in": 3599, "access_token": "forge-access-token", "id_token": id_token}),
        )
        .await;
    }

    /// Graph `/me` at `<server>/v1.0/me` says this.
    async fn graph(&self, oid: &str, upn: &str) {
        Mock::given(method("GET"))
            .and(path("/v1.0/me"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "id": oid, "userPrincipalName": upn, "displayName": "Somebody"
            })))
            .mount(&self.server)
            .await;
    }
}

fn forged_app_config(c: &mut Config, forge: &Forge, tenant: &str) {
    microsoft(c, &forge.authority(), tenant, &forge.authority());
    if let Some(p) = c.providers.get_mut("microsoft") {
        p.jwks_refetch_interval_secs = Some(3600);
    }
}

/// Start a flow, let the forge answer the token request with `make(nonce)`,
/// post the code: the status and body.
async fn attempt(
    app: &App,
    forge: &Forge,
    tenant_path: &str,
    make: impl FnOnce(&str) -> String,
) -> (u16, Value) {
    let (authorize, cookie) = start(app).await;
    let state = query_param(&authorize, "state").unwrap();
    let nonce = query_param(&authorize, "nonce").unwrap();
    forge.id_token_answer(tenant_path, make(&nonce)).await;
    let (status, v) = finish(app, "forge-code", &state, &cookie).await;
    (status, v)
}

fn assert_refused(result: &(u16, Value), why: &str) {
    assert_eq!(result.0, 406, "{why}: {}", result.1);
    let d = result.1["data"]["error_description"]
        .as_str()
        .unwrap_or_default();
    assert!(d.contains(why), "expected {why:?} in {d:?}");
}

/// Writes an ID token for a flow's nonce.
type MakeToken = dyn FnOnce(&Forge, &str) -> String;

async fn forged_id_tokens_are_refused(db: &TestDb) {
    let forge = Forge::start().await;
    forge.graph("oid-victim", "victim@contoso.example").await;
    let app = App::start(db, |c| forged_app_config(c, &forge, TENANT)).await;
    let victim = add_user(&app, "victim@contoso.example").await;

    let cases: Vec<(&str, Box<MakeToken>)> = vec![
        (
            "bad signature",
            Box::new(|f, n| sign(&f.claims(TENANT, "oid-victim", n), "idp-1", "attacker")),
        ),
        (
            "malformed or unsupported algorithm",
            Box::new(|f, n| {
                let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"idp-1"}"#);
                let body = URL_SAFE_NO_PAD.encode(f.claims(TENANT, "oid-victim", n).to_string());
                format!("{header}.{body}.")
            }),
        ),
        (
            "is not allowed",
            Box::new(|f, n| {
                // HMAC keyed with the provider's public key (which is public).
                let mut header = Header::new(Algorithm::HS256);
                header.kid = Some("idp-1".into());
                let key = EncodingKey::from_secret(&fixture("idp-1.pub.pem"));
                jsonwebtoken::encode(&header, &f.claims(TENANT, "oid-victim", n), &key).unwrap()
            }),
        ),
        (
            "issuer does not match",
            Box::new(|f, n| {
                let mut c = f.claims(TENANT, "oid-victim", n);
                c["iss"] = json!(format!("https://login.microsoftonline.com/{TENANT}/v2.0"));
                sign(&c, "idp-1", "idp-1")
            }),
        ),
        (
            "audience",
            Box::new(|f, n| {
                let mut c = f.claims(TENANT, "oid-victim", n);
                c["aud"] = json!("another-client");
                sign(&c, "idp-1", "idp-1")
            }),
        ),
        (
            "authorized party",
            Box::new(|f, n| {
                let mut c = f.claims(TENANT, "oid-victim", n);
                c["azp"] = json!("another-client");
                sign(&c, "idp-1", "idp-1")
            }),
        ),
        (
            // OpenID Connect Core 3.1.3.7: an extra audience that is not
            // trusted is refused, even with a matching authorized party.
            "not trusted",
            Box::new(|f, n| {
                let mut c = f.claims(TENANT, "oid-victim", n);
                c["aud"] = json!([PEER_CLIENT_ID, "another-client"]);
                c["azp"] = json!(PEER_CLIENT_ID);
                sign(&c, "idp-1", "idp-1")
            }),
        ),
        (
            "expired",
            Box::new(|f, n| {
                let mut c = f.claims(TENANT, "oid-victim", n);
                c["exp"] = json!(c["iat"].as_i64().unwrap() - 3600);
                sign(&c, "idp-1", "idp-1")
            }),
        ),
        (
            "nonce",
            Box::new(|f, _| {
                sign(
                    &f.claims(TENANT, "oid-victim", "another-flows-nonce"),
                    "idp-1",
                    "idp-1",
                )
            }),
        ),
        (
            "tenant is not allowed",
            Box::new(|f, n| sign(&f.claims(FOREIGN_TENANT, "oid-victim", n), "idp-1", "idp-1")),
        ),
    ];
    for (why, make) in cases {
        let result = attempt(&app, &forge, TENANT, |n| make(&forge, n)).await;
        assert_refused(&result, why);
    }
    assert!(
        app.core
            .user_identities(victim.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        app.core
            .list_sessions(Some(victim.id), 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Graph describing another account than the ID token: refused.
    let result = attempt(&app, &forge, TENANT, |n| {
        sign(
            &forge.claims(TENANT, "oid-someone-else", n),
            "idp-1",
            "idp-1",
        )
    })
    .await;
    assert_refused(&result, "another account");

    // The token endpoint's own error: Microsoft's document under `data`.
    let ms_error = json!({
        "error": "invalid_grant",
        "error_description": "AADSTS70000: The provided value for the 'code' parameter is not valid. The code has expired.\r\nTrace ID: b4b745da-baba-40fd-8c05-0624cedc5900\r\nCorrelation ID: 8174bc34-c573-4133-bb62-0ff783c7a055\r\nTimestamp: 2021-01-06 17:33:22Z",
        "error_codes": [70000],
        "timestamp": "2021-01-06 17:33:22Z",
        "trace_id": "b4b745da-baba-40fd-8c05-0624cedc5900",
        "correlation_id": "8174bc34-c573-4133-bb62-0ff783c7a055",
        "error_uri": "https://login.microsoftonline.com/error?code=70000"
    });
    let (authorize, cookie) = start(&app).await;
    let state = query_param(&authorize, "state").unwrap();
    forge.token_answer(TENANT, 400, ms_error.clone()).await;
    let (status, v) = finish(&app, "expired", &state, &cookie).await;
    assert_eq!(status, 406);
    assert_eq!(
        v,
        json!({"code": 406, "status": "406 - Not Acceptable",
               "message": "After Processing the Request Body the server did not find the content that was needed to complete the request.",
               "data": ms_error})
    );

    // And the same flow with an honest token signs the victim in: the
    // refusals above were for the reasons named, not a broken setup. (No
    // `kid` in its header: the provider's single key is tried.)
    let result = attempt(&app, &forge, TENANT, |n| {
        let key = EncodingKey::from_rsa_pem(&fixture("idp-1.pem")).unwrap();
        let claims = forge.claims(TENANT, "oid-victim", n);
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).unwrap()
    })
    .await;
    assert_eq!(result.0, 200, "{}", result.1);
    assert_eq!(app.core.user_identities(victim.id).await.unwrap().len(), 1);
}

async fn rotated_keys_are_fetched_once_and_unknown_kids_are_bounded(db: &TestDb) {
    let forge = Forge::start().await;
    forge.graph("oid-victim", "victim@contoso.example").await;
    let app = App::start(db, |c| forged_app_config(c, &forge, TENANT)).await;
    add_user(&app, "victim@contoso.example").await;

    let ok = attempt(&app, &forge, TENANT, |n| {
        sign(&forge.claims(TENANT, "oid-victim", n), "idp-1", "idp-1")
    })
    .await;
    assert_eq!(ok.0, 200, "{}", ok.1);
    assert_eq!(forge.jwks.hits.load(Ordering::SeqCst), 1);

    // The provider rotates to a new key: the unknown kid triggers one
    // re-fetch, and the new key verifies.
    forge.jwks.keys.lock().unwrap().push(jwk("idp-2", "idp-2"));
    let ok = attempt(&app, &forge, TENANT, |n| {
        sign(&forge.claims(TENANT, "oid-victim", n), "idp-2", "idp-2")
    })
    .await;
    assert_eq!(ok.0, 200, "{}", ok.1);
    assert_eq!(forge.jwks.hits.load(Ordering::SeqCst), 2);

    // Made-up kids right after: refused without hammering the provider.
    for i in 0..5 {
        let result = attempt(&app, &forge, TENANT, |n| {
            sign(
                &forge.claims(TENANT, "oid-victim", n),
                &format!("made-up-{i}"),
                "idp-2",
            )
        })
        .await;
        assert_refused(&result, "does not publish");
    }
    assert_eq!(forge.jwks.hits.load(Ordering::SeqCst), 2);
}

/// "nOAuth": in a multi-tenant app, another tenant's admin can give an
/// account any e-mail address. Such a token must never reach the account
/// that owns the address — neither by e-mail nor by a reused object id.
async fn a_foreign_tenant_cannot_take_over_an_account_by_email(db: &TestDb) {
    let forge = Forge::start().await;
    let app = App::start(db, |c| forged_app_config(c, &forge, "organizations")).await;
    let victim = add_user(&app, "victim@contoso.example").await;
    // The victim's own tenant links the account (its domain owner verified
    // the address).
    forge.graph("oid-victim", "victim@contoso.example").await;
    let linked = attempt(&app, &forge, "organizations", |n| {
        let mut c = forge.claims(TENANT, "oid-victim", n);
        c["xms_edov"] = json!(true);
        sign(&c, "idp-1", "idp-1")
    })
    .await;
    assert_eq!(linked.0, 200, "{}", linked.1);
    assert_eq!(app.core.user_identities(victim.id).await.unwrap().len(), 1);

    // The attacker's tenant asserts the victim's address in every field it
    // controls, and even the victim's object id.
    let (status, v) = attempt(&app, &forge, "organizations", |n| {
        sign(
            &forge.claims(FOREIGN_TENANT, "oid-victim", n),
            "idp-1",
            "idp-1",
        )
    })
    .await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(app.core.user_identities(victim.id).await.unwrap().len(), 1);
    let sessions = app.core.list_sessions(Some(victim.id), 10).await.unwrap();
    assert_eq!(sessions.len(), 1, "only the victim's own sign-in");
}

async fn a_slow_provider_is_an_error_not_a_hang(db: &TestDb) {
    let forge = Forge::start().await;
    let app = App::start(db, |c| forged_app_config(c, &forge, TENANT)).await;
    let (authorize, cookie) = start(&app).await;
    let state = query_param(&authorize, "state").unwrap();
    Mock::given(method("POST"))
        .and(path(format!("/{TENANT}/oauth2/v2.0/token")))
        .respond_with(ResponseTemplate::new(200).set_delay(std::time::Duration::from_secs(6)))
        .mount(&forge.server)
        .await;
    let (status, v) = finish(&app, "slow", &state, &cookie).await;
    // The configured 2 s timeout ended the wait (had authgate waited the
    // 6 s, the empty answer would be "unexpected response").
    assert_eq!(status, 406);
    assert_eq!(v["data"]["error"], "temporarily_unavailable");
    assert!(
        v["data"]["error_description"]
            .as_str()
            .unwrap()
            .contains("timed out")
    );
}

// ------------------------------------------------ GitHub and OpenID issuers

fn github(cfg: &mut Config, server: &MockServer) {
    cfg.providers.insert(
        "github".into(),
        ProviderConfig {
            client_id: "gh-client".into(),
            client_secret: Some("gh-secret".into()),
            auth_url: Some(
                format!("{}/login/oauth/authorize", server.uri())
                    .parse()
                    .unwrap(),
            ),
            token_url: Some(
                format!("{}/login/oauth/access_token", server.uri())
                    .parse()
                    .unwrap(),
            ),
            api_url: Some(server.uri().parse().unwrap()),
            ..Default::default()
        },
    );
    cfg.code_exchange.provider = Some("github".into());
    cfg.code_exchange.signup = true;
    cfg.code_exchange.redirect_uris = vec![PEER_REDIRECT.parse().unwrap()];
    cfg.server.public_url = Some(PEER_PUBLIC_URL.parse().unwrap());
}

/// GitHub's REST API as documented: `/user` and `/user/emails`.
async fn github_person(server: &MockServer, id: i64, login: &str, emails: Value) {
    server.reset().await;
    Mock::given(method("POST"))
        .and(path("/login/oauth/access_token"))
        .and(wiremock::matchers::body_string_contains("code_verifier="))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": format!("gho_{login}"), "token_type": "bearer", "scope": "read:user,user:email"
        })))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/user"))
        .and(header_regex(
            "authorization",
            &format!("^Bearer gho_{login}$"),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "login": login, "id": id, "node_id": "MDQ6VXNlcjE=", "type": "User",
            "site_admin": false, "name": null, "company": null, "email": null
        })))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/user/emails"))
        .and(header_regex(
            "authorization",
            &format!("^Bearer gho_{login}$"),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(emails))
        .mount(server)
        .await;
}

async fn github_code(app: &App) -> (u16, Value) {
    let (authorize, cookie) = start(app).await;
    let state = query_param(&authorize, "state").unwrap();
    assert!(query_param(&authorize, "code_challenge").is_some());
    assert_eq!(
        query_param(&authorize, "nonce"),
        None,
        "GitHub is no OpenID provider"
    );
    let (status, v) = finish(app, "gh-code", &state, &cookie).await;
    (status, v)
}

async fn github_uses_only_a_verified_primary_address(db: &TestDb) {
    let server = MockServer::start().await;
    let app = App::start(db, |c| github(c, &server)).await;
    let octo = add_user(&app, "octo@example.com").await;
    let other = add_user(&app, "other@example.com").await;

    // Verified primary address: linked to the existing account.
    github_person(&server, 583231, "octocat", json!([
        {"email": "octo@example.com", "verified": true, "primary": true, "visibility": "private"},
        {"email": "other@example.com", "verified": true, "primary": false, "visibility": null}
    ])).await;
    let (status, v) = github_code(&app).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(session_user(&app, &assert_session_id(&v)).await.id, octo.id);
    let ids = app.core.user_identities(octo.id).await.unwrap();
    assert_eq!(
        (ids[0].issuer.as_str(), ids[0].subject.as_str()),
        ("https://github.com", "583231")
    );

    // Primary address unverified (and no public e-mail): not linked to the
    // account owning it; a new account without an address instead.
    github_person(&server, 99, "mallory", json!([
        {"email": "other@example.com", "verified": false, "primary": true, "visibility": "public"}
    ])).await;
    let (status, v) = github_code(&app).await;
    assert_eq!(status, 200, "{v}");
    let mallory = session_user(&app, &assert_session_id(&v)).await;
    assert_ne!(mallory.id, other.id);
    assert_eq!(mallory.email, None);
    assert!(app.core.user_identities(other.id).await.unwrap().is_empty());

    // GitHub reports a bad code with status 200 and an error document.
    server.reset().await;
    let gh_error = json!({"error": "bad_verification_code", "error_description": "The code passed is incorrect or expired.", "error_uri": "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#bad-verification-code"});
    Mock::given(method("POST"))
        .and(path("/login/oauth/access_token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(gh_error.clone()))
        .mount(&server)
        .await;
    let (status, v) = github_code(&app).await;
    assert_eq!(status, 406);
    assert_eq!(v["data"], gh_error);
}

fn acme(cfg: &mut Config, issuer: &str) {
    cfg.providers.insert(
        "acme".into(),
        ProviderConfig {
            kind: Some(authgate::config::ProviderKind::Oidc),
            client_id: PEER_CLIENT_ID.into(),
            client_secret: Some(PEER_CLIENT_SECRET.into()),
            issuer: Some(issuer.parse().unwrap()),
            ..Default::default()
        },
    );
    cfg.code_exchange.provider = Some("acme".into());
    cfg.code_exchange.signup = true;
    cfg.code_exchange.redirect_uris = vec![PEER_REDIRECT.parse().unwrap()];
    cfg.server.public_url = Some(PEER_PUBLIC_URL.parse().unwrap());
}

/// A generic OpenID provider: discovery must name the configured issuer
/// (no mix-up), and userinfo must describe the ID token's subject.
async fn openid_discovery_and_userinfo_are_checked(db: &TestDb) {
    let server = MockServer::start().await;
    let issuer = server.uri();
    let discovery = |iss: &str| {
        json!({
            "issuer": iss,
            "authorization_endpoint": format!("{issuer}/authorize"),
            "token_endpoint": format!("{issuer}/token"),
            "jwks_uri": format!("{issuer}/jwks"),
            "userinfo_endpoint": format!("{issuer}/userinfo"),
        })
    };
    Mock::given(method("GET"))
        .and(path("/.well-known/openid-configuration"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(discovery("https://other-issuer.example")),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    let app = App::start(db, |c| acme(c, &issuer)).await;
    let r = no_redirects()
        .get(app.url("/api/v1/auth/oauth2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 406);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["data"]["error_description"]
            .as_str()
            .unwrap()
            .contains("another issuer"),
        "{v}"
    );

    // Honest discovery now (the failed attempt was not cached).
    Mock::given(method("GET"))
        .and(path("/.well-known/openid-configuration"))
        .respond_with(ResponseTemplate::new(200).set_body_json(discovery(&issuer)))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/jwks"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"keys": [jwk("idp-1", "idp-1")]})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/userinfo"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"sub": "somebody-else", "email": "x@example.com", "email_verified": true}),
        ))
        .mount(&server)
        .await;
    let (authorize, cookie) = start(&app).await;
    assert!(
        authorize
            .as_str()
            .starts_with(&format!("{issuer}/authorize?"))
    );
    let state = query_param(&authorize, "state").unwrap();
    let nonce = query_param(&authorize, "nonce").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // No e-mail in the ID token: authgate asks userinfo, which describes
    // another subject.
    let id_token = sign(
        &json!({"iss": issuer, "aud": PEER_CLIENT_ID, "sub": "acme-1", "nonce": nonce, "iat": now, "exp": now + 600}),
        "idp-1",
        "idp-1",
    );
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "acme-access", "token_type": "Bearer", "expires_in": 600, "id_token": id_token
        })))
        .mount(&server)
        .await;
    let (status, v) = finish(&app, "c", &state, &cookie).await;
    assert_refused(&(status, v), "userinfo describes another subject");
}

on_both_databases!(
    github_uses_only_a_verified_primary_address,
    openid_discovery_and_userinfo_are_checked,
    entra_sign_in_trades_a_code_for_a_session,
    unknown_and_disabled_users_get_no_session,
    provider_errors_are_406_with_the_providers_document,
    multi_tenant_links_an_email_only_when_microsoft_vouches,
    google_links_only_verified_addresses,
    forged_id_tokens_are_refused,
    rotated_keys_are_fetched_once_and_unknown_kids_are_bounded,
    a_foreign_tenant_cannot_take_over_an_account_by_email,
    a_slow_provider_is_an_error_not_a_hang,
);
