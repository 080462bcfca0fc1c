//! Shared zones: lays out a fresh zone, or reuses the previous cycle's on
//! reload; carries counters over when a reload gave the zone new memory.
//!
//! nginx reuses a zone's memory across `nginx -s reload` when its name, size
//! and module are unchanged, and passes the old cycle's zone data to init: we
//! then attach to the same counters, as limit_req does. Otherwise nginx hands
//! out new memory; the counters are carried over from the old zone once the
//! new cycle is committed (see [`carry_over`]), never before, so a reload
//! that fails leaves the running configuration untouched.

use core::ffi::c_void;
use core::mem::size_of;

use nginx_sys::{
    ngx_int_t, ngx_log_t, ngx_pagesize, ngx_shm_zone_t, ngx_slab_alloc, ngx_slab_pool_t,
    NGX_LOG_EMERG, NGX_LOG_NOTICE, NGX_LOG_WARN,
};
use ngx::core::Status;
use ngx::ngx_log_error;

use crate::conf::{ZoneConf, ZoneMemory};
use crate::core::table::{self, KeySlot, LayoutError, RemoteState, ZoneHeader, ZoneLock};

fn error() -> ngx_int_t {
    Status::NGX_ERROR.into()
}

fn ok() -> ngx_int_t {
    Status::NGX_OK.into()
}

/// The layout at `base` (a block `create` laid out, inside the zone whose
/// slab pool is `shpool`), checked.
///
/// # Safety
/// `base` must point into a live shared zone, at a block of at least
/// `size_of::<ZoneHeader>()` bytes that this module laid out, or at memory
/// whose first bytes are not our magic.
unsafe fn memory_at(
    base: *const u8,
    shpool: *mut ngx_slab_pool_t,
) -> Result<ZoneMemory, LayoutError> {
    // SAFETY: the caller guarantees a readable header's worth of bytes.
    let header = unsafe { &*base.cast::<ZoneHeader>() };
    let len = header.check()?;
    Ok(ZoneMemory {
        header,
        // The table is derived from the block's base, not from the header.
        slots: base.wrapping_add(table::table_offset()).cast::<KeySlot>(),
        len,
        shpool,
    })
}

