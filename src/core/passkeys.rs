//! Passkeys (WebAuthn discoverable credentials, with `webauthn-rs`): a
//! signed-in person registers one; anyone signs in with one without typing
//! an address first. A passkey verifies the person itself (user
//! verification is required), so it counts as both factors.
//!
//! Every ceremony's state is kept server side (in the single-use hand-off
//! table: hashed handle, five minutes, taken once), so a challenge cannot
//! be answered twice or after it ends. The signature counter and the backup
//! flags are checked by webauthn-rs and stored after each use; a use is
//! recorded only if the counter it started from is still the stored one.
use std::sync::Arc;

use serde_json::json;
use uuid::Uuid;
use webauthn_rs::prelude::{
    AuthenticationResult, DiscoverableAuthentication, Passkey, PasskeyAuthentication,
    PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential, Url, Webauthn,
    WebauthnBuilder,
};

use super::mfa::NewSession;
use super::secret::{self, TokenFormat};
use super::{ClientMeta, Core, Error, Handoff, Session, StoredPasskey, User};

/// Every ceremony handle starts with this.
pub const CEREMONY_PREFIX: &str = "agp.";
/// Seconds a ceremony waits for the authenticator (WebAuthn's own
/// recommended timeout).
pub const CEREMONY_TTL_SECS: i64 = 300;
/// The longest name a person may give a passkey.
pub const NAME_MAX_CHARS: usize = 64;
/// The most passkeys one person may register.
pub const MAX_PASSKEYS: usize = 20;

const REGISTER: &str = "passkey:register";
const SIGN_IN: &str = "passkey:sign_in";
const SECOND_STEP: &str = "passkey:second_step";

/// The relying party: passkeys on (a WebAuthn instance) or off.
#[derive(Clone, Default)]
pub struct PasskeyPolicy {
    webauthn: Option<Arc<Webauthn>>,
}

impl std::fmt::Debug for PasskeyPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasskeyPolicy")
            .field("on", &self.webauthn.is_some())
            .finish()
    }
}

impl PasskeyPolicy {
    /// Passkeys for `rp_id` (a domain), accepted from `origins` (each on
    /// `rp_id` or a subdomain of it). The error says what is wrong.
    pub fn new(rp_id: &str, rp_name: &str, origins: &[Url]) -> Result<Self, String> {
        let (first, more) = origins
            .split_first()
            .ok_or_else(|| "at least one origin is needed".to_string())?;
        let mut builder = WebauthnBuilder::new(rp_id, first)
            .map_err(|_| format!("{rp_id:?} is not the domain of {first} (nor a parent of it)"))?
            .rp_name(rp_name);
        for o in more {
            let on_rp = o
                .domain()
                .is_some_and(|d| d == rp_id || d.ends_with(&format!(".{rp_id}")));
            if !on_rp {
                return Err(format!("{o} is not on {rp_id:?}"));
            }
            builder = builder.append_allowed_origin(o);
        }
        let webauthn = builder.build().map_err(|e| e.to_string())?;
        Ok(PasskeyPolicy {
            webauthn: Some(Arc::new(webauthn)),
        })
    }
}

/// A started ceremony: what the browser needs, and the handle to finish it
/// with.
#[derive(Debug, Clone)]
pub struct Ceremony {
    /// `{"publicKey": {...}}` (and `mediation`), base64url for bytes.
    pub options: serde_json::Value,
    pub token: String,
}

/// A name as given: trimmed, at most [`NAME_MAX_CHARS`], never empty.
fn passkey_name(given: &str) -> Result<String, Error> {
    let name: String = given.trim().chars().filter(|c| !c.is_control()).collect();
    if name.chars().count() > NAME_MAX_CHARS {
        return Err(Error::Invalid {
            field: "name",
            message: format!("at most {NAME_MAX_CHARS} characters"),
        });
    }
    Ok(if name.is_empty() {
        "Passkey".to_string()
    } else {
        name
    })
}

