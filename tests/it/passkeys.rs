//! Passkeys on both databases: in Chromium with its virtual authenticator
//! (the WebDriver WebAuthn extension: CTAP2, resident keys, user
//! verification) registering on the account page and signing in with no
//! address typed; a removed passkey and a never-registered authenticator
//! refused cleanly.

use crate::chromium::{
    Browser, add_authenticator_credential, add_virtual_authenticator, authenticator_credentials,
    click, remove_virtual_authenticator, text_of, type_into,
};
use crate::pages::{assert_accessible, screenshots, text_becomes};
use crate::support::{App, Smtpd, TestDb, code_in, free_port, on_both_databases};

on_both_databases!(
    in_chromium_a_passkey_is_added_used_and_removed,
    bad_passkey_answers_are_refused_clearly_and_make_no_session,
    a_passkey_is_the_second_step_of_an_e_mail_sign_in,
);

fn with_passkeys(c: &mut authgate::config::Config, public: &str) {
    c.server.public_url = Some(public.parse().unwrap());
    c.passkeys.enabled = true;
}

async fn sessions(db: &TestDb) -> i64 {
    db.count("SELECT COUNT(*) FROM sessions").await
}

/// Register a passkey on the account page, sign out, sign in with it
/// (no address typed), remove it; then it and a never-registered
/// authenticator are refused with a message and no session.
async fn in_chromium_a_passkey_is_added_used_and_removed(db: &TestDb) {
    let Some((driver, chromium)) = Browser::programs() else {
        return;
    };
    let Some(python) = Smtpd::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let smtpd = Smtpd::start(&python, port, dir.path()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    // WebAuthn needs a domain and a secure context: http://localhost is.
    let public = format!("http://localhost:{}", listener.local_addr().unwrap().port());
    let app = App::start_on(listener, db, |c| {
        with_passkeys(c, &public);
        c.mfa.required = authgate::core::MfaRequired::Optional;
        c.vault.keys = vec![authgate::core::Vault::new_key().unwrap().into()];
        c.mail.transport = authgate::config::MailTransport::Smtp;
        c.mail.smtp_url = Some(format!("smtp://127.0.0.1:{port}").into());
        c.mail_login.product_name = "Example".into();
    })
    .await;
    let url = |p: &str| format!("{public}{p}");
    let address = "keys@example.com";
    let browser = Browser::start_with(
        &driver,
        &chromium,
        true,
        &["--host-resolver-rules=MAP localhost 127.0.0.1"],
    )
    .await;
    let c = &browser.client;
    async {
        let laptop = add_virtual_authenticator(c).await;
        c.goto(&url("/login")).await.unwrap();
        text_becomes(c, "#passkey-sign-in", "Sign in with a passkey").await;
        screenshots(c, "login-passkey").await;
        assert_accessible(c, "sign-in with passkeys").await;
        type_into(c, "#email", address).await;
        click(c, "#send").await;
        text_becomes(c, "h1", "Check your mail").await;
        let raw = crate::mfa::next_mail(&smtpd.maildir, address).await;
        type_into(c, "#code", &code_in(&raw)).await;
        click(c, "#verify").await;
        text_becomes(c, "h1", "Your account").await;

        // Add one under a name: the authenticator now holds a resident
        // credential for this site, and the account lists it.
        type_into(c, "#passkey-name", "Work laptop").await;
        click(c, "#add-passkey").await;
        text_becomes(c, "#passkey-name-1", "Work laptop").await;
        let held = authenticator_credentials(c, &laptop).await;
        assert_eq!(held.len(), 1, "{held:?}");
        assert_eq!(held[0]["isResidentCredential"], true);
        assert_eq!(held[0]["rpId"], "localhost");
        assert_eq!(db.count("SELECT COUNT(*) FROM passkeys").await, 1);
        assert!(text_of(c, "#passkeys").await.contains("not yet"));
        c.execute(
            "document.getElementById('passkeys').previousElementSibling.previousElementSibling.scrollIntoView()",
            vec![],
        )
        .await
        .unwrap();
        screenshots(c, "account-passkeys").await;
        assert_accessible(c, "account with a passkey").await;
        click(c, "#sign-out").await;

        // Signed out, the sign-in page offers the passkey in the address
        // field's autofill (conditional mediation); the virtual
        // authenticator picks it at once, as a person would: signed in
        // with no address typed.
        text_becomes(c, "#account-email", address).await;
        let method: String = db
            .scalar("SELECT method FROM sessions ORDER BY created_at DESC, id DESC LIMIT 1")
            .await;
        assert_eq!(method, "hwk mfa", "a passkey is both factors");
        let used: Option<i64> = db.scalar("SELECT last_used_at FROM passkeys").await;
        assert!(used.is_some());
        assert!(!text_of(c, "#passkeys").await.contains("not yet"));

        // The button: with no authenticator the autofill waits; the
        // authenticator comes back (the same credential) and the button
        // asks for it.
        let held = authenticator_credentials(c, &laptop).await;
        remove_virtual_authenticator(c, &laptop).await;
        click(c, "#sign-out").await;
        text_becomes(c, "h1", "Sign in").await;
        let laptop = add_virtual_authenticator(c).await;
        add_authenticator_credential(c, &laptop, held[0].clone()).await;
        let before = sessions(db).await;
        click(c, "#passkey-sign-in").await;
        text_becomes(c, "#account-email", address).await;
        assert_eq!(sessions(db).await, before + 1);

        // With second factors on, an e-mail code then the passkey as the
        // second step ("Use your passkey": only this person's passkeys may
        // answer). The autofill waits again while no authenticator is there.
        let held = authenticator_credentials(c, &laptop).await;
        remove_virtual_authenticator(c, &laptop).await;
        click(c, "#sign-out").await;
        text_becomes(c, "h1", "Sign in").await;
        type_into(c, "#email", address).await;
        click(c, "#send").await;
        text_becomes(c, "h1", "Check your mail").await;
        let raw = crate::mfa::next_mail(&smtpd.maildir, address).await;
        type_into(c, "#code", &code_in(&raw)).await;
        click(c, "#verify").await;
        text_becomes(c, "#passkey-second-step", "Use your passkey").await;
        screenshots(c, "second-factor-passkey").await;
        assert_accessible(c, "the second step with a passkey").await;
        let laptop = add_virtual_authenticator(c).await;
        add_authenticator_credential(c, &laptop, held[0].clone()).await;
        click(c, "#passkey-second-step").await;
        text_becomes(c, "#account-email", address).await;
        let method: String = db
            .scalar("SELECT method FROM sessions ORDER BY created_at DESC, id DESC LIMIT 1")
            .await;
        assert_eq!(method, "otp hwk mfa");

        // Rename it (a plain form), then remove it.
        let rename = c.find(fantoccini::Locator::Css("#rename-1")).await.unwrap();
        rename.clear().await.unwrap();
        rename.send_keys("Old laptop").await.unwrap();
        click(c, "form.rename button").await;
        text_becomes(c, "#passkey-name-1", "Old laptop").await;
        click(c, "#remove-passkey-1").await;
        crate::chromium::gone(c, "#passkey-name-1").await;
        assert_eq!(db.count("SELECT COUNT(*) FROM passkeys").await, 0);
        click(c, "#sign-out").await;

        // The authenticator still holds the credential (the autofill
        // offers it at once); authgate refuses it, and the button's try.
        text_becomes(
            c,
            "#passkey-error",
            "That passkey could not be used here. Try again, or sign in another way.",
        )
        .await;
        click(c, "#passkey-sign-in").await;
        text_becomes(
            c,
            "#passkey-error",
            "That passkey could not be used here. Try again, or sign in another way.",
        )
        .await;
        assert!(c.current_url().await.unwrap().path().ends_with("/login"));
        assert_eq!(sessions(db).await, 0, "signed out, and no new session");

        // Another authenticator that was never registered, holding a
        // credential for this site made up for the victim's user id.
        remove_virtual_authenticator(c, &laptop).await;
        let other = add_virtual_authenticator(c).await;
        let user = app
            .core
            .find_user(&authgate::core::UserKey::parse(address).unwrap())
            .await
            .unwrap();
        add_authenticator_credential(c, &other, stranger_credential(user.id)).await;
        c.goto(&url("/login")).await.unwrap();
        text_becomes(c, "h1", "Sign in").await;
        click(c, "#passkey-sign-in").await;
        text_becomes(
            c,
            "#passkey-error",
            "That passkey could not be used here. Try again, or sign in another way.",
        )
        .await;
        assert_eq!(sessions(db).await, 0);
        let failed = app
            .core
            .audit_events(None, 200)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == "mfa.passkey_failed")
            .count();
        assert!(failed >= 3, "every refusal audited: {failed}");
    }
    .await;
    let _ = c.clone().close().await;
}

