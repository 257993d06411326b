//! TOTP second factors in the core, on both databases: enrolment, the ±1
//! step window, replays, wrong codes counted atomically with a back-off
//! lock, recovery codes. Codes are computed here by RFC 4226/6238 with
//! ring's HMAC-SHA1, not by the crate authgate uses.
use std::sync::Arc;

use authgate::core::{ClientMeta, Clock, Core, Error, ManualClock, NewUser, User, Vault};

use crate::support::{TestDb, on_both_databases};

on_both_databases!(
    a_rekeyed_vault_reseals_the_secrets,
    a_person_enrols_and_codes_are_taken_once_within_one_step,
    wrong_codes_lock_with_back_off_and_are_counted_atomically,
    recovery_codes_work_once_and_factors_can_be_removed,
);

/// The code of `secret` (base32) at time `t`.
pub fn code_at(secret: &str, t: i64) -> String {
    let key = totp_rs::Secret::try_from_base32(secret).unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &key);
    let mac = ring::hmac::sign(&key, &((t / 30) as u64).to_be_bytes());
    let mac = mac.as_ref();
    let off = (mac[19] & 0x0f) as usize;
    let bin = u32::from_be_bytes([mac[off] & 0x7f, mac[off + 1], mac[off + 2], mac[off + 3]]);
    format!("{:06}", bin % 1_000_000)
}

async fn setup(db: &TestDb) -> (Core, Arc<ManualClock>, User) {
    // The middle of a 30-second step, so ±1 step is unambiguous.
    let clock = Arc::new(ManualClock::new(1_800_000_015));
    let vault = Vault::from_base64(&[Vault::new_key().unwrap()]).unwrap();
    let core = Core::builder(db.store.clone(), clock.clone())
        .vault(Some(vault))
        .build();
    let user = core
        .add_user(
            NewUser::parse("tess@example.com", None, None).unwrap(),
            &ClientMeta::default(),
        )
        .await
        .unwrap();
    (core, clock, user)
}

async fn a_person_enrols_and_codes_are_taken_once_within_one_step(db: &TestDb) {
    let (core, clock, user) = setup(db).await;
    let meta = ClientMeta::default();
    let e = core.begin_totp(&user, "authgate", &meta).await.unwrap();
    assert_eq!(e.secret.len(), 32, "160 bits in base32");
    assert!(e.uri.starts_with("otpauth://totp/"), "{}", e.uri);
    assert!(e.uri.contains(&format!("secret={}", e.secret)) && e.uri.contains("issuer=authgate"));
    // Kept sealed: the stored bytes are not the secret.
    let stored: Vec<u8> = db.scalar("SELECT secret FROM totp_factors").await;
    assert!(!String::from_utf8_lossy(&stored).contains(&e.secret));
    assert!(!core.second_factors(user.id).await.unwrap().totp);
    // Not confirmed yet: no second factor to verify with.
    let now = clock.now();
    assert!(matches!(
        core.verify_totp(user.id, &code_at(&e.secret, now), &meta)
            .await,
        Err(Error::NotFound)
    ));
    assert!(matches!(
        core.confirm_totp(user.id, "000000", &meta).await,
        Err(Error::Unauthorized)
    ));
    let recovery = core
        .confirm_totp(user.id, &code_at(&e.secret, now), &meta)
        .await
        .unwrap();
    assert_eq!(recovery.len(), 10);
    let f = core.second_factors(user.id).await.unwrap();
    assert!(f.totp && !f.totp_pending && f.recovery_codes_left == 10);
    // A confirmed factor is not replaced by a new enrolment.
    assert!(matches!(
        core.begin_totp(&user, "authgate", &meta).await,
        Err(Error::Conflict(_))
    ));

    // The code just used, again: a replay, even in its own step.
    assert!(matches!(
        core.verify_totp(user.id, &code_at(&e.secret, now), &meta)
            .await,
        Err(Error::Unauthorized)
    ));
    // One step later: the previous step's code is spent; this one works.
    clock.advance(30);
    let now = clock.now();
    assert!(
        core.verify_totp(user.id, &code_at(&e.secret, now - 30), &meta)
            .await
            .is_err()
    );
    core.verify_totp(user.id, &code_at(&e.secret, now), &meta)
        .await
        .unwrap();
    // The next step's code is within the window (a clock a little ahead);
    // two steps ahead is not.
    assert!(
        core.verify_totp(user.id, &code_at(&e.secret, now + 60), &meta)
            .await
            .is_err()
    );
    core.verify_totp(user.id, &code_at(&e.secret, now + 30), &meta)
        .await
        .unwrap();
    // Malformed codes are wrong codes, never a panic.
    for bad in ["", "12345", "1234567", "abcdef", "１２３４５６"] {
        assert!(
            matches!(
                core.verify_totp(user.id, bad, &meta).await,
                Err(Error::Unauthorized)
            ),
            "{bad:?}"
        );
    }
    let events = core.audit_events(Some(user.id), 100).await.unwrap();
    for kind in [
        "mfa.totp_enrolment_started",
        "mfa.totp_enrolled",
        "mfa.totp_verified",
        "mfa.totp_failed",
    ] {
        assert!(events.iter().any(|a| a.kind == kind), "{kind} audited");
    }
    // No audit event holds a code or the secret.
    let all = format!("{events:?}");
    assert!(!all.contains(&e.secret));
}

