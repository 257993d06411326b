//! Session rules of the core, with a manual clock, on both databases.
use authgate::core::secret::TokenFormat;
use authgate::core::{ClientMeta, Error, NewUser, SessionPolicy, User, UserKey};

use crate::support::{TestDb, manual_clock, on_both_databases, session_cache_on};

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
        .sign_in(&u, "test", "otp", TokenFormat::UrlSafe32, &meta())
        .await
        .unwrap();
    let (t2, s2) = core
        .sign_in(&u, "test", "otp", TokenFormat::UrlSafe32, &meta())
        .await
        .unwrap();
    assert_ne!(t1, t2);
    assert_ne!(s1.id, s2.id);
    assert!(t1.len() >= 43, "at least 256 bits in base64url");
    let (t3, _) = core
        .sign_in(&u, "test", "otp", TokenFormat::Base64x16, &meta())
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
        .sign_in(&u, "test", "otp", TokenFormat::UrlSafe32, &meta())
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
        .sign_in(&u, "test", "otp", TokenFormat::UrlSafe32, &meta())
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
        .sign_in(&u, "test", "otp", TokenFormat::UrlSafe32, &meta())
        .await
        .unwrap();
    clock.advance(10);
    core.check_session(&t).await.unwrap().unwrap();
    core.flush_touches().await.unwrap();
    let stored = core.list_sessions(Some(u.id), 1).await.unwrap().remove(0);
    assert_eq!(
        stored.last_seen_at, s.created_at,
        "no write within the interval"
    );
    clock.advance(SessionPolicy::default().touch_interval);
    core.check_session(&t).await.unwrap().unwrap();
    // Written by the background writer, without the request waiting on it.
    let start = std::time::Instant::now();
    while core.list_sessions(Some(u.id), 1).await.unwrap()[0].last_seen_at != core.now() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "the touch is never written"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // Many sessions due at once: one statement per 64, all written.
    let mut many = Vec::new();
    for _ in 0..70 {
        many.push(
            core.sign_in(&u, "test", "otp", TokenFormat::UrlSafe32, &meta())
                .await
                .unwrap()
                .0,
        );
    }
    clock.advance(SessionPolicy::default().touch_interval);
    for t in &many {
        core.check_session(t).await.unwrap().unwrap();
    }
    core.flush_touches().await.unwrap();
    let sessions = core.list_sessions(Some(u.id), 100).await.unwrap();
    assert_eq!(sessions.len(), 71);
    assert_eq!(
        sessions
            .iter()
            .filter(|s| s.last_seen_at == core.now())
            .count(),
        70,
        "every checked session touched; the first one not checked again"
    );
}

async fn revocation_one_by_one_and_all_of_a_user(db: &TestDb) {
    let core = db.core(manual_clock());
    let u = add(&core, "rev@example.com").await;
    let other = add(&core, "keep@example.com").await;
    let (a, _) = core
        .sign_in(&u, "test", "otp", TokenFormat::UrlSafe32, &meta())
        .await
        .unwrap();
    let (b, sb) = core
        .sign_in(&u, "test", "otp", TokenFormat::UrlSafe32, &meta())
        .await
        .unwrap();
    let (c, _) = core
        .sign_in(&u, "test", "otp", TokenFormat::UrlSafe32, &meta())
        .await
        .unwrap();
    let (keep, _) = core
        .sign_in(&other, "test", "otp", TokenFormat::UrlSafe32, &meta())
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
        .sign_in(&u, "test", "otp", TokenFormat::UrlSafe32, &meta())
        .await
        .unwrap();
    let key = UserKey::parse("GONE@example.com").unwrap();

    let disabled = core.set_user_disabled(&key, true, &meta()).await.unwrap();
    assert!(disabled.disabled);
    assert_eq!(core.check_session(&t).await.unwrap(), None);
    assert!(matches!(
        core.sign_in(&disabled, "test", "otp", TokenFormat::UrlSafe32, &meta())
            .await,
        Err(Error::Disabled)
    ));
    // Enabling does not bring old sessions back.
    let enabled = core.set_user_disabled(&key, false, &meta()).await.unwrap();
    assert_eq!(core.check_session(&t).await.unwrap(), None);

    let (t2, _) = core
        .sign_in(&enabled, "test", "otp", TokenFormat::UrlSafe32, &meta())
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
    the_session_cache_never_outlives_a_revocation_on_another_instance,
    without_the_cache_the_first_check_anywhere_after_a_revocation_is_refused,
    a_starting_instance_warms_its_cache_and_refreshes_entries_ahead_of_their_ttl,
);

