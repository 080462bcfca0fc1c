//! Durable zones: keeping the state log ahead of the tickets handed out.
//!
//! - At start the master restores the counters from the log and reserves a
//!   block for each, before any worker runs; the restore reads under the
//!   directory lock.
//! - A worker whose counter runs low (or whose request waits) plans the
//!   next blocks, appends them and installs them in the zone, all in
//!   nginx's thread pool and under the directory lock, so no event loop
//!   waits for the disk and every block of this nginx in the file is in its
//!   counters once the lock is free; several counters share one append and
//!   one fsync. Back in the event loop it wakes its waiting requests. Each
//!   worker has its own writer: waiting requests are woken by their own
//!   worker's write, never polled.
//! - At a clean stop the master gives back what was reserved and not
//!   issued, where nobody reserved past it.
//!
//! The planning is [`crate::core::reserve`]; the log and its directory are
//! [`crate::core::state`].

use core::ffi::c_void;
use core::ptr;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nginx_sys::{
    ngx_conf_full_name, ngx_conf_t, ngx_cycle_t, ngx_event_t, ngx_log_t, ngx_str_t,
    ngx_thread_pool_add, ngx_thread_task_alloc, ngx_thread_task_post, ngx_thread_task_t,
    NGX_LOG_EMERG, NGX_LOG_ERR, NGX_LOG_NOTICE,
};
use ngx::core::Status;
use ngx::ngx_log_error;

use crate::conf::{DurableConf, ZoneConf, ZoneMemory};
use crate::core::config::ConfError;
use crate::core::counter::{Counter, Gen, FLAG_LOGGED, MAX_COUNT};
use crate::core::reserve::{self, Block, Candidates, CounterState, Policy};
use crate::core::state::{Access, Compaction, Index, Record, StateError, StateLog};
use crate::core::table::{Lookup, SharedZone, ZoneLock};
use crate::timer::Timer;
use crate::wait::{Handle, WaitList, Wake};

/// After a failed write, wait this long before the next attempt.
const RETRY_AFTER_MSEC: nginx_sys::ngx_msec_t = 1000;

/// `state=PATH reserve=N`: resolves the path against nginx's prefix and
/// joins the "default" thread pool.
pub fn configure(cf: &mut ngx_conf_t, path: &str, reserve: u64) -> Result<DurableConf, ConfError> {
    let invalid = || {
        ConfError(format!(
            "invalid state file \"{path}\" in \"ticket_zone\" directive"
        ))
    };
    // SAFETY: `cf.pool` outlives the configuration; nginx rewrites `name`
    // to a full path allocated from the cycle's pool.
    let full = unsafe {
        let mut name = ngx_str_t::from_bytes(cf.pool, path.as_bytes())
            .ok_or_else(|| ConfError("out of memory".into()))?;
        if ngx_conf_full_name(cf.cycle, &mut name, 0) != Status::NGX_OK.0 {
            return Err(invalid());
        }
        PathBuf::from(OsStr::from_bytes(name.as_bytes()))
    };
    if full.file_name().is_none() {
        return Err(invalid());
    }
    // SAFETY: a NULL name asks for the "default" pool, created if needed.
    let thread_pool = unsafe { ngx_thread_pool_add(cf, ptr::null_mut()) };
    if thread_pool.is_null() {
        return Err(ConfError(
            "could not add a thread pool for \"state=\"".into(),
        ));
    }
    Ok(DurableConf {
        path: full,
        reserve,
        thread_pool,
    })
}

fn access(cycle: &ngx_cycle_t) -> Access {
    let (uid, gids) = crate::process::worker_user(cycle);
    Access { uid, gids }
}

/// Who should own files the master writes: the worker user, when the
/// master runs as root and the workers do not.
fn file_owner(cycle: &ngx_cycle_t) -> Option<(u32, u32)> {
    let (uid, gids) = crate::process::worker_user(cycle);
    let gid = gids.first().copied().unwrap_or(0);
    (crate::process::is_root() && uid != 0).then_some((uid, gid))
}

fn policy(durable: &DurableConf, shared: &SharedZone<'_>) -> Policy {
    Policy {
        instance: shared.instance(),
        reserve: durable.reserve,
        low_water: durable.low_water(),
    }
}

