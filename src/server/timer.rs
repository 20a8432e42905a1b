//! Hashed timing wheel holding at most one timer per key.
//!
//! Keys belong to an [`Owner`] (connections, metrics scrapers, application timers),
//! and each owner numbers its keys from 0 in a space of its own: every node table
//! stays dense, 16 bytes per key in use, whatever the other owners do.
//!
//! Time is measured in absolute ticks since the wheel's `start`. A timer due
//! at `at` gets the tick `ceil((at - start) / tick)`, and `expire(now)` fires
//! every timer whose tick is `<= floor((now - start) / tick)`, so timers never
//! fire early and at most one tick late.
//!
//! Storage is a `Vec` of 16-byte nodes per owner, indexed by key. Each node sits in an
//! intrusive doubly-linked list: either the list of wheel slot
//! `due_tick & (slots - 1)`, or an extra "overdue" list for timers that were
//! scheduled for a tick the wheel has already processed. A bitmap of non-empty
//! slots makes `next_deadline` cheap.

use std::time::{Duration, Instant};

/// "No node" marker for the intrusive list links and slot heads (owner bits 3: no owner).
const NONE: u32 = u32::MAX;
/// A packed key is `owner << INDEX_BITS | index`.
const INDEX_BITS: u32 = 30;
const INDEX_MASK: u32 = (1 << INDEX_BITS) - 1;
const OWNERS: usize = 3;

/// Who a timer belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// A connection's deadline; the index is its slab key.
    Conn = 0,
    /// A metrics scraper's timeout.
    Scraper = 1,
    /// A timer the application armed.
    App = 2,
}

/// A timer's identity: its owner and the owner's own index (below 2^30).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct TimerKey(u32);

impl TimerKey {
    /// None when `index` does not fit in 30 bits.
    pub(crate) fn new(owner: Owner, index: usize) -> Option<TimerKey> {
        let index = u32::try_from(index).ok().filter(|&i| i <= INDEX_MASK)?;
        Some(TimerKey((owner as u32) << INDEX_BITS | index))
    }

    pub(crate) fn owner(self) -> Owner {
        match self.0 >> INDEX_BITS {
            0 => Owner::Conn,
            1 => Owner::Scraper,
            _ => Owner::App,
        }
    }

    pub(crate) fn index(self) -> usize {
        (self.0 & INDEX_MASK) as usize
    }
}
/// `Node::due` value of a node that holds no armed timer.
const UNARMED: u64 = u64::MAX;
/// Largest due tick stored. A timer clamped to it never fires (`expire` never
/// gets further than `MAX_TICK - 1`), so clamping can only make a timer late,
/// never early. It is far enough below `u64::MAX` that `tick + slots` cannot
/// overflow.
const MAX_TICK: u64 = u64::MAX >> 1;
/// Upper bound on the number of slots (keeps slot indices well inside `u32`).
const MAX_SLOTS: usize = 1 << 30;

/// One key's timer: its list links and its absolute due tick.
#[derive(Clone, Copy)]
struct Node {
    /// Previous node in the list, or `NONE` when this node is the list head.
    prev: u32,
    /// Next node in the list, or `NONE` at the end.
    next: u32,
    /// Absolute due tick, or `UNARMED`.
    due: u64,
}

const UNARMED_NODE: Node = Node {
    prev: NONE,
    next: NONE,
    due: UNARMED,
};

/// Hashed timing wheel with at most one timer per key.
///
/// `schedule` and `cancel` are O(1); `next_deadline` scans a bitmap of non-empty
/// slots; each owner's node table grows on demand to its largest index.
pub(crate) struct TimerWheel {
    /// Instant of tick 0.
    start: Instant,
    /// Tick length as given (at least 1 ns).
    tick: Duration,
    /// Tick length in nanoseconds (at least 1).
    tick_nanos: u128,
    /// Number of slots, a power of two.
    slots: usize,
    /// List heads: `slots` wheel slots followed by the overdue list.
    heads: Vec<u32>,
    /// Bit `s` is set when wheel slot `s` is non-empty (overdue list excluded).
    bitmap: Vec<u64>,
    /// Nodes per owner, indexed by key.
    nodes: [Vec<Node>; OWNERS],
    /// First tick not processed yet: every wheel node has `due >= cur`, every
    /// overdue node has `due < cur`.
    cur: u64,
    /// Number of armed timers.
    len: usize,
    /// Lower bound of the due ticks in the overdue list (`UNARMED` when the
    /// list is empty); not raised on removal, reset when the list empties.
    overdue_min: u64,
}

