//! The token vault: providers' access and refresh tokens, encrypted at rest
//! with AES-256-GCM under keys from the config, refreshed when expired.
//!
//! A sealed value is `0x01 | key id (4 bytes) | nonce (12) | ciphertext+tag`.
//! The key id is the first 4 bytes of SHA-256 of the key, so any configured
//! key can open what it sealed; the first key seals. The associated data
//! binds a ciphertext to its identity and field: a row copied onto another
//! identity, or an access token swapped with a refresh token, does not open.
//!
//! Rotation: put a new key first in `vault.keys`, keep the old ones after
//! it, restart, run `authgate vault rekey`, then drop the old keys.
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::providers::ProviderTokenSet;
use super::secret;
use super::{ClientMeta, Core, Error, Identity, ProviderError, ProviderTokens, Timestamp};

const VERSION: u8 = 1;
const HEADER: usize = 1 + 4 + 12;
/// An access token this close to its expiry is refreshed before use.
pub const REFRESH_SKEW_SECS: i64 = 60;

/// AES-256-GCM keys: the first seals, all open.
#[derive(Clone)]
pub struct Vault {
    keys: Vec<([u8; 4], Aes256Gcm)>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl Vault {
    /// Keys as configured: standard base64 of 32 random bytes each.
    pub fn from_base64(keys: &[impl AsRef<str>]) -> Result<Vault, String> {
        if keys.is_empty() {
            return Err("no key".into());
        }
        let mut out = Vec::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            let raw = STANDARD
                .decode(k.as_ref().trim())
                .map_err(|_| format!("key {} is not base64", i + 1))?;
            let raw: [u8; 32] = raw
                .try_into()
                .map_err(|_| format!("key {} is not 32 bytes", i + 1))?;
            let id: [u8; 4] = Sha256::digest(raw)[..4].try_into().unwrap_or_default();
            if out.iter().any(|(o, _)| *o == id) {
                return Err(format!("key {} is listed twice", i + 1));
            }
            let cipher = Aes256Gcm::new_from_slice(&raw).map_err(|e| e.to_string())?;
            out.push((id, cipher));
        }
        Ok(Vault { keys: out })
    }

    /// A fresh key, base64 (for `authgate vault key`).
    pub fn new_key() -> Result<String, Error> {
        Ok(STANDARD.encode(secret::random_bytes::<32>()?))
    }

    fn aad(identity: Uuid, field: &str) -> Vec<u8> {
        let mut aad = identity.as_bytes().to_vec();
        aad.extend_from_slice(field.as_bytes());
        aad
    }

    /// Encrypt under the first key.
    pub fn seal(&self, identity: Uuid, field: &str, plain: &str) -> Result<Vec<u8>, Error> {
        let (id, cipher) = &self.keys[0];
        let nonce = secret::random_bytes::<12>()?;
        let ct = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad: &Self::aad(identity, field),
                },
            )
            .map_err(|_| Error::Internal("vault: encryption failed".into()))?;
        let mut out = Vec::with_capacity(HEADER + ct.len());
        out.push(VERSION);
        out.extend_from_slice(id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Decrypt with whichever configured key sealed it. `None` when no key
    /// fits or the value was tampered with.
    pub fn open(&self, identity: Uuid, field: &str, sealed: &[u8]) -> Option<String> {
        if sealed.len() < HEADER + 16 || sealed[0] != VERSION {
            return None;
        }
        let (_, cipher) = self.keys.iter().find(|(id, _)| id[..] == sealed[1..5])?;
        let nonce: [u8; 12] = sealed[5..HEADER].try_into().ok()?;
        let plain = cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &sealed[HEADER..],
                    aad: &Self::aad(identity, field),
                },
            )
            .ok()?;
        String::from_utf8(plain).ok()
    }

    /// Sealed by the first (current) key?
    pub fn is_current(&self, sealed: &[u8]) -> bool {
        sealed.len() > 5 && sealed[1..5] == self.keys[0].0
    }
}

