//! What the module asks of the process it runs in: its role, pid, clocks,
//! randomness and the worker processes' user. A leaf: it depends on nginx's
//! globals only.

use std::io::Read;

use nginx_sys::{ngx_core_conf_t, ngx_core_module, ngx_cycle_t, ngx_uint_t};

/// This process's pid.
pub fn pid() -> u32 {
    // SAFETY: reading nginx's pid global, set before any module code runs.
    unsafe { nginx_sys::ngx_pid as u32 }
}

/// Whether this process is nginx's only one (`master_process off`).
pub fn is_single() -> bool {
    // SAFETY: reading nginx's process-role global.
    unsafe { nginx_sys::ngx_process == nginx_sys::NGX_PROCESS_SINGLE as ngx_uint_t }
}

/// The worker's number (0 for the first), for work only one worker does.
pub fn worker_number() -> ngx_uint_t {
    // SAFETY: reading nginx's worker-number global.
    unsafe { nginx_sys::ngx_worker }
}

/// Whether nginx is only testing the configuration (`nginx -t`).
pub fn testing_config() -> bool {
    // SAFETY: reading nginx's -t flag.
    unsafe { nginx_sys::ngx_test_config != 0 }
}

/// Whether this worker is shutting down gracefully (`nginx -s quit`, or a
/// reload retiring it).
pub fn exiting() -> bool {
    // SAFETY: reading nginx's shutdown flags, set by its signal handling.
    unsafe {
        nginx_sys::ngx_exiting != 0 || nginx_sys::ngx_quit != 0 || nginx_sys::ngx_terminate != 0
    }
}

/// nginx's cached monotonic clock, in milliseconds.
pub fn now_msec() -> u64 {
    // SAFETY: reading the clock global nginx updates in each event loop turn.
    unsafe { nginx_sys::ngx_current_msec as u64 }
}

/// nginx's cached wall clock, in Unix milliseconds.
pub fn unix_msec() -> u64 {
    let now = nginx_sys::ngx_timeofday();
    (now.sec.max(0) as u64)
        .saturating_mul(1000)
        .saturating_add(now.msec as u64)
}

/// Fresh random bits: a zone's hash key, an instance id.
pub fn random_u64s() -> [u64; 2] {
    let mut bytes = [0u8; 16];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        // Still unpredictable enough to spread keys; never fatal.
        let (a, b) = (nginx_sys::ngx_random() as u64, nginx_sys::ngx_time() as u64);
        bytes[..8].copy_from_slice(&a.to_le_bytes());
        bytes[8..].copy_from_slice(&(b ^ (a << 17) ^ u64::from(pid())).to_le_bytes());
    }
    let mut first = [0u8; 8];
    let mut second = [0u8; 8];
    first.copy_from_slice(&bytes[..8]);
    second.copy_from_slice(&bytes[8..]);
    [u64::from_le_bytes(first), u64::from_le_bytes(second)]
}

/// The user the worker processes run as: uid, primary gid and every group.
pub fn worker_user(cycle: &ngx_cycle_t) -> (u32, Vec<u32>) {
    // SAFETY: the core module's conf exists once the configuration is parsed.
    let ccf = unsafe {
        (*cycle.conf_ctx.add(ngx_core_module.index))
            .cast::<ngx_core_conf_t>()
            .as_ref()
    };
    let (uid, gid, name) = match ccf {
        Some(ccf) if ccf.user != u32::MAX => (ccf.user, ccf.group, ccf.username),
        // No `user`: workers run as the master's user.
        // SAFETY: plain libc calls without arguments.
        _ => unsafe {
            (
                nginx_sys::geteuid(),
                nginx_sys::getegid(),
                core::ptr::null_mut(),
            )
        },
    };
    let mut groups = vec![gid];
    if !name.is_null() {
        let mut list = [0 as nginx_sys::gid_t; 64];
        let mut count = list.len() as core::ffi::c_int;
        // SAFETY: `name` is the NUL-terminated user name nginx parsed from
        // the `user` directive; `list` holds `count` entries.
        let rc =
            unsafe { nginx_sys::getgrouplist(name.cast(), gid, list.as_mut_ptr(), &mut count) };
        if rc >= 0 {
            groups.extend(list.iter().take(count.max(0) as usize).copied());
        }
    }
    groups.sort_unstable();
    groups.dedup();
    (uid, groups)
}

/// Whether this process runs as root (the master of a usual install).
pub fn is_root() -> bool {
    // SAFETY: a plain libc call without arguments.
    unsafe { nginx_sys::geteuid() == 0 }
}
