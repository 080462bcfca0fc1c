//! The layout of a ticket zone's shared memory and its key table.
//!
//! A zone is one block: a [`ZoneHeader`] (with the zone's default counter)
//! followed by a fixed table of [`KeySlot`]s for keyed counters: open
//! addressing with linear probing. Every field is an atomic, so this file
//! needs no `unsafe`: the nginx edge turns the zone's base pointer into a
//! header and a slice of slots once, and tests use the heap.
//!
//! **Lookups and takes never lock.** Creating a key, retiring one and freeing
//! rooms happen under the zone's lock (nginx's shared-memory mutex of the
//! zone, which the master releases if its holder dies), so two workers never
//! create one key twice.
//!
//! A slot's `state` word says what the slot holds (empty, a published key,
//! or a retired key's tombstone), the key's generation and a hash tag. A
//! reader checks the key bytes between two reads of `state` (a sequence
//! lock): if `state` did not change, the bytes belonged to that key and
//! generation. The taker then names that generation to the counter, whose
//! compare-and-swap fails if the key was retired meanwhile (see
//! [`crate::core::counter`]): so a retired key's room can be reused at once.
//!
//! Retired keys leave tombstones, which later keys reuse; a tombstone right
//! before an empty slot becomes empty itself, so chains do not grow longer.

use core::mem::{align_of, size_of};
use core::sync::atomic::{fence, AtomicU64, Ordering};

use crate::core::counter::{Counter, CounterView, Gen};
use crate::core::siphash::siphash24;

/// Longest key, in bytes; longer keys are refused with 400.
pub const KEY_MAX: usize = 64;
const KEY_WORDS: usize = KEY_MAX / 8;

const MAGIC: u64 = u64::from_le_bytes(*b"NGXTICKT");
/// Bump when the shared layout changes: a reload must not reuse a zone laid
/// out by another build.
const LAYOUT_VERSION: u64 = 5;

/// Keys may fill at most this share of the table (in 1/256ths): past it,
/// linear probing chains grow long.
const LOAD_LIMIT_256: u64 = 192;

const KIND_SHIFT: u32 = 62;
const KIND_EMPTY: u64 = 0;
const KIND_READY: u64 = 1;
const KIND_TOMB: u64 = 2;
const GEN_SHIFT: u32 = 48;
const TAG_MASK: u64 = (1 << GEN_SHIFT) - 1;

/// How often a reader re-reads a slot that changes under it before it gives
/// up (the caller answers "try again"); changes take the zone's lock, so this
/// is only reached when a worker is descheduled mid-way for long.
const READ_RETRIES: u32 = 1 << 12;

fn kind_of(state: u64) -> u64 {
    state >> KIND_SHIFT
}

fn gen_of(state: u64) -> Gen {
    (state >> GEN_SHIFT) as Gen
}

fn state_of(kind: u64, gen: Gen, tag: u64) -> u64 {
    (kind << KIND_SHIFT) | (u64::from(gen) << GEN_SHIFT) | (tag & TAG_MASK)
}

/// The start of a zone's shared memory. Every field is atomic: it is shared
/// by every process of one nginx.
#[repr(C)]
#[derive(Default)]
pub struct ZoneHeader {
    magic: AtomicU64,
    layout: AtomicU64,
    slot_size: AtomicU64,
    /// Slots in the table.
    slots: AtomicU64,
    /// Keys the zone accepts (a share of `slots`).
    capacity: AtomicU64,
    /// The hash key for this zone's table.
    seed: [AtomicU64; 2],
    /// This nginx instance in a durable zone's state file: random, fixed
    /// when the zone is laid out, kept across reloads.
    instance: AtomicU64,
    /// Keys stored, and tombstones of retired keys.
    used: AtomicU64,
    tombstones: AtomicU64,
    /// Keys retired after being idle (status page).
    expired: AtomicU64,
    /// Set once a resized zone's counters moved to the new zone: no new keys.
    closed: AtomicU64,
    /// Redis zones: what this nginx last saw of its authority.
    pub remote: RemoteState,
    /// While a reload shrinks the zone: the keys the new zone fits (0: no
    /// limit). Keys made between the size check and the carry-over must
    /// fit too, or a key left behind would start again once room frees.
    /// (Was padding, always 0: an older build's zone has no limit.)
    key_limit: AtomicU64,
    /// Keeps the hot default counter on cache lines of its own.
    _pad: [AtomicU64; 3],
    /// The counter of `ticket_counter` without `key=`.
    default: Counter,
    _pad_after: [AtomicU64; 7],
}

/// Up to 56 bytes kept in atomics (a Redis run id or epoch); written under
/// the zone's lock, read with it too.
#[repr(C)]
#[derive(Default)]
pub struct ByteSlot {
    len: AtomicU64,
    words: [AtomicU64; 7],
}

impl ByteSlot {
    pub const MAX: usize = 56;

