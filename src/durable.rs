//! Durable zones: keeping the state file ahead of the tickets handed out.
//!
//! - At start the master restores the counters from the file and writes
//!   reservations `reserve` tickets ahead, before any worker runs.
//! - A worker whose counter runs below half its reservation asks for a new
//!   one; one worker at a time writes it, in nginx's thread pool, so no event
//!   loop ever waits for the disk. A request that finds its reservation used
//!   up waits (parked on a timer, see the handler) instead of going ahead.
//! - At a clean stop the master writes the exact counts.
//!
//! The file format and its atomic replacement live in [`crate::state`].

use core::cell::Cell;
use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::Ordering;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use nginx_sys::{
    ngx_conf_full_name, ngx_conf_t, ngx_core_conf_t, ngx_core_module, ngx_cycle_t, ngx_event_t,
    ngx_log_t, ngx_str_t, ngx_thread_pool_add, ngx_thread_pool_t, ngx_thread_task_alloc,
    ngx_thread_task_post, ngx_thread_task_t, NGX_LOG_EMERG, NGX_LOG_ERR, NGX_LOG_NOTICE, NGX_OK,
};
use ngx::ngx_log_error;

use crate::config::ConfError;
use crate::counter::Counter;
use crate::directives::TicketZone;
use crate::shm::is_alive;
use crate::state::{self, Image, Record, Update};
use crate::zone::ZoneHeader;

/// After a failed write, wait this long before the next attempt.
const RETRY_AFTER_MSEC: u64 = 1000;

/// `state=PATH reserve=N` of one zone.
pub struct Durable {
    pub path: PathBuf,
    pub reserve: u64,
    pool: *mut ngx_thread_pool_t,
    /// This process's thread task, allocated on first use.
    task: Cell<*mut ngx_thread_task_t>,
}

impl Durable {
    /// Resolves the path against nginx's prefix and joins the thread pool.
    pub fn configure(cf: &mut ngx_conf_t, path: &str, reserve: u64) -> Result<Durable, ConfError> {
        // SAFETY: `cf.pool` outlives the configuration; nginx rewrites `name`
        // to a full path allocated from the cycle's pool.
        let full = unsafe {
            let mut name = ngx_str_t::from_bytes(cf.pool, path.as_bytes())
                .ok_or_else(|| ConfError("out of memory".into()))?;
            if ngx_conf_full_name(cf.cycle, &mut name, 0) != NGX_OK as nginx_sys::ngx_int_t {
                return Err(ConfError(format!(
                    "invalid state file \"{path}\" in \"ticket_zone\" directive"
                )));
            }
            PathBuf::from(OsStr::from_bytes(name.as_bytes()))
        };
        if full.file_name().is_none() {
            return Err(ConfError(format!(
                "invalid state file \"{path}\" in \"ticket_zone\" directive"
            )));
        }
        // SAFETY: a NULL name asks for the "default" pool, created if needed.
        let pool = unsafe { ngx_thread_pool_add(cf, ptr::null_mut()) };
        if pool.is_null() {
            return Err(ConfError(
                "could not add a thread pool for \"state=\"".into(),
            ));
        }
        Ok(Durable {
            path: full,
            reserve,
            pool,
            task: Cell::new(ptr::null_mut()),
        })
    }

    fn low_water(&self) -> u64 {
        (self.reserve / 2).max(1)
    }
}

/// nginx's cached clock, in milliseconds.
pub fn now_msec() -> u64 {
    // SAFETY: reading the clock global nginx updates in each event loop turn.
    unsafe { nginx_sys::ngx_current_msec as u64 }
}

fn new_owner() -> u64 {
    // Any non-zero value unlikely to repeat: random bits, time and pid.
    let mut seed = crate::shm::zone_seed();
    seed[0] ^= (nginx_sys::ngx_time() as u64) << 20 ^ std::process::id() as u64;
    seed[0].max(1)
}

fn own_pid() -> u32 {
    // SAFETY: reading nginx's pid global.
    unsafe { nginx_sys::ngx_pid as u32 }
}

