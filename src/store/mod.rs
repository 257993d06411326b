//! Storage: the core's storage ports ([`crate::core::ports::storage`]),
//! implemented once in SQL ([`sql::SqlStore`]) for SQLite and PostgreSQL.
//! The store knows no HTTP and no rules; it keeps data and makes multi-row
//! changes atomic.
use std::sync::Arc;

mod reachability;
pub mod sql;

pub use crate::core::ports::storage::*;
pub use sql::{ConnectOptions, SqlStore};

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

/// Open the database a URL names (`sqlite://...` or `postgres://...`).
pub async fn connect(url: &str, options: &ConnectOptions) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(SqlStore::connect(url, options).await?))
}
