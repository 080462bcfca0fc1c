//! Planning reservations for a durable zone: which marks to append to the
//! state log, and which blocks of counts the counters may use once they are
//! on disk. Pure: the state log's index and the counters' views in, records
//! and blocks out.
//!
//! The rule that keeps tickets unique among any number of nginx instances
//! sharing one file: an instance only ever uses counts it reserved itself,
//! and it reserves a block starting at the highest mark any instance wrote
//! (or at its own coverage, if that is higher). Its own blocks follow each
//! other without a gap as long as nobody else reserved in between; when
//! someone did, the next block lies past theirs (a gap, never an overlap).

use std::collections::HashSet;

use crate::core::counter::{CounterView, Gen, FLAG_LOGGED, MAX_COUNT};
use crate::core::state::{Index, Record};

/// One counter as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterState {
    /// `None`: the zone's default counter.
    pub key: Option<Vec<u8>>,
    pub view: CounterView,
    /// Counts a waiting request needs at once (a batch larger than the
    /// reserve); 0 when none waits.
    pub need: u64,
}

/// A block of counts `[lo, hi)` a counter may use once the plan's records
/// are on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub key: Option<Vec<u8>>,
    /// The life the block belongs to: a counter retired meanwhile gets none.
    pub gen: Gen,
    pub lo: u64,
    pub hi: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub records: Vec<Record>,
    pub blocks: Vec<Block>,
}

/// The settings of one zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// This nginx instance.
    pub instance: u64,
    /// Counts reserved ahead (`reserve=`).
    pub reserve: u64,
    /// Extend when fewer than this many covered counts are left.
    pub low_water: u64,
}

/// Whether a counter may need a block now: it has none waiting past a gap
/// big enough, and it is new to the file, running low, or short of what a
/// waiting request needs at once.
pub fn wants_block(view: &CounterView, need: u64, low_water: u64) -> bool {
    view.pending.is_none_or(|(lo, hi)| hi - lo < need.max(1))
        && (view.flags & FLAG_LOGGED == 0
            || view.reserved < view.issued.saturating_add(low_water)
            || view.issued.saturating_add(need) > view.reserved)
}

/// The counters a worker saw that may need a write (running low, new to the
/// file, or waited for). A write plans only these, so what it costs follows
/// what changed, not the zone's size.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Candidates {
    default: bool,
    keys: HashSet<Vec<u8>>,
}

impl Candidates {
    /// `None`: the zone's default counter. A key already noted costs no
    /// allocation (takers note a running-low key on every take).
    pub fn note(&mut self, key: Option<&[u8]>) {
        match key {
            None => self.default = true,
            Some(key) => {
                if !self.keys.contains(key) {
                    self.keys.insert(key.to_vec());
                }
            }
        }
    }

    pub fn merge(&mut self, other: Candidates) {
        self.default |= other.default;
        self.keys.extend(other.keys);
    }

    pub fn is_empty(&self) -> bool {
        !self.default && self.keys.is_empty()
    }

    pub fn default_counter(&self) -> bool {
        self.default
    }

    pub fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.keys.iter().map(Vec::as_slice)
    }
}

/// The most counts a counter whose first ticket is `start` can ever hand
/// out: the end of the u64 range, or one life's limit.
fn count_cap(start: Option<u64>) -> u64 {
    match start {
        Some(start) => MAX_COUNT.min((u64::MAX - start).saturating_add(1)),
        None => MAX_COUNT,
    }
}

/// Plans one counter; `force` reserves even if it is not running low (at
/// start and on adoption).
/// The file's latest mark for `key` that the counter's next block must lie
/// past. A life not in the file yet, where the file holds our own mark for
/// the key: the key was retired here and starts afresh (its new first mark
/// replaces the old one). Someone else's mark is continued past.
pub fn mark_to_follow(
    index: &Index,
    policy: &Policy,
    key: Option<&[u8]>,
    view: &CounterView,
) -> u64 {
    let logged = view.flags & FLAG_LOGGED != 0;
    index
        .get(key)
        .filter(|e| logged || e.instance != policy.instance)
        .map_or(0, |e| e.mark)
}

