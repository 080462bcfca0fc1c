//! The layout of a ticket zone in shared memory, and its key table.
//!
//! A zone is one block: a [`ZoneHeader`] (with the zone's default counter)
//! followed by a fixed table of [`KeySlot`]s for keyed counters. The table is
//! open addressing with linear probing and no deletion, so a key, once
//! published, never moves: lookups need no lock. A slot is claimed with one
//! compare-and-swap that records the claimant's pid; if that worker dies before
//! publishing, a later worker sees the pid is gone and takes the slot over.
//!
//! Everything here works on plain memory, so the tests run it on the heap.

use core::cell::UnsafeCell;
use core::mem::{align_of, size_of};
use core::sync::atomic::{AtomicU64, Ordering};

use crate::counter::{Counter, CounterView};
use crate::siphash::siphash24;
use crate::state::Record;

/// Longest key, in bytes; longer keys are refused with 400.
pub const KEY_MAX: usize = 64;

const MAGIC: u64 = u64::from_le_bytes(*b"NGXTICKT");
/// Bump when the shared layout changes: a reload must not reuse a zone laid
/// out by another build.
const LAYOUT_VERSION: u64 = 2;

/// Keys may fill at most this share of the table (in 1/256ths): past it,
/// linear probing chains grow long.
const LOAD_LIMIT_256: u64 = 192;

const SLOT_EMPTY: u64 = 0;
/// `BUSY | pid`: a worker is writing its key into the slot.
const SLOT_BUSY: u64 = 1 << 63;
/// `READY | hash tag`: the key is published and never changes.
const SLOT_READY: u64 = 1 << 62;
const TAG_MASK: u64 = SLOT_READY - 1;

/// How long a reader waits for a slot another worker is filling in; filling
/// one in is a few dozen instructions, so this is only reached when the other
/// worker was descheduled or died mid-way.
const BUSY_SPINS: u32 = 1 << 16;

#[repr(C)]
pub struct ZoneHeader {
    magic: u64,
    layout: u64,
    slot_size: u64,
    /// Slots in the table.
    slots: u64,
    /// Keys the zone accepts (a share of `slots`).
    capacity: u64,
    /// The hash key for this zone's table.
    seed: [u64; 2],
    /// Keys stored.
    used: AtomicU64,
    /// Durable zones: the identity this zone writes its state file under
    /// (0 until the zone becomes durable) and the file's write count.
    pub owner: AtomicU64,
    pub seq: AtomicU64,
    /// The pid of the worker writing the state file now, or 0: one writer
    /// at a time, taken over when that worker died.
    pub writer: AtomicU64,
    /// After a failed write, no new attempt before this time (msec).
    pub retry_at: AtomicU64,
    /// Keeps the hot default counter on a cache line of its own.
    _pad: [u64; 4],
    /// The counter of `ticket_counter` without `key=`.
    pub default: Counter,
    _pad_after: [u64; 4],
}

#[repr(C)]
pub struct KeySlot {
    state: AtomicU64,
    counter: Counter,
    key_len: AtomicU64,
    key: UnsafeCell<[u8; KEY_MAX]>,
}

// SAFETY: the key bytes are written only by the worker that claimed the slot,
// before it publishes the slot with a Release store; readers read them only
// after an Acquire load saw the slot published.
unsafe impl Sync for KeySlot {}

/// Why a keyed counter could not be found or made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// The zone holds as many keys as it can; existing keys still work.
    Full,
    /// Another live worker is still writing this slot (it was descheduled
    /// mid-way); the request may simply be retried.
    Busy,
}

/// Why a zone's memory could not be reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutError {
    NotATicketZone,
    OtherLayout,
}

impl ZoneHeader {
    /// Bytes one key costs, table slack included.
    pub fn bytes_per_key() -> usize {
        (size_of::<KeySlot>() as u64 * 256).div_ceil(LOAD_LIMIT_256) as usize
    }

    /// The number of slots a block of `bytes` holds.
    fn slots_for(bytes: usize) -> u64 {
        (bytes.saturating_sub(size_of::<ZoneHeader>()) / size_of::<KeySlot>()) as u64
    }

