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

/// Whether a reply about life `generation` is older news than what the node
/// knows now (`known`), the command having been sent when it knew `sent`.
///
/// Generations grow within an epoch, so a lower one is an earlier life; but
/// the node must have learnt the newer one after sending (from a sibling
/// worker's or another command's reply). Had it known nothing newer since,
/// a lower generation means Redis lost writes and numbered lives again:
/// that reply is the news.
pub fn is_stale(known: u64, sent: u64, generation: u64) -> bool {
    known != 0 && generation < known && known != sent
}

/// Decides where a granted lease goes, given the node's counter as it is now
/// (read under the zone's lock, before the grant's generation is noted) and
/// the generation it knew when it asked (`sent`).
pub fn place_lease(view: &CounterView, sent: u64, generation: u64, lo: u64) -> LeasePlace {
    let known = view.remote_gen;
    if is_stale(known, sent, generation) {
        // a sibling worker's reply told of a later life meanwhile
        return LeasePlace::Drop;
    }
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

    /// As sent with the generation the counter knows now.
    fn place_lease_now(v: &CounterView, generation: u64, lo: u64) -> LeasePlace {
        place_lease(v, v.remote_gen, generation, lo)
    }

    #[test]
    fn a_lease_that_continues_or_lies_ahead_is_added() {
        assert_eq!(place_lease_now(&view(0, 0, 0), 3, 0), LeasePlace::Add);
        assert_eq!(place_lease_now(&view(50, 100, 3), 3, 100), LeasePlace::Add);
        assert_eq!(place_lease_now(&view(50, 100, 3), 3, 200), LeasePlace::Add);
        // the current block used up, the next one past a gap
        assert_eq!(place_lease_now(&view(100, 100, 3), 3, 300), LeasePlace::Add);
    }

    #[test]
    fn a_sibling_workers_lower_lease_arriving_late_is_a_gap() {
        // worker 2's [200, 300) was installed and used; worker 1's
        // [100, 200) comes back afterwards
        assert_eq!(
            place_lease_now(&view(201, 300, 3), 3, 100),
            LeasePlace::Drop
        );
        // the same at the counter's first lease: worker 2's reply noted the
        // generation before worker 1's arrived
        assert_eq!(place_lease_now(&view(101, 200, 7), 7, 0), LeasePlace::Drop);
    }

    #[test]
    fn a_lease_granted_before_an_admin_move_and_answered_after_it_is_a_gap() {
        // 120 handed out of a lease to 150; a sibling worker's refill got
        // [150, 200); then an admin move to count 1000 (same life): the
        // node dropped its lease and moved its count up to the new next
        let moved = view(1000, 1000, 3);
        assert_eq!(place_lease_now(&moved, 3, 150), LeasePlace::Drop);
        // a lease of the moved counter is served
        assert_eq!(place_lease_now(&moved, 3, 1000), LeasePlace::Add);
    }

    #[test]
    fn a_new_life_in_redis_starts_the_count_over() {
        assert_eq!(
            place_lease_now(&view(500, 600, 3), 4, 0),
            LeasePlace::Replace
        );
        // an older generation: Redis's generations restarted with its data
        assert_eq!(
            place_lease_now(&view(500, 600, 9), 2, 0),
            LeasePlace::Replace
        );
        // the generation forgotten when the epoch was lost
        assert_eq!(
            place_lease_now(&view(500, 600, 0), 2, 100),
            LeasePlace::Replace
        );
    }

    #[test]
    fn a_reply_of_an_earlier_life_learnt_of_meanwhile_is_stale() {
        // sent knowing life 3; a sibling noted life 4 (a DELETE elsewhere)
        assert!(is_stale(4, 3, 3));
        assert_eq!(place_lease(&view(5, 100, 4), 3, 3, 900), LeasePlace::Drop);
        // sent knowing nothing; the new life was noted before the reply
        assert!(is_stale(4, 0, 3));
        // nothing learnt since sending: a lower generation is Redis's news
        assert!(!is_stale(9, 9, 2));
        assert_eq!(
            place_lease(&view(500, 600, 9), 9, 2, 0),
            LeasePlace::Replace
        );
        // the same or a later life, or nothing known (epoch lost): not stale
        assert!(!is_stale(4, 3, 4));
        assert!(!is_stale(4, 3, 5));
        assert!(!is_stale(0, 3, 1));
    }
}