fn plan_counter(
    index: &Index,
    policy: &Policy,
    counter: &CounterState,
    force: bool,
    plan: &mut Plan,
) {
    let view = &counter.view;
    let key = counter.key.as_deref();
    if view
        .pending
        .is_some_and(|(lo, hi)| hi - lo >= counter.need.max(1))
    {
        return; // a block past a gap waits already
    }
    let logged = view.flags & FLAG_LOGGED != 0;
    // What this instance holds for sure: the counts installed in shared
    // memory. A block on disk but not installed yet may lie past someone
    // else's (a jump), even when the latest mark is our own: it is never
    // taken to cover what lies between.
    let held = view
        .pending
        .map_or(view.reserved, |(_, hi)| hi.max(view.reserved));
    let latest = mark_to_follow(index, policy, key, view);
    let want = policy.reserve.max(counter.need);
    let low = view.reserved < view.issued.saturating_add(policy.low_water)
        || view.issued.saturating_add(counter.need) > view.reserved;
    if !(force || low || !logged) {
        return;
    }
    let cap = count_cap(view.start);
    let (lo, hi, write) = if latest > held {
        // The file's latest mark lies past what we hold (another instance's
        // block, or one of ours not installed yet): our next block follows.
        (latest, latest.saturating_add(want).min(cap), true)
    } else {
        // a waiting batch needs its counts in one block
        let target = view
            .issued
            .saturating_add(want)
            .max(held.saturating_add(counter.need))
            .min(cap);
        (held, target, target > held)
    };
    if !write {
        return;
    }
    if lo >= cap {
        return; // nothing left to reserve: takers get "exhausted"
    }
    plan.records.push(Record::Mark {
        key: counter.key.clone(),
        instance: policy.instance,
        start: view.start,
        mark: hi,
        used: view.used / 1000,
    });
    if hi > view.reserved {
        plan.blocks.push(Block {
            key: counter.key.clone(),
            gen: view.gen,
            lo,
            hi,
        });
    }
}

/// Extensions for the counters running low (or waited for).
pub fn extend(index: &Index, policy: &Policy, counters: &[CounterState]) -> Plan {
    let mut plan = Plan::default();
    for counter in counters {
        plan_counter(index, policy, counter, false, &mut plan);
    }
    plan
}

/// A fresh block for every counter: an nginx instance starting (after its
/// counters were restored from the file) or adopting a file on reload.
pub fn reserve_all(index: &Index, policy: &Policy, counters: &[CounterState]) -> Plan {
    let mut plan = Plan::default();
    for counter in counters {
        plan_counter(index, policy, counter, true, &mut plan);
    }
    plan
}

