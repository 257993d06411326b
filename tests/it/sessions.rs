//! Session rules of the core, with a manual clock, on both databases.
use authgate::core::secret::TokenFormat;
use authgate::core::{ClientMeta, Error, NewUser, SessionPolicy, User, UserKey};

use crate::support::{TestDb, manual_clock, on_both_databases};

fn meta() -> ClientMeta {
    ClientMeta {
        ip: Some("203.0.113.9".into()),
        user_agent: Some("Firefox on a test".into()),
    }
}

async fn add(core: &authgate::core::Core, email: &str) -> User {
    core.add_user(
        NewUser::parse(email, Some("Pat"), Some("de")).unwrap(),
        &meta(),
    )
    .await
    .unwrap()
}

async fn sign_in_gives_a_fresh_unguessable_id_stored_only_as_a_hash(db: &TestDb) {
    let clock = manual_clock();
    let core = db.core(clock.clone());
    let u = add(&core, "pat@example.com").await;
    let (t1, s1) = core
        .sign_in(&u, "test", TokenFormat::UrlSafe32, &meta())
        .await
        .unwrap();
    let (t2, s2) = core
        .sign_in(&u, "test", TokenFormat::UrlSafe32, &meta())
        .await
        .unwrap();
    assert_ne!(t1, t2);
    assert_ne!(s1.id, s2.id);
    assert!(t1.len() >= 43, "at least 256 bits in base64url");
    let (t3, _) = core
        .sign_in(&u, "test", TokenFormat::Base64x16, &meta())
        .await
        .unwrap();
    assert_eq!(t3.len(), 24);

    for t in [&t1, &t2, &t3] {
        let check = core.check_session(t).await.unwrap().expect("live session");
        assert_eq!(check.user.id, u.id);
        assert_eq!(check.session.ip.as_deref(), Some("203.0.113.9"));
    }
    // The public id is not a credential.
    assert_eq!(core.check_session(&s1.id.to_string()).await.unwrap(), None);

    if let Some(path) = db.sqlite_path() {
        // Nothing on disk (main file or WAL) contains a bearer token.
        db.store.close().await;
        for suffix in ["", "-wal"] {
            let file = format!("{}{suffix}", path.display());
            if let Ok(bytes) = std::fs::read(&file) {
                for t in [&t1, &t2, &t3] {
                    assert!(
                        !bytes.windows(t.len()).any(|w| w == t.as_bytes()),
                        "token found in {file}"
                    );
                }
            }
        }
    }
}

async fn garbage_tokens_are_simply_not_sessions(db: &TestDb) {
    let core = db.core(manual_clock());
    for t in [
        "",
        "x",
        "not a token at all",
        &"A".repeat(10_000),
        "\u{0}\u{1}",
    ] {
        assert_eq!(core.check_session(t).await.unwrap(), None);
        assert!(!core.revoke_session_token(t, &meta()).await.unwrap());
    }
}

async fn idle_and_absolute_lifetimes_are_enforced(db: &TestDb) {
    let clock = manual_clock();
    let core = db.core(clock.clone());
    let p = SessionPolicy::default();
    let u = add(&core, "life@example.com").await;

    // Idle: activity keeps it alive; silence for idle_timeout ends it.
    let (t, _) = core
        .sign_in(&u, "test", TokenFormat::UrlSafe32, &meta())
        .await
        .unwrap();
    clock.advance(p.idle_timeout - 1);
    assert!(core.check_session(&t).await.unwrap().is_some());
    clock.advance(p.idle_timeout - 1);
    assert!(
        core.check_session(&t).await.unwrap().is_some(),
        "touched by the last check"
    );
    clock.advance(p.idle_timeout);
    assert_eq!(core.check_session(&t).await.unwrap(), None);
    assert!(core.list_sessions(Some(u.id), 10).await.unwrap().is_empty());

    // Absolute: even a busy session ends at absolute_timeout.
    let start = core.now();
    let (t, _) = core
        .sign_in(&u, "test", TokenFormat::UrlSafe32, &meta())
        .await
        .unwrap();
    while core.now() + p.idle_timeout / 2 < start + p.absolute_timeout {
        clock.advance(p.idle_timeout / 2);
        assert!(core.check_session(&t).await.unwrap().is_some());
    }
    clock.set(start + p.absolute_timeout);
    assert_eq!(core.check_session(&t).await.unwrap(), None);
}

async fn last_seen_is_written_at_most_once_per_touch_interval(db: &TestDb) {
    let clock = manual_clock();
    let core = db.core(clock.clone());
    let u = add(&core, "touch@example.com").await;
    let (t, s) = core
        .sign_in(&u, "test", TokenFormat::UrlSafe32, &meta())
        .await
        .unwrap();
    clock.advance(10);
    core.check_session(&t).await.unwrap().unwrap();
    let stored = core.list_sessions(Some(u.id), 1).await.unwrap().remove(0);
    assert_eq!(
        stored.last_seen_at, s.created_at,
        "no write within the interval"
    );
    clock.advance(SessionPolicy::default().touch_interval);
    core.check_session(&t).await.unwrap().unwrap();
    let stored = core.list_sessions(Some(u.id), 1).await.unwrap().remove(0);
    assert_eq!(stored.last_seen_at, core.now());
}

