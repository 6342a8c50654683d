//! `--domain`: probe a mail domain the way a sending MTA reaches it.
//!
//! 1. Look up the domain's MX records (hickory-resolver; `--resolver IP:PORT` or the
//!    system resolver), in preference order. No MX: the domain's own A/AAAA is the
//!    implicit MX (RFC 5321 5.1), and the report says so. A null MX (`0 .`, RFC
//!    7505) means the domain accepts no mail. NXDOMAIN or a DNS error answer is a
//!    failing `dns_failed` diagnosis; a resolver that does not answer at all means
//!    the check could not run (exit 3).
//! 2. Resolve each exchanger's addresses and check SMTP on it (port 25 or
//!    `--mx-port`): connect to the address, greeting, EHLO, STARTTLS when offered
//!    (TLS verifies the MX *name*, not the IP), MAIL FROM, RCPT TO `--to`, then RSET
//!    and QUIT. No message is sent there and no AUTH is used.
//! 3. The ladder goes through the first exchanger that answered: SMTP only, or end
//!    to end when `--imap`/`--pop3` are given. Its report gets an `mx` section with
//!    every exchanger's result, and diagnosis adds `mx_unreachable` for the ones
//!    that failed.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};
use serde::{Deserialize, Serialize};
use tokio::io::BufReader;

use crate::cli::CheckArgs;
use crate::config::{self, Settings};
use crate::diagnosis::{self, Code, Diagnosis, Severity};
use crate::endpoint::{Endpoint, Security, StarttlsPolicy};
use crate::error::{ErrorKind, ProbeError, ProbeResult};
use crate::phase::{Phase, PhaseClock, Protocol, millis};
use crate::prober::smtp::{establish, exchange, smtp_result};
use crate::prober::{Context, ProtocolResult};
use crate::reply::Reply;
use crate::report::{Cleanup, Report};
use crate::tls::TlsInfo;

/// SMTP port of an MX unless `--mx-port` says otherwise.
pub const DEFAULT_MX_PORT: u16 = 25;
/// Most exchangers checked (a domain with more is unusual; the rest are listed unchecked).
const MAX_EXCHANGERS: usize = 10;
/// Most addresses tried per exchanger.
const MAX_ADDRESSES: usize = 4;

/// The `mx` section of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MxReport {
    pub domain: String,
    /// Where the exchangers came from.
    pub source: MxSource,
    /// The DNS server asked (`system` for the system resolver).
    pub resolver: String,
    /// Something the reader should know, e.g. the implicit-MX fallback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Why DNS gave no usable answer (NXDOMAIN, SERVFAIL, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_error: Option<String>,
    /// In preference order.
    pub exchangers: Vec<Exchanger>,
    /// The exchanger the ladder (`messages`) went through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MxSource {
    /// MX records.
    Mx,
    /// No MX record: the domain's own A/AAAA (RFC 5321 5.1).
    Implicit,
    /// `MX 0 .`: the domain accepts no mail (RFC 7505).
    NullMx,
    /// NXDOMAIN, an error answer, or neither MX nor address records.
    DnsFailed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exchanger {
    pub host: String,
    pub preference: u16,
    pub addresses: Vec<IpAddr>,
    /// The address the SMTP check reached (or tried last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    /// The SMTP check: `ok` when the recipient was accepted; phases, reply, error, tls.
    pub smtp: ProtocolResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub banner: Option<String>,
}

impl Exchanger {
    /// The exchanger answered SMTP (greeting received), whatever came after.
    pub fn reachable(&self) -> bool {
        self.smtp.phases_ms.contains_key(&Phase::Greeting)
    }
}

/// How a DNS question ended, when it did not give records.
#[derive(Debug)]
enum DnsFailure {
    /// The name does not exist.
    NxDomain,
    /// The name exists but has no record of that type.
    NoRecords,
    /// The server answered with an error (SERVFAIL, REFUSED, ...).
    Answered(String),
    /// No usable answer at all (timeout, nothing listening): the check cannot run.
    Unreachable(String),
}

