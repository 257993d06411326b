//! Forward auth: authgate behind the real nginx (`auth_request`) and the
//! real Caddy (`forward_auth`), configured with the README's recipes
//! (`docs/forward-auth/`), in front of a small application that echoes
//! what it receives; journeys in headless Chromium, and the protocol and
//! its abuse over plain HTTP.
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use axum::http::{HeaderMap, Uri};
use reqwest::redirect::Policy;
use serde_json::{Value, json};

use crate::support::{App, Peer, TestDb, TestServer, free_port, on_both_databases, wait_for_port};

on_both_databases!(the_protocol_answers_each_proxy_and_refuses_abuse);

const NGINX_RECIPE: &str = include_str!("../../docs/forward-auth/nginx.conf");
const CADDY_RECIPE: &str = include_str!("../../docs/forward-auth/Caddyfile");
const TRAEFIK_RECIPE: &str = include_str!("../../docs/forward-auth/traefik.yml");

/// The application behind the proxy: every path answers a page with the
/// path, query and headers it received, as JSON in `#echo`.
async fn echo_app() -> TestServer {
    async fn echo(uri: Uri, headers: HeaderMap) -> axum::response::Html<String> {
        let h: BTreeMap<String, String> = headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    v.to_str().unwrap_or("?").to_string(),
                )
            })
            .collect();
        let body = json!({ "uri": uri.to_string(), "headers": h }).to_string();
        let body = body
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        axum::response::Html(format!(
            "<!doctype html><html lang=en><title>Echo</title><main><h1 id=app>The application</h1><pre id=echo>{body}</pre></main>"
        ))
    }
    TestServer::serve(axum::Router::new().fallback(echo)).await
}

/// authgate protecting `app1.test` (anyone signed in; `/healthz` and
/// `/static/` public) and `app2.test` (only `boss@example.com`), at
/// `http://auth.test:<port>`, believing forwarded headers from 127.0.0.1.
async fn authgate(db: &TestDb, smtp: Option<u16>, trusted: &str, host: &str) -> App {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public = format!("http://{host}:{}", listener.local_addr().unwrap().port());
    let trusted = trusted.to_string();
    App::start_on(listener, db, move |c| {
        c.server.public_url = Some(public.parse().unwrap());
        c.server.trusted_proxies = vec![trusted.parse().unwrap()];
        c.surfaces.forward_auth = true;
        if let Some(port) = smtp {
            c.mail.transport = authgate::config::MailTransport::Smtp;
            c.mail.smtp_url = Some(format!("smtp://127.0.0.1:{port}").into());
        }
        let f = &mut c.forward_auth;
        f.groups.insert(
            "staff".into(),
            vec![
                "ann@example.com".into(),
                "nina@example.com".into(),
                "cady@example.com".into(),
            ],
        );
        f.hosts.insert(
            "app1.test".into(),
            authgate::http::forward::HostConfig {
                public_paths: vec!["/healthz".into(), "/static/".into()],
                ..Default::default()
            },
        );
        f.hosts.insert(
            "app2.test".into(),
            authgate::http::forward::HostConfig {
                allow_users: vec!["boss@example.com".into()],
                ..Default::default()
            },
        );
    })
    .await
}

/// nginx with the README's recipe, serving app1.test and app2.test.
fn start_nginx(dir: &Path, port: u16, authgate: u16, app: u16) -> Option<Peer> {
    let program = crate::support::peer_program("AUTHGATE_TEST_NGINX", "/usr/sbin/nginx")?;
    let site = NGINX_RECIPE
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{authgate}"))
        .replace("127.0.0.1:3000", &format!("127.0.0.1:{app}"))
        .replace("listen 80;", &format!("listen 127.0.0.1:{port};"))
        .replace(
            "server_name app.example.com;",
            "server_name app1.test app2.test;",
        );
    let d = dir.display();
    let conf = format!(
        "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log warn;\ndaemon off;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n{site}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    Some(Peer(
        std::process::Command::new(program)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start nginx"),
    ))
}