pub extern "C" fn ticket_zone_init(shm_zone: *mut ngx_shm_zone_t, data: *mut c_void) -> ngx_int_t {
    // SAFETY: nginx calls zone init with the zone it created; `shm.data` is
    // what `zone_entry` stored: our ZoneConf, from the cycle's pool.
    let shm_zone = unsafe { &mut *shm_zone };
    let zone = unsafe { &mut *shm_zone.data.cast::<ZoneConf>() };
    let log = shm_zone.shm.log;
    let shpool = shm_zone.shm.addr.cast::<ngx_slab_pool_t>();

    // SAFETY: when non-null, `data` is the previous cycle's ZoneConf for this
    // same memory (same name, size and module), alive during the reload.
    if let Some(old) = unsafe { data.cast::<ZoneConf>().as_ref() } {
        return reuse(zone, old, shpool, log);
    }
    if shm_zone.shm.exists != 0 {
        // SAFETY: an existing slab pool (Windows only) keeps our block in `data`.
        let base = unsafe { (*shpool).data.cast::<u8>() };
        // SAFETY: the block this module laid out in this zone.
        return match unsafe { memory_at(base, shpool) } {
            Ok(memory) => {
                zone.memory = Some(memory);
                ok()
            }
            Err(err) => layout_error(zone, err, log),
        };
    }

    // SAFETY: nginx initialised the slab pool at the start of the zone; the
    // whole zone is ours to allocate from.
    let base = unsafe {
        let log_ctx = format!(" in ticket zone \"{}\"\0", zone.name);
        let ctx = ngx_slab_alloc(shpool, log_ctx.len()).cast::<u8>();
        if !ctx.is_null() {
            core::ptr::copy_nonoverlapping(log_ctx.as_ptr(), ctx, log_ctx.len());
            (*shpool).log_ctx = ctx;
        }
        // The table takes every page left: that is the zone's capacity.
        let bytes = (*shpool).pfree * ngx_pagesize;
        let block = ngx_slab_alloc(shpool, bytes).cast::<u8>();
        if block.is_null() || bytes < size_of::<ZoneHeader>() {
            ngx_log_error!(
                NGX_LOG_EMERG,
                log,
                "ticket zone \"{}\" is too small",
                zone.name
            );
            return error();
        }
        // all zero: every slot empty, every counter unused
        core::ptr::write_bytes(block, 0, bytes);
        let header = &*block.cast::<ZoneHeader>();
        let seed = crate::process::random_u64s();
        header.init(
            table::slots_for(bytes),
            seed,
            seed[0] ^ seed[1].rotate_left(29),
        );
        (*shpool).data = block.cast();
        block
    };
    // SAFETY: laid out just above.
    let memory = match unsafe { memory_at(base, shpool) } {
        Ok(memory) => memory,
        Err(err) => return layout_error(zone, err, log),
    };
    let capacity = memory.shared().map_or(0, |z| z.capacity());
    ngx_log_error!(
        NGX_LOG_NOTICE,
        log,
        "ticket zone \"{}\" holds {} keys",
        zone.name,
        capacity
    );
    zone.memory = Some(memory);

    zone.carry_from = find_old_zone(shm_zone);
    match zone
        .carry_from
        .as_ref()
        .and_then(|m| Some((m, m.shared()?)))
    {
        Some((old_memory, old)) => {
            // The outgoing workers make keys until the carry-over: no more
            // than the new zone fits, or one left behind would start again
            // from `start` once room frees there. Set under the zone's lock,
            // which every key's making takes, so the count read with it is
            // the most there will be.
            let limit = if capacity < old.capacity() {
                capacity
            } else {
                0
            };
            old_memory.lock();
            old.limit_keys(limit);
            let used = old.used();
            if used > capacity {
                old.limit_keys(0);
            }
            old_memory.unlock();
            if used > capacity {
                ngx_log_error!(
                    NGX_LOG_EMERG,
                    log,
                    "ticket zone \"{}\" is too small for the {} keys it holds, it fits {}",
                    zone.name,
                    used,
                    capacity
                );
                return error();
            }
            if limit > 0 {
                ngx_log_error!(
                    NGX_LOG_NOTICE,
                    log,
                    "ticket zone \"{}\" holds no more than {} keys until the reload is done",
                    zone.name,
                    limit
                );
            }
            ok()
        }
        // A zone new to this master: its counters come from the state file.
        None => match crate::durable::open(zone, log) {
            Ok(()) => ok(),
            Err(()) => error(),
        },
    }
}

/// Same name and size on reload: the same counters.
fn reuse(
    zone: &mut ZoneConf,
    old: &ZoneConf,
    shpool: *mut ngx_slab_pool_t,
    log: *mut ngx_log_t,
) -> ngx_int_t {
    let Some(old_memory) = old.memory.as_ref() else {
        return error();
    };
    // SAFETY: the old zone's block, in this same (reused) memory.
    match unsafe { memory_at(old_memory.header.cast(), shpool) } {
        Ok(memory) => {
            // a shrink that did not happen (its reload failed) limits no more
            if let Some(shared) = memory.shared() {
                shared.limit_keys(0);
            }
            zone.memory = Some(memory);
            let before = old.durable.as_ref().map(|d| d.path.as_path());
            match crate::durable::adopt(zone, before, log) {
                Ok(()) => ok(),
                Err(()) => error(),
            }
        }
        Err(err) => layout_error(zone, err, log),
    }
}

fn layout_error(zone: &ZoneConf, err: LayoutError, log: *mut ngx_log_t) -> ngx_int_t {
    ngx_log_error!(
        NGX_LOG_EMERG,
        log,
        "ticket zone \"{}\" was laid out by another version of the module \
         ({err:?}); restart nginx instead of reloading it",
        zone.name
    );
    error()
}

