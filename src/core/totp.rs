//! TOTP second factors (RFC 6238, with `totp-rs`): enrolment confirmed by
//! one right code, the secret sealed by the vault, codes accepted within
//! ±1 step of 30 s and each time step taken once (replays refused), wrong
//! codes counted atomically per user with a back-off lock (never a
//! permanent one), and ten single-use recovery codes, stored hashed.
use serde_json::json;
use uuid::Uuid;

use super::secret::{self, hash_token};
use super::{ClientMeta, Core, Error, User};

/// Attempts (right or wrong) before a lock; a right code starts again.
pub const TOTP_MAX_ATTEMPTS: i64 = 5;
/// The first lock; each further lock without a right code between doubles
/// it, up to [`TOTP_LOCK_MAX_SECS`].
pub const TOTP_LOCK_BASE_SECS: i64 = 30;
pub const TOTP_LOCK_MAX_SECS: i64 = 3600;
/// Recovery codes made at a time.
pub const RECOVERY_CODES: usize = 10;
/// Their alphabet: no 0/o, 1/l/i.
const RECOVERY_ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
/// The vault field the secret is sealed under.
const SEALED_FIELD: &str = "totp_secret";

/// A started enrolment: what the person's authenticator app needs.
#[derive(Debug, Clone)]
pub struct TotpEnrolment {
    /// The secret in base32, to type in.
    pub secret: String,
    /// The `otpauth://totp/…` URI, for a QR code.
    pub uri: String,
}

/// A person's second factors, as the account page shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecondFactors {
    /// A confirmed TOTP factor.
    pub totp: bool,
    /// An enrolment started and not confirmed.
    pub totp_pending: bool,
    pub recovery_codes_left: i64,
}

/// The lock the next one would be, after `lockouts` locks.
fn lock_secs(lockouts: i64) -> i64 {
    let doublings = lockouts.clamp(0, 16) as u32;
    (TOTP_LOCK_BASE_SECS << doublings).min(TOTP_LOCK_MAX_SECS)
}

fn totp_of(secret: &[u8], issuer: &str, account: &str) -> Result<totp_rs::Totp, Error> {
    totp_rs::Builder::new()
        .with_secret(secret.to_vec())
        .with_skew(1)
        .with_issuer(Some(issuer.replace(':', " ")))
        .with_account_name(account.replace(':', " "))
        .build()
        .map_err(|e| Error::Internal(format!("TOTP: {e}")))
}

/// The account name an authenticator app shows.
fn account_of(user: &User) -> String {
    user.email
        .as_ref()
        .map(|e| e.as_str().to_string())
        .unwrap_or_else(|| user.id.to_string())
}

