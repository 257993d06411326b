//! The four applications' own client code, replayed request by request as
//! it makes them (headers, encodings, content types, URL spellings), read
//! from their public repositories.
use std::io::Write;

use serde_json::{Value, json};

use crate::support::{App, Smtpd, TestDb, code_in, free_port, on_both_databases};

/// gzip, as OkHttp's gzip request body in TimeLimit's `HttpServerApi.kt`.
pub fn gzip(body: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(body).unwrap();
    enc.finish().unwrap()
}

/// A raw HTTP/1.1 POST with a chunked body (as OkHttp sends a body of
/// unknown length) and these extra headers; returns status and body.
pub async fn raw_post(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\nUser-Agent: okhttp/4.12.0\r\nAccept-Encoding: gzip\r\n"
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    // The whole request in one write (it fits the socket's buffer): the
    // server may answer and close before reading all of it.
    let mut req = head.into_bytes();
    let (a, b) = body.split_at(body.len() / 2);
    for chunk in [a, b] {
        if !chunk.is_empty() {
            req.extend(format!("{:x}\r\n", chunk.len()).as_bytes());
            req.extend(chunk);
            req.extend(b"\r\n");
        }
    }
    req.extend(b"0\r\n\r\n");
    let _ = s.write_all(&req).await;
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw).await;
    if raw.len() < 12 {
        // Cut off (the server refused the body and closed first).
        return (0, String::new());
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status: u16 = text[9..12].parse().unwrap();
    let (_, rest) = text.split_once("\r\n\r\n").unwrap_or(("", ""));
    // The answer may itself be chunked: keep the JSON between the sizes.
    let body = match (rest.find('{'), rest.rfind('}')) {
        (Some(i), Some(j)) if j >= i => rest[i..=j].to_string(),
        _ => rest.to_string(),
    };
    (status, body)
}

const TIMELIMIT_HEADERS: [(&str, &str); 4] = [
    ("Content-Type", "application/json; charset=utf-8"),
    ("Content-Encoding", "gzip"),
    ("X-Client-Package", "io.timelimit.android.aosp.direct"),
    ("X-Client-Version", "7.0.0"),
];

