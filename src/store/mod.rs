//! Storage: one API ([`Store`]) for the whole core model, implemented once
//! in SQL ([`sql::SqlStore`]) for SQLite and PostgreSQL. The store knows no
//! HTTP and no rules; it keeps data and makes multi-row changes atomic.
use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

use crate::core::users::{ImportReport, NewUser};
use crate::core::{
    AuditEvent, Confirmation, Handoff, Identity, LoginFlow, MailAuthToken, MailLogin, OutboxMail,
    ProviderTokens, Session, Timestamp, User,
};

mod reachability;
pub mod sql;

pub use sql::{ConnectOptions, SqlStore};

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

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which database this is (`sqlite` or `postgres`).
    fn backend(&self) -> &'static str;
    async fn ping(&self) -> Result<()>;
    async fn migrate(&self) -> Result<()>;
    /// Close all connections (afterwards every call fails as unavailable).
    async fn close(&self);

    // Users
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
    /// Delete a user and, by cascade, identities, sessions, provider tokens.
    async fn delete_user(&self, id: Uuid) -> Result<bool>;
    /// All rows in one transaction; creates missing users, updates changed ones.
    async fn import_users(
        &self,
        rows: &[NewUser],
        now: Timestamp,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<ImportReport>;

    // Identities
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
    async fn touch_identity(
        &self,
        id: Uuid,
        email: Option<&str>,
        email_verified: bool,
        now: Timestamp,
    ) -> Result<()>;

    // Sessions
    async fn insert_session(&self, session: &Session, token_hash: &[u8]) -> Result<()>;
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
    /// The identities of these users (the session cache's re-reads), in
    /// creation order per user.
    async fn identities_of_users(&self, users: &[Uuid]) -> Result<Vec<Identity>>;
    /// The identities of the users of [`Store::recent_sessions`]' sessions.
    async fn identities_of_recent_sessions(
        &self,
        since: Timestamp,
        limit: usize,
    ) -> Result<Vec<Identity>>;
    async fn delete_session(&self, id: Uuid) -> Result<bool>;
    async fn delete_session_by_token_hash(&self, token_hash: &[u8]) -> Result<Option<Session>>;
    async fn delete_user_sessions(&self, user_id: Uuid) -> Result<u64>;
    /// Live sessions at `now`, newest first.
    async fn list_sessions(
        &self,
        user_id: Option<Uuid>,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<Session>>;

    // Login flows (single use: taking deletes)
    async fn insert_login_flow(&self, flow: &LoginFlow) -> Result<()>;
    /// Atomically remove and return an unexpired flow; a second take of the
    /// same state finds nothing.
    async fn take_login_flow(&self, state_hash: &[u8], now: Timestamp)
    -> Result<Option<LoginFlow>>;
    /// Read an unexpired flow without taking it.
    async fn login_flow(&self, state_hash: &[u8], now: Timestamp) -> Result<Option<LoginFlow>>;

    // Confirmations (single use: taking deletes)
    async fn insert_confirmation(&self, c: &Confirmation) -> Result<()>;
    /// Record a user's consent choices (a JSON object), replacing earlier ones.
    async fn put_user_consent(&self, user_id: Uuid, consent: &str, now: Timestamp) -> Result<()>;
    /// The consent choices recorded for a user.
    async fn user_consent(&self, user_id: Uuid) -> Result<Option<String>>;
    /// Atomically remove and return an unexpired confirmation.
    async fn take_confirmation(
        &self,
        token_hash: &[u8],
        now: Timestamp,
    ) -> Result<Option<Confirmation>>;

    // Sign-in hand-offs (single use: taking deletes)
    async fn insert_handoff(&self, h: &Handoff) -> Result<()>;
    /// Atomically remove and return an unexpired hand-off.
    async fn take_handoff(&self, code_hash: &[u8], now: Timestamp) -> Result<Option<Handoff>>;

    // Mail logins
    /// Count one hit in each rate-limit window; then, only if every count is
    /// within its `max`, in one transaction: end every older login of the
    /// same address, insert the new one, queue its mail and record the audit
    /// event. Over a limit nothing is kept, the hits included. Returns the
    /// counts (the caller tells which limit was hit).
    async fn insert_mail_login(
        &self,
        hits: &[RateHit],
        max: &[i64],
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

    // Mail outbox
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

    // Provider tokens (ciphertext only)
    async fn put_provider_tokens(&self, tokens: &ProviderTokens) -> Result<()>;
    async fn provider_tokens(&self, identity_id: Uuid) -> Result<Option<ProviderTokens>>;
    /// A page of kept tokens, by identity id, after `after` (re-keying).
    async fn provider_tokens_after(
        &self,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<ProviderTokens>>;

    // Rate limits
    /// Count one hit in each window, in one transaction, and return the
    /// hits so far per window, atomically across every instance.
    async fn rate_limit_hits(&self, hits: &[RateHit]) -> Result<Vec<i64>>;

    // Audit
    async fn insert_audit(&self, event: &AuditEvent) -> Result<()>;
    async fn list_audit(&self, user_id: Option<Uuid>, limit: u32) -> Result<Vec<AuditEvent>>;

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

/// Open the database a URL names (`sqlite://...` or `postgres://...`).
/// The file an SQLite URL names (none for PostgreSQL or in-memory SQLite).
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    use std::str::FromStr;
    if !url.starts_with("sqlite:") {
        return None;
    }
    let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url).ok()?;
    let file = opts.get_filename();
    (!file.as_os_str().is_empty() && file.as_os_str() != ":memory:").then(|| file.to_path_buf())
}

pub async fn connect(url: &str, options: &ConnectOptions) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(SqlStore::connect(url, options).await?))
}
