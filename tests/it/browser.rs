//! The cookie-session surface (seed 002): `/auth/login`, `/auth/callback`,
//! `/auth/logout`, `/auth/me`, `/auth/test-token`, with the real
//! `oidc-provider` as the Microsoft tenant and Microsoft Graph faked over
//! HTTP; the token vault.
use authgate::config::Config;
use authgate::core::secret::TokenFormat;
use authgate::core::{ClientMeta, Core, ProviderTokenSet, UserKey, Vault};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{
    App, OidcPeer, PEER_PUBLIC_URL, TestDb, authorize_at_peer, graph_me, microsoft_provider,
    on_both_databases,
};

const FRONTEND: &str = "http://front.example";
const TENANT: &str = "3f1c9a52-8d4e-4b7a-a6c1-0e2d5f8b9c7a";

on_both_databases!(
    sign_in_me_test_token_logout,
    expired_tokens_are_refreshed_and_a_failed_refresh_ends_the_session,
    a_refresh_answering_for_another_person_ends_the_session,
    callback_failures_go_to_the_error_page,
    without_a_vault_key_no_token_is_kept_and_sessions_expire,
    cookie_options_and_cross_site_posts,
    a_tossed_duplicate_session_cookie_is_refused,
    rotating_the_vault_key,
);

/// The Entra-like peer with one person, and Graph answering `/me` for them.
struct Tenant {
    peer: OidcPeer,
    graph: MockServer,
}

async fn tenant() -> Option<Tenant> {
    let node = OidcPeer::node()?;
    let peer = OidcPeer::entra_megan(&node, TENANT, &[]).await;
    let graph = graph_me("oid-megan", "Megan Bowen", "megan@contoso.example").await;
    Some(Tenant { peer, graph })
}

fn configure(cfg: &mut Config, t: &Tenant, key: Option<&str>) {
    cfg.server.public_url = Some(PEER_PUBLIC_URL.parse().unwrap());
    cfg.server.frontend_url = Some(FRONTEND.parse().unwrap());
    cfg.providers.insert(
        "microsoft".into(),
        microsoft_provider(&t.peer, TENANT, &t.graph),
    );
    cfg.vault.keys = key.map(|k| vec![k.into()]).unwrap_or_default();
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The `Set-Cookie` header that sets `name`.
fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_string)
}

fn cookie_value(set_cookie: &str) -> String {
    let pair = set_cookie.split(';').next().unwrap();
    pair.split_once('=').unwrap().1.to_string()
}

fn location(r: &reqwest::Response) -> String {
    r.headers()["location"].to_str().unwrap().to_string()
}