fn classify(err: &NetError) -> DnsFailure {
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
pub fn parse_resolver(text: &str) -> Result<SocketAddr, String> {
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

fn build_resolver(server: Option<SocketAddr>, timeout: Duration) -> Result<TokioResolver, String> {
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

fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

/// Bound on one DNS question, whatever the resolver's own retries do.
fn lookup_limit(per_try: Duration) -> Duration {
    per_try * 3 + Duration::from_secs(1)
}

/// The exchangers of `domain` in preference order, or why there are none.
async fn lookup_mx(
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
async fn lookup_addresses(
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

fn is_null_mx(mx: &[(u16, String)]) -> bool {
    // RFC 7505: a single MX whose exchange is the root.
    mx.len() == 1 && matches!(mx[0].1.as_str(), "." | "")
}

/// Run `mailprobe check --domain`: DNS, SMTP on every exchanger, then the ladder
/// through the first reachable one. `Err` is a could-not-run error (exit 3).
pub async fn run_domain_check(args: &CheckArgs) -> Result<Report, String> {
    let started_at = SystemTime::now();
    let started = Instant::now();
    let domain = args
        .domain
        .as_deref()
        .unwrap_or_default()
        .trim()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if domain.is_empty()
        || domain.contains(|c: char| c.is_whitespace() || "@/:[]".contains(c))
        || !domain.contains('.')
    {
        return Err(format!(
            "--domain {domain:?} is not a mail domain like example.com"
        ));
    }
    let port = args.mx_port.unwrap_or(DEFAULT_MX_PORT);
    let resolver_addr = args.resolver.as_deref().map(parse_resolver).transpose()?;

    // Validate everything else before asking DNS; SMTP to an MX has no AUTH.
    let mut base_args = args.clone();
    base_args.domain = None;
    base_args.no_smtp_auth = true;
    base_args.smtp = Some(format!("smtp://{domain}:{port}"));
    if !retrieval_configured(args)? {
        base_args.smtp_only = true;
    }
    let base = config::resolve(&base_args)?;

    let per_try = base.timeouts.connect.min(Duration::from_secs(5));
    let limit = lookup_limit(per_try);
    let resolver = build_resolver(resolver_addr, per_try)?;
    let mut mx = MxReport {
        domain: domain.clone(),
        source: MxSource::Mx,
        resolver: resolver_addr.map_or_else(|| "system".to_string(), |a| a.to_string()),
        note: None,
        dns_error: None,
        exchangers: Vec::new(),
        used: None,
    };
    let unreachable = |why: String| {
        format!(
            "cannot ask DNS about {domain} ({}): {why}; check the resolver (--resolver IP:PORT) and the network",
            mx.resolver
        )
    };

    let hosts: Vec<(u16, String)> = match lookup_mx(&resolver, &domain, limit).await {
        Ok(list) if is_null_mx(&list) => {
            mx.source = MxSource::NullMx;
            Vec::new()
        }
        Ok(list) => list
            .into_iter()
            .filter(|(_, h)| !matches!(h.as_str(), "." | ""))
            .collect(),
        Err(DnsFailure::NoRecords) => {
            mx.source = MxSource::Implicit;
            mx.note = Some(format!(
                "{domain} has no MX record: mail goes to the domain's own address (A/AAAA), as RFC 5321 section 5.1 says"
            ));
            vec![(0, domain.clone())]
        }
        Err(DnsFailure::NxDomain) => {
            mx.source = MxSource::DnsFailed;
            mx.dns_error = Some(format!("{domain} does not exist in DNS (NXDOMAIN)"));
            Vec::new()
        }
        Err(DnsFailure::Answered(why)) => {
            mx.source = MxSource::DnsFailed;
            mx.dns_error = Some(format!("the MX lookup for {domain} failed: {why}"));
            Vec::new()
        }
        Err(DnsFailure::Unreachable(why)) => return Err(unreachable(why)),
    };

    let ctx = Context::new(base.clone()).map_err(|e| e.to_string())?;
    for (preference, host) in hosts.into_iter().take(MAX_EXCHANGERS) {
        let mut ex = Exchanger {
            host: host.clone(),
            preference,
            addresses: Vec::new(),
            address: None,
            smtp: ProtocolResult::default(),
            banner: None,
        };
        match lookup_addresses(&resolver, &host, limit).await {
            Ok(ips) => {
                ex.addresses = ips;
                check_exchanger(&ctx, &mut ex, port).await;
            }
            Err(DnsFailure::Unreachable(why)) => return Err(unreachable(why)),
            Err(failure) => {
                let why = match failure {
                    DnsFailure::NxDomain => format!("{host} does not exist in DNS (NXDOMAIN)"),
                    DnsFailure::Answered(why) => format!("address lookup for {host}: {why}"),
                    _ => format!("{host} has no address (A/AAAA) record"),
                };
                ex.smtp = ProtocolResult::failed(
                    ProbeError::new(ErrorKind::Network, why).at(Protocol::Smtp, Phase::Connect),
                    Default::default(),
                );
                ex.smtp.accepted = Some(false);
            }
        }
        mx.exchangers.push(ex);
    }
    if mx.source == MxSource::Implicit && mx.exchangers.iter().all(|e| e.addresses.is_empty()) {
        mx.source = MxSource::DnsFailed;
        mx.dns_error = Some(format!(
            "{domain} has neither MX nor address (A/AAAA) records: mail to it cannot be delivered"
        ));
        mx.note = None;
        mx.exchangers.clear();
    }

    let thresholds = base.thresholds;
    let chosen = mx.exchangers.iter().find(|e| e.reachable()).cloned();
    let mut report = match chosen {
        Some(ex) => {
            let mut run_args = base_args.clone();
            run_args.smtp = Some(format!("smtp://{}:{port}", ex.host));
            let mut settings = config::resolve(&run_args)?;
            settings.smtp.connect_to = ex.address;
            mx.used = Some(ex.host.clone());
            crate::check::run_check(settings)
                .await
                .map_err(|e| e.to_string())?
        }
        None => empty_report(&base, started_at, started),
    };
    report.mx = Some(mx);
    diagnosis::apply(&mut report, &thresholds);
    Ok(report)
}

/// Whether IMAP or POP3 is configured (flags or profile) and not turned off.
fn retrieval_configured(args: &CheckArgs) -> Result<bool, String> {
    if args.smtp_only {
        return Ok(false);
    }
    if args.imap.is_some() || args.pop3.is_some() {
        return Ok(true);
    }
    Ok(match &args.profile {
        Some(path) => {
            let p = config::Profile::load(path)?;
            p.imap.is_some() || p.pop3.is_some()
        }
        None => false,
    })
}

/// A report without messages: DNS gave no exchanger, or none answered.
fn empty_report(s: &Settings, started_at: SystemTime, started: Instant) -> Report {
    Report::new(s, started_at, started, Vec::new(), Cleanup::default())
}

/// Check SMTP on one exchanger: its addresses in turn until one answers.
async fn check_exchanger(ctx: &Context, ex: &mut Exchanger, port: u16) {
    let started = Instant::now();
    for &ip in ex.addresses.iter().take(MAX_ADDRESSES) {
        let mut clock = PhaseClock::new(Protocol::Smtp);
        let mut banner = None;
        let mut tls = None;
        let outcome = session(ctx, &ex.host, ip, port, &mut clock, &mut banner, &mut tls).await;
        let reached = clock.timings.contains_key(&Phase::Greeting);
        let r = smtp_result(
            outcome,
            clock.into_timings(),
            millis(started.elapsed()),
            tls,
        );
        ex.address = Some(ip);
        ex.smtp = r;
        ex.banner = banner;
        if reached {
            break; // the host answered: its verdict stands, other addresses are fallbacks
        }
    }
}

/// One SMTP session without a message: up to RCPT TO, then RSET and QUIT.
async fn session(
    ctx: &Context,
    host: &str,
    ip: IpAddr,
    port: u16,
    clock: &mut PhaseClock,
    banner: &mut Option<String>,
    tls_info: &mut Option<TlsInfo>,
) -> ProbeResult<Reply> {
    let s = &ctx.settings;
    let t = s.timeouts;
    // Connect to the address; TLS verifies the MX name, never the address.
    let endpoint = Endpoint {
        protocol: Protocol::Smtp,
        security: match s.smtp.security {
            Security::Starttls(policy) => Security::Starttls(policy),
            Security::Implicit => Security::Starttls(StarttlsPolicy::Auto),
        },
        host: host.to_string(),
        port,
        connect_to: Some(ip),
    };
    let mut server = None;
    let established = establish(ctx, &endpoint, clock, &mut server, tls_info).await;
    *banner = server.map(|info| info.banner);
    let mut reader = BufReader::new(established?.stream);
    clock
        .run(
            Phase::MailFrom,
            t.command,
            exchange(&mut reader, &format!("MAIL FROM:<{}>\r\n", s.from)),
        )
        .await?;
    let accepted = clock
        .run(
            Phase::RcptTo,
            t.command,
            exchange(&mut reader, &format!("RCPT TO:<{}>\r\n", s.to)),
        )
        .await?;
    // Nothing is sent: reset and leave. Their answers do not change the verdict.
    let _ = clock
        .run(Phase::Quit, t.command, async {
            exchange(&mut reader, "RSET\r\n").await?;
            exchange(&mut reader, "QUIT\r\n").await
        })
        .await;
    Ok(accepted)
}

/// Diagnoses from the `mx` section (called by [`crate::diagnosis::diagnose`]).
pub fn diagnoses(report: &Report) -> Vec<Diagnosis> {
    let Some(mx) = &report.mx else {
        return Vec::new();
    };
    let mut out = Vec::new();
    match mx.source {
        MxSource::DnsFailed => out.push(Diagnosis {
            code: Code::DnsFailed,
            severity: Severity::Failing,
            summary: mx
                .dns_error
                .clone()
                .unwrap_or_else(|| format!("DNS lookup for {} failed", mx.domain)),
            cause: None,
            protocol: None,
            evidence: vec![format!("resolver: {}", mx.resolver)],
            hints: vec![
                format!(
                    "check the domain's spelling and its delegation (dig MX {})",
                    mx.domain
                ),
                "a SERVFAIL often means broken DNSSEC or unreachable authoritative servers".into(),
            ],
        }),
        MxSource::NullMx => out.push(Diagnosis {
            code: Code::NullMx,
            severity: Severity::Failing,
            summary: format!(
                "{} does not accept mail: it publishes a null MX (MX 0 \".\", RFC 7505)",
                mx.domain
            ),
            cause: None,
            protocol: None,
            evidence: vec![format!("{} MX 0 .", mx.domain)],
            hints: vec![
                "if the domain should receive mail, replace the null MX with real MX records"
                    .into(),
            ],
        }),
        MxSource::Mx | MxSource::Implicit => {}
    }
    let failed: Vec<&Exchanger> = mx.exchangers.iter().filter(|e| !e.smtp.ok).collect();
    let working = mx.exchangers.iter().find(|e| e.smtp.ok);
    if failed.is_empty() {
        return out;
    }
    let line = |e: &Exchanger| {
        let why = e
            .smtp
            .error
            .as_ref()
            .map_or_else(|| "failed".to_string(), ToString::to_string);
        format!(
            "MX {} {} [{}]: {why}",
            e.preference,
            e.host,
            e.address.map(|a| a.to_string()).unwrap_or_default()
        )
    };
    match working {
        None => out.push(Diagnosis {
            code: Code::MxUnreachable,
            severity: Severity::Failing,
            summary: format!(
                "no mail exchanger of {} accepts mail for {}: {}",
                mx.domain,
                report.target.to,
                failed
                    .first()
                    .and_then(|e| e.smtp.error.as_ref())
                    .map_or_else(|| "failed".to_string(), |e| e.to_string())
            ),
            cause: None,
            protocol: Some(Protocol::Smtp),
            evidence: failed.iter().map(|e| line(e)).collect(),
            hints: vec![
                "check that the MX hosts run an SMTP service on this port and that the firewall lets it through".into(),
                "a rejected RCPT TO means the MX does not take mail for this recipient".into(),
            ],
        }),
        Some(ok) => {
            for e in failed {
                out.push(Diagnosis {
                    code: Code::MxUnreachable,
                    severity: Severity::Degraded,
                    summary: format!(
                        "mail exchanger {} (preference {}) of {} fails; mail still goes through {}",
                        e.host, e.preference, mx.domain, ok.host
                    ),
                    cause: None,
                    protocol: Some(Protocol::Smtp),
                    evidence: vec![line(e)],
                    hints: vec![
                        "senders retry on the other exchangers, with delay: fix or remove this MX record".into(),
                    ],
                });
            }
        }
    }
    out
}

/// The MX section of the human report.
pub fn human_lines(mx: &MxReport) -> Vec<String> {
    let mut out = vec![format!(
        "mail exchangers of {} (DNS: {}):",
        mx.domain, mx.resolver
    )];
    if let Some(note) = &mx.note {
        out.push(format!("  note: {note}"));
    }
    if let Some(err) = &mx.dns_error {
        out.push(format!("  DNS: {err}"));
    }
    if mx.source == MxSource::NullMx {
        out.push("  null MX (0 .): the domain accepts no mail".into());
    }
    for e in &mx.exchangers {
        let addresses = e
            .addresses
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let status = if e.smtp.ok {
            format!(
                "ok, recipient accepted in {}",
                crate::units::format_ms(e.smtp.total_ms)
            )
        } else {
            match &e.smtp.error {
                Some(err) => format!("FAILED: {err}"),
                None => "FAILED".into(),
            }
        };
        let used = if mx.used.as_deref() == Some(e.host.as_str()) {
            "  (the ladder went through this one)"
        } else {
            ""
        };
        out.push(format!(
            "  {:>5} {} [{addresses}] {status}{used}",
            e.preference, e.host
        ));
        if let Some(tls) = &e.smtp.tls {
            out.push(format!("        tls {}", crate::tls_inspect::describe(tls)));
        }
    }
    out
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
