//! End to end through the real binary: CLI commands, `serve`, config errors.
use std::process::Stdio;
use std::sync::Arc;

use authgate::core::secret::TokenFormat;
use authgate::core::{ClientMeta, SystemClock, UserKey};

use crate::support::{self, authgate, free_port, run_ok, stderr, wait_for_status};

/// Start `serve`, wait for readiness, stop it with SIGTERM, check it
/// exited cleanly; returns its log (standard error).
async fn serve_until_ready(cmd: &mut std::process::Command, port: u16) -> String {
    let child = cmd
        .env("AUTHGATE_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_status(&format!("http://127.0.0.1:{port}/health/ready"), 200).await;
    let pid = child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let log = stderr(&out);
    assert!(
        out.status.success(),
        "serve exited with {}: {log}",
        out.status
    );
    assert!(
        log.contains("authgate ready") && log.contains("authgate stopped"),
        "{log}"
    );
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newcomer_runs_with_no_config_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(authgate(dir.path()).args([
        "user",
        "add",
        "--email",
        "a@example.com",
        "--name",
        "Ann Example",
    ]));
    assert!(out.starts_with("created user "), "{out}");
    let list = run_ok(authgate(dir.path()).args(["user", "list"]));
    assert!(list.lines().next().unwrap().starts_with("ID"), "{list}");
    assert!(
        list.contains("a@example.com") && list.contains("Ann Example"),
        "{list}"
    );

    // The default database is ./authgate.db, in WAL mode.
    let db = dir.path().join("authgate.db");
    assert!(db.is_file());
    let mut c = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
        "sqlite://{}",
        db.display()
    ))
    .await
    .unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(mode, "wal");

    serve_until_ready(&mut authgate(dir.path()), free_port()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_command_and_json_logs() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(authgate(dir.path()).arg("migrate"));
    assert!(
        out.contains("database migrated (sqlite://authgate.db)"),
        "{out}"
    );
    assert!(dir.path().join("authgate.db").is_file());

    let port = free_port();
    let log = serve_until_ready(
        authgate(dir.path()).env("AUTHGATE_LOG__FORMAT", "json"),
        port,
    )
    .await;
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let ready = lines
        .iter()
        .find(|l| l["message"] == "authgate ready")
        .expect("ready line");
    assert_eq!(ready["level"], "INFO");
    assert_eq!(ready["address"], format!("127.0.0.1:{port}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_server_on_postgres_by_url_alone() {
    let Some(base) = support::pg_base_url() else {
        return;
    };
    let (_, url, name) = support::create_pg_database(&base).await;
    let dir = tempfile::tempdir().unwrap();
    let pg = |cmd: &mut std::process::Command| {
        cmd.env("AUTHGATE_DATABASE__URL", &url);
    };
    let mut add = authgate(dir.path());
    pg(&mut add);
    run_ok(add.args(["user", "add", "--email", "pg@example.com"]));
    let mut serve = authgate(dir.path());
    pg(&mut serve);
    serve_until_ready(&mut serve, free_port()).await;
    let mut list = authgate(dir.path());
    pg(&mut list);
    assert!(run_ok(list.args(["user", "list"])).contains("pg@example.com"));
    assert!(
        !dir.path().join("authgate.db").exists(),
        "no SQLite file when on PostgreSQL"
    );
    crate::support::drop_pg_database(&base, &name).await;
}

#[test]
fn bad_config_names_the_key_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("authgate.toml"),
        "[server]\nlisten = \"nope\"\n",
    )
    .unwrap();
    for args in [vec!["serve"], vec!["user", "list"], vec!["config", "check"]] {
        let out = authgate(dir.path()).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains("server.listen") && err.contains("authgate.toml"),
            "{err}"
        );
    }

    let clean = tempfile::tempdir().unwrap();
    let out = authgate(clean.path())
        .env("AUTHGATE_SESSION__IDLE_TIMEOUT_SECS", "soon")
        .args(["config", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("session.idle_timeout_secs"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("AUTHGATE_SESSION__IDLE_TIMEOUT_SECS"),
        "{}",
        stderr(&out)
    );

    let out = authgate(clean.path())
        .env("AUTHGATE_SERVR__LISTEN", "127.0.0.1:1")
        .args(["config", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("servr"), "{}", stderr(&out));

    let out = authgate(clean.path())
        .args(["--config", "missing.toml", "config", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("missing.toml"));
}

#[test]
fn config_check_prints_effective_values_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("custom.toml");
    std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:4000\"\n[mail]\ntransport = \"smtp\"\nsmtp_url = \"smtp://u:mailpass@127.0.0.1:2525\"\n").unwrap();
    let out = run_ok(
        authgate(dir.path())
            .env("AUTHGATE_CONFIG", &file)
            .env(
                "AUTHGATE_DATABASE__URL",
                "postgres://app:dbpass@127.0.0.1:5432/auth",
            )
            .env("AUTHGATE_SERVER__BODY_LIMIT_BYTES", "4096")
            .args(["config", "check"]),
    );
    assert!(out.contains("listen = \"127.0.0.1:4000\""), "{out}");
    assert!(
        out.contains("body_limit_bytes = 4096"),
        "env overrides the file: {out}"
    );
    assert!(
        out.contains("postgres://app:********@127.0.0.1:5432/auth"),
        "{out}"
    );
    assert!(
        !out.contains("dbpass") && !out.contains("mailpass"),
        "{out}"
    );
}

#[test]
fn secrets_may_be_read_from_files_named_by_file_keys() {
    let dir = tempfile::tempdir().unwrap();
    let put = |name: &str, text: &str| {
        let f = dir.path().join(name);
        std::fs::write(&f, text).unwrap();
        f
    };
    let token = put("admin-token", "token-from-a-file-0123456789abcdefgh\n");
    let secret = put("github-secret", "gh-secret-from-a-file\r\n");
    let db = dir.path().join("from-file.db");
    let db_url = put("db-url", &format!("sqlite://{}\n", db.display()));
    let file = put(
        "authgate.toml",
        &format!(
            "[admin]\ntoken_file = {:?}\n[providers.github]\nclient_id = \"gh\"\nclient_secret_file = {:?}\n",
            token.display().to_string(),
            secret.display().to_string()
        ),
    );
    let check = || {
        let mut c = authgate(dir.path());
        c.env("AUTHGATE_CONFIG", &file)
            .env("AUTHGATE_DATABASE__URL_FILE", &db_url)
            .args(["config", "check"]);
        c
    };
    let out = run_ok(&mut check());
    // The values were read (they are set, masked) and the line break dropped
    // (the database URL is the file's line, usable as it is).
    assert!(out.contains("token = \"********\""), "{out}");
    assert!(out.contains("client_secret = \"********\""), "{out}");
    assert!(
        out.contains(&format!("url = \"sqlite://{}\"", db.display())),
        "{out}"
    );
    assert!(
        !out.contains("token-from-a-file") && !out.contains("gh-secret-from-a-file"),
        "{out}"
    );
    // A file's value is checked as the key's own would be.
    std::fs::write(&token, "short\n").unwrap();
    let out = check().output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("admin.token:"), "{}", stderr(&out));
    // Both a key and its file: refused, naming the file key.
    let out = check()
        .env(
            "AUTHGATE_ADMIN__TOKEN",
            "token-from-the-environment-0123456789",
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("admin.token_file") && err.contains("not both"),
        "{err}"
    );
    // A file that cannot be read or is empty: named, with its path.
    std::fs::remove_file(&token).unwrap();
    let out = check().output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("admin.token_file") && err.contains("admin-token"),
        "{err}"
    );
    std::fs::write(&secret, "\n").unwrap();
    std::fs::write(&token, "token-from-a-file-0123456789abcdefgh").unwrap();
    let out = check().output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("providers.github.client_secret_file") && err.contains("is empty"),
        "{err}"
    );
}

