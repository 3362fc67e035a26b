//! A token bucket, the per-key rate limit of the sync server. Pure: the
//! caller passes the clock in.

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
        let elapsed = now_ms.saturating_sub(self.last_ms).max(0);
        // Precision loss above 2^53 ms is irrelevant here.
        #[allow(clippy::cast_precision_loss)]
        let refill = elapsed as f64 / 1000.0 * self.per_second;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last_ms = self.last_ms.max(now_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
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
}