/// `/auth/login` → the provider → `/auth/callback`: returns the callback's
/// response (the test plays the browser, carrying the flow cookie).
async fn through_provider(app: &App, login_query: &str, account: &str) -> reqwest::Response {
    let r = client()
        .get(app.url(&format!("/auth/login{login_query}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let flow = set_cookie(&r, "authgate_auth_state").expect("flow cookie");
    assert!(flow.contains("Path=/auth/callback"), "{flow}");
    assert!(
        flow.contains("HttpOnly") && flow.contains("SameSite=Lax"),
        "{flow}"
    );
    let back = authorize_at_peer(&location(&r), account).await;
    assert_eq!(back.path(), "/auth/callback");
    client()
        .get(app.url(&format!("/auth/callback?{}", back.query().unwrap())))
        .header(
            "cookie",
            format!("authgate_auth_state={}", cookie_value(&flow)),
        )
        .send()
        .await
        .unwrap()
}

/// A full sign-in: the session cookie's value.
async fn sign_in(app: &App) -> String {
    let r = through_provider(app, "", "megan").await;
    assert_eq!(r.status(), 302);
    assert_eq!(location(&r), format!("{FRONTEND}/dashboard"));
    cookie_value(&set_cookie(&r, "connect.sid").expect("session cookie"))
}

async fn get(app: &App, path: &str, sid: &str) -> (u16, Value) {
    let r = client()
        .get(app.url(path))
        .header("cookie", format!("connect.sid={sid}"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn sign_in_me_test_token_logout(db: &TestDb) {
    let Some(t) = tenant().await else { return };
    let key = Vault::new_key().unwrap();
    let app = App::start(db, |c| configure(c, &t, Some(&key))).await;

    let r = through_provider(&app, "", "megan").await;
    assert_eq!(r.status(), 302);
    assert_eq!(location(&r), format!("{FRONTEND}/dashboard"));
    let sc = set_cookie(&r, "connect.sid").expect("session cookie");
    for attr in ["Path=/", "HttpOnly", "SameSite=Lax", "Max-Age=604800"] {
        assert!(sc.contains(attr), "{attr} missing: {sc}");
    }
    assert!(!sc.contains("Secure") && !sc.contains("Domain"), "{sc}");
    let cleared = set_cookie(&r, "authgate_auth_state").expect("flow cookie cleared");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let sid = cookie_value(&sc);

    let (status, me) = get(&app, "/auth/me", &sid).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["microsoftId"], "oid-megan");
    assert_eq!(me["email"], "megan@contoso.example");
    assert_eq!(me["name"], "Megan Bowen");
    let created = me["createdAt"].as_str().unwrap();
    assert!(
        created.ends_with(".000Z") && created.len() == 24,
        "{created}"
    );
    assert!(me["_id"].as_str().is_some_and(|id| id.len() == 36));

    let (status, tt) = get(&app, "/auth/test-token", &sid).await;
    assert_eq!(status, 200, "{tt}");
    assert_eq!(tt["success"], true);
    assert_eq!(tt["message"], "Token is valid");
    assert_eq!(tt["user"]["id"], me["_id"]);
    assert_eq!(tt["user"]["tokenIsExpired"], false);
    assert!(tt["user"]["tokenExpiresAt"].as_str().is_some(), "{tt}");
    assert!(tt["tokenClaims"]["scp"].as_str().is_some(), "{tt}");
    assert_eq!(tt["graphProfile"]["displayName"], "Megan Bowen");
    assert_eq!(
        tt["graphProfile"]["userPrincipalName"],
        "megan@contoso.example"
    );

    // The token Graph was called with is the one the vault keeps, and the
    // database holds only ciphertext of it.
    let seen: Vec<String> = t
        .graph
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter_map(|r| r.headers.get("authorization"))
        .map(|v| {
            v.to_str()
                .unwrap()
                .trim_start_matches("Bearer ")
                .to_string()
        })
        .collect();
    let access = seen.last().unwrap().clone();
    assert_eq!(tt["user"]["tokenLength"], access.len());
    let user_id: uuid::Uuid = me["_id"].as_str().unwrap().parse().unwrap();
    let identity = app.core.user_identities(user_id).await.unwrap().remove(0);
    let row = db
        .store
        .provider_tokens(identity.id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        !row.access_token
            .windows(access.len())
            .any(|w| w == access.as_bytes()),
        "the access token is stored in clear"
    );
    assert!(row.refresh_token.is_some(), "the refresh token is kept");
    assert!(
        !tt.to_string().contains(&access),
        "the token is in the body"
    );

    // Logout: the origin is checked, the session ends server-side.
    let r = client()
        .post(app.url("/auth/logout"))
        .header("cookie", format!("connect.sid={sid}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "no Origin and no Referer");
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"error": "Forbidden"})
    );
    assert_eq!(get(&app, "/auth/me", &sid).await.0, 200);
    let r = client()
        .post(app.url("/auth/logout"))
        .header("cookie", format!("connect.sid={sid}"))
        .header("origin", FRONTEND)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let clear = set_cookie(&r, "connect.sid").unwrap();
    assert!(
        clear.starts_with("connect.sid=;") && clear.contains("Max-Age=0"),
        "{clear}"
    );
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"success": true}));
    assert_eq!(
        get(&app, "/auth/me", &sid).await,
        (401, json!({"error": "Unauthorized"}))
    );
    assert_eq!(
        get(&app, "/auth/test-token", &sid).await,
        (401, json!({"error": "Unauthorized"}))
    );

    // A second sign-in finds the same user (by tenant and object id).
    let again = sign_in(&app).await;
    assert_ne!(again, sid);
    assert_eq!(get(&app, "/auth/me", &again).await.1["_id"], me["_id"]);

    // Graph refusing the token: the documented 500.
    t.graph.reset().await;
    Mock::given(method("GET"))
        .and(path("/v1.0/me"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "error": {"code": "InvalidAuthenticationToken", "message": "Access token has expired."}
        })))
        .mount(&t.graph)
        .await;
    let (status, body) = get(&app, "/auth/test-token", &again).await;
    assert_eq!(status, 500);
    assert_eq!(body["success"], false);
    assert_eq!(body["error"], "Token test failed");
    assert!(
        body["message"].as_str().is_some_and(|m| m.contains("401")),
        "{body}"
    );
}

