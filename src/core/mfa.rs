//! The second-factor gate: whether a sign-in needs a second factor
//! (`mfa.required`, and per person by support), the pending sign-in a first
//! factor leaves (kept server side, no session yet), the second step that
//! turns it into a session, and the step-up rule for sensitive actions.
//!
//! Surfaces with a second step (authgate's pages) call
//! [`Core::first_factor_done`]; the others sign in with [`Core::sign_in`],
//! which refuses a person who needs a second factor unless their session
//! kind is exempt: their wire formats have no place for the step.
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::secret::{self, TokenFormat};
use super::totp::TotpEnrolment;
use super::{ClientMeta, Core, Error, Handoff, Session, User};

/// Every pending sign-in's token starts with this.
pub const PENDING_PREFIX: &str = "agm.";
/// Seconds a pending sign-in waits for its second factor.
pub const PENDING_TTL_SECS: i64 = 600;
/// The `amr` value a session gets when a second factor was shown.
pub const AMR_MFA: &str = "mfa";

/// `mfa.required`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MfaRequired {
    /// No second factors: none is offered or asked for.
    #[default]
    Off,
    /// People may set one up; who has one is asked for it.
    Optional,
    /// Everyone: who has none sets one up before their first session.
    All,
}

/// The gate's rules, from `[mfa]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MfaPolicy {
    pub required: MfaRequired,
    /// A sensitive action needs a sign-in at most this many seconds ago.
    pub step_up_secs: i64,
    /// Session kinds (of surfaces without a second step) that sign in on
    /// the first factor alone.
    pub exempt_kinds: Vec<String>,
    /// The issuer shown in authenticator apps.
    pub issuer: String,
}

impl Default for MfaPolicy {
    fn default() -> Self {
        MfaPolicy {
            required: MfaRequired::Off,
            step_up_secs: 600,
            exempt_kinds: Vec::new(),
            issuer: "authgate".into(),
        }
    }
}

/// What a sign-in needs beyond its first factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondFactorNeed {
    None,
    /// The person has a factor: they show it.
    Verify,
    /// The person must have one and has none: they set one up first.
    Enrol,
}

/// The session a sign-in makes: its kind, how the person signed in (an
/// `amr` value), and its token's format.
#[derive(Debug, Clone, Copy)]
pub struct NewSession<'a> {
    pub kind: &'a str,
    pub method: &'a str,
    pub format: TokenFormat,
}

/// A first factor's outcome on a surface with a second step.
#[derive(Debug)]
pub enum FirstFactor {
    /// No second factor needed: signed in.
    Session { token: String, session: Session },
    /// The second step: the pending sign-in's token (for a cookie, never a
    /// URL) and what the step is.
    Pending {
        token: String,
        need: SecondFactorNeed,
    },
}

/// A pending sign-in, as read by its surface.
#[derive(Debug, Clone)]
pub struct PendingSignIn {
    pub user: User,
    pub need: SecondFactorNeed,
    /// Where the surface sends the person once signed in.
    pub then: Option<String>,
    pub expires_at: super::Timestamp,
    /// What the person can show: a TOTP code (and recovery codes), a
    /// passkey (when passkeys are on).
    pub totp: bool,
    pub passkey: bool,
}

