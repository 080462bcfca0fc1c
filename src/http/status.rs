//! `ticket_status`: the status page, sent in slices. Each slice renders a
//! bounded number of counters straight into an nginx buffer; the next one is
//! rendered on the event loop's next turn (`ngx_posted_next_events`), after
//! the worker's other connections had theirs, or once a slow client took
//! the previous one.

use core::ptr;

use nginx_sys::{
    ngx_buf_t, ngx_chain_t, ngx_create_temp_buf, ngx_handle_write_event, ngx_http_core_loc_conf_t,
    ngx_http_finalize_request, ngx_http_output_filter, ngx_http_request_t, ngx_http_send_header,
    ngx_http_test_reading, ngx_int_t, ngx_post_event, ngx_posted_next_events, ngx_uint_t,
    NGX_HTTP_GET, NGX_HTTP_HEAD, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_REQUEST_TIME_OUT,
};
use ngx::core::{Pool, Status};
use ngx::http::{HttpModule, HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule};

use crate::conf::{LocConf, ZoneConf};
use crate::core::config::StatusFormat;
use crate::core::status::{Page, RedisInfo, Row, Source, ZoneInfo};
use crate::http::{check_method, set_headers};
use crate::module::TicketModule;

/// Counters per slice: small enough that one slice costs well under a
/// millisecond, large enough that a page needs few turns.
const SLICE_COUNTERS: usize = 1000;

/// The zones a page shows.
struct Zones(Vec<*const ZoneConf>);

impl Zones {
    fn get(&self, index: usize) -> Option<&ZoneConf> {
        // SAFETY: zones live in the cycle's pool, which outlives requests.
        self.0.get(index).and_then(|z| unsafe { z.as_ref() })
    }
}

impl Source for Zones {
    fn zone_count(&self) -> usize {
        self.0.len()
    }

    fn zone(&self, index: usize) -> ZoneInfo {
        let Some(zone) = self.get(index) else {
            return ZoneInfo::default();
        };
        let shared = zone.shared();
        let redis = crate::redis::report(zone)
            .zip(shared)
            .map(|(report, shared)| {
                let remote = &shared.header().remote;
                let load = |n: &core::sync::atomic::AtomicU64| {
                    n.load(core::sync::atomic::Ordering::Relaxed)
                };
                RedisInfo {
                    authority: report.authority,
                    mode: report.mode,
                    connected: report.connected,
                    workers: report.workers,
                    batches: load(&remote.batches),
                    tickets: load(&remote.tickets),
                    errors: load(&remote.errors),
                    timeouts: load(&remote.timeouts),
                    fences: load(&remote.fences),
                    repairs: load(&remote.repairs),
                }
            });
        ZoneInfo {
            name: zone.name.clone(),
            size: zone.size,
            capacity: shared.map_or(0, |z| z.capacity()),
            keys: shared.map_or(0, |z| z.used()),
            expired: shared.map_or(0, |z| z.expired()),
            redis,
        }
    }

    fn rows(&self, index: usize, from: usize, limit: usize, out: &mut Vec<Row>) -> Option<usize> {
        let zone = self.get(index)?;
        let shared = zone.shared()?;
        let leased = zone.redis.as_ref().is_some_and(|r| r.lease().is_some());
        let lease = |view: &crate::core::counter::CounterView| {
            leased.then(|| view.reserved.saturating_sub(view.issued))
        };
        let mut taken = 0;
        let mut next = from;
        if from == 0 {
            let view = shared.default_counter().view();
            out.push(Row {
                key: None,
                view,
                lease: lease(&view),
            });
            taken += 1;
            next = 1;
        }
        // Positions after 0 are table slots plus one.
        for (slot, key, found) in shared.keys_from(next - 1) {
            if taken >= limit {
                return Some(slot + 1);
            }
            let view = found.counter.view();
            out.push(Row {
                key: Some(key.as_bytes().to_vec()),
                view,
                lease: lease(&view),
            });
            taken += 1;
        }
        None
    }
}

/// A page being sent: lives in the request's pool.
struct Sending {
    page: Page,
    zones: Zones,
}

