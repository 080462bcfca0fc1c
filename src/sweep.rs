//! Idle expiry: a key not used for its zone's `idle=` time is retired. Every
//! lookup already sees such a key as gone (see `take`); this sweep, run by
//! one worker's timer and never on the hot path, only frees its room (and,
//! on a durable zone, records the retirement in the state file).

use core::ptr;

use nginx_sys::{ngx_cycle_t, ngx_event_t, ngx_msec_t};

use crate::timer::Timer;

use crate::conf::{MainConf, ZoneConf};

struct Sweeper {
    timer: Box<Timer>,
    zones: Vec<*const ZoneConf>,
    interval: ngx_msec_t,
}

static mut SWEEPER: *mut Sweeper = ptr::null_mut();

/// Starts the sweep in the first worker, if any zone has `idle=`.
pub fn start_worker(main: &MainConf, cycle: &ngx_cycle_t) {
    if crate::process::worker_number() != 0 {
        return;
    }
    let zones: Vec<*const ZoneConf> = main
        .zones()
        .filter(|z| z.idle.is_some())
        .map(ptr::from_ref)
        .collect();
    let Some(shortest) = main.zones().filter_map(|z| z.idle).min() else {
        return;
    };
    // A quarter of the shortest idle time, between 1 s and 1 min.
    let interval = (shortest / 4).clamp(1000, 60_000) as ngx_msec_t;
    let mut timer = Timer::new(sweep, ptr::null_mut(), cycle.log);
    timer.arm(interval);
    // SAFETY: set here, on the event-loop thread, the only one touching it.
    unsafe {
        SWEEPER = Box::into_raw(Box::new(Sweeper {
            timer,
            zones,
            interval,
        }));
    }
}

/// At exit_process: nothing may stay armed, nothing allocated may stay.
pub fn stop_worker() {
    // SAFETY: as in `start_worker`.
    unsafe {
        if !SWEEPER.is_null() {
            // Dropping the timer disarms it.
            drop(Box::from_raw(SWEEPER));
            SWEEPER = ptr::null_mut();
        }
    }
}

unsafe extern "C" fn sweep(_ev: *mut ngx_event_t) {
    // SAFETY: as in `start_worker`.
    let Some(sweeper) = (unsafe { SWEEPER.as_mut() }) else {
        return;
    };
    let now = crate::process::unix_msec();
    for &zone in &sweeper.zones {
        // SAFETY: zones live in the cycle's pool, as long as this worker.
        let Some(zone) = (unsafe { zone.as_ref() }) else {
            continue;
        };
        let (Some(idle), Some(shared), Some(lock)) =
            (zone.idle, zone.shared(), zone.memory.as_ref())
        else {
            continue;
        };
        // gone when used + idle <= now
        let cutoff = now.saturating_sub(idle).saturating_add(1);
        for (key, gen) in shared.idle_keys(cutoff) {
            if shared.expire(key.as_bytes(), gen, cutoff, lock).is_some() && zone.durable.is_some()
            {
                crate::durable::retire(zone, key.as_bytes());
            }
        }
    }
    sweeper.timer.arm(sweeper.interval);
}
