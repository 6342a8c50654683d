//! The round flags of `check` and `verify`: validated into a [`RoundPlan`], the
//! baseline file read, and `check` run with rounds, rate and baseline.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::analysis::baseline::{self, Baseline};
use crate::app::cli::RoundArgs;
use crate::app::output::Destination;
use crate::core::error::ProbeError;
use crate::core::phase::millis;
use crate::core::units::parse_duration;
use crate::io::transcript::Transcript;
use crate::model::report::Report;
use crate::probe::rate::DEFAULT_IN_FLIGHT;
use crate::probe::rounds::{self, RatePlan, RoundPlan};
use crate::probe::sampler::{
    DEFAULT_INTERVAL as DEFAULT_SAMPLE_INTERVAL, MIN_INTERVAL as MIN_SAMPLE_INTERVAL,
};
use crate::probe::settings::Settings;
use crate::report::Format;

impl RoundArgs {
    /// `--concurrency`, validated (the profile loader puts it into the settings).
    pub(crate) fn concurrency(&self) -> Result<usize, String> {
        match self.concurrency {
            None => Ok(1),
            Some(0) => Err("--concurrency must be at least 1".into()),
            Some(c) if c > 256 => Err("--concurrency is at most 256".into()),
            Some(c) => Ok(c),
        }
    }
    pub(crate) fn interval(&self, default: Duration) -> Result<Duration, String> {
        self.interval
            .as_deref()
            .map(parse_duration)
            .transpose()
            .map(|d| d.unwrap_or(default))
    }
    pub(crate) fn threshold(
        &self,
        settings: Option<&Settings>,
    ) -> Result<baseline::Threshold, String> {
        let mut t = match &self.regression_threshold {
            Some(t) => baseline::parse_threshold(t)?,
            None => baseline::Threshold::default(),
        };
        if let Some(min) = &self.regression_min {
            t.min_ms = millis(parse_duration(min)?);
        }
        t.delivery_min_ms = t
            .min_ms
            .max(settings.map_or(0.0, |s| 2.0 * millis(s.plan.poll_interval)));
        Ok(t)
    }
    pub(crate) fn load_baseline(&self) -> Result<Option<Baseline>, String> {
        self.baseline.as_deref().map(load_baseline).transpose()
    }
    /// `--sample-interval`, or `default` when not given; `None` is off.
    pub(crate) fn sample_interval(
        &self,
        default: Option<Duration>,
    ) -> Result<Option<Duration>, String> {
        let Some(text) = self.sample_interval.as_deref() else {
            return Ok(default);
        };
        let interval = parse_duration(text)?;
        if interval.is_zero() {
            return Ok(None);
        }
        if interval < MIN_SAMPLE_INTERVAL {
            return Err(format!(
                "--sample-interval must be 0 (off) or at least {}",
                humantime::format_duration(MIN_SAMPLE_INTERVAL)
            ));
        }
        Ok(Some(interval))
    }
    /// Anything beyond one plain check?
    pub(crate) fn multi(&self) -> bool {
        self.rounds.is_some_and(|n| n > 1) || self.rate.is_some() || self.baseline.is_some()
    }
}

/// Read an earlier JSON report as the baseline.
pub(crate) fn load_baseline(path: &Path) -> Result<Baseline, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the baseline {}: {e}", path.display()))?;
    Baseline::from_json(&text).map_err(|e| format!("baseline {}: {e}", path.display()))
}

/// Outputs the round flags add: `--save-baseline FILE` is a JSON report.
pub(crate) fn extra_outputs(args: &RoundArgs) -> Vec<(Format, Destination)> {
    args.save_baseline
        .iter()
        .map(|p| (Format::Json, Destination::File(p.clone())))
        .collect()
}

/// The plan the round flags describe (only what `check` repeats; one plain
/// check when none is given).
pub(crate) fn plan(args: &RoundArgs, settings: &Settings) -> Result<RoundPlan, ProbeError> {
    if !args.multi() {
        // A single check samples only when asked.
        return Ok(RoundPlan {
            sample_interval: args.sample_interval(None).map_err(ProbeError::config)?,
            ..RoundPlan::default()
        });
    }
    let baseline = args.load_baseline().map_err(ProbeError::config)?;
    let threshold = args.threshold(Some(settings)).map_err(ProbeError::config)?;
    let rate = match args.rate {
        Some(per_sec) => Some(RatePlan {
            per_sec,
            duration: parse_duration(args.duration.as_deref().unwrap_or("10s"))
                .map_err(ProbeError::config)?,
            in_flight: args.concurrency.unwrap_or(DEFAULT_IN_FLIGHT),
        }),
        None => None,
    };
    let interval = match rate {
        Some(_) => Duration::ZERO,
        None => args.interval(Duration::ZERO).map_err(ProbeError::config)?,
    };
    Ok(RoundPlan {
        rounds: args.rounds,
        interval,
        rate,
        baseline: baseline.map(|b| (b, threshold)),
        sample_interval: args
            .sample_interval(
                args.rounds
                    .filter(|&n| n > 1)
                    .map(|_| DEFAULT_SAMPLE_INTERVAL),
            )
            .map_err(ProbeError::config)?,
    })
}

/// `check`, with rounds, constant rate and baseline when asked.
pub async fn check(settings: Settings, args: &RoundArgs) -> Result<Report, ProbeError> {
    check_recorded(settings, args, None).await
}

/// [`check`], recording every session into `transcript` when given.
pub(crate) async fn check_recorded(
    settings: Settings,
    args: &RoundArgs,
    transcript: Option<Arc<Transcript>>,
) -> Result<Report, ProbeError> {
    let plan = plan(args, &settings)?;
    rounds::check(settings, &plan, transcript).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_flags_validate() {
        let a = RoundArgs {
            concurrency: Some(0),
            ..Default::default()
        };
        assert!(a.concurrency().is_err());
        assert_eq!(RoundArgs::default().concurrency(), Ok(1));
        assert!(!RoundArgs::default().multi());
        let a = RoundArgs {
            rounds: Some(2),
            save_baseline: Some("b.json".into()),
            ..Default::default()
        };
        assert!(a.multi());
        assert_eq!(extra_outputs(&a).len(), 1);
        let every = |s: &str| RoundArgs {
            sample_interval: Some(s.into()),
            ..Default::default()
        };
        let default = Some(Duration::from_millis(250));
        assert_eq!(RoundArgs::default().sample_interval(default), Ok(default));
        assert_eq!(every("0").sample_interval(default), Ok(None));
        assert_eq!(
            every("1s").sample_interval(None),
            Ok(Some(Duration::from_secs(1)))
        );
        assert!(every("10ms").sample_interval(None).is_err());
    }
}
