//! Whether the database is known to be unreachable. A request that finds
//! the database gone waits for the pool (up to `database.acquire_timeout_secs`)
//! once; from then on, until a background probe reaches the database again,
//! every request is refused at once (503 with `Retry-After`) instead of each
//! waiting out the same timeout. The probe runs every 50 ms, so recovery is
//! seen within about that long after the database is back.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::postgres::PgPool;

use super::StoreError;

/// How often the probe tries while the database is down.
const PROBE_EVERY: Duration = Duration::from_millis(50);
/// How long one probe may wait (a frozen server accepts and never answers).
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Default)]
pub(super) struct Reachability {
    down: AtomicBool,
}

impl Reachability {
    pub fn refuse_while_down(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable(
                "the database is unreachable (known from the last attempt; retrying in the background)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// A PostgreSQL operation failed with `e`: when it says the server
    /// cannot be reached (no connection could be made, or the connection
    /// broke), mark the database down and start the probe.
    pub fn observe(self: &Arc<Self>, e: &sqlx::Error, pool: &PgPool, max_connections: u32) {
        let unreachable = match e {
            // Timed out with free slots in the pool: connecting failed (a
            // pool full of busy connections is load, not an outage).
            sqlx::Error::PoolTimedOut => pool.size() < max_connections,
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) => true,
            _ => false,
        };
        if unreachable {
            self.mark_down(pool, e);
        }
    }

    /// The database did not answer (`why`): refuse at once until the probe
    /// reaches it again.
    pub fn mark_down(self: &Arc<Self>, pool: &PgPool, why: &dyn std::fmt::Display) {
        if self.down.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::warn!(error = %why, "database unreachable: answering 503 at once until it is back");
        let me = Arc::clone(self);
        let pool = pool.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PROBE_EVERY).await;
                let probe = sqlx::query("SELECT 1").execute(&pool);
                if let Ok(Ok(_)) = tokio::time::timeout(PROBE_TIMEOUT, probe).await {
                    me.down.store(false, Ordering::Release);
                    tracing::info!("database reachable again");
                    return;
                }
            }
        });
    }
}
