//! One ticket counter: atomic operations on a cell that lives in shared memory.
//!
//! Every taking path is a single `fetch_add`, or a compare-and-swap loop when a
//! `max=` must never be passed. There is no lock, so a worker that dies at any
//! instruction leaves the counter consistent: whatever it took is simply gone.

use core::sync::atomic::{AtomicU64, Ordering};

/// Set in `issued` when the counter's values moved to another zone (a reload
/// that resized the zone): workers still running the old configuration must not
/// hand out tickets from it any more.
pub const RETIRED: u64 = 1 << 63;

/// A counter cell. `#[repr(C)]` because it is laid out in shared memory that
/// every worker maps, and across reloads of the same module build.
#[repr(C)]
#[derive(Debug, Default)]
pub struct Counter {
    /// First ticket plus one; 0 until the counter's first use fixes it.
    base: AtomicU64,
    /// Tickets handed out so far (plus [`RETIRED`] once retired).
    issued: AtomicU64,
    /// How many tickets the state file covers: never issue at or beyond this
    /// count when the zone is durable.
    reserved: AtomicU64,
    /// `max=` plus one as first seen, for the status page; 0 when unlimited.
    limit: AtomicU64,
}

/// What an attempt to take tickets gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// `count` consecutive tickets, the first being `first`.
    Issued { first: u64, count: u64 },
    /// `max=` reached: nothing was taken.
    SoldOut,
    /// The next ticket would not fit in a u64.
    Exhausted,
    /// The counter moved to a new zone on reload; this worker is outgoing.
    Retired,
    /// Durable zone: the state file does not cover these tickets yet.
    /// Nothing was taken.
    Unreserved,
}

/// The snapshot a status page or the state file needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterView {
    /// First ticket, when the counter has been used.
    pub start: Option<u64>,
    pub issued: u64,
    pub reserved: u64,
    /// The `max=` this counter was used with, if any.
    pub max: Option<u64>,
}

impl CounterView {
    /// The reservation the state file should record now: `reserve` tickets
    /// ahead of those issued, never below what it already covers.
    pub fn reservation(&self, reserve: u64) -> u64 {
        self.reserved.max(self.issued.saturating_add(reserve))
    }

    /// The last ticket handed out, if any.
    pub fn last(&self) -> Option<u64> {
        let start = self.start?;
        (self.issued > 0).then(|| start.saturating_add(self.issued - 1))
    }
}

impl Counter {
    /// A counter whose first ticket is already fixed (keyed counters and
    /// counters restored from a state file).
    pub fn set(&self, start: u64, issued: u64, reserved: u64) {
        self.base.store(start + 1, Ordering::Relaxed);
        self.issued.store(issued, Ordering::Relaxed);
        self.reserved.store(reserved, Ordering::Release);
    }

    /// Resumes a counter from a state file: `mark` tickets count as issued
    /// and as covered by the file. `start: None` leaves the first ticket to
    /// the first use.
    pub fn resume(&self, start: Option<u64>, mark: u64) {
        if let Some(start) = start {
            self.base.store(start + 1, Ordering::Relaxed);
        }
        self.issued.store(mark, Ordering::Relaxed);
        self.reserved.store(mark, Ordering::Release);
    }

    /// Whether fewer than `low` covered tickets are left: time to extend the
    /// reservation, before requests have to wait for it.
    pub fn running_low(&self, low: u64) -> bool {
        let issued = self.issued.load(Ordering::Relaxed) & !RETIRED;
        self.reserved.load(Ordering::Relaxed) < issued.saturating_add(low)
    }

    /// The first ticket; the first caller's `start` wins and stays, like a
    /// sequence's START: later configuration changes do not move it.
    fn first_ticket(&self, start: u64) -> u64 {
        let base = self.base.load(Ordering::Acquire);
        if base != 0 {
            return base - 1;
        }
        match self
            .base
            .compare_exchange(0, start + 1, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => start,
            Err(winner) => winner - 1,
        }
    }

