//! The durable mail outbox: mails are stored with the login they belong to
//! and sent by a background worker, with retries and exponential backoff, so
//! an SMTP outage delays a code mail instead of losing it, and no HTTP
//! answer waits on SMTP. Several instances may run workers over one
//! database: a mail is leased to one worker at a time.
use std::sync::Arc;
use std::time::Duration;

use super::ports::mail::{MailError, Message, Transport};
use super::{Core, Error, OutboxMail};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxPolicy {
    /// Seconds before the first retry; doubled per failure.
    pub retry_initial: i64,
    /// Longest wait between two tries.
    pub retry_max: i64,
    /// Seconds a worker may hold a mail before another may take it.
    pub lease: i64,
    /// How often to look for due mails when nothing wakes the worker.
    pub poll: Duration,
}

impl Default for OutboxPolicy {
    fn default() -> Self {
        OutboxPolicy {
            retry_initial: 2,
            retry_max: 60,
            lease: 60,
            poll: Duration::from_secs(1),
        }
    }
}

/// Mails sent at once by one worker (lettre pools the connections).
const CONCURRENCY: usize = 8;

impl Core {
    /// Send what is due once, several mails at a time; returns (sent, failed).
    pub async fn deliver_outbox(
        &self,
        transport: &Arc<dyn Transport>,
        from: &str,
        policy: &OutboxPolicy,
    ) -> Result<(u64, u64), Error> {
        let now = self.now();
        let due = self
            .store()
            .claim_outbox(now, now + policy.lease, 64)
            .await?;
        let mut tasks = tokio::task::JoinSet::new();
        let mut done = Vec::new();
        let mut failed = 0;
        for mail in due {
            if tasks.len() >= CONCURRENCY
                && let Some(joined) = tasks.join_next().await
            {
                failed += self.settle(joined, &mut done, policy).await?;
            }
            let transport = Arc::clone(transport);
            let from = from.to_string();
            // No worker keeps a mail past its lease (another may take it
            // then): a send still running by then is dropped and retried.
            let bound = Duration::from_secs(policy.lease.max(1) as u64);
            tasks.spawn(async move {
                let message = Message {
                    to: mail.to.clone(),
                    subject: mail.subject.clone(),
                    text: mail.text.clone(),
                    html: mail.html.clone(),
                };
                let result = tokio::time::timeout(bound, transport.send(&from, &message))
                    .await
                    .unwrap_or_else(|_| {
                        Err(MailError::Temporary(format!(
                            "the transport did not finish within the lease ({bound:?})"
                        )))
                    });
                (mail, result)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            failed += self.settle(joined, &mut done, policy).await?;
        }
        let sent = done.len() as u64;
        self.store().outbox_sent(&done).await?;
        Ok((sent, failed))
    }

    /// Book one delivery's outcome: sent ids are collected (removed in one
    /// transaction), failures rescheduled with backoff or dropped.
    async fn settle(
        &self,
        joined: Result<(OutboxMail, Result<(), MailError>), tokio::task::JoinError>,
        done: &mut Vec<uuid::Uuid>,
        policy: &OutboxPolicy,
    ) -> Result<u64, Error> {
        let (mail, result) =
            joined.map_err(|e| Error::Internal(format!("mail task failed: {e}")))?;
        let Err(e) = result else {
            done.push(mail.id);
            return Ok(0);
        };
        let attempts = mail.attempts + 1;
        let permanent = matches!(e, MailError::Permanent(_));
        let wait = (policy.retry_initial.max(1) << attempts.min(20).saturating_sub(1))
            .min(policy.retry_max);
        let next = self.now() + wait;
        if permanent || next >= mail.expires_at {
            tracing::warn!(mail = %mail.id, attempts, error = %e, "mail dropped: it cannot be delivered before its code expires");
            done.push(mail.id);
        } else {
            tracing::warn!(mail = %mail.id, attempts, retry_in_secs = wait, error = %e, "mail delivery failed; will retry");
            self.store()
                .outbox_retry(mail.id, attempts, next, &e.to_string())
                .await?;
        }
        Ok(1)
    }

    /// Run the outbox worker until the task is dropped.
    pub async fn run_outbox(
        self,
        transport: Arc<dyn Transport>,
        from: String,
        policy: OutboxPolicy,
    ) {
        let notify = self.inner.outbox_notify.clone();
        loop {
            match self.deliver_outbox(&transport, &from, &policy).await {
                Ok((sent, _)) if sent > 0 => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "outbox: cannot read pending mails"),
            }
            tokio::select! {
                _ = notify.notified() => {}
                _ = tokio::time::sleep(policy.poll) => {}
            }
        }
    }
}
