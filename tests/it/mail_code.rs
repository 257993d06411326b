//! The e-mail code surface (seed 003), on SQLite and PostgreSQL, with the
//! console transport; real SMTP (aiosmtpd) and real DNS (dnsmasq) below.
use std::time::Duration;

use authgate::core::secret::TokenFormat;
use authgate::core::{ClientMeta, NewUser, UserKey};
use serde_json::{Value, json};

use crate::support::{
    App, Dnsmasq, SilentListener, Smtpd, TcpRelay, TestDb, code_in, free_port, on_both_databases,
};

const SEND: &str = "/auth/send-mail-login-code-v2";
pub const SIGN_IN: &str = "/auth/sign-in-by-mail-code";
pub const TRADE: &str = "/auth/sign-in-by-mail-auth-token";

pub async fn request_code(app: &App, mail: &str) -> (String, String) {
    let seen = app.mails_to(mail);
    let (status, body) = app.post(SEND, json!({"mail": mail, "locale": "en"})).await;
    assert_eq!(status, 200, "{body}");
    let token = body["mailLoginToken"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 32);
    assert!(token.chars().all(|c| c.is_ascii_alphanumeric()));
    let code = code_in(&app.mail_after(mail, seen).await);
    (token, code)
}

async fn full_round_trip(db: &TestDb) {
    let app = App::start(db, |_| {}).await;
    let r = reqwest::Client::new()
        .post(app.url(SEND))
        .json(&json!({"mail": "round@example.com", "locale": "de"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let token = r.json::<Value>().await.unwrap()["mailLoginToken"]
        .as_str()
        .unwrap()
        .to_string();
    let mail = app.console_mail("round@example.com").await;
    assert!(
        mail.contains("Geben Sie diesen Code nicht an Dritte weiter."),
        "German mail: {mail}"
    );
    let code = code_in(&mail);
    assert_eq!(code.split(' ').count(), 3, "three words: {code}");

    let (status, body) = app
        .post(
            SIGN_IN,
            json!({"mailLoginToken": token, "receivedCode": "wrong words here"}),
        )
        .await;
    assert_eq!((status, body["error"].as_str()), (403, Some("wrong_code")));
    // Spaces, `*` and case do not matter.
    let sloppy = format!(" {}* ", code.to_uppercase().replace(' ', "  "));
    let (status, body) = app
        .post(
            SIGN_IN,
            json!({"mailLoginToken": token, "receivedCode": sloppy}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let auth = body["mailAuthToken"].as_str().unwrap().to_string();
    assert_eq!(auth.len(), 32);
    // The login is used up.
    let (status, _) = app
        .post(
            SIGN_IN,
            json!({"mailLoginToken": token, "receivedCode": code}),
        )
        .await;
    assert_eq!(status, 410);

    // Trade the proof for a session (sign-up), once.
    let (status, body) = app.post(TRADE, json!({"mailAuthToken": auth})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["signup"], true);
    assert_eq!(body["mail"], "round@example.com");
    let session = body["sessionId"].as_str().unwrap();
    let check = app
        .core
        .check_session(session)
        .await
        .unwrap()
        .expect("live session");
    assert_eq!(check.user.locale.unwrap().as_str(), "de");
    let (status, _) = app.post(TRADE, json!({"mailAuthToken": auth})).await;
    assert_eq!(status, 401);

    // A second sign-in finds the same user.
    let (token, code) = request_code(&app, "ROUND@example.com").await;
    let (_, body) = app
        .post(
            SIGN_IN,
            json!({"mailLoginToken": token, "receivedCode": code}),
        )
        .await;
    let (status, body) = app
        .post(TRADE, json!({"mailAuthToken": body["mailAuthToken"]}))
        .await;
    assert_eq!((status, &body["signup"]), (200, &json!(false)));
    assert_eq!(body["userId"], check.user.id.to_string());
}

async fn checks_run_in_the_original_order(db: &TestDb) {
    let app = App::start(db, |c| {
        c.mail_login.allow_list = vec![
            "boss@corp.example".into(),
            "corp.example".into(),
            "denied.example".into(),
        ];
        c.mail_login.deny_list = vec!["denied.example".into()];
    })
    .await;
    // Not on the allow-list: 200, even with a bad device token.
    let (s, b) = app
        .post(
            SEND,
            json!({"mail": "x@elsewhere.example", "locale": "en", "deviceAuthToken": "bogus"}),
        )
        .await;
    assert_eq!((s, b), (200, json!({"mailAddressNotWhitelisted": true})));
    // Allowed but deny-listed: 200, before the device token is looked at.
    let (s, b) = app
        .post(
            SEND,
            json!({"mail": "x@denied.example", "locale": "en", "deviceAuthToken": "bogus"}),
        )
        .await;
    assert_eq!((s, b), (200, json!({"mailServerBlacklisted": true})));
    // Unknown device token: 401.
    let (s, _) = app
        .post(
            SEND,
            json!({"mail": "a@corp.example", "locale": "en", "deviceAuthToken": "bogus"}),
        )
        .await;
    assert_eq!(s, 401);
    assert_eq!(app.mails_to("a@corp.example"), 0);

    // A signed-in device: the mail names it.
    let user = app
        .core
        .add_user(
            NewUser::parse("boss@corp.example", None, None).unwrap(),
            &ClientMeta::default(),
        )
        .await
        .unwrap();
    let meta = ClientMeta {
        ip: None,
        user_agent: Some("Pixel 7 (TimeLimit)".into()),
    };
    let (device, _) = app
        .core
        .sign_in(&user, "test", "otp", TokenFormat::UrlSafe32, &meta)
        .await
        .unwrap();
    let (s, b) = app
        .post(
            SEND,
            json!({"mail": "boss@corp.example", "locale": "en", "deviceAuthToken": device}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(
        app.console_mail("boss@corp.example")
            .await
            .contains("Pixel 7 (TimeLimit)")
    );

    // Per address: 2 per 5 minutes; the third is 429 with Retry-After.
    let (s, _) = app
        .post(SEND, json!({"mail": "boss@corp.example", "locale": "en"}))
        .await;
    assert_eq!(s, 200);
    let r = reqwest::Client::new()
        .post(app.url(SEND))
        .json(&json!({"mail": "Boss@corp.example", "locale": "en"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let retry: i64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=300).contains(&retry), "{retry}");
    // The second accepted request's mail is delivered in the background:
    // wait for it, then there must be exactly two.
    app.mail_after("boss@corp.example", 1).await;
    assert_eq!(
        app.mails_to("boss@corp.example"),
        2,
        "no mail for the refused request"
    );
    // The window passes.
    app.clock.advance(301);
    let (s, _) = app
        .post(SEND, json!({"mail": "boss@corp.example", "locale": "en"}))
        .await;
    assert_eq!(s, 200);
}

async fn per_ip_and_global_limits(db: &TestDb) {
    let app = App::start(db, |c| {
        c.mail_login.per_ip = vec![authgate::core::Limit::new(3, 3600)];
        c.mail_login.global = vec![authgate::core::Limit::new(4, 60)];
    })
    .await;
    for i in 0..3 {
        assert_eq!(
            app.post(
                SEND,
                json!({"mail": format!("ip{i}@example.com"), "locale": "en"})
            )
            .await
            .0,
            200
        );
    }
    assert_eq!(
        app.post(SEND, json!({"mail": "ip3@example.com", "locale": "en"}))
            .await
            .0,
        429,
        "per IP"
    );
    let other = App::start(db, |c| {
        c.mail_login.per_ip = vec![authgate::core::Limit::new(1, 3600)];
        c.mail_login.global = vec![authgate::core::Limit::new(2, 60)]
    })
    .await;
    // The global counter is shared through the database: 4 hits so far.
    assert_eq!(
        other
            .post(SEND, json!({"mail": "g@example.com", "locale": "en"}))
            .await
            .0,
        429,
        "global"
    );
}

/// A code request from another client address (authgate trusts the
/// loopback proxy's `X-Forwarded-For` in these tests): status, Retry-After.
async fn send_from(app: &App, ip: &str, mail: &str) -> (u16, Option<i64>) {
    let r = reqwest::Client::new()
        .post(app.url(SEND))
        .header("x-forwarded-for", ip)
        .json(&json!({"mail": mail, "locale": "en"}))
        .send()
        .await
        .unwrap();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (r.status().as_u16(), retry)
}

/// The lock-out the attack found: one client's refused requests spent the
/// global window, so everyone else got 429. Now a refused request spends
/// nothing shared, and a request over the global limit is not counted in it.
async fn one_client_cannot_lock_everyone_out(db: &TestDb) {
    let app = App::start(db, |c| {
        c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        c.mail_login.per_ip = vec![authgate::core::Limit::new(2, 3600)];
        c.mail_login.global = vec![authgate::core::Limit::new(5, 60)];
    })
    .await;
    let mut refused = 0;
    for i in 0..60 {
        match send_from(&app, "198.51.100.1", &format!("flood{i}@example.com")).await {
            (200, _) => {}
            (429, Some(retry)) => {
                assert!(retry <= 3600);
                refused += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(refused, 58, "the flooding client got its own two");
    // Everyone else still gets in: three more fit the global five.
    for n in 2..5 {
        let (status, _) = send_from(
            &app,
            &format!("203.0.113.{n}"),
            &format!("u{n}@example.com"),
        )
        .await;
        assert_eq!(status, 200, "client {n}");
    }
    // The sixth in the minute is over the global limit, and so are the
    // next ones, but none of them moves the window's end.
    for n in 10..30 {
        let (status, retry) = send_from(
            &app,
            &format!("203.0.113.{n}"),
            &format!("v{n}@example.com"),
        )
        .await;
        assert_eq!(status, 429);
        assert!(retry.unwrap() <= 60, "{retry:?}");
    }
    app.clock.advance(61);
    assert_eq!(
        send_from(&app, "203.0.113.99", "later@example.com").await.0,
        200
    );
}

async fn attempts_are_counted_atomically(db: &TestDb) {
    let app = App::start(db, |_| {}).await;
    let (token, code) = request_code(&app, "tries@example.com").await;
    let wrong = |t: &str| json!({"mailLoginToken": t, "receivedCode": "not it"});
    assert_eq!(app.post(SIGN_IN, wrong(&token)).await.0, 403);
    assert_eq!(app.post(SIGN_IN, wrong(&token)).await.0, 403);
    assert_eq!(
        app.post(SIGN_IN, wrong(&token)).await.0,
        410,
        "the last wrong attempt"
    );
    assert_eq!(
        app.post(
            SIGN_IN,
            json!({"mailLoginToken": token, "receivedCode": code})
        )
        .await
        .0,
        410
    );

    // 50 concurrent wrong guesses: at most 3 are ever compared.
    app.clock.advance(301);
    let (token, code) = request_code(&app, "race@example.com").await;
    let before = count_wrong(&app).await;
    let client = reqwest::Client::new();
    let guesses: Vec<_> = (0..50)
        .map(|_| {
            let c = client.clone();
            let url = app.url(SIGN_IN);
            let body = wrong(&token);
            tokio::spawn(async move {
                c.post(url)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for g in guesses {
        statuses.push(g.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 403).count(),
        2,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 403 || *s == 410),
        "{statuses:?}"
    );
    assert_eq!(
        count_wrong(&app).await - before,
        3,
        "exactly three guesses evaluated"
    );
    assert_eq!(
        app.post(
            SIGN_IN,
            json!({"mailLoginToken": token, "receivedCode": code})
        )
        .await
        .0,
        410
    );
}

async fn count_wrong(app: &App) -> usize {
    app.core
        .audit_events(None, 1000)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.kind == "mail_code.wrong")
        .count()
}

async fn only_the_newest_code_is_valid_and_codes_expire(db: &TestDb) {
    let app = App::start(db, |_| {}).await;
    let (old_token, old_code) = request_code(&app, "newest@example.com").await;
    let (s, b) = app
        .post(SEND, json!({"mail": "newest@example.com", "locale": "en"}))
        .await;
    assert_eq!(s, 200);
    let new_token = b["mailLoginToken"].as_str().unwrap().to_string();
    assert_eq!(
        app.post(
            SIGN_IN,
            json!({"mailLoginToken": old_token, "receivedCode": old_code})
        )
        .await
        .0,
        410,
        "a new code ends the older login"
    );
    // Expiry: ten minutes by default.
    app.clock.advance(600);
    let new_code = code_in(&app.mail_after("newest@example.com", 1).await);
    assert_eq!(
        app.post(
            SIGN_IN,
            json!({"mailLoginToken": new_token, "receivedCode": new_code})
        )
        .await
        .0,
        410
    );
}

async fn bad_inputs_are_400_never_500(db: &TestDb) {
    let app = App::start(db, |_| {}).await;
    // Over the 64 KiB body limit, but small enough to sit in the socket
    // buffer whole: the server may answer 400 and close before reading it
    // all, and a larger body would then die as a broken pipe client-side.
    let big = "x".repeat(80 * 1024);
    let send_bodies: Vec<String> = vec![
        "{".into(),
        "not json".into(),
        "[]".into(),
        "null".into(),
        json!({}).to_string(),
        json!({"mail": "a@example.com"}).to_string(),
        json!({"mail": 5, "locale": "en"}).to_string(),
        json!({"mail": ["a@example.com"], "locale": "en"}).to_string(),
        json!({"mail": "a@example.com", "locale": "en", "extra": 1}).to_string(),
        json!({"mail": "", "locale": "en"}).to_string(),
        json!({"mail": "a@example.com", "locale": ""}).to_string(),
        json!({"mail": "a@example.com,b@example.com", "locale": "en"}).to_string(),
        json!({"mail": "a@example.com b@example.com", "locale": "en"}).to_string(),
        json!({"mail": "a@example.com\r\nBcc: victim@example.com", "locale": "en"}).to_string(),
        json!({"mail": "a@example.com\nSubject: x", "locale": "en"}).to_string(),
        json!({"mail": "Eve <a@example.com>", "locale": "en"}).to_string(),
        json!({"mail": "a@example.com", "locale": "en", "deviceAuthToken": 7}).to_string(),
        json!({"mail": big, "locale": "en"}).to_string(),
    ];
    let client = reqwest::Client::new();
    for body in &send_bodies {
        let r = client
            .post(app.url(SEND))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_eq!(
            status,
            400,
            "{} → {status} {text}",
            &body[..body.len().min(80)]
        );
        let err: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(err["error"], "invalid_request");
    }
    let sign_in_bodies = vec![
        json!({"mailLoginToken": "abc"}),
        json!({"mailLoginToken": "abc", "receivedCode": 123}),
        json!({"mailLoginToken": "abc", "receivedCode": ["a", "b"]}),
        json!({"mailLoginToken": null, "receivedCode": "x"}),
        json!({"mailLoginToken": "abc", "receivedCode": "x", "more": true}),
    ];
    for body in sign_in_bodies {
        let (status, _) = app.post(SIGN_IN, body.clone()).await;
        assert_eq!(status, 400, "{body}");
    }
    // Wrong content type.
    let r = client
        .post(app.url(SIGN_IN))
        .body("mailLoginToken=a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Well-formed but unknown: 410, also for absurd lengths.
    let (status, _) = app
        .post(
            SIGN_IN,
            json!({"mailLoginToken": "A".repeat(5000), "receivedCode": "x"}),
        )
        .await;
    assert_eq!(status, 410);
    // Nothing was queued or stored by any of it.
    assert_eq!(app.mails_to("a@example.com"), 0);
}

async fn mail_auth_token_verified_once_by_the_back_end(db: &TestDb) {
    let admin = "admin-token-0123456789-0123456789-abcdef";
    let app = App::start(db, |c| c.admin.token = Some(admin.into())).await;
    let (token, code) = request_code(&app, "Verify.Me@example.com").await;
    let (_, body) = app
        .post(
            SIGN_IN,
            json!({"mailLoginToken": token, "receivedCode": code}),
        )
        .await;
    let auth = body["mailAuthToken"].as_str().unwrap().to_string();
    let client = reqwest::Client::new();
    let verify = |bearer: Option<&str>| {
        let mut r = client
            .post(app.url("/admin/mail-auth-token/verify"))
            .json(&json!({"mailAuthToken": auth}));
        if let Some(b) = bearer {
            r = r.bearer_auth(b);
        }
        r.send()
    };
    assert_eq!(verify(None).await.unwrap().status(), 401);
    assert_eq!(verify(Some("wrong")).await.unwrap().status(), 401);
    let r = verify(Some(admin)).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"mail": "Verify.Me@example.com", "locale": "en"})
    );
    assert_eq!(
        verify(Some(admin)).await.unwrap().status(),
        410,
        "single use"
    );
}

async fn sign_up_policy_and_disabled_users(db: &TestDb) {
    let app = App::start(db, |c| c.mail_login.signup = false).await;
    let trade = |mail: &'static str| {
        let app = &app;
        async move {
            let (token, code) = request_code(app, mail).await;
            let (_, body) = app
                .post(
                    SIGN_IN,
                    json!({"mailLoginToken": token, "receivedCode": code}),
                )
                .await;
            app.post(TRADE, json!({"mailAuthToken": body["mailAuthToken"]}))
                .await
        }
    };
    let (status, _) = trade("stranger@example.com").await;
    assert_eq!(status, 403, "no sign-up");
    assert!(matches!(
        app.core
            .find_user(&UserKey::parse("stranger@example.com").unwrap())
            .await,
        Err(authgate::core::Error::NotFound)
    ));
    let meta = ClientMeta::default();
    app.core
        .add_user(
            NewUser::parse("known@example.com", None, None).unwrap(),
            &meta,
        )
        .await
        .unwrap();
    let (status, body) = trade("known@example.com").await;
    assert_eq!((status, &body["signup"]), (200, &json!(false)));
    app.core
        .set_user_disabled(&UserKey::parse("known@example.com").unwrap(), true, &meta)
        .await
        .unwrap();
    app.clock.advance(301);
    let (status, _) = trade("known@example.com").await;
    assert_eq!(status, 403, "disabled");
}

on_both_databases!(
    full_round_trip,
    checks_run_in_the_original_order,
    per_ip_and_global_limits,
    one_client_cannot_lock_everyone_out,
    attempts_are_counted_atomically,
    only_the_newest_code_is_valid_and_codes_expire,
    bad_inputs_are_400_never_500,
    mail_auth_token_verified_once_by_the_back_end,
    sign_up_policy_and_disabled_users,
    code_arrives_by_real_smtp,
    mail_survives_an_smtp_outage,
    a_hung_smtp_server_does_not_stop_delivery,
    a_slow_smtp_server_still_gets_the_mail,
    deny_list_matches_mx_hosts_from_real_dns,
    unreachable_dns_fails_closed,
    refused_requests_make_no_dns_queries,
);

// ------------------------------------------------------------ real SMTP

async fn code_arrives_by_real_smtp(db: &TestDb) {
    let Some(python) = Smtpd::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let smtpd = Smtpd::start(&python, port, dir.path()).await;
    let app = App::start(db, |c| {
        c.mail.transport = authgate::config::MailTransport::Smtp;
        c.mail.smtp_url = Some(format!("smtp://127.0.0.1:{port}").into());
        c.mail.from = "TimeLimit <noreply@timelimit.example>".into();
    })
    .await;
    let (s, b) = app
        .post(
            SEND,
            json!({"mail": "smtp-user@example.com", "locale": "en"}),
        )
        .await;
    assert_eq!(s, 200);
    let raw = Smtpd::wait_for_mail(
        &smtpd.maildir,
        "smtp-user@example.com",
        Duration::from_secs(10),
    )
    .await;
    assert!(
        raw.contains("From: TimeLimit <noreply@timelimit.example>"),
        "{raw}"
    );
    assert!(raw.contains("text/html"), "HTML alternative: {raw}");
    let code = code_in(&raw);
    let (s, body) = app
        .post(
            SIGN_IN,
            json!({"mailLoginToken": b["mailLoginToken"], "receivedCode": code}),
        )
        .await;
    assert_eq!(s, 200, "{body}");
}

async fn mail_survives_an_smtp_outage(db: &TestDb) {
    let Some(python) = Smtpd::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let app = App::start(db, |c| {
        c.mail.transport = authgate::config::MailTransport::Smtp;
        c.mail.smtp_url = Some(format!("smtp://127.0.0.1:{port}").into());
    })
    .await;
    // SMTP is down: the request is still answered at once.
    let started = std::time::Instant::now();
    let (s, b) = app
        .post(SEND, json!({"mail": "patient@example.com", "locale": "en"}))
        .await;
    assert_eq!(s, 200);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the answer does not wait on SMTP"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // SMTP comes back: the queued mail is delivered.
    let smtpd = Smtpd::start(&python, port, dir.path()).await;
    // The retry is due a second later (the test's clock only moves when told).
    app.clock.advance(1);
    let raw = Smtpd::wait_for_mail(
        &smtpd.maildir,
        "patient@example.com",
        Duration::from_secs(15),
    )
    .await;
    let (s, _) = app
        .post(
            SIGN_IN,
            json!({"mailLoginToken": b["mailLoginToken"], "receivedCode": code_in(&raw)}),
        )
        .await;
    assert_eq!(s, 200);
}

/// Wait (bounded) for a mail in a real mailbox while moving the test clock
/// a second at a time, so a retry scheduled by a failed attempt comes due
/// whenever that failure happened.
async fn mail_with_retries(app: &App, maildir: &std::path::Path, to: &str) -> String {
    let start = std::time::Instant::now();
    loop {
        if let Some(raw) = std::fs::read_dir(maildir.join("new"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .find(|raw| {
                raw.lines()
                    .any(|l| l.eq_ignore_ascii_case(&format!("To: {to}")))
            })
        {
            return raw;
        }
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "no mail to {to}: delivery is stuck"
        );
        app.clock.advance(1);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// An SMTP server that accepts the connection and never answers, then a
/// working one at the same address: the stuck conversation is cut off
/// (each step and the whole conversation are bounded), the mail's lease is
/// given back as a retry, and the next try delivers while the hung
/// connection is still open.
async fn a_hung_smtp_server_does_not_stop_delivery(db: &TestDb) {
    let Some(python) = Smtpd::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut hung = SilentListener::start(port).await;
    let app = App::start(db, |c| {
        c.mail.transport = authgate::config::MailTransport::Smtp;
        c.mail.smtp_url = Some(format!("smtp://127.0.0.1:{port}").into());
        c.mail.smtp_timeout_secs = 1;
    })
    .await;
    let (s, b) = app
        .post(SEND, json!({"mail": "hung@example.com", "locale": "en"}))
        .await;
    assert_eq!(s, 200, "{b}");
    hung.wait_for_a_connection().await;
    hung.close_listener_keep_connections().await;
    let smtpd = Smtpd::start(&python, port, dir.path()).await;
    let raw = mail_with_retries(&app, &smtpd.maildir, "hung@example.com").await;
    let (s, _) = app
        .post(
            SIGN_IN,
            json!({"mailLoginToken": b["mailLoginToken"], "receivedCode": code_in(&raw)}),
        )
        .await;
    assert_eq!(s, 200, "the delivered code signs in");
    let pending = db.count("SELECT COUNT(*) FROM mail_outbox").await;
    assert_eq!(pending, 0, "the delivered mail left the outbox");
    drop(hung);
}

/// A server that answers every step slowly, but each within the step bound,
/// is not cut off: the bound is per step, the whole conversation gets four.
async fn a_slow_smtp_server_still_gets_the_mail(db: &TestDb) {
    let Some(python) = Smtpd::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let smtp_port = free_port();
    let smtpd = Smtpd::start(&python, smtp_port, dir.path()).await;
    let relay = TcpRelay::start(
        free_port(),
        ([127, 0, 0, 1], smtp_port).into(),
        Duration::from_millis(250),
    )
    .await;
    let relay_port = relay.port;
    let app = App::start(db, |c| {
        c.mail.transport = authgate::config::MailTransport::Smtp;
        c.mail.smtp_url = Some(format!("smtp://127.0.0.1:{relay_port}").into());
        c.mail.smtp_timeout_secs = 2;
    })
    .await;
    let (s, _) = app
        .post(SEND, json!({"mail": "slow@example.com", "locale": "en"}))
        .await;
    assert_eq!(s, 200);
    let raw =
        Smtpd::wait_for_mail(&smtpd.maildir, "slow@example.com", Duration::from_secs(20)).await;
    // The test clock stands still, so a cut-off attempt would never be
    // retried: the mail came in the first conversation.
    assert!(!code_in(&raw).is_empty());
    relay.stop();
}

// ------------------------------------------------------------ real DNS

async fn deny_list_matches_mx_hosts_from_real_dns(db: &TestDb) {
    let Some(program) = Dnsmasq::program() else {
        return;
    };
    let dns = Dnsmasq::start(
        &program,
        &[
            ("good.test", "mx.goodmail.test"),
            ("bad.test", "mx1.badmail.test"),
        ],
    )
    .await;
    let app = App::start(db, |c| {
        c.mail_login.deny_list = vec!["badmail.test".into()];
        c.mail_login.dns_server = Some(dns.addr);
    })
    .await;
    let send = |mail: &str| app.post(SEND, json!({"mail": mail, "locale": "en"}));
    assert_eq!(
        send("a@bad.test").await,
        (200, json!({"mailServerBlacklisted": true})),
        "MX host denied"
    );
    assert_eq!(
        send("a@badmail.test").await,
        (200, json!({"mailServerBlacklisted": true})),
        "domain denied"
    );
    let (s, b) = send("a@good.test").await;
    assert_eq!(s, 200);
    assert!(b["mailLoginToken"].is_string(), "{b}");
    let (s, b) = send("a@no-mx.test").await;
    assert!(
        s == 200 && b["mailLoginToken"].is_string(),
        "NXDOMAIN: nothing to deny: {b}"
    );
    // dnsmasq refuses names outside .test: a DNS failure is never a pass.
    let (s, b) = send("a@outside.example").await;
    assert_eq!(s, 503, "{b}");
    assert!(b.get("mailLoginToken").is_none());
}

/// The DNS amplifier the attack found: requests refused by the client's
/// own limit made MX queries all the same. Now the limit comes first, and
/// answers are cached for their TTL.
async fn refused_requests_make_no_dns_queries(db: &TestDb) {
    let Some(program) = Dnsmasq::program() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("dnsmasq.log");
    let mx: Vec<(String, String)> = (0..40)
        .map(|i| (format!("d{i}.test"), format!("mx.d{i}.test")))
        .collect();
    let mx: Vec<(&str, &str)> = mx.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let dns = Dnsmasq::start_logging(&program, &mx, Some(&log)).await;
    let app = App::start(db, |c| {
        c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        c.mail_login.deny_list = vec!["badmail.test".into()];
        c.mail_login.dns_server = Some(dns.addr);
        c.mail_login.per_ip = vec![authgate::core::Limit::new(3, 3600)];
    })
    .await;
    let mx_queries = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("query[MX]"))
            .count()
    };
    let mut statuses = Vec::new();
    for i in 0..40 {
        statuses.push(
            send_from(&app, "198.51.100.7", &format!("a@d{i}.test"))
                .await
                .0,
        );
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 3);
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 37);
    // dnsmasq writes its log asynchronously: give it a moment.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(mx_queries(), 3, "one query per request let through");
    // The same domain again, from other clients: answered from the cache.
    for n in 1..6 {
        let (status, _) =
            send_from(&app, &format!("203.0.113.{n}"), &format!("b{n}@d0.test")).await;
        assert_eq!(status, 200);
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(mx_queries(), 3, "cached within the record's TTL");
}

async fn unreachable_dns_fails_closed(db: &TestDb) {
    let closed = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let app = App::start(db, |c| {
        c.mail_login.deny_list = vec!["badmail.test".into()];
        c.mail_login.dns_server = Some(closed);
        c.mail_login.dns_timeout_secs = 1;
    })
    .await;
    let (s, b) = app
        .post(SEND, json!({"mail": "a@bad.test", "locale": "en"}))
        .await;
    assert_eq!(s, 503, "{b}");
    assert_eq!(app.mails_to("a@bad.test"), 0);
}

// ------------------------------------------------------------ two instances

/// Two real `authgate serve` processes over one PostgreSQL: the per-address
/// limit and a login's attempt counter are shared, not per process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_attempts_hold_across_two_instances() {
    use crate::support::{Peer, authgate, create_pg_database, pg_base_url, wait_for_status};
    let Some(base) = pg_base_url() else { return };
    let (_, url, name) = create_pg_database(&base).await;
    let dir = tempfile::tempdir().unwrap();
    // Migrate once first, as a deploy would.
    let out = authgate(dir.path())
        .env("AUTHGATE_DATABASE__URL", &url)
        .arg("migrate")
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut instances = Vec::new();
    let mut bases = Vec::new();
    for _ in 0..2 {
        let port = free_port();
        let child = authgate(dir.path())
            .env("AUTHGATE_DATABASE__URL", &url)
            .env("AUTHGATE_SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .arg("serve")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        instances.push(Peer(child));
        let base = format!("http://127.0.0.1:{port}");
        wait_for_status(&format!("{base}/health/ready"), 200).await;
        bases.push(base);
    }
    let client = reqwest::Client::new();
    let post = |i: usize, path: &str, body: Value| {
        let req = client.post(format!("{}{path}", bases[i])).json(&body);
        async move {
            let r = req.send().await.unwrap();
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let send = json!({"mail": "shared@example.com", "locale": "en"});
    assert_eq!(post(0, SEND, send.clone()).await.0, 200);
    assert_eq!(post(1, SEND, send.clone()).await.0, 200);
    assert_eq!(
        post(0, SEND, send.clone()).await.0,
        429,
        "third request, whichever instance"
    );
    assert_eq!(post(1, SEND, send).await.0, 429);

    // The first login was replaced by the second; take a fresh one.
    let (s, b) = post(
        1,
        SEND,
        json!({"mail": "counter@example.com", "locale": "en"}),
    )
    .await;
    assert_eq!(s, 200);
    let wrong = json!({"mailLoginToken": b["mailLoginToken"], "receivedCode": "nope"});
    assert_eq!(post(0, SIGN_IN, wrong.clone()).await.0, 403);
    assert_eq!(post(1, SIGN_IN, wrong.clone()).await.0, 403);
    assert_eq!(
        post(0, SIGN_IN, wrong.clone()).await.0,
        410,
        "third attempt overall"
    );
    assert_eq!(post(1, SIGN_IN, wrong).await.0, 410);

    drop(instances);
    crate::support::drop_pg_database(&base, &name).await;
}
