//! authgate's own pages over HTTP: `/` → `/login`, sign-in by e-mail code
//! through the forms (code read from the mail), `/account`, `/logout`; the
//! CSRF and origin checks; the headers every page carries; the languages.
//! (The real-browser run with JavaScript off is in `chromium`.)
use reqwest::redirect::Policy;

use crate::support::{App, TestDb, code_in, on_both_databases};

on_both_databases!(
    sign_in_by_mail_code_through_the_pages,
    forms_without_the_csrf_token_or_from_elsewhere_are_refused,
);

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

fn browser() -> reqwest::Client {
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
    assert_eq!(h["referrer-policy"], "no-referrer");
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
