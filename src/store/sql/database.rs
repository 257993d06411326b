//! Pools, migrations, reachability checks, cross-instance signalling of session changes, purging.
use super::*;

#[async_trait]
impl Database for SqlStore {
    fn backend(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite { .. } => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    async fn ping(&self) -> Result<()> {
        // Known down: say so at once (the probe finds out when it is back).
        self.refuse_while_down()?;
        let fut = async {
            match &self.pool {
                Pool::Sqlite { read, .. } => {
                    sqlx::query("SELECT 1").execute(read).await.map(|_| ())
                }
                Pool::Postgres(p) => sqlx::query("SELECT 1").execute(p).await.map(|_| ()),
            }
        };
        match tokio::time::timeout(Duration::from_secs(2), fut).await {
            Ok(r) => r.map_err(|e| StoreError::Unavailable(self.db_err(e).to_string())),
            Err(_) => {
                if let Pool::Postgres(p) = &self.pool {
                    self.reach.mark_down(p, &"no answer to a ping within 2 s");
                }
                Err(StoreError::Unavailable("ping timed out".into()))
            }
        }
    }

    async fn migrate(&self) -> Result<()> {
        match &self.pool {
            Pool::Sqlite { write, .. } => SQLITE_MIGRATOR.run(write).await,
            Pool::Postgres(p) => POSTGRES_MIGRATOR.run(p).await,
        }
        .map_err(|e| StoreError::Migration(e.to_string()))
    }

    async fn close(&self) {
        match &self.pool {
            Pool::Sqlite { read, write } => {
                write.close().await;
                read.close().await;
            }
            Pool::Postgres(p) => p.close().await,
        }
    }

    fn sessions_marker(&self) -> Option<(u64, i128)> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(self.marker.as_ref()?).ok()?;
        Some((
            m.ino(),
            i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        ))
    }

    async fn announce_sessions_changed(&self, payload: &str) -> Result<()> {
        match &self.pool {
            Pool::Sqlite { .. } => {
                let Some(marker) = &self.marker else {
                    return Ok(());
                };
                // Write aside and rename: a new inode every time, so a
                // reader's `stat` cannot miss a change.
                let mut tmp = marker.as_os_str().to_owned();
                tmp.push(format!(".{}", uuid::Uuid::now_v7().simple()));
                let tmp = std::path::PathBuf::from(tmp);
                std::fs::write(&tmp, payload)
                    .and_then(|()| std::fs::rename(&tmp, marker))
                    .map_err(|e| StoreError::Database(format!("session marker: {e}")))
            }
            Pool::Postgres(p) => sqlx::query("SELECT pg_notify($1, $2)")
                .bind(crate::store::SESSIONS_CHANNEL)
                .bind(payload)
                .execute(p)
                .await
                .map_err(|e| self.db_err(e))
                .map(|_| ()),
        }
    }

    async fn purge_expired(&self, now: Timestamp) -> Result<u64> {
        const PURGES: [&str; 12] = [
            "DELETE FROM oidc_assertions WHERE expires_at <= $1",
            "DELETE FROM oidc_codes WHERE expires_at <= $1",
            "DELETE FROM oidc_tokens WHERE expires_at <= $1",
            "DELETE FROM oidc_grants WHERE expires_at <= $1",
            "DELETE FROM confirmations WHERE expires_at <= $1",
            "DELETE FROM sign_in_handoffs WHERE expires_at <= $1",
            "DELETE FROM sessions WHERE expires_at <= $1 OR last_seen_at + idle_timeout <= $1",
            "DELETE FROM login_flows WHERE expires_at <= $1",
            "DELETE FROM mail_logins WHERE expires_at <= $1",
            "DELETE FROM rate_limits WHERE expires_at <= $1",
            "DELETE FROM mail_auth_tokens WHERE expires_at <= $1",
            "DELETE FROM mail_outbox WHERE expires_at <= $1",
        ];
        let mut removed = 0;
        for sql in PURGES {
            removed += with_writer!(self, |p| sqlx::query(sql)
                .bind(now)
                .execute(p)
                .await
                .map_err(|e| self.db_err(e))?
                .rows_affected());
        }
        Ok(removed)
    }
}