/// At a clean stop: gives back the unissued rest of every counter whose
/// latest mark in the file is this instance's own block, so the next start
/// goes on with no gap. Counters someone reserved past keep their marks.
pub fn give_back(index: &Index, policy: &Policy, counters: &[CounterState]) -> Vec<Record> {
    counters
        .iter()
        .filter(|c| c.view.pending.is_none() && c.view.flags & FLAG_LOGGED != 0)
        .filter(|c| {
            index.get(c.key.as_deref()).is_some_and(|e| {
                e.instance == policy.instance && e.mark == c.view.reserved && e.mark > c.view.issued
            })
        })
        .map(|c| Record::Mark {
            key: c.key.clone(),
            instance: policy.instance,
            start: c.view.start,
            mark: c.view.issued,
            used: c.view.used / 1000,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wants_a_block_when_new_low_or_short() {
        let logged = |issued, reserved| CounterView {
            issued,
            reserved,
            flags: FLAG_LOGGED,
            ..CounterView::default()
        };
        // new to the file
        assert!(wants_block(&CounterView::default(), 0, 5));
        // plenty left, nothing waits
        assert!(!wants_block(&logged(10, 100), 0, 5));
        // running low
        assert!(wants_block(&logged(96, 100), 0, 5));
        // a waiting batch of 50 does not fit
        assert!(wants_block(&logged(60, 100), 50, 5));
        // a block past a gap waits already, big enough
        let pending = CounterView {
            pending: Some((200, 300)),
            ..logged(99, 100)
        };
        assert!(!wants_block(&pending, 50, 5));
        assert!(wants_block(&pending, 150, 5));
    }

    #[test]
    fn candidates_note_each_counter_once() {
        let mut c = Candidates::default();
        assert!(c.is_empty());
        c.note(Some(b"a"));
        c.note(Some(b"a"));
        c.note(Some(b"b"));
        assert!(!c.default_counter());
        let mut other = Candidates::default();
        other.note(None);
        other.note(Some(b"b"));
        c.merge(other);
        assert!(c.default_counter());
        let mut keys: Vec<&[u8]> = c.keys().collect();
        keys.sort();
        assert_eq!(keys, [b"a".as_slice(), b"b".as_slice()]);
    }

    const US: u64 = 1;
    const THEM: u64 = 2;

    fn policy() -> Policy {
        Policy {
            instance: US,
            reserve: 100,
            low_water: 50,
        }
    }

    fn counter(key: Option<&str>, issued: u64, reserved: u64) -> CounterState {
        CounterState {
            key: key.map(|k| k.as_bytes().to_vec()),
            view: CounterView {
                start: Some(1),
                issued,
                reserved,
                used: 7000,
                flags: FLAG_LOGGED,
                ..CounterView::default()
            },
            need: 0,
        }
    }

    fn index(records: &[Record]) -> Index {
        let mut index = Index::new(100);
        index.apply_all(records).unwrap();
        index
    }

    fn mark(key: Option<&str>, instance: u64, mark: u64) -> Record {
        Record::Mark {
            key: key.map(|k| k.as_bytes().to_vec()),
            instance,
            start: Some(1),
            mark,
            used: 0,
        }
    }

    fn blocks(plan: &Plan) -> Vec<(u64, u64)> {
        plan.blocks.iter().map(|b| (b.lo, b.hi)).collect()
    }

    fn fresh(key: Option<&str>) -> CounterState {
        let mut c = counter(key, 0, 0);
        c.view.flags = 0;
        c
    }

    #[test]
    fn a_new_key_gets_its_first_block() {
        let plan = extend(&index(&[]), &policy(), &[fresh(Some("k"))]);
        assert_eq!(
            plan.records,
            vec![Record::Mark {
                key: Some(b"k".to_vec()),
                instance: US,
                start: Some(1),
                mark: 100,
                used: 7,
            }]
        );
        assert_eq!(blocks(&plan), vec![(0, 100)]);
    }

    #[test]
    fn extensions_follow_our_own_blocks_without_a_gap() {
        let idx = index(&[mark(None, US, 100)]);
        // plenty left: nothing to do
        assert_eq!(
            extend(&idx, &policy(), &[counter(None, 40, 100)]),
            Plan::default()
        );
        // running low: extend to issued + reserve, contiguous
        let plan = extend(&idx, &policy(), &[counter(None, 60, 100)]);
        assert_eq!(
            plan.records,
            vec![Record::Mark {
                key: None,
                instance: US,
                start: Some(1),
                mark: 160,
                used: 7,
            }]
        );
        assert_eq!(blocks(&plan), vec![(100, 160)]);
    }

    #[test]
    fn a_block_on_disk_not_installed_yet_is_never_assumed_ours() {
        // Another worker of ours appended 160 and has not installed its block:
        // it may have jumped past someone else's (100..150 theirs, 150..160
        // ours), so this plan follows the mark instead of covering 100..160.
        let idx = index(&[mark(None, US, 160)]);
        let plan = extend(&idx, &policy(), &[counter(None, 60, 100)]);
        assert_eq!(blocks(&plan), vec![(160, 260)]);
        assert!(matches!(plan.records[0], Record::Mark { mark: 260, .. }));
    }

    #[test]
    fn a_pending_block_is_held_too() {
        let idx = index(&[mark(None, US, 400)]);
        let mut c = counter(None, 90, 100);
        c.view.pending = Some((300, 400));
        c.need = 500; // the pending block cannot serve it
        let plan = extend(&idx, &policy(), &[c]);
        assert_eq!(blocks(&plan), vec![(400, 900)]);
    }

    #[test]
    fn someone_elses_block_is_jumped_over() {
        let idx = index(&[mark(None, THEM, 300)]);
        let plan = extend(&idx, &policy(), &[counter(None, 90, 100)]);
        assert_eq!(blocks(&plan), vec![(300, 400)]);
        assert!(matches!(plan.records[0], Record::Mark { mark: 400, .. }));
        // a give-back below our coverage never pulls us back
        let idx = index(&[mark(None, THEM, 20)]);
        let plan = extend(&idx, &policy(), &[counter(None, 90, 100)]);
        assert_eq!(blocks(&plan), vec![(100, 190)]);
    }

    #[test]
    fn a_batch_larger_than_the_reserve_gets_a_block_that_fits() {
        let mut c = fresh(Some("k"));
        c.need = 500;
        let plan = extend(&index(&[]), &policy(), &[c]);
        assert_eq!(blocks(&plan), vec![(0, 500)]);
    }

    #[test]
    fn blocks_stop_at_the_end_of_the_range() {
        let mut c = fresh(None);
        c.view.start = Some(u64::MAX - 9);
        let plan = extend(&index(&[]), &policy(), &[c.clone()]);
        assert_eq!(blocks(&plan), vec![(0, 10)]);
        c.view.flags = FLAG_LOGGED;
        c.view.issued = 10;
        c.view.reserved = 10;
        let idx = index(&[Record::Mark {
            key: None,
            instance: US,
            start: Some(u64::MAX - 9),
            mark: 10,
            used: 0,
        }]);
        assert_eq!(extend(&idx, &policy(), &[c]), Plan::default());
    }

    #[test]
    fn a_key_retired_here_starts_afresh() {
        // our own mark from the key's previous life is replaced
        let idx = index(&[mark(Some("k"), US, 500)]);
        let plan = extend(&idx, &policy(), &[fresh(Some("k"))]);
        assert_eq!(plan.records.len(), 1);
        assert!(matches!(plan.records[0], Record::Mark { mark: 100, .. }));
        assert_eq!(blocks(&plan), vec![(0, 100)]);
        // someone else's key is continued past their mark
        let idx = index(&[mark(Some("k"), THEM, 500)]);
        let plan = extend(&idx, &policy(), &[fresh(Some("k"))]);
        assert_eq!(blocks(&plan), vec![(500, 600)]);
    }

    #[test]
    fn the_mark_a_counter_follows() {
        let idx = index(&[mark(Some("k"), US, 500), mark(Some("t"), THEM, 300)]);
        let follows = |c: &CounterState| mark_to_follow(&idx, &policy(), c.key.as_deref(), &c.view);
        // a new life of a key retired here (an admin move making it, as a
        // take): our own old mark is not in its way
        assert_eq!(follows(&fresh(Some("k"))), 0);
        // the life that wrote it, someone else's, or no mark at all
        assert_eq!(follows(&counter(Some("k"), 450, 500)), 500);
        assert_eq!(follows(&fresh(Some("t"))), 300);
        assert_eq!(follows(&fresh(Some("new"))), 0);
    }

    #[test]
    fn reserving_all_at_start() {
        let idx = index(&[mark(None, THEM, 50), mark(Some("a"), THEM, 7)]);
        let counters = [counter(None, 50, 50), counter(Some("a"), 7, 7)];
        let plan = reserve_all(&idx, &policy(), &counters);
        assert_eq!(blocks(&plan), vec![(50, 150), (7, 107)]);
        assert_eq!(plan.records.len(), 2);
    }

    #[test]
    fn giving_back_only_what_nobody_reserved_past() {
        let idx = index(&[
            mark(None, US, 100),
            mark(Some("a"), THEM, 300),
            mark(Some("b"), US, 100),
        ]);
        let counters = [
            counter(None, 42, 100),
            counter(Some("a"), 42, 100),
            counter(Some("b"), 100, 100),
        ];
        let back = give_back(&idx, &policy(), &counters);
        assert_eq!(
            back,
            vec![Record::Mark {
                key: None,
                instance: US,
                start: Some(1),
                mark: 42,
                used: 7,
            }]
        );
        // a counter with a block waiting past a gap gives nothing back
        let mut c = counter(None, 42, 100);
        c.view.pending = Some((300, 400));
        assert!(give_back(&index(&[mark(None, US, 400)]), &policy(), &[c]).is_empty());
    }
}