#[test]
fn provider_config_is_checked_and_its_secret_masked() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[providers.microsoft]\nclient_id = \"app\"\ntenant = \"organizations\"\n[providers.google]\nclient_id = \"g\"\nclient_secret = \"g-secret-value\"\n",
    )
    .unwrap();
    let out = run_ok(
        authgate(dir.path())
            .env("AUTHGATE_CONFIG", &good)
            .env(
                "AUTHGATE_PROVIDERS__MICROSOFT__CLIENT_SECRET",
                "ms-secret-value",
            )
            .args(["config", "check"]),
    );
    assert!(out.contains("[providers.microsoft]"), "{out}");
    assert!(out.contains("tenant = \"organizations\""), "{out}");
    assert!(
        !out.contains("ms-secret-value") && !out.contains("g-secret-value"),
        "{out}"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[providers.acme]\nclient_id = \"a\"\nclient_secret = \"s\"\n\
         [providers.google]\nclient_id = \"g\"\nclient_secret = \"s\"\nalgorithms = [\"HS256\"]\ntenant = \"x\"\n\
         [providers.github]\nclient_id = \"\"\n\
         [code_exchange]\nprovider = \"okta\"\n",
    )
    .unwrap();
    let out = authgate(dir.path())
        .env("AUTHGATE_CONFIG", &bad)
        .args(["config", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    for needle in [
        "providers.acme.kind",
        "providers.google.algorithms",
        "providers.google.tenant: does not apply",
        "providers.github.client_id: is required",
        "providers.github.client_secret: is required",
        "code_exchange.provider: \"okta\" is not a configured provider",
    ] {
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }
}

#[test]
fn unreachable_database_is_a_clear_error_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let out = authgate(dir.path())
        .env(
            "AUTHGATE_DATABASE__URL",
            "postgres://app:sekrit@127.0.0.1:1/auth",
        )
        .env("AUTHGATE_DATABASE__ACQUIRE_TIMEOUT_SECS", "1")
        .args(["user", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("cannot open database postgres://app:********@127.0.0.1:1/auth"),
        "{err}"
    );
    assert!(!err.contains("sekrit"));
}

#[test]
fn import_reports_every_bad_line_and_imports_nothing_then_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.csv"),
        "email,name,locale\ngood@example.com,Good,en\nbroken,X,en\nok@example.com,,xx-toolongsubtag1\ngood@EXAMPLE.com,Dup,\n",
    )
    .unwrap();
    let out = authgate(dir.path())
        .args(["user", "import", "bad.csv"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    for needle in [
        "line 3:",
        "line 4:",
        "line 5: duplicate of line 2",
        "nothing imported: 3 bad row(s)",
    ] {
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }
    assert!(!err.contains("line 2:"), "{err}");
    let list = run_ok(authgate(dir.path()).args(["user", "list", "--json"]));
    assert_eq!(
        serde_json::from_str::<Vec<serde_json::Value>>(&list)
            .unwrap()
            .len(),
        0
    );

    std::fs::write(
        dir.path().join("users.jsonl"),
        "{\"email\":\"one@example.com\",\"name\":\"One\",\"locale\":\"en\"}\n{\"email\":\"two@example.com\"}\n",
    )
    .unwrap();
    let out = run_ok(authgate(dir.path()).args(["user", "import", "users.jsonl"]));
    assert!(out.contains("2 created, 0 updated, 0 unchanged"), "{out}");
    let out = run_ok(authgate(dir.path()).args(["user", "import", "users.jsonl"]));
    assert!(out.contains("0 created, 0 updated, 2 unchanged"), "{out}");

    let mut child = authgate(dir.path())
        .args(["user", "import", "-", "--format", "csv"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"email,name\ntwo@example.com,Two\nthree@example.com,\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 created, 1 updated, 0 unchanged"));
    let users: Vec<serde_json::Value> = serde_json::from_str(&run_ok(
        authgate(dir.path()).args(["user", "list", "--json"]),
    ))
    .unwrap();
    assert_eq!(users.len(), 3);
    assert_eq!(users[1]["name"], "Two");
}

/// The CLI and a server-side core share one database: what the operator
/// does takes effect for sessions at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_end_sessions_at_once() {
    let dir = tempfile::tempdir().unwrap();
    run_ok(authgate(dir.path()).args(["user", "add", "--email", "ops@example.com"]));
    let url = format!("sqlite://{}", dir.path().join("authgate.db").display());
    let store = authgate::store::connect(&url, &Default::default())
        .await
        .unwrap();
    let core = authgate::core::Core::new(store, Arc::new(SystemClock), Default::default());
    let user = core
        .find_user(&UserKey::parse("ops@example.com").unwrap())
        .await
        .unwrap();
    let meta = ClientMeta::default();
    let (t1, s1) = core
        .sign_in(&user, "cookie", "otp", TokenFormat::UrlSafe32, &meta)
        .await
        .unwrap();
    let (t2, _) = core
        .sign_in(&user, "cookie", "otp", TokenFormat::UrlSafe32, &meta)
        .await
        .unwrap();

    let listed = run_ok(authgate(dir.path()).args([
        "session",
        "list",
        "--user",
        "ops@example.com",
        "--json",
    ]));
    let listed: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        !serde_json::to_string(&listed).unwrap().contains(&t1),
        "lists never show tokens"
    );

    run_ok(authgate(dir.path()).args(["session", "revoke", &s1.id.to_string()]));
    assert_eq!(core.check_session(&t1).await.unwrap(), None);
    assert!(core.check_session(&t2).await.unwrap().is_some());

    let out = run_ok(authgate(dir.path()).args(["user", "disable", "ops@example.com"]));
    assert!(out.contains("disabled user"));
    assert_eq!(core.check_session(&t2).await.unwrap(), None);
    let shown = run_ok(authgate(dir.path()).args(["user", "show", "ops@example.com", "--json"]));
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["user"]["disabled"], true);
    assert_eq!(shown["sessions"].as_array().unwrap().len(), 0);

    run_ok(authgate(dir.path()).args(["user", "enable", &user.id.to_string()]));
    run_ok(authgate(dir.path()).args(["user", "delete", "ops@example.com"]));
    let out = authgate(dir.path())
        .args(["user", "show", "ops@example.com"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no such user"));
    let out = authgate(dir.path())
        .args(["user", "add", "--email", "not an address"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("invalid email"), "{}", stderr(&out));
}

#[test]
fn openapi_command_prints_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(authgate(dir.path()).arg("openapi"));
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["info"]["title"], "authgate");
    assert!(doc["paths"]["/health/ready"].is_object());
}

