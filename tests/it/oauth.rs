//! The FreeSewing sign-in surface (seed 001): init, authorize, callback,
//! login with a one-time confirmation. Google and Microsoft legs run against
//! the real OpenID provider; GitHub against its REST API faked from the
//! documented responses.
use authgate::config::{Config, ProviderConfig};
use authgate::core::{ClientMeta, NewUser, User, UserKey};
use serde_json::{Value, json};
use wiremock::matchers::{header_regex, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{
    App, OidcPeer, PEER_CLIENT_ID, PEER_CLIENT_SECRET, PEER_PUBLIC_URL, TestDb, authorize_at_peer,
    graph_me, microsoft_provider, on_both_databases, query_param,
};

const FRONTEND: &str = "https://app.example";
const TENANT: &str = "0c6f3d1e-5b7a-4c2d-9e8f-1a2b3c4d5e6f";

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn base(cfg: &mut Config) {
    cfg.server.public_url = Some(PEER_PUBLIC_URL.parse().unwrap());
    cfg.server.frontend_url = Some(FRONTEND.parse().unwrap());
}

fn with_google(cfg: &mut Config, issuer: &str) {
    base(cfg);
    cfg.providers.insert(
        "google".into(),
        ProviderConfig {
            client_id: PEER_CLIENT_ID.into(),
            client_secret: Some(PEER_CLIENT_SECRET.into()),
            issuer: Some(issuer.parse().unwrap()),
            ..Default::default()
        },
    );
}

pub fn with_github(cfg: &mut Config, api: &MockServer) {
    base(cfg);
    cfg.providers.insert("github".into(), github_provider(api));
}

/// The GitHub provider's config against the faked API.
pub fn github_provider(api: &MockServer) -> ProviderConfig {
    ProviderConfig {
        client_id: "gh-client".into(),
        client_secret: Some("gh-secret".into()),
        auth_url: Some(
            format!("{}/login/oauth/authorize", api.uri())
                .parse()
                .unwrap(),
        ),
        token_url: Some(
            format!("{}/login/oauth/access_token", api.uri())
                .parse()
                .unwrap(),
        ),
        api_url: Some(api.uri().parse().unwrap()),
        ..Default::default()
    }
}

/// GitHub's authorize page as a browser meets it: for the configured
/// client, a page whose "Authorize" link returns to `redirect_uri` with a
/// code and the `state` unchanged (GitHub's documented redirect); anything
/// else (another client, no redirect URI) is GitHub's 404.
pub async fn github_authorize_page(api: &MockServer) {
    struct Authorize;
    impl wiremock::Respond for Authorize {
        fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
            let q = |k: &str| query_param(&request.url, k);
            let (Some("gh-client"), Some(redirect), Some(state)) =
                (q("client_id").as_deref(), q("redirect_uri"), q("state"))
            else {
                return ResponseTemplate::new(404);
            };
            let mut back = reqwest::Url::parse(&redirect).unwrap();
            back.query_pairs_mut()
                .append_pair("code", "gh-code")
                .append_pair("state", &state);
            let href = back.as_str().replace('&', "&amp;");
            ResponseTemplate::new(200).set_body_raw(
                format!(
                    r#"<!doctype html><title>Authorize application</title><h1>Authorize gh-client</h1><a id="gh-authorize" href="{href}">Authorize</a>"#
                ),
                "text/html; charset=utf-8",
            )
        }
    }
    Mock::given(method("GET"))
        .and(path("/login/oauth/authorize"))
        .respond_with(Authorize)
        .mount(api)
        .await;
}

