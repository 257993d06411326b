//! Users, their identities and consent choices.
use super::*;

#[derive(sqlx::FromRow)]
pub(super) struct UserRow {
    pub(super) id: String,
    pub(super) email: Option<String>,
    pub(super) display_name: Option<String>,
    pub(super) locale: Option<String>,
    pub(super) disabled: bool,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
}

impl TryFrom<UserRow> for User {
    type Error = StoreError;
    fn try_from(r: UserRow) -> Result<User> {
        Ok(User {
            id: uuid(&r.id)?,
            email: r.email.map(Email::from_stored),
            display_name: r.display_name,
            locale: r.locale.map(Locale::from_stored),
            disabled: r.disabled,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct IdentityRow {
    pub(super) id: String,
    pub(super) user_id: String,
    pub(super) provider: String,
    pub(super) issuer: String,
    pub(super) subject: String,
    pub(super) email: Option<String>,
    pub(super) email_verified: bool,
    pub(super) created_at: i64,
    pub(super) last_used_at: i64,
}

impl TryFrom<IdentityRow> for Identity {
    type Error = StoreError;
    fn try_from(r: IdentityRow) -> Result<Identity> {
        Ok(Identity {
            id: uuid(&r.id)?,
            user_id: uuid(&r.user_id)?,
            provider: r.provider,
            issuer: r.issuer,
            subject: r.subject,
            email: r.email,
            email_verified: r.email_verified,
            created_at: r.created_at,
            last_used_at: r.last_used_at,
        })
    }
}

#[async_trait]
impl UserStore for SqlStore {
    async fn insert_user(&self, u: &User) -> Result<()> {
        with_writer!(self, |p| sqlx::query(SQL_INSERT_USER)
            .bind(u.id.to_string())
            .bind(u.email.as_ref().map(Email::as_str))
            .bind(u.email.as_ref().map(Email::normalized))
            .bind(u.display_name.as_deref())
            .bind(u.locale.as_ref().map(Locale::as_str))
            .bind(u.disabled)
            .bind(u.created_at)
            .bind(u.updated_at)
            .execute(p)
            .await
            .map_err(|e| self.db_err(e))
            .map(|_| ()))
    }

    async fn user_by_id(&self, id: Uuid) -> Result<Option<User>> {
        let row: Option<UserRow> = with_pool!(self, |p| sqlx::query_as(SQL_USER_BY_ID)
            .bind(id.to_string())
            .fetch_optional(p)
            .await
            .map_err(|e| self.db_err(e)))?;
        row.map(User::try_from).transpose()
    }

    async fn user_by_email(&self, email_norm: &str) -> Result<Option<User>> {
        let row: Option<UserRow> = with_pool!(self, |p| sqlx::query_as(SQL_USER_BY_EMAIL)
            .bind(email_norm)
            .fetch_optional(p)
            .await
            .map_err(|e| self.db_err(e)))?;
        row.map(User::try_from).transpose()
    }

    async fn list_users(&self, offset: u64, limit: u32) -> Result<Vec<User>> {
        let rows: Vec<UserRow> = with_pool!(self, |p| {
            sqlx::query_as(
            "SELECT id, email, display_name, locale, disabled, created_at, updated_at FROM users \
             ORDER BY created_at, id LIMIT $1 OFFSET $2"
        )
        .bind(i64::from(limit))
        .bind(count(offset))
        .fetch_all(p)
        .await
        .map_err(|e| self.db_err(e))
        })?;
        rows.into_iter().map(User::try_from).collect()
    }

    async fn update_user_profile(
        &self,
        id: Uuid,
        display_name: Option<&str>,
        locale: Option<&str>,
        now: Timestamp,
    ) -> Result<bool> {
        with_writer!(self, |p| {
            let updated = sqlx::query(
                "UPDATE users SET display_name = $2, locale = $3, updated_at = $4 WHERE id = $1",
            )
            .bind(id.to_string())
            .bind(display_name)
            .bind(locale)
            .bind(now)
            .execute(p)
            .await
            .map_err(|e| self.db_err(e))?
            .rows_affected();
            Ok(updated > 0)
        })
    }

    async fn set_user_disabled(
        &self,
        id: Uuid,
        disabled: bool,
        now: Timestamp,
    ) -> Result<Option<u64>> {
        with_writer!(self, |p| {
            let mut tx = p.begin().await.map_err(|e| self.db_err(e))?;
            let updated =
                sqlx::query("UPDATE users SET disabled = $2, updated_at = $3 WHERE id = $1")
                    .bind(id.to_string())
                    .bind(disabled)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.db_err(e))?
                    .rows_affected();
            if updated == 0 {
                return Ok(None);
            }
            let mut ended = 0;
            if disabled {
                ended = sqlx::query("DELETE FROM sessions WHERE user_id = $1")
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.db_err(e))?
                    .rows_affected();
            }
            tx.commit().await.map_err(|e| self.db_err(e))?;
            Ok(Some(ended))
        })
    }

    async fn delete_user(&self, id: Uuid) -> Result<bool> {
        with_writer!(self, |p| sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id.to_string())
            .execute(p)
            .await
            .map_err(|e| self.db_err(e))
            .map(|r| r.rows_affected() > 0))
    }

    async fn import_users(
        &self,
        rows: &[NewUser],
        now: Timestamp,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<ImportReport> {
        with_writer!(self, |p| {
            let mut report = ImportReport::default();
            let mut tx = p.begin().await.map_err(|e| self.db_err(e))?;
            for (i, row) in rows.iter().enumerate() {
                let existing: Option<UserRow> = sqlx::query_as(SQL_USER_BY_EMAIL)
                    .bind(row.email.normalized())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(|e| self.db_err(e))?;
                let name = row.display_name.as_deref();
                let locale = row.locale.as_ref().map(Locale::as_str);
                match existing {
                    None => {
                        sqlx::query(SQL_INSERT_USER)
                            .bind(Uuid::now_v7().to_string())
                            .bind(row.email.as_str())
                            .bind(row.email.normalized())
                            .bind(name)
                            .bind(locale)
                            .bind(false)
                            .bind(now)
                            .bind(now)
                            .execute(&mut *tx)
                            .await
                            .map_err(|e| self.db_err(e))?;
                        report.created += 1;
                    }
                    Some(old) => {
                        let new_name = name.map(str::to_string).or(old.display_name.clone());
                        let new_locale = locale.map(str::to_string).or(old.locale.clone());
                        if new_name == old.display_name && new_locale == old.locale {
                            report.unchanged += 1;
                        } else {
                            sqlx::query(
                                "UPDATE users SET display_name = $2, locale = $3, updated_at = $4 WHERE id = $1",
                            )
                            .bind(&old.id)
                            .bind(new_name)
                            .bind(new_locale)
                            .bind(now)
                            .execute(&mut *tx)
                            .await
                            .map_err(|e| self.db_err(e))?;
                            report.updated += 1;
                        }
                    }
                }
                progress(i as u64 + 1);
            }
            tx.commit().await.map_err(|e| self.db_err(e))?;
            Ok(report)
        })
    }

    async fn insert_identity(&self, i: &Identity) -> Result<()> {
        with_writer!(self, |p| {
            sqlx::query(SQL_INSERT_IDENTITY)
                .bind(i.id.to_string())
                .bind(i.user_id.to_string())
                .bind(&i.provider)
                .bind(&i.issuer)
                .bind(&i.subject)
                .bind(i.email.as_deref())
                .bind(i.email_verified)
                .bind(i.created_at)
                .bind(i.last_used_at)
                .execute(p)
                .await
                .map_err(|e| self.db_err(e))
                .map(|_| ())
        })
    }

    async fn delete_identity(&self, user_id: Uuid, identity_id: Uuid) -> Result<bool> {
        with_writer!(self, |p| {
            sqlx::query("DELETE FROM identities WHERE id = $1 AND user_id = $2")
                .bind(identity_id.to_string())
                .bind(user_id.to_string())
                .execute(p)
                .await
                .map_err(|e| self.db_err(e))
                .map(|r| r.rows_affected() > 0)
        })
    }

    async fn insert_user_with_identity(&self, u: &User, i: &Identity) -> Result<()> {
        with_writer!(self, |p| {
            let mut tx = p.begin().await.map_err(|e| self.db_err(e))?;
            sqlx::query(SQL_INSERT_USER)
                .bind(u.id.to_string())
                .bind(u.email.as_ref().map(Email::as_str))
                .bind(u.email.as_ref().map(Email::normalized))
                .bind(u.display_name.as_deref())
                .bind(u.locale.as_ref().map(Locale::as_str))
                .bind(u.disabled)
                .bind(u.created_at)
                .bind(u.updated_at)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db_err(e))?;
            sqlx::query(SQL_INSERT_IDENTITY)
                .bind(i.id.to_string())
                .bind(i.user_id.to_string())
                .bind(&i.provider)
                .bind(&i.issuer)
                .bind(&i.subject)
                .bind(i.email.as_deref())
                .bind(i.email_verified)
                .bind(i.created_at)
                .bind(i.last_used_at)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db_err(e))?;
            tx.commit().await.map_err(|e| self.db_err(e))
        })
    }

