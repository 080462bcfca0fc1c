//! HTTP: the `ticket_counter` and `ticket_status` content handlers and the
//! `ticket_variable` variables. They translate between nginx requests and the
//! pure core; every refusal is a short text body with its status code, and
//! every failure is a 500 with one error-log line, never a panic.

use core::ptr;

use nginx_sys::{
    ngx_add_timer, ngx_buf_t, ngx_chain_t, ngx_conf_t, ngx_create_temp_buf, ngx_event_t,
    ngx_http_add_variable, ngx_http_arg, ngx_http_complex_value, ngx_http_discard_request_body,
    ngx_http_finalize_request, ngx_http_output_filter, ngx_http_request_t,
    ngx_http_run_posted_requests, ngx_http_send_header, ngx_http_variable_value_t, ngx_int_t,
    ngx_list_push, ngx_msec_t, ngx_pcalloc, ngx_str_t, ngx_table_elt_t, ngx_uint_t, NGX_DONE,
    NGX_ERROR, NGX_HTTP_GET, NGX_HTTP_HEAD, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_POST,
    NGX_LOG_ERR, NGX_OK,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf};
use ngx::{ngx_log_debug, ngx_log_error};

use crate::config::{Format, StatusFormat};
use crate::counter::Take;
use crate::directives::{CounterConf, LocConf, TicketZone};
use crate::durable::now_msec;
use crate::module::TicketModule;
use crate::response::{self, Issued};
use crate::shm::is_alive;
use crate::status::{self, ZoneReport};
use crate::zone::{KeyError, KEY_MAX};

/// A response other than a ticket: status and short body.
struct Refusal {
    status: ngx_uint_t,
    body: &'static str,
}

/// How long a request waits for its durable counter's next reservation.
const WAIT_LIMIT_MSEC: u64 = 5000;
/// How often a waiting request looks again.
const WAIT_POLL_MSEC: ngx_msec_t = 1;

const BAD_COUNT: Refusal = Refusal {
    status: 400,
    body: "bad count\n",
};
const EMPTY_KEY: Refusal = Refusal {
    status: 400,
    body: "empty key\n",
};
const LONG_KEY: Refusal = Refusal {
    status: 400,
    body: "key too long\n",
};
const SOLD_OUT: Refusal = Refusal {
    status: 410,
    body: "sold out\n",
};
const ZONE_FULL: Refusal = Refusal {
    status: 503,
    body: "ticket zone full\n",
};
const RETRY: Refusal = Refusal {
    status: 503,
    body: "try again\n",
};
/// Not a response: the durable counter waits for its reservation.
const PENDING: Refusal = Refusal {
    status: 0,
    body: "ticket reservation pending\n",
};
const UNRESERVED: Refusal = Refusal {
    status: NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_uint_t,
    body: "ticket state not saved\n",
};
const FAILED: Refusal = Refusal {
    status: NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_uint_t,
    body: "internal error\n",
};

fn log(r: &ngx_http_request_t) -> *mut nginx_sys::ngx_log_t {
    // SAFETY: a request being handled always has its connection.
    unsafe { (*r.connection).log }
}

/// Takes `count` tickets for the request from the counter `conf` describes.
fn take_tickets(
    r: &mut ngx_http_request_t,
    conf: &CounterConf,
    count: u64,
) -> Result<u64, Refusal> {
    let Some(zone) = conf.zone() else {
        return Err(FAILED);
    };
    let Some(header) = zone.header() else {
        ngx_log_error!(
            NGX_LOG_ERR,
            log(r),
            "ticket zone \"{}\" is not ready",
            zone.name
        );
        return Err(FAILED);
    };
    let counter = if conf.key.is_null() {
        &header.default
    } else {
        let mut key = ngx_str_t::empty();
        // SAFETY: `conf.key` was compiled for this http block; `key` receives a
        // string from the request pool.
        if unsafe { ngx_http_complex_value(r, conf.key, &mut key) } != NGX_OK as ngx_int_t {
            return Err(FAILED);
        }
        let key = key.as_bytes();
        if key.is_empty() {
            return Err(EMPTY_KEY);
        }
        if key.len() > KEY_MAX {
            return Err(LONG_KEY);
        }
        // SAFETY: reading nginx's process id global.
        let me = unsafe { nginx_sys::ngx_pid } as u32;
        match header.counter_for(key, conf.start, me, is_alive) {
            Ok(counter) => counter,
            Err(KeyError::Full) => {
                ngx_log_error!(
                    NGX_LOG_ERR,
                    log(r),
                    "ticket zone \"{}\" is full ({} keys), new key refused",
                    zone.name,
                    header.capacity()
                );
                return Err(ZONE_FULL);
            }
            Err(KeyError::Busy) => return Err(RETRY),
        }
    };
    let durable = zone.durable.as_ref();
    match counter.take(conf.start, count, conf.max, durable.is_some()) {
        Take::Issued { first, .. } => {
            ngx_log_debug!(
                log(r),
                "ticket: issued {first} (+{count}) in \"{}\"",
                zone.name
            );
            if durable.is_some() {
                crate::durable::after_take(zone, counter, log(r));
            }
            Ok(first)
        }
        Take::Unreserved => {
            if let Some(durable) = durable {
                crate::durable::request(zone, durable, log(r));
            }
            Err(PENDING)
        }
        Take::SoldOut => Err(SOLD_OUT),
        Take::Exhausted => {
            ngx_log_error!(
                NGX_LOG_ERR,
                log(r),
                "ticket counter in zone \"{}\" ran out of numbers",
                zone.name
            );
            Err(SOLD_OUT)
        }
        Take::Retired => Err(RETRY),
    }
}

