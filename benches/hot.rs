//! The pure hot paths, measured with criterion (`cargo bench --bench hot`):
//! session-id hashing, the session check (from the cache and from SQLite),
//! mail-code comparison, ID-token validation (RS256, keys cached), and a
//! TOTP second factor's verification (alone, and in the core on SQLite),
//! and a passkey's (webauthn-rs alone, and the core's whole sign-in).
//! Load over HTTP is `loadtest/run.sh`; nothing here leaves 127.0.0.1.
use std::sync::Arc;
use std::time::Duration;

use authgate::core::mail_login::code_hash;
use authgate::core::secret::{self, TokenFormat};
use authgate::core::{ClientMeta, Core, NewUser, SessionPolicy, SystemClock};
use authgate::providers::http::Http;
use authgate::providers::id_token::{self, Expectations, IssuerRule};
use authgate::providers::jwks::JwksCache;
use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

#[path = "../tests/it/soft_authenticator.rs"]
mod soft_authenticator;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn hashing(c: &mut Criterion) {
    let token = secret::new_token(TokenFormat::UrlSafe32).unwrap();
    c.bench_function("session id: SHA-256 of a 43-character token", |b| {
        b.iter(|| secret::hash_token(std::hint::black_box(&token)))
    });
    let login = secret::new_token(TokenFormat::Alnum32).unwrap();
    let stored = code_hash(&login, "apple banana cherry");
    c.bench_function(
        "mail code: normalise, hash, compare in constant time",
        |b| {
            b.iter(|| {
                secret::ct_eq(
                    &code_hash(&login, std::hint::black_box("Apple Banana*Cherry")),
                    &stored,
                )
            })
        },
    );
}

fn session_check(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    for (name, ttl) in [("session check: cached", 30), ("session check: SQLite", 0)] {
        let (core, token) = rt.block_on(async {
            let store = authgate::store::connect(&url, &Default::default())
                .await
                .unwrap();
            store.migrate().await.unwrap();
            let policy = SessionPolicy {
                cache_ttl: ttl,
                cache_warm: 0,
                ..SessionPolicy::default()
            };
            let core = Core::new(store, Arc::new(SystemClock), policy);
            let meta = ClientMeta::default();
            let email = format!("bench{ttl}@example.com");
            let user = core
                .add_user(NewUser::parse(&email, None, None).unwrap(), &meta)
                .await
                .unwrap();
            let (token, _) = core
                .sign_in(&user, "bench", "otp", TokenFormat::UrlSafe32, &meta)
                .await
                .unwrap();
            (core, token)
        });
        c.bench_function(name, |b| {
            b.iter(|| rt.block_on(core.check_session(&token)).unwrap().unwrap())
        });
    }
}

fn id_token_validation(c: &mut Criterion) {
    let rt = runtime();
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/fixtures");
    let jwk: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{fixtures}/idp-1.jwk.json")).unwrap(),
    )
    .unwrap();
    let kid = jwk["kid"].as_str().unwrap_or("idp-1").to_string();
    let mut jwk = jwk;
    jwk["kid"] = serde_json::Value::String(kid.clone());
    let jwks = serde_json::json!({ "keys": [jwk] });
    // The provider's JWKS, served on 127.0.0.1 (fetched once, then cached).
    let addr = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route(
            "/keys",
            axum::routing::get(move || {
                let jwks = jwks.clone();
                async move { axum::Json(jwks) }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    });
    let key = EncodingKey::from_rsa_pem(&std::fs::read(format!("{fixtures}/idp-1.pem")).unwrap())
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let issuer = "https://login.example.com/tenant/v2.0";
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid);
    let token = jsonwebtoken::encode(
        &header,
        &serde_json::json!({
            "iss": issuer, "aud": "client-1", "sub": "person-1", "nonce": "n-1",
            "iat": now, "exp": now + 3600, "email": "a@example.com"
        }),
        &key,
    )
    .unwrap();
    let cache = JwksCache::new(
        format!("http://{addr}/keys").parse().unwrap(),
        Duration::from_secs(60),
    );
    let http = Http::new(Duration::from_secs(5)).unwrap();
    let rule = IssuerRule::Exact(vec![issuer.to_string()]);
    let algorithms = [Algorithm::RS256];
    let expect = Expectations {
        issuer: &rule,
        client_id: "client-1",
        trusted_audiences: &[],
        nonce: Some("n-1"),
        algorithms: &algorithms,
        now,
        leeway: 60,
    };
    // First call fetches the keys; the measured ones use the cache.
    rt.block_on(id_token::validate(&token, &cache, &http, &expect))
        .expect("the bench token validates");
    c.bench_function("ID token: RS256 validation with cached keys", |b| {
        b.iter(|| {
            rt.block_on(id_token::validate(&token, &cache, &http, &expect))
                .unwrap()
        })
    });
}

