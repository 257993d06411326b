//! The second-factor gate on the pages, over HTTP and in Chromium, on both
//! databases: `mfa.required = "all"` lets no session exist before the
//! second factor (and sets one up first), an e-mail code then a TOTP code,
//! wrong and replayed codes refused, recovery codes once, step-up after
//! `mfa.step_up_minutes`, and the surfaces without a second step refusing
//! in their own format unless exempt. Codes are computed from the secret
//! the page shows, with ring's HMAC-SHA1 (`totp::code_at`).
use std::time::Duration;

use authgate::core::Clock;
use serde_json::json;

use crate::chromium::{Browser, click, text_of, type_into};
use crate::pages::{
    assert_accessible, browser, input, mail_sign_in, screenshots, start, text_becomes,
};
use crate::support::{App, Smtpd, TestDb, code_in, free_port, on_both_databases};
use crate::totp::code_at;

on_both_databases!(
    with_mfa_all_no_session_exists_before_the_second_factor,
    a_mail_code_then_a_totp_code_and_recovery_codes_once,
    sensitive_actions_need_a_recent_sign_in,
    in_chromium_a_person_sets_up_totp_and_signs_in_with_it,
    a_provider_sign_in_waits_for_the_second_factor,
);

fn with_mfa(c: &mut authgate::config::Config, required: authgate::core::MfaRequired) {
    c.mfa.required = required;
    c.vault.keys = vec![authgate::core::Vault::new_key().unwrap().into()];
}

fn origin(app: &App) -> String {
    app.url("").trim_end_matches('/').to_string()
}

/// The secret a set-up page shows, without its spaces.
fn secret_in(html: &str) -> String {
    let at = html
        .find("id=\"totp-secret\">")
        .expect("a secret on the page")
        + 17;
    let end = at + html[at..].find('<').unwrap();
    html[at..end].replace(' ', "")
}

/// The recovery codes a page shows.
fn codes_in(html: &str) -> Vec<String> {
    html.split("<li><code>")
        .skip(1)
        .map(|s| s[..s.find('<').unwrap()].to_string())
        .collect()
}

/// Post a page form from authgate's own origin with this browser's CSRF
/// token (read from `page`).
async fn post(
    app: &App,
    b: &reqwest::Client,
    path: &str,
    page: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let csrf = input(page, "csrf").expect("a CSRF token on the page");
    let mut form: Vec<(&str, &str)> = vec![("csrf", &csrf)];
    form.extend_from_slice(fields);
    b.post(app.url(path))
        .header("origin", origin(app))
        .form(&form)
        .send()
        .await
        .unwrap()
}

/// Answer the second step (`page`) with a proof (`totp`, `recovery`,
/// `enrol`) and its code.
async fn step(
    app: &App,
    b: &reqwest::Client,
    page: &str,
    proof: &str,
    code: &str,
) -> reqwest::Response {
    post(
        app,
        b,
        "/login/second-factor",
        page,
        &[("proof", proof), ("code", code)],
    )
    .await
}

