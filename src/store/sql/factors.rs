//! Second factors: TOTP secrets (sealed) with their counters, recovery
//! code hashes.
use super::*;

macro_rules! passkey_select {
    () => {
        "SELECT id, user_id, credential_id, name, passkey, sign_count, \
         backup_eligible, backed_up, created_at, last_used_at FROM passkeys"
    };
}

#[derive(sqlx::FromRow)]
struct TotpRow {
    user_id: String,
    secret: Vec<u8>,
    confirmed_at: Option<i64>,
    last_step: i64,
    attempts: i64,
    lockouts: i64,
    locked_until: i64,
    created_at: i64,
}

impl TryFrom<TotpRow> for TotpFactor {
    type Error = StoreError;
    fn try_from(r: TotpRow) -> Result<TotpFactor> {
        Ok(TotpFactor {
            user_id: uuid(&r.user_id)?,
            sealed: r.secret,
            confirmed_at: r.confirmed_at,
            last_step: r.last_step,
            attempts: r.attempts,
            lockouts: r.lockouts,
            locked_until: r.locked_until,
            created_at: r.created_at,
        })
    }
}

#[async_trait]
impl FactorStore for SqlStore {
    async fn put_totp(&self, user_id: Uuid, sealed: &[u8], now: Timestamp) -> Result<bool> {
        with_writer!(self, |p| {
            sqlx::query(
            "INSERT INTO totp_factors (user_id, secret, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO UPDATE SET secret = excluded.secret, confirmed_at = NULL, \
             last_step = 0, attempts = 0, lockouts = 0, locked_until = 0, created_at = excluded.created_at \
             WHERE totp_factors.confirmed_at IS NULL"
        )
        .bind(user_id.to_string())
        .bind(sealed)
        .bind(now)
        .execute(p)
        .await
        .map_err(|e| self.db_err(e))
        .map(|r| r.rows_affected() > 0)
        })
    }

    async fn totp(&self, user_id: Uuid) -> Result<Option<TotpFactor>> {
        let row: Option<TotpRow> = with_pool!(self, |p| {
            sqlx::query_as(
            "SELECT user_id, secret, confirmed_at, last_step, attempts, lockouts, locked_until, created_at \
             FROM totp_factors WHERE user_id = $1"
        )
        .bind(user_id.to_string())
        .fetch_optional(p)
        .await
        .map_err(|e| self.db_err(e))
        })?;
        row.map(TotpFactor::try_from).transpose()
    }

    async fn totp_factors_after(&self, after: Option<Uuid>, limit: u32) -> Result<Vec<TotpFactor>> {
        let rows: Vec<TotpRow> = with_pool!(self, |p| {
            sqlx::query_as(
            "SELECT user_id, secret, confirmed_at, last_step, attempts, lockouts, locked_until, created_at \
             FROM totp_factors WHERE user_id > $1 ORDER BY user_id LIMIT $2"
        )
        .bind(after.map(|u| u.to_string()).unwrap_or_default())
        .bind(i64::from(limit))
        .fetch_all(p)
        .await
        .map_err(|e| self.db_err(e))
        })?;
        rows.into_iter().map(TotpFactor::try_from).collect()
    }

    async fn reseal_totp(&self, user_id: Uuid, old: &[u8], new: &[u8]) -> Result<bool> {
        with_writer!(self, |p| sqlx::query(
            "UPDATE totp_factors SET secret = $3 WHERE user_id = $1 AND secret = $2"
        )
        .bind(user_id.to_string())
        .bind(old)
        .bind(new)
        .execute(p)
        .await
        .map_err(|e| self.db_err(e))
        .map(|r| r.rows_affected() > 0))
    }

    async fn claim_totp_attempt(
        &self,
        user_id: Uuid,
        now: Timestamp,
        max: i64,
        lock_until: Timestamp,
    ) -> Result<Option<i64>> {
        // One statement: of many attempts at once, at most `max` get a
        // count; the one that takes the last locks the factor. After a lock
        // has ended the count starts again.
        let row: Option<(i64,)> = with_writer!(self, |p| {
            sqlx::query_as(
            "UPDATE totp_factors SET \
               attempts = CASE WHEN attempts >= $3 THEN 1 ELSE attempts + 1 END, \
               locked_until = CASE WHEN (CASE WHEN attempts >= $3 THEN 1 ELSE attempts + 1 END) >= $3 \
                 THEN $4 ELSE locked_until END, \
               lockouts = CASE WHEN (CASE WHEN attempts >= $3 THEN 1 ELSE attempts + 1 END) >= $3 \
                 THEN lockouts + 1 ELSE lockouts END \
             WHERE user_id = $1 AND locked_until <= $2 \
             RETURNING attempts"
        )
        .bind(user_id.to_string())
        .bind(now)
        .bind(max)
        .bind(lock_until)
        .fetch_optional(p)
        .await
        .map_err(|e| self.db_err(e))
        })?;
        Ok(row.map(|(a,)| a))
    }

