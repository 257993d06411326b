//! Users: creation, lookup, disabling (which ends their sessions at once),
//! deletion and bulk import.
use serde_json::json;
use uuid::Uuid;

use super::model::parse_display_name;
use super::{ClientMeta, Core, Email, Error, Locale, User};

/// A validated request to create (or, on import, update) a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    pub email: Email,
    pub display_name: Option<String>,
    pub locale: Option<Locale>,
}

impl NewUser {
    /// Validate raw input; empty optional fields count as absent.
    pub fn parse(email: &str, name: Option<&str>, locale: Option<&str>) -> Result<Self, Error> {
        let email = Email::parse(email.trim())?;
        let display_name = match name.map(str::trim).filter(|s| !s.is_empty()) {
            Some(n) => Some(parse_display_name(n)?),
            None => None,
        };
        let locale = match locale.map(str::trim).filter(|s| !s.is_empty()) {
            Some(l) => Some(Locale::parse(l)?),
            None => None,
        };
        Ok(NewUser {
            email,
            display_name,
            locale,
        })
    }
}

/// How an operator names a user: by id or by e-mail address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserKey {
    Id(Uuid),
    Email(Email),
}

impl UserKey {
    pub fn parse(s: &str) -> Result<Self, Error> {
        let s = s.trim();
        if let Ok(id) = Uuid::parse_str(s) {
            return Ok(UserKey::Id(id));
        }
        Email::parse(s)
            .map(UserKey::Email)
            .map_err(|_| Error::invalid("user", "expected a user id (UUID) or an e-mail address"))
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
}

impl Core {
    pub async fn add_user(&self, new: NewUser, meta: &ClientMeta) -> Result<User, Error> {
        let now = self.now();
        let user = User {
            id: Uuid::now_v7(),
            email: Some(new.email),
            display_name: new.display_name,
            locale: new.locale,
            disabled: false,
            created_at: now,
            updated_at: now,
        };
        self.store().insert_user(&user).await?;
        self.audit("user.created", Some(user.id), meta, None).await;
        Ok(user)
    }

    pub async fn find_user(&self, key: &UserKey) -> Result<User, Error> {
        let found = match key {
            UserKey::Id(id) => self.store().user_by_id(*id).await?,
            UserKey::Email(e) => self.store().user_by_email(&e.normalized()).await?,
        };
        found.ok_or(Error::NotFound)
    }

    /// Users ordered by creation, `limit` at a time after `offset`.
    pub async fn list_users(&self, offset: u64, limit: u32) -> Result<Vec<User>, Error> {
        Ok(self.store().list_users(offset, limit).await?)
    }

    /// Disable or enable a user. Disabling ends all of the user's sessions in
    /// the same transaction, so no request after this call is served for them.
    pub async fn set_user_disabled(
        &self,
        key: &UserKey,
        disabled: bool,
        meta: &ClientMeta,
    ) -> Result<User, Error> {
        let user = self.find_user(key).await?;
        let ended = self
            .store()
            .set_user_disabled(user.id, disabled, self.now())
            .await?
            .ok_or(Error::NotFound)?;
        self.sessions_changed(None).await;
        self.inner.userinfo_cache.forget_user(user.id);
        let kind = if disabled {
            "user.disabled"
        } else {
            "user.enabled"
        };
        self.audit(
            kind,
            Some(user.id),
            meta,
            Some(json!({ "sessions_ended": ended })),
        )
        .await;
        self.find_user(&UserKey::Id(user.id)).await
    }

    /// A person edits their own name and language (`None`: cleared). The
    /// name follows [`super::model::parse_display_name`]; cached sessions
    /// show the change at once.
    pub async fn update_profile(
        &self,
        user_id: Uuid,
        display_name: Option<&str>,
        locale: Option<&Locale>,
        meta: &ClientMeta,
    ) -> Result<User, Error> {
        let name = display_name
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(super::model::parse_display_name)
            .transpose()?;
        if !self
            .store()
            .update_user_profile(
                user_id,
                name.as_deref(),
                locale.map(Locale::as_str),
                self.now(),
            )
            .await?
        {
            return Err(Error::NotFound);
        }
        self.sessions_changed(None).await;
        self.audit(
            "user.updated",
            Some(user_id),
            meta,
            Some(json!({ "fields": ["display_name", "locale"] })),
        )
        .await;
        self.find_user(&UserKey::Id(user_id)).await
    }

