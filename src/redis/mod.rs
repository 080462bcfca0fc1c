//! Redis zones: counters whose authority is Redis, shared by every nginx
//! that talks to it.
//!
//! Each worker keeps one connection per Redis URL ([`link`]), opened when
//! it starts and driven by nginx's events. Requests for one counter are
//! grouped (the pure [`KeyQueue`]): while a `take` for it is in flight,
//! later requests wait and go together in the next one, so one round trip
//! serves a whole batch, in arrival order, and every ticket is greater than
//! every ticket answered before the request arrived (by any node). Different
//! counters pipeline on the one connection.
//!
//! What Redis answers is checked against what this nginx knows (its shared
//! zone keeps, per counter, the highest count handed out here and the
//! generation Redis gave): the `take` script raises a counter that went
//! below it (Redis lost data) past it plus `fence=`, and a Redis restart
//! (a new run id) fences every counter once.
//!
//! Lease mode (`lease=N`): a worker takes N numbers at a time into the zone
//! and serves them from shared memory, refilling before they run out.
//!
//! Everything here runs on the worker's event-loop thread.

pub mod link;

use core::ptr;
use std::collections::{HashMap, HashSet};

use nginx_sys::{ngx_cycle_t, ngx_event_t, ngx_log_t, NGX_LOG_ERR, NGX_LOG_NOTICE, NGX_LOG_WARN};
use ngx::ngx_log_error;

use crate::conf::{MainConf, RedisConf, ZoneConf};
use crate::core::counter::{Counter, Gen, FLAG_DRAINED, FLAG_EPOCH_LOST};
use crate::core::redis::batch::{KeyQueue, Push};
use crate::core::redis::handshake::{Appendonly, ServerInfo};
use crate::core::redis::ids::IdMap;
use crate::core::redis::keys::CounterKeys;
use crate::core::redis::known::{is_stale, place_lease, LeasePlace, LOST_EPOCH};
use crate::core::redis::reply::ReplyError;
use crate::core::redis::resp::Value;
use crate::core::redis::scripts::{
    self, AdminGetReply, AdminSetArgs, AdminSetReply, FenceArgs, FenceReply, ScriptShas, TakeArgs,
    TakeLimit, TakeOutcome, TakeReply,
};
use crate::core::table::{Lookup, SharedZone, ZoneLock};
use crate::timer::Timer;
use crate::wait::{Handle, WaitList, Wake};
use link::{Event, Link, State};

/// What a request waiting for Redis gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Tickets {
        first: u64,
        count: u64,
    },
    SoldOut,
    /// The 2^63-1 ceiling.
    Exhausted,
    /// Redis could not be asked, or did not answer in time.
    Unavailable,
    /// Admin: the counter as Redis has it.
    Counter {
        exists: bool,
        issued: Option<u64>,
        used: Option<u64>,
    },
    /// Admin: a move would hand out numbers again.
    WouldReissue,
}

/// Where a waiting request's answer goes: its handle, and a slot in its
/// pool the answer is written to before it is woken.
#[derive(Clone, Copy)]
pub struct Waiter {
    pub handle: Handle,
    pub slot: *mut Option<Answer>,
}

/// An admin call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminOp {
    Get,
    /// The counter's count becomes this (next ticket − start).
    Set(u64),
    Delete,
}

/// One counter's requests in this worker: the same key, `start=` and
/// `max=` (a batch shares them).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QueueKey {
    zone: usize,
    key: Option<Vec<u8>>,
    start: u64,
    max: Option<u64>,
}

impl QueueKey {
    pub fn new(zone: &ZoneConf, key: Option<&[u8]>, start: u64, max: Option<u64>) -> Self {
        QueueKey {
            zone: ptr::from_ref(zone) as usize,
            key: key.map(<[u8]>::to_vec),
            start,
            max,
        }
    }

    fn zone(&self) -> &ZoneConf {
        // SAFETY: built from a zone of the cycle's pool, which outlives the
        // worker's queues.
        unsafe { &*(self.zone as *const ZoneConf) }
    }
}

struct Queue {
    requests: KeyQueue,
    waiters: IdMap<Waiter>,
    /// A batch's answers, held until `WAIT` says enough replicas have it.
    held: Vec<(u64, Answer)>,
}

/// What the node knew of a counter when it sent a command for it: its
/// local life (a DELETE or expiry here starts another) and the generation
/// Redis last told (0: none). A reply about an older life must not touch
/// the counter's newer one.
#[derive(Debug, Clone, Copy)]
struct Seen {
    local: Option<Gen>,
    remote: u64,
}

/// What a command sent on a link was.
enum Sent {
    Fence {
        zone: usize,
    },
    Take {
        key: QueueKey,
        seen: Seen,
    },
    Wait(QueueKey),
    Lease {
        zone: usize,
        key: Option<Vec<u8>>,
        seen: Seen,
        limit: TakeLimit,
        asked: u64,
    },
    Admin {
        zone: usize,
        key: Option<Vec<u8>>,
        op: AdminOp,
        waiter: Option<Waiter>,
    },
}

/// A zone of this nginx and its link.
struct ZoneLink {
    zone: usize,
    link: usize,
}

#[derive(Default)]
struct Registry {
    /// Boxed: nginx keeps pointers to each link (`c->data`, its log).
    #[allow(clippy::vec_box)]
    links: Vec<Box<Link>>,
    /// What each link learned in its handshake (its run id, the scripts).
    servers: Vec<Option<Box<ServerInfo>>>,
    zones: Vec<ZoneLink>,
    queues: HashMap<QueueKey, Queue>,
    sent: IdMap<Sent>,
    next_id: u64,
    lease_waiters: HashMap<usize, Box<WaitList>>,
    refilling: HashSet<(usize, Option<Vec<u8>>)>,
    /// Random for this worker: the first half of every epoch it offers.
    epoch_seed: u64,
    /// Warned that a Redis writes no append-only file.
    warned: HashSet<usize>,
    /// Links a reply showed unusable (a replica, a lost script): failed once
    /// the replies at hand are handled, then reconnected.
    troubled: Vec<(usize, String)>,
    /// Counters whose next batch goes on the event loop's next turn
    /// (`send_task`), so it takes every request this turn and the next
    /// bring.
    due: Vec<QueueKey>,
    send_task: Option<Box<Timer>>,
    /// Admin calls (and `create=off` checks) made while their link was still
    /// connecting: sent once it is ready, failed if it goes down.
    admin_waiting: Vec<AdminCall>,
}

