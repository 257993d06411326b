//! OpenID Connect Back-Channel Logout 1.0: when a session ends (signed
//! out, revoked by an operator or the CLI, the person disabled or deleted,
//! expired), every client holding a grant made in it that registered a
//! `backchannel_logout_uri` gets a logout token, once. The ended sessions
//! are found in the database (so a session ended by another process or
//! instance counts), each grant claimed by one instance.
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::super::ports::notify::LogoutNotifier;
use super::super::{Core, Error};
use super::{Client, Grant};

/// The `events` member of a logout token.
pub const LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// How long a logout token is valid.
const LOGOUT_TOKEN_TTL: i64 = 120;
/// Grants claimed per client per round.
const BATCH: u32 = 100;
/// How often the database is looked at without a nudge (sessions ended by
/// another process).
const POLL: Duration = Duration::from_secs(2);
/// The delays before the second and third attempt of a delivery.
const RETRIES: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(5)];

impl Core {
    /// Tell clients about ended sessions, until the process ends.
    pub async fn run_backchannel_logout(self, notifier: Arc<dyn LogoutNotifier>) {
        let nudge = self.inner.logout_notify.clone();
        loop {
            match self.deliver_logouts(&notifier).await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "back-channel logout: cannot read ended sessions")
                }
            }
            tokio::select! {
                _ = nudge.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// One round: claim what is due and send it (in the background, with
    /// retries). Returns how many grants were claimed.
    async fn deliver_logouts(&self, notifier: &Arc<dyn LogoutNotifier>) -> Result<usize, Error> {
        let mut claimed = 0;
        for client in self.backchannel_clients().await? {
            let Some(uri) = client.backchannel_logout_uri.clone() else {
                continue;
            };
            let grants = self
                .store()
                .claim_logged_out_grants(&client.id, self.now(), BATCH)
                .await?;
            claimed += grants.len();
            // One token per session, however many grants it made.
            let mut told: BTreeSet<Uuid> = BTreeSet::new();
            for g in grants {
                let Some(sid) = g.session_id.filter(|s| told.insert(*s)) else {
                    continue;
                };
                let token = self.logout_token(&client, &g, sid).await?;
                let notifier = notifier.clone();
                let (uri, id) = (uri.clone(), client.id.clone());
                tokio::spawn(async move { send_with_retries(notifier, &id, &uri, &token).await });
            }
        }
        Ok(claimed)
    }

    async fn backchannel_clients(&self) -> Result<Vec<Arc<Client>>, Error> {
        let mut all = self.all_clients().await?;
        all.retain(|c| c.backchannel_logout_uri.is_some());
        Ok(all)
    }

    /// A logout token (Back-Channel Logout 2.4): `typ` `logout+jwt`; `iss`,
    /// `aud`, `iat`, `exp`, `jti`, `sub`, `sid`, `events`; never a nonce.
    async fn logout_token(&self, client: &Client, g: &Grant, sid: Uuid) -> Result<String, Error> {
        let signer = self.signer().await?;
        let now = self.now();
        let mut claims = Map::new();
        claims.insert("iss".into(), json!(self.inner.oidc.issuer));
        claims.insert("aud".into(), json!(client.id));
        claims.insert("iat".into(), json!(now));
        claims.insert("exp".into(), json!(now + LOGOUT_TOKEN_TTL));
        claims.insert("jti".into(), json!(Uuid::new_v4().to_string()));
        if let Some(user) = g.user_id {
            claims.insert("sub".into(), json!(self.subject(client, user)));
        }
        claims.insert("sid".into(), json!(sid.to_string()));
        claims.insert("events".into(), json!({ LOGOUT_EVENT: {} }));
        let claims = Value::Object(claims);
        super::keys::sign(signer, "logout+jwt", claims).await
    }

    /// Look for ended sessions now (one ended here).
    pub(crate) fn nudge_backchannel_logout(&self) {
        self.inner.logout_notify.notify_one();
    }
}

async fn send_with_retries(
    notifier: Arc<dyn LogoutNotifier>,
    client: &str,
    uri: &str,
    token: &str,
) {
    let mut delays = RETRIES.iter();
    loop {
        match notifier.send_logout(uri, token).await {
            Ok(()) => {
                tracing::info!(client, "back-channel logout delivered");
                return;
            }
            Err(why) => match delays.next() {
                Some(d) => {
                    tracing::debug!(client, reason = %why, "back-channel logout failed; trying again");
                    tokio::time::sleep(*d).await;
                }
                None => {
                    tracing::warn!(client, reason = %why, "back-channel logout not delivered (three attempts)");
                    return;
                }
            },
        }
    }
}
