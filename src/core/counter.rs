//! One ticket counter: a cell of atomics that lives in shared memory.
//!
//! The counter's `word` packs a *generation* (high 8 bits) and a *count*
//! (low 56 bits): the tickets issued in the counter's current life. Ticket
//! number `i` of a life is `first + i`. Every taker names the generation it
//! looked up, and a compare-and-swap on the word checks it in the same step
//! that takes the tickets, so a taker that looked a key up just before the key
//! was retired (and its room reused by another key) can never take from the
//! new owner: the generation differs and the swap fails.
//!
//! The default counter of a zone is never retired while it is used (only a
//! resized zone's old copy is, once), so it may use one `fetch_add` (see
//! [`Counter::take_fast`]). Keyed counters always swap.
//!
//! Durable zones (and Redis leases) also gate taking by `reserved`: only
//! counts below it are covered by the state file (or the lease). Blocks of
//! covered counts arrive from the edge through [`Counter::add_block`]; the
//! edge calls it and [`Counter::advance_block`] under the zone's lock, so the
//! two `pending` words never race each other. Takers never lock.
//!
//! There is no lock on the taking path, so a process that dies at any
//! instruction leaves the counter consistent: whatever it took is simply gone.

use core::sync::atomic::{AtomicU64, Ordering};

/// Bits of the count in a counter's word.
pub const COUNT_BITS: u32 = 56;
/// The most tickets one life of a counter can hand out.
pub const MAX_COUNT: u64 = (1 << COUNT_BITS) - 1;

/// A counter's generation: bumped each time the counter is retired, so that
/// stale takers fail. 8 bits: a stale taker would have to stall through 256
/// retirements and reuses of the same room between its lookup and its swap
/// (each of which takes the zone's lock) to be fooled.
pub type Gen = u8;

/// The fast path's safety margin: `fetch_add` is used only while the count is
/// at least this far from the end of the supply. Each concurrent taker adds at
/// most `MAX_BATCH` (< 2^20) between its load and its add, and there are far
/// fewer than 2^20 takers, so the add cannot pass the end unless a taker stalls
/// while 2^40 tickets are taken (days at any real rate); then the numbers it
/// took are refused, never issued twice.
const FAST_MARGIN: u64 = 1 << 40;

fn gen_of(word: u64) -> Gen {
    (word >> COUNT_BITS) as Gen
}

fn count_of(word: u64) -> u64 {
    word & MAX_COUNT
}

fn word_of(gen: Gen, count: u64) -> u64 {
    (u64::from(gen) << COUNT_BITS) | (count & MAX_COUNT)
}

/// `flags`: this life of the counter is in the state file (durable zones).
/// A life that is not, while the file holds this instance's mark for its
/// key, is a restart (the key was retired here): it starts afresh.
pub const FLAG_LOGGED: u64 = 1;
/// `flags`: Redis has no more numbers for this life (its `max=` or the
/// 2^63-1 ceiling was reached elsewhere): a lease that runs out is sold out.
pub const FLAG_DRAINED: u64 = 2;
/// `flags`: Redis zones: the zone's metadata in Redis was lost since this
/// node last heard of the counter (see `core::redis::known`).
pub const FLAG_EPOCH_LOST: u64 = 4;
/// `flags`: `max=` as last used is 2^64-1, which `limit` (max plus one)
/// cannot hold.
pub const FLAG_MAX_TOP: u64 = 8;

/// `limit` and whether [`FLAG_MAX_TOP`] is set, for a `max=`.
fn limit_of(max: Option<u64>) -> (u64, bool) {
    match max {
        Some(u64::MAX) => (u64::MAX, true),
        Some(max) => (max + 1, false),
        None => (0, false),
    }
}

/// A counter cell. `#[repr(C)]`: laid out in shared memory that every worker
/// maps, and across reloads of the same module build.
#[repr(C)]
#[derive(Debug, Default)]
pub struct Counter {
    /// Generation and count, see the module comment.
    word: AtomicU64,
    /// First ticket plus one; 0 until the counter's first use fixes it.
    base: AtomicU64,
    /// Durable zones and leases: counts below this are covered.
    reserved: AtomicU64,
    /// A covered block `[pending_lo, pending_hi)` past a gap, used once the
    /// current one runs out (another nginx took the numbers in between).
    pending_lo: AtomicU64,
    pending_hi: AtomicU64,
    /// `max=` plus one as last used, for the status page; 0 when unlimited
    /// (2^64-1: u64::MAX with [`FLAG_MAX_TOP`]).
    limit: AtomicU64,
    /// Unix time (milliseconds) of the last take or creation.
    used: AtomicU64,
    /// Redis zones: the generation Redis reported for this life (0: none yet).
    remote_gen: AtomicU64,
    /// `FLAG_*` bits.
    flags: AtomicU64,
}