async fn wrong_codes_lock_with_back_off_and_are_counted_atomically(db: &TestDb) {
    let (core, clock, user) = setup(db).await;
    let meta = ClientMeta::default();
    let e = core.begin_totp(&user, "authgate", &meta).await.unwrap();
    core.confirm_totp(user.id, &code_at(&e.secret, clock.now()), &meta)
        .await
        .unwrap();
    clock.advance(30);
    // Five wrong codes, then even the right one is not looked at.
    for _ in 0..5 {
        assert!(matches!(
            core.verify_totp(user.id, "111111", &meta).await,
            Err(Error::Unauthorized)
        ));
    }
    let right = code_at(&e.secret, clock.now());
    match core.verify_totp(user.id, &right, &meta).await {
        Err(Error::RateLimited { retry_after }) => {
            assert!((1..=30).contains(&retry_after), "{retry_after}")
        }
        other => panic!("locked expected: {other:?}"),
    }
    // The lock ends (a back-off, not a permanent lock): the right code works.
    clock.advance(31);
    let right = code_at(&e.secret, clock.now());
    core.verify_totp(user.id, &right, &meta).await.unwrap();
    // Two locks in a row: the second is twice as long.
    clock.advance(30);
    for _ in 0..5 {
        let _ = core.verify_totp(user.id, "222222", &meta).await;
    }
    clock.advance(31);
    for _ in 0..5 {
        let _ = core.verify_totp(user.id, "333333", &meta).await;
    }
    match core.verify_totp(user.id, "444444", &meta).await {
        Err(Error::RateLimited { retry_after }) => {
            assert!((31..=60).contains(&retry_after), "{retry_after}")
        }
        other => panic!("a longer lock expected: {other:?}"),
    }
    clock.advance(61);

    // 50 wrong guesses at once: no more than five are evaluated.
    let before = failures(&core, &user).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let core = core.clone();
        tasks.push(tokio::spawn(async move {
            core.verify_totp(
                user.id,
                &format!("{:06}", 500_000 + i),
                &ClientMeta::default(),
            )
            .await
        }));
    }
    let mut wrong = 0;
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            Err(Error::Unauthorized) => wrong += 1,
            Err(Error::RateLimited { .. }) => refused += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!((1..=5).contains(&wrong), "{wrong} guesses were evaluated");
    assert_eq!(wrong + refused, 50);
    assert_eq!(failures(&core, &user).await - before, wrong);
}

async fn failures(core: &Core, user: &User) -> usize {
    core.audit_events(Some(user.id), 1000)
        .await
        .unwrap()
        .iter()
        .filter(|a| a.kind == "mfa.totp_failed")
        .count()
}