async fn revocation_one_by_one_and_all_of_a_user(db: &TestDb) {
    let core = db.core(manual_clock());
    let u = add(&core, "rev@example.com").await;
    let other = add(&core, "keep@example.com").await;
    let (a, _) = core
        .sign_in(&u, "test", TokenFormat::UrlSafe32, &meta())
        .await
        .unwrap();
    let (b, sb) = core
        .sign_in(&u, "test", TokenFormat::UrlSafe32, &meta())
        .await
        .unwrap();
    let (c, _) = core
        .sign_in(&u, "test", TokenFormat::UrlSafe32, &meta())
        .await
        .unwrap();
    let (keep, _) = core
        .sign_in(&other, "test", TokenFormat::UrlSafe32, &meta())
        .await
        .unwrap();

    assert!(core.revoke_session_token(&a, &meta()).await.unwrap());
    assert!(!core.revoke_session_token(&a, &meta()).await.unwrap());
    assert_eq!(core.check_session(&a).await.unwrap(), None);

    core.revoke_session(sb.id, &meta()).await.unwrap();
    assert!(matches!(
        core.revoke_session(sb.id, &meta()).await,
        Err(Error::NotFound)
    ));
    assert_eq!(core.check_session(&b).await.unwrap(), None);
    assert!(core.check_session(&c).await.unwrap().is_some());

    assert_eq!(core.revoke_user_sessions(u.id, &meta()).await.unwrap(), 1);
    assert_eq!(core.check_session(&c).await.unwrap(), None);
    assert!(core.check_session(&keep).await.unwrap().is_some());

    let kinds: Vec<String> = core
        .audit_events(Some(u.id), 20)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(kinds.contains(&"session.revoked".to_string()), "{kinds:?}");
    assert!(
        kinds.contains(&"session.revoked_all".to_string()),
        "{kinds:?}"
    );
}

async fn disabling_or_deleting_a_user_ends_their_sessions_at_once(db: &TestDb) {
    let core = db.core(manual_clock());
    let u = add(&core, "gone@example.com").await;
    let (t, _) = core
        .sign_in(&u, "test", TokenFormat::UrlSafe32, &meta())
        .await
        .unwrap();
    let key = UserKey::parse("GONE@example.com").unwrap();

    let disabled = core.set_user_disabled(&key, true, &meta()).await.unwrap();
    assert!(disabled.disabled);
    assert_eq!(core.check_session(&t).await.unwrap(), None);
    assert!(matches!(
        core.sign_in(&disabled, "test", TokenFormat::UrlSafe32, &meta())
            .await,
        Err(Error::Disabled)
    ));
    // Enabling does not bring old sessions back.
    let enabled = core.set_user_disabled(&key, false, &meta()).await.unwrap();
    assert_eq!(core.check_session(&t).await.unwrap(), None);

    let (t2, _) = core
        .sign_in(&enabled, "test", TokenFormat::UrlSafe32, &meta())
        .await
        .unwrap();
    assert!(core.check_session(&t2).await.unwrap().is_some());
    core.delete_user(&UserKey::Id(u.id), &meta()).await.unwrap();
    assert_eq!(core.check_session(&t2).await.unwrap(), None);
    assert!(matches!(core.find_user(&key).await, Err(Error::NotFound)));
    assert!(matches!(
        core.delete_user(&key, &meta()).await,
        Err(Error::NotFound)
    ));
}

async fn users_are_validated_and_unique(db: &TestDb) {
    let core = db.core(manual_clock());
    add(&core, "uniq@example.com").await;
    let again = core
        .add_user(
            NewUser::parse("UNIQ@example.com", None, None).unwrap(),
            &meta(),
        )
        .await;
    assert!(matches!(again, Err(Error::Conflict(_))), "{again:?}");
    for bad in [
        "",
        "no-at-sign",
        "a@b",
        "x@example.com\r\nBcc: y@example.com",
        "A <a@example.com>",
    ] {
        assert!(
            matches!(
                NewUser::parse(bad, None, None),
                Err(Error::Invalid { field: "email", .. })
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        NewUser::parse("ok@example.com", None, Some("klingon!")),
        Err(Error::Invalid {
            field: "locale",
            ..
        })
    ));
    assert_eq!(core.list_users(0, 10).await.unwrap().len(), 1);
}

on_both_databases!(
    sign_in_gives_a_fresh_unguessable_id_stored_only_as_a_hash,
    garbage_tokens_are_simply_not_sessions,
    idle_and_absolute_lifetimes_are_enforced,
    last_seen_is_written_at_most_once_per_touch_interval,
    revocation_one_by_one_and_all_of_a_user,
    disabling_or_deleting_a_user_ends_their_sessions_at_once,
    users_are_validated_and_unique,
);
