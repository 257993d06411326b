//! The core model: plain data shared by the core, the store and the surfaces.
//! Validation lives in the constructors (`Email::parse`, `Locale::parse`, ...)
//! so a value of these types is always well-formed.
use std::fmt;

use uuid::Uuid;

use super::Error;
use super::clock::Timestamp;

/// An e-mail address parsed strictly: exactly one bare mailbox, no display
/// name, no comments, no whitespace or control characters, a dotted domain.
/// The string checked is exactly the string stored and later mailed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(s: &str) -> Result<Self, Error> {
        let bad = |m: &str| Error::invalid("email", m);
        if s.is_empty() {
            return Err(bad("must not be empty"));
        }
        if s.len() > 254 {
            return Err(bad("is longer than 254 characters"));
        }
        if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(bad("must not contain spaces or control characters"));
        }
        if s.contains(['<', '>', ',', ';', '(', ')', '"', '\\', '[', ']']) {
            return Err(bad("must be exactly one plain address (local@domain)"));
        }
        let parsed = email_address::EmailAddress::parse_with_options(
            s,
            email_address::Options::default()
                .without_display_text()
                .without_domain_literal(),
        )
        .map_err(|e| bad(&e.to_string()))?;
        let domain = parsed.domain();
        if !domain.contains('.') || domain.starts_with('.') || domain.ends_with('.') {
            return Err(bad(
                "the domain must be a full host name such as example.com",
            ));
        }
        // One form of the domain everywhere an address is a key or is sent:
        // IDNA's ASCII form, lower case (`bücher.test`, `BÜCHER.test` and
        // `xn--bcher-kva.test` are one mailbox's domain).
        let ascii =
            ascii_domain(domain).ok_or_else(|| bad("the domain is not a valid host name"))?;
        let local = &s[..s.len() - domain.len() - 1];
        Ok(Email(format!("{local}@{ascii}")))
    }

    /// Wrap a value that was validated before it was stored.
    pub(crate) fn from_stored(s: String) -> Self {
        Email(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The case-insensitive key under which addresses are unique.
    pub fn normalized(&self) -> String {
        self.0.to_lowercase()
    }

    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
    }
}