/// An admin call for a link.
struct AdminCall {
    link: usize,
    zone: usize,
    key: Option<Vec<u8>>,
    op: AdminOp,
    waiter: Waiter,
}

static mut REGISTRY: *mut Registry = ptr::null_mut();

fn registry() -> Option<&'static mut Registry> {
    // SAFETY: per-process, created in `start_worker` and freed in
    // `stop_worker`, both on the event-loop thread, the only one that uses
    // it. Callers never hold it across a wake (see `deliver`).
    unsafe { REGISTRY.as_mut() }
}

impl Registry {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The epoch offered to a zone that has none in Redis. Never offered
    /// twice: a Redis that lost its data must get an epoch no node has seen,
    /// or the loss would go unnoticed.
    fn epoch_candidate(&mut self) -> [u8; 32] {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.epoch_seed.to_le_bytes());
        bytes[8..].copy_from_slice(&self.id().to_le_bytes());
        scripts::epoch_candidate(&bytes)
    }

    /// The zones whose counters go over `link`.
    fn zones_on(&self, link: usize) -> Vec<usize> {
        self.zones
            .iter()
            .filter(|z| z.link == link)
            .map(|z| z.zone)
            .collect()
    }

    fn link_of(&self, zone: usize) -> Option<usize> {
        self.zones.iter().find(|z| z.zone == zone).map(|z| z.link)
    }
}

fn zone_at(zone: usize) -> &'static ZoneConf {
    // SAFETY: addresses of zones of the cycle's pool, which outlive the
    // worker's registry.
    unsafe { &*(zone as *const ZoneConf) }
}

fn redis_of(zone: &ZoneConf) -> Option<&RedisConf> {
    zone.redis.as_ref()
}

/// The counter of `key` in the zone's shared memory, if it lives.
fn local_counter<'z>(shared: &SharedZone<'z>, key: Option<&[u8]>) -> Option<(&'z Counter, Gen)> {
    match key {
        None => Some((shared.default_counter(), shared.default_counter().gen())),
        Some(key) => match shared.find(key) {
            Lookup::Found(found) => Some((found.counter, found.gen)),
            _ => None,
        },
    }
}

/// A worker starts: one link per Redis URL, connecting now. Zones with
/// `redis_replicas=` have links of their own (one per value): Redis's WAIT
/// blocks its connection, which must not hold up zones that never asked.
/// So do zones with another `redis_timeout=`: a link times out its replies
/// by one timer.
pub fn start_worker(main: &MainConf, cycle: &ngx_cycle_t) {
    if main.zones().all(|z| z.redis.is_none()) {
        return;
    }
    let mut reg = Box::<Registry>::default();
    reg.epoch_seed = crate::process::random_u64s()[0];
    reg.send_task = Some(Timer::new(on_send_due, ptr::null_mut(), cycle.log));
    // each link's `redis_replicas=` (its URL and timeout are on the link)
    let mut link_replicas = Vec::new();
    for zone in main.zones() {
        let Some(redis) = redis_of(zone) else {
            continue;
        };
        let timeout = redis.args.timeout_ms as nginx_sys::ngx_msec_t;
        let same = reg
            .links
            .iter()
            .zip(&link_replicas)
            .position(|(l, &replicas)| {
                l.url == redis.args.url && l.timeout == timeout && replicas == redis.args.replicas
            });
        let link = match same {
            Some(link) => link,
            None => {
                link_replicas.push(redis.args.replicas);
                let id = reg.links.len();
                let link = Link::new(
                    redis.args.url.clone(),
                    redis.addr,
                    timeout,
                    cycle.log,
                    id,
                    on_retry,
                );
                reg.links.push(link);
                reg.servers.push(None);
                id
            }
        };
        reg.zones.push(ZoneLink {
            zone: ptr::from_ref(zone) as usize,
            link,
        });
    }
    // SAFETY: see `registry`.
    unsafe { REGISTRY = Box::into_raw(reg) };
    let count = registry().map_or(0, |r| r.links.len());
    for link in 0..count {
        connect(link);
    }
}

/// At exit_process: every connection closed, nothing armed, nothing left.
pub fn stop_worker() {
    // SAFETY: see `registry`; nothing runs after this in the worker.
    unsafe {
        if REGISTRY.is_null() {
            return;
        }
        let mut reg = Box::from_raw(REGISTRY);
        REGISTRY = ptr::null_mut();
        for link in reg.links.iter_mut() {
            link.shut();
        }
    }
}

fn connect(link: usize) {
    let events = {
        let Some(reg) = registry() else {
            return;
        };
        let Some(l) = reg.links.get_mut(link) else {
            return;
        };
        match l.connect(on_read, on_write) {
            Ok(()) => Vec::new(),
            Err(why) => vec![l.fail(why)],
        }
    };
    dispatch(link, events);
}

unsafe extern "C" fn on_retry(ev: *mut ngx_event_t) {
    // SAFETY: the timer's data is the link's index, set in `start_worker`.
    let link = unsafe { Timer::data(ev) as usize };
    if !crate::process::exiting() {
        connect(link);
    }
}

/// The link whose connection an event belongs to.
///
/// # Safety
/// `ev` must be an event of a connection a link made.
unsafe fn link_of_event(ev: *mut ngx_event_t) -> Option<usize> {
    // SAFETY: per the contract, `c->data` is the link.
    unsafe {
        let c = (*ev).data.cast::<nginx_sys::ngx_connection_t>();
        let link = (*c).data.cast::<Link>();
        link.as_ref().map(|l| l.id)
    }
}

unsafe extern "C" fn on_read(ev: *mut ngx_event_t) {
    // SAFETY: nginx calls this for our connection's read event.
    let Some(link) = (unsafe { link_of_event(ev) }) else {
        return;
    };
    let events = match registry().and_then(|r| r.links.get_mut(link)) {
        Some(l) => l.read(),
        None => return,
    };
    dispatch(link, events);
}

unsafe extern "C" fn on_write(ev: *mut ngx_event_t) {
    // SAFETY: nginx calls this for our connection's write event.
    let Some(link) = (unsafe { link_of_event(ev) }) else {
        return;
    };
    let events = match registry().and_then(|r| r.links.get_mut(link)) {
        Some(l) => {
            let result = if l.state == State::Connecting {
                l.connected()
            } else {
                l.flush()
            };
            match result {
                Ok(()) => Vec::new(),
                Err(why) => vec![l.fail(why)],
            }
        }
        None => return,
    };
    dispatch(link, events);
}

