//! A token bucket, and the per-key rate limits of the sync server built
//! from them. Pure: the caller passes the clock in.

use std::collections::HashMap;
use std::hash::Hash;

/// Allows `burst` events at once, refilled at `per_second`.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    burst: f64,
    per_second: f64,
    last_ms: i64,
}

impl TokenBucket {
    /// A full bucket at `now_ms`.
    pub fn new(burst: u32, per_second: u32, now_ms: i64) -> Self {
        TokenBucket {
            tokens: f64::from(burst),
            burst: f64::from(burst),
            per_second: f64::from(per_second),
            last_ms: now_ms,
        }
    }

    /// Takes one token if there is one; `false` means "rate limited".
    /// A clock that goes backwards refills nothing.
    pub fn take(&mut self, now_ms: i64) -> bool {
        self.tokens = self.refilled(now_ms);
        self.last_ms = self.last_ms.max(now_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the bucket is full again at `now_ms`: then it allows what a
    /// new bucket allows, and can be forgotten.
    pub fn full_at(&self, now_ms: i64) -> bool {
        self.refilled(now_ms) >= self.burst
    }

    /// The tokens at `now_ms` (never more than the burst).
    fn refilled(&self, now_ms: i64) -> f64 {
        let elapsed = now_ms.saturating_sub(self.last_ms).max(0);
        // Precision loss above 2^53 ms is irrelevant here.
        #[allow(clippy::cast_precision_loss)]
        let refill = elapsed as f64 / 1000.0 * self.per_second;
        (self.tokens + refill).min(self.burst)
    }
}

/// A token bucket per key, each new one full. Buckets full again are
/// forgotten now and then (when the map has doubled since the last sweep),
/// so keys seen once do not stay in memory for ever; no verdict changes,
/// since a forgotten key gets a full bucket back.
#[derive(Debug, Clone)]
pub struct RateLimits<K> {
    buckets: HashMap<K, TokenBucket>,
    burst: u32,
    per_second: u32,
    /// Sweep when the map reaches this size.
    sweep_at: usize,
}

impl<K: Hash + Eq> RateLimits<K> {
    /// Fewest buckets before a sweep.
    const MIN_SWEEP: usize = 1024;

    /// Limits of `burst` events at once per key, refilled at `per_second`.
    pub fn new(burst: u32, per_second: u32) -> Self {
        RateLimits {
            buckets: HashMap::new(),
            burst,
            per_second,
            sweep_at: Self::MIN_SWEEP,
        }
    }

    /// Takes one token from `key`'s bucket if there is one; `false` means
    /// "rate limited".
    pub fn allow(&mut self, key: K, now_ms: i64) -> bool {
        if self.buckets.len() >= self.sweep_at {
            self.buckets.retain(|_, b| !b.full_at(now_ms));
            self.sweep_at = (self.buckets.len() * 2).max(Self::MIN_SWEEP);
        }
        let (burst, per_second) = (self.burst, self.per_second);
        self.buckets
            .entry(key)
            .or_insert_with(|| TokenBucket::new(burst, per_second, now_ms))
            .take(now_ms)
    }

    /// Keys with a bucket in memory.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key has a bucket in memory.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let mut b = TokenBucket::new(3, 2, 0);
        assert!(b.take(0) && b.take(0) && b.take(0));
        assert!(!b.take(0));
        assert!(!b.take(400));
        assert!(b.take(500));
        assert!(!b.take(500));
        // Never more than the burst, whatever the pause.
        assert!(b.take(1_000_000) && b.take(1_000_000) && b.take(1_000_000));
        assert!(!b.take(1_000_000));
        // A clock going backwards gives nothing.
        assert!(!b.take(0));
    }

    #[test]
    fn idle_keys_are_forgotten_and_limited_ones_kept() {
        let mut limits = RateLimits::new(2, 1);
        // Key 0 uses its burst: limited at 0 ms, full again at 2,000 ms.
        assert!(limits.allow(0u32, 0) && limits.allow(0, 0));
        assert!(!limits.allow(0, 0));
        // A thousand other keys, each seen once, at 1,000 ms: the map
        // reaches the sweep size while key 0 is not full yet (1 token).
        for k in 1..RateLimits::<u32>::MIN_SWEEP as u32 {
            assert!(limits.allow(k, 1_000));
        }
        assert_eq!(limits.len(), RateLimits::<u32>::MIN_SWEEP);
        // The sweep at 1,000 ms keeps every bucket that is not full: key 0
        // and the thousand that each lost a token.
        assert!(limits.allow(5_000, 1_000));
        assert_eq!(limits.len(), RateLimits::<u32>::MIN_SWEEP + 1);
        // Key 0 still has its limit: one token refilled, none more.
        assert!(limits.allow(0, 1_000));
        assert!(!limits.allow(0, 1_000));
        // Long after, the next sweep (at twice the size) forgets the idle.
        for k in 10_000..10_000 + RateLimits::<u32>::MIN_SWEEP as u32 {
            limits.allow(k, 60_000);
        }
        assert!(
            limits.len() < RateLimits::<u32>::MIN_SWEEP + 10,
            "{}",
            limits.len()
        );
        // A forgotten key starts full, as a new one does.
        assert!(limits.allow(0, 60_000) && limits.allow(0, 60_000));
        assert!(!limits.allow(0, 60_000));
    }
}