/// The previous cycle's zone of the same name, when nginx gave this zone
/// new memory on reload (its size changed, or the module was loaded from
/// another path, which nginx takes for another module).
fn find_old_zone(shm_zone: &ngx_shm_zone_t) -> Option<ZoneMemory> {
    // SAFETY: during ngx_init_cycle the global `ngx_cycle` is still the
    // previous cycle, whose zones stay mapped until the new one is running.
    let old_cycle = unsafe { nginx_sys::ngx_cycle.as_ref() }?;
    let mut part = &old_cycle.shared_memory.part as *const nginx_sys::ngx_list_part_t;
    // SAFETY: walking nginx's list of the old cycle's zones; each part holds
    // `nelts` ngx_shm_zone_t.
    unsafe {
        while let Some(p) = part.as_ref() {
            let zones: &[ngx_shm_zone_t] = if p.elts.is_null() || p.nelts == 0 {
                &[] // the very first cycle has an empty list
            } else {
                core::slice::from_raw_parts(p.elts.cast::<ngx_shm_zone_t>(), p.nelts)
            };
            for old in zones {
                if old.shm.name.as_bytes() != shm_zone.shm.name.as_bytes()
                    || old.shm.addr.is_null()
                    || old.shm.addr == shm_zone.shm.addr
                {
                    continue;
                }
                // Read the block through the zone's own slab pool, and only
                // if it lies inside the zone: the old zone may belong to
                // another module that used this name.
                let shpool = old.shm.addr.cast::<ngx_slab_pool_t>();
                let base = (*shpool).data.cast::<u8>().cast_const();
                let start = old.shm.addr.cast::<u8>().cast_const();
                let end = start.wrapping_add(old.shm.size);
                if base < start || base.wrapping_add(size_of::<ZoneHeader>()) > end {
                    continue;
                }
                if let Ok(memory) = memory_at(base, shpool) {
                    return Some(memory);
                }
            }
            part = p.next;
        }
    }
    None
}

/// Moves every counter of a resized zone from the old memory into the new,
/// retiring the old counters as it reads them so the outgoing workers stop
/// issuing from them. Runs in the master once the new cycle is committed.
pub fn carry_over(zone: &mut ZoneConf, log: *mut ngx_log_t) {
    let Some(old_memory) = zone.carry_from.take() else {
        return;
    };
    let (Some(old), Some(memory)) = (old_memory.shared(), zone.memory.as_ref()) else {
        return;
    };
    let Some(new) = memory.shared() else {
        return;
    };
    // Closing takes the old zone's lock: no worker of the old configuration
    // creates a key after this, and every counter it has is retired.
    let (default, keys) = old.close_and_drain(&old_memory);
    let dropped = new.absorb(&default, &keys, memory);
    new.set_instance(old.instance());
    // The authority's view goes along: a resized Redis zone still fences a
    // run that missed writes it saw before the reload.
    let view = RemoteState::default();
    old_memory.lock();
    view.adopt_view(&old.header().remote);
    old_memory.unlock();
    memory.lock();
    new.header().remote.adopt_view(&view);
    memory.unlock();
    let carried = keys.len() + 1 - dropped;
    ngx_log_error!(
        NGX_LOG_NOTICE,
        log,
        "ticket zone \"{}\" resized: {} counter{} carried over",
        zone.name,
        carried,
        if carried == 1 { "" } else { "s" }
    );
    if dropped > 0 {
        // Not expected: the size check refused a zone too small, and the
        // outgoing workers made no key past the new capacity (limit_keys).
        ngx_log_error!(
            NGX_LOG_EMERG,
            log,
            "ticket zone \"{}\" is too small for its {} keys: {} keys stopped",
            zone.name,
            keys.len(),
            dropped
        );
    }
    if crate::durable::adopt(zone, None, log).is_err() {
        ngx_log_error!(
            NGX_LOG_WARN,
            log,
            "ticket zone \"{}\": counters carried over without their state file",
            zone.name
        );
    }
}