impl TimerWheel {
    /// `tick`: resolution (timers fire at most one tick late, never early). `slots`:
    /// wheel size, rounded up to a power of two and clamped to `1..=2^30`. Deadlines
    /// more than a revolution away are fine: nodes keep their absolute due tick and
    /// are skipped until it comes. A zero `tick` is treated as 1 ns.
    pub(crate) fn new(start: Instant, tick: Duration, slots: usize) -> Self {
        let tick = tick.max(Duration::from_nanos(1));
        let slots = slots.clamp(1, MAX_SLOTS).next_power_of_two();
        TimerWheel {
            start,
            tick,
            tick_nanos: tick.as_nanos(),
            slots,
            heads: vec![NONE; slots + 1],
            bitmap: vec![0; slots.div_ceil(64)],
            nodes: [Vec::new(), Vec::new(), Vec::new()],
            cur: 0,
            len: 0,
            overdue_min: UNARMED,
        }
    }

    /// Arms (or re-arms, replacing any earlier one) the timer of `key` to fire at
    /// `at`; a deadline in the past fires on the next `expire`. O(1) amortised.
    pub(crate) fn schedule(&mut self, key: TimerKey, at: Instant) {
        let (table, index) = ((key.0 >> INDEX_BITS) as usize, key.index());
        if index >= self.nodes[table].len() {
            self.nodes[table].resize(index + 1, UNARMED_NODE);
        }
        let key = key.0;
        let old = self.node(key).due;
        if old != UNARMED {
            let list = self.list_of(old);
            self.unlink(list, key);
        } else {
            self.len += 1;
        }
        let due = self.ceil_tick(at);
        self.node_mut(key).due = due;
        let list = self.list_of(due);
        self.push(list, key);
    }

    /// Disarms `key`'s timer if armed. O(1).
    pub(crate) fn cancel(&mut self, key: TimerKey) {
        if !self.is_armed(key) {
            return;
        }
        let due = self.node(key.0).due;
        let list = self.list_of(due);
        self.unlink(list, key.0);
        *self.node_mut(key.0) = UNARMED_NODE;
        self.len -= 1;
    }

    /// Whether `key` has an armed timer.
    pub(crate) fn is_armed(&self, key: TimerKey) -> bool {
        self.nodes[(key.0 >> INDEX_BITS) as usize]
            .get(key.index())
            .is_some_and(|n| n.due != UNARMED)
    }

