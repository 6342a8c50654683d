//! The clock that times each phase of a protocol conversation and bounds it
//! by its timeout (cut to what remains of the check's deadline), so that no step
//! can hang and every failure names its phase.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::core::error::{ProbeError, ProbeResult};
use crate::core::phase::{Phase, Phases, Protocol, millis};
use crate::io::deadline::Deadline;

/// Records phase durations for one protocol conversation and applies each phase's
/// timeout, so that no step can hang and every failure names its phase.
#[derive(Debug)]
pub(crate) struct PhaseClock {
    protocol: Protocol,
    pub(crate) timings: Phases,
    deadline: Option<Deadline>,
}

impl PhaseClock {
    pub(crate) fn new(protocol: Protocol) -> Self {
        PhaseClock {
            protocol,
            timings: Phases::new(),
            deadline: None,
        }
    }

    /// A clock whose phases also end at the check's `deadline`.
    pub fn within(protocol: Protocol, deadline: &Deadline) -> Self {
        PhaseClock {
            deadline: Some(deadline.clone()),
            ..PhaseClock::new(protocol)
        }
    }

    /// Run `step` as `phase` under `limit`, recording its duration when it succeeds.
    pub(crate) async fn run<T, F>(
        &mut self,
        phase: Phase,
        limit: Duration,
        step: F,
    ) -> ProbeResult<T>
    where
        F: Future<Output = ProbeResult<T>>,
    {
        let started = Instant::now();
        let outcome = match &self.deadline {
            Some(d) => d.run(self.protocol, phase, limit, step).await,
            None => match tokio::time::timeout(limit, step).await {
                Ok(result) => result,
                Err(_) => Err(ProbeError::timeout(limit)),
            },
        };
        match outcome {
            Ok(value) => {
                self.record(phase, started.elapsed());
                Ok(value)
            }
            Err(err) => Err(err.at(self.protocol, phase)),
        }
    }

    /// Record a phase; a phase met again (a second EHLO, repeated polls) adds up.
    pub(crate) fn record(&mut self, phase: Phase, took: Duration) {
        *self.timings.entry(phase).or_insert(0.0) += millis(took);
    }

    pub(crate) fn into_timings(self) -> Phases {
        self.timings
    }
}