    pub fn get(&self) -> Vec<u8> {
        let len = (self.len.load(Ordering::Acquire) as usize).min(Self::MAX);
        let mut out: Vec<u8> = self
            .words
            .iter()
            .flat_map(|w| w.load(Ordering::Relaxed).to_le_bytes())
            .collect();
        out.truncate(len);
        out
    }

    /// Keeps `bytes` (cut at [`Self::MAX`]).
    pub fn set(&self, bytes: &[u8]) {
        let bytes = &bytes[..bytes.len().min(Self::MAX)];
        for (i, word) in self.words.iter().enumerate() {
            let mut chunk = [0u8; 8];
            if let Some(part) = bytes.get(i * 8..) {
                let n = part.len().min(8);
                chunk[..n].copy_from_slice(&part[..n]);
            }
            word.store(u64::from_le_bytes(chunk), Ordering::Relaxed);
        }
        self.len.store(bytes.len() as u64, Ordering::Release);
    }
}

/// Most workers whose Redis connection the status page follows.
pub const MAX_LINK_SLOTS: usize = 32;

/// A Redis zone's view of its authority, shared by the workers.
#[repr(C)]
#[derive(Default)]
pub struct RemoteState {
    /// The Redis run id this zone last saw, and the zone's epoch there.
    pub run_id: ByteSlot,
    pub epoch: ByteSlot,
    /// The highest fence epoch this zone saw in Redis (0: none): a run
    /// whose metadata has not moved past it missed writes seen elsewhere.
    pub fence_epoch: AtomicU64,
    /// Batches sent, tickets they carried, failures.
    pub batches: AtomicU64,
    pub tickets: AtomicU64,
    pub errors: AtomicU64,
    pub timeouts: AtomicU64,
    pub fences: AtomicU64,
    pub repairs: AtomicU64,
    /// Per worker number: `pid << 1 | connected`.
    pub links: [AtomicU64; MAX_LINK_SLOTS],
}

impl RemoteState {
    /// Takes over what `old` knew of the authority (a resized zone): the run
    /// it served from, the zone's epoch there, the highest fence epoch seen.
    /// Each side is read or written under its own zone's lock.
    pub fn adopt_view(&self, old: &RemoteState) {
        self.run_id.set(&old.run_id.get());
        self.epoch.set(&old.epoch.get());
        self.fence_epoch
            .fetch_max(old.fence_epoch.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

/// One room of the key table.
#[repr(C)]
#[derive(Default)]
pub struct KeySlot {
    state: AtomicU64,
    key_len: AtomicU64,
    key: [AtomicU64; KEY_WORDS],
    counter: Counter,
}

/// Why a keyed counter could not be found or made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// The zone holds as many keys as it can; existing keys still work.
    Full,
    /// A reload moved the zone's counters to a new zone; this worker is
    /// outgoing.
    Closed,
    /// A slot kept changing under the reader; the request may be retried.
    Busy,
}

/// Why a zone's memory could not be reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutError {
    NotATicketZone,
    OtherLayout,
    WrongSize,
}

/// The zone's lock, taken for creating and retiring keys (the edge uses
/// nginx's shared-memory mutex; tests a spin lock).
pub trait ZoneLock {
    fn lock(&self);
    fn unlock(&self);
}

struct Held<'a, L: ZoneLock + ?Sized>(&'a L);

impl<'a, L: ZoneLock + ?Sized> Held<'a, L> {
    fn new(lock: &'a L) -> Self {
        lock.lock();
        Held(lock)
    }
}

impl<L: ZoneLock + ?Sized> Drop for Held<'_, L> {
    fn drop(&mut self) {
        self.0.unlock();
    }
}

/// A key's bytes, copied out of shared memory.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyBuf {
    len: u8,
    bytes: [u8; KEY_MAX],
}

impl KeyBuf {
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len).min(KEY_MAX)]
    }
}

impl core::fmt::Debug for KeyBuf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// A keyed counter found in the table, with the generation to take from.
#[derive(Clone, Copy)]
pub struct KeyRef<'z> {
    pub counter: &'z Counter,
    pub gen: Gen,
    index: usize,
}

/// The outcome of a lock-free lookup.
#[derive(Clone, Copy)]
pub enum Lookup<'z> {
    Found(KeyRef<'z>),
    Absent,
    Busy,
}

/// Bytes one key costs, table slack included.
pub fn bytes_per_key() -> usize {
    (size_of::<KeySlot>() as u64 * 256).div_ceil(LOAD_LIMIT_256) as usize
}

/// The number of slots a block of `bytes` holds.
pub fn slots_for(bytes: usize) -> usize {
    bytes.saturating_sub(size_of::<ZoneHeader>()) / size_of::<KeySlot>()
}

/// The number of keys a block of `bytes` accepts.
pub fn capacity_for(bytes: usize) -> u64 {
    slots_for(bytes) as u64 * LOAD_LIMIT_256 / 256
}