/// TimeLimit's app: every POST gzipped and chunked, the address as typed
/// (a phone keyboard's trailing space included), through to a
/// `mailAuthToken` with the code a real SMTP server received.
async fn timelimit_app_signs_in_with_gzipped_bodies(db: &TestDb) {
    let Some(python) = Smtpd::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let smtpd = Smtpd::start(&python, port, dir.path()).await;
    let app = App::start(db, |c| {
        c.mail.transport = authgate::config::MailTransport::Smtp;
        c.mail.smtp_url = Some(format!("smtp://127.0.0.1:{port}").into());
    })
    .await;
    let addr = app.server.addr;
    let send = gzip(br#"{"mail":"parent@timelimit.example ","locale":"de"}"#);
    let (status, body) = raw_post(
        addr,
        "/auth/send-mail-login-code-v2",
        &TIMELIMIT_HEADERS,
        &send,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let token = serde_json::from_str::<Value>(&body).unwrap()["mailLoginToken"]
        .as_str()
        .unwrap()
        .to_string();
    // The mail went to the trimmed address, exactly.
    let mail = Smtpd::wait_for_mail(
        &smtpd.maildir,
        "parent@timelimit.example",
        std::time::Duration::from_secs(10),
    )
    .await;
    let code = code_in(&mail);
    let finish = gzip(
        json!({"mailLoginToken": token, "receivedCode": code})
            .to_string()
            .as_bytes(),
    );
    let (status, body) = raw_post(
        addr,
        "/auth/sign-in-by-mail-code",
        &TIMELIMIT_HEADERS,
        &finish,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let auth = serde_json::from_str::<Value>(&body).unwrap()["mailAuthToken"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(auth.len(), 32);
}

/// A compression bomb is refused without being held in memory, and a body
/// that says gzip but is not is a 400 in the surface's own shape.
async fn compressed_bodies_are_bounded_and_checked(db: &TestDb) {
    let app = App::start(db, |_| {}).await;
    let addr = app.server.addr;
    // 16 MB of spaces inside a JSON string: 16 KB compressed (small
    // enough to be written whole before the answer comes).
    let mut bomb = b"{\"mail\":\"a@example.com\",\"locale\":\"en\",\"x\":\"".to_vec();
    bomb.extend(std::iter::repeat_n(b' ', 16 * 1024 * 1024));
    bomb.extend(b"\"}");
    let bomb = gzip(&bomb);
    assert!(bomb.len() < 200 * 1024);
    let (status, body) = raw_post(
        addr,
        "/auth/send-mail-login-code-v2",
        &TIMELIMIT_HEADERS,
        &bomb,
    )
    .await;
    // Refused (the surface's 400, or the connection cut before the answer
    // could be read), never accepted.
    assert!(
        (status == 400 && body.contains("too large")) || status == 0,
        "{status} {body}"
    );
    let (status, body) = raw_post(
        addr,
        "/auth/send-mail-login-code-v2",
        &TIMELIMIT_HEADERS,
        br#"{"mail":"a@example.com","locale":"en"}"#,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"], "invalid_request");
    // Still serving.
    let (status, _) = raw_post(
        addr,
        "/auth/send-mail-login-code-v2",
        &[("Content-Type", "application/json")],
        br#"{"mail":"a@example.com","locale":"en"}"#,
    )
    .await;
    assert_eq!(status, 200);
}

/// MCT CO2's front end posts with `fetch` and a string body and no headers:
/// the body arrives as `text/plain;charset=UTF-8`. The exchange and the
/// revoke accept it; a body that is not JSON is still the API's 400.
async fn mct_co2_text_plain_bodies(db: &TestDb) {
    let app = App::start(db, |_| {}).await;
    let user = app
        .core
        .add_user(
            authgate::core::NewUser::parse("co2@school.example", None, None).unwrap(),
            &authgate::core::ClientMeta::default(),
        )
        .await
        .unwrap();
    let (session, _) = app
        .core
        .sign_in(
            &user,
            "code_exchange",
            "fed",
            authgate::core::secret::TokenFormat::Base64x16,
            &authgate::core::ClientMeta::default(),
        )
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let revoke = |body: String, ctype: Option<&'static str>| {
        let mut r = client
            .delete(app.url("/api/v1/auth/revoke"))
            .header("origin", "https://co2.example")
            .body(body);
        if let Some(t) = ctype {
            r = r.header("content-type", t);
        }
        r.send()
    };
    let r = revoke("not json".into(), Some("text/plain;charset=UTF-8"))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], 400);
    let r = revoke(
        json!({"sessionId": session}).to_string(),
        Some("application/xml"),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400, "a type that is not JSON or text");
    assert!(app.core.check_session(&session).await.unwrap().is_some());
    let r = revoke(
        json!({"sessionId": session}).to_string(),
        Some("text/plain;charset=UTF-8"),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 202);
    assert!(
        app.core.check_session(&session).await.unwrap().is_none(),
        "sign-out ended the session"
    );
}

/// MCT CO2's `Auth.oauth2(code)`: `POST /api/v1/auth/oauth2?redirect=` +
/// `location.origin` (no slash) with the string body `{"code"}` and no
/// headers, so `text/plain;charset=UTF-8`. The query's redirect URI is the
/// one checked: an origin that is not allowed is the API's 400; the allowed
/// one, spelled without its configured slash, goes on to redeem the code
/// (Microsoft unreachable here: the API's 406 `temporarily_unavailable`).
async fn mct_co2_exchange_names_its_redirect_in_the_query(db: &TestDb) {
    let closed = format!("http://127.0.0.1:{}", free_port());
    let app = App::start(db, |c| {
        c.providers.insert(
            "microsoft".into(),
            authgate::config::ProviderConfig {
                client_id: "co2-client".into(),
                client_secret: Some("co2-secret".into()),
                authority: Some(closed.parse().unwrap()),
                tenant: Some("organizations".into()),
                timeout_secs: Some(2),
                ..Default::default()
            },
        );
        c.code_exchange.redirect_uris = vec!["https://co2.example/".into()];
    })
    .await;
    let exchange = |redirect: &str| {
        reqwest::Client::new()
            .post(app.url(&format!(
                "/api/v1/auth/oauth2?redirect={}",
                url::form_urlencoded::byte_serialize(redirect.as_bytes()).collect::<String>()
            )))
            .header("content-type", "text/plain;charset=UTF-8")
            .header("origin", "https://co2.example")
            .body(json!({"code": "0.AQUAsUvtTf9rs0Ku"}).to_string())
            .send()
    };
    let r = exchange("https://elsewhere.example").await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], 400);
    let r = exchange("https://co2.example").await.unwrap();
    assert_eq!(r.status(), 406);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"]["error"], "temporarily_unavailable", "{v}");
}