/// The master process of this nginx, as recorded in the state file.
fn master_pid() -> u32 {
    // SAFETY: reading nginx's process-role global.
    if unsafe { nginx_sys::ngx_process } == nginx_sys::NGX_PROCESS_WORKER as nginx_sys::ngx_uint_t {
        std::os::unix::process::parent_id()
    } else {
        own_pid()
    }
}

/// The user the worker processes run as.
fn worker_user(cycle: &ngx_cycle_t) -> (u32, u32) {
    // SAFETY: the core module's conf exists once the configuration is parsed.
    let ccf = unsafe {
        (*cycle.conf_ctx.add(ngx_core_module.index))
            .cast::<ngx_core_conf_t>()
            .as_ref()
    };
    match ccf {
        Some(ccf) if ccf.user != u32::MAX => (ccf.user, ccf.group),
        // No `user`: workers run as the master's user.
        // SAFETY: plain libc calls without arguments.
        _ => unsafe { (nginx_sys::geteuid(), nginx_sys::getegid()) },
    }
}

/// Who should own the files the master writes: the worker user, when the
/// master runs as root and the workers do not.
fn file_owner(cycle: &ngx_cycle_t) -> Option<(u32, u32)> {
    let (uid, gid) = worker_user(cycle);
    // SAFETY: a plain libc call without arguments.
    (unsafe { nginx_sys::geteuid() } == 0 && uid != 0).then_some((uid, gid))
}

/// Whether the worker user can replace files in the state file's directory.
fn check_writable(cycle: &ngx_cycle_t, durable: &Durable) -> Result<(), String> {
    let (uid, gid) = worker_user(cycle);
    match state::dir_writable_by(&durable.path, uid, gid) {
        Ok(true) => Ok(()),
        Ok(false) => Err("its directory is not writable by the worker processes' user".into()),
        Err(err) => Err(format!("its directory is unusable: {err}")),
    }
}

/// Opens a durable zone in the master: restores its counters from the file
/// and reserves ahead. In `nginx -t` it only checks the file and directory.
pub fn open(
    zone: &TicketZone,
    header: &ZoneHeader,
    cycle: &ngx_cycle_t,
    log: *mut ngx_log_t,
) -> bool {
    let Some(durable) = zone.durable.as_ref() else {
        return true;
    };
    let path = durable.path.display();
    let fail = |why: &dyn core::fmt::Display| {
        ngx_log_error!(
            NGX_LOG_EMERG,
            log,
            "ticket zone \"{}\": state file \"{path}\": {why}",
            zone.name
        );
        false
    };
    if let Err(why) = check_writable(cycle, durable) {
        return fail(&why);
    }
    let image = match state::load(&durable.path) {
        Ok(image) => image,
        Err(err) => return fail(&err),
    };
    // SAFETY: reading nginx's -t flag.
    if unsafe { nginx_sys::ngx_test_config } != 0 {
        return true;
    }
    match &image {
        Some(image) => {
            let dropped = header.restore(&image.records);
            if dropped > 0 {
                return fail(&format!(
                    "holds more keys than the zone fits ({dropped} left over)"
                ));
            }
            ngx_log_error!(
                NGX_LOG_NOTICE,
                log,
                "ticket zone \"{}\": {} counters restored from \"{path}\"",
                zone.name,
                image.records.len()
            );
        }
        None => {
            ngx_log_error!(
                NGX_LOG_NOTICE,
                log,
                "ticket zone \"{}\": state file \"{path}\" not found, counters start fresh",
                zone.name
            );
        }
    }
    let owner = new_owner();
    header.owner.store(owner, Ordering::Relaxed);
    let seq = image.as_ref().map_or(0, |i| i.seq) + 1;
    let records = header.records(|view| view.reservation(durable.reserve));
    let marks: Vec<(u64, &Counter)> = records.iter().map(|(r, c)| (r.mark, *c)).collect();
    let ours: Vec<Record> = records.into_iter().map(|(r, _)| r).collect();
    let written = state::update(&durable.path, file_owner(cycle), |old| {
        let on_disk = old.map(|i| i.records).unwrap_or_default();
        Update::Write(Image {
            pid: master_pid(),
            owner,
            seq,
            records: state::merge_up(&on_disk, ours),
        })
    });
    if let Err(err) = written {
        return fail(&err);
    }
    header.seq.store(seq, Ordering::Relaxed);
    for (mark, counter) in marks {
        counter.raise_reserved(mark);
    }
    true
}