/// The alignment the block must have.
pub fn alignment() -> usize {
    align_of::<ZoneHeader>().max(align_of::<KeySlot>())
}

/// Where the table starts, in bytes from the start of the block.
pub const fn table_offset() -> usize {
    size_of::<ZoneHeader>()
}

impl ZoneHeader {
    /// Lays out a fresh zone whose memory is all zero (so every slot is
    /// empty and every counter unused) with `slots` slots.
    pub fn init(&self, slots: usize, seed: [u64; 2], instance: u64) {
        let relaxed = Ordering::Relaxed;
        self.layout.store(LAYOUT_VERSION, relaxed);
        self.slot_size.store(size_of::<KeySlot>() as u64, relaxed);
        self.slots.store(slots as u64, relaxed);
        self.capacity
            .store(slots as u64 * LOAD_LIMIT_256 / 256, relaxed);
        self.seed[0].store(seed[0], relaxed);
        self.seed[1].store(seed[1], relaxed);
        self.instance.store(instance, relaxed);
        self.magic.store(MAGIC, Ordering::Release);
    }

    /// Checks that this memory was laid out by [`Self::init`] of this build,
    /// and returns its number of slots.
    pub fn check(&self) -> Result<usize, LayoutError> {
        if self.magic.load(Ordering::Acquire) != MAGIC {
            return Err(LayoutError::NotATicketZone);
        }
        if self.layout.load(Ordering::Relaxed) != LAYOUT_VERSION
            || self.slot_size.load(Ordering::Relaxed) != size_of::<KeySlot>() as u64
        {
            return Err(LayoutError::OtherLayout);
        }
        Ok(self.slots.load(Ordering::Relaxed) as usize)
    }
}

/// A zone: its header and its slots, both in shared memory.
#[derive(Clone, Copy)]
pub struct SharedZone<'z> {
    header: &'z ZoneHeader,
    slots: &'z [KeySlot],
}

impl<'z> SharedZone<'z> {
    /// Ties a checked header to its table.
    pub fn new(header: &'z ZoneHeader, slots: &'z [KeySlot]) -> Result<Self, LayoutError> {
        if header.check()? != slots.len() {
            return Err(LayoutError::WrongSize);
        }
        Ok(SharedZone { header, slots })
    }

