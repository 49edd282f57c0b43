//! [`PluginMetrics`]: what each plugin did, counted lock-free on every call: calls, each
//! verdict, each kind of failure, and a latency histogram with fixed buckets (the shape a
//! Prometheus exporter will want). A plugin's metrics outlive reloads of the plugin.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::interceptor::InterceptAction;

/// Upper bounds of the latency buckets, in microseconds; a last bucket takes the rest.
pub const LATENCY_BUCKETS_US: [u64; 16] = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 50_000, 100_000, 1_000_000,
];

/// Why a call produced no action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The plugin trapped (including a memory cap breach).
    Trap,
    /// The time or fuel budget ran out.
    Timeout,
    /// The plugin answered with an action membrane cannot carry out.
    BadAction,
    /// No instance could be had within the budget.
    Unavailable,
}

#[derive(Debug, Default)]
pub struct PluginMetrics {
    verdicts: [AtomicU64; 6],
    failures: [AtomicU64; 4],
    latency: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    latency_sum_ns: AtomicU64,
}

/// A copy of a plugin's metrics at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetricsSnapshot {
    pub calls: u64,
    pub continued: u64,
    pub modified: u64,
    pub blocked: u64,
    pub mocked: u64,
    pub paused: u64,
    pub delayed: u64,
    pub traps: u64,
    pub timeouts: u64,
    pub bad_actions: u64,
    pub unavailable: u64,
    /// Calls per latency bucket ([`LATENCY_BUCKETS_US`], then the rest).
    pub latency: [u64; LATENCY_BUCKETS_US.len() + 1],
    pub latency_sum: Duration,
}

impl PluginMetrics {
    /// Counts one call that took `elapsed` and ended as `outcome`.
    pub fn record(&self, elapsed: Duration, outcome: Result<&InterceptAction, Failure>) {
        let counter = match outcome {
            Ok(action) => &self.verdicts[verdict_index(action)],
            Err(failure) => &self.failures[failure as usize],
        };
        counter.fetch_add(1, Relaxed);
        // In u64 nanoseconds (584 years): a call costs a few hundred of them, u128 a few more.
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BUCKETS_US
            .iter()
            .position(|&bound| nanos <= bound * 1_000)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        self.latency[bucket].fetch_add(1, Relaxed);
        self.latency_sum_ns.fetch_add(nanos, Relaxed);
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let verdict = |i: usize| self.verdicts[i].load(Relaxed);
        let failure = |f: Failure| self.failures[f as usize].load(Relaxed);
        // Every call ends in one verdict or one failure: their sum is the calls.
        let calls = (self.verdicts.iter())
            .chain(&self.failures)
            .map(|count| count.load(Relaxed))
            .sum();
        MetricsSnapshot {
            calls,
            continued: verdict(0),
            modified: verdict(1),
            blocked: verdict(2),
            mocked: verdict(3),
            paused: verdict(4),
            delayed: verdict(5),
            traps: failure(Failure::Trap),
            timeouts: failure(Failure::Timeout),
            bad_actions: failure(Failure::BadAction),
            unavailable: failure(Failure::Unavailable),
            latency: std::array::from_fn(|i| self.latency[i].load(Relaxed)),
            latency_sum: Duration::from_nanos(self.latency_sum_ns.load(Relaxed)),
        }
    }
}

fn verdict_index(action: &InterceptAction) -> usize {
    match action {
        InterceptAction::Continue => 0,
        InterceptAction::Modify(_) => 1,
        InterceptAction::Block { .. } => 2,
        InterceptAction::Mock { .. } => 3,
        InterceptAction::Pause { .. } => 4,
        InterceptAction::Delay { .. } => 5,
    }
}

impl MetricsSnapshot {
    pub fn failures(&self) -> u64 {
        self.traps + self.timeouts + self.bad_actions + self.unavailable
    }

    /// The upper bound of the bucket holding the `q` quantile (0..=1) of call latency; `None`
    /// before any call or when it falls in the open last bucket.
    pub fn latency_quantile(&self, q: f64) -> Option<Duration> {
        let total: u64 = self.latency.iter().sum();
        let rank = (q.clamp(0.0, 1.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (bucket, count) in self.latency.iter().enumerate() {
            seen += count;
            if seen >= rank && total > 0 {
                return LATENCY_BUCKETS_US
                    .get(bucket)
                    .map(|&bound| Duration::from_micros(bound));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_verdicts_failures_and_latency() {
        let metrics = PluginMetrics::default();
        let block = InterceptAction::Block {
            reason: "no".into(),
        };
        for _ in 0..98 {
            metrics.record(Duration::from_micros(3), Ok(&InterceptAction::Continue));
        }
        metrics.record(Duration::from_micros(700), Ok(&block));
        metrics.record(Duration::from_millis(150), Err(Failure::Timeout));
        let snapshot = metrics.snapshot();
        assert_eq!(snapshot.calls, 100);
        assert_eq!((snapshot.continued, snapshot.blocked), (98, 1));
        assert_eq!((snapshot.timeouts, snapshot.failures()), (1, 1));
        assert_eq!(
            snapshot.latency_quantile(0.5),
            Some(Duration::from_micros(5))
        );
        assert_eq!(
            snapshot.latency_quantile(0.99),
            Some(Duration::from_millis(1))
        );
        assert_eq!(snapshot.latency_quantile(1.0), Some(Duration::from_secs(1)));
        assert_eq!(MetricsSnapshot::default().latency_quantile(0.5), None);
    }
}