/// Warm-up: a starting instance loads the sessions seen in the last hour
/// (live, of enabled users) with their identities in one go. Refresh-ahead:
/// an entry used past half its TTL is re-read in the background, so a change
/// made behind authgate's back (here: raw SQL) shows within the TTL, and a
/// session gone from the database is dropped, without a request waiting on
/// the database; the identities of their users are re-read with them.
async fn a_starting_instance_warms_its_cache_and_refreshes_entries_ahead_of_their_ttl(db: &TestDb) {
    let clock = manual_clock();
    let writer = db.core(clock.clone());
    let old_user = add(&writer, "old@example.com").await;
    let (old, _) = writer
        .sign_in(&old_user, "test", "otp", TokenFormat::UrlSafe32, &meta())
        .await
        .unwrap();
    clock.advance(2 * 3600);
    let active = add(&writer, "active@example.com").await;
    let off = add(&writer, "off@example.com").await;
    db.store
        .insert_identity(&authgate::core::Identity {
            id: uuid::Uuid::now_v7(),
            user_id: active.id,
            provider: "microsoft".into(),
            issuer: "tenant".into(),
            subject: "oid-active".into(),
            email: None,
            email_verified: false,
            created_at: writer.now(),
            last_used_at: writer.now(),
        })
        .await
        .unwrap();
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let (t, _) = writer
            .sign_in(&active, "test", "otp", TokenFormat::UrlSafe32, &meta())
            .await
            .unwrap();
        tokens.push(t);
    }
    let (off_token, _) = writer
        .sign_in(&off, "test", "otp", TokenFormat::UrlSafe32, &meta())
        .await
        .unwrap();
    db.exec(&format!(
        "UPDATE users SET disabled = TRUE WHERE id = '{}'",
        off.id
    ))
    .await;

    let second = authgate::store::connect(&db.url, &Default::default())
        .await
        .unwrap();
    let b = authgate::core::Core::new(second, clock.clone(), SessionPolicy::default());
    let _listener = session_cache_on(&b, db).await;
    assert_eq!(
        b.warm_session_cache().await.unwrap(),
        2,
        "the two active sessions; not the one idle for two hours, not the disabled user's"
    );
    // Served from memory now: removed behind authgate's back, still answered
    // (as any cache would, within its TTL) ...
    db.exec("UPDATE users SET display_name = 'Renamed' WHERE email_norm = 'active@example.com'")
        .await;
    db.exec(&format!(
        "DELETE FROM identities WHERE user_id = '{}'",
        active.id
    ))
    .await;
    db.exec(&format!(
        "DELETE FROM sessions WHERE token_hash = (SELECT token_hash FROM sessions WHERE user_id = '{}' ORDER BY id LIMIT 1)",
        active.id
    ))
    .await;
    let mut answers = Vec::new();
    for t in &tokens {
        let check = b.check_session(t).await.unwrap().expect("warmed");
        assert_eq!(check.user.display_name.as_deref(), Some("Pat"));
        answers.push(check.session.id);
    }
    let ids = b.user_identities(active.id).await.unwrap();
    assert_eq!(ids.len(), 1, "identities warmed too");
    assert_eq!(ids[0].subject, "oid-active");
    assert_eq!(b.check_session(&off_token).await.unwrap(), None);
    assert_eq!(
        b.check_session(&old).await.unwrap().map(|c| c.user.id),
        Some(old_user.id)
    );

    // ... until half the TTL has passed: the next use starts a re-read and is
    // still answered from memory; soon after, the change shows (before the
    // TTL is up: the clock stands still).
    clock.advance(SessionPolicy::default().cache_ttl / 2);
    for t in &tokens {
        assert!(b.check_session(t).await.unwrap().is_some());
    }
    let start = std::time::Instant::now();
    let (gone, kept) = loop {
        let answers: Vec<_> = check_all(&b, &tokens).await;
        if answers.iter().filter(|a| a.is_none()).count() == 1
            && answers
                .iter()
                .flatten()
                .all(|c| c.user.display_name.as_deref() == Some("Renamed"))
            // The user's identities are re-read with their sessions (still
            // fresh by the stopped clock: only the re-read shows the delete).
            && b.user_identities(active.id).await.unwrap().is_empty()
        {
            break (answers.iter().position(Option::is_none).unwrap(), answers);
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "refresh-ahead never happened: {answers:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert!(kept[1 - gone].is_some());
}

async fn check_all(
    core: &authgate::core::Core,
    tokens: &[String],
) -> Vec<Option<authgate::core::SessionCheck>> {
    let mut out = Vec::new();
    for t in tokens {
        out.push(core.check_session(t).await.unwrap());
    }
    out
}

/// Two instances (two cores, as two servers would be) on one database, each
/// caching session checks: a revocation or a disabled user on one is refused
/// by the other. PostgreSQL: pushed by LISTEN/NOTIFY; SQLite: the marker
/// file another process (here: the other core) replaced.
async fn the_session_cache_never_outlives_a_revocation_on_another_instance(db: &TestDb) {
    let clock = manual_clock();
    let policy = SessionPolicy::default();
    assert!(policy.cache_ttl > 0, "the cache is on by default");
    let second = authgate::store::connect(&db.url, &Default::default())
        .await
        .unwrap();
    let a = db.core(clock.clone());
    let b = authgate::core::Core::new(second, clock.clone(), policy);
    let mut listeners = Vec::new();
    for core in [&a, &b] {
        listeners.extend(session_cache_on(core, db).await);
    }
    let meta = ClientMeta::default();
    let user = a
        .add_user(
            NewUser::parse("cache@example.com", None, None).unwrap(),
            &meta,
        )
        .await
        .unwrap();
    let (t1, _) = a
        .sign_in(&user, "test", "otp", TokenFormat::UrlSafe32, &meta)
        .await
        .unwrap();
    let (t2, s2) = a
        .sign_in(&user, "test", "otp", TokenFormat::UrlSafe32, &meta)
        .await
        .unwrap();
    for t in [&t1, &t2] {
        // Twice: the second answer comes from B's cache.
        assert!(b.check_session(t).await.unwrap().is_some());
        assert!(b.check_session(t).await.unwrap().is_some());
    }
    // Changes made on A reach B: at once on SQLite (the marker is read on
    // every check); on PostgreSQL as soon as the notification is delivered.
    let refused_on_b = |token: String| {
        let b = b.clone();
        async move {
            let start = std::time::Instant::now();
            while b.check_session(&token).await.unwrap().is_some() {
                assert!(
                    start.elapsed() < std::time::Duration::from_secs(5),
                    "B still accepts a revoked session"
                );
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
    };
    assert!(a.revoke_session_token(&t1, &meta).await.unwrap());
    // On the revoking instance: the very next check.
    assert!(a.check_session(&t1).await.unwrap().is_none());
    if db.url.starts_with("sqlite") {
        // SQLite: the marker is read on every check, so B's very next
        // check is refused too (what the README promises, not a timing).
        assert!(
            b.check_session(&t1).await.unwrap().is_none(),
            "B's first check after the revocation"
        );
    }
    // PostgreSQL: as soon as B has the notification (the documented window).
    refused_on_b(t1.clone()).await;
    assert!(
        b.check_session(&t2).await.unwrap().is_some(),
        "the other session lives"
    );
    a.revoke_session(s2.id, &meta).await.unwrap();
    refused_on_b(t2.clone()).await;
    let (t3, _) = a
        .sign_in(&user, "test", "otp", TokenFormat::UrlSafe32, &meta)
        .await
        .unwrap();
    assert!(b.check_session(&t3).await.unwrap().is_some());
    a.set_user_disabled(&UserKey::parse("cache@example.com").unwrap(), true, &meta)
        .await
        .unwrap();
    refused_on_b(t3.clone()).await;
    for l in listeners {
        l.abort();
    }
}

/// `session.cache_ttl_secs = 0`, the README's way to close even the
/// notification's window: every check reads the database, so the other
/// instance's very first check after a revocation is refused.
async fn without_the_cache_the_first_check_anywhere_after_a_revocation_is_refused(db: &TestDb) {
    let clock = manual_clock();
    let policy = SessionPolicy {
        cache_ttl: 0,
        ..SessionPolicy::default()
    };
    let a = authgate::core::Core::new(db.store.clone(), clock.clone(), policy.clone());
    let second = authgate::store::connect(&db.url, &Default::default())
        .await
        .unwrap();
    let b = authgate::core::Core::new(second, clock.clone(), policy);
    let meta = ClientMeta::default();
    let user = add(&a, "nocache@example.com").await;
    for _ in 0..20 {
        let (t, _) = a
            .sign_in(&user, "test", "otp", TokenFormat::UrlSafe32, &meta)
            .await
            .unwrap();
        assert!(b.check_session(&t).await.unwrap().is_some());
        assert!(b.check_session(&t).await.unwrap().is_some());
        assert!(a.revoke_session_token(&t, &meta).await.unwrap());
        assert!(
            b.check_session(&t).await.unwrap().is_none(),
            "the first check on B after the revocation"
        );
    }
}