/// The zone's counters as the planner sees it; `needs` are counts waiting
/// requests want at once. With `low_water`, only the counters that may need
/// a block; with `candidates`, only those (else the whole table is read).
fn snapshot(
    shared: &SharedZone<'_>,
    needs: &[(Option<Vec<u8>>, u64)],
    low_water: Option<u64>,
    candidates: Option<&Candidates>,
) -> Vec<CounterState> {
    let need = |key: Option<&[u8]>| {
        needs
            .iter()
            .filter(|(k, _)| k.as_deref() == key)
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0)
    };
    let mut counters = Vec::new();
    let mut consider = |key: Option<&[u8]>, counter: &Counter| {
        let need = need(key);
        let view = counter.view();
        if low_water.is_none_or(|low| reserve::wants_block(&view, need, low)) {
            counters.push(CounterState {
                key: key.map(<[u8]>::to_vec),
                view,
                need,
            });
        }
    };
    if candidates.is_none_or(Candidates::default_counter) {
        consider(None, shared.default_counter());
    }
    match candidates {
        Some(candidates) => {
            for key in candidates.keys() {
                if let Lookup::Found(found) = shared.find(key) {
                    if found.counter.gen() == found.gen {
                        consider(Some(key), found.counter);
                    }
                }
            }
        }
        None => {
            for (key, found) in shared.keys() {
                // A counter retired a moment ago (its generation moved on)
                // holds no count worth a mark.
                if found.counter.gen() == found.gen {
                    consider(Some(key.as_bytes()), found.counter);
                }
            }
        }
    }
    counters
}

/// Whether `key` is a live counter of the zone.
fn is_live(shared: &SharedZone<'_>, key: &[u8]) -> bool {
    matches!(shared.find(key), Lookup::Found(_))
}

/// The counter a block is for, if it is still in the same life.
fn counter_of<'z>(shared: &SharedZone<'z>, block: &Block) -> Option<&'z Counter> {
    let counter = match &block.key {
        None => shared.default_counter(),
        Some(key) => match shared.find(key) {
            Lookup::Found(found) if found.gen == block.gen => found.counter,
            _ => return None,
        },
    };
    (counter.gen() == block.gen).then_some(counter)
}

/// Lets the counters use blocks that are on disk now.
fn install(shared: &SharedZone<'_>, lock: &ZoneMemory, blocks: &[Block]) {
    for block in blocks {
        if let Some(counter) = counter_of(shared, block) {
            lock.lock();
            counter.add_block(block.lo, block.hi);
            lock.unlock();
            counter.add_flags(FLAG_LOGGED);
        }
    }
}

/// Makes the zone's counters continue past the log's marks: each counter
/// the log knows and this instance did not write is raised to its mark
/// (created if new here). Returns how many counters the log holds.
fn restore(shared: &SharedZone<'_>, lock: &ZoneMemory, index: &Index) -> Result<usize, String> {
    let instance = shared.instance();
    // The file's `used` is only as recent as the write that carried it (a
    // reservation, or a clean stop's give-back): after a crash, a key may
    // have been used until the last moment. Every restored key's idle time
    // counts from now, so a restart never retires a key in use (and hands
    // its numbers out again).
    let now = crate::process::unix_msec();
    // What a counter issued is covered, trivially: blocks continue from it.
    shared.default_counter().cover_issued();
    for (_, found) in shared.keys() {
        found.counter.cover_issued();
    }
    let mut counters = 0;
    for (key, entry) in index.iter() {
        counters += 1;
        if entry.instance == instance {
            continue; // our own: the zone already counts past it
        }
        let counter = match key {
            None => shared.default_counter(),
            Some(key) => {
                let start = entry.start.unwrap_or(1);
                match shared.find_or_create(key, start, now, lock) {
                    Ok(found) => found.counter,
                    Err(_) => {
                        return Err(format!(
                            "holds more keys than the zone fits ({})",
                            shared.capacity()
                        ))
                    }
                }
            }
        };
        let view = counter.view();
        if view.start.is_none() && view.issued == 0 {
            counter.resume(entry.start, entry.mark, entry.mark, now);
        } else {
            counter.raise_issued(entry.mark);
            counter.cover_issued();
        }
        counter.add_flags(FLAG_LOGGED);
    }
    Ok(counters)
}