async fn expired_tokens_are_refreshed_and_a_failed_refresh_ends_the_session(db: &TestDb) {
    let Some(t) = tenant().await else { return };
    let key = Vault::new_key().unwrap();
    let app = App::start(db, |c| configure(c, &t, Some(&key))).await;
    let sid = sign_in(&app).await;
    let (_, me) = get(&app, "/auth/me", &sid).await;
    let user_id: uuid::Uuid = me["_id"].as_str().unwrap().parse().unwrap();
    let before = app
        .core
        .provider_access_token(user_id, "microsoft")
        .await
        .unwrap()
        .unwrap();

    // Past the access token's lifetime: the next use refreshes it at the
    // provider (a real refresh-token grant) and keeps the new one.
    // (The stored expiry is moved, not the clock: the refresh answer's ID
    // token is validated against the clock, and the provider's is real.)
    let lifetime = before.expires_at.unwrap() - app.core.now();
    assert!(lifetime > 0);
    db.exec("UPDATE provider_tokens SET expires_at = 1").await;
    let (status, tt) = get(&app, "/auth/test-token", &sid).await;
    assert_eq!(status, 200, "{tt}");
    assert_eq!(tt["user"]["tokenIsExpired"], false);
    let after = app
        .core
        .provider_access_token(user_id, "microsoft")
        .await
        .unwrap()
        .unwrap();
    assert_ne!(after.token, before.token, "a new access token");
    assert!(after.expires_at.unwrap() > app.core.now());

    // A refresh the provider refuses ends the session.
    app.core
        .keep_provider_tokens(
            after.identity.id,
            &ProviderTokenSet {
                access_token: "stale".into(),
                refresh_token: Some("revoked-refresh-token".into()),
                expires_in: Some(0),
                scope: None,
            },
        )
        .await
        .unwrap();
    let r = client()
        .get(app.url("/auth/test-token"))
        .header("cookie", format!("connect.sid={sid}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let clear = set_cookie(&r, "connect.sid").unwrap();
    assert!(clear.contains("Max-Age=0"), "{clear}");
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"error": "Session expired"})
    );
    assert_eq!(get(&app, "/auth/me", &sid).await.0, 401);
}

