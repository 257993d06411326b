//! The SQL implementation of [`Store`], for SQLite and PostgreSQL.
//!
//! Each statement is written once: both dialects accept the same SQL here
//! (`$n` parameters, `ON CONFLICT`, `RETURNING`, `TRUE`/`FALSE`), and the
//! [`with_pool!`] macro runs the one body against whichever pool is open.
//! Only the migrations differ per dialect (`migrations/sqlite`,
//! `migrations/postgres`), and only in column types.
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use uuid::Uuid;

use super::reachability::Reachability;
use super::{
    AuditStore, Database, FlowStore, MailLoginStore, RateHit, RateLimitStore, Result, SessionStore,
    StoreError, TokenStore, UserStore,
};
use crate::core::users::{ImportReport, NewUser};
use crate::core::{
    AuditEvent, Confirmation, Email, Handoff, Identity, Locale, LoginFlow, MailAuthToken,
    MailLogin, OutboxMail, ProviderTokens, Session, Timestamp, User,
};

static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// Pool settings from `[database]`.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

enum Pool {
    /// SQLite allows one writer at a time: writes go through a pool of one
    /// connection, so they queue in order instead of spinning on
    /// SQLITE_BUSY; reads use the other pool, in parallel (WAL).
    Sqlite {
        read: SqlitePool,
        write: SqlitePool,
    },
    Postgres(PgPool),
}

pub struct SqlStore {
    pool: Pool,
    reach: std::sync::Arc<Reachability>,
    max_connections: u32,
    /// SQLite: `<database file>-sessions`, replaced whenever sessions change
    /// (other processes on the same file see it by a `stat`).
    marker: Option<std::path::PathBuf>,
}

/// Run one reading body against whichever database is open; `$p` is the pool.
macro_rules! with_pool {
    ($self:ident, |$p:ident| $body:expr) => {{
        $self.refuse_while_down()?;
        match &$self.pool {
            Pool::Sqlite { read: $p, .. } => $body,
            Pool::Postgres($p) => $body,
        }
    }};
}

/// Run one writing body against whichever database is open.
macro_rules! with_writer {
    ($self:ident, |$p:ident| $body:expr) => {{
        $self.refuse_while_down()?;
        match &$self.pool {
            Pool::Sqlite { write: $p, .. } => $body,
            Pool::Postgres($p) => $body,
        }
    }};
}

/// The audit insert, bound; `.execute(...)` on a pool or in a transaction.
macro_rules! audit_insert {
    ($e:expr) => {
        sqlx::query(
            "INSERT INTO audit_events (at, kind, user_id, ip, user_agent, detail) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind($e.at)
        .bind(&$e.kind)
        .bind($e.user_id.map(|u| u.to_string()))
        .bind($e.ip.as_deref())
        .bind($e.user_agent.as_deref())
        .bind($e.detail.as_deref())
    };
}

/// Count one hit in each rate-limit window inside transaction `$tx`;
/// evaluates to the counts.
macro_rules! count_hits {
    ($self:ident, $tx:ident, $hits:expr) => {{
        let hits: &[RateHit] = $hits;
        let mut counts = Vec::with_capacity(hits.len());
        if distinct_windows(hits) && !hits.is_empty() {
            // One statement for every window (one round trip to the
            // database, not one per window); rows come back in any order.
            let rows: Vec<(String, i64, i64)> =
                sqlx::query_as(sqlx::AssertSqlSafe(count_hits_sql(hits.len())))
                    .bind_hits(hits)
                    .fetch_all(&mut *$tx)
                    .await
                    .map_err(|e| $self.db_err(e))?;
            counts = counts_in_order(hits, &rows)?;
        } else {
            for h in hits {
                let n: i64 = sqlx::query_scalar(
                    "INSERT INTO rate_limits (key, window_start, expires_at, count) VALUES ($1, $2, $3, 1) \
                     ON CONFLICT (key, window_start) DO UPDATE SET count = rate_limits.count + 1 \
                     RETURNING count",
                )
                .bind(&h.key)
                .bind(h.window_start)
                .bind(h.expires_at)
                .fetch_one(&mut *$tx)
                .await
                .map_err(|e| $self.db_err(e))?;
                counts.push(n);
            }
        }
        counts
    }};
}

/// The rate-limit upsert for `n` distinct windows at once.
fn count_hits_sql(n: usize) -> String {
    let values: Vec<String> = (0..n)
        .map(|i| format!("(${}, ${}, ${}, 1)", 3 * i + 1, 3 * i + 2, 3 * i + 3))
        .collect();
    format!(
        "INSERT INTO rate_limits (key, window_start, expires_at, count) VALUES {} \
         ON CONFLICT (key, window_start) DO UPDATE SET count = rate_limits.count + 1 \
         RETURNING key, window_start, count",
        values.join(", ")
    )
}

/// PostgreSQL: the same upsert as one statement (its own transaction) that
/// commits without waiting for the WAL flush (`set_config(..., true)` holds
/// for this statement's transaction only). Every request updates the global
/// window's row, and PostgreSQL keeps it locked until the commit: not
/// waiting for the flush there hands it to the next request at once. A crash
/// can lose the last fraction of a second of counts, never those of an
/// acknowledged request: its own later commit flushes the WAL up to them.
fn count_hits_sql_postgres(n: usize) -> String {
    let values: Vec<String> = (0..n)
        .map(|i| format!("(${}, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3))
        .collect();
    format!(
        "INSERT INTO rate_limits (key, window_start, expires_at, count) \
         SELECT v.k, v.w, v.e, 1 FROM (VALUES {}) AS v (k, w, e) \
         WHERE set_config('synchronous_commit', 'off', true) IS NOT NULL \
         ON CONFLICT (key, window_start) DO UPDATE SET count = rate_limits.count + 1 \
         RETURNING key, window_start, count",
        values.join(", ")
    )
}

/// Whether no two hits name the same window (one upsert can count them all).
fn distinct_windows(hits: &[RateHit]) -> bool {
    hits.iter().enumerate().all(|(i, h)| {
        hits[..i]
            .iter()
            .all(|o| o.key != h.key || o.window_start != h.window_start)
    })
}

/// The counts of an upsert's rows (any order), in `hits`' order.
fn counts_in_order(hits: &[RateHit], rows: &[(String, i64, i64)]) -> Result<Vec<i64>> {
    hits.iter()
        .map(|h| {
            rows.iter()
                .find(|(k, w, _)| *k == h.key && *w == h.window_start)
                .map(|r| r.2)
                .ok_or_else(|| StoreError::Database("rate limit count missing".into()))
        })
        .collect()
}

/// Binding a list of rate-limit windows, in `count_hits_sql`'s order.
trait BindHits: Sized {
    fn bind_hits(self, hits: &[RateHit]) -> Self;
}

impl<'q, DB, O> BindHits for sqlx::query::QueryAs<'q, DB, O, <DB as sqlx::Database>::Arguments>
where
    DB: sqlx::Database,
    String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    fn bind_hits(mut self, hits: &[RateHit]) -> Self {
        for h in hits {
            self = self
                .bind(h.key.clone())
                .bind(h.window_start)
                .bind(h.expires_at);
        }
        self
    }
}

const SQL_INSERT_IDENTITY: &str = "INSERT INTO identities (id, user_id, provider, issuer, subject, email, email_verified, created_at, last_used_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";

impl SqlStore {
    /// Translate a database error, noting an unreachable PostgreSQL (see
    /// [`Reachability`]).
    fn db_err(&self, e: sqlx::Error) -> StoreError {
        if let Pool::Postgres(p) = &self.pool {
            self.reach.observe(&e, p, self.max_connections);
        }
        db_err(e)
    }

    fn refuse_while_down(&self) -> Result<()> {
        self.reach.refuse_while_down()
    }
}

fn db_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            let what = format!("{} {}", d.constraint().unwrap_or(""), d.message());
            StoreError::Conflict(if what.contains("email") {
                "a user with this e-mail address"
            } else if what.contains("identities") || what.contains("subject") {
                "this identity"
            } else {
                "a record with this key"
            })
        }
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => StoreError::Unavailable(e.to_string()),
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_) => StoreError::Corrupt(e.to_string()),
        _ => StoreError::Database(e.to_string()),
    }
}

