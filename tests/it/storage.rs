//! The storage API: the same cases on SQLite and on PostgreSQL.
use std::sync::Arc;

use authgate::core::{
    AuditEvent, Email, Identity, LoginFlow, MailAuthToken, MailLogin, NewUser, OutboxMail,
    ProviderTokens, Session, User,
};
use authgate::store::{RateHit, Store, StoreError};
use uuid::Uuid;

use crate::support::{TestDb, on_both_databases};

const T: i64 = 1_800_000_000;

fn user(email: &str) -> User {
    User {
        id: Uuid::now_v7(),
        email: Some(Email::parse(email).unwrap()),
        display_name: Some("Test Person".into()),
        locale: None,
        disabled: false,
        created_at: T,
        updated_at: T,
    }
}

fn session(user_id: Uuid, created_at: i64) -> Session {
    Session {
        id: Uuid::now_v7(),
        user_id,
        created_at,
        last_seen_at: created_at,
        idle_timeout: 3600,
        expires_at: created_at + 86400,
        ip: Some("127.0.0.1".into()),
        user_agent: Some("test".into()),
        kind: "test".into(),
        method: "otp".into(),
    }
}

fn identity(user_id: Uuid, issuer: &str, subject: &str) -> Identity {
    Identity {
        id: Uuid::now_v7(),
        user_id,
        provider: "microsoft".into(),
        issuer: issuer.into(),
        subject: subject.into(),
        email: Some("x@example.com".into()),
        email_verified: false,
        created_at: T,
        last_used_at: T,
    }
}

async fn hit(s: &Arc<dyn Store>, key: &str, start: i64, end: i64) -> i64 {
    let counts = s
        .rate_limit_hits(&[RateHit {
            key: key.into(),
            window_start: start,
            expires_at: end,
        }])
        .await
        .unwrap();
    counts[0]
}

fn sent_event() -> AuditEvent {
    AuditEvent {
        at: T,
        kind: "mail_code.sent".into(),
        user_id: None,
        ip: None,
        user_agent: None,
        detail: None,
    }
}

fn outbox(to: &str) -> OutboxMail {
    OutboxMail {
        id: Uuid::now_v7(),
        to: to.into(),
        subject: "s".into(),
        text: "t".into(),
        html: None,
        attempts: 0,
        next_attempt_at: T,
        expires_at: T + 600,
        created_at: T,
    }
}

fn mail_login(token: &[u8], mail: &str) -> MailLogin {
    MailLogin {
        token_hash: token.to_vec(),
        mail: mail.into(),
        mail_norm: mail.to_lowercase(),
        locale: "en".into(),
        code_hash: vec![7; 32],
        attempts_left: 3,
        device_session_id: None,
        created_at: T,
        expires_at: T + 600,
    }
}