    /// The number of keys a block of `bytes` accepts.
    pub fn capacity_for(bytes: usize) -> u64 {
        Self::slots_for(bytes) * LOAD_LIMIT_256 / 256
    }

    pub fn alignment() -> usize {
        align_of::<ZoneHeader>().max(align_of::<KeySlot>())
    }

    /// Lays out a fresh zone in `bytes` bytes at `region`.
    ///
    /// # Safety
    /// `region` must be valid for writes of `bytes` bytes, aligned to
    /// [`Self::alignment`], and not yet in use by anyone else.
    pub unsafe fn create<'a>(region: *mut u8, bytes: usize, seed: [u64; 2]) -> &'a ZoneHeader {
        debug_assert!(bytes >= size_of::<ZoneHeader>());
        // SAFETY: the caller hands us `bytes` writable bytes; all-zero is a
        // valid value of every field (empty slots, unused counters).
        unsafe { core::ptr::write_bytes(region, 0, bytes) };
        let slots = Self::slots_for(bytes);
        let header = region.cast::<ZoneHeader>();
        // SAFETY: as above; the fields written are plain integers.
        unsafe {
            (*header).magic = MAGIC;
            (*header).layout = LAYOUT_VERSION;
            (*header).slot_size = size_of::<KeySlot>() as u64;
            (*header).slots = slots;
            (*header).capacity = slots * LOAD_LIMIT_256 / 256;
            (*header).seed = seed;
            &*header
        }
    }

