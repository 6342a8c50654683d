//! The liveness timeline: what the sampler saw of each service while a run went
//! on (up and down spans, how each down began, restarts) and the crash loops the
//! analysis found in it. Times are milliseconds since the timeline began.

use serde::{Deserialize, Serialize};

use crate::core::phase::Protocol;

/// Whether a service answered with its greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Liveness {
    Up,
    Down,
}

/// How a down span began: what the first failed sample met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DownCause {
    /// Nothing listening.
    Refused,
    /// The connection was reset.
    Reset,
    /// Closed before a complete greeting.
    Closed,
    /// No greeting within the sampler's timeout (or no connection in time).
    NoGreeting,
    /// A greeting that sends us away: SMTP 4xx/5xx (421), IMAP BYE, POP3 -ERR.
    Rejected,
    /// The implicit-TLS handshake failed.
    Tls,
    /// Anything else on the network (unreachable, name lookup).
    Network,
}

impl DownCause {
    pub fn as_str(self) -> &'static str {
        match self {
            DownCause::Refused => "refused",
            DownCause::Reset => "reset",
            DownCause::Closed => "closed",
            DownCause::NoGreeting => "no_greeting",
            DownCause::Rejected => "rejected",
            DownCause::Tls => "tls",
            DownCause::Network => "network",
        }
    }
}

/// What one sample saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    /// The greeting, as received (one line).
    Up(String),
    /// Why there was no usable greeting, and the error in words.
    Down(DownCause, String),
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A stretch of time in one state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Span {
    pub state: Liveness,
    pub start_ms: f64,
    /// The first sample of the next span, or the end of the timeline.
    pub end_ms: f64,
    pub samples: u32,
    /// Down spans: how the down began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub began: Option<DownCause>,
    /// The first greeting (up) or error (down) of the span, shortened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Up spans: the service came back after being up before (a down span between
    /// two up spans), or greeted with a different text.
    #[serde(default, skip_serializing_if = "is_false")]
    pub restart: bool,
}

impl Span {
    pub fn duration_ms(&self) -> f64 {
        (self.end_ms - self.start_ms).max(0.0)
    }
}

/// One service's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceTimeline {
    pub protocol: Protocol,
    /// The endpoint sampled.
    pub endpoint: String,
    pub samples: u64,
    pub restarts: u32,
    pub spans: Vec<Span>,
    /// The greeting of the current up span, without what changes per connection.
    #[serde(skip)]
    greeting_key: Option<String>,
}

/// Longest greeting or error kept in a span.
const DETAIL_CHARS: usize = 120;

/// A greeting without what legitimately changes per connection (dates, times,
/// counters, APOP stamps): what stays is the server's identity.
fn greeting_key(greeting: &str) -> String {
    const DATE_WORDS: [&str; 19] = [
        "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun", "Jan", "Feb", "Mar", "Apr", "May", "Jun",
        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    greeting
        .split_whitespace()
        .filter(|w| {
            !w.starts_with('<')
                && !w.chars().any(|c| c.is_ascii_digit())
                && !DATE_WORDS.contains(&w.trim_end_matches(','))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn shorten(text: &str) -> String {
    let text = text.trim();
    let short = crate::core::reply::truncate(text, DETAIL_CHARS);
    if short.len() < text.len() {
        format!("{short}...")
    } else {
        short.to_string()
    }
}

impl ServiceTimeline {
    pub fn new(protocol: Protocol, endpoint: String) -> ServiceTimeline {
        ServiceTimeline {
            protocol,
            endpoint,
            samples: 0,
            restarts: 0,
            spans: Vec::new(),
            greeting_key: None,
        }
    }

    /// Add the sample taken at `at_ms` (samples come in time order).
    pub fn record(&mut self, at_ms: f64, sample: Sample) {
        self.samples += 1;
        let (state, began, detail, key) = match &sample {
            Sample::Up(greeting) => (
                Liveness::Up,
                None,
                shorten(greeting),
                greeting_key(greeting),
            ),
            Sample::Down(cause, error) => {
                (Liveness::Down, Some(*cause), shorten(error), String::new())
            }
        };
        let was_up_before = self.spans.iter().any(|s| s.state == Liveness::Up);
        if let Some(last) = self.spans.last_mut()
            && last.state == state
        {
            let changed_greeting =
                state == Liveness::Up && self.greeting_key.as_ref() != Some(&key);
            if !changed_greeting {
                last.end_ms = at_ms.max(last.end_ms);
                last.samples += 1;
                return;
            }
        }
        if let Some(last) = self.spans.last_mut() {
            last.end_ms = at_ms.max(last.start_ms);
        }
        let restart = state == Liveness::Up && was_up_before;
        if restart {
            self.restarts += 1;
        }
        if state == Liveness::Up {
            self.greeting_key = Some(key);
        }
        self.spans.push(Span {
            state,
            start_ms: at_ms,
            end_ms: at_ms,
            samples: 1,
            began,
            detail: Some(detail).filter(|d| !d.is_empty()),
            restart,
        });
    }

    /// Close the last span at the end of the timeline.
    pub fn finish(&mut self, at_ms: f64) {
        if let Some(last) = self.spans.last_mut() {
            last.end_ms = at_ms.max(last.end_ms);
        }
    }

    pub fn down_spans(&self) -> impl Iterator<Item = &Span> {
        self.spans.iter().filter(|s| s.state == Liveness::Down)
    }

    /// Time spent down.
    pub fn down_ms(&self) -> f64 {
        self.down_spans().map(Span::duration_ms).sum()
    }

    /// Whether the service was seen down, or restarting, between `from_ms` and
    /// `to_ms` (a window of a stability check).
    pub fn disturbed_within(&self, from_ms: f64, to_ms: f64) -> bool {
        self.spans.iter().any(|s| match s.state {
            Liveness::Down => s.start_ms <= to_ms && s.end_ms >= from_ms,
            Liveness::Up => s.restart && s.start_ms >= from_ms && s.start_ms <= to_ms,
        })
    }
}

/// How often each kind of down began a down span.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CauseCount {
    pub cause: DownCause,
    pub count: u32,
}

impl CauseCount {
    /// How often each cause began one of `spans`, in the order first seen.
    pub fn tally<'a>(spans: impl IntoIterator<Item = &'a Span>) -> Vec<CauseCount> {
        let mut counts: Vec<CauseCount> = Vec::new();
        for cause in spans.into_iter().filter_map(|s| s.began) {
            match counts.iter_mut().find(|c| c.cause == cause) {
                Some(c) => c.count += 1,
                None => counts.push(CauseCount { cause, count: 1 }),
            }
        }
        counts
    }
}

/// A crash loop the analysis found: services that went down and came back at
/// least twice, together when `shared`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrashLoop {
    pub protocols: Vec<Protocol>,
    /// The services' down spans overlap (one process or front end restarting).
    pub shared: bool,
    /// Restarts of the service that restarted most.
    pub restarts: u32,
    pub median_up_ms: f64,
    pub median_down_ms: f64,
    pub first_restart_ms: f64,
    pub last_restart_ms: f64,
    /// How the down spans began.
    pub began: Vec<CauseCount>,
}

/// The `timeline` section of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// When sampling began (RFC 3339); span times count from here.
    pub started_at: String,
    /// The time between two samples of one service (`--sample-interval`).
    pub interval_ms: f64,
    pub duration_ms: f64,
    pub services: Vec<ServiceTimeline>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub crash_loops: Vec<CrashLoop>,
}

