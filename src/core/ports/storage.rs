//! The storage the core needs, defined here and implemented outside it
//! (`crate::store`, in SQL for SQLite and PostgreSQL). Cut by aggregate;
//! [`Store`] is all of them, the one object the core is given at assembly.
//! Implementations keep data and make multi-row changes atomic; they decide
//! no rule (a rate-limit count is returned, not judged).
use async_trait::async_trait;
use uuid::Uuid;

use crate::core::oidc::{AuthCode, Grant, IssuedToken, SigningKey, Spend, StoredClient};
use crate::core::users::{ImportReport, NewUser};
use crate::core::{
    AuditEvent, Confirmation, Handoff, Identity, LoginFlow, MailAuthToken, MailLogin, OutboxMail,
    ProviderTokens, Session, Timestamp, User,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint: the value names what already exists.
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// The database could not be reached or timed out.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Stored data that does not decode (a corrupt row or foreign writer).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(String),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("invalid database url: {0}")]
    Url(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The PostgreSQL channel session changes are announced on.
pub const SESSIONS_CHANNEL: &str = "authgate_sessions";

/// One rate-limit window of one key: `[window_start, expires_at)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateHit {
    pub key: String,
    pub window_start: Timestamp,
    pub expires_at: Timestamp,
}

/// The database itself: which one, reachability, migrations, cross-instance
/// signalling of session changes, and purging what expired.
#[async_trait]
pub trait Database: Send + Sync + 'static {
    /// Which database this is (`sqlite` or `postgres`).
    fn backend(&self) -> &'static str;
    async fn ping(&self) -> Result<()>;
    async fn migrate(&self) -> Result<()>;
    /// Close all connections (afterwards every call fails as unavailable).
    async fn close(&self);
    /// A cheap fingerprint of the last announced session change that other
    /// processes made visible without a query (SQLite: the marker file's
    /// inode and modification time); `None` where changes are pushed.
    fn sessions_marker(&self) -> Option<(u64, i128)> {
        None
    }
    /// Tell every instance that sessions changed (`all` or a token hash in
    /// hex): PostgreSQL `NOTIFY` on [`SESSIONS_CHANNEL`]; nothing on SQLite
    /// (one instance per database file).
    async fn announce_sessions_changed(&self, payload: &str) -> Result<()>;
    /// Delete what has expired; returns the number of rows removed.
    async fn purge_expired(&self, now: Timestamp) -> Result<u64>;
}

/// Users, their identities (sign-in methods) and consent choices.
#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    async fn insert_user(&self, user: &User) -> Result<()>;
    async fn user_by_id(&self, id: Uuid) -> Result<Option<User>>;
    async fn user_by_email(&self, email_norm: &str) -> Result<Option<User>>;
    async fn list_users(&self, offset: u64, limit: u32) -> Result<Vec<User>>;
    /// Set the flag; when disabling, delete the user's sessions in the same
    /// transaction. `None` if there is no such user, else sessions ended.
    async fn set_user_disabled(
        &self,
        id: Uuid,
        disabled: bool,
        now: Timestamp,
    ) -> Result<Option<u64>>;
    /// Set a user's display name and locale; `false` if there is no such user.
    async fn update_user_profile(
        &self,
        id: Uuid,
        display_name: Option<&str>,
        locale: Option<&str>,
        now: Timestamp,
    ) -> Result<bool>;
    /// Delete a user and, by cascade, identities, sessions, provider tokens.
    async fn delete_user(&self, id: Uuid) -> Result<bool>;
    /// All rows in one transaction; creates missing users, updates changed ones.
    async fn import_users(
        &self,
        rows: &[NewUser],
        now: Timestamp,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<ImportReport>;
    async fn insert_identity(&self, identity: &Identity) -> Result<()>;
    /// A new user and their first identity, in one transaction (a sign-up).
    async fn insert_user_with_identity(&self, user: &User, identity: &Identity) -> Result<()>;
    async fn identity_with_user(
        &self,
        provider: &str,
        issuer: &str,
        subject: &str,
    ) -> Result<Option<(Identity, User)>>;
    async fn identities_of(&self, user_id: Uuid) -> Result<Vec<Identity>>;
    /// Delete one of a user's identities (and, by cascade, its provider
    /// tokens); `false` if the user has no such identity.
    async fn delete_identity(&self, user_id: Uuid, identity_id: Uuid) -> Result<bool>;
    async fn touch_identity(
        &self,
        id: Uuid,
        email: Option<&str>,
        email_verified: bool,
        now: Timestamp,
    ) -> Result<()>;
    /// The identities of these users (the session cache's re-reads), in
    /// creation order per user.
    async fn identities_of_users(&self, users: &[Uuid]) -> Result<Vec<Identity>>;
    /// Record a user's consent choices (a JSON object), replacing earlier ones.
    async fn put_user_consent(&self, user_id: Uuid, consent: &str, now: Timestamp) -> Result<()>;
    /// The consent choices recorded for a user.
    async fn user_consent(&self, user_id: Uuid) -> Result<Option<String>>;
}