    /// Reuses a zone laid out earlier (by a previous cycle).
    ///
    /// # Safety
    /// `region` must point to a live block that [`Self::create`] laid out, or
    /// at least to `size_of::<ZoneHeader>()` readable bytes.
    pub unsafe fn attach<'a>(region: *const u8) -> Result<&'a ZoneHeader, LayoutError> {
        // SAFETY: the caller guarantees a readable header's worth of bytes.
        let header = unsafe { &*region.cast::<ZoneHeader>() };
        if header.magic != MAGIC {
            return Err(LayoutError::NotATicketZone);
        }
        if header.layout != LAYOUT_VERSION || header.slot_size != size_of::<KeySlot>() as u64 {
            return Err(LayoutError::OtherLayout);
        }
        Ok(header)
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed).min(self.capacity)
    }

    fn table(&self) -> &[KeySlot] {
        // SAFETY: `create` sized the block for `slots` slots right after the
        // header, and the header lives as long as the block.
        unsafe {
            let first = (self as *const ZoneHeader).add(1).cast::<KeySlot>();
            core::slice::from_raw_parts(first, self.slots as usize)
        }
    }

    fn hash(&self, key: &[u8]) -> u64 {
        siphash24(self.seed, key)
    }

    /// Finds the counter of `key`, creating it (first ticket `start`) when it
    /// is new. `me` is this process's pid and `is_alive` tells whether the pid
    /// that claimed a slot still runs.
    pub fn counter_for(
        &self,
        key: &[u8],
        start: u64,
        me: u32,
        is_alive: impl Fn(u32) -> bool,
    ) -> Result<&Counter, KeyError> {
        debug_assert!(!key.is_empty() && key.len() <= KEY_MAX);
        let table = self.table();
        if table.is_empty() {
            return Err(KeyError::Full);
        }
        let hash = self.hash(key);
        let tag = hash & TAG_MASK;
        let mut index = (hash % table.len() as u64) as usize;

        for _ in 0..table.len() {
            let slot = &table[index];
            let mut state = slot.state.load(Ordering::Acquire);
            let mut spins = 0;
            loop {
                if state == SLOT_EMPTY {
                    if self.used.load(Ordering::Relaxed) >= self.capacity {
                        return Err(KeyError::Full);
                    }
                    match slot.state.compare_exchange(
                        SLOT_EMPTY,
                        SLOT_BUSY | u64::from(me),
                        Ordering::Acquire,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => return Ok(self.publish(slot, key, tag, start)),
                        Err(now) => {
                            state = now;
                            continue;
                        }
                    }
                }
                if state & SLOT_READY != 0 {
                    if state & TAG_MASK == tag && slot.key() == key {
                        return Ok(&slot.counter);
                    }
                    break; // someone else's key: probe on
                }
                // BUSY: another worker is writing a key here, maybe ours.
                if spins < BUSY_SPINS {
                    spins += 1;
                    core::hint::spin_loop();
                    state = slot.state.load(Ordering::Acquire);
                    continue;
                }
                let owner = (state & 0xffff_ffff) as u32;
                if owner != me && is_alive(owner) {
                    return Err(KeyError::Busy);
                }
                // The claimant died before publishing: its key was never
                // visible to anyone, so the slot is free for ours.
                match slot.state.compare_exchange(
                    state,
                    SLOT_BUSY | u64::from(me),
                    Ordering::Acquire,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return Ok(self.publish(slot, key, tag, start)),
                    Err(now) => {
                        state = now;
                        spins = 0;
                    }
                }
            }
            index = (index + 1) % table.len();
        }
        Err(KeyError::Full)
    }

    /// Fills in a slot this worker claimed and makes it visible.
    fn publish<'s>(&self, slot: &'s KeySlot, key: &[u8], tag: u64, start: u64) -> &'s Counter {
        // SAFETY: this worker owns the slot (its BUSY claim succeeded), so no
        // one else writes the key, and no one reads it before READY below.
        unsafe { (&mut *slot.key.get())[..key.len()].copy_from_slice(key) };
        slot.key_len.store(key.len() as u64, Ordering::Relaxed);
        slot.counter.set(start, 0, 0);
        slot.state.store(SLOT_READY | tag, Ordering::Release);
        self.used.fetch_add(1, Ordering::Relaxed);
        &slot.counter
    }

    /// Takes over every counter of `old` (a zone being replaced), retiring
    /// each one as it is read. Returns how many counters moved and how many
    /// keys found no room. Call before any worker uses this zone.
    pub fn absorb(&self, old: &ZoneHeader) -> (u64, u64) {
        let (mut moved, mut dropped) = (0, 0);
        let view = old.default.retire();
        if view.start.is_some() || view.issued > 0 {
            self.default.resume(view.start, view.issued);
            self.default.raise_reserved(view.reserved);
            moved += 1;
        }
        for (key, counter) in old.keys() {
            let view = counter.retire();
            let start = view.start.unwrap_or(0);
            match self.counter_for(key, start, 0, |_| false) {
                Ok(new) => {
                    new.set(start, view.issued, view.reserved);
                    moved += 1;
                }
                Err(_) => dropped += 1,
            }
        }
        (moved, dropped)
    }

    /// Every counter with its key (`None`: the default counter).
    pub fn counters(&self) -> impl Iterator<Item = (Option<&[u8]>, &Counter)> {
        core::iter::once((None, &self.default)).chain(self.keys().map(|(k, c)| (Some(k), c)))
    }

    /// The state file's records: for each counter, the mark `mark_of` gives
    /// (a reservation ahead, or the exact count at a clean stop), with the
    /// counter it belongs to. Unused counters are left out.
    pub fn records(&self, mark_of: impl Fn(&CounterView) -> u64) -> Vec<(Record, &Counter)> {
        self.counters()
            .filter_map(|(key, counter)| {
                let view = counter.view();
                let mark = mark_of(&view);
                (view.start.is_some() || mark > 0).then(|| {
                    let record = Record {
                        key: key.map(<[u8]>::to_vec),
                        start: view.start,
                        mark,
                    };
                    (record, counter)
                })
            })
            .collect()
    }

    /// Restores counters from a state file: each resumes at its mark. Call
    /// before any worker uses the zone. Returns the records that found no room.
    pub fn restore(&self, records: &[Record]) -> usize {
        let mut dropped = 0;
        for record in records {
            let counter = match &record.key {
                None => Ok(&self.default),
                Some(key) => self.counter_for(key, record.start.unwrap_or(0), 0, |_| false),
            };
            match counter {
                Ok(counter) => counter.resume(record.start, record.mark),
                Err(_) => dropped += 1,
            }
        }
        dropped
    }

    /// Every published key with its counter, in table order.
    pub fn keys(&self) -> impl Iterator<Item = (&[u8], &Counter)> {
        self.table()
            .iter()
            .filter(|slot| slot.state.load(Ordering::Acquire) & SLOT_READY != 0)
            .map(|slot| (slot.key(), &slot.counter))
    }
}

