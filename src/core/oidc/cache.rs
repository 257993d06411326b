//! Answers of userinfo kept in memory for a few seconds
//! (`oidc.userinfo_cache_secs`), so that a relying party asking on every
//! request costs no database read. Revocations made here evict at once;
//! anywhere else (another process) they are seen after at most the cache's
//! lifetime. Used on SQLite only: several PostgreSQL instances would not
//! hear each other's revocations.
use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::Value;
use uuid::Uuid;

use crate::core::Timestamp;

/// More entries than this and the cache starts over (a bound on memory).
const MAX_ENTRIES: usize = 100_000;

#[derive(Default)]
pub(crate) struct UserinfoCache {
    map: Mutex<HashMap<[u8; 32], Entry>>,
}

struct Entry {
    claims: Value,
    grant: Uuid,
    user: Uuid,
    until: Timestamp,
}

impl UserinfoCache {
    pub(crate) fn get(&self, hash: &[u8; 32], now: Timestamp) -> Option<Value> {
        let map = self.map.lock().ok()?;
        map.get(hash)
            .filter(|e| now < e.until)
            .map(|e| e.claims.clone())
    }

    pub(crate) fn put(
        &self,
        hash: [u8; 32],
        claims: Value,
        grant: Uuid,
        user: Uuid,
        until: Timestamp,
    ) {
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
            map.insert(
                hash,
                Entry {
                    claims,
                    grant,
                    user,
                    until,
                },
            );
        }
    }

    pub(crate) fn forget_token(&self, hash: &[u8]) {
        if let (Ok(mut map), Ok(key)) = (self.map.lock(), <[u8; 32]>::try_from(hash)) {
            map.remove(&key);
        }
    }

    pub(crate) fn forget_grant(&self, grant: Uuid) {
        if let Ok(mut map) = self.map.lock() {
            map.retain(|_, e| e.grant != grant);
        }
    }

    pub(crate) fn forget_user(&self, user: Uuid) {
        if let Ok(mut map) = self.map.lock() {
            map.retain(|_, e| e.user != user);
        }
    }

    /// Forget everything (a client was deleted: its grants are revoked).
    pub(crate) fn clear(&self) {
        if let Ok(mut map) = self.map.lock() {
            map.clear();
        }
    }
}