    /// When the poll loop should wake up: the start of the earliest tick that holds
    /// an armed timer (None when none is armed). A slot can hold timers of later
    /// revolutions, so this may be early, never late; it costs a bitmap scan, not a
    /// walk over the timers.
    ///
    /// If a timer is past due (scheduled for a tick that `expire` has already
    /// passed) the result is at or before the `now` of the latest `expire` call,
    /// so the poll timeout becomes zero.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        if self.len == 0 {
            return None;
        }
        if self.heads[self.slots] != NONE {
            // Overdue timers have `due < cur`, and tick `cur - 1` has been
            // reached by an earlier `expire(now)`, so this is <= that `now`.
            return Some(self.tick_instant(self.overdue_min.min(self.cur.saturating_sub(1))));
        }
        let mask = self.slots - 1;
        let pos = (self.cur as usize) & mask;
        let slot = self.next_set_slot(pos)?;
        let offset = (slot.wrapping_sub(pos) & mask) as u64;
        Some(self.tick_instant(self.cur + offset))
    }

    /// Advances the wheel to `now`, disarming every timer whose tick-rounded deadline
    /// has come (`floor((now - start) / tick) >= ceil((at - start) / tick)`) and
    /// pushing its key into `expired`, in no particular order. Costs the ticks
    /// elapsed (at most one revolution) plus the timers visited.
    pub(crate) fn expire(&mut self, now: Instant, expired: &mut Vec<TimerKey>) {
        if now < self.start {
            // Tick 0 is not reached yet, nothing can be due.
            return;
        }
        let now_tick = self.floor_tick(now);
        if self.heads[self.slots] != NONE {
            self.expire_list(self.slots, now_tick, expired);
        }
        if now_tick < self.cur {
            return;
        }
        let mask = self.slots - 1;
        let span = now_tick - self.cur + 1;
        let count = span.min(self.slots as u64) as usize;
        let first = (self.cur as usize) & mask;
        for i in 0..count {
            let slot = (first + i) & mask;
            if self.bitmap[slot / 64] & (1 << (slot % 64)) != 0 {
                self.expire_list(slot, now_tick, expired);
            }
        }
        self.cur = now_tick + 1;
    }

    /// Number of armed timers.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    /// True when no timer is armed.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn node(&self, key: u32) -> &Node {
        &self.nodes[(key >> INDEX_BITS) as usize][(key & INDEX_MASK) as usize]
    }

    fn node_mut(&mut self, key: u32) -> &mut Node {
        &mut self.nodes[(key >> INDEX_BITS) as usize][(key & INDEX_MASK) as usize]
    }

    /// Fires every node of `list` with `due <= now_tick`, keeping the others.
    fn expire_list(&mut self, list: usize, now_tick: u64, expired: &mut Vec<TimerKey>) {
        let mut idx = self.heads[list];
        while idx != NONE {
            let key = idx;
            let node = *self.node(key);
            if node.due <= now_tick {
                self.unlink(list, key);
                *self.node_mut(key) = UNARMED_NODE;
                self.len -= 1;
                expired.push(TimerKey(key));
            }
            idx = node.next;
        }
    }

    /// The list an armed node with due tick `due` lives in.
    fn list_of(&self, due: u64) -> usize {
        if due < self.cur {
            self.slots
        } else {
            (due as usize) & (self.slots - 1)
        }
    }

    /// Pushes `key` at the head of `list`.
    fn push(&mut self, list: usize, key: u32) {
        let head = self.heads[list];
        if head != NONE {
            self.node_mut(head).prev = key;
        }
        let node = self.node_mut(key);
        node.prev = NONE;
        node.next = head;
        let due = node.due;
        self.heads[list] = key;
        if list < self.slots {
            self.bitmap[list / 64] |= 1 << (list % 64);
        } else {
            self.overdue_min = self.overdue_min.min(due);
        }
    }

    /// Unlinks `key` from `list` (leaves its `due` alone).
    fn unlink(&mut self, list: usize, key: u32) {
        let Node { prev, next, .. } = *self.node(key);
        if prev == NONE {
            self.heads[list] = next;
            if next == NONE {
                if list < self.slots {
                    self.bitmap[list / 64] &= !(1 << (list % 64));
                } else {
                    self.overdue_min = UNARMED;
                }
            }
        } else {
            self.node_mut(prev).next = next;
        }
        if next != NONE {
            self.node_mut(next).prev = prev;
        }
        let node = self.node_mut(key);
        node.prev = NONE;
        node.next = NONE;
    }

    /// First non-empty wheel slot at or after `pos`, wrapping around.
    fn next_set_slot(&self, pos: usize) -> Option<usize> {
        let words = self.bitmap.len();
        let first = pos / 64;
        let masked = self.bitmap[first] & (!0u64 << (pos % 64));
        if masked != 0 {
            return Some(first * 64 + masked.trailing_zeros() as usize);
        }
        // The last iteration revisits `first` whole, for the bits below `pos`.
        for i in 1..=words {
            let w = (first + i) % words;
            let bits = self.bitmap[w];
            if bits != 0 {
                return Some(w * 64 + bits.trailing_zeros() as usize);
            }
        }
        None
    }

    /// Due tick of a deadline: `ceil((at - start) / tick)`, clamped.
    fn ceil_tick(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.start).as_nanos();
        let tick = nanos.div_ceil(self.tick_nanos);
        tick.min(MAX_TICK as u128) as u64
    }

    /// Last tick reached at `now`: `floor((now - start) / tick)`, clamped
    /// below `MAX_TICK` (0 before `start`).
    fn floor_tick(&self, now: Instant) -> u64 {
        let nanos = now.saturating_duration_since(self.start).as_nanos();
        let tick = nanos / self.tick_nanos;
        tick.min((MAX_TICK - 1) as u128) as u64
    }

    /// `start + tick * self.tick`, saturating at the largest representable
    /// instant not after it.
    fn tick_instant(&self, tick: u64) -> Instant {
        let nanos = self.tick_nanos.saturating_mul(tick as u128);
        let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
        let mut offset = Duration::new(secs, (nanos % 1_000_000_000) as u32);
        loop {
            if let Some(t) = self.start.checked_add(offset) {
                return t;
            }
            offset /= 2;
        }
    }
}