/// Reads the log under its lock, continues the zone's counters past it,
/// reserves a block for every counter and writes them (as the master: a
/// rewrite into a file of its own).
fn load_and_reserve(
    zone: &ZoneConf,
    durable: &DurableConf,
    cycle: &ngx_cycle_t,
    log: *mut ngx_log_t,
) -> Result<(), String> {
    let (Some(shared), Some(lock)) = (zone.shared(), zone.memory.as_ref()) else {
        return Err("zone not ready".into());
    };
    let access = access(cycle);
    let max_keys = shared.capacity() as usize;
    let text = |err: StateError| err.to_string();
    if crate::process::testing_config() {
        let mut state = StateLog::open_read_only(&durable.path, &access, max_keys).map_err(text)?;
        state.session().map_err(text)?.probe().map_err(text)?;
        return Ok(());
    }
    let mut state = StateLog::open(&durable.path, &access, max_keys).map_err(text)?;
    let mut session = state.session().map_err(text)?;
    let existed = session.exists();
    let restored = restore(&shared, lock, session.index())?;
    let _ = session.remove_stale_temps();
    let plan = reserve::reserve_all(
        session.index(),
        &policy(durable, &shared),
        &snapshot(&shared, &[], None, None),
    );
    session
        .rewrite(&plan.records, file_owner(cycle))
        .map_err(text)?;
    install(&shared, lock, &plan.blocks);
    drop(session);
    let path = durable.path.display();
    if existed {
        ngx_log_error!(
            NGX_LOG_NOTICE,
            log,
            "ticket zone \"{}\": {restored} counters restored from \"{path}\"",
            zone.name
        );
    } else {
        ngx_log_error!(
            NGX_LOG_NOTICE,
            log,
            "ticket zone \"{}\": state file \"{path}\" not found, counters start fresh",
            zone.name
        );
    }
    Ok(())
}

/// A zone new to this master: restores its counters from the state log.
/// In `nginx -t` it only checks the directory and the file.
pub fn open(zone: &ZoneConf, log: *mut ngx_log_t) -> Result<(), ()> {
    let Some(durable) = zone.durable.as_ref() else {
        return Ok(());
    };
    // SAFETY: the cycle being initialised, recorded when it was parsed.
    let cycle = unsafe { &*zone.cycle };
    load_and_reserve(zone, durable, cycle, log).map_err(|why| {
        ngx_log_error!(NGX_LOG_EMERG, log, "ticket zone \"{}\": {why}", zone.name);
    })
}

/// A zone kept across a reload (same memory, or carried over) that became
/// durable, or whose state file changed: its counters continue past the
/// file's marks. `before`: the file it used until now.
pub fn adopt(zone: &ZoneConf, before: Option<&Path>, log: *mut ngx_log_t) -> Result<(), ()> {
    let Some(durable) = zone.durable.as_ref() else {
        return Ok(());
    };
    if before == Some(durable.path.as_path()) {
        return Ok(());
    }
    open(zone, log)
}

/// At a clean stop, in the master once every worker is gone (or in the
/// single process): give back what was reserved and not issued.
pub fn close(zone: &ZoneConf, cycle: &ngx_cycle_t) {
    let log = cycle.log;
    let (Some(durable), Some(shared)) = (zone.durable.as_ref(), zone.shared()) else {
        return;
    };
    let written = (|| -> Result<usize, StateError> {
        let mut state = StateLog::open(&durable.path, &access(cycle), shared.capacity() as usize)?;
        let mut session = state.session()?;
        let records = reserve::give_back(
            session.index(),
            &policy(durable, &shared),
            &snapshot(&shared, &[], None, None),
        );
        if !records.is_empty() {
            session.rewrite(&records, file_owner(cycle))?;
        }
        Ok(records.len())
    })();
    if let Err(err) = written {
        ngx_log_error!(
            NGX_LOG_ERR,
            log,
            "ticket zone \"{}\": could not give back reserved tickets at exit: {err}",
            zone.name
        );
    }
}

/// One zone's writer in one worker.
struct Writer {
    zone: *const ZoneConf,
    /// The log and what this worker knows of it; with the job while one runs.
    state: Option<Box<StateLog>>,
    task: *mut ngx_thread_task_t,
    in_flight: bool,
    /// Another write was asked for while one ran.
    again: bool,
    /// After a failure: the timer of the next attempt.
    retry: Box<Timer>,
    waiters: Box<WaitList>,
    /// Counters that may need a block, counts waiting requests want at
    /// once, and keys to retire.
    candidates: Candidates,
    needs: Vec<(Option<Vec<u8>>, u64)>,
    retires: Vec<Vec<u8>>,
    /// Admin changes waiting for the next write, and those in it.
    changes: Vec<Pending>,
    in_job: Vec<Pending>,
    next_change: u64,
}

