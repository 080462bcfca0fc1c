//! `ticket_counter`: the content handler that answers with tickets.

use core::ffi::c_void;

use nginx_sys::{
    ngx_http_complex_value, ngx_http_request_t, ngx_int_t, ngx_msec_t, ngx_pcalloc, ngx_str_t,
    ngx_uint_t, NGX_HTTP_GET, NGX_HTTP_HEAD, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_POST,
    NGX_LOG_ERR,
};
use ngx::core::{Pool, Status};
use ngx::http::HttpModuleLocationConf;
use ngx::{ngx_log_debug, ngx_log_error};

use crate::conf::{CounterConf, LocConf, ZoneConf};
use crate::core::response::{self, Handout};
use crate::http::{check_method, log, query_arg, refuse, send};
use crate::module::TicketModule;
use crate::redis::{Answer, QueueKey, Waiter};
use crate::take::{self, Outcome, Refusal, Wait};
use crate::wait::{self, AtShutdown, WaitKind, Wake};

/// How long a request waits for its durable counter's next reservation.
const RESERVATION_WAIT_MSEC: u64 = 5000;

/// The `ticket_counter` content handler.
pub extern "C" fn ticket_counter_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls content handlers with a live request.
    let r = unsafe { &mut *r };
    let allowed = (NGX_HTTP_GET | NGX_HTTP_HEAD | NGX_HTTP_POST) as ngx_uint_t;
    if let Some(rc) = check_method(r, allowed, "GET, HEAD, POST") {
        return rc;
    }
    let Some(loc) = TicketModule::location_conf(r) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let loc: &LocConf = loc;
    let Some(conf) = loc.counter.as_ref() else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    // nginx sets `header_only` only in the header filter: test the method.
    if crate::http::is_head(r) {
        // HEAD takes no ticket.
        return send(r, 200, response::content_type(conf.format), b"", None);
    }

    // `?count=K` on a location with `batch=`.
    let mut batch = None;
    if let Some(limit) = conf.batch {
        if let Some(value) = query_arg(r, "count") {
            match response::parse_count(value, limit) {
                Some(count) => batch = Some(count),
                None => return refuse(r, Refusal::BadCount),
            }
        }
    }
    let key = match request_key(r, conf) {
        Ok(key) => key,
        Err(refusal) => return refuse(r, refusal),
    };
    let request = TakeRequest {
        conf,
        key,
        batch,
        deadline: crate::process::now_msec() + RESERVATION_WAIT_MSEC,
        lease_deadline: None,
        level: loc.log_level,
    };
    answer(r, request)
}

/// The key of this request's counter, evaluated once (its bytes live in the
/// request's pool). `None`: the zone's default counter.
pub fn request_key(
    r: &mut ngx_http_request_t,
    conf: &CounterConf,
) -> Result<Option<&'static [u8]>, Refusal> {
    if conf.key.is_null() {
        return Ok(None);
    }
    let mut key = ngx_str_t::empty();
    // SAFETY: `conf.key` was compiled for this http block; `key` receives a
    // string from the request pool.
    if unsafe { ngx_http_complex_value(r, conf.key, &mut key) } != Status::NGX_OK.0 {
        return Err(Refusal::Failed);
    }
    let bytes: &'static [u8] = if key.len == 0 {
        &[]
    } else {
        // SAFETY: the value lives in the request's pool, which outlives
        // every use of it (the request and its parked state).
        unsafe { core::slice::from_raw_parts(key.data, key.len) }
    };
    take::check_key(bytes).map(Some)
}

/// Everything a take needs, kept while the request waits.
#[derive(Clone, Copy)]
struct TakeRequest {
    conf: *const CounterConf,
    key: Option<&'static [u8]>,
    batch: Option<u64>,
    /// When to give up waiting (nginx's msec clock).
    deadline: u64,
    /// The same for a lease, set when the request first waits for one.
    lease_deadline: Option<u64>,
    level: ngx_uint_t,
}

impl TakeRequest {
    fn conf(&self) -> &CounterConf {
        // SAFETY: a location's conf lives as long as the cycle, which
        // outlives its requests.
        unsafe { &*self.conf }
    }
}