/// The `ticket_status` content handler.
pub extern "C" fn ticket_status_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls content handlers with a live request.
    let r = unsafe { &mut *r };
    let allowed = (NGX_HTTP_GET | NGX_HTTP_HEAD) as ngx_uint_t;
    if let Some(rc) = check_method(r, allowed, "GET, HEAD") {
        return rc;
    }
    let failed = NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    let Some(loc) = TicketModule::location_conf(r) else {
        return failed;
    };
    let loc: &LocConf = loc;
    let Some(conf) = loc.status.as_ref() else {
        return failed;
    };
    let zones: Vec<*const ZoneConf> = match unsafe { conf.zone.as_ref() } {
        // SAFETY (above): a zone from the cycle's pool, or null for all.
        Some(zone) => vec![ptr::from_ref(zone)],
        None => match TicketModule::main_conf(r) {
            Some(main) => main.zones().map(ptr::from_ref).collect(),
            None => Vec::new(),
        },
    };
    let content_type = match conf.format {
        StatusFormat::Json => "application/json",
        StatusFormat::Prometheus => "text/plain; version=0.0.4",
    };
    if !set_headers(r, 200, content_type, None) {
        return failed;
    }
    r.headers_out.content_length_n = -1;
    // SAFETY: headers are complete.
    let rc = unsafe { ngx_http_send_header(r) };
    if rc == Status::NGX_ERROR.0 || rc > Status::NGX_OK.0 || r.header_only() != 0 {
        return rc;
    }
    // SAFETY: the request's pool outlives the page; `allocate` drops it
    // with the pool.
    let sending = unsafe { Pool::from_ngx_pool(r.pool) }.allocate(Sending {
        page: Page::new(conf.format),
        zones: Zones(zones),
    });
    if sending.is_null() {
        return failed;
    }
    // SAFETY: our ctx slot; read back by `continue_page`.
    unsafe {
        *r.ctx.add(TicketModule::module().ctx_index) = sending.cast();
        let main = &mut *r.main;
        main.set_count(main.count() + 1);
    }
    r.read_event_handler = Some(ngx_http_test_reading);
    r.write_event_handler = Some(continue_page);
    // SAFETY: as after any event handler of this request.
    unsafe { continue_page(r) };
    Status::NGX_DONE.into()
}

/// Sends the next slice, or finishes the page.
unsafe extern "C" fn continue_page(r: *mut ngx_http_request_t) {
    // SAFETY: nginx (or the handler) calls this with our live request; its
    // ctx slot holds the Sending allocated from its pool.
    unsafe {
        let r = &mut *r;
        let c = &mut *r.connection;
        let wev = c.write;
        if (*wev).timedout() != 0 {
            c.set_timedout(1);
            ngx_http_finalize_request(r, NGX_HTTP_REQUEST_TIME_OUT as ngx_int_t);
            return;
        }
        let sending = (*r.ctx.add(TicketModule::module().ctx_index)).cast::<Sending>();
        let Some(sending) = sending.as_mut() else {
            ngx_http_finalize_request(r, Status::NGX_ERROR.into());
            return;
        };
        if (*wev).timer_set() != 0 && (*wev).delayed() == 0 {
            nginx_sys::ngx_del_timer(wev);
        }
        // Whatever the client has not taken yet goes first.
        if c.buffered() != 0 || r.buffered() != 0 {
            let rc = ngx_http_output_filter(r, ptr::null_mut());
            if rc == Status::NGX_ERROR.0 {
                ngx_http_finalize_request(r, rc);
            } else if rc == Status::NGX_AGAIN.0 || c.buffered() != 0 {
                wait_for_client(r);
            } else {
                ngx_post_event(wev, ptr::addr_of_mut!(ngx_posted_next_events));
            }
            return;
        }
        let text = sending.page.next_slice(&sending.zones, SLICE_COUNTERS);
        let last = sending.page.is_done();
        let rc = send_slice(r, text.as_bytes(), last);
        if rc == Status::NGX_ERROR.0 || last {
            ngx_http_finalize_request(r, rc);
        } else if rc == Status::NGX_AGAIN.0 || c.buffered() != 0 {
            wait_for_client(r);
        } else {
            // Let the worker's other connections go first.
            ngx_post_event(wev, ptr::addr_of_mut!(ngx_posted_next_events));
        }
    }
}

/// Waits for the client to take what was sent, within `send_timeout`.
///
/// # Safety
/// `r` must be live.
unsafe fn wait_for_client(r: &mut ngx_http_request_t) {
    // SAFETY: per the contract.
    unsafe {
        let wev = (*r.connection).write;
        let clcf: Option<&ngx_http_core_loc_conf_t> = NgxHttpCoreModule::location_conf(r);
        let (lowat, timeout) = clcf.map_or((0, 60_000), |c| (c.send_lowat, c.send_timeout));
        if (*wev).delayed() == 0 {
            nginx_sys::ngx_add_timer(wev, timeout);
        }
        if ngx_handle_write_event(wev, lowat) != Status::NGX_OK.0 {
            ngx_http_finalize_request(r, Status::NGX_ERROR.into());
        }
    }
}

/// Sends one slice as a buffer of its own (the last one ends the body).
///
/// # Safety
/// `r` must be live.
unsafe fn send_slice(r: &mut ngx_http_request_t, bytes: &[u8], last: bool) -> ngx_int_t {
    // SAFETY: the buffer comes from the request pool and outlives the
    // output; the chain link is copied by the write filter.
    unsafe {
        let buf: *mut ngx_buf_t = ngx_create_temp_buf(r.pool, bytes.len().max(1));
        if buf.is_null() {
            return Status::NGX_ERROR.into();
        }
        ptr::copy_nonoverlapping(bytes.as_ptr(), (*buf).last, bytes.len());
        (*buf).last = (*buf).last.add(bytes.len());
        if last {
            (*buf).set_last_buf(ptr::eq(r, r.main) as _);
            (*buf).set_last_in_chain(1);
        } else {
            (*buf).set_flush(1);
        }
        if bytes.is_empty() && !last {
            return Status::NGX_OK.into();
        }
        let mut out = ngx_chain_t {
            buf,
            next: ptr::null_mut(),
        };
        ngx_http_output_filter(r, &mut out)
    }
}
