//! The one way a request waits: every path that cannot answer at once (a
//! durable counter whose reservation is not on disk yet; a reply from
//! Redis) parks its request here.
//!
//! Modelled on nginx's own `ngx_http_limit_req_delay`:
//! - the request goes on its owner's [`WaitList`] (per worker) and is woken
//!   by the event that resolves it: no polling;
//! - its deadline is a timer on the connection's write event
//!   (`c->write->delayed`), which nginx itself deletes when it closes the
//!   connection;
//! - a client that leaves is noticed (`ngx_http_test_reading`), except while
//!   the request body is still being discarded, whose read handler stays;
//! - a cleanup handler takes the request off its list whatever ends it
//!   (`ngx_http_terminate_request` ignores the request count and frees the
//!   pool: nothing may point at a parked request after that);
//! - when nginx shuts down gracefully (a reload, a quit), requests waiting
//!   for the disk or a lease are answered at once (a cancelable timer
//!   watches for it while anything is parked), so the worker can exit; those
//!   waiting for a Redis reply keep waiting for it (their command may be on
//!   its way: a 503 would make its numbers a gap), which their deadline
//!   bounds.
//!
//! Everything here runs on the worker's event-loop thread.

use core::ffi::c_void;
use core::ptr;

use crate::timer::Timer;
use nginx_sys::{
    ngx_add_timer, ngx_del_timer, ngx_post_event, ngx_posted_events, ngx_queue_init,
    ngx_queue_insert_before, ngx_queue_remove,
};
use nginx_sys::{
    ngx_cycle_t, ngx_event_t, ngx_handle_read_event, ngx_handle_write_event,
    ngx_http_block_reading, ngx_http_cleanup_add, ngx_http_finalize_request,
    ngx_http_request_empty_handler, ngx_http_request_t, ngx_http_run_posted_requests,
    ngx_http_test_reading, ngx_int_t, ngx_msec_t, ngx_pcalloc, ngx_queue_t,
    NGX_HTTP_INTERNAL_SERVER_ERROR,
};
use ngx::core::Status;

/// Why a parked request is resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// What it waited for happened: try again.
    Ready,
    /// Its deadline passed.
    Deadline,
    /// nginx is shutting down gracefully.
    Shutdown,
}

/// What a graceful shutdown does to a parked request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtShutdown {
    /// Resumed at once with [`Wake::Shutdown`].
    Resume,
    /// Left to its own wake or deadline (the worker exits after it).
    Wait,
}

/// How an owner resumes its parked requests.
pub struct WaitKind {
    /// Answers the request (or parks it again) and returns what a content
    /// handler would; the wait module finalizes the request with it.
    pub resume: unsafe fn(r: &mut ngx_http_request_t, ctx: *mut c_void, why: Wake) -> ngx_int_t,
    /// nginx ended the request while it was parked: forget `ctx`.
    pub gone: Option<unsafe fn(ctx: *mut c_void)>,
    pub at_shutdown: AtShutdown,
}

/// A parked request, allocated from its pool.
#[repr(C)]
struct Parked {
    /// In the owner's list.
    link: ngx_queue_t,
    /// In the worker's list of requests answered at a graceful shutdown.
    all: ngx_queue_t,
    r: *mut ngx_http_request_t,
    ctx: *mut c_void,
    kind: &'static WaitKind,
    linked: bool,
}

/// A parked request an owner may wake on its own (a Redis reply for it).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Handle(*mut Parked);

/// An owner's list of parked requests (per worker).
pub struct WaitList {
    head: ngx_queue_t,
}

impl WaitList {
    /// A list in its own heap allocation: its head must not move.
    pub fn new() -> Box<WaitList> {
        let mut list = Box::new(WaitList {
            // SAFETY: an all-zero queue head is initialised just below.
            head: unsafe { core::mem::zeroed() },
        });
        // SAFETY: the head lives in the box, which never moves.
        unsafe { ngx_queue_init(&mut list.head) };
        list
    }

    pub fn is_empty(&self) -> bool {
        ptr::eq(self.head.next, &self.head)
    }

    /// Resumes every request parked on this list. Requests that park again
    /// meanwhile wait for the next wake.
    pub fn wake_all(&mut self, why: Wake) {
        if self.is_empty() {
            return;
        }
        // Move the entries to a local head first: a request parked again by
        // its resume goes back on `self` and is not woken twice, and one
        // that nginx ends meanwhile unlinks itself from the local head.
        // SAFETY: the queue links are ours (see `Parked`); the local head
        // stays in place until it is empty again.
        unsafe {
            let mut local: ngx_queue_t = core::mem::zeroed();
            ngx_queue_init(&mut local);
            let (first, last) = (self.head.next, self.head.prev);
            (*first).prev = &mut local;
            (*last).next = &mut local;
            local.next = first;
            local.prev = last;
            ngx_queue_init(&mut self.head);
            while !ptr::eq(local.next, &local) {
                let parked = local.next.cast::<Parked>();
                resume(parked, why);
            }
        }
    }
}

