//! The whole check's time limit (`--timeout`): every phase's own timeout is cut to
//! what remains, a short slice at the end is kept for cleanup, and the phase that
//! used up the time is remembered for the diagnosis.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::core::error::{ProbeError, ProbeResult};
use crate::core::phase::{Phase, Protocol};
use crate::core::units::format_duration;

/// The most kept back for cleanup at the end of a check.
const MAX_CLEANUP_SLICE: Duration = Duration::from_secs(5);

/// One check's deadline, shared by every session of the check.
#[derive(Debug, Clone)]
pub(crate) struct Deadline {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    limit: Duration,
    /// Sending and watching stop here; cleanup may go on until `end`.
    work_until: Instant,
    end: Instant,
    cleaning: AtomicBool,
    /// The first phase cut short by the deadline.
    spent_in: Mutex<Option<(Protocol, Phase)>>,
}

/// The slice of `limit` kept back for cleanup: a sixth, at most 5 s.
pub(crate) fn cleanup_slice(limit: Duration) -> Duration {
    (limit / 6).min(MAX_CLEANUP_SLICE)
}

impl Deadline {
    /// A deadline `limit` from now.
    pub(crate) fn starting_now(limit: Duration) -> Deadline {
        let now = Instant::now();
        let end = now + limit;
        Deadline {
            inner: Arc::new(Inner {
                limit,
                work_until: end - cleanup_slice(limit),
                end,
                cleaning: AtomicBool::new(false),
                spent_in: Mutex::new(None),
            }),
        }
    }

    /// The `--timeout` this deadline enforces.
    pub(crate) fn limit(&self) -> Duration {
        self.inner.limit
    }

    /// From now on the reserved cleanup slice may be used too.
    pub(crate) fn enter_cleanup(&self) {
        self.inner.cleaning.store(true, Ordering::Relaxed);
    }

    /// When the current stage must end (work, or cleanup once entered).
    pub(crate) fn at(&self) -> Instant {
        if self.inner.cleaning.load(Ordering::Relaxed) {
            self.inner.end
        } else {
            self.inner.work_until
        }
    }

    pub(crate) fn remaining(&self) -> Duration {
        self.at().saturating_duration_since(Instant::now())
    }

    pub(crate) fn passed(&self) -> bool {
        self.remaining().is_zero()
    }

    /// `limit` cut to what remains, and whether the deadline is what cut it.
    pub(crate) fn cap(&self, limit: Duration) -> (Duration, bool) {
        let left = self.remaining();
        if left < limit {
            (left, true)
        } else {
            (limit, false)
        }
    }

    /// Remember that `phase` ran into the deadline (the first one counts).
    pub(crate) fn spent(&self, protocol: Protocol, phase: Phase) {
        let mut slot = self.inner.spent_in.lock().expect("not poisoned");
        slot.get_or_insert((protocol, phase));
    }

    /// The phase that used up the time, when the deadline was reached.
    pub(crate) fn spent_in(&self) -> Option<(Protocol, Phase)> {
        *self.inner.spent_in.lock().expect("not poisoned")
    }

    /// The error of a phase the deadline cut short.
    pub(crate) fn exceeded(&self, protocol: Protocol, phase: Phase) -> ProbeError {
        self.spent(protocol, phase);
        ProbeError::time_limit(&format_duration(self.inner.limit)).at(protocol, phase)
    }

    /// Run `step` as `phase` under `limit`, cut to what remains of the deadline;
    /// its errors name `protocol` and `phase` (unless they already name theirs).
    pub(crate) async fn run<T, F>(
        &self,
        protocol: Protocol,
        phase: Phase,
        limit: Duration,
        step: F,
    ) -> ProbeResult<T>
    where
        F: Future<Output = ProbeResult<T>>,
    {
        let (limit, cut) = self.cap(limit);
        match tokio::time::timeout(limit, step).await {
            Ok(result) => result.map_err(|e| e.at(protocol, phase)),
            Err(_) if cut => Err(self.exceeded(protocol, phase)),
            Err(_) => Err(ProbeError::timeout(limit).at(protocol, phase)),
        }
    }

    /// Sleep `pause`, or less when the deadline comes first; false when it came.
    pub(crate) async fn sleep(&self, pause: Duration) -> bool {
        let (pause, cut) = self.cap(pause);
        tokio::time::sleep(pause).await;
        !cut
    }
}

impl Default for Deadline {
    /// Far enough away never to matter (tests, tools that set no limit).
    fn default() -> Self {
        Deadline::starting_now(Duration::from_secs(365 * 24 * 3600))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::error::ErrorKind;

    #[test]
    fn slice_and_cap() {
        assert_eq!(
            cleanup_slice(Duration::from_secs(45)),
            Duration::from_secs(5)
        );
        assert_eq!(
            cleanup_slice(Duration::from_secs(6)),
            Duration::from_secs(1)
        );
        let d = Deadline::starting_now(Duration::from_secs(60));
        assert_eq!(
            d.cap(Duration::from_secs(1)),
            (Duration::from_secs(1), false)
        );
        let (cut, by_deadline) = d.cap(Duration::from_secs(120));
        assert!(by_deadline && cut <= Duration::from_secs(55), "{cut:?}");
        d.enter_cleanup();
        assert!(d.remaining() > Duration::from_secs(55));
    }

    #[tokio::test]
    async fn a_cut_phase_is_remembered() {
        let d = Deadline::starting_now(Duration::from_millis(60));
        let r: ProbeResult<()> = d
            .run(
                Protocol::Smtp,
                Phase::Greeting,
                Duration::from_secs(20),
                async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Ok(())
                },
            )
            .await;
        let e = r.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Timeout);
        assert!(e.message.contains("--timeout") && e.is_time_limit(), "{e}");
        assert_eq!(d.spent_in(), Some((Protocol::Smtp, Phase::Greeting)));
        assert!(d.passed());
    }
}
