//! Where SQLite and PostgreSQL get different SQL, and why. Everything else
//! in `store::sql` is one statement for both.
//!
//! 1. Counting rate-limit hits ([`count_hits_sql_postgres`], and giving
//!    refused hits back, [`PG_GIVE_BACK_HIT`]): on PostgreSQL the statement
//!    commits without waiting for the WAL flush. Every code request updates
//!    the global window's row, which PostgreSQL keeps locked until the
//!    commit; not waiting for the flush hands it to the next request at
//!    once. SQLite has one writer and no row locks: the plain upsert.
//! 2. Inserting a mail login ([`PG_INSERT_MAIL_LOGIN`]): PostgreSQL ends the
//!    older logins, inserts the login, queues its mail and records the audit
//!    event in one statement (a data-modifying `WITH`: one round trip, one
//!    commit). SQLite cannot modify data in `WITH`: one transaction of four
//!    statements (in `mail_logins`).
//! 3. Announcing session changes: PostgreSQL `NOTIFY`; SQLite replaces a
//!    marker file beside the database (in `database`), as there is no
//!    server to notify.

/// PostgreSQL: the same upsert as one statement (its own transaction) that
/// commits without waiting for the WAL flush (`set_config(..., true)` holds
/// for this statement's transaction only). Every request updates the global
/// window's row, and PostgreSQL keeps it locked until the commit: not
/// waiting for the flush there hands it to the next request at once. A crash
/// can lose the last fraction of a second of counts, never those of an
/// acknowledged request: its own later commit flushes the WAL up to them.
pub(super) fn count_hits_sql_postgres(n: usize) -> String {
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

/// PostgreSQL: give one refused hit back, without waiting for the flush.
pub(super) const PG_GIVE_BACK_HIT: &str = "UPDATE rate_limits SET count = count - 1 \
     WHERE key = $1 AND window_start = $2 AND count > 0 \
     AND set_config('synchronous_commit', 'off', true) IS NOT NULL";

/// PostgreSQL: the older logins of the address ended, the login, its mail
/// and its audit event, in one statement.
pub(super) const PG_INSERT_MAIL_LOGIN: &str = "WITH ended AS (DELETE FROM mail_logins WHERE mail_norm = $3), \
     login AS (INSERT INTO mail_logins (token_hash, mail, mail_norm, locale, code_hash, attempts_left, device_session_id, created_at, expires_at) \
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)), \
     queued AS (INSERT INTO mail_outbox (id, recipient, subject, body_text, body_html, attempts, next_attempt_at, expires_at, created_at) \
       VALUES ($10, $11, $12, $13, $14, $15, $16, $17, $18)) \
     INSERT INTO audit_events (at, kind, user_id, ip, user_agent, detail) VALUES ($19, $20, $21, $22, $23, $24)";
