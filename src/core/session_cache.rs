//! Checked sessions kept in memory for a short while (`session.cache_ttl_secs`),
//! so the hot path (a session check per request) does not read the database
//! every time. Correctness comes first:
//! - an entry is used only while its session has not ended (idle and
//!   absolute lifetimes are checked on every use) and is younger than the TTL;
//! - ending a session, disabling or deleting a user evicts at once on this
//!   instance, and is announced to every other instance through the store
//!   (PostgreSQL `NOTIFY`; see `Core::apply_invalidation`);
//! - while that announcement channel is down, the cache is off.
//!
//! Speed without cold misses on the request path: an entry in use past half
//! its TTL is re-read in the background while the cached answer (still
//! younger than the TTL) is given (refresh-ahead), and a starting server
//! loads the sessions seen most recently in one query (warm-up).
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use uuid::Uuid;

use super::sessions::SessionCheck;
use super::{Identity, Timestamp};

const SHARDS: usize = 16;
/// Entries per shard before the shard is emptied (bounded memory: 16 × 8192
/// entries of a few hundred bytes).
const MAX_PER_SHARD: usize = 8192;

struct Entry {
    check: SessionCheck,
    fetched: Timestamp,
    /// A background re-read has been started (one at a time).
    refreshing: bool,
}

type Shard = Mutex<HashMap<[u8; 32], Entry>>;

pub(crate) struct SessionCache {
    shards: Vec<Shard>,
    /// Identities by user (for `/auth/me`-style answers; not used to
    /// authorise anything), with when they were read.
    identities: Mutex<HashMap<Uuid, (Vec<Identity>, Timestamp)>>,
    /// The store's change marker as last seen (SQLite across processes).
    marker: Mutex<Option<(u64, i128)>>,
    ttl: i64,
    enabled: AtomicBool,
    /// Bumped by every eviction: an entry read from the database before an
    /// eviction is not put (it may be the very session just ended).
    generation: AtomicU64,
    /// Entries to re-read in the background, and whether a reader runs.
    refreshes: Mutex<(Vec<[u8; 32]>, bool)>,
}

