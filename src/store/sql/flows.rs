//! Single-use sign-in state: login flows, confirmations, hand-offs.
use super::*;

#[derive(sqlx::FromRow)]
pub(super) struct LoginFlowRow {
    pub(super) state_hash: Vec<u8>,
    pub(super) provider: String,
    pub(super) surface: String,
    pub(super) pkce_verifier: String,
    pub(super) nonce: String,
    pub(super) language: Option<String>,
    pub(super) redirect_to: Option<String>,
    pub(super) redirect_uri: Option<String>,
    pub(super) data: Option<String>,
    pub(super) created_at: i64,
    pub(super) expires_at: i64,
}

#[derive(sqlx::FromRow)]
pub(super) struct ConfirmationRow {
    pub(super) token_hash: Vec<u8>,
    pub(super) validation_hash: Option<Vec<u8>>,
    pub(super) user_id: String,
    pub(super) surface: String,
    pub(super) signup: bool,
    pub(super) created_at: i64,
    pub(super) expires_at: i64,
}

#[derive(sqlx::FromRow)]
pub(super) struct HandoffRow {
    pub(super) code_hash: Vec<u8>,
    pub(super) surface: String,
    pub(super) user_id: Option<String>,
    pub(super) refusal: Option<String>,
    pub(super) detail: Option<String>,
    pub(super) created_at: i64,
    pub(super) expires_at: i64,
}

impl TryFrom<HandoffRow> for Handoff {
    type Error = StoreError;

    fn try_from(r: HandoffRow) -> Result<Handoff> {
        Ok(Handoff {
            code_hash: r.code_hash,
            surface: r.surface,
            user_id: r.user_id.as_deref().map(uuid).transpose()?,
            refusal: r.refusal,
            detail: r.detail,
            created_at: r.created_at,
            expires_at: r.expires_at,
        })
    }
}

impl TryFrom<ConfirmationRow> for Confirmation {
    type Error = StoreError;

    fn try_from(r: ConfirmationRow) -> Result<Confirmation> {
        Ok(Confirmation {
            token_hash: r.token_hash,
            validation_hash: r.validation_hash,
            user_id: uuid(&r.user_id)?,
            surface: r.surface,
            signup: r.signup,
            created_at: r.created_at,
            expires_at: r.expires_at,
        })
    }
}

impl From<LoginFlowRow> for LoginFlow {
    fn from(r: LoginFlowRow) -> LoginFlow {
        LoginFlow {
            state_hash: r.state_hash,
            provider: r.provider,
            surface: r.surface,
            pkce_verifier: r.pkce_verifier,
            nonce: r.nonce,
            language: r.language,
            redirect_to: r.redirect_to,
            redirect_uri: r.redirect_uri,
            data: r.data,
            created_at: r.created_at,
            expires_at: r.expires_at,
        }
    }
}