/// What one take asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    /// First ticket, if the counter's first use is now.
    pub start: u64,
    /// Tickets wanted, at least 1.
    pub count: u64,
    pub max: Option<u64>,
    /// Only counts below `reserved` may be taken (durable zones, leases).
    pub gated: bool,
    /// Unix milliseconds, for `used`.
    pub now: u64,
}

/// What an attempt to take tickets gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// `count` consecutive tickets, the first being `first`.
    Tickets { first: u64, count: u64 },
    /// `max=` reached: nothing was taken.
    SoldOut,
    /// The next tickets would not fit in a u64 (or in one life).
    Exhausted,
    /// The counter was retired since it was looked up: look it up again.
    Stale,
    /// Not covered yet (durable zone or lease): nothing was taken.
    Unreserved,
}

/// Why a counter could not be moved forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdvanceError {
    /// Tickets at or after the target were already handed out.
    WouldReissue { issued: u64 },
    /// The counter was retired meanwhile.
    Stale,
}

/// A consistent-enough snapshot for status pages and state files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CounterView {
    pub gen: Gen,
    /// First ticket, once fixed.
    pub start: Option<u64>,
    pub issued: u64,
    pub reserved: u64,
    /// A covered block past a gap, waiting to be used.
    pub pending: Option<(u64, u64)>,
    /// The `max=` this counter was last used with, if any.
    pub max: Option<u64>,
    /// Unix milliseconds of the last use.
    pub used: u64,
    pub remote_gen: u64,
    pub flags: u64,
}

impl CounterView {
    /// The last ticket handed out, if any.
    pub fn last(&self) -> Option<u64> {
        let start = self.start?;
        if self.issued == 0 {
            return None;
        }
        start.checked_add(self.issued - 1)
    }

    /// The next ticket, if the counter has one.
    pub fn next(&self) -> Option<u64> {
        self.start?.checked_add(self.issued)
    }
}

/// How many tickets a counter whose first ticket is `first` can hand out
/// under `max`, and whether `max` (rather than the u64 range) is the bound.
fn supply(first: u64, max: Option<u64>) -> (u64, bool) {
    let limit = max.unwrap_or(u64::MAX);
    if limit < first {
        return (0, true);
    }
    let range = u128::from(limit - first) + 1;
    let by_max = max.is_some_and(|max| max < u64::MAX) && range <= u128::from(MAX_COUNT);
    (range.min(u128::from(MAX_COUNT)) as u64, by_max)
}

/// What a block given to [`Counter::add_block`] became.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// It continues the current block: takers may use it now.
    Extended,
    /// It lies past a gap and waits until the current block runs out.
    Pending,
    /// It was covered already, or another pending block waits: dropped.
    Ignored,
}

impl Counter {
    /// The generation takers must name now.
    pub fn gen(&self) -> Gen {
        gen_of(self.word.load(Ordering::Acquire))
    }

    /// Starts a new life: first ticket `start`, nothing issued or covered.
    /// Only for a counter no taker can reach yet (its slot is not published).
    pub fn begin_life(&self, gen: Gen, start: u64, now: u64, flags: u64) {
        self.base.store(start.saturating_add(1), Ordering::Relaxed);
        self.reserved.store(0, Ordering::Relaxed);
        self.pending_lo.store(0, Ordering::Relaxed);
        self.pending_hi.store(0, Ordering::Relaxed);
        self.limit.store(0, Ordering::Relaxed);
        self.used.store(now, Ordering::Relaxed);
        self.remote_gen.store(0, Ordering::Relaxed);
        self.flags.store(flags, Ordering::Relaxed);
        self.word.store(word_of(gen, 0), Ordering::Release);
    }

    /// Resumes a counter from a state file or an old zone: `issued` tickets
    /// count as handed out, `reserved` as covered. `start: None` leaves the
    /// first ticket to the first use. Only before takers can reach it.
    pub fn resume(&self, start: Option<u64>, issued: u64, reserved: u64, used: u64) {
        if let Some(start) = start {
            self.base.store(start.saturating_add(1), Ordering::Relaxed);
        }
        self.reserved.store(reserved, Ordering::Relaxed);
        self.used.store(used, Ordering::Relaxed);
        let gen = self.gen();
        self.word
            .store(word_of(gen, issued.min(MAX_COUNT)), Ordering::Release);
    }

