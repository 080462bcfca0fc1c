//! The module's configuration types: what the directives leave behind for
//! the handlers, zone init and the durable writer. A leaf: everyone reads
//! these, and this file reads nobody but the pure core and nginx.

use core::ptr;
use std::net::SocketAddr;
use std::path::PathBuf;

use nginx_sys::{
    ngx_cycle_t, ngx_http_complex_value_t, ngx_shm_zone_t, ngx_shmtx_lock, ngx_shmtx_unlock,
    ngx_slab_pool_t, ngx_thread_pool_t, ngx_uint_t, NGX_LOG_ERR,
};

use ngx::http::{Merge, MergeConfigError};

use crate::core::config::{Format, RedisArgs, StatusFormat};
use crate::core::redis::keys::ZoneKeys;
use crate::core::table::{KeySlot, SharedZone, ZoneHeader, ZoneLock};

/// One zone, declared by `ticket_zone` or only named by a `zone=` so far;
/// allocated from the cycle's pool, so it lives as long as its cycle.
pub struct ZoneConf {
    pub name: String,
    /// Bytes of shared memory; 0 while only referenced.
    pub size: usize,
    pub shm_zone: *mut ngx_shm_zone_t,
    /// Where a `zone=` first named it, for the error when nothing declares it.
    pub first_use: Option<(String, &'static str)>,
    /// Set by zone init once the shared memory exists.
    pub memory: Option<ZoneMemory>,
    /// A resized zone's counters, taken from the previous cycle's zone once
    /// the new cycle is committed.
    pub carry_from: Option<ZoneMemory>,
    /// `state=`: the zone's counters survive restarts in this file.
    pub durable: Option<DurableConf>,
    /// `idle=`: keys not used for this many milliseconds are retired.
    pub idle: Option<u64>,
    /// `redis=`: the zone's counters live in Redis.
    pub redis: Option<RedisConf>,
    /// What the locations that use the zone ask of it, checked once the
    /// zone is known (a Redis zone takes no `start=`/`max=` past 2^63-1).
    pub uses: Vec<ZoneUse>,
    /// The cycle this zone belongs to (the global `ngx_cycle` is still the
    /// previous one while zones are initialised).
    pub cycle: *mut ngx_cycle_t,
}

impl ZoneConf {
    /// Whether a counter last used at `used` (Unix ms) is gone by `now`.
    pub fn is_idle(&self, used: u64, now: u64) -> bool {
        self.idle
            .is_some_and(|idle| used.saturating_add(idle) <= now)
    }

    pub fn new(name: String, cycle: *mut ngx_cycle_t) -> Self {
        ZoneConf {
            name,
            size: 0,
            shm_zone: ptr::null_mut(),
            first_use: None,
            memory: None,
            carry_from: None,
            durable: None,
            idle: None,
            redis: None,
            uses: Vec::new(),
            cycle,
        }
    }

    /// The zone's shared memory, once initialised.
    pub fn shared(&self) -> Option<SharedZone<'_>> {
        self.memory.as_ref().and_then(ZoneMemory::shared)
    }
}

/// `redis=URL …` of one zone.
pub struct RedisConf {
    pub args: RedisArgs,
    /// Resolved at configuration time, as nginx resolves upstream servers.
    pub addr: SocketAddr,
    pub keys: ZoneKeys,
}

impl RedisConf {
    /// Lease mode (`lease=N`) rather than strict.
    pub fn lease(&self) -> Option<u64> {
        self.args.lease
    }
}

/// One location's use of a zone.
pub struct ZoneUse {
    pub start: u64,
    pub max: Option<u64>,
    /// `ticket_variable` (which cannot wait).
    pub variable: bool,
    /// `FILE:LINE` and the directive, for errors.
    pub place: String,
    pub directive: &'static str,
}

/// Where a zone's layout lives in shared memory.
pub struct ZoneMemory {
    pub header: *const ZoneHeader,
    pub slots: *const KeySlot,
    pub len: usize,
    /// The zone's slab pool, whose mutex is the zone's lock.
    pub shpool: *mut ngx_slab_pool_t,
}

