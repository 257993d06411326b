//! `authgate serve`: assemble the core, the HTTP application and the
//! background workers from the configuration, then serve.
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::config::{Config, MailTransport};
use crate::core::{Clock, Core};
use crate::http::{self, AppState};
use crate::mail::Transport;
use crate::mail::mx::DnsMx;
use crate::mail::smtp::SmtpTransport;
use crate::store::Store;

/// How often expired sessions, flows, codes and counters are removed.
const PURGE_EVERY: Duration = Duration::from_secs(300);

/// The mail transport the configuration names.
pub fn transport(cfg: &Config) -> anyhow::Result<Arc<dyn Transport>> {
    Ok(match cfg.mail.transport {
        MailTransport::Console => Arc::new(crate::mail::ConsoleTransport::stdout()),
        MailTransport::Smtp => {
            let url = cfg
                .mail
                .smtp_url
                .as_ref()
                .map(crate::config::SecretUrl::expose)
                .context("mail.smtp_url is required")?;
            Arc::new(
                SmtpTransport::from_url(url, Duration::from_secs(cfg.mail.smtp_timeout_secs))
                    .map_err(|e| anyhow::anyhow!("mail.smtp_url: {e}"))?,
            )
        }
    })
}

/// Build the core over `store`, the HTTP application, and the background
/// work (mail outbox, purging) as one future to spawn. `transport`
/// overrides the configured mail transport (tests, embedding).
pub fn assemble(
    cfg: &Config,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    transport: Option<Arc<dyn Transport>>,
) -> anyhow::Result<(
    Core,
    axum::Router,
    impl Future<Output = ()> + Send + 'static,
)> {
    let ml = &cfg.mail_login;
    let providers = crate::providers::from_config(cfg).map_err(|e| anyhow::anyhow!(e))?;
    let mut builder = Core::builder(store, clock)
        .sessions(cfg.session.policy())
        .mail_login(ml.policy())
        .flow_limits(cfg.login_flows.per_ip.clone())
        .mail_templates(Arc::new(crate::mail::templates::Templates))
        .providers(providers)
        .vault(vault(cfg)?)
        .oidc(http::oidc::policy(cfg))
        .forward(http::forward::policy(cfg))
        .mfa(cfg.mfa_policy())
        .passkeys(
            cfg.passkey_policy()
                .map_err(|e| anyhow::anyhow!("passkeys: {e}"))?,
        );
    if !ml.deny_list.is_empty() {
        let mx = DnsMx::new(ml.dns_server, Duration::from_secs(ml.dns_timeout_secs))
            .map_err(|e| anyhow::anyhow!("mail_login.dns_server: {e}"))?;
        builder = builder.mx(Arc::new(mx));
    }
    let core = builder.build();
    let transport = match transport {
        Some(t) => t,
        None => self::transport(cfg)?,
    };
    let app = http::app(AppState::new(core.clone(), cfg), cfg);
    let outbox =
        core.clone()
            .run_outbox(transport, cfg.mail.from.clone(), cfg.mail.outbox_policy());
    let backchannel = {
        let http = crate::providers::http::Http::new(Duration::from_secs(5))
            .map_err(|e| anyhow::anyhow!(e))?;
        core.clone().run_backchannel_logout(Arc::new(http))
    };
    let purger = {
        let core = core.clone();
        async move {
            let mut tick = tokio::time::interval(PURGE_EVERY);
            loop {
                tick.tick().await;
                match core.purge_expired().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(removed = n, "purged expired rows"),
                    Err(e) => tracing::warn!(error = %e, "purging expired rows failed"),
                }
            }
        }
    };
    let listener = {
        let core = core.clone();
        let url = cfg.database.url.clone();
        async move {
            if url.expose().starts_with("postgres") && core.store_backend() == "postgres" {
                listen_for_session_changes(core, url).await;
            } else {
                warm_session_cache(&core).await;
            }
        }
    };
    let background = async move {
        tokio::join!(outbox, purger, listener, backchannel);
    };
    Ok((core, app, background))
}

/// Keep this instance's session cache in step with the others: listen on
/// PostgreSQL for announced session changes and apply them; while not
/// listening (connecting, connection lost) the cache is off, and everything
/// cached before is dropped when listening starts again.
pub async fn listen_for_session_changes(core: Core, url: crate::config::SecretUrl) {
    use sqlx::postgres::PgListener;
    loop {
        match PgListener::connect(url.expose()).await {
            Ok(mut listener) => match listener.listen(crate::store::SESSIONS_CHANNEL).await {
                Ok(()) => {
                    core.apply_sessions_changed("all");
                    core.set_session_cache(true);
                    tracing::debug!("session cache on: listening for session changes");
                    tokio::spawn(warm_session_cache(&core));
                    while let Ok(Some(n)) = listener.try_recv().await {
                        core.apply_sessions_changed(n.payload());
                    }
                    tracing::warn!(
                        "session change channel lost: session cache off until it is back"
                    );
                }
                Err(e) => tracing::warn!(error = %e, "cannot LISTEN for session changes"),
            },
            Err(e) => tracing::warn!(error = %e, "cannot connect to LISTEN for session changes"),
        }
        core.set_session_cache(false);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Load recently seen sessions into the session cache (in the background,
/// after the server is ready; see `Core::warm_session_cache`).
fn warm_session_cache(core: &Core) -> impl Future<Output = ()> + Send + 'static {
    let core = core.clone();
    async move {
        let started = Instant::now();
        match core.warm_session_cache().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                sessions = n,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "session cache warmed"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot warm the session cache"),
        }
    }
}

/// The token vault from `vault.keys`, else from the key file (none when
/// neither holds a key).
pub fn vault(cfg: &Config) -> anyhow::Result<Option<crate::core::Vault>> {
    let from_file;
    let keys: Vec<&str> = if cfg.vault.keys.is_empty() {
        from_file = match cfg.vault.key_file_for(cfg.database.url.expose()) {
            Some(file) if file.exists() => read_key_file(&file)?,
            _ => return Ok(None),
        };
        from_file.iter().map(String::as_str).collect()
    } else {
        cfg.vault
            .keys
            .iter()
            .map(crate::config::Secret::expose)
            .collect()
    };
    crate::core::Vault::from_base64(&keys)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("vault.keys: {e}"))
}