#[async_trait]
impl FlowStore for SqlStore {
    async fn insert_login_flow(&self, f: &LoginFlow) -> Result<()> {
        with_writer!(self, |p| {
            sqlx::query(
            "INSERT INTO login_flows (state_hash, provider, surface, pkce_verifier, nonce, language, redirect_to, data, created_at, expires_at, redirect_uri) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        )
        .bind(&f.state_hash)
        .bind(&f.provider)
        .bind(&f.surface)
        .bind(&f.pkce_verifier)
        .bind(&f.nonce)
        .bind(f.language.as_deref())
        .bind(f.redirect_to.as_deref())
        .bind(f.data.as_deref())
        .bind(f.created_at)
        .bind(f.expires_at)
        .bind(f.redirect_uri.as_deref())
        .execute(p)
        .await
        .map_err(|e| self.db_err(e))
        .map(|_| ())
        })
    }

    async fn take_login_flow(
        &self,
        state_hash: &[u8],
        now: Timestamp,
    ) -> Result<Option<LoginFlow>> {
        let row: Option<LoginFlowRow> = with_writer!(self, |p| {
            sqlx::query_as(
            "DELETE FROM login_flows WHERE state_hash = $1 \
             RETURNING state_hash, provider, surface, pkce_verifier, nonce, language, redirect_to, redirect_uri, data, created_at, expires_at"
        )
        .bind(state_hash)
        .fetch_optional(p)
        .await
        .map_err(|e| self.db_err(e))
        })?;
        Ok(row.map(LoginFlow::from).filter(|f| f.expires_at > now))
    }

    async fn login_flow(&self, state_hash: &[u8], now: Timestamp) -> Result<Option<LoginFlow>> {
        let row: Option<LoginFlowRow> = with_pool!(self, |p| {
            sqlx::query_as(
                "SELECT state_hash, provider, surface, pkce_verifier, nonce, language, redirect_to, redirect_uri, data, created_at, expires_at \
                 FROM login_flows WHERE state_hash = $1 AND expires_at > $2",
            )
            .bind(state_hash)
            .bind(now)
            .fetch_optional(p)
            .await
            .map_err(|e| self.db_err(e))
        })?;
        Ok(row.map(LoginFlow::from))
    }

    async fn insert_confirmation(&self, c: &Confirmation) -> Result<()> {
        with_writer!(self, |p| {
            sqlx::query(
                "INSERT INTO confirmations (token_hash, validation_hash, user_id, surface, signup, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&c.token_hash)
            .bind(c.validation_hash.as_deref())
            .bind(c.user_id.to_string())
            .bind(&c.surface)
            .bind(c.signup)
            .bind(c.created_at)
            .bind(c.expires_at)
            .execute(p)
            .await
            .map_err(|e| self.db_err(e))
            .map(|_| ())
        })
    }

    async fn take_confirmation(
        &self,
        token_hash: &[u8],
        now: Timestamp,
    ) -> Result<Option<Confirmation>> {
        let row: Option<ConfirmationRow> = with_writer!(self, |p| {
            sqlx::query_as(
                "DELETE FROM confirmations WHERE token_hash = $1 \
                 RETURNING token_hash, validation_hash, user_id, surface, signup, created_at, expires_at",
            )
            .bind(token_hash)
            .fetch_optional(p)
            .await
            .map_err(|e| self.db_err(e))
        })?;
        row.map(Confirmation::try_from)
            .transpose()
            .map(|c| c.filter(|c| c.expires_at > now))
    }

    async fn insert_handoff(&self, h: &Handoff) -> Result<()> {
        with_writer!(self, |p| {
            sqlx::query(
                "INSERT INTO sign_in_handoffs (code_hash, surface, user_id, refusal, detail, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&h.code_hash)
            .bind(&h.surface)
            .bind(h.user_id.map(|u| u.to_string()))
            .bind(h.refusal.as_deref())
            .bind(h.detail.as_deref())
            .bind(h.created_at)
            .bind(h.expires_at)
            .execute(p)
            .await
            .map_err(|e| self.db_err(e))
            .map(|_| ())
        })
    }

    async fn take_handoff(&self, code_hash: &[u8], now: Timestamp) -> Result<Option<Handoff>> {
        let row: Option<HandoffRow> = with_writer!(self, |p| {
            sqlx::query_as(
                "DELETE FROM sign_in_handoffs WHERE code_hash = $1 \
                 RETURNING code_hash, surface, user_id, refusal, detail, created_at, expires_at",
            )
            .bind(code_hash)
            .fetch_optional(p)
            .await
            .map_err(|e| self.db_err(e))
        })?;
        row.map(Handoff::try_from)
            .transpose()
            .map(|h| h.filter(|h| h.expires_at > now))
    }

    async fn handoff(&self, code_hash: &[u8], now: Timestamp) -> Result<Option<Handoff>> {
        let row: Option<HandoffRow> = with_pool!(self, |p| {
            sqlx::query_as(
                "SELECT code_hash, surface, user_id, refusal, detail, created_at, expires_at \
                 FROM sign_in_handoffs WHERE code_hash = $1 AND expires_at > $2",
            )
            .bind(code_hash)
            .bind(now)
            .fetch_optional(p)
            .await
            .map_err(|e| self.db_err(e))
        })?;
        row.map(Handoff::try_from).transpose()
    }
}