/// What a person shows at the second step.
#[derive(Debug, Clone, Copy)]
pub enum Proof<'a> {
    Totp(&'a str),
    Recovery(&'a str),
    /// The first code of a TOTP factor set up at this step.
    Enrol(&'a str),
    /// An answer (`PublicKeyCredential` JSON) to the ceremony begun by
    /// [`Core::begin_pending_passkey`].
    Passkey {
        ceremony: &'a str,
        credential: &'a str,
    },
}

/// The second step's outcome.
#[derive(Debug)]
pub enum SecondStep {
    Done {
        token: String,
        session: Session,
        then: Option<String>,
        /// A factor set up at this step: its recovery codes, shown once.
        recovery_codes: Option<Vec<String>>,
    },
    /// Refused: why, and the pending sign-in to try again with (`None`:
    /// it is gone; sign in again).
    Refused {
        error: Error,
        pending: Option<String>,
    },
}

/// What a pending sign-in keeps, beside its user.
#[derive(Serialize, Deserialize)]
struct Kept {
    kind: String,
    method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    then: Option<String>,
    enrol: bool,
}

impl Core {
    pub fn mfa_policy(&self) -> &MfaPolicy {
        &self.inner.mfa
    }

    /// What `user` needs beyond a first factor (for any surface).
    pub async fn second_factor_need(&self, user: &User) -> Result<SecondFactorNeed, Error> {
        let policy = self.mfa_policy();
        if policy.required == MfaRequired::Off {
            return Ok(SecondFactorNeed::None);
        }
        let state = self.store().mfa_state(user.id).await?;
        Ok(
            if state.totp || (state.passkeys && self.passkeys_enabled()) {
                SecondFactorNeed::Verify
            } else if state.required || policy.required == MfaRequired::All {
                SecondFactorNeed::Enrol
            } else {
                SecondFactorNeed::None
            },
        )
    }

    /// The gate of [`Core::sign_in`]: a person who needs a second factor
    /// gets no session from a surface without a second step.
    pub(crate) async fn refuse_without_second_factor(
        &self,
        user: &User,
        kind: &str,
        meta: &ClientMeta,
    ) -> Result<(), Error> {
        if self.mfa_policy().exempt_kinds.iter().any(|k| k == kind)
            || self.second_factor_need(user).await? == SecondFactorNeed::None
        {
            return Ok(());
        }
        self.audit(
            "signin.refused",
            Some(user.id),
            meta,
            Some(json!({ "reason": "second_factor_required", "kind": kind })),
        )
        .await;
        Err(Error::Forbidden(
            "a second factor is required: sign in on authgate's pages",
        ))
    }

    /// A first factor (`method`, an `amr` value) proved on a surface with a
    /// second step: a session when no second factor is needed, else a
    /// pending sign-in for `surface`, which goes `then` when done.
    pub async fn first_factor_done(
        &self,
        user: &User,
        NewSession {
            kind,
            method,
            format,
        }: NewSession<'_>,
        surface: &str,
        then: Option<String>,
        meta: &ClientMeta,
    ) -> Result<FirstFactor, Error> {
        self.refuse_disabled_sign_in(user, kind, meta).await?;
        let need = self.second_factor_need(user).await?;
        if need == SecondFactorNeed::None {
            let (token, session) = self
                .start_session(user, kind, method, format, meta, None)
                .await?;
            return Ok(FirstFactor::Session { token, session });
        }
        let kept = Kept {
            kind: kind.to_string(),
            method: method.to_string(),
            then,
            enrol: need == SecondFactorNeed::Enrol,
        };
        let now = self.now();
        let token = self
            .keep_pending(user, surface, &kept, now + PENDING_TTL_SECS)
            .await?;
        self.audit(
            "signin.second_factor_asked",
            Some(user.id),
            meta,
            Some(json!({ "kind": kind, "method": method, "enrol": kept.enrol })),
        )
        .await;
        Ok(FirstFactor::Pending { token, need })
    }

    async fn keep_pending(
        &self,
        user: &User,
        surface: &str,
        kept: &Kept,
        expires_at: super::Timestamp,
    ) -> Result<String, Error> {
        let token = format!(
            "{PENDING_PREFIX}{}",
            secret::new_token(TokenFormat::UrlSafe32)?
        );
        let detail =
            serde_json::to_string(kept).map_err(|e| Error::Internal(format!("pending: {e}")))?;
        self.store()
            .insert_handoff(&Handoff {
                code_hash: secret::hash_token(&token).to_vec(),
                surface: pending_surface(surface),
                user_id: Some(user.id),
                refusal: None,
                detail: Some(detail),
                created_at: self.now(),
                expires_at,
            })
            .await?;
        Ok(token)
    }

    /// Read a pending sign-in without spending it: `Unauthorized` when
    /// unknown, expired or another surface's.
    pub async fn pending_sign_in(
        &self,
        token: &str,
        surface: &str,
    ) -> Result<PendingSignIn, Error> {
        let (h, kept) = self.pending_of(token, surface, false).await?;
        let user = self
            .enabled_user(h.user_id.ok_or(Error::Unauthorized)?)
            .await?;
        let state = self.store().mfa_state(user.id).await?;
        Ok(PendingSignIn {
            totp: state.totp,
            passkey: state.passkeys && self.passkeys_enabled(),
            user,
            need: if kept.enrol {
                SecondFactorNeed::Enrol
            } else {
                SecondFactorNeed::Verify
            },
            then: kept.then,
            expires_at: h.expires_at,
        })
    }

    async fn pending_of(
        &self,
        token: &str,
        surface: &str,
        take: bool,
    ) -> Result<(Handoff, Kept), Error> {
        if !token.starts_with(PENDING_PREFIX)
            || token.len() > secret::MAX_TOKEN_LEN + PENDING_PREFIX.len()
        {
            return Err(Error::Unauthorized);
        }
        let hash = secret::hash_token(token);
        let now = self.now();
        let h = if take {
            self.store().take_handoff(&hash, now).await?
        } else {
            self.store().handoff(&hash, now).await?
        };
        let h = h
            .filter(|h| h.surface == pending_surface(surface))
            .ok_or(Error::Unauthorized)?;
        let kept: Kept = h
            .detail
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok())
            .ok_or(Error::Unauthorized)?;
        Ok((h, kept))
    }

    /// Set up TOTP at the second step of a pending sign-in that must enrol
    /// (the pending sign-in stays as it is).
    pub async fn begin_pending_totp(
        &self,
        token: &str,
        surface: &str,
        meta: &ClientMeta,
    ) -> Result<TotpEnrolment, Error> {
        let pending = self.pending_sign_in(token, surface).await?;
        if pending.need != SecondFactorNeed::Enrol {
            return Err(Error::Unauthorized);
        }
        let issuer = self.mfa_policy().issuer.clone();
        self.begin_totp(&pending.user, &issuer, meta).await
    }

    /// A passkey as the second step of a pending sign-in: a ceremony only
    /// the person's own passkeys can answer (the pending sign-in stays).
    pub async fn begin_pending_passkey(
        &self,
        token: &str,
        surface: &str,
    ) -> Result<super::passkeys::Ceremony, Error> {
        let pending = self.pending_sign_in(token, surface).await?;
        if pending.need != SecondFactorNeed::Verify {
            return Err(Error::Unauthorized);
        }
        self.begin_second_step_passkey(&pending.user).await
    }

    /// The second step: the pending sign-in is spent, the proof checked,
    /// and a session started; a refused proof leaves a new pending sign-in
    /// (to the same end) to try again with, unless it is gone.
    pub async fn second_factor_done(
        &self,
        token: &str,
        surface: &str,
        proof: Proof<'_>,
        format: TokenFormat,
        meta: &ClientMeta,
    ) -> Result<SecondStep, Error> {
        let (h, kept) = self.pending_of(token, surface, true).await?;
        let user = self
            .enabled_user(h.user_id.ok_or(Error::Unauthorized)?)
            .await?;
        let mut added = None;
        let checked = match proof {
            Proof::Totp(code) if !kept.enrol => {
                self.verify_totp(user.id, code, meta).await.map(|_| None)
            }
            Proof::Passkey {
                ceremony,
                credential,
            } if !kept.enrol => self
                .verify_second_step_passkey(&user, ceremony, credential, meta)
                .await
                .map(|amr| {
                    added = Some(amr);
                    None
                }),
            Proof::Recovery(code) if !kept.enrol => self
                .use_recovery_code(user.id, code, meta)
                .await
                .map(|_| None),
            Proof::Enrol(code) if kept.enrol => {
                self.confirm_totp(user.id, code, meta).await.map(Some)
            }
            _ => Err(Error::Unauthorized),
        };
        let recovery_codes = match checked {
            Ok(codes) => codes,
            Err(
                error @ (Error::Unauthorized | Error::RateLimited { .. } | Error::Invalid { .. }),
            ) => {
                let pending = self
                    .keep_pending(&user, surface, &kept, h.expires_at)
                    .await?;
                return Ok(SecondStep::Refused {
                    error,
                    pending: Some(pending),
                });
            }
            Err(error) => {
                return Ok(SecondStep::Refused {
                    error,
                    pending: None,
                });
            }
        };
        let method = match added {
            Some(amr) => format!("{} {amr} {AMR_MFA}", kept.method),
            None => format!("{} {AMR_MFA}", kept.method),
        };
        let (token, session) = self
            .start_session(&user, &kept.kind, &method, format, meta, None)
            .await?;
        Ok(SecondStep::Done {
            token,
            session,
            then: kept.then,
            recovery_codes,
        })
    }

    /// A sensitive action (a factor added or removed, recovery codes made
    /// again, the account deleted) needs a session signed in at most
    /// `mfa.step_up_minutes` ago: `Forbidden` tells the surface to ask
    /// for a new sign-in.
    pub fn require_recent_sign_in(&self, session: &Session) -> Result<(), Error> {
        if self.now() - session.created_at <= self.mfa_policy().step_up_secs {
            Ok(())
        } else {
            Err(Error::Forbidden("sign in again to do this"))
        }
    }

    /// Make a person use a second factor whatever the policy (`true`), or
    /// follow it again (support, with the CLI).
    pub async fn set_mfa_required(
        &self,
        user_id: uuid::Uuid,
        required: bool,
        meta: &ClientMeta,
    ) -> Result<(), Error> {
        self.store()
            .set_mfa_required(user_id, required, self.now())
            .await?;
        self.audit(
            "mfa.requirement_set",
            Some(user_id),
            meta,
            Some(json!({ "required": required })),
        )
        .await;
        Ok(())
    }

    pub async fn mfa_state(&self, user_id: uuid::Uuid) -> Result<super::MfaState, Error> {
        Ok(self.store().mfa_state(user_id).await?)
    }
}

fn pending_surface(surface: &str) -> String {
    format!("mfa:{surface}")
}