async fn get(app: &App, b: &reqwest::Client, path: &str) -> (u16, String) {
    let r = b.get(app.url(path)).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The next mail to `to` (taken out of the mail directory, so the one
/// after it is next).
pub async fn next_mail(maildir: &std::path::Path, to: &str) -> String {
    let raw = Smtpd::wait_for_mail(maildir, to, Duration::from_secs(15)).await;
    for e in std::fs::read_dir(maildir.join("new")).unwrap().flatten() {
        if std::fs::read_to_string(e.path()).unwrap_or_default() == raw {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    raw
}

/// A code that is not the right one at `t` (nor in the steps beside it).
fn wrong_code(secret: &str, t: i64) -> String {
    let right: Vec<String> = [t - 30, t, t + 30]
        .iter()
        .map(|t| code_at(secret, *t))
        .collect();
    (0..)
        .map(|i| format!("{:06}", 123_456 + i))
        .find(|c| !right.contains(c))
        .unwrap()
}

async fn sessions(db: &TestDb) -> i64 {
    db.count("SELECT COUNT(*) FROM sessions").await
}

async fn with_mfa_all_no_session_exists_before_the_second_factor(db: &TestDb) {
    let app = start(db, |c| with_mfa(c, authgate::core::MfaRequired::All)).await;
    let b = browser();
    let r = mail_sign_in(&app, &b, "", "all@example.com").await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/login/second-factor");
    // The pending sign-in is in a cookie for the second step's path only,
    // never in the URL; no session exists yet.
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.starts_with("authgate_mfa=agm.")
            && cookie.contains("Path=/login/second-factor")
            && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    assert_eq!(sessions(db).await, 0);
    let (status, _) = get(&app, &b, "/account").await;
    assert_eq!(status, 303, "not signed in");
    // No factor yet: the second step sets one up (the same secret when the
    // page is shown again).
    let (status, page) = get(&app, &b, "/login/second-factor").await;
    assert_eq!(status, 200);
    // An in-page QR code: an SVG `data:` image (HTML-escaped in the page).
    let qr = page
        .split("id=\"totp-qr\" src=\"")
        .nth(1)
        .expect("a QR code");
    let qr = qr[..qr.find('"').unwrap()].replace("&#x2f;", "/");
    let svg = qr.strip_prefix("data:image/svg+xml;base64,").expect(&qr);
    let svg = String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, svg).unwrap(),
    )
    .unwrap();
    assert!(svg.contains("<svg") && svg.contains("<path"), "{svg}");
    let secret = secret_in(&page);
    assert_eq!(secret.len(), 32);
    let (_, again) = get(&app, &b, "/login/second-factor").await;
    assert_eq!(secret_in(&again), secret);
    // A wrong code: refused, the set-up shown again, still no session.
    let wrong = wrong_code(&secret, app.clock.now());
    let r = step(&app, &b, &page, "enrol", &wrong).await;
    assert_eq!(r.status(), 400);
    let refused = r.text().await.unwrap();
    assert!(refused.contains("That code is not right"), "{refused}");
    assert_eq!(secret_in(&refused), secret);
    assert_eq!(sessions(db).await, 0);
    // A verify proof where a set-up is due is refused too.
    let code = code_at(&secret, app.clock.now());
    let r = step(&app, &b, &page, "totp", &code).await;
    assert_eq!(r.status(), 400);
    assert_eq!(sessions(db).await, 0);
    // The right first code: the session, and ten recovery codes shown once.
    let r = step(&app, &b, &page, "enrol", &code).await;
    assert_eq!(r.status(), 200);
    let shown = r.text().await.unwrap();
    let codes = codes_in(&shown);
    assert_eq!(codes.len(), 10, "{shown}");
    assert!(
        shown
            .replace("&#x2f;", "/")
            .contains("id=\"continue\" href=\"/account\"")
    );
    assert_eq!(sessions(db).await, 1);
    let method: String = db.scalar("SELECT method FROM sessions").await;
    assert_eq!(method, "otp mfa");
    let (status, account) = get(&app, &b, "/account").await;
    assert_eq!(status, 200);
    assert!(account.contains("id=\"totp-state\"") && account.contains("Recovery codes left: 10"));
    // The pending sign-in was spent: the second step is gone.
    let (status, _) = get(&app, &b, "/login/second-factor").await;
    assert_eq!(status, 410);

    // A surface without a second step refuses in its own format; no session.
    let (token, mail_code) = crate::mail_code::request_code(&app, "all@example.com").await;
    let (status, body) = app
        .post(
            crate::mail_code::SIGN_IN,
            json!({"mailLoginToken": token, "receivedCode": mail_code}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app
        .post(
            crate::mail_code::TRADE,
            json!({"mailAuthToken": body["mailAuthToken"]}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.get("sessionId").is_none());
    assert_eq!(sessions(db).await, 1);
    let refused = app.core.audit_events(None, 50).await.unwrap();
    assert!(refused.iter().any(|e| {
        e.kind == "signin.refused"
            && e.detail
                .as_deref()
                .is_some_and(|d| d.contains("second_factor_required"))
    }));

    // Exempt by config, the same surface signs in on the first factor.
    let app = start(db, |c| {
        with_mfa(c, authgate::core::MfaRequired::All);
        c.mfa.exempt_surfaces = vec!["mail_code".into()];
    })
    .await;
    let (token, mail_code) = crate::mail_code::request_code(&app, "exempt@example.com").await;
    let (_, body) = app
        .post(
            crate::mail_code::SIGN_IN,
            json!({"mailLoginToken": token, "receivedCode": mail_code}),
        )
        .await;
    let (status, body) = app
        .post(
            crate::mail_code::TRADE,
            json!({"mailAuthToken": body["mailAuthToken"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["sessionId"].is_string());
}

/// Set up TOTP from the account page of a signed-in browser: the secret
/// and the recovery codes.
async fn set_up_totp(app: &App, b: &reqwest::Client) -> (String, Vec<String>) {
    let (status, account) = get(app, b, "/account").await;
    assert_eq!(status, 200);
    assert!(account.contains("id=\"set-up-totp\""), "{account}");
    let r = post(app, b, "/account/totp/begin", &account, &[]).await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    let secret = secret_in(&page);
    let code = code_at(&secret, app.clock.now());
    let r = post(app, b, "/account/totp/confirm", &page, &[("code", &code)]).await;
    assert_eq!(r.status(), 200);
    let codes = codes_in(&r.text().await.unwrap());
    assert_eq!(codes.len(), 10);
    (secret, codes)
}

/// A new browser signs in by e-mail code: the second step's page.
async fn first_step(app: &App, to: &str) -> (reqwest::Client, String) {
    // Two codes per address per five minutes: later sign-ins come later.
    app.clock.advance(301);
    let b = browser();
    let r = mail_sign_in(app, &b, "", to).await;
    assert_eq!(r.headers()["location"], "/login/second-factor");
    let (status, page) = get(app, &b, "/login/second-factor").await;
    assert_eq!(status, 200);
    assert!(page.contains("id=\"verify-totp\""), "{page}");
    (b, page)
}

async fn a_mail_code_then_a_totp_code_and_recovery_codes_once(db: &TestDb) {
    let app = start(db, |c| with_mfa(c, authgate::core::MfaRequired::Optional)).await;
    let to = "tess@example.com";
    // Optional, and no factor yet: the e-mail code alone signs in.
    let b = browser();
    let r = mail_sign_in(&app, &b, "", to).await;
    assert_eq!(r.headers()["location"], "/account");
    let (secret, codes) = set_up_totp(&app, &b).await;

    // Now a sign-in asks for the app's code.
    let before = sessions(db).await;
    let (b2, page) = first_step(&app, to).await;
    assert_eq!(
        sessions(db).await,
        before,
        "no session before the second factor"
    );
    let wrong = wrong_code(&secret, app.clock.now());
    let r = step(&app, &b2, &page, "totp", &wrong).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("That code is not right"));
    let now = app.clock.now();
    let code = code_at(&secret, now);
    let r = step(&app, &b2, &page, "totp", &code).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/account");
    assert_eq!(sessions(db).await, before + 1);
    assert_eq!(get(&app, &b2, "/account").await.0, 200);

    // The same code again, in the same step, in another browser: a replay.
    let (b3, page) = first_step(&app, to).await;
    app.clock.set(now);
    let r = step(&app, &b3, &page, "totp", &code).await;
    assert_eq!(r.status(), 400, "a replayed code");
    assert_eq!(get(&app, &b3, "/account").await.0, 303);
    // The next step's code works.
    app.clock.advance(30);
    let next = code_at(&secret, app.clock.now());
    let r = step(&app, &b3, &page, "totp", &next).await;
    assert_eq!(r.status(), 303);

    // A recovery code works once.
    let (b4, page) = first_step(&app, to).await;
    let r = step(&app, &b4, &page, "recovery", &codes[3].to_uppercase()).await;
    assert_eq!(r.status(), 303);
    let (b5, page) = first_step(&app, to).await;
    let r = step(&app, &b5, &page, "recovery", &codes[3]).await;
    assert_eq!(r.status(), 400);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("That recovery code is not right")
    );
    let (status, account) = get(&app, &b4, "/account").await;
    assert_eq!(status, 200);
    assert!(account.contains("Recovery codes left: 9"), "{account}");
    // Every success and failure is audited.
    let user = app
        .core
        .find_user(&authgate::core::UserKey::Email(
            authgate::core::Email::parse(to).unwrap(),
        ))
        .await
        .unwrap();
    let kinds: Vec<String> = app
        .core
        .audit_events(Some(user.id), 200)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    for k in [
        "mfa.totp_enrolment_started",
        "mfa.totp_enrolled",
        "mfa.recovery_codes_made",
        "signin.second_factor_asked",
        "mfa.totp_verified",
        "mfa.totp_failed",
        "mfa.recovery_used",
        "mfa.recovery_failed",
    ] {
        assert!(kinds.iter().any(|x| x == k), "{k} in {kinds:?}");
    }
}

async fn sensitive_actions_need_a_recent_sign_in(db: &TestDb) {
    let app = start(db, |c| {
        with_mfa(c, authgate::core::MfaRequired::Optional);
        c.mfa.step_up_minutes = 5;
    })
    .await;
    let b = browser();
    mail_sign_in(&app, &b, "", "steps@example.com").await;
    let (_secret, _) = set_up_totp(&app, &b).await;
    // Within five minutes of the sign-in, new recovery codes are made.
    let (_, account) = get(&app, &b, "/account").await;
    let r = post(&app, &b, "/account/recovery-codes", &account, &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(codes_in(&r.text().await.unwrap()).len(), 10);
    // Later, every sensitive action asks for a new sign-in first.
    app.clock.advance(5 * 60 + 1);
    let (_, account) = get(&app, &b, "/account").await;
    for path in [
        "/account/recovery-codes",
        "/account/totp/remove",
        "/account/delete",
    ] {
        let r = post(&app, &b, path, &account, &[]).await;
        assert_eq!(r.status(), 303, "{path}");
        let to = r.headers()["location"].to_str().unwrap().to_string();
        assert!(
            to.starts_with("/login?reauth=1&step_up=1&return_to=%2Faccount"),
            "{path}: {to}"
        );
    }
    let r = b.get(app.url("/account/delete")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let (status, login) = get(&app, &b, "/login?reauth=1&step_up=1&return_to=%2Faccount").await;
    assert_eq!(status, 200);
    assert!(
        login.contains("sign in again to make this change"),
        "{login}"
    );
    // Nothing changed: the factor is on, with its ten new codes.
    let (_, account) = get(&app, &b, "/account").await;
    assert!(account.contains("Recovery codes left: 10") && account.contains("id=\"remove-totp\""));
}

/// In Chromium, script off: set up TOTP on the account page (the QR code
/// and secret shown, the first code typed), recovery codes shown once;
/// sign out; sign in with the code mailed to the real SMTP server, then the
/// app's code. axe-core checks each new page (script on for it only).
async fn in_chromium_a_person_sets_up_totp_and_signs_in_with_it(db: &TestDb) {
    let Some((driver, chromium)) = Browser::programs() else {
        return;
    };
    let Some(python) = Smtpd::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let smtpd = Smtpd::start(&python, port, dir.path()).await;
    let app = start(db, |c| {
        with_mfa(c, authgate::core::MfaRequired::Optional);
        c.mail.transport = authgate::config::MailTransport::Smtp;
        c.mail.smtp_url = Some(format!("smtp://127.0.0.1:{port}").into());
        c.mail_login.product_name = "Example".into();
    })
    .await;
    let address = "totp@example.com".to_string();
    for javascript in [false, true] {
        let browser = Browser::start(&driver, &chromium, javascript).await;
        let c = &browser.client;
        let sign_in_by_mail = async |_n: usize| {
            c.goto(&app.url("/login")).await.unwrap();
            type_into(c, "#email", &address).await;
            click(c, "#send").await;
            text_becomes(c, "h1", "Check your mail").await;
            let raw = next_mail(&smtpd.maildir, &address).await;
            type_into(c, "#code", &code_in(&raw)).await;
            click(c, "#verify").await;
        };
        let mails = if javascript { 2 } else { 0 };
        if javascript {
            app.clock.advance(301);
        }
        async {
            sign_in_by_mail(mails + 1).await;
            if !javascript {
                text_becomes(c, "h1", "Your account").await;
                click(c, "#set-up-totp").await;
                text_becomes(c, "h1", "Set up an authenticator app").await;
                screenshots(c, "totp-setup").await;
                let secret = text_of(c, "#totp-secret").await.replace(' ', "");
                std::fs::write(dir.path().join("secret"), &secret).unwrap();
                type_into(c, "#code", &wrong_code(&secret, app.clock.now())).await;
                click(c, "#confirm-totp").await;
                text_becomes(c, "#code-error", "That code is not right or was already used. Wait for the next code and try again.").await;
                type_into(c, "#code", &code_at(&secret, app.clock.now())).await;
                click(c, "#confirm-totp").await;
                text_becomes(c, "h1", "Your recovery codes").await;
                assert_eq!(text_of(c, "#recovery-codes").await.lines().count(), 10);
                screenshots(c, "totp-recovery-codes").await;
                click(c, "#continue").await;
                text_becomes(c, "#codes-left", "Recovery codes left: 10").await;
                screenshots(c, "account-totp").await;
                click(c, "#sign-out").await;
                text_becomes(c, "h1", "Sign in").await;
                app.clock.advance(301);
                sign_in_by_mail(2).await;
            }
            let secret = std::fs::read_to_string(dir.path().join("secret")).unwrap();
            text_becomes(c, "h1", "Two-step sign-in").await;
            if javascript {
                assert_accessible(c, "second factor").await;
            } else {
                screenshots(c, "second-factor").await;
            }
            app.clock.advance(30);
            type_into(c, "#code", &code_at(&secret, app.clock.now())).await;
            click(c, "#verify-totp").await;
            text_becomes(c, "#totp-state", "On: you enter a code from your authenticator app after the first step.").await;
            if javascript {
                assert_accessible(c, "account with TOTP").await;
                click(c, "#remove-totp").await;
                text_becomes(c, "#totp-state", "Off: add a code from an authenticator app to every sign-in.").await;
                click(c, "#set-up-totp").await;
                text_becomes(c, "h1", "Set up an authenticator app").await;
                assert_accessible(c, "TOTP set-up").await;
                let secret = text_of(c, "#totp-secret").await.replace(' ', "");
                app.clock.advance(30);
                type_into(c, "#code", &code_at(&secret, app.clock.now())).await;
                click(c, "#confirm-totp").await;
                text_becomes(c, "h1", "Your recovery codes").await;
                assert_accessible(c, "recovery codes").await;
            }
        }
        .await;
        let _ = c.clone().close().await;
    }
}

/// A provider sign-in (the real oidc-provider as Google) with
/// `mfa.required = "all"`: the callback leads to the second step, not to
/// a session; the person sets up TOTP there and only then is signed in,
/// with `fed mfa` as the session's methods.
async fn a_provider_sign_in_waits_for_the_second_factor(db: &TestDb) {
    use crate::support::{
        OidcPeer, PEER_CLIENT_ID, PEER_CLIENT_SECRET, PEER_PUBLIC_URL, authorize_at_peer,
    };
    let Some(node) = OidcPeer::node() else { return };
    let peer = OidcPeer::google(
        &node,
        json!({"g-mo": {"email": "mo@gmail.example", "email_verified": true, "name": "Mo"}}),
    )
    .await;
    let issuer = peer.issuer.clone();
    let app = App::start(db, |c| {
        with_mfa(c, authgate::core::MfaRequired::All);
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
    let r = b
        .get(app.url("/login/provider/google"))
        .send()
        .await
        .unwrap();
    let back = authorize_at_peer(r.headers()["location"].to_str().unwrap(), "g-mo").await;
    let r = b
        .get(app.url(&format!("{}?{}", back.path(), back.query().unwrap())))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/login/second-factor");
    assert_eq!(sessions(db).await, 0);
    let (status, page) = get(&app, &b, "/login/second-factor").await;
    assert_eq!(status, 200);
    let code = code_at(&secret_in(&page), app.clock.now());
    let r = step(&app, &b, &page, "enrol", &code).await;
    assert_eq!(r.status(), 200);
    assert_eq!(codes_in(&r.text().await.unwrap()).len(), 10);
    let method: String = db.scalar("SELECT method FROM sessions").await;
    assert_eq!(method, "fed mfa");
    let (status, account) = get(&app, &b, "/account").await;
    assert_eq!(status, 200);
    assert!(account.contains("mo@gmail.example"));
}
