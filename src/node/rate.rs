//! A token bucket shared by the tasks that send through it: `acquire(n)`
//! waits until `n` bytes may pass at the configured rate. The lock is held
//! only to do arithmetic, never across an await.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct RateLimit {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimit {
    /// `rate` bytes per second; bursts up to 50 ms worth (at least 64 KiB).
    pub fn new(rate: u64) -> Self {
        let rate = rate as f64;
        let burst = (rate * 0.05).max(64.0 * 1024.0);
        RateLimit {
            rate,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes `n` tokens (going into debt if needed) and returns how long
    /// the caller must wait before sending.
    fn take(&self, n: usize, now: Instant) -> Duration {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = *st;
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.burst)
            - n as f64;
        *st = (tokens, now);
        if tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-tokens / self.rate)
        }
    }

    pub async fn acquire(&self, n: usize) {
        let wait = self.take(n, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debt_turns_into_wait_time() {
        let r = RateLimit::new(1 << 20);
        let t = Instant::now();
        let burst = r.burst as usize;
        assert_eq!(r.take(burst, t), Duration::ZERO);
        let w = r.take(1 << 20, t);
        assert!((w.as_secs_f64() - 1.0).abs() < 1e-6, "{w:?}");
        // two seconds later the debt is paid and a burst is back, no more
        let w = r.take(burst, t + Duration::from_secs(3));
        assert_eq!(w, Duration::ZERO);
        assert!(r.take(1, t + Duration::from_secs(3)) > Duration::ZERO);
    }
}
