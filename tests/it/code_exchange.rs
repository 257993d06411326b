//! The code-exchange API's session endpoints (seed 000): raw session ids
//! in `Authorization`, revocation, and the API's own error shape.
use authgate::core::secret::TokenFormat;
use authgate::core::{ClientMeta, NewUser, UserKey};
use serde_json::{Value, json};

use crate::support::{App, TestDb, on_both_databases};

async fn valid(app: &App, authorization: Option<&str>, path: &str) -> Value {
    let mut r = reqwest::Client::new().get(app.url(path));
    if let Some(a) = authorization {
        r = r.header("authorization", a);
    }
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    r.json().await.unwrap()
}

async fn sessions_are_checked_and_revoked_by_raw_id(db: &TestDb) {
    let app = App::start(db, |_| {}).await;
    let meta = ClientMeta::default();
    let user = app
        .core
        .add_user(NewUser::parse("ms@example.com", None, None).unwrap(), &meta)
        .await
        .unwrap();
    let (id, _) = app
        .core
        .sign_in(&user, "code_exchange", "otp", TokenFormat::Base64x16, &meta)
        .await
        .unwrap();
    assert_eq!(id.len(), 24);

    assert_eq!(
        valid(&app, Some(&id), "/api/v1/auth/valid").await,
        json!({"valid": true})
    );
    assert_eq!(
        valid(&app, Some(&id), "/api/v1/auth/valid/").await,
        json!({"valid": true})
    );
    assert_eq!(
        valid(&app, Some(&format!("Bearer {id}")), "/api/v1/auth/valid").await,
        json!({"valid": true})
    );
    assert_eq!(
        valid(&app, None, "/api/v1/auth/valid").await,
        json!({"valid": false})
    );
    assert_eq!(
        valid(&app, Some("AAAAAAAAAAAAAAAAAAAAAA=="), "/api/v1/auth/valid").await,
        json!({"valid": false})
    );

    let client = reqwest::Client::new();
    let r = client
        .delete(app.url("/api/v1/auth/revoke/"))
        .json(&json!({"sessionId": id}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert!(r.text().await.unwrap().is_empty());
    assert_eq!(
        valid(&app, Some(&id), "/api/v1/auth/valid").await,
        json!({"valid": false})
    );
    // Revoking again (or an unknown id) is still 202: nothing to tell.
    let r = client
        .delete(app.url("/api/v1/auth/revoke"))
        .json(&json!({"sessionId": id}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    // A disabled user's sessions are not valid.
    let (id2, _) = app
        .core
        .sign_in(&user, "code_exchange", "otp", TokenFormat::Base64x16, &meta)
        .await
        .unwrap();
    app.core
        .set_user_disabled(&UserKey::Id(user.id), true, &meta)
        .await
        .unwrap();
    assert_eq!(
        valid(&app, Some(&id2), "/api/v1/auth/valid").await,
        json!({"valid": false})
    );
}

async fn errors_use_the_api_shape(db: &TestDb) {
    let app = App::start(db, |_| {}).await;
    let client = reqwest::Client::new();
    for body in [
        "{",
        "[]",
        "{\"sessionId\": 5}",
        "{\"sessionId\": \"x\", \"more\": 1}",
        "{}",
    ] {
        let r = client
            .delete(app.url("/api/v1/auth/revoke"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({"code": 400, "status": "400 - Bad Request", "message": "The server did not understand the request, an invalid request body or headers may have been given."})
        );
    }
    let r = client
        .get(app.url("/api/v1/no/such/thing"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"code": 404, "status": "404 - Not Found", "message": "The requested resource has not been found."})
    );
    let r = client
        .post(app.url("/api/v1/auth/valid"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(
        r.json::<Value>().await.unwrap()["status"],
        "405 - Method Not Allowed"
    );
    // Outside this API the base shape stays.
    let r = client.get(app.url("/no/such/thing")).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "not_found");
}

async fn the_surface_can_be_switched_off(db: &TestDb) {
    let app = App::start(db, |c| c.surfaces.code_exchange = false).await;
    let r = reqwest::get(app.url("/api/v1/auth/valid")).await.unwrap();
    assert_eq!(r.status(), 404);
}

on_both_databases!(
    sessions_are_checked_and_revoked_by_raw_id,
    errors_use_the_api_shape,
    the_surface_can_be_switched_off,
    sign_in_starts_are_limited_per_client_on_every_surface,
);

/// Each started provider sign-in is a database row for ten minutes, so one
/// client address may start only `login_flows.per_ip`: counted together on
/// the three surfaces that start flows, refused in each surface's own shape
/// (the code-exchange API's JSON 429, FreeSewing's bare 429, ConsultFlow's
/// error page), with no row for a refused start; another client is not
/// touched.
async fn sign_in_starts_are_limited_per_client_on_every_surface(db: &TestDb) {
    let Some(node) = crate::support::OidcPeer::node() else {
        return;
    };
    let tenant = "5e0f2a1b-3c4d-4e5f-8a9b-0c1d2e3f4a5b";
    let peer = crate::support::OidcPeer::entra_megan(&node, tenant, &[]).await;
    let graph = crate::support::graph_me("oid-megan", "Megan", "megan@contoso.example").await;
    let app = App::start(db, |c| {
        c.server.public_url = Some(crate::support::PEER_PUBLIC_URL.parse().unwrap());
        c.server.frontend_url = Some("http://front.example".parse().unwrap());
        c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        c.code_exchange.redirect_uris = vec!["http://front.example".into()];
        c.providers.insert(
            "microsoft".into(),
            crate::support::microsoft_provider(&peer, tenant, &graph),
        );
        c.login_flows.per_ip = vec![authgate::core::Limit::new(3, 3600)];
    })
    .await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let from = |ip: &'static str| {
        let client = client.clone();
        let app = &app;
        move |surface: usize| {
            let r = match surface {
                0 => client.get(app.url("/api/v1/auth/oauth2")),
                1 => client
                    .post(app.url("/oauth/init"))
                    .json(&json!({"provider": "microsoft", "language": "en"})),
                _ => client.get(app.url("/auth/login")),
            };
            r.header("x-forwarded-for", ip).send()
        }
    };
    let attacker = from("203.0.113.7");
    assert_eq!(attacker(0).await.unwrap().status(), 301);
    assert_eq!(attacker(1).await.unwrap().status(), 200);
    let r = attacker(2).await.unwrap();
    assert_eq!(r.status(), 302);
    assert!(!r.headers()["location"].to_str().unwrap().contains("error="));
    let rows = db.count("SELECT COUNT(*) FROM login_flows").await;
    assert_eq!(rows, 3);

    let r = attacker(0).await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(
        r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<i64>()
            .unwrap()
            > 0
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], 429, "{body}");
    assert_eq!(body["status"], "429 - Too Many Requests", "{body}");
    let r = attacker(1).await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(r.text().await.unwrap(), "Too Many Requests");
    let r = attacker(2).await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(
        r.headers()["location"],
        "http://front.example/login?error=rate_limited"
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM login_flows").await,
        3,
        "no row for a refused start"
    );

    let neighbour = from("198.51.100.20");
    assert_eq!(
        neighbour(0).await.unwrap().status(),
        301,
        "another client starts"
    );
}