/// A domain in IDNA's ASCII form, lower case (`None` when it is not a
/// valid host name).
pub fn ascii_domain(domain: &str) -> Option<String> {
    let d = idna::domain_to_ascii(domain.trim_end_matches('.')).ok()?;
    (!d.is_empty()).then_some(d)
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A language tag such as `en`, `de` or `pt-BR` (BCP 47 shape, not a registry check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locale(String);

impl Locale {
    pub fn parse(s: &str) -> Result<Self, Error> {
        let mut parts = s.split(['-', '_']);
        let lang = parts.next().unwrap_or("");
        let ok = s.len() <= 35
            && (2..=3).contains(&lang.len())
            && lang.chars().all(|c| c.is_ascii_alphabetic())
            && parts.all(|p| {
                (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric())
            });
        if !ok {
            return Err(Error::invalid(
                "locale",
                "must be a language tag such as en, de or pt-BR",
            ));
        }
        Ok(Locale(s.replace('_', "-")))
    }

    /// Wrap a value that was validated before it was stored.
    pub(crate) fn from_stored(s: String) -> Self {
        Locale(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A person's display name: at most 200 characters, no control characters.
pub fn parse_display_name(s: &str) -> Result<String, Error> {
    let t = s.trim();
    if t.chars().count() > 200 {
        return Err(Error::invalid("name", "is longer than 200 characters"));
    }
    if t.chars().any(char::is_control) {
        return Err(Error::invalid(
            "name",
            "must not contain control characters",
        ));
    }
    Ok(t.to_string())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: Uuid,
    pub email: Option<Email>,
    pub display_name: Option<String>,
    pub locale: Option<Locale>,
    pub disabled: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A sign-in method of a user: (provider, issuer, subject) is the key a
/// returning person is found by, never the e-mail address alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub id: Uuid,
    pub user_id: Uuid,
    pub provider: String,
    /// The issuer the subject is unique within (for Microsoft, the tenant).
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    /// Whether the provider vouched for `email`.
    pub email_verified: bool,
    pub created_at: Timestamp,
    pub last_used_at: Timestamp,
}

/// A session as stored: the bearer token itself is never kept, only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Public handle (safe to show in lists and logs; cannot authenticate).
    pub id: Uuid,
    pub user_id: Uuid,
    pub created_at: Timestamp,
    pub last_seen_at: Timestamp,
    /// Seconds of inactivity after which the session ends.
    pub idle_timeout: i64,
    /// Absolute end, whatever the activity.
    pub expires_at: Timestamp,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// Which surface or tool created it (e.g. `cli`, `cookie`, `mail`).
    pub kind: String,
    /// How the person signed in, as an OpenID Connect `amr` value
    /// ([`AMR_OTP`], [`AMR_FED`]); empty for sessions from before it was kept.
    pub method: String,
}

/// An `amr` value: signed in with a one-time code sent by e-mail.
pub const AMR_OTP: &str = "otp";
/// An `amr` value: signed in through a federated provider.
pub const AMR_FED: &str = "fed";

impl Session {
    /// The moment this session ends if nothing touches it again.
    pub fn ends_at(&self) -> Timestamp {
        self.expires_at
            .min(self.last_seen_at.saturating_add(self.idle_timeout))
    }
}

/// An OAuth/OIDC login in progress: short-lived and single-use. The `state`
/// itself is stored only as a hash; the row is removed when taken.
#[derive(Clone, PartialEq, Eq)]
pub struct LoginFlow {
    pub state_hash: Vec<u8>,
    pub provider: String,
    pub surface: String,
    pub pkce_verifier: String,
    pub nonce: String,
    pub language: Option<String>,
    /// Where to send the browser afterwards: kept server-side, never read
    /// back from the callback.
    pub redirect_to: Option<String>,
    /// The `redirect_uri` of the authorize request (the token request must
    /// repeat it).
    pub redirect_uri: Option<String>,
    /// Surface-specific extra data (JSON text).
    pub data: Option<String>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// The PKCE verifier and the nonce are secrets: never printed.
impl std::fmt::Debug for LoginFlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginFlow")
            .field("provider", &self.provider)
            .field("surface", &self.surface)
            .field("language", &self.language)
            .field("redirect_to", &self.redirect_to)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A pending e-mail code sign-in: token and code are stored only as hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailLogin {
    pub token_hash: Vec<u8>,
    pub mail: String,
    pub mail_norm: String,
    pub locale: String,
    pub code_hash: Vec<u8>,
    pub attempts_left: i64,
    pub device_session_id: Option<Uuid>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// Proof that someone read a mail sent to `mail`: single use, short-lived,
/// stored only as a hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailAuthToken {
    pub token_hash: Vec<u8>,
    pub mail: String,
    pub locale: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// A one-time confirmation: proof that a provider sign-in of `user_id`
/// finished, to be traded once for a session. Only hashes are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmation {
    pub token_hash: Vec<u8>,
    pub validation_hash: Option<Vec<u8>>,
    pub user_id: Uuid,
    pub surface: String,
    /// The user was created by this sign-in.
    pub signup: bool,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// A provider sign-in finished at authgate's callback, waiting (once, for a
/// short while) for the client that relays its one-time code: the user it
/// signed in, or why it signed nobody in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handoff {
    pub code_hash: Vec<u8>,
    pub surface: String,
    pub user_id: Option<Uuid>,
    /// Why nobody was signed in (see `core::handoff`).
    pub refusal: Option<String>,
    /// What the client is shown with the refusal (a JSON document).
    pub detail: Option<String>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// A rendered mail waiting in the durable outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMail {
    pub id: Uuid,
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    pub attempts: i64,
    pub next_attempt_at: Timestamp,
    /// After this the mail is pointless (its code has expired) and is dropped.
    pub expires_at: Timestamp,
    pub created_at: Timestamp,
}

/// A provider's access and refresh tokens for one identity, as ciphertext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderTokens {
    pub identity_id: Uuid,
    pub access_token: Vec<u8>,
    pub refresh_token: Option<Vec<u8>>,
    pub expires_at: Option<Timestamp>,
    pub scope: Option<String>,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub at: Timestamp,
    pub kind: String,
    pub user_id: Option<Uuid>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// Free-form, secret-free detail (JSON text).
    pub detail: Option<String>,
}

/// Who is asking: recorded on sessions and audit events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientMeta {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_parsing_is_strict() {
        for good in ["a@example.com", "First.Last+tag@sub.example.org"] {
            assert_eq!(Email::parse(good).unwrap().as_str(), good);
        }
        for bad in [
            "",
            "a",
            "a@b",
            "a@example.com\r\nBcc: x@example.com",
            "a @example.com",
            "A <a@example.com>",
            "a@example.com,b@example.com",
            "a@[127.0.0.1]",
            "@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            Email::parse("Ab@Example.COM").unwrap().normalized(),
            "ab@example.com"
        );
    }

    #[test]
    fn one_mailbox_one_domain_form() {
        let forms = [
            "a@bücher.test",
            "a@xn--bcher-kva.test",
            "a@BÜCHER.test",
            "a@Xn--Bcher-Kva.TEST",
        ];
        let keys: Vec<String> = forms
            .iter()
            .map(|f| Email::parse(f).unwrap().normalized())
            .collect();
        assert!(keys.iter().all(|k| k == "a@xn--bcher-kva.test"), "{keys:?}");
        // What is sent is the ASCII form too; the local part keeps its case.
        assert_eq!(
            Email::parse("Ann@Bücher.test").unwrap().as_str(),
            "Ann@xn--bcher-kva.test"
        );
    }

    #[test]
    fn locales() {
        assert_eq!(Locale::parse("pt_BR").unwrap().as_str(), "pt-BR");
        assert!(Locale::parse("english").is_err());
        assert!(Locale::parse("e").is_err());
        assert!(Locale::parse("de-").is_err());
    }
}

/// A user's TOTP second factor (RFC 6238), as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotpFactor {
    pub user_id: Uuid,
    /// The secret, sealed by the vault (never stored in the clear).
    pub sealed: Vec<u8>,
    /// When enrolment was confirmed by a right code; `None`: pending.
    pub confirmed_at: Option<Timestamp>,
    /// The last time step whose code was taken (a code is taken once).
    pub last_step: i64,
    /// Attempts since the last right code (or the last lock's end).
    pub attempts: i64,
    /// Locks so far without a right code between: each doubles the next.
    pub lockouts: i64,
    /// No attempt is evaluated before this.
    pub locked_until: Timestamp,
    pub created_at: Timestamp,
}

/// What a sign-in needs to know of a person's second factors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MfaState {
    /// A confirmed TOTP factor.
    pub totp: bool,
    /// Made to use a second factor by support, whatever the policy.
    pub required: bool,
    /// At least one passkey.
    pub passkeys: bool,
}

/// A registered passkey (a WebAuthn discoverable credential), as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPasskey {
    pub id: Uuid,
    pub user_id: Uuid,
    pub credential_id: Vec<u8>,
    /// The person's name for it ("Laptop").
    pub name: String,
    /// webauthn-rs's record of the credential (public key, counter,
    /// flags), JSON.
    pub passkey: String,
    /// The signature counter last accepted (0: the authenticator keeps
    /// none, as synced passkeys do).
    pub sign_count: i64,
    pub backup_eligible: bool,
    pub backed_up: bool,
    pub created_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
}
