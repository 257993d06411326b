//! Sessions: opaque bearer ids (at least 128 random bits), stored only as
//! SHA-256; idle and absolute lifetimes; revocable one by one or all of a
//! user's; a new id on every sign-in.
use serde_json::json;
use uuid::Uuid;

use super::secret::{self, MAX_TOKEN_LEN, TokenFormat};
use super::{ClientMeta, Core, Error, Session, User};

/// How long background re-reads and last-seen writes wait for company, so
/// that one statement serves many sessions.
pub(crate) const BATCH_WINDOW: std::time::Duration = std::time::Duration::from_millis(20);

/// Lifetimes from `[session]` in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPolicy {
    /// Seconds without a request after which a session ends.
    pub idle_timeout: i64,
    /// Seconds after sign-in after which a session ends regardless.
    pub absolute_timeout: i64,
    /// `last_seen_at` is written at most this often per session, so a busy
    /// session does not cost a database write on every request.
    pub touch_interval: i64,
    /// Seconds a checked session may be answered from memory (0: never).
    pub cache_ttl: i64,
    /// Sessions seen in the last hour loaded into the cache when it comes
    /// on (at start; on PostgreSQL also when listening resumes), at most.
    pub cache_warm: usize,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        SessionPolicy {
            idle_timeout: 24 * 3600,
            absolute_timeout: 7 * 24 * 3600,
            touch_interval: 60,
            cache_ttl: 30,
            cache_warm: 10_000,
        }
    }
}

/// A session that checked out, with its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionCheck {
    pub session: Session,
    pub user: User,
}

impl Core {
    /// Start a new session for a user (a sign-in). Always a fresh id: a
    /// session id is never reused or carried over (no fixation). Returns the
    /// bearer token, which exists only in this return value and the client.
    /// A person who needs a second factor is refused (`Forbidden`) unless
    /// `kind` is exempt: surfaces with a second step use
    /// [`Core::first_factor_done`].
    pub async fn sign_in(
        &self,
        user: &User,
        kind: &str,
        method: &str,
        format: TokenFormat,
        meta: &ClientMeta,
    ) -> Result<(String, Session), Error> {
        self.refuse_without_second_factor(user, kind, meta).await?;
        self.start_session(user, kind, method, format, meta, None)
            .await
    }

    /// [`Core::sign_in`], as the child of `parent` when given (a protected
    /// host's session handed over from an authgate session): it ends when
    /// its parent ends and never outlives it.
    pub(crate) async fn start_session(
        &self,
        user: &User,
        kind: &str,
        method: &str,
        format: TokenFormat,
        meta: &ClientMeta,
        parent: Option<&Session>,
    ) -> Result<(String, Session), Error> {
        self.refuse_disabled_sign_in(user, kind, meta).await?;
        let policy = self.session_policy();
        let now = self.now();
        let token = secret::new_token(format)?;
        let session = Session {
            id: Uuid::now_v7(),
            user_id: user.id,
            created_at: now,
            last_seen_at: now,
            idle_timeout: policy.idle_timeout,
            expires_at: now
                .saturating_add(policy.absolute_timeout)
                .min(parent.map_or(i64::MAX, |p| p.expires_at)),
            ip: meta.ip.clone(),
            user_agent: meta.user_agent.clone().map(|ua| truncate(ua, 512)),
            kind: kind.to_string(),
            method: method.to_string(),
        };
        self.store()
            .insert_session(&session, &secret::hash_token(&token), parent.map(|p| p.id))
            .await?;
        self.audit(
            "session.created",
            Some(user.id),
            meta,
            Some(json!({ "session": session.id, "kind": kind, "method": method })),
        )
        .await;
        Ok((token, session))
    }

    /// A disabled person signs in nowhere: `Disabled`, audited.
    pub(crate) async fn refuse_disabled_sign_in(
        &self,
        user: &User,
        kind: &str,
        meta: &ClientMeta,
    ) -> Result<(), Error> {
        if !user.disabled {
            return Ok(());
        }
        self.audit(
            "signin.refused",
            Some(user.id),
            meta,
            Some(json!({ "reason": "disabled", "kind": kind })),
        )
        .await;
        Err(Error::Disabled)
    }

