//! `mailprobe serve`: a Prometheus exporter in the blackbox_exporter style.
//!
//! * `GET /probe?profile=NAME[&target=HOST]` loads `NAME.toml` from the profiles
//!   directory, runs one check (with `target` replacing the host of the SMTP, IMAP
//!   and POP3 endpoints) and answers with the check's Prometheus text
//!   ([`crate::report::prometheus`]).
//! * `GET /metrics` answers the exporter's own metrics: probes run, probe errors,
//!   probes in flight, probe durations.
//!
//! A probe's time is bounded by Prometheus' `X-Prometheus-Scrape-Timeout-Seconds`
//! header minus [`TIMEOUT_MARGIN`] (or `--timeout` without the header): the check's
//! timeouts are scaled down to fit, and if it still runs over, the scrape is
//! answered at the deadline with `mailprobe_success 0` while the check finishes
//! (and deletes its messages) in the background, its concurrency slot held until
//! then. At most `--max-concurrent` checks run at once; beyond that `/probe`
//! answers 503.
//!
//! The HTTP server is a minimal HTTP/1.1 one on tokio: one request per
//! connection, request head bounded in size and time, `Connection: close`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::app::cli::{CheckArgs, MailboxArgs, ServeArgs};
use crate::app::profile;
use crate::core::secret::{scrub, scrub_value};
use crate::model::report::{Cleanup, Report, Target, Verdict};
use crate::probe::sweep::{late_cleanup, unconfirmed_ids};
use crate::report;

/// Kept free of a scrape timeout so the answer reaches Prometheus in time.
pub(crate) const TIMEOUT_MARGIN: Duration = Duration::from_millis(500);
/// Longest request line plus headers.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection is drained after the answer.
const LINGER: Duration = Duration::from_secs(1);
/// Open connections at once (each is one request).
const MAX_CONNECTIONS: usize = 256;
/// A check answered at its deadline still gets this long beyond its time budget to
/// finish and clean up in the background before it is dropped.
const BACKGROUND_GRACE: Duration = Duration::from_secs(300);
/// Buckets of `mailprobe_exporter_probe_duration_seconds`.
const BUCKETS: [f64; 10] = [0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

/// Settings of the exporter.
#[derive(Debug, Clone)]
pub(crate) struct ServeConfig {
    pub(crate) profiles: PathBuf,
    pub(crate) max_concurrent: usize,
    /// Probe time limit without a scrape timeout header.
    pub(crate) default_timeout: Duration,
}

/// The exporter's own counters.
#[derive(Debug, Default)]
struct Stats {
    /// Probes run, by profile.
    probes: BTreeMap<String, u64>,
    /// Probes whose verdict was not healthy, by profile.
    failed: BTreeMap<String, u64>,
    /// Probe errors by reason.
    errors: BTreeMap<&'static str, u64>,
    in_flight: u64,
    duration_buckets: [u64; BUCKETS.len()],
    duration_count: u64,
    duration_sum: f64,
}

struct State {
    config: ServeConfig,
    slots: Arc<Semaphore>,
    stats: Mutex<Stats>,
}

impl State {
    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn error(&self, reason: &'static str) {
        *self.stats().errors.entry(reason).or_insert(0) += 1;
    }
}

/// `mailprobe serve`: bind, say where, and answer until killed.
pub(crate) async fn run(args: ServeArgs) -> i32 {
    let default_timeout = match crate::core::units::parse_duration(&args.timeout) {
        Ok(d) if !d.is_zero() => d,
        Ok(_) => return usage("--timeout must be more than zero"),
        Err(e) => return usage(&e),
    };
    if args.max_concurrent == 0 {
        return usage("--max-concurrent must be at least 1");
    }
    if !args.profiles.is_dir() {
        return usage(&format!(
            "the profiles directory {} does not exist; give --profiles DIR",
            args.profiles.display()
        ));
    }
    let listener = match TcpListener::bind(&args.listen).await {
        Ok(l) => l,
        Err(e) => return usage(&format!("cannot listen on {}: {e}", args.listen)),
    };
    let config = ServeConfig {
        profiles: args.profiles.clone(),
        max_concurrent: args.max_concurrent,
        default_timeout,
    };
    match listener.local_addr() {
        Ok(addr) => eprintln!(
            "mailprobe: listening on http://{addr} (profiles in {}, at most {} probes at once)",
            config.profiles.display(),
            config.max_concurrent
        ),
        Err(e) => return usage(&format!("cannot read the listening address: {e}")),
    }
    serve(listener, config).await;
    0
}

fn usage(message: &str) -> i32 {
    eprintln!("mailprobe: {message}");
    crate::app::EXIT_UNKNOWN
}

/// Answer connections on `listener` forever.
pub(crate) async fn serve(listener: TcpListener, config: ServeConfig) {
    let state = Arc::new(State {
        slots: Arc::new(Semaphore::new(config.max_concurrent)),
        config,
        stats: Mutex::default(),
    });
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait a little, go on.
                eprintln!("mailprobe: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            drop(stream); // too many open connections
            continue;
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            handle(stream, &state).await;
            drop(permit);
        });
    }
}