/// Takes the tickets and answers, or parks the request until it can.
fn answer(r: &mut ngx_http_request_t, request: TakeRequest) -> ngx_int_t {
    let conf = request.conf();
    let Some(zone) = conf.zone() else {
        return refuse(r, Refusal::Failed);
    };
    let count = request.batch.unwrap_or(1);
    match take::take(zone, conf, request.key, count, log(r), request.level) {
        Outcome::Tickets { first, count } => {
            ngx_log_debug!(
                log(r),
                "ticket: issued {first} (+{count}) in \"{}\"",
                zone.name
            );
            let handout = match request.batch {
                Some(_) => Handout::Range { first, count },
                None => Handout::One(first),
            };
            let body = response::render(handout, conf.format, conf.width);
            send(
                r,
                200,
                response::content_type(conf.format),
                body.as_bytes(),
                None,
            )
        }
        Outcome::Refused(refusal) => refuse(r, refusal),
        Outcome::Wait(Wait::Reservation) => park_for_reservation(r, request),
        Outcome::Wait(Wait::Authority) => ask_authority(r, request, zone),
        Outcome::Wait(Wait::Lease) => wait_for_lease(r, request, zone),
        Outcome::Wait(Wait::Exists) => ask_exists(r, request, zone),
    }
}

/// `create=off` on a Redis zone: a key this nginx does not know is served
/// if Redis has it (an admin made it, perhaps on another node).
struct Checking {
    request: TakeRequest,
    handle: Option<wait::Handle>,
    answer: Option<Answer>,
}

static EXISTS: WaitKind = WaitKind {
    resume: resume_exists,
    gone: Some(exists_gone),
    at_shutdown: AtShutdown::Wait,
};

fn ask_exists(r: &mut ngx_http_request_t, request: TakeRequest, zone: &ZoneConf) -> ngx_int_t {
    if !crate::redis::available(zone) {
        return refuse(r, Refusal::Unavailable);
    }
    // SAFETY: request-pool memory, as long as the request can be resumed.
    let checking =
        unsafe { ngx_pcalloc(r.pool, core::mem::size_of::<Checking>()) }.cast::<Checking>();
    if checking.is_null() {
        return refuse(r, Refusal::Failed);
    }
    // SAFETY: freshly allocated, sized and aligned for a Checking.
    unsafe {
        checking.write(Checking {
            request,
            handle: None,
            answer: None,
        })
    };
    let handle = match wait::park_alone(r, authority_deadline(zone), &EXISTS, checking.cast()) {
        Ok(handle) => handle,
        Err(rc) => return rc,
    };
    // SAFETY: as above.
    let slot = unsafe {
        (*checking).handle = Some(handle);
        core::ptr::addr_of_mut!((*checking).answer)
    };
    let asked = crate::redis::admin(
        zone,
        request.key,
        crate::redis::AdminOp::Get,
        Waiter { handle, slot },
    );
    if let Err(answer) = asked {
        // SAFETY: as above.
        unsafe { *slot = Some(answer) };
        wait::wake(handle, Wake::Ready);
    }
    Status::NGX_DONE.into()
}

unsafe fn resume_exists(r: &mut ngx_http_request_t, ctx: *mut c_void, why: Wake) -> ngx_int_t {
    // SAFETY: the Checking written in `ask_exists`.
    let checking = unsafe { &mut *ctx.cast::<Checking>() };
    match why {
        Wake::Ready => {}
        // a shutdown lets the reply come (AtShutdown::Wait): only a deadline
        Wake::Deadline | Wake::Shutdown => return refuse(r, Refusal::Unavailable),
    }
    let request = checking.request;
    let conf = request.conf();
    match checking.answer.take() {
        Some(Answer::Counter { exists: true, .. }) => {
            let (Some(zone), Some(key)) = (conf.zone(), request.key) else {
                return refuse(r, Refusal::Failed);
            };
            match take::adopt_remote_key(zone, key, conf.start) {
                Ok(()) => answer(r, request),
                Err(refusal) => refuse(r, refusal),
            }
        }
        Some(Answer::Counter { exists: false, .. }) => refuse(r, Refusal::NoSuchCounter),
        _ => refuse(r, Refusal::Unavailable),
    }
}

unsafe fn exists_gone(ctx: *mut c_void) {
    // SAFETY: as in `resume_exists`.
    let checking = unsafe { &*ctx.cast::<Checking>() };
    if let Some(handle) = checking.handle {
        crate::redis::forget_admin(handle);
    }
}

