//! The OpenID provider: signing keys (sealed), grants, codes and tokens
//! (hashes only).
use super::*;
use crate::core::oidc::{AuthCode, Grant, IssuedToken, SigningKey, Spend, StoredClient, TokenKind};

#[derive(sqlx::FromRow)]
struct KeyRow {
    kid: String,
    alg: String,
    private_key: Vec<u8>,
    public_jwk: String,
    created_at: i64,
    signs_from: i64,
    retired_at: Option<i64>,
    published_until: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct ClientRow {
    id: String,
    secret_hash: Option<Vec<u8>>,
    settings: String,
    created_at: i64,
    updated_at: i64,
}

#[derive(sqlx::FromRow)]
struct GrantRow {
    id: String,
    client_id: String,
    user_id: Option<String>,
    session_id: Option<String>,
    scope: String,
    auth_time: Option<i64>,
    amr: String,
    nonce: Option<String>,
    created_at: i64,
    expires_at: i64,
    revoked_at: Option<i64>,
}

impl GrantRow {
    fn into_model(self) -> Result<Grant> {
        Ok(Grant {
            id: uuid(&self.id)?,
            client_id: self.client_id,
            user_id: self.user_id.as_deref().map(uuid).transpose()?,
            session_id: self.session_id.as_deref().map(uuid).transpose()?,
            scope: self.scope,
            auth_time: self.auth_time,
            amr: self.amr,
            nonce: self.nonce,
            created_at: self.created_at,
            expires_at: self.expires_at,
            revoked_at: self.revoked_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct CodeRow {
    code_hash: Vec<u8>,
    grant_id: String,
    redirect_uri: String,
    code_challenge: Option<String>,
    created_at: i64,
    expires_at: i64,
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    token_hash: Vec<u8>,
    grant_id: String,
    kind: String,
    created_at: i64,
    expires_at: i64,
    used_at: Option<i64>,
}

impl TokenRow {
    fn into_model(self) -> Result<IssuedToken> {
        Ok(IssuedToken {
            token_hash: self.token_hash,
            grant_id: uuid(&self.grant_id)?,
            kind: TokenKind::parse(&self.kind)
                .ok_or_else(|| StoreError::Corrupt(format!("token kind {:?}", self.kind)))?,
            created_at: self.created_at,
            expires_at: self.expires_at,
            used_at: self.used_at,
        })
    }
}

/// [`OidcStore::oidc_token`]'s joined row.
#[derive(sqlx::FromRow)]
struct TokenGrantUserRow {
    token_hash: Vec<u8>,
    grant_id: String,
    kind: String,
    created_at: i64,
    expires_at: i64,
    used_at: Option<i64>,
    id: String,
    client_id: String,
    user_id: Option<String>,
    session_id: Option<String>,
    scope: String,
    auth_time: Option<i64>,
    amr: String,
    nonce: Option<String>,
    g_created_at: i64,
    g_expires_at: i64,
    revoked_at: Option<i64>,
    u_email: Option<String>,
    u_display_name: Option<String>,
    u_locale: Option<String>,
    u_disabled: Option<bool>,
    u_created_at: Option<i64>,
    u_updated_at: Option<i64>,
}

const SQL_GRANT: &str = "SELECT id, client_id, user_id, session_id, scope, auth_time, amr, nonce, created_at, expires_at, revoked_at \
     FROM oidc_grants WHERE id = $1";
const SQL_INSERT_TOKEN: &str = "INSERT INTO oidc_tokens (token_hash, grant_id, kind, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)";

const SQL_INSERT_TWO_TOKENS: &str = "INSERT INTO oidc_tokens (token_hash, grant_id, kind, created_at, expires_at) \
     VALUES ($1, $2, $3, $4, $5), ($6, $7, $8, $9, $10)";

/// Bind an [`IssuedToken`]'s five columns to a query.
macro_rules! bind_token {
    ($q:expr, $t:expr) => {
        $q.bind(&$t.token_hash)
            .bind($t.grant_id.to_string())
            .bind($t.kind.as_str())
            .bind($t.created_at)
            .bind($t.expires_at)
    };
}

/// [`SQL_INSERT_TOKEN`] with an [`IssuedToken`] bound.
macro_rules! token_insert {
    ($t:expr) => {
        bind_token!(sqlx::query(SQL_INSERT_TOKEN), $t)
    };
}

/// A grant with its person's columns (`u_*`), as [`SQL_GRANT_USER`] reads.
#[derive(sqlx::FromRow)]
struct GrantUserRow {
    #[sqlx(flatten)]
    grant: GrantRow,
    u_email: Option<String>,
    u_display_name: Option<String>,
    u_locale: Option<String>,
    u_disabled: Option<bool>,
    u_created_at: Option<i64>,
    u_updated_at: Option<i64>,
}

const SQL_GRANT_USER: &str = "SELECT g.id, g.client_id, g.user_id, g.session_id, g.scope, g.auth_time, g.amr, g.nonce, \
     g.created_at, g.expires_at, g.revoked_at, \
     u.email AS u_email, u.display_name AS u_display_name, u.locale AS u_locale, \
     u.disabled AS u_disabled, u.created_at AS u_created_at, u.updated_at AS u_updated_at \
     FROM oidc_grants g LEFT JOIN users u ON u.id = g.user_id WHERE g.id = $1";

/// The person of a joined row (none: a machine's grant, or the person is
/// gone).
#[allow(clippy::too_many_arguments)]
fn joined_user(
    id: Option<Uuid>,
    email: Option<String>,
    display_name: Option<String>,
    locale: Option<String>,
    disabled: Option<bool>,
    created_at: Option<i64>,
    updated_at: Option<i64>,
) -> Option<User> {
    match (id, created_at, updated_at, disabled) {
        (Some(id), Some(created_at), Some(updated_at), Some(disabled)) => Some(User {
            id,
            email: email.map(Email::from_stored),
            display_name,
            locale: locale.map(Locale::from_stored),
            disabled,
            created_at,
            updated_at,
        }),
        _ => None,
    }
}

impl SqlStore {
    /// A grant and its person, in one read.
    async fn grant_with_user(&self, id: &str) -> Result<Option<(Grant, Option<User>)>> {
        let row: Option<GrantUserRow> = with_pool!(self, |p| sqlx::query_as(SQL_GRANT_USER)
            .bind(id)
            .fetch_optional(p)
            .await
            .map_err(|e| self.db_err(e)))?;
        let Some(r) = row else { return Ok(None) };
        let grant = r.grant.into_model()?;
        let user = joined_user(
            grant.user_id,
            r.u_email,
            r.u_display_name,
            r.u_locale,
            r.u_disabled,
            r.u_created_at,
            r.u_updated_at,
        );
        Ok(Some((grant, user)))
    }

    async fn grant(&self, id: &str) -> Result<Option<Grant>> {
        let row: Option<GrantRow> = with_pool!(self, |p| sqlx::query_as(SQL_GRANT)
            .bind(id)
            .fetch_optional(p)
            .await
            .map_err(|e| self.db_err(e)))?;
        row.map(GrantRow::into_model).transpose()
    }

    /// The grant of a spent credential (`spent_sql` selects its grant id
    /// and the moment it was spent, by hash and client), as a [`Spend`].
    async fn spent_before<T>(
        &self,
        spent_sql: &'static str,
        hash: &[u8],
        client_id: &str,
    ) -> Result<Spend<T>> {
        let row: Option<(String, Option<i64>)> = with_pool!(self, |p| sqlx::query_as(spent_sql)
            .bind(hash)
            .bind(client_id)
            .fetch_optional(p)
            .await
            .map_err(|e| self.db_err(e)))?;
        Ok(match row {
            Some((grant, Some(_))) => Spend::Reused(uuid(&grant)?),
            _ => Spend::Unknown,
        })
    }
}

#[async_trait]
impl OidcStore for SqlStore {
    async fn oidc_keys(&self) -> Result<Vec<SigningKey>> {
        let rows: Vec<KeyRow> = with_pool!(self, |p| {
            sqlx::query_as(
            "SELECT kid, alg, private_key, public_jwk, created_at, signs_from, retired_at, published_until FROM oidc_keys"
        )
        .fetch_all(p)
        .await
        .map_err(|e| self.db_err(e))
        })?;
        rows.into_iter()
            .map(|r| {
                Ok(SigningKey {
                    kid: uuid(&r.kid)?,
                    alg: r.alg,
                    private_key: r.private_key,
                    public_jwk: r.public_jwk,
                    created_at: r.created_at,
                    signs_from: r.signs_from,
                    retired_at: r.retired_at,
                    published_until: r.published_until,
                })
            })
            .collect()
    }

    async fn reseal_oidc_key(&self, kid: Uuid, private_key: &[u8]) -> Result<()> {
        with_writer!(self, |p| sqlx::query(
            "UPDATE oidc_keys SET private_key = $2 WHERE kid = $1"
        )
        .bind(kid.to_string())
        .bind(private_key)
        .execute(p)
        .await
        .map_err(|e| self.db_err(e))
        .map(|_| ()))
    }

    async fn insert_oidc_key(
        &self,
        key: &SigningKey,
        retire: Option<(Timestamp, Timestamp)>,
    ) -> Result<()> {
        with_writer!(self, |p| {
            let mut tx = p.begin().await.map_err(|e| self.db_err(e))?;
            if let Some((at, until)) = retire {
                sqlx::query(
                    "UPDATE oidc_keys SET retired_at = $1, published_until = $2 WHERE retired_at IS NULL OR retired_at > $1",
                )
                .bind(at)
                .bind(until)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db_err(e))?;
            }
            sqlx::query(
                "INSERT INTO oidc_keys (kid, alg, private_key, public_jwk, created_at, signs_from, retired_at, published_until) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(key.kid.to_string())
            .bind(&key.alg)
            .bind(&key.private_key)
            .bind(&key.public_jwk)
            .bind(key.created_at)
            .bind(key.signs_from)
            .bind(key.retired_at)
            .bind(key.published_until)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db_err(e))?;
            tx.commit().await.map_err(|e| self.db_err(e))
        })
    }

    async fn insert_oidc_grant(
        &self,
        g: &Grant,
        code: Option<&AuthCode>,
        tokens: &[IssuedToken],
    ) -> Result<()> {
        with_writer!(self, |p| {
            let mut tx = p.begin().await.map_err(|e| self.db_err(e))?;
            sqlx::query(
                "INSERT INTO oidc_grants (id, client_id, user_id, session_id, scope, auth_time, amr, nonce, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(g.id.to_string())
            .bind(&g.client_id)
            .bind(g.user_id.map(|u| u.to_string()))
            .bind(g.session_id.map(|u| u.to_string()))
            .bind(&g.scope)
            .bind(g.auth_time)
            .bind(&g.amr)
            .bind(g.nonce.as_deref())
            .bind(g.created_at)
            .bind(g.expires_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db_err(e))?;
            if let Some(c) = code {
                sqlx::query(
                    "INSERT INTO oidc_codes (code_hash, grant_id, redirect_uri, code_challenge, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&c.code_hash)
                .bind(c.grant_id.to_string())
                .bind(&c.redirect_uri)
                .bind(c.code_challenge.as_deref())
                .bind(c.created_at)
                .bind(c.expires_at)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db_err(e))?;
            }
            for t in tokens {
                token_insert!(t)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.db_err(e))?;
            }
            tx.commit().await.map_err(|e| self.db_err(e))
        })
    }

    async fn redeem_oidc_code(
        &self,
        code_hash: &[u8],
        client_id: &str,
        now: Timestamp,
    ) -> Result<Spend<(AuthCode, Grant, Option<User>)>> {
        let row: Option<CodeRow> = with_writer!(self, |p| {
            sqlx::query_as(
            "UPDATE oidc_codes SET redeemed_at = $2 \
             WHERE code_hash = $1 AND redeemed_at IS NULL AND expires_at > $2 \
             AND EXISTS (SELECT 1 FROM oidc_grants g WHERE g.id = oidc_codes.grant_id AND g.client_id = $3 AND g.revoked_at IS NULL) \
             RETURNING code_hash, grant_id, redirect_uri, code_challenge, created_at, expires_at"
        )
        .bind(code_hash)
        .bind(now)
        .bind(client_id)
        .fetch_optional(p)
        .await
        .map_err(|e| self.db_err(e))
        })?;
        let Some(r) = row else {
            return self
                .spent_before(
                    "SELECT c.grant_id, c.redeemed_at FROM oidc_codes c JOIN oidc_grants g ON g.id = c.grant_id \
                     WHERE c.code_hash = $1 AND g.client_id = $2",
                    code_hash,
                    client_id,
                )
                .await;
        };
        let Some((grant, user)) = self.grant_with_user(&r.grant_id).await? else {
            return Ok(Spend::Unknown);
        };
        Ok(Spend::Spent((
            AuthCode {
                code_hash: r.code_hash,
                grant_id: grant.id,
                redirect_uri: r.redirect_uri,
                code_challenge: r.code_challenge,
                created_at: r.created_at,
                expires_at: r.expires_at,
            },
            grant,
            user,
        )))
    }

    async fn use_refresh_token(
        &self,
        token_hash: &[u8],
        client_id: &str,
        now: Timestamp,
    ) -> Result<Spend<Grant>> {
        let row: Option<(String,)> = with_writer!(self, |p| {
            sqlx::query_as(
            "UPDATE oidc_tokens SET used_at = $2 \
             WHERE token_hash = $1 AND kind = 'refresh' AND used_at IS NULL AND expires_at > $2 \
             AND EXISTS (SELECT 1 FROM oidc_grants g WHERE g.id = oidc_tokens.grant_id AND g.client_id = $3) \
             RETURNING grant_id"
        )
        .bind(token_hash)
        .bind(now)
        .bind(client_id)
        .fetch_optional(p)
        .await
        .map_err(|e| self.db_err(e))
        })?;
        let Some((grant_id,)) = row else {
            return self
                .spent_before(
                    "SELECT t.grant_id, t.used_at FROM oidc_tokens t JOIN oidc_grants g ON g.id = t.grant_id \
                     WHERE t.token_hash = $1 AND t.kind = 'refresh' AND g.client_id = $2",
                    token_hash,
                    client_id,
                )
                .await;
        };
        Ok(match self.grant(&grant_id).await? {
            Some(g) => Spend::Spent(g),
            None => Spend::Unknown,
        })
    }

    async fn insert_oidc_tokens(&self, tokens: &[IssuedToken]) -> Result<()> {
        match tokens {
            [] => Ok(()),
            [t] => with_writer!(self, |p| token_insert!(t)
                .execute(p)
                .await
                .map_err(|e| self.db_err(e))
                .map(|_| ())),
            // An access and a refresh token: one statement (atomic, one
            // round trip to the writer).
            [a, r] => with_writer!(self, |p| {
                let q = sqlx::query(SQL_INSERT_TWO_TOKENS);
                let q = bind_token!(q, a);
                bind_token!(q, r)
                    .execute(p)
                    .await
                    .map_err(|e| self.db_err(e))
                    .map(|_| ())
            }),
            _ => with_writer!(self, |p| {
                let mut tx = p.begin().await.map_err(|e| self.db_err(e))?;
                for t in tokens {
                    token_insert!(t)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| self.db_err(e))?;
                }
                tx.commit().await.map_err(|e| self.db_err(e))
            }),
        }
    }

    async fn oidc_token(
        &self,
        token_hash: &[u8],
    ) -> Result<Option<(IssuedToken, Grant, Option<User>)>> {
        // One round trip: the token, its grant and its person.
        let row: Option<TokenGrantUserRow> = with_pool!(self, |p| sqlx::query_as(
            "SELECT t.token_hash, t.grant_id, t.kind, t.created_at, t.expires_at, t.used_at, \
             g.id, g.client_id, g.user_id, g.session_id, g.scope, g.auth_time, g.amr, g.nonce, \
             g.created_at AS g_created_at, g.expires_at AS g_expires_at, g.revoked_at, \
             u.email AS u_email, u.display_name AS u_display_name, u.locale AS u_locale, \
             u.disabled AS u_disabled, u.created_at AS u_created_at, u.updated_at AS u_updated_at \
             FROM oidc_tokens t JOIN oidc_grants g ON g.id = t.grant_id \
             LEFT JOIN users u ON u.id = g.user_id WHERE t.token_hash = $1"
        )
        .bind(token_hash)
        .fetch_optional(p)
        .await
        .map_err(|e| self.db_err(e)))?;
        let Some(r) = row else { return Ok(None) };
        let token = TokenRow {
            token_hash: r.token_hash,
            grant_id: r.grant_id,
            kind: r.kind,
            created_at: r.created_at,
            expires_at: r.expires_at,
            used_at: r.used_at,
        }
        .into_model()?;
        let grant = GrantRow {
            id: r.id,
            client_id: r.client_id,
            user_id: r.user_id,
            session_id: r.session_id,
            scope: r.scope,
            auth_time: r.auth_time,
            amr: r.amr,
            nonce: r.nonce,
            created_at: r.g_created_at,
            expires_at: r.g_expires_at,
            revoked_at: r.revoked_at,
        }
        .into_model()?;
        let user = joined_user(
            grant.user_id,
            r.u_email,
            r.u_display_name,
            r.u_locale,
            r.u_disabled,
            r.u_created_at,
            r.u_updated_at,
        );
        Ok(Some((token, grant, user)))
    }

    async fn insert_oidc_assertion(&self, jti_hash: &[u8], expires_at: Timestamp) -> Result<()> {
        with_writer!(self, |p| sqlx::query(
            "INSERT INTO oidc_assertions (jti_hash, expires_at) VALUES ($1, $2)"
        )
        .bind(jti_hash)
        .bind(expires_at)
        .execute(p)
        .await
        .map_err(|e| self.db_err(e))
        .map(|_| ()))
    }

    async fn delete_oidc_token(&self, token_hash: &[u8]) -> Result<bool> {
        with_writer!(self, |p| sqlx::query(
            "DELETE FROM oidc_tokens WHERE token_hash = $1"
        )
        .bind(token_hash)
        .execute(p)
        .await
        .map_err(|e| self.db_err(e))
        .map(|r| r.rows_affected() > 0))
    }

    async fn revoke_oidc_grant(&self, grant_id: Uuid, now: Timestamp) -> Result<bool> {
        with_writer!(self, |p| sqlx::query(
            "UPDATE oidc_grants SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL"
        )
        .bind(grant_id.to_string())
        .bind(now)
        .execute(p)
        .await
        .map_err(|e| self.db_err(e))
        .map(|r| r.rows_affected() > 0))
    }

    async fn oidc_clients(&self) -> Result<Vec<StoredClient>> {
        let rows: Vec<ClientRow> = with_pool!(self, |p| {
            sqlx::query_as(
            "SELECT id, secret_hash, settings, created_at, updated_at FROM oidc_clients ORDER BY id"
        )
        .fetch_all(p)
        .await
        .map_err(|e| self.db_err(e))
        })?;
        Ok(rows
            .into_iter()
            .map(|r| StoredClient {
                id: r.id,
                secret_hash: r.secret_hash,
                settings: r.settings,
                created_at: r.created_at,
                updated_at: r.updated_at,
            })
            .collect())
    }

    async fn insert_oidc_client(&self, c: &StoredClient) -> Result<()> {
        with_writer!(self, |p| {
            sqlx::query(
            "INSERT INTO oidc_clients (id, secret_hash, settings, created_at, updated_at) VALUES ($1, $2, $3, $4, $5)"
        )
        .bind(&c.id)
        .bind(c.secret_hash.as_deref())
        .bind(&c.settings)
        .bind(c.created_at)
        .bind(c.updated_at)
        .execute(p)
        .await
        .map_err(|e| match self.db_err(e) {
            StoreError::Conflict(_) => StoreError::Conflict("a client with this id"),
            e => e,
        })
        .map(|_| ())
        })
    }

    async fn update_oidc_client(&self, c: &StoredClient) -> Result<bool> {
        with_writer!(self, |p| sqlx::query(
            "UPDATE oidc_clients SET secret_hash = $2, settings = $3, updated_at = $4 WHERE id = $1"
        )
        .bind(&c.id)
        .bind(c.secret_hash.as_deref())
        .bind(&c.settings)
        .bind(c.updated_at)
        .execute(p)
        .await
        .map_err(|e| self.db_err(e))
        .map(|r| r.rows_affected() > 0))
    }

    async fn delete_oidc_client(&self, id: &str, now: Timestamp) -> Result<bool> {
        with_writer!(self, |p| {
            let mut tx = p.begin().await.map_err(|e| self.db_err(e))?;
            let gone = sqlx::query("DELETE FROM oidc_clients WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db_err(e))?
                .rows_affected()
                > 0;
            if gone {
                sqlx::query(
                    "UPDATE oidc_grants SET revoked_at = $2 WHERE client_id = $1 AND revoked_at IS NULL",
                )
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db_err(e))?;
                sqlx::query("DELETE FROM oidc_consents WHERE client_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.db_err(e))?;
            }
            tx.commit().await.map_err(|e| self.db_err(e))?;
            Ok(gone)
        })
    }

    async fn claim_logged_out_grants(
        &self,
        client_id: &str,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<Grant>> {
        let rows: Vec<GrantRow> = with_writer!(self, |p| {
            sqlx::query_as(
            "UPDATE oidc_grants SET logout_sent_at = $2 WHERE id IN ( \
                SELECT g.id FROM oidc_grants g WHERE g.client_id = $1 \
                AND g.logout_sent_at IS NULL AND g.session_id IS NOT NULL AND g.expires_at > $2 \
                AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.id = g.session_id AND s.expires_at > $2) \
                LIMIT $3) AND logout_sent_at IS NULL \
             RETURNING id, client_id, user_id, session_id, scope, auth_time, amr, nonce, created_at, expires_at, revoked_at"
        )
        .bind(client_id)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(p)
        .await
        .map_err(|e| self.db_err(e))
        })?;
        rows.into_iter().map(GrantRow::into_model).collect()
    }

    async fn oidc_consent(&self, user_id: Uuid, client_id: &str) -> Result<Option<String>> {
        let row: Option<(String,)> = with_pool!(self, |p| sqlx::query_as(
            "SELECT scope FROM oidc_consents WHERE user_id = $1 AND client_id = $2"
        )
        .bind(user_id.to_string())
        .bind(client_id)
        .fetch_optional(p)
        .await
        .map_err(|e| self.db_err(e)))?;
        Ok(row.map(|(s,)| s))
    }

    async fn put_oidc_consent(
        &self,
        user_id: Uuid,
        client_id: &str,
        scope: &str,
        now: Timestamp,
    ) -> Result<()> {
        with_writer!(self, |p| {
            sqlx::query(
            "INSERT INTO oidc_consents (user_id, client_id, scope, granted_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (user_id, client_id) DO UPDATE SET scope = excluded.scope, granted_at = excluded.granted_at"
        )
        .bind(user_id.to_string())
        .bind(client_id)
        .bind(scope)
        .bind(now)
        .execute(p)
        .await
        .map_err(|e| self.db_err(e))
        .map(|_| ())
        })
    }
}
