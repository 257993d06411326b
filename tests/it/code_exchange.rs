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
        .sign_in(&user, "code_exchange", TokenFormat::Base64x16, &meta)
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
        .sign_in(&user, "code_exchange", TokenFormat::Base64x16, &meta)
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
);