/// The counter and backup flags webauthn-rs keeps inside a passkey.
fn flags_of(passkey: &Passkey) -> (i64, bool, bool) {
    let v = serde_json::to_value(passkey).unwrap_or_default();
    let cred = &v["cred"];
    (
        cred["counter"].as_i64().unwrap_or(0),
        cred["backup_eligible"].as_bool().unwrap_or(false),
        cred["backup_state"].as_bool().unwrap_or(false),
    )
}

/// The options for the browser, as JSON.
fn options_of(o: &impl serde::Serialize) -> Result<serde_json::Value, Error> {
    serde_json::to_value(o).map_err(|e| Error::Internal(format!("WebAuthn options: {e}")))
}

/// RFC 8176: a key bound to its device (`hwk`) or a synced one (`swk`).
fn amr_of(p: &StoredPasskey) -> &'static str {
    if p.backup_eligible { "swk" } else { "hwk" }
}

fn refused(field: &'static str, e: impl std::fmt::Display) -> Error {
    Error::Invalid {
        field,
        message: e.to_string(),
    }
}

impl Core {
    fn webauthn(&self) -> Result<&Webauthn, Error> {
        self.inner
            .passkeys
            .webauthn
            .as_deref()
            .ok_or(Error::Forbidden("passkeys are off (passkeys.enabled)"))
    }

    pub fn passkeys_enabled(&self) -> bool {
        self.inner.passkeys.webauthn.is_some()
    }

    /// Keep a ceremony's state (webauthn-rs's, serialised) for `user_id`
    /// (none: anyone's sign-in) and hand out its options with the handle.
    async fn keep_ceremony(
        &self,
        surface: &str,
        user_id: Option<Uuid>,
        state: &impl serde::Serialize,
        options: serde_json::Value,
    ) -> Result<Ceremony, Error> {
        let state = serde_json::to_string(state)
            .map_err(|e| Error::Internal(format!("WebAuthn state: {e}")))?;
        let token = format!(
            "{CEREMONY_PREFIX}{}",
            secret::new_token(TokenFormat::UrlSafe32)?
        );
        let now = self.now();
        self.store()
            .insert_handoff(&Handoff {
                code_hash: secret::hash_token(&token).to_vec(),
                surface: surface.to_string(),
                user_id,
                refusal: None,
                detail: Some(state),
                created_at: now,
                expires_at: now + CEREMONY_TTL_SECS,
            })
            .await?;
        Ok(Ceremony { options, token })
    }