/// An admin change that is answered once it is on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The counter's next count becomes `target` (its life `gen`).
    MoveTo {
        key: Option<Vec<u8>>,
        gen: Gen,
        target: u64,
    },
    /// The key was retired here: record it.
    Retire { key: Vec<u8> },
}

/// How a change ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeResult {
    Done,
    /// Someone (another instance, or a taker meanwhile) holds numbers at or
    /// past the target.
    WouldReissue,
    /// The counter was retired meanwhile.
    Gone,
    NotSaved,
}

/// A change and who waits for it.
struct Pending {
    id: u64,
    change: Change,
    /// The waiting request and where its result goes (cleared if nginx
    /// ends the request first).
    waiter: Option<(Handle, *mut ChangeResult)>,
    result: ChangeResult,
}

/// A write running in the thread pool.
struct Job {
    zone: *const ZoneConf,
    state: Option<Box<StateLog>>,
    candidates: Candidates,
    needs: Vec<(Option<Vec<u8>>, u64)>,
    retires: Vec<Vec<u8>>,
    /// Admin changes (and, filled in by the thread, their outcome).
    changes: Vec<(Change, Option<Block>, ChangeResult)>,
    access: Access,
    /// Filled in by the thread.
    result: Result<(), String>,
    compaction: Option<String>,
}

static mut WRITERS: Vec<Writer> = Vec::new();

/// This worker's writer for `zone`, made on first use.
fn writer(zone: &ZoneConf) -> Option<&'static mut Writer> {
    zone.durable.as_ref()?;
    // SAFETY: per-process, touched only on the worker's event-loop thread
    // (the thread pool only sees a Job).
    let writers = unsafe { &mut *ptr::addr_of_mut!(WRITERS) };
    let id = ptr::from_ref(zone);
    if let Some(i) = writers.iter().position(|w| ptr::eq(w.zone, id)) {
        return writers.get_mut(i);
    }
    // SAFETY: the running cycle's log, alive while the worker runs.
    let log = unsafe { (*nginx_sys::ngx_cycle).log };
    let retry = Timer::new(retry_write, id.cast_mut().cast(), log);
    writers.push(Writer {
        zone: id,
        state: None,
        task: ptr::null_mut(),
        in_flight: false,
        again: false,
        retry,
        waiters: WaitList::new(),
        candidates: Candidates::default(),
        needs: Vec::new(),
        retires: Vec::new(),
        changes: Vec::new(),
        in_job: Vec::new(),
        next_change: 0,
    });
    writers.last_mut()
}

/// The list a request waiting for `zone`'s next reservation parks on.
pub fn waiters(zone: &ZoneConf) -> Option<&'static mut WaitList> {
    writer(zone).map(|w| &mut *w.waiters)
}

/// After a ticket was taken from a durable zone: extend ahead, before
/// requests have to wait.
pub fn after_take(zone: &ZoneConf, key: Option<&[u8]>, counter: &Counter) {
    if let Some(durable) = zone.durable.as_ref() {
        if counter.running_low(durable.low_water()) {
            if let Some(writer) = writer(zone) {
                writer.candidates.note(key);
            }
            schedule(zone);
        }
    }
}

/// A waiting request needs `count` counts of `key` at once.
pub fn need(zone: &ZoneConf, key: Option<&[u8]>, count: u64) {
    if let Some(writer) = writer(zone) {
        writer.candidates.note(key);
        if count > 1 {
            writer.needs.push((key.map(<[u8]>::to_vec), count));
        }
    }
    schedule(zone);
}

/// `key` was retired here (idle, or deleted): record it in the file.
pub fn retire(zone: &ZoneConf, key: &[u8]) {
    if let Some(writer) = writer(zone) {
        writer.retires.push(key.to_vec());
    }
    schedule(zone);
}

/// Queues an admin change; the waiting request's result goes to `result`
/// and `handle` is woken once the change is on disk (or failed). Returns an
/// id for [`forget_change`].
pub fn submit(zone: &ZoneConf, change: Change, waiter: (Handle, *mut ChangeResult)) -> Option<u64> {
    let writer = writer(zone)?;
    writer.next_change += 1;
    let id = writer.next_change;
    writer.changes.push(Pending {
        id,
        change,
        waiter: Some(waiter),
        result: ChangeResult::NotSaved,
    });
    schedule(zone);
    Some(id)
}

