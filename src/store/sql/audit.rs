//! The audit trail.
use super::*;

#[derive(sqlx::FromRow)]
pub(super) struct AuditRow {
    pub(super) at: i64,
    pub(super) kind: String,
    pub(super) user_id: Option<String>,
    pub(super) ip: Option<String>,
    pub(super) user_agent: Option<String>,
    pub(super) detail: Option<String>,
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
