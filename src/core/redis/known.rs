//! What a node remembers of a Redis counter, and how it reads what Redis
//! says back: the never-lower guard's inputs, and where a lease goes.
//!
//! A node keeps, per counter, the generation Redis gave its current life and
//! how far it handed out (its *floor*). Generations come from the zone's
//! metadata hash in Redis, so they mean something only within one *epoch* of
//! that hash: a Redis that lost its data starts a new epoch, and numbers its
//! generations from 1 again. When a node sees its zone's epoch change, every
//! counter it knows is marked [`FLAG_EPOCH_LOST`](crate::core::counter::FLAG_EPOCH_LOST)
//! and forgets its generation; its next take names [`LOST_EPOCH`], which no
//! real epoch equals, so the `take` script raises the counter past the floor
//! if Redis went back. The mark goes once Redis has answered for the counter
//! in the new epoch.

use crate::core::counter::CounterView;

/// The epoch a take names for a counter known from a lost epoch. Epochs are
/// hex digits, so this one never matches.
pub const LOST_EPOCH: &[u8] = b"lost";

/// Where a lease Redis granted, `[lo, lo + n)` of life `generation`, goes in
/// the node's copy of the counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeasePlace {
    /// After what the node holds (at once, or once the current block runs
    /// out).
    Add,
    /// Redis began a new life of the counter (retired, expired, or its data
    /// lost and repaired): the node's count starts over at `lo`.
    Replace,
    /// Below what the node already holds, in the same life: another worker's
    /// later lease arrived first and takers moved past this one. Using it
    /// would hand out lower numbers after higher ones, so it is left as a gap.
    Drop,
}

/// Decides where a granted lease goes, given the node's counter as it is now
/// (read under the zone's lock, before the grant's generation is noted).
pub fn place_lease(view: &CounterView, generation: u64, lo: u64) -> LeasePlace {
    let known = view.remote_gen;
    if known != 0 && known != generation {
        return LeasePlace::Replace;
    }
    if lo < view.issued.min(view.reserved) {
        // Same life as known: the lease is stale. No generation known yet
        // (the counter's first lease here, or its epoch was lost): nothing
        // tells the lives apart, and Redis guards the floor, so start over.
        return if known == generation {
            LeasePlace::Drop
        } else {
            LeasePlace::Replace
        };
    }
    LeasePlace::Add
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(issued: u64, reserved: u64, remote_gen: u64) -> CounterView {
        CounterView {
            start: Some(1),
            issued,
            reserved,
            remote_gen,
            ..CounterView::default()
        }
    }

    #[test]
    fn a_lease_that_continues_or_lies_ahead_is_added() {
        assert_eq!(place_lease(&view(0, 0, 0), 3, 0), LeasePlace::Add);
        assert_eq!(place_lease(&view(50, 100, 3), 3, 100), LeasePlace::Add);
        assert_eq!(place_lease(&view(50, 100, 3), 3, 200), LeasePlace::Add);
        // the current block used up, the next one past a gap
        assert_eq!(place_lease(&view(100, 100, 3), 3, 300), LeasePlace::Add);
    }

    #[test]
    fn a_sibling_workers_lower_lease_arriving_late_is_a_gap() {
        // worker 2's [200, 300) was installed and used; worker 1's
        // [100, 200) comes back afterwards
        assert_eq!(place_lease(&view(201, 300, 3), 3, 100), LeasePlace::Drop);
        // the same at the counter's first lease: worker 2's reply noted the
        // generation before worker 1's arrived
        assert_eq!(place_lease(&view(101, 200, 7), 7, 0), LeasePlace::Drop);
    }

    #[test]
    fn a_new_life_in_redis_starts_the_count_over() {
        assert_eq!(place_lease(&view(500, 600, 3), 4, 0), LeasePlace::Replace);
        // an older generation: Redis's generations restarted with its data
        assert_eq!(place_lease(&view(500, 600, 9), 2, 0), LeasePlace::Replace);
        // the generation forgotten when the epoch was lost
        assert_eq!(place_lease(&view(500, 600, 0), 2, 100), LeasePlace::Replace);
    }
}