/// Every request parked in this worker, and the watch for shutdown.
struct Worker {
    all: ngx_queue_t,
    /// Requests that are woken one by one (each by its own reply).
    solo: Box<WaitList>,
    parked: usize,
    watch: Box<Timer>,
    /// This module's slot in `r->ctx`, where a parked request finds itself.
    ctx_index: usize,
}

static mut WORKER: *mut Worker = ptr::null_mut();

/// How often the shutdown watch looks, while anything is parked.
const WATCH_MSEC: ngx_msec_t = 100;

fn worker() -> Option<&'static mut Worker> {
    // SAFETY: set once in `start_worker` on the event-loop thread, the only
    // thread that touches it; never freed while the worker runs.
    unsafe { WORKER.as_mut() }
}

/// Per-worker state; called from init_process with the module's `ctx_index`.
pub fn start_worker(cycle: &ngx_cycle_t, ctx_index: usize) {
    if worker().is_some() {
        return;
    }
    // SAFETY: zeroed queue heads and events are valid once initialised here.
    unsafe {
        let state = Box::into_raw(Box::new(Worker {
            all: core::mem::zeroed(),
            solo: WaitList::new(),
            parked: 0,
            watch: Timer::new(watch_shutdown, ptr::null_mut(), cycle.log),
            ctx_index,
        }));
        ngx_queue_init(&mut (*state).all);
        WORKER = state;
    }
}

/// At exit_process: nothing may stay armed, nothing allocated may stay (the
/// module is unloaded after this).
pub fn stop_worker() {
    // SAFETY: allocated by `start_worker`; nothing uses it after exit.
    // Dropping it disarms the watch.
    unsafe {
        if !WORKER.is_null() {
            drop(Box::from_raw(WORKER));
            WORKER = ptr::null_mut();
        }
    }
}

unsafe extern "C" fn watch_shutdown(_ev: *mut ngx_event_t) {
    let Some(state) = worker() else {
        return;
    };
    if crate::process::exiting() {
        // SAFETY: every entry of `all` is a live Parked (unlinked by its
        // cleanup before its pool goes); `resume` unlinks each one.
        unsafe {
            while !ptr::eq(state.all.next, &state.all) {
                let parked = state
                    .all
                    .next
                    .cast::<u8>()
                    .sub(core::mem::offset_of!(Parked, all))
                    .cast::<Parked>();
                resume(parked, Wake::Shutdown);
            }
        }
    }
    // While anything is parked, also while exiting: a request parked later
    // is answered too.
    if let Some(state) = worker() {
        if state.parked > 0 && !state.watch.is_armed() {
            state.watch.arm(WATCH_MSEC);
        }
    }
}

/// Parks `r` on `list` for at most `deadline` ms. On success the content
/// handler returns [`Status::NGX_DONE`]; `ctx` (from the request's pool)
/// comes back to `kind.resume`.
pub fn park(
    r: &mut ngx_http_request_t,
    list: &mut WaitList,
    deadline: ngx_msec_t,
    kind: &'static WaitKind,
    ctx: *mut c_void,
) -> Result<Handle, ngx_int_t> {
    let failed = NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    let Some(state) = worker() else {
        return Err(failed);
    };
    // SAFETY: the request is live; everything allocated here comes from its
    // pool and is reachable from our lists only until the cleanup below
    // (or a wake) unlinks it.
    unsafe {
        let parked = ngx_pcalloc(r.pool, core::mem::size_of::<Parked>()).cast::<Parked>();
        let cleanup = ngx_http_cleanup_add(r, 0);
        if parked.is_null() || cleanup.is_null() {
            return Err(failed);
        }
        ptr::write(
            parked,
            Parked {
                link: core::mem::zeroed(),
                all: core::mem::zeroed(),
                r,
                ctx,
                kind,
                linked: true,
            },
        );
        ngx_queue_insert_before(&mut list.head, &mut (*parked).link);
        match kind.at_shutdown {
            AtShutdown::Resume => ngx_queue_insert_before(&mut state.all, &mut (*parked).all),
            // Linked to itself: removing it changes nothing.
            AtShutdown::Wait => ngx_queue_init(&mut (*parked).all),
        }
        state.parked += 1;
        (*cleanup).handler = Some(parked_cleanup);
        (*cleanup).data = parked.cast();

        let c = &mut *r.connection;
        if r.discard_body() == 0 {
            r.read_event_handler = Some(ngx_http_test_reading);
            if (*c.read).ready() != 0 {
                ngx_post_event(c.read, ptr::addr_of_mut!(ngx_posted_events));
            } else if ngx_handle_read_event(c.read, 0) != Status::NGX_OK.0 {
                detach(parked);
                return Err(failed);
            }
        }
        r.write_event_handler = Some(parked_write_handler);
        *r.ctx.add(state.ctx_index) = parked.cast();
        (*c.write).set_delayed(1);
        ngx_add_timer(c.write, deadline);
        if !state.watch.is_armed() {
            state.watch.arm(WATCH_MSEC);
        }
        let main = &mut *r.main;
        main.set_count(main.count() + 1);
        Ok(Handle(parked))
    }
}