/// Sessions (only token hashes are stored), read with their users.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// A new session; `parent`: the session it was handed over from (a
    /// protected host's session, see `core::forward`).
    async fn insert_session(
        &self,
        session: &Session,
        token_hash: &[u8],
        parent: Option<Uuid>,
    ) -> Result<()>;
    async fn session_by_token_hash(&self, token_hash: &[u8]) -> Result<Option<(Session, User)>>;
    /// Set the last-seen time of these sessions (one statement per 64).
    async fn touch_sessions(&self, ids: &[Uuid], now: Timestamp) -> Result<()>;
    /// The sessions (with users) of these token hashes that exist, with
    /// their hashes; one statement per 64.
    async fn sessions_by_token_hashes(
        &self,
        hashes: &[[u8; 32]],
    ) -> Result<Vec<(Vec<u8>, Session, User)>>;
    /// Sessions seen at or after `since`, most recent first, with their
    /// token hashes and users (the session cache's warm-up).
    async fn recent_sessions(
        &self,
        since: Timestamp,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Session, User)>>;
    /// The identities of the users of [`SessionStore::recent_sessions`]' sessions.
    async fn identities_of_recent_sessions(
        &self,
        since: Timestamp,
        limit: usize,
    ) -> Result<Vec<Identity>>;
    /// End a session and the sessions handed over from it.
    async fn delete_session(&self, id: Uuid) -> Result<bool>;
    /// End the session of a token (only it: see `delete_child_sessions`).
    async fn delete_session_by_token_hash(&self, token_hash: &[u8]) -> Result<Option<Session>>;
    /// End the sessions handed over from `parent`; how many ended.
    async fn delete_child_sessions(&self, parent: Uuid) -> Result<u64>;
    /// End a token's whole family: its session's parent (or itself), and
    /// every session handed over from that one. The sessions that ended.
    async fn delete_session_family(&self, token_hash: &[u8]) -> Result<Vec<Session>>;
    async fn delete_user_sessions(&self, user_id: Uuid) -> Result<u64>;
    /// Live sessions at `now`, newest first.
    async fn list_sessions(
        &self,
        user_id: Option<Uuid>,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<Session>>;
}