fn uuid(s: &str) -> Result<Uuid> {
    Uuid::parse_str(s).map_err(|e| StoreError::Corrupt(format!("bad uuid {s:?}: {e}")))
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

// ---------------------------------------------------------------- rows

#[derive(sqlx::FromRow)]
struct UserRow {
    id: String,
    email: Option<String>,
    display_name: Option<String>,
    locale: Option<String>,
    disabled: bool,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<UserRow> for User {
    type Error = StoreError;
    fn try_from(r: UserRow) -> Result<User> {
        Ok(User {
            id: uuid(&r.id)?,
            email: r.email.map(Email::from_stored),
            display_name: r.display_name,
            locale: r.locale.map(Locale::from_stored),
            disabled: r.disabled,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct IdentityRow {
    id: String,
    user_id: String,
    provider: String,
    issuer: String,
    subject: String,
    email: Option<String>,
    email_verified: bool,
    created_at: i64,
    last_used_at: i64,
}

impl TryFrom<IdentityRow> for Identity {
    type Error = StoreError;
    fn try_from(r: IdentityRow) -> Result<Identity> {
        Ok(Identity {
            id: uuid(&r.id)?,
            user_id: uuid(&r.user_id)?,
            provider: r.provider,
            issuer: r.issuer,
            subject: r.subject,
            email: r.email,
            email_verified: r.email_verified,
            created_at: r.created_at,
            last_used_at: r.last_used_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    id: String,
    user_id: String,
    created_at: i64,
    last_seen_at: i64,
    idle_timeout: i64,
    expires_at: i64,
    ip: Option<String>,
    user_agent: Option<String>,
    kind: String,
}

impl TryFrom<SessionRow> for Session {
    type Error = StoreError;
    fn try_from(r: SessionRow) -> Result<Session> {
        Ok(Session {
            id: uuid(&r.id)?,
            user_id: uuid(&r.user_id)?,
            created_at: r.created_at,
            last_seen_at: r.last_seen_at,
            idle_timeout: r.idle_timeout,
            expires_at: r.expires_at,
            ip: r.ip,
            user_agent: r.user_agent,
            kind: r.kind,
        })
    }
}

/// The hot path's one query: the session and its user, joined.
#[derive(sqlx::FromRow)]
struct SessionUserRow {
    #[sqlx(flatten)]
    session: SessionRow,
    u_email: Option<String>,
    u_display_name: Option<String>,
    u_locale: Option<String>,
    u_disabled: bool,
    u_created_at: i64,
    u_updated_at: i64,
}

fn session_user(r: SessionUserRow) -> Result<(Session, User)> {
    let session = Session::try_from(r.session)?;
    let user = User {
        id: session.user_id,
        email: r.u_email.map(Email::from_stored),
        display_name: r.u_display_name,
        locale: r.u_locale.map(Locale::from_stored),
        disabled: r.u_disabled,
        created_at: r.u_created_at,
        updated_at: r.u_updated_at,
    };
    Ok((session, user))
}

/// A session with its user and token hash (warm-up, batched re-reads).
#[derive(sqlx::FromRow)]
struct RecentSessionRow {
    #[sqlx(flatten)]
    row: SessionUserRow,
    token_hash: Vec<u8>,
}

#[derive(sqlx::FromRow)]
struct LoginFlowRow {
    state_hash: Vec<u8>,
    provider: String,
    surface: String,
    pkce_verifier: String,
    nonce: String,
    language: Option<String>,
    redirect_to: Option<String>,
    redirect_uri: Option<String>,
    data: Option<String>,
    created_at: i64,
    expires_at: i64,
}

#[derive(sqlx::FromRow)]
struct ConfirmationRow {
    token_hash: Vec<u8>,
    validation_hash: Option<Vec<u8>>,
    user_id: String,
    surface: String,
    signup: bool,
    created_at: i64,
    expires_at: i64,
}

#[derive(sqlx::FromRow)]
struct HandoffRow {
    code_hash: Vec<u8>,
    surface: String,
    user_id: Option<String>,
    refusal: Option<String>,
    detail: Option<String>,
    created_at: i64,
    expires_at: i64,
}

impl TryFrom<HandoffRow> for Handoff {
    type Error = StoreError;

    fn try_from(r: HandoffRow) -> Result<Handoff> {
        Ok(Handoff {
            code_hash: r.code_hash,
            surface: r.surface,
            user_id: r.user_id.as_deref().map(uuid).transpose()?,
            refusal: r.refusal,
            detail: r.detail,
            created_at: r.created_at,
            expires_at: r.expires_at,
        })
    }
}

impl TryFrom<ConfirmationRow> for Confirmation {
    type Error = StoreError;

    fn try_from(r: ConfirmationRow) -> Result<Confirmation> {
        Ok(Confirmation {
            token_hash: r.token_hash,
            validation_hash: r.validation_hash,
            user_id: uuid(&r.user_id)?,
            surface: r.surface,
            signup: r.signup,
            created_at: r.created_at,
            expires_at: r.expires_at,
        })
    }
}

impl From<LoginFlowRow> for LoginFlow {
    fn from(r: LoginFlowRow) -> LoginFlow {
        LoginFlow {
            state_hash: r.state_hash,
            provider: r.provider,
            surface: r.surface,
            pkce_verifier: r.pkce_verifier,
            nonce: r.nonce,
            language: r.language,
            redirect_to: r.redirect_to,
            redirect_uri: r.redirect_uri,
            data: r.data,
            created_at: r.created_at,
            expires_at: r.expires_at,
        }
    }
}

#[derive(sqlx::FromRow)]
struct MailLoginRow {
    token_hash: Vec<u8>,
    mail: String,
    mail_norm: String,
    locale: String,
    code_hash: Vec<u8>,
    attempts_left: i64,
    device_session_id: Option<String>,
    created_at: i64,
    expires_at: i64,
}

impl TryFrom<MailLoginRow> for MailLogin {
    type Error = StoreError;
    fn try_from(r: MailLoginRow) -> Result<MailLogin> {
        Ok(MailLogin {
            token_hash: r.token_hash,
            mail: r.mail,
            mail_norm: r.mail_norm,
            locale: r.locale,
            code_hash: r.code_hash,
            attempts_left: r.attempts_left,
            device_session_id: r.device_session_id.as_deref().map(uuid).transpose()?,
            created_at: r.created_at,
            expires_at: r.expires_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct MailAuthTokenRow {
    token_hash: Vec<u8>,
    mail: String,
    locale: String,
    created_at: i64,
    expires_at: i64,
}

#[derive(sqlx::FromRow)]
struct OutboxRow {
    id: String,
    recipient: String,
    subject: String,
    body_text: String,
    body_html: Option<String>,
    attempts: i64,
    next_attempt_at: i64,
    expires_at: i64,
    created_at: i64,
}

#[derive(sqlx::FromRow)]
struct ProviderTokensRow {
    identity_id: String,
    access_token: Vec<u8>,
    refresh_token: Option<Vec<u8>>,
    expires_at: Option<i64>,
    scope: Option<String>,
    updated_at: i64,
}

impl ProviderTokensRow {
    fn into_model(self) -> Result<ProviderTokens> {
        Ok(ProviderTokens {
            identity_id: uuid(&self.identity_id)?,
            access_token: self.access_token,
            refresh_token: self.refresh_token,
            expires_at: self.expires_at,
            scope: self.scope,
            updated_at: self.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    at: i64,
    kind: String,
    user_id: Option<String>,
    ip: Option<String>,
    user_agent: Option<String>,
    detail: Option<String>,
}

// ---------------------------------------------------------------- SQL

const SQL_USER_BY_ID: &str = "SELECT id, email, display_name, locale, disabled, created_at, updated_at FROM users WHERE id = $1";
const SQL_USER_BY_EMAIL: &str = "SELECT id, email, display_name, locale, disabled, created_at, updated_at FROM users WHERE email_norm = $1";
const SQL_INSERT_USER: &str = "INSERT INTO users (id, email, email_norm, display_name, locale, disabled, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
/// Sessions per statement in batched reads and writes (the last chunk is
/// padded by repeating an item, so one prepared statement serves all).
const CHUNK: usize = 64;

/// `$first, …` for one chunk.
fn chunk_marks(first: usize) -> String {
    (first..first + CHUNK)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Run a query whose `IN (...)` list holds `CHUNK` marks (`chunk_marks`)
/// for one chunk of up to `CHUNK` items, each bound as `$bind`; a short
/// chunk repeats its last item. Evaluates to the rows.
macro_rules! fetch_chunk {
    ($self:ident, $sql:expr, $chunk:expr, |$x:ident| $bind:expr) => {
        with_pool!($self, |p| {
            let mut q = sqlx::query_as(sqlx::AssertSqlSafe($sql));
            for k in 0..CHUNK {
                let $x = &$chunk[k.min($chunk.len() - 1)];
                q = q.bind($bind);
            }
            q.fetch_all(p).await.map_err(|e| $self.db_err(e))
        })
    };
}

/// The columns of a session joined with its user (`SessionUserRow`).
macro_rules! session_user_select {
    () => {
        "SELECT s.id, s.user_id, s.created_at, s.last_seen_at, s.idle_timeout, s.expires_at, s.ip, s.user_agent, s.kind, \
         u.email AS u_email, u.display_name AS u_display_name, u.locale AS u_locale, u.disabled AS u_disabled, \
         u.created_at AS u_created_at, u.updated_at AS u_updated_at, s.token_hash \
         FROM sessions s JOIN users u ON u.id = s.user_id "
    };
}
const SQL_SESSION_BY_HASH: &str = concat!(session_user_select!(), "WHERE s.token_hash = $1");
const SQL_RECENT_SESSIONS: &str = concat!(
    session_user_select!(),
    "WHERE s.last_seen_at >= $1 ORDER BY s.last_seen_at DESC LIMIT $2"
);

impl SqlStore {
    /// Open (creating an SQLite file if needed) the database a URL names.
    pub async fn connect(url: &str, options: &ConnectOptions) -> Result<Self> {
        let mut marker = None;
        let pool = if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)
                .map_err(|e| StoreError::Url(e.to_string()))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true);
            let pool = |n: u32| {
                SqlitePoolOptions::new()
                    .max_connections(n)
                    .acquire_timeout(options.acquire_timeout)
                    .connect_with(opts.clone())
            };
            let write = pool(1)
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            let read = pool(options.max_connections)
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            let file = opts.get_filename();
            if !file.as_os_str().is_empty() && file.as_os_str() != ":memory:" {
                let mut m = file.as_os_str().to_owned();
                m.push("-sessions");
                marker = Some(std::path::PathBuf::from(m));
            }
            Pool::Sqlite { read, write }
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let opts =
                PgConnectOptions::from_str(url).map_err(|e| StoreError::Url(e.to_string()))?;
            Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(options.max_connections)
                    .acquire_timeout(options.acquire_timeout)
                    .connect_with(opts)
                    .await
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?,
            )
        } else {
            return Err(StoreError::Url(
                "expected a URL starting with sqlite:// or postgres://".into(),
            ));
        };
        Ok(SqlStore {
            pool,
            reach: Default::default(),
            max_connections: options.max_connections,
            marker,
        })
    }
}

#[async_trait]
impl Database for SqlStore {
    fn backend(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite { .. } => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    async fn ping(&self) -> Result<()> {
        // Known down: say so at once (the probe finds out when it is back).
        self.refuse_while_down()?;
        let fut = async {
            match &self.pool {
                Pool::Sqlite { read, .. } => {
                    sqlx::query("SELECT 1").execute(read).await.map(|_| ())
                }
                Pool::Postgres(p) => sqlx::query("SELECT 1").execute(p).await.map(|_| ()),
            }
        };
        match tokio::time::timeout(Duration::from_secs(2), fut).await {
            Ok(r) => r.map_err(|e| StoreError::Unavailable(self.db_err(e).to_string())),
            Err(_) => {
                if let Pool::Postgres(p) = &self.pool {
                    self.reach.mark_down(p, &"no answer to a ping within 2 s");
                }
                Err(StoreError::Unavailable("ping timed out".into()))
            }
        }
    }

    async fn migrate(&self) -> Result<()> {
        match &self.pool {
            Pool::Sqlite { write, .. } => SQLITE_MIGRATOR.run(write).await,
            Pool::Postgres(p) => POSTGRES_MIGRATOR.run(p).await,
        }
        .map_err(|e| StoreError::Migration(e.to_string()))
    }

    async fn close(&self) {
        match &self.pool {
            Pool::Sqlite { read, write } => {
                write.close().await;
                read.close().await;
            }
            Pool::Postgres(p) => p.close().await,
        }
    }

    fn sessions_marker(&self) -> Option<(u64, i128)> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(self.marker.as_ref()?).ok()?;
        Some((
            m.ino(),
            i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        ))
    }

    async fn announce_sessions_changed(&self, payload: &str) -> Result<()> {
        match &self.pool {
            Pool::Sqlite { .. } => {
                let Some(marker) = &self.marker else {
                    return Ok(());
                };
                // Write aside and rename: a new inode every time, so a
                // reader's `stat` cannot miss a change.
                let mut tmp = marker.as_os_str().to_owned();
                tmp.push(format!(".{}", uuid::Uuid::now_v7().simple()));
                let tmp = std::path::PathBuf::from(tmp);
                std::fs::write(&tmp, payload)
                    .and_then(|()| std::fs::rename(&tmp, marker))
                    .map_err(|e| StoreError::Database(format!("session marker: {e}")))
            }
            Pool::Postgres(p) => sqlx::query("SELECT pg_notify($1, $2)")
                .bind(super::SESSIONS_CHANNEL)
                .bind(payload)
                .execute(p)
                .await
                .map_err(|e| self.db_err(e))
                .map(|_| ()),
        }
    }

    async fn purge_expired(&self, now: Timestamp) -> Result<u64> {
        const PURGES: [&str; 8] = [
            "DELETE FROM confirmations WHERE expires_at <= $1",
            "DELETE FROM sign_in_handoffs WHERE expires_at <= $1",
            "DELETE FROM sessions WHERE expires_at <= $1 OR last_seen_at + idle_timeout <= $1",
            "DELETE FROM login_flows WHERE expires_at <= $1",
            "DELETE FROM mail_logins WHERE expires_at <= $1",
            "DELETE FROM rate_limits WHERE expires_at <= $1",
            "DELETE FROM mail_auth_tokens WHERE expires_at <= $1",
            "DELETE FROM mail_outbox WHERE expires_at <= $1",
        ];
        let mut removed = 0;
        for sql in PURGES {
            removed += with_writer!(self, |p| sqlx::query(sql)
                .bind(now)
                .execute(p)
                .await
                .map_err(|e| self.db_err(e))?
                .rows_affected());
        }
        Ok(removed)
    }
}

#[async_trait]
impl UserStore for SqlStore {
    async fn insert_user(&self, u: &User) -> Result<()> {
        with_writer!(self, |p| sqlx::query(SQL_INSERT_USER)
            .bind(u.id.to_string())
            .bind(u.email.as_ref().map(Email::as_str))
            .bind(u.email.as_ref().map(Email::normalized))
            .bind(u.display_name.as_deref())
            .bind(u.locale.as_ref().map(Locale::as_str))
            .bind(u.disabled)
            .bind(u.created_at)
            .bind(u.updated_at)
            .execute(p)
            .await
            .map_err(|e| self.db_err(e))
            .map(|_| ()))
    }

    async fn user_by_id(&self, id: Uuid) -> Result<Option<User>> {
        let row: Option<UserRow> = with_pool!(self, |p| sqlx::query_as(SQL_USER_BY_ID)
            .bind(id.to_string())
            .fetch_optional(p)
            .await
            .map_err(|e| self.db_err(e)))?;
        row.map(User::try_from).transpose()
    }

    async fn user_by_email(&self, email_norm: &str) -> Result<Option<User>> {
        let row: Option<UserRow> = with_pool!(self, |p| sqlx::query_as(SQL_USER_BY_EMAIL)
            .bind(email_norm)
            .fetch_optional(p)
            .await
            .map_err(|e| self.db_err(e)))?;
        row.map(User::try_from).transpose()
    }

    async fn list_users(&self, offset: u64, limit: u32) -> Result<Vec<User>> {
        let rows: Vec<UserRow> = with_pool!(self, |p| {
            sqlx::query_as(
            "SELECT id, email, display_name, locale, disabled, created_at, updated_at FROM users \
             ORDER BY created_at, id LIMIT $1 OFFSET $2"
        )
        .bind(i64::from(limit))
        .bind(count(offset))
        .fetch_all(p)
        .await
        .map_err(|e| self.db_err(e))
        })?;
        rows.into_iter().map(User::try_from).collect()
    }

    async fn set_user_disabled(
        &self,
        id: Uuid,
        disabled: bool,
        now: Timestamp,
    ) -> Result<Option<u64>> {
        with_writer!(self, |p| {
            let mut tx = p.begin().await.map_err(|e| self.db_err(e))?;
            let updated =
                sqlx::query("UPDATE users SET disabled = $2, updated_at = $3 WHERE id = $1")
                    .bind(id.to_string())
                    .bind(disabled)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.db_err(e))?
                    .rows_affected();
            if updated == 0 {
                return Ok(None);
            }
            let mut ended = 0;
            if disabled {
                ended = sqlx::query("DELETE FROM sessions WHERE user_id = $1")
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.db_err(e))?
                    .rows_affected();
            }
            tx.commit().await.map_err(|e| self.db_err(e))?;
            Ok(Some(ended))
        })
    }

    async fn delete_user(&self, id: Uuid) -> Result<bool> {
        with_writer!(self, |p| sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id.to_string())
            .execute(p)
            .await
            .map_err(|e| self.db_err(e))
            .map(|r| r.rows_affected() > 0))
    }

    async fn import_users(
        &self,
        rows: &[NewUser],
        now: Timestamp,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<ImportReport> {
        with_writer!(self, |p| {
            let mut report = ImportReport::default();
            let mut tx = p.begin().await.map_err(|e| self.db_err(e))?;
            for (i, row) in rows.iter().enumerate() {
                let existing: Option<UserRow> = sqlx::query_as(SQL_USER_BY_EMAIL)
                    .bind(row.email.normalized())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(|e| self.db_err(e))?;
                let name = row.display_name.as_deref();
                let locale = row.locale.as_ref().map(Locale::as_str);
                match existing {
                    None => {
                        sqlx::query(SQL_INSERT_USER)
                            .bind(Uuid::now_v7().to_string())
                            .bind(row.email.as_str())
                            .bind(row.email.normalized())
                            .bind(name)
                            .bind(locale)
                            .bind(false)
                            .bind(now)
                            .bind(now)
                            .execute(&mut *tx)
                            .await
                            .map_err(|e| self.db_err(e))?;
                        report.created += 1;
                    }
                    Some(old) => {
                        let new_name = name.map(str::to_string).or(old.display_name.clone());
                        let new_locale = locale.map(str::to_string).or(old.locale.clone());
                        if new_name == old.display_name && new_locale == old.locale {
                            report.unchanged += 1;
                        } else {
                            sqlx::query(
                                "UPDATE users SET display_name = $2, locale = $3, updated_at = $4 WHERE id = $1",
                            )
                            .bind(&old.id)
                            .bind(new_name)
                            .bind(new_locale)
                            .bind(now)
                            .execute(&mut *tx)
                            .await
                            .map_err(|e| self.db_err(e))?;
                            report.updated += 1;
                        }
                    }
                }
                progress(i as u64 + 1);
            }
            tx.commit().await.map_err(|e| self.db_err(e))?;
            Ok(report)
        })
    }

    async fn insert_identity(&self, i: &Identity) -> Result<()> {
        with_writer!(self, |p| {
            sqlx::query(SQL_INSERT_IDENTITY)
                .bind(i.id.to_string())
                .bind(i.user_id.to_string())
                .bind(&i.provider)
                .bind(&i.issuer)
                .bind(&i.subject)
                .bind(i.email.as_deref())
                .bind(i.email_verified)
                .bind(i.created_at)
                .bind(i.last_used_at)
                .execute(p)
                .await
                .map_err(|e| self.db_err(e))
                .map(|_| ())
        })
    }

    async fn insert_user_with_identity(&self, u: &User, i: &Identity) -> Result<()> {
        with_writer!(self, |p| {
            let mut tx = p.begin().await.map_err(|e| self.db_err(e))?;
            sqlx::query(SQL_INSERT_USER)
                .bind(u.id.to_string())
                .bind(u.email.as_ref().map(Email::as_str))
                .bind(u.email.as_ref().map(Email::normalized))
                .bind(u.display_name.as_deref())
                .bind(u.locale.as_ref().map(Locale::as_str))
                .bind(u.disabled)
                .bind(u.created_at)
                .bind(u.updated_at)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db_err(e))?;
            sqlx::query(SQL_INSERT_IDENTITY)
                .bind(i.id.to_string())
                .bind(i.user_id.to_string())
                .bind(&i.provider)
                .bind(&i.issuer)
                .bind(&i.subject)
                .bind(i.email.as_deref())
                .bind(i.email_verified)
                .bind(i.created_at)
                .bind(i.last_used_at)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db_err(e))?;
            tx.commit().await.map_err(|e| self.db_err(e))
        })
    }

    async fn identity_with_user(
        &self,
        provider: &str,
        issuer: &str,
        subject: &str,
    ) -> Result<Option<(Identity, User)>> {
        let row: Option<IdentityRow> = with_pool!(self, |p| {
            sqlx::query_as(
            "SELECT id, user_id, provider, issuer, subject, email, email_verified, created_at, last_used_at \
             FROM identities WHERE provider = $1 AND issuer = $2 AND subject = $3"
        )
        .bind(provider)
        .bind(issuer)
        .bind(subject)
        .fetch_optional(p)
        .await
        .map_err(|e| self.db_err(e))
        })?;
        let Some(identity) = row.map(Identity::try_from).transpose()? else {
            return Ok(None);
        };
        // The foreign key guarantees the user; a missing one means a
        // concurrent delete, which reads as "no such identity".
        Ok(self
            .user_by_id(identity.user_id)
            .await?
            .map(|u| (identity, u)))
    }

    async fn identities_of(&self, user_id: Uuid) -> Result<Vec<Identity>> {
        let rows: Vec<IdentityRow> = with_pool!(self, |p| {
            sqlx::query_as(
            "SELECT id, user_id, provider, issuer, subject, email, email_verified, created_at, last_used_at \
             FROM identities WHERE user_id = $1 ORDER BY created_at, id"
        )
        .bind(user_id.to_string())
        .fetch_all(p)
        .await
        .map_err(|e| self.db_err(e))
        })?;
        rows.into_iter().map(Identity::try_from).collect()
    }

    async fn identities_of_users(&self, users: &[Uuid]) -> Result<Vec<Identity>> {
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "SELECT id, user_id, provider, issuer, subject, email, email_verified, created_at, last_used_at \
                 FROM identities WHERE user_id IN ({}) ORDER BY created_at, id",
                chunk_marks(1)
            )
        });
        let mut out = Vec::new();
        for chunk in users.chunks(CHUNK) {
            let rows: Vec<IdentityRow> =
                fetch_chunk!(self, SQL.as_str(), chunk, |u| u.to_string())?;
            for r in rows {
                out.push(Identity::try_from(r)?);
            }
        }
        Ok(out)
    }

    async fn touch_identity(
        &self,
        id: Uuid,
        email: Option<&str>,
        email_verified: bool,
        now: Timestamp,
    ) -> Result<()> {
        with_writer!(self, |p| sqlx::query(
            "UPDATE identities SET email = $2, email_verified = $3, last_used_at = $4 WHERE id = $1"
        )
        .bind(id.to_string())
        .bind(email)
        .bind(email_verified)
        .bind(now)
        .execute(p)
        .await
        .map_err(|e| self.db_err(e))
        .map(|_| ()))
    }

    async fn put_user_consent(&self, user_id: Uuid, consent: &str, now: Timestamp) -> Result<()> {
        with_writer!(self, |p| {
            sqlx::query(
                "INSERT INTO user_consents (user_id, consent, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (user_id) DO UPDATE SET consent = excluded.consent, updated_at = excluded.updated_at",
            )
            .bind(user_id.to_string())
            .bind(consent)
            .bind(now)
            .execute(p)
            .await
            .map_err(|e| self.db_err(e))
            .map(|_| ())
        })
    }

    async fn user_consent(&self, user_id: Uuid) -> Result<Option<String>> {
        with_pool!(self, |p| sqlx::query_scalar(
            "SELECT consent FROM user_consents WHERE user_id = $1"
        )
        .bind(user_id.to_string())
        .fetch_optional(p)
        .await
        .map_err(|e| self.db_err(e)))
    }
}

#[async_trait]
impl SessionStore for SqlStore {
    async fn insert_session(&self, s: &Session, token_hash: &[u8]) -> Result<()> {
        with_writer!(self, |p| {
            sqlx::query(
            "INSERT INTO sessions (id, token_hash, user_id, created_at, last_seen_at, idle_timeout, expires_at, ip, user_agent, kind) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        )
        .bind(s.id.to_string())
        .bind(token_hash)
        .bind(s.user_id.to_string())
        .bind(s.created_at)
        .bind(s.last_seen_at)
        .bind(s.idle_timeout)
        .bind(s.expires_at)
        .bind(s.ip.as_deref())
        .bind(s.user_agent.as_deref())
        .bind(&s.kind)
        .execute(p)
        .await
        .map_err(|e| self.db_err(e))
        .map(|_| ())
        })
    }

    async fn session_by_token_hash(&self, token_hash: &[u8]) -> Result<Option<(Session, User)>> {
        let row: Option<SessionUserRow> =
            with_pool!(self, |p| sqlx::query_as(SQL_SESSION_BY_HASH)
                .bind(token_hash)
                .fetch_optional(p)
                .await
                .map_err(|e| self.db_err(e)))?;
        row.map(session_user).transpose()
    }

    async fn sessions_by_token_hashes(
        &self,
        hashes: &[[u8; 32]],
    ) -> Result<Vec<(Vec<u8>, Session, User)>> {
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "{}WHERE s.token_hash IN ({})",
                session_user_select!(),
                chunk_marks(1)
            )
        });
        let mut out = Vec::with_capacity(hashes.len());
        for chunk in hashes.chunks(CHUNK) {
            let rows: Vec<RecentSessionRow> =
                fetch_chunk!(self, SQL.as_str(), chunk, |h| h.to_vec())?;
            for r in rows {
                let (session, user) = session_user(r.row)?;
                out.push((r.token_hash, session, user));
            }
        }
        Ok(out)
    }

    async fn recent_sessions(
        &self,
        since: Timestamp,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Session, User)>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<RecentSessionRow> =
            with_pool!(self, |p| sqlx::query_as(SQL_RECENT_SESSIONS)
                .bind(since)
                .bind(limit)
                .fetch_all(p)
                .await
                .map_err(|e| self.db_err(e)))?;
        rows.into_iter()
            .map(|r| {
                let (session, user) = session_user(r.row)?;
                Ok((r.token_hash, session, user))
            })
            .collect()
    }

    async fn identities_of_recent_sessions(
        &self,
        since: Timestamp,
        limit: usize,
    ) -> Result<Vec<Identity>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<IdentityRow> = with_pool!(self, |p| {
            sqlx::query_as(
            "SELECT id, user_id, provider, issuer, subject, email, email_verified, created_at, last_used_at \
             FROM identities WHERE user_id IN (SELECT user_id FROM sessions WHERE last_seen_at >= $1 \
             ORDER BY last_seen_at DESC LIMIT $2) ORDER BY created_at, id"
        )
        .bind(since)
        .bind(limit)
        .fetch_all(p)
        .await
        .map_err(|e| self.db_err(e))
        })?;
        rows.into_iter().map(Identity::try_from).collect()
    }

    async fn touch_sessions(&self, ids: &[Uuid], now: Timestamp) -> Result<()> {
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "UPDATE sessions SET last_seen_at = CASE WHEN last_seen_at < $1 THEN $1 ELSE last_seen_at END \
                 WHERE id IN ({})",
                chunk_marks(2)
            )
        });
        for chunk in ids.chunks(CHUNK) {
            let ids: Vec<String> = chunk.iter().map(Uuid::to_string).collect();
            with_writer!(self, |p| {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(SQL.as_str())).bind(now);
                for k in 0..CHUNK {
                    q = q.bind(ids[k.min(ids.len() - 1)].clone());
                }
                q.execute(p).await.map(|_| ()).map_err(|e| self.db_err(e))
            })?;
        }
        Ok(())
    }

    async fn delete_session(&self, id: Uuid) -> Result<bool> {
        with_writer!(self, |p| sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(id.to_string())
            .execute(p)
            .await
            .map_err(|e| self.db_err(e))
            .map(|r| r.rows_affected() > 0))
    }

    async fn delete_session_by_token_hash(&self, token_hash: &[u8]) -> Result<Option<Session>> {
        let row: Option<SessionRow> = with_writer!(self, |p| {
            sqlx::query_as(
            "DELETE FROM sessions WHERE token_hash = $1 \
             RETURNING id, user_id, created_at, last_seen_at, idle_timeout, expires_at, ip, user_agent, kind"
        )
        .bind(token_hash)
        .fetch_optional(p)
        .await
        .map_err(|e| self.db_err(e))
        })?;
        row.map(Session::try_from).transpose()
    }

    async fn delete_user_sessions(&self, user_id: Uuid) -> Result<u64> {
        with_writer!(self, |p| sqlx::query(
            "DELETE FROM sessions WHERE user_id = $1"
        )
        .bind(user_id.to_string())
        .execute(p)
        .await
        .map_err(|e| self.db_err(e))
        .map(|r| r.rows_affected()))
    }

    async fn list_sessions(
        &self,
        user_id: Option<Uuid>,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<Session>> {
        let rows: Vec<SessionRow> = match user_id {
            Some(uid) => with_pool!(self, |p| {
                sqlx::query_as(
                "SELECT id, user_id, created_at, last_seen_at, idle_timeout, expires_at, ip, user_agent, kind FROM sessions \
                 WHERE expires_at > $1 AND last_seen_at + idle_timeout > $1 AND user_id = $3 \
                 ORDER BY created_at DESC, id DESC LIMIT $2"
            )
            .bind(now)
            .bind(i64::from(limit))
            .bind(uid.to_string())
            .fetch_all(p)
            .await
            .map_err(|e| self.db_err(e))
            })?,
            None => with_pool!(self, |p| {
                sqlx::query_as(
                "SELECT id, user_id, created_at, last_seen_at, idle_timeout, expires_at, ip, user_agent, kind FROM sessions \
                 WHERE expires_at > $1 AND last_seen_at + idle_timeout > $1 \
                 ORDER BY created_at DESC, id DESC LIMIT $2"
            )
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(p)
            .await
            .map_err(|e| self.db_err(e))
            })?,
        };
        rows.into_iter().map(Session::try_from).collect()
    }
}