impl std::fmt::Debug for TimerWheel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimerWheel")
            .field("tick", &self.tick)
            .field("slots", &self.slots)
            .field("cur", &self.cur)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(10);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A connection's key; the tests use one owner, `two_owners_do_not_mix` the others.
    fn k(index: usize) -> TimerKey {
        TimerKey::new(Owner::Conn, index).expect("index fits")
    }

    fn run(w: &mut TimerWheel, now: Instant) -> Vec<usize> {
        let mut out = Vec::new();
        w.expire(now, &mut out);
        let mut out: Vec<usize> = out.iter().map(|key| key.index()).collect();
        out.sort_unstable();
        out
    }

    /// Checks the list/bitmap invariants against the node table.
    fn check_invariants(w: &TimerWheel) {
        let mut seen = 0;
        for list in 0..=w.slots {
            let mut idx = w.heads[list];
            let mut prev = NONE;
            while idx != NONE {
                let n = *w.node(idx);
                assert_eq!(n.prev, prev);
                assert_ne!(n.due, UNARMED);
                assert_eq!(w.list_of(n.due), list);
                if list == w.slots {
                    assert!(w.overdue_min <= n.due);
                }
                seen += 1;
                prev = idx;
                idx = n.next;
            }
            if list < w.slots {
                let bit = w.bitmap[list / 64] & (1 << (list % 64)) != 0;
                assert_eq!(bit, w.heads[list] != NONE);
            }
        }
        assert_eq!(seen, w.len);
        let armed = w
            .nodes
            .iter()
            .flatten()
            .filter(|n| n.due != UNARMED)
            .count();
        assert_eq!(armed, w.len);
    }

    #[test]
    fn two_owners_do_not_mix() {
        let s = Instant::now();
        let mut w = TimerWheel::new(s, TICK, 8);
        let app = TimerKey::new(Owner::App, 3).unwrap();
        let scraper = TimerKey::new(Owner::Scraper, 3).unwrap();
        w.schedule(k(3), s + ms(10));
        w.schedule(app, s + ms(20));
        w.schedule(scraper, s + ms(20));
        w.cancel(scraper);
        assert!(w.is_armed(k(3)) && w.is_armed(app) && !w.is_armed(scraper));
        let mut out = Vec::new();
        w.expire(s + ms(30), &mut out);
        out.sort_by_key(|key| key.owner() as u8);
        assert_eq!(out, vec![k(3), app]);
        assert_eq!(app.owner(), Owner::App);
        assert_eq!(app.index(), 3);
        // Owners index from 0 on their own: no table grows for another's keys.
        assert_eq!(w.nodes.iter().map(Vec::len).collect::<Vec<_>>(), [4, 4, 4]);
        check_invariants(&w);
    }

    #[test]
    fn node_is_small() {
        assert!(std::mem::size_of::<Node>() <= 16);
    }

    #[test]
    fn fires_at_deadline_not_before() {
        let s = Instant::now();
        let mut w = TimerWheel::new(s, TICK, 8);
        // 25 ms rounds up to tick 3 (30 ms).
        w.schedule(k(1), s + ms(25));
        assert!(w.is_armed(k(1)));
        assert_eq!(w.len(), 1);
        assert_eq!(w.next_deadline(), Some(s + ms(30)));
        assert!(run(&mut w, s + ms(25)).is_empty());
        assert!(run(&mut w, s + ms(29)).is_empty());
        assert_eq!(run(&mut w, s + ms(30)), vec![1]);
        assert!(!w.is_armed(k(1)));
        assert!(w.is_empty());
        assert_eq!(w.next_deadline(), None);
        // Exactly on a tick boundary.
        w.schedule(k(2), s + ms(50));
        assert!(run(&mut w, s + ms(49)).is_empty());
        assert_eq!(run(&mut w, s + ms(50)), vec![2]);
        check_invariants(&w);
    }

    #[test]
    fn deadline_at_start_and_before_start() {
        let s = Instant::now() + Duration::from_secs(1);
        let mut w = TimerWheel::new(s, TICK, 8);
        w.schedule(k(0), s);
        w.schedule(k(1), s - ms(500));
        assert_eq!(w.next_deadline(), Some(s));
        assert_eq!(run(&mut w, s - ms(1)), Vec::<usize>::new());
        assert_eq!(run(&mut w, s), vec![0, 1]);
    }

    #[test]
    fn past_deadline_fires_on_next_expire() {
        let s = Instant::now();
        let mut w = TimerWheel::new(s, TICK, 8);
        assert!(run(&mut w, s + ms(105)).is_empty());
        w.schedule(k(3), s + ms(42));
        w.schedule(k(4), s + ms(100));
        w.schedule(k(5), s + ms(101)); // tick 11, not reached yet.
        let nd = w.next_deadline().unwrap();
        assert!(nd <= s + ms(105));
        assert_eq!(run(&mut w, s + ms(105)), vec![3, 4]);
        assert_eq!(w.next_deadline(), Some(s + ms(110)));
        assert_eq!(run(&mut w, s + ms(110)), vec![5]);
        check_invariants(&w);
    }

    #[test]
    fn reschedule_replaces() {
        let s = Instant::now();
        let mut w = TimerWheel::new(s, TICK, 8);
        w.schedule(k(7), s + ms(20));
        w.schedule(k(7), s + ms(200));
        assert_eq!(w.len(), 1);
        assert!(run(&mut w, s + ms(100)).is_empty());
        w.schedule(k(7), s + ms(120));
        w.schedule(k(7), s + ms(120));
        assert_eq!(w.len(), 1);
        assert!(run(&mut w, s + ms(119)).is_empty());
        assert_eq!(run(&mut w, s + ms(120)), vec![7]);
        assert!(run(&mut w, s + ms(500)).is_empty());
        check_invariants(&w);
    }

    #[test]
    fn cancel_disarms() {
        let s = Instant::now();
        let mut w = TimerWheel::new(s, TICK, 8);
        w.cancel(k(5)); // Unknown key.
        w.schedule(k(5), s + ms(30));
        w.schedule(k(6), s + ms(30));
        w.cancel(k(5));
        w.cancel(k(5));
        w.cancel(k(1_000_000));
        assert!(!w.is_armed(k(5)));
        assert!(!w.is_armed(k(1_000_000)));
        assert_eq!(w.len(), 1);
        assert_eq!(run(&mut w, s + ms(40)), vec![6]);
        w.cancel(k(6));
        assert!(w.is_empty());
        assert_eq!(w.next_deadline(), None);
        check_invariants(&w);
    }

    #[test]
    fn many_keys_in_one_slot() {
        let s = Instant::now();
        let mut w = TimerWheel::new(s, TICK, 4);
        // Same slot, different rounds: ticks 1, 5, 9.
        for i in 0..30 {
            let round = (i % 3) as u64;
            w.schedule(k(i), s + ms(10 + 40 * round));
        }
        // Cancel a head, a middle and a tail node.
        w.cancel(k(29));
        w.cancel(k(15));
        w.cancel(k(0));
        check_invariants(&w);
        let want = |r: usize| -> Vec<usize> {
            (0..30)
                .filter(|k| k % 3 == r && ![0, 15, 29].contains(k))
                .collect()
        };
        assert_eq!(run(&mut w, s + ms(10)), want(0));
        assert_eq!(run(&mut w, s + ms(49)), Vec::<usize>::new());
        assert_eq!(run(&mut w, s + ms(50)), want(1));
        assert_eq!(run(&mut w, s + ms(90)), want(2));
        assert!(w.is_empty());
        check_invariants(&w);
    }

    #[test]
    fn several_revolutions_away() {
        let s = Instant::now();
        let mut w = TimerWheel::new(s, TICK, 8); // One revolution = 80 ms.
        let at = s + ms(1000); // Tick 100, 12.5 revolutions.
        w.schedule(k(1), at);
        let mut t = s;
        while t < at {
            assert!(run(&mut w, t).is_empty(), "fired early at {:?}", t - s);
            t += ms(3);
        }
        assert_eq!(run(&mut w, at), vec![1]);
    }

    #[test]
    fn next_deadline_empty_and_bounds() {
        let s = Instant::now();
        let mut w = TimerWheel::new(s, TICK, 16);
        assert_eq!(w.next_deadline(), None);
        w.schedule(k(1), s + ms(75));
        w.schedule(k(2), s + ms(33));
        assert_eq!(w.next_deadline(), Some(s + ms(40)));
        w.cancel(k(2));
        assert_eq!(w.next_deadline(), Some(s + ms(80)));
        w.cancel(k(1));
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn next_deadline_moves_forward_with_far_timers() {
        let s = Instant::now();
        let mut w = TimerWheel::new(s, TICK, 8);
        let at = s + ms(10_000); // Tick 1000, slot 0.
        w.schedule(k(9), at);
        let mut prev = w.next_deadline().unwrap();
        assert!(prev <= at);
        let mut wakeups = 0;
        loop {
            let out = run(&mut w, prev);
            wakeups += 1;
            if !out.is_empty() {
                assert_eq!(out, vec![9]);
                assert!(prev >= at);
                break;
            }
            let next = w.next_deadline().unwrap();
            assert!(next > prev, "next_deadline did not move forward");
            assert!(next <= at);
            prev = next;
        }
        // Woken about once per revolution, not once per tick.
        assert!(wakeups <= 1000 / 8 + 2, "{wakeups} wakeups");
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn expire_after_long_gap() {
        let s = Instant::now();
        let mut w = TimerWheel::new(s, TICK, 8);
        for i in 0..100 {
            w.schedule(k(i), s + ms(10 * i as u64 + 5));
        }
        w.schedule(k(100), s + Duration::from_secs(100));
        // 100 revolutions later, keys 0..100 are due (last at tick 100).
        let out = run(&mut w, s + ms(6400));
        assert_eq!(out, (0..100).collect::<Vec<_>>());
        assert_eq!(w.len(), 1);
        assert!(w.next_deadline().unwrap() <= s + Duration::from_secs(100));
        assert!(w.next_deadline().unwrap() > s + ms(6400));
        assert_eq!(run(&mut w, s + Duration::from_secs(100)), vec![100]);
        check_invariants(&w);
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        let s = Instant::now();
        let mut w = TimerWheel::new(s, Duration::ZERO, 0);
        w.schedule(k(0), s + Duration::from_secs(10 * 365 * 86_400));
        w.schedule(k(1), s + Duration::from_secs(1 << 40));
        assert!(TimerKey::new(Owner::Conn, usize::MAX).is_none());
        assert!(TimerKey::new(Owner::App, 1 << 30).is_none());
        assert!(w.next_deadline().is_some());
        assert!(run(&mut w, s + ms(5)).is_empty());
        assert!(run(&mut w, s).is_empty()); // Earlier `now`.
        assert!(run(&mut w, s + Duration::from_secs(1 << 41)).len() <= 2);
        let mut w = TimerWheel::new(s, Duration::MAX, 5);
        w.schedule(k(3), s + ms(1));
        assert!(w.next_deadline().is_some());
        assert!(run(&mut w, s + ms(2)).is_empty());
        let mut w = TimerWheel::new(s, TICK, 64);
        w.schedule(k(0), s + Duration::from_secs(10 * 365 * 86_400));
        assert!(run(&mut w, s + Duration::from_secs(9 * 365 * 86_400)).is_empty());
        assert_eq!(
            run(&mut w, s + Duration::from_secs(10 * 365 * 86_400)),
            vec![0]
        );
    }

    #[test]
    fn expire_with_earlier_now() {
        let s = Instant::now();
        let mut w = TimerWheel::new(s, TICK, 8);
        assert!(run(&mut w, s + ms(500)).is_empty());
        w.schedule(k(1), s + ms(200));
        w.schedule(k(2), s + ms(520));
        assert!(run(&mut w, s + ms(100)).is_empty());
        assert_eq!(run(&mut w, s + ms(300)), vec![1]);
        assert_eq!(run(&mut w, s + ms(520)), vec![2]);
    }

    #[test]
    fn randomized_against_model() {
        for seed in 1..=20u64 {
            randomized(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        }
    }

    fn randomized(seed: u64) {
        let mut rng = crate::testutil::XorShift(seed);
        let s = Instant::now();
        let tick_ms = 1 + rng.below(20);
        let tick = ms(tick_ms);
        let slots = 1 + rng.below(300) as usize;
        let keys = 1 + rng.below(200) as usize;
        let mut w = TimerWheel::new(s, tick, slots);
        let span = (w.slots as u64) * tick_ms * 1_000_000; // One revolution in ns.
        let tick_ns = tick_ms * 1_000_000;
        let ceil_tick = |at_ns: u64| at_ns.div_ceil(tick_ns);
        // Model: per key, the deadline in ns since `s`.
        let mut model: Vec<Option<u64>> = vec![None; keys];
        let mut now_ns: u64 = 0;
        let mut out = Vec::new();
        for op in 0..3000 {
            if op % 50 == 0 {
                check_invariants(&w);
            }
            match rng.below(10) {
                0..=4 => {
                    let key = rng.below(keys as u64) as usize;
                    let at_ns = match rng.below(4) {
                        0 => now_ns.saturating_sub(rng.below(span)),
                        1 => now_ns + rng.below(span / 4 + 1),
                        2 => now_ns + rng.below(span * 5 + 1),
                        _ => now_ns + rng.below(tick_ns * 3),
                    };
                    w.schedule(k(key), s + Duration::from_nanos(at_ns));
                    model[key] = Some(at_ns);
                }
                5 => {
                    let key = rng.below(keys as u64 + 5) as usize;
                    w.cancel(k(key));
                    if key < keys {
                        model[key] = None;
                    }
                }
                _ => {
                    let now = match rng.below(20) {
                        0 => now_ns.saturating_sub(rng.below(span)), // Backwards.
                        1 => now_ns + rng.below(span * 4),           // Long gap.
                        2 => now_ns,
                        3 => {
                            // Exactly at the wheel's suggested wake-up.
                            match w.next_deadline() {
                                Some(d) => (d - s).as_nanos() as u64,
                                None => now_ns,
                            }
                        }
                        _ => now_ns + rng.below(tick_ns * 3),
                    };
                    let now_tick = now / tick_ns;
                    out.clear();
                    w.expire(s + Duration::from_nanos(now), &mut out);
                    let mut out: Vec<usize> = out.iter().map(|key| key.index()).collect();
                    out.sort_unstable();
                    let mut want = Vec::new();
                    for (k, d) in model.iter_mut().enumerate() {
                        if let Some(at) = *d
                            && ceil_tick(at) <= now_tick
                        {
                            want.push(k);
                            *d = None;
                        }
                    }
                    assert_eq!(out, want, "seed {seed} now {now}");
                    now_ns = now_ns.max(now);
                }
            }
            // Cross-check state after every operation.
            let armed = model.iter().filter(|d| d.is_some()).count();
            assert_eq!(w.len(), armed);
            for (i, d) in model.iter().enumerate() {
                assert_eq!(w.is_armed(k(i)), d.is_some());
            }
            let earliest = model.iter().flatten().map(|&at| ceil_tick(at)).min();
            match (w.next_deadline(), earliest) {
                (None, None) => {}
                (Some(nd), Some(t)) => {
                    let nd = (nd - s).as_nanos() as u64;
                    assert!(nd <= t * tick_ns, "next_deadline later than earliest");
                    if t * tick_ns <= now_ns {
                        // Past due: poll timeout must be zero.
                        assert!(nd <= now_ns);
                    }
                }
                (a, b) => panic!("next_deadline {a:?} vs model {b:?}"),
            }
        }
        check_invariants(&w);
    }

    #[test]
    fn many_keys_cheap() {
        let s = Instant::now();
        let mut w = TimerWheel::new(s, ms(100), 512);
        let n = 200_000;
        for i in 0..n {
            w.schedule(k(i), s + ms(30_000 + (i as u64 % 5000)));
        }
        assert_eq!(w.len(), n);
        assert!(w.nodes[0].len() * std::mem::size_of::<Node>() <= n * 16);
        assert!(w.nodes[1].is_empty() && w.nodes[2].is_empty());
        assert!(w.next_deadline().unwrap() <= s + ms(30_000));
        let out = run(&mut w, s + ms(40_000));
        assert_eq!(out.len(), n);
        assert!(w.is_empty());
    }
}