/// Gives a zone reused or carried over on reload an owner if it had none
/// (the zone became durable with this reload).
pub fn adopt(header: &ZoneHeader) {
    let _ = header
        .owner
        .compare_exchange(0, new_owner(), Ordering::Relaxed, Ordering::Relaxed);
}

/// At a clean stop, in the master once every worker is gone: record the
/// exact counts, so counting resumes with no gap. Leaves a file that another
/// nginx (a binary upgrade's new master) has taken over.
pub fn close(zone: &TicketZone, cycle: &ngx_cycle_t) {
    let log = cycle.log;
    let (Some(durable), Some(header)) = (zone.durable.as_ref(), zone.header()) else {
        return;
    };
    let owner = header.owner.load(Ordering::Relaxed);
    let exact: Vec<Record> = header
        .records(|view| view.issued)
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    let written = state::update(&durable.path, file_owner(cycle), |old| match old {
        Some(old) if old.owner != owner => Update::Leave,
        old => {
            // keep records of counters this zone does not know
            let mut records = exact;
            for record in old.map(|i| i.records).unwrap_or_default() {
                if !records.iter().any(|r| r.key == record.key) {
                    records.push(record);
                }
            }
            Update::Write(Image {
                pid: master_pid(),
                owner,
                seq: header.seq.load(Ordering::Relaxed) + 1,
                records,
            })
        }
    });
    match written {
        Ok(true) => {}
        Ok(false) => {
            ngx_log_error!(
                NGX_LOG_NOTICE,
                log,
                "ticket zone \"{}\": state file \"{}\" belongs to another nginx now, left as is",
                zone.name,
                durable.path.display()
            );
        }
        Err(err) => {
            ngx_log_error!(
                NGX_LOG_ERR,
                log,
                "ticket zone \"{}\": could not write state file \"{}\" at exit: {err}",
                zone.name,
                durable.path.display()
            );
        }
    }
}

/// A reservation being written by the thread pool.
struct Job {
    path: PathBuf,
    zone_name: String,
    header: *const ZoneHeader,
    reserve: u64,
    /// Filled in by the thread: the marks written, or why not.
    marks: Vec<(u64, *const Counter)>,
    result: Result<bool, String>,
}

/// After a ticket was taken from a durable zone: extend the reservation in
/// the background when it runs low.
pub fn after_take(zone: &TicketZone, counter: &Counter, log: *mut ngx_log_t) {
    if let Some(durable) = zone.durable.as_ref() {
        if counter.running_low(durable.low_water()) {
            request(zone, durable, log);
        }
    }
}