/// MCT CO2's whole Microsoft sign-in, as `Login.js`, `Auth.js` and
/// `Data.js` make it, against the real `oidc-provider` as the Entra tenant,
/// which requires PKCE: `location = ApiHost + '/api/v1/auth/oauth2?redirect='
/// + encodeURIComponent(location.origin)`; the person signs in; the front
/// end reads `code` from its URL (it drops everything else) and posts
/// `{code}` as a string body with no headers, cross-origin and without
/// credentials, to `/oauth2?redirect=<location.origin>` (URLSearchParams);
/// `valid` with the raw id; sign-out by `DELETE /revoke`. The provider sends
/// the browser back to authgate's callback, which checks state, flow
/// cookie, PKCE, nonce and `iss`, then on to the front end with a one-time
/// code of authgate's in that same `code` parameter.
async fn mct_co2_signs_in_unchanged_against_a_provider_that_requires_pkce(db: &TestDb) {
    use crate::support::{OidcPeer, PEER_PUBLIC_URL, authorize_at_peer, graph_me, query_param};
    let Some(node) = OidcPeer::node() else {
        return;
    };
    let tenant = "7d2c1b0a-9e8f-4a6b-8c5d-3e2f1a0b9c8d";
    let peer = OidcPeer::entra(
        &node,
        tenant,
        json!({"teacher": {"tid": tenant, "oid": "oid-teacher", "email": "teacher@school.example", "name": "Teacher"}}),
    )
    .await;
    let graph = graph_me("oid-teacher", "Teacher", "teacher@school.example").await;
    let origin = "https://co2.school.example";
    let app = App::start(db, |c| {
        c.server.public_url = Some(PEER_PUBLIC_URL.parse().unwrap());
        c.server.frontend_url = Some(origin.parse().unwrap());
        c.code_exchange.redirect_uris = vec![format!("{origin}/")];
        c.providers.insert(
            "microsoft".into(),
            crate::support::microsoft_provider(&peer, tenant, &graph),
        );
    })
    .await;
    app.core
        .add_user(
            authgate::core::NewUser::parse("teacher@school.example", None, None).unwrap(),
            &authgate::core::ClientMeta::default(),
        )
        .await
        .unwrap();
    // encodeURIComponent(location.origin)
    let encoded = origin.replace(':', "%3A").replace('/', "%2F");
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = browser
        .get(app.url(&format!("/api/v1/auth/oauth2?redirect={encoded}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 301);
    let flow_cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    let authorize = reqwest::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(
        query_param(&authorize, "code_challenge_method").as_deref(),
        Some("S256")
    );
    let back = authorize_at_peer(authorize.as_str(), "teacher").await;
    assert_eq!(back.path(), "/api/v1/auth/oauth2/callback");
    let r = browser
        .get(app.url(&format!("{}?{}", back.path(), back.query().unwrap())))
        .header("cookie", flow_cookie.split(';').next().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let landing = reqwest::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(
        format!(
            "{}://{}{}",
            landing.scheme(),
            landing.authority(),
            landing.path()
        ),
        format!("{origin}/"),
        "the front end's own origin"
    );
    // `this.app.router.search.get('code')`
    let code = query_param(&landing, "code").unwrap();
    assert!(!landing.as_str().contains("state="), "nothing else to drop");
    // new URLSearchParams({redirect: location.origin})
    let search: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("redirect", origin)
        .finish();
    let fetch = reqwest::Client::new();
    let r = fetch
        .post(app.url(&format!("/api/v1/auth/oauth2?{search}")))
        .header("content-type", "text/plain;charset=UTF-8")
        .header("origin", origin)
        .body(json!({ "code": code }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], origin);
    let session = r.json::<Value>().await.unwrap()["sessionId"]
        .as_str()
        .unwrap()
        .to_string();
    let valid = |id: String| {
        let fetch = fetch.clone();
        let url = app.url("/api/v1/auth/valid");
        async move {
            fetch
                .get(url)
                .header("authorization", id)
                .header("origin", origin)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()["valid"]
                .as_bool()
                .unwrap()
        }
    };
    assert!(valid(session.clone()).await);
    // Auth.revoke(sessionId): a string body, no headers.
    let r = fetch
        .delete(app.url("/api/v1/auth/revoke"))
        .header("content-type", "text/plain;charset=UTF-8")
        .header("origin", origin)
        .body(json!({ "sessionId": session }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert!(!valid(session).await, "signed out");
}

/// freesewing.org's sign-in (`src/components/session/oauth/index.js` and
/// `src/config/oauth.js`): `POST /oauth/init {provider, language}`, then
/// `window.location = oauthConfig[provider] + data.state`, an authorize URL
/// the front end built itself (its client id, the back end's callback as
/// `redirect_uri`, unencoded, `scope=read:user`, no PKCE), so the browser
/// never visits `/oauth/authorize` and carries no flow cookie. GitHub
/// (faked from its documented answers) sends it back to the callback. With
/// `oauth.client_built_authorize = ["github"]` the sign-up and a later
/// sign-in go through (the code redeemed without a verifier; the state
/// still single use and bound to its provider); without it, 401.
async fn freesewing_front_end_builds_its_own_authorize_url(db: &TestDb) {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let api = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/login/oauth/access_token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "gho_maker", "token_type": "bearer", "scope": "read:user"
        })))
        .mount(&api)
        .await;
    Mock::given(method("GET"))
        .and(path("/user"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "login": "maker", "id": 4242, "type": "User", "name": "Maker",
            "email": null
        })))
        .mount(&api)
        .await;
    Mock::given(method("GET"))
        .and(path("/user/emails"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([
            {"email": "maker@freesewing.example", "primary": true, "verified": true, "visibility": "private"}
        ])))
        .mount(&api)
        .await;
    let public = crate::support::PEER_PUBLIC_URL;
    let frontend = "https://freesewing.example";
    let start = |opt_in: bool| {
        let api = api.uri();
        App::start(db, move |c| {
            c.server.public_url = Some(public.parse().unwrap());
            c.server.frontend_url = Some(frontend.parse().unwrap());
            c.providers.insert(
                "github".into(),
                authgate::config::ProviderConfig {
                    client_id: "fs-github-client".into(),
                    client_secret: Some("fs-github-secret".into()),
                    auth_url: Some(format!("{api}/login/oauth/authorize").parse().unwrap()),
                    token_url: Some(format!("{api}/login/oauth/access_token").parse().unwrap()),
                    api_url: Some(api.parse().unwrap()),
                    ..Default::default()
                },
            );
            if opt_in {
                c.oauth.client_built_authorize = vec!["github".into()];
            }
        })
    };
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // The front end's own steps, up to where GitHub sends the browser back.
    let sign_in = |app: &App| {
        let browser = browser.clone();
        let init = app.url("/oauth/init");
        let base = app.url("");
        async move {
            let r = browser
                .post(init)
                .json(&json!({"provider": "github", "language": "en"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let state = r.json::<Value>().await.unwrap()["state"]
                .as_str()
                .unwrap()
                .to_string();
            let callback = format!("{public}/oauth/callback/from/github");
            let built = format!(
                "https://github.com/login/oauth/authorize?client_id=fs-github-client&redirect_uri={callback}&scope=read:user&state={state}"
            );
            let built = url::Url::parse(&built).unwrap();
            let redirect_uri = built
                .query_pairs()
                .find(|(k, _)| k == "redirect_uri")
                .unwrap()
                .1
                .into_owned();
            // GitHub: back to redirect_uri with its code and the state.
            let back = format!("{redirect_uri}?code=gh-code-123&state={state}");
            let r = browser
                .get(back.replacen(public, base.trim_end_matches('/'), 1))
                .send()
                .await
                .unwrap();
            let to = r
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_string());
            (r.status().as_u16(), to, state)
        }
    };

    let off = start(false).await;
    let (status, to, _) = sign_in(&off).await;
    assert_eq!(
        (status, to),
        (401, None),
        "off by default: no browser binding, no sign-in"
    );
    drop(off);

    let app = start(true).await;
    let (status, to, state) = sign_in(&app).await;
    assert_eq!(status, 302);
    let to = to.unwrap();
    let confirmation = to
        .strip_prefix(&format!("{frontend}/confirm/signup/"))
        .unwrap_or_else(|| panic!("{to}"))
        .trim_end_matches('/')
        .to_string();
    assert_ne!(confirmation, state);
    let token_request = api
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.url.path() == "/login/oauth/access_token")
        .unwrap();
    let form = String::from_utf8_lossy(&token_request.body).into_owned();
    assert!(form.contains("code=gh-code-123"), "{form}");
    assert!(
        !form.contains("code_verifier"),
        "no PKCE: the client sent no challenge: {form}"
    );
    // The same state again: single use.
    let again = browser
        .get(app.url(&format!(
            "/oauth/callback/from/github?code=gh-code-123&state={state}"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 401);
    // The new person's page `/confirm/signup/<confirmation>/` posts the
    // account creation with their consent.
    let r = browser
        .post(app.url("/account"))
        .json(&json!({"id": confirmation, "consent": {"profile": true, "model": true}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["account"]["email"], "maker@freesewing.example", "{v}");
    // A later sign-in: `/login/callback/:confirmation/:validation` posts both.
    let (status, to, _) = sign_in(&app).await;
    assert_eq!(status, 302);
    let to = to.unwrap();
    let rest = to
        .strip_prefix(&format!("{frontend}/login/callback/"))
        .unwrap_or_else(|| panic!("{to}"));
    let (confirmation, validation) = rest.split_once('/').unwrap();
    let r = browser
        .post(app.url("/oauth/login"))
        .json(&json!({"confirmation": confirmation, "validation": validation}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["account"]["email"], "maker@freesewing.example", "{v}");
    assert_eq!(v["signup"], false);
    assert!(v["token"].is_string());
}

/// The seed paths of the e-mail code API take a trailing slash too; a code
/// longer than any code is a wrong guess (403), not a gone login (410).
async fn mail_code_trailing_slash_and_overlong_codes(db: &TestDb) {
    let app = App::start(db, |_| {}).await;
    let (status, body) = app
        .post(
            "/auth/send-mail-login-code-v2/",
            json!({"mail": "slash@example.com", "locale": "en"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let token = body["mailLoginToken"].as_str().unwrap().to_string();
    let code = code_in(&app.console_mail("slash@example.com").await);
    let (status, _) = app
        .post(
            "/auth/sign-in-by-mail-code/",
            json!({"mailLoginToken": token, "receivedCode": "x".repeat(5000)}),
        )
        .await;
    assert_eq!(status, 403, "one attempt spent");
    let (status, body) = app
        .post(
            "/auth/sign-in-by-mail-code/",
            json!({"mailLoginToken": token, "receivedCode": code}),
        )
        .await;
    assert_eq!(status, 200, "the login lived on: {body}");
}

/// `a@bücher.test`, `a@BÜCHER.test` and `a@xn--bcher-kva.test` are one
/// mailbox: one rate-limit bucket, one user, one address sent to.
async fn one_mailbox_whatever_the_domain_spelling(db: &TestDb) {
    let app = App::start(db, |_| {}).await;
    for mail in ["a@bücher.test", "a@BÜCHER.test"] {
        let (status, body) = app
            .post(
                "/auth/send-mail-login-code-v2",
                json!({"mail": mail, "locale": "en"}),
            )
            .await;
        assert_eq!(status, 200, "{mail}: {body}");
    }
    app.mail_after("a@xn--bcher-kva.test", 1).await;
    assert_eq!(
        app.mails_to("a@xn--bcher-kva.test"),
        2,
        "sent to the one ASCII form"
    );
    let (status, _) = app
        .post(
            "/auth/send-mail-login-code-v2",
            json!({"mail": "a@xn--bcher-kva.test", "locale": "en"}),
        )
        .await;
    assert_eq!(status, 429, "the same address's bucket");
    let u = app
        .core
        .add_user(
            authgate::core::NewUser::parse("b@bücher.test", None, None).unwrap(),
            &authgate::core::ClientMeta::default(),
        )
        .await
        .unwrap();
    assert_eq!(u.email.unwrap().as_str(), "b@xn--bcher-kva.test");
    let again = app
        .core
        .add_user(
            authgate::core::NewUser::parse("B@XN--BCHER-KVA.test", None, None).unwrap(),
            &authgate::core::ClientMeta::default(),
        )
        .await;
    assert!(again.is_err(), "one user per mailbox");
}

on_both_databases!(
    one_mailbox_whatever_the_domain_spelling,
    timelimit_app_signs_in_with_gzipped_bodies,
    compressed_bodies_are_bounded_and_checked,
    mct_co2_text_plain_bodies,
    mct_co2_exchange_names_its_redirect_in_the_query,
    mct_co2_signs_in_unchanged_against_a_provider_that_requires_pkce,
    freesewing_front_end_builds_its_own_authorize_url,
    mail_code_trailing_slash_and_overlong_codes,
);
