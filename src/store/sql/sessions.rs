//! Sessions (token hashes only), read with their users.
use super::*;

#[derive(sqlx::FromRow)]
pub(super) struct SessionRow {
    pub(super) id: String,
    pub(super) user_id: String,
    pub(super) created_at: i64,
    pub(super) last_seen_at: i64,
    pub(super) idle_timeout: i64,
    pub(super) expires_at: i64,
    pub(super) ip: Option<String>,
    pub(super) user_agent: Option<String>,
    pub(super) kind: String,
    pub(super) method: String,
}

impl TryFrom<SessionRow> for Session {
    type Error = StoreError;
    fn try_from(r: SessionRow) -> Result<Session> {
        Ok(Session {
            id: uuid(&r.id)?,
            user_id: uuid(&r.user_id)?,
            created_at: r.created_at,
            last_seen_at: r.last_seen_at,
            idle_timeout: r.idle_timeout,
            expires_at: r.expires_at,
            ip: r.ip,
            user_agent: r.user_agent,
            kind: r.kind,
            method: r.method,
        })
    }
}

/// The hot path's one query: the session and its user, joined.
#[derive(sqlx::FromRow)]
pub(super) struct SessionUserRow {
    #[sqlx(flatten)]
    pub(super) session: SessionRow,
    pub(super) u_email: Option<String>,
    pub(super) u_display_name: Option<String>,
    pub(super) u_locale: Option<String>,
    pub(super) u_disabled: bool,
    pub(super) u_created_at: i64,
    pub(super) u_updated_at: i64,
}

pub(super) fn session_user(r: SessionUserRow) -> Result<(Session, User)> {
    let session = Session::try_from(r.session)?;
    let user = User {
        id: session.user_id,
        email: r.u_email.map(Email::from_stored),
        display_name: r.u_display_name,
        locale: r.u_locale.map(Locale::from_stored),
        disabled: r.u_disabled,
        created_at: r.u_created_at,
        updated_at: r.u_updated_at,
    };
    Ok((session, user))
}

/// A session with its user and token hash (warm-up, batched re-reads).
#[derive(sqlx::FromRow)]
pub(super) struct RecentSessionRow {
    #[sqlx(flatten)]
    pub(super) row: SessionUserRow,
    pub(super) token_hash: Vec<u8>,
}

