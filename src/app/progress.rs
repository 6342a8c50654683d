//! A progress bar for `check` on a terminal: bytes moved and what the check is
//! doing (sending, receiving, waiting), shown on stderr once a check has run for a
//! moment. Nothing when stderr is not a terminal or with `--quiet`.
//!
//! It stays out of the probers: a ticker polls the byte counters every guarded
//! connection adds to ([`crate::io::net::TOTAL_TRAFFIC`]) and infers the phase from
//! which direction moved.

use std::future::Future;
use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::io::net::TOTAL_TRAFFIC;
use crate::probe::settings::Settings;

/// Quick checks finish before the bar would appear.
const SHOW_AFTER: Duration = Duration::from_millis(800);
const TICK: Duration = Duration::from_millis(200);
/// Less than this many bytes per tick in both directions is waiting.
const IDLE_BYTES: u64 = 2048;

/// Show progress: stderr is a terminal and the user did not ask for quiet.
pub(crate) fn wanted(quiet: bool) -> bool {
    !quiet && std::io::stderr().is_terminal()
}

/// About how many bytes a check moves: every rung sent once (base64 grows it by a
/// third, plus headers) and fetched once per retrieval protocol.
pub(crate) fn expected_bytes(settings: &Settings) -> u64 {
    let one_way: u64 = settings
        .plan
        .sizes
        .iter()
        .map(|s| s.saturating_mul(4) / 3 + s / 38 + 2048)
        .sum();
    let fetches = settings.target.retrieval_endpoints().count() as u64;
    one_way.saturating_mul(1 + fetches)
}

/// What the counters say the check is doing.
pub(crate) fn phase_of(read_delta: u64, written_delta: u64) -> &'static str {
    if read_delta < IDLE_BYTES && written_delta < IDLE_BYTES {
        "waiting"
    } else if written_delta >= read_delta {
        "sending"
    } else {
        "receiving"
    }
}

/// Run `work`, showing a progress bar on stderr while it runs when `show`.
pub(crate) async fn track<F: Future>(show: bool, expected: u64, work: F) -> F::Output {
    if !show {
        return work.await;
    }
    let bar = ProgressBar::with_draw_target(Some(expected.max(1)), ProgressDrawTarget::hidden());
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {elapsed:>4} [{wide_bar}] {bytes}/~{total_bytes} {bytes_per_sec:>11} {msg:9}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let ticker = {
        let bar = bar.clone();
        async move {
            let base = total();
            let mut last = (0u64, 0u64);
            let mut interval = tokio::time::interval(TICK);
            let mut ticks: u32 = 0;
            loop {
                interval.tick().await;
                ticks = ticks.saturating_add(1);
                if TICK * ticks >= SHOW_AFTER && bar.is_hidden() {
                    bar.set_draw_target(ProgressDrawTarget::stderr());
                }
                let now = total();
                let moved = (now.0.saturating_sub(base.0), now.1.saturating_sub(base.1));
                let phase = phase_of(moved.0 - last.0.min(moved.0), moved.1 - last.1.min(moved.1));
                last = moved;
                let bytes = moved.0 + moved.1;
                if bytes > bar.length().unwrap_or(0) {
                    bar.set_length(bytes);
                }
                bar.set_position(bytes);
                bar.set_message(phase);
                bar.tick();
            }
        }
    };
    let output = tokio::select! {
        out = work => out,
        _ = ticker => unreachable!("the ticker never ends"),
    };
    bar.finish_and_clear();
    output
}

/// (read, written) by every guarded connection so far.
fn total() -> (u64, u64) {
    (
        TOTAL_TRAFFIC.read.load(Ordering::Relaxed),
        TOTAL_TRAFFIC.written.load(Ordering::Relaxed),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_follows_the_direction_that_moved() {
        assert_eq!(phase_of(0, 0), "waiting");
        assert_eq!(phase_of(100, 1000), "waiting");
        assert_eq!(phase_of(100, 1 << 20), "sending");
        assert_eq!(phase_of(1 << 20, 4096), "receiving");
    }

    #[tokio::test]
    async fn without_a_terminal_the_work_just_runs() {
        assert_eq!(track(false, 10, async { 7 }).await, 7);
        // Shown or not, the result is the work's.
        assert_eq!(track(true, 10, async { 8 }).await, 8);
    }
}