/// A usable provider access token (refreshed if it had expired).
#[derive(Clone)]
pub struct AccessToken {
    pub token: String,
    pub expires_at: Option<Timestamp>,
    pub scope: Option<String>,
    pub identity: Identity,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("scope", &self.scope)
            .finish()
    }
}

/// What `authgate vault rekey` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RekeyReport {
    pub rekeyed: u64,
    pub current: u64,
    /// Rows no configured key opens (left as they are).
    pub unreadable: u64,
    /// The OpenID provider's signing keys re-sealed (those already under
    /// the first key and unreadable ones are counted above).
    pub signing_keys: u64,
}

impl Core {
    pub fn vault(&self) -> Option<&Vault> {
        self.inner.vault.as_ref()
    }

    fn seal_tokens(
        &self,
        vault: &Vault,
        identity: Uuid,
        tokens: &ProviderTokenSet,
        previous_refresh: Option<&str>,
    ) -> Result<ProviderTokens, Error> {
        let now = self.now();
        let refresh = tokens.refresh_token.as_deref().or(previous_refresh);
        Ok(ProviderTokens {
            identity_id: identity,
            access_token: vault.seal(identity, "access", &tokens.access_token)?,
            refresh_token: refresh
                .map(|r| vault.seal(identity, "refresh", r))
                .transpose()?,
            expires_at: tokens.expires_in.map(|s| now.saturating_add(s)),
            scope: tokens.scope.clone(),
            updated_at: now,
        })
    }

    /// Keep a provider's tokens for an identity, encrypted. Without a vault
    /// key configured nothing is kept (and `false` is returned).
    pub async fn keep_provider_tokens(
        &self,
        identity: Uuid,
        tokens: &ProviderTokenSet,
    ) -> Result<bool, Error> {
        let Some(vault) = self.vault() else {
            return Ok(false);
        };
        let row = self.seal_tokens(vault, identity, tokens, None)?;
        self.store().put_provider_tokens(&row).await?;
        Ok(true)
    }

    /// The person's current access token at `provider` for the
    /// application's own back end (e.g. to call Microsoft Graph): as
    /// [`Self::provider_access_token`], and every read is audited (who,
    /// which provider; never the token).
    pub async fn provider_access_token_for_backend(
        &self,
        user_id: Uuid,
        provider: &str,
        meta: &ClientMeta,
    ) -> Result<Option<AccessToken>, Error> {
        let result = self.provider_access_token(user_id, provider).await;
        let outcome = match &result {
            Ok(Some(_)) => "given",
            Ok(None) => "none_kept",
            Err(Error::Unauthorized) => "refresh_refused",
            Err(_) => "failed",
        };
        self.audit(
            "provider_token.read",
            Some(user_id),
            meta,
            Some(json!({ "provider": provider, "outcome": outcome })),
        )
        .await;
        result
    }