    pub fn header(&self) -> &'z ZoneHeader {
        self.header
    }

    pub fn default_counter(&self) -> &'z Counter {
        &self.header.default
    }

    pub fn capacity(&self) -> u64 {
        self.header.capacity.load(Ordering::Relaxed)
    }

    pub fn used(&self) -> u64 {
        self.header.used.load(Ordering::Relaxed)
    }

    pub fn expired(&self) -> u64 {
        self.header.expired.load(Ordering::Relaxed)
    }

    pub fn instance(&self) -> u64 {
        self.header.instance.load(Ordering::Relaxed)
    }

    pub fn set_instance(&self, instance: u64) {
        self.header.instance.store(instance, Ordering::Relaxed);
    }

    pub fn is_closed(&self) -> bool {
        self.header.closed.load(Ordering::Acquire) != 0
    }

    /// A reload is moving the keys into a zone that fits `keys` of them (0:
    /// none is, or the new zone fits all this one can hold): no key is made
    /// past that many until then. Set in the master, read under the lock.
    pub fn limit_keys(&self, keys: u64) {
        self.header.key_limit.store(keys, Ordering::SeqCst);
    }

    /// See [`limit_keys`](Self::limit_keys).
    pub fn key_limit(&self) -> Option<u64> {
        match self.header.key_limit.load(Ordering::Acquire) {
            0 => None,
            keys => Some(keys),
        }
    }

    fn hash(&self, key: &[u8]) -> (usize, u64) {
        let seed = [
            self.header.seed[0].load(Ordering::Relaxed),
            self.header.seed[1].load(Ordering::Relaxed),
        ];
        let hash = siphash24(seed, key);
        let home = (hash % self.slots.len().max(1) as u64) as usize;
        (home, (hash >> 16) & TAG_MASK)
    }

    /// Reads a published slot's key between two reads of its state:
    /// `Some((state, key))` if the slot did not change meanwhile.
    fn read_key(slot: &KeySlot, state: u64) -> Option<KeyBuf> {
        let mut buf = KeyBuf {
            len: 0,
            bytes: [0; KEY_MAX],
        };
        let len = (slot.key_len.load(Ordering::Relaxed) as usize).min(KEY_MAX);
        for (i, word) in slot.key.iter().enumerate().take(len.div_ceil(8)) {
            let bytes = word.load(Ordering::Relaxed).to_le_bytes();
            buf.bytes[i * 8..i * 8 + 8].copy_from_slice(&bytes);
        }
        buf.len = len as u8;
        fence(Ordering::Acquire);
        (slot.state.load(Ordering::Relaxed) == state).then_some(buf)
    }

    fn write_key(slot: &KeySlot, key: &[u8]) {
        // Readers that saw this slot's previous key re-read its state after
        // reading the bytes; this fence makes them see it changed if they
        // see any of the new bytes (see the module comment).
        fence(Ordering::Release);
        for (i, word) in slot.key.iter().enumerate() {
            let mut bytes = [0u8; 8];
            if let Some(chunk) = key.get(i * 8..) {
                let n = chunk.len().min(8);
                bytes[..n].copy_from_slice(&chunk[..n]);
            }
            word.store(u64::from_le_bytes(bytes), Ordering::Relaxed);
        }
        slot.key_len.store(key.len() as u64, Ordering::Relaxed);
    }

    fn probe(&self, home: usize) -> impl Iterator<Item = usize> + '_ {
        let n = self.slots.len();
        (0..n).map(move |i| (home + i) % n)
    }

    /// Finds `key` without locking.
    pub fn find(&self, key: &[u8]) -> Lookup<'z> {
        let (home, tag) = self.hash(key);
        let slots = self.slots;
        for index in self.probe(home) {
            let slot = &slots[index];
            let mut retries = 0;
            loop {
                let state = slot.state.load(Ordering::Acquire);
                match kind_of(state) {
                    KIND_EMPTY => return Lookup::Absent,
                    KIND_READY if state & TAG_MASK == tag => {}
                    _ => break,
                }
                match Self::read_key(slot, state) {
                    Some(buf) if buf.as_bytes() == key => {
                        return Lookup::Found(KeyRef {
                            counter: &slot.counter,
                            gen: gen_of(state),
                            index,
                        })
                    }
                    Some(_) => break,
                    None if retries < READ_RETRIES => retries += 1,
                    None => return Lookup::Busy,
                }
            }
        }
        Lookup::Absent
    }

    /// Finds `key`, creating it (first ticket `start`) when it is new.
    pub fn find_or_create(
        &self,
        key: &[u8],
        start: u64,
        now: u64,
        lock: &(impl ZoneLock + ?Sized),
    ) -> Result<KeyRef<'z>, KeyError> {
        match self.find(key) {
            Lookup::Found(found) => Ok(found),
            Lookup::Busy => Err(KeyError::Busy),
            Lookup::Absent => self.create(key, start, now, 0, lock),
        }
    }

    /// Creates `key` under the lock, unless another worker just did.
    pub fn create(
        &self,
        key: &[u8],
        start: u64,
        now: u64,
        flags: u64,
        lock: &(impl ZoneLock + ?Sized),
    ) -> Result<KeyRef<'z>, KeyError> {
        debug_assert!(!key.is_empty() && key.len() <= KEY_MAX);
        if key.is_empty() || key.len() > KEY_MAX {
            return Err(KeyError::Full);
        }
        let _held = Held::new(lock);
        if self.is_closed() {
            return Err(KeyError::Closed);
        }
        match self.find(key) {
            Lookup::Found(found) => return Ok(found),
            Lookup::Busy => return Err(KeyError::Busy),
            Lookup::Absent => {}
        }
        if self.used() >= self.capacity()
            || self.key_limit().is_some_and(|keys| self.used() >= keys)
        {
            return Err(KeyError::Full);
        }
        let (home, tag) = self.hash(key);
        let mut target = None;
        for index in self.probe(home) {
            match kind_of(self.slots[index].state.load(Ordering::Acquire)) {
                KIND_TOMB => {
                    target.get_or_insert(index);
                }
                KIND_EMPTY => {
                    target.get_or_insert(index);
                    break;
                }
                _ => {}
            }
        }
        let index = target.ok_or(KeyError::Full)?;
        let slot = &self.slots[index];
        let was_tomb = kind_of(slot.state.load(Ordering::Relaxed)) == KIND_TOMB;
        // A retired counter's generation was bumped when it was retired:
        // the new life takes it, so stale takers of the old one fail.
        let gen = slot.counter.gen();
        Self::write_key(slot, key);
        slot.counter.begin_life(gen, start, now, flags);
        slot.state
            .store(state_of(KIND_READY, gen, tag), Ordering::Release);
        self.header.used.fetch_add(1, Ordering::Relaxed);
        if was_tomb {
            self.header.tombstones.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(KeyRef {
            counter: &slot.counter,
            gen,
            index,
        })
    }

    /// Retires `key` (its life `gen`, if given), frees its room and returns
    /// its final view. A stale taker of it gets [`crate::core::counter::Take::Stale`].
    pub fn retire(
        &self,
        key: &[u8],
        gen: Option<Gen>,
        lock: &(impl ZoneLock + ?Sized),
    ) -> Option<CounterView> {
        let _held = Held::new(lock);
        let Lookup::Found(found) = self.find(key) else {
            return None;
        };
        if gen.is_some_and(|g| g != found.gen) {
            return None;
        }
        self.retire_slot(found)
    }

    /// Retires `key`'s life `gen` only if nothing of it was used (see
    /// [`Counter::retire_unused`]): as if it had never been made. Returns
    /// whether it was.
    pub fn retire_unused(&self, key: &[u8], gen: Gen, lock: &(impl ZoneLock + ?Sized)) -> bool {
        let _held = Held::new(lock);
        let Lookup::Found(found) = self.find(key) else {
            return false;
        };
        if found.gen != gen || found.counter.retire_unused(gen).is_none() {
            return false;
        }
        self.free_slot(found);
        true
    }

    fn retire_slot(&self, found: KeyRef<'z>) -> Option<CounterView> {
        let view = found.counter.retire(found.gen)?;
        self.free_slot(found);
        Some(view)
    }

    /// The room of a key whose counter was just retired becomes a tombstone.
    fn free_slot(&self, found: KeyRef<'z>) {
        let slot = &self.slots[found.index];
        let state = slot.state.load(Ordering::Relaxed);
        slot.state.store(
            state_of(KIND_TOMB, found.gen, state & TAG_MASK),
            Ordering::Release,
        );
        self.header.used.fetch_sub(1, Ordering::Relaxed);
        self.header.tombstones.fetch_add(1, Ordering::Relaxed);
        self.clear_tombstones_before(found.index);
    }

    /// A tombstone followed by an empty slot ends no chain: it (and the
    /// tombstones before it) can become empty. Under the lock.
    fn clear_tombstones_before(&self, index: usize) {
        let n = self.slots.len();
        let mut index = index;
        for _ in 0..n {
            let next = (index + 1) % n;
            let slot = &self.slots[index];
            let state = slot.state.load(Ordering::Relaxed);
            if kind_of(state) != KIND_TOMB
                || kind_of(self.slots[next].state.load(Ordering::Relaxed)) != KIND_EMPTY
            {
                return;
            }
            slot.state.store(KIND_EMPTY, Ordering::Release);
            self.header.tombstones.fetch_sub(1, Ordering::Relaxed);
            index = (index + n - 1) % n;
        }
    }

    /// Retires `key` if its life `gen` was last used before `cutoff` (Unix
    /// milliseconds): idle expiry. Returns its final view.
    pub fn expire(
        &self,
        key: &[u8],
        gen: Gen,
        cutoff: u64,
        lock: &(impl ZoneLock + ?Sized),
    ) -> Option<CounterView> {
        let _held = Held::new(lock);
        let Lookup::Found(found) = self.find(key) else {
            return None;
        };
        if found.gen != gen || found.counter.view().used >= cutoff {
            return None;
        }
        let view = self.retire_slot(found)?;
        self.header.expired.fetch_add(1, Ordering::Relaxed);
        Some(view)
    }

    /// Every published key with its counter, in table order, from slot
    /// `from` on (for status pages that render in slices): yields the slot
    /// index too.
    pub fn keys_from(&self, from: usize) -> impl Iterator<Item = (usize, KeyBuf, KeyRef<'z>)> + 'z {
        let slots = self.slots;
        (from..slots.len()).filter_map(move |index| {
            let slot = &slots[index];
            let state = slot.state.load(Ordering::Acquire);
            if kind_of(state) != KIND_READY {
                return None;
            }
            let key = Self::read_key(slot, state)?;
            Some((
                index,
                key,
                KeyRef {
                    counter: &slot.counter,
                    gen: gen_of(state),
                    index,
                },
            ))
        })
    }

    pub fn keys(&self) -> impl Iterator<Item = (KeyBuf, KeyRef<'z>)> + 'z {
        self.keys_from(0).map(|(_, key, found)| (key, found))
    }

    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Closes the zone (no new keys) and retires every counter, returning
    /// their final views: a reload resized the zone and this is the old one.
    pub fn close_and_drain(
        &self,
        lock: &(impl ZoneLock + ?Sized),
    ) -> (CounterView, Vec<(KeyBuf, CounterView)>) {
        let _held = Held::new(lock);
        self.header.closed.store(1, Ordering::SeqCst);
        let default = &self.header.default;
        let mut default_view = default.view();
        if let Some(view) = default.retire(default.gen()) {
            default_view = view;
        }
        let mut keys = Vec::new();
        for (key, found) in self.keys().collect::<Vec<_>>() {
            if let Some(view) = found.counter.retire(found.gen) {
                keys.push((key, view));
            }
        }
        (default_view, keys)
    }

    /// Takes over counters drained from an old zone. Returns how many keys
    /// found no room.
    pub fn absorb(
        &self,
        default: &CounterView,
        keys: &[(KeyBuf, CounterView)],
        lock: &(impl ZoneLock + ?Sized),
    ) -> usize {
        self.header.default.adopt(default);
        let mut dropped = 0;
        for (key, view) in keys {
            match self.create(
                key.as_bytes(),
                view.start.unwrap_or(0),
                view.used,
                view.flags,
                lock,
            ) {
                Ok(found) => found.counter.adopt(view),
                Err(_) => dropped += 1,
            }
        }
        dropped
    }

    /// Keys whose last use was before `cutoff` (Unix milliseconds).
    pub fn idle_keys(&self, cutoff: u64) -> Vec<(KeyBuf, Gen)> {
        self.keys()
            .filter(|(_, found)| found.counter.view().used < cutoff)
            .map(|(key, found)| (key, found.gen))
            .collect()
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::core::counter::{Ask, Take};
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    /// A spin lock standing in for nginx's shared-memory mutex.
    #[derive(Default)]
    pub struct SpinLock(AtomicBool);

    impl ZoneLock for SpinLock {
        fn lock(&self) {
            while self
                .0
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                std::hint::spin_loop();
            }
        }
        fn unlock(&self) {
            self.0.store(false, Ordering::Release);
        }
    }

    /// A zone on the heap, as the tests' stand-in for shared memory.
    pub struct HeapZone {
        header: Box<ZoneHeader>,
        slots: Vec<KeySlot>,
        pub lock: SpinLock,
    }

    impl HeapZone {
        pub fn new(bytes: usize) -> Self {
            let header = Box::<ZoneHeader>::default();
            let slots: Vec<KeySlot> = (0..slots_for(bytes)).map(|_| KeySlot::default()).collect();
            header.init(slots.len(), [7, 11], 42);
            HeapZone {
                header,
                slots,
                lock: SpinLock::default(),
            }
        }

        pub fn zone(&self) -> SharedZone<'_> {
            SharedZone::new(&self.header, &self.slots).unwrap()
        }
    }

    fn ask() -> Ask {
        Ask {
            start: 1,
            count: 1,
            max: None,
            gated: false,
            now: 1000,
        }
    }

    fn take(found: KeyRef<'_>) -> u64 {
        match found.counter.take(found.gen, &ask()) {
            Take::Tickets { first, .. } => first,
            other => panic!("{other:?}"),
        }
    }

    fn create<'z>(z: &SharedZone<'z>, lock: &SpinLock, key: &[u8]) -> KeyRef<'z> {
        z.find_or_create(key, 1, 1000, lock).unwrap()
    }

    #[test]
    fn capacity_follows_size() {
        assert_eq!(size_of::<KeySlot>(), 152);
        let slot = ByteSlot::default();
        slot.set(b"0123456789abcdef0123456789abcdef01234567");
        assert_eq!(slot.get(), b"0123456789abcdef0123456789abcdef01234567");
        slot.set(b"x");
        assert_eq!(slot.get(), b"x");
        let bytes = 1024 * 1024;
        let slots = (bytes - size_of::<ZoneHeader>()) / size_of::<KeySlot>();
        assert_eq!(capacity_for(bytes), slots as u64 * 3 / 4);
        assert_eq!(bytes_per_key(), 203);
        assert!(alignment() <= 8);
        let zone = HeapZone::new(bytes);
        assert_eq!(zone.zone().capacity(), capacity_for(bytes));
    }

    #[test]
    fn a_resized_zone_keeps_its_view_of_the_authority() {
        let (old, new) = (RemoteState::default(), RemoteState::default());
        old.run_id.set(b"8d0f6d8b3e2f0a1c9b7e6d5c4b3a29180f7e6d5c");
        old.epoch.set(b"e0e0");
        old.fence_epoch.store(3, Ordering::Relaxed);
        new.fence_epoch.store(1, Ordering::Relaxed);
        new.adopt_view(&old);
        assert_eq!(
            new.run_id.get(),
            b"8d0f6d8b3e2f0a1c9b7e6d5c4b3a29180f7e6d5c"
        );
        assert_eq!(new.epoch.get(), b"e0e0");
        assert_eq!(new.fence_epoch.load(Ordering::Relaxed), 3);
        // never lower than what the new zone saw itself
        old.fence_epoch.store(2, Ordering::Relaxed);
        new.adopt_view(&old);
        assert_eq!(new.fence_epoch.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn attach_checks_the_layout() {
        let zone = HeapZone::new(64 * 1024);
        assert!(SharedZone::new(&zone.header, &zone.slots[1..]).is_err());
        let blank = ZoneHeader::default();
        assert_eq!(blank.check().err(), Some(LayoutError::NotATicketZone));
    }

    #[test]
    fn keys_get_their_own_counters() {
        let zone = HeapZone::new(64 * 1024);
        let (z, l) = (zone.zone(), &zone.lock);
        let a = create(&z, l, b"a");
        assert_eq!(take(a), 1);
        assert_eq!(take(a), 2);
        assert_eq!(take(create(&z, l, b"b")), 1);
        assert_eq!(take(create(&z, l, b"a")), 3);
        assert_eq!(z.used(), 2);
        let long = [b'x'; KEY_MAX];
        assert_eq!(take(create(&z, l, &long)), 1);
        assert_eq!(take(create(&z, l, &long[..63])), 1);
        let mut keys: Vec<_> = z
            .keys()
            .map(|(k, c)| (k.as_bytes().to_vec(), c.counter.view().issued))
            .collect();
        keys.sort();
        assert_eq!(keys.len(), 4);
        assert_eq!(keys[0], (b"a".to_vec(), 3));
    }

    #[test]
    fn a_full_zone_refuses_new_keys_and_keeps_old_ones() {
        let zone = HeapZone::new(32 * 1024);
        let (z, l) = (zone.zone(), &zone.lock);
        for i in 0..z.capacity() {
            create(&z, l, format!("k{i}").as_bytes());
        }
        assert_eq!(
            z.find_or_create(b"one-too-many", 1, 0, l).err(),
            Some(KeyError::Full)
        );
        for i in 0..z.capacity() {
            assert_eq!(take(create(&z, l, format!("k{i}").as_bytes())), 1);
        }
    }

    #[test]
    fn while_a_shrink_is_pending_no_key_is_made_past_what_the_new_zone_fits() {
        let zone = HeapZone::new(32 * 1024);
        let (z, l) = (zone.zone(), &zone.lock);
        for i in 0..3 {
            create(&z, l, format!("k{i}").as_bytes());
        }
        z.limit_keys(5);
        assert_eq!(z.key_limit(), Some(5));
        create(&z, l, b"k3");
        create(&z, l, b"k4");
        assert_eq!(
            z.find_or_create(b"k5", 1, 0, l).err(),
            Some(KeyError::Full),
            "the new zone fits 5"
        );
        // keys already there still answer; a retired one frees room
        assert_eq!(take(create(&z, l, b"k0")), 1);
        z.retire(b"k1", None, l);
        create(&z, l, b"k5");
        // a reload that keeps the size lifts it
        z.limit_keys(0);
        assert_eq!(z.key_limit(), None);
        create(&z, l, b"k6");
        assert_eq!(z.used(), 6);
    }

    #[test]
    fn retired_keys_free_their_room_and_start_again() {
        let zone = HeapZone::new(32 * 1024);
        let (z, l) = (zone.zone(), &zone.lock);
        for i in 0..z.capacity() {
            create(&z, l, format!("k{i}").as_bytes());
        }
        let old = create(&z, l, b"k3");
        take(old);
        take(old);
        let view = z.retire(b"k3", None, l).unwrap();
        assert_eq!(view.issued, 2);
        assert!(matches!(z.find(b"k3"), Lookup::Absent));
        // the stale reference can no longer take
        assert_eq!(old.counter.take(old.gen, &ask()), Take::Stale);
        // the room goes to a new key
        let fresh = create(&z, l, b"new");
        assert_eq!(take(fresh), 1);
        assert_eq!(old.counter.take(old.gen, &ask()), Take::Stale);
        assert!(z.retire(b"k3", None, l).is_none());
        // and k3 comes back from its start
        assert_eq!(z.find_or_create(b"k3", 1, 0, l).err(), Some(KeyError::Full));
        z.retire(b"new", None, l);
        assert_eq!(take(create(&z, l, b"k3")), 1);
    }

    #[test]
    fn an_unused_key_retires_as_if_never_made() {
        let zone = HeapZone::new(32 * 1024);
        let (z, l) = (zone.zone(), &zone.lock);
        let before = z.used();
        let made = create(&z, l, b"oops");
        assert_eq!(z.used(), before + 1);
        assert!(!z.retire_unused(b"oops", made.gen.wrapping_add(1), l));
        assert!(z.retire_unused(b"oops", made.gen, l));
        assert!(matches!(z.find(b"oops"), Lookup::Absent));
        assert_eq!(z.used(), before);
        assert!(!z.retire_unused(b"oops", made.gen, l));
        // a key a taker used stays
        let used = create(&z, l, b"used");
        take(used);
        assert!(!z.retire_unused(b"used", used.gen, l));
        assert!(matches!(z.find(b"used"), Lookup::Found(_)));
        // and the room is reused
        assert_eq!(take(create(&z, l, b"oops")), 1);
    }

    #[test]
    fn churn_keeps_every_key_findable() {
        // Create and retire many keys in a small table: chains through
        // tombstones stay intact and rooms are reused.
        let zone = HeapZone::new(32 * 1024);
        let (z, l) = (zone.zone(), &zone.lock);
        let live = (z.capacity() / 2) as usize;
        let mut alive: std::collections::VecDeque<String> = Default::default();
        for i in 0..20_000 {
            let key = format!("key-{i}");
            create(&z, l, key.as_bytes());
            alive.push_back(key);
            if alive.len() > live {
                let gone = alive.pop_front().unwrap();
                assert!(z.retire(gone.as_bytes(), None, l).is_some());
            }
            if i % 997 == 0 {
                for key in &alive {
                    assert!(matches!(z.find(key.as_bytes()), Lookup::Found(_)), "{key}");
                }
            }
        }
        assert_eq!(z.used() as usize, live);
    }

    #[test]
    fn idle_keys_expire() {
        let zone = HeapZone::new(32 * 1024);
        let (z, l) = (zone.zone(), &zone.lock);
        let a = z.find_or_create(b"a", 1, 100, l).unwrap();
        z.find_or_create(b"b", 1, 200, l).unwrap();
        let idle = z.idle_keys(150);
        assert_eq!(idle.len(), 1);
        assert_eq!(idle[0].0.as_bytes(), b"a");
        assert!(z.expire(b"a", a.gen.wrapping_add(1), 150, l).is_none());
        assert!(z.expire(b"a", a.gen, 150, l).is_some());
        assert!(z.expire(b"b", 0, 150, l).is_none());
        assert_eq!(z.expired(), 1);
        assert_eq!(z.used(), 1);
    }

    #[test]
    fn draining_closes_the_zone_and_absorb_moves_everything() {
        let old_zone = HeapZone::new(64 * 1024);
        let (old, l) = (old_zone.zone(), &old_zone.lock);
        let d = old.default_counter();
        d.take_fast(0, &ask());
        d.take_fast(0, &ask());
        let a = old.find_or_create(b"a", 10, 0, l).unwrap();
        assert_eq!(take(a), 10);
        let (default, keys) = old.close_and_drain(l);
        assert_eq!(default.issued, 2);
        assert_eq!(keys.len(), 1);
        assert_eq!(d.take_fast(0, &ask()), Take::Stale);
        assert_eq!(a.counter.take(a.gen, &ask()), Take::Stale);
        assert_eq!(
            old.find_or_create(b"late", 1, 0, l).err(),
            Some(KeyError::Closed)
        );

        let new_zone = HeapZone::new(128 * 1024);
        let (new, nl) = (new_zone.zone(), &new_zone.lock);
        assert_eq!(new.absorb(&default, &keys, nl), 0);
        assert!(matches!(
            new.default_counter().take_fast(0, &ask()),
            Take::Tickets { first: 3, .. }
        ));
        assert_eq!(take(create(&new, nl, b"a")), 11);
    }

    #[test]
    fn concurrent_creates_of_one_key_make_one_counter() {
        let zone = Arc::new(HeapZone::new(256 * 1024));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let zone = Arc::clone(&zone);
                std::thread::spawn(move || {
                    let (z, l) = (zone.zone(), &zone.lock);
                    let mut got = Vec::new();
                    for i in 0..2_000u32 {
                        let key = format!("key{}", i % 50);
                        got.push((key.clone(), take(create(&z, l, key.as_bytes()))));
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
        assert_eq!(zone.zone().used(), 50);
    }

    #[test]
    fn concurrent_takes_and_retirements_keep_tickets_with_their_key() {
        // Takers race deletes and re-creations of the same keys: every
        // (key, life, ticket) is unique, and lives count from 1 without gaps
        // except at their end.
        let zone = Arc::new(HeapZone::new(64 * 1024));
        let stop = Arc::new(AtomicBool::new(false));
        let keys: Vec<String> = (0..8).map(|i| format!("k{i}")).collect();
        let takers: Vec<_> = (0..4)
            .map(|t| {
                let (zone, stop, keys) = (Arc::clone(&zone), Arc::clone(&stop), keys.clone());
                std::thread::spawn(move || {
                    let (z, l) = (zone.zone(), &zone.lock);
                    let mut got = Vec::new();
                    let mut i = t;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let key = &keys[i % keys.len()];
                        let Ok(found) = z.find_or_create(key.as_bytes(), 1, 0, l) else {
                            continue;
                        };
                        if let Take::Tickets { first, .. } = found.counter.take(found.gen, &ask()) {
                            // a life is a room and a generation
                            let room = core::ptr::from_ref(found.counter) as usize;
                            got.push((key.clone(), room, found.gen, first));
                        }
                    }
                    got
                })
            })
            .collect();
        let retirer = {
            let (zone, keys) = (Arc::clone(&zone), keys.clone());
            std::thread::spawn(move || {
                let (z, l) = (zone.zone(), &zone.lock);
                for round in 0..800 {
                    z.retire(keys[round % keys.len()].as_bytes(), None, l);
                    std::thread::yield_now();
                }
            })
        };
        retirer.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        let mut all: Vec<(String, usize, Gen, u64)> =
            takers.into_iter().flat_map(|t| t.join().unwrap()).collect();
        let total = all.len();
        all.sort();
        all.dedup();
        assert_eq!(
            total,
            all.len(),
            "a ticket was handed out twice in one life"
        );
        assert!(total > 1000);
    }
}
