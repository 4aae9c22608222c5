//! Waits that double after each failure in a row, up to a cap: how every retry that outlives
//! one invocation is spaced (a pending alert's next delivery, an unconfirmed destination's next
//! check, the next read of a Slack webhook that could not be read).

use chrono::TimeDelta;

/// `first` after the first failure, doubling after each one more, never more than `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: TimeDelta,
    pub max: TimeDelta,
}

impl Backoff {
    pub const fn new(first: TimeDelta, max: TimeDelta) -> Self {
        Self { first, max }
    }

    /// The wait after the `failures`-th failure in a row (0 counts as the first).
    pub fn after(&self, failures: u32) -> TimeDelta {
        let mut wait = self.first;
        for _ in 1..failures {
            if wait >= self.max {
                break;
            }
            wait = wait * 2;
        }
        wait.min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_to_the_cap_and_stay_there() {
        let backoff = Backoff::new(TimeDelta::seconds(30), TimeDelta::minutes(5));
        let waits: Vec<i64> = (0..=7).map(|n| backoff.after(n).num_seconds()).collect();
        assert_eq!(waits, [30, 30, 60, 120, 240, 300, 300, 300]);
        assert_eq!(backoff.after(u32::MAX), TimeDelta::minutes(5));
    }
}