async fn users_are_unique_by_case_insensitive_email(db: &TestDb) {
    let s = &db.store;
    let a = user("Ann@Example.com");
    s.insert_user(&a).await.unwrap();
    assert_eq!(s.user_by_id(a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(
        s.user_by_email("ann@example.com").await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(s.user_by_email("bob@example.com").await.unwrap(), None);
    let err = s.insert_user(&user("ann@EXAMPLE.com")).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(w) if w.contains("e-mail")),
        "{err:?}"
    );

    let b = User {
        created_at: T + 1,
        ..user("bob@example.com")
    };
    let c = User {
        created_at: T + 2,
        ..user("cy@example.com")
    };
    s.insert_user(&c).await.unwrap();
    s.insert_user(&b).await.unwrap();
    let ids: Vec<Uuid> = s
        .list_users(0, 10)
        .await
        .unwrap()
        .iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(ids, vec![a.id, b.id, c.id]);
    let page: Vec<Uuid> = s
        .list_users(1, 1)
        .await
        .unwrap()
        .iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(page, vec![b.id]);
}

async fn deleting_a_user_removes_identities_sessions_and_tokens(db: &TestDb) {
    let s = &db.store;
    let u = user("del@example.com");
    s.insert_user(&u).await.unwrap();
    let i = identity(u.id, "https://login.example/tenant", "sub-1");
    s.insert_identity(&i).await.unwrap();
    s.put_provider_tokens(&ProviderTokens {
        identity_id: i.id,
        access_token: vec![1, 2, 3],
        refresh_token: None,
        expires_at: None,
        scope: None,
        updated_at: T,
    })
    .await
    .unwrap();
    s.insert_session(&session(u.id, T), &[9; 32], None)
        .await
        .unwrap();

    assert!(s.delete_user(u.id).await.unwrap());
    assert!(!s.delete_user(u.id).await.unwrap());
    assert_eq!(s.user_by_id(u.id).await.unwrap(), None);
    assert!(s.identities_of(u.id).await.unwrap().is_empty());
    assert_eq!(
        s.identity_with_user("microsoft", &i.issuer, "sub-1")
            .await
            .unwrap(),
        None
    );
    assert_eq!(s.session_by_token_hash(&[9; 32]).await.unwrap(), None);
    assert_eq!(s.provider_tokens(i.id).await.unwrap(), None);
}

async fn disabling_a_user_ends_their_sessions_in_the_same_step(db: &TestDb) {
    let s = &db.store;
    let u = user("dis@example.com");
    let other = user("other@example.com");
    s.insert_user(&u).await.unwrap();
    s.insert_user(&other).await.unwrap();
    s.insert_session(&session(u.id, T), &[1; 32], None)
        .await
        .unwrap();
    s.insert_session(&session(u.id, T), &[2; 32], None)
        .await
        .unwrap();
    s.insert_session(&session(other.id, T), &[3; 32], None)
        .await
        .unwrap();

    assert_eq!(
        s.set_user_disabled(u.id, true, T + 5).await.unwrap(),
        Some(2)
    );
    let stored = s.user_by_id(u.id).await.unwrap().unwrap();
    assert!(stored.disabled);
    assert_eq!(stored.updated_at, T + 5);
    assert_eq!(s.session_by_token_hash(&[1; 32]).await.unwrap(), None);
    assert!(s.session_by_token_hash(&[3; 32]).await.unwrap().is_some());
    assert_eq!(
        s.set_user_disabled(u.id, false, T + 6).await.unwrap(),
        Some(0)
    );
    assert!(!s.user_by_id(u.id).await.unwrap().unwrap().disabled);
    assert_eq!(
        s.set_user_disabled(Uuid::now_v7(), true, T).await.unwrap(),
        None
    );
}

async fn identities_are_keyed_by_provider_issuer_and_subject(db: &TestDb) {
    let s = &db.store;
    let u = user("id@example.com");
    let v = user("victim@example.com");
    s.insert_user(&u).await.unwrap();
    s.insert_user(&v).await.unwrap();
    let mine = identity(u.id, "https://login.example/tenant-a", "oid-1");
    s.insert_identity(&mine).await.unwrap();
    // The same subject under another issuer (tenant) is somebody else.
    let theirs = identity(v.id, "https://login.example/tenant-b", "oid-1");
    s.insert_identity(&theirs).await.unwrap();

    let (found, owner) = s
        .identity_with_user("microsoft", "https://login.example/tenant-a", "oid-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((found.id, owner.id), (mine.id, u.id));
    let (_, owner) = s
        .identity_with_user("microsoft", "https://login.example/tenant-b", "oid-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(owner.id, v.id);
    assert_eq!(
        s.identity_with_user("google", "https://login.example/tenant-a", "oid-1")
            .await
            .unwrap(),
        None
    );

    let dup = identity(v.id, "https://login.example/tenant-a", "oid-1");
    assert!(matches!(
        s.insert_identity(&dup).await,
        Err(StoreError::Conflict(_))
    ));

    s.touch_identity(mine.id, Some("new@example.com"), true, T + 9)
        .await
        .unwrap();
    let list = s.identities_of(u.id).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].email.as_deref(), Some("new@example.com"));
    assert!(list[0].email_verified);
    assert_eq!(list[0].last_used_at, T + 9);

    // A sign-up writes user and identity together or not at all: an identity
    // that already exists leaves no user behind.
    let newcomer = user("newcomer@example.com");
    let taken = identity(newcomer.id, "https://login.example/tenant-a", "oid-1");
    assert!(matches!(
        s.insert_user_with_identity(&newcomer, &taken).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.user_by_id(newcomer.id).await.unwrap(), None);
    let fresh = identity(newcomer.id, "https://login.example/tenant-a", "oid-2");
    s.insert_user_with_identity(&newcomer, &fresh)
        .await
        .unwrap();
    let (_, owner) = s
        .identity_with_user("microsoft", "https://login.example/tenant-a", "oid-2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(owner.id, newcomer.id);
}

async fn sessions_are_found_by_hash_listed_touched_and_deleted(db: &TestDb) {
    let s = &db.store;
    let u = user("sess@example.com");
    s.insert_user(&u).await.unwrap();
    let live = session(u.id, T);
    let old = Session {
        expires_at: T + 10,
        ..session(u.id, T - 100)
    };
    let idle = Session {
        idle_timeout: 50,
        ..session(u.id, T - 60)
    };
    s.insert_session(&live, &[1; 32], None).await.unwrap();
    s.insert_session(&old, &[2; 32], None).await.unwrap();
    s.insert_session(&idle, &[3; 32], None).await.unwrap();
    assert!(matches!(
        s.insert_session(&session(u.id, T), &[1; 32], None).await,
        Err(StoreError::Conflict(_))
    ));

    let (found, owner) = s.session_by_token_hash(&[1; 32]).await.unwrap().unwrap();
    assert_eq!(found, live);
    assert_eq!(owner, u);

    // At T+20: `old` passed its absolute end, `idle` its idle end.
    let listed: Vec<Uuid> = s
        .list_sessions(Some(u.id), T + 20, 10)
        .await
        .unwrap()
        .iter()
        .map(|x| x.id)
        .collect();
    assert_eq!(listed, vec![live.id]);
    assert_eq!(s.list_sessions(None, T + 20, 10).await.unwrap().len(), 1);
    assert!(
        s.list_sessions(Some(Uuid::now_v7()), T, 10)
            .await
            .unwrap()
            .is_empty()
    );

    s.touch_sessions(&[live.id], T + 30).await.unwrap();
    assert_eq!(
        s.session_by_token_hash(&[1; 32])
            .await
            .unwrap()
            .unwrap()
            .0
            .last_seen_at,
        T + 30
    );

    assert_eq!(
        s.delete_session_by_token_hash(&[1; 32])
            .await
            .unwrap()
            .map(|x| x.id),
        Some(live.id)
    );
    assert_eq!(
        s.delete_session_by_token_hash(&[1; 32]).await.unwrap(),
        None
    );
    assert!(s.delete_session(old.id).await.unwrap());
    assert!(!s.delete_session(old.id).await.unwrap());
    assert_eq!(s.delete_user_sessions(u.id).await.unwrap(), 1);
    assert_eq!(s.session_by_token_hash(&[3; 32]).await.unwrap(), None);
}

async fn login_flows_are_single_use_and_expire(db: &TestDb) {
    let s = &db.store;
    let flow = LoginFlow {
        state_hash: vec![4; 32],
        provider: "google".into(),
        surface: "test".into(),
        pkce_verifier: "verifier".into(),
        nonce: "nonce".into(),
        language: Some("fr".into()),
        redirect_to: Some("https://app.example/after".into()),
        redirect_uri: Some("https://auth.example/callback".into()),
        data: Some("{\"k\":1}".into()),
        created_at: T,
        expires_at: T + 600,
    };
    s.insert_login_flow(&flow).await.unwrap();
    assert_eq!(
        s.take_login_flow(&[4; 32], T + 1).await.unwrap(),
        Some(flow.clone())
    );
    assert_eq!(s.take_login_flow(&[4; 32], T + 1).await.unwrap(), None);

    let expired = LoginFlow {
        state_hash: vec![5; 32],
        ..flow
    };
    s.insert_login_flow(&expired).await.unwrap();
    assert_eq!(s.take_login_flow(&[5; 32], T + 600).await.unwrap(), None);
}

async fn mail_logins_keep_only_the_newest_and_count_attempts_atomically(db: &TestDb) {
    let s = Arc::clone(&db.store);
    s.insert_mail_login(
        &[],
        &|_| true,
        &mail_login(&[1; 32], "Code@Example.com"),
        &outbox("x@example.com"),
        &sent_event(),
    )
    .await
    .unwrap();
    s.insert_mail_login(
        &[],
        &|_| true,
        &mail_login(&[2; 32], "code@example.com"),
        &outbox("x@example.com"),
        &sent_event(),
    )
    .await
    .unwrap();
    // A new code for an address ends that address's older logins.
    assert_eq!(s.spend_mail_login_attempt(&[1; 32], T).await.unwrap(), None);

    let left: Vec<i64> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(
                s.spend_mail_login_attempt(&[2; 32], T)
                    .await
                    .unwrap()
                    .map(|m| m.attempts_left),
            );
        }
        v.into_iter().map(|x| x.unwrap_or(-1)).collect()
    };
    assert_eq!(left, vec![2, 1, 0, -1]);

    // 50 concurrent guesses on a fresh login: exactly 3 get an attempt.
    s.insert_mail_login(
        &[],
        &|_| true,
        &mail_login(&[3; 32], "race@example.com"),
        &outbox("x@example.com"),
        &sent_event(),
    )
    .await
    .unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let s = Arc::clone(&s);
            tokio::spawn(async move { s.spend_mail_login_attempt(&[3; 32], T).await.unwrap() })
        })
        .collect();
    let mut granted = Vec::new();
    for t in tasks {
        if let Some(m) = t.await.unwrap() {
            granted.push(m.attempts_left);
        }
    }
    granted.sort();
    assert_eq!(granted, vec![0, 1, 2]);

    // Expired logins grant nothing; deletion is reported.
    s.insert_mail_login(
        &[],
        &|_| true,
        &mail_login(&[4; 32], "late@example.com"),
        &outbox("x@example.com"),
        &sent_event(),
    )
    .await
    .unwrap();
    assert_eq!(
        s.spend_mail_login_attempt(&[4; 32], T + 600).await.unwrap(),
        None
    );
    assert!(s.delete_mail_login(&[4; 32]).await.unwrap());
    assert!(!s.delete_mail_login(&[4; 32]).await.unwrap());
}