async fn init(app: &App, body: Value) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(app.url("/oauth/init"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn init_ok(app: &App, provider: &str, language: &str) -> String {
    let (status, body) = init(app, json!({"provider": provider, "language": language})).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let state = v["state"].as_str().unwrap().to_string();
    assert_eq!(state.len(), 43);
    state
}

/// `GET /oauth/authorize`: the provider URL and the binding cookie.
async fn authorize(app: &App, state: &str) -> (reqwest::Url, String) {
    let r = no_redirects()
        .get(app.url(&format!("/oauth/authorize?state={state}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let to = reqwest::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(query_param(&to, "state").unwrap(), state);
    assert_eq!(query_param(&to, "code_challenge_method").unwrap(), "S256");
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Lax")
            && cookie.contains("Path=/oauth/callback")
    );
    (to, cookie.split(';').next().unwrap().to_string())
}

/// The browser arrives at the callback: status and where it is sent.
async fn callback(app: &App, path_and_query: &str, cookie: Option<&str>) -> (u16, Option<String>) {
    let mut r = no_redirects().get(app.url(path_and_query));
    if let Some(c) = cookie {
        r = r.header("cookie", c);
    }
    let r = r.send().await.unwrap();
    let to = r
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_string());
    (r.status().as_u16(), to)
}

async fn login(app: &App, body: Value) -> (u16, Value) {
    post(app, "/oauth/login", body).await
}

/// Where the front end was sent: (confirmation, validation) for a returning
/// person, (confirmation, none) for a new one.
fn parse_frontend(to: &str) -> (bool, String, Option<String>) {
    if let Some(rest) = to.strip_prefix(&format!("{FRONTEND}/login/callback/")) {
        let (c, v) = rest.split_once('/').unwrap();
        assert_eq!(v.len(), 20);
        assert!(v.chars().all(|ch| ch.is_ascii_lowercase()));
        (false, c.to_string(), Some(v.to_string()))
    } else if let Some(rest) = to.strip_prefix(&format!("{FRONTEND}/confirm/signup/")) {
        (true, rest.trim_end_matches('/').to_string(), None)
    } else {
        panic!("unexpected front-end redirect {to}")
    }
}

/// A whole sign-in at a real provider peer, up to the front-end redirect.
async fn through_peer(
    app: &App,
    provider: &str,
    language: &str,
    account: &str,
) -> (bool, String, Option<String>) {
    let state = init_ok(app, provider, language).await;
    let (to, cookie) = authorize(app, &state).await;
    let back = authorize_at_peer(to.as_str(), account).await;
    assert!(
        back.path()
            .ends_with(&format!("/oauth/callback/from/{provider}")),
        "{back}"
    );
    let (status, to) = callback(
        app,
        &format!("{}?{}", back.path(), back.query().unwrap()),
        Some(&cookie),
    )
    .await;
    assert_eq!(status, 302);
    let (signup, confirmation, validation) = parse_frontend(&to.unwrap());
    assert_ne!(
        confirmation, state,
        "a confirmation is a fresh secret, never the state whoever called init knows"
    );
    assert_eq!(confirmation.len(), 43);
    (signup, confirmation, validation)
}

async fn login_ok(app: &App, confirmation: &str, validation: Option<&str>) -> Value {
    let mut body = json!({"confirmation": confirmation});
    if let Some(v) = validation {
        body["validation"] = json!(v);
    }
    let (status, v) = login(app, body).await;
    assert_eq!(status, 200, "{v}");
    let token = v["token"].as_str().unwrap();
    assert!(app.core.check_session(token).await.unwrap().is_some());
    assert_eq!(v["people"], json!({}));
    v
}

async fn google_new_then_returning_person(db: &TestDb) {
    let Some(node) = OidcPeer::node() else { return };
    let peer = OidcPeer::google(
        &node,
        json!({"g-new": {"email": "new@gmail.example", "email_verified": true, "name": "Nia New"}}),
    )
    .await;
    let app = App::start(db, |c| with_google(c, &peer.issuer)).await;

    let (signup, confirmation, validation) = through_peer(&app, "google", "fr", "g-new").await;
    assert!(signup);
    let first = login_ok(&app, &confirmation, validation.as_deref()).await;
    assert_eq!(first["signup"], true);
    assert_eq!(first["account"]["email"], "new@gmail.example");
    assert_eq!(first["account"]["username"], "Nia New");
    assert_eq!(first["account"]["settings"]["language"], "fr");
    // The language is the user's locale (mails use it).
    let user = app
        .core
        .find_user(&UserKey::parse("new@gmail.example").unwrap())
        .await
        .unwrap();
    assert_eq!(user.locale.unwrap().as_str(), "fr");
    // A confirmation is single-use.
    let (status, body) = login(&app, json!({"confirmation": confirmation})).await;
    assert_eq!((status, body), (401, json!("Unauthorized")));

    let (signup, confirmation, validation) = through_peer(&app, "google", "de", "g-new").await;
    assert!(!signup);
    // Without its validation, or with a wrong one: refused, and spent.
    let (status, _) = login(
        &app,
        json!({"confirmation": confirmation, "validation": "aaaaaaaaaaaaaaaaaaaa"}),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = login(
        &app,
        json!({"confirmation": confirmation, "validation": validation}),
    )
    .await;
    assert_eq!(status, 401);

    let (_, confirmation, validation) = through_peer(&app, "google", "de", "g-new").await;
    let again = login_ok(&app, &confirmation, validation.as_deref()).await;
    assert_eq!(again["signup"], false);
    assert_eq!(again["account"]["handle"], first["account"]["handle"]);
    assert_ne!(again["token"], first["token"]);
}

/// A JSON POST: status, and the body as JSON (or as text, for the bare
/// status answers).
async fn post(app: &App, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(app.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The takeover the attack found: the attacker calls init, the victim
/// signs up with that state, and the attacker trades the state for the
/// victim's account. Now the state buys nothing, before or after.
async fn the_state_of_a_sign_up_does_not_buy_the_account(db: &TestDb) {
    let Some(node) = OidcPeer::node() else { return };
    let peer = OidcPeer::google(
        &node,
        json!({"victim": {"email": "victim@gmail.example", "email_verified": true, "name": "Vic"}}),
    )
    .await;
    let app = App::start(db, |c| with_google(c, &peer.issuer)).await;
    // The attacker starts the flow and hands the victim the link.
    let state = init_ok(&app, "google", "en").await;
    // Polling before the victim finishes: nothing.
    for path in ["/oauth/login", "/account"] {
        let body = if path == "/account" {
            json!({"id": state, "consent": {"profile": true}})
        } else {
            json!({"confirmation": state})
        };
        assert_eq!(post(&app, path, body).await.0, 401, "{path} before");
    }
    // The victim signs up in their browser.
    let (to, cookie) = authorize(&app, &state).await;
    let back = authorize_at_peer(to.as_str(), "victim").await;
    let (status, to) = callback(
        &app,
        &format!("{}?{}", back.path(), back.query().unwrap()),
        Some(&cookie),
    )
    .await;
    assert_eq!(status, 302);
    let to = to.unwrap();
    assert!(!to.contains(&state), "the state is not in {to}");
    let (signup, confirmation, _) = parse_frontend(&to);
    assert!(signup);
    // The attacker, who knows the state, gets nothing after either.
    assert_eq!(
        post(&app, "/oauth/login", json!({"confirmation": state}))
            .await
            .0,
        401
    );
    assert_eq!(
        post(
            &app,
            "/account",
            json!({"id": state, "consent": {"profile": true}})
        )
        .await
        .0,
        401
    );
    // The victim's front end finishes the sign-up as freesewing.org does:
    // `POST /account {id, consent}` from `/confirm/signup/<id>/`.
    let (status, v) = post(
        &app,
        "/account",
        json!({"id": confirmation, "consent": {"profile": true, "model": true, "openData": false}}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["account"]["email"], "victim@gmail.example");
    assert_eq!(
        v["account"]["consent"],
        json!({"profile": true, "measurements": true, "openData": false})
    );
    assert_eq!(
        (v["people"].clone(), v["patterns"].clone()),
        (json!({}), json!({}))
    );
    let token = v["token"].as_str().unwrap();
    assert!(app.core.check_session(token).await.unwrap().is_some());
    // Single use.
    let (status, _) = post(
        &app,
        "/account",
        json!({"id": confirmation, "consent": {"profile": true}}),
    )
    .await;
    assert_eq!(status, 401);
    // The consent stays on the user: the next sign-in shows it.
    let (signup, c, val) = through_peer(&app, "google", "en", "victim").await;
    assert!(!signup);
    let again = login_ok(&app, &c, val.as_deref()).await;
    assert_eq!(again["account"]["consent"]["measurements"], true);
}

/// `POST /account` as the original answered it: no consent to the profile
/// is `400 consentRequired` (and the confirmation is not spent by it).
async fn create_account_needs_consent_and_a_confirmation(db: &TestDb) {
    let Some(node) = OidcPeer::node() else { return };
    let peer = OidcPeer::google(
        &node,
        json!({"nia": {"email": "nia@gmail.example", "email_verified": true}}),
    )
    .await;
    let app = App::start(db, |c| with_google(c, &peer.issuer)).await;
    let (signup, confirmation, _) = through_peer(&app, "google", "en", "nia").await;
    assert!(signup);
    for consent in [json!(null), json!({"profile": false, "model": true})] {
        let mut body = json!({"id": confirmation});
        if !consent.is_null() {
            body["consent"] = consent;
        }
        let (status, v) = post(&app, "/account", body).await;
        assert_eq!((status, v), (400, json!("consentRequired")));
    }
    for body in [
        json!({}),
        json!({"id": ""}),
        json!({"id": 5, "consent": {"profile": true}}),
        json!({"id": "x", "consent": {"profile": "yes"}}),
        json!({"id": "x", "consent": {"profile": true}, "extra": 1}),
    ] {
        let (status, v) = post(&app, "/account", body.clone()).await;
        assert_eq!((status, v), (400, json!("Bad Request")), "{body}");
    }
    let (status, _) = post(
        &app,
        "/account",
        json!({"id": "never-issued", "consent": {"profile": true}}),
    )
    .await;
    assert_eq!(status, 401);
    let (status, v) = post(
        &app,
        "/account",
        json!({"id": confirmation, "consent": {"profile": true}}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["account"]["consent"]["openData"], false);
}

async fn microsoft_new_then_returning_person(db: &TestDb) {
    let Some(node) = OidcPeer::node() else { return };
    let peer = OidcPeer::entra_megan(&node, TENANT, &[]).await;
    let graph = graph_me("oid-megan", "Megan Bowen", "megan@contoso.example").await;
    let app = App::start(db, |c| {
        base(c);
        c.providers.insert(
            "microsoft".into(),
            microsoft_provider(&peer, TENANT, &graph),
        );
    })
    .await;
    let (signup, c, v) = through_peer(&app, "microsoft", "nl", "megan").await;
    assert!(signup);
    let first = login_ok(&app, &c, v.as_deref()).await;
    assert_eq!(first["account"]["email"], "megan@contoso.example");
    assert_eq!(first["account"]["username"], "Megan Bowen");
    let (signup, c, v) = through_peer(&app, "microsoft", "nl", "megan").await;
    assert!(!signup);
    let again = login_ok(&app, &c, v.as_deref()).await;
    assert_eq!(again["account"]["handle"], first["account"]["handle"]);
}

/// GitHub's REST API: `/user` (no public e-mail) and `/user/emails`.
pub async fn github_person(api: &MockServer, id: i64, login: &str, emails: Value) {
    api.reset().await;
    Mock::given(method("POST"))
        .and(path("/login/oauth/access_token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": format!("gho_{login}"), "token_type": "bearer", "scope": "read:user,user:email"
        })))
        .mount(api)
        .await;
    Mock::given(method("GET"))
        .and(path("/user"))
        .and(header_regex(
            "authorization",
            &format!("^Bearer gho_{login}$"),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "login": login, "id": id, "type": "User", "name": null, "email": null
        })))
        .mount(api)
        .await;
    Mock::given(method("GET"))
        .and(path("/user/emails"))
        .and(header_regex(
            "authorization",
            &format!("^Bearer gho_{login}$"),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(emails))
        .mount(api)
        .await;
}

/// GitHub's authorize step is not run (its API is faked): the callback gets
/// the state and a code as GitHub would send them.
async fn through_github(app: &App) -> (bool, String, Option<String>) {
    let state = init_ok(app, "github", "es").await;
    let (to, cookie) = authorize(app, &state).await;
    assert!(to.path().ends_with("/login/oauth/authorize"));
    assert_eq!(query_param(&to, "scope").unwrap(), "read:user user:email");
    let (status, to) = callback(
        app,
        &format!("/oauth/callback/from/github?code=gh-code&state={state}"),
        Some(&cookie),
    )
    .await;
    assert_eq!(status, 302);
    parse_frontend(&to.unwrap())
}

async fn github_uses_only_a_verified_primary_address(db: &TestDb) {
    let api = MockServer::start().await;
    let app = App::start(db, |c| with_github(c, &api)).await;
    let owner: User = app
        .core
        .add_user(
            NewUser::parse("owner@example.com", None, None).unwrap(),
            &ClientMeta::default(),
        )
        .await
        .unwrap();

    // No public e-mail, verified primary in /user/emails: signed up with it.
    github_person(
        &api,
        1001,
        "hubber",
        json!([
            {"email": "hubber@example.com", "primary": true, "verified": true, "visibility": null}
        ]),
    )
    .await;
    let (signup, c, v) = through_github(&app).await;
    assert!(signup);
    let first = login_ok(&app, &c, v.as_deref()).await;
    assert_eq!(first["account"]["email"], "hubber@example.com");
    assert_eq!(first["account"]["username"], "hubber");
    let (signup, c, v) = through_github(&app).await;
    assert!(!signup, "found again by the GitHub id");
    assert_eq!(
        login_ok(&app, &c, v.as_deref()).await["account"]["handle"],
        first["account"]["handle"]
    );

    // Unverified primary that is someone else's address: never linked.
    github_person(&api, 1002, "squatter", json!([
        {"email": "owner@example.com", "primary": true, "verified": false, "visibility": "public"}
    ])).await;
    let (signup, c, v) = through_github(&app).await;
    assert!(signup);
    let squatter = login_ok(&app, &c, v.as_deref()).await;
    assert_eq!(squatter["account"]["email"], Value::Null);
    assert_ne!(squatter["account"]["handle"], json!(owner.id.to_string()));
    assert!(app.core.user_identities(owner.id).await.unwrap().is_empty());
}

async fn states_are_single_use_and_bound_to_provider_and_browser(db: &TestDb) {
    let api = MockServer::start().await;
    github_person(&api, 7, "someone", json!([])).await;
    let app = App::start(db, |c| {
        with_github(c, &api);
        c.providers.insert(
            "google".into(),
            ProviderConfig {
                client_id: "g".into(),
                client_secret: Some("g-secret".into()),
                auth_url: Some(format!("{}/g/auth", api.uri()).parse().unwrap()),
                token_url: Some(format!("{}/g/token", api.uri()).parse().unwrap()),
                jwks_url: Some(format!("{}/g/jwks", api.uri()).parse().unwrap()),
                ..Default::default()
            },
        );
    })
    .await;

    // A Google state sent to GitHub's callback: 401, and the state is spent.
    let state = init_ok(&app, "google", "en").await;
    let (_, cookie) = authorize(&app, &state).await;
    let (status, _) = callback(
        &app,
        &format!("/oauth/callback/from/github?code=c&state={state}"),
        Some(&cookie),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = callback(
        &app,
        &format!("/oauth/callback/from/google?code=c&state={state}"),
        Some(&cookie),
    )
    .await;
    assert_eq!(status, 401);

    // Without the browser's cookie (a callback URL forwarded to someone
    // else), or with another flow's: 401.
    let state = init_ok(&app, "github", "en").await;
    let (_, _) = authorize(&app, &state).await;
    let (status, _) = callback(
        &app,
        &format!("/oauth/callback/from/github?code=c&state={state}"),
        None,
    )
    .await;
    assert_eq!(status, 401);
    let other = init_ok(&app, "github", "en").await;
    let (_, other_cookie) = authorize(&app, &other).await;
    let state = init_ok(&app, "github", "en").await;
    let (status, _) = callback(
        &app,
        &format!("/oauth/callback/from/github?code=c&state={state}"),
        Some(&other_cookie),
    )
    .await;
    assert_eq!(status, 401);

    // Unknown state, no state, a provider error, no code, another issuer.
    for query in [
        "code=c&state=never-issued".to_string(),
        "code=c".to_string(),
    ] {
        let (status, _) = callback(
            &app,
            &format!("/oauth/callback/from/github?{query}"),
            Some(&cookie),
        )
        .await;
        assert_eq!(status, 401, "{query}");
    }
    for extra in ["error=access_denied", "", "iss=https%3A%2F%2Fevil.example"] {
        let state = init_ok(&app, "github", "en").await;
        let (_, cookie) = authorize(&app, &state).await;
        let code = if extra.is_empty() { "" } else { "code=c&" };
        let (status, _) = callback(
            &app,
            &format!("/oauth/callback/from/github?{code}{extra}&state={state}"),
            Some(&cookie),
        )
        .await;
        // (GitHub names no issuer, so `iss` is only checked for OpenID
        // providers; the bare GitHub callback with a code succeeds.)
        let want = if extra.starts_with("iss=") { 302 } else { 401 };
        assert_eq!(status, want, "{extra}");
    }
    // The token endpoint refusing the code: 401.
    api.reset().await;
    let state = init_ok(&app, "github", "en").await;
    let (_, cookie) = authorize(&app, &state).await;
    let (status, _) = callback(
        &app,
        &format!("/oauth/callback/from/github?code=bad&state={state}"),
        Some(&cookie),
    )
    .await;
    assert_eq!(status, 401);
}

async fn an_openid_response_from_another_issuer_is_refused(db: &TestDb) {
    let Some(node) = OidcPeer::node() else { return };
    let peer = OidcPeer::google(
        &node,
        json!({"g1": {"email": "g1@gmail.example", "email_verified": true}}),
    )
    .await;
    let app = App::start(db, |c| with_google(c, &peer.issuer)).await;
    let state = init_ok(&app, "google", "en").await;
    let (to, cookie) = authorize(&app, &state).await;
    let back = authorize_at_peer(to.as_str(), "g1").await;
    assert_eq!(query_param(&back, "iss").unwrap(), peer.issuer);
    // RFC 9207 mix-up defence: the response's `iss` must be the provider's.
    let query = back.query().unwrap().replace("iss=http", "iss=https");
    let (status, _) = callback(&app, &format!("{}?{query}", back.path()), Some(&cookie)).await;
    assert_eq!(status, 401);
    // The provider announces the `iss` parameter in its discovery: a
    // response without it is refused too (RFC 9207), not waved through.
    let discovery: Value =
        reqwest::get(format!("{}/.well-known/openid-configuration", peer.issuer))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(
        discovery["authorization_response_iss_parameter_supported"],
        true
    );
    let state = init_ok(&app, "google", "en").await;
    let (to, cookie) = authorize(&app, &state).await;
    let back = authorize_at_peer(to.as_str(), "g1").await;
    let query: String = back
        .query_pairs()
        .filter(|(k, _)| k != "iss")
        .map(|(k, v)| format!("{k}={}", urlencode(&v)))
        .collect::<Vec<_>>()
        .join("&");
    let (status, _) = callback(&app, &format!("{}?{query}", back.path()), Some(&cookie)).await;
    assert_eq!(status, 401, "no iss");
    // With it, the same provider's response completes.
    let (signup, _, _) = through_peer(&app, "google", "en", "g1").await;
    assert!(signup);
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn confirmations_expire_and_disabled_users_are_refused(db: &TestDb) {
    let api = MockServer::start().await;
    let app = App::start(db, |c| with_github(c, &api)).await;
    github_person(
        &api,
        55,
        "late",
        json!([
            {"email": "late@example.com", "primary": true, "verified": true, "visibility": null}
        ]),
    )
    .await;
    let (_, c, _) = through_github(&app).await;
    app.clock.advance(301);
    let (status, _) = login(&app, json!({"confirmation": c})).await;
    assert_eq!(
        status, 401,
        "expired after oauth.confirmation_ttl_secs (300)"
    );

    let (signup, c, v) = through_github(&app).await;
    assert!(!signup);
    app.core
        .set_user_disabled(
            &UserKey::parse("late@example.com").unwrap(),
            true,
            &ClientMeta::default(),
        )
        .await
        .unwrap();
    let (status, body) = login(&app, json!({"confirmation": c, "validation": v})).await;
    assert_eq!((status, body), (403, json!("Forbidden")));
    // And a disabled user's next callback is refused too.
    let state = init_ok(&app, "github", "en").await;
    let (_, cookie) = authorize(&app, &state).await;
    let (status, _) = callback(
        &app,
        &format!("/oauth/callback/from/github?code=c&state={state}"),
        Some(&cookie),
    )
    .await;
    assert_eq!(status, 403);
}

async fn bad_bodies_are_400_never_500(db: &TestDb) {
    let api = MockServer::start().await;
    let app = App::start(db, |c| with_github(c, &api)).await;
    for body in [
        json!({}),
        json!({"provider": "github"}),
        json!({"language": "en"}),
        json!({"provider": "facebook", "language": "en"}),
        json!({"provider": "google", "language": "en"}),
        json!({"provider": "github", "language": "xx"}),
        json!({"provider": "github", "language": 5}),
        json!({"provider": ["github"], "language": "en"}),
        json!({"provider": "github", "language": "en", "extra": 1}),
        json!(["github", "en"]),
        json!(null),
        json!("github"),
    ] {
        let (status, text) = init(&app, body.clone()).await;
        assert_eq!((status, text.as_str()), (400, "Bad Request"), "{body}");
    }
    let client = reqwest::Client::new();
    for (ctype, raw) in [
        ("application/json", "{\"provider\": \"github\", "),
        (
            "text/plain",
            "{\"provider\": \"github\", \"language\": \"en\"}",
        ),
        ("application/json", ""),
    ] {
        let r = client
            .post(app.url("/oauth/init"))
            .header("content-type", ctype)
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{ctype} {raw}");
    }
    for body in [
        json!({}),
        json!({"confirmation": ""}),
        json!({"confirmation": 5}),
        json!({"confirmation": "x", "validation": ""}),
        json!({"confirmation": "x", "validation": 1}),
        json!({"confirmation": "x", "extra": true}),
        json!(["x"]),
    ] {
        let (status, v) = login(&app, body.clone()).await;
        assert_eq!((status, v), (400, json!("Bad Request")), "{body}");
    }
    let (status, _) = login(&app, json!({"confirmation": "x".repeat(10_000)})).await;
    assert_eq!(status, 401);
    let r = no_redirects()
        .get(app.url("/oauth/authorize"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

on_both_databases!(
    google_new_then_returning_person,
    the_state_of_a_sign_up_does_not_buy_the_account,
    create_account_needs_consent_and_a_confirmation,
    microsoft_new_then_returning_person,
    github_uses_only_a_verified_primary_address,
    states_are_single_use_and_bound_to_provider_and_browser,
    an_openid_response_from_another_issuer_is_refused,
    confirmations_expire_and_disabled_users_are_refused,
    bad_bodies_are_400_never_500,
    a_vouched_address_joins_an_existing_account_only_as_linking_says,
);

/// Ann has an account (imported, say) and signs in with Google for the
/// first time; Google vouches for her address. By default on this surface
/// (`confirm`, which needs a page these API surfaces do not have) and with
/// `never`, the sign-in is refused as an unknown person's is (401), audited,
/// with no identity linked and no second account; with `verified-email` it
/// joins her account.
async fn a_vouched_address_joins_an_existing_account_only_as_linking_says(db: &TestDb) {
    let Some(node) = OidcPeer::node() else { return };
    let peer = OidcPeer::google(
        &node,
        json!({"g-ann": {"email": "ann@gmail.example", "email_verified": true, "name": "Ann"}}),
    )
    .await;
    let ann = {
        let app = App::start(db, |_| {}).await;
        app.core
            .add_user(
                NewUser::parse("ann@gmail.example", None, None).unwrap(),
                &ClientMeta::default(),
            )
            .await
            .unwrap()
    };
    let first_sign_in = |linking: Option<authgate::core::Linking>| {
        let issuer = peer.issuer.clone();
        async move {
            let app = App::start(db, |c| {
                with_google(c, &issuer);
                c.providers.get_mut("google").unwrap().linking = linking;
            })
            .await;
            let state = init_ok(&app, "google", "en").await;
            let (to, cookie) = authorize(&app, &state).await;
            let back = authorize_at_peer(to.as_str(), "g-ann").await;
            let (status, to) = callback(
                &app,
                &format!("{}?{}", back.path(), back.query().unwrap()),
                Some(&cookie),
            )
            .await;
            (status, to, app)
        }
    };
    for (linking, reason) in [
        (None, "linking_needs_confirmation"),
        (
            Some(authgate::core::Linking::Confirm),
            "linking_needs_confirmation",
        ),
        (Some(authgate::core::Linking::Never), "linking_never"),
    ] {
        let (status, to, app) = first_sign_in(linking).await;
        assert_eq!((status, to), (401, None), "{linking:?}");
        assert!(app.core.user_identities(ann.id).await.unwrap().is_empty());
        let refused = app
            .core
            .audit_events(Some(ann.id), 50)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == "signin.refused")
            .filter(|e| e.detail.as_deref().is_some_and(|d| d.contains(reason)))
            .count();
        assert!(refused >= 1, "{linking:?}: audited as {reason}");
        assert_eq!(
            app.core.list_users(0, 10).await.unwrap().len(),
            1,
            "no second account"
        );
    }
    let (status, to, app) = first_sign_in(Some(authgate::core::Linking::VerifiedEmail)).await;
    assert_eq!(status, 302);
    let (signup, confirmation, validation) = parse_frontend(&to.unwrap());
    assert!(!signup, "her existing account");
    let v = login_ok(&app, &confirmation, validation.as_deref()).await;
    assert_eq!(v["account"]["handle"], json!(ann.id.to_string()));
    assert_eq!(app.core.user_identities(ann.id).await.unwrap().len(), 1);
}
