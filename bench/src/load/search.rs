//! Search logic of the RFC 2544 / RFC 2889 procedures (pure: trials are run by the caller).

/// Binary search for the largest value (a rate, a burst length, a number of addresses) at
/// which a trial passes, between `min` and `max`.
///
/// The first trial is at `max` (a device that passes there needs one trial); then the
/// interval between the largest pass and the smallest failure is halved until it is no wider
/// than `resolution`. Pass/fail is monotonic by assumption (RFC 2544 §26.1).
#[derive(Clone, Debug, PartialEq)]
pub struct BinarySearch {
    pass: Option<u64>,
    fail: Option<u64>,
    min: u64,
    max: u64,
    resolution: u64,
    trials: u32,
}

impl BinarySearch {
    /// A search over `min..=max` that stops when pass and fail are `resolution` apart.
    pub fn new(min: u64, max: u64, resolution: u64) -> BinarySearch {
        BinarySearch {
            pass: None,
            fail: None,
            min: min.min(max),
            max,
            resolution: resolution.max(1),
            trials: 0,
        }
    }

    /// The value to try next, or `None` when the search is over.
    pub fn next(&self) -> Option<u64> {
        match (self.pass, self.fail) {
            (None, None) => Some(self.max),
            (Some(_), None) => None, // passed at max
            (None, Some(f)) => {
                if f <= self.min {
                    None
                } else if f - self.min <= self.resolution {
                    // The last chance: the minimum itself.
                    (self.trials < 64 && f != self.min).then_some(self.min)
                } else {
                    Some(self.min + (f - self.min) / 2)
                }
            }
            (Some(p), Some(f)) => (f > p && f - p > self.resolution).then(|| p + (f - p) / 2),
        }
    }

    /// Records a trial's outcome at `value`.
    pub fn record(&mut self, value: u64, passed: bool) {
        self.trials += 1;
        if passed {
            self.pass = Some(self.pass.map_or(value, |p| p.max(value)));
        } else {
            self.fail = Some(self.fail.map_or(value, |f| f.min(value)));
            if value <= self.min {
                self.min = value; // nothing passes: next() ends
            }
        }
    }

    /// The largest value that passed, if any.
    pub fn result(&self) -> Option<u64> {
        self.pass
    }

    /// Trials recorded.
    pub fn trials(&self) -> u32 {
        self.trials
    }

    /// Most trials still needed (for a time-left estimate).
    pub fn remaining_bound(&self) -> u32 {
        let (lo, hi) = match (self.pass, self.fail) {
            (None, None) => return 1 + bits(self.max - self.min, self.resolution),
            (Some(_), None) => return 0,
            (None, Some(f)) => (self.min, f),
            (Some(p), Some(f)) => (p, f),
        };
        bits(hi.saturating_sub(lo), self.resolution)
    }
}

fn bits(width: u64, res: u64) -> u32 {
    let mut n = 0;
    let mut w = width;
    while w > res {
        w /= 2;
        n += 1;
    }
    n + 1
}

/// Whether a trial passes: the lost fraction is at most `tolerance` (0 for RFC 2544's
/// zero-loss throughput; e.g. 0.001 for "0.1% loss tolerated").
pub fn passes(sent: u64, lost: u64, tolerance: f64) -> bool {
    if sent == 0 {
        return false;
    }
    lost as f64 <= tolerance * sent as f64
}

/// RFC 2544 §26.3 frame loss rate: offered load from 100% down in `step` (e.g. 10%) steps,
/// until two successive trials lose nothing. Given the losses recorded so far (one per step,
/// in order), returns the next load as a fraction of the maximum, or `None` when done.
pub fn next_loss_step(losses: &[u64], step_pct: u32) -> Option<f64> {
    let n = losses.len();
    if n >= 2 && losses[n - 1] == 0 && losses[n - 2] == 0 {
        return None;
    }
    let pct = 100i64 - (n as i64) * step_pct.max(1) as i64;
    (pct > 0).then(|| pct as f64 / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a search against a device that passes up to `cap` (inclusive).
    fn run(min: u64, max: u64, res: u64, cap: u64) -> (Option<u64>, u32) {
        let mut s = BinarySearch::new(min, max, res);
        let mut guard = 0;
        while let Some(v) = s.next() {
            assert!((min..=max).contains(&v), "tried {v} outside {min}..={max}");
            s.record(v, v <= cap);
            guard += 1;
            assert!(guard < 100, "search does not end");
        }
        (s.result(), s.trials())
    }

    #[test]
    fn passing_at_max_takes_one_trial() {
        assert_eq!(run(0, 1000, 10, 5000), (Some(1000), 1));
    }

    #[test]
    fn finds_the_threshold_within_resolution() {
        for cap in [1, 17, 333, 500, 999] {
            let (r, trials) = run(0, 1000, 10, cap);
            let r = r.expect("something passes");
            assert!(r <= cap && cap - r <= 10, "cap {cap} -> {r}");
            assert!(trials <= 9, "cap {cap}: {trials} trials");
        }
    }

    #[test]
    fn exact_integer_search() {
        for cap in [1, 2, 3, 100, 4095, 4096] {
            let (r, _) = run(1, 8192, 1, cap);
            assert_eq!(r, Some(cap));
        }
    }

    #[test]
    fn nothing_passes() {
        let (r, trials) = run(1, 1000, 1, 0);
        assert_eq!(r, None);
        assert!(trials <= 12, "{trials}");
        let (r, _) = run(100, 1000, 50, 10);
        assert_eq!(r, None);
    }

    #[test]
    fn remaining_bound_covers_the_real_number_of_trials() {
        let mut s = BinarySearch::new(0, 1_000_000, 10_000);
        let bound = s.remaining_bound();
        let mut n = 0;
        while let Some(v) = s.next() {
            s.record(v, v <= 123_456);
            n += 1;
        }
        assert!(n <= bound, "{n} > {bound}");
    }

    #[test]
    fn loss_tolerance() {
        assert!(passes(1000, 0, 0.0));
        assert!(!passes(1000, 1, 0.0));
        assert!(passes(1000, 1, 0.001));
        assert!(!passes(1000, 2, 0.001));
        assert!(!passes(0, 0, 0.0));
    }

    #[test]
    fn loss_steps_stop_after_two_clean_trials() {
        assert_eq!(next_loss_step(&[], 10), Some(1.0));
        assert_eq!(next_loss_step(&[5], 10), Some(0.9));
        assert_eq!(next_loss_step(&[5, 0], 10), Some(0.8));
        assert_eq!(next_loss_step(&[5, 0, 0], 10), None);
        assert_eq!(next_loss_step(&[5, 0, 3], 10), Some(0.7));
        let many = [1u64; 10];
        assert_eq!(next_loss_step(&many, 10), None);
    }
}
