//! A graceful shutdown's closes, spread over a period.

use crate::app::handler::ConnId;
use std::time::{Duration, Instant};

/// Closes spread over a period: the n-th of N connections is closed at
/// `start + period * n / N`, so a restart does not make every client reconnect in the
/// same second.
pub(crate) struct Drain {
    pub(crate) ids: Vec<ConnId>,
    /// Closes queued so far.
    pub(crate) done: usize,
    pub(crate) start: Instant,
    pub(crate) period: Duration,
    pub(crate) code: u16,
    pub(crate) reason: String,
}

impl Drain {
    /// How many closes are due at `now`.
    pub(crate) fn due(&self, now: Instant) -> usize {
        let n = self.ids.len();
        if self.period.is_zero() {
            return n;
        }
        let elapsed = now.saturating_duration_since(self.start).as_nanos();
        let due = elapsed.saturating_mul(n as u128) / self.period.as_nanos().max(1) + 1;
        usize::try_from(due).unwrap_or(n).min(n)
    }

    pub(crate) fn next_at(&self) -> Option<Instant> {
        let n = self.ids.len();
        (self.done < n).then(|| {
            let at = self.period.as_nanos() * self.done as u128 / n as u128;
            self.start + Duration::from_nanos(u64::try_from(at).unwrap_or(u64::MAX))
        })
    }
}
