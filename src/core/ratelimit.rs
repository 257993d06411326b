//! Fixed-window rate limits whose counters live in the database, so a limit
//! holds across every authgate instance behind one load balancer.
use std::net::IpAddr;

use super::Error;
use super::ports::storage::RateHit;

/// At most `max` hits per `window` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    pub max: i64,
    pub window_secs: i64,
}

impl Limit {
    pub const fn new(max: i64, window_secs: i64) -> Self {
        Limit { max, window_secs }
    }
}

/// The windows one request counts against, with their maxima.
pub(crate) struct Windows {
    now: i64,
    pub(crate) hits: Vec<RateHit>,
    pub(crate) maxima: Vec<i64>,
}

impl Windows {
    pub(crate) fn new(now: i64, keys: &[(&str, &[Limit])]) -> Self {
        let mut hits = Vec::new();
        let mut maxima = Vec::new();
        for (key, limits) in keys {
            for l in limits.iter().filter(|l| l.window_secs > 0) {
                let start = now - now.rem_euclid(l.window_secs);
                hits.push(RateHit {
                    key: format!("{key}/{}", l.window_secs),
                    window_start: start,
                    expires_at: start + l.window_secs,
                });
                maxima.push(l.max);
            }
        }
        Windows { now, hits, maxima }
    }

    /// `RateLimited` with the seconds until the longest exceeded window
    /// ends, if any count is over its maximum.
    pub(crate) fn verdict(&self, counts: &[i64]) -> Result<(), Error> {
        let retry_after = self
            .hits
            .iter()
            .zip(&self.maxima)
            .zip(counts)
            .filter(|((_, max), count)| count > max)
            .map(|((h, _), _)| h.expires_at - self.now)
            .max();
        match retry_after {
            Some(secs) => Err(Error::RateLimited {
                retry_after: secs.max(1),
            }),
            None => Ok(()),
        }
    }
}

/// The rate-limit key of a client address: IPv4 as is, IPv6 by its /64
/// (one subscriber usually holds a whole /64).
pub fn ip_key(ip: &str) -> Option<String> {
    match ip.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) => Some(format!("ip:{v4}")),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => Some(format!("ip:{v4}")),
            None => {
                let s = v6.segments();
                Some(format!(
                    "ip:{:x}:{:x}:{:x}:{:x}::/64",
                    s[0], s[1], s[2], s[3]
                ))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_is_limited_per_64() {
        assert_eq!(
            ip_key("2001:db8:1:2:aaaa::1"),
            ip_key("2001:db8:1:2:bbbb::2")
        );
        assert_ne!(ip_key("2001:db8:1:2::1"), ip_key("2001:db8:1:3::1"));
        assert_eq!(ip_key("::ffff:192.0.2.1").as_deref(), Some("ip:192.0.2.1"));
        assert_eq!(ip_key("192.0.2.1").as_deref(), Some("ip:192.0.2.1"));
        assert_eq!(ip_key("nonsense"), None);
    }
}
