//! Who a request comes from, and how many Stripe lookups each client may cause.
//!
//! A customer's landing page costs a Stripe call only until its session is recorded, so an
//! honest browser makes one or two; a client making up ids makes one per request. Each
//! client address gets its own allowance, refilled evenly over the minute.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix_web::HttpRequest;
use actix_web::http::header::HeaderName;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::{IpNet, Ipv6Net};

use crate::configuration::ProxyHeader;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
/// Addresses an IPv6 client is assumed to control: a whole /64 is one client, since an
/// attacker with one such prefix can make up as many addresses in it as it likes.
const IPV6_CLIENT_PREFIX: u8 = 64;
/// How often the allowances of clients that went quiet are forgotten.
pub const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Per-client allowances of Stripe lookups.
pub struct ClientLimits {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    /// Proxies whose forwarded addresses are believed.
    trusted_proxies: Vec<IpNet>,
    /// The header they write them in.
    header: ProxyHeader,
    /// Clients past their allowance, and until when: answered 429 before anything else.
    spent: Mutex<HashMap<IpAddr, Instant>>,
    /// Whether a trusted proxy was seen forwarding no client address (said once).
    warned_unforwarded: AtomicBool,
}

impl ClientLimits {
    /// `per_minute` lookups a client, in a burst of at most a quarter of that; the client
    /// is the peer address, or the one a trusted proxy says it forwarded.
    pub fn new(per_minute: NonZeroU32, trusted_proxies: Vec<IpNet>, header: ProxyHeader) -> Self {
        let burst = NonZeroU32::new(per_minute.get() / 4).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute).allow_burst(burst)),
            trusted_proxies,
            header,
            spent: Mutex::default(),
            warned_unforwarded: AtomicBool::new(false),
        }
    }

    /// The client a request comes from: its peer, unless that peer is a trusted proxy; then
    /// the nearest address the proxies forwarded that is not itself a trusted proxy, read
    /// from the one header they write (`X-Forwarded-For`, or RFC 7239's `Forwarded`): a
    /// client can write the other, and it is never read.
    pub fn client(&self, request: &HttpRequest) -> Option<IpAddr> {
        let peer = request.peer_addr()?.ip();
        if !self.is_trusted(peer) {
            return Some(peer);
        }
        let headers = request.headers();
        // Split as bytes: a byte that is not ASCII in what a client wrote must not cost the
        // whole line, with the entries the proxies appended after it.
        let entries = |name: HeaderName| {
            headers
                .get_all(name)
                .flat_map(|value| value.as_bytes().split(|byte| *byte == b','))
                .map(|hop| std::str::from_utf8(hop).unwrap_or_default().trim())
                .collect::<Vec<_>>()
        };
        let hops: Vec<&str> = match self.header {
            ProxyHeader::XForwardedFor => entries(X_FORWARDED_FOR),
            ProxyHeader::Forwarded => entries(FORWARDED).into_iter().map(forwarded_for).collect(),
        };
        if hops.is_empty() && !self.warned_unforwarded.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                proxy = %peer,
                header = ?self.header,
                "a trusted proxy sent a request without the PROXY_HEADER it should write: \
                 every client behind it shares one allowance and one sign-in throttle"
            );
        }
        // Read from the nearest hop back: each trusted proxy appended the address it saw,
        // anything further left was written by whoever is on the other side of it.
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Some(address) = parse_hop(hop) else { break };
            client = address;
            if !self.is_trusted(address) {
                break;
            }
        }
        Some(client)
    }

    /// Takes one lookup from `client`'s allowance, or says how long until it may make one.
    pub fn admit(&self, client: IpAddr) -> Result<(), Duration> {
        let key = key(client);
        if let Some(wait) = self.spent_for(key) {
            return Err(wait);
        }
        self.limiter.check_key(&key).map_err(|not_until| {
            let wait = not_until
                .wait_time_from(DefaultClock::default().now())
                .max(Duration::from_millis(1));
            self.lock_spent().insert(key, Instant::now() + wait);
            wait
        })
    }

    /// How long `client` must still wait, if it is past its allowance: checked before a
    /// request costs anything at all.
    pub fn spent(&self, client: IpAddr) -> Option<Duration> {
        self.spent_for(key(client))
    }

    /// Forgets the clients whose allowance is full again, so that made-up addresses do not
    /// pile up; call it every [`SWEEP_EVERY`].
    pub fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        let now = Instant::now();
        let mut spent = self.lock_spent();
        spent.retain(|_, until| *until > now);
        spent.shrink_to_fit();
    }

    fn spent_for(&self, key: IpAddr) -> Option<Duration> {
        let until = *self.lock_spent().get(&key)?;
        until.checked_duration_since(Instant::now())
    }

    fn lock_spent(&self) -> MutexGuard<'_, HashMap<IpAddr, Instant>> {
        self.spent
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Whether `address` is one of `TRUSTED_PROXIES`.
    pub fn is_trusted(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.trusted_proxies
            .iter()
            .any(|net| net.contains(&address))
    }
}

