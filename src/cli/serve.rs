//! `authgate serve`.
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::config::{Config, MailTransport};
use crate::http::{self, AppState};

/// How often expired sessions, flows, codes and counters are removed.
const PURGE_EVERY: Duration = Duration::from_secs(300);

pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let started = Instant::now();
    let core = super::open_core(&cfg).await?;
    let listener = tokio::net::TcpListener::bind(cfg.server.listen)
        .await
        .with_context(|| format!("cannot listen on {} (server.listen)", cfg.server.listen))?;
    let address = listener.local_addr()?;
    let app = http::app(
        AppState {
            core: core.clone(),
            metrics: http::metrics::handle(),
        },
        &cfg.server,
    );
    if cfg.mail.transport == MailTransport::Console {
        tracing::info!(
            "mail.transport = console: mails are printed to standard output (development only)"
        );
    }
    tracing::info!(
        %address,
        public_url = %cfg.server.public_url(),
        database = %crate::config::mask_url_password(&cfg.database.url),
        startup_ms = started.elapsed().as_millis() as u64,
        "authgate ready"
    );

    let purger = tokio::spawn({
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
    });

    let result = http::serve(
        listener,
        app,
        http::shutdown_signal(),
        Duration::from_secs(cfg.server.shutdown_grace_secs),
    )
    .await;
    purger.abort();
    result.context("server error")?;
    tracing::info!("authgate stopped");
    Ok(())
}