/// Adds a header whose name and value are static strings.
fn add_static_header(r: &mut ngx_http_request_t, key: &'static str, value: &'static str) -> bool {
    // SAFETY: pushing onto the request's own header list; the element is
    // zeroed first so fields newer nginx versions add (`next`) are null.
    unsafe {
        let h = ngx_list_push(&mut r.headers_out.headers).cast::<ngx_table_elt_t>();
        if h.is_null() {
            return false;
        }
        ptr::write_bytes(h, 0, 1);
        (*h).hash = 1;
        (*h).key = ngx_str_t {
            len: key.len(),
            data: key.as_ptr().cast_mut(),
        };
        (*h).value = ngx_str_t {
            len: value.len(),
            data: value.as_ptr().cast_mut(),
        };
    }
    true
}

/// Sends a complete response: status, headers, and `body` unless HEAD.
fn send(
    r: &mut ngx_http_request_t,
    status: ngx_uint_t,
    content_type: &'static str,
    body: &[u8],
    allow: Option<&'static str>,
) -> ngx_int_t {
    r.headers_out.status = status;
    r.headers_out.content_type = ngx_str_t {
        len: content_type.len(),
        data: content_type.as_ptr().cast_mut(),
    };
    r.headers_out.content_type_len = content_type.len();
    r.headers_out.content_type_lowcase = ptr::null_mut();
    if !add_static_header(r, "Cache-Control", "no-store") {
        return NGX_ERROR as ngx_int_t;
    }
    if let Some(allow) = allow {
        if !add_static_header(r, "Allow", allow) {
            return NGX_ERROR as ngx_int_t;
        }
    }
    if r.method == NGX_HTTP_HEAD as ngx_uint_t {
        // HEAD: the length of a ticket we did not take is unknown.
        r.headers_out.content_length_n = -1;
        // SAFETY: headers are complete.
        return unsafe { ngx_http_send_header(r) };
    }
    r.headers_out.content_length_n = body.len() as _;

    // SAFETY: the buffer comes from the request pool and outlives the output.
    unsafe {
        let buf: *mut ngx_buf_t = ngx_create_temp_buf(r.pool, body.len().max(1));
        if buf.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        ptr::copy_nonoverlapping(body.as_ptr(), (*buf).last, body.len());
        (*buf).last = (*buf).last.add(body.len());
        let is_main = ptr::eq(r, r.main);
        (*buf).set_last_buf(is_main as _);
        (*buf).set_last_in_chain(1);

        let rc = ngx_http_send_header(r);
        if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t {
            return rc;
        }
        let mut out = ngx_chain_t {
            buf,
            next: ptr::null_mut(),
        };
        ngx_http_output_filter(r, &mut out)
    }
}

fn refuse(r: &mut ngx_http_request_t, refusal: Refusal) -> ngx_int_t {
    send(
        r,
        refusal.status,
        "text/plain",
        refusal.body.as_bytes(),
        None,
    )
}

/// Answers methods other than those in `allow` with 405, after reading the
/// body away so the connection stays usable. `None`: the method is allowed.
fn check_method(
    r: &mut ngx_http_request_t,
    methods: ngx_uint_t,
    allow: &'static str,
) -> Option<ngx_int_t> {
    // SAFETY: a request in its content phase.
    let rc = unsafe { ngx_http_discard_request_body(r) };
    if rc != NGX_OK as ngx_int_t {
        return Some(rc);
    }
    if r.method & methods != 0 {
        return None;
    }
    Some(send(
        r,
        405,
        "text/plain",
        b"method not allowed\n",
        Some(allow),
    ))
}