/// How long a request waits for Redis: its reply timeout covers the
/// answer; this is the backstop.
fn authority_deadline(zone: &ZoneConf) -> ngx_msec_t {
    let timeout = zone.redis.as_ref().map_or(1000, |r| r.args.timeout_ms);
    (timeout.saturating_mul(2).saturating_add(1000)) as ngx_msec_t
}

/// A request waiting for Redis's answer: lives in the request's pool.
struct Asking {
    request: TakeRequest,
    queue: QueueKey,
    id: u64,
    answer: Option<Answer>,
}

static AUTHORITY: WaitKind = WaitKind {
    resume: resume_authority,
    gone: Some(authority_gone),
    at_shutdown: AtShutdown::Wait,
};

fn ask_authority(r: &mut ngx_http_request_t, request: TakeRequest, zone: &ZoneConf) -> ngx_int_t {
    if !crate::redis::available(zone) {
        return refuse(r, Refusal::Unavailable);
    }
    let conf = request.conf();
    let queue = QueueKey::new(zone, request.key, conf.start, conf.max);
    // The queue's key is on the heap: `allocate` drops the Asking with the
    // pool, after the wait's own cleanup (request cleanups run first).
    // SAFETY: the request's pool outlives every use of the Asking.
    let asking = unsafe { Pool::from_ngx_pool(r.pool) }.allocate(Asking {
        request,
        queue: queue.clone(),
        id: 0,
        answer: None,
    });
    if asking.is_null() {
        return refuse(r, Refusal::Failed);
    }
    let handle = match wait::park_alone(r, authority_deadline(zone), &AUTHORITY, asking.cast()) {
        Ok(handle) => handle,
        Err(rc) => return rc,
    };
    // SAFETY: as above; the slot stays until the request is resumed or gone.
    let slot = unsafe { core::ptr::addr_of_mut!((*asking).answer) };
    let count = request.batch.unwrap_or(1);
    match crate::redis::enqueue(zone, &queue, count, Waiter { handle, slot }) {
        // SAFETY: as above.
        Ok(id) => unsafe { (*asking).id = id },
        Err(answer) => {
            // SAFETY: as above.
            unsafe { *slot = Some(answer) };
            wait::wake(handle, Wake::Ready);
        }
    }
    Status::NGX_DONE.into()
}

unsafe fn resume_authority(r: &mut ngx_http_request_t, ctx: *mut c_void, why: Wake) -> ngx_int_t {
    // SAFETY: the Asking written in `ask_authority`.
    let asking = unsafe { &mut *ctx.cast::<Asking>() };
    let conf = asking.request.conf();
    match why {
        Wake::Ready => {}
        // a shutdown lets the reply come (AtShutdown::Wait): only a deadline
        Wake::Deadline | Wake::Shutdown => {
            crate::redis::forget(&asking.queue, asking.id);
            return refuse(r, Refusal::Unavailable);
        }
    }
    match asking.answer.take() {
        Some(Answer::Tickets { first, count }) => {
            ngx_log_debug!(log(r), "ticket: issued {first} (+{count}) by redis");
            respond(r, conf, asking.request.batch, first, count)
        }
        Some(Answer::SoldOut) => refuse(r, Refusal::SoldOut),
        Some(Answer::Exhausted) => {
            if let Some(zone) = conf.zone() {
                crate::take::log_out_of_numbers(zone, log(r), asking.request.level);
            }
            refuse(r, Refusal::SoldOut)
        }
        _ => refuse(r, Refusal::Unavailable),
    }
}

unsafe fn authority_gone(ctx: *mut c_void) {
    // SAFETY: as in `resume_authority`.
    let asking = unsafe { &*ctx.cast::<Asking>() };
    crate::redis::forget(&asking.queue, asking.id);
}

/// A shutdown lets the refill come, as for a Redis reply: a zone this worker
/// keeps (a reload that did not resize it) is the new workers' zone too, so
/// the lease lands where they also take from; a zone a reload replaced
/// answers the woken request "try again" (its counters are closed).
static LEASE: WaitKind = WaitKind {
    resume: resume_lease,
    gone: None,
    at_shutdown: AtShutdown::Wait,
};

