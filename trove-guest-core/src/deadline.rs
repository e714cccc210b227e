//! Deadlines that cannot overflow.
//!
//! `Instant::now() + timeout` panics when `timeout` is huge (a caller's
//! `timeout_secs = u64::MAX`, say). Every deadline in the workspace is computed with
//! [`deadline`] instead, which saturates at a far future.

use std::time::Duration;

use tokio::time::Instant;

/// About 30 years: what "no deadline" means when a timeout does not fit in an [`Instant`].
pub const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 86_400);

/// `now + timeout`, or `now + FAR_FUTURE` when that sum does not fit (never panics).
pub fn deadline(timeout: Duration) -> Instant {
    deadline_from(Instant::now(), timeout)
}

/// `start + timeout`, saturating like [`deadline`].
pub fn deadline_from(start: Instant, timeout: Duration) -> Instant {
    start
        .checked_add(timeout)
        .or_else(|| start.checked_add(FAR_FUTURE))
        .unwrap_or(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_timeout_gives_a_far_deadline_instead_of_panicking() {
        let now = Instant::now();
        let far = deadline_from(now, Duration::MAX);
        assert!(far >= now + FAR_FUTURE, "saturates at the far future");
        let from_secs = deadline(Duration::from_secs(u64::MAX));
        assert!(from_secs > now + Duration::from_secs(3600 * 24 * 365));
    }

    #[test]
    fn an_ordinary_timeout_is_added_exactly() {
        let now = Instant::now();
        assert_eq!(
            deadline_from(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
    }
}