/// Wakes to do once no borrow of the registry is held.
type Wakes = Vec<(Waiter, Answer)>;

/// Hands every answer to its request and wakes it. Runs with no borrow of
/// the registry alive: a woken request may come back here.
fn deliver(wakes: Wakes) {
    for (waiter, answer) in wakes {
        // SAFETY: the slot lives in the request's pool; the waiter was
        // removed from its queue when nginx ended the request (`forget`).
        unsafe { *waiter.slot = Some(answer) };
        crate::wait::wake(waiter.handle, Wake::Ready);
    }
}

/// Acts on what a link reported.
fn dispatch(link: usize, events: Vec<Event>) {
    let mut wakes = Wakes::new();
    let mut lease_zones = Vec::new();
    for event in events {
        let Some(reg) = registry() else {
            return;
        };
        match event {
            Event::Ready(info) => on_ready(reg, link, info, &mut wakes, &mut lease_zones),
            Event::Reply(id, value) => {
                if let Some(sent) = reg.sent.remove(&id) {
                    on_reply(reg, link, sent, value, &mut wakes, &mut lease_zones);
                }
            }
            Event::Failed { lost, why } => {
                on_failed(reg, link, lost, why, &mut wakes, &mut lease_zones)
            }
        }
    }
    if let Some(reg) = registry() {
        let troubled: Vec<(usize, String)> = reg.troubled.drain(..).collect();
        for (bad, why) in troubled {
            if let Some(l) = reg.links.get_mut(bad) {
                if let Event::Failed { lost, why } = l.fail(why) {
                    on_failed(reg, bad, lost, why, &mut wakes, &mut lease_zones);
                }
            }
        }
        if let Some(l) = reg.links.get_mut(link) {
            if let Err(why) = l.flush() {
                let event = l.fail(why);
                // a failure while flushing: report it in turn
                dispatch_later(link, event, &mut wakes);
            }
        }
    }
    deliver(wakes);
    for zone in lease_zones {
        wake_lease_waiters(zone);
    }
}

fn dispatch_later(link: usize, event: Event, wakes: &mut Wakes) {
    let mut leases = Vec::new();
    if let (Some(reg), Event::Failed { lost, why }) = (registry(), event) {
        on_failed(reg, link, lost, why, wakes, &mut leases);
    }
    for zone in leases {
        wake_lease_waiters(zone);
    }
}

fn set_link_slot(zone: &ZoneConf, up: bool) {
    let Some(shared) = zone.shared() else {
        return;
    };
    let slots = &shared.header().remote.links;
    let slot = crate::process::worker_number() % slots.len();
    let value = (u64::from(crate::process::pid()) << 1) | u64::from(up);
    slots[slot].store(value, core::sync::atomic::Ordering::Relaxed);
}

fn on_ready(
    reg: &mut Registry,
    link: usize,
    info: Box<ServerInfo>,
    wakes: &mut Wakes,
    leases: &mut Vec<usize>,
) {
    let Some(l) = reg.links.get_mut(link) else {
        return;
    };
    let log = l.log();
    if l.failures > 0 {
        ngx_log_error!(
            NGX_LOG_NOTICE,
            log,
            "ticket: redis {} is available again",
            l.url.redacted()
        );
    }
    l.failures = 0;
    l.logged_why.clear();
    if info.appendonly == Appendonly::No && reg.warned.insert(link) {
        ngx_log_error!(
            NGX_LOG_WARN,
            log,
            "ticket: redis {} writes no append-only file (appendonly no): a restart \
             loses the latest counts; counters are fenced past them by \"fence=\"",
            l.url.redacted()
        );
    }
    let run_id = info.run_id.clone();
    let shas = info.scripts;
    if let Some(server) = reg.servers.get_mut(link) {
        *server = Some(info);
    }
    let zones = reg.zones_on(link);
    for &zone in &zones {
        let zone_conf = zone_at(zone);
        set_link_slot(zone_conf, true);
        let (Some(redis), Some(shared)) = (redis_of(zone_conf), zone_conf.shared()) else {
            continue;
        };
        let known = shared.header().remote.run_id.get();
        let known_fence = shared
            .header()
            .remote
            .fence_epoch
            .load(core::sync::atomic::Ordering::Relaxed);
        let id = reg.id();
        let epoch = reg.epoch_candidate();
        let Some(l) = reg.links.get_mut(link) else {
            return;
        };
        let args = FenceArgs {
            run_id: run_id.as_bytes(),
            known_run: (!known.is_empty()).then_some(known.as_slice()),
            epoch_candidate: &epoch,
            known_fence,
        };
        if scripts::encode_fence(l.buffer(), &shas.fence, redis.keys.zone_meta(), &args).is_ok() {
            l.expect(id);
            reg.sent.insert(id, Sent::Fence { zone });
        }
        leases.push(zone);
    }
    // Requests that waited for the connection go now.
    let waiting: Vec<QueueKey> = reg
        .queues
        .iter()
        .filter(|(k, q)| {
            zones.contains(&k.zone)
                && q.requests.in_flight().is_empty()
                && q.requests.queued_len() > 0
        })
        .map(|(k, _)| k.clone())
        .collect();
    for key in waiting {
        send_batch(reg, &key);
    }
    let (ready, others): (Vec<AdminCall>, Vec<AdminCall>) = core::mem::take(&mut reg.admin_waiting)
        .into_iter()
        .partition(|call| call.link == link);
    reg.admin_waiting = others;
    for call in ready {
        let handle = call.waiter;
        if let Err(answer) = send_admin(reg, call) {
            wakes.push((handle, answer));
        }
    }
}