    /// Everything authgate holds on a person, for them to download: the
    /// user, identities (never a token), live sessions (never an id or a
    /// token) and audit events (their details without session ids). Times
    /// are RFC 3339.
    pub async fn personal_data(&self, user_id: Uuid) -> Result<serde_json::Value, Error> {
        use super::clock::rfc3339;
        let user = self.find_user(&UserKey::Id(user_id)).await?;
        let identities = self.store().identities_of(user_id).await?;
        let sessions = self.list_sessions(Some(user_id), u32::MAX).await?;
        let events = self.audit_events(Some(user_id), 10_000).await?;
        Ok(json!({
            "user": {
                "id": user.id,
                "email": user.email.as_ref().map(Email::as_str),
                "display_name": user.display_name,
                "locale": user.locale.as_ref().map(Locale::as_str),
                "disabled": user.disabled,
                "created_at": rfc3339(user.created_at),
                "updated_at": rfc3339(user.updated_at),
            },
            "identities": identities.iter().map(|i| json!({
                "provider": i.provider,
                "issuer": i.issuer,
                "subject": i.subject,
                "email": i.email,
                "email_verified": i.email_verified,
                "created_at": rfc3339(i.created_at),
                "last_used_at": rfc3339(i.last_used_at),
            })).collect::<Vec<_>>(),
            "sessions": sessions.iter().map(|s| json!({
                "kind": s.kind,
                "ip": s.ip,
                "user_agent": s.user_agent,
                "created_at": rfc3339(s.created_at),
                "last_seen_at": rfc3339(s.last_seen_at),
                "expires_at": rfc3339(s.expires_at),
            })).collect::<Vec<_>>(),
            "audit_events": events.iter().map(|e| json!({
                "at": rfc3339(e.at),
                "kind": e.kind,
                "ip": e.ip,
                "user_agent": e.user_agent,
                "detail": e.detail.as_deref().and_then(|d| {
                    // Sessions are given without their ids, here too.
                    let mut v: serde_json::Value = serde_json::from_str(d).ok()?;
                    if let Some(o) = v.as_object_mut() {
                        o.remove("session");
                    }
                    Some(v)
                }),
            })).collect::<Vec<_>>(),
        }))
    }

    /// Delete a user with their identities, sessions and provider tokens.
    pub async fn delete_user(&self, key: &UserKey, meta: &ClientMeta) -> Result<User, Error> {
        let user = self.find_user(key).await?;
        if !self.store().delete_user(user.id).await? {
            return Err(Error::NotFound);
        }
        self.sessions_changed(None).await;
        self.inner.userinfo_cache.forget_user(user.id);
        self.audit("user.deleted", Some(user.id), meta, None).await;
        Ok(user)
    }

    /// A user's identities (from the session cache when it has them: a
    /// link made on another instance shows there within the cache TTL).
    pub async fn user_identities(&self, user_id: Uuid) -> Result<Vec<super::Identity>, Error> {
        let now = self.now();
        let cache = &self.inner.session_cache;
        if let Some(list) = cache.identities(user_id, now) {
            return Ok(list);
        }
        let list = self.store().identities_of(user_id).await?;
        cache.put_identities(user_id, list.clone(), now);
        Ok(list)
    }

    /// Import users in one transaction: all rows or none. Idempotent: an
    /// address that exists is updated (name, locale) only where the row gives
    /// a different value. Rows must already be validated and unique by address.
    pub async fn import_users(
        &self,
        rows: &[NewUser],
        progress: &(dyn Fn(u64) + Send + Sync),
        meta: &ClientMeta,
    ) -> Result<ImportReport, Error> {
        let now = self.now();
        let report = self.store().import_users(rows, now, progress).await?;
        self.sessions_changed(None).await;
        self.audit(
            "user.imported",
            None,
            meta,
            Some(json!({ "created": report.created, "updated": report.updated, "unchanged": report.unchanged })),
        )
        .await;
        Ok(report)
    }
}

/// What a person agreed to, by name (`profile`, `measurements`, ...). At
/// most 16 choices, names of at most 32 characters.
pub type Consent = std::collections::BTreeMap<String, bool>;

impl Core {
    /// Record a user's consent choices (replacing earlier ones), audited.
    pub async fn record_consent(
        &self,
        user: &User,
        consent: &Consent,
        meta: &ClientMeta,
    ) -> Result<(), Error> {
        if consent.len() > 16
            || consent.keys().any(|k| {
                k.is_empty()
                    || k.len() > 32
                    || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            })
        {
            return Err(Error::invalid(
                "consent",
                "at most 16 choices with short names",
            ));
        }
        let text =
            serde_json::to_string(consent).map_err(|e| Error::invalid("consent", e.to_string()))?;
        self.store()
            .put_user_consent(user.id, &text, self.now())
            .await?;
        self.audit(
            "user.consent",
            Some(user.id),
            meta,
            Some(json!({ "consent": consent })),
        )
        .await;
        Ok(())
    }

    /// The consent choices recorded for a user (empty when none).
    pub async fn consent(&self, user_id: Uuid) -> Result<Consent, Error> {
        Ok(self
            .store()
            .user_consent(user_id)
            .await?
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default())
    }
}