    /// The user's access token at `provider`, refreshed with the refresh
    /// token when it has expired (or is about to). `Ok(None)` when none is
    /// kept; `Err(Unauthorized)` when it expired and could not be
    /// refreshed ([`Self::session_provider_profile`] then ends the session).
    pub async fn provider_access_token(
        &self,
        user_id: Uuid,
        provider: &str,
    ) -> Result<Option<AccessToken>, Error> {
        let Some(vault) = self.vault() else {
            return Ok(None);
        };
        let mut identities = self.store().identities_of(user_id).await?;
        identities.retain(|i| i.provider == provider);
        identities.sort_by_key(|i| std::cmp::Reverse(i.last_used_at));
        let mut found = None;
        for identity in identities {
            if let Some(row) = self.store().provider_tokens(identity.id).await? {
                found = Some((identity, row));
                break;
            }
        }
        let Some((identity, row)) = found else {
            return Ok(None);
        };
        let Some(access) = vault.open(identity.id, "access", &row.access_token) else {
            tracing::warn!(identity = %identity.id, "vault: stored token opens with no configured key");
            return Ok(None);
        };
        let now = self.now();
        if row.expires_at.is_none_or(|e| e - REFRESH_SKEW_SECS > now) {
            return Ok(Some(AccessToken {
                token: access,
                expires_at: row.expires_at,
                scope: row.scope,
                identity,
            }));
        }
        // Expired: refresh, or the sign-in is over.
        let refresh = row
            .refresh_token
            .as_deref()
            .and_then(|r| vault.open(identity.id, "refresh", r));
        let p = self
            .provider(provider)
            .ok_or_else(|| Error::invalid("provider", format!("{provider:?} is not configured")))?
            .clone();
        let Some(refresh) = refresh else {
            self.audit_refresh(&identity, provider, "no_refresh_token")
                .await;
            return Err(Error::Unauthorized);
        };
        let fresh = match p
            .refresh(&super::providers::RefreshRequest {
                refresh_token: &refresh,
                scope: row.scope.as_deref(),
                subject: &identity.subject,
                now,
            })
            .await
        {
            Ok(t) => t,
            Err(e) => {
                tracing::info!(provider, error = %e, "provider token refresh failed");
                let reason = match &e {
                    ProviderError::Rejected { .. } => "rejected",
                    ProviderError::Invalid(_) => "invalid",
                    ProviderError::Unavailable(_) => "unavailable",
                };
                self.audit_refresh(&identity, provider, reason).await;
                return Err(Error::Unauthorized);
            }
        };
        let sealed = self.seal_tokens(vault, identity.id, &fresh, Some(&refresh))?;
        self.store().put_provider_tokens(&sealed).await?;
        Ok(Some(AccessToken {
            token: fresh.access_token,
            expires_at: sealed.expires_at,
            scope: sealed.scope,
            identity,
        }))
    }

    async fn audit_refresh(&self, identity: &Identity, provider: &str, reason: &str) {
        self.audit(
            "provider_token.refresh_failed",
            Some(identity.user_id),
            &Default::default(),
            Some(json!({ "provider": provider, "reason": reason })),
        )
        .await;
    }

    /// Re-encrypt every kept token under the current (first) key.
    pub async fn rekey_vault(&self) -> Result<RekeyReport, Error> {
        let vault = self
            .vault()
            .ok_or_else(|| Error::invalid("vault.keys", "no key is configured"))?;
        let mut report = RekeyReport::default();
        let mut after: Option<Uuid> = None;
        loop {
            let page = self.store().provider_tokens_after(after, 500).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.identity_id);
            for row in page {
                let id = row.identity_id;
                let current = vault.is_current(&row.access_token)
                    && row
                        .refresh_token
                        .as_deref()
                        .is_none_or(|r| vault.is_current(r));
                if current {
                    report.current += 1;
                    continue;
                }
                let access = vault.open(id, "access", &row.access_token);
                let refresh = row
                    .refresh_token
                    .as_deref()
                    .map(|r| vault.open(id, "refresh", r));
                let (Some(access), false) = (access, matches!(refresh, Some(None))) else {
                    report.unreadable += 1;
                    continue;
                };
                let resealed = ProviderTokens {
                    access_token: vault.seal(id, "access", &access)?,
                    refresh_token: refresh
                        .flatten()
                        .map(|r| vault.seal(id, "refresh", &r))
                        .transpose()?,
                    ..row
                };
                self.store().put_provider_tokens(&resealed).await?;
                report.rekeyed += 1;
            }
        }
        self.rekey_signing_keys(vault, &mut report).await?;
        self.rekey_totp(vault, &mut report).await?;
        Ok(report)
    }
}