fn on_failed(
    reg: &mut Registry,
    link: usize,
    lost: Vec<u64>,
    why: String,
    wakes: &mut Wakes,
    leases: &mut Vec<usize>,
) {
    if let Some(l) = reg.links.get_mut(link) {
        let refused = core::mem::take(&mut l.refused);
        if l.failures == 1 || (refused && l.logged_why != why) {
            let log = l.log();
            ngx_log_error!(
                NGX_LOG_ERR,
                log,
                "ticket: redis {} is unavailable: {why}",
                l.url.redacted()
            );
            l.logged_why.clone_from(&why);
        }
    }
    if let Some(server) = reg.servers.get_mut(link) {
        *server = None;
    }
    let zones = reg.zones_on(link);
    for &zone in &zones {
        let zone_conf = zone_at(zone);
        set_link_slot(zone_conf, false);
        if let Some(shared) = zone_conf.shared() {
            let remote = &shared.header().remote;
            let counter = if why.contains("no reply within") {
                &remote.timeouts
            } else {
                &remote.errors
            };
            counter.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        }
        leases.push(zone);
    }
    for id in lost {
        match reg.sent.remove(&id) {
            Some(Sent::Take { key, .. }) | Some(Sent::Wait(key)) => {
                if let Some(queue) = reg.queues.get_mut(&key) {
                    for pending in queue.requests.in_flight() {
                        if let Some(waiter) = queue.waiters.remove(&pending.id) {
                            wakes.push((waiter, Answer::Unavailable));
                        }
                    }
                    for (id, _) in queue.held.drain(..) {
                        if let Some(waiter) = queue.waiters.remove(&id) {
                            wakes.push((waiter, Answer::Unavailable));
                        }
                    }
                    queue.requests.finish();
                }
            }
            Some(Sent::Lease { zone, key, .. }) => {
                reg.refilling.remove(&(zone, key));
            }
            Some(Sent::Admin {
                waiter: Some(waiter),
                ..
            }) => wakes.push((waiter, Answer::Unavailable)),
            _ => {}
        }
    }
    let (failed, others): (Vec<AdminCall>, Vec<AdminCall>) =
        core::mem::take(&mut reg.admin_waiting)
            .into_iter()
            .partition(|call| call.link == link);
    reg.admin_waiting = others;
    wakes.extend(
        failed
            .into_iter()
            .map(|call| (call.waiter, Answer::Unavailable)),
    );
    // Requests still waiting for these zones fail fast too: no queue grows
    // while the authority is away.
    for (key, queue) in reg.queues.iter_mut() {
        if !zones.contains(&key.zone) {
            continue;
        }
        let failed: Vec<u64> = queue.requests.fail_all().collect();
        for id in failed {
            if let Some(waiter) = queue.waiters.remove(&id) {
                wakes.push((waiter, Answer::Unavailable));
            }
        }
    }
    reg.queues
        .retain(|_, q| !q.requests.is_idle() || !q.waiters.is_empty());
}

/// Whether requests of `zone` can go to Redis now (or soon: connecting).
pub fn available(zone: &ZoneConf) -> bool {
    let Some(reg) = registry() else {
        return false;
    };
    let id = ptr::from_ref(zone) as usize;
    reg.link_of(id)
        .and_then(|link| reg.links.get(link))
        .is_some_and(|l| l.state != State::Down)
}

/// Asks for `count` tickets of `key`; the answer comes to `waiter`.
/// Returns the request's id (for [`forget`]) or an immediate answer.
pub fn enqueue(zone: &ZoneConf, key: &QueueKey, count: u64, waiter: Waiter) -> Result<u64, Answer> {
    let reg = registry().ok_or(Answer::Unavailable)?;
    let link = reg.link_of(key.zone).ok_or(Answer::Unavailable)?;
    if reg.links.get(link).is_none_or(|l| l.state == State::Down) {
        return Err(Answer::Unavailable);
    }
    let _ = zone;
    let id = reg.id();
    let queue = reg.queues.entry(key.clone()).or_insert_with(|| Queue {
        requests: KeyQueue::new(),
        waiters: IdMap::default(),
        held: Vec::new(),
    });
    match queue.requests.push(id, count) {
        Push::SendNow => {
            queue.waiters.insert(id, waiter);
            send_later(reg, key.clone());
        }
        Push::Queued => {
            queue.waiters.insert(id, waiter);
        }
        Push::Full | Push::BadCount => return Err(Answer::Unavailable),
    }
    Ok(id)
}

/// Sends the counter's next batch on the event loop's next turn, after one
/// more poll (which does not sleep): the requests this turn and that poll
/// bring go with it, so a busy counter takes fewer, larger batches (Redis's
/// cost and the worker's system calls are mostly per batch), at the price of
/// one turn. Measured here, that turn pays for itself even at one
/// connection.
fn send_later(reg: &mut Registry, key: QueueKey) {
    reg.due.push(key);
    if let Some(task) = reg.send_task.as_mut() {
        task.post_next_turn();
    }
}

unsafe extern "C" fn on_send_due(_ev: *mut ngx_event_t) {
    let mut failed = Vec::new();
    if let Some(reg) = registry() {
        let mut due = core::mem::take(&mut reg.due);
        for key in &due {
            send_batch(reg, key);
        }
        // keep the vector's room for the next turn, unless more came due
        // meanwhile (the task is posted again for those)
        due.clear();
        if reg.due.is_empty() {
            reg.due = due;
        }
        for (link, l) in reg.links.iter_mut().enumerate() {
            if l.has_unsent() {
                if let Err(why) = l.flush() {
                    failed.push((link, l.fail(why)));
                }
            }
        }
    }
    // a failure while flushing: its requests are answered 503 now
    for (link, event) in failed {
        let mut wakes = Wakes::new();
        dispatch_later(link, event, &mut wakes);
        deliver(wakes);
    }
}

/// nginx ended a waiting request: its tickets, if granted, are a gap.
pub fn forget(key: &QueueKey, id: u64) {
    if let Some(reg) = registry() {
        if let Some(queue) = reg.queues.get_mut(key) {
            queue.requests.forget(id);
            queue.waiters.remove(&id);
            queue.held.retain(|(held, _)| *held != id);
        }
    }
}

fn now_seconds() -> u64 {
    crate::process::unix_msec() / 1000
}

/// What this node knows of a counter, for the never-lower guard.
struct Known {
    epoch: Vec<u8>,
    generation: Option<u64>,
    floor: u64,
    /// The counter's local life, if it lives here.
    life: Option<Gen>,
}

impl Known {
    /// What a command sent now must remember.
    fn seen(&self) -> Seen {
        Seen {
            local: self.life,
            remote: self.generation.unwrap_or(0),
        }
    }
}

fn known(zone: &ZoneConf, key: Option<&[u8]>, lease: bool) -> Known {
    let Some(shared) = zone.shared() else {
        return Known {
            epoch: Vec::new(),
            generation: None,
            floor: 0,
            life: None,
        };
    };
    let epoch = shared.header().remote.epoch.get();
    let (generation, floor, lost, life) = match local_counter(&shared, key) {
        Some((counter, life)) => {
            let view = counter.view();
            let floor = if lease {
                view.pending
                    .map_or(view.reserved, |(_, hi)| hi.max(view.reserved))
            } else {
                view.issued
            };
            (
                (view.remote_gen != 0).then_some(view.remote_gen),
                floor,
                view.flags & FLAG_EPOCH_LOST != 0,
                Some(life),
            )
        }
        None => (None, 0, false, None),
    };
    Known {
        epoch: if lost { LOST_EPOCH.to_vec() } else { epoch },
        generation,
        floor,
        life,
    }
}