#[async_trait]
impl SessionStore for SqlStore {
    async fn insert_session(
        &self,
        s: &Session,
        token_hash: &[u8],
        parent: Option<Uuid>,
    ) -> Result<()> {
        with_writer!(self, |p| {
            sqlx::query(
            "INSERT INTO sessions (id, token_hash, user_id, created_at, last_seen_at, idle_timeout, expires_at, ip, user_agent, kind, method, parent_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        )
        .bind(s.id.to_string())
        .bind(token_hash)
        .bind(s.user_id.to_string())
        .bind(s.created_at)
        .bind(s.last_seen_at)
        .bind(s.idle_timeout)
        .bind(s.expires_at)
        .bind(s.ip.as_deref())
        .bind(s.user_agent.as_deref())
        .bind(&s.kind)
        .bind(&s.method)
        .bind(parent.map(|u| u.to_string()))
        .execute(p)
        .await
        .map_err(|e| self.db_err(e))
        .map(|_| ())
        })
    }

    async fn session_by_token_hash(&self, token_hash: &[u8]) -> Result<Option<(Session, User)>> {
        let row: Option<SessionUserRow> =
            with_pool!(self, |p| sqlx::query_as(SQL_SESSION_BY_HASH)
                .bind(token_hash)
                .fetch_optional(p)
                .await
                .map_err(|e| self.db_err(e)))?;
        row.map(session_user).transpose()
    }

    async fn sessions_by_token_hashes(
        &self,
        hashes: &[[u8; 32]],
    ) -> Result<Vec<(Vec<u8>, Session, User)>> {
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "{}WHERE s.token_hash IN ({})",
                session_user_select!(),
                chunk_marks(1)
            )
        });
        let mut out = Vec::with_capacity(hashes.len());
        for chunk in hashes.chunks(CHUNK) {
            let rows: Vec<RecentSessionRow> =
                fetch_chunk!(self, SQL.as_str(), chunk, |h| h.to_vec())?;
            for r in rows {
                let (session, user) = session_user(r.row)?;
                out.push((r.token_hash, session, user));
            }
        }
        Ok(out)
    }

    async fn recent_sessions(
        &self,
        since: Timestamp,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Session, User)>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<RecentSessionRow> =
            with_pool!(self, |p| sqlx::query_as(SQL_RECENT_SESSIONS)
                .bind(since)
                .bind(limit)
                .fetch_all(p)
                .await
                .map_err(|e| self.db_err(e)))?;
        rows.into_iter()
            .map(|r| {
                let (session, user) = session_user(r.row)?;
                Ok((r.token_hash, session, user))
            })
            .collect()
    }

    async fn identities_of_recent_sessions(
        &self,
        since: Timestamp,
        limit: usize,
    ) -> Result<Vec<Identity>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<IdentityRow> = with_pool!(self, |p| {
            sqlx::query_as(
            "SELECT id, user_id, provider, issuer, subject, email, email_verified, created_at, last_used_at \
             FROM identities WHERE user_id IN (SELECT user_id FROM sessions WHERE last_seen_at >= $1 \
             ORDER BY last_seen_at DESC LIMIT $2) ORDER BY created_at, id"
        )
        .bind(since)
        .bind(limit)
        .fetch_all(p)
        .await
        .map_err(|e| self.db_err(e))
        })?;
        rows.into_iter().map(Identity::try_from).collect()
    }

    async fn touch_sessions(&self, ids: &[Uuid], now: Timestamp) -> Result<()> {
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "UPDATE sessions SET last_seen_at = CASE WHEN last_seen_at < $1 THEN $1 ELSE last_seen_at END \
                 WHERE id IN ({})",
                chunk_marks(2)
            )
        });
        for chunk in ids.chunks(CHUNK) {
            let ids: Vec<String> = chunk.iter().map(Uuid::to_string).collect();
            with_writer!(self, |p| {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(SQL.as_str())).bind(now);
                for k in 0..CHUNK {
                    q = q.bind(ids[k.min(ids.len() - 1)].clone());
                }
                q.execute(p).await.map(|_| ()).map_err(|e| self.db_err(e))
            })?;
        }
        Ok(())
    }

    async fn delete_session(&self, id: Uuid) -> Result<bool> {
        with_writer!(self, |p| sqlx::query(
            "DELETE FROM sessions WHERE id = $1 OR parent_id = $1"
        )
        .bind(id.to_string())
        .execute(p)
        .await
        .map_err(|e| self.db_err(e))
        .map(|r| r.rows_affected() > 0))
    }

    async fn delete_session_by_token_hash(&self, token_hash: &[u8]) -> Result<Option<Session>> {
        let row: Option<SessionRow> = with_writer!(self, |p| {
            sqlx::query_as(
            "DELETE FROM sessions WHERE token_hash = $1 \
             RETURNING id, user_id, created_at, last_seen_at, idle_timeout, expires_at, ip, user_agent, kind, method"
        )
        .bind(token_hash)
        .fetch_optional(p)
        .await
        .map_err(|e| self.db_err(e))
        })?;
        row.map(Session::try_from).transpose()
    }

    async fn delete_child_sessions(&self, parent: Uuid) -> Result<u64> {
        with_writer!(self, |p| sqlx::query(
            "DELETE FROM sessions WHERE parent_id = $1"
        )
        .bind(parent.to_string())
        .execute(p)
        .await
        .map_err(|e| self.db_err(e))
        .map(|r| r.rows_affected()))
    }

    async fn delete_session_family(&self, token_hash: &[u8]) -> Result<Vec<Session>> {
        let rows: Vec<SessionRow> = with_writer!(self, |p| {
            sqlx::query_as(
            "DELETE FROM sessions WHERE id IN (SELECT COALESCE(parent_id, id) FROM sessions WHERE token_hash = $1) \
             OR parent_id IN (SELECT COALESCE(parent_id, id) FROM sessions WHERE token_hash = $1) \
             RETURNING id, user_id, created_at, last_seen_at, idle_timeout, expires_at, ip, user_agent, kind, method"
        )
        .bind(token_hash)
        .fetch_all(p)
        .await
        .map_err(|e| self.db_err(e))
        })?;
        rows.into_iter().map(Session::try_from).collect()
    }

    async fn delete_user_sessions(&self, user_id: Uuid) -> Result<u64> {
        with_writer!(self, |p| sqlx::query(
            "DELETE FROM sessions WHERE user_id = $1"
        )
        .bind(user_id.to_string())
        .execute(p)
        .await
        .map_err(|e| self.db_err(e))
        .map(|r| r.rows_affected()))
    }

    async fn list_sessions(
        &self,
        user_id: Option<Uuid>,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<Session>> {
        let rows: Vec<SessionRow> = match user_id {
            Some(uid) => with_pool!(self, |p| {
                sqlx::query_as(
                "SELECT id, user_id, created_at, last_seen_at, idle_timeout, expires_at, ip, user_agent, kind, method FROM sessions \
                 WHERE expires_at > $1 AND last_seen_at + idle_timeout > $1 AND user_id = $3 \
                 ORDER BY created_at DESC, id DESC LIMIT $2"
            )
            .bind(now)
            .bind(i64::from(limit))
            .bind(uid.to_string())
            .fetch_all(p)
            .await
            .map_err(|e| self.db_err(e))
            })?,
            None => with_pool!(self, |p| {
                sqlx::query_as(
                "SELECT id, user_id, created_at, last_seen_at, idle_timeout, expires_at, ip, user_agent, kind, method FROM sessions \
                 WHERE expires_at > $1 AND last_seen_at + idle_timeout > $1 \
                 ORDER BY created_at DESC, id DESC LIMIT $2"
            )
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(p)
            .await
            .map_err(|e| self.db_err(e))
            })?,
        };
        rows.into_iter().map(Session::try_from).collect()
    }
}