/// An HTTP answer.
struct Response {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into().into_bytes(),
        }
    }
    fn metrics(body: Vec<u8>) -> Self {
        Response {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body,
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// A parsed request head.
#[derive(Debug)]
struct Request {
    method: String,
    path: String,
    query: String,
    scrape_timeout: Option<f64>,
}

async fn handle(mut stream: TcpStream, state: &Arc<State>) {
    let (response, head_only) = match read_head(&mut stream).await {
        Ok(request) => {
            let head_only = request.method == "HEAD";
            (route(request, state).await, head_only)
        }
        Err(response) => (response, false),
    };
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(&response.body);
    }
    let _ = tokio::time::timeout(HEAD_TIMEOUT, async {
        let _ = stream.write_all(&out).await;
        let _ = stream.shutdown().await;
    })
    .await;
    // Read what the client may still be sending (a refused oversized head) for a
    // moment, so that closing does not reset the connection before it reads the answer.
    let _ = tokio::time::timeout(LINGER, async {
        let mut sink = [0u8; 4096];
        let mut drained = 0usize;
        while drained < 64 * 1024 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}

/// Read the request line and headers (up to the blank line), bounded in size and time.
async fn read_head(stream: &mut TcpStream) -> Result<Request, Response> {
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let read = async {
        let mut chunk = [0u8; 1024];
        loop {
            if let Some(end) = find(&buf, b"\r\n\r\n").or_else(|| find(&buf, b"\n\n")) {
                buf.truncate(end);
                return Ok(());
            }
            if buf.len() > MAX_HEAD {
                return Err(Response::text(
                    431,
                    format!("the request head is longer than {MAX_HEAD} bytes\n"),
                ));
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return Err(Response::text(400, "incomplete request\n")),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    match tokio::time::timeout(HEAD_TIMEOUT, read).await {
        Ok(Ok(())) => {}
        Ok(Err(r)) => return Err(r),
        Err(_) => return Err(Response::text(408, "the request took too long to arrive\n")),
    }
    if buf.len() > MAX_HEAD {
        return Err(Response::text(
            431,
            format!("the request head is longer than {MAX_HEAD} bytes\n"),
        ));
    }
    let head = String::from_utf8_lossy(&buf);
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(Response::text(400, "malformed request line\n"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(Response::text(400, "only HTTP/1.x is spoken here\n"));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut scrape_timeout = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':')
            && name
                .trim()
                .eq_ignore_ascii_case("X-Prometheus-Scrape-Timeout-Seconds")
        {
            scrape_timeout = value
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0);
        }
    }
    Ok(Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        scrape_timeout,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn route(request: Request, state: &Arc<State>) -> Response {
    if request.method != "GET" && request.method != "HEAD" {
        return Response::text(405, "only GET is supported\n");
    }
    match request.path.as_str() {
        "/probe" => probe(&request, state).await,
        "/metrics" => Response::metrics(own_metrics(state)),
        "/" => Response::text(
            200,
            "mailprobe exporter\n\n\
             GET /probe?profile=NAME[&target=HOST]  run the check of profile NAME and answer its metrics\n\
             GET /metrics                           the exporter's own metrics\n",
        ),
        _ => Response::text(404, "not found: use /probe?profile=NAME or /metrics\n"),
    }
}

/// A profile name: letters, digits, `.`, `_`, `-`; not starting with a dot; no
/// path separators. `NAME` or `NAME.toml` both name `NAME.toml`.
pub(crate) fn profile_path(dir: &Path, name: &str) -> Result<PathBuf, String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        return Err(format!(
            "profile {name:?} is not a profile name (letters, digits, '.', '_' and '-'; no path separators)"
        ));
    }
    let file = if name.ends_with(".toml") {
        name.to_string()
    } else {
        format!("{name}.toml")
    };
    Ok(dir.join(file))
}

/// A host for `target=`: a DNS name or an IP address (IPv6 with or without brackets).
fn target_host(target: &str) -> Result<String, String> {
    let host = target
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(target);
    let ip = host.parse::<std::net::IpAddr>().is_ok();
    let name = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ip || name {
        Ok(host.to_string())
    } else {
        Err(format!(
            "target {target:?} is not a host name or IP address (the ports come from the profile)"
        ))
    }
}

/// The check's time budget from the scrape timeout header.
pub(crate) fn budget(scrape_timeout: Option<f64>, default: Duration) -> Duration {
    match scrape_timeout {
        Some(secs) => {
            let total = Duration::from_secs_f64(secs.min(86_400.0));
            total
                .checked_sub(TIMEOUT_MARGIN)
                .filter(|b| *b >= total / 2)
                .unwrap_or(total / 2)
        }
        None => default,
    }
}

async fn probe(request: &Request, state: &Arc<State>) -> Response {
    let mut profile = None;
    let mut target = None;
    for (k, v) in url::form_urlencoded::parse(request.query.as_bytes()) {
        match k.as_ref() {
            "profile" => profile = Some(v.into_owned()),
            "target" => target = Some(v.into_owned()),
            _ => {}
        }
    }
    let Some(name) = profile else {
        state.error("bad_request");
        return Response::text(400, "give the profile: /probe?profile=NAME\n");
    };
    let path = match profile_path(&state.config.profiles, &name) {
        Ok(p) => p,
        Err(e) => {
            state.error("bad_request");
            return Response::text(400, format!("{e}\n"));
        }
    };
    if !path.is_file() {
        state.error("unknown_profile");
        return Response::text(
            404,
            format!("no profile {name:?}: {} does not exist\n", path.display()),
        );
    }
    let target = match target.filter(|t| !t.is_empty()).map(|t| target_host(&t)) {
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            state.error("bad_request");
            return Response::text(400, format!("{e}\n"));
        }
        None => None,
    };
    let args = CheckArgs {
        mailbox: MailboxArgs {
            profile: Some(path),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut settings = match profile::resolve(&args) {
        Ok(s) => s,
        Err(e) => {
            state.error("profile_invalid");
            return Response::text(500, format!("profile {name:?}: {e}\n"));
        }
    };
    if let Some(host) = &target {
        for e in [
            Some(&mut settings.target.smtp),
            settings.target.imap.as_mut(),
            settings.target.pop3.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            e.host = host.clone();
            e.connect_to = None;
        }
    }
    let budget = budget(request.scrape_timeout, state.config.default_timeout);
    // Late cleanup runs with the profile's own timeouts, after the answer.
    let secrets = settings.target.secrets();
    let cleanup_settings = settings.clone();
    let patience = settings.timeouts.delivery.min(BACKGROUND_GRACE);
    settings.fit_into(budget);

    let Ok(slot) = Arc::clone(&state.slots).try_acquire_owned() else {
        state.error("overloaded");
        return Response::text(
            503,
            format!(
                "too many probes in flight (at most {} at once, --max-concurrent); try again later or scrape less often\n",
                state.config.max_concurrent
            ),
        );
    };
    state.stats().in_flight += 1;
    *state.stats().probes.entry(name.clone()).or_insert(0) += 1;

    let started = Instant::now();
    let started_at = SystemTime::now();
    let target_info = settings.report_target();
    let (tx, rx) = tokio::sync::oneshot::channel();
    // The check runs in its own task: answered at the deadline or not, it finishes
    // (and deletes its messages) before its slot is given back and it stops
    // counting as in flight.
    let hard_limit = budget + BACKGROUND_GRACE;
    let task_state = Arc::clone(state);
    // A thread of its own with a single-threaded runtime: the check needs no Send.
    let spawned = std::thread::Builder::new()
        .name("mailprobe-probe".into())
        .spawn(move || {
            let done = Done {
                state: task_state,
                _slot: slot,
            };
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    drop(done);
                    let _ = tx.send(Err(format!("cannot start a runtime for the check: {e}")));
                    return;
                }
            };
            let outcome = runtime
                .block_on(async {
                    tokio::time::timeout(hard_limit, crate::probe::check::run_check(settings)).await
                })
                .map_err(|_| "the check did not finish".to_string())
                .and_then(|r| r.map_err(|e| format!("the check could not run: {e}")));
            let leftovers = match &outcome {
                Ok(report) => unconfirmed_ids(report),
                Err(_) => Vec::new(),
            };
            if leftovers.is_empty() {
                drop(done);
                let _ = tx.send(outcome);
                return;
            }
            // Messages that arrived after the (scaled-down) delivery deadline: answer
            // first, then wait for them and delete exactly those.
            let _ = tx.send(outcome);
            runtime.block_on(late_cleanup(cleanup_settings, leftovers, patience));
            drop(done);
        });
    if let Err(e) = spawned {
        state.error("internal");
        return Response::text(500, format!("cannot start the check: {e}\n"));
    }
    let answer = tokio::time::timeout(budget, rx).await;
    let elapsed = started.elapsed();
    let response = match answer {
        Ok(Ok(Ok(mut report))) => {
            if report.verdict != Verdict::Healthy {
                *state.stats().failed.entry(name.clone()).or_insert(0) += 1;
            }
            Response::metrics(scrubbed_metrics(&mut report, &secrets))
        }
        Ok(Ok(Err(e))) => {
            state.error("internal");
            Response::text(500, format!("{}\n", scrub(&e, &secrets)))
        }
        Ok(Err(_)) => {
            state.error("internal");
            Response::text(500, "the check ended without a result\n")
        }
        Err(_) => {
            state.error("timeout");
            *state.stats().failed.entry(name.clone()).or_insert(0) += 1;
            let report = timed_out_report(started_at, started, budget, target_info);
            Response::metrics(report::prometheus::render(&report))
        }
    };
    state.stats().observe(elapsed.as_secs_f64());
    response
}

/// The check's metrics; a server may echo a password, the metrics never show one.
fn scrubbed_metrics(report: &mut Report, secrets: &[String]) -> Vec<u8> {
    scrub_value(report, secrets);
    report::prometheus::render(report)
}

/// A running check: dropping it (done, or the task panicked) gives back its
/// concurrency slot and counts it out of `in_flight`.
struct Done {
    state: Arc<State>,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Done {
    fn drop(&mut self) {
        self.state.stats().in_flight -= 1;
    }
}

impl Stats {
    fn observe(&mut self, secs: f64) {
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.duration_buckets[i] += 1;
            }
        }
        self.duration_count += 1;
        self.duration_sum += secs;
    }
}

/// The answer to a probe that ran out of time: a report without messages,
/// failing, saying why.
fn timed_out_report(
    started_at: SystemTime,
    started: Instant,
    budget: Duration,
    target: Target,
) -> Report {
    let mut report = Report::new(target, started_at, started, Vec::new(), Cleanup::default());
    report.verdict = Verdict::Failing;
    report.summary = format!(
        "the check did not finish within its time budget of {} (scrape timeout minus {} ms)",
        crate::core::units::format_duration(budget),
        TIMEOUT_MARGIN.as_millis()
    );
    report
}

fn own_metrics(state: &State) -> Vec<u8> {
    let s = state.stats();
    let mut o = String::new();
    let label = |v: &str| {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    let _ = writeln!(
        o,
        "# HELP mailprobe_exporter_probes_total Probes run, by profile.\n# TYPE mailprobe_exporter_probes_total counter"
    );
    for (profile, n) in &s.probes {
        let _ = writeln!(
            o,
            "mailprobe_exporter_probes_total{{profile=\"{}\"}} {n}",
            label(profile)
        );
    }
    let _ = writeln!(
        o,
        "# HELP mailprobe_exporter_probes_failed_total Probes whose check was not healthy (or ran out of time), by profile.\n# TYPE mailprobe_exporter_probes_failed_total counter"
    );
    for (profile, n) in &s.failed {
        let _ = writeln!(
            o,
            "mailprobe_exporter_probes_failed_total{{profile=\"{}\"}} {n}",
            label(profile)
        );
    }
    let _ = writeln!(
        o,
        "# HELP mailprobe_exporter_probe_errors_total Probe requests that could not be answered with a check result, or ran out of time, by reason.\n# TYPE mailprobe_exporter_probe_errors_total counter"
    );
    for reason in [
        "bad_request",
        "unknown_profile",
        "profile_invalid",
        "overloaded",
        "timeout",
        "internal",
    ] {
        let _ = writeln!(
            o,
            "mailprobe_exporter_probe_errors_total{{reason=\"{reason}\"}} {}",
            s.errors.get(reason).copied().unwrap_or(0)
        );
    }
    let _ = writeln!(
        o,
        "# HELP mailprobe_exporter_probes_in_flight Checks running now (including ones answered at their deadline and still cleaning up).\n# TYPE mailprobe_exporter_probes_in_flight gauge\nmailprobe_exporter_probes_in_flight {}",
        s.in_flight
    );
    let _ = writeln!(
        o,
        "# HELP mailprobe_exporter_max_concurrent_probes The most checks that may run at once.\n# TYPE mailprobe_exporter_max_concurrent_probes gauge\nmailprobe_exporter_max_concurrent_probes {}",
        state.config.max_concurrent
    );
    let _ = writeln!(
        o,
        "# HELP mailprobe_exporter_probe_duration_seconds Time from a probe request until its answer.\n# TYPE mailprobe_exporter_probe_duration_seconds histogram"
    );
    for (le, n) in BUCKETS.iter().zip(s.duration_buckets.iter()) {
        let _ = writeln!(
            o,
            "mailprobe_exporter_probe_duration_seconds_bucket{{le=\"{le}\"}} {n}"
        );
    }
    let _ = writeln!(
        o,
        "mailprobe_exporter_probe_duration_seconds_bucket{{le=\"+Inf\"}} {}\nmailprobe_exporter_probe_duration_seconds_sum {}\nmailprobe_exporter_probe_duration_seconds_count {}",
        s.duration_count, s.duration_sum, s.duration_count
    );
    o.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            smtp: "smtp://h:25".into(),
            imap: None,
            pop3: None,
            from: "a@h".into(),
            to: "a@h".into(),
            sizes: vec![0],
            insecure: false,
        }
    }

    #[test]
    fn a_timed_out_probe_is_a_failing_report_built_like_every_other() {
        let target = target();
        let started_at = SystemTime::now();
        let started = Instant::now();
        let r = timed_out_report(started_at, started, Duration::from_secs(9), target.clone());
        let built = Report::new(target, started_at, started, Vec::new(), Cleanup::default());
        assert_eq!(r.verdict, Verdict::Failing);
        assert!(r.summary.contains("time budget of 9.0 s"), "{}", r.summary);
        assert_eq!(
            (&r.mailprobe_version, &r.started_at, &r.target),
            (&built.mailprobe_version, &built.started_at, &built.target)
        );
        assert!(r.messages.is_empty() && r.diagnoses.is_empty() && r.stats.is_none());
    }

    #[test]
    fn metrics_never_show_a_password_the_server_echoed() {
        let mut r = timed_out_report(
            SystemTime::now(),
            Instant::now(),
            Duration::from_secs(1),
            target(),
        );
        r.summary = "535 5.7.8 bad password hunter22".into();
        let secrets = crate::core::secret::secret_forms("a@h", "hunter22");
        let text = String::from_utf8(scrubbed_metrics(&mut r, &secrets)).unwrap();
        assert!(!text.contains("hunter22"), "{text}");
        assert!(r.summary.contains("<redacted>"), "{}", r.summary);
    }
}
