//! Rate control (pure): a token bucket on a monotonic clock passed in by the caller.
//!
//! Frame `k` (from 0) is due at `start + k / rate`. [`Pacer::due`] says how many frames may go
//! now, at most one batch. A sender that was descheduled catches up batch by batch for up to
//! 10 ms of schedule (so a busy machine does not lower the average rate); beyond that the
//! schedule restarts and the shortfall shows in the measured rate, so a catch-up burst never
//! exceeds 10 ms worth of frames.

/// Paces frames at a fixed rate.
#[derive(Clone, Debug)]
pub struct Pacer {
    /// Frames per second; `f64::INFINITY` (or 0) sends as fast as possible.
    rate: f64,
    /// Most frames released at once.
    batch: u32,
    /// Schedule origin (ns) and frames scheduled since it.
    origin_ns: u64,
    released: u64,
    /// Frames released in total.
    total: u64,
}

impl Pacer {
    /// A pacer for `rate` frames per second starting at `now_ns`, releasing up to `batch`
    /// frames at a time (at low rates fewer, so a batch never spans more than ~100 µs).
    pub fn new(rate: f64, batch: u32, now_ns: u64) -> Pacer {
        let unlimited = !(rate.is_finite() && rate > 0.0);
        let batch = if unlimited {
            batch.max(1)
        } else {
            // A batch covers at most 100 µs of the schedule: smooth at low rates.
            (rate * 100e-6).clamp(1.0, batch.max(1) as f64) as u32
        };
        Pacer {
            rate: if unlimited { f64::INFINITY } else { rate },
            batch,
            origin_ns: now_ns,
            released: 0,
            total: 0,
        }
    }

    /// The largest batch this pacer releases.
    pub fn batch(&self) -> u32 {
        self.batch
    }

    /// Frames released so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    fn scheduled(&self, now_ns: u64) -> u64 {
        let el = now_ns.saturating_sub(self.origin_ns) as f64;
        (el * self.rate / 1e9) as u64 + 1
    }

    /// How many frames may be sent at `now_ns` (0..=batch). The caller must then call
    /// [`Pacer::sent`] with the number it actually sent.
    pub fn due(&mut self, now_ns: u64) -> u32 {
        if self.rate.is_infinite() {
            return self.batch;
        }
        let sched = self.scheduled(now_ns);
        let owed = sched.saturating_sub(self.released);
        let window = (2 * self.batch as u64)
            .max((self.rate * 10e-3) as u64)
            .max(8);
        if owed > window {
            // Fell behind (descheduled): restart the schedule here instead of bursting.
            self.origin_ns = now_ns;
            self.released = 0;
            return self.batch;
        }
        owed.min(self.batch as u64) as u32
    }

    /// Records `n` frames as sent.
    pub fn sent(&mut self, n: u32) {
        self.released += n as u64;
        self.total += n as u64;
    }

    /// Nanoseconds from `now_ns` until the next frame is due (0 if one is due now).
    pub fn wait_ns(&self, now_ns: u64) -> u64 {
        if self.rate.is_infinite() {
            return 0;
        }
        let next = self.origin_ns as f64 + (self.released as f64) * 1e9 / self.rate;
        (next - now_ns as f64).max(0.0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives a pacer with a clock that advances `step_ns` per poll; returns frames sent.
    fn drive(rate: f64, batch: u32, dur_ns: u64, step_ns: u64) -> u64 {
        let mut p = Pacer::new(rate, batch, 1_000);
        let mut now = 1_000;
        while now < 1_000 + dur_ns {
            let n = p.due(now);
            p.sent(n);
            now += step_ns.max(p.wait_ns(now).min(step_ns * 100)).max(1);
        }
        p.total()
    }

    #[test]
    fn paced_rate_is_within_one_percent_over_a_second() {
        for &(rate, step) in &[
            (1_000.0, 10_000),
            (100_000.0, 1_000),
            (1_000_000.0, 500),
            (2_500_000.0, 3_000),
        ] {
            let got = drive(rate, 64, 1_000_000_000, step) as f64;
            assert!((got - rate).abs() / rate < 0.01, "rate {rate}: sent {got}");
        }
    }

    #[test]
    fn never_more_than_one_batch_at_once() {
        let mut p = Pacer::new(1e6, 32, 0);
        assert!(p.due(0) <= 32);
        // A long stall does not release the whole backlog.
        let n = p.due(10_000_000);
        assert!(n <= 32, "{n}");
        p.sent(n);
        assert!(p.due(10_000_001) <= 32);
    }

    #[test]
    fn short_stalls_are_caught_up_long_ones_are_not() {
        // 100 kpps: a 1 ms stall (100 frames owed) is caught up (within 10 ms of schedule).
        let mut p = Pacer::new(100_000.0, 64, 0);
        let mut sent = 0;
        loop {
            let n = p.due(1_000_000);
            if n == 0 {
                break;
            }
            p.sent(n);
            sent += n;
        }
        assert_eq!(sent, 101);
        // A 50 ms stall restarts the schedule: one batch, not 5000 frames.
        let mut sent = 0;
        for _ in 0..1000 {
            let n = p.due(51_000_000);
            if n == 0 {
                break;
            }
            p.sent(n);
            sent += n;
        }
        assert!(sent <= 2 * p.batch(), "{sent}");
    }

    #[test]
    fn low_rates_use_small_batches_and_wait() {
        let mut p = Pacer::new(1000.0, 64, 0);
        assert_eq!(p.batch(), 1);
        assert_eq!(p.due(0), 1);
        p.sent(1);
        assert_eq!(p.due(1), 0);
        assert_eq!(p.wait_ns(0), 1_000_000);
        assert_eq!(p.due(1_000_000), 1);
    }

    #[test]
    fn unlimited_always_releases_a_batch() {
        let mut p = Pacer::new(f64::INFINITY, 64, 0);
        assert_eq!(p.due(0), 64);
        p.sent(64);
        assert_eq!(p.due(0), 64);
        assert_eq!(p.wait_ns(0), 0);
        assert_eq!(Pacer::new(0.0, 8, 0).due(5), 8);
    }
}