async fn provider_tokens_are_replaced_per_identity(db: &TestDb) {
    let s = &db.store;
    let u = user("tok@example.com");
    s.insert_user(&u).await.unwrap();
    let i = identity(u.id, "iss", "sub");
    s.insert_identity(&i).await.unwrap();
    let first = ProviderTokens {
        identity_id: i.id,
        access_token: vec![1; 40],
        refresh_token: Some(vec![2; 40]),
        expires_at: Some(T + 3600),
        scope: Some("User.Read".into()),
        updated_at: T,
    };
    s.put_provider_tokens(&first).await.unwrap();
    assert_eq!(s.provider_tokens(i.id).await.unwrap(), Some(first.clone()));
    let second = ProviderTokens {
        access_token: vec![3; 40],
        refresh_token: None,
        updated_at: T + 1,
        ..first
    };
    s.put_provider_tokens(&second).await.unwrap();
    assert_eq!(s.provider_tokens(i.id).await.unwrap(), Some(second));
}

async fn rate_limit_counters_are_atomic(db: &TestDb) {
    let s = Arc::clone(&db.store);
    assert_eq!(hit(&s, "mail:a", T, T + 300).await, 1);
    assert_eq!(hit(&s, "mail:a", T, T + 300).await, 2);
    assert_eq!(hit(&s, "mail:a", T + 300, T + 600).await, 1);
    assert_eq!(hit(&s, "mail:b", T, T + 300).await, 1);

    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let s = Arc::clone(&s);
            tokio::spawn(async move { hit(&s, "global", T, T + 60).await })
        })
        .collect();
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap());
    }
    seen.sort();
    assert_eq!(seen, (1..=20).collect::<Vec<i64>>());

    // Several windows in one call: each counted, in order.
    let many = |k: &str| RateHit {
        key: k.into(),
        window_start: T,
        expires_at: T + 60,
    };
    let counts = s
        .rate_limit_hits(&[many("x"), many("global"), many("x")])
        .await
        .unwrap();
    assert_eq!(counts, vec![1, 21, 2]);
    // Distinct windows (one statement): each count back in its place.
    let later = RateHit {
        window_start: T + 60,
        expires_at: T + 120,
        ..many("x")
    };
    let counts = s
        .rate_limit_hits(&[many("global"), many("x"), later, many("y")])
        .await
        .unwrap();
    assert_eq!(counts, vec![22, 3, 1, 1]);
    assert!(s.rate_limit_hits(&[]).await.unwrap().is_empty());
}