fn read_key_file(file: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the vault key file {}", file.display()))?;
    let keys: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    if keys.is_empty() {
        anyhow::bail!("the vault key file {} holds no key", file.display());
    }
    Ok(keys)
}

/// A surface keeps provider tokens but no key is configured: make one in
/// the key file (SQLite: beside the database, mode 0600) and say where, or
/// refuse to start, naming the setting (PostgreSQL: several instances must
/// share one key, so none is made up).
fn ensure_vault_key(cfg: &Config, oidc: bool) -> anyhow::Result<()> {
    let why = if oidc {
        "the OpenID provider keeps its signing keys encrypted".to_string()
    } else if cfg.keeps_provider_tokens() {
        format!(
            "/auth/test-token needs {}'s tokens kept encrypted",
            cfg.browser.provider_name()
        )
    } else if cfg.mfa_on() {
        "second factors (mfa.required) keep their TOTP secrets encrypted".to_string()
    } else {
        return Ok(());
    };
    if vault(cfg)?.is_some() {
        return Ok(());
    }
    let Some(file) = cfg.vault.key_file_for(cfg.database.url.expose()) else {
        anyhow::bail!(
            "vault.keys is empty, and {why}: \
             set vault.keys = [\"<key>\"] (make one with `authgate vault key`; the same on every instance) \
             or vault.key_file"
        );
    };
    let key = crate::core::Vault::new_key()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    use std::io::Write;
    options
        .open(&file)
        .and_then(|mut f| {
            f.write_all(
                format!(
                    "# authgate vault keys: the first encrypts, all decrypt. Back this file up with the database.\n{key}\n"
                )
                .as_bytes(),
            )
        })
        .with_context(|| format!("cannot write the vault key file {}", file.display()))?;
    tracing::warn!(
        file = %file.display(),
        "vault.keys is empty: made a new vault key (provider tokens, signing keys, TOTP secrets) in this file (mode 0600); back it up, or set vault.keys"
    );
    Ok(())
}

pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let started = Instant::now();
    ensure_vault_key(&cfg, cfg.needs_oidc_keys())?;
    let store = super::open_store(&cfg).await?;
    // Clients registered by `authgate client add` need what config clients
    // need: signing keys (the vault) and the sign-in pages.
    let stored_clients = cfg.surfaces.oidc && !store.oidc_clients().await?.is_empty();
    if stored_clients && !cfg.surfaces.pages {
        anyhow::bail!(
            "the database holds OpenID clients (authgate client list), and the OpenID provider signs people in on the pages: set surfaces.pages = true"
        );
    }
    if stored_clients {
        ensure_vault_key(&cfg, true)?;
    }
    let (core, app, background) = assemble(&cfg, store, Arc::new(crate::core::SystemClock), None)?;
    let listener = tokio::net::TcpListener::bind(cfg.server.listen)
        .await
        .with_context(|| format!("cannot listen on {} (server.listen)", cfg.server.listen))?;
    let address = listener.local_addr()?;
    if cfg.mail.transport == MailTransport::Console {
        tracing::info!(
            "mail.transport = console: mails are printed to standard output (development only)"
        );
    }
    if cfg.surfaces.oauth {
        for p in &cfg.oauth.client_built_authorize {
            tracing::warn!(
                provider = %p,
                "oauth.client_built_authorize: /oauth/callback/from/{p} accepts a callback without the browser's flow cookie (login CSRF) and redeems its codes without PKCE or nonce"
            );
        }
    }
    // Many systems start a process with 1,024 open files; the hard limit
    // is usually far higher. Keep a reserve for the database, SMTP and
    // provider connections below whatever is in force.
    let open_files = http::raise_open_files_limit();
    let mut limits = http::ConnectionLimits::new(&cfg.server);
    if let Some(n) = open_files {
        let room = usize::try_from(n.saturating_sub(64 + cfg.database.max_connections as u64))
            .unwrap_or(usize::MAX)
            .max(16);
        if room < limits.max_connections {
            tracing::warn!(
                open_files = n,
                max_connections = room,
                "server.max_connections lowered to fit the open-files limit"
            );
            limits.max_connections = room;
            limits.max_per_client = limits.max_per_client.min(room);
        }
    }
    let background = tokio::spawn(background);
    let shutdown = http::shutdown_signal();
    tracing::info!(
        %address,
        public_url = %cfg.server.public_url(),
        database = %cfg.database.url.masked(),
        providers = ?cfg.providers.keys().collect::<Vec<_>>(),
        vault_keys = cfg.vault.keys.len(),
        open_files = open_files.unwrap_or(0),
        startup_ms = started.elapsed().as_millis() as u64,
        "authgate ready"
    );
    let result = http::serve_with(
        listener,
        app,
        shutdown,
        Duration::from_secs(cfg.server.shutdown_grace_secs),
        limits,
    )
    .await;
    background.abort();
    if let Err(e) = core.flush_touches().await {
        tracing::warn!(error = %e, "cannot write sessions' last-seen times at shutdown");
    }
    result.context("server error")?;
    tracing::info!("authgate stopped");
    Ok(())
}
