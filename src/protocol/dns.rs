//! DNS for `--domain`: a resolver (the system's or `--resolver IP:PORT`), MX and
//! address lookups bounded in time, and how a question that gave no records ended.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};

/// How a DNS question ended, when it did not give records.
#[derive(Debug)]
pub(crate) enum DnsFailure {
    /// The name does not exist.
    NxDomain,
    /// The name exists but has no record of that type.
    NoRecords,
    /// The server answered with an error (SERVFAIL, REFUSED, ...).
    Answered(String),
    /// No usable answer at all (timeout, nothing listening): the check cannot run.
    Unreachable(String),
}

pub(crate) fn classify(err: &NetError) -> DnsFailure {
    if err.is_nx_domain() {
        return DnsFailure::NxDomain;
    }
    if err.is_no_records_found() {
        return DnsFailure::NoRecords;
    }
    match err {
        NetError::Dns(DnsError::ResponseCode(code)) => {
            let mnemonic = match u16::from(*code) {
                1 => "FORMERR",
                2 => "SERVFAIL",
                4 => "NOTIMP",
                5 => "REFUSED",
                _ => "error",
            };
            DnsFailure::Answered(format!("the DNS server answered {mnemonic} ({code})"))
        }
        NetError::Dns(other) => DnsFailure::Answered(other.to_string()),
        other => DnsFailure::Unreachable(other.to_string()),
    }
}

/// Parse `--resolver`: `IP:PORT`, `[IPv6]:PORT` or a bare IP (port 53).
pub(crate) fn parse_resolver(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = text.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    Err(format!(
        "--resolver {text:?} is not an address: write IP:PORT, e.g. 127.0.0.1:5353 or [::1]:53"
    ))
}

pub(crate) fn build_resolver(
    server: Option<SocketAddr>,
    timeout: Duration,
) -> Result<TokioResolver, String> {
    let mut builder = match server {
        Some(addr) => {
            let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
            for c in &mut ns.connections {
                c.port = addr.port();
            }
            Resolver::builder_with_config(
                ResolverConfig::from_parts(None, vec![], vec![ns]),
                TokioRuntimeProvider::default(),
            )
        }
        None => TokioResolver::builder_tokio().map_err(|e| {
            format!("cannot read the system DNS configuration: {e}; give --resolver IP:PORT")
        })?,
    };
    let opts = builder.options_mut();
    opts.timeout = timeout;
    opts.attempts = 2;
    opts.ip_strategy = hickory_resolver::config::LookupIpStrategy::Ipv4AndIpv6;
    builder
        .build()
        .map_err(|e| format!("cannot set up the DNS resolver: {e}"))
}

pub(crate) fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

/// Bound on one DNS question, whatever the resolver's own retries do.
pub(crate) fn lookup_limit(per_try: Duration) -> Duration {
    per_try * 3 + Duration::from_secs(1)
}

/// The exchangers of `domain` in preference order, or why there are none.
pub(crate) async fn lookup_mx(
    resolver: &TokioResolver,
    domain: &str,
    limit: Duration,
) -> Result<Vec<(u16, String)>, DnsFailure> {
    let lookup = tokio::time::timeout(limit, resolver.mx_lookup(fqdn(domain)))
        .await
        .map_err(|_| DnsFailure::Unreachable("no answer in time".into()))?
        .map_err(|e| classify(&e))?;
    let mut mx: Vec<(u16, String)> = lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::MX(mx) if mx.exchange.is_root() => Some((mx.preference, ".".to_string())),
            RData::MX(mx) => Some((
                mx.preference,
                mx.exchange.to_utf8().trim_end_matches('.').to_string(),
            )),
            _ => None,
        })
        .collect();
    if mx.is_empty() {
        return Err(DnsFailure::NoRecords);
    }
    mx.sort_by_key(|(pref, _)| *pref); // stable: equal preferences keep DNS order
    Ok(mx)
}

/// Addresses of `host`, IPv4 first.
pub(crate) async fn lookup_addresses(
    resolver: &TokioResolver,
    host: &str,
    limit: Duration,
) -> Result<Vec<IpAddr>, DnsFailure> {
    let lookup = tokio::time::timeout(limit, resolver.lookup_ip(fqdn(host)))
        .await
        .map_err(|_| DnsFailure::Unreachable("no answer in time".into()))?
        .map_err(|e| classify(&e))?;
    let mut ips: Vec<IpAddr> = lookup.iter().collect();
    ips.sort_by_key(|ip| ip.is_ipv6());
    ips.dedup();
    if ips.is_empty() {
        return Err(DnsFailure::NoRecords);
    }
    Ok(ips)
}

pub(crate) fn is_null_mx(mx: &[(u16, String)]) -> bool {
    // RFC 7505: a single MX whose exchange is the root.
    mx.len() == 1 && matches!(mx[0].1.as_str(), "." | "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolver_addresses() {
        assert_eq!(
            parse_resolver("127.0.0.1:5353").unwrap(),
            "127.0.0.1:5353".parse().unwrap()
        );
        assert_eq!(
            parse_resolver("[::1]:53").unwrap(),
            "[::1]:53".parse().unwrap()
        );
        assert_eq!(parse_resolver("10.0.0.1").unwrap().port(), 53);
        assert!(parse_resolver("dns.example.com").is_err());
    }

    #[test]
    fn null_mx_is_a_single_root_exchange() {
        assert!(is_null_mx(&[(0, ".".into())]));
        assert!(!is_null_mx(&[
            (0, ".".into()),
            (10, "mx.example.com".into())
        ]));
        assert!(!is_null_mx(&[(10, "mx.example.com".into())]));
    }
}