    /// Copies what a view says into this (not yet reachable) counter.
    pub fn adopt(&self, view: &CounterView) {
        self.resume(view.start, view.issued, view.reserved, view.used);
        let (lo, hi) = view.pending.unwrap_or((0, 0));
        self.pending_lo.store(lo, Ordering::Relaxed);
        self.pending_hi.store(hi, Ordering::Relaxed);
        let (limit, top) = limit_of(view.max);
        self.limit.store(limit, Ordering::Relaxed);
        self.remote_gen.store(view.remote_gen, Ordering::Relaxed);
        let flags = if top {
            view.flags | FLAG_MAX_TOP
        } else {
            view.flags & !FLAG_MAX_TOP
        };
        self.flags.store(flags, Ordering::Release);
    }

    /// The first ticket; the first caller's `start` wins and stays, like a
    /// sequence's START: later configuration changes do not move it.
    pub fn first_ticket(&self, start: u64) -> u64 {
        let base = self.base.load(Ordering::Acquire);
        if base != 0 {
            return base - 1;
        }
        match self.base.compare_exchange(
            0,
            start.saturating_add(1),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => start,
            Err(winner) => winner.saturating_sub(1),
        }
    }

    fn record_use(&self, ask: &Ask) {
        if self.used.load(Ordering::Relaxed) != ask.now {
            self.used.store(ask.now, Ordering::Relaxed);
        }
        if ask.max.is_some() {
            let (limit, top) = limit_of(ask.max);
            if self.limit.load(Ordering::Relaxed) != limit {
                self.limit.store(limit, Ordering::Relaxed);
            }
            let flags = self.flags.load(Ordering::Relaxed);
            if (flags & FLAG_MAX_TOP != 0) != top {
                if top {
                    self.add_flags(FLAG_MAX_TOP);
                } else {
                    self.clear_flags(FLAG_MAX_TOP);
                }
            }
        }
    }

    /// Takes tickets with one `fetch_add` when that is safe: only for a
    /// counter whose word is never reused (a zone's default counter).
    pub fn take_fast(&self, gen: Gen, ask: &Ask) -> Take {
        if ask.max.is_none() && !ask.gated {
            let first = self.first_ticket(ask.start);
            let (supply, _) = supply(first, None);
            let word = self.word.load(Ordering::Relaxed);
            if gen_of(word) == gen && count_of(word) < supply.saturating_sub(FAST_MARGIN) {
                let before = self.word.fetch_add(ask.count, Ordering::Relaxed);
                if gen_of(before) != gen {
                    return Take::Stale;
                }
                let issued = count_of(before);
                if issued.saturating_add(ask.count) > supply {
                    return Take::Exhausted;
                }
                self.record_use(ask);
                return Take::Tickets {
                    first: first + issued,
                    count: ask.count,
                };
            }
        }
        self.take(gen, ask)
    }

