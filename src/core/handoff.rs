//! Hand-offs. Some clients cannot finish a provider sign-in the safe way
//! themselves: MCT CO2's front end drops the `state` from its return URL and,
//! being on another origin, sends no cookie, so the PKCE verifier and the
//! browser binding of the flow cannot reach the code exchange. For them the
//! provider sends the browser back to authgate's own callback, which checks
//! all of it (state, flow cookie, PKCE, nonce, `iss`), and then sends the
//! browser on to the client with a one-time code of authgate's own in the
//! same `?code=` parameter. The client trades that code once, within
//! [`HANDOFF_TTL_SECS`], for the outcome: a session, or the refusal it
//! would have got (no such user, disabled, the provider's error document).
use serde_json::Value;
use uuid::Uuid;

use super::secret::{self, TokenFormat};
use super::{Core, Error, Handoff, ProviderError, User};

/// Every hand-off code starts with this, so a surface tells it from a
/// provider's code without a look-up.
pub const HANDOFF_PREFIX: &str = "ag1.";
/// Seconds a hand-off waits for its client.
pub const HANDOFF_TTL_SECS: i64 = 120;

/// Why a finished callback signed nobody in, kept for the client.
#[derive(Debug, Clone)]
pub enum Refusal {
    NotRegistered,
    Disabled,
    Provider(ProviderError),
}

impl Refusal {
    /// The refusal a client should see for `e`; other errors (storage,
    /// internal) are given back: they are answered where they happen.
    pub fn from_error(e: Error) -> Result<Refusal, Error> {
        match e {
            Error::NotFound => Ok(Refusal::NotRegistered),
            Error::Disabled => Ok(Refusal::Disabled),
            Error::Provider(p) => Ok(Refusal::Provider(p)),
            other => Err(other),
        }
    }

    fn stored(&self) -> (&'static str, Option<String>) {
        match self {
            Refusal::NotRegistered => ("not_registered", None),
            Refusal::Disabled => ("disabled", None),
            Refusal::Provider(ProviderError::Rejected { body, .. }) => {
                ("provider_rejected", Some(body.to_string()))
            }
            Refusal::Provider(ProviderError::Invalid(m)) => (
                "provider_invalid",
                Some(Value::from(m.as_str()).to_string()),
            ),
            Refusal::Provider(ProviderError::Unavailable(m)) => (
                "provider_unavailable",
                Some(Value::from(m.as_str()).to_string()),
            ),
        }
    }

    fn from_stored(kind: &str, detail: Option<&str>) -> Option<Refusal> {
        let detail: Value = detail
            .and_then(|d| serde_json::from_str(d).ok())
            .unwrap_or(Value::Null);
        let text = || detail.as_str().unwrap_or_default().to_string();
        Some(match kind {
            "not_registered" => Refusal::NotRegistered,
            "disabled" => Refusal::Disabled,
            "provider_rejected" => Refusal::Provider(ProviderError::Rejected {
                stage: "provider",
                status: 400,
                body: detail.clone(),
            }),
            "provider_invalid" => Refusal::Provider(ProviderError::Invalid(text())),
            "provider_unavailable" => Refusal::Provider(ProviderError::Unavailable(text())),
            _ => return None,
        })
    }
}

impl From<Refusal> for Error {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::NotRegistered => Error::NotFound,
            Refusal::Disabled => Error::Disabled,
            Refusal::Provider(p) => Error::Provider(p),
        }
    }
}

impl Core {
    /// Keep a finished callback's outcome for the client; returns the
    /// one-time code to send the browser on with.
    pub async fn hand_off(
        &self,
        surface: &str,
        outcome: Result<Uuid, Refusal>,
    ) -> Result<String, Error> {
        let code = format!(
            "{HANDOFF_PREFIX}{}",
            secret::new_token(TokenFormat::UrlSafe32)?
        );
        let (user_id, refusal, detail) = match &outcome {
            Ok(user) => (Some(*user), None, None),
            Err(r) => {
                let (kind, detail) = r.stored();
                (None, Some(kind.to_string()), detail)
            }
        };
        let now = self.now();
        self.store()
            .insert_handoff(&Handoff {
                code_hash: secret::hash_token(&code).to_vec(),
                surface: surface.to_string(),
                user_id,
                refusal,
                detail,
                created_at: now,
                expires_at: now + HANDOFF_TTL_SECS,
            })
            .await?;
        Ok(code)
    }

    /// Take a hand-off (once): its user, or the error its refusal stands
    /// for. Unknown, used, expired or another surface's: `Unauthorized`.
    pub async fn take_handoff(&self, code: &str, surface: &str) -> Result<User, Error> {
        if code.len() > secret::MAX_TOKEN_LEN + HANDOFF_PREFIX.len() {
            return Err(Error::Unauthorized);
        }
        let h = self
            .store()
            .take_handoff(&secret::hash_token(code), self.now())
            .await?
            .filter(|h| h.surface == surface)
            .ok_or(Error::Unauthorized)?;
        if let Some(kind) = &h.refusal {
            return Err(Refusal::from_stored(kind, h.detail.as_deref())
                .map(Error::from)
                .unwrap_or(Error::Unauthorized));
        }
        self.enabled_user(h.user_id.ok_or(Error::Unauthorized)?)
            .await
    }
}