#[async_trait]
impl FlowStore for SqlStore {
    async fn insert_login_flow(&self, f: &LoginFlow) -> Result<()> {
        with_writer!(self, |p| {
            sqlx::query(
            "INSERT INTO login_flows (state_hash, provider, surface, pkce_verifier, nonce, language, redirect_to, data, created_at, expires_at, redirect_uri) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        )
        .bind(&f.state_hash)
        .bind(&f.provider)
        .bind(&f.surface)
        .bind(&f.pkce_verifier)
        .bind(&f.nonce)
        .bind(f.language.as_deref())
        .bind(f.redirect_to.as_deref())
        .bind(f.data.as_deref())
        .bind(f.created_at)
        .bind(f.expires_at)
        .bind(f.redirect_uri.as_deref())
        .execute(p)
        .await
        .map_err(|e| self.db_err(e))
        .map(|_| ())
        })
    }

    async fn take_login_flow(
        &self,
        state_hash: &[u8],
        now: Timestamp,
    ) -> Result<Option<LoginFlow>> {
        let row: Option<LoginFlowRow> = with_writer!(self, |p| {
            sqlx::query_as(
            "DELETE FROM login_flows WHERE state_hash = $1 \
             RETURNING state_hash, provider, surface, pkce_verifier, nonce, language, redirect_to, redirect_uri, data, created_at, expires_at"
        )
        .bind(state_hash)
        .fetch_optional(p)
        .await
        .map_err(|e| self.db_err(e))
        })?;
        Ok(row.map(LoginFlow::from).filter(|f| f.expires_at > now))
    }

    async fn login_flow(&self, state_hash: &[u8], now: Timestamp) -> Result<Option<LoginFlow>> {
        let row: Option<LoginFlowRow> = with_pool!(self, |p| {
            sqlx::query_as(
                "SELECT state_hash, provider, surface, pkce_verifier, nonce, language, redirect_to, redirect_uri, data, created_at, expires_at \
                 FROM login_flows WHERE state_hash = $1 AND expires_at > $2",
            )
            .bind(state_hash)
            .bind(now)
            .fetch_optional(p)
            .await
            .map_err(|e| self.db_err(e))
        })?;
        Ok(row.map(LoginFlow::from))
    }

    async fn insert_confirmation(&self, c: &Confirmation) -> Result<()> {
        with_writer!(self, |p| {
            sqlx::query(
                "INSERT INTO confirmations (token_hash, validation_hash, user_id, surface, signup, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&c.token_hash)
            .bind(c.validation_hash.as_deref())
            .bind(c.user_id.to_string())
            .bind(&c.surface)
            .bind(c.signup)
            .bind(c.created_at)
            .bind(c.expires_at)
            .execute(p)
            .await
            .map_err(|e| self.db_err(e))
            .map(|_| ())
        })
    }

    async fn take_confirmation(
        &self,
        token_hash: &[u8],
        now: Timestamp,
    ) -> Result<Option<Confirmation>> {
        let row: Option<ConfirmationRow> = with_writer!(self, |p| {
            sqlx::query_as(
                "DELETE FROM confirmations WHERE token_hash = $1 \
                 RETURNING token_hash, validation_hash, user_id, surface, signup, created_at, expires_at",
            )
            .bind(token_hash)
            .fetch_optional(p)
            .await
            .map_err(|e| self.db_err(e))
        })?;
        row.map(Confirmation::try_from)
            .transpose()
            .map(|c| c.filter(|c| c.expires_at > now))
    }

    async fn insert_handoff(&self, h: &Handoff) -> Result<()> {
        with_writer!(self, |p| {
            sqlx::query(
                "INSERT INTO sign_in_handoffs (code_hash, surface, user_id, refusal, detail, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&h.code_hash)
            .bind(&h.surface)
            .bind(h.user_id.map(|u| u.to_string()))
            .bind(h.refusal.as_deref())
            .bind(h.detail.as_deref())
            .bind(h.created_at)
            .bind(h.expires_at)
            .execute(p)
            .await
            .map_err(|e| self.db_err(e))
            .map(|_| ())
        })
    }

    async fn take_handoff(&self, code_hash: &[u8], now: Timestamp) -> Result<Option<Handoff>> {
        let row: Option<HandoffRow> = with_writer!(self, |p| {
            sqlx::query_as(
                "DELETE FROM sign_in_handoffs WHERE code_hash = $1 \
                 RETURNING code_hash, surface, user_id, refusal, detail, created_at, expires_at",
            )
            .bind(code_hash)
            .fetch_optional(p)
            .await
            .map_err(|e| self.db_err(e))
        })?;
        row.map(Handoff::try_from)
            .transpose()
            .map(|h| h.filter(|h| h.expires_at > now))
    }
}

#[async_trait]
impl MailLoginStore for SqlStore {
    async fn insert_mail_login(
        &self,
        hits: &[RateHit],
        max: &[i64],
        m: &MailLogin,
        mail: &OutboxMail,
        audit: &AuditEvent,
    ) -> Result<Vec<i64>> {
        // PostgreSQL: the counts first, in their own statement (see
        // `count_hits_sql_postgres`: it does not wait for the WAL flush, so
        // the global window's row is locked for microseconds, not for a
        // flush), then the login in one more, only when no limit was passed. SQLite (one writer
        // at a time, no row locks): one transaction, the counts in it.
        self.refuse_while_down()?;
        if let Pool::Postgres(p) = &self.pool {
            let counts = self.rate_limit_hits(hits).await?;
            if counts.iter().zip(max).any(|(c, m)| c > m) {
                // Refused: give the hits back, so a flood of refused
                // requests never spends the window (nor pushes its end).
                for h in hits {
                    sqlx::query(
                        "UPDATE rate_limits SET count = count - 1 \
                         WHERE key = $1 AND window_start = $2 AND count > 0 \
                         AND set_config('synchronous_commit', 'off', true) IS NOT NULL",
                    )
                    .bind(&h.key)
                    .bind(h.window_start)
                    .execute(p)
                    .await
                    .map_err(|e| self.db_err(e))?;
                }
                return Ok(counts);
            }
            // One statement, so one round trip and one (durable) commit:
            // the older logins ended, the login, its mail and the event.
            sqlx::query(
                "WITH ended AS (DELETE FROM mail_logins WHERE mail_norm = $3), \
                 login AS (INSERT INTO mail_logins (token_hash, mail, mail_norm, locale, code_hash, attempts_left, device_session_id, created_at, expires_at) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)), \
                 queued AS (INSERT INTO mail_outbox (id, recipient, subject, body_text, body_html, attempts, next_attempt_at, expires_at, created_at) \
                   VALUES ($10, $11, $12, $13, $14, $15, $16, $17, $18)) \
                 INSERT INTO audit_events (at, kind, user_id, ip, user_agent, detail) VALUES ($19, $20, $21, $22, $23, $24)",
            )
            .bind(&m.token_hash)
            .bind(&m.mail)
            .bind(&m.mail_norm)
            .bind(&m.locale)
            .bind(&m.code_hash)
            .bind(m.attempts_left)
            .bind(m.device_session_id.map(|u| u.to_string()))
            .bind(m.created_at)
            .bind(m.expires_at)
            .bind(mail.id.to_string())
            .bind(&mail.to)
            .bind(&mail.subject)
            .bind(&mail.text)
            .bind(mail.html.as_deref())
            .bind(mail.attempts)
            .bind(mail.next_attempt_at)
            .bind(mail.expires_at)
            .bind(mail.created_at)
            .bind(audit.at)
            .bind(&audit.kind)
            .bind(audit.user_id.map(|u| u.to_string()))
            .bind(audit.ip.as_deref())
            .bind(audit.user_agent.as_deref())
            .bind(audit.detail.as_deref())
            .execute(p)
            .await
            .map_err(|e| self.db_err(e))?;
            return Ok(counts);
        }
        with_writer!(self, |p| {
            let mut tx = p.begin().await.map_err(|e| self.db_err(e))?;
            sqlx::query("DELETE FROM mail_logins WHERE mail_norm = $1")
                .bind(&m.mail_norm)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db_err(e))?;
            sqlx::query(
                "INSERT INTO mail_logins (token_hash, mail, mail_norm, locale, code_hash, attempts_left, device_session_id, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&m.token_hash)
            .bind(&m.mail)
            .bind(&m.mail_norm)
            .bind(&m.locale)
            .bind(&m.code_hash)
            .bind(m.attempts_left)
            .bind(m.device_session_id.map(|u| u.to_string()))
            .bind(m.created_at)
            .bind(m.expires_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db_err(e))?;
            sqlx::query(
                "INSERT INTO mail_outbox (id, recipient, subject, body_text, body_html, attempts, next_attempt_at, expires_at, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(mail.id.to_string())
            .bind(&mail.to)
            .bind(&mail.subject)
            .bind(&mail.text)
            .bind(mail.html.as_deref())
            .bind(mail.attempts)
            .bind(mail.next_attempt_at)
            .bind(mail.expires_at)
            .bind(mail.created_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db_err(e))?;
            audit_insert!(audit)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db_err(e))?;
            // The counts last, so a refused request's login is rolled back.
            let counts = count_hits!(self, tx, hits);
            if counts.iter().zip(max).any(|(c, m)| c > m) {
                // Over a limit: nothing is kept, the hit included.
                tx.rollback().await.map_err(|e| self.db_err(e))?;
                return Ok(counts);
            }
            tx.commit().await.map_err(|e| self.db_err(e))?;
            Ok(counts)
        })
    }

    async fn spend_mail_login_attempt(
        &self,
        token_hash: &[u8],
        now: Timestamp,
    ) -> Result<Option<MailLogin>> {
        let row: Option<MailLoginRow> = with_writer!(self, |p| {
            sqlx::query_as(
            "UPDATE mail_logins SET attempts_left = attempts_left - 1 \
             WHERE token_hash = $1 AND attempts_left > 0 AND expires_at > $2 \
             RETURNING token_hash, mail, mail_norm, locale, code_hash, attempts_left, device_session_id, created_at, expires_at"
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(p)
        .await
        .map_err(|e| self.db_err(e))
        })?;
        row.map(MailLogin::try_from).transpose()
    }

    async fn delete_mail_login(&self, token_hash: &[u8]) -> Result<bool> {
        with_writer!(self, |p| sqlx::query(
            "DELETE FROM mail_logins WHERE token_hash = $1"
        )
        .bind(token_hash)
        .execute(p)
        .await
        .map_err(|e| self.db_err(e))
        .map(|r| r.rows_affected() > 0))
    }

    async fn insert_mail_auth_token(&self, t: &MailAuthToken) -> Result<()> {
        with_writer!(self, |p| {
            sqlx::query(
            "INSERT INTO mail_auth_tokens (token_hash, mail, locale, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)"
        )
        .bind(&t.token_hash)
        .bind(&t.mail)
        .bind(&t.locale)
        .bind(t.created_at)
        .bind(t.expires_at)
        .execute(p)
        .await
        .map_err(|e| self.db_err(e))
        .map(|_| ())
        })
    }

    async fn take_mail_auth_token(
        &self,
        token_hash: &[u8],
        now: Timestamp,
    ) -> Result<Option<MailAuthToken>> {
        let row: Option<MailAuthTokenRow> = with_writer!(self, |p| {
            sqlx::query_as(
            "DELETE FROM mail_auth_tokens WHERE token_hash = $1 RETURNING token_hash, mail, locale, created_at, expires_at"
        )
        .bind(token_hash)
        .fetch_optional(p)
        .await
        .map_err(|e| self.db_err(e))
        })?;
        Ok(row
            .map(|r| MailAuthToken {
                token_hash: r.token_hash,
                mail: r.mail,
                locale: r.locale,
                created_at: r.created_at,
                expires_at: r.expires_at,
            })
            .filter(|t| t.expires_at > now))
    }

    async fn claim_outbox(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<OutboxMail>> {
        // The outer condition repeats the inner one: under concurrent
        // workers PostgreSQL re-checks it on the locked row, so a mail that
        // another worker just leased is skipped, not sent twice.
        let rows: Vec<OutboxRow> = with_writer!(self, |p| {
            sqlx::query_as(
            "UPDATE mail_outbox SET leased_until = $2 \
             WHERE leased_until <= $1 AND next_attempt_at <= $1 AND id IN \
               (SELECT id FROM mail_outbox WHERE leased_until <= $1 AND next_attempt_at <= $1 \
                ORDER BY next_attempt_at LIMIT $3) \
             RETURNING id, recipient, subject, body_text, body_html, attempts, next_attempt_at, expires_at, created_at"
        )
        .bind(now)
        .bind(lease_until)
        .bind(i64::from(limit))
        .fetch_all(p)
        .await
        .map_err(|e| self.db_err(e))
        })?;
        rows.into_iter()
            .map(|r| {
                Ok(OutboxMail {
                    id: uuid(&r.id)?,
                    to: r.recipient,
                    subject: r.subject,
                    text: r.body_text,
                    html: r.body_html,
                    attempts: r.attempts,
                    next_attempt_at: r.next_attempt_at,
                    expires_at: r.expires_at,
                    created_at: r.created_at,
                })
            })
            .collect()
    }

    async fn outbox_sent(&self, ids: &[Uuid]) -> Result<()> {
        with_writer!(self, |p| {
            let mut tx = p.begin().await.map_err(|e| self.db_err(e))?;
            for id in ids {
                sqlx::query("DELETE FROM mail_outbox WHERE id = $1")
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.db_err(e))?;
            }
            tx.commit().await.map_err(|e| self.db_err(e))
        })
    }

    async fn outbox_retry(
        &self,
        id: Uuid,
        attempts: i64,
        next_attempt_at: Timestamp,
        error: &str,
    ) -> Result<()> {
        with_writer!(self, |p| {
            sqlx::query(
            "UPDATE mail_outbox SET attempts = $2, next_attempt_at = $3, leased_until = 0, last_error = $4 WHERE id = $1"
        )
        .bind(id.to_string())
        .bind(attempts)
        .bind(next_attempt_at)
        .bind(error)
        .execute(p)
        .await
        .map_err(|e| self.db_err(e))
        .map(|_| ())
        })
    }
}

#[async_trait]
impl TokenStore for SqlStore {
    async fn put_provider_tokens(&self, t: &ProviderTokens) -> Result<()> {
        with_writer!(self, |p| {
            sqlx::query(
            "INSERT INTO provider_tokens (identity_id, access_token, refresh_token, expires_at, scope, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (identity_id) DO UPDATE SET access_token = excluded.access_token, \
             refresh_token = excluded.refresh_token, expires_at = excluded.expires_at, \
             scope = excluded.scope, updated_at = excluded.updated_at"
        )
        .bind(t.identity_id.to_string())
        .bind(&t.access_token)
        .bind(t.refresh_token.as_deref())
        .bind(t.expires_at)
        .bind(t.scope.as_deref())
        .bind(t.updated_at)
        .execute(p)
        .await
        .map_err(|e| self.db_err(e))
        .map(|_| ())
        })
    }

    async fn provider_tokens(&self, identity_id: Uuid) -> Result<Option<ProviderTokens>> {
        let row: Option<ProviderTokensRow> = with_pool!(self, |p| sqlx::query_as(
            "SELECT identity_id, access_token, refresh_token, expires_at, scope, updated_at \
             FROM provider_tokens WHERE identity_id = $1"
        )
        .bind(identity_id.to_string())
        .fetch_optional(p)
        .await
        .map_err(|e| self.db_err(e)))?;
        row.map(ProviderTokensRow::into_model).transpose()
    }

    async fn provider_tokens_after(
        &self,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<ProviderTokens>> {
        let after = after.map(|u| u.to_string()).unwrap_or_default();
        let rows: Vec<ProviderTokensRow> = with_pool!(self, |p| sqlx::query_as(
            "SELECT identity_id, access_token, refresh_token, expires_at, scope, updated_at \
             FROM provider_tokens WHERE identity_id > $1 ORDER BY identity_id LIMIT $2"
        )
        .bind(&after)
        .bind(i64::from(limit))
        .fetch_all(p)
        .await
        .map_err(|e| self.db_err(e)))?;
        rows.into_iter()
            .map(ProviderTokensRow::into_model)
            .collect()
    }
}

#[async_trait]
impl RateLimitStore for SqlStore {
    async fn rate_limit_hits(&self, hits: &[RateHit]) -> Result<Vec<i64>> {
        self.refuse_while_down()?;
        if let Pool::Postgres(p) = &self.pool
            && distinct_windows(hits)
            && !hits.is_empty()
        {
            let rows: Vec<(String, i64, i64)> =
                sqlx::query_as(sqlx::AssertSqlSafe(count_hits_sql_postgres(hits.len())))
                    .bind_hits(hits)
                    .fetch_all(p)
                    .await
                    .map_err(|e| self.db_err(e))?;
            return counts_in_order(hits, &rows);
        }
        with_writer!(self, |p| {
            let mut tx = p.begin().await.map_err(|e| self.db_err(e))?;
            let counts = count_hits!(self, tx, hits);
            tx.commit().await.map_err(|e| self.db_err(e))?;
            Ok(counts)
        })
    }
}

#[async_trait]
impl AuditStore for SqlStore {
    async fn insert_audit(&self, e: &AuditEvent) -> Result<()> {
        with_writer!(self, |p| audit_insert!(e)
            .execute(p)
            .await
            .map_err(|e| self.db_err(e))
            .map(|_| ()))
    }

    async fn list_audit(&self, user_id: Option<Uuid>, limit: u32) -> Result<Vec<AuditEvent>> {
        let rows: Vec<AuditRow> = match user_id {
            Some(uid) => with_pool!(self, |p| {
                sqlx::query_as(
                "SELECT at, kind, user_id, ip, user_agent, detail FROM audit_events WHERE user_id = $2 \
                 ORDER BY id DESC LIMIT $1"
            )
            .bind(i64::from(limit))
            .bind(uid.to_string())
            .fetch_all(p)
            .await
            .map_err(|e| self.db_err(e))
            })?,
            None => with_pool!(self, |p| {
                sqlx::query_as(
                "SELECT at, kind, user_id, ip, user_agent, detail FROM audit_events ORDER BY id DESC LIMIT $1"
            )
            .bind(i64::from(limit))
            .fetch_all(p)
            .await
            .map_err(|e| self.db_err(e))
            })?,
        };
        rows.into_iter()
            .map(|r| {
                Ok(AuditEvent {
                    at: r.at,
                    kind: r.kind,
                    user_id: r.user_id.as_deref().map(uuid).transpose()?,
                    ip: r.ip,
                    user_agent: r.user_agent,
                    detail: r.detail,
                })
            })
            .collect()
    }
}