/// The `ticket_counter` content handler.
pub extern "C" fn ticket_counter_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls content handlers with a live request.
    let r = unsafe { &mut *r };
    let allowed = (NGX_HTTP_GET | NGX_HTTP_HEAD | NGX_HTTP_POST) as ngx_uint_t;
    if let Some(rc) = check_method(r, allowed, "GET, HEAD, POST") {
        return rc;
    }
    let Some(conf) = TicketModule::location_conf(r).and_then(|l: &LocConf| l.counter.as_ref())
    else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let content_type = response::content_type(conf.format);
    // nginx sets `header_only` only in the header filter: test the method.
    if r.method == NGX_HTTP_HEAD as ngx_uint_t {
        // HEAD takes no ticket.
        return send(r, 200, content_type, b"", None);
    }

    // `?count=K` on a location with `batch=`.
    let mut batch = None;
    if let Some(limit) = conf.batch {
        let mut value = ngx_str_t::empty();
        // SAFETY: looks up a query argument of this request.
        let found = unsafe { ngx_http_arg(r, c"count".as_ptr().cast_mut().cast(), 5, &mut value) };
        if found == NGX_OK as ngx_int_t {
            match response::parse_count(value.as_bytes(), limit) {
                Some(count) => batch = Some(count),
                None => return refuse(r, BAD_COUNT),
            }
        }
    }
    match respond_with_tickets(r, conf, batch) {
        Some(rc) => rc,
        None => wait_for_reservation(r, batch),
    }
}

/// Takes the tickets and answers; `None` while a durable counter waits for
/// its reservation.
fn respond_with_tickets(
    r: &mut ngx_http_request_t,
    conf: &CounterConf,
    batch: Option<u64>,
) -> Option<ngx_int_t> {
    match take_tickets(r, conf, batch.unwrap_or(1)) {
        Ok(first) => {
            let issued = match batch {
                Some(count) => Issued::Batch { first, count },
                None => Issued::One(first),
            };
            let body = response::render(issued, conf.format, conf.width);
            let content_type = response::content_type(conf.format);
            Some(send(r, 200, content_type, body.as_bytes(), None))
        }
        Err(refusal) if refusal.status == 0 => None,
        Err(refusal) => Some(refuse(r, refusal)),
    }
}

/// A request parked until its durable counter's reservation is on disk:
/// a timer looks again every millisecond, so the worker's other connections
/// go on meanwhile.
#[repr(C)]
struct Waiting {
    event: ngx_event_t,
    batch: Option<u64>,
    deadline: u64,
}

fn wait_for_reservation(r: &mut ngx_http_request_t, batch: Option<u64>) -> ngx_int_t {
    // SAFETY: zeroed pool memory is a valid idle event; the request pool
    // lives until the request is finalized, which only `look_again` does
    // now that the request count holds it.
    unsafe {
        let waiting = ngx_pcalloc(r.pool, core::mem::size_of::<Waiting>()).cast::<Waiting>();
        if waiting.is_null() {
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        }
        (*waiting).batch = batch;
        (*waiting).deadline = now_msec() + WAIT_LIMIT_MSEC;
        (*waiting).event.handler = Some(look_again);
        (*waiting).event.data = ptr::from_mut(r).cast();
        (*waiting).event.log = log(r);
        ngx_add_timer(&mut (*waiting).event, WAIT_POLL_MSEC);
        let main = &mut *r.main;
        main.set_count(main.count() + 1);
    }
    ngx_log_debug!(log(r), "ticket: waiting for a reservation");
    NGX_DONE as ngx_int_t
}

unsafe extern "C" fn look_again(ev: *mut ngx_event_t) {
    // SAFETY: the event is the first field of a Waiting (repr(C)) whose
    // `data` is the parked request, kept alive by the count we took.
    let (waiting, r) = unsafe {
        let waiting = &mut *ev.cast::<Waiting>();
        let r = &mut *waiting.event.data.cast::<ngx_http_request_t>();
        (waiting, r)
    };
    let conf = TicketModule::location_conf(r).and_then(|l: &LocConf| l.counter.as_ref());
    let rc = match conf {
        Some(conf) => match respond_with_tickets(r, conf, waiting.batch) {
            Some(rc) => rc,
            None if now_msec() < waiting.deadline => {
                // SAFETY: re-arming our own idle event.
                unsafe { ngx_add_timer(&mut waiting.event, WAIT_POLL_MSEC) };
                return;
            }
            None => {
                ngx_log_error!(
                    NGX_LOG_ERR,
                    log(r),
                    "ticket: no reservation on disk after {WAIT_LIMIT_MSEC} ms, request refused"
                );
                refuse(r, UNRESERVED)
            }
        },
        None => NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t,
    };
    let c = r.connection;
    // SAFETY: finalizing drops the count taken in `wait_for_reservation`;
    // posted requests run as after any nginx event.
    unsafe {
        ngx_http_finalize_request(r, rc);
        ngx_http_run_posted_requests(c);
    }
}

