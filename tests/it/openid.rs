//! authgate as an OpenID Provider, tested by a relying party no one here
//! wrote: npm `openid-client` (OpenID Certified), run by Node from
//! `tests/peers/rp` (`rp.mjs` takes one JSON command per line). The library
//! checks the protocol itself: discovery, state, `iss` in the response
//! (RFC 9207), PKCE, the ID token's signature, issuer, audience, nonce and
//! expiry. The person signs in on authgate's pages by an e-mail code, as a
//! browser would (forms, cookies, CSRF), over authgate's real HTTP.
use std::path::Path;
use std::time::Duration;

use reqwest::redirect::Policy;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::pages::{mail_sign_in, start};
use crate::support::{App, OidcPeer, TestDb, on_both_databases};
use authgate::core::oidc::GrantType;
use authgate::http::oidc::ClientConfig;

on_both_databases!(
    openid_client_signs_in_refreshes_and_reuse_revokes_the_family,
    a_second_factor_is_named_in_amr_and_acr,
    the_authorization_endpoint_refuses_what_rfc_9700_refuses,
    codes_are_single_use_and_bound_to_their_client,
    prompt_and_max_age_decide_when_the_person_signs_in_again,
    a_machine_client_gets_tokens_by_client_credentials,
    a_rotated_key_is_published_first_and_openid_client_follows,
    introspection_revocation_and_logout,
    in_chromium_an_application_signs_in_by_mail_code_and_by_google,
    private_key_jwt_clients_sign_their_assertions,
    authlib_signs_in_and_refreshes,
    a_pairwise_client_gets_its_own_stable_subject,
    vault_rekey_reseals_the_signing_keys,
    clients_registered_by_the_cli_sign_in_and_their_secrets_rotate,
    a_third_party_client_asks_for_consent_once_per_scope,
    jwt_access_tokens_follow_rfc_9068,
    back_channel_logout_tells_the_client_once_per_ended_session,
);

const SECRET: &str = "webapp-secret-0123456789-abcdefghijklmnop";
const OTHER_SECRET: &str = "other-secret-0123456789-abcdefghijklmnopq";
const MACHINE_SECRET: &str = "machine-secret-0123456789-abcdefghijklmno";
/// Nothing listens there: the tests read the redirect, the browser never
/// follows it.
const REDIRECT: &str = "http://127.0.0.1:9/cb";

/// The relying party process.
struct Rp {
    _child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Rp {
    async fn start() -> Option<Rp> {
        let node = OidcPeer::node()?;
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/rp");
        if !dir.join("node_modules/openid-client").is_dir() {
            assert!(
                !std::env::var("CI").is_ok_and(|v| v == "true"),
                "{} has no node_modules: run `npm ci` there",
                dir.display()
            );
            eprintln!(
                "note: skipping a case that needs `npm ci` in {}",
                dir.display()
            );
            return None;
        }
        Some(Self::spawn(&node, &dir.join("rp.mjs")))
    }

    /// The second relying party: Python `authlib` (`tests/peers/authlib`),
    /// run by the Python the SMTP server uses.
    async fn authlib() -> Option<Rp> {
        let python = crate::support::Smtpd::python()?;
        let has = std::process::Command::new(&python)
            .args(["-c", "import authlib"])
            .status()
            .is_ok_and(|s| s.success());
        if !has {
            assert!(
                !std::env::var("CI").is_ok_and(|v| v == "true"),
                "{python} has no authlib: pip install authlib==1.9.10"
            );
            eprintln!(
                "note: skipping a case that needs Python's authlib (pip install authlib==1.9.10)"
            );
            return None;
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/authlib/rp.py");
        Some(Self::spawn(&python, &script))
    }

    fn spawn(program: &str, script: &Path) -> Rp {
        let mut child = tokio::process::Command::new(program)
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Rp {
            _child: child,
            stdin,
            lines,
        }
    }

    async fn call(&mut self, cmd: Value) -> Value {
        let mut line = cmd.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(30), self.lines.next_line())
            .await
            .expect("the relying party answers within 30 s")
            .unwrap()
            .expect("the relying party is running");
        serde_json::from_str(&answer).unwrap()
    }

    /// `call`, which must succeed.
    async fn ok(&mut self, cmd: Value) -> Value {
        let answer = self.call(cmd.clone()).await;
        assert!(answer.get("error").is_none(), "{cmd} failed: {answer}");
        answer
    }

    async fn discover(&mut self, app: &App, name: &str, secret: Option<&str>, auth: &str) {
        let answer = self
            .ok(json!({
                "op": "discover", "name": name, "issuer": issuer(app),
                "client_id": name, "client_secret": secret, "auth": auth,
            }))
            .await;
        assert_eq!(answer["metadata"]["issuer"], issuer(app));
    }
}

fn issuer(app: &App) -> String {
    app.url("").trim_end_matches('/').to_string()
}

/// The clients every case here registers.
fn clients(c: &mut authgate::config::Config) {
    c.vault.keys = vec![authgate::core::Vault::new_key().unwrap().into()];
    let web = |secret: &str| ClientConfig {
        client_secret: Some(secret.into()),
        redirect_uris: vec![REDIRECT.into()],
        ..Default::default()
    };
    c.clients.insert("webapp".into(), web(SECRET));
    c.clients.insert("other".into(), web(OTHER_SECRET));
    c.clients.insert(
        "spa".into(),
        ClientConfig {
            redirect_uris: vec![REDIRECT.into()],
            ..Default::default()
        },
    );
    c.clients.insert(
        "machine".into(),
        ClientConfig {
            client_secret: Some(MACHINE_SECRET.into()),
            grant_types: vec![GrantType::ClientCredentials],
            scopes: vec!["reports.read".into(), "reports.write".into()],
            ..Default::default()
        },
    );
}

async fn provider(db: &TestDb) -> App {
    start(db, clients).await
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(Policy::none())
        .build()
        .unwrap()
}

fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .unwrap_or_else(|| panic!("a redirect, not {}", r.status()))
        .to_str()
        .unwrap()
        .to_string()
}

/// The authorization request `url` in browser `b`: signed in by an e-mail
/// code to `email` if the pages ask; the redirect back to the client.
async fn authorize(app: &App, b: &reqwest::Client, url: &str, email: &str) -> String {
    let r = b.get(url).send().await.unwrap();
    assert_eq!(r.status(), 303, "{url}");
    let mut to = location(&r);
    if to.starts_with("/login?") {
        let query = &to["/login".len()..];
        let r = mail_sign_in(app, b, query, email).await;
        assert_eq!(r.status(), 303);
        let resume = location(&r);
        assert!(
            resume.starts_with("/oauth2/authorize/resume?request="),
            "{resume}"
        );
        let r = b.get(app.url(&resume)).send().await.unwrap();
        assert_eq!(r.status(), 303);
        to = location(&r);
    }
    assert!(to.starts_with(REDIRECT), "back to the client: {to}");
    to
}

/// A whole code flow of client `name` through openid-client: the
/// library's `finish` answer.
async fn code_flow(
    app: &App,
    rp: &mut Rp,
    b: &reqwest::Client,
    name: &str,
    scope: &str,
    email: &str,
) -> Value {
    let begun = rp
        .ok(json!({ "op": "begin", "name": name, "redirect_uri": REDIRECT, "scope": scope }))
        .await;
    let callback = authorize(app, b, begun["url"].as_str().unwrap(), email).await;
    rp.ok(json!({
        "op": "finish", "name": name, "callback": callback,
        "verifier": begun["verifier"], "state": begun["state"], "nonce": begun["nonce"],
    }))
    .await
}

fn query(url: &str) -> std::collections::HashMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

/// A raw token request, form-encoded as RFC 6749 says.
async fn token(
    app: &App,
    basic: Option<(&str, &str)>,
    form: &[(&str, &str)],
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut r = reqwest::Client::new()
        .post(app.url("/oauth2/token"))
        .form(form);
    if let Some((id, secret)) = basic {
        r = r.basic_auth(id, Some(secret));
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, r.json().await.unwrap_or(Value::Null), headers)
}