async fn audit_events_are_listed_newest_first(db: &TestDb) {
    let s = &db.store;
    let u = Uuid::now_v7();
    for (i, kind) in ["a", "b", "c"].iter().enumerate() {
        s.insert_audit(&AuditEvent {
            at: T + i as i64,
            kind: kind.to_string(),
            user_id: (i != 1).then_some(u),
            ip: Some("::1".into()),
            user_agent: None,
            detail: Some("{}".into()),
        })
        .await
        .unwrap();
    }
    let all: Vec<String> = s
        .list_audit(None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(all, vec!["c", "b", "a"]);
    let mine: Vec<String> = s
        .list_audit(Some(u), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(mine, vec!["c", "a"]);
    assert_eq!(s.list_audit(None, 1).await.unwrap().len(), 1);
}

async fn purge_removes_only_what_expired(db: &TestDb) {
    let s = &db.store;
    let u = user("purge@example.com");
    s.insert_user(&u).await.unwrap();
    s.insert_session(&session(u.id, T), &[1; 32], None)
        .await
        .unwrap();
    s.insert_session(
        &Session {
            expires_at: T + 5,
            ..session(u.id, T)
        },
        &[2; 32],
        None,
    )
    .await
    .unwrap();
    s.insert_mail_login(
        &[],
        &|_| true,
        &MailLogin {
            expires_at: T + 5,
            ..mail_login(&[1; 32], "p@example.com")
        },
        &OutboxMail {
            expires_at: T + 5,
            ..outbox("p@example.com")
        },
        &sent_event(),
    )
    .await
    .unwrap();
    hit(s, "k", T, T + 5).await;
    hit(s, "k", T + 60, T + 120).await;

    assert_eq!(s.purge_expired(T + 10).await.unwrap(), 4);
    assert!(s.session_by_token_hash(&[1; 32]).await.unwrap().is_some());
    assert_eq!(s.session_by_token_hash(&[2; 32]).await.unwrap(), None);
    assert_eq!(hit(s, "k", T + 60, T + 120).await, 2);
    assert_eq!(s.purge_expired(T + 10).await.unwrap(), 0);
}

async fn import_is_idempotent_and_reports_what_changed(db: &TestDb) {
    let s = &db.store;
    let rows = vec![
        NewUser::parse("one@example.com", Some("One"), Some("en")).unwrap(),
        NewUser::parse("two@example.com", None, None).unwrap(),
    ];
    let progress = std::sync::Mutex::new(Vec::new());
    let r = s
        .import_users(&rows, T, &|n| progress.lock().unwrap().push(n))
        .await
        .unwrap();
    assert_eq!((r.created, r.updated, r.unchanged), (2, 0, 0));
    assert_eq!(*progress.lock().unwrap(), vec![1, 2]);
    let r = s.import_users(&rows, T + 1, &|_| {}).await.unwrap();
    assert_eq!((r.created, r.updated, r.unchanged), (0, 0, 2));

    let changed = vec![NewUser::parse("TWO@example.com", Some("Two"), Some("de")).unwrap()];
    let r = s.import_users(&changed, T + 2, &|_| {}).await.unwrap();
    assert_eq!((r.created, r.updated, r.unchanged), (0, 1, 0));
    let two = s.user_by_email("two@example.com").await.unwrap().unwrap();
    assert_eq!(two.display_name.as_deref(), Some("Two"));
    assert_eq!(
        two.locale.map(|l| l.as_str().to_string()).as_deref(),
        Some("de")
    );
    assert_eq!(
        two.email.unwrap().as_str(),
        "two@example.com",
        "import keeps the stored spelling"
    );
    assert_eq!(s.list_users(0, 10).await.unwrap().len(), 2);
}

async fn migrations_are_idempotent_and_ping_fails_when_closed(db: &TestDb) {
    db.store.migrate().await.unwrap();
    db.store.ping().await.unwrap();
    db.store.close().await;
    assert!(matches!(
        db.store.ping().await,
        Err(StoreError::Unavailable(_))
    ));
}

async fn a_mail_login_is_stored_only_within_its_rate_limits(db: &TestDb) {
    let s = &db.store;
    let window = |k: &str| RateHit {
        key: k.into(),
        window_start: T,
        expires_at: T + 300,
    };
    let hits = [window("mail:l"), window("global")];
    // The core's judgement: within 1 and 5.
    let within = |c: &[i64]| c.iter().zip([1, 5]).all(|(c, m)| *c <= m);
    let counts = s
        .insert_mail_login(
            &hits,
            &within,
            &mail_login(&[1; 32], "l@example.com"),
            &outbox("l@example.com"),
            &sent_event(),
        )
        .await
        .unwrap();
    assert_eq!(counts, vec![1, 1]);
    assert!(
        s.spend_mail_login_attempt(&[1; 32], T)
            .await
            .unwrap()
            .is_some()
    );
    // Over the first limit: counted, but nothing stored or queued.
    let counts = s
        .insert_mail_login(
            &hits,
            &within,
            &mail_login(&[2; 32], "l@example.com"),
            &outbox("l@example.com"),
            &sent_event(),
        )
        .await
        .unwrap();
    assert_eq!(counts, vec![2, 2]);
    assert_eq!(s.spend_mail_login_attempt(&[2; 32], T).await.unwrap(), None);
    assert!(
        s.spend_mail_login_attempt(&[1; 32], T)
            .await
            .unwrap()
            .is_some(),
        "the older login stays"
    );
    // The refused hit was given back: a flood of refused requests never
    // spends the window (the next one counts 2 again, and is refused again).
    let counts = s
        .insert_mail_login(
            &hits,
            &within,
            &mail_login(&[3; 32], "l@example.com"),
            &outbox("l@example.com"),
            &sent_event(),
        )
        .await
        .unwrap();
    assert_eq!(counts, vec![2, 2]);
    let again = s.rate_limit_hits(&hits).await.unwrap();
    assert_eq!(again, vec![2, 2], "only the first request's hit is kept");
    assert_eq!(
        s.claim_outbox(T, T + 60, 10).await.unwrap().len(),
        1,
        "one mail queued"
    );
}

/// The store's rate-limit primitives: hits counted atomically per window,
/// and given back (never below zero) when the core refuses a request; the
/// core decides what a count means (see the mail-code tests). A mail login
/// is stored with its queued mail.
async fn refused_hits_are_given_back_never_below_zero(db: &TestDb) {
    let s = &db.store;
    let window = |k: &str| RateHit {
        key: k.into(),
        window_start: T,
        expires_at: T + 300,
    };
    let hits = [window("mail:l"), window("global")];
    assert_eq!(s.rate_limit_hits(&hits).await.unwrap(), vec![1, 1]);
    s.insert_mail_login(
        &[],
        &|_| true,
        &mail_login(&[1; 32], "l@example.com"),
        &outbox("l@example.com"),
        &sent_event(),
    )
    .await
    .unwrap();
    assert!(
        s.spend_mail_login_attempt(&[1; 32], T)
            .await
            .unwrap()
            .is_some()
    );
    // A second request counts 2; refused by the core, it gives its hits
    // back, so a flood of refused requests never spends the window (the
    // next one counts 2 again).
    assert_eq!(s.rate_limit_hits(&hits).await.unwrap(), vec![2, 2]);
    s.give_back_hits(&hits).await.unwrap();
    assert_eq!(s.rate_limit_hits(&hits).await.unwrap(), vec![2, 2]);
    for _ in 0..4 {
        s.give_back_hits(&hits).await.unwrap();
    }
    assert_eq!(
        s.rate_limit_hits(&hits).await.unwrap(),
        vec![1, 1],
        "never below zero"
    );
    assert_eq!(
        s.claim_outbox(T, T + 60, 10).await.unwrap().len(),
        1,
        "one mail queued"
    );
}

async fn mail_auth_tokens_are_single_use(db: &TestDb) {
    let s = &db.store;
    let t = MailAuthToken {
        token_hash: vec![8; 32],
        mail: "Who@example.com".into(),
        locale: "de".into(),
        created_at: T,
        expires_at: T + 60,
    };
    s.insert_mail_auth_token(&t).await.unwrap();
    assert_eq!(
        s.take_mail_auth_token(&[8; 32], T + 1).await.unwrap(),
        Some(t.clone())
    );
    assert_eq!(s.take_mail_auth_token(&[8; 32], T + 1).await.unwrap(), None);
    s.insert_mail_auth_token(&t).await.unwrap();
    assert_eq!(
        s.take_mail_auth_token(&[8; 32], T + 60).await.unwrap(),
        None,
        "expired"
    );
}

async fn outbox_mails_are_leased_to_one_worker_and_retried(db: &TestDb) {
    let s = Arc::clone(&db.store);
    for i in 0..6u8 {
        s.insert_mail_login(
            &[],
            &|_| true,
            &mail_login(&[i; 32], &format!("o{i}@example.com")),
            &outbox(&format!("o{i}@example.com")),
            &sent_event(),
        )
        .await
        .unwrap();
    }
    // Two workers claiming at once never get the same mail (on PostgreSQL
    // the loser of a row lock skips the row rather than waiting for it).
    let (a, b) = tokio::join!(s.claim_outbox(T, T + 60, 4), s.claim_outbox(T, T + 60, 4));
    let mut claimed: Vec<Uuid> = a
        .unwrap()
        .iter()
        .chain(b.unwrap().iter())
        .map(|m| m.id)
        .collect();
    let rest = s.claim_outbox(T, T + 60, 10).await.unwrap();
    claimed.extend(rest.iter().map(|m| m.id));
    let mut ids = claimed.clone();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), claimed.len(), "no mail claimed twice");
    assert_eq!(ids.len(), 6, "all six claimed in the end");
    assert!(
        s.claim_outbox(T + 1, T + 61, 10).await.unwrap().is_empty(),
        "leased"
    );

    s.outbox_sent(&[claimed[0]]).await.unwrap();
    s.outbox_retry(claimed[1], 1, T + 30, "connection refused")
        .await
        .unwrap();
    assert!(s.claim_outbox(T + 29, T + 90, 10).await.unwrap().is_empty());
    let again = s.claim_outbox(T + 30, T + 90, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].attempts), (claimed[1], 1));
    // Leases run out: the rest come back.
    assert_eq!(s.claim_outbox(T + 61, T + 120, 10).await.unwrap().len(), 4);
}

on_both_databases!(
    a_mail_login_is_stored_only_within_its_rate_limits,
    refused_hits_are_given_back_never_below_zero,
    mail_auth_tokens_are_single_use,
    outbox_mails_are_leased_to_one_worker_and_retried,
    users_are_unique_by_case_insensitive_email,
    deleting_a_user_removes_identities_sessions_and_tokens,
    disabling_a_user_ends_their_sessions_in_the_same_step,
    identities_are_keyed_by_provider_issuer_and_subject,
    sessions_are_found_by_hash_listed_touched_and_deleted,
    login_flows_are_single_use_and_expire,
    mail_logins_keep_only_the_newest_and_count_attempts_atomically,
    provider_tokens_are_replaced_per_identity,
    rate_limit_counters_are_atomic,
    audit_events_are_listed_newest_first,
    purge_removes_only_what_expired,
    import_is_idempotent_and_reports_what_changed,
    migrations_are_idempotent_and_ping_fails_when_closed,
);