impl KeySlot {
    /// The published key. Only call after seeing the slot READY.
    fn key(&self) -> &[u8] {
        let len = (self.key_len.load(Ordering::Relaxed) as usize).min(KEY_MAX);
        // SAFETY: published keys are never written again (see `Sync` above).
        unsafe { &(&*self.key.get())[..len] }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counter::Take;
    use std::sync::Arc;

    /// A zone on the heap, as the tests' stand-in for shared memory.
    struct HeapZone {
        words: Vec<u64>,
    }

    impl HeapZone {
        fn new(bytes: usize) -> Self {
            let mut words = vec![0u64; bytes / 8 + 16];
            // u64 alignment is all the layout needs (checked below)
            assert!(ZoneHeader::alignment() <= 8);
            // SAFETY: `words` is ours and large enough.
            unsafe { ZoneHeader::create(words.as_mut_ptr().cast(), bytes, [7, 11]) };
            HeapZone { words }
        }

        fn header(&self) -> &ZoneHeader {
            // SAFETY: laid out by `create` in `new`.
            unsafe { ZoneHeader::attach(self.words.as_ptr().cast()) }.unwrap()
        }
    }

    fn take(counter: &Counter) -> u64 {
        match counter.take(1, 1, None, false) {
            Take::Issued { first, .. } => first,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn capacity_follows_size() {
        let slot = size_of::<KeySlot>();
        assert_eq!(slot, 112);
        let bytes = 1024 * 1024;
        let slots = (bytes - size_of::<ZoneHeader>()) / slot;
        assert_eq!(ZoneHeader::capacity_for(bytes), slots as u64 * 3 / 4);
        assert_eq!(ZoneHeader::bytes_per_key(), 150);
        let zone = HeapZone::new(bytes);
        assert_eq!(zone.header().capacity(), ZoneHeader::capacity_for(bytes));
    }

    #[test]
    fn attach_refuses_foreign_memory() {
        let words = vec![0u64; 512];
        // SAFETY: 4 KiB of readable zeroes.
        let err = unsafe { ZoneHeader::attach(words.as_ptr().cast()) }.err();
        assert_eq!(err, Some(LayoutError::NotATicketZone));
    }

    #[test]
    fn keys_are_separate_counters() {
        let zone = HeapZone::new(64 * 1024);
        let z = zone.header();
        let alive = |_| true;
        let a = z.counter_for(b"a", 1, 1, alive).unwrap();
        assert_eq!(take(a), 1);
        assert_eq!(take(a), 2);
        let b = z.counter_for(b"b", 1, 1, alive).unwrap();
        assert_eq!(take(b), 1);
        assert_eq!(take(z.counter_for(b"a", 1, 2, alive).unwrap()), 3);
        assert_eq!(z.used(), 2);
        let mut keys: Vec<_> = z
            .keys()
            .map(|(k, c)| (k.to_vec(), c.view().issued))
            .collect();
        keys.sort();
        assert_eq!(keys, vec![(b"a".to_vec(), 3), (b"b".to_vec(), 1)]);
    }

    #[test]
    fn a_full_zone_refuses_new_keys_and_keeps_old_ones() {
        let zone = HeapZone::new(32 * 1024);
        let z = zone.header();
        let capacity = z.capacity();
        for i in 0..capacity {
            z.counter_for(format!("k{i}").as_bytes(), 1, 1, |_| true)
                .unwrap();
        }
        assert_eq!(
            z.counter_for(b"one-too-many", 1, 1, |_| true).err(),
            Some(KeyError::Full)
        );
        for i in 0..capacity {
            let c = z
                .counter_for(format!("k{i}").as_bytes(), 1, 1, |_| true)
                .unwrap();
            assert_eq!(take(c), 1);
        }
    }

    #[test]
    fn a_slot_left_busy_by_a_dead_worker_is_taken_over() {
        let zone = HeapZone::new(32 * 1024);
        let z = zone.header();
        let index = (z.hash(b"k") % z.slots) as usize;
        z.table()[index]
            .state
            .store(SLOT_BUSY | 4242, Ordering::Release);
        // owner alive: the caller is told to retry, nothing is duplicated
        assert_eq!(
            z.counter_for(b"k", 1, 7, |pid| pid == 4242).err(),
            Some(KeyError::Busy)
        );
        // owner dead: the slot is reused for the key
        let c = z.counter_for(b"k", 1, 7, |_| false).unwrap();
        assert_eq!(take(c), 1);
        assert_eq!(take(z.counter_for(b"k", 1, 7, |_| false).unwrap()), 2);
        assert_eq!(z.used(), 1);
    }

    #[test]
    fn absorb_moves_counters_and_retires_the_old_ones() {
        let old_zone = HeapZone::new(64 * 1024);
        let old = old_zone.header();
        take(&old.default);
        take(&old.default);
        let a = old.counter_for(b"a", 10, 1, |_| true).unwrap();
        assert_eq!(take(a), 10);
        let new_zone = HeapZone::new(128 * 1024);
        let new = new_zone.header();
        assert_eq!(new.absorb(old), (2, 0));
        assert_eq!(take(&new.default), 3);
        assert_eq!(take(new.counter_for(b"a", 1, 1, |_| true).unwrap()), 11);
        assert_eq!(old.default.take(1, 1, None, false), Take::Retired);
        assert_eq!(a.take(1, 1, None, false), Take::Retired);
    }

    #[test]
    fn records_and_restore_round_trip() {
        let zone = HeapZone::new(64 * 1024);
        let z = zone.header();
        take(&z.default);
        let a = z.counter_for(b"a", 5, 1, |_| true).unwrap();
        take(a);
        take(a);
        z.counter_for(b"unused", 1, 1, |_| true).unwrap();
        let ahead: Vec<Record> = z
            .records(|v| v.issued + 100)
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        assert_eq!(ahead.len(), 3);
        assert_eq!(
            ahead[0],
            Record {
                key: None,
                start: Some(1),
                mark: 101
            }
        );
        let exact: Vec<Record> = z
            .records(|v| v.issued)
            .into_iter()
            .map(|(r, _)| r)
            .collect();

        let restarted = HeapZone::new(64 * 1024);
        let r = restarted.header();
        assert_eq!(r.restore(&exact), 0);
        assert_eq!(take(&r.default), 2);
        assert_eq!(take(r.counter_for(b"a", 5, 1, |_| true).unwrap()), 7);
        let crashed = HeapZone::new(64 * 1024);
        let c = crashed.header();
        c.restore(&ahead);
        // after a crash: a gap of at most the reservation, never a repeat
        assert_eq!(take(&c.default), 102);
        assert_eq!(take(c.counter_for(b"a", 5, 1, |_| true).unwrap()), 107);
        // the default counter of a zone whose file never saw it used
        let fresh = HeapZone::new(64 * 1024);
        fresh.header().restore(&[Record {
            key: None,
            start: None,
            mark: 100,
        }]);
        assert_eq!(take(&fresh.header().default), 101);
    }

    #[test]
    fn concurrent_inserts_of_one_key_make_one_counter() {
        let zone = Arc::new(HeapZone::new(256 * 1024));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let zone = Arc::clone(&zone);
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    for i in 0..2_000u32 {
                        let key = format!("key{}", i % 50);
                        let c = zone
                            .header()
                            .counter_for(key.as_bytes(), 1, t, |_| true)
                            .unwrap();
                        got.push((key, take(c)));
                    }
                    got
                })
            })
            .collect();
        let mut all: Vec<(String, u64)> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 16_000, "a ticket was issued twice");
        assert_eq!(zone.header().used(), 50);
        for i in 0..50 {
            let key = format!("key{i}");
            let tickets: Vec<u64> = all
                .iter()
                .filter(|(k, _)| *k == key)
                .map(|(_, t)| *t)
                .collect();
            assert_eq!(tickets, (1..=tickets.len() as u64).collect::<Vec<_>>());
        }
    }
}
