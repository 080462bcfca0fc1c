//! `ticket_admin`: look at a counter, move it forward, retire it. Answers
//! are JSON. On a durable zone a change is answered only once it is on disk.

use core::ffi::c_void;
use core::ptr;

use nginx_sys::{
    ngx_http_request_t, ngx_int_t, ngx_pcalloc, ngx_uint_t, NGX_HTTP_DELETE, NGX_HTTP_GET,
    NGX_HTTP_HEAD, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_POST,
};
use ngx::core::Status;
use ngx::http::HttpModuleLocationConf;

use crate::conf::{LocConf, ZoneConf};
use crate::core::admin::{self, Action, Method, Problem};
use crate::core::counter::{AdvanceError, Counter, CounterView, Gen};
use crate::core::table::{KeyError, Lookup};
use crate::durable::{Change, ChangeResult};
use crate::http::{check_method, query_arg, send};
use crate::module::TicketModule;
use crate::redis::{AdminOp, Answer, Waiter};
use crate::wait::{self, AtShutdown, WaitKind, WaitList, Wake};

/// How long a change waits to reach the disk.
const SAVE_WAIT_MSEC: nginx_sys::ngx_msec_t = 5000;

const ALLOW: &str = "GET, HEAD, POST, DELETE";

fn answer(r: &mut ngx_http_request_t, status: ngx_uint_t, body: &str) -> ngx_int_t {
    send(r, status, "application/json", body.as_bytes(), None)
}

fn problem(r: &mut ngx_http_request_t, problem: Problem) -> ngx_int_t {
    answer(
        r,
        problem.status as ngx_uint_t,
        &admin::render_problem(&problem),
    )
}

fn method(r: &ngx_http_request_t) -> Method {
    match r.method as u32 {
        NGX_HTTP_POST => Method::Post,
        NGX_HTTP_DELETE => Method::Delete,
        NGX_HTTP_HEAD => Method::Head,
        _ => Method::Get,
    }
}

/// The `ticket_admin` content handler.
pub extern "C" fn ticket_admin_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls content handlers with a live request.
    let r = unsafe { &mut *r };
    let allowed = (NGX_HTTP_GET | NGX_HTTP_HEAD | NGX_HTTP_POST | NGX_HTTP_DELETE) as ngx_uint_t;
    if let Some(rc) = check_method(r, allowed, ALLOW) {
        return rc;
    }
    let Some(loc) = TicketModule::location_conf(r) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let loc: &LocConf = loc;
    let Some(zone) = loc.admin.as_ref().and_then(|a| a.zone()) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let key: Option<&'static [u8]> = query_arg(r, "key").map(|k| {
        // SAFETY: the argument points into the request line, which lives as
        // long as the request (and its parked state).
        unsafe { core::slice::from_raw_parts(k.as_ptr(), k.len()) }
    });
    let next = query_arg(r, "next").map(<[u8]>::to_vec);
    let start = query_arg(r, "start").map(<[u8]>::to_vec);
    let (key, action) = match admin::parse(method(r), key, next.as_deref(), start.as_deref()) {
        Ok(parsed) => parsed,
        Err(bad) => return problem(r, bad),
    };
    if zone.redis.is_some() {
        return ask_redis(r, zone, key, action);
    }
    match action {
        Action::Show => show(r, zone, key),
        Action::MoveTo { next, start } => move_to(r, zone, key, next, start),
        Action::Retire => retire(r, zone, key),
    }
}

/// An admin request on a Redis zone, waiting for Redis: request-pool memory.
struct Asking {
    key: Option<&'static [u8]>,
    action: Action,
    /// What this nginx knows of the counter (its first ticket, `max=`).
    local: CounterView,
    start: u64,
    handle: Option<wait::Handle>,
    answer: Option<Answer>,
}

static ASKING: WaitKind = WaitKind {
    resume: resume_redis,
    gone: Some(redis_gone),
    at_shutdown: AtShutdown::Wait,
};