fn wait_for_lease(r: &mut ngx_http_request_t, request: TakeRequest, zone: &ZoneConf) -> ngx_int_t {
    if !crate::redis::available(zone) {
        return refuse(r, Refusal::Unavailable);
    }
    let now = crate::process::now_msec();
    let deadline = request
        .lease_deadline
        .unwrap_or(now + authority_deadline(zone) as u64);
    if now >= deadline {
        return refuse(r, Refusal::Unavailable);
    }
    let Some(list) = crate::redis::lease_waiters(zone) else {
        return refuse(r, Refusal::Failed);
    };
    // SAFETY: request-pool memory, as long as the request can be resumed.
    let ctx =
        unsafe { ngx_pcalloc(r.pool, core::mem::size_of::<TakeRequest>()) }.cast::<TakeRequest>();
    if ctx.is_null() {
        return refuse(r, Refusal::Failed);
    }
    let request = TakeRequest {
        lease_deadline: Some(deadline),
        ..request
    };
    // SAFETY: freshly allocated, properly sized and aligned.
    unsafe { ctx.write(request) };
    match wait::park(
        r,
        list,
        (deadline - now) as ngx_msec_t,
        &LEASE,
        ctx.cast::<c_void>(),
    ) {
        Ok(_) => {
            let conf = request.conf();
            crate::redis::refill(zone, request.key, conf.start, conf.max);
            Status::NGX_DONE.into()
        }
        Err(rc) => rc,
    }
}

unsafe fn resume_lease(r: &mut ngx_http_request_t, ctx: *mut c_void, why: Wake) -> ngx_int_t {
    // SAFETY: the TakeRequest written in `wait_for_lease`.
    let request = unsafe { *ctx.cast::<TakeRequest>() };
    match why {
        Wake::Ready => answer(r, request),
        // a shutdown lets the refill come (AtShutdown::Wait): only a deadline
        Wake::Deadline | Wake::Shutdown => refuse(r, Refusal::Unavailable),
    }
}

/// Answers with tickets, as the location's format asks.
fn respond(
    r: &mut ngx_http_request_t,
    conf: &CounterConf,
    batch: Option<u64>,
    first: u64,
    count: u64,
) -> ngx_int_t {
    let handout = match batch {
        Some(_) => Handout::Range { first, count },
        None => Handout::One(first),
    };
    let body = response::render(handout, conf.format, conf.width);
    send(
        r,
        200,
        response::content_type(conf.format),
        body.as_bytes(),
        None,
    )
}

static RESERVATION: WaitKind = WaitKind {
    resume: resume_reservation,
    gone: None,
    at_shutdown: AtShutdown::Resume,
};

fn park_for_reservation(r: &mut ngx_http_request_t, request: TakeRequest) -> ngx_int_t {
    let now = crate::process::now_msec();
    if now >= request.deadline {
        return not_saved(r);
    }
    let Some(zone) = request.conf().zone() else {
        return refuse(r, Refusal::Failed);
    };
    let Some(list) = crate::durable::waiters(zone) else {
        return refuse(r, Refusal::Failed);
    };
    // SAFETY: the request state lives in the request's pool, as long as the
    // request can be resumed.
    let ctx =
        unsafe { ngx_pcalloc(r.pool, core::mem::size_of::<TakeRequest>()) }.cast::<TakeRequest>();
    if ctx.is_null() {
        return refuse(r, Refusal::Failed);
    }
    // SAFETY: freshly allocated, properly sized and aligned.
    unsafe { ctx.write(request) };
    let wait = (request.deadline - now) as ngx_msec_t;
    match wait::park(r, list, wait, &RESERVATION, ctx.cast::<c_void>()) {
        Ok(_) => {
            ngx_log_debug!(
                log(r),
                "ticket: waiting for a reservation in \"{}\"",
                zone.name
            );
            Status::NGX_DONE.into()
        }
        Err(rc) => rc,
    }
}

fn not_saved(r: &mut ngx_http_request_t) -> ngx_int_t {
    ngx_log_error!(
        NGX_LOG_ERR,
        log(r),
        "ticket: no reservation on disk after {RESERVATION_WAIT_MSEC} ms, request refused"
    );
    refuse(r, Refusal::NotSaved)
}

unsafe fn resume_reservation(r: &mut ngx_http_request_t, ctx: *mut c_void, why: Wake) -> ngx_int_t {
    // SAFETY: the TakeRequest written in `park_for_reservation`.
    let request = unsafe { *ctx.cast::<TakeRequest>() };
    match why {
        Wake::Ready => answer(r, request),
        Wake::Deadline => not_saved(r),
        Wake::Shutdown => refuse(r, Refusal::Replaced),
    }
}