/// Parks `r` to be woken on its own through its [`Handle`] (a reply for
/// it), as [`park`] does otherwise.
pub fn park_alone(
    r: &mut ngx_http_request_t,
    deadline: ngx_msec_t,
    kind: &'static WaitKind,
    ctx: *mut c_void,
) -> Result<Handle, ngx_int_t> {
    let Some(state) = worker() else {
        return Err(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t);
    };
    let list: *mut WaitList = &mut *state.solo;
    // SAFETY: the list is boxed in the worker state, which outlives parks.
    park(r, unsafe { &mut *list }, deadline, kind, ctx)
}

/// Wakes one parked request (a reply for it arrived). A handle whose
/// request nginx ended was reported through `gone` and must not be used.
pub fn wake(handle: Handle, why: Wake) {
    // SAFETY: the owner holds the handle only while the request is parked
    // (its `gone` callback drops it otherwise).
    unsafe { resume(handle.0, why) };
}

/// Takes a parked request off every list and disarms its deadline.
///
/// # Safety
/// `parked` must be live (its request not yet freed).
unsafe fn detach(parked: *mut Parked) {
    // SAFETY: per the contract; the links were inserted in `park`.
    unsafe {
        if !(*parked).linked {
            return;
        }
        (*parked).linked = false;
        ngx_queue_remove(&mut (*parked).link);
        ngx_queue_remove(&mut (*parked).all);
        if let Some(state) = worker() {
            state.parked = state.parked.saturating_sub(1);
        }
        let wev = (*(*(*parked).r).connection).write;
        (*wev).set_delayed(0);
        if (*wev).timer_set() != 0 {
            ngx_del_timer(wev);
        }
    }
}

/// Resumes a parked request: the owner answers it (or parks it again), then
/// nginx finalizes it, as after any event.
///
/// # Safety
/// `parked` must be live.
unsafe fn resume(parked: *mut Parked, why: Wake) {
    // SAFETY: per the contract; after finalizing, the request (and
    // `parked` with its pool) may be gone, so nothing touches them after.
    unsafe {
        if !(*parked).linked {
            return;
        }
        detach(parked);
        let r = &mut *(*parked).r;
        let c = r.connection;
        if r.discard_body() == 0 {
            r.read_event_handler = Some(ngx_http_block_reading);
        }
        r.write_event_handler = Some(ngx_http_request_empty_handler);
        let rc = ((*parked).kind.resume)(r, (*parked).ctx, why);
        ngx_http_finalize_request(r, rc);
        ngx_http_run_posted_requests(c);
    }
}

/// The connection's write event while parked: either the deadline (nginx
/// cleared `delayed`) or a spurious readiness, as in limit_req.
unsafe extern "C" fn parked_write_handler(r: *mut ngx_http_request_t) {
    // SAFETY: nginx calls request handlers with a live request; our ctx
    // slot holds the Parked set in `park`.
    unsafe {
        let wev = (*(*r).connection).write;
        if (*wev).delayed() != 0 {
            if ngx_handle_write_event(wev, 0) != Status::NGX_OK.0 {
                ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t);
            }
            return;
        }
        let Some(state) = worker() else {
            return;
        };
        let parked = (*(*r).ctx.add(state.ctx_index)).cast::<Parked>();
        if !parked.is_null() {
            resume(parked, Wake::Deadline);
        }
    }
}

/// nginx ends the request (finalized, terminated, client gone): nothing may
/// point at it any more.
unsafe extern "C" fn parked_cleanup(data: *mut c_void) {
    let parked = data.cast::<Parked>();
    // SAFETY: runs before the request's pool is freed.
    unsafe {
        if (*parked).linked {
            detach(parked);
            if let Some(gone) = (*parked).kind.gone {
                gone((*parked).ctx);
            }
        }
    }
}
