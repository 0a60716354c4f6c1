//! Where webhooks may be sent: http(s) URLs whose every resolved address is public.
//!
//! A webhook URL is chosen by an API user, and the server sends requests to it from inside
//! its own network. Checking the URL text is not enough (a public name can resolve to
//! 127.0.0.1, and DNS can change between a check and the request), so the delivery client
//! resolves names through [`GuardedResolver`] and connects only to addresses that passed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("url is not a valid absolute URL")]
    Invalid,
    #[error("url must use http or https")]
    Scheme,
    #[error("url must not contain a user name or password")]
    Credentials,
    #[error("url must have a host name or address")]
    NoHost,
    #[error(
        "url resolves to {0}, a loopback, private, link-local or otherwise non-public address (set WAMUX_WEBHOOK_ALLOW_PRIVATE=true to allow)"
    )]
    Forbidden(IpAddr),
    #[error("url host {0} could not be resolved: {1}")]
    Resolve(String, String),
}

/// Checks the URL's form: absolute http(s), with a host and no credentials.
pub fn parse_url(text: &str) -> Result<Url, UrlError> {
    let url = Url::parse(text.trim()).map_err(|_| UrlError::Invalid)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UrlError::Scheme);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::Credentials);
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(UrlError::NoHost);
    }
    Ok(url)
}

/// Parses the URL, resolves its host and refuses it when any address is not public (unless
/// `allow_private`). Used when a webhook is set and before each delivery to a literal address.
pub async fn vet_url(text: &str, allow_private: bool) -> Result<Url, UrlError> {
    let url = parse_url(text)?;
    if allow_private {
        return Ok(url);
    }
    match literal_ip(&url) {
        Some(ip) => check_ip(ip)?,
        None => {
            resolve_public(url.host_str().ok_or(UrlError::NoHost)?).await?;
        }
    }
    Ok(url)
}

/// The address when the URL's host is an IP literal (`[::1]` included). Such hosts never reach
/// the resolver, so they are checked on their own.
pub fn literal_ip(url: &Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

pub fn check_ip(ip: IpAddr) -> Result<(), UrlError> {
    if is_public(ip) {
        Ok(())
    } else {
        Err(UrlError::Forbidden(ip))
    }
}

/// Resolves a name and returns its addresses only if every one of them is public: a name with
/// one private address among public ones is refused whole, rather than trusting luck.
async fn resolve_public(name: &str) -> Result<Vec<SocketAddr>, UrlError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name, 0))
        .await
        .map_err(|e| UrlError::Resolve(name.to_owned(), e.to_string()))?
        .collect();
    if addrs.is_empty() {
        return Err(UrlError::Resolve(name.to_owned(), "no addresses".into()));
    }
    for addr in &addrs {
        check_ip(addr.ip())?;
    }
    Ok(addrs)
}

/// The delivery client's resolver: connections go only to the addresses vetted here.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs = if allow_private {
                tokio::net::lookup_host((host.as_str(), 0))
                    .await
                    .map_err(|e| UrlError::Resolve(host.clone(), e.to_string()))?
                    .collect()
            } else {
                resolve_public(&host).await?
            };
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

impl GuardedResolver {
    pub fn shared(allow_private: bool) -> Arc<Self> {
        Arc::new(Self { allow_private })
    }
}

/// True for addresses on the public internet. Everything that reaches the host itself, its
/// LAN, carrier NAT, multicast or a reserved range is not.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let forbidden = ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT 100.64/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking 198.18/15
        || a >= 240; // reserved
    !forbidden
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    // Addresses that embed an IPv4 one are judged by it: ::ffff:127.0.0.1 is loopback.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let seg = ip.segments();
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) reach the embedded IPv4 address.
    if seg[0..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_public_v4(Ipv4Addr::from(((seg[6] as u32) << 16) | seg[7] as u32));
    }
    if seg[0] == 0x2002 {
        return is_public_v4(Ipv4Addr::from(((seg[1] as u32) << 16) | seg[2] as u32));
    }
    let forbidden = ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (seg[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (seg[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (seg[0] & 0xffc0) == 0xfec0 // old site-local fec0::/10
        || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
        || (seg[0] == 0x2001 && seg[1] == 0) // Teredo tunnels to arbitrary IPv4
        || seg[0..6] == [0, 0, 0, 0, 0, 0]; // IPv4-compatible (deprecated), ::/96
    !forbidden
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(s: &str) -> bool {
        is_public(s.parse().unwrap())
    }

    #[test]
    fn refuses_non_public_addresses() {
        for ip in [
            "127.0.0.1",
            "127.5.5.5",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.254",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
        ] {
            assert!(!public(ip), "{ip} must be refused");
        }
    }

    #[test]
    fn accepts_public_addresses() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(public(ip), "{ip} must be accepted");
        }
    }

    #[test]
    fn checks_the_url_form() {
        assert_eq!(parse_url("ftp://example.com/x"), Err(UrlError::Scheme));
        assert_eq!(parse_url("not a url"), Err(UrlError::Invalid));
        assert_eq!(
            parse_url("http://u:p@example.com/"),
            Err(UrlError::Credentials)
        );
        assert!(parse_url("https://example.com/hook").is_ok());
    }

    #[tokio::test]
    async fn vets_literals_and_names_without_connecting() {
        for url in [
            "http://127.0.0.1:9/x",
            "http://10.0.0.1/x",
            "http://169.254.169.254/latest",
            "http://[::1]:9/",
            "http://[::ffff:7f00:1]/",
            "http://localhost:9/",
        ] {
            assert!(
                matches!(vet_url(url, false).await, Err(UrlError::Forbidden(_))),
                "{url} must be refused"
            );
            assert!(vet_url(url, true).await.is_ok());
        }
    }
}
