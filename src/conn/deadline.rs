//! A connection's deadlines: which one comes next, and when. The rules live here once;
//! the connection acts on whichever has passed.

use super::{Conn, Phase};
use crate::app::ctx::Timeouts;
use crate::config::Config;
use std::time::{Duration, Instant};

/// What a connection waits for, and what happens when the wait is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Deadline {
    /// The upgrade request must be complete (`handshake_timeout` after accept): drop.
    Handshake,
    /// Silent for `ping_interval`: send a Ping.
    Ping,
    /// Silent for `idle_timeout` (pinged, or never to be pinged because the idle
    /// timeout is not longer than the ping interval): close with 1001.
    Idle,
    /// Output pending, and none of it taken by the socket for `write_timeout`: drop
    /// (the peer stopped reading).
    Write,
    /// Output over `max_pending_output` for `SLOW_AFTER` (or `write_timeout` if
    /// shorter): close 1008 (a consumer slower than what it is sent).
    Slow,
    /// Closing for `close_timeout` (no Close from the peer, output not drained, or
    /// lingering): drop.
    Close,
}

/// How long output may stay over `max_pending_output`: long enough for a burst to
/// drain, short enough that a slow consumer pins little memory.
pub(crate) const SLOW_AFTER: Duration = Duration::from_secs(1);

/// Milliseconds since the loop's epoch, wrapping every 49.7 days: 4 bytes per connection
/// instead of a 16-byte `Instant`. Only differences are used, and a connection's silence
/// never lasts anywhere near the wrap (the idle timeout ends it first).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stamp(u32);

impl Stamp {
    pub(crate) fn at(now: Instant, epoch: Instant) -> Stamp {
        // Truncation is the wrap.
        Stamp(now.saturating_duration_since(epoch).as_millis() as u32)
    }

    /// The instant this stamp stands for, as seen from `now`.
    pub(crate) fn instant(self, now: Instant, epoch: Instant) -> Instant {
        let ago = Stamp::at(now, epoch).0.wrapping_sub(self.0);
        now.checked_sub(Duration::from_millis(u64::from(ago)))
            .unwrap_or(epoch)
    }
}

impl<S> Conn<S> {
    /// The nearest deadline and its kind; None once the connection is dead.
    pub(crate) fn deadline(
        &self,
        cfg: &Config,
        timeouts: Timeouts,
        now: Instant,
        epoch: Instant,
    ) -> Option<(Instant, Deadline)> {
        let idle_timeout = timeouts.idle_timeout.unwrap_or(cfg.idle_timeout);
        let ping_interval = timeouts.ping_interval.unwrap_or(cfg.ping_interval);
        let last_read = self.last_read.instant(now, epoch);
        let busy = self.busy.as_deref();
        match self.phase {
            Phase::Handshake => Some((last_read + cfg.handshake_timeout, Deadline::Handshake)),
            Phase::Open => {
                // An idle timeout within the ping interval is a plain read deadline (the
                // application pings, or the client talks): no ping from us first.
                let read = if self.pinged() || idle_timeout <= ping_interval {
                    (last_read + idle_timeout, Deadline::Idle)
                } else {
                    (last_read + ping_interval, Deadline::Ping)
                };
                let write = busy
                    .and_then(|b| b.out_since)
                    .map(|t| (t + cfg.write_timeout, Deadline::Write));
                let slow = busy
                    .and_then(|b| b.over_since)
                    .map(|t| (t + SLOW_AFTER.min(cfg.write_timeout), Deadline::Slow));
                // The earliest; on a tie the read deadline, then the write one.
                [Some(read), write, slow]
                    .into_iter()
                    .flatten()
                    .min_by_key(|&(at, _)| at)
            }
            Phase::Closing | Phase::Draining | Phase::Lingering => {
                let since = busy.map_or(last_read, |b| b.since);
                Some((since + cfg.close_timeout, Deadline::Close))
            }
            Phase::Dead => None,
        }
    }
}