    /// Take a ceremony's state (once): `Unauthorized` when unknown, used,
    /// expired, another ceremony's or another person's (`user_id`: whose
    /// it must be; none for a sign-in's).
    async fn take_ceremony<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        surface: &str,
        user_id: Option<Uuid>,
    ) -> Result<T, Error> {
        if !token.starts_with(CEREMONY_PREFIX)
            || token.len() > secret::MAX_TOKEN_LEN + CEREMONY_PREFIX.len()
        {
            return Err(Error::Unauthorized);
        }
        self.store()
            .take_handoff(&secret::hash_token(token), self.now())
            .await?
            .filter(|h| h.surface == surface && h.user_id == user_id)
            .and_then(|h| serde_json::from_str(h.detail.as_deref()?).ok())
            .ok_or(Error::Unauthorized)
    }

    /// Start registering a passkey for a signed-in person: a discoverable
    /// credential, user verification required, their passkeys excluded.
    pub async fn begin_passkey_registration(&self, user: &User) -> Result<Ceremony, Error> {
        let webauthn = self.webauthn()?;
        let existing = self.store().passkeys_of(user.id).await?;
        if existing.len() >= MAX_PASSKEYS {
            return Err(Error::Conflict("the most passkeys one person may have"));
        }
        let name = user
            .email
            .as_ref()
            .map(|e| e.as_str().to_string())
            .unwrap_or_else(|| user.id.to_string());
        let display = user.display_name.clone().unwrap_or_else(|| name.clone());
        let exclude = existing.iter().map(|p| p.credential_id.clone()).collect();
        let (ccr, state) = webauthn
            .start_passkey_registration(user.id, &name, &display, Some(exclude))
            .map_err(|e| Error::Internal(format!("WebAuthn: {e}")))?;
        let mut options = options_of(&ccr)?;
        // A passkey is a discoverable credential: the sign-in needs no
        // address typed first. (webauthn-rs asks for none; the registration
        // it checks does not depend on it.)
        let selection = &mut options["publicKey"]["authenticatorSelection"];
        selection["residentKey"] = json!("required");
        selection["requireResidentKey"] = json!(true);
        self.keep_ceremony(REGISTER, Some(user.id), &state, options)
            .await
    }

    /// Finish a registration with the browser's answer (`credential`, the
    /// JSON of its `PublicKeyCredential`): stored under `name`. A
    /// malformed or refused answer is `Invalid` (a malformed one leaves the
    /// ceremony as it was); a ceremony that is not this person's, used or
    /// expired is `Unauthorized`.
    pub async fn finish_passkey_registration(
        &self,
        user: &User,
        token: &str,
        name: &str,
        credential: &str,
        meta: &ClientMeta,
    ) -> Result<StoredPasskey, Error> {
        let webauthn = self.webauthn()?;
        let name = passkey_name(name)?;
        let reg: RegisterPublicKeyCredential =
            serde_json::from_str(credential).map_err(|e| refused("credential", e))?;
        let state: PasskeyRegistration = self.take_ceremony(token, REGISTER, Some(user.id)).await?;
        let passkey = match webauthn.finish_passkey_registration(&reg, &state) {
            Ok(p) => p,
            Err(e) => {
                self.audit(
                    "mfa.passkey_refused",
                    Some(user.id),
                    meta,
                    Some(json!({ "stage": "registration", "reason": e.to_string() })),
                )
                .await;
                return Err(refused("credential", e));
            }
        };
        let (sign_count, backup_eligible, backed_up) = flags_of(&passkey);
        let now = self.now();
        let stored = StoredPasskey {
            id: Uuid::now_v7(),
            user_id: user.id,
            credential_id: passkey.cred_id().to_vec(),
            name,
            passkey: serde_json::to_string(&passkey)
                .map_err(|e| Error::Internal(format!("passkey: {e}")))?,
            sign_count,
            backup_eligible,
            backed_up,
            created_at: now,
            last_used_at: None,
        };
        if !self.store().insert_passkey(&stored).await? {
            return Err(Error::Conflict("this passkey is registered already"));
        }
        self.audit(
            "mfa.passkey_added",
            Some(user.id),
            meta,
            Some(json!({ "passkey": stored.id, "backup_eligible": backup_eligible })),
        )
        .await;
        Ok(stored)
    }

    /// Start a passkey sign-in with no address: any of this site's
    /// discoverable credentials may answer. `conditional`: for the
    /// browser's autofill (conditional mediation), else a button's. Each
    /// start is a row for five minutes: counted as a sign-in start of this
    /// client (`login_flows.per_ip`).
    pub async fn begin_passkey_sign_in(
        &self,
        conditional: bool,
        ip: Option<&str>,
    ) -> Result<Ceremony, Error> {
        let webauthn = self.webauthn()?;
        self.count_flow_start(ip).await?;
        let (mut rcr, state): (_, DiscoverableAuthentication) = webauthn
            .start_discoverable_authentication()
            .map_err(|e| Error::Internal(format!("WebAuthn: {e}")))?;
        if !conditional {
            rcr.mediation = None;
        }
        self.keep_ceremony(SIGN_IN, None, &state, options_of(&rcr)?)
            .await
    }

    /// Finish a passkey sign-in: the credential it names, its owner, the
    /// signature (webauthn-rs: challenge, origin, RP id, user verification,
    /// counter, backup flags), then a session (both factors). A malformed
    /// answer is `Invalid`; anything refused is `Unauthorized`.
    pub async fn finish_passkey_sign_in(
        &self,
        token: &str,
        credential: &str,
        NewSession { kind, format, .. }: NewSession<'_>,
        meta: &ClientMeta,
    ) -> Result<(String, Session), Error> {
        let webauthn = self.webauthn()?;
        let answer: PublicKeyCredential =
            serde_json::from_str(credential).map_err(|e| refused("credential", e))?;
        let state: DiscoverableAuthentication = self.take_ceremony(token, SIGN_IN, None).await?;
        let failed = |user: Option<Uuid>, reason: String| async move {
            self.audit(
                "mfa.passkey_failed",
                user,
                meta,
                Some(json!({ "reason": reason })),
            )
            .await;
            Error::Unauthorized
        };
        let (user_id, cred_id) = match webauthn.identify_discoverable_authentication(&answer) {
            Ok(v) => v,
            Err(e) => return Err(failed(None, e.to_string()).await),
        };
        let Some(stored) = self.store().passkey_by_credential(cred_id).await? else {
            return Err(failed(None, "unknown credential".into()).await);
        };
        if stored.user_id != user_id {
            return Err(failed(Some(stored.user_id), "user handle mismatch".into()).await);
        }
        let passkey: Passkey = serde_json::from_str(&stored.passkey)
            .map_err(|e| Error::Internal(format!("stored passkey: {e}")))?;
        let result = match webauthn.finish_discoverable_authentication_v2(&answer, state, &passkey)
        {
            Ok(r) => r,
            Err(e) => return Err(failed(Some(user_id), e.to_string()).await),
        };
        let stored = match self.record_use(stored, passkey, &result).await? {
            Some(s) => s,
            None => return Err(failed(Some(user_id), "counter raced".into()).await),
        };
        let user = self.enabled_user(user_id).await?;
        self.audit(
            "mfa.passkey_verified",
            Some(user.id),
            meta,
            Some(json!({ "passkey": stored.id })),
        )
        .await;
        let method = format!("{} {}", amr_of(&stored), super::mfa::AMR_MFA);
        self.start_session(&user, kind, &method, format, meta, None)
            .await
    }

    /// Store a verified use: the counter and flags webauthn-rs reported,
    /// only if the stored counter is still the one the check started from.
    /// `None`: another use of the same counter won (a clone or a replay).
    async fn record_use(
        &self,
        mut stored: StoredPasskey,
        mut passkey: Passkey,
        result: &AuthenticationResult,
    ) -> Result<Option<StoredPasskey>, Error> {
        let seen = stored.sign_count;
        passkey.update_credential(result);
        let (sign_count, backup_eligible, backed_up) = flags_of(&passkey);
        stored.passkey = serde_json::to_string(&passkey)
            .map_err(|e| Error::Internal(format!("passkey: {e}")))?;
        stored.sign_count = sign_count;
        stored.backup_eligible = backup_eligible;
        stored.backed_up = backed_up;
        stored.last_used_at = Some(self.now());
        Ok(self
            .store()
            .record_passkey_use(&stored, seen)
            .await?
            .then_some(stored))
    }

    /// Start a passkey as the second step of `user`'s sign-in: only their
    /// own passkeys may answer.
    pub(crate) async fn begin_second_step_passkey(&self, user: &User) -> Result<Ceremony, Error> {
        let webauthn = self.webauthn()?;
        let passkeys: Vec<Passkey> = self
            .store()
            .passkeys_of(user.id)
            .await?
            .iter()
            .filter_map(|p| serde_json::from_str(&p.passkey).ok())
            .collect();
        if passkeys.is_empty() {
            return Err(Error::NotFound);
        }
        let (rcr, state): (_, PasskeyAuthentication) = webauthn
            .start_passkey_authentication(&passkeys)
            .map_err(|e| Error::Internal(format!("WebAuthn: {e}")))?;
        self.keep_ceremony(SECOND_STEP, Some(user.id), &state, options_of(&rcr)?)
            .await
    }

    /// Check a passkey answer at the second step of `user`'s sign-in: the
    /// `amr` value it adds (`hwk` or `swk`). Malformed: `Invalid`;
    /// anything refused: `Unauthorized`.
    pub(crate) async fn verify_second_step_passkey(
        &self,
        user: &User,
        token: &str,
        credential: &str,
        meta: &ClientMeta,
    ) -> Result<&'static str, Error> {
        let webauthn = self.webauthn()?;
        let answer: PublicKeyCredential =
            serde_json::from_str(credential).map_err(|e| refused("credential", e))?;
        let state: PasskeyAuthentication = self
            .take_ceremony(token, SECOND_STEP, Some(user.id))
            .await?;
        let failed = |reason: String| async move {
            self.audit(
                "mfa.passkey_failed",
                Some(user.id),
                meta,
                Some(json!({ "reason": reason, "step": "second" })),
            )
            .await;
            Error::Unauthorized
        };
        let stored = match self
            .store()
            .passkey_by_credential(answer.get_credential_id())
            .await?
        {
            Some(p) if p.user_id == user.id => p,
            _ => return Err(failed("not this person's passkey".into()).await),
        };
        let passkey: Passkey = serde_json::from_str(&stored.passkey)
            .map_err(|e| Error::Internal(format!("stored passkey: {e}")))?;
        let result = match webauthn.finish_passkey_authentication(&answer, &state) {
            Ok(r) => r,
            Err(e) => return Err(failed(e.to_string()).await),
        };
        let Some(stored) = self.record_use(stored, passkey, &result).await? else {
            return Err(failed("counter raced".into()).await);
        };
        self.audit(
            "mfa.passkey_verified",
            Some(user.id),
            meta,
            Some(json!({ "passkey": stored.id, "step": "second" })),
        )
        .await;
        Ok(amr_of(&stored))
    }

    /// A person's passkeys, oldest first.
    pub async fn passkeys(&self, user_id: Uuid) -> Result<Vec<StoredPasskey>, Error> {
        Ok(self.store().passkeys_of(user_id).await?)
    }

    pub async fn rename_passkey(
        &self,
        user_id: Uuid,
        id: Uuid,
        name: &str,
        meta: &ClientMeta,
    ) -> Result<bool, Error> {
        let name = passkey_name(name)?;
        let renamed = self.store().rename_passkey(user_id, id, &name).await?;
        if renamed {
            self.audit(
                "mfa.passkey_renamed",
                Some(user_id),
                meta,
                Some(json!({ "passkey": id })),
            )
            .await;
        }
        Ok(renamed)
    }

    /// Remove one of a person's passkeys (theirs only). `false` if there
    /// was none.
    pub async fn remove_passkey(
        &self,
        user_id: Uuid,
        id: Uuid,
        meta: &ClientMeta,
    ) -> Result<bool, Error> {
        let removed = self.store().delete_passkey(user_id, id).await?;
        if removed {
            self.audit(
                "mfa.passkey_removed",
                Some(user_id),
                meta,
                Some(json!({ "passkey": id })),
            )
            .await;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_bounded_and_never_empty() {
        assert_eq!(passkey_name("  Laptop \n").unwrap(), "Laptop");
        assert_eq!(passkey_name("").unwrap(), "Passkey");
        assert!(passkey_name(&"x".repeat(65)).is_err());
    }

    #[test]
    fn the_relying_party_must_own_its_origins() {
        let o = |s: &str| Url::parse(s).unwrap();
        assert!(PasskeyPolicy::new("example.com", "E", &[o("https://auth.example.com")]).is_ok());
        assert!(PasskeyPolicy::new("example.com", "E", &[o("https://example.org")]).is_err());
        assert!(
            PasskeyPolicy::new(
                "example.com",
                "E",
                &[o("https://auth.example.com"), o("https://evil.example")]
            )
            .is_err()
        );
        assert!(PasskeyPolicy::new("127.0.0.1", "E", &[o("http://127.0.0.1:3001")]).is_err());
    }
}