/// The request waiting for change `id` is gone: its change still happens,
/// nobody is told.
pub fn forget_change(zone: &ZoneConf, id: u64) {
    if let Some(writer) = writer(zone) {
        for pending in writer.changes.iter_mut().chain(writer.in_job.iter_mut()) {
            if pending.id == id {
                pending.waiter = None;
            }
        }
    }
}

/// Starts a write unless one runs (then another follows it).
pub fn schedule(zone: &ZoneConf) {
    let Some(writer) = writer(zone) else {
        return;
    };
    if writer.in_flight {
        writer.again = true;
        return;
    }
    if writer.retry.is_armed() {
        return; // the last write failed: the retry timer starts the next
    }
    post(writer, zone);
}

unsafe extern "C" fn retry_write(ev: *mut ngx_event_t) {
    // SAFETY: the timer's data is the zone it belongs to (cycle pool).
    let zone = unsafe { &*Timer::data(ev).cast::<ZoneConf>() };
    if let Some(writer) = writer(zone) {
        let asked = !writer.waiters.is_empty()
            || !writer.candidates.is_empty()
            || !writer.needs.is_empty()
            || !writer.changes.is_empty();
        if !writer.in_flight && asked {
            post(writer, zone);
        }
    }
}

fn post(writer: &mut Writer, zone: &ZoneConf) {
    let Some(durable) = zone.durable.as_ref() else {
        return;
    };
    // SAFETY: the running cycle, alive while the worker runs.
    let cycle = unsafe { &*nginx_sys::ngx_cycle };
    if writer.task.is_null() {
        // SAFETY: allocated once per worker from the cycle's pool, which
        // outlives every task posted during the cycle.
        writer.task = unsafe { ngx_thread_task_alloc(cycle.pool, 0) };
        if writer.task.is_null() {
            return;
        }
    }
    writer.in_job = core::mem::take(&mut writer.changes);
    let job = Box::new(Job {
        zone: writer.zone,
        state: writer.state.take(),
        candidates: core::mem::take(&mut writer.candidates),
        needs: core::mem::take(&mut writer.needs),
        retires: core::mem::take(&mut writer.retires),
        changes: writer
            .in_job
            .iter()
            .map(|p| (p.change.clone(), None, ChangeResult::NotSaved))
            .collect(),
        access: access(cycle),
        result: Ok(()),
        compaction: None,
    });
    let task = writer.task;
    // SAFETY: the task is idle (`in_flight` is false); nginx runs
    // `write_in_thread` in a pool thread, then `written` in this worker's
    // event loop.
    unsafe {
        (*task).ctx = Box::into_raw(job).cast();
        (*task).handler = Some(write_in_thread);
        (*task).event.handler = Some(written);
        (*task).event.data = task.cast();
        (*task).event.log = cycle.log;
        if ngx_thread_task_post(durable.thread_pool, task) != Status::NGX_OK.0 {
            let job = Box::from_raw((*task).ctx.cast::<Job>());
            (*task).ctx = ptr::null_mut();
            writer.state = job.state;
            writer.candidates.merge(job.candidates);
            writer.needs.extend(job.needs);
            writer.retires.extend(job.retires);
            writer.changes.append(&mut writer.in_job);
            ngx_log_error!(
                NGX_LOG_ERR,
                cycle.log,
                "ticket zone \"{}\": could not post the state file write",
                zone.name
            );
            writer.retry.arm(RETRY_AFTER_MSEC);
            return;
        }
    }
    writer.in_flight = true;
    writer.again = false;
}

/// Runs in a thread-pool thread: plans and appends the reservations.
unsafe extern "C" fn write_in_thread(data: *mut c_void, _log: *mut ngx_log_t) {
    // SAFETY: `data` is the Job posted with this task; the zone (cycle pool)
    // and its shared memory outlive the worker's tasks.
    let (job, zone) = unsafe {
        let job = &mut *data.cast::<Job>();
        let zone = &*job.zone;
        (job, zone)
    };
    job.result = run_job(job, zone);
}