/// A recovery code as typed: lower case, without spaces or dashes.
fn normal_recovery(code: &str) -> String {
    code.chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

impl Core {
    fn totp_vault(&self) -> Result<&super::Vault, Error> {
        self.vault().ok_or_else(|| {
            Error::Unavailable("TOTP needs the vault: set vault.keys or vault.key_file".into())
        })
    }

    /// Start (or restart) a person's TOTP enrolment: a new 160-bit secret,
    /// sealed and kept unconfirmed until [`Core::confirm_totp`]. A person
    /// who has a confirmed factor must remove it first (`Conflict`).
    pub async fn begin_totp(
        &self,
        user: &User,
        issuer: &str,
        meta: &ClientMeta,
    ) -> Result<TotpEnrolment, Error> {
        let raw = secret::random_bytes::<20>()?;
        let totp = totp_of(&raw, issuer, &account_of(user))?;
        let secret = totp.secret().to_base32();
        let sealed = self.totp_vault()?.seal(user.id, SEALED_FIELD, &secret)?;
        if !self.store().put_totp(user.id, &sealed, self.now()).await? {
            return Err(Error::Conflict("a TOTP factor is already set up"));
        }
        self.audit("mfa.totp_enrolment_started", Some(user.id), meta, None)
            .await;
        let uri = totp
            .to_url()
            .map_err(|e| Error::Internal(format!("TOTP URI: {e}")))?;
        Ok(TotpEnrolment { secret, uri })
    }

    /// The enrolment a person started and has not confirmed, shown again
    /// (a page reloaded, a wrong first code): `None` when there is none.
    pub async fn totp_enrolment_in_progress(
        &self,
        user: &User,
        issuer: &str,
    ) -> Result<Option<TotpEnrolment>, Error> {
        let Some(factor) = self.store().totp(user.id).await? else {
            return Ok(None);
        };
        if factor.confirmed_at.is_some() {
            return Ok(None);
        }
        let Some(plain) = self
            .totp_vault()?
            .open(user.id, SEALED_FIELD, &factor.sealed)
        else {
            return Ok(None);
        };
        let raw = totp_rs::Secret::try_from_base32(&plain)
            .map_err(|e| Error::Internal(format!("TOTP secret: {e}")))?;
        let totp = totp_of(&raw, issuer, &account_of(user))?;
        let uri = totp
            .to_url()
            .map_err(|e| Error::Internal(format!("TOTP URI: {e}")))?;
        Ok(Some(TotpEnrolment { secret: plain, uri }))
    }

    /// Check one code against a person's factor (pending or confirmed):
    /// counted first (a locked factor is `RateLimited` and the code is not
    /// even looked at), then taken once.
    async fn take_totp_code(
        &self,
        user_id: Uuid,
        code: &str,
        meta: &ClientMeta,
    ) -> Result<(), Error> {
        let Some(factor) = self.store().totp(user_id).await? else {
            return Err(Error::NotFound);
        };
        let now = self.now();
        self.claim_attempt(&factor, meta).await?;
        let plain = self
            .totp_vault()?
            .open(user_id, SEALED_FIELD, &factor.sealed)
            .ok_or_else(|| {
                Error::Internal("the TOTP secret cannot be opened with the vault's keys".into())
            })?;
        let raw = totp_rs::Secret::try_from_base32(&plain)
            .map_err(|e| Error::Internal(format!("TOTP secret: {e}")))?;
        let totp = totp_of(&raw, "authgate", "-")?;
        let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
        let step = if code.len() == 6 && code.chars().all(|c| c.is_ascii_digit()) {
            totp.check(&code, u64::try_from(now).unwrap_or(0))
        } else {
            None
        };
        let failed = |reason: &'static str| {
            self.audit(
                "mfa.totp_failed",
                Some(user_id),
                meta,
                Some(json!({ "reason": reason })),
            )
        };
        let Some(step) = step else {
            failed("wrong_code").await;
            return Err(Error::Unauthorized);
        };
        let step = i64::try_from(step).unwrap_or(i64::MAX);
        if !self.store().accept_totp_step(user_id, step, now).await? {
            failed("replayed").await;
            return Err(Error::Unauthorized);
        }
        Ok(())
    }

    /// Count one attempt on a factor, or refuse it unseen while the factor
    /// is locked (`RateLimited`, with the seconds left).
    async fn claim_attempt(
        &self,
        factor: &super::TotpFactor,
        meta: &ClientMeta,
    ) -> Result<(), Error> {
        let now = self.now();
        let claimed = self
            .store()
            .claim_totp_attempt(
                factor.user_id,
                now,
                TOTP_MAX_ATTEMPTS,
                now + lock_secs(factor.lockouts),
            )
            .await?;
        if claimed.is_some() {
            return Ok(());
        }
        self.audit("mfa.totp_locked", Some(factor.user_id), meta, None)
            .await;
        let until = self
            .store()
            .totp(factor.user_id)
            .await?
            .map_or(now + 1, |f| f.locked_until);
        Err(Error::RateLimited {
            retry_after: (until - now).max(1),
        })
    }

    /// Confirm a started enrolment with a right code: the factor is on,
    /// and the person gets their ten recovery codes (shown once).
    pub async fn confirm_totp(
        &self,
        user_id: Uuid,
        code: &str,
        meta: &ClientMeta,
    ) -> Result<Vec<String>, Error> {
        match self.store().totp(user_id).await? {
            Some(f) if f.confirmed_at.is_none() => {}
            Some(_) => return Err(Error::Conflict("the TOTP factor is already confirmed")),
            None => return Err(Error::NotFound),
        }
        self.take_totp_code(user_id, code, meta).await?;
        self.audit("mfa.totp_enrolled", Some(user_id), meta, None)
            .await;
        self.regenerate_recovery_codes(user_id, meta).await
    }

    /// A second factor from a person with a confirmed TOTP factor: a code
    /// of their app.
    pub async fn verify_totp(
        &self,
        user_id: Uuid,
        code: &str,
        meta: &ClientMeta,
    ) -> Result<(), Error> {
        match self.store().totp(user_id).await? {
            Some(f) if f.confirmed_at.is_some() => {}
            _ => return Err(Error::NotFound),
        }
        self.take_totp_code(user_id, code, meta).await?;
        self.audit("mfa.totp_verified", Some(user_id), meta, None)
            .await;
        Ok(())
    }

    /// Ten new recovery codes (the old ones end): shown once, kept hashed.
    pub async fn regenerate_recovery_codes(
        &self,
        user_id: Uuid,
        meta: &ClientMeta,
    ) -> Result<Vec<String>, Error> {
        let mut codes = Vec::with_capacity(RECOVERY_CODES);
        for _ in 0..RECOVERY_CODES {
            let mut c = String::with_capacity(11);
            for i in 0..10 {
                if i == 5 {
                    c.push('-');
                }
                let k = secret::random_below(RECOVERY_ALPHABET.len() as u32)? as usize;
                c.push(RECOVERY_ALPHABET[k] as char);
            }
            codes.push(c);
        }
        let hashes: Vec<[u8; 32]> = codes
            .iter()
            .map(|c| hash_token(&normal_recovery(c)))
            .collect();
        self.store()
            .replace_recovery_codes(user_id, &hashes, self.now())
            .await?;
        self.audit("mfa.recovery_codes_made", Some(user_id), meta, None)
            .await;
        Ok(codes)
    }

    /// A recovery code in place of a TOTP code: counted like one, spent at
    /// once.
    pub async fn use_recovery_code(
        &self,
        user_id: Uuid,
        code: &str,
        meta: &ClientMeta,
    ) -> Result<(), Error> {
        let Some(factor) = self.store().totp(user_id).await? else {
            return Err(Error::NotFound);
        };
        self.claim_attempt(&factor, meta).await?;
        let code = normal_recovery(code);
        if code.len() > 64
            || !self
                .store()
                .spend_recovery_code(user_id, &hash_token(&code))
                .await?
        {
            self.audit("mfa.recovery_failed", Some(user_id), meta, None)
                .await;
            return Err(Error::Unauthorized);
        }
        let left = self.store().recovery_codes_left(user_id).await?;
        self.audit(
            "mfa.recovery_used",
            Some(user_id),
            meta,
            Some(json!({ "left": left })),
        )
        .await;
        Ok(())
    }

    /// Remove a person's TOTP factor and recovery codes (the person, or
    /// support with the CLI). `false` if there was none.
    pub async fn remove_totp(&self, user_id: Uuid, meta: &ClientMeta) -> Result<bool, Error> {
        let removed = self.store().delete_totp(user_id).await?;
        self.store()
            .replace_recovery_codes(user_id, &[], self.now())
            .await?;
        if removed {
            self.audit("mfa.totp_removed", Some(user_id), meta, None)
                .await;
        }
        Ok(removed)
    }

    /// Re-seal every TOTP secret not sealed under the vault's current key
    /// (`authgate vault rekey`).
    pub(crate) async fn rekey_totp(
        &self,
        vault: &super::Vault,
        report: &mut super::RekeyReport,
    ) -> Result<(), Error> {
        let mut after = None;
        loop {
            let page = self.store().totp_factors_after(after, 500).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.user_id);
            for f in page {
                if vault.is_current(&f.sealed) {
                    report.current += 1;
                    continue;
                }
                let Some(plain) = vault.open(f.user_id, SEALED_FIELD, &f.sealed) else {
                    report.unreadable += 1;
                    continue;
                };
                let new = vault.seal(f.user_id, SEALED_FIELD, &plain)?;
                if self.store().reseal_totp(f.user_id, &f.sealed, &new).await? {
                    report.rekeyed += 1;
                }
            }
        }
        Ok(())
    }

    pub async fn second_factors(&self, user_id: Uuid) -> Result<SecondFactors, Error> {
        let totp = self.store().totp(user_id).await?;
        Ok(SecondFactors {
            totp: totp.as_ref().is_some_and(|f| f.confirmed_at.is_some()),
            totp_pending: totp.as_ref().is_some_and(|f| f.confirmed_at.is_none()),
            recovery_codes_left: self.store().recovery_codes_left(user_id).await?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_back_off_and_end() {
        assert_eq!(lock_secs(0), 30);
        assert_eq!(lock_secs(1), 60);
        assert_eq!(lock_secs(3), 240);
        assert_eq!(lock_secs(7), 3600);
        assert_eq!(lock_secs(1000), 3600);
    }

    #[test]
    fn recovery_codes_are_typed_loosely() {
        assert_eq!(normal_recovery(" ABCDE-fgh23 "), "abcdefgh23");
        assert_eq!(normal_recovery("abcde fgh23"), "abcdefgh23");
    }
}
