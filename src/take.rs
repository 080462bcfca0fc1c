//! Taking tickets from a zone: finds (or makes) the counter of a key and
//! takes from it, whatever kind of zone it is. What a take gives is an
//! [`Outcome`]: tickets, a refusal, or a reason to wait.

use nginx_sys::{ngx_log_t, ngx_uint_t, NGX_HTTP_INTERNAL_SERVER_ERROR};
use ngx::ngx_log_error;

use crate::conf::{CounterConf, ZoneConf};
use crate::core::counter::{Ask, Counter, Gen, Take, FLAG_DRAINED};
use crate::core::table::{KeyError, Lookup, SharedZone, KEY_MAX};

/// A response other than a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    BadCount,
    EmptyKey,
    LongKey,
    SoldOut,
    ZoneFull,
    TryAgain,
    /// The zone was replaced by a reload (it was resized), or this worker is
    /// quitting: ask again, on a new connection, which a new worker takes.
    Replaced,
    NoSuchCounter,
    /// A durable counter's reservation did not reach the disk in time.
    NotSaved,
    /// Redis could not be asked, or did not answer in time.
    Unavailable,
    Failed,
    /// Not an answer: the key's existence is Redis's to tell.
    AskRedis,
}

impl Refusal {
    pub fn status(self) -> ngx_uint_t {
        match self {
            Refusal::BadCount | Refusal::EmptyKey | Refusal::LongKey => 400,
            Refusal::NoSuchCounter => 404,
            Refusal::SoldOut => 410,
            Refusal::ZoneFull | Refusal::TryAgain | Refusal::Replaced | Refusal::Unavailable => 503,
            Refusal::NotSaved | Refusal::Failed | Refusal::AskRedis => {
                NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_uint_t
            }
        }
    }

    pub fn body(self) -> &'static str {
        match self {
            Refusal::BadCount => "bad count\n",
            Refusal::EmptyKey => "empty key\n",
            Refusal::LongKey => "key too long\n",
            Refusal::SoldOut => "sold out\n",
            Refusal::ZoneFull => "ticket zone full\n",
            Refusal::TryAgain | Refusal::Replaced => "try again\n",
            Refusal::NoSuchCounter => "no such counter\n",
            Refusal::NotSaved => "ticket state not saved\n",
            Refusal::Unavailable => "ticket authority unavailable\n",
            Refusal::Failed | Refusal::AskRedis => "internal error\n",
        }
    }
}

/// Why a take must wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// A durable counter's next reservation is not on disk yet.
    Reservation,
    /// A Redis zone (strict): every ticket comes from Redis.
    Authority,
    /// A Redis zone in lease mode whose lease is used up.
    Lease,
    /// `create=off` on a Redis zone, for a key this nginx does not know:
    /// whether Redis has it decides.
    Exists,
}

/// What a take gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Tickets { first: u64, count: u64 },
    Refused(Refusal),
    Wait(Wait),
}

/// A key's bytes checked as a counter name.
pub fn check_key(key: &[u8]) -> Result<&[u8], Refusal> {
    if key.is_empty() {
        return Err(Refusal::EmptyKey);
    }
    if key.len() > KEY_MAX {
        return Err(Refusal::LongKey);
    }
    Ok(key)
}

/// How often a take retries a counter retired under it before it gives up.
const STALE_RETRIES: u32 = 8;

/// Finds the counter of `key` in `zone` for taking: creates it if `create`,
/// and restarts a key that was idle too long.
fn counter_for<'z>(
    zone: &ZoneConf,
    shared: &SharedZone<'z>,
    key: &[u8],
    conf: &CounterConf,
    now: u64,
    log: *mut ngx_log_t,
    level: ngx_uint_t,
) -> Result<(&'z Counter, Gen), Refusal> {
    let Some(lock) = zone.memory.as_ref() else {
        return Err(Refusal::Failed);
    };
    let found = match shared.find(key) {
        Lookup::Found(found) => {
            if !zone.is_idle(found.counter.view().used, now) {
                return Ok((found.counter, found.gen));
            }
            // Idle too long: the key is gone, and a take starts it afresh.
            shared.expire(key, found.gen, now.saturating_add(1), lock);
            if !conf.create {
                return Err(Refusal::NoSuchCounter);
            }
            shared.create(key, conf.start, now, 0, lock)
        }
        Lookup::Busy => return Err(Refusal::TryAgain),
        Lookup::Absent if !conf.create && zone.redis.is_some() => return Err(Refusal::AskRedis),
        Lookup::Absent if !conf.create => return Err(Refusal::NoSuchCounter),
        Lookup::Absent => shared.create(key, conf.start, now, 0, lock),
    };
    match found {
        Ok(found) => Ok((found.counter, found.gen)),
        Err(KeyError::Full) => {
            log_zone_full(zone, shared.capacity(), log, level);
            Err(Refusal::ZoneFull)
        }
        Err(KeyError::Closed) => Err(Refusal::Replaced),
        Err(KeyError::Busy) => Err(Refusal::TryAgain),
    }
}