/// Caddy with the README's recipe, serving app1.test and app2.test.
fn start_caddy(dir: &Path, port: u16, authgate: u16, app: u16) -> Option<Peer> {
    let program = crate::support::peer_program("AUTHGATE_TEST_CADDY", "/usr/bin/caddy")?;
    let site = CADDY_RECIPE
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{authgate}"))
        .replace("127.0.0.1:3000", &format!("127.0.0.1:{app}"))
        .replace(
            "app.example.com {",
            &format!("http://app1.test:{port}, http://app2.test:{port} {{\n\tbind 127.0.0.1"),
        );
    let conf = format!("{{\n\tadmin off\n\tauto_https off\n}}\n{site}");
    let path = dir.join("Caddyfile");
    std::fs::write(&path, conf).unwrap();
    Some(Peer(
        std::process::Command::new(program)
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&path)
            .env("HOME", dir)
            .env("XDG_DATA_HOME", dir)
            .env("XDG_CONFIG_HOME", dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start caddy"),
    ))
}

/// A client that sends every `*.test` host to 127.0.0.1 at `port`.
fn client(hosts: &[(&str, u16)], cookies: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .redirect(Policy::none())
        .cookie_store(cookies);
    for (h, port) in hosts {
        b = b.resolve(h, std::net::SocketAddr::from(([127, 0, 0, 1], *port)));
    }
    b.build().unwrap()
}

/// What the application received, from its page.
fn echoed(html: &str) -> Value {
    let start = html.find("<pre id=echo>").expect("the application's page") + 13;
    let end = html[start..].find("</pre>").unwrap() + start;
    let raw = html[start..end]
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    serde_json::from_str(&raw).unwrap()
}

/// The recipes the README shows are the ones tested here, word for word.
#[test]
fn the_readme_shows_the_tested_recipes() {
    let readme = include_str!("../../README.md");
    for (name, recipe) in [
        ("nginx", NGINX_RECIPE),
        ("Caddy", CADDY_RECIPE),
        ("Traefik", TRAEFIK_RECIPE),
    ] {
        assert!(
            readme.contains(recipe.trim_end()),
            "the README's {name} recipe differs from docs/forward-auth/"
        );
    }
}

