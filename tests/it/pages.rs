//! authgate's own pages over HTTP: `/` → `/login`, sign-in by e-mail code
//! through the forms (code read from the mail), `/account`, `/logout`; the
//! CSRF and origin checks; the headers every page carries; the languages.
//! (The real-browser run with JavaScript off is in `chromium`.)
use std::path::{Path, PathBuf};
use std::time::Duration;

use fantoccini::{Client, Locator};
use reqwest::redirect::Policy;

use crate::chromium::{Browser, click, text_of, type_into};
use crate::support::{
    App, OidcPeer, PEER_CLIENT_ID, PEER_CLIENT_SECRET, PEER_PUBLIC_URL, Smtpd, TestDb,
    authorize_at_peer, code_in, free_port, on_both_databases,
};

on_both_databases!(
    sign_in_by_mail_code_through_the_pages,
    forms_without_the_csrf_token_or_from_elsewhere_are_refused,
    in_chromium_without_javascript_by_a_mailed_code,
    return_to_is_kept_server_side_and_only_for_allowed_origins,
    a_provider_sign_in_through_the_pages,
    the_account_page_edits_ends_sessions_gives_the_data_and_deletes,
    connecting_and_removing_sign_in_methods,
    a_github_sign_in_through_the_pages,
    a_templates_folder_replaces_the_built_in_pages,
    refusals_are_friendly_pages_in_the_persons_language,
);

/// Where the page tests put their screenshots (README: "The pages").
pub fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The page at two widths, a phone's and a desktop's.
pub async fn screenshots(c: &Client, name: &str) {
    for width in [390, 1280] {
        c.set_window_size(width, 900).await.unwrap();
        let png = c.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(screenshot_dir().join(format!("{name}-{width}.png")), png).unwrap();
    }
}

/// axe-core's source (`npm ci` in `tests/peers/axe`); missing: skipped,
/// or a failure under CI.
fn axe_source() -> Option<String> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers/axe/node_modules/axe-core/axe.min.js");
    match std::fs::read_to_string(&file) {
        Ok(s) => Some(s),
        Err(_) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!(
                "{} is missing (cd tests/peers/axe && npm ci), and under CI every real-peer suite must run",
                file.display()
            )
        }
        Err(_) => {
            eprintln!("note: skipping a case that needs axe-core (cd tests/peers/axe && npm ci)");
            None
        }
    }
}

/// axe-core finds nothing on the page `c` shows (`what` names it); axe
/// missing: skipped, or a failure under CI.
pub async fn assert_accessible(c: &Client, what: &str) {
    if let Some(axe) = axe_source() {
        let found = axe_violations(c, &axe).await;
        assert!(found.is_empty(), "{what}: {found:?}");
    }
}

/// axe-core run in the page: its violations.
async fn axe_violations(c: &Client, source: &str) -> Vec<String> {
    c.execute(source, vec![]).await.unwrap();
    let found = c
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, { resultTypes: ['violations'] })
                .then(r => done(r.violations.map(v => v.id + ' (' + v.impact + '): ' + v.nodes.map(n => n.html).join(' | '))))
                .catch(e => done(['axe failed: ' + e]));",
            vec![],
        )
        .await
        .unwrap();
    serde_json::from_value(found).unwrap()
}