/// Single-use sign-in state: login flows, confirmations and hand-offs
/// (taking deletes: a second take finds nothing).
#[async_trait]
pub trait FlowStore: Send + Sync + 'static {
    async fn insert_login_flow(&self, flow: &LoginFlow) -> Result<()>;
    /// Atomically remove and return an unexpired flow; a second take of the
    /// same state finds nothing.
    async fn take_login_flow(&self, state_hash: &[u8], now: Timestamp)
    -> Result<Option<LoginFlow>>;
    /// Read an unexpired flow without taking it.
    async fn login_flow(&self, state_hash: &[u8], now: Timestamp) -> Result<Option<LoginFlow>>;
    async fn insert_confirmation(&self, c: &Confirmation) -> Result<()>;
    /// Atomically remove and return an unexpired confirmation.
    async fn take_confirmation(
        &self,
        token_hash: &[u8],
        now: Timestamp,
    ) -> Result<Option<Confirmation>>;
    async fn insert_handoff(&self, h: &Handoff) -> Result<()>;
    /// Atomically remove and return an unexpired hand-off.
    async fn take_handoff(&self, code_hash: &[u8], now: Timestamp) -> Result<Option<Handoff>>;
    /// Read a live hand-off without taking it.
    async fn handoff(&self, code_hash: &[u8], now: Timestamp) -> Result<Option<Handoff>>;
}

/// E-mail code logins, the auth tokens they lead to, and the durable mail
/// outbox.
#[async_trait]
pub trait MailLoginStore: Send + Sync + 'static {
    /// Count one hit in each window and show the counts to `admit` (the
    /// core's judgement); only if it admits them, end every older login of
    /// the same address, insert the new one, queue its mail and record the
    /// audit event, atomically with the counts where the database allows it
    /// (a code that was answered for is always in the outbox). Not admitted:
    /// nothing is kept, the hits included. Returns the counts.
    async fn insert_mail_login(
        &self,
        hits: &[RateHit],
        admit: &(dyn for<'c> Fn(&'c [i64]) -> bool + Send + Sync),
        login: &MailLogin,
        mail: &OutboxMail,
        audit: &AuditEvent,
    ) -> Result<Vec<i64>>;
    /// Atomically spend one attempt of an unexpired login that has attempts
    /// left; returns the row after the decrement, or `None`.
    async fn spend_mail_login_attempt(
        &self,
        token_hash: &[u8],
        now: Timestamp,
    ) -> Result<Option<MailLogin>>;
    async fn delete_mail_login(&self, token_hash: &[u8]) -> Result<bool>;
    async fn insert_mail_auth_token(&self, token: &MailAuthToken) -> Result<()>;
    /// Atomically remove and return an unexpired token.
    async fn take_mail_auth_token(
        &self,
        token_hash: &[u8],
        now: Timestamp,
    ) -> Result<Option<MailAuthToken>>;
    /// Lease up to `limit` due, unleased mails until `lease_until`.
    async fn claim_outbox(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<OutboxMail>>;
    /// Remove mails (sent, or given up), in one transaction.
    async fn outbox_sent(&self, ids: &[Uuid]) -> Result<()>;
    /// Release a mail for another try at `next_attempt_at`.
    async fn outbox_retry(
        &self,
        id: Uuid,
        attempts: i64,
        next_attempt_at: Timestamp,
        error: &str,
    ) -> Result<()>;
}

/// Providers' tokens, kept as ciphertext only (the core's vault seals them).
#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    async fn put_provider_tokens(&self, tokens: &ProviderTokens) -> Result<()>;
    async fn provider_tokens(&self, identity_id: Uuid) -> Result<Option<ProviderTokens>>;
    /// A page of kept tokens, by identity id, after `after` (re-keying).
    async fn provider_tokens_after(
        &self,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<ProviderTokens>>;
}

/// Rate-limit counters: an atomic primitive; the core decides what a count means.
#[async_trait]
pub trait RateLimitStore: Send + Sync + 'static {
    /// Count one hit in each window, in one transaction, and return the
    /// hits so far per window, atomically across every instance.
    async fn rate_limit_hits(&self, hits: &[RateHit]) -> Result<Vec<i64>>;
    /// Take one hit back from each window (a request the core refused
    /// must not spend the window, nor push its end); never below zero.
    async fn give_back_hits(&self, hits: &[RateHit]) -> Result<()>;
}

/// The audit trail.
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    async fn insert_audit(&self, event: &AuditEvent) -> Result<()>;
    async fn list_audit(&self, user_id: Option<Uuid>, limit: u32) -> Result<Vec<AuditEvent>>;
}