/// A refresh whose answer carries another person's ID token (here: the
/// refresh token of Mallory, who signed in too, kept as Alice's, so the real
/// provider answers with Mallory's validly signed ID token) is refused, and
/// Alice's session ends: Mallory's profile is never shown in it (OpenID
/// Connect Core 12.2: the same `iss` and `sub`).
async fn a_refresh_answering_for_another_person_ends_the_session(db: &TestDb) {
    let Some(node) = OidcPeer::node() else {
        return;
    };
    let accounts = json!({
        "megan": {"tid": TENANT, "oid": "oid-megan", "email": "megan@contoso.example", "name": "Megan"},
        "mallory": {"tid": TENANT, "oid": "oid-mallory", "email": "mallory@contoso.example", "name": "Mallory"}
    });
    let peer = OidcPeer::entra(&node, TENANT, accounts).await;
    let graph = graph_me("oid-megan", "Megan Bowen", "megan@contoso.example").await;
    let t = Tenant { peer, graph };
    let key = Vault::new_key().unwrap();
    let app = App::start(db, |c| configure(c, &t, Some(&key))).await;
    let alice = sign_in(&app).await;
    // Graph answers for whoever's token it gets: Mallory's from now on.
    t.graph.reset().await;
    crate::support::mount_graph_me(
        &t.graph,
        "oid-mallory",
        "mallory@contoso.example",
        "Mallory",
    )
    .await;
    let r = through_provider(&app, "", "mallory").await;
    assert_eq!(r.status(), 302);
    let mallory = cookie_value(&set_cookie(&r, "connect.sid").expect("session cookie"));
    let ids = |sid: String| {
        let app = &app;
        async move {
            let (_, me) = get(app, "/auth/me", &sid).await;
            let user: uuid::Uuid = me["_id"].as_str().unwrap().parse().unwrap();
            app.core
                .provider_access_token(user, "microsoft")
                .await
                .unwrap()
                .unwrap()
                .identity
                .id
        }
    };
    let (alice_identity, mallory_identity) = (ids(alice.clone()).await, ids(mallory.clone()).await);
    assert_ne!(alice_identity, mallory_identity);
    let vault = Vault::from_base64(&[key.as_str()]).unwrap();
    let sealed: Vec<u8> = db
        .scalar(&format!(
            "SELECT refresh_token FROM provider_tokens WHERE identity_id = '{mallory_identity}'"
        ))
        .await;
    let mallorys_refresh = vault
        .open(mallory_identity, "refresh", &sealed)
        .expect("Mallory's refresh token");
    app.core
        .keep_provider_tokens(
            alice_identity,
            &ProviderTokenSet {
                access_token: "expired".into(),
                refresh_token: Some(mallorys_refresh),
                expires_in: Some(0),
                scope: None,
            },
        )
        .await
        .unwrap();
    let r = client()
        .get(app.url("/auth/test-token"))
        .header("cookie", format!("connect.sid={alice}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body = r.text().await.unwrap();
    assert!(
        !body.contains("allory"),
        "Mallory's profile in Alice's session: {body}"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"error": "Session expired"})
    );
    assert_eq!(
        get(&app, "/auth/me", &alice).await.0,
        401,
        "Alice's session ended"
    );
    assert_eq!(
        get(&app, "/auth/me", &mallory).await.0,
        200,
        "Mallory's lives on"
    );
}

async fn callback_failures_go_to_the_error_page(db: &TestDb) {
    let Some(t) = tenant().await else { return };
    let key = Vault::new_key().unwrap();
    let app = App::start(db, |c| configure(c, &t, Some(&key))).await;
    let callback = |query: String, cookie: Option<String>| {
        let app = &app;
        async move {
            let mut req = client().get(app.url(&format!("/auth/callback?{query}")));
            if let Some(c) = cookie {
                req = req.header("cookie", format!("authgate_auth_state={c}"));
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 302);
            assert!(
                set_cookie(&r, "connect.sid").is_none(),
                "no session on failure"
            );
            location(&r)
        }
    };
    let err = |e: &str| format!("{FRONTEND}/login?error={e}");
    // A started flow: its state and cookie.
    let start = || async {
        let r = client().get(app.url("/auth/login")).send().await.unwrap();
        let flow = cookie_value(&set_cookie(&r, "authgate_auth_state").unwrap());
        (flow.clone(), flow)
    };

    assert_eq!(
        callback("error=access_denied&error_description=x".into(), None).await,
        err("access_denied")
    );
    assert_eq!(
        callback("error=a%20b%26c%3Cscript%3E".into(), None).await,
        err("a+b%26c%3Cscript%3E"),
        "the provider's error goes on URL-encoded"
    );
    assert_eq!(
        callback("code=abc".into(), None).await,
        err("invalid_state")
    );
    assert_eq!(
        callback(
            "code=abc&state=never-issued".into(),
            Some("never-issued".into())
        )
        .await,
        err("invalid_state")
    );
    // Another browser (no flow cookie) cannot finish a flow, and the state
    // is spent by the attempt.
    let (state, cookie) = start().await;
    assert_eq!(
        callback(format!("code=abc&state={state}"), None).await,
        err("invalid_state")
    );
    assert_eq!(
        callback(format!("code=abc&state={state}"), Some(cookie)).await,
        err("invalid_state")
    );
    let (state, cookie) = start().await;
    assert_eq!(
        callback(format!("state={state}"), Some(cookie)).await,
        err("no_code")
    );
    let (state, cookie) = start().await;
    assert_eq!(
        callback(format!("code=forged-code&state={state}"), Some(cookie)).await,
        err("auth_failed")
    );

    // A return path on the front end is honoured; one elsewhere refused.
    let r = client()
        .get(app.url("/auth/login?returnTo=https%3A%2F%2Fevil.example%2F"))
        .send()
        .await
        .unwrap();
    assert_eq!(location(&r), err("invalid_return_to"));
    let r = through_provider(&app, "?returnTo=%2Freports%3Fweek%3D3", "megan").await;
    assert_eq!(location(&r), format!("{FRONTEND}/reports?week=3"));

    // A disabled user gets no session.
    app.core
        .set_user_disabled(
            &UserKey::parse("megan@contoso.example").unwrap(),
            true,
            &ClientMeta::default(),
        )
        .await
        .unwrap();
    let r = through_provider(&app, "", "megan").await;
    assert_eq!(location(&r), err("account_disabled"));
    assert!(set_cookie(&r, "connect.sid").is_none());
}