impl ZoneMemory {
    /// The header and table, checked.
    pub fn shared(&self) -> Option<SharedZone<'_>> {
        // SAFETY: zone init set these to the zone's block (header, then
        // `len` slots right after it, derived from the block's base), which
        // stays mapped as long as the cycle that owns this ZoneConf.
        let (header, slots) = unsafe {
            (
                self.header.as_ref()?,
                core::slice::from_raw_parts(self.slots, self.len),
            )
        };
        SharedZone::new(header, slots).ok()
    }
}

impl ZoneLock for ZoneMemory {
    fn lock(&self) {
        // SAFETY: the slab pool heads the zone's shared memory; its mutex is
        // nginx's, which the master unlocks if a worker dies holding it.
        unsafe { ngx_shmtx_lock(ptr::addr_of_mut!((*self.shpool).mutex)) };
    }

    fn unlock(&self) {
        // SAFETY: as above; only called by the holder (see table.rs).
        unsafe { ngx_shmtx_unlock(ptr::addr_of_mut!((*self.shpool).mutex)) };
    }
}

/// `state=PATH reserve=N` of one zone.
pub struct DurableConf {
    pub path: PathBuf,
    pub reserve: u64,
    /// nginx's "default" thread pool, where state-file writes run.
    pub thread_pool: *mut ngx_thread_pool_t,
}

impl DurableConf {
    /// Extend a counter's coverage when fewer than this many are left.
    pub fn low_water(&self) -> u64 {
        (self.reserve / 2).max(1)
    }
}

/// `ticket_counter`'s (or a `ticket_variable`'s) settings.
pub struct CounterConf {
    pub zone: *mut ZoneConf,
    /// `key=`, compiled; null for the zone's default counter.
    pub key: *mut ngx_http_complex_value_t,
    pub start: u64,
    pub max: Option<u64>,
    pub batch: Option<u64>,
    pub format: Format,
    pub width: usize,
    /// `create=off`: unknown keys get 404 instead of a new counter.
    pub create: bool,
}

impl CounterConf {
    pub fn zone(&self) -> Option<&ZoneConf> {
        // SAFETY: set by the directive to a zone allocated from the cycle's
        // pool.
        unsafe { self.zone.as_ref() }
    }
}

/// `ticket_status`'s settings.
pub struct StatusConf {
    /// Null: every zone.
    pub zone: *mut ZoneConf,
    pub format: StatusFormat,
}

/// `ticket_admin`'s settings.
pub struct AdminConf {
    pub zone: *mut ZoneConf,
}

impl AdminConf {
    pub fn zone(&self) -> Option<&ZoneConf> {
        // SAFETY: as for CounterConf.
        unsafe { self.zone.as_ref() }
    }
}

#[derive(Default)]
pub struct MainConf {
    pub zones: Vec<*mut ZoneConf>,
}

impl MainConf {
    pub fn zones(&self) -> impl Iterator<Item = &ZoneConf> {
        // SAFETY: zones are allocated from the cycle's pool and never freed
        // before the cycle.
        self.zones.iter().filter_map(|z| unsafe { z.as_ref() })
    }
}

/// The level nginx uses when `ticket_log_level` is not set.
pub const DEFAULT_LOG_LEVEL: ngx_uint_t = NGX_LOG_ERR as ngx_uint_t;
/// A level not set at this configuration level (nginx's NGX_CONF_UNSET_UINT).
pub const UNSET_LEVEL: ngx_uint_t = ngx_uint_t::MAX;

pub struct LocConf {
    pub counter: Option<CounterConf>,
    pub status: Option<StatusConf>,
    pub admin: Option<AdminConf>,
    /// `ticket_log_level`: how refusals are logged; unset until merged.
    pub log_level: ngx_uint_t,
}

impl Default for LocConf {
    fn default() -> Self {
        LocConf {
            counter: None,
            status: None,
            admin: None,
            log_level: UNSET_LEVEL,
        }
    }
}

/// `ticket_log_level` is inherited from the enclosing level.
impl Merge for LocConf {
    fn merge(&mut self, prev: &Self) -> Result<(), MergeConfigError> {
        if self.log_level == UNSET_LEVEL {
            self.log_level = if prev.log_level == UNSET_LEVEL {
                DEFAULT_LOG_LEVEL
            } else {
                prev.log_level
            };
        }
        Ok(())
    }
}

impl LocConf {
    /// Whether a content directive of this module is already set here.
    pub fn has_handler(&self) -> bool {
        self.counter.is_some() || self.status.is_some() || self.admin.is_some()
    }
}