/// On a Redis zone every answer comes from Redis (a script, so no node can
/// move a counter back).
fn ask_redis(
    r: &mut ngx_http_request_t,
    zone: &ZoneConf,
    key: Option<&'static [u8]>,
    action: Action,
) -> ngx_int_t {
    if !crate::redis::available(zone) {
        return problem(r, admin::UNAVAILABLE);
    }
    let local = zone
        .shared()
        .and_then(|shared| match key {
            None => Some(shared.default_counter().view()),
            Some(key) => match shared.find(key) {
                Lookup::Found(found) => Some(found.counter.view()),
                _ => None,
            },
        })
        .unwrap_or_default();
    let (op, start) = match action {
        Action::Show => (AdminOp::Get, local.start.unwrap_or(1)),
        Action::Retire => (AdminOp::Delete, local.start.unwrap_or(1)),
        Action::MoveTo { next, start } => {
            let first = local.start.or(start).unwrap_or(1);
            match admin::target_count(next, first, local.max, admin::REDIS_CEILING) {
                Ok(target) => (AdminOp::Set(target), first),
                Err(bad) => return problem(r, bad),
            }
        }
    };
    // SAFETY: request-pool memory, as long as the request can be resumed.
    let asking = unsafe { ngx_pcalloc(r.pool, core::mem::size_of::<Asking>()) }.cast::<Asking>();
    if asking.is_null() {
        return problem(r, admin::FAILED);
    }
    // SAFETY: freshly allocated, sized and aligned for an Asking.
    unsafe {
        asking.write(Asking {
            key,
            action,
            local,
            start,
            handle: None,
            answer: None,
        })
    };
    let timeout = zone.redis.as_ref().map_or(1000, |r| r.args.timeout_ms);
    let deadline = (timeout.saturating_mul(2).saturating_add(1000)) as nginx_sys::ngx_msec_t;
    let handle = match wait::park_alone(r, deadline, &ASKING, asking.cast()) {
        Ok(handle) => handle,
        Err(rc) => return rc,
    };
    // SAFETY: as above.
    let slot = unsafe {
        (*asking).handle = Some(handle);
        ptr::addr_of_mut!((*asking).answer)
    };
    if let Err(answer) = crate::redis::admin(zone, key, op, Waiter { handle, slot }) {
        // SAFETY: as above.
        unsafe { *slot = Some(answer) };
        wait::wake(handle, Wake::Ready);
    }
    Status::NGX_DONE.into()
}

unsafe fn resume_redis(r: &mut ngx_http_request_t, ctx: *mut c_void, why: Wake) -> ngx_int_t {
    // SAFETY: the Asking written in `ask_redis`.
    let asking = unsafe { &mut *ctx.cast::<Asking>() };
    if why != Wake::Ready {
        if let Some(handle) = asking.handle {
            crate::redis::forget_admin(handle);
        }
        // a deadline (a shutdown lets the reply come: AtShutdown::Wait)
        return problem(r, admin::UNAVAILABLE);
    }
    let view = |issued: u64, used: Option<u64>| CounterView {
        start: Some(asking.start),
        issued,
        max: asking.local.max,
        used: used.unwrap_or(0).saturating_mul(1000),
        ..CounterView::default()
    };
    match (asking.action, asking.answer.take()) {
        (_, Some(Answer::WouldReissue)) => problem(r, admin::WOULD_REISSUE),
        (Action::Retire, Some(Answer::Counter { exists: false, .. }))
        | (Action::Show, Some(Answer::Counter { exists: false, .. })) => {
            problem(r, admin::NO_SUCH_COUNTER)
        }
        (Action::Retire, Some(Answer::Counter { .. })) => {
            let shown = admin::render(asking.key, &asking.local, true, admin::REDIS_CEILING);
            answer(r, 200, &shown)
        }
        (_, Some(Answer::Counter { issued, used, .. })) => {
            let shown = view(issued.unwrap_or(0), used);
            answer(
                r,
                200,
                &admin::render(asking.key, &shown, false, admin::REDIS_CEILING),
            )
        }
        _ => problem(r, admin::UNAVAILABLE),
    }
}

unsafe fn redis_gone(ctx: *mut c_void) {
    // SAFETY: as in `resume_redis`.
    let asking = unsafe { &*ctx.cast::<Asking>() };
    if let Some(handle) = asking.handle {
        crate::redis::forget_admin(handle);
    }
}

/// The live counter of `key`: an idle one counts as gone.
fn find<'z>(zone: &'z ZoneConf, key: Option<&[u8]>) -> Result<(&'z Counter, Gen), Problem> {
    let shared = zone.shared().ok_or(admin::FAILED)?;
    let Some(key) = key else {
        return Ok((shared.default_counter(), shared.default_counter().gen()));
    };
    match shared.find(key) {
        Lookup::Found(found) if !is_idle(zone, &found.counter.view()) => {
            Ok((found.counter, found.gen))
        }
        Lookup::Busy => Err(admin::TRY_AGAIN),
        _ => Err(admin::NO_SUCH_COUNTER),
    }
}

fn is_idle(zone: &ZoneConf, view: &CounterView) -> bool {
    zone.is_idle(view.used, crate::process::unix_msec())
}

