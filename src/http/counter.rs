//! `ticket_counter`: the content handler that answers with tickets.

use core::ffi::c_void;

use nginx_sys::{
    ngx_http_complex_value, ngx_http_request_t, ngx_int_t, ngx_msec_t, ngx_pcalloc, ngx_str_t,
    ngx_uint_t, NGX_HTTP_GET, NGX_HTTP_HEAD, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_POST,
    NGX_LOG_ERR,
};
use ngx::core::Status;
use ngx::http::HttpModuleLocationConf;
use ngx::{ngx_log_debug, ngx_log_error};

use crate::conf::{CounterConf, LocConf};
use crate::core::response::{self, Handout};
use crate::http::{check_method, log, query_arg, refuse, send};
use crate::module::TicketModule;
use crate::take::{self, Outcome, Refusal, Wait};
use crate::wait::{self, WaitKind, Wake};

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
    }
}

static RESERVATION: WaitKind = WaitKind {
    resume: resume_reservation,
    gone: None,
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
            crate::durable::need(zone, request.key, request.batch.unwrap_or(1));
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
        Wake::Shutdown => refuse(r, Refusal::TryAgain),
    }
}
