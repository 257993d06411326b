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
    /// When the last fetch happened (serialises fetches).
    last_fetch: Mutex<Option<Instant>>,
}

impl JwksCache {
    pub fn new(url: Url, refetch_interval: Duration) -> Self {
        JwksCache {
            url,
            refetch_interval,
            keys: RwLock::new(None),
            last_fetch: Mutex::new(None),
        }
    }

    /// The keys that could have signed a token with this header: by `kid`
    /// when the token names one, else every key.
    pub async fn candidates(
        &self,
        http: &Http,
        kid: Option<&str>,
    ) -> Result<Vec<Jwk>, ProviderError> {
        let fresh = {
            let keys = self.keys.read().await;
            keys.as_ref()
                .and_then(|(set, at)| (at.elapsed() < MAX_AGE).then(|| pick(set, kid)))
        };
        match fresh {
            Some(found) if !found.is_empty() => return Ok(found),
            Some(_) => {
                // Unknown key id: maybe rotated. Re-fetch, within the bound.
                self.fetch(http, false).await?;
            }
            None => {
                self.fetch(http, true).await?;
            }
        }
        let keys = self.keys.read().await;
        Ok(keys
            .as_ref()
            .map(|(set, _)| pick(set, kid))
            .unwrap_or_default())
    }

    /// Fetch the key set; `required` fetches regardless of the re-fetch bound
    /// (nothing cached, or the cache is stale).
    async fn fetch(&self, http: &Http, required: bool) -> Result<(), ProviderError> {
        let mut last = self.last_fetch.lock().await;
        if let Some(at) = *last
            && at.elapsed() < self.refetch_interval
        {
            // Someone fetched a moment ago (maybe while this call waited on
            // the lock): use what they got.
            if !required || self.keys.read().await.is_some() {
                return Ok(());
            }
        }
        *last = Some(Instant::now());
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