    async fn identity_with_user(
        &self,
        provider: &str,
        issuer: &str,
        subject: &str,
    ) -> Result<Option<(Identity, User)>> {
        let row: Option<IdentityRow> = with_pool!(self, |p| {
            sqlx::query_as(
            "SELECT id, user_id, provider, issuer, subject, email, email_verified, created_at, last_used_at \
             FROM identities WHERE provider = $1 AND issuer = $2 AND subject = $3"
        )
        .bind(provider)
        .bind(issuer)
        .bind(subject)
        .fetch_optional(p)
        .await
        .map_err(|e| self.db_err(e))
        })?;
        let Some(identity) = row.map(Identity::try_from).transpose()? else {
            return Ok(None);
        };
        // The foreign key guarantees the user; a missing one means a
        // concurrent delete, which reads as "no such identity".
        Ok(self
            .user_by_id(identity.user_id)
            .await?
            .map(|u| (identity, u)))
    }

    async fn identities_of(&self, user_id: Uuid) -> Result<Vec<Identity>> {
        let rows: Vec<IdentityRow> = with_pool!(self, |p| {
            sqlx::query_as(
            "SELECT id, user_id, provider, issuer, subject, email, email_verified, created_at, last_used_at \
             FROM identities WHERE user_id = $1 ORDER BY created_at, id"
        )
        .bind(user_id.to_string())
        .fetch_all(p)
        .await
        .map_err(|e| self.db_err(e))
        })?;
        rows.into_iter().map(Identity::try_from).collect()
    }

