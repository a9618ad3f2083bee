//! Outbound address safety for requests runq makes on a user's behalf (webhooks; HTTP tools
//! later): a URL a user typed must not reach the operator's own network (loopback, private
//! ranges, link-local and cloud metadata addresses) unless the operator allows it
//! (`RUNQ_ALLOW_PRIVATE_TARGETS`).
//!
//! A URL is resolved once and every address checked; the caller then connects to exactly the
//! checked addresses (reqwest's `resolve_to_addrs`) and follows no redirects, so neither a second
//! DNS answer nor a redirect can swap in an address that was not checked.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use url::Url;

/// Why a target was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("not a valid absolute URL")]
    Malformed,
    #[error("only http and https URLs are allowed")]
    Scheme,
    #[error("the URL must not carry credentials")]
    Credentials,
    #[error("the host does not resolve")]
    Unresolved,
    #[error("the host resolves to a private, loopback or link-local address ({0})")]
    Private(IpAddr),
}

/// A URL whose host resolved to addresses that passed the check.
#[derive(Debug, Clone)]
pub struct Checked {
    pub url: Url,
    /// The host as written in the URL (what `resolve_to_addrs` is keyed by).
    pub host: String,
    pub addrs: Vec<SocketAddr>,
}

/// Parses `raw` as an http(s) URL without credentials (no network).
pub fn parse(raw: &str) -> Result<Url, Refused> {
    let url = Url::parse(raw.trim()).map_err(|_| Refused::Malformed)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Refused::Scheme);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Refused::Credentials);
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(Refused::Malformed);
    }
    Ok(url)
}

/// Parses and resolves `raw`; refuses it when any address is not public, unless `allow_private`.
pub async fn check(raw: &str, allow_private: bool) -> Result<Checked, Refused> {
    let url = parse(raw)?;
    let host = url.host_str().ok_or(Refused::Malformed)?.to_owned();
    let port = url.port_or_known_default().ok_or(Refused::Malformed)?;
    // `[::1]` is written with brackets in a URL, not in a lookup
    let lookup = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let addrs: Vec<SocketAddr> =
        tokio::net::lookup_host((lookup.as_str(), port)).await.map_err(|_| Refused::Unresolved)?.collect();
    if addrs.is_empty() {
        return Err(Refused::Unresolved);
    }
    if !allow_private && let Some(bad) = addrs.iter().map(SocketAddr::ip).find(|ip| !is_public(*ip)) {
        return Err(Refused::Private(bad));
    }
    Ok(Checked { url, host, addrs })
}

/// Whether `ip` is a globally routable unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // 169.254/16, cloud metadata (169.254.169.254) included
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local, AWS metadata (fd00:ec2::254) included
        || (first & 0xffc0) == 0xfe80 // link-local
        || first == 0x2001 && ip.segments()[1] == 0xdb8 // documentation
        || first == 0x64 && ip.segments()[1] == 0xff9b) // NAT64 can reach private v4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_loopback_link_local_and_metadata_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip} must not be public");
        }
        for ip in ["1.1.1.1", "93.184.216.34", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip} is public");
        }
    }

    #[test]
    fn only_plain_http_urls_parse() {
        assert_eq!(parse("ftp://example.com/").unwrap_err(), Refused::Scheme);
        assert_eq!(parse("https://user:pw@example.com/").unwrap_err(), Refused::Credentials);
        assert_eq!(parse("not a url").unwrap_err(), Refused::Malformed);
        assert!(parse("https://example.com/hooks?x=1").is_ok());
    }

    #[tokio::test]
    async fn loopback_targets_are_refused_unless_allowed() {
        assert!(matches!(check("http://127.0.0.1:9/x", false).await, Err(Refused::Private(_))));
        assert!(matches!(check("http://[::1]:9/x", false).await, Err(Refused::Private(_))));
        assert!(matches!(check("http://localhost:9/x", false).await, Err(Refused::Private(_))));
        let allowed = check("http://127.0.0.1:9/x", true).await.unwrap();
        assert_eq!(allowed.addrs, vec!["127.0.0.1:9".parse().unwrap()]);
    }
}
