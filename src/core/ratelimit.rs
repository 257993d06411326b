//! Fixed-window rate limits whose counters live in the database, so a limit
//! holds across every authgate instance behind one load balancer.
use std::net::IpAddr;

use super::{Core, Error};

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

impl Core {
    /// Count one hit of `key` against every limit; `RateLimited` with the
    /// seconds until the exceeded window ends if any is over.
    pub async fn hit_rate_limits(&self, key: &str, limits: &[Limit]) -> Result<(), Error> {
        let now = self.now();
        let mut retry_after = 0;
        for l in limits.iter().filter(|l| l.window_secs > 0) {
            let start = now - now.rem_euclid(l.window_secs);
            let end = start + l.window_secs;
            let window_key = format!("{key}/{}", l.window_secs);
            let count = self.store().rate_limit_hit(&window_key, start, end).await?;
            if count > l.max {
                retry_after = retry_after.max(end - now);
            }
        }
        if retry_after > 0 {
            Err(Error::RateLimited { retry_after })
        } else {
            Ok(())
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