    async fn identities_of_users(&self, users: &[Uuid]) -> Result<Vec<Identity>> {
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "SELECT id, user_id, provider, issuer, subject, email, email_verified, created_at, last_used_at \
                 FROM identities WHERE user_id IN ({}) ORDER BY created_at, id",
                chunk_marks(1)
            )
        });
        let mut out = Vec::new();
        for chunk in users.chunks(CHUNK) {
            let rows: Vec<IdentityRow> =
                fetch_chunk!(self, SQL.as_str(), chunk, |u| u.to_string())?;
            for r in rows {
                out.push(Identity::try_from(r)?);
            }
        }
        Ok(out)
    }

    async fn touch_identity(
        &self,
        id: Uuid,
        email: Option<&str>,
        email_verified: bool,
        now: Timestamp,
    ) -> Result<()> {
        with_writer!(self, |p| sqlx::query(
            "UPDATE identities SET email = $2, email_verified = $3, last_used_at = $4 WHERE id = $1"
        )
        .bind(id.to_string())
        .bind(email)
        .bind(email_verified)
        .bind(now)
        .execute(p)
        .await
        .map_err(|e| self.db_err(e))
        .map(|_| ()))
    }

    async fn put_user_consent(&self, user_id: Uuid, consent: &str, now: Timestamp) -> Result<()> {
        with_writer!(self, |p| {
            sqlx::query(
                "INSERT INTO user_consents (user_id, consent, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (user_id) DO UPDATE SET consent = excluded.consent, updated_at = excluded.updated_at",
            )
            .bind(user_id.to_string())
            .bind(consent)
            .bind(now)
            .execute(p)
            .await
            .map_err(|e| self.db_err(e))
            .map(|_| ())
        })
    }

    async fn user_consent(&self, user_id: Uuid) -> Result<Option<String>> {
        with_pool!(self, |p| sqlx::query_scalar(
            "SELECT consent FROM user_consents WHERE user_id = $1"
        )
        .bind(user_id.to_string())
        .fetch_optional(p)
        .await
        .map_err(|e| self.db_err(e)))
    }
}
