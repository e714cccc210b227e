//! The one way bounded waits poll: [`Backoff`].

use std::time::Duration;

use tokio::time::Instant;

/// A polling loop's pause: starts at 5 ms and doubles up to a maximum, so a condition that holds
/// almost at once is seen almost at once and a long wait still polls gently; never sleeps past
/// the deadline.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// Pauses from 5 ms (or `max`, if smaller) doubling up to `max`.
    pub fn new(max: Duration) -> Self {
        Backoff {
            next: Duration::from_millis(5).min(max),
            max,
        }
    }

    /// Sleeps the next pause (never past `deadline`); false once `deadline` has passed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn tick(&mut self, deadline: Instant) -> bool {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        tokio::time::sleep(self.next.min(deadline - now)).await;
        self.next = (self.next * 2).min(self.max);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ticks_stop_at_the_deadline_and_never_sleep_past_it() {
        let mut b = Backoff::new(Duration::from_millis(8));
        assert!(
            !b.tick(Instant::now()).await,
            "a passed deadline stops at once"
        );
        let deadline = Instant::now() + Duration::from_millis(30);
        let mut ticks = 0;
        while b.tick(deadline).await {
            ticks += 1;
            assert!(ticks < 100, "bounded");
        }
        assert!(Instant::now() >= deadline);
        assert!(ticks >= 1, "a future deadline allows at least one pause");
    }
}
