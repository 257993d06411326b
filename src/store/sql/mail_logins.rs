//! E-mail code logins, mail auth tokens and the outbox.
use super::*;

#[derive(sqlx::FromRow)]
pub(super) struct MailLoginRow {
    pub(super) token_hash: Vec<u8>,
    pub(super) mail: String,
    pub(super) mail_norm: String,
    pub(super) locale: String,
    pub(super) code_hash: Vec<u8>,
    pub(super) attempts_left: i64,
    pub(super) device_session_id: Option<String>,
    pub(super) created_at: i64,
    pub(super) expires_at: i64,
}

impl TryFrom<MailLoginRow> for MailLogin {
    type Error = StoreError;
    fn try_from(r: MailLoginRow) -> Result<MailLogin> {
        Ok(MailLogin {
            token_hash: r.token_hash,
            mail: r.mail,
            mail_norm: r.mail_norm,
            locale: r.locale,
            code_hash: r.code_hash,
            attempts_left: r.attempts_left,
            device_session_id: r.device_session_id.as_deref().map(uuid).transpose()?,
            created_at: r.created_at,
            expires_at: r.expires_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct MailAuthTokenRow {
    pub(super) token_hash: Vec<u8>,
    pub(super) mail: String,
    pub(super) locale: String,
    pub(super) created_at: i64,
    pub(super) expires_at: i64,
}

#[derive(sqlx::FromRow)]
pub(super) struct OutboxRow {
    pub(super) id: String,
    pub(super) recipient: String,
    pub(super) subject: String,
    pub(super) body_text: String,
    pub(super) body_html: Option<String>,
    pub(super) attempts: i64,
    pub(super) next_attempt_at: i64,
    pub(super) expires_at: i64,
    pub(super) created_at: i64,
}

#[async_trait]
impl MailLoginStore for SqlStore {
    async fn insert_mail_login(
        &self,
        hits: &[RateHit],
        admit: &(dyn for<'c> Fn(&'c [i64]) -> bool + Send + Sync),
        m: &MailLogin,
        mail: &OutboxMail,
        audit: &AuditEvent,
    ) -> Result<Vec<i64>> {
        self.refuse_while_down()?;
        // Dialect seam (see `dialect`). PostgreSQL: the counts in a
        // statement of their own (committed without waiting for the flush,
        // so the global window's row is locked for microseconds), then the
        // login in one more (a data-modifying `WITH`), or the hits given
        // back. SQLite (one writer, no row locks): one transaction, the
        // counts last, rolled back when not admitted.
        if let Pool::Postgres(p) = &self.pool {
            let counts = self.rate_limit_hits(hits).await?;
            if !admit(&counts) {
                self.give_back_hits(hits).await?;
                return Ok(counts);
            }
            sqlx::query(dialect::PG_INSERT_MAIL_LOGIN)
                .bind(&m.token_hash)
                .bind(&m.mail)
                .bind(&m.mail_norm)
                .bind(&m.locale)
                .bind(&m.code_hash)
                .bind(m.attempts_left)
                .bind(m.device_session_id.map(|u| u.to_string()))
                .bind(m.created_at)
                .bind(m.expires_at)
                .bind(mail.id.to_string())
                .bind(&mail.to)
                .bind(&mail.subject)
                .bind(&mail.text)
                .bind(mail.html.as_deref())
                .bind(mail.attempts)
                .bind(mail.next_attempt_at)
                .bind(mail.expires_at)
                .bind(mail.created_at)
                .bind(audit.at)
                .bind(&audit.kind)
                .bind(audit.user_id.map(|u| u.to_string()))
                .bind(audit.ip.as_deref())
                .bind(audit.user_agent.as_deref())
                .bind(audit.detail.as_deref())
                .execute(p)
                .await
                .map_err(|e| self.db_err(e))?;
            return Ok(counts);
        }
        with_writer!(self, |p| {
            let mut tx = p.begin().await.map_err(|e| self.db_err(e))?;
            sqlx::query("DELETE FROM mail_logins WHERE mail_norm = $1")
                .bind(&m.mail_norm)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db_err(e))?;
            sqlx::query(
                "INSERT INTO mail_logins (token_hash, mail, mail_norm, locale, code_hash, attempts_left, device_session_id, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&m.token_hash)
            .bind(&m.mail)
            .bind(&m.mail_norm)
            .bind(&m.locale)
            .bind(&m.code_hash)
            .bind(m.attempts_left)
            .bind(m.device_session_id.map(|u| u.to_string()))
            .bind(m.created_at)
            .bind(m.expires_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db_err(e))?;
            sqlx::query(
                "INSERT INTO mail_outbox (id, recipient, subject, body_text, body_html, attempts, next_attempt_at, expires_at, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(mail.id.to_string())
            .bind(&mail.to)
            .bind(&mail.subject)
            .bind(&mail.text)
            .bind(mail.html.as_deref())
            .bind(mail.attempts)
            .bind(mail.next_attempt_at)
            .bind(mail.expires_at)
            .bind(mail.created_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db_err(e))?;
            audit_insert!(audit)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db_err(e))?;
            let counts = count_hits!(self, tx, hits);
            if !admit(&counts) {
                tx.rollback().await.map_err(|e| self.db_err(e))?;
                return Ok(counts);
            }
            tx.commit().await.map_err(|e| self.db_err(e))?;
            Ok(counts)
        })
    }

    async fn spend_mail_login_attempt(
        &self,
        token_hash: &[u8],
        now: Timestamp,
    ) -> Result<Option<MailLogin>> {
        let row: Option<MailLoginRow> = with_writer!(self, |p| {
            sqlx::query_as(
            "UPDATE mail_logins SET attempts_left = attempts_left - 1 \
             WHERE token_hash = $1 AND attempts_left > 0 AND expires_at > $2 \
             RETURNING token_hash, mail, mail_norm, locale, code_hash, attempts_left, device_session_id, created_at, expires_at"
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(p)
        .await
        .map_err(|e| self.db_err(e))
        })?;
        row.map(MailLogin::try_from).transpose()
    }

    async fn delete_mail_login(&self, token_hash: &[u8]) -> Result<bool> {
        with_writer!(self, |p| sqlx::query(
            "DELETE FROM mail_logins WHERE token_hash = $1"
        )
        .bind(token_hash)
        .execute(p)
        .await
        .map_err(|e| self.db_err(e))
        .map(|r| r.rows_affected() > 0))
    }

    async fn insert_mail_auth_token(&self, t: &MailAuthToken) -> Result<()> {
        with_writer!(self, |p| {
            sqlx::query(
            "INSERT INTO mail_auth_tokens (token_hash, mail, locale, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)"
        )
        .bind(&t.token_hash)
        .bind(&t.mail)
        .bind(&t.locale)
        .bind(t.created_at)
        .bind(t.expires_at)
        .execute(p)
        .await
        .map_err(|e| self.db_err(e))
        .map(|_| ())
        })
    }

    async fn take_mail_auth_token(
        &self,
        token_hash: &[u8],
        now: Timestamp,
    ) -> Result<Option<MailAuthToken>> {
        let row: Option<MailAuthTokenRow> = with_writer!(self, |p| {
            sqlx::query_as(
            "DELETE FROM mail_auth_tokens WHERE token_hash = $1 RETURNING token_hash, mail, locale, created_at, expires_at"
        )
        .bind(token_hash)
        .fetch_optional(p)
        .await
        .map_err(|e| self.db_err(e))
        })?;
        Ok(row
            .map(|r| MailAuthToken {
                token_hash: r.token_hash,
                mail: r.mail,
                locale: r.locale,
                created_at: r.created_at,
                expires_at: r.expires_at,
            })
            .filter(|t| t.expires_at > now))
    }

    async fn claim_outbox(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<OutboxMail>> {
        // The outer condition repeats the inner one: under concurrent
        // workers PostgreSQL re-checks it on the locked row, so a mail that
        // another worker just leased is skipped, not sent twice.
        let rows: Vec<OutboxRow> = with_writer!(self, |p| {
            sqlx::query_as(
            "UPDATE mail_outbox SET leased_until = $2 \
             WHERE leased_until <= $1 AND next_attempt_at <= $1 AND id IN \
               (SELECT id FROM mail_outbox WHERE leased_until <= $1 AND next_attempt_at <= $1 \
                ORDER BY next_attempt_at LIMIT $3) \
             RETURNING id, recipient, subject, body_text, body_html, attempts, next_attempt_at, expires_at, created_at"
        )
        .bind(now)
        .bind(lease_until)
        .bind(i64::from(limit))
        .fetch_all(p)
        .await
        .map_err(|e| self.db_err(e))
        })?;
        rows.into_iter()
            .map(|r| {
                Ok(OutboxMail {
                    id: uuid(&r.id)?,
                    to: r.recipient,
                    subject: r.subject,
                    text: r.body_text,
                    html: r.body_html,
                    attempts: r.attempts,
                    next_attempt_at: r.next_attempt_at,
                    expires_at: r.expires_at,
                    created_at: r.created_at,
                })
            })
            .collect()
    }

    async fn outbox_sent(&self, ids: &[Uuid]) -> Result<()> {
        with_writer!(self, |p| {
            let mut tx = p.begin().await.map_err(|e| self.db_err(e))?;
            for id in ids {
                sqlx::query("DELETE FROM mail_outbox WHERE id = $1")
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.db_err(e))?;
            }
            tx.commit().await.map_err(|e| self.db_err(e))
        })
    }

    async fn outbox_retry(
        &self,
        id: Uuid,
        attempts: i64,
        next_attempt_at: Timestamp,
        error: &str,
    ) -> Result<()> {
        with_writer!(self, |p| {
            sqlx::query(
            "UPDATE mail_outbox SET attempts = $2, next_attempt_at = $3, leased_until = 0, last_error = $4 WHERE id = $1"
        )
        .bind(id.to_string())
        .bind(attempts)
        .bind(next_attempt_at)
        .bind(error)
        .execute(p)
        .await
        .map_err(|e| self.db_err(e))
        .map(|_| ())
        })
    }
}