fn run_job(job: &mut Job, zone: &ZoneConf) -> Result<(), String> {
    let (Some(durable), Some(shared)) = (zone.durable.as_ref(), zone.shared()) else {
        return Err("zone not ready".into());
    };
    let text = |err: StateError| err.to_string();
    let state = match job.state.as_mut() {
        Some(state) => state,
        None => job.state.insert(Box::new(
            StateLog::open(&durable.path, &job.access, shared.capacity() as usize).map_err(text)?,
        )),
    };
    // A sibling worker's write may have covered everything already: then
    // the directory lock is not even taken.
    let asked = !job.changes.is_empty() || !job.retires.is_empty();
    let low_water = Some(durable.low_water());
    if !asked && snapshot(&shared, &job.needs, low_water, Some(&job.candidates)).is_empty() {
        return Ok(());
    }
    let mut session = state.session().map_err(text)?;
    if shared.is_closed() {
        // A reload moved this zone's counters to a new zone (and the state
        // file with them): this outgoing worker writes nothing more.
        return Ok(());
    }
    let policy = policy(durable, &shared);
    let mut records = Vec::new();
    for (change, block, result) in job.changes.iter_mut() {
        *result = plan_change(
            &shared,
            session.index(),
            &policy,
            change,
            &mut records,
            block,
        );
    }
    let changed = |key: Option<&[u8]>| records.iter().any(|r: &Record| r.key() == key);
    let counters: Vec<CounterState> = snapshot(
        &shared,
        &job.needs,
        Some(durable.low_water()),
        Some(&job.candidates),
    )
    .into_iter()
    .filter(|c| !changed(c.key.as_deref()))
    .collect();
    let mut plan = reserve::extend(session.index(), &policy, &counters);
    plan.records.append(&mut records);
    for key in &job.retires {
        let known = session.index().get(Some(key)).is_some();
        let planned = plan.records.iter().any(|r| r.key() == Some(key.as_slice()));
        if known && !planned && !is_live(&shared, key) {
            plan.records.push(Record::Retire {
                key: key.clone(),
                instance: shared.instance(),
            });
        }
    }
    if !plan.records.is_empty() {
        if let Compaction::Failed(err) = session.append(&plan.records).map_err(text)? {
            job.compaction = Some(err.to_string());
        }
    }
    // Installed before the lock is released: every block of this nginx in
    // the file is then also in its counters, so a sibling worker's next plan
    // sees it (a mark of ours past what a counter holds is never ours).
    if let Some(lock) = zone.memory.as_ref() {
        install(&shared, lock, &plan.blocks);
        for (_, block, result) in job.changes.iter_mut() {
            if let (ChangeResult::Done, Some(block)) = (*result, block.as_ref()) {
                *result = apply_move(&shared, lock, block);
            }
        }
    }
    drop(session);
    Ok(())
}

/// Plans one admin change under the lock: the records it writes, and for a
/// move the block its counter continues in.
fn plan_change(
    shared: &SharedZone<'_>,
    index: &Index,
    policy: &Policy,
    change: &Change,
    records: &mut Vec<Record>,
    block: &mut Option<Block>,
) -> ChangeResult {
    match change {
        Change::MoveTo { key, gen, target } => {
            let counter = match key {
                None => Some(shared.default_counter()),
                Some(key) => match shared.find(key) {
                    Lookup::Found(found) if found.gen == *gen => Some(found.counter),
                    _ => None,
                },
            };
            let Some(view) = counter.map(Counter::view).filter(|v| v.gen == *gen) else {
                return ChangeResult::Gone;
            };
            if *target < view.issued {
                return ChangeResult::WouldReissue;
            }
            if *target <= view.reserved {
                // Inside our own installed block, which is on disk already:
                // nothing to write, the count only moves.
                *block = Some(Block {
                    key: key.clone(),
                    gen: *gen,
                    lo: *target,
                    hi: view.reserved,
                });
                return ChangeResult::Done;
            }
            // Past our block: every number up to the file's latest mark may
            // be someone else's (or ours, not installed yet: we cannot tell),
            // but for our own mark of a life this key left, as a take sees it.
            let latest = reserve::mark_to_follow(index, policy, key.as_deref(), &view);
            if *target < latest {
                return ChangeResult::WouldReissue;
            }
            let cap = match view.start {
                Some(start) => MAX_COUNT.min((u64::MAX - start).saturating_add(1)),
                None => MAX_COUNT,
            };
            let hi = target.saturating_add(policy.reserve).min(cap);
            records.push(Record::Mark {
                key: key.clone(),
                instance: policy.instance,
                start: view.start,
                mark: hi.max(*target),
                used: view.used / 1000,
            });
            *block = Some(Block {
                key: key.clone(),
                gen: *gen,
                lo: *target,
                hi,
            });
            ChangeResult::Done
        }
        Change::Retire { key } => {
            let known = index.get(Some(key)).is_some();
            if known
                && !is_live(shared, key)
                && !records.iter().any(|r| r.key() == Some(key.as_slice()))
            {
                records.push(Record::Retire {
                    key: key.clone(),
                    instance: policy.instance,
                });
            }
            ChangeResult::Done
        }
    }
}