/// A counter of a local or durable zone, as its answer shows it.
fn render(key: Option<&[u8]>, view: &CounterView, retired: bool) -> String {
    admin::render(key, view, retired, admin::LOCAL_CEILING)
}

fn show(r: &mut ngx_http_request_t, zone: &ZoneConf, key: Option<&[u8]>) -> ngx_int_t {
    match find(zone, key) {
        Ok((counter, _)) => answer(r, 200, &render(key, &counter.view(), false)),
        Err(bad) => problem(r, bad),
    }
}

/// Makes the counter of `key` (first ticket `start`), for a move already
/// checked; an idle one is retired first and made afresh.
fn make<'z>(zone: &'z ZoneConf, key: &[u8], start: u64) -> Result<(&'z Counter, Gen), Problem> {
    let (Some(shared), Some(lock)) = (zone.shared(), zone.memory.as_ref()) else {
        return Err(admin::FAILED);
    };
    let now = crate::process::unix_msec();
    if let Lookup::Found(found) = shared.find(key) {
        // idle: gone, and made afresh below
        shared.expire(key, found.gen, now.saturating_add(1), lock);
    }
    match shared.create(key, start, now, 0, lock) {
        Ok(found) => Ok((found.counter, found.gen)),
        Err(KeyError::Full) => Err(admin::ZONE_FULL),
        Err(KeyError::Closed | KeyError::Busy) => Err(admin::TRY_AGAIN),
    }
}

/// A counter this request made for a move that was then refused goes
/// again, unless a taker used it meanwhile: a refused move leaves nothing.
fn unmake(zone: &ZoneConf, key: Option<&[u8]>, made: Option<Gen>) {
    if let (Some(shared), Some(lock), Some(key), Some(gen)) =
        (zone.shared(), zone.memory.as_ref(), key, made)
    {
        shared.retire_unused(key, gen, lock);
    }
}

/// `POST ?next=N`: checked before K is made, so that a refused move (400,
/// 409) creates nothing and writes nothing.
fn move_to(
    r: &mut ngx_http_request_t,
    zone: &ZoneConf,
    key: Option<&'static [u8]>,
    next: u64,
    start: Option<u64>,
) -> ngx_int_t {
    let found = match find(zone, key) {
        Ok(found) => Some(found),
        Err(bad) if bad == admin::NO_SUCH_COUNTER => None,
        Err(bad) => return problem(r, bad),
    };
    let view = found.map(|(counter, _)| {
        // an existing counter whose first ticket is not fixed yet: start=
        counter.first_ticket(start.unwrap_or(1));
        counter.view()
    });
    let target = match admin::check_move(next, start, view.as_ref()) {
        Ok(target) => target,
        Err(bad) => return problem(r, bad),
    };
    let (counter, gen, made) = match (found, key) {
        (Some((counter, gen)), _) => (counter, gen, None),
        (None, Some(key)) => match make(zone, key, start.unwrap_or(1)) {
            Ok((counter, gen)) => (counter, gen, Some(gen)),
            Err(bad) => return problem(r, bad),
        },
        (None, None) => return problem(r, admin::FAILED),
    };
    // a taker in another worker may have used a counter just made
    let view = counter.view();
    if target < view.issued {
        return problem(r, admin::WOULD_REISSUE);
    }
    if zone.durable.is_some() {
        let change = Change::MoveTo {
            key: key.map(<[u8]>::to_vec),
            gen,
            target,
        };
        return wait_for_disk(r, zone, key, change, view, made);
    }
    match counter.advance_to(gen, target) {
        Ok(_) => answer(r, 200, &render(key, &counter.view(), false)),
        Err(AdvanceError::WouldReissue { .. }) => problem(r, admin::WOULD_REISSUE),
        Err(AdvanceError::Stale) => problem(r, admin::TRY_AGAIN),
    }
}

fn retire(r: &mut ngx_http_request_t, zone: &ZoneConf, key: Option<&'static [u8]>) -> ngx_int_t {
    let (Some(shared), Some(lock), Some(key)) = (zone.shared(), zone.memory.as_ref(), key) else {
        return problem(r, admin::FAILED);
    };
    let gen = match find(zone, Some(key)) {
        Ok((_, gen)) => gen,
        Err(bad) => return problem(r, bad),
    };
    let Some(view) = shared.retire(key, Some(gen), lock) else {
        return problem(r, admin::NO_SUCH_COUNTER);
    };
    if zone.durable.is_some() {
        let change = Change::Retire { key: key.to_vec() };
        return wait_for_disk(r, zone, Some(key), change, view, None);
    }
    answer(r, 200, &render(Some(key), &view, true))
}