fn zone_report(zone: &TicketZone) -> Option<ZoneReport> {
    let header = zone.header()?;
    let mut counters = vec![(None, header.default.view())];
    counters.extend(header.keys().map(|(key, c)| (Some(key.to_vec()), c.view())));
    Some(ZoneReport {
        name: zone.name.clone(),
        size: zone.size,
        capacity: header.capacity(),
        keys: header.used(),
        counters,
    })
}

/// The `ticket_status` content handler.
pub extern "C" fn ticket_status_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls content handlers with a live request.
    let r = unsafe { &mut *r };
    let allowed = (NGX_HTTP_GET | NGX_HTTP_HEAD) as ngx_uint_t;
    if let Some(rc) = check_method(r, allowed, "GET, HEAD") {
        return rc;
    }
    let Some(conf) = TicketModule::location_conf(r).and_then(|l: &LocConf| l.status.as_ref())
    else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let reports: Vec<ZoneReport> = match unsafe { conf.zone.as_ref() } {
        // SAFETY (above): resolved to a zone from the cycle's pool, or null.
        Some(zone) => zone_report(zone).into_iter().collect(),
        None => match TicketModule::main_conf(r) {
            Some(main) => main.zones().filter_map(zone_report).collect(),
            None => Vec::new(),
        },
    };
    let (content_type, body) = match conf.format {
        StatusFormat::Json => ("application/json", status::render_json(&reports)),
        StatusFormat::Prometheus => (
            "text/plain; version=0.0.4",
            status::render_prometheus(&reports),
        ),
    };
    send(r, 200, content_type, body.as_bytes(), None)
}

/// Declares `$NAME` for `ticket_variable`.
pub fn add_ticket_variable(
    cf: &mut ngx_conf_t,
    name: &str,
    conf: *mut CounterConf,
) -> Result<(), ()> {
    // SAFETY: the name is copied into the configuration pool, as nginx keeps it.
    let mut name = unsafe { ngx_str_t::from_bytes(cf.pool, name.as_bytes()) }.ok_or(())?;
    // SAFETY: `cf` is the configuration being parsed. Flags 0: the value is
    // cached for the request, so one request takes one ticket.
    let var = unsafe { ngx_http_add_variable(cf, &mut name, 0) };
    // SAFETY: null or a variable nginx owns for the cycle.
    let var = unsafe { var.as_mut() }.ok_or(())?;
    var.get_handler = Some(ticket_variable_get);
    var.data = conf as usize;
    Ok(())
}

unsafe extern "C" fn ticket_variable_get(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    data: usize,
) -> ngx_int_t {
    // SAFETY: nginx passes a live request, the value to fill, and the
    // CounterConf pointer we registered (cycle pool).
    let (r, v, conf) = unsafe { (&mut *r, &mut *v, &*(data as *const CounterConf)) };
    v.set_valid(1);
    v.set_no_cacheable(0);
    v.set_not_found(0);
    v.set_len(0);
    v.data = ptr::null_mut();
    match take_tickets(r, conf, 1) {
        Ok(ticket) => {
            let body = response::render(Issued::One(ticket), Format::Text, 0);
            let digits = &body.as_bytes()[..body.as_bytes().len() - 1];
            // SAFETY: the value lives in the request pool.
            match unsafe { ngx_str_t::from_bytes(r.pool, digits) } {
                Some(s) => {
                    v.data = s.data;
                    v.set_len(s.len as _);
                }
                None => return NGX_ERROR as ngx_int_t,
            }
        }
        Err(refusal) => {
            let zone = conf.zone().map(|z| z.name.as_str()).unwrap_or("");
            ngx_log_error!(
                NGX_LOG_ERR,
                log(r),
                "ticket variable is empty: {} (zone \"{zone}\")",
                refusal.body.trim_end()
            );
        }
    }
    NGX_OK as ngx_int_t
}