async fn recovery_codes_work_once_and_factors_can_be_removed(db: &TestDb) {
    let (core, clock, user) = setup(db).await;
    let meta = ClientMeta::default();
    let e = core.begin_totp(&user, "authgate", &meta).await.unwrap();
    let codes = core
        .confirm_totp(user.id, &code_at(&e.secret, clock.now()), &meta)
        .await
        .unwrap();
    assert!(
        codes
            .iter()
            .all(|c| c.len() == 11 && c.as_bytes()[5] == b'-')
    );
    let mut unique = codes.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 10);
    // Stored hashed only.
    let stored: i64 = db.count("SELECT COUNT(*) FROM recovery_codes").await;
    assert_eq!(stored, 10);
    // Typed loosely, used once.
    let typed = codes[3].to_uppercase().replace('-', " ");
    core.use_recovery_code(user.id, &typed, &meta)
        .await
        .unwrap();
    assert!(matches!(
        core.use_recovery_code(user.id, &codes[3], &meta).await,
        Err(Error::Unauthorized)
    ));
    assert!(matches!(
        core.use_recovery_code(user.id, "nonsense", &meta).await,
        Err(Error::Unauthorized)
    ));
    assert_eq!(
        core.second_factors(user.id)
            .await
            .unwrap()
            .recovery_codes_left,
        9
    );
    // New codes end the old ones.
    let fresh = core
        .regenerate_recovery_codes(user.id, &meta)
        .await
        .unwrap();
    assert!(matches!(
        core.use_recovery_code(user.id, &codes[0], &meta).await,
        Err(Error::Unauthorized)
    ));
    core.use_recovery_code(user.id, &fresh[0], &meta)
        .await
        .unwrap();
    // Support sees and removes them with the CLI.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("authgate.toml"), "").unwrap();
    let cli = |args: &[&str]| {
        crate::support::run_ok(
            crate::support::authgate(dir.path())
                .env("AUTHGATE_DATABASE__URL", &db.url)
                .args(["user", "factors", "tess@example.com"])
                .args(args),
        )
    };
    let shown = cli(&["--json"]);
    let v: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(v["totp"], true, "{shown}");
    assert_eq!(v["recovery_codes_left"], 9);
    assert_eq!(v["required"], false);
    assert_eq!(v["passkeys"], serde_json::json!([]));
    // Support requires a second factor of this person, then lets the
    // policy decide again.
    assert!(cli(&["require"]).contains("must now use a second factor"));
    assert!(core.mfa_state(user.id).await.unwrap().required);
    assert!(cli(&[]).contains("required:            yes (by support)"));
    assert!(cli(&["default"]).contains("follows mfa.required again"));
    assert!(!core.mfa_state(user.id).await.unwrap().required);
    assert!(cli(&["remove"]).contains("removed the TOTP factor"));
    assert!(cli(&[]).contains("totp:                off"));
    assert!(
        core.audit_events(Some(user.id), 100)
            .await
            .unwrap()
            .iter()
            .any(|a| a.kind == "mfa.totp_removed")
    );
    // Removed: nothing left, and a new enrolment may start.
    assert!(!core.remove_totp(user.id, &meta).await.unwrap());
    let f = core.second_factors(user.id).await.unwrap();
    assert!(!f.totp && f.recovery_codes_left == 0);
    core.begin_totp(&user, "authgate", &meta).await.unwrap();
    // Without a vault there is no TOTP at all.
    let bare = Core::builder(db.store.clone(), clock.clone()).build();
    assert!(matches!(
        bare.begin_totp(&user, "authgate", &meta).await,
        Err(Error::Unavailable(_))
    ));
}

/// `vault rekey` re-seals TOTP secrets under the new key: after it, the old
/// key may go and codes still verify.
async fn a_rekeyed_vault_reseals_the_secrets(db: &TestDb) {
    let clock = Arc::new(ManualClock::new(1_800_000_015));
    let (old, new) = (Vault::new_key().unwrap(), Vault::new_key().unwrap());
    let core_with = |keys: &[&String]| {
        Core::builder(db.store.clone(), clock.clone())
            .vault(Some(Vault::from_base64(keys).unwrap()))
            .build()
    };
    let meta = ClientMeta::default();
    let first = core_with(&[&old]);
    let user = first
        .add_user(
            NewUser::parse("rex@example.com", None, None).unwrap(),
            &meta,
        )
        .await
        .unwrap();
    let e = first.begin_totp(&user, "authgate", &meta).await.unwrap();
    first
        .confirm_totp(user.id, &code_at(&e.secret, clock.now()), &meta)
        .await
        .unwrap();
    let report = core_with(&[&new, &old]).rekey_vault().await.unwrap();
    assert!(report.rekeyed >= 1, "{report:?}");
    let again = core_with(&[&new, &old]).rekey_vault().await.unwrap();
    assert_eq!(again.rekeyed, 0, "{again:?}");
    clock.advance(30);
    core_with(&[&new])
        .verify_totp(user.id, &code_at(&e.secret, clock.now()), &meta)
        .await
        .unwrap();
    // Under the old key alone it cannot be opened: a clear error, no panic.
    clock.advance(30);
    assert!(matches!(
        core_with(&[&old])
            .verify_totp(user.id, &code_at(&e.secret, clock.now()), &meta)
            .await,
        Err(Error::Internal(_))
    ));
}