/// A person with script off signs in by the code that the real SMTP
/// server received, sees their account and signs out; screenshots of each
/// page at two widths. Then, with script on (for axe-core only), every page
/// is checked for accessibility in two languages.
async fn in_chromium_without_javascript_by_a_mailed_code(db: &TestDb) {
    let Some((driver, chromium)) = Browser::programs() else {
        return;
    };
    let Some(python) = Smtpd::python() else {
        return;
    };
    let Some(axe) = axe_source() else { return };
    let Some(node) = OidcPeer::node() else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let smtpd = Smtpd::start(&python, port, dir.path()).await;
    // authgate's port first: the Google-like provider must know its callback.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let peer = OidcPeer::google_with_redirects(
        &node,
        serde_json::json!({
            "g-gus": {"email": "gus@gmail.example", "email_verified": true, "name": "Gus"},
            "g-keys": {"email": "keys.g@gmail.example", "email_verified": true, "name": "Keys G"},
        }),
        &[format!("{public}/login/callback/google")],
    )
    .await;
    let issuer = peer.issuer.clone();
    const TENANT: &str = "5b1c9a52-8d4e-4b7a-a6c1-0e2d5f8b9c7a";
    let entra = OidcPeer::entra_megan(
        &node,
        TENANT,
        &[format!("{public}/login/callback/microsoft")],
    )
    .await;
    let graph = crate::support::graph_me("oid-megan", "Megan Bowen", "megan@contoso.example").await;
    let github = wiremock::MockServer::start().await;
    crate::oauth::github_person(
        &github,
        5151,
        "octo-pages",
        serde_json::json!([
            {"email": "octo.pages@example.com", "primary": true, "verified": true, "visibility": null}
        ]),
    )
    .await;
    crate::oauth::github_authorize_page(&github).await;
    let app = App::start_on(listener, db, |c| {
        c.providers
            .insert("github".into(), crate::oauth::github_provider(&github));
        c.providers.insert(
            "microsoft".into(),
            crate::support::microsoft_provider(&entra, TENANT, &graph),
        );
        c.server.public_url = Some(public.parse().unwrap());
        c.mail.transport = authgate::config::MailTransport::Smtp;
        c.mail.smtp_url = Some(format!("smtp://127.0.0.1:{port}").into());
        c.mail_login.product_name = "Example".into();
        c.providers.insert(
            "google".into(),
            authgate::config::ProviderConfig {
                client_id: PEER_CLIENT_ID.into(),
                client_secret: Some(PEER_CLIENT_SECRET.into()),
                issuer: Some(issuer.parse().unwrap()),
                ..Default::default()
            },
        );
    })
    .await;
    let browser = Browser::start(&driver, &chromium, false).await;
    let c = &browser.client;
    let address = "pages@example.com".to_string();
    async {
        c.goto(&app.url("/")).await.unwrap();
        assert!(c.current_url().await.unwrap().path().ends_with("/login"));
        text_becomes(c, "h1", "Sign in").await;
        screenshots(c, "login").await;
        type_into(c, "#email", &address).await;
        click(c, "#send").await;
        text_becomes(c, "h1", "Check your mail").await;
        screenshots(c, "code").await;
        let raw = Smtpd::wait_for_mail(&smtpd.maildir, &address, Duration::from_secs(15)).await;
        type_into(c, "#code", &code_in(&raw)).await;
        click(c, "#verify").await;
        assert_eq!(text_of(c, "#account-email").await, address);
        assert!(c.current_url().await.unwrap().path().ends_with("/account"));
        screenshots(c, "account").await;
        click(c, "#sign-out").await;
        text_becomes(c, "h1", "Sign in").await;
        c.goto(&app.url("/account")).await.unwrap();
        assert!(c.current_url().await.unwrap().path().ends_with("/login"));

        // With Google (the real oidc-provider's own login and consent
        // forms), script still off.
        click(c, "#provider-google").await;
        type_into(c, "input[name=login]", "g-gus").await;
        type_into(c, "input[name=password]", "any password").await;
        click(c, "button[type=submit]").await;
        crate::chromium::gone(c, "input[name=login]").await;
        click(c, "button[type=submit]").await;
        assert_eq!(text_of(c, "#account-email").await, "gus@gmail.example");
        assert!(c.current_url().await.unwrap().path().ends_with("/account"));
        click(c, "#sign-out").await;
        text_becomes(c, "h1", "Sign in").await;

        // With Microsoft (an Entra-like tenant of the real oidc-provider,
        // Graph faked from its documented answer).
        click(c, "#provider-microsoft").await;
        type_into(c, "input[name=login]", "megan").await;
        type_into(c, "input[name=password]", "any password").await;
        click(c, "button[type=submit]").await;
        crate::chromium::gone(c, "input[name=login]").await;
        click(c, "button[type=submit]").await;
        text_becomes(c, "h1", "Your account").await;
        assert!(c.find(Locator::Css("#method-microsoft")).await.is_ok());
        click(c, "#sign-out").await;
        text_becomes(c, "h1", "Sign in").await;

        // With GitHub (its authorize page and REST API faked from the
        // documented answers): the person clicks "Authorize" there.
        click(c, "#provider-github").await;
        click(c, "#gh-authorize").await;
        assert_eq!(text_of(c, "#account-email").await, "octo.pages@example.com");
        assert!(c.find(Locator::Css("#method-github")).await.is_ok());
        click(c, "#sign-out").await;
        text_becomes(c, "h1", "Sign in").await;
    }
    .await;
    let _ = c.clone().close().await;

    // axe-core needs script: a second browser with it on.
    let browser = Browser::start(&driver, &chromium, true).await;
    let c = &browser.client;
    let address = "axe@example.com".to_string();
    let checked = async {
        let mut report = Vec::new();
        for lang in ["en", "de"] {
            c.goto(&app.url(&format!("/login?lang={lang}"))).await.unwrap();
            report.push((format!("/login ({lang})"), axe_violations(c, &axe).await));
        }
        type_into(c, "#email", &address).await;
        click(c, "#send").await;
        text_of(c, "#code-hint").await;
        report.push(("code entry (de)".into(), axe_violations(c, &axe).await));
        let raw = Smtpd::wait_for_mail(&smtpd.maildir, &address, Duration::from_secs(15)).await;
        type_into(c, "#code", &code_in(&raw)).await;
        click(c, "#verify").await;
        text_of(c, "#account-email").await;
        report.push(("/account (de)".into(), axe_violations(c, &axe).await));
        c.goto(&app.url("/account?lang=en")).await.unwrap();
        report.push(("/account (en)".into(), axe_violations(c, &axe).await));
        // An error page: a form whose CSRF token was tampered with.
        c.execute(
            "document.querySelector('input[name=csrf]').value = 'tampered'; document.forms[0].submit();",
            vec![],
        )
        .await
        .unwrap();
        text_of(c, "#problem").await;
        report.push(("error page".into(), axe_violations(c, &axe).await));
        screenshots(c, "error").await;
        // The page cannot be framed, and runs nothing inline.
        assert!(c.find(Locator::Css("script")).await.is_err());
        report
    }
    .await;
    for (page, violations) in &checked {
        assert!(violations.is_empty(), "axe-core on {page}: {violations:#?}");
    }
    assert_eq!(checked.len(), 6);

    // Keyboard only: Tab and Enter through the e-mail code sign-in, the
    // focused element asserted at each step.
    let keyboard = async {
        c.goto(&app.url("/account")).await.unwrap();
        click(c, "#sign-out").await;
        text_of(c, "#email-hint").await;
        c.goto(&app.url("/login?lang=en")).await.unwrap();
        press(c, TAB).await;
        focus_becomes(c, "email").await;
        c.active_element()
            .await
            .unwrap()
            .send_keys("keys@example.com")
            .await
            .unwrap();
        press(c, TAB).await;
        focus_becomes(c, "send").await;
        press(c, ENTER).await;
        text_of(c, "#code-hint").await;
        // The code field has the focus on arrival.
        focus_becomes(c, "code").await;
        let raw =
            Smtpd::wait_for_mail(&smtpd.maildir, "keys@example.com", Duration::from_secs(15)).await;
        c.active_element()
            .await
            .unwrap()
            .send_keys(&code_in(&raw))
            .await
            .unwrap();
        press(c, TAB).await;
        focus_becomes(c, "verify").await;
        press(c, ENTER).await;
        assert_eq!(text_of(c, "#account-email").await, "keys@example.com");
    };
    keyboard.await;

    // The account page in the browser: rename, connect Google, sign out a
    // second browser and see it refused there, fetch the data, delete.
    let journey = async {
        let name = c.find(Locator::Css("#name")).await.unwrap();
        name.clear().await.unwrap();
        name.send_keys("Keys Example").await.unwrap();
        click(c, "#save").await;
        text_becomes(c, ".notice", "Saved.").await;
        let shown = c
            .find(Locator::Css("#name"))
            .await
            .unwrap()
            .prop("value")
            .await
            .unwrap();
        assert_eq!(shown.as_deref(), Some("Keys Example"));

        click(c, "#connect-google").await;
        type_into(c, "input[name=login]", "g-keys").await;
        type_into(c, "input[name=password]", "any password").await;
        click(c, "button[type=submit]").await;
        crate::chromium::gone(c, "input[name=login]").await;
        click(c, "button[type=submit]").await;
        text_becomes(c, ".notice", "Connected.").await;
        assert!(c.find(Locator::Css("#method-google")).await.is_ok());

        // A second browser (script off) signs in to the same account.
        let second = Browser::start(&driver, &chromium, false).await;
        let c2 = &second.client;
        c2.goto(&app.url("/login?lang=en")).await.unwrap();
        type_into(c2, "#email", "keys@example.com").await;
        let seen = std::fs::read_dir(smtpd.maildir.join("new"))
            .map(|d| d.count())
            .unwrap_or(0);
        click(c2, "#send").await;
        text_becomes(c2, "h1", "Check your mail").await;
        let start = std::time::Instant::now();
        let raw = loop {
            let mut newest: Vec<_> = std::fs::read_dir(smtpd.maildir.join("new"))
                .unwrap()
                .flatten()
                .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                .filter(|m| m.contains("To: keys@example.com"))
                .collect();
            if newest.len() >= 2
                && std::fs::read_dir(smtpd.maildir.join("new"))
                    .unwrap()
                    .count()
                    > seen
            {
                newest.sort_by_key(|m| m.len());
                // The newer mail is the one whose code the code page awaits;
                // try both (the older one's login is gone).
                break newest;
            }
            assert!(start.elapsed() < Duration::from_secs(15), "no second mail");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let mut signed = false;
        for mail in &raw {
            let field = c2.find(Locator::Css("#code")).await.unwrap();
            field.clear().await.unwrap();
            field.send_keys(&code_in(mail)).await.unwrap();
            click(c2, "#verify").await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            if c2.find(Locator::Css("#account-email")).await.is_ok() {
                signed = true;
                break;
            }
        }
        assert!(signed, "the second browser signed in");
        // The first browser signs the second out.
        c.goto(&app.url("/account")).await.unwrap();
        click(c, "form[action='/account/sessions/end'] button").await;
        text_becomes(c, "h1", "Your account").await;
        c2.goto(&app.url("/account")).await.unwrap();
        assert!(
            c2.current_url().await.unwrap().path().ends_with("/login"),
            "refused there"
        );
        let _ = c2.clone().close().await;

        // "Download my data" with this browser's session cookie (the pages'
        // CSP lets no script fetch it: `connect-src` falls back to 'none').
        let blocked = c
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 fetch('/account/data').then(() => done('fetched'), () => done('blocked'));",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(blocked, "blocked");
        let link = c.find(Locator::Css("#download")).await.unwrap();
        assert_eq!(
            link.attr("href").await.unwrap().as_deref(),
            Some("/account/data")
        );
        let cookie = c
            .get_all_cookies()
            .await
            .unwrap()
            .into_iter()
            .find(|k| k.name() == "authgate_session")
            .expect("the session cookie");
        let data: serde_json::Value = reqwest::Client::new()
            .get(app.url("/account/data"))
            .header("cookie", format!("authgate_session={}", cookie.value()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(data["user"]["email"], "keys@example.com");
        assert_eq!(data["user"]["display_name"], "Keys Example");
        assert_eq!(data["identities"][0]["provider"], "google");

        click(c, "#delete").await;
        text_becomes(c, "h1", "Delete your account?").await;
        click(c, "#delete-for-good").await;
        text_becomes(c, "h1", "Sign in").await;
        c.goto(&app.url("/account")).await.unwrap();
        assert!(c.current_url().await.unwrap().path().ends_with("/login"));
    };
    journey.await;

    // Framed by another site: the browser refuses (CSP frame-ancestors),
    // while the same site's own frame loads.
    let framer = crate::support::TestServer::serve(axum::Router::new().route(
        "/",
        axum::routing::get({
            let login = app.url("/login");
            move || async move {
                axum::response::Html(format!(
                    r#"<!doctype html><title>framer</title><iframe id="a" src="{login}"></iframe><iframe id="b" src="/own"></iframe>"#
                ))
            }
        }),
    ).route("/own", axum::routing::get(|| async { axum::response::Html("<p id=\"own\">own</p>") })))
    .await;
    c.goto(&framer.url("/")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.clone().enter_frame(1).await.unwrap();
    assert_eq!(text_of(c, "#own").await, "own", "frames load in general");
    c.clone().enter_parent_frame().await.unwrap();
    c.clone().enter_frame(0).await.unwrap();
    assert!(
        c.find(Locator::Css("main.card")).await.is_err(),
        "authgate's page must not render inside another site's frame"
    );
    let _ = c.clone().close().await;
}

/// Wait (bounded) until the element's text is `want` (after a click the
/// old page may still be showing).
pub async fn text_becomes(c: &Client, css: &str, want: &str) {
    let start = std::time::Instant::now();
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await
            && e.text().await.is_ok_and(|t| t == want)
        {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{css} never read {want:?} (at {:?})",
            c.current_url().await.ok()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const TAB: &str = "\u{e004}";
const ENTER: &str = "\u{e007}";

/// Press a key in whatever has the focus.
async fn press(c: &Client, key: &str) {
    let target = match c.active_element().await {
        Ok(e) => e,
        Err(_) => c.find(Locator::Css("body")).await.unwrap(),
    };
    target.send_keys(key).await.unwrap();
}

/// Wait (bounded) until the focused element is the one with this id.
async fn focus_becomes(c: &Client, id: &str) {
    let start = std::time::Instant::now();
    loop {
        let now = match c.active_element().await {
            Ok(e) => e.attr("id").await.ok().flatten().unwrap_or_default(),
            Err(_) => String::new(),
        };
        if now == id {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the focus is on {now:?}, not #{id}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// authgate on a port known before it starts, its public URL naming it.
pub async fn start(db: &TestDb, configure: impl FnOnce(&mut authgate::config::Config)) -> App {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    App::start_on(listener, db, |c| {
        c.server.public_url = Some(public.parse().unwrap());
        configure(c);
    })
    .await
}

pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// The value of a hidden (or any) input by name, in a page.
pub fn input(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\""))?;
    let tag_start = html[..at].rfind('<')?;
    let tag = &html[tag_start..tag_start + html[tag_start..].find('>')?];
    let v = tag.split("value=\"").nth(1)?;
    Some(v[..v.find('"')?].to_string())
}

fn assert_page_headers(r: &reqwest::Response) {
    let h = r.headers();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("frame-ancestors 'none'")
            && csp.contains("default-src 'none'")
            && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(h["cache-control"], "no-store");
    // Other sites learn nothing; the pages' own posts keep their Origin.
    assert_eq!(h["referrer-policy"], "same-origin");
    assert_eq!(h["x-content-type-options"], "nosniff");
}

/// No script at all, and no inline style, in a page.
fn assert_no_inline_code(html: &str) {
    let lower = html.to_ascii_lowercase();
    assert!(!lower.contains("<script"), "{html}");
    assert!(!lower.contains("<style"), "{html}");
    assert!(!lower.contains(" style="), "{html}");
    assert!(
        !lower.contains(" on") || !lower.contains("onclick="),
        "{html}"
    );
}

async fn sign_in_by_mail_code_through_the_pages(db: &TestDb) {
    let app = start(db, |_| {}).await;
    let b = browser();
    let origin = app.url("").trim_end_matches('/').to_string();

    // A stranger at / is sent to the sign-in page.
    let r = b.get(app.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/login");
    let r = b.get(app.url("/account")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/login");

    let r = b
        .get(app.url("/login"))
        .header("accept-language", "de-CH, de;q=0.9, en;q=0.5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_page_headers(&r);
    let html = r.text().await.unwrap();
    assert_no_inline_code(&html);
    assert!(html.contains("<html lang=\"de\">"), "{html}");
    assert!(html.contains("E-Mail-Adresse"), "German texts: {html}");
    let csrf = input(&html, "csrf").unwrap();
    assert_eq!(csrf.len(), 43);

    // Not an address: the page again, the error tied to its field.
    let r = b
        .post(app.url("/login/code"))
        .header("origin", &origin)
        .form(&[
            ("csrf", csrf.as_str()),
            ("lang", "en"),
            ("email", "not an address"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let html = r.text().await.unwrap();
    assert!(html.contains("id=\"email-error\""), "{html}");
    assert!(
        html.contains("aria-describedby=\"email-hint email-error\""),
        "{html}"
    );
    assert!(html.contains("aria-invalid=\"true\""), "{html}");
    assert!(html.contains("value=\"not an address\""), "kept: {html}");

    let r = b
        .post(app.url("/login/code"))
        .header("origin", &origin)
        .form(&[
            ("csrf", csrf.as_str()),
            ("lang", "en"),
            ("email", " ann@example.com "),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_page_headers(&r);
    let html = r.text().await.unwrap();
    assert_no_inline_code(&html);
    assert!(html.contains("ann@example.com"), "{html}");
    let login = input(&html, "login").unwrap();
    assert!(!login.is_empty());
    let code = code_in(&app.console_mail("ann@example.com").await);

    // A wrong code: the code page again with the error, and the login lives.
    let verify = |code: String| {
        let (b, origin, csrf, login) = (b.clone(), origin.clone(), csrf.clone(), login.clone());
        let url = app.url("/login/verify");
        async move {
            b.post(url)
                .header("origin", origin)
                .form(&[
                    ("csrf", csrf),
                    ("lang", "en".into()),
                    ("login", login),
                    ("email", "ann@example.com".into()),
                    ("code", code),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    let r = verify("wrong words here".into()).await;
    assert_eq!(r.status(), 403);
    let html = r.text().await.unwrap();
    assert!(html.contains("id=\"code-error\""), "{html}");
    assert!(html.contains("That code is not right"), "{html}");

    let r = verify(code.to_uppercase()).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/account");
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("authgate_session="))
        .expect("a session cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(cookie.contains("Max-Age=604800"), "{cookie}");

    // The code is spent.
    let r = verify(code.clone()).await;
    assert_eq!(r.status(), 410);
    assert!(r.text().await.unwrap().contains("expired"));

    let r = b.get(app.url("/")).send().await.unwrap();
    assert_eq!(r.headers()["location"], "/account");
    let r = b
        .get(app.url("/account"))
        .header("user-agent", "PagesTest/1.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_page_headers(&r);
    let html = r.text().await.unwrap();
    assert_no_inline_code(&html);
    assert!(
        html.contains("id=\"account-email\">ann@example.com<"),
        "{html}"
    );
    let user = app
        .core
        .find_user(&authgate::core::UserKey::Email(
            authgate::core::Email::parse("ann@example.com").unwrap(),
        ))
        .await
        .unwrap();
    let sessions = app.core.list_sessions(Some(user.id), 10).await.unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].kind, "page");
    assert!(html.contains("(This device)"), "{html}");

    // Sign out: the session ends server-side and the cookie goes.
    let csrf = input(&html, "csrf").unwrap();
    let r = b
        .post(app.url("/logout"))
        .header("origin", &origin)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/login");
    assert!(
        app.core
            .list_sessions(Some(user.id), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let r = b.get(app.url("/account")).send().await.unwrap();
    assert_eq!(r.headers()["location"], "/login");
}

async fn forms_without_the_csrf_token_or_from_elsewhere_are_refused(db: &TestDb) {
    let app = start(db, |_| {}).await;
    let b = browser();
    let origin = app.url("").trim_end_matches('/').to_string();
    let html = b
        .get(app.url("/login?lang=fr"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("<html lang=\"fr\">"));
    let csrf = input(&html, "csrf").unwrap();
    let other = "x".repeat(43);
    for (token, from) in [
        ("", origin.as_str()),
        (other.as_str(), origin.as_str()),
        (csrf.as_str(), "https://evil.example"),
    ] {
        let r = b
            .post(app.url("/login/code"))
            .header("origin", from)
            .form(&[
                ("csrf", token),
                ("lang", "fr"),
                ("email", "ann@example.com"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{token:?} from {from}");
        assert_page_headers(&r);
        let html = r.text().await.unwrap();
        assert!(html.contains("<html lang=\"fr\">"), "{html}");
        assert!(html.contains("Ce formulaire"), "a friendly page: {html}");
        assert!(!html.contains(&csrf), "no token echoed");
    }
    // Without the cookie (another browser), the page's token is refused too.
    let r = reqwest::Client::new()
        .post(app.url("/login/code"))
        .header("origin", &origin)
        .form(&[("csrf", csrf.as_str()), ("email", "ann@example.com")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(app.mails_to("ann@example.com"), 0, "nothing was sent");
    // authgate opened under another name than `server.public_url` (a
    // newcomer at http://localhost:3001/): a post from the host the request
    // went to is the page's own.
    let elsewhere = App::start(db, |_| {}).await;
    let b = browser();
    let html = b
        .get(elsewhere.url("/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = input(&html, "csrf").unwrap();
    let own = elsewhere.url("").trim_end_matches('/').to_string();
    let r = b
        .post(elsewhere.url("/login/code"))
        .header("origin", &own)
        .form(&[("csrf", csrf.as_str()), ("email", "bob@example.com")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{own}");
    let r = b
        .post(elsewhere.url("/login/code"))
        .header("origin", "http://127.0.0.1:1")
        .form(&[("csrf", csrf.as_str()), ("email", "bob@example.com")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "another port is another origin");
    // A body that is not a form: the friendly page, not a bare 4xx.
    let r = b
        .post(app.url("/login/verify"))
        .header("origin", &origin)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("<!doctype html>"));
}

/// The e-mail code sign-in through the forms in `b`, from `/login` with
/// this query; the answer to the code's post.
pub async fn mail_sign_in(
    app: &App,
    b: &reqwest::Client,
    query: &str,
    to: &str,
) -> reqwest::Response {
    let origin = app.url("").trim_end_matches('/').to_string();
    let r = b
        .get(app.url(&format!("/login{query}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    let csrf = input(&html, "csrf").unwrap();
    // The page's hidden fields travel with its forms, as in a browser.
    let lang = input(&html, "lang").unwrap();
    let seen = app.mails_to(to);
    let html = b
        .post(app.url("/login/code"))
        .header("origin", &origin)
        .form(&[
            ("csrf", csrf.as_str()),
            ("lang", lang.as_str()),
            ("email", to),
        ])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let login = input(&html, "login").unwrap_or_else(|| panic!("the code form: {html}"));
    let code = code_in(&app.mail_after(to, seen).await);
    // A return target in the post's URL or body is never read.
    b.post(app.url("/login/verify?return_to=https://evil.example/"))
        .header("origin", &origin)
        .form(&[
            ("csrf", csrf.as_str()),
            ("lang", lang.as_str()),
            ("login", login.as_str()),
            ("code", code.as_str()),
            ("return_to", "https://evil.example/"),
        ])
        .send()
        .await
        .unwrap()
}

async fn return_to_is_kept_server_side_and_only_for_allowed_origins(db: &TestDb) {
    let app = start(db, |c| {
        c.server.frontend_url = Some("http://front.example".parse().unwrap());
    })
    .await;
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    for given in [
        (
            "http://front.example/after?x=1",
            "http://front.example/after?x=1",
        ),
        ("/account?lang=de", "/account?lang=de"),
        ("https://evil.example/", "/account"),
        ("//evil.example/x", "/account"),
        ("/\\evil.example", "/account"),
        ("javascript:alert(1)", "/account"),
        ("http://front.example.evil.example/", "/account"),
    ]
    .into_iter()
    .enumerate()
    {
        // One address per case: two codes per address per five minutes.
        let (i, (given, lands)) = (given.0, given.1);
        let to = format!("ret{i}@example.com");
        let b = browser();
        let r = mail_sign_in(&app, &b, &format!("?return_to={}", enc(given)), &to).await;
        assert_eq!(r.status(), 303, "{given}");
        assert_eq!(r.headers()["location"], lands, "{given}");
    }
    // Every kept target was spent by its sign-in (or never kept).
    assert_eq!(
        db.count("SELECT COUNT(*) FROM login_flows WHERE surface = 'pages'")
            .await,
        0
    );
    // Signed in already: /login goes straight on, to an allowed target only.
    let b = browser();
    mail_sign_in(&app, &b, "", "again@example.com").await;
    for (given, lands) in [
        ("/account?x=1", "/account?x=1"),
        ("https://evil.example/", "/account"),
    ] {
        let r = b
            .get(app.url(&format!("/login?return_to={}", enc(given))))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        assert_eq!(r.headers()["location"], lands);
    }
}

async fn a_provider_sign_in_through_the_pages(db: &TestDb) {
    let Some(node) = OidcPeer::node() else { return };
    let peer = OidcPeer::google(
        &node,
        serde_json::json!({"g-ann": {"email": "ann@gmail.example", "email_verified": true, "name": "Ann"}}),
    )
    .await;
    let issuer = peer.issuer.clone();
    let app = App::start(db, |c| {
        c.server.public_url = Some(PEER_PUBLIC_URL.parse().unwrap());
        c.providers.insert(
            "google".into(),
            authgate::config::ProviderConfig {
                client_id: PEER_CLIENT_ID.into(),
                client_secret: Some(PEER_CLIENT_SECRET.into()),
                issuer: Some(issuer.parse().unwrap()),
                ..Default::default()
            },
        );
    })
    .await;
    let b = browser();
    let html = b
        .get(app.url("/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains(
            "id=\"provider-google\" href=\"/login/provider/google?lang=en\">Continue with Google<"
        ),
        "{html}"
    );
    let r = b
        .get(app.url("/login/provider/google?lang=de"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let to = r.headers()["location"].to_str().unwrap().to_string();
    assert!(to.starts_with(&peer.issuer), "{to}");
    let flow_cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        flow_cookie.starts_with("authgate_flow=")
            && flow_cookie.contains("Path=/login/callback")
            && flow_cookie.contains("HttpOnly"),
        "{flow_cookie}"
    );
    let back = authorize_at_peer(&to, "g-ann").await;
    assert_eq!(back.path(), "/login/callback/google");
    let callback = app.url(&format!("{}?{}", back.path(), back.query().unwrap()));
    // The callback URL alone, in another browser (no flow cookie): refused.
    let r = browser().get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let page = r.text().await.unwrap();
    assert!(
        page.contains("<html lang=\"en\">") && page.contains("expired"),
        "{page}"
    );
    // That spent the flow: the right browser must start again.
    let r = b.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 400);

    let r = b
        .get(app.url("/login/provider/google"))
        .send()
        .await
        .unwrap();
    let back = authorize_at_peer(r.headers()["location"].to_str().unwrap(), "g-ann").await;
    let r = b
        .get(app.url(&format!("{}?{}", back.path(), back.query().unwrap())))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/account");
    let html = b
        .get(app.url("/account"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("id=\"account-email\">ann@gmail.example<"),
        "{html}"
    );

    // The provider's refusal: a page in the flow's language.
    let r = b
        .get(app.url("/login/provider/google?lang=nl"))
        .send()
        .await
        .unwrap();
    let to = reqwest::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let state = to
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let r = b
        .get(app.url(&format!(
            "/login/callback/google?error=access_denied&state={state}"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let page = r.text().await.unwrap();
    assert!(
        page.contains("<html lang=\"nl\">") && page.contains("aanbieder"),
        "{page}"
    );
    // A provider that is not configured: the not-found page.
    let r = b.get(app.url("/login/provider/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

/// A page's form posted from `b` (authgate's origin, the page's CSRF token).
async fn post_form(
    app: &App,
    b: &reqwest::Client,
    path: &str,
    csrf: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let mut form = vec![("csrf", csrf)];
    form.extend_from_slice(fields);
    b.post(app.url(path))
        .header("origin", app.url("").trim_end_matches('/'))
        .form(&form)
        .send()
        .await
        .unwrap()
}

async fn page(b: &reqwest::Client, url: String) -> String {
    b.get(url).send().await.unwrap().text().await.unwrap()
}

async fn the_account_page_edits_ends_sessions_gives_the_data_and_deletes(db: &TestDb) {
    let app = start(db, |_| {}).await;
    let (laptop, phone, tablet) = (browser(), browser(), browser());
    for b in [&laptop, &phone, &tablet] {
        let r = mail_sign_in(&app, b, "", "cleo@example.com").await;
        assert_eq!(r.status(), 303);
        // Two codes per address per five minutes: the clock moves on.
        app.clock.advance(301);
    }
    let html = page(&laptop, app.url("/account")).await;
    let csrf = input(&html, "csrf").unwrap();
    assert_eq!(html.matches("Sign out this device").count(), 2, "{html}");
    assert!(html.contains("id=\"sign-out-others\""));

    // Rename and choose a language.
    let r = post_form(
        &app,
        &laptop,
        "/account/profile",
        &csrf,
        &[("name", "  Cleo Example "), ("language", "nl")],
    )
    .await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/account?lang=nl&saved=1");
    let html = page(&laptop, app.url("/account?lang=nl&saved=1")).await;
    assert!(
        html.contains("<html lang=\"nl\">") && html.contains("Opgeslagen."),
        "{html}"
    );
    assert!(html.contains("value=\"Cleo Example\""), "{html}");
    assert!(html.contains("<option value=\"nl\" selected>"), "{html}");
    // The stored language is the page's from now on, without `lang`.
    assert!(
        page(&laptop, app.url("/account"))
            .await
            .contains("<html lang=\"nl\">")
    );
    let bad = "x".repeat(201);
    let r = post_form(
        &app,
        &laptop,
        "/account/profile",
        &csrf,
        &[("name", &bad), ("language", "en")],
    )
    .await;
    assert_eq!(r.status(), 400);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("id=\"name-error\"") && html.contains("aria-describedby=\"name-error\""),
        "{html}"
    );
    // Without the CSRF token: refused, nothing changed.
    let r = post_form(
        &app,
        &laptop,
        "/account/profile",
        "",
        &[("name", "Mallory"), ("language", "en")],
    )
    .await;
    assert_eq!(r.status(), 403);

    // Sign out the phone from the laptop: the phone is refused at once.
    let user = app
        .core
        .find_user(&authgate::core::UserKey::Email(
            authgate::core::Email::parse("cleo@example.com").unwrap(),
        ))
        .await
        .unwrap();
    assert_eq!(user.display_name.as_deref(), Some("Cleo Example"));
    let sessions = app.core.list_sessions(Some(user.id), 10).await.unwrap();
    assert_eq!(sessions.len(), 3);
    let html = page(&laptop, app.url("/account")).await;
    let ids: Vec<String> = html
        .split("name=\"session\" value=\"")
        .skip(1)
        .map(|r| r[..36].to_string())
        .collect();
    assert_eq!(ids.len(), 2);
    let phone_html = page(&phone, app.url("/account")).await;
    let phone_id = sessions
        .iter()
        .map(|s| s.id.to_string())
        .find(|id| !phone_html.contains(&format!("value=\"{id}\"")))
        .expect("the phone's own session has no sign-out button on the phone");
    let r = post_form(
        &app,
        &laptop,
        "/account/sessions/end",
        &csrf,
        &[("session", &phone_id)],
    )
    .await;
    assert_eq!(r.status(), 303);
    let r = phone.get(app.url("/account")).send().await.unwrap();
    assert_eq!(r.headers()["location"], "/login", "the phone is signed out");
    // Someone else's session (or any unknown id) is not found, and lives.
    let other = app
        .core
        .add_user(
            authgate::core::NewUser::parse("dan@example.com", None, None).unwrap(),
            &Default::default(),
        )
        .await
        .unwrap();
    let (_, dans) = app
        .core
        .sign_in(
            &other,
            "page",
            "fed",
            authgate::core::secret::TokenFormat::UrlSafe32,
            &Default::default(),
        )
        .await
        .unwrap();
    let r = post_form(
        &app,
        &laptop,
        "/account/sessions/end",
        &csrf,
        &[("session", &dans.id.to_string())],
    )
    .await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        app.core
            .list_sessions(Some(other.id), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    // Sign out all others: the tablet goes, the laptop stays.
    let r = post_form(&app, &laptop, "/account/sessions/end-others", &csrf, &[]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        tablet
            .get(app.url("/account"))
            .send()
            .await
            .unwrap()
            .headers()["location"],
        "/login"
    );
    assert_eq!(
        laptop
            .get(app.url("/account"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Download my data: everything, no token, no session id.
    let r = laptop.get(app.url("/account/data")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("attachment")
    );
    let text = r.text().await.unwrap();
    let data: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(data["user"]["email"], "cleo@example.com");
    assert_eq!(data["user"]["display_name"], "Cleo Example");
    assert_eq!(data["user"]["locale"], "nl");
    assert_eq!(data["sessions"].as_array().unwrap().len(), 1);
    assert!(data["sessions"][0].get("id").is_none());
    let kinds: Vec<&str> = data["audit_events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"user.updated") && kinds.contains(&"session.revoked_others"),
        "{kinds:?}"
    );
    let laptop_cookie = app.core.list_sessions(Some(user.id), 10).await.unwrap()[0]
        .id
        .to_string();
    assert!(!text.contains(&laptop_cookie), "no session id in the data");

    // Delete my account: the laptop signed in more than ten minutes ago
    // (`mfa.step_up_minutes`), so first a new sign-in; then a confirmation
    // page, then gone; audit kept.
    let r = laptop
        .get(app.url("/account/delete?lang=en"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers()["location"],
        "/login?reauth=1&step_up=1&return_to=%2Faccount%2Fdelete&lang=en"
    );
    let r = mail_sign_in(&app, &laptop, "?reauth=1&step_up=1", "cleo@example.com").await;
    assert_eq!(r.status(), 303);
    let html = page(&laptop, app.url("/account/delete?lang=en")).await;
    assert!(html.contains("Delete your account?"), "{html}");
    let csrf = input(&html, "csrf").unwrap();
    let r = post_form(&app, &laptop, "/account/delete", &csrf, &[("lang", "en")]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/login?lang=en");
    assert!(
        app.core
            .find_user(&authgate::core::UserKey::Id(user.id))
            .await
            .is_err()
    );
    assert_eq!(
        laptop
            .get(app.url("/account"))
            .send()
            .await
            .unwrap()
            .headers()["location"],
        "/login"
    );
    let kept = app.core.audit_events(Some(user.id), 100).await.unwrap();
    assert!(kept.iter().any(|e| e.kind == "user.deleted"), "{kept:?}");
}

/// authgate with Google (the real oidc-provider) and these accounts there,
/// on `PEER_PUBLIC_URL` (the callback the peer knows).
async fn with_google(db: &TestDb, accounts: serde_json::Value) -> Option<(OidcPeer, App)> {
    let node = OidcPeer::node()?;
    let peer = OidcPeer::google(&node, accounts).await;
    let issuer = peer.issuer.clone();
    let app = App::start(db, |c| {
        c.server.public_url = Some(PEER_PUBLIC_URL.parse().unwrap());
        c.providers.insert(
            "google".into(),
            authgate::config::ProviderConfig {
                client_id: PEER_CLIENT_ID.into(),
                client_secret: Some(PEER_CLIENT_SECRET.into()),
                issuer: Some(issuer.parse().unwrap()),
                ..Default::default()
            },
        );
    })
    .await;
    Some((peer, app))
}

/// Through Google from `start` (a page path that redirects to the
/// provider) as `account`: the answer of authgate's callback.
async fn via_google(
    app: &App,
    b: &reqwest::Client,
    start: &str,
    account: &str,
) -> reqwest::Response {
    let r = b.get(app.url(start)).send().await.unwrap();
    assert_eq!(r.status(), 302, "{start}");
    let back = authorize_at_peer(r.headers()["location"].to_str().unwrap(), account).await;
    b.get(app.url(&format!("{}?{}", back.path(), back.query().unwrap())))
        .send()
        .await
        .unwrap()
}

/// Sign-in methods on the account page: Cleo (e-mail code) connects her
/// Google account while signed in and can then sign in with it; an account
/// at Google already connected elsewhere is refused; removing works unless
/// it is the last way in.
async fn connecting_and_removing_sign_in_methods(db: &TestDb) {
    let Some((_peer, app)) = with_google(
        db,
        serde_json::json!({
            "g-cleo": {"email": "cleo.g@gmail.example", "email_verified": true, "name": "Cleo G"},
            "g-quiet": {"name": "Quiet"},
        }),
    )
    .await
    else {
        return;
    };
    // The pages' posts come from the public URL's origin here.
    let b = browser();
    let r = mail_sign_in(&app, &b, "", "cleo@example.com").await;
    assert_eq!(r.status(), 303);
    let html = page(&b, app.url("/account")).await;
    assert!(
        html.contains("id=\"method-email\">E-mail code to cleo@example.com<"),
        "{html}"
    );
    assert!(html.contains("id=\"connect-google\""), "{html}");
    // Connect Google: back on the account page, connected, no new session.
    let r = via_google(&app, &b, "/account/connect/google", "g-cleo").await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/account?connected=1");
    let html = page(&b, app.url("/account?connected=1")).await;
    assert!(html.contains("Connected."), "{html}");
    assert!(html.contains("id=\"method-google\""), "{html}");
    assert!(!html.contains("id=\"connect-google\""), "{html}");
    let cleo = app
        .core
        .find_user(&authgate::core::UserKey::Email(
            authgate::core::Email::parse("cleo@example.com").unwrap(),
        ))
        .await
        .unwrap();
    assert_eq!(
        app.core
            .list_sessions(Some(cleo.id), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    // Another browser signs in with that Google account: Cleo's account.
    let other = browser();
    let r = via_google(&app, &other, "/login/provider/google", "g-cleo").await;
    assert_eq!(r.headers()["location"], "/account");
    assert!(
        page(&other, app.url("/account"))
            .await
            .contains(">cleo@example.com<")
    );

    // Quiet signs up with Google only (no address): their one way in.
    let quiet = browser();
    let r = via_google(&app, &quiet, "/login/provider/google", "g-quiet").await;
    assert_eq!(r.headers()["location"], "/account");
    let html = page(&quiet, app.url("/account")).await;
    assert!(!html.contains("id=\"method-email\""), "{html}");
    // Connecting Cleo's Google account to Quiet's: refused, not moved.
    let r = via_google(&app, &quiet, "/account/connect/google", "g-cleo").await;
    assert_eq!(r.status(), 409);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("already connected to another account")
    );
    assert_eq!(app.core.user_identities(cleo.id).await.unwrap().len(), 1);
    // Removing Quiet's only method: refused.
    let csrf = input(&html, "csrf").unwrap();
    let quiet_id = input(&html, "identity").unwrap();
    let origin = PEER_PUBLIC_URL;
    let remove = |b: &reqwest::Client, csrf: String, id: String| {
        let b = b.clone();
        let url = app.url("/account/methods/remove");
        async move {
            b.post(url)
                .header("origin", origin)
                .form(&[("csrf", csrf), ("identity", id)])
                .send()
                .await
                .unwrap()
        }
    };
    let r = remove(&quiet, csrf.clone(), quiet_id.clone()).await;
    assert_eq!(r.status(), 409);
    assert!(r.text().await.unwrap().contains("last way to sign in"));
    // Cleo removes Google (her address remains a way in); Quiet cannot
    // remove Cleo's identity.
    let html = page(&b, app.url("/account")).await;
    let cleo_google = input(&html, "identity").unwrap();
    let r = remove(&quiet, csrf, cleo_google.clone()).await;
    assert_eq!(r.status(), 404);
    let r = remove(&b, input(&html, "csrf").unwrap(), cleo_google).await;
    assert_eq!(r.status(), 303);
    assert!(app.core.user_identities(cleo.id).await.unwrap().is_empty());
    let kinds: Vec<String> = app
        .core
        .audit_events(Some(cleo.id), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(
        kinds.iter().any(|k| k == "identity.linked")
            && kinds.iter().any(|k| k == "identity.removed"),
        "{kinds:?}"
    );
}

/// GitHub (its REST API faked from its documented answers): the button,
/// the authorize URL, the return with GitHub's code, signed up with the
/// verified primary address.
async fn a_github_sign_in_through_the_pages(db: &TestDb) {
    let api = wiremock::MockServer::start().await;
    crate::oauth::github_person(
        &api,
        4242,
        "octo",
        serde_json::json!([
            {"email": "octo@example.com", "primary": true, "verified": true, "visibility": null}
        ]),
    )
    .await;
    let app = App::start(db, |c| crate::oauth::with_github(c, &api)).await;
    let b = browser();
    let html = page(&b, app.url("/login?lang=es")).await;
    assert!(html.contains(">Continuar con GitHub<"), "{html}");
    let r = b
        .get(app.url("/login/provider/github?lang=es"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let to = reqwest::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    assert!(
        to.as_str()
            .starts_with(&format!("{}/login/oauth/authorize", api.uri())),
        "{to}"
    );
    let q = |k: &str| {
        to.query_pairs()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    assert_eq!(q("scope"), "read:user user:email");
    assert_eq!(
        q("redirect_uri"),
        format!("{PEER_PUBLIC_URL}/login/callback/github")
    );
    let r = b
        .get(app.url(&format!(
            "/login/callback/github?code=gh-code&state={}",
            q("state")
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/account");
    // The callback's URL holds GitHub's code: no Referer may carry it on.
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");
    let replayed = b
        .get(app.url(&format!(
            "/login/callback/github?code=gh-code&state={}",
            q("state")
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), 400, "the state is single use");
    assert_eq!(replayed.headers()["referrer-policy"], "no-referrer");
    assert!(replayed.text().await.unwrap().contains("id=\"problem\""));
    let html = page(&b, app.url("/account")).await;
    assert!(
        html.contains("id=\"account-email\">octo@example.com<"),
        "{html}"
    );
    assert!(html.contains("id=\"method-github\""), "{html}");
    // The stored language came from the flow (es): the page speaks it.
    assert!(html.contains("<html lang=\"es\">"), "{html}");
}

/// `pages.templates_dir`: a file there replaces the built-in template of
/// its name (the others stay); a broken one is a config error naming it.
async fn a_templates_folder_replaces_the_built_in_pages(db: &TestDb) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("login.html"),
        "{% extends \"base.html\" %}{% block content %}<h1 id=\"ours\">Welcome to {{ product }}</h1>\
         <form method=\"post\" action=\"/login/code\"><input type=\"hidden\" name=\"csrf\" value=\"{{ csrf }}\">\
         <label for=\"email\">{{ t.email_label }}</label><input id=\"email\" name=\"email\"></form>{% endblock %}",
    )
    .unwrap();
    let folder = dir.path().to_path_buf();
    let app = start(db, |c| {
        c.pages.templates_dir = Some(folder);
        c.pages.product_name = Some("Acme <Portal>".into());
        c.pages.stylesheet_url = Some("https://cdn.acme.example/brand/pages.css".into());
        c.pages.primary_color = "#7a1fa2".into();
    })
    .await;
    let b = browser();
    let r = b.get(app.url("/login")).send().await.unwrap();
    // The extra stylesheet's origin, and only it, is allowed for styles.
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("style-src 'self' https://cdn.acme.example;"),
        "{csp}"
    );
    let html = r.text().await.unwrap();
    // (minijinja escapes `/` in attributes as `&#x2f;`, which HTML decodes.)
    assert!(
        html.replace("&#x2f;", "/")
            .contains(r#"<link rel="stylesheet" href="https://cdn.acme.example/brand/pages.css">"#),
        "{html}"
    );
    let theme = page(&b, app.url("/assets/theme.css")).await;
    assert!(theme.contains("#7a1fa2"), "{theme}");
    assert!(
        html.contains("<h1 id=\"ours\">Welcome to Acme &lt;Portal&gt;</h1>"),
        "the operator's template, still escaped: {html}"
    );
    assert!(
        html.contains("<html lang=\"en\">"),
        "the built-in base stays: {html}"
    );
    assert_eq!(input(&html, "csrf").unwrap().len(), 43);
    // The other pages are still the built-in ones.
    let r = b
        .post(app.url("/login/code"))
        .header("origin", app.url("").trim_end_matches('/'))
        .form(&[("csrf", "wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("id=\"problem\""));

    std::fs::write(dir.path().join("code.html"), "{% block content %}").unwrap();
    let mut cfg = authgate::config::Config::default();
    cfg.pages.templates_dir = Some(dir.path().to_path_buf());
    let e = cfg.validate().unwrap_err().to_string();
    assert!(
        e.contains("pages.templates_dir") && e.contains("code.html"),
        "{e}"
    );
    cfg.pages.templates_dir = Some(dir.path().join("missing"));
    let e = cfg.validate().unwrap_err().to_string();
    assert!(
        e.contains("pages.templates_dir") && e.contains("is not a folder"),
        "{e}"
    );
}

/// A disabled account and too many code requests: each a page in the
/// person's language with a way back, never JSON.
async fn refusals_are_friendly_pages_in_the_persons_language(db: &TestDb) {
    let app = start(db, |c| {
        c.mail_login.per_address = vec![authgate::core::Limit {
            max: 1,
            window_secs: 300,
        }];
    })
    .await;
    let user = app
        .core
        .add_user(
            authgate::core::NewUser::parse("eve@example.com", None, None).unwrap(),
            &Default::default(),
        )
        .await
        .unwrap();
    app.core
        .set_user_disabled(
            &authgate::core::UserKey::Id(user.id),
            true,
            &Default::default(),
        )
        .await
        .unwrap();
    let b = browser();
    let r = mail_sign_in(&app, &b, "?lang=de", "eve@example.com").await;
    assert_eq!(r.status(), 403);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("Dieses Konto ist gesperrt") && html.contains("href=\"/login?lang=de\""),
        "{html}"
    );
    // The second code request to one address within the window: 429.
    let html = page(&b, app.url("/login?lang=es")).await;
    let csrf = input(&html, "csrf").unwrap();
    let r = b
        .post(app.url("/login/code"))
        .header("origin", app.url("").trim_end_matches('/'))
        .form(&[
            ("csrf", csrf.as_str()),
            ("lang", "es"),
            ("email", "eve@example.com"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    let html = r.text().await.unwrap();
    assert!(
        html.contains("Demasiados intentos") && html.contains("<html lang=\"es\">"),
        "{html}"
    );
}