/// Starts a reservation write unless one is under way.
pub fn request(zone: &TicketZone, durable: &Durable, log: *mut ngx_log_t) {
    let Some(header) = zone.header() else {
        return;
    };
    let now = now_msec();
    if header.retry_at.load(Ordering::Relaxed) > now {
        return;
    }
    let me = own_pid() as u64;
    let writer = header.writer.load(Ordering::Acquire);
    let claimed = if writer == 0 {
        header
            .writer
            .compare_exchange(0, me, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    } else if writer != me && !is_alive(writer as u32) {
        // its writer died mid-way: the lock on the file died with it
        header
            .writer
            .compare_exchange(writer, me, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    } else {
        false
    };
    if !claimed {
        return;
    }
    if !post(zone, durable, header, log) {
        header
            .retry_at
            .store(now + RETRY_AFTER_MSEC, Ordering::Relaxed);
        header.writer.store(0, Ordering::Release);
    }
}

fn post(zone: &TicketZone, durable: &Durable, header: &ZoneHeader, log: *mut ngx_log_t) -> bool {
    let mut task = durable.task.get();
    if task.is_null() {
        // SAFETY: allocated once per worker from the cycle's pool, which
        // outlives every task posted during the cycle.
        task = unsafe { ngx_thread_task_alloc((*nginx_sys::ngx_cycle).pool, 0) };
        if task.is_null() {
            return false;
        }
        durable.task.set(task);
    }
    let job = Box::new(Job {
        path: durable.path.clone(),
        zone_name: zone.name.clone(),
        header,
        reserve: durable.reserve,
        marks: Vec::new(),
        result: Ok(false),
    });
    // SAFETY: the task is idle (this process holds the zone's writer flag,
    // released only by `written`); nginx runs `write_in_thread` in a pool
    // thread, then `written` in this worker's event loop.
    unsafe {
        (*task).ctx = Box::into_raw(job).cast();
        (*task).handler = Some(write_in_thread);
        (*task).event.handler = Some(written);
        (*task).event.data = task.cast();
        (*task).event.log = log;
        if ngx_thread_task_post(durable.pool, task) != NGX_OK as nginx_sys::ngx_int_t {
            drop(Box::from_raw((*task).ctx.cast::<Job>()));
            ngx_log_error!(
                NGX_LOG_ERR,
                log,
                "ticket zone \"{}\": could not post the state file write",
                zone.name
            );
            return false;
        }
    }
    true
}

/// Runs in a thread-pool thread: writes the reservation to disk.
unsafe extern "C" fn write_in_thread(data: *mut c_void, _log: *mut ngx_log_t) {
    // SAFETY: `data` is the Job posted with this task; the zone's shared
    // memory stays mapped while the worker runs.
    let (job, header) = unsafe {
        let job = &mut *data.cast::<Job>();
        let header = &*job.header;
        (job, header)
    };
    let owner = header.owner.load(Ordering::Relaxed);
    let reserve = job.reserve;
    let records = header.records(|view| view.reservation(reserve));
    job.marks = records
        .iter()
        .map(|(r, c)| (r.mark, *c as *const Counter))
        .collect();
    let ours: Vec<Record> = records.into_iter().map(|(r, _)| r).collect();
    let seq = header.seq.load(Ordering::Relaxed) + 1;
    let result = state::update(&job.path, None, |old| match old {
        // Another nginx took the file over (binary upgrade) and still runs:
        // extending our reservations would hand out its tickets.
        Some(old) if old.owner != owner && is_alive(old.pid) => Update::Leave,
        old => Update::Write(Image {
            pid: master_pid(),
            owner,
            seq,
            records: state::merge_up(&old.map(|i| i.records).unwrap_or_default(), ours),
        }),
    });
    job.result = result.map_err(|err| err.to_string());
}

/// Back in the worker's event loop: publish the new reservations.
unsafe extern "C" fn written(ev: *mut ngx_event_t) {
    // SAFETY: `data` is our task; its ctx is the Job boxed in `post`.
    let (job, log) = unsafe {
        let task = (*ev).data.cast::<ngx_thread_task_t>();
        let job = Box::from_raw((*task).ctx.cast::<Job>());
        (*task).ctx = ptr::null_mut();
        (job, (*ev).log)
    };
    // SAFETY: the zone outlives the worker's tasks.
    let header = unsafe { &*job.header };
    let failure = match &job.result {
        Ok(true) => {
            header.seq.fetch_add(1, Ordering::Relaxed);
            for &(mark, counter) in &job.marks {
                // SAFETY: counters live in the zone's shared memory.
                unsafe { (*counter).raise_reserved(mark) };
            }
            None
        }
        Ok(false) => Some(
            "was taken over by another nginx; no tickets beyond the current reservation".into(),
        ),
        Err(err) => Some(format!("could not be written: {err}")),
    };
    if let Some(why) = failure {
        ngx_log_error!(
            NGX_LOG_ERR,
            log,
            "ticket zone \"{}\": state file \"{}\" {why}",
            job.zone_name,
            job.path.display()
        );
        header
            .retry_at
            .store(now_msec() + RETRY_AFTER_MSEC, Ordering::Relaxed);
    }
    header.writer.store(0, Ordering::Release);
}