/// Takes `count` tickets for `key` (`None`: the zone's default counter).
pub fn take(
    zone: &ZoneConf,
    conf: &CounterConf,
    key: Option<&[u8]>,
    count: u64,
    log: *mut ngx_log_t,
    level: ngx_uint_t,
) -> Outcome {
    let Some(shared) = zone.shared() else {
        ngx_log_error!(
            nginx_sys::NGX_LOG_ERR,
            log,
            "ticket zone \"{}\" is not ready",
            zone.name
        );
        return Outcome::Refused(Refusal::Failed);
    };
    let now = crate::process::unix_msec();
    let lease = zone.redis.as_ref().and_then(|r| r.lease());
    let ask = Ask {
        start: conf.start,
        count,
        max: conf.max,
        gated: zone.durable.is_some() || lease.is_some(),
        now,
    };
    for _ in 0..STALE_RETRIES {
        let (counter, gen, fast) = match key {
            None => (shared.default_counter(), 0, true),
            Some(key) => match counter_for(zone, &shared, key, conf, now, log, level) {
                Ok((counter, gen)) => (counter, gen, false),
                Err(Refusal::AskRedis) => return Outcome::Wait(Wait::Exists),
                Err(refusal) => return Outcome::Refused(refusal),
            },
        };
        if zone.redis.is_some() && lease.is_none() {
            // Strict: the counter here only keeps what this nginx handed
            // out (for the guard and the status page).
            counter.first_ticket(conf.start);
            return Outcome::Wait(Wait::Authority);
        }
        let taken = if fast {
            counter.take_fast(gen, &ask)
        } else {
            counter.take(gen, &ask)
        };
        match taken {
            Take::Tickets { first, count } => {
                if zone.durable.is_some() {
                    crate::durable::after_take(zone, key, counter);
                }
                if let Some(lease) = lease {
                    if counter.running_low((lease / 2).max(1)) {
                        crate::redis::refill(zone, key, conf.start, conf.max);
                    }
                }
                return Outcome::Tickets { first, count };
            }
            Take::SoldOut => return Outcome::Refused(Refusal::SoldOut),
            Take::Exhausted => {
                log_out_of_numbers(zone, log, level);
                return Outcome::Refused(Refusal::SoldOut);
            }
            Take::Unreserved => {
                // A block reserved past a gap may be waiting already.
                if let Some(lock) = zone.memory.as_ref() {
                    use crate::core::table::ZoneLock;
                    lock.lock();
                    let ready = counter.advance_block(count);
                    lock.unlock();
                    if ready {
                        continue;
                    }
                }
                if lease.is_some() {
                    if counter.view().flags & FLAG_DRAINED != 0 {
                        return Outcome::Refused(Refusal::SoldOut);
                    }
                    return Outcome::Wait(Wait::Lease);
                }
                // A write is asked for here, so that it comes also for a
                // caller that cannot wait (a variable).
                crate::durable::need(zone, key, count);
                return Outcome::Wait(Wait::Reservation);
            }
            Take::Stale if shared.is_closed() => return Outcome::Refused(Refusal::Replaced),
            Take::Stale => {}
        }
    }
    if shared.is_closed() {
        return Outcome::Refused(Refusal::Replaced);
    }
    Outcome::Refused(Refusal::TryAgain)
}

/// Makes the local counter of a key Redis has (for `create=off`).
pub fn adopt_remote_key(zone: &ZoneConf, key: &[u8], start: u64) -> Result<(), Refusal> {
    let (Some(shared), Some(lock)) = (zone.shared(), zone.memory.as_ref()) else {
        return Err(Refusal::Failed);
    };
    match shared.create(key, start, crate::process::unix_msec(), 0, lock) {
        Ok(_) => Ok(()),
        Err(KeyError::Full) => Err(Refusal::ZoneFull),
        Err(_) => Err(Refusal::TryAgain),
    }
}

/// What a client can make a worker log on every request; [`LOGGED`] keeps
/// when each zone last logged it (see [`once_a_second`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Notice {
    ZoneFull,
    OutOfNumbers,
}

static mut LOGGED: Vec<(usize, Notice, u64)> = Vec::new();

/// At exit_process: nothing allocated may stay.
pub fn stop_worker() {
    // SAFETY: per-process, on the event-loop thread.
    unsafe { *core::ptr::addr_of_mut!(LOGGED) = Vec::new() };
}

/// Whether `notice` of `zone` may be logged now: once a second per zone in
/// each worker, however many requests meet it (a client must not be able to
/// fill the disk).
fn once_a_second(zone: &ZoneConf, notice: Notice) -> bool {
    let now = crate::process::unix_msec() / 1000;
    let id = core::ptr::from_ref(zone) as usize;
    // SAFETY: per-process, touched only on the worker's event-loop thread.
    let last = unsafe { &mut *core::ptr::addr_of_mut!(LOGGED) };
    match last.iter_mut().find(|(z, n, _)| *z == id && *n == notice) {
        Some((_, _, at)) if *at == now => return false,
        Some((_, _, at)) => *at = now,
        None => last.push((id, notice, now)),
    }
    true
}

/// A counter at the end of its numbers refused a request (Redis zones end
/// at 2^63-1, local ones where their start leaves no room).
pub fn log_out_of_numbers(zone: &ZoneConf, log: *mut ngx_log_t, level: ngx_uint_t) {
    if once_a_second(zone, Notice::OutOfNumbers) {
        ngx_log_error!(
            level,
            log,
            "ticket counter in zone \"{}\" ran out of numbers",
            zone.name
        );
    }
}

fn log_zone_full(zone: &ZoneConf, capacity: u64, log: *mut ngx_log_t, level: ngx_uint_t) {
    if !once_a_second(zone, Notice::ZoneFull) {
        return;
    }
    ngx_log_error!(
        level,
        log,
        "ticket zone \"{}\" is full ({} keys), new keys refused",
        zone.name,
        capacity
    );
}
