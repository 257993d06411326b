//! Providers' tokens (ciphertext only).
use super::*;

#[derive(sqlx::FromRow)]
pub(super) struct ProviderTokensRow {
    pub(super) identity_id: String,
    pub(super) access_token: Vec<u8>,
    pub(super) refresh_token: Option<Vec<u8>>,
    pub(super) expires_at: Option<i64>,
    pub(super) scope: Option<String>,
    pub(super) updated_at: i64,
}

impl ProviderTokensRow {
    fn into_model(self) -> Result<ProviderTokens> {
        Ok(ProviderTokens {
            identity_id: uuid(&self.identity_id)?,
            access_token: self.access_token,
            refresh_token: self.refresh_token,
            expires_at: self.expires_at,
            scope: self.scope,
            updated_at: self.updated_at,
        })
    }
}

#[async_trait]
impl TokenStore for SqlStore {
    async fn put_provider_tokens(&self, t: &ProviderTokens) -> Result<()> {
        with_writer!(self, |p| {
            sqlx::query(
            "INSERT INTO provider_tokens (identity_id, access_token, refresh_token, expires_at, scope, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (identity_id) DO UPDATE SET access_token = excluded.access_token, \
             refresh_token = excluded.refresh_token, expires_at = excluded.expires_at, \
             scope = excluded.scope, updated_at = excluded.updated_at"
        )
        .bind(t.identity_id.to_string())
        .bind(&t.access_token)
        .bind(t.refresh_token.as_deref())
        .bind(t.expires_at)
        .bind(t.scope.as_deref())
        .bind(t.updated_at)
        .execute(p)
        .await
        .map_err(|e| self.db_err(e))
        .map(|_| ())
        })
    }

    async fn provider_tokens(&self, identity_id: Uuid) -> Result<Option<ProviderTokens>> {
        let row: Option<ProviderTokensRow> = with_pool!(self, |p| sqlx::query_as(
            "SELECT identity_id, access_token, refresh_token, expires_at, scope, updated_at \
             FROM provider_tokens WHERE identity_id = $1"
        )
        .bind(identity_id.to_string())
        .fetch_optional(p)
        .await
        .map_err(|e| self.db_err(e)))?;
        row.map(ProviderTokensRow::into_model).transpose()
    }

    async fn provider_tokens_after(
        &self,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<ProviderTokens>> {
        let after = after.map(|u| u.to_string()).unwrap_or_default();
        let rows: Vec<ProviderTokensRow> = with_pool!(self, |p| sqlx::query_as(
            "SELECT identity_id, access_token, refresh_token, expires_at, scope, updated_at \
             FROM provider_tokens WHERE identity_id > $1 ORDER BY identity_id LIMIT $2"
        )
        .bind(&after)
        .bind(i64::from(limit))
        .fetch_all(p)
        .await
        .map_err(|e| self.db_err(e)))?;
        rows.into_iter()
            .map(ProviderTokensRow::into_model)
            .collect()
    }
}
