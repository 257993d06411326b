//! Audit events: sign-ins, failures, revocations, administrative changes.
use uuid::Uuid;

use super::{AuditEvent, ClientMeta, Core, Error};

impl Core {
    /// Record an event. Auditing must not turn a successful action into a
    /// failed one, so a storage failure here is logged, not returned.
    pub async fn audit(
        &self,
        kind: &str,
        user_id: Option<Uuid>,
        meta: &ClientMeta,
        detail: Option<serde_json::Value>,
    ) {
        let event = AuditEvent {
            at: self.now(),
            kind: kind.to_string(),
            user_id,
            ip: meta.ip.clone(),
            user_agent: meta.user_agent.clone(),
            detail: detail.map(|d| d.to_string()),
        };
        if let Err(e) = self.store().insert_audit(&event).await {
            tracing::warn!(kind, error = %e, "could not record audit event");
        }
    }

    /// The newest events first, optionally of one user.
    pub async fn audit_events(
        &self,
        user_id: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, Error> {
        Ok(self.store().list_audit(user_id, limit).await?)
    }
}
