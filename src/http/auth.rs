//! Who is asking, and may they: client IP behind trusted proxies, the
//! per-IP rate limit, the shared secret and the IP allowlist.

use std::collections::hash_map::RandomState;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use hashlink::LruCache;
use ipnet::IpNet;
use subtle::ConstantTimeEq;

use crate::config::Secret;

/// The client's address: the socket peer, or, when the peer is a trusted
/// proxy, the rightmost `X-Forwarded-For` entry that is not itself a
/// trusted proxy. A header from anyone else is ignored, so it cannot be
/// forged to pass the allowlist or dodge the rate limit.
pub fn client_ip(peer: IpAddr, forwarded_for: &[&str], trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    if !is_in(peer, trusted) {
        return peer;
    }
    let mut client = peer;
    let hops = forwarded_for
        .iter()
        .flat_map(|h| h.split(','))
        .map(str::trim)
        .rev();
    for hop in hops {
        // Proxies may append "ip:port" or "[v6]:port"; take the address.
        let Some(ip) = parse_hop(hop) else {
            // Garbage in the chain: trust nothing to the left of it.
            break;
        };
        client = ip;
        if !is_in(ip, trusted) {
            break;
        }
    }
    client
}

fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(addr) = hop.parse::<std::net::SocketAddr>() {
        return Some(addr.ip().to_canonical());
    }
    None
}

pub fn is_in(ip: IpAddr, networks: &[IpNet]) -> bool {
    let ip = ip.to_canonical();
    networks.iter().any(|net| net.contains(&ip))
}

/// True when `given` equals one of `secrets`. Every secret is compared in
/// constant time, and all of them are always compared.
pub fn secret_matches(given: &str, secrets: &[Secret]) -> bool {
    let given = given.trim().as_bytes();
    let mut matched = subtle::Choice::from(0);
    for secret in secrets {
        matched |= secret.expose().as_bytes().ct_eq(given);
    }
    matched.into()
}

/// A token bucket per client IP: `per_minute` requests a minute, with
/// bursts up to the same number. At most `BUCKETS` addresses are tracked:
/// a new one replaces the one seen least recently, so memory is bounded
/// (about 1.5 MiB) and each request costs O(1), however many addresses
/// call. The map is keyed with a random SipHash key, so its addresses
/// cannot be chosen to collide.
pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<LruCache<IpAddr, Bucket, RandomState>>,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Addresses tracked at once. An evicted address starts again with a full
/// bucket, so the limit holds exactly for the `BUCKETS` most recent callers.
pub const BUCKETS: usize = 16_384;

impl RateLimiter {
    pub fn new(per_minute: u32) -> RateLimiter {
        RateLimiter {
            per_minute,
            buckets: Mutex::new(LruCache::with_hasher(BUCKETS, RandomState::new())),
        }
    }

    /// Takes a token for `ip`: `Ok` when allowed, else `Err(seconds)` until
    /// the next token.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.per_minute);
        let per_second = capacity / 60.0;
        let now = Instant::now();
        // A poisoned lock only means another thread panicked mid-update;
        // the map is still usable.
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !buckets.contains_key(&ip) {
            // Evicts the least recently seen address when full.
            buckets.insert(
                ip,
                Bucket {
                    tokens: capacity,
                    updated: now,
                },
            );
        }
        let bucket = buckets
            .get_mut(&ip)
            .expect("the bucket was inserted above, under the same lock");
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - bucket.tokens) / per_second).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_networks;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_ignored_from_untrusted_peers() {
        let trusted = parse_networks("10.0.0.0/8").unwrap();
        assert_eq!(
            client_ip(ip("203.0.113.9"), &["1.2.3.4"], &trusted),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn rightmost_untrusted_hop_is_the_client() {
        let trusted = parse_networks("10.0.0.0/8").unwrap();
        // A client forging "1.1.1.1" in front of its real address gains nothing.
        let header = ["1.1.1.1, 198.51.100.7, 10.0.0.2"];
        assert_eq!(
            client_ip(ip("10.0.0.1"), &header, &trusted),
            ip("198.51.100.7")
        );
        assert_eq!(client_ip(ip("10.0.0.1"), &[], &trusted), ip("10.0.0.1"));
        assert_eq!(
            client_ip(ip("10.0.0.1"), &["garbage, 10.0.0.3"], &trusted),
            ip("10.0.0.3")
        );
        assert_eq!(
            client_ip(ip("10.0.0.1"), &["198.51.100.7:4711"], &trusted),
            ip("198.51.100.7")
        );
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.1"), &["2001:db8::1"], &trusted),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn secrets_compare_exactly() {
        let secrets = [Secret::new("old"), Secret::new("new")];
        assert!(secret_matches("new", &secrets));
        assert!(secret_matches(" old ", &secrets));
        assert!(!secret_matches("ne", &secrets));
        assert!(!secret_matches("", &secrets));
        assert!(!secret_matches("x", &[]));
    }

    #[test]
    fn rate_limit_refills() {
        let limiter = RateLimiter::new(2);
        assert!(limiter.check(ip("1.1.1.1")).is_ok());
        assert!(limiter.check(ip("1.1.1.1")).is_ok());
        let wait = limiter.check(ip("1.1.1.1")).unwrap_err();
        assert!((1..=30).contains(&wait), "{wait}");
        assert!(limiter.check(ip("2.2.2.2")).is_ok());
        assert!(RateLimiter::new(0).check(ip("1.1.1.1")).is_ok());
    }

    #[test]
    fn rate_limit_buckets_are_bounded() {
        let limiter = RateLimiter::new(1);
        for n in 0..(BUCKETS as u32 + 1000) {
            assert!(limiter.check(IpAddr::from(n.to_be_bytes())).is_ok());
        }
        let buckets = limiter.buckets.lock().unwrap();
        assert_eq!(buckets.len(), BUCKETS);
        drop(buckets);
        // The most recent address is still limited; the oldest was evicted.
        let last = IpAddr::from((BUCKETS as u32 + 999).to_be_bytes());
        assert!(limiter.check(last).is_err());
        assert!(limiter.check(IpAddr::from(0u32.to_be_bytes())).is_ok());
    }
}
