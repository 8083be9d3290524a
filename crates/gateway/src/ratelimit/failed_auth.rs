//! Failed authentications per client IP address, in this process.
//!
//! The client's address is the connection's, unless that is a trusted proxy
//! (`rate_limit.trusted_proxies`: a load balancer, chat-memory-mcp): then it is
//! the nearest address of `x-forwarded-for`, read from the right, that is not
//! a trusted proxy. A client can write anything into that header, so only the
//! hops appended by trusted proxies are believed; the first untrusted hop is
//! the client, whatever it claims further left.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::Clock;
use governor::{Quota, RateLimiter};

/// Distinct client addresses tracked before idle ones are forgotten.
const MAX_TRACKED_ADDRESSES: usize = 100_000;

/// Limits calls that fail authentication (missing, malformed, expired, forged
/// token), per client IP address, in this process.
///
/// A client over its budget is answered RESOURCE_EXHAUSTED with a retry-after
/// instead of UNAUTHENTICATED, so a well-behaved one backs off. The token is
/// still checked first (each refusal is still audited as `denied`): that is
/// what keeps callers with valid tokens from ever being slowed by it, even
/// behind the same NAT or load balancer as an attacker; a flood of forged
/// tokens from one address still costs a signature check each (DEBT D-42). It is per replica on purpose:
/// an unauthenticated flood must not turn into writes to the shared NATS store.
pub struct FailedAuthLimiter {
    limiter: governor::DefaultKeyedRateLimiter<IpAddr>,
    trusted_proxies: Vec<ipnet::IpNet>,
}

/// `x-forwarded-for` hops read at most, from the right (a longer chain is a
/// client's invention: the walk stops at the last hop read).
const MAX_FORWARDED_HOPS: usize = 16;

impl FailedAuthLimiter {
    pub fn new(per_minute: u32, trusted_proxies: Vec<ipnet::IpNet>) -> Self {
        let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute)),
            trusted_proxies,
        }
    }

    /// The address a call came from: `peer` (the connection's), or, when
    /// `peer` is a trusted proxy, the nearest `x-forwarded-for` hop from the
    /// right that is not one. A hop that is not an address ends the walk at
    /// the hop before it.
    pub fn client(&self, peer: IpAddr, headers: &http::HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return client;
        }
        // Hop by hop from the right: bytes a client put further left cannot
        // spoil the hops a trusted proxy appended.
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .rev()
            .flat_map(|v| v.as_bytes().rsplit(|b| *b == b','))
            .map(|hop| {
                std::str::from_utf8(hop)
                    .ok()
                    .and_then(|h| parse_hop(h.trim()))
            })
            .take(MAX_FORWARDED_HOPS);
        for hop in hops {
            let Some(ip) = hop else { break };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        client
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// Records one failed authentication from `ip`: `Err(wait)` once its budget is spent.
    ///
    /// # Errors
    /// How long until `ip` may fail again.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        if self.limiter.len() > MAX_TRACKED_ADDRESSES {
            // Addresses whose budget is full again carry no information.
            self.limiter.retain_recent();
        }
        self.limiter.check_key(&ip).map_err(|not_until| {
            not_until.wait_time_from(governor::clock::DefaultClock::default().now())
        })
    }
}

/// A trusted proxy setting: an address (one host) or a CIDR range.
pub fn parse_proxy(raw: &str) -> Option<ipnet::IpNet> {
    let raw = raw.trim();
    raw.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| raw.parse::<IpAddr>().ok().map(ipnet::IpNet::from))
}