#[test]
fn vault_key_makes_usable_keys_and_rekey_needs_one() {
    let dir = tempfile::tempdir().unwrap();
    let a = run_ok(authgate(dir.path()).args(["vault", "key"]));
    let b = run_ok(authgate(dir.path()).args(["vault", "key"]));
    assert_ne!(a, b, "fresh randomness each time");
    assert!(authgate::core::Vault::from_base64(&[a.trim(), b.trim()]).is_ok());
    let out = authgate(dir.path())
        .env(
            "AUTHGATE_DATABASE__URL",
            format!("sqlite://{}", dir.path().join("v.db").display()),
        )
        .args(["vault", "rekey"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("vault.keys is empty"),
        "{}",
        stderr(&out)
    );
    let out = run_ok(
        authgate(dir.path())
            .env(
                "AUTHGATE_DATABASE__URL",
                format!("sqlite://{}", dir.path().join("v.db").display()),
            )
            .env("AUTHGATE_VAULT__KEYS", format!("[\"{}\"]", a.trim()))
            .args(["vault", "rekey"]),
    );
    assert!(out.contains("re-encrypted 0 token sets"), "{out}");
}

/// At `log.level = "trace"` no code reaches the log (the SMTP library
/// logged each mail it wrote), and a forged `error` in a callback cannot
/// write a line of its own (it is logged escaped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_code_and_no_forged_line_in_a_trace_log() {
    let Some(python) = support::Smtpd::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let smtp_port = free_port();
    let smtpd = support::Smtpd::start(&python, smtp_port, dir.path()).await;
    let port = free_port();
    let child = authgate(dir.path())
        .env("AUTHGATE_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("AUTHGATE_LOG__LEVEL", "trace")
        .env("AUTHGATE_MAIL__TRANSPORT", "smtp")
        .env(
            "AUTHGATE_MAIL__SMTP_URL",
            format!("smtp://127.0.0.1:{smtp_port}"),
        )
        .env("AUTHGATE_PROVIDERS__MICROSOFT__CLIENT_ID", "client")
        .env("AUTHGATE_PROVIDERS__MICROSOFT__CLIENT_SECRET", "secret")
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_for_status(&format!("{base}/health/ready"), 200).await;
    let r = reqwest::Client::new()
        .post(format!("{base}/auth/send-mail-login-code-v2"))
        .json(&serde_json::json!({"mail": "traced@example.com", "locale": "en"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let login_token = r.json::<serde_json::Value>().await.unwrap()["mailLoginToken"]
        .as_str()
        .unwrap()
        .to_string();
    let mail = support::Smtpd::wait_for_mail(
        &smtpd.maildir,
        "traced@example.com",
        std::time::Duration::from_secs(10),
    )
    .await;
    let code = support::code_in(&mail);
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!(
            "{base}/auth/callback?state=s&error=x%0aFORGED%20line%20at%20INFO"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let log = stderr(&out);
    assert!(log.contains("authgate ready"), "{log}");
    assert!(log.len() > 1000, "a trace log has lines: {}", log.len());
    assert!(!log.contains(&code), "the code is in the log");
    assert!(!log.contains(&login_token), "the login token is in the log");
    assert!(
        !log.lines().any(|l| l.starts_with("FORGED")),
        "a forged line: {log}"
    );
    assert!(log.contains("FORGED"), "the error is logged, escaped");
}

/// The cookie-session surface keeps Microsoft's tokens: with no
/// `vault.keys`, SQLite gets a key made at the first start, in a file beside
/// the database (mode 0600, its path logged, never the key), kept across
/// restarts and used by `vault rekey`; PostgreSQL (instances must share one
/// key) refuses to start, naming the setting. Never silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_surface_keeping_tokens_gets_a_vault_key_or_a_clear_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let with_microsoft = |cmd: &mut std::process::Command| {
        cmd.env("AUTHGATE_PROVIDERS__MICROSOFT__CLIENT_ID", "client")
            .env("AUTHGATE_PROVIDERS__MICROSOFT__CLIENT_SECRET", "secret");
    };
    let mut serve = authgate(dir.path());
    with_microsoft(&mut serve);
    let log = serve_until_ready(&mut serve, free_port()).await;
    let file = dir.path().join("authgate.db.vault-key");
    let text = std::fs::read_to_string(&file).expect("a key file beside the database");
    let key = text
        .lines()
        .find(|l| !l.starts_with('#') && !l.is_empty())
        .unwrap()
        .to_string();
    assert!(authgate::core::Vault::from_base64(&[key.as_str()]).is_ok());
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "only the owner reads the key");
    }
    assert!(log.contains("authgate.db.vault-key"), "{log}");
    assert!(!log.contains(&key), "the key is in the log");

    let mut again = authgate(dir.path());
    with_microsoft(&mut again);
    let log = serve_until_ready(&mut again, free_port()).await;
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text, "kept");
    assert!(!log.contains("made a new vault key"), "{log}");
    let out = run_ok(authgate(dir.path()).args(["vault", "rekey"]));
    assert!(out.contains("re-encrypted 0 token sets"), "{out}");

    let mut pg = authgate(dir.path());
    with_microsoft(&mut pg);
    let out = pg
        .env(
            "AUTHGATE_DATABASE__URL",
            "postgres://postgres@127.0.0.1:1/none",
        )
        .env(
            "AUTHGATE_SERVER__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .arg("serve")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("vault.keys is empty") && err.contains("authgate vault key"),
        "{err}"
    );
}

