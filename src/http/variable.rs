//! `ticket_variable`: a variable that takes one ticket when a request first
//! reads it. A variable cannot wait, so when no ticket can be taken at once
//! it is *not found* (`map`, `if` and `log_format`'s `-` can tell).

use nginx_sys::{
    ngx_conf_t, ngx_http_add_variable, ngx_http_request_t, ngx_http_variable_value_t, ngx_int_t,
};
use ngx::core::Status;
use ngx::ngx_log_error;

use crate::conf::{CounterConf, DEFAULT_LOG_LEVEL};
use crate::core::config::Format;
use crate::core::response::{self, Handout};
use crate::http::counter::request_key;
use crate::http::log;
use crate::take::{self, Outcome, Refusal, Wait};
use ngx::http::HttpModuleLocationConf;

/// Declares `$NAME` for `ticket_variable`.
pub fn add_ticket_variable(
    cf: &mut ngx_conf_t,
    name: &str,
    conf: *mut CounterConf,
) -> Result<(), ()> {
    // SAFETY: the name is copied into the configuration pool, as nginx keeps it.
    let mut name =
        unsafe { nginx_sys::ngx_str_t::from_bytes(cf.pool, name.as_bytes()) }.ok_or(())?;
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
    v.set_valid(0);
    v.set_no_cacheable(0);
    v.set_not_found(1);
    v.set_len(0);
    v.data = core::ptr::null_mut();
    let Some(zone) = conf.zone() else {
        return Status::NGX_OK.into();
    };
    let key = request_key(r, conf);
    // `ticket_log_level` of the request's location, also for the take's own
    // lines (a full zone).
    let level = crate::module::TicketModule::location_conf(r)
        .map_or(DEFAULT_LOG_LEVEL, |loc: &crate::conf::LocConf| {
            loc.log_level
        });
    let outcome = match key {
        Ok(key) => take::take(zone, conf, key, 1, log(r), level),
        Err(refusal) => Outcome::Refused(refusal),
    };
    let why = match outcome {
        Outcome::Tickets { first, .. } => {
            let body = response::render(Handout::One(first), Format::Text, 0);
            let digits = body.as_bytes().strip_suffix(b"\n").unwrap_or_default();
            // SAFETY: the value lives in the request pool.
            return match unsafe { nginx_sys::ngx_str_t::from_bytes(r.pool, digits) } {
                Some(s) => {
                    v.data = s.data;
                    v.set_len(s.len as _);
                    v.set_valid(1);
                    v.set_not_found(0);
                    Status::NGX_OK.into()
                }
                None => Status::NGX_ERROR.into(),
            };
        }
        // Sold out, a bad key or a full zone (logged by the take): the
        // variable is simply not found.
        Outcome::Refused(refusal) if refusal != Refusal::Failed => return Status::NGX_OK.into(),
        Outcome::Refused(_) => "internal error",
        Outcome::Wait(Wait::Reservation) => "reservation not on disk yet (a variable cannot wait)",
        Outcome::Wait(Wait::Lease) => {
            // the next lease of this counter (the variable's key, if any)
            // is on its way for the requests after this one
            if let Ok(key) = key {
                crate::redis::refill(zone, key, conf.start, conf.max);
            }
            "lease used up (a variable cannot wait)"
        }
        Outcome::Wait(Wait::Authority) => "redis zone without lease= (a variable cannot wait)",
        Outcome::Wait(Wait::Exists) => return Status::NGX_OK.into(),
    };
    ngx_log_error!(
        level,
        log(r),
        "ticket variable not found: {why} (zone \"{}\")",
        zone.name
    );
    Status::NGX_OK.into()
}