/// Applies a move that is on disk: the count jumps to the target and the
/// counter continues in the block after it.
fn apply_move(shared: &SharedZone<'_>, lock: &ZoneMemory, block: &Block) -> ChangeResult {
    let Some(counter) = counter_of(shared, block) else {
        return ChangeResult::Gone;
    };
    if counter.advance_to(block.gen, block.lo).is_err() {
        return ChangeResult::WouldReissue;
    }
    counter.cover_issued();
    lock.lock();
    counter.add_block(block.lo, block.hi);
    lock.unlock();
    counter.add_flags(FLAG_LOGGED);
    ChangeResult::Done
}

/// Hands each waiting admin request its result.
fn answer_changes(writer: &mut Writer) {
    for pending in core::mem::take(&mut writer.in_job) {
        if let Some((handle, result)) = pending.waiter {
            // SAFETY: the result slot lives in the waiting request's pool;
            // `forget_change` cleared the waiter if nginx ended it.
            unsafe { *result = pending.result };
            crate::wait::wake(handle, Wake::Ready);
        }
    }
}

/// Back in the worker's event loop: install the blocks, wake the waiters.
unsafe extern "C" fn written(ev: *mut ngx_event_t) {
    // SAFETY: `data` is our task; its ctx is the Job boxed in `post`.
    let (job, log) = unsafe {
        let task = (*ev).data.cast::<ngx_thread_task_t>();
        let job = Box::from_raw((*task).ctx.cast::<Job>());
        (*task).ctx = ptr::null_mut();
        (job, (*ev).log)
    };
    // SAFETY: the zone outlives the worker's tasks.
    let zone = unsafe { &*job.zone };
    let Some(writer) = writer(zone) else {
        return;
    };
    writer.in_flight = false;
    let job = *job;
    writer.state = job.state;
    if let Some(err) = job.compaction {
        ngx_log_error!(
            NGX_LOG_ERR,
            log,
            "ticket zone \"{}\": state file compaction failed: {err}",
            zone.name
        );
    }
    match job.result {
        Ok(()) => {
            for (pending, (_, _, result)) in writer.in_job.iter_mut().zip(job.changes) {
                pending.result = result;
            }
            answer_changes(writer);
            if writer.again {
                post(writer, zone);
            }
            writer.waiters.wake_all(Wake::Ready);
        }
        Err(err) => {
            ngx_log_error!(
                NGX_LOG_ERR,
                log,
                "ticket zone \"{}\": state file could not be written: {err}",
                zone.name
            );
            // Keep what was asked for; the waiting requests wait on until
            // the next attempt or their deadline.
            writer.candidates.merge(job.candidates);
            writer.needs.extend(job.needs);
            writer.retires.extend(job.retires);
            answer_changes(writer);
            writer.retry.arm(RETRY_AFTER_MSEC);
        }
    }
}

/// At exit_process, after nginx's thread pools finished their tasks:
/// nothing may stay armed, nothing allocated may stay (the module is
/// unloaded after this).
pub fn stop_worker() {
    // SAFETY: per-process, on the event-loop thread.
    let writers = unsafe { &mut *ptr::addr_of_mut!(WRITERS) };
    for writer in writers.iter_mut() {
        writer.retry.disarm();
        if writer.in_flight && !writer.task.is_null() {
            // The thread ran (thread pools end before modules exit), but its
            // completion never will: free its job here.
            // SAFETY: the task's ctx is the Job boxed in `post`.
            unsafe {
                let ctx = (*writer.task).ctx;
                if !ctx.is_null() {
                    drop(Box::from_raw(ctx.cast::<Job>()));
                    (*writer.task).ctx = ptr::null_mut();
                }
            }
        }
    }
    *writers = Vec::new();
}