/// A resident credential for `localhost` that authgate never saw: a fresh
/// P-256 key, the given user handle.
fn stranger_credential(user: uuid::Uuid) -> serde_json::Value {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &rng,
    )
    .unwrap();
    serde_json::json!({
        "credentialId": b64(&ring::rand::generate::<[u8; 16]>(&rng).unwrap().expose()),
        "isResidentCredential": true,
        "rpId": "localhost",
        "privateKey": b64(pkcs8.as_ref()),
        "userHandle": b64(user.as_bytes()),
        "signCount": 0,
    })
}

/// A JSON post of the passkey script: from `origin`, with this browser's
/// CSRF token (or none).
async fn script_post(
    b: &reqwest::Client,
    app: &App,
    path: &str,
    origin: &str,
    csrf: Option<&str>,
    body: String,
) -> (u16, serde_json::Value) {
    let mut r = b
        .post(app.url(path))
        .header("origin", origin)
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = csrf {
        r = r.header("x-csrf-token", t);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// Over HTTP with a software authenticator: a registered passkey signs in;
/// malformed JSON, another origin or RP id in the answer, a tampered
/// signature, a replayed answer, an old counter and a missing CSRF token
/// are each a clear JSON refusal (never a 500) and make no session.
async fn bad_passkey_answers_are_refused_clearly_and_make_no_session(db: &TestDb) {
    use crate::soft_authenticator::SoftAuthenticator;
    use serde_json::json;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public = format!("http://localhost:{}", listener.local_addr().unwrap().port());
    let app = App::start_on(listener, db, |c| with_passkeys(c, &public)).await;
    let b = crate::pages::browser();
    let r = crate::pages::mail_sign_in(&app, &b, "", "soft@example.com").await;
    assert_eq!(r.status(), 303);
    let account = b
        .get(app.url("/account"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = crate::pages::input(&account, "csrf").unwrap();
    let csrf = Some(csrf.as_str());
    let mut key = SoftAuthenticator::new(&public, "localhost");

    // Register.
    let (status, start) = script_post(
        &b,
        &app,
        "/account/passkeys/options",
        &public,
        csrf,
        "{}".into(),
    )
    .await;
    assert_eq!(status, 200, "{start}");
    let pk = &start["options"]["publicKey"];
    assert_eq!(pk["rp"]["id"], "localhost");
    assert_eq!(pk["authenticatorSelection"]["residentKey"], "required");
    assert_eq!(pk["authenticatorSelection"]["userVerification"], "required");
    let answer = key.register(&start["options"]);
    let body = json!({ "ceremony": start["ceremony"], "name": "Soft key", "credential": answer });
    let (status, done) = script_post(
        &b,
        &app,
        "/account/passkeys/finish",
        &public,
        csrf,
        body.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{done}");
    // The same answer again: the ceremony is spent.
    let (status, again) = script_post(
        &b,
        &app,
        "/account/passkeys/finish",
        &public,
        csrf,
        body.to_string(),
    )
    .await;
    assert_eq!(
        (status, again["error"].as_str()),
        (401, Some("refused")),
        "{again}"
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM passkeys").await, 1);

    // Sign-ins, each in a fresh browser with its own CSRF cookie.
    let signed_out = || async {
        let b = crate::pages::browser();
        let login = b
            .get(app.url("/login"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let csrf = crate::pages::input(&login, "csrf").unwrap();
        (b, csrf)
    };
    let sessions_now = sessions(db).await;
    use crate::soft_authenticator::Lie;
    let cases = [
        (
            "another origin",
            Lie {
                origin: "https://evil.example".into(),
                ..key.honest()
            },
        ),
        (
            "another RP id",
            Lie {
                rp_id: "evil.example".into(),
                ..key.honest()
            },
        ),
        (
            "a tampered signature",
            Lie {
                bad_signature: true,
                ..key.honest()
            },
        ),
    ];
    for (what, lie) in &cases {
        let (b, csrf) = signed_out().await;
        let (status, start) = script_post(
            &b,
            &app,
            "/login/passkey/options",
            &public,
            Some(&csrf),
            "{}".into(),
        )
        .await;
        assert_eq!(status, 200, "{what}: {start}");
        let answer = key.assert(&start["options"], lie);
        let body = json!({ "ceremony": start["ceremony"], "credential": answer });
        let (status, refused) = script_post(
            &b,
            &app,
            "/login/passkey/finish",
            &public,
            Some(&csrf),
            body.to_string(),
        )
        .await;
        assert_eq!(
            (status, refused["error"].as_str()),
            (401, Some("refused")),
            "{what}: {refused}"
        );
        assert!(
            refused["message"]
                .as_str()
                .unwrap()
                .contains("could not be used"),
            "{what}"
        );
        assert_eq!(sessions(db).await, sessions_now, "{what}: no session");
    }
    // Malformed: not JSON; no credential; a credential of the wrong shape.
    let (b2, csrf2) = signed_out().await;
    for (what, body) in [
        ("not JSON", "{\"ceremony\": ".to_string()),
        ("no credential", json!({ "ceremony": "agp.x" }).to_string()),
        (
            "a wrong shape",
            json!({ "ceremony": "agp.x", "credential": { "id": 7 } }).to_string(),
        ),
    ] {
        let (status, refused) = script_post(
            &b2,
            &app,
            "/login/passkey/finish",
            &public,
            Some(&csrf2),
            body,
        )
        .await;
        assert_eq!(
            (status, refused["error"].as_str()),
            (400, Some("invalid")),
            "{what}: {refused}"
        );
    }
    // No CSRF token, or another origin: refused before anything else.
    let (status, refused) = script_post(
        &b2,
        &app,
        "/login/passkey/options",
        &public,
        None,
        "{}".into(),
    )
    .await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (403, Some("forbidden"))
    );
    let (status, _) = script_post(
        &b2,
        &app,
        "/login/passkey/options",
        "https://evil.example",
        Some(&csrf2),
        "{}".into(),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(sessions(db).await, sessions_now);

    // The truth signs in, once: the same answer again is a replay.
    let (b3, csrf3) = signed_out().await;
    let (_, start) = script_post(
        &b3,
        &app,
        "/login/passkey/options",
        &public,
        Some(&csrf3),
        "{}".into(),
    )
    .await;
    let answer = key.assert(&start["options"], &key.honest());
    let body = json!({ "ceremony": start["ceremony"], "credential": answer });
    let (status, done) = script_post(
        &b3,
        &app,
        "/login/passkey/finish",
        &public,
        Some(&csrf3),
        body.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["next"], "/account");
    assert_eq!(sessions(db).await, sessions_now + 1);
    let (status, replay) = script_post(
        &b3,
        &app,
        "/login/passkey/finish",
        &public,
        Some(&csrf3),
        body.to_string(),
    )
    .await;
    assert_eq!(
        (status, replay["error"].as_str()),
        (401, Some("refused")),
        "{replay}"
    );
    // The same answer to a new challenge: refused.
    let (_, start) = script_post(
        &b3,
        &app,
        "/login/passkey/options",
        &public,
        Some(&csrf3),
        "{}".into(),
    )
    .await;
    let body = json!({ "ceremony": start["ceremony"], "credential": answer });
    let (status, _) = script_post(
        &b3,
        &app,
        "/login/passkey/finish",
        &public,
        Some(&csrf3),
        body.to_string(),
    )
    .await;
    assert_eq!(status, 401);
    // A counter that went back (a cloned key): refused.
    let (_, start) = script_post(
        &b3,
        &app,
        "/login/passkey/options",
        &public,
        Some(&csrf3),
        "{}".into(),
    )
    .await;
    let old = crate::soft_authenticator::Lie {
        counter: Some(1),
        ..key.honest()
    };
    let body =
        json!({ "ceremony": start["ceremony"], "credential": key.assert(&start["options"], &old) });
    let (status, _) = script_post(
        &b3,
        &app,
        "/login/passkey/finish",
        &public,
        Some(&csrf3),
        body.to_string(),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(sessions(db).await, sessions_now + 1);
    let stored: i64 = db.scalar("SELECT sign_count FROM passkeys").await;
    assert_eq!(
        stored, 4,
        "the counter of the one use accepted (the fourth answer)"
    );
}

/// With second factors on, a person whose factor is a passkey signs in by
/// e-mail code and then shows the passkey (only their own may answer) on
/// the second step: refused when tampered (the step stays), then signed in
/// with `otp hwk mfa`.
async fn a_passkey_is_the_second_step_of_an_e_mail_sign_in(db: &TestDb) {
    use crate::soft_authenticator::{Lie, SoftAuthenticator};
    use serde_json::json;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public = format!("http://localhost:{}", listener.local_addr().unwrap().port());
    let app = App::start_on(listener, db, |c| {
        with_passkeys(c, &public);
        c.mfa.required = authgate::core::MfaRequired::Optional;
        c.vault.keys = vec![authgate::core::Vault::new_key().unwrap().into()];
    })
    .await;
    let to = "two.keys@example.com";
    let b = crate::pages::browser();
    let r = crate::pages::mail_sign_in(&app, &b, "", to).await;
    assert_eq!(
        r.headers()["location"],
        "/account",
        "no factor yet: signed in"
    );
    let account = b
        .get(app.url("/account"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = crate::pages::input(&account, "csrf").unwrap();
    let mut key = SoftAuthenticator::new(&public, "localhost");
    let (_, start) = script_post(
        &b,
        &app,
        "/account/passkeys/options",
        &public,
        Some(&csrf),
        "{}".into(),
    )
    .await;
    let body = json!({ "ceremony": start["ceremony"], "name": "Phone", "credential": key.register(&start["options"]) });
    let (status, _) = script_post(
        &b,
        &app,
        "/account/passkeys/finish",
        &public,
        Some(&csrf),
        body.to_string(),
    )
    .await;
    assert_eq!(status, 200);

    // Now a sign-in by e-mail code asks for the passkey.
    let b = crate::pages::browser();
    let r = crate::pages::mail_sign_in(&app, &b, "", to).await;
    assert_eq!(r.headers()["location"], "/login/second-factor");
    let page = b
        .get(app.url("/login/second-factor"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("id=\"passkey-second-step\""), "{page}");
    assert!(!page.contains("id=\"verify-totp\""), "no TOTP to ask for");
    // The script's CSRF token is on its element.
    let at = page.find("data-csrf=\"").unwrap() + 11;
    let csrf = page[at..at + page[at..].find('"').unwrap()].to_string();
    let before = sessions(db).await;
    let options = |b: &reqwest::Client| {
        let b = b.clone();
        let (app, public, csrf) = (&app, public.clone(), csrf.clone());
        async move {
            let (status, start) = script_post(
                &b,
                app,
                "/login/second-factor/passkey/options",
                &public,
                Some(&csrf),
                "{}".into(),
            )
            .await;
            assert_eq!(status, 200, "{start}");
            start
        }
    };
    let start = options(&b).await;
    let allowed = &start["options"]["publicKey"]["allowCredentials"];
    assert_eq!(
        allowed.as_array().unwrap().len(),
        1,
        "only this person's passkeys: {allowed}"
    );
    let tampered = Lie {
        bad_signature: true,
        ..key.honest()
    };
    let body = json!({ "ceremony": start["ceremony"], "credential": key.assert(&start["options"], &tampered) });
    let (status, refused) = script_post(
        &b,
        &app,
        "/login/second-factor/passkey/finish",
        &public,
        Some(&csrf),
        body.to_string(),
    )
    .await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (401, Some("refused")),
        "{refused}"
    );
    assert_eq!(sessions(db).await, before, "no session");
    // The step stays (a new pending sign-in): the true answer signs in.
    let start = options(&b).await;
    let body = json!({ "ceremony": start["ceremony"], "credential": key.assert(&start["options"], &key.honest()) });
    let (status, done) = script_post(
        &b,
        &app,
        "/login/second-factor/passkey/finish",
        &public,
        Some(&csrf),
        body.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["next"], "/account");
    assert_eq!(sessions(db).await, before + 1);
    let method: String = db
        .scalar("SELECT method FROM sessions ORDER BY created_at DESC, id DESC LIMIT 1")
        .await;
    assert_eq!(method, "otp hwk mfa");
    assert_eq!(
        b.get(app.url("/account")).send().await.unwrap().status(),
        200
    );
    // The pending sign-in is spent.
    let (status, _) = script_post(
        &b,
        &app,
        "/login/second-factor/passkey/options",
        &public,
        Some(&csrf),
        "{}".into(),
    )
    .await;
    assert_eq!(status, 410);
}
