//! Endpoints that fail before their session can do anything: down, refused,
//! TLS or login failures, and what to check for each.

use super::results_of;
use crate::core::error::{ErrorKind, ProbeError};
use crate::core::phase::{Phase, Protocol};
use crate::model::report::Report;
use crate::model::result::ProtocolResult;

/// Did this protocol fail before its session could do anything, for every message it tried?
pub(super) fn endpoint_failure(report: &Report, protocol: Protocol) -> Option<ProbeError> {
    let results: Vec<&ProtocolResult> = results_of(report, protocol)
        .map(|(_, r)| r)
        .filter(|r| r.skipped.is_none())
        .collect();
    if results.is_empty() {
        return None;
    }
    let mut first = None;
    for r in &results {
        let err = r.error.as_ref()?;
        let before_session = matches!(
            err.phase,
            Some(
                Phase::Connect
                    | Phase::Tls
                    | Phase::Greeting
                    | Phase::Ehlo
                    | Phase::Starttls
                    | Phase::Capability
            )
        );
        if !before_session || err.kind == ErrorKind::Auth {
            return None;
        }
        first.get_or_insert_with(|| err.clone());
    }
    first
}

pub(super) fn endpoint_hints(err: &ProbeError) -> Vec<String> {
    match err.kind {
        ErrorKind::Refused => vec![
            "nothing listens on that port: is the service running, or crashing and restarting?".into(),
        ],
        ErrorKind::Timeout => vec!["no answer in time: check firewalls, the service's load and its worker limits".into()],
        ErrorKind::Reset | ErrorKind::Closed => vec![
            "the server drops connections: check its log for crashes, connection limits or a proxy in front".into(),
        ],
        _ => vec!["check the service's log for the moment of the probe".into()],
    }
}