/// Each proxy, in Chromium: an anonymous visit goes to sign-in and comes
/// back to the same URL; the application sees who it is; a host whose rule
/// leaves the person out is a 403 page saying why; public paths need no
/// session; spoofed headers change nothing; signing out on the host ends
/// the session everywhere; a session revoked by the CLI is refused on the
/// next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_and_caddy_protect_an_application_in_chromium() {
    use crate::chromium::{Browser, click, text_of, type_into};
    use crate::pages::{assert_accessible, screenshots, text_becomes};
    use crate::support::{Smtpd, code_in};
    let Some((driver, chromium)) = Browser::programs() else {
        return;
    };
    let Some(python) = Smtpd::python() else {
        return;
    };
    let db = TestDb::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let smtp_port = free_port();
    let smtpd = Smtpd::start(&python, smtp_port, dir.path()).await;
    let app = authgate(&db, Some(smtp_port), "127.0.0.1/32", "auth.test").await;
    let auth_port = app.server.addr.port();
    let upstream = echo_app().await;
    let (nginx_port, caddy_port) = (free_port(), free_port());
    let Some(_nginx) = start_nginx(dir.path(), nginx_port, auth_port, upstream.addr.port()) else {
        return;
    };
    let caddy_dir = dir.path().join("caddy");
    std::fs::create_dir_all(&caddy_dir).unwrap();
    let Some(_caddy) = start_caddy(&caddy_dir, caddy_port, auth_port, upstream.addr.port()) else {
        return;
    };
    wait_for_port(nginx_port, "nginx").await;
    wait_for_port(caddy_port, "caddy").await;
    let cli_config = dir.path().join("cli");
    std::fs::create_dir_all(&cli_config).unwrap();
    std::fs::write(cli_config.join("authgate.toml"), "").unwrap();

    for (proxy, port, address) in [
        ("nginx", nginx_port, "nina@example.com"),
        ("caddy", caddy_port, "cady@example.com"),
    ] {
        let browser = Browser::start_with(
            &driver,
            &chromium,
            true,
            &["--host-resolver-rules=MAP *.test 127.0.0.1"],
        )
        .await;
        let c = &browser.client;
        let app1 = format!("http://app1.test:{port}");
        let app2 = format!("http://app2.test:{port}");

        // Anonymous: to sign-in, then back to the very URL.
        let wanted = format!("{app1}/reports/2026?year=2026&q=a%20b");
        c.goto(&wanted).await.unwrap();
        text_becomes(c, "h1", "Sign in").await;
        let at = c.current_url().await.unwrap();
        assert_eq!(at.host_str(), Some("auth.test"), "{proxy}: {at}");
        assert_eq!(at.path(), "/login");
        type_into(c, "#email", address).await;
        click(c, "#send").await;
        text_becomes(c, "h1", "Check your mail").await;
        let raw = Smtpd::wait_for_mail(&smtpd.maildir, address, Duration::from_secs(15)).await;
        type_into(c, "#code", &code_in(&raw)).await;
        click(c, "#verify").await;
        text_becomes(c, "#app", "The application").await;
        assert_eq!(c.current_url().await.unwrap().as_str(), wanted, "{proxy}");
        let seen: Value = serde_json::from_str(&text_of(c, "#echo").await).unwrap();
        let person = app
            .core
            .find_user(&authgate::core::UserKey::parse(address).unwrap())
            .await
            .unwrap();
        assert_eq!(seen["uri"], "/reports/2026?year=2026&q=a%20b", "{proxy}");
        assert_eq!(
            seen["headers"]["x-authgate-user"],
            person.id.to_string(),
            "{proxy}"
        );
        assert_eq!(seen["headers"]["x-authgate-email"], address, "{proxy}");
        assert_eq!(seen["headers"]["x-authgate-groups"], "staff", "{proxy}");
        // The host has a session of its own, handed over from authgate's.
        let cookie = seen["headers"]["cookie"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let sessions = app.core.list_sessions(Some(person.id), 10).await.unwrap();
        assert_eq!(
            sessions.len(),
            2,
            "{proxy}: authgate's and app1's: {sessions:?}"
        );
        assert!(sessions.iter().any(|s| s.kind == "forward"));

        // A host whose rule leaves this person out: 403, and why.
        c.goto(&format!("{app2}/")).await.unwrap();
        text_becomes(c, "h1", "No access").await;
        let why = text_of(c, "#problem").await;
        assert!(
            why.contains(address) && why.contains("app2.test"),
            "{proxy}: {why}"
        );
        assert_accessible(c, &format!("{proxy}: the no-access page")).await;
        screenshots(c, &format!("forward-denied-{proxy}")).await;
        click(c, "a[hreflang=de]").await;
        text_becomes(c, "h1", "Kein Zugang").await;
        assert_accessible(c, &format!("{proxy}: the no-access page in German")).await;
        let http = client(&[("app1.test", port), ("app2.test", port)], false);
        let r = http
            .get(format!("{app2}/"))
            .header("accept", "text/html")
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{proxy}");

        // Public paths without a session; anything else asks to sign in.
        for path in ["/healthz", "/static/app.css"] {
            let r = http.get(format!("{app1}{path}")).send().await.unwrap();
            assert_eq!(r.status(), 200, "{proxy} {path}");
            let seen = echoed(&r.text().await.unwrap());
            assert!(
                absent(&seen["headers"]["x-authgate-user"]),
                "{proxy} {path}: {seen}"
            );
        }
        for path in [
            "/static/../admin",
            "/static/%2e%2e/admin",
            "/healthz/x",
            "/",
        ] {
            let r = http
                .get(format!("{app1}{path}"))
                .header("accept", "application/json")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 401, "{proxy} {path}");
        }
        let r = http
            .get(format!("{app1}/private?a=1"))
            .header("accept", "text/html,application/xhtml+xml")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302, "{proxy}");
        let to = r.headers()["location"].to_str().unwrap().to_string();
        assert_eq!(
            to,
            format!(
                "http://auth.test:{auth_port}/forward-auth/start?rd={}",
                url::form_urlencoded::byte_serialize(format!("{app1}/private?a=1").as_bytes())
                    .collect::<String>()
            ),
            "{proxy}"
        );

        // Spoofing: a client's own forwarded and user headers change nothing.
        let spoofed = http
            .get(format!("{app1}/private"))
            .header("accept", "application/json")
            .header("x-forwarded-host", "auth.test")
            .header("x-forwarded-uri", "/healthz")
            .header("x-original-url", format!("{app1}/healthz"))
            .header("x-authgate-user", "00000000-0000-0000-0000-000000000000")
            .send()
            .await
            .unwrap();
        assert_eq!(spoofed.status(), 401, "{proxy}");
        let r = http
            .get(format!("{app1}/healthz"))
            .header("x-authgate-user", "00000000-0000-0000-0000-000000000000")
            .header("x-authgate-email", "boss@example.com")
            .header("x-authgate-groups", "admins")
            .send()
            .await
            .unwrap();
        let seen = echoed(&r.text().await.unwrap());
        for h in ["x-authgate-user", "x-authgate-email", "x-authgate-groups"] {
            assert!(
                absent(&seen["headers"][h]),
                "{proxy}: {h} reached the app: {seen}"
            );
        }
        let r = http
            .get(format!("{app1}/healthz"))
            .header("cookie", &cookie)
            .header("x-authgate-email", "boss@example.com")
            .send()
            .await
            .unwrap();
        assert_eq!(
            echoed(&r.text().await.unwrap())["headers"]["x-authgate-email"],
            address
        );

        // Sign out on the host: its session, authgate's, all end.
        c.goto(&format!("{app1}/.authgate/logout")).await.unwrap();
        text_becomes(c, "h1", "Sign out").await;
        click(c, "a[hreflang=nl]").await;
        text_becomes(c, "h1", "Afmelden").await;
        click(c, "a[hreflang=en]").await;
        text_becomes(c, "h1", "Sign out").await;
        assert_accessible(c, &format!("{proxy}: the sign-out page")).await;
        screenshots(c, &format!("forward-logout-{proxy}")).await;
        click(c, "#sign-out").await;
        text_becomes(c, "h1", "Sign in").await;
        assert!(
            app.core
                .list_sessions(Some(person.id), 10)
                .await
                .unwrap()
                .is_empty()
        );
        c.goto(&format!("{app1}/reports")).await.unwrap();
        text_becomes(c, "h1", "Sign in").await;

        // Signed in again; the CLI revokes authgate's session: the host's
        // ends with it, and the next request through the proxy is refused.
        let again = format!("again-{address}");
        type_into(c, "#email", &again).await;
        click(c, "#send").await;
        text_becomes(c, "h1", "Check your mail").await;
        let raw = Smtpd::wait_for_mail(&smtpd.maildir, &again, Duration::from_secs(15)).await;
        type_into(c, "#code", &code_in(&raw)).await;
        click(c, "#verify").await;
        text_becomes(c, "#app", "The application").await;
        assert_eq!(c.current_url().await.unwrap().path(), "/reports");
        let person = app
            .core
            .find_user(&authgate::core::UserKey::parse(&again).unwrap())
            .await
            .unwrap();
        let parent = app
            .core
            .list_sessions(Some(person.id), 10)
            .await
            .unwrap()
            .into_iter()
            .find(|s| s.kind == "page")
            .unwrap();
        crate::support::run_ok(
            crate::support::authgate(&cli_config)
                .env("AUTHGATE_DATABASE__URL", &db.url)
                .args(["session", "revoke", &parent.id.to_string()]),
        );
        c.refresh().await.unwrap();
        text_becomes(c, "h1", "Sign in").await;
        browser.client.clone().close().await.unwrap();
    }
}