    /// Check a presented session token. `None` for anything that is not a
    /// live session of an enabled user; an expired session is removed.
    /// Answers from the session cache when it can (see `session_cache`).
    pub async fn check_session(&self, token: &str) -> Result<Option<SessionCheck>, Error> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Ok(None);
        }
        let hash = secret::hash_token(token);
        let now = self.now();
        let cache = &self.inner.session_cache;
        if cache.is_enabled() {
            cache.sync_marker(self.store().sessions_marker());
        }
        if let Some((check, refresh)) = cache.get(&hash, now) {
            if refresh && cache.queue_refresh(hash) {
                let core = self.clone();
                tokio::spawn(async move { core.refresh_cached_sessions().await });
            }
            if now - check.session.last_seen_at >= self.session_policy().touch_interval {
                self.touch_later(hash, check.session.id, now);
                cache.touched(&hash, now);
                let mut check = check;
                check.session.last_seen_at = now;
                return Ok(Some(check));
            }
            return Ok(Some(check));
        }
        let generation = cache.generation();
        let touched = self.pending_touch(&hash);
        let Some((mut session, user)) = self.store().session_by_token_hash(&hash).await? else {
            return Ok(None);
        };
        session.last_seen_at = session.last_seen_at.max(touched.unwrap_or(i64::MIN));
        if now >= session.ends_at() {
            self.store().delete_session(session.id).await?;
            return Ok(None);
        }
        if user.disabled {
            return Ok(None);
        }
        if now - session.last_seen_at >= self.session_policy().touch_interval {
            self.touch_later(hash, session.id, now);
            session.last_seen_at = now;
        }
        let check = SessionCheck { session, user };
        cache.put(hash, check.clone(), now, generation);
        Ok(Some(check))
    }

    /// Re-read the cached sessions queued for it (refresh-ahead, off the
    /// request path, 64 per query): put the fresh answers, drop entries whose
    /// session or user no longer passes. An entry whose answer cannot be put
    /// (a read error; an eviction raced the read) is asked for again on its
    /// next use, and expires with its TTL regardless.
    async fn refresh_cached_sessions(&self) {
        let cache = &self.inner.session_cache;
        loop {
            // Let a batch gather (uses that fall due together come spread
            // over a few milliseconds); the answers in hand are still valid.
            // One query per window: the database thread's bursts stay short.
            tokio::time::sleep(BATCH_WINDOW).await;
            let queued = cache.take_refreshes(64);
            if queued.is_empty() {
                return;
            }
            {
                let chunk = &queued[..];
                let generation = cache.generation();
                let now = self.now();
                let touched: Vec<_> = chunk.iter().map(|h| self.pending_touch(h)).collect();
                let rows = match self.store().sessions_by_token_hashes(chunk).await {
                    Ok(rows) => rows,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot refresh cached sessions");
                        chunk.iter().for_each(|h| cache.refresh_failed(h));
                        continue;
                    }
                };
                let mut found = std::collections::HashMap::with_capacity(rows.len());
                for (hash, session, user) in rows {
                    if let Ok(hash) = <[u8; 32]>::try_from(hash.as_slice()) {
                        found.insert(hash, (session, user));
                    }
                }
                let mut gone = Vec::new();
                let mut users = Vec::new();
                for (hash, touched) in chunk.iter().zip(touched) {
                    match found.remove(hash) {
                        Some((mut session, user)) if !user.disabled => {
                            session.last_seen_at =
                                session.last_seen_at.max(touched.unwrap_or(i64::MIN));
                            if now < session.ends_at() {
                                users.push(user.id);
                                cache.put(*hash, SessionCheck { session, user }, now, generation);
                            } else {
                                gone.push(hash);
                            }
                        }
                        _ => gone.push(hash),
                    }
                }
                // After the puts: an eviction refuses puts of reads made before it.
                gone.into_iter().for_each(|h| cache.evict(h));
                self.refresh_cached_identities(users, now).await;
            }
        }
    }

    /// Re-read the cached identities of these users (those of sessions just
    /// re-read), so they are not read on the request path when they expire:
    /// one query for the batch.
    async fn refresh_cached_identities(&self, mut users: Vec<Uuid>, now: super::Timestamp) {
        let cache = &self.inner.session_cache;
        users.sort_unstable();
        users.dedup();
        users.retain(|u| cache.has_identities(*u));
        if users.is_empty() {
            return;
        }
        match self.store().identities_of_users(&users).await {
            Ok(list) => put_identities_by_user(cache, &users, list, now),
            Err(e) => tracing::warn!(error = %e, "cannot refresh cached identities"),
        }
    }

    /// Load the sessions seen most recently (in the last hour; at most
    /// `session.cache_warm_sessions`, and never more than the cache holds)
    /// into the session cache,
    /// with their users' identities: a starting server then answers its
    /// active users without a database read each. Their read times are
    /// spread over half the TTL so they are not all re-read at once.
    /// Returns how many sessions were loaded.
    pub async fn warm_session_cache(&self) -> Result<usize, Error> {
        const WITHIN: i64 = 3600;
        let within = WITHIN;
        let max = self.session_policy().cache_warm;
        let cache = &self.inner.session_cache;
        if !cache.is_enabled() || max == 0 {
            return Ok(0);
        }
        let max = max.min(cache.capacity());
        let generation = cache.generation();
        let now = self.now();
        let rows = self
            .store()
            .recent_sessions(now.saturating_sub(within), max)
            .await?;
        let spread = (cache.ttl() / 2).max(1);
        let mut users = Vec::new();
        let mut loaded = 0;
        for (hash, session, user) in rows {
            if now >= session.ends_at() || user.disabled {
                continue;
            }
            let Ok(hash) = <[u8; 32]>::try_from(hash.as_slice()) else {
                continue;
            };
            users.push(user.id);
            let fetched = now - i64::from(u16::from_le_bytes([hash[0], hash[1]])) % spread;
            cache.put(hash, SessionCheck { session, user }, fetched, generation);
            loaded += 1;
        }
        let identities = self
            .store()
            .identities_of_recent_sessions(now.saturating_sub(within), max)
            .await?;
        users.sort_unstable();
        users.dedup();
        put_identities_by_user(cache, &users, identities, now);
        Ok(loaded)
    }

    /// Sessions ended or users changed: forget cached answers here, and
    /// tell every other instance (through the store). `token_hash`: one
    /// session; `None`: everything (rare operator actions).
    pub(crate) async fn sessions_changed(&self, token_hash: Option<&[u8; 32]>) {
        match token_hash {
            Some(h) => self.inner.session_cache.evict(h),
            None => self.inner.session_cache.clear(),
        }
        self.nudge_backchannel_logout();
        let payload = token_hash.map_or_else(|| "all".to_string(), hex);
        if let Err(e) = self.store().announce_sessions_changed(&payload).await {
            tracing::error!(error = %e, "cannot tell other instances that sessions changed");
        }
    }

    /// Apply a change another instance announced (`all` or a token hash
    /// in hex).
    pub fn apply_sessions_changed(&self, payload: &str) {
        let cache = &self.inner.session_cache;
        let hash = (payload.len() == 64)
            .then(|| {
                let mut h = [0u8; 32];
                for (i, b) in h.iter_mut().enumerate() {
                    *b = u8::from_str_radix(payload.get(2 * i..2 * i + 2)?, 16).ok()?;
                }
                Some(h)
            })
            .flatten();
        match hash {
            Some(h) => cache.evict(&h),
            None => cache.clear(),
        }
    }

    /// Turn the session cache on (the invalidation channel listens) or off
    /// (it does not: every check reads the database).
    pub fn set_session_cache(&self, on: bool) {
        self.inner.session_cache.set_enabled(on);
    }

    pub fn session_cache_enabled(&self) -> bool {
        self.inner.session_cache.is_enabled()
    }

    /// Sign out: end the session a token names. `false` if there was none.
    pub async fn revoke_session_token(
        &self,
        token: &str,
        meta: &ClientMeta,
    ) -> Result<bool, Error> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Ok(false);
        }
        match self
            .store()
            .delete_session_by_token_hash(&secret::hash_token(token))
            .await?
        {
            Some(s) => {
                // The protected hosts' sessions handed over from it end too.
                if self.store().delete_child_sessions(s.id).await? > 0 {
                    self.sessions_changed(None).await;
                } else {
                    self.sessions_changed(Some(&secret::hash_token(token)))
                        .await;
                }
                self.audit(
                    "session.revoked",
                    Some(s.user_id),
                    meta,
                    Some(json!({ "session": s.id })),
                )
                .await;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// End one session by its public id (operators, the CLI).
    pub async fn revoke_session(&self, id: Uuid, meta: &ClientMeta) -> Result<(), Error> {
        if !self.store().delete_session(id).await? {
            return Err(Error::NotFound);
        }
        self.sessions_changed(None).await;
        self.audit(
            "session.revoked",
            None,
            meta,
            Some(json!({ "session": id })),
        )
        .await;
        Ok(())
    }

    /// A person ends one of their own sessions by its id; another person's
    /// (or an unknown) id is `NotFound`, and nothing ends.
    pub async fn end_own_session(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        meta: &ClientMeta,
    ) -> Result<(), Error> {
        let own = self
            .list_sessions(Some(user_id), u32::MAX)
            .await?
            .iter()
            .any(|s| s.id == session_id);
        if !own {
            return Err(Error::NotFound);
        }
        self.revoke_session(session_id, meta).await
    }

    /// A person ends every session of theirs but `keep` (the one in use).
    /// Returns how many ended.
    pub async fn end_other_sessions(
        &self,
        user_id: Uuid,
        keep: Uuid,
        meta: &ClientMeta,
    ) -> Result<u64, Error> {
        let mut ended = 0;
        for s in self.list_sessions(Some(user_id), u32::MAX).await? {
            if s.id != keep && self.store().delete_session(s.id).await? {
                ended += 1;
            }
        }
        self.sessions_changed(None).await;
        self.audit(
            "session.revoked_others",
            Some(user_id),
            meta,
            Some(json!({ "count": ended })),
        )
        .await;
        Ok(ended)
    }

    /// End every session of a user. Returns how many ended.
    pub async fn revoke_user_sessions(
        &self,
        user_id: Uuid,
        meta: &ClientMeta,
    ) -> Result<u64, Error> {
        let n = self.store().delete_user_sessions(user_id).await?;
        self.sessions_changed(None).await;
        self.audit(
            "session.revoked_all",
            Some(user_id),
            meta,
            Some(json!({ "count": n })),
        )
        .await;
        Ok(n)
    }

    /// Live sessions, newest first, of one user or of everyone.
    pub async fn list_sessions(
        &self,
        user_id: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Session>, Error> {
        Ok(self
            .store()
            .list_sessions(user_id, self.now(), limit)
            .await?)
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Cache each of `users`' identities from `list` (a user with none in it
/// has none), read at `now`.
fn put_identities_by_user(
    cache: &super::session_cache::SessionCache,
    users: &[Uuid],
    list: Vec<super::Identity>,
    now: super::Timestamp,
) {
    let mut by_user: std::collections::HashMap<Uuid, Vec<super::Identity>> =
        std::collections::HashMap::new();
    for i in list {
        by_user.entry(i.user_id).or_default().push(i);
    }
    for user in users {
        cache.put_identities(*user, by_user.remove(user).unwrap_or_default(), now);
    }
}