impl Timeline {
    pub fn service(&self, protocol: Protocol) -> Option<&ServiceTimeline> {
        self.services.iter().find(|s| s.protocol == protocol)
    }
    pub fn restarts(&self) -> u32 {
        self.services.iter().map(|s| s.restarts).sum()
    }
    /// Services seen down or restarting between `from_ms` and `to_ms`.
    pub fn disturbed_within(&self, from_ms: f64, to_ms: f64) -> Vec<Protocol> {
        self.services
            .iter()
            .filter(|s| s.disturbed_within(from_ms, to_ms))
            .map(|s| s.protocol)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(g: &str) -> Sample {
        Sample::Up(g.into())
    }
    fn refused() -> Sample {
        Sample::Down(DownCause::Refused, "connection refused".into())
    }

    #[test]
    fn spans_restarts_and_greeting_changes() {
        let mut t = ServiceTimeline::new(Protocol::Smtp, "smtp://h:25".into());
        t.record(0.0, refused());
        t.record(250.0, up("220 mx ESMTP"));
        t.record(500.0, up("220 mx ESMTP"));
        assert_eq!(t.restarts, 0, "down at the start, then up: not a restart");
        t.record(750.0, refused());
        t.record(1000.0, up("220 mx ESMTP"));
        assert_eq!(t.restarts, 1);
        // Dates and APOP stamps change per connection; the identity does not.
        t.record(
            1250.0,
            up("220 mx ESMTP Tue, 01 Dec 2026 20:00:01 <1.2@mx>"),
        );
        assert_eq!(t.restarts, 1);
        t.record(1500.0, up("220 mx ESMTP NewServer"));
        assert_eq!(t.restarts, 2, "a new greeting text is a restart");
        t.finish(1750.0);
        let states: Vec<_> = t
            .spans
            .iter()
            .map(|s| (s.state, s.start_ms, s.end_ms))
            .collect();
        assert_eq!(
            states,
            vec![
                (Liveness::Down, 0.0, 250.0),
                (Liveness::Up, 250.0, 750.0),
                (Liveness::Down, 750.0, 1000.0),
                (Liveness::Up, 1000.0, 1500.0),
                (Liveness::Up, 1500.0, 1750.0),
            ]
        );
        assert_eq!(t.spans[2].began, Some(DownCause::Refused));
        assert!(t.spans[3].restart && t.spans[4].restart && !t.spans[1].restart);
        assert_eq!(t.down_ms(), 500.0);
        assert!(t.disturbed_within(800.0, 900.0));
        assert!(t.disturbed_within(1400.0, 1600.0), "the greeting change");
        assert!(!t.disturbed_within(1550.0, 1750.0));
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json["spans"][2]["began"], "refused");
        assert!(json.get("greeting_key").is_none());
    }
}