    /// Takes `count` consecutive tickets (`count >= 1`), never passing `max`.
    /// `durable` limits taking to what the state file already covers.
    pub fn take(&self, start: u64, count: u64, max: Option<u64>, durable: bool) -> Take {
        let first = self.first_ticket(start);
        // Tickets first..=limit may be issued: the u64 range or `max`.
        let limit = max.unwrap_or(u64::MAX);
        if limit < first {
            return Take::SoldOut;
        }
        let supply = (limit - first).saturating_add(1);

        if max.is_none() && !durable {
            // The hot path: one fetch_add.
            let before = self.issued.fetch_add(count, Ordering::Relaxed);
            if before & RETIRED != 0 {
                return Take::Retired;
            }
            if before.checked_add(count).is_none_or(|end| end > supply) {
                return Take::Exhausted;
            }
            return Take::Issued {
                first: first + before,
                count,
            };
        }

        if let Some(max) = max {
            if self.limit.load(Ordering::Relaxed) == 0 {
                let _ = self.limit.compare_exchange(
                    0,
                    max.saturating_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
        }
        let mut before = self.issued.load(Ordering::Relaxed);
        loop {
            if before & RETIRED != 0 {
                return Take::Retired;
            }
            let Some(after) = before.checked_add(count).filter(|&end| end <= supply) else {
                return if max.is_some_and(|max| max < u64::MAX) {
                    Take::SoldOut
                } else {
                    Take::Exhausted
                };
            };
            if durable && after > self.reserved.load(Ordering::Acquire) {
                return Take::Unreserved;
            }
            match self.issued.compare_exchange_weak(
                before,
                after,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Take::Issued {
                        first: first + before,
                        count,
                    }
                }
                Err(now) => before = now,
            }
        }
    }

    pub fn view(&self) -> CounterView {
        let base = self.base.load(Ordering::Acquire);
        CounterView {
            start: base.checked_sub(1),
            issued: self.issued.load(Ordering::Acquire) & !RETIRED,
            reserved: self.reserved.load(Ordering::Acquire),
            max: self.limit.load(Ordering::Relaxed).checked_sub(1),
        }
    }

    pub fn reserved(&self) -> u64 {
        self.reserved.load(Ordering::Acquire)
    }

    /// Raises the reservation (never lowers it).
    pub fn raise_reserved(&self, to: u64) {
        self.reserved.fetch_max(to, Ordering::AcqRel);
    }

    /// Stops this counter for good and returns its final view: from now on
    /// every take answers [`Take::Retired`], so no ticket is handed out twice
    /// while its values live on in another zone.
    pub fn retire(&self) -> CounterView {
        let issued = self.issued.fetch_or(RETIRED, Ordering::AcqRel) & !RETIRED;
        CounterView {
            issued,
            ..self.view()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn issued(take: Take) -> (u64, u64) {
        match take {
            Take::Issued { first, count } => (first, count),
            other => panic!("expected tickets, got {other:?}"),
        }
    }

    #[test]
    fn first_ticket_is_start_and_sticks() {
        let c = Counter::default();
        assert_eq!(issued(c.take(1, 1, None, false)), (1, 1));
        assert_eq!(issued(c.take(1, 1, None, false)), (2, 1));
        // a later, different start does not move an existing counter
        assert_eq!(issued(c.take(100, 1, None, false)), (3, 1));
        let c = Counter::default();
        assert_eq!(issued(c.take(0, 1, None, false)), (0, 1));
    }

    #[test]
    fn batches_are_consecutive() {
        let c = Counter::default();
        assert_eq!(issued(c.take(1, 3, None, false)), (1, 3));
        assert_eq!(issued(c.take(1, 2, None, false)), (4, 2));
        assert_eq!(c.view().last(), Some(5));
    }

    #[test]
    fn max_is_never_passed() {
        let c = Counter::default();
        for ticket in 5..=7 {
            assert_eq!(issued(c.take(5, 1, Some(7), false)), (ticket, 1));
        }
        assert_eq!(c.take(5, 1, Some(7), false), Take::SoldOut);
        assert_eq!(c.view().issued, 3);
        let c = Counter::default();
        assert_eq!(issued(c.take(1, 2, Some(3), false)), (1, 2));
        // a batch that does not fit takes nothing
        assert_eq!(c.take(1, 2, Some(3), false), Take::SoldOut);
        assert_eq!(issued(c.take(1, 1, Some(3), false)), (3, 1));
    }

    #[test]
    fn the_u64_range_runs_out_cleanly() {
        let c = Counter::default();
        c.set(u64::MAX - 1, 0, 0);
        assert_eq!(issued(c.take(1, 1, None, false)), (u64::MAX - 1, 1));
        assert_eq!(issued(c.take(1, 1, None, false)), (u64::MAX, 1));
        assert_eq!(c.take(1, 1, None, false), Take::Exhausted);
        let c = Counter::default();
        c.set(u64::MAX - 1, 0, 0);
        assert_eq!(c.take(1, 3, Some(u64::MAX), false), Take::Exhausted);
    }

    #[test]
    fn durable_counters_stay_inside_the_reservation() {
        let c = Counter::default();
        c.set(1, 0, 2);
        assert_eq!(issued(c.take(1, 1, None, true)), (1, 1));
        assert_eq!(c.take(1, 2, None, true), Take::Unreserved);
        assert_eq!(issued(c.take(1, 1, None, true)), (2, 1));
        assert_eq!(c.take(1, 1, None, true), Take::Unreserved);
        c.raise_reserved(10);
        c.raise_reserved(4);
        assert_eq!(c.reserved(), 10);
        assert_eq!(issued(c.take(1, 1, None, true)), (3, 1));
    }

    #[test]
    fn reservations_run_ahead_and_never_shrink() {
        let c = Counter::default();
        c.set(1, 40, 100);
        assert_eq!(c.view().reservation(10), 100);
        assert_eq!(c.view().reservation(500), 540);
        assert!(!c.running_low(50));
        assert!(c.running_low(61));
        assert_eq!(c.view().reservation(u64::MAX), u64::MAX);
    }

    #[test]
    fn retired_counters_refuse() {
        let c = Counter::default();
        c.take(1, 4, None, false);
        let view = c.retire();
        assert_eq!(view.issued, 4);
        assert_eq!(view.start, Some(1));
        assert_eq!(c.take(1, 1, None, false), Take::Retired);
        assert_eq!(c.take(1, 1, Some(100), false), Take::Retired);
        assert_eq!(c.view().issued & RETIRED, 0);
    }

    #[test]
    fn concurrent_takers_get_one_contiguous_range() {
        for max in [None, Some(20_000)] {
            let c = Arc::new(Counter::default());
            let threads: Vec<_> = (0..8)
                .map(|_| {
                    let c = Arc::clone(&c);
                    std::thread::spawn(move || {
                        let mut got = Vec::new();
                        for _ in 0..5_000 {
                            if let Take::Issued { first, .. } = c.take(1, 1, max, false) {
                                got.push(first);
                            }
                        }
                        got
                    })
                })
                .collect();
            let mut all: Vec<u64> = threads
                .into_iter()
                .flat_map(|t| t.join().unwrap())
                .collect();
            all.sort_unstable();
            let expected = max.unwrap_or(40_000);
            assert_eq!(all, (1..=expected).collect::<Vec<_>>());
        }
    }
}