/// Notes the zone's epoch Redis reported. Another one than this node knew
/// means Redis lost the zone's metadata (see `core::redis::known`): every
/// counter forgets its generation, and its next take has Redis check it
/// against what this nginx handed out. Logged once per node.
fn adopt_epoch(zone: &ZoneConf, epoch: &[u8], log: *mut ngx_log_t) {
    let (Some(shared), Some(lock)) = (zone.shared(), zone.memory.as_ref()) else {
        return;
    };
    let remote = &shared.header().remote;
    lock.lock();
    let known = remote.epoch.get();
    let lost = known != epoch && !known.is_empty();
    if lost {
        shared.default_counter().lose_remote_epoch();
        for (_, found) in shared.keys() {
            found.counter.lose_remote_epoch();
        }
    }
    if known != epoch {
        remote.epoch.set(epoch);
    }
    lock.unlock();
    if lost {
        ngx_log_error!(
            NGX_LOG_ERR,
            log,
            "ticket zone \"{}\": redis lost the zone's data (a new epoch): every counter \
             is checked against the last ticket this nginx handed out at its next take",
            zone.name
        );
    }
}

fn take_args<'a>(
    redis: &RedisConf,
    idle_ms: u64,
    limit: &TakeLimit,
    epoch: &'a [u8],
    known: &'a Known,
    partial: bool,
) -> TakeArgs<'a> {
    TakeArgs {
        limit: limit.limit,
        fence: redis.args.fence,
        idle_ms,
        now: now_seconds(),
        epoch_candidate: epoch,
        known_epoch: (!known.epoch.is_empty()).then_some(known.epoch.as_slice()),
        known_generation: known.generation,
        floor: known.floor,
        partial,
        reserve: redis.args.reserve,
    }
}

fn counter_keys(redis: &RedisConf, key: Option<&[u8]>) -> Option<CounterKeys> {
    redis.keys.counter(key).ok()
}

/// Sends the next batch of a queue, if its link is ready.
fn send_batch(reg: &mut Registry, key: &QueueKey) {
    let zone = key.zone();
    let Some(redis) = redis_of(zone) else {
        return;
    };
    let Some(link) = reg.link_of(key.zone) else {
        return;
    };
    let Some(shas) = reg
        .servers
        .get(link)
        .and_then(|s| s.as_ref())
        .map(|s| s.scripts)
    else {
        return; // not ready: sent once the handshake is done
    };
    let Some(keys) = counter_keys(redis, key.key.as_deref()) else {
        return;
    };
    let known = known(zone, key.key.as_deref(), false);
    let seen = known.seen();
    let limit = TakeLimit::new(key.start, key.max);
    let epoch = reg.epoch_candidate();
    let idle = key.key.as_ref().and(zone.idle).unwrap_or(0);
    let take_id = reg.id();
    let wait_id = reg.id();
    let Some(queue) = reg.queues.get_mut(key) else {
        return;
    };
    let Some(batch) = queue.requests.start_batch() else {
        // its requests ended while the batch waited to go
        if queue.requests.is_idle() && queue.waiters.is_empty() && queue.held.is_empty() {
            reg.queues.remove(key);
        }
        return;
    };
    let counts: Vec<u64> = batch.iter().map(|p| p.count).collect();
    let Some(l) = reg.links.get_mut(link) else {
        return;
    };
    let args = take_args(redis, idle, &limit, &epoch, &known, false);
    if scripts::encode_take(l.buffer(), &shas.take, &keys, &args, counts.iter().copied()).is_err() {
        // nothing was encoded: the batch gets no answer from Redis
        let mut wakes = Wakes::new();
        for pending in queue.requests.in_flight() {
            if let Some(waiter) = queue.waiters.remove(&pending.id) {
                wakes.push((waiter, Answer::Unavailable));
            }
        }
        queue.requests.finish();
        deliver(wakes);
        return;
    }
    l.expect(take_id);
    reg.sent.insert(
        take_id,
        Sent::Take {
            key: key.clone(),
            seen,
        },
    );
    let replicas = redis.args.replicas;
    if replicas > 0 {
        scripts::encode_wait(l.buffer(), u64::from(replicas), redis.args.timeout_ms);
        l.expect(wait_id);
        reg.sent.insert(wait_id, Sent::Wait(key.clone()));
    }
    if let Some(shared) = zone.shared() {
        let remote = &shared.header().remote;
        remote
            .batches
            .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        remote
            .tickets
            .fetch_add(counts.iter().sum(), core::sync::atomic::Ordering::Relaxed);
    }
}

/// Records what Redis said of a counter: its generation, and (strict mode)
/// the highest count handed out here. A reply about a life the counter has
/// left since the command was sent (retired here, or a later generation
/// learnt from another reply) is not noted. Returns whether it was.
fn note_counter(
    zone: &ZoneConf,
    key: Option<&[u8]>,
    reply: &TakeReply,
    seen: Seen,
    floor: Option<u64>,
    log: *mut ngx_log_t,
) -> bool {
    let (Some(shared), Some(lock)) = (zone.shared(), zone.memory.as_ref()) else {
        return false;
    };
    adopt_epoch(zone, &reply.epoch, log);
    let remote = &shared.header().remote;
    if reply.repaired {
        remote
            .repairs
            .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    }
    if reply.fenced {
        remote
            .fences
            .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    }
    let Some((counter, gen)) = local_counter(&shared, key) else {
        return false;
    };
    if seen.local.is_some_and(|local| local != gen) {
        return false; // retired here meanwhile: this is another life
    }
    // Under the lock: sibling workers note replies of the same counter.
    lock.lock();
    let view = counter.view();
    if view.flags & FLAG_EPOCH_LOST != 0 && remote.epoch.get() == reply.epoch {
        // Redis answered for this counter in the new epoch: checked.
        counter.clear_flags(FLAG_EPOCH_LOST);
    }
    let stale = is_stale(view.remote_gen, seen.remote, reply.generation);
    if !stale {
        let new_life = view.remote_gen != 0 && reply.generation != view.remote_gen;
        if let Some(floor) = floor {
            if new_life {
                counter.set_issued(floor);
            } else {
                counter.raise_issued(floor);
            }
        }
        counter.set_remote_gen(reply.generation);
    }
    lock.unlock();
    !stale
}