/// Second factors: a user's TOTP secret (sealed by the vault) with its
/// replay and wrong-code counters, and the hashes of recovery codes.
#[async_trait]
pub trait FactorStore: Send + Sync + 'static {
    /// Start (or restart) a TOTP enrolment: a new, unconfirmed secret.
    /// `false` when a confirmed one exists (it must be removed first).
    async fn put_totp(&self, user_id: Uuid, sealed: &[u8], now: Timestamp) -> Result<bool>;
    async fn totp(&self, user_id: Uuid) -> Result<Option<crate::core::TotpFactor>>;
    /// Count one attempt, atomically, if the factor is not locked and has
    /// attempts left: the attempt that uses the last one locks it until
    /// `lock_until`. The attempts now counted, or `None` (refused unseen).
    async fn claim_totp_attempt(
        &self,
        user_id: Uuid,
        now: Timestamp,
        max: i64,
        lock_until: Timestamp,
    ) -> Result<Option<i64>>;
    /// A right code for `step`: taken once (a step not after the last taken
    /// one is a replay: `false`); the counters start again.
    async fn accept_totp_step(
        &self,
        user_id: Uuid,
        step: i64,
        confirm_at: Timestamp,
    ) -> Result<bool>;
    async fn delete_totp(&self, user_id: Uuid) -> Result<bool>;
    /// Replace a user's recovery codes (their hashes) in one transaction.
    async fn replace_recovery_codes(
        &self,
        user_id: Uuid,
        hashes: &[[u8; 32]],
        now: Timestamp,
    ) -> Result<()>;
    /// Spend one recovery code (once): `true` if it was there.
    async fn spend_recovery_code(&self, user_id: Uuid, hash: &[u8; 32]) -> Result<bool>;
    async fn recovery_codes_left(&self, user_id: Uuid) -> Result<i64>;
    /// TOTP factors by user id after `after`, at most `limit` (vault rekey).
    async fn totp_factors_after(
        &self,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<crate::core::TotpFactor>>;
    /// Replace a sealed secret if it is still `old` (a rekey racing a new
    /// enrolment leaves the new one alone).
    async fn reseal_totp(&self, user_id: Uuid, old: &[u8], new: &[u8]) -> Result<bool>;
    /// What a sign-in needs to know, in one read: whether the person has a
    /// confirmed TOTP factor, and whether they must use a second factor.
    async fn mfa_state(&self, user_id: Uuid) -> Result<crate::core::MfaState>;
    /// Make a person use a second factor (`true`) or follow the policy.
    async fn set_mfa_required(&self, user_id: Uuid, required: bool, now: Timestamp) -> Result<()>;
    /// A new passkey; `false` when its credential id is registered already
    /// (to anyone).
    async fn insert_passkey(&self, p: &crate::core::StoredPasskey) -> Result<bool>;
    /// A person's passkeys, oldest first.
    async fn passkeys_of(&self, user_id: Uuid) -> Result<Vec<crate::core::StoredPasskey>>;
    async fn passkey_by_credential(
        &self,
        credential_id: &[u8],
    ) -> Result<Option<crate::core::StoredPasskey>>;
    /// Record a use: the new record, counter and flags, only if the counter
    /// is still `seen` (two uses racing: one wins). `false` otherwise.
    async fn record_passkey_use(&self, p: &crate::core::StoredPasskey, seen: i64) -> Result<bool>;
    async fn rename_passkey(&self, user_id: Uuid, id: Uuid, name: &str) -> Result<bool>;
    async fn delete_passkey(&self, user_id: Uuid, id: Uuid) -> Result<bool>;
}

