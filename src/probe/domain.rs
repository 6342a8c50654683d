//! `check --domain`: probe a mail domain the way a sending MTA reaches it.
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
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::BufReader;

use crate::analysis::diagnosis;
use crate::core::endpoint::{Endpoint, Security, StarttlsPolicy};
use crate::core::error::{ErrorKind, ProbeError, ProbeResult};
use crate::core::phase::{Phase, Protocol, millis};
use crate::core::reply::Reply;
use crate::core::tls_info::TlsInfo;
use crate::io::clock::PhaseClock;
use crate::io::transcript::Transcript;
use crate::model::mx::{Exchanger, MxReport, MxSource};
use crate::model::report::{Cleanup, Report};
use crate::model::result::ProtocolResult;
use crate::probe::check;
use crate::probe::context::Context;
use crate::probe::settings::Settings;
use crate::probe::smtp::{establish, smtp_result};
use crate::protocol::dns::{
    DnsFailure, build_resolver, is_null_mx, lookup_addresses, lookup_limit, lookup_mx,
};
use crate::protocol::smtp::exchange;

/// SMTP port of an MX unless `--mx-port` says otherwise.
pub(crate) const DEFAULT_MX_PORT: u16 = 25;
/// Most exchangers checked (a domain with more is unusual; the rest are listed unchecked).
const MAX_EXCHANGERS: usize = 10;
/// Most addresses tried per exchanger.
const MAX_ADDRESSES: usize = 4;

/// The mail domain to probe and how to reach its exchangers.
#[derive(Debug, Clone)]
pub(crate) struct Domain {
    /// Lower case, without a trailing dot.
    pub(crate) name: String,
    /// SMTP port on each exchanger.
    pub(crate) port: u16,
    /// The DNS server to ask (None: the system resolver).
    pub(crate) resolver: Option<SocketAddr>,
}

/// Probe `domain`: DNS, SMTP on every exchanger, then the ladder through the first
/// reachable one with `base` (whose SMTP endpoint is replaced by that exchanger).
/// `Err` is a could-not-run error (exit 3).
pub(crate) async fn run(
    domain: &Domain,
    base: Settings,
    transcript: Option<Arc<Transcript>>,
) -> Result<Report, String> {
    let started_at = SystemTime::now();
    let started = Instant::now();
    let port = domain.port;
    let resolver_addr = domain.resolver;
    let domain = domain.name.clone();
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

    let ctx = Context::new(base.clone(), transcript.clone()).map_err(|e| e.to_string())?;
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
            let mut settings = base.clone();
            let policy = match base.target.smtp.security {
                Security::Starttls(policy) => policy,
                Security::Implicit => StarttlsPolicy::Auto,
            };
            settings.target.smtp = Endpoint::parse(&format!("smtp://{}:{port}", ex.host), policy)?;
            settings.target.smtp.connect_to = ex.address;
            mx.used = Some(ex.host.clone());
            check::run_recorded(settings, transcript)
                .await
                .map_err(|e| e.to_string())?
        }
        None => Report::new(
            base.report_target(),
            started_at,
            started,
            Vec::new(),
            Cleanup::default(),
        ),
    };
    report.mx = Some(mx);
    diagnosis::apply(&mut report, &thresholds);
    Ok(report)
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
        security: match s.target.smtp.security {
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
            exchange(&mut reader, &format!("MAIL FROM:<{}>\r\n", s.target.from)),
        )
        .await?;
    let accepted = clock
        .run(
            Phase::RcptTo,
            t.command,
            exchange(&mut reader, &format!("RCPT TO:<{}>\r\n", s.target.to)),
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
