//! `ticket_admin`: look at a counter, move it forward, retire it.

use nginx_sys::{ngx_http_request_t, ngx_int_t};

use crate::http::send;

pub extern "C" fn ticket_admin_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls content handlers with a live request.
    let r = unsafe { &mut *r };
    send(r, 501, "text/plain", b"not implemented\n", None)
}