/// The OpenID provider's signing keys, grants, codes and tokens (hashes).
#[async_trait]
pub trait OidcStore: Send + Sync + 'static {
    async fn oidc_keys(&self) -> Result<Vec<SigningKey>>;
    /// Replace a signing key's sealed private half (re-sealed, same key).
    async fn reseal_oidc_key(&self, kid: Uuid, private_key: &[u8]) -> Result<()>;
    /// Insert a key; with `retire = (at, published_until)`, first retire
    /// every key still signing (one transaction).
    async fn insert_oidc_key(
        &self,
        key: &SigningKey,
        retire: Option<(Timestamp, Timestamp)>,
    ) -> Result<()>;
    /// A new grant with its code or first tokens (one transaction).
    async fn insert_oidc_grant(
        &self,
        grant: &Grant,
        code: Option<&AuthCode>,
        tokens: &[IssuedToken],
    ) -> Result<()>;
    /// Spend a live code of `client_id`'s: the code, its grant and the
    /// grant's person (none when gone); or the grant of a code spent before.
    async fn redeem_oidc_code(
        &self,
        code_hash: &[u8],
        client_id: &str,
        now: Timestamp,
    ) -> Result<Spend<(AuthCode, Grant, Option<User>)>>;
    /// Spend a live refresh token of `client_id`'s: its grant; or the grant
    /// of a token spent before.
    async fn use_refresh_token(
        &self,
        token_hash: &[u8],
        client_id: &str,
        now: Timestamp,
    ) -> Result<Spend<Grant>>;
    async fn insert_oidc_tokens(&self, tokens: &[IssuedToken]) -> Result<()>;
    /// A token (live or not) with its grant and the grant's person (none
    /// for a machine's grant, or when the person is gone).
    async fn oidc_token(
        &self,
        token_hash: &[u8],
    ) -> Result<Option<(IssuedToken, Grant, Option<User>)>>;
    async fn delete_oidc_token(&self, token_hash: &[u8]) -> Result<bool>;
    /// Note a client assertion's id until it expires; `Conflict` when it was
    /// seen before.
    async fn insert_oidc_assertion(&self, jti_hash: &[u8], expires_at: Timestamp) -> Result<()>;
    /// Revoke a grant (every token under it stops working).
    async fn revoke_oidc_grant(&self, grant_id: Uuid, now: Timestamp) -> Result<bool>;
    /// The clients the CLI registered.
    async fn oidc_clients(&self) -> Result<Vec<StoredClient>>;
    /// `Conflict` when the id is taken.
    async fn insert_oidc_client(&self, client: &StoredClient) -> Result<()>;
    /// Replace a client's settings and secret hash; false: no such client.
    async fn update_oidc_client(&self, client: &StoredClient) -> Result<bool>;
    /// Delete a client, revoking every grant it holds and forgetting the
    /// consents it was given (one transaction); false: no such client.
    async fn delete_oidc_client(&self, id: &str, now: Timestamp) -> Result<bool>;
    /// Claim (at most `limit`) live grants of `client_id` whose session has
    /// ended (deleted, or past its expiry) and whose client was not told
    /// yet: each is returned to one caller only, across instances.
    async fn claim_logged_out_grants(
        &self,
        client_id: &str,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<Grant>>;
    /// The scopes a person let a client have (none: never asked).
    async fn oidc_consent(&self, user_id: Uuid, client_id: &str) -> Result<Option<String>>;
    /// Record (or widen) a consent.
    async fn put_oidc_consent(
        &self,
        user_id: Uuid,
        client_id: &str,
        scope: &str,
        now: Timestamp,
    ) -> Result<()>;
}

/// Everything the core stores: one object implementing every aggregate's
/// trait (`Arc<dyn Store>` at assembly).
pub trait Store:
    Database
    + UserStore
    + SessionStore
    + FlowStore
    + MailLoginStore
    + TokenStore
    + RateLimitStore
    + AuditStore
    + OidcStore
    + FactorStore
{
}

impl<T> Store for T where
    T: Database
        + UserStore
        + SessionStore
        + FlowStore
        + MailLoginStore
        + TokenStore
        + RateLimitStore
        + AuditStore
        + OidcStore
        + FactorStore
{
}
