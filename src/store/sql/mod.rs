//! The SQL implementation of [`Store`], for SQLite and PostgreSQL.
//!
//! One file per aggregate (`users`, `sessions`, `flows`, `mail_logins`,
//! `tokens`, `limits`, `audit`, and `database` for the pools' own work),
//! the row types beside the queries that read them. Each statement is
//! written once: both dialects accept the same SQL (`$n` parameters,
//! `ON CONFLICT`, `RETURNING`, `TRUE`/`FALSE`), and [`with_pool!`] runs the
//! one body against whichever pool is open. The exceptions, each for a
//! reason, are all in [`dialect`]; the migrations differ per dialect
//! (`migrations/sqlite`, `migrations/postgres`) only in column types.
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
    AuditStore, Database, FactorStore, FlowStore, MailLoginStore, OidcStore, RateHit,
    RateLimitStore, Result, SessionStore, StoreError, TokenStore, UserStore,
};
use crate::core::users::{ImportReport, NewUser};
use crate::core::{
    AuditEvent, Confirmation, Email, Handoff, Identity, Locale, LoginFlow, MailAuthToken,
    MailLogin, MfaState, OutboxMail, ProviderTokens, Session, StoredPasskey, Timestamp, TotpFactor,
    User,
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
        "SELECT s.id, s.user_id, s.created_at, s.last_seen_at, s.idle_timeout, s.expires_at, s.ip, s.user_agent, s.kind, s.method, \
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

mod audit;
mod database;
mod dialect;
mod factors;
mod flows;
mod limits;
mod mail_logins;
mod oidc;
mod sessions;
mod tokens;
mod users;

use users::IdentityRow;