fn totp_verification(c: &mut Criterion) {
    use authgate::core::{Clock, ManualClock, Vault};
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("totp.db").display());
    let clock = Arc::new(ManualClock::new(1_800_000_015));
    let (core, user, secret) = rt.block_on(async {
        let store = authgate::store::connect(&url, &Default::default())
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let vault = Vault::from_base64(&[Vault::new_key().unwrap()]).unwrap();
        let core = Core::builder(store, clock.clone())
            .vault(Some(vault))
            .build();
        let meta = ClientMeta::default();
        let user = core
            .add_user(
                NewUser::parse("totp@example.com", None, None).unwrap(),
                &meta,
            )
            .await
            .unwrap();
        let e = core.begin_totp(&user, "bench", &meta).await.unwrap();
        let totp = totp_rs::Totp::from_url(&e.uri).unwrap();
        let code = totp.generate(clock.now() as u64).to_string();
        core.confirm_totp(user.id, &code, &meta).await.unwrap();
        (core, user, totp)
    });
    let wrong = "000000";
    c.bench_function(
        "TOTP: check a wrong code against 3 steps (HMAC-SHA1)",
        |b| b.iter(|| secret.check(std::hint::black_box(wrong), 1_800_000_015)),
    );
    let meta = ClientMeta::default();
    c.bench_function(
        "TOTP: verify a right code in the core (claim, unseal, check, take) on SQLite",
        |b| {
            b.iter(|| {
                clock.advance(30);
                let code = secret.generate(clock.now() as u64).to_string();
                rt.block_on(core.verify_totp(user.id, &code, &meta))
                    .unwrap()
            })
        },
    );
}

fn passkey_verification(c: &mut Criterion) {
    use authgate::core::passkeys::PasskeyPolicy;
    use soft_authenticator::SoftAuthenticator;
    use webauthn_rs::prelude::{PublicKeyCredential, RegisterPublicKeyCredential, Url};
    let origin = "http://localhost:3001";
    let url = Url::parse(origin).unwrap();

    // webauthn-rs alone: the answer's checks (client data, RP id hash,
    // flags, counter, the ES256 signature), the answer made beforehand.
    let webauthn = webauthn_rs::prelude::WebauthnBuilder::new("localhost", &url)
        .unwrap()
        .build()
        .unwrap();
    let mut key = SoftAuthenticator::new(origin, "localhost");
    let user = uuid::Uuid::now_v7();
    let (ccr, reg) = webauthn
        .start_passkey_registration(user, "bench", "bench", None)
        .unwrap();
    let answer: RegisterPublicKeyCredential =
        serde_json::from_value(key.register(&serde_json::to_value(&ccr).unwrap())).unwrap();
    let passkey = webauthn.finish_passkey_registration(&answer, &reg).unwrap();
    c.bench_function(
        "passkey: webauthn-rs verifies an ES256 answer (discoverable)",
        |b| {
            b.iter_batched(
                || {
                    let (rcr, state) = webauthn.start_discoverable_authentication().unwrap();
                    let options = serde_json::to_value(&rcr).unwrap();
                    let honest = key.honest();
                    let answer: PublicKeyCredential =
                        serde_json::from_value(key.assert(&options, &honest)).unwrap();
                    (answer, state)
                },
                |(answer, state)| {
                    webauthn
                        .finish_discoverable_authentication_v2(&answer, state, &passkey)
                        .unwrap()
                },
                criterion::BatchSize::SmallInput,
            )
        },
    );

    // The core's whole sign-in on SQLite: the ceremony kept and taken,
    // the passkey looked up, checked, its use recorded, a session started.
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("passkeys.db").display());
    let mut key = SoftAuthenticator::new(origin, "localhost");
    let core = rt.block_on(async {
        let store = authgate::store::connect(&db, &Default::default())
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let core = Core::builder(store, Arc::new(SystemClock))
            .passkeys(PasskeyPolicy::new("localhost", "bench", std::slice::from_ref(&url)).unwrap())
            .build();
        let meta = ClientMeta::default();
        let user = core
            .add_user(
                NewUser::parse("keys@example.com", None, None).unwrap(),
                &meta,
            )
            .await
            .unwrap();
        let start = core.begin_passkey_registration(&user).await.unwrap();
        let answer = key.register(&start.options).to_string();
        core.finish_passkey_registration(&user, &start.token, "bench", &answer, &meta)
            .await
            .unwrap();
        core
    });
    let meta = ClientMeta::default();
    let session = authgate::core::NewSession {
        kind: "page",
        method: "",
        format: TokenFormat::UrlSafe32,
    };
    c.bench_function(
        "passkey: the core's sign-in (ceremony, look-up, check, record, session) on SQLite",
        |b| {
            b.iter(|| {
                rt.block_on(async {
                    let start = core.begin_passkey_sign_in(false, None).await.unwrap();
                    let honest = key.honest();
                    let answer = key.assert(&start.options, &honest).to_string();
                    core.finish_passkey_sign_in(&start.token, &answer, session, &meta)
                        .await
                        .unwrap()
                })
            })
        },
    );
}

criterion_group! {
    name = hot;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = hashing, session_check, id_token_validation, totp_verification, passkey_verification
}
criterion_main!(hot);