/// A client kept in the database (`authgate client add`, no
/// `[clients.*]` in the config) needs signing keys as a config client
/// does: serve makes the vault key beside the SQLite database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_client_gets_the_server_a_vault_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(authgate(dir.path()).args([
        "client",
        "add",
        "app",
        "--redirect-uri",
        "https://app.example/cb",
    ]));
    assert!(out.contains("client_secret:"), "{out}");
    let file = dir.path().join("authgate.db.vault-key");
    assert!(!file.exists());
    let log = serve_until_ready(&mut authgate(dir.path()), free_port()).await;
    assert!(file.exists(), "{log}");
    let secret = out
        .lines()
        .find_map(|l| l.strip_prefix("client_secret:"))
        .unwrap()
        .trim();
    assert!(!log.contains(secret), "the secret is in the log");
}

/// Every config in the README's "Moving an application to authgate"
/// sections passes `config check` as written (placeholders filled in).
#[test]
fn the_moving_guides_configs_pass_config_check() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme.find("## Moving an application to authgate").unwrap();
    let rest = &readme[start..];
    let section = &rest[..rest[3..].find("\n## ").map(|i| i + 3).unwrap_or(rest.len())];
    let blocks: Vec<String> = section
        .split("```toml\n")
        .skip(1)
        .map(|b| {
            let body = &b[..b.find("```").unwrap()];
            body.lines()
                .map(|l| l.trim_start())
                .collect::<Vec<_>>()
                .join("\n")
                .replace("\"...\"", "\"placeholder-secret-0123456789-abcdefghij\"")
        })
        .collect();
    assert_eq!(blocks.len(), 4, "one config per application");
    let dir = tempfile::tempdir().unwrap();
    for (i, block) in blocks.iter().enumerate() {
        let file = dir.path().join(format!("moving-{i}.toml"));
        std::fs::write(&file, block).unwrap();
        let out = authgate(dir.path())
            .env("AUTHGATE_CONFIG", &file)
            .args(["config", "check"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "config {i} fails: {}\n{block}",
            stderr(&out)
        );
    }
}