async fn without_a_vault_key_no_token_is_kept_and_sessions_expire(db: &TestDb) {
    let Some(t) = tenant().await else { return };
    let app = App::start(db, |c| configure(c, &t, None)).await;
    let sid = sign_in(&app).await;
    assert_eq!(
        get(&app, "/auth/test-token", &sid).await,
        (401, json!({"error": "User access token not found"}))
    );
    // Idle lifetime (session.idle_timeout_secs, 24 h) enforced server-side.
    app.clock.advance(86_399);
    assert_eq!(get(&app, "/auth/me", &sid).await.0, 200);
    app.clock.advance(86_400);
    assert_eq!(
        get(&app, "/auth/me", &sid).await,
        (401, json!({"error": "Unauthorized"}))
    );
    // No cookie, or one that is not a session.
    assert_eq!(
        client()
            .get(app.url("/auth/me"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(get(&app, "/auth/me", &"x".repeat(5000)).await.0, 401);
}

async fn cookie_options_and_cross_site_posts(db: &TestDb) {
    // No provider at all: the sign-in paths are 404, the rest still answer.
    let app = App::start(db, |c| {
        c.server.public_url = Some("https://auth.example.com".parse().unwrap());
        c.server.frontend_url = Some("https://app.example.com".parse().unwrap());
        c.browser.cookie_name = "sid".into();
        c.browser.cookie_host_prefix = Some(true);
    })
    .await;
    let r = client().get(app.url("/auth/login")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let user = app
        .core
        .add_user(
            authgate::core::NewUser::parse("ada@example.com", Some("Ada"), None).unwrap(),
            &ClientMeta::default(),
        )
        .await
        .unwrap();
    let (token, _) = app
        .core
        .sign_in(
            &user,
            "cookie",
            "fed",
            authgate::core::secret::TokenFormat::UrlSafe32,
            &ClientMeta::default(),
        )
        .await
        .unwrap();
    let me = |cookie: String| {
        let app = &app;
        async move {
            client()
                .get(app.url("/auth/me"))
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(me(format!("__Host-sid={token}")).await, 200);
    assert_eq!(
        me(format!("sid={token}")).await,
        401,
        "only the prefixed name"
    );
    let logout = |headers: Vec<(&'static str, &'static str)>| {
        let app = &app;
        let token = token.clone();
        async move {
            let mut req = client()
                .post(app.url("/auth/logout"))
                .header("cookie", format!("__Host-sid={token}"));
            for (k, v) in headers {
                req = req.header(k, v);
            }
            req.send().await.unwrap()
        }
    };
    for cross in [
        vec![("origin", "https://evil.example")],
        vec![("origin", "null")],
        vec![("referer", "https://evil.example/page")],
        vec![("origin", "https://app.example.com.evil.example")],
    ] {
        let r = logout(cross.clone()).await;
        assert_eq!(r.status(), 403, "{cross:?}");
    }
    assert_eq!(
        me(format!("__Host-sid={token}")).await,
        200,
        "still signed in"
    );
    let r = logout(vec![("referer", "https://app.example.com/settings")]).await;
    assert_eq!(r.status(), 200);
    let clear = set_cookie(&r, "__Host-sid").unwrap();
    for attr in ["Path=/", "Max-Age=0", "HttpOnly", "SameSite=Lax", "Secure"] {
        assert!(clear.contains(attr), "{attr} missing: {clear}");
    }
    assert!(!clear.contains("Domain"));
    assert_eq!(me(format!("__Host-sid={token}")).await, 401);
    // Logging out without a session is still a success (nothing to end).
    let r = logout(vec![("origin", "https://app.example.com")]).await;
    assert_eq!(r.status(), 200);

    let mut cfg = Config::default();
    cfg.browser.cookie_host_prefix = Some(true);
    cfg.browser.cookie_name = "bad name".into();
    cfg.browser.success_path = "//evil.example".into();
    cfg.vault.keys = vec!["not-a-key".into()];
    let errors = cfg.validate().unwrap_err().to_string();
    for key in [
        "browser.cookie_host_prefix",
        "browser.cookie_name",
        "browser.success_path",
        "vault.keys",
    ] {
        assert!(errors.contains(key), "{key} not in {errors}");
    }
}

/// Cookie tossing: with two session cookies of the same name (a sibling
/// site set one), neither is believed, and logout ends both. On https the
/// `__Host-` prefix is the default.
async fn a_tossed_duplicate_session_cookie_is_refused(db: &TestDb) {
    let app = App::start(db, |c| {
        c.server.frontend_url = Some(FRONTEND.parse().unwrap());
    })
    .await;
    let mut tokens = Vec::new();
    for mail in ["alice@example.com", "mallory@example.com"] {
        let user = app
            .core
            .add_user(
                authgate::core::NewUser::parse(mail, None, None).unwrap(),
                &ClientMeta::default(),
            )
            .await
            .unwrap();
        let (t, _) = app
            .core
            .sign_in(
                &user,
                "browser",
                "fed",
                TokenFormat::UrlSafe32,
                &ClientMeta::default(),
            )
            .await
            .unwrap();
        tokens.push(t);
    }
    let (alice, mallory) = (&tokens[0], &tokens[1]);
    let both = format!("connect.sid={mallory}; connect.sid={alice}");
    let r = client()
        .get(app.url("/auth/me"))
        .header("cookie", &both)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "ambiguous: neither session answers");
    assert_eq!(get(&app, "/auth/me", alice).await.0, 200);
    let r = client()
        .post(app.url("/auth/logout"))
        .header("origin", FRONTEND)
        .header("cookie", &both)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(app.core.check_session(alice).await.unwrap().is_none());
    assert!(app.core.check_session(mallory).await.unwrap().is_none());
    // https: the cookie is __Host- prefixed without being asked.
    let mut cfg = Config::default();
    cfg.server.public_url = Some("https://auth.example.com".parse().unwrap());
    assert_eq!(cfg.browser.cookie(true), "__Host-connect.sid");
    assert!(cfg.validate().is_ok());
    assert_eq!(cfg.browser.cookie(false), "connect.sid");
}

async fn rotating_the_vault_key(db: &TestDb) {
    let Some(t) = tenant().await else { return };
    let (old, new) = (Vault::new_key().unwrap(), Vault::new_key().unwrap());
    let app = App::start(db, |c| configure(c, &t, Some(&old))).await;
    let sid = sign_in(&app).await;
    let (_, me) = get(&app, "/auth/me", &sid).await;
    let user_id: uuid::Uuid = me["_id"].as_str().unwrap().parse().unwrap();
    let kept = app
        .core
        .provider_access_token(user_id, "microsoft")
        .await
        .unwrap()
        .unwrap();
    let core_with = |keys: &[&String]| {
        Core::builder(db.store.clone(), app.clock.clone())
            .vault(Some(Vault::from_base64(keys).unwrap()))
            .build()
    };
    // Only the new key: the old ciphertext does not open.
    let only_new = core_with(&[&new]);
    assert!(
        only_new
            .provider_access_token(user_id, "microsoft")
            .await
            .unwrap()
            .is_none()
    );
    // New key first, old after it: rekey moves every row to the new key.
    let both = core_with(&[&new, &old]);
    let report = both.rekey_vault().await.unwrap();
    assert_eq!((report.rekeyed, report.unreadable), (1, 0));
    assert_eq!(both.rekey_vault().await.unwrap().current, 1);
    let reopened = only_new
        .provider_access_token(user_id, "microsoft")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reopened.token, kept.token);
}