impl SessionCache {
    pub fn new(ttl: i64) -> Self {
        SessionCache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            marker: Mutex::new(None),
            identities: Mutex::new(HashMap::new()),
            ttl,
            enabled: AtomicBool::new(ttl > 0),
            generation: AtomicU64::new(0),
            refreshes: Mutex::new((Vec::new(), false)),
        }
    }

    /// Another process announced a change (the marker moved): forget all.
    pub fn sync_marker(&self, now: Option<(u64, i128)>) {
        if let Ok(mut seen) = self.marker.lock()
            && *seen != now
        {
            *seen = now;
            self.clear();
        }
    }

    fn shard(&self, hash: &[u8; 32]) -> &Shard {
        &self.shards[hash[0] as usize % SHARDS]
    }

    /// A cached answer younger than the TTL for a session that has not
    /// ended, and whether the caller should re-read it in the background
    /// (past half the TTL; said once per entry).
    pub fn get(&self, hash: &[u8; 32], now: Timestamp) -> Option<(SessionCheck, bool)> {
        if !self.enabled.load(Ordering::Acquire) {
            return None;
        }
        let mut shard = self.shard(hash).lock().ok()?;
        let e = shard.get_mut(hash)?;
        if now - e.fetched >= self.ttl || now >= e.check.session.ends_at() {
            return None;
        }
        let refresh = !e.refreshing && 2 * (now - e.fetched) >= self.ttl;
        e.refreshing |= refresh;
        Some((e.check.clone(), refresh))
    }

    /// Queue an entry for a background re-read; true when the caller must
    /// start the reader.
    pub fn queue_refresh(&self, hash: [u8; 32]) -> bool {
        let Ok(mut q) = self.refreshes.lock() else {
            return false;
        };
        q.0.push(hash);
        !std::mem::replace(&mut q.1, true)
    }

    /// Up to `max` queued re-reads; an empty answer ends the reader.
    pub fn take_refreshes(&self, max: usize) -> Vec<[u8; 32]> {
        let Ok(mut q) = self.refreshes.lock() else {
            return Vec::new();
        };
        let n = q.0.len().min(max);
        let batch: Vec<_> = q.0.drain(..n).collect();
        if batch.is_empty() {
            q.1 = false;
        }
        batch
    }

    /// A re-read was given up: the next use may ask again.
    pub fn refresh_failed(&self, hash: &[u8; 32]) {
        if let Ok(mut shard) = self.shard(hash).lock()
            && let Some(e) = shard.get_mut(hash)
        {
            e.refreshing = false;
        }
    }

    /// The TTL in seconds.
    pub fn ttl(&self) -> i64 {
        self.ttl
    }

    /// Take before reading the database; hand to [`Self::put`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Keep a checked session read at `fetched`, unless anything was evicted
    /// since `generation` was taken (then a re-read in progress for it may
    /// start again on its next use).
    pub fn put(&self, hash: [u8; 32], check: SessionCheck, fetched: Timestamp, generation: u64) {
        if !self.enabled.load(Ordering::Acquire) {
            return;
        }
        if let Ok(mut shard) = self.shard(&hash).lock() {
            // Checked under the shard lock that evictions also take.
            if self.generation.load(Ordering::Acquire) != generation {
                if let Some(e) = shard.get_mut(&hash) {
                    e.refreshing = false;
                }
                return;
            }
            if shard.len() >= MAX_PER_SHARD && !shard.contains_key(&hash) {
                shard.clear();
            }
            shard.insert(
                hash,
                Entry {
                    check,
                    fetched,
                    refreshing: false,
                },
            );
        }
    }

    /// Record a touch in a cached entry (the database was written).
    pub fn touched(&self, hash: &[u8; 32], now: Timestamp) {
        if let Ok(mut shard) = self.shard(hash).lock()
            && let Some(e) = shard.get_mut(hash)
        {
            e.check.session.last_seen_at = now;
        }
    }

    pub fn evict(&self, hash: &[u8; 32]) {
        if let Ok(mut shard) = self.shard(hash).lock() {
            self.generation.fetch_add(1, Ordering::AcqRel);
            shard.remove(hash);
        }
    }

    /// Room left before a shard would be emptied (warm-up stops short of it).
    pub fn capacity(&self) -> usize {
        SHARDS * MAX_PER_SHARD / 2
    }

    pub fn identities(&self, user: Uuid, now: Timestamp) -> Option<Vec<Identity>> {
        if !self.enabled.load(Ordering::Acquire) {
            return None;
        }
        let map = self.identities.lock().ok()?;
        let (list, fetched) = map.get(&user)?;
        (now - fetched < self.ttl).then(|| list.clone())
    }

    /// Whether this user's identities are cached (fresh or not).
    pub fn has_identities(&self, user: Uuid) -> bool {
        self.identities
            .lock()
            .is_ok_and(|map| map.contains_key(&user))
    }

    pub fn put_identities(&self, user: Uuid, list: Vec<Identity>, now: Timestamp) {
        if !self.enabled.load(Ordering::Acquire) {
            return;
        }
        if let Ok(mut map) = self.identities.lock() {
            if map.len() >= SHARDS * MAX_PER_SHARD {
                map.clear();
            }
            map.insert(user, (list, now));
        }
    }

    pub fn evict_identities(&self, user: Uuid) {
        if let Ok(mut map) = self.identities.lock() {
            map.remove(&user);
        }
    }

    pub fn clear(&self) {
        if let Ok(mut map) = self.identities.lock() {
            map.clear();
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        for s in &self.shards {
            if let Ok(mut shard) = s.lock() {
                shard.clear();
            }
        }
    }

    /// Turn the cache off (and empty it) or on again; on only with a TTL.
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on && self.ttl > 0, Ordering::Release);
        if !on {
            self.clear();
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }
}
