//! Zone init: lays out a fresh zone, or reuses the previous cycle's on reload.
//!
//! nginx reuses a zone's memory across `nginx -s reload` when its name and size
//! are unchanged, and passes the old cycle's zone data to init: we then attach
//! to the same counters, as limit_req does. When the size changed, nginx hands
//! out new memory; the counters are carried over from the old zone once the
//! new cycle is committed (see [`carry_over`]), never before, so a reload that
//! fails leaves the running configuration untouched.

use core::ffi::c_void;
use std::io::Read;

use nginx_sys::{
    ngx_int_t, ngx_log_t, ngx_pagesize, ngx_shm_zone_t, ngx_slab_alloc, ngx_slab_pool_t, NGX_ERROR,
    NGX_LOG_EMERG, NGX_LOG_NOTICE, NGX_OK,
};
use ngx::ngx_log_error;

use crate::directives::TicketZone;
use crate::module::ngx_http_ticket_module;
use crate::zone::ZoneHeader;

/// Whether process `pid` still runs (for work a dead process left claimed).
pub fn is_alive(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    // SAFETY: signal 0 sends nothing; it only checks that the process exists
    // (EPERM still means it does).
    let found = unsafe { nginx_sys::kill(pid as nginx_sys::pid_t, 0) } == 0;
    found || nginx_sys::ngx_errno() != nginx_sys::ESRCH as nginx_sys::ngx_err_t
}

/// Fresh random bits: a zone's hash key, a durable zone's identity.
pub fn zone_seed() -> [u64; 2] {
    let mut bytes = [0u8; 16];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        // Still unpredictable enough to spread keys; never fatal.
        let (a, b) = (nginx_sys::ngx_random() as u64, nginx_sys::ngx_time() as u64);
        bytes[..8].copy_from_slice(&a.to_le_bytes());
        bytes[8..].copy_from_slice(&(b ^ (a << 17)).to_le_bytes());
    }
    let mut first = [0u8; 8];
    let mut second = [0u8; 8];
    first.copy_from_slice(&bytes[..8]);
    second.copy_from_slice(&bytes[8..]);
    [u64::from_le_bytes(first), u64::from_le_bytes(second)]
}

pub extern "C" fn ticket_zone_init(shm_zone: *mut ngx_shm_zone_t, data: *mut c_void) -> ngx_int_t {
    // SAFETY: nginx calls zone init with the zone it created; `data` is what
    // `ticket_zone` stored: our TicketZone, from the cycle's pool.
    let shm_zone = unsafe { &mut *shm_zone };
    let zone = unsafe { &mut *shm_zone.data.cast::<TicketZone>() };
    let log = shm_zone.shm.log;
    let shpool = shm_zone.shm.addr.cast::<ngx_slab_pool_t>();

    // SAFETY: when non-null, `data` is the previous cycle's TicketZone for this
    // same memory (same name and size), still alive during the reload.
    if let Some(old) = unsafe { data.cast::<TicketZone>().as_ref() } {
        return attach(zone, old.header.cast(), log);
    }
    if shm_zone.shm.exists != 0 {
        // SAFETY: an existing slab pool (only on Windows) keeps our header in `data`.
        return attach(zone, unsafe { (*shpool).data.cast() }, log);
    }

    // SAFETY: nginx initialised the slab pool at the start of the zone; the
    // whole zone is ours to allocate from.
    unsafe {
        let log_ctx = format!(" in ticket zone \"{}\"\0", zone.name);
        let ctx = ngx_slab_alloc(shpool, log_ctx.len()).cast::<u8>();
        if !ctx.is_null() {
            core::ptr::copy_nonoverlapping(log_ctx.as_ptr(), ctx, log_ctx.len());
            (*shpool).log_ctx = ctx;
        }
        // The table takes every page left: that is the zone's capacity.
        let bytes = (*shpool).pfree * ngx_pagesize;
        let block = ngx_slab_alloc(shpool, bytes).cast::<u8>();
        if block.is_null() || bytes == 0 {
            ngx_log_error!(
                NGX_LOG_EMERG,
                log,
                "ticket zone \"{}\" is too small",
                zone.name
            );
            return NGX_ERROR as ngx_int_t;
        }
        let header = ZoneHeader::create(block, bytes, zone_seed());
        (*shpool).data = block.cast();
        zone.header = header;
        ngx_log_error!(
            NGX_LOG_NOTICE,
            log,
            "ticket zone \"{}\" holds {} keys",
            zone.name,
            header.capacity()
        );
    }
    zone.carry_from = find_old_zone(shm_zone);
    // SAFETY: the old header stays mapped during the reload.
    let old = unsafe { zone.carry_from.as_ref() };
    if old.is_none() {
        // A zone new to this master: its counters come from the state file.
        // SAFETY: the cycle being initialised, recorded when it was parsed.
        let cycle = unsafe { &*zone.cycle };
        if let Some(header) = zone.header() {
            if !crate::durable::open(zone, header, cycle, log) {
                return NGX_ERROR as ngx_int_t;
            }
        }
    }
    if let (Some(old), Some(new)) = (old, zone.header()) {
        if old.used() > new.capacity() {
            ngx_log_error!(
                NGX_LOG_EMERG,
                log,
                "ticket zone \"{}\" is too small for the {} keys it holds, \
                 it fits {}",
                zone.name,
                old.used(),
                new.capacity()
            );
            return NGX_ERROR as ngx_int_t;
        }
    }
    NGX_OK as ngx_int_t
}