impl Core {
    /// What the provider says about the person behind a session, read with
    /// the kept access token (refreshed when it has expired): the token and
    /// the profile, or `None` when no token is kept. When the provider no
    /// longer honours the sign-in (the refresh is refused, or the profile
    /// describes someone else), neither does authgate: the session ends
    /// here and the answer is `Unauthorized`.
    pub async fn session_provider_profile(
        &self,
        session_token: &str,
        user_id: Uuid,
        provider: &str,
        meta: &ClientMeta,
    ) -> Result<Option<(AccessToken, serde_json::Value)>, Error> {
        let read = async {
            let Some(access) = self.provider_access_token(user_id, provider).await? else {
                return Ok(None);
            };
            let profile = self.provider_profile(provider, &access).await?;
            Ok(Some((access, profile)))
        };
        let result = read.await;
        if let Err(Error::Unauthorized) = result
            && let Err(e) = self.revoke_session_token(session_token, meta).await
        {
            tracing::warn!(error = %e, "cannot end a session whose provider sign-in is over");
        }
        result
    }

    /// The provider's profile document read with a kept access token
    /// (Graph `/me`, GitHub `/user`, userinfo). It must describe the
    /// identity the token was kept for: a profile of anyone else (a token
    /// swapped by a misbehaving provider) is `Unauthorized`
    /// ([`Self::session_provider_profile`] then ends the session).
    pub async fn provider_profile(
        &self,
        provider: &str,
        access: &AccessToken,
    ) -> Result<serde_json::Value, Error> {
        let p = self
            .provider(provider)
            .ok_or_else(|| Error::invalid("provider", format!("{provider:?} is not configured")))?;
        let profile = p
            .api_profile(&access.token)
            .await
            .map_err(Error::Provider)?;
        let named = ["id", "sub"].iter().find_map(|k| match profile.get(*k) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        });
        if named.is_some_and(|n| !n.eq_ignore_ascii_case(&access.identity.subject)) {
            tracing::warn!(
                provider,
                "the provider's profile describes another person than the kept token's identity"
            );
            self.audit_refresh(&access.identity, provider, "another_person")
                .await;
            return Err(Error::Unauthorized);
        }
        Ok(profile)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> String {
        Vault::new_key().unwrap()
    }

    #[test]
    fn seals_open_only_for_their_identity_and_field() {
        let v = Vault::from_base64(&[key()]).unwrap();
        let id = Uuid::now_v7();
        let sealed = v.seal(id, "access", "the-token").unwrap();
        assert!(!sealed.windows(9).any(|w| w == b"the-token"));
        assert_eq!(v.open(id, "access", &sealed).as_deref(), Some("the-token"));
        assert_eq!(v.open(Uuid::now_v7(), "access", &sealed), None);
        assert_eq!(v.open(id, "refresh", &sealed), None);
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(v.open(id, "access", &tampered), None);
        // Two seals of one value differ (fresh nonce).
        assert_ne!(sealed, v.seal(id, "access", "the-token").unwrap());
    }

    #[test]
    fn rotation_old_keys_open_new_key_seals() {
        let (old, new) = (key(), key());
        let before = Vault::from_base64(std::slice::from_ref(&old)).unwrap();
        let id = Uuid::now_v7();
        let sealed = before.seal(id, "access", "t").unwrap();
        let after = Vault::from_base64(&[new.clone(), old]).unwrap();
        assert_eq!(after.open(id, "access", &sealed).as_deref(), Some("t"));
        assert!(!after.is_current(&sealed));
        assert!(after.is_current(&after.seal(id, "access", "t").unwrap()));
        let only_new = Vault::from_base64(&[new]).unwrap();
        assert_eq!(only_new.open(id, "access", &sealed), None);
    }

    #[test]
    fn bad_keys_are_refused() {
        assert!(Vault::from_base64(&["nope"]).is_err());
        assert!(Vault::from_base64(&[STANDARD.encode([0u8; 16])]).is_err());
        let k = key();
        assert!(Vault::from_base64(&[k.clone(), k]).is_err());
        let none: [&str; 0] = [];
        assert!(Vault::from_base64(&none).is_err());
    }
}
