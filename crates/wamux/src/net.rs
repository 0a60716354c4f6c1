//! Who is on the other end of a request: the socket's peer address, and — only when that
//! peer is a trusted proxy (`WAMUX_TRUSTED_PROXIES`) — what it says in `X-Forwarded-For`,
//! `X-Forwarded-Proto` and `X-Forwarded-Host`. Anyone else could write those headers, so
//! from other peers they are ignored.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use axum::serve::IncomingStream;

/// The TCP peer of a connection, for `ConnectInfo`. Our own type so that both the plain
/// and the TLS listener can provide it.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

impl axum::extract::connect_info::Connected<IncomingStream<'_, tokio::net::TcpListener>>
    for PeerAddr
{
    fn connect_info(stream: IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<IncomingStream<'_, crate::tls::TlsListener>>
    for PeerAddr
{
    fn connect_info(stream: IncomingStream<'_, crate::tls::TlsListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// A parsed list of trusted proxy addresses and networks.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// Parses `10.0.0.1`, `10.0.0.0/8`, `::1`, `fd00::/8`; the error names the bad entry.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let mut nets = Vec::new();
        for e in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let (ip, len) = match e.split_once('/') {
                Some((ip, len)) => (ip, Some(len)),
                None => (e, None),
            };
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| format!("`{e}` is not an IP address or CIDR"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let len = match len {
                Some(l) => l
                    .parse::<u8>()
                    .ok()
                    .filter(|l| *l <= max)
                    .ok_or_else(|| format!("`{e}` has an invalid prefix length"))?,
                None => max,
            };
            nets.push((ip, len));
        }
        Ok(Self(nets))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|&(net, len)| match (canonical(net), ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(&n.octets(), &a.octets(), len),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(&n.octets(), &a.octets(), len),
            _ => false,
        })
    }
}

/// `::ffff:1.2.3.4` is 1.2.3.4 (dual-stack sockets report IPv4 peers that way).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn prefix_eq(a: &[u8], b: &[u8], len: u8) -> bool {
    let (full, rest) = ((len / 8) as usize, len % 8);
    if a[..full] != b[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    a[full] & mask == b[full] & mask
}

/// What we know about the client of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientInfo {
    /// The client's address: the peer, or the first untrusted hop of `X-Forwarded-For`.
    pub ip: Option<IpAddr>,
    /// `https` or `http`, as the client used it.
    pub proto: Option<String>,
    /// The host name the client asked for.
    pub host: Option<String>,
}

impl ClientInfo {
    /// Resolves the client from the socket peer and the headers, believing the forwarded
    /// headers only when the peer is trusted.
    pub fn resolve(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &TrustedProxies) -> Self {
        let own_host = header(headers, "host");
        let Some(peer) = peer else {
            return Self {
                ip: None,
                proto: None,
                host: own_host,
            };
        };
        if !trusted.contains(peer) {
            return Self {
                ip: Some(peer),
                proto: None,
                host: own_host,
            };
        }
        // Walk X-Forwarded-For from the right: each trusted hop vouches for the one before.
        let mut ip = peer;
        let hops: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|h| h.trim().parse().ok())
            .collect();
        for hop in hops.into_iter().rev() {
            ip = hop;
            if !trusted.contains(hop) {
                break;
            }
        }
        let first = |name: &str| {
            header(headers, name)
                .and_then(|v| v.split(',').next().map(|s| s.trim().to_owned()))
                .filter(|s| !s.is_empty())
        };
        Self {
            ip: Some(ip),
            proto: first("x-forwarded-proto")
                .map(|p| p.to_ascii_lowercase())
                .filter(|p| p == "http" || p == "https"),
            host: first("x-forwarded-host")
                .filter(|h| h.bytes().all(|b| b.is_ascii_graphic()))
                .or(own_host),
        }
    }

    /// The base URL the client used (`https://api.example.com`), when known; the default for
    /// links handed out when `WAMUX_PUBLIC_URL` is not set.
    pub fn base_url(&self, default_scheme: &str) -> Option<String> {
        let host = self.host.as_deref()?;
        let scheme = self.proto.as_deref().unwrap_or(default_scheme);
        Some(format!("{scheme}://{host}"))
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn parses_and_matches_cidrs() {
        let t =
            TrustedProxies::parse(&["127.0.0.1".into(), "10.0.0.0/8".into(), "fd00::/8".into()])
                .unwrap();
        assert!(t.contains("127.0.0.1".parse().unwrap()));
        assert!(t.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(t.contains("10.200.3.4".parse().unwrap()));
        assert!(!t.contains("11.0.0.1".parse().unwrap()));
        assert!(t.contains("fd12::1".parse().unwrap()));
        assert!(!t.contains("fe80::1".parse().unwrap()));
        assert!(TrustedProxies::parse(&["10.0.0.0/33".into()]).is_err());
        assert!(TrustedProxies::parse(&["nginx".into()]).is_err());
    }

    #[test]
    fn forwarded_headers_only_from_trusted_peers() {
        let t = TrustedProxies::parse(&["127.0.0.1".into()]).unwrap();
        let h = headers(&[
            ("host", "127.0.0.1:3000"),
            ("x-forwarded-for", "6.6.6.6, 203.0.113.9"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "api.example.com"),
        ]);
        let via_proxy = ClientInfo::resolve(Some("127.0.0.1".parse().unwrap()), &h, &t);
        // The proxy vouches for its own peer only; the spoofable left part is not taken.
        assert_eq!(via_proxy.ip, Some("203.0.113.9".parse().unwrap()));
        assert_eq!(
            via_proxy.base_url("http").as_deref(),
            Some("https://api.example.com")
        );
        let direct = ClientInfo::resolve(Some("198.51.100.7".parse().unwrap()), &h, &t);
        assert_eq!(direct.ip, Some("198.51.100.7".parse().unwrap()));
        assert_eq!(
            direct.base_url("http").as_deref(),
            Some("http://127.0.0.1:3000")
        );
    }
}