/// One `x-forwarded-for` hop: an address, optionally with a port
/// (`203.0.113.7`, `203.0.113.7:4711`, `[2001:db8::1]:4711`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(trusted: &[&str]) -> FailedAuthLimiter {
        let nets = trusted
            .iter()
            .map(|t| parse_proxy(t).expect("valid"))
            .collect();
        FailedAuthLimiter::new(60, nets)
    }

    fn forwarded(values: &[&str]) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        for v in values {
            headers.append("x-forwarded-for", v.parse().expect("header value"));
        }
        headers
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn a_forwarded_address_is_believed_only_from_a_trusted_proxy() {
        let front = limiter(&["10.0.0.0/8"]);
        let claims = forwarded(&["198.51.100.9"]);
        // A client that is not a proxy cannot pick its address.
        assert_eq!(front.client(ip("203.0.113.7"), &claims), ip("203.0.113.7"));
        // A trusted proxy's hop is the client.
        assert_eq!(front.client(ip("10.1.2.3"), &claims), ip("198.51.100.9"));
        // Without the header, the proxy itself.
        assert_eq!(
            front.client(ip("10.1.2.3"), &http::HeaderMap::new()),
            ip("10.1.2.3")
        );
        // Nothing trusted: the header is never read.
        assert_eq!(limiter(&[]).client(ip("10.1.2.3"), &claims), ip("10.1.2.3"));
    }

    #[test]
    fn the_walk_stops_at_the_first_untrusted_hop_from_the_right() {
        let chain = limiter(&["10.0.0.0/8", "192.168.1.1"]);
        // client-invented, real client, front's ingress (trusted) ; the front is the peer.
        let headers = forwarded(&["1.1.1.1, 203.0.113.7", "192.168.1.1"]);
        assert_eq!(chain.client(ip("10.0.0.5"), &headers), ip("203.0.113.7"));
        // Ports and IPv6 forms.
        let headers = forwarded(&["[2001:db8::7]:4711, 203.0.113.8:5000"]);
        assert_eq!(chain.client(ip("10.0.0.5"), &headers), ip("203.0.113.8"));
        let headers = forwarded(&["2001:db8::7"]);
        assert_eq!(chain.client(ip("10.0.0.5"), &headers), ip("2001:db8::7"));
        // Every hop trusted: the leftmost.
        let headers = forwarded(&["10.9.9.9, 192.168.1.1"]);
        assert_eq!(chain.client(ip("10.0.0.5"), &headers), ip("10.9.9.9"));
    }

    #[test]
    fn a_hop_that_is_no_address_ends_the_walk_at_the_proxy_before_it() {
        let chain = limiter(&["10.0.0.0/8"]);
        let headers = forwarded(&["203.0.113.7, unknown, 10.0.0.9"]);
        assert_eq!(chain.client(ip("10.0.0.5"), &headers), ip("10.0.0.9"));
        let headers = forwarded(&["203.0.113.7, "]);
        assert_eq!(chain.client(ip("10.0.0.5"), &headers), ip("10.0.0.5"));
        // A chain longer than anything real stops at the last hop read.
        let long: Vec<String> = (0..40).map(|i| format!("10.0.0.{i}")).collect();
        let headers = forwarded(&[&format!("203.0.113.7, {}", long.join(", "))]);
        let client = chain.client(ip("10.0.0.5"), &headers);
        assert!(
            chain.trusts(client),
            "{client}: the walk gave up inside the trusted chain"
        );
    }

    #[test]
    fn a_proxy_seen_as_an_ipv4_mapped_address_is_still_trusted() {
        let front = limiter(&["10.0.0.0/8"]);
        let claims = forwarded(&["::ffff:198.51.100.9"]);
        assert_eq!(
            front.client(ip("::ffff:10.1.2.3"), &claims),
            ip("198.51.100.9")
        );
        // A byte that is no text further left spoils only its own hop.
        let mut headers = http::HeaderMap::new();
        headers.append(
            "x-forwarded-for",
            http::HeaderValue::from_bytes(b"\xff\xfe, 198.51.100.7").expect("header value"),
        );
        assert_eq!(front.client(ip("10.1.2.3"), &headers), ip("198.51.100.7"));
    }

    #[test]
    fn proxies_are_addresses_or_ranges() {
        assert_eq!(parse_proxy("10.0.0.0/8"), "10.0.0.0/8".parse().ok());
        assert_eq!(parse_proxy(" 10.1.2.3 "), "10.1.2.3/32".parse().ok());
        assert_eq!(parse_proxy("fd00::/8"), "fd00::/8".parse().ok());
        assert_eq!(parse_proxy("mcp-front"), None);
        assert_eq!(parse_proxy("10.0.0.0/33"), None);
    }
}