/// Attaches to counters laid out by a previous cycle.
fn attach(zone: &mut TicketZone, region: *const u8, log: *mut ngx_log_t) -> ngx_int_t {
    if region.is_null() {
        return NGX_ERROR as ngx_int_t;
    }
    // SAFETY: `region` is the start of the block the previous cycle laid out
    // in this same shared memory.
    match unsafe { ZoneHeader::attach(region) } {
        Ok(header) => {
            zone.header = header;
            if zone.durable.is_some() {
                crate::durable::adopt(header);
            }
            NGX_OK as ngx_int_t
        }
        Err(err) => {
            ngx_log_error!(
                NGX_LOG_EMERG,
                log,
                "ticket zone \"{}\" was laid out by another version of the module \
                 ({err:?}); restart nginx instead of reloading it",
                zone.name
            );
            NGX_ERROR as ngx_int_t
        }
    }
}

/// The previous cycle's zone of the same name, when nginx gave this zone new
/// memory on reload (its size changed).
fn find_old_zone(shm_zone: &ngx_shm_zone_t) -> *const ZoneHeader {
    // SAFETY: during ngx_init_cycle the global `ngx_cycle` is still the
    // previous cycle, whose zones stay mapped until the new one is running.
    let old_cycle = unsafe { nginx_sys::ngx_cycle.as_ref() };
    let Some(old_cycle) = old_cycle else {
        return core::ptr::null();
    };
    let tag = core::ptr::addr_of_mut!(ngx_http_ticket_module).cast::<c_void>();
    let mut part = &old_cycle.shared_memory.part as *const nginx_sys::ngx_list_part_t;
    // SAFETY: walking nginx's list of the old cycle's zones; each part holds
    // `nelts` ngx_shm_zone_t.
    unsafe {
        while let Some(p) = part.as_ref() {
            if p.elts.is_null() || p.nelts == 0 {
                // the very first cycle has an empty list
                part = p.next;
                continue;
            }
            let zones = core::slice::from_raw_parts(p.elts.cast::<ngx_shm_zone_t>(), p.nelts);
            for old in zones {
                if old.tag == tag
                    && old.shm.name.as_bytes() == shm_zone.shm.name.as_bytes()
                    && !old.shm.addr.is_null()
                    && old.shm.addr != shm_zone.shm.addr
                {
                    if let Some(old_zone) = old.data.cast::<TicketZone>().as_ref() {
                        return old_zone.header;
                    }
                }
            }
            part = p.next;
        }
    }
    core::ptr::null()
}

/// Moves every counter of a resized zone from the old memory into the new,
/// retiring the old counters as it reads them so the outgoing workers stop
/// issuing from them. Runs in the master once the new cycle is committed.
pub fn carry_over(zone: &mut TicketZone, log: *mut ngx_log_t) {
    // SAFETY: set by init to the old cycle's header, which stays mapped until
    // the old cycle is freed, after this runs.
    let Some(old) = (unsafe { zone.carry_from.as_ref() }) else {
        return;
    };
    zone.carry_from = core::ptr::null();
    let Some(new) = zone.header() else {
        return;
    };
    let (moved, dropped) = new.absorb(old);
    let ordering = core::sync::atomic::Ordering::Relaxed;
    new.owner.store(old.owner.load(ordering), ordering);
    new.seq.store(old.seq.load(ordering), ordering);
    if zone.durable.is_some() {
        crate::durable::adopt(new);
    }
    ngx_log_error!(
        NGX_LOG_NOTICE,
        log,
        "ticket zone \"{}\" resized: {} counters carried over",
        zone.name,
        moved
    );
    if dropped > 0 {
        // Only keys created by outgoing workers during the reload can miss a
        // slot; the zone is full, so they cannot be created anew from `start`.
        ngx_log_error!(
            NGX_LOG_EMERG,
            log,
            "ticket zone \"{}\" is too small for its {} keys: {} keys stopped",
            zone.name,
            moved + dropped,
            dropped
        );
    }
}