    async fn accept_totp_step(
        &self,
        user_id: Uuid,
        step: i64,
        confirm_at: Timestamp,
    ) -> Result<bool> {
        with_writer!(self, |p| sqlx::query(
            "UPDATE totp_factors SET last_step = $2, attempts = 0, lockouts = 0, locked_until = 0, \
             confirmed_at = COALESCE(confirmed_at, $3) WHERE user_id = $1 AND last_step < $2"
        )
        .bind(user_id.to_string())
        .bind(step)
        .bind(confirm_at)
        .execute(p)
        .await
        .map_err(|e| self.db_err(e))
        .map(|r| r.rows_affected() > 0))
    }

    async fn delete_totp(&self, user_id: Uuid) -> Result<bool> {
        with_writer!(self, |p| sqlx::query(
            "DELETE FROM totp_factors WHERE user_id = $1"
        )
        .bind(user_id.to_string())
        .execute(p)
        .await
        .map_err(|e| self.db_err(e))
        .map(|r| r.rows_affected() > 0))
    }

    async fn replace_recovery_codes(
        &self,
        user_id: Uuid,
        hashes: &[[u8; 32]],
        now: Timestamp,
    ) -> Result<()> {
        with_writer!(self, |p| {
            let mut tx = p.begin().await.map_err(|e| self.db_err(e))?;
            sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
                .bind(user_id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db_err(e))?;
            for h in hashes {
                sqlx::query("INSERT INTO recovery_codes (user_id, code_hash, created_at) VALUES ($1, $2, $3)")
                    .bind(user_id.to_string())
                    .bind(h.as_slice())
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.db_err(e))?;
            }
            tx.commit().await.map_err(|e| self.db_err(e))
        })
    }

    async fn spend_recovery_code(&self, user_id: Uuid, hash: &[u8; 32]) -> Result<bool> {
        with_writer!(self, |p| sqlx::query(
            "DELETE FROM recovery_codes WHERE user_id = $1 AND code_hash = $2"
        )
        .bind(user_id.to_string())
        .bind(hash.as_slice())
        .execute(p)
        .await
        .map_err(|e| self.db_err(e))
        .map(|r| r.rows_affected() > 0))
    }

    async fn recovery_codes_left(&self, user_id: Uuid) -> Result<i64> {
        let (n,): (i64,) = with_pool!(self, |p| sqlx::query_as(
            "SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1"
        )
        .bind(user_id.to_string())
        .fetch_one(p)
        .await
        .map_err(|e| self.db_err(e)))?;
        Ok(n)
    }

    async fn mfa_state(&self, user_id: Uuid) -> Result<MfaState> {
        let (totp, required, passkeys): (bool, bool, bool) = with_pool!(self, |p| {
            sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM totp_factors WHERE user_id = $1 AND confirmed_at IS NOT NULL), \
                    EXISTS (SELECT 1 FROM mfa_required_users WHERE user_id = $1), \
                    EXISTS (SELECT 1 FROM passkeys WHERE user_id = $1)"
        )
        .bind(user_id.to_string())
        .fetch_one(p)
        .await
        .map_err(|e| self.db_err(e))
        })?;
        Ok(MfaState {
            totp,
            required,
            passkeys,
        })
    }

    async fn set_mfa_required(&self, user_id: Uuid, required: bool, now: Timestamp) -> Result<()> {
        with_writer!(self, |p| {
            let q = if required {
                sqlx::query(
                    "INSERT INTO mfa_required_users (user_id, set_at) VALUES ($1, $2) \
                     ON CONFLICT (user_id) DO NOTHING",
                )
                .bind(user_id.to_string())
                .bind(now)
            } else {
                sqlx::query("DELETE FROM mfa_required_users WHERE user_id = $1")
                    .bind(user_id.to_string())
            };
            q.execute(p).await.map_err(|e| self.db_err(e)).map(|_| ())
        })
    }

    async fn insert_passkey(&self, k: &StoredPasskey) -> Result<bool> {
        with_writer!(self, |p| {
            sqlx::query(
                "INSERT INTO passkeys (id, user_id, credential_id, name, passkey, sign_count, \
                 backup_eligible, backed_up, created_at, last_used_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (credential_id) DO NOTHING",
            )
            .bind(k.id.to_string())
            .bind(k.user_id.to_string())
            .bind(&k.credential_id)
            .bind(&k.name)
            .bind(&k.passkey)
            .bind(k.sign_count)
            .bind(k.backup_eligible)
            .bind(k.backed_up)
            .bind(k.created_at)
            .bind(k.last_used_at)
            .execute(p)
            .await
            .map_err(|e| self.db_err(e))
            .map(|r| r.rows_affected() > 0)
        })
    }

    async fn passkeys_of(&self, user_id: Uuid) -> Result<Vec<StoredPasskey>> {
        let rows: Vec<PasskeyRow> = with_pool!(self, |p| {
            sqlx::query_as(concat!(
                passkey_select!(),
                " WHERE user_id = $1 ORDER BY created_at, id"
            ))
            .bind(user_id.to_string())
            .fetch_all(p)
            .await
            .map_err(|e| self.db_err(e))
        })?;
        rows.into_iter().map(StoredPasskey::try_from).collect()
    }

    async fn passkey_by_credential(&self, credential_id: &[u8]) -> Result<Option<StoredPasskey>> {
        let row: Option<PasskeyRow> = with_pool!(self, |p| {
            sqlx::query_as(concat!(passkey_select!(), " WHERE credential_id = $1"))
                .bind(credential_id)
                .fetch_optional(p)
                .await
                .map_err(|e| self.db_err(e))
        })?;
        row.map(StoredPasskey::try_from).transpose()
    }

    async fn record_passkey_use(&self, k: &StoredPasskey, seen: i64) -> Result<bool> {
        with_writer!(self, |p| {
            sqlx::query(
                "UPDATE passkeys SET passkey = $1, sign_count = $2, backup_eligible = $3, \
                 backed_up = $4, last_used_at = $5 WHERE id = $6 AND sign_count = $7",
            )
            .bind(&k.passkey)
            .bind(k.sign_count)
            .bind(k.backup_eligible)
            .bind(k.backed_up)
            .bind(k.last_used_at)
            .bind(k.id.to_string())
            .bind(seen)
            .execute(p)
            .await
            .map_err(|e| self.db_err(e))
            .map(|r| r.rows_affected() > 0)
        })
    }

    async fn rename_passkey(&self, user_id: Uuid, id: Uuid, name: &str) -> Result<bool> {
        with_writer!(self, |p| {
            sqlx::query("UPDATE passkeys SET name = $1 WHERE id = $2 AND user_id = $3")
                .bind(name)
                .bind(id.to_string())
                .bind(user_id.to_string())
                .execute(p)
                .await
                .map_err(|e| self.db_err(e))
                .map(|r| r.rows_affected() > 0)
        })
    }

    async fn delete_passkey(&self, user_id: Uuid, id: Uuid) -> Result<bool> {
        with_writer!(self, |p| {
            sqlx::query("DELETE FROM passkeys WHERE id = $1 AND user_id = $2")
                .bind(id.to_string())
                .bind(user_id.to_string())
                .execute(p)
                .await
                .map_err(|e| self.db_err(e))
                .map(|r| r.rows_affected() > 0)
        })
    }
}

#[derive(sqlx::FromRow)]
struct PasskeyRow {
    id: String,
    user_id: String,
    credential_id: Vec<u8>,
    name: String,
    passkey: String,
    sign_count: i64,
    backup_eligible: bool,
    backed_up: bool,
    created_at: i64,
    last_used_at: Option<i64>,
}

impl TryFrom<PasskeyRow> for StoredPasskey {
    type Error = StoreError;
    fn try_from(r: PasskeyRow) -> Result<StoredPasskey> {
        Ok(StoredPasskey {
            id: uuid(&r.id)?,
            user_id: uuid(&r.user_id)?,
            credential_id: r.credential_id,
            name: r.name,
            passkey: r.passkey,
            sign_count: r.sign_count,
            backup_eligible: r.backup_eligible,
            backed_up: r.backed_up,
            created_at: r.created_at,
            last_used_at: r.last_used_at,
        })
    }
}
