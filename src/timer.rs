//! Timers of our own: events that belong to no connection (the idle sweep,
//! the shutdown watch, the retries of a state write or a Redis connection),
//! and tasks posted to run on the event loop's next turn (the Redis batches
//! gathered meanwhile).
//!
//! nginx's debug log names every timer it expires or cancels by
//! `((ngx_connection_t *) ev->data)->fd` (`ngx_event_ident`), so even a bare
//! timer's `data` must point to a connection; nginx's cache manager keeps a
//! placeholder for this. Ours is a placeholder per timer, with `fd` -1, and
//! its own `data` carries what the handler needs. Only an nginx built with
//! `--with-debug` (Debian's is) reads it, at log level `debug`.

use core::ffi::c_void;
use core::ptr;

use nginx_sys::{
    ngx_add_timer, ngx_connection_t, ngx_del_timer, ngx_delete_posted_event, ngx_event_t,
    ngx_log_t, ngx_msec_t, ngx_post_event, ngx_posted_next_events,
};

pub struct Timer {
    event: ngx_event_t,
    placeholder: ngx_connection_t,
}

impl Timer {
    /// An idle timer; `handler` gets its event, and `Timer::data` of it gives
    /// back `data`. Cancelable: it never keeps an exiting worker alive.
    pub fn new(
        handler: unsafe extern "C" fn(*mut ngx_event_t),
        data: *mut c_void,
        log: *mut ngx_log_t,
    ) -> Box<Timer> {
        // SAFETY: a zeroed event is idle and a zeroed connection is inert;
        // both are only read by nginx through the pointers set here.
        let mut timer: Box<Timer> = Box::new(unsafe { core::mem::zeroed() });
        timer.placeholder.fd = -1;
        timer.placeholder.data = data;
        timer.event.handler = Some(handler);
        timer.event.log = log;
        timer.event.data = ptr::addr_of_mut!(timer.placeholder).cast();
        timer.event.set_cancelable(1);
        timer
    }

    pub fn is_armed(&self) -> bool {
        self.event.timer_set() != 0
    }

    /// Fires in `msec`, replacing any earlier deadline.
    pub fn arm(&mut self, msec: ngx_msec_t) {
        // SAFETY: our own event, in a box that outlives its place in the
        // timer tree (`Drop` takes it out); event-loop thread only.
        unsafe { ngx_add_timer(&mut self.event, msec) };
    }

    pub fn disarm(&mut self) {
        if self.is_armed() {
            // SAFETY: as in `arm`; armed, so it is in the tree.
            unsafe { ngx_del_timer(&mut self.event) };
        }
    }

    /// Runs the handler on the event loop's next turn, unless that is
    /// already due: nginx then polls once more without sleeping and runs it
    /// after that poll's events (its posted-next events).
    pub fn post_next_turn(&mut self) {
        // SAFETY: our own event, in a box that outlives its place in the
        // posted queue (`Drop` takes it out); event-loop thread only.
        unsafe { ngx_post_event(&mut self.event, ptr::addr_of_mut!(ngx_posted_next_events)) };
    }

    /// The `data` given to `new`, from the handler's event.
    ///
    /// # Safety
    /// `ev` must be the event of a live `Timer`.
    pub unsafe fn data(ev: *mut ngx_event_t) -> *mut c_void {
        // SAFETY: per the contract, `data` is the timer's placeholder.
        unsafe { (*(*ev).data.cast::<ngx_connection_t>()).data }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.disarm();
        if self.event.posted() != 0 {
            // SAFETY: posted, so it is in nginx's posted queue.
            unsafe { ngx_delete_posted_event(&mut self.event) };
        }
    }
}