/// A change waiting for the disk: lives in the request's pool.
struct Saving {
    zone: *const ZoneConf,
    key: Option<&'static [u8]>,
    id: u64,
    result: ChangeResult,
    /// A retired counter's final view (a move shows the counter anew).
    retired: Option<CounterView>,
    /// The life of the counter this move made, if it made one.
    made: Option<Gen>,
}

static SAVING: WaitKind = WaitKind {
    resume: resume_saved,
    gone: Some(saving_gone),
    at_shutdown: AtShutdown::Resume,
};

/// Requests waiting for their change to reach the disk, in this worker:
/// each is woken on its own.
static mut WAITING: *mut WaitList = ptr::null_mut();

fn waiting() -> &'static mut WaitList {
    // SAFETY: per-process, on the event-loop thread; freed in stop_worker.
    unsafe {
        if WAITING.is_null() {
            WAITING = Box::into_raw(WaitList::new());
        }
        &mut *WAITING
    }
}

/// At exit_process: nothing allocated may stay.
pub fn stop_worker() {
    // SAFETY: as in `waiting`; no request waits once the worker exits.
    unsafe {
        if !WAITING.is_null() {
            drop(Box::from_raw(WAITING));
            WAITING = ptr::null_mut();
        }
    }
}

fn wait_for_disk(
    r: &mut ngx_http_request_t,
    zone: &ZoneConf,
    key: Option<&'static [u8]>,
    change: Change,
    view: CounterView,
    made: Option<Gen>,
) -> ngx_int_t {
    let retired = matches!(change, Change::Retire { .. }).then_some(view);
    // SAFETY: request-pool memory, as long as the request can be resumed.
    let saving = unsafe { ngx_pcalloc(r.pool, core::mem::size_of::<Saving>()) }.cast::<Saving>();
    if saving.is_null() {
        return problem(r, admin::FAILED);
    }
    // SAFETY: freshly allocated, sized and aligned for a Saving.
    unsafe {
        saving.write(Saving {
            zone: ptr::from_ref(zone),
            key,
            id: 0,
            result: ChangeResult::NotSaved,
            retired,
            made,
        })
    };
    let handle = match wait::park(r, waiting(), SAVE_WAIT_MSEC, &SAVING, saving.cast()) {
        Ok(handle) => handle,
        Err(rc) => return rc,
    };
    // SAFETY: as above.
    let result = unsafe { ptr::addr_of_mut!((*saving).result) };
    match crate::durable::submit(zone, change, (handle, result)) {
        // SAFETY: as above.
        Some(id) => unsafe { (*saving).id = id },
        None => wait::wake(handle, Wake::Deadline),
    }
    Status::NGX_DONE.into()
}

unsafe fn resume_saved(r: &mut ngx_http_request_t, ctx: *mut c_void, why: Wake) -> ngx_int_t {
    // SAFETY: the Saving written in `wait_for_disk`; its zone lives in the
    // cycle's pool.
    let (saving, zone) = unsafe {
        let saving = &*ctx.cast::<Saving>();
        (saving, &*saving.zone)
    };
    match why {
        Wake::Ready => {}
        Wake::Deadline => {
            crate::durable::forget_change(zone, saving.id);
            return problem(r, admin::NOT_SAVED);
        }
        Wake::Shutdown => {
            crate::durable::forget_change(zone, saving.id);
            return problem(r, admin::TRY_AGAIN);
        }
    }
    match saving.result {
        ChangeResult::Done => match saving.retired {
            Some(view) => answer(r, 200, &render(saving.key, &view, true)),
            None => match find(zone, saving.key) {
                Ok((counter, _)) => answer(r, 200, &render(saving.key, &counter.view(), false)),
                Err(bad) => problem(r, bad),
            },
        },
        ChangeResult::WouldReissue => {
            // another nginx sharing the state file holds numbers past N
            unmake(zone, saving.key, saving.made);
            problem(r, admin::WOULD_REISSUE)
        }
        ChangeResult::Gone => problem(r, admin::TRY_AGAIN),
        ChangeResult::NotSaved => problem(r, admin::NOT_SAVED),
    }
}

unsafe fn saving_gone(ctx: *mut c_void) {
    // SAFETY: as in `resume_saved`.
    unsafe {
        let saving = &*ctx.cast::<Saving>();
        crate::durable::forget_change(&*saving.zone, saving.id);
    }
}