fn on_reply(
    reg: &mut Registry,
    link: usize,
    sent: Sent,
    value: Value,
    wakes: &mut Wakes,
    leases: &mut Vec<usize>,
) {
    let log = reg.links.get_mut(link).map_or(ptr::null_mut(), |l| l.log());
    match sent {
        Sent::Fence { zone } => on_fence(reg, link, zone, value, log),
        Sent::Take { key, seen } => on_take(reg, link, &key, seen, value, wakes, log),
        Sent::Wait(key) => on_wait(reg, &key, value, wakes, log),
        Sent::Lease {
            zone,
            key,
            seen,
            limit,
            asked,
        } => {
            reg.refilling.remove(&(zone, key.clone()));
            on_lease(
                reg,
                link,
                zone_at(zone),
                key.as_deref(),
                seen,
                &limit,
                asked,
                value,
                log,
            );
            leases.push(zone);
        }
        Sent::Admin {
            zone,
            key,
            op,
            waiter,
        } => {
            let answer = on_admin(reg, link, zone_at(zone), key.as_deref(), op, value, log);
            if let Some(waiter) = waiter {
                wakes.push((waiter, answer));
            }
        }
    }
}

fn on_fence(reg: &mut Registry, link: usize, zone: usize, value: Value, log: *mut ngx_log_t) {
    let zone = zone_at(zone);
    let reply = match FenceReply::parse(value) {
        Ok(reply) => reply,
        Err(err) => {
            ngx_log_error!(
                NGX_LOG_ERR,
                log,
                "ticket zone \"{}\": fence failed: {err}",
                zone.name
            );
            return;
        }
    };
    let run_id = reg
        .servers
        .get(link)
        .and_then(|s| s.as_ref())
        .map(|s| s.run_id.clone())
        .unwrap_or_default();
    adopt_epoch(zone, &reply.epoch, log);
    if let (Some(shared), Some(lock)) = (zone.shared(), zone.memory.as_ref()) {
        let remote = &shared.header().remote;
        lock.lock();
        remote.run_id.set(run_id.as_bytes());
        remote
            .fence_epoch
            .fetch_max(reply.fence_epoch, core::sync::atomic::Ordering::Relaxed);
        lock.unlock();
        if reply.fenced {
            remote
                .fences
                .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        }
    }
    if reply.fenced {
        ngx_log_error!(
            NGX_LOG_NOTICE,
            log,
            "ticket zone \"{}\": redis restarted or failed over (run_id {run_id}): \
             every counter skips {} numbers once",
            zone.name,
            redis_of(zone).map_or(0, |r| r.args.fence)
        );
    }
}

/// A reply error on a take: the connection may have to go (a script the
/// server lost, a replica that is no master any more).
fn reply_trouble(
    reg: &mut Registry,
    link: usize,
    err: &ReplyError,
    zone: &ZoneConf,
    log: *mut ngx_log_t,
) {
    ngx_log_error!(
        NGX_LOG_ERR,
        log,
        "ticket zone \"{}\": redis refused a take: {err}",
        zone.name
    );
    let reconnect = match err {
        ReplyError::NoScript | ReplyError::Malformed(_) => true,
        ReplyError::Server(message) => {
            message.starts_with("READONLY") || message.starts_with("LOADING")
        }
        ReplyError::Script(_) => false,
    };
    if reconnect && !reg.troubled.iter().any(|(bad, _)| *bad == link) {
        // Failed (requests in flight answered 503, a reconnect armed) once
        // the replies already read are handled: they are real answers.
        reg.troubled
            .push((link, format!("it refused a command: {err}")));
    }
}