/// The protocol over HTTP, as the proxies speak it, on both databases.
async fn the_protocol_answers_each_proxy_and_refuses_abuse(db: &TestDb) {
    let app = authgate(db, None, "127.0.0.1/32", "127.0.0.1").await;
    let http = client(&[], false);
    let base = app.url("").trim_end_matches('/').to_string();
    let ask = |path: &str, host: &str, uri: &str| {
        http.get(format!("{base}{path}"))
            .header("x-forwarded-host", host)
            .header("x-forwarded-uri", uri)
            .header("x-forwarded-proto", "http")
            .header("x-forwarded-method", "GET")
    };

    // Nobody signed in.
    let r = ask("/forward-auth", "app1.test", "/x")
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let r = ask("/forward-auth", "app1.test", "/x")
        .header("accept", "*/*")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = ask("/forward-auth/nginx", "app1.test", "/x")
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "auth_request only knows 200, 401 and 403");
    let r = ask("/forward-auth", "app1.test", "/healthz")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = ask("/forward-auth", "other.test", "/")
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("other.test"));
    let r = http
        .get(format!("{base}/forward-auth"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        400,
        "a trusted proxy that sends no original request"
    );

    // Signed in at authgate (pages), then handed over to app1.
    let b = client(&[], true);
    let signed = crate::pages::mail_sign_in(&app, &b, "", "ann@example.com").await;
    assert_eq!(signed.status(), 303);
    let rd = "http://app1.test/deep/path?x=1&y=2";
    let r = b
        .get(format!("{base}/forward-auth/start?rd={}", enc(rd)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let to = reqwest::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(to.host_str(), Some("app1.test"));
    assert_eq!(to.path(), "/.authgate/callback");
    assert_eq!(r.headers().get("referrer-policy").unwrap(), "no-referrer");
    let code = crate::support::query_param(&to, "code").unwrap();
    assert_eq!(
        crate::support::query_param(&to, "rd").unwrap(),
        "/deep/path?x=1&y=2"
    );
    // Another host's callback cannot take it, and it is then spent.
    let at = |host: &str, code: &str| {
        http.get(format!("{base}/.authgate/callback?code={code}&rd=%2Fdeep"))
            .header("x-forwarded-host", host)
            .header("x-forwarded-proto", "http")
    };
    assert_eq!(at("app2.test", &code).send().await.unwrap().status(), 400);
    assert_eq!(at("app1.test", &code).send().await.unwrap().status(), 400);
    // A fresh code, taken once.
    let code = handed_code(&b, &base, rd).await;
    let r = at("app1.test", &code).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/deep");
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set.starts_with("authgate_session=") && set.contains("HttpOnly") && !set.contains("Domain"),
        "{set}"
    );
    let host_cookie = set.split(';').next().unwrap().to_string();
    assert_eq!(
        at("app1.test", &code).send().await.unwrap().status(),
        400,
        "single use"
    );
    let r = ask("/forward-auth", "app1.test", "/deep")
        .header("cookie", &host_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ann = app
        .core
        .find_user(&authgate::core::UserKey::parse("ann@example.com").unwrap())
        .await
        .unwrap();
    assert_eq!(r.headers()["x-authgate-user"], ann.id.to_string());
    assert_eq!(r.headers()["x-authgate-groups"], "staff");
    // The host's cookie is no key to another host, nor the other way.
    let r = ask("/forward-auth/nginx", "app2.test", "/")
        .header("cookie", &host_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "signed in, but app2's rule leaves ann out");

    // Where a return target may lead: only protected hosts.
    for bad in [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example",
        "http:\\\\evil.example",
        "javascript:alert(1)",
        "http%3A%2F%2Fevil.example",
        "http://app1.test.evil.example/",
        "http://evil.example#@app1.test/",
        "http://app1.test@evil.example/",
        "http://user:pw@app1.test/",
        "/account",
        "",
    ] {
        let r = b
            .get(format!("{base}/forward-auth/start?rd={}", enc(bad)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "{bad}");
        assert_eq!(r.headers()["location"], "/account", "{bad}");
    }

    // Sign-out on the host ends its session, authgate's, and the others'.
    let code = handed_code(&b, &base, "http://app1.test/").await;
    let second = at("app1.test", &code).send().await.unwrap();
    let second = second.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(
        app.core
            .list_sessions(Some(ann.id), 10)
            .await
            .unwrap()
            .len(),
        3
    );
    let out = |origin: &str| {
        http.post(format!("{base}/.authgate/logout"))
            .header("x-forwarded-host", "app1.test")
            .header("x-forwarded-proto", "http")
            .header("origin", origin)
            .header("cookie", &host_cookie)
            .form(&[("x", "y")])
    };
    assert_eq!(
        out("http://evil.example").send().await.unwrap().status(),
        403
    );
    assert_eq!(
        app.core
            .list_sessions(Some(ann.id), 10)
            .await
            .unwrap()
            .len(),
        3
    );
    let r = out("http://app1.test").send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert!(
        app.core
            .list_sessions(Some(ann.id), 10)
            .await
            .unwrap()
            .is_empty()
    );
    for cookie in [&host_cookie, &second] {
        let r = ask("/forward-auth/nginx", "app1.test", "/")
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let r = b.get(format!("{base}/account")).send().await.unwrap();
    assert_eq!(r.status(), 303, "authgate's own session ended too");

    // Signing out on authgate's pages ends the hosts' sessions too.
    app.clock.advance(301);
    let again = crate::pages::mail_sign_in(&app, &b, "", "ann@example.com").await;
    assert_eq!(again.status(), 303);
    let code = handed_code(&b, &base, "http://app1.test/").await;
    let third = at("app1.test", &code).send().await.unwrap();
    let third = third.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let account = b
        .get(format!("{base}/account"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = crate::pages::input(&account, "csrf").unwrap();
    let r = b
        .post(format!("{base}/logout"))
        .header("origin", &base)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let r = ask("/forward-auth/nginx", "app1.test", "/")
        .header("cookie", &third)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the host's session ended with authgate's");

    // A session cookie shared with the hosts' parent domain: no hand-off,
    // the cookie authgate's pages set is the one the host's check reads.
    let shared = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let public = format!(
            "http://auth.shared.test:{}",
            listener.local_addr().unwrap().port()
        );
        App::start_on(listener, db, move |c| {
            c.server.public_url = Some(public.parse().unwrap());
            c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
            c.surfaces.forward_auth = true;
            c.session.cookie_domain = Some("shared.test".into());
            c.forward_auth
                .hosts
                .insert("app.shared.test".into(), Default::default());
            c.forward_auth
                .hosts
                .insert("elsewhere.test".into(), Default::default());
        })
        .await
    };
    let sam = shared
        .core
        .add_user(
            authgate::core::NewUser::parse("sam@example.com", None, None).unwrap(),
            &Default::default(),
        )
        .await
        .unwrap();
    let (token, _) = shared
        .core
        .sign_in(
            &sam,
            "page",
            "otp",
            authgate::core::secret::TokenFormat::UrlSafe32,
            &Default::default(),
        )
        .await
        .unwrap();
    let cookie = format!("authgate_session={token}");
    let r = http
        .get(shared.url("/forward-auth/start?rd=http%3A%2F%2Fapp.shared.test%2Fx%3Fy%3D1"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers()["location"],
        "http://app.shared.test/x?y=1",
        "straight back"
    );
    let r = http
        .get(shared.url("/forward-auth"))
        .header("x-forwarded-host", "app.shared.test")
        .header("x-forwarded-uri", "/x?y=1")
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-authgate-user"], sam.id.to_string());
    // A host outside the shared domain still gets a hand-off.
    let r = http
        .get(shared.url("/forward-auth/start?rd=http%3A%2F%2Felsewhere.test%2F"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    let to = r.headers()["location"].to_str().unwrap();
    assert!(
        to.starts_with("http://elsewhere.test/.authgate/callback?code=agf."),
        "{to}"
    );

    // From an address that is not a trusted proxy, forwarded headers are
    // not believed, whatever they say.
    let strict = authgate(db, None, "10.0.0.0/8", "127.0.0.1").await;
    let r = http
        .get(strict.url("/forward-auth"))
        .header("x-forwarded-host", "app1.test")
        .header("x-forwarded-uri", "/healthz")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("trusted_proxies"));
}

/// A header the application did not get, or got empty (Caddy 2.6 copies
/// an absent answer header as an empty one).
fn absent(v: &Value) -> bool {
    v.is_null() || v == ""
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A hand-off code for `rd`, from a browser signed in at authgate.
async fn handed_code(b: &reqwest::Client, base: &str, rd: &str) -> String {
    let r = b
        .get(format!("{base}/forward-auth/start?rd={}", enc(rd)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let to = reqwest::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    crate::support::query_param(&to, "code").unwrap()
}
