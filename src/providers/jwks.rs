//! A provider's signing keys (JWKS), cached. An ID token signed with a key id
//! the cache does not know triggers one re-fetch (the provider may have
//! rotated its keys), but never more than one per `refetch_interval`, so a
//! stream of tokens with made-up key ids cannot turn authgate into a
//! request amplifier against the provider.
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use tokio::sync::{Mutex, RwLock};
use url::Url;

use super::http::Http;
use crate::core::ProviderError;

/// Keys are re-read at most this long after they were fetched.
const MAX_AGE: Duration = Duration::from_secs(3600);

pub struct JwksCache {
    url: Url,
    refetch_interval: Duration,
    keys: RwLock<Option<(JwkSet, Instant)>>,
    /// Serialises fetches, and remembers the last re-fetch an unknown key
    /// id forced.
    last_forced: Mutex<Option<Instant>>,
}

impl JwksCache {
    pub fn new(url: Url, refetch_interval: Duration) -> Self {
        JwksCache {
            url,
            refetch_interval,
            keys: RwLock::new(None),
            last_forced: Mutex::new(None),
        }
    }

    /// The keys that could have signed a token with this header: by `kid`
    /// when the token names one, else every key.
    pub async fn candidates(
        &self,
        http: &Http,
        kid: Option<&str>,
    ) -> Result<Vec<Jwk>, ProviderError> {
        let cached = {
            let keys = self.keys.read().await;
            keys.as_ref()
                .map(|(set, at)| (pick(set, kid), at.elapsed() < MAX_AGE))
        };
        match cached {
            Some((found, true)) if !found.is_empty() => return Ok(found),
            // Known set, unknown key id: maybe rotated. Re-fetch, within
            // the bound.
            Some((_, true)) => self.fetch(http, true).await?,
            // Nothing yet, or too old.
            _ => self.fetch(http, false).await?,
        }
        let keys = self.keys.read().await;
        Ok(keys
            .as_ref()
            .map(|(set, _)| pick(set, kid))
            .unwrap_or_default())
    }

    /// Fetch the key set. A `forced` fetch (for an unknown key id) happens
    /// at most once per `refetch_interval`; a regular one (nothing cached,
    /// or stale) is skipped only if a concurrent caller just did it.
    async fn fetch(&self, http: &Http, forced: bool) -> Result<(), ProviderError> {
        let mut last_forced = self.last_forced.lock().await;
        if forced {
            if last_forced.is_some_and(|at| at.elapsed() < self.refetch_interval) {
                return Ok(());
            }
            *last_forced = Some(Instant::now());
        } else if self
            .keys
            .read()
            .await
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() < MAX_AGE)
        {
            return Ok(());
        }
        let set: JwkSet = http.get_json("jwks", &self.url, None).await?;
        tracing::debug!(url = %self.url, keys = set.keys.len(), "fetched provider signing keys");
        *self.keys.write().await = Some((set, Instant::now()));
        Ok(())
    }
}

fn pick(set: &JwkSet, kid: Option<&str>) -> Vec<Jwk> {
    set.keys
        .iter()
        .filter(|k| match kid {
            Some(kid) => k.common.key_id.as_deref() == Some(kid),
            None => true,
        })
        .cloned()
        .collect()
}
