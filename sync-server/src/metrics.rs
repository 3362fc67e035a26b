//! Counters for `GET /metrics`, in the Prometheus text format, written by
//! hand: a handful of atomics and one map of refusal reasons.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Upper bounds of the ingest latency histogram, in seconds.
const BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// The server's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Open WebSocket connections.
    pub connections: AtomicU64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Bytes received in binary frames.
    pub bytes_in: AtomicU64,
    /// Bytes sent in binary frames.
    pub bytes_out: AtomicU64,
    /// Ops and changes stored.
    pub accepted: AtomicU64,
    /// Ops and changes refused, by rejection code.
    rejected: Mutex<BTreeMap<String, u64>>,
    /// Frames refused, by error code.
    refused: Mutex<BTreeMap<&'static str, u64>>,
    /// Ingest latency: counts per bucket (cumulative on render), sum in µs.
    latency: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
}

impl Metrics {
    /// Counts one refused op or change.
    pub fn rejected(&self, code: &str) {
        let mut map = self.rejected.lock().unwrap_or_else(PoisonError::into_inner);
        *map.entry(code.to_owned()).or_default() += 1;
    }

    /// How many ops or changes were refused with this code.
    pub fn rejected_count(&self, code: &str) -> u64 {
        let map = self.rejected.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(code).copied().unwrap_or(0)
    }

    /// Counts one refused frame.
    pub fn refused(&self, code: &'static str) {
        let mut map = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
        *map.entry(code).or_default() += 1;
    }

    /// Records the time one ingest took.
    pub fn observe_ingest(&self, took: Duration) {
        let secs = took.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.latency[i].fetch_add(1, Ordering::Relaxed);
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self, subscriptions: usize) -> String {
        let mut out = String::new();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut gauge = |name: &str, help: &str, kind: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        gauge(
            "karmyq_connections",
            "Open sync connections.",
            "gauge",
            load(&self.connections),
        );
        gauge(
            "karmyq_connections_total",
            "Sync connections accepted.",
            "counter",
            load(&self.connections_total),
        );
        gauge(
            "karmyq_subscriptions",
            "Community subscriptions.",
            "gauge",
            u64::try_from(subscriptions).unwrap_or(u64::MAX),
        );
        gauge(
            "karmyq_bytes_in_total",
            "Bytes received in frames.",
            "counter",
            load(&self.bytes_in),
        );
        gauge(
            "karmyq_bytes_out_total",
            "Bytes sent in frames.",
            "counter",
            load(&self.bytes_out),
        );
        gauge(
            "karmyq_changes_accepted_total",
            "Ops and changes stored.",
            "counter",
            load(&self.accepted),
        );
        let _ = writeln!(
            out,
            "# HELP karmyq_changes_rejected_total Ops and changes refused, by reason.\n# TYPE karmyq_changes_rejected_total counter"
        );
        for (code, n) in self
            .rejected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(
                out,
                "karmyq_changes_rejected_total{{reason=\"{code}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP karmyq_frames_refused_total Frames answered with an error, by code.\n# TYPE karmyq_frames_refused_total counter"
        );
        for (code, n) in self
            .refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(out, "karmyq_frames_refused_total{{code=\"{code}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP karmyq_ingest_seconds Time to validate and store one uploaded bundle.\n# TYPE karmyq_ingest_seconds histogram"
        );
        let mut cumulative = 0;
        for (bound, count) in BUCKETS.iter().zip(&self.latency) {
            cumulative += load(count);
            let _ = writeln!(
                out,
                "karmyq_ingest_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = load(&self.latency_count);
        let _ = writeln!(out, "karmyq_ingest_seconds_bucket{{le=\"+Inf\"}} {count}");
        #[allow(clippy::cast_precision_loss)]
        let sum = load(&self.latency_sum_us) as f64 / 1e6;
        let _ = writeln!(out, "karmyq_ingest_seconds_sum {sum}");
        let _ = writeln!(out, "karmyq_ingest_seconds_count {count}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let m = Metrics::default();
        m.rejected("not_a_member");
        m.rejected("not_a_member");
        m.refused("bad_frame");
        m.observe_ingest(Duration::from_millis(3));
        m.observe_ingest(Duration::from_secs(9));
        let text = m.render(2);
        assert!(text.contains("karmyq_subscriptions 2"));
        assert!(text.contains("karmyq_changes_rejected_total{reason=\"not_a_member\"} 2"));
        assert!(text.contains("karmyq_frames_refused_total{code=\"bad_frame\"} 1"));
        assert!(text.contains("karmyq_ingest_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("karmyq_ingest_seconds_bucket{le=\"2.5\"} 1"));
        assert!(text.contains("karmyq_ingest_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(text.contains("karmyq_ingest_seconds_count 2"));
        assert_eq!(m.rejected_count("not_a_member"), 2);
    }
}