    /// Takes `ask.count` consecutive tickets (or none), never passing `max`,
    /// the end of the range, or (when gated) the covered counts.
    pub fn take(&self, gen: Gen, ask: &Ask) -> Take {
        let first = self.first_ticket(ask.start);
        let (supply, by_max) = supply(first, ask.max);
        let mut word = self.word.load(Ordering::Relaxed);
        loop {
            if gen_of(word) != gen {
                return Take::Stale;
            }
            let issued = count_of(word);
            let Some(after) = issued.checked_add(ask.count).filter(|&end| end <= supply) else {
                return if by_max {
                    Take::SoldOut
                } else {
                    Take::Exhausted
                };
            };
            if ask.gated && after > self.reserved.load(Ordering::Acquire) {
                return Take::Unreserved;
            }
            match self.word.compare_exchange_weak(
                word,
                word_of(gen, after),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.record_use(ask);
                    return Take::Tickets {
                        first: first + issued,
                        count: ask.count,
                    };
                }
                Err(now) => word = now,
            }
        }
    }

    /// Moves the counter forward so that its next count is `target`, if no
    /// count at or past `target` was handed out. Returns the count before.
    pub fn advance_to(&self, gen: Gen, target: u64) -> Result<u64, AdvanceError> {
        let mut word = self.word.load(Ordering::Relaxed);
        loop {
            if gen_of(word) != gen {
                return Err(AdvanceError::Stale);
            }
            let issued = count_of(word);
            if issued > target || target > MAX_COUNT {
                return Err(AdvanceError::WouldReissue { issued });
            }
            match self.word.compare_exchange_weak(
                word,
                word_of(gen, target),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(issued),
                Err(now) => word = now,
            }
        }
    }

    /// Raises the count to at least `floor` (a state file written by another
    /// run says these were handed out). Never lowers it.
    pub fn raise_issued(&self, floor: u64) {
        let floor = floor.min(MAX_COUNT);
        let mut word = self.word.load(Ordering::Relaxed);
        while count_of(word) < floor {
            match self.word.compare_exchange_weak(
                word,
                word_of(gen_of(word), floor),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => word = now,
            }
        }
    }

    /// Sets the count (keeping the generation): a Redis counter whose life
    /// changed there starts its floor anew.
    pub fn set_issued(&self, count: u64) {
        let mut word = self.word.load(Ordering::Relaxed);
        loop {
            match self.word.compare_exchange_weak(
                word,
                word_of(gen_of(word), count.min(MAX_COUNT)),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => word = now,
            }
        }
    }

    /// Counts already issued are covered, trivially: a block may continue
    /// from them (a zone that becomes durable, or restored onto).
    pub fn cover_issued(&self) {
        let issued = count_of(self.word.load(Ordering::Acquire));
        self.reserved.fetch_max(issued, Ordering::AcqRel);
    }

    /// Ends the life `gen`: from now on every taker that names it gets
    /// [`Take::Stale`]. Returns the final view, or `None` if `gen` had ended.
    pub fn retire(&self, gen: Gen) -> Option<CounterView> {
        let mut word = self.word.load(Ordering::Relaxed);
        loop {
            if gen_of(word) != gen {
                return None;
            }
            // The next life's generation with a count that refuses every
            // take, until the room's next life begins at 0.
            let next = word_of(gen.wrapping_add(1), MAX_COUNT);
            match self
                .word
                .compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    let mut view = self.view();
                    view.gen = gen;
                    view.issued = count_of(word);
                    return Some(view);
                }
                Err(now) => word = now,
            }
        }
    }

    /// Ends the life `gen` only if nothing of it was used: no ticket taken,
    /// no block covered or pending, nothing of it in a state file (an admin
    /// request made it for a move that was then refused). Call under the
    /// zone's lock, which every change of `reserved` and `pending` holds.
    /// Returns the final view, or `None` if it was used or had ended.
    pub fn retire_unused(&self, gen: Gen) -> Option<CounterView> {
        let logged = self.flags.load(Ordering::Acquire) & FLAG_LOGGED != 0;
        if logged || self.reserved.load(Ordering::Acquire) != 0 || self.pending().is_some() {
            return None;
        }
        // Only from a count of 0: a taker that got in first keeps its life.
        let next = word_of(gen.wrapping_add(1), MAX_COUNT);
        self.word
            .compare_exchange(word_of(gen, 0), next, Ordering::AcqRel, Ordering::Relaxed)
            .ok()?;
        let mut view = self.view();
        view.gen = gen;
        view.issued = 0;
        Some(view)
    }

    /// A covered block of counts `[lo, hi)` arrived (a state-file write or
    /// a lease). Call under the zone's lock.
    pub fn add_block(&self, lo: u64, hi: u64) -> Block {
        let reserved = self.reserved.load(Ordering::Acquire);
        if hi <= reserved {
            return Block::Ignored;
        }
        let outcome = if lo <= reserved {
            self.reserved.fetch_max(hi, Ordering::AcqRel);
            Block::Extended
        } else {
            let pending_hi = self.pending_hi.load(Ordering::Relaxed);
            if pending_hi <= reserved {
                self.pending_lo.store(lo, Ordering::Relaxed);
                self.pending_hi.store(hi, Ordering::Relaxed);
                Block::Pending
            } else if lo == pending_hi {
                self.pending_hi.store(hi, Ordering::Relaxed);
                Block::Pending
            } else {
                Block::Ignored
            }
        };
        // A pending block that now continues the current one joins it.
        let reserved = self.reserved.load(Ordering::Acquire);
        let (pending_lo, pending_hi) = (
            self.pending_lo.load(Ordering::Relaxed),
            self.pending_hi.load(Ordering::Relaxed),
        );
        if pending_hi > reserved && pending_lo <= reserved {
            self.reserved.fetch_max(pending_hi, Ordering::AcqRel);
            self.clear_pending();
        }
        outcome
    }

    fn clear_pending(&self) {
        self.pending_lo.store(0, Ordering::Relaxed);
        self.pending_hi.store(0, Ordering::Relaxed);
    }

    fn pending(&self) -> Option<(u64, u64)> {
        let hi = self.pending_hi.load(Ordering::Relaxed);
        (hi > self.reserved.load(Ordering::Acquire))
            .then(|| (self.pending_lo.load(Ordering::Relaxed), hi))
    }

    /// Starts over with the block `[lo, hi)` (a Redis counter began a new
    /// life): takers are held off while the count moves. Call under the
    /// zone's lock.
    pub fn replace_block(&self, lo: u64, hi: u64) {
        self.reserved.store(0, Ordering::Release);
        self.clear_pending();
        self.set_issued(lo);
        self.reserved.store(hi, Ordering::Release);
    }

    /// Drops what is left of the current and pending blocks (a Redis
    /// counter was moved past them). Call under the zone's lock.
    pub fn drop_lease(&self) {
        self.clear_pending();
        let issued = count_of(self.word.load(Ordering::Acquire));
        self.reserved.store(issued, Ordering::Release);
    }

    /// When the current block cannot serve `need` more counts, moves the
    /// count to the pending block if that one can (the rest of the current
    /// block becomes a gap). Returns whether `need` counts are available now.
    /// Call under the zone's lock.
    pub fn advance_block(&self, need: u64) -> bool {
        let mut word = self.word.load(Ordering::Relaxed);
        loop {
            let issued = count_of(word);
            let reserved = self.reserved.load(Ordering::Acquire);
            if issued.saturating_add(need) <= reserved {
                return true;
            }
            let Some((lo, hi)) = self.pending() else {
                return false;
            };
            if issued < reserved && lo.saturating_add(need) > hi {
                return false; // neither serves it: wait for a larger block
            }
            if issued < lo {
                // Takers cannot pass `reserved` (< lo), so once the count
                // is at `lo` nobody takes until `reserved` moves to `hi`.
                match self.word.compare_exchange_weak(
                    word,
                    word_of(gen_of(word), lo),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {}
                    Err(now) => {
                        word = now;
                        continue;
                    }
                }
            }
            self.reserved.fetch_max(hi, Ordering::AcqRel);
            self.clear_pending();
            word = self.word.load(Ordering::Relaxed);
        }
    }

    /// The covered block waiting past a gap, if any.
    pub fn pending_block(&self) -> Option<(u64, u64)> {
        self.pending()
    }

    /// Whether fewer than `low` covered counts are left and nothing waits
    /// pending: time to extend, before requests have to wait.
    pub fn running_low(&self, low: u64) -> bool {
        let issued = count_of(self.word.load(Ordering::Relaxed));
        let reserved = self.reserved.load(Ordering::Relaxed);
        reserved < issued.saturating_add(low) && self.pending().is_none()
    }

    pub fn add_flags(&self, flags: u64) {
        self.flags.fetch_or(flags, Ordering::AcqRel);
    }

    pub fn clear_flags(&self, flags: u64) {
        self.flags.fetch_and(!flags, Ordering::AcqRel);
    }

    /// Redis lost the zone's metadata: the generation it gave this life
    /// means nothing now. The count (the floor Redis is held to) stays.
    pub fn lose_remote_epoch(&self) {
        self.add_flags(FLAG_EPOCH_LOST);
        self.remote_gen.store(0, Ordering::Release);
    }

    pub fn set_remote_gen(&self, gen: u64) {
        self.remote_gen.store(gen, Ordering::Release);
    }

    pub fn view(&self) -> CounterView {
        let word = self.word.load(Ordering::Acquire);
        let flags = self.flags.load(Ordering::Acquire);
        let limit = self.limit.load(Ordering::Relaxed);
        CounterView {
            gen: gen_of(word),
            start: self.base.load(Ordering::Acquire).checked_sub(1),
            issued: count_of(word),
            reserved: self.reserved.load(Ordering::Acquire),
            pending: self.pending(),
            max: if flags & FLAG_MAX_TOP != 0 {
                Some(u64::MAX)
            } else {
                limit.checked_sub(1)
            },
            used: self.used.load(Ordering::Relaxed),
            remote_gen: self.remote_gen.load(Ordering::Acquire),
            flags,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ask(start: u64, count: u64, max: Option<u64>) -> Ask {
        Ask {
            start,
            count,
            max,
            gated: false,
            now: 100,
        }
    }

    fn gated(count: u64) -> Ask {
        Ask {
            gated: true,
            ..ask(1, count, None)
        }
    }

    fn tickets(take: Take) -> (u64, u64) {
        match take {
            Take::Tickets { first, count } => (first, count),
            other => panic!("expected tickets, got {other:?}"),
        }
    }

    #[test]
    fn first_ticket_is_start_and_sticks() {
        let c = Counter::default();
        assert_eq!(tickets(c.take_fast(0, &ask(1, 1, None))), (1, 1));
        assert_eq!(tickets(c.take_fast(0, &ask(1, 1, None))), (2, 1));
        // a later, different start does not move an existing counter
        assert_eq!(tickets(c.take(0, &ask(100, 1, None))), (3, 1));
        let c = Counter::default();
        assert_eq!(tickets(c.take(0, &ask(0, 1, None))), (0, 1));
        assert_eq!(c.view().used, 100);
    }

    #[test]
    fn batches_are_consecutive() {
        let c = Counter::default();
        assert_eq!(tickets(c.take_fast(0, &ask(1, 3, None))), (1, 3));
        assert_eq!(tickets(c.take(0, &ask(1, 2, None))), (4, 2));
        assert_eq!(c.view().last(), Some(5));
        assert_eq!(c.view().next(), Some(6));
    }

    #[test]
    fn the_top_of_u64_is_a_max_like_any_other() {
        let c = Counter::default();
        let top = u64::MAX;
        assert_eq!(
            tickets(c.take(0, &ask(top - 2, 2, Some(top)))),
            (top - 2, 2)
        );
        assert_eq!(c.view().max, Some(top), "shown as configured");
        assert_eq!(c.view().next(), Some(top), "one ticket left");
        // carried to another zone (a resize) as it is
        let moved = Counter::default();
        moved.adopt(&c.view());
        assert_eq!(moved.view().max, Some(top));
        assert_eq!(tickets(c.take(0, &ask(top - 2, 1, Some(top)))), (top, 1));
        // reloads that move max= away from the top and back: each shown
        let c = Counter::default();
        assert_eq!(
            tickets(c.take(0, &ask(top - 9, 1, Some(top)))),
            (top - 9, 1)
        );
        assert_eq!(tickets(c.take(0, &ask(0, 1, Some(top - 1)))), (top - 8, 1));
        assert_eq!(c.view().max, Some(top - 1));
        moved.adopt(&c.view());
        assert_eq!(moved.view().max, Some(top - 1));
        assert_eq!(tickets(c.take(0, &ask(0, 1, Some(top)))), (top - 7, 1));
        assert_eq!(c.view().max, Some(top));
        let none = Counter::default();
        assert_eq!(tickets(none.take(0, &ask(1, 1, None))), (1, 1));
        assert_eq!(none.view().max, None);
    }

    #[test]
    fn max_is_never_passed() {
        let c = Counter::default();
        for ticket in 5..=7 {
            assert_eq!(tickets(c.take(0, &ask(5, 1, Some(7)))), (ticket, 1));
        }
        assert_eq!(c.take(0, &ask(5, 1, Some(7))), Take::SoldOut);
        assert_eq!(c.view().issued, 3);
        assert_eq!(c.view().max, Some(7));
        let c = Counter::default();
        assert_eq!(tickets(c.take(0, &ask(1, 2, Some(3)))), (1, 2));
        // a batch that does not fit takes nothing
        assert_eq!(c.take(0, &ask(1, 2, Some(3))), Take::SoldOut);
        assert_eq!(tickets(c.take(0, &ask(1, 1, Some(3)))), (3, 1));
    }

    #[test]
    fn the_u64_range_runs_out_without_burning_numbers() {
        let c = Counter::default();
        c.begin_life(0, u64::MAX - 2, 0, 0);
        // a refused batch takes nothing, on the fast path too
        assert_eq!(tickets(c.take_fast(0, &ask(1, 2, None))), (u64::MAX - 2, 2));
        assert_eq!(c.take_fast(0, &ask(1, 2, None)), Take::Exhausted);
        assert_eq!(c.take_fast(0, &ask(1, 2, None)), Take::Exhausted);
        assert_eq!(c.view().issued, 2);
        assert_eq!(tickets(c.take_fast(0, &ask(1, 1, None))), (u64::MAX, 1));
        assert_eq!(c.take_fast(0, &ask(1, 1, None)), Take::Exhausted);
        let c = Counter::default();
        c.begin_life(0, u64::MAX - 1, 0, 0);
        assert_eq!(c.take(0, &ask(1, 3, Some(u64::MAX))), Take::Exhausted);
    }

    #[test]
    fn one_life_holds_at_most_max_count() {
        let c = Counter::default();
        c.begin_life(0, 1, 0, 0);
        c.resume(Some(1), MAX_COUNT - 1, 0, 0);
        assert_eq!(tickets(c.take_fast(0, &ask(1, 1, None))), (MAX_COUNT, 1));
        assert_eq!(c.take_fast(0, &ask(1, 1, None)), Take::Exhausted);
        assert_eq!(c.gen(), 0);
    }

    #[test]
    fn gated_counters_stay_inside_their_blocks() {
        let c = Counter::default();
        c.begin_life(0, 1, 0, 0);
        assert_eq!(c.take(0, &gated(1)), Take::Unreserved);
        assert_eq!(c.add_block(0, 2), Block::Extended);
        assert_eq!(tickets(c.take(0, &gated(1))), (1, 1));
        assert_eq!(c.take(0, &gated(2)), Take::Unreserved);
        assert_eq!(tickets(c.take(0, &gated(1))), (2, 1));
        assert!(c.running_low(1));
        assert_eq!(c.add_block(2, 10), Block::Extended);
        assert_eq!(c.add_block(0, 4), Block::Ignored);
        assert!(!c.running_low(8));
        assert_eq!(tickets(c.take(0, &gated(8))), (3, 8));
    }

    #[test]
    fn a_block_past_a_gap_waits_for_the_current_one() {
        let c = Counter::default();
        c.begin_life(0, 1, 0, 0);
        c.add_block(0, 4);
        assert_eq!(tickets(c.take(0, &gated(2))), (1, 2));
        // another instance took 4..10: ours is 10..20
        assert_eq!(c.add_block(10, 20), Block::Pending);
        assert!(!c.running_low(100), "a pending block counts");
        assert!(c.advance_block(2), "the current block still serves 2");
        assert_eq!(tickets(c.take(0, &gated(2))), (3, 2));
        assert_eq!(c.take(0, &gated(1)), Take::Unreserved);
        assert!(c.advance_block(1));
        assert_eq!(tickets(c.take(0, &gated(1))), (11, 1));
        assert_eq!(c.view().pending, None);
        // a batch that does not fit in the rest skips it (a gap)
        c.add_block(30, 40);
        assert!(!c.advance_block(15));
        assert!(c.advance_block(9));
        assert_eq!(tickets(c.take(0, &gated(9))), (12, 9));
        assert!(c.advance_block(5));
        assert_eq!(tickets(c.take(0, &gated(5))), (31, 5));
    }

    #[test]
    fn a_pending_block_that_becomes_contiguous_joins() {
        let c = Counter::default();
        c.begin_life(0, 1, 0, 0);
        assert_eq!(c.add_block(10, 20), Block::Pending);
        assert_eq!(c.add_block(0, 10), Block::Extended);
        assert_eq!(c.view().reserved, 20);
        assert_eq!(c.view().pending, None);
    }

    #[test]
    fn blocks_start_over_or_drop() {
        let c = Counter::default();
        c.begin_life(0, 1, 0, 0);
        c.add_block(0, 100);
        tickets(c.take(0, &gated(10)));
        c.replace_block(3, 8);
        assert_eq!(tickets(c.take(0, &gated(5))), (4, 5));
        assert_eq!(c.take(0, &gated(1)), Take::Unreserved);
        c.add_block(8, 20);
        c.drop_lease();
        assert_eq!(c.take(0, &gated(1)), Take::Unreserved);
    }

    #[test]
    fn moving_forward() {
        let c = Counter::default();
        c.begin_life(3, 1, 0, 0);
        tickets(c.take(3, &ask(1, 5, None)));
        assert_eq!(
            c.advance_to(3, 4),
            Err(AdvanceError::WouldReissue { issued: 5 })
        );
        assert_eq!(c.advance_to(3, 5), Ok(5));
        assert_eq!(c.advance_to(3, 40_999), Ok(5));
        assert_eq!(tickets(c.take(3, &ask(1, 1, None))), (41_000, 1));
        assert_eq!(c.advance_to(2, 50_000), Err(AdvanceError::Stale));
    }

    #[test]
    fn retired_counters_refuse_stale_takers() {
        let c = Counter::default();
        c.begin_life(7, 1, 0, 0);
        c.take(7, &ask(1, 4, None));
        let view = c.retire(7).unwrap();
        assert_eq!(view.issued, 4);
        assert_eq!(view.start, Some(1));
        assert_eq!(c.retire(7), None);
        assert_eq!(c.take(7, &ask(1, 1, None)), Take::Stale);
        assert_eq!(c.take_fast(7, &ask(1, 1, None)), Take::Stale);
        // until its next life begins, the new generation refuses too
        assert_eq!(c.take(8, &ask(1, 1, None)), Take::Exhausted);
        // the room's next life starts from nothing, and the stale taker
        // still cannot take from it
        c.begin_life(c.gen(), 1, 0, 0);
        assert_eq!(c.take(7, &ask(1, 1, None)), Take::Stale);
        assert_eq!(tickets(c.take(8, &ask(1, 1, None))), (1, 1));
        // generations wrap
        let c = Counter::default();
        c.begin_life(255, 1, 0, 0);
        c.retire(255);
        assert_eq!(c.gen(), 0);
    }

    #[test]
    fn only_an_unused_life_retires_as_unused() {
        // untouched: retired, and stale takers are refused
        let c = Counter::default();
        c.begin_life(3, 1, 0, 0);
        assert_eq!(c.retire_unused(3).map(|v| (v.gen, v.issued)), Some((3, 0)));
        assert_eq!(c.take(3, &ask(1, 1, None)), Take::Stale);
        assert_eq!(c.retire_unused(3), None);
        // a ticket taken, a block covered or pending, a life in the state file
        let c = Counter::default();
        c.begin_life(3, 1, 0, 0);
        c.take(3, &ask(1, 1, None));
        assert_eq!(c.retire_unused(3), None);
        let c = Counter::default();
        c.begin_life(3, 1, 0, 0);
        c.add_block(0, 10);
        assert_eq!(c.retire_unused(3), None);
        let c = Counter::default();
        c.begin_life(3, 1, 0, 0);
        assert_eq!(c.add_block(5, 10), Block::Pending);
        assert_eq!(c.retire_unused(3), None);
        let c = Counter::default();
        c.begin_life(3, 1, 0, FLAG_LOGGED);
        assert_eq!(c.retire_unused(3), None);
        // a move that went through (count past 0), or another life
        let c = Counter::default();
        c.begin_life(3, 1, 0, 0);
        c.advance_to(3, 5).unwrap();
        assert_eq!(c.retire_unused(3), None);
        assert_eq!(c.retire_unused(4), None);
        assert_eq!(c.view().issued, 5);
    }

    #[test]
    fn raising_never_lowers() {
        let c = Counter::default();
        c.begin_life(0, 1, 0, 0);
        c.take(0, &ask(1, 10, None));
        c.raise_issued(5);
        assert_eq!(c.view().issued, 10);
        c.raise_issued(50);
        assert_eq!(c.view().issued, 50);
    }

    #[test]
    fn concurrent_takers_get_one_contiguous_range() {
        for max in [None, Some(20_000)] {
            let c = Arc::new(Counter::default());
            let threads: Vec<_> = (0..8)
                .map(|t| {
                    let c = Arc::clone(&c);
                    std::thread::spawn(move || {
                        let mut got = Vec::new();
                        for _ in 0..5_000 {
                            let a = ask(1, 1, max);
                            let take = if t % 2 == 0 {
                                c.take_fast(0, &a)
                            } else {
                                c.take(0, &a)
                            };
                            if let Take::Tickets { first, .. } = take {
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

    #[test]
    fn concurrent_retire_and_reuse_never_mixes_lives() {
        // Takers race a retire-and-reuse loop: every ticket a taker gets
        // belongs to the life it named.
        let c = Arc::new(Counter::default());
        c.begin_life(0, 1, 0, 0);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let takers: Vec<_> = (0..4)
            .map(|_| {
                let (c, stop) = (Arc::clone(&c), Arc::clone(&stop));
                std::thread::spawn(move || {
                    let mut got: Vec<(Gen, u64)> = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let gen = c.gen();
                        if let Take::Tickets { first, .. } = c.take(gen, &ask(1, 1, None)) {
                            got.push((gen, first));
                        }
                    }
                    got
                })
            })
            .collect();
        let mut lives = Vec::new();
        for _ in 0..200 {
            std::thread::yield_now();
            let gen = c.gen();
            if let Some(view) = c.retire(gen) {
                lives.push((gen, view.issued));
            }
            c.begin_life(c.gen(), 1, 0, 0);
        }
        stop.store(true, Ordering::Relaxed);
        let mut all: Vec<(Gen, u64)> = takers.into_iter().flat_map(|t| t.join().unwrap()).collect();
        all.sort_unstable();
        let before = all.len();
        all.dedup();
        assert_eq!(
            before,
            all.len(),
            "a ticket was handed out twice in one life"
        );
        // each retired life handed out exactly 1..=issued, to takers that
        // named that life
        for (gen, issued) in lives {
            let life: Vec<u64> = all
                .iter()
                .filter(|(g, _)| *g == gen)
                .map(|(_, t)| *t)
                .collect();
            assert_eq!(life, (1..=issued).collect::<Vec<_>>(), "life {gen}");
        }
    }
}