/// A person with TOTP signs in for a client: the e-mail code, then the
/// app's code on the second step, then back to the authorization; the ID
/// token openid-client validated says `amr: ["otp", "mfa"]`, `acr: aal2`.
async fn a_second_factor_is_named_in_amr_and_acr(db: &TestDb) {
    let Some(mut rp) = Rp::start().await else {
        return;
    };
    let app = start(db, |c| {
        clients(c);
        c.mfa.required = authgate::core::MfaRequired::Optional;
    })
    .await;
    let meta = authgate::core::ClientMeta::default();
    let user = app
        .core
        .add_user(
            authgate::core::NewUser::parse("two@example.com", None, None).unwrap(),
            &meta,
        )
        .await
        .unwrap();
    let e = app.core.begin_totp(&user, "authgate", &meta).await.unwrap();
    let now = authgate::core::Clock::now(app.clock.as_ref());
    app.core
        .confirm_totp(user.id, &crate::totp::code_at(&e.secret, now), &meta)
        .await
        .unwrap();
    app.clock.advance(30);
    rp.discover(&app, "webapp", Some(SECRET), "basic").await;
    let b = browser();
    let begun = rp
        .ok(json!({ "op": "begin", "name": "webapp", "redirect_uri": REDIRECT, "scope": "openid email" }))
        .await;
    let r = b.get(begun["url"].as_str().unwrap()).send().await.unwrap();
    let to = location(&r);
    let r = mail_sign_in(&app, &b, &to["/login".len()..], "two@example.com").await;
    assert_eq!(location(&r), "/login/second-factor");
    let page = b
        .get(app.url("/login/second-factor"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = crate::pages::input(&page, "csrf").unwrap();
    let code = crate::totp::code_at(&e.secret, authgate::core::Clock::now(app.clock.as_ref()));
    let r = b
        .post(app.url("/login/second-factor"))
        .header("origin", issuer(&app))
        .form(&[("csrf", csrf.as_str()), ("proof", "totp"), ("code", &code)])
        .send()
        .await
        .unwrap();
    let resume = location(&r);
    assert!(
        resume.starts_with("/oauth2/authorize/resume?request="),
        "{resume}"
    );
    let r = b.get(app.url(&resume)).send().await.unwrap();
    let callback = location(&r);
    assert!(callback.starts_with(REDIRECT), "{callback}");
    let done = rp
        .ok(json!({
            "op": "finish", "name": "webapp", "callback": callback,
            "verifier": begun["verifier"], "state": begun["state"], "nonce": begun["nonce"],
        }))
        .await;
    assert_eq!(done["claims"]["amr"], json!(["otp", "mfa"]));
    assert_eq!(done["claims"]["acr"], "aal2");
}

/// Code + PKCE by openid-client, signed in by an e-mail code: the library
/// validates the ID token (signature, iss, aud, nonce, exp), userinfo
/// agrees, the claims are the core's user; a refresh rotates, and the old
/// refresh token presented again ends the whole family.
async fn openid_client_signs_in_refreshes_and_reuse_revokes_the_family(db: &TestDb) {
    let Some(mut rp) = Rp::start().await else {
        return;
    };
    let app = provider(db).await;
    rp.discover(&app, "webapp", Some(SECRET), "basic").await;
    let b = browser();
    let done = code_flow(
        &app,
        &mut rp,
        &b,
        "webapp",
        "openid email profile",
        "ada@example.com",
    )
    .await;
    let user = app
        .core
        .find_user(&authgate::core::UserKey::parse("ada@example.com").unwrap())
        .await
        .unwrap();
    let claims = &done["claims"];
    assert_eq!(claims["iss"], issuer(&app));
    assert_eq!(claims["aud"], "webapp");
    assert_eq!(
        claims["sub"],
        user.id.to_string(),
        "sub is authgate's user id"
    );
    assert_eq!(claims["email"], "ada@example.com");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["amr"], json!(["otp"]), "signed in by an e-mail code");
    assert_eq!(claims["acr"], "aal1");
    assert!(claims["at_hash"].is_string());
    let session = app.core.list_sessions(Some(user.id), 10).await.unwrap();
    assert_eq!(claims["sid"], session[0].id.to_string());
    assert_eq!(claims["auth_time"], session[0].created_at);
    assert!(claims["exp"].as_i64().unwrap() > claims["iat"].as_i64().unwrap());
    assert_eq!(done["userinfo"]["sub"], user.id.to_string());
    assert_eq!(done["userinfo"]["email"], "ada@example.com");
    let tokens = &done["tokens"];
    assert_eq!(
        tokens["token_type"].as_str().unwrap().to_lowercase(),
        "bearer"
    );
    let first_refresh = tokens["refresh_token"].as_str().unwrap().to_string();

    // Rotation: a new refresh token each time, the same person.
    let refreshed = rp
        .ok(json!({ "op": "refresh", "name": "webapp", "refresh_token": first_refresh }))
        .await;
    let second_refresh = refreshed["tokens"]["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(second_refresh, first_refresh);
    assert_eq!(refreshed["claims"]["sub"], user.id.to_string());
    let access = refreshed["tokens"]["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    rp.ok(json!({ "op": "userinfo", "name": "webapp", "access_token": access, "sub": user.id.to_string() }))
        .await;

    // The first refresh token again: refused, and the family is revoked.
    let reused = rp
        .call(json!({ "op": "refresh", "name": "webapp", "refresh_token": first_refresh }))
        .await;
    assert_eq!(reused["error"]["error"], "invalid_grant", "{reused}");
    let after = rp
        .call(json!({ "op": "refresh", "name": "webapp", "refresh_token": second_refresh }))
        .await;
    assert_eq!(after["error"]["error"], "invalid_grant", "{after}");
    let info = rp
        .call(json!({ "op": "userinfo", "name": "webapp", "access_token": access, "sub": user.id.to_string() }))
        .await;
    assert_eq!(info["error"]["status"], 401, "{info}");
    assert_eq!(
        db.count("SELECT COUNT(*) FROM audit_events WHERE kind = 'oidc.refresh_reused'")
            .await,
        1
    );

    // A public client (PKCE, no secret) signs in the same way; the session
    // is reused: no second mail.
    rp.discover(&app, "spa", None, "none").await;
    let mails = app.mails_to("ada@example.com");
    let spa = code_flow(&app, &mut rp, &b, "spa", "openid", "ada@example.com").await;
    assert_eq!(spa["claims"]["sub"], user.id.to_string());
    assert_eq!(spa["claims"]["aud"], "spa");
    assert!(
        spa["claims"].get("email").is_none(),
        "no email scope, no email claim"
    );
    assert_eq!(app.mails_to("ada@example.com"), mails);
}

/// Authorization requests RFC 9700 and OpenID Connect Core refuse: an
/// unknown client or redirect URI gets a page and no redirect; anything
/// else goes back to the client with the error, its state and `iss`.
async fn the_authorization_endpoint_refuses_what_rfc_9700_refuses(db: &TestDb) {
    let app = provider(db).await;
    let b = browser();
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    let base = |extra: &str| {
        app.url(&format!(
            "/oauth2/authorize?client_id=spa&redirect_uri={}&response_type=code&scope=openid&state=st-1&code_challenge={challenge}&code_challenge_method=S256{extra}",
            url::form_urlencoded::byte_serialize(REDIRECT.as_bytes()).collect::<String>()
        ))
    };
    // No redirect: an unknown client, an unregistered or missing redirect URI.
    for url in [
        base("").replace("client_id=spa", "client_id=nobody"),
        base("").replace("127.0.0.1%3A9%2Fcb", "127.0.0.1%3A9%2Fother"),
        base("").replace("127.0.0.1%3A9%2Fcb", "127.0.0.1%3A9%2Fcb%2F"),
        app.url("/oauth2/authorize?client_id=spa&response_type=code&scope=openid"),
        format!("{}&client_id=spa", base("")),
    ] {
        let r = b
            .get(&url)
            .header("accept-language", "de")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{url}");
        assert!(r.headers().get("location").is_none(), "{url}");
        let html = r.text().await.unwrap();
        assert!(
            html.contains("nicht registriert"),
            "a page in German: {url}"
        );
    }
    // Back to the client with an error.
    let cases: Vec<(String, &str)> = vec![
        (
            base("").replace("response_type=code", "response_type=token"),
            "unsupported_response_type",
        ),
        (
            base("").replace("response_type=code", "response_type=code%20id_token"),
            "unsupported_response_type",
        ),
        (
            base("").replace(
                &format!("&code_challenge={challenge}&code_challenge_method=S256"),
                "",
            ),
            "invalid_request",
        ),
        (base("").replace("S256", "plain"), "invalid_request"),
        (base("").replace(challenge, "short"), "invalid_request"),
        (
            base("").replace("scope=openid", "scope=email"),
            "invalid_scope",
        ),
        (
            base("").replace("scope=openid", "scope=openid%20admin"),
            "invalid_scope",
        ),
        (base("&prompt=none%20login"), "invalid_request"),
        (base("&max_age=soon"), "invalid_request"),
        (
            base("&request=eyJhbGciOiJub25lIn0.e30."),
            "request_not_supported",
        ),
        (base("&response_mode=fragment"), "invalid_request"),
        (base("&prompt=none"), "login_required"),
    ];
    for (url, error) in cases {
        let r = b.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 303, "{url}");
        let to = location(&r);
        assert!(to.starts_with(&format!("{REDIRECT}?")), "{to}");
        let q = query(&to);
        assert_eq!(q["error"], error, "{url}");
        assert_eq!(q["state"], "st-1");
        assert_eq!(q["iss"], issuer(&app));
        assert!(!q.contains_key("code"));
    }
    // A client that may not use codes.
    let r = b
        .get(base("").replace("client_id=spa", "client_id=machine"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "machine has no redirect URIs: a page");

    // The token endpoint's own errors, in OAuth's JSON.
    let (status, body, headers) = token(
        &app,
        Some(("webapp", "wrong-secret")),
        &[
            ("grant_type", "authorization_code"),
            ("code", "x"),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "invalid_client");
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    assert!(!body.to_string().contains("wrong-secret"));
    let (status, body, _) = token(
        &app,
        None,
        &[("grant_type", "authorization_code"), ("code", "x")],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let (status, body, _) = token(
        &app,
        Some(("webapp", SECRET)),
        &[
            ("grant_type", "password"),
            ("username", "a"),
            ("password", "b"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    let (status, body, _) = token(&app, Some(("webapp", SECRET)), &[("code", "x")]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    let (status, body, _) = token(
        &app,
        Some(("webapp", SECRET)),
        &[
            ("grant_type", "authorization_code"),
            ("code", "unknown"),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, body, _) = token(
        &app,
        Some(("webapp", SECRET)),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", "unknown"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    // Two ways of authenticating at once.
    let (status, body, _) = token(
        &app,
        Some(("webapp", SECRET)),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", "x"),
            ("client_secret", SECRET),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    // Not a form.
    let r = reqwest::Client::new()
        .post(app.url("/oauth2/token"))
        .json(&json!({ "grant_type": "client_credentials" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_request");
    // userinfo without a token, with a made-up one.
    let r = reqwest::Client::new()
        .get(app.url("/oauth2/userinfo"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let r = reqwest::Client::new()
        .get(app.url("/oauth2/userinfo"))
        .bearer_auth("made-up")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
}

/// A code works once: a second redemption is refused and revokes what the
/// first gave; another client cannot redeem it; the redirect URI and the
/// PKCE verifier must be the authorization request's.
async fn codes_are_single_use_and_bound_to_their_client(db: &TestDb) {
    let Some(mut rp) = Rp::start().await else {
        return;
    };
    let app = provider(db).await;
    rp.discover(&app, "webapp", Some(SECRET), "post").await;
    let b = browser();
    let begun = rp
        .ok(json!({ "op": "begin", "name": "webapp", "redirect_uri": REDIRECT, "scope": "openid email" }))
        .await;
    let callback = authorize(&app, &b, begun["url"].as_str().unwrap(), "bo@example.com").await;
    let code = query(&callback)["code"].clone();
    let verifier = begun["verifier"].as_str().unwrap();
    // Another client, with its own valid credentials: refused, no harm.
    let (status, body, _) = token(
        &app,
        Some(("other", OTHER_SECRET)),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    // Its own client redeems it (client_secret_post, by the library).
    let finish = json!({
        "op": "finish", "name": "webapp", "callback": callback,
        "verifier": begun["verifier"], "state": begun["state"], "nonce": begun["nonce"],
    });
    let done = rp.ok(finish.clone()).await;
    assert_eq!(done["claims"]["nonce"], begun["nonce"], "nonce echoed");
    let access = done["tokens"]["access_token"].as_str().unwrap().to_string();
    let sub = done["claims"]["sub"].as_str().unwrap().to_string();
    // The same code again: refused, and the first redemption's tokens end.
    let again = rp.call(finish).await;
    assert_eq!(again["error"]["error"], "invalid_grant", "{again}");
    let info = rp
        .call(json!({ "op": "userinfo", "name": "webapp", "access_token": access, "sub": sub }))
        .await;
    assert_eq!(info["error"]["status"], 401, "revoked: {info}");
    let refresh = done["tokens"]["refresh_token"].as_str().unwrap();
    let r = rp
        .call(json!({ "op": "refresh", "name": "webapp", "refresh_token": refresh }))
        .await;
    assert_eq!(r["error"]["error"], "invalid_grant");
    assert_eq!(
        db.count("SELECT COUNT(*) FROM audit_events WHERE kind = 'oidc.code_reused'")
            .await,
        1
    );

    // Fresh codes: a wrong redirect URI, a wrong or missing verifier are
    // refused (and spend the code).
    // (`right`: the request's own verifier.)
    for (redirect, verifier_given, why) in [
        (
            "http://127.0.0.1:9/elsewhere",
            Some("right"),
            "redirect_uri",
        ),
        (
            REDIRECT,
            Some("wrong-verifier-wrong-verifier-wrong-verifier-1"),
            "code_verifier does not match",
        ),
        (REDIRECT, None, "code_verifier is missing"),
    ] {
        let begun = rp
            .ok(json!({ "op": "begin", "name": "webapp", "redirect_uri": REDIRECT, "scope": "openid" }))
            .await;
        let callback = authorize(&app, &b, begun["url"].as_str().unwrap(), "bo@example.com").await;
        let code = query(&callback)["code"].clone();
        let right = begun["verifier"].as_str().unwrap();
        let v = verifier_given.map(|v| if v == "right" { right } else { v });
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect),
        ];
        if let Some(v) = v {
            form.push(("code_verifier", v));
        }
        let (status, body, _) = token(&app, Some(("webapp", SECRET)), &form).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant")),
            "{why}: {body}"
        );
        assert!(
            body["error_description"].as_str().unwrap().contains(why),
            "{body}"
        );
        let (status, _, _) = token(
            &app,
            Some(("webapp", SECRET)),
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", right),
            ],
        )
        .await;
        assert_eq!(status, 400, "a refused redemption spends the code");
    }
}

/// `prompt=none` answers at once (a code with a session, `login_required`
/// without); `prompt=login` and a `max_age` older than the session send
/// the person to sign in again, and `auth_time` says when they did.
async fn prompt_and_max_age_decide_when_the_person_signs_in_again(db: &TestDb) {
    let Some(mut rp) = Rp::start().await else {
        return;
    };
    let app = provider(db).await;
    rp.discover(&app, "webapp", Some(SECRET), "basic").await;
    let b = browser();
    let begin = |params: Value| json!({ "op": "begin", "name": "webapp", "redirect_uri": REDIRECT, "scope": "openid", "params": params });
    let begun = rp.ok(begin(json!({ "prompt": "none" }))).await;
    let r = b.get(begun["url"].as_str().unwrap()).send().await.unwrap();
    let q = query(&location(&r));
    assert_eq!(q["error"], "login_required");
    assert_eq!(q["state"], begun["state"].as_str().unwrap());

    let first = code_flow(&app, &mut rp, &b, "webapp", "openid", "cy@example.com").await;
    let first_auth = first["claims"]["auth_time"].as_i64().unwrap();

    // prompt=none with a session: a code at once, no page.
    let begun = rp.ok(begin(json!({ "prompt": "none" }))).await;
    let r = b.get(begun["url"].as_str().unwrap()).send().await.unwrap();
    assert!(query(&location(&r)).contains_key("code"));

    // Two minutes later (for authgate and the relying party), max_age=60
    // asks again.
    app.clock.advance(120);
    rp.ok(json!({ "op": "advance_clock", "seconds": 120 }))
        .await;
    let begun = rp.ok(begin(json!({ "max_age": "60" }))).await;
    let r = b.get(begun["url"].as_str().unwrap()).send().await.unwrap();
    let to = location(&r);
    assert!(to.starts_with("/login?") && to.contains("reauth=1"), "{to}");
    // The sign-in page shows its form to the signed-in person.
    let page = b.get(app.url(&to)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let mails = app.mails_to("cy@example.com");
    let callback = authorize(&app, &b, begun["url"].as_str().unwrap(), "cy@example.com").await;
    assert_eq!(app.mails_to("cy@example.com"), mails + 1, "signed in again");
    let done = rp
        .ok(json!({
            "op": "finish", "name": "webapp", "callback": callback, "max_age": 60,
            "verifier": begun["verifier"], "state": begun["state"], "nonce": begun["nonce"],
        }))
        .await;
    assert!(done["claims"]["auth_time"].as_i64().unwrap() >= first_auth + 120);

    // prompt=login: a new sign-in although the session is fresh. (Five
    // minutes on: two codes per address per five minutes are allowed.)
    app.clock.advance(301);
    rp.ok(json!({ "op": "advance_clock", "seconds": 301 }))
        .await;
    let begun = rp
        .ok(begin(
            json!({ "prompt": "login", "login_hint": "cy@example.com", "ui_locales": "fr-CA de" }),
        ))
        .await;
    let r = b.get(begun["url"].as_str().unwrap()).send().await.unwrap();
    let to = location(&r);
    assert!(to.contains("reauth=1") && to.contains("lang=fr"), "{to}");
    let html = b
        .get(app.url(&to))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("value=\"cy@example.com\""),
        "login_hint fills the address"
    );
    assert!(
        html.contains("lang=\"fr\""),
        "ui_locales picks the language"
    );
    let mails = app.mails_to("cy@example.com");
    authorize(&app, &b, begun["url"].as_str().unwrap(), "cy@example.com").await;
    assert_eq!(app.mails_to("cy@example.com"), mails + 1);

    // A parked request that is unknown or used is a page, not a redirect.
    let r = b
        .get(app.url("/oauth2/authorize/resume?request=unknown"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 410);
    assert!(r.headers().get("location").is_none());
}

/// A confidential machine client gets an access token by
/// `client_credentials`: no ID token, no refresh token, and userinfo
/// refuses it (there is no person).
async fn a_machine_client_gets_tokens_by_client_credentials(db: &TestDb) {
    let Some(mut rp) = Rp::start().await else {
        return;
    };
    let app = provider(db).await;
    rp.discover(&app, "machine", Some(MACHINE_SECRET), "basic")
        .await;
    let got = rp
        .ok(json!({ "op": "client_credentials", "name": "machine", "scope": "reports.read" }))
        .await;
    let tokens = &got["tokens"];
    assert_eq!(tokens["scope"], "reports.read");
    assert!(tokens["id_token"].is_null() && tokens["refresh_token"].is_null());
    let access = tokens["access_token"].as_str().unwrap();
    let r = reqwest::Client::new()
        .get(app.url("/oauth2/userinfo"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A scope it was not given; a client that may not use the grant.
    let bad = rp
        .call(json!({ "op": "client_credentials", "name": "machine", "scope": "openid" }))
        .await;
    assert_eq!(bad["error"]["error"], "invalid_scope", "{bad}");
    rp.discover(&app, "webapp", Some(SECRET), "basic").await;
    let bad = rp
        .call(json!({ "op": "client_credentials", "name": "webapp" }))
        .await;
    assert_eq!(bad["error"]["error"], "unauthorized_client", "{bad}");
}

/// `authgate keys rotate` (the core call it makes): the new key is in the
/// JWKS at once but signs only after the lead, so the relying party's
/// cached key set (openid-client keeps it up to 5 minutes) has it by then;
/// the old key stays published while what it signed is valid.
async fn a_rotated_key_is_published_first_and_openid_client_follows(db: &TestDb) {
    let Some(mut rp) = Rp::start().await else {
        return;
    };
    let app = provider(db).await;
    rp.discover(&app, "webapp", Some(SECRET), "basic").await;
    let b = browser();
    let kid = |done: &Value| -> String {
        let id_token = done["tokens"]["id_token"].as_str().unwrap();
        let header = id_token.split('.').next().unwrap();
        use base64::Engine;
        let header: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(header)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(header["alg"], "RS256");
        header["kid"].as_str().unwrap().to_string()
    };
    let jwks = || async {
        let set: Value = reqwest::get(app.url("/oauth2/jwks"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        set["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let first = code_flow(&app, &mut rp, &b, "webapp", "openid", "di@example.com").await;
    let old = kid(&first);
    assert_eq!(jwks().await, vec![old.clone()]);

    let meta = authgate::core::ClientMeta::default();
    let new = app
        .core
        .rotate_signing_key(false, &meta)
        .await
        .unwrap()
        .kid
        .to_string();
    assert_ne!(new, old);
    let published = jwks().await;
    assert!(
        published.contains(&old) && published.contains(&new),
        "{published:?}"
    );
    // Still the old key signs (within the lead).
    let during = code_flow(&app, &mut rp, &b, "webapp", "openid", "di@example.com").await;
    assert_eq!(kid(&during), old);

    // Five minutes later, for authgate and the relying party alike.
    app.clock.advance(301);
    rp.ok(json!({ "op": "advance_clock", "seconds": 301 }))
        .await;
    let after = code_flow(&app, &mut rp, &b, "webapp", "openid", "di@example.com").await;
    assert_eq!(
        kid(&after),
        new,
        "the new key signs; openid-client verified it"
    );
    assert!(
        jwks().await.contains(&old),
        "the old key's tokens are still valid"
    );

    // Once what the old key signed has expired, it leaves the set.
    app.clock.advance(3600 + 61);
    rp.ok(json!({ "op": "advance_clock", "seconds": 3661 }))
        .await;
    assert_eq!(jwks().await, vec![new.clone()]);
    let later = code_flow(&app, &mut rp, &b, "webapp", "openid", "di@example.com").await;
    assert_eq!(kid(&later), new);
}

/// Introspection (RFC 7662) and revocation (RFC 7009) by openid-client,
/// each about the client's own tokens; RP-initiated logout ends the
/// session at once with an `id_token_hint`, asks without one, and sends
/// the browser on only to a registered post-logout URI.
async fn introspection_revocation_and_logout(db: &TestDb) {
    let Some(mut rp) = Rp::start().await else {
        return;
    };
    let app = start(db, |c| {
        clients(c);
        if let Some(web) = c.clients.get_mut("webapp") {
            web.post_logout_redirect_uris = vec![BYE.into()];
        }
    })
    .await;
    rp.discover(&app, "webapp", Some(SECRET), "basic").await;
    let b = browser();
    let done = code_flow(
        &app,
        &mut rp,
        &b,
        "webapp",
        "openid email",
        "eve@example.com",
    )
    .await;
    let access = done["tokens"]["access_token"].as_str().unwrap().to_string();
    let refresh = done["tokens"]["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    let sub = done["claims"]["sub"].as_str().unwrap().to_string();
    let info = rp
        .ok(json!({ "op": "introspect", "name": "webapp", "token": access }))
        .await;
    let i = &info["introspection"];
    assert_eq!(i["active"], true);
    assert_eq!(
        (i["sub"].as_str(), i["client_id"].as_str()),
        (Some(sub.as_str()), Some("webapp"))
    );
    assert_eq!(i["scope"], "openid email");
    assert_eq!(i["iss"], issuer(&app));
    assert!(i["exp"].as_i64().unwrap() > i["iat"].as_i64().unwrap());
    let info = rp
        .ok(json!({ "op": "introspect", "name": "webapp", "token": refresh }))
        .await;
    assert_eq!(info["introspection"]["active"], true);
    // Another client learns nothing about it; a public client may not ask.
    let introspect_as = |id: &'static str, secret: &'static str, token: String| {
        let app = &app;
        async move {
            let r = reqwest::Client::new()
                .post(app.url("/oauth2/introspect"))
                .basic_auth(id, Some(secret))
                .form(&[("token", token.as_str())])
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = introspect_as("other", OTHER_SECRET, access.clone()).await;
    assert_eq!((status, body), (200, json!({ "active": false })));
    let (status, body) = introspect_as("webapp", "not-the-secret", access.clone()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let r = reqwest::Client::new()
        .post(app.url("/oauth2/introspect"))
        .form(&[("token", access.as_str()), ("client_id", "spa")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "unauthorized_client"
    );

    // Revoking the access token ends it alone; revoking a refresh token
    // ends its grant.
    rp.ok(json!({ "op": "revoke", "name": "webapp", "token": access }))
        .await;
    let info = rp
        .ok(json!({ "op": "introspect", "name": "webapp", "token": access }))
        .await;
    assert_eq!(info["introspection"]["active"], false);
    let refreshed = rp
        .ok(json!({ "op": "refresh", "name": "webapp", "refresh_token": refresh }))
        .await;
    let access2 = refreshed["tokens"]["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let refresh2 = refreshed["tokens"]["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    rp.ok(json!({ "op": "revoke", "name": "webapp", "token": refresh2 }))
        .await;
    let info = rp
        .ok(json!({ "op": "introspect", "name": "webapp", "token": access2 }))
        .await;
    assert_eq!(
        info["introspection"]["active"], false,
        "the grant is revoked"
    );
    // Unknown tokens: 200 all the same (RFC 7009 2.2).
    rp.ok(json!({ "op": "revoke", "name": "webapp", "token": "never-issued" }))
        .await;

    // Logout with the ID token as hint: the session ends, on to the client.
    let id_token = done["tokens"]["id_token"].as_str().unwrap();
    let url = rp
        .ok(
            json!({ "op": "end_session_url", "name": "webapp", "params": {
            "id_token_hint": id_token, "post_logout_redirect_uri": BYE, "state": "bye-1" } }),
        )
        .await["url"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(url.starts_with(&app.url("/oauth2/logout")), "{url}");
    let r = b.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), format!("{BYE}?state=bye-1"));
    let r = b.get(app.url("/account")).send().await.unwrap();
    assert!(location(&r).starts_with("/login"), "signed out");
    assert_eq!(db.count("SELECT COUNT(*) FROM sessions").await, 0);

    // Signed in again, a logout without a hint asks first; the answer goes
    // on to the client.
    code_flow(&app, &mut rp, &b, "webapp", "openid", "eve@example.com").await;
    let r = b
        .get(app.url(&format!(
            "/oauth2/logout?client_id=webapp&post_logout_redirect_uri={}&state=bye-2",
            enc(BYE)
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert_eq!(
        db.count("SELECT COUNT(*) FROM sessions").await,
        1,
        "not ended yet"
    );
    let csrf = crate::pages::input(&html, "csrf").unwrap();
    let then = crate::pages::input(&html, "then").unwrap();
    let r = b
        .post(app.url("/logout"))
        .header("origin", issuer(&app))
        .form(&[("csrf", csrf.as_str()), ("then", then.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), format!("{BYE}?state=bye-2"));
    assert_eq!(db.count("SELECT COUNT(*) FROM sessions").await, 0);

    // Refused with a page, never redirected: an unregistered post-logout
    // URI, one without a client, a forged hint, a hint of another client.
    let forged = {
        let mut parts: Vec<String> = id_token.split('.').map(str::to_string).collect();
        parts[2] = parts[2].chars().rev().collect();
        parts.join(".")
    };
    for query in [
        format!(
            "client_id=webapp&post_logout_redirect_uri={}",
            enc("http://127.0.0.1:9/elsewhere")
        ),
        format!("post_logout_redirect_uri={}", enc(BYE)),
        format!(
            "id_token_hint={forged}&post_logout_redirect_uri={}",
            enc(BYE)
        ),
        format!("id_token_hint={id_token}&client_id=other"),
        "client_id=nobody".to_string(),
    ] {
        let r = b
            .get(app.url(&format!("/oauth2/logout?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{query}");
        assert!(r.headers().get("location").is_none());
    }
    // Nobody signed in: straight on.
    let r = b.get(&url).send().await.unwrap();
    assert_eq!(location(&r), format!("{BYE}?state=bye-1"));
}

const BYE: &str = "http://127.0.0.1:9/bye";

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The whole journey in headless Chromium, as a person makes it: an
/// application (openid-client) sends the browser to authgate, the person
/// signs in on the hosted page by a code from a real SMTP server, and the
/// browser lands back at the application with a code; then, asked for a
/// new sign-in, with Google (the real oidc-provider) — authgate brokers it,
/// the ID token's `sub` is authgate's user, `amr` says `fed`; then the
/// application signs the person out at authgate.
async fn in_chromium_an_application_signs_in_by_mail_code_and_by_google(db: &TestDb) {
    use crate::chromium::{Browser, click, type_into};
    use crate::pages::{screenshots, text_becomes};
    use crate::support::{
        PEER_CLIENT_ID, PEER_CLIENT_SECRET, Smtpd, TestServer, code_in, free_port,
    };
    let Some((driver, chromium)) = Browser::programs() else {
        return;
    };
    let Some(python) = Smtpd::python() else {
        return;
    };
    let Some(node) = OidcPeer::node() else { return };
    let Some(mut rp) = Rp::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let smtp_port = free_port();
    let smtpd = Smtpd::start(&python, smtp_port, dir.path()).await;
    // The application's own pages: where the browser comes back to.
    let landing = axum::Router::new()
        .route("/cb", axum::routing::get(|| async {
            axum::response::Html("<!doctype html><title>App</title><h1 id=app>Back at the application</h1>")
        }))
        .route("/bye", axum::routing::get(|| async {
            axum::response::Html("<!doctype html><title>App</title><h1 id=bye>Signed out of the application</h1>")
        }));
    let landing = TestServer::serve(landing).await;
    let (cb, bye) = (landing.url("/cb"), landing.url("/bye"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let google = OidcPeer::google_with_redirects(
        &node,
        json!({ "g-gus": { "email": "gus@gmail.example", "email_verified": true, "name": "Gus" } }),
        &[format!("{public}/login/callback/google")],
    )
    .await;
    let issuer_g = google.issuer.clone();
    let app = App::start_on(listener, db, |c| {
        clients(c);
        let web = c.clients.get_mut("webapp").unwrap();
        web.redirect_uris = vec![cb.clone()];
        web.post_logout_redirect_uris = vec![bye.clone()];
        c.clients.insert(
            "partner".into(),
            ClientConfig {
                name: Some("Partner App".into()),
                client_secret: Some(PARTNER_SECRET.into()),
                redirect_uris: vec![cb.clone()],
                third_party: true,
                ..Default::default()
            },
        );
        c.server.public_url = Some(public.parse().unwrap());
        c.mail.transport = authgate::config::MailTransport::Smtp;
        c.mail.smtp_url = Some(format!("smtp://127.0.0.1:{smtp_port}").into());
        c.providers.insert(
            "google".into(),
            authgate::config::ProviderConfig {
                client_id: PEER_CLIENT_ID.into(),
                client_secret: Some(PEER_CLIENT_SECRET.into()),
                issuer: Some(issuer_g.parse().unwrap()),
                ..Default::default()
            },
        );
    })
    .await;
    rp.discover(&app, "webapp", Some(SECRET), "basic").await;
    // Script on, as most people have it (and axe-core needs it).
    let browser = Browser::start(&driver, &chromium, true).await;
    let c = &browser.client;
    let address = "fay@example.com";

    // 1. By an e-mail code.
    let begun = rp
        .ok(json!({ "op": "begin", "name": "webapp", "redirect_uri": cb, "scope": "openid email profile" }))
        .await;
    c.goto(begun["url"].as_str().unwrap()).await.unwrap();
    text_becomes(c, "h1", "Sign in").await;
    assert!(c.current_url().await.unwrap().path().ends_with("/login"));
    screenshots(c, "oidc-login").await;
    type_into(c, "#email", address).await;
    click(c, "#send").await;
    text_becomes(c, "h1", "Check your mail").await;
    let raw = Smtpd::wait_for_mail(&smtpd.maildir, address, Duration::from_secs(15)).await;
    type_into(c, "#code", &code_in(&raw)).await;
    click(c, "#verify").await;
    text_becomes(c, "#app", "Back at the application").await;
    let back = c.current_url().await.unwrap().to_string();
    let done = rp
        .ok(json!({
            "op": "finish", "name": "webapp", "callback": back,
            "verifier": begun["verifier"], "state": begun["state"], "nonce": begun["nonce"],
        }))
        .await;
    let fay = app
        .core
        .find_user(&authgate::core::UserKey::parse(address).unwrap())
        .await
        .unwrap();
    assert_eq!(done["claims"]["sub"], fay.id.to_string());
    assert_eq!(done["claims"]["amr"], json!(["otp"]));

    // 2. A new sign-in asked for, with Google this time: brokered.
    let begun = rp
        .ok(json!({ "op": "begin", "name": "webapp", "redirect_uri": cb, "scope": "openid email profile",
            "params": { "prompt": "login" } }))
        .await;
    c.goto(begun["url"].as_str().unwrap()).await.unwrap();
    text_becomes(c, "h1", "Sign in").await;
    click(c, "#provider-google").await;
    type_into(c, "input[name=login]", "g-gus").await;
    type_into(c, "input[name=password]", "any password").await;
    click(c, "button[type=submit]").await;
    crate::chromium::gone(c, "input[name=login]").await;
    click(c, "button[type=submit]").await;
    text_becomes(c, "#app", "Back at the application").await;
    let back = c.current_url().await.unwrap().to_string();
    let done = rp
        .ok(json!({
            "op": "finish", "name": "webapp", "callback": back,
            "verifier": begun["verifier"], "state": begun["state"], "nonce": begun["nonce"],
        }))
        .await;
    let gus = app
        .core
        .find_user(&authgate::core::UserKey::parse("gus@gmail.example").unwrap())
        .await
        .unwrap();
    let claims = &done["claims"];
    assert_eq!(
        claims["sub"],
        gus.id.to_string(),
        "authgate's user, not Google's subject"
    );
    assert_ne!(claims["sub"], "g-gus");
    assert_eq!(claims["amr"], json!(["fed"]));
    assert_eq!(
        (claims["email"].as_str(), claims["name"].as_str()),
        (Some("gus@gmail.example"), Some("Gus"))
    );
    assert_eq!(done["userinfo"]["email"], "gus@gmail.example");

    // 2b. A third-party application: the person is asked first.
    rp.discover(&app, "partner", Some(PARTNER_SECRET), "basic")
        .await;
    let begun = rp
        .ok(json!({ "op": "begin", "name": "partner", "redirect_uri": cb, "scope": "openid email profile" }))
        .await;
    c.goto(begun["url"].as_str().unwrap()).await.unwrap();
    text_becomes(c, "h1", "Allow access").await;
    text_becomes(c, "#consent-question", "Partner App would like to:").await;
    screenshots(c, "oidc-consent").await;
    crate::pages::assert_accessible(c, "the consent page").await;
    click(c, "#allow").await;
    text_becomes(c, "#app", "Back at the application").await;
    let back = c.current_url().await.unwrap().to_string();
    let partner = rp
        .ok(json!({
            "op": "finish", "name": "partner", "callback": back,
            "verifier": begun["verifier"], "state": begun["state"], "nonce": begun["nonce"],
        }))
        .await;
    assert_eq!(partner["claims"]["aud"], "partner");
    assert_eq!(partner["claims"]["sub"], gus.id.to_string());

    // 3. The application signs the person out at authgate.
    let url = rp
        .ok(
            json!({ "op": "end_session_url", "name": "webapp", "params": {
            "id_token_hint": done["tokens"]["id_token"], "post_logout_redirect_uri": bye } }),
        )
        .await["url"]
        .as_str()
        .unwrap()
        .to_string();
    c.goto(&url).await.unwrap();
    text_becomes(c, "#bye", "Signed out of the application").await;
    c.goto(&app.url("/account")).await.unwrap();
    text_becomes(c, "h1", "Sign in").await;
    let _ = c.clone().close().await;
}

/// A client that authenticates with assertions signed by its own key
/// (`private_key_jwt`, RFC 7523): openid-client signs them for the code
/// flow, refresh and client_credentials; a replayed, expired, long-lived,
/// misaddressed, foreign-signed, unsigned or malformed assertion is
/// `invalid_client` (401).
async fn private_key_jwt_clients_sign_their_assertions(db: &TestDb) {
    let Some(mut rp) = Rp::start().await else {
        return;
    };
    let jwk = rp
        .ok(json!({ "op": "keygen", "key": "k1", "alg": "ES256" }))
        .await["jwk"]
        .clone();
    rp.ok(json!({ "op": "keygen", "key": "evil", "alg": "ES256" }))
        .await;
    let app = start(db, |c| {
        clients(c);
        c.clients.insert(
            "signed".into(),
            ClientConfig {
                redirect_uris: vec![REDIRECT.into()],
                grant_types: vec![
                    GrantType::AuthorizationCode,
                    GrantType::RefreshToken,
                    GrantType::ClientCredentials,
                ],
                scopes: vec!["openid".into(), "email".into(), "reports.read".into()],
                jwks: Some(json!({ "keys": [jwk] })),
                ..Default::default()
            },
        );
    })
    .await;
    let meta = rp
        .ok(
            json!({ "op": "discover", "name": "signed", "issuer": issuer(&app),
            "client_id": "signed", "auth": "private_key_jwt", "key": "k1" }),
        )
        .await;
    assert!(
        meta["metadata"]["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("private_key_jwt"))
    );
    let b = browser();
    let done = code_flow(
        &app,
        &mut rp,
        &b,
        "signed",
        "openid email",
        "gil@example.com",
    )
    .await;
    assert_eq!(done["claims"]["aud"], "signed");
    let refresh = done["tokens"]["refresh_token"].as_str().unwrap();
    rp.ok(json!({ "op": "refresh", "name": "signed", "refresh_token": refresh }))
        .await;
    let cc = rp
        .ok(json!({ "op": "client_credentials", "name": "signed", "scope": "reports.read" }))
        .await;
    assert_eq!(cc["tokens"]["scope"], "reports.read");

    let assertion = |key: &'static str, claims: Value, header: Value| {
        json!({ "op": "sign_assertion", "key": key, "client_id": "signed",
            "aud": issuer(&app), "claims": claims, "header": header })
    };
    let post = |assertion: String, kind: &'static str| {
        let app = &app;
        async move {
            let r = reqwest::Client::new()
                .post(app.url("/oauth2/token"))
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_assertion_type", kind),
                    ("client_assertion", assertion.as_str()),
                ])
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    const BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
    let one = rp.ok(assertion("k1", json!({}), json!({}))).await["assertion"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = post(one.clone(), BEARER).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["access_token"].is_string());
    let (status, body) = post(one.clone(), BEARER).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client")),
        "replayed"
    );
    let (status, body) = post(one.clone(), "urn:example:other").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let token_endpoint = app.url("/oauth2/token");
    for (why, cmd) in [
        (
            "expired",
            assertion("k1", json!({ "exp": now - 120 }), json!({})),
        ),
        (
            "long-lived",
            assertion("k1", json!({ "exp": now + 3600 }), json!({})),
        ),
        (
            "another audience",
            assertion(
                "k1",
                json!({ "aud": "https://elsewhere.example" }),
                json!({}),
            ),
        ),
        (
            "another issuer",
            assertion("k1", json!({ "iss": "webapp" }), json!({})),
        ),
        ("no jti", assertion("k1", json!({ "jti": "" }), json!({}))),
        (
            "another key",
            assertion("evil", json!({}), json!({ "kid": "k1" })),
        ),
        ("an unknown key", assertion("evil", json!({}), json!({}))),
        (
            "the token endpoint as audience",
            assertion("k1", json!({ "aud": token_endpoint }), json!({})),
        ),
    ] {
        let signed = rp.ok(cmd).await["assertion"].as_str().unwrap().to_string();
        let (status, body) = post(signed, BEARER).await;
        if why == "the token endpoint as audience" {
            assert_eq!(status, 200, "{why}: {body}");
        } else {
            assert_eq!(
                (status, body["error"].as_str()),
                (401, Some("invalid_client")),
                "{why}: {body}"
            );
        }
    }
    use base64::Engine;
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let unsigned = format!(
        "{}.{}.",
        b64(json!({ "alg": "none", "kid": "k1" })),
        b64(
            json!({ "iss": "signed", "sub": "signed", "aud": issuer(&app), "exp": now + 60, "jti": "x" })
        )
    );
    for bad in [unsigned, "not.a.jwt".to_string(), "garbage".to_string()] {
        let (status, body) = post(bad.clone(), BEARER).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client")),
            "{bad}: {body}"
        );
    }
    // A secret is not its way in.
    let (status, _, _) = token(
        &app,
        Some(("signed", "any-secret-at-all")),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(status, 401);
}

/// A second relying party no one here wrote, Python `authlib`: the code
/// flow with PKCE and `client_secret_basic`, the ID token validated by
/// authlib's `CodeIDToken` (signature, iss, aud, nonce, at_hash), userinfo,
/// and a refresh that rotates (the old token then refused).
async fn authlib_signs_in_and_refreshes(db: &TestDb) {
    let Some(mut py) = Rp::authlib().await else {
        return;
    };
    let app = provider(db).await;
    py.ok(json!({ "op": "discover", "issuer": issuer(&app), "client_id": "webapp", "client_secret": SECRET }))
        .await;
    let b = browser();
    let begun = py
        .ok(json!({ "op": "begin", "redirect_uri": REDIRECT, "scope": "openid email profile" }))
        .await;
    let url = begun["url"].as_str().unwrap();
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    let callback = authorize(&app, &b, url, "hal@example.com").await;
    let done = py
        .ok(
            json!({ "op": "finish", "callback": callback, "state": begun["state"],
            "verifier": begun["verifier"], "nonce": begun["nonce"] }),
        )
        .await;
    let hal = app
        .core
        .find_user(&authgate::core::UserKey::parse("hal@example.com").unwrap())
        .await
        .unwrap();
    assert_eq!(done["claims"]["sub"], hal.id.to_string());
    assert_eq!(done["claims"]["nonce"], begun["nonce"]);
    assert_eq!(done["userinfo"]["email"], "hal@example.com");
    let old = done["tokens"]["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    let refreshed = py
        .ok(json!({ "op": "refresh", "refresh_token": old }))
        .await;
    let new = refreshed["tokens"]["refresh_token"].as_str().unwrap();
    assert_ne!(new, old);
    let again = py
        .call(json!({ "op": "refresh", "refresh_token": old }))
        .await;
    assert!(
        again["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid_grant"),
        "{again}"
    );
    // A callback whose state is not the request's: authlib refuses it.
    let begun = py
        .ok(json!({ "op": "begin", "redirect_uri": REDIRECT, "scope": "openid" }))
        .await;
    let callback = authorize(&app, &b, begun["url"].as_str().unwrap(), "hal@example.com").await;
    let forged = py
        .call(
            json!({ "op": "finish", "callback": callback, "state": "not-the-state",
            "verifier": begun["verifier"], "nonce": begun["nonce"] }),
        )
        .await;
    assert!(forged.get("error").is_some(), "{forged}");
}

/// A pairwise client gets a `sub` of its own (SHA-256 of its sector, the
/// user and the pairwise secret): stable, the same in userinfo (which
/// openid-client checks), not authgate's user id; and its ID token still
/// signs the person out at once.
async fn a_pairwise_client_gets_its_own_stable_subject(db: &TestDb) {
    let Some(mut rp) = Rp::start().await else {
        return;
    };
    let app = start(db, |c| {
        clients(c);
        c.oidc.pairwise_secret = Some("pairwise-salt-0123456789-abcdefghijklmnop".into());
        c.clients.insert(
            "pw".into(),
            ClientConfig {
                client_secret: Some(SECRET.into()),
                redirect_uris: vec![REDIRECT.into()],
                post_logout_redirect_uris: vec![BYE.into()],
                subject_type: authgate::core::oidc::SubjectType::Pairwise,
                ..Default::default()
            },
        );
    })
    .await;
    rp.discover(&app, "pw", Some(SECRET), "basic").await;
    rp.discover(&app, "webapp", Some(SECRET), "basic").await;
    let b = browser();
    let first = code_flow(&app, &mut rp, &b, "pw", "openid", "ivy@example.com").await;
    let again = code_flow(&app, &mut rp, &b, "pw", "openid", "ivy@example.com").await;
    let public = code_flow(&app, &mut rp, &b, "webapp", "openid", "ivy@example.com").await;
    let ivy = app
        .core
        .find_user(&authgate::core::UserKey::parse("ivy@example.com").unwrap())
        .await
        .unwrap();
    let pairwise = first["claims"]["sub"].as_str().unwrap();
    assert_eq!(public["claims"]["sub"], ivy.id.to_string());
    assert_ne!(pairwise, ivy.id.to_string());
    assert_eq!(again["claims"]["sub"], pairwise, "stable");
    assert_eq!(first["userinfo"]["sub"], pairwise);
    let url = rp
        .ok(json!({ "op": "end_session_url", "name": "pw", "params": {
            "id_token_hint": again["tokens"]["id_token"], "post_logout_redirect_uri": BYE } }))
        .await["url"]
        .as_str()
        .unwrap()
        .to_string();
    let r = b.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 303, "the pairwise hint names this person");
    assert_eq!(db.count("SELECT COUNT(*) FROM sessions").await, 0);
}

/// `authgate vault rekey` (the core call it makes) re-seals the signing
/// keys too: after it, an instance with only the new vault key signs.
async fn vault_rekey_reseals_the_signing_keys(db: &TestDb) {
    let old = authgate::core::Vault::new_key().unwrap();
    let new = authgate::core::Vault::new_key().unwrap();
    let clock: std::sync::Arc<dyn authgate::core::Clock> =
        std::sync::Arc::new(authgate::core::SystemClock);
    let with = |keys: &[&str]| {
        authgate::core::Core::builder(db.store.clone(), clock.clone())
            .vault(Some(authgate::core::Vault::from_base64(keys).unwrap()))
            .build()
    };
    let before = with(&[&old]).jwks().await.unwrap();
    assert_eq!(before["keys"].as_array().unwrap().len(), 1);
    assert!(
        with(&[&new]).jwks().await.is_err(),
        "the new key alone cannot open it yet"
    );
    let report = with(&[&new, &old]).rekey_vault().await.unwrap();
    assert_eq!((report.signing_keys, report.unreadable), (1, 0));
    assert_eq!(
        with(&[&new]).jwks().await.unwrap(),
        before,
        "the same key, re-sealed"
    );
    assert_eq!(with(&[&new, &old]).rekey_vault().await.unwrap().current, 1);
}

/// `authgate client ...` on the database the server uses.
/// Its config file holds one client of the server's, `webapp`.
fn client_cli(db: &TestDb, dir: &Path, args: &[&str]) -> std::process::Output {
    let config = dir.join("authgate.toml");
    if !config.exists() {
        let key = authgate::core::Vault::new_key().unwrap();
        let toml = format!(
            "[vault]\nkeys = [\"{key}\"]\n[clients.webapp]\nclient_secret = \"{SECRET}\"\nredirect_uris = [\"{REDIRECT}\"]\n"
        );
        std::fs::write(&config, toml).unwrap();
    }
    crate::support::authgate(dir)
        .env("AUTHGATE_DATABASE__URL", &db.url)
        .arg("client")
        .args(args)
        .output()
        .unwrap()
}

fn client_cli_ok(db: &TestDb, dir: &Path, args: &[&str]) -> String {
    let out = client_cli(db, dir, args);
    assert!(
        out.status.success(),
        "client {args:?}: {}",
        crate::support::stderr(&out)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The `client_secret:` line of `client add` or `rotate-secret`.
fn shown_secret(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("client_secret:"))
        .expect("the secret is shown")
        .trim()
        .to_string()
}

/// A client registered by `authgate client add` (kept in the database,
/// its secret shown once and stored hashed) signs a person in through
/// openid-client like a config client; its settings follow the same
/// rules; `rotate-secret` ends the old secret at once; `delete` revokes
/// what it holds; config clients are listed but not changed.
async fn clients_registered_by_the_cli_sign_in_and_their_secrets_rotate(db: &TestDb) {
    let Some(mut rp) = Rp::start().await else {
        return;
    };
    let app = start(db, |c| {
        clients(c);
        c.oidc.client_cache_secs = 0;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let added = client_cli_ok(
        db,
        dir,
        &[
            "add",
            "cli-app",
            "--name",
            "CLI App",
            "--redirect-uri",
            REDIRECT,
            "--redirect-uri",
            "http://localhost:9/cb",
        ],
    );
    let secret = shown_secret(&added);
    assert!(secret.len() >= 43, "256 random bits: {secret}");

    // Refused: a taken id (stored or in the config), a bad redirect URI,
    // a bad id; each names what is wrong, none is stored.
    for (args, says) in [
        (
            vec!["add", "cli-app", "--redirect-uri", REDIRECT],
            "already exists",
        ),
        (
            vec!["add", "webapp", "--redirect-uri", REDIRECT],
            "config file",
        ),
        (
            vec!["add", "evil", "--redirect-uri", "http://evil.example/cb"],
            "redirect_uris",
        ),
        (
            vec!["add", "no room", "--redirect-uri", REDIRECT],
            "client id",
        ),
        (
            vec![
                "add",
                "robot",
                "--public",
                "--grant-type",
                "client_credentials",
            ],
            "client_credentials needs",
        ),
        (vec!["rotate-secret", "webapp"], "config file"),
        (vec!["update", "nobody", "--name", "x"], "not found"),
    ] {
        let out = client_cli(db, dir, &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = crate::support::stderr(&out);
        assert!(err.contains(says), "{args:?}: {err}");
    }

    let listed = client_cli_ok(db, dir, &["list", "--json"]);
    assert!(!listed.contains(&secret), "secrets are never listed");
    let listed: Vec<Value> = serde_json::from_str(&listed).unwrap();
    let ids: Vec<&str> = listed.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["webapp", "cli-app"]);
    let mine = &listed[1];
    assert_eq!(mine["source"], "database");
    assert_eq!(mine["auth_method"], "client_secret");
    assert_eq!(mine["name"], "CLI App");
    assert_eq!(listed[0]["source"], "config");
    let shown = client_cli_ok(db, dir, &["show", "cli-app"]);
    assert!(shown.contains("http://localhost:9/cb") && !shown.contains(&secret));

    // openid-client signs in with it: the server reads stored clients.
    rp.discover(&app, "cli-app", Some(&secret), "basic").await;
    let b = browser();
    let done = code_flow(
        &app,
        &mut rp,
        &b,
        "cli-app",
        "openid email",
        "cli@example.com",
    )
    .await;
    assert_eq!(done["claims"]["aud"], "cli-app");
    assert_eq!(done["claims"]["email"], "cli@example.com");
    let refresh = done["tokens"]["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    let access = done["tokens"]["access_token"].as_str().unwrap().to_string();
    // The pages' forms may lead to its redirect origins (CSP form-action).
    let page = b.get(app.url("/login")).send().await.unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("http://localhost:9"), "{csp}");

    // A new secret: the old one is refused at once, the new one works.
    let rotated = client_cli_ok(db, dir, &["rotate-secret", "cli-app"]);
    let new_secret = shown_secret(&rotated);
    assert_ne!(new_secret, secret);
    let grant = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh.as_str()),
    ];
    let (status, body, headers) = token(&app, Some(("cli-app", &secret)), &grant).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    assert!(headers.contains_key("www-authenticate"));
    let (status, body, _) = token(&app, Some(("cli-app", &new_secret)), &grant).await;
    assert_eq!(status, 200, "{body}");
    let refresh = body["refresh_token"].as_str().unwrap().to_string();

    // An update follows the rules, and takes effect.
    let out = client_cli(
        db,
        dir,
        &["update", "cli-app", "--redirect-uri", "ftp://x/cb"],
    );
    assert_eq!(out.status.code(), Some(1));
    client_cli_ok(db, dir, &["update", "cli-app", "--scope", "openid"]);
    let ask = |scope: &str| {
        let mut u = url::Url::parse(&app.url("/oauth2/authorize")).unwrap();
        u.query_pairs_mut()
            .append_pair("client_id", "cli-app")
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", REDIRECT)
            .append_pair("scope", scope);
        u.to_string()
    };
    let r = b.get(ask("openid email")).send().await.unwrap();
    assert_eq!(query(&location(&r))["error"], "invalid_scope");
    // Deleted: its tokens stop working, the client is unknown.
    let userinfo = |token: String| {
        let url = app.url("/oauth2/userinfo");
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(
        userinfo(body_access(&app, &new_secret, &refresh).await).await,
        200
    );
    client_cli_ok(db, dir, &["delete", "cli-app"]);
    // Another process revoked: seen once the userinfo cache (5 s) is past.
    app.clock.advance(6);
    assert_eq!(userinfo(access).await, 401);
    let (status, _, _) = token(&app, Some(("cli-app", &new_secret)), &grant).await;
    assert_eq!(status, 401);
    let r = b.get(ask("openid")).send().await.unwrap();
    assert_eq!(
        r.status(),
        400,
        "an unknown client gets a page, no redirect"
    );
    let listed = client_cli_ok(db, dir, &["list"]);
    assert!(!listed.contains("cli-app"), "{listed}");
}

/// A fresh access token by refresh (the scope the client may still have).
async fn body_access(app: &App, secret: &str, refresh: &str) -> String {
    let (status, body, _) = token(
        app,
        Some(("cli-app", secret)),
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

const PARTNER_SECRET: &str = "partner-secret-0123456789-abcdefghijklmno";

/// An authorization request of client `id` for `scope`, with `extra`.
fn authorize_url(app: &App, id: &str, scope: &str, extra: &[(&str, &str)]) -> String {
    let mut u = url::Url::parse(&app.url("/oauth2/authorize")).unwrap();
    u.query_pairs_mut()
        .append_pair("client_id", id)
        .append_pair("response_type", "code")
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("scope", scope)
        .append_pair("state", "st-1")
        .extend_pairs(extra);
    u.to_string()
}

/// The consent page's answer, posted as the page's form would be.
async fn answer(app: &App, b: &reqwest::Client, page: &str, decision: &str) -> reqwest::Response {
    let field = |n: &str| crate::pages::input(page, n).unwrap();
    b.post(app.url("/oauth2/authorize/consent"))
        .header("origin", issuer(app))
        .form(&[
            ("csrf", field("csrf")),
            ("lang", field("lang")),
            ("request", field("request")),
            ("decision", decision.to_string()),
        ])
        .send()
        .await
        .unwrap()
}

/// A client marked third-party (`third_party = true`): after the sign-in
/// the person is asked, in their language, whether it may have the scopes
/// it asks for. Denied: `access_denied` with `state` and `iss`. Allowed:
/// remembered, so the same scope is not asked again, a wider one is, and
/// `prompt=consent` always is; `prompt=none` without consent gets
/// `consent_required`. The answer is a page form (origin, CSRF, session).
async fn a_third_party_client_asks_for_consent_once_per_scope(db: &TestDb) {
    let app = start(db, |c| {
        clients(c);
        c.clients.insert(
            "partner".into(),
            ClientConfig {
                name: Some("Partner App".into()),
                client_secret: Some(PARTNER_SECRET.into()),
                redirect_uris: vec![REDIRECT.into()],
                third_party: true,
                ..Default::default()
            },
        );
    })
    .await;
    let b = browser();
    // Not signed in: the sign-in first, then the question (in German).
    let r = b
        .get(authorize_url(
            &app,
            "partner",
            "openid email",
            &[("ui_locales", "de")],
        ))
        .send()
        .await
        .unwrap();
    let login = location(&r);
    assert!(login.starts_with("/login?"), "{login}");
    let r = mail_sign_in(&app, &b, &login["/login".len()..], "pat@example.com").await;
    let r = b.get(app.url(&location(&r))).send().await.unwrap();
    assert_eq!(r.status(), 200, "the consent page, not yet a redirect");
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("form-action 'self' http://127.0.0.1:9"),
        "{csp}"
    );
    let page = r.text().await.unwrap();
    assert!(page.contains("Partner App möchte:"), "{page}");
    assert!(page.contains("Ihre E-Mail-Adresse sehen"), "{page}");
    assert!(page.contains("lang=\"de\""));

    // Forged answers change nothing.
    let forged = b
        .post(app.url("/oauth2/authorize/consent"))
        .header("origin", "https://evil.example")
        .form(&[
            ("csrf", crate::pages::input(&page, "csrf").unwrap()),
            ("request", crate::pages::input(&page, "request").unwrap()),
            ("decision", "allow".into()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let odd = answer(&app, &b, &page, "maybe").await;
    assert_eq!(odd.status(), 400);
    let gone = answer(
        &app,
        &b,
        &page.replace(&crate::pages::input(&page, "request").unwrap(), "nope"),
        "allow",
    )
    .await;
    assert_eq!(gone.status(), 410);

    // Denied: back to the client with access_denied, state and iss.
    let r = answer(&app, &b, &page, "deny").await;
    let back = query(&location(&r));
    assert_eq!(back["error"], "access_denied");
    assert_eq!(back["state"], "st-1");
    assert_eq!(back["iss"], issuer(&app));
    // prompt=none without consent: consent_required.
    let r = b
        .get(authorize_url(
            &app,
            "partner",
            "openid email",
            &[("prompt", "none")],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(query(&location(&r))["error"], "consent_required");

    // Allowed: a code, which the client redeems.
    let ask = |scope: &str, extra: &[(&str, &str)]| authorize_url(&app, "partner", scope, extra);
    let r = b.get(ask("openid email", &[])).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(page.contains("Partner App would like to:"), "{page}");
    let r = answer(&app, &b, &page, "allow").await;
    let back = query(&location(&r));
    assert_eq!(back["state"], "st-1");
    let (status, body, _) = token(
        &app,
        Some(("partner", PARTNER_SECRET)),
        &[
            ("grant_type", "authorization_code"),
            ("code", &back["code"]),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["id_token"].is_string());

    // Remembered: the same scope (or less) goes straight back with a code.
    for scope in ["openid email", "openid"] {
        let r = b.get(ask(scope, &[])).send().await.unwrap();
        assert_eq!(r.status(), 303, "{scope}");
        assert!(query(&location(&r)).contains_key("code"), "{scope}");
    }
    let r = b
        .get(ask("openid email", &[("prompt", "none")]))
        .send()
        .await
        .unwrap();
    assert!(query(&location(&r)).contains_key("code"));
    // More, or prompt=consent: asked again.
    for (scope, extra) in [
        ("openid email profile", vec![]),
        ("openid", vec![("prompt", "consent")]),
    ] {
        let r = b.get(ask(scope, &extra)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{scope} {extra:?}");
        let page = r.text().await.unwrap();
        assert!(page.contains("id=\"allow\""));
        if scope.contains("profile") {
            assert!(page.contains("See your name and language"), "{page}");
            let r = answer(&app, &b, &page, "allow").await;
            assert!(query(&location(&r)).contains_key("code"));
        }
    }
    let r = b.get(ask("openid profile", &[])).send().await.unwrap();
    assert_eq!(r.status(), 303, "the widened consent is kept");

    // A first-party client is never asked.
    let r = b
        .get(authorize_url(&app, "webapp", "openid email profile", &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(query(&location(&r)).contains_key("code"));
}

/// A client with `access_token_format = "jwt"` gets RFC 9068 access
/// tokens: jose (as a resource server would) checks them against the
/// JWKS with `typ` `at+jwt`, issuer and audience; the claims name the
/// person (or, for a machine, the client), the client and the scope; the
/// provider's own endpoints take them like opaque ones, and a revoked one
/// is refused by userinfo at once.
async fn jwt_access_tokens_follow_rfc_9068(db: &TestDb) {
    let Some(mut rp) = Rp::start().await else {
        return;
    };
    let app = start(db, |c| {
        clients(c);
        use authgate::core::oidc::AccessTokenFormat::Jwt;
        c.clients.get_mut("webapp").unwrap().access_token_format = Jwt;
        c.clients.get_mut("machine").unwrap().access_token_format = Jwt;
    })
    .await;
    rp.discover(&app, "webapp", Some(SECRET), "basic").await;
    let b = browser();
    let done = code_flow(
        &app,
        &mut rp,
        &b,
        "webapp",
        "openid email",
        "jo@example.com",
    )
    .await;
    let access = done["tokens"]["access_token"].as_str().unwrap().to_string();
    assert_eq!(access.split('.').count(), 3, "a JWS: {access}");
    assert_eq!(
        done["userinfo"]["email"], "jo@example.com",
        "userinfo takes it"
    );
    let checked = rp
        .ok(json!({ "op": "verify_access_token", "name": "webapp", "token": access, "audience": "webapp" }))
        .await;
    let (p, h) = (&checked["payload"], &checked["header"]);
    assert_eq!(h["typ"], "at+jwt");
    assert!(h["kid"].is_string());
    assert_eq!(p["iss"], issuer(&app));
    assert_eq!(p["sub"], done["claims"]["sub"]);
    assert_eq!(p["client_id"], "webapp");
    assert_eq!(p["scope"], "openid email");
    assert_eq!(p["exp"].as_i64().unwrap() - p["iat"].as_i64().unwrap(), 900);
    assert_eq!(p["amr"], json!(["otp"]));
    // Another audience is refused by the resource server's check.
    let wrong = rp
        .call(json!({ "op": "verify_access_token", "name": "webapp", "token": access, "audience": "other" }))
        .await;
    assert!(wrong.get("error").is_some(), "{wrong}");
    // A forged one (the payload changed, the signature kept).
    let mut parts: Vec<String> = access.split('.').map(str::to_string).collect();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: Value = serde_json::from_slice(&b64.decode(&parts[1]).unwrap()).unwrap();
    claims["scope"] = json!("openid email admin");
    parts[1] = b64.encode(claims.to_string());
    let forged = parts.join(".");
    let refused = rp
        .call(json!({ "op": "verify_access_token", "name": "webapp", "token": forged, "audience": "webapp" }))
        .await;
    assert!(refused.get("error").is_some(), "{refused}");
    let userinfo = |token: String| {
        let url = app.url("/oauth2/userinfo");
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(userinfo(forged).await, 401);
    // Introspection and revocation as for an opaque token.
    let i = rp
        .ok(json!({ "op": "introspect", "name": "webapp", "token": access }))
        .await;
    assert_eq!(i["introspection"]["active"], true);
    rp.ok(json!({ "op": "revoke", "name": "webapp", "token": access }))
        .await;
    assert_eq!(userinfo(access.clone()).await, 401);
    let i = rp
        .ok(json!({ "op": "introspect", "name": "webapp", "token": access }))
        .await;
    assert_eq!(i["introspection"]["active"], false);

    // A machine: the client is the subject.
    let (status, body, _) = token(
        &app,
        Some(("machine", MACHINE_SECRET)),
        &[
            ("grant_type", "client_credentials"),
            ("scope", "reports.read"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    rp.discover(&app, "machine", Some(MACHINE_SECRET), "basic")
        .await;
    let checked = rp
        .ok(json!({ "op": "verify_access_token", "name": "machine",
            "token": body["access_token"], "audience": "machine" }))
        .await;
    assert_eq!(checked["payload"]["sub"], "machine");
    assert_eq!(checked["payload"]["scope"], "reports.read");
    assert!(checked["payload"].get("auth_time").is_none());
}

/// Back-channel logout: a client with a `backchannel_logout_uri` gets a
/// logout token (a form post) when a session it holds a grant from ends,
/// whichever way: RP-initiated logout, or an operator revoking the
/// person's sessions. openid-client's jose checks it as a relying party
/// would (signature, typ, iss, aud, event, no nonce); its `sid` is the ID
/// token's; each session is told once; clients without a URI get nothing.
async fn back_channel_logout_tells_the_client_once_per_ended_session(db: &TestDb) {
    let Some(mut rp) = Rp::start().await else {
        return;
    };
    type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>;
    let seen: Seen = Default::default();
    let receiver = axum::Router::new()
        .route(
            "/bc",
            axum::routing::post(
                |axum::extract::State(seen): axum::extract::State<Seen>,
                 headers: axum::http::HeaderMap,
                 body: String| async move {
                    let ct = headers["content-type"].to_str().unwrap().to_string();
                    seen.lock().unwrap().push((ct, body));
                    axum::http::StatusCode::OK
                },
            ),
        )
        .with_state(seen.clone());
    let receiver = crate::support::TestServer::serve(receiver).await;
    let uri = receiver.url("/bc");
    let app = start(db, |c| {
        clients(c);
        c.clients.get_mut("webapp").unwrap().backchannel_logout_uri = Some(uri.clone());
    })
    .await;
    let discovery: Value = reqwest::get(app.url("/.well-known/openid-configuration"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["backchannel_logout_supported"], true);
    assert_eq!(discovery["backchannel_logout_session_supported"], true);
    rp.discover(&app, "webapp", Some(SECRET), "basic").await;
    rp.discover(&app, "other", Some(OTHER_SECRET), "basic")
        .await;
    let arrived = |n: usize| {
        let seen = seen.clone();
        async move {
            let start = std::time::Instant::now();
            while seen.lock().unwrap().len() < n {
                assert!(
                    start.elapsed() < Duration::from_secs(15),
                    "{n} logout tokens in 15 s"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            seen.lock().unwrap()[n - 1].clone()
        }
    };

    // 1. RP-initiated logout.
    let b = browser();
    let done = code_flow(&app, &mut rp, &b, "webapp", "openid", "bea@example.com").await;
    code_flow(&app, &mut rp, &b, "other", "openid", "bea@example.com").await;
    let url = rp
        .ok(json!({ "op": "end_session_url", "name": "webapp",
            "params": { "id_token_hint": done["tokens"]["id_token"] } }))
        .await["url"]
        .as_str()
        .unwrap()
        .to_string();
    let r = b.get(url).send().await.unwrap();
    assert_eq!(
        r.status(),
        303,
        "signed out at once (the hint is this person's)"
    );
    let (ct, body) = arrived(1).await;
    assert_eq!(ct, "application/x-www-form-urlencoded");
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
    let token = &form["logout_token"];
    let checked = rp
        .ok(json!({ "op": "verify_logout_token", "name": "webapp", "token": token }))
        .await;
    let p = &checked["payload"];
    assert_eq!(checked["header"]["typ"], "logout+jwt");
    assert_eq!(p["sid"], done["claims"]["sid"]);
    assert_eq!(p["sub"], done["claims"]["sub"]);
    assert_eq!(p["aud"], "webapp");
    // Not for another client, and not its ID token.
    let wrong = rp
        .call(json!({ "op": "verify_logout_token", "name": "other", "token": token }))
        .await;
    assert!(wrong.get("error").is_some(), "{wrong}");
    let id_token = rp
        .call(json!({ "op": "verify_logout_token", "name": "webapp", "token": done["tokens"]["id_token"] }))
        .await;
    assert!(
        id_token.get("error").is_some(),
        "an ID token is no logout token"
    );

    // 2. An operator ends every session of another person.
    let b2 = browser();
    let done2 = code_flow(&app, &mut rp, &b2, "webapp", "openid", "cid@example.com").await;
    let cid = app
        .core
        .find_user(&authgate::core::UserKey::parse("cid@example.com").unwrap())
        .await
        .unwrap();
    app.core
        .revoke_user_sessions(cid.id, &authgate::core::ClientMeta::default())
        .await
        .unwrap();
    let (_, body) = arrived(2).await;
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
    let checked = rp
        .ok(json!({ "op": "verify_logout_token", "name": "webapp", "token": form["logout_token"] }))
        .await;
    assert_eq!(checked["payload"]["sid"], done2["claims"]["sid"]);

    // Once each: a few more rounds of the worker send nothing new.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(seen.lock().unwrap().len(), 2);
}