fn on_take(
    reg: &mut Registry,
    link: usize,
    key: &QueueKey,
    seen: Seen,
    value: Value,
    wakes: &mut Wakes,
    log: *mut ngx_log_t,
) {
    let zone = key.zone();
    let limit = TakeLimit::new(key.start, key.max);
    let replicas = redis_of(zone).map_or(0, |r| r.args.replicas);
    let counts = reg
        .queues
        .get(key)
        .map(|q| {
            q.requests
                .in_flight()
                .iter()
                .map(|p| p.count)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let parsed = TakeReply::parse(value, &counts).and_then(|reply| {
        let outcomes = reply.outcomes(&limit, counts.iter().copied())?;
        Ok((reply, outcomes))
    });
    let answers: Vec<Answer> = match parsed {
        Ok((reply, outcomes)) => {
            if reply.repaired {
                ngx_log_error!(
                    NGX_LOG_ERR,
                    log,
                    "ticket zone \"{}\": redis counter \"{}\" was below the numbers this \
                     nginx already took from it (redis lost data): raised past them by {}",
                    zone.name,
                    crate::core::status::display_key(key.key.as_deref().unwrap_or(b"")),
                    redis_of(zone).map_or(0, |r| r.args.fence)
                );
            }
            note_counter(
                zone,
                key.key.as_deref(),
                &reply,
                seen,
                reply.issued_after(),
                log,
            );
            outcomes
                .into_iter()
                .map(|o| match o {
                    TakeOutcome::Tickets { first, count } => Answer::Tickets { first, count },
                    TakeOutcome::SoldOut => Answer::SoldOut,
                    TakeOutcome::Exhausted => Answer::Exhausted,
                })
                .collect()
        }
        Err(err) => {
            reply_trouble(reg, link, &err, zone, log);
            Vec::new()
        }
    };
    let Some(queue) = reg.queues.get_mut(key) else {
        return;
    };
    let batch: Vec<(u64, bool)> = queue
        .requests
        .in_flight()
        .iter()
        .map(|p| (p.id, p.live))
        .collect();
    for (i, (id, live)) in batch.into_iter().enumerate() {
        let answer = answers.get(i).copied().unwrap_or(Answer::Unavailable);
        if !live {
            continue;
        }
        if replicas > 0 && answers.get(i).is_some() {
            queue.held.push((id, answer));
        } else if let Some(waiter) = queue.waiters.remove(&id) {
            wakes.push((waiter, answer));
        }
    }
    if queue.requests.finish() {
        send_later(reg, key.clone());
    } else if queue.requests.is_idle() && queue.waiters.is_empty() && queue.held.is_empty() {
        reg.queues.remove(key);
    }
}

fn on_wait(
    reg: &mut Registry,
    key: &QueueKey,
    value: Value,
    wakes: &mut Wakes,
    log: *mut ngx_log_t,
) {
    let zone = key.zone();
    let wanted = redis_of(zone).map_or(0, |r| r.args.replicas);
    let acked = match value {
        Value::Integer(n) => n.max(0) as u64,
        _ => 0,
    };
    let enough = acked >= u64::from(wanted);
    if !enough {
        ngx_log_error!(
            NGX_LOG_ERR,
            log,
            "ticket zone \"{}\": only {acked} of {wanted} redis replicas acknowledged a batch: \
             its tickets are not handed out",
            zone.name
        );
        if let Some(shared) = zone.shared() {
            shared
                .header()
                .remote
                .errors
                .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        }
    }
    let Some(queue) = reg.queues.get_mut(key) else {
        return;
    };
    for (id, answer) in queue.held.drain(..) {
        if let Some(waiter) = queue.waiters.remove(&id) {
            wakes.push((waiter, if enough { answer } else { Answer::Unavailable }));
        }
    }
    if queue.requests.is_idle() && queue.waiters.is_empty() {
        reg.queues.remove(key);
    }
}

// ---------------------------------------------------------------- leases

/// The list a request waiting for its zone's next lease parks on.
pub fn lease_waiters(zone: &ZoneConf) -> Option<&'static mut WaitList> {
    let reg = registry()?;
    let list = reg
        .lease_waiters
        .entry(ptr::from_ref(zone) as usize)
        .or_insert_with(WaitList::new);
    Some(&mut **list)
}

fn wake_lease_waiters(zone: usize) {
    let list: *mut WaitList = match registry().and_then(|r| r.lease_waiters.get_mut(&zone)) {
        Some(list) => &mut **list,
        None => return,
    };
    // SAFETY: the list is boxed in the registry and stays while the worker
    // runs; no borrow of the registry is held across the wakes.
    unsafe { (*list).wake_all(Wake::Ready) };
}

/// Asks for the next lease of a counter (once at a time per worker).
pub fn refill(zone: &ZoneConf, key: Option<&[u8]>, start: u64, max: Option<u64>) {
    let Some(reg) = registry() else {
        return;
    };
    let Some(redis) = redis_of(zone) else {
        return;
    };
    let Some(lease) = redis.lease() else {
        return;
    };
    let zone_id = ptr::from_ref(zone) as usize;
    let Some(link) = reg.link_of(zone_id) else {
        return;
    };
    let Some(shas) = reg
        .servers
        .get(link)
        .and_then(|s| s.as_ref())
        .map(|s| s.scripts)
    else {
        return;
    };
    if !reg.refilling.insert((zone_id, key.map(<[u8]>::to_vec))) {
        return;
    }
    let (Some(shared), Some(keys)) = (zone.shared(), counter_keys(redis, key)) else {
        return;
    };
    let known = known(zone, key, true);
    let seen = known.seen();
    let limit = TakeLimit::new(start, max);
    let epoch = reg.epoch_candidate();
    let id = reg.id();
    let idle = key.and(zone.idle).unwrap_or(0);
    let Some(l) = reg.links.get_mut(link) else {
        return;
    };
    let args = take_args(redis, idle, &limit, &epoch, &known, true);
    if scripts::encode_take(l.buffer(), &shas.take, &keys, &args, [lease]).is_err() {
        reg.refilling.remove(&(zone_id, key.map(<[u8]>::to_vec)));
        return;
    }
    l.expect(id);
    reg.sent.insert(
        id,
        Sent::Lease {
            zone: zone_id,
            key: key.map(<[u8]>::to_vec),
            seen,
            limit,
            asked: lease,
        },
    );
    shared
        .header()
        .remote
        .batches
        .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    let event = l.flush().err().map(|why| l.fail(why));
    if let Some(event) = event {
        let mut wakes = Wakes::new();
        dispatch_later(link, event, &mut wakes);
        deliver(wakes);
    }
}

#[allow(clippy::too_many_arguments)]
fn on_lease(
    reg: &mut Registry,
    link: usize,
    zone: &ZoneConf,
    key: Option<&[u8]>,
    seen: Seen,
    limit: &TakeLimit,
    asked: u64,
    value: Value,
    log: *mut ngx_log_t,
) {
    let reply = match TakeReply::parse(value, &[asked]) {
        Ok(reply) => reply,
        Err(err) => {
            reply_trouble(reg, link, &err, zone, log);
            return;
        }
    };
    let grant = match reply.outcomes(limit, [asked]) {
        Ok(outcomes) => match outcomes.first() {
            Some(TakeOutcome::Tickets { count, .. }) => *count,
            _ => 0,
        },
        Err(err) => {
            reply_trouble(reg, link, &err, zone, log);
            return;
        }
    };
    adopt_epoch(zone, &reply.epoch, log);
    if let Some(shared) = zone.shared() {
        shared
            .header()
            .remote
            .tickets
            .fetch_add(grant, core::sync::atomic::Ordering::Relaxed);
    }
    let (Some(shared), Some(lock)) = (zone.shared(), zone.memory.as_ref()) else {
        return;
    };
    let Some((counter, now_gen)) = local_counter(&shared, key) else {
        return;
    };
    if seen.local != Some(now_gen) {
        return; // retired meanwhile: the lease is a gap
    }
    if grant == 0 {
        if note_counter(zone, key, &reply, seen, None, log) {
            counter.add_flags(FLAG_DRAINED);
        }
        return;
    }
    let lo = reply.issued_before;
    let hi = lo.saturating_add(grant);
    lock.lock();
    // Placed before the grant's generation is noted: that tells a new life
    // from a sibling worker's lease that overtook this one.
    let view = counter.view();
    match place_lease(&view, seen.remote, reply.generation, lo) {
        LeasePlace::Add => {
            counter.add_block(lo, hi);
        }
        LeasePlace::Replace => counter.replace_block(lo, hi),
        LeasePlace::Drop => {}
    }
    if !is_stale(view.remote_gen, seen.remote, reply.generation) {
        counter.set_remote_gen(reply.generation);
    }
    lock.unlock();
    note_counter(zone, key, &reply, seen, None, log);
}

// ---------------------------------------------------------------- admin

/// Sends an admin call; the answer comes to `waiter`.
pub fn admin(
    zone: &ZoneConf,
    key: Option<&[u8]>,
    op: AdminOp,
    waiter: Waiter,
) -> Result<(), Answer> {
    let reg = registry().ok_or(Answer::Unavailable)?;
    redis_of(zone).ok_or(Answer::Unavailable)?;
    let zone_id = ptr::from_ref(zone) as usize;
    let link = reg.link_of(zone_id).ok_or(Answer::Unavailable)?;
    let call = AdminCall {
        link,
        zone: zone_id,
        key: key.map(<[u8]>::to_vec),
        op,
        waiter,
    };
    match reg.links.get(link).map(|l| l.state) {
        None | Some(State::Down) => return Err(Answer::Unavailable),
        Some(State::Ready) => {}
        // as requests for tickets do, it waits for the handshake
        Some(State::Connecting | State::Handshaking) => {
            reg.admin_waiting.push(call);
            return Ok(());
        }
    }
    send_admin(reg, call)?;
    let l = reg.links.get_mut(link).ok_or(Answer::Unavailable)?;
    if let Err(why) = l.flush() {
        let event = l.fail(why);
        let mut wakes = Wakes::new();
        dispatch_later(link, event, &mut wakes);
        deliver(wakes);
    }
    Ok(())
}

/// Encodes an admin call on its ready link (the caller flushes it).
fn send_admin(reg: &mut Registry, call: AdminCall) -> Result<(), Answer> {
    let AdminCall {
        link,
        zone: zone_id,
        key,
        op,
        waiter,
    } = call;
    let zone = zone_at(zone_id);
    let redis = redis_of(zone).ok_or(Answer::Unavailable)?;
    let shas: ScriptShas = reg
        .servers
        .get(link)
        .and_then(|s| s.as_ref())
        .map(|s| s.scripts)
        .ok_or(Answer::Unavailable)?;
    let keys = counter_keys(redis, key.as_deref()).ok_or(Answer::Unavailable)?;
    let epoch = reg.epoch_candidate();
    let id = reg.id();
    let l = reg.links.get_mut(link).ok_or(Answer::Unavailable)?;
    let out = l.buffer();
    match op {
        AdminOp::Get => scripts::encode_admin_get(out, &shas.admin_get, &keys),
        AdminOp::Set(new_count) => {
            let args = AdminSetArgs {
                new_count,
                idle_ms: key.as_ref().and(zone.idle).unwrap_or(0),
                now: now_seconds(),
                epoch_candidate: &epoch,
            };
            scripts::encode_admin_set(out, &shas.admin_set, &keys, &args)
                .map_err(|_| Answer::Unavailable)?;
        }
        AdminOp::Delete => scripts::encode_admin_del(out, &shas.admin_del, &keys),
    }
    l.expect(id);
    reg.sent.insert(
        id,
        Sent::Admin {
            zone: zone_id,
            key,
            op,
            waiter: Some(waiter),
        },
    );
    Ok(())
}

/// A waiting admin request is gone: its call still runs, nobody is told.
pub fn forget_admin(waiter: Handle) {
    if let Some(reg) = registry() {
        reg.admin_waiting
            .retain(|call| call.waiter.handle != waiter);
        for sent in reg.sent.values_mut() {
            if let Sent::Admin { waiter: w, .. } = sent {
                if w.is_some_and(|w| w.handle == waiter) {
                    *w = None;
                }
            }
        }
    }
}

fn on_admin(
    reg: &mut Registry,
    link: usize,
    zone: &ZoneConf,
    key: Option<&[u8]>,
    op: AdminOp,
    value: Value,
    log: *mut ngx_log_t,
) -> Answer {
    let shared = zone.shared();
    let local = shared.as_ref().and_then(|s| local_counter(s, key));
    match op {
        AdminOp::Get => match AdminGetReply::parse(value) {
            Ok(reply) => Answer::Counter {
                exists: reply.exists,
                issued: reply.issued,
                used: reply.last_used,
            },
            Err(err) => {
                reply_trouble(reg, link, &err, zone, log);
                Answer::Unavailable
            }
        },
        AdminOp::Set(new_count) => match AdminSetReply::parse(value) {
            Ok(AdminSetReply::WouldReissue { .. }) => Answer::WouldReissue,
            Ok(AdminSetReply::Set { generation, .. }) => {
                if let (Some((counter, _)), Some(lock)) = (local, zone.memory.as_ref()) {
                    // this node's own lease below the new next is dropped;
                    // in lease mode the count moves up to it too, so that a
                    // lease Redis granted before the move and answered
                    // after it (a sibling worker's) is dropped as stale
                    // rather than served below the new next
                    lock.lock();
                    counter.drop_lease();
                    if redis_of(zone).and_then(RedisConf::lease).is_some() {
                        counter.raise_issued(new_count);
                        counter.cover_issued();
                    }
                    lock.unlock();
                    counter.set_remote_gen(generation);
                }
                Answer::Counter {
                    exists: true,
                    issued: Some(new_count),
                    used: Some(now_seconds()),
                }
            }
            Err(err) => {
                reply_trouble(reg, link, &err, zone, log);
                Answer::Unavailable
            }
        },
        AdminOp::Delete => match scripts::parse_admin_del(value) {
            Ok(existed) => {
                if let (Some(shared), Some(lock), Some(key)) = (shared, zone.memory.as_ref(), key) {
                    shared.retire(key, None, lock);
                }
                Answer::Counter {
                    exists: existed,
                    issued: None,
                    used: None,
                }
            }
            Err(err) => {
                reply_trouble(reg, link, &err, zone, log);
                Answer::Unavailable
            }
        },
    }
}

/// A Redis zone as the status page shows it.
pub struct Report {
    /// The URL without its password.
    pub authority: String,
    pub mode: &'static str,
    /// Workers whose connection is up, of those the zone knows.
    pub connected: u64,
    pub workers: u64,
}

pub fn report(zone: &ZoneConf) -> Option<Report> {
    let redis = redis_of(zone)?;
    let shared = zone.shared()?;
    let (mut connected, mut workers) = (0, 0);
    for slot in &shared.header().remote.links {
        let value = slot.load(core::sync::atomic::Ordering::Relaxed);
        if value == 0 {
            continue;
        }
        let pid = (value >> 1) as i32;
        // SAFETY: signal 0 only asks whether the process exists.
        let alive = unsafe { nginx_sys::kill(pid, 0) } == 0;
        if alive {
            workers += 1;
            connected += value & 1;
        }
    }
    Some(Report {
        authority: redis.args.url.redacted(),
        mode: if redis.lease().is_some() {
            "lease"
        } else {
            "strict"
        },
        connected,
        workers,
    })
}