/// What a client's allowance is kept under: its address, or for IPv6 its /64.
pub(crate) fn key(client: IpAddr) -> IpAddr {
    match client.to_canonical() {
        IpAddr::V6(v6) => Ipv6Net::new(v6, IPV6_CLIENT_PREFIX)
            .map_or(client, |prefix| IpAddr::V6(prefix.network())),
        v4 => v4,
    }
}

/// The `for=` of one `Forwarded` element (`for=192.0.2.60;proto=https`,
/// `for="[2001:db8::17]:4711"`), unquoted; empty when it has none.
fn forwarded_for(element: &str) -> &str {
    element
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| key.trim().eq_ignore_ascii_case("for"))
        .map_or("", |(_, value)| value.trim().trim_matches('"'))
}

/// One forwarded hop: an address, with a port or in brackets as some proxies write it.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse()
        .ok()
        .or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configuration::parse_proxy;
    use actix_web::test::TestRequest;

    fn limits(trusted: &[&str]) -> ClientLimits {
        let trusted = trusted
            .iter()
            .map(|raw| parse_proxy(raw).unwrap())
            .collect();
        ClientLimits::new(
            NonZeroU32::new(60).unwrap(),
            trusted,
            ProxyHeader::XForwardedFor,
        )
    }

    fn from(peer: &str, forwarded: Option<&str>) -> HttpRequest {
        let mut request = TestRequest::default().peer_addr(peer.parse().unwrap());
        if let Some(forwarded) = forwarded {
            request = request.insert_header(("X-Forwarded-For", forwarded));
        }
        request.to_http_request()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
        let limits = limits(&["10.0.0.0/8"]);
        let spoofed = from("203.0.113.9:5000", Some("198.51.100.1"));
        assert_eq!(limits.client(&spoofed), "203.0.113.9".parse().ok());
        let proxied = from("10.0.0.2:5000", Some("198.51.100.1, 10.0.0.7"));
        assert_eq!(limits.client(&proxied), "198.51.100.1".parse().ok());
        // What the client wrote before the proxies' own entries is not believed.
        let forged = from("10.0.0.2:5000", Some("192.0.2.77, 198.51.100.1"));
        assert_eq!(limits.client(&forged), "198.51.100.1".parse().ok());
        let garbled = from("10.0.0.2:5000", Some("not-an-address"));
        assert_eq!(limits.client(&garbled), "10.0.0.2".parse().ok());
    }

    #[test]
    fn rfc_7239_forwarded_is_read_when_the_proxies_write_it_and_only_then() {
        let trusted = vec![parse_proxy("10.0.0.0/8").unwrap()];
        let limits = ClientLimits::new(
            NonZeroU32::new(60).unwrap(),
            trusted,
            ProxyHeader::Forwarded,
        );
        let request = |peer: &str, forwarded: &str| {
            TestRequest::default()
                .peer_addr(peer.parse().unwrap())
                .insert_header(("Forwarded", forwarded))
                .insert_header(("X-Forwarded-For", "192.0.2.1"))
                .to_http_request()
        };
        let proxied = request(
            "10.0.0.2:5000",
            r#"for=192.0.2.77, for="[2001:db8::17]:4711";proto=https, For=10.0.0.7"#,
        );
        assert_eq!(limits.client(&proxied), "2001:db8::17".parse().ok());
        let spoofed = request("203.0.113.9:5000", "for=198.51.100.1");
        assert_eq!(limits.client(&spoofed), "203.0.113.9".parse().ok());
        let hidden = request("10.0.0.2:5000", "for=_hidden;by=10.0.0.2");
        assert_eq!(limits.client(&hidden), "10.0.0.2".parse().ok());
        // Behind proxies that write X-Forwarded-For, a client's own Forwarded is not read.
        let x_forwarded_for = super::tests::limits(&["10.0.0.0/8"]);
        let chosen = request("10.0.0.2:5000", "for=198.51.100.200");
        assert_eq!(x_forwarded_for.client(&chosen), "192.0.2.1".parse().ok());
    }

    #[test]
    fn a_client_past_its_burst_waits_and_others_do_not() {
        let limits = limits(&[]);
        let client: IpAddr = "198.51.100.1".parse().unwrap();
        for _ in 0..15 {
            assert_eq!(limits.admit(client), Ok(()));
        }
        let wait = limits.admit(client).expect_err("the burst is 15");
        assert!(wait <= Duration::from_secs(1), "{wait:?} at 60 a minute");
        assert_eq!(limits.admit("198.51.100.2".parse().unwrap()), Ok(()));
    }

    #[test]
    fn an_ipv6_client_is_its_whole_prefix() {
        let limits = limits(&[]);
        for n in 0..15 {
            let address: IpAddr = format!("2001:db8::{n:x}").parse().unwrap();
            assert_eq!(limits.admit(address), Ok(()));
        }
        assert!(limits.admit("2001:db8::ffff".parse().unwrap()).is_err());
        assert_eq!(limits.admit("2001:db8:0:1::1".parse().unwrap()), Ok(()));
    }
}
