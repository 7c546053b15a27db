//! Capped exponential back-off between recovery attempts.

use std::time::Duration;

/// Doubles the pause after each consecutive failure, up to a cap, and starts over after
/// a success: a dependency that is down for minutes is probed every `max`, one that
/// blinked is retried almost at once.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
        }
    }

    /// The pause before the next attempt; each call doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        delay
    }

    /// Forget past failures after a success.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_start_over_after_a_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));

        let delays: Vec<_> = (0..4).map(|_| backoff.next_delay().as_millis()).collect();
        backoff.reset();

        assert_eq!(delays, [100, 200, 350, 350]);
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }
}
