//! HTTP: the content handlers (`ticket_counter`, `ticket_status`,
//! `ticket_admin`) and the `ticket_variable` variables, plus what they share
//! here: answers as short bodies with their status codes, never a panic.

pub mod admin;
pub mod counter;
pub mod status;
pub mod variable;

use core::ptr;

use nginx_sys::{
    ngx_buf_t, ngx_chain_t, ngx_create_temp_buf, ngx_http_discard_request_body,
    ngx_http_output_filter, ngx_http_request_t, ngx_http_send_header, ngx_int_t, ngx_list_push,
    ngx_log_t, ngx_str_t, ngx_table_elt_t, ngx_uint_t, NGX_HTTP_HEAD,
};
use ngx::core::Status;

use crate::take::Refusal;

pub fn log(r: &ngx_http_request_t) -> *mut ngx_log_t {
    // SAFETY: a request being handled always has its connection.
    unsafe { (*r.connection).log }
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

/// Sets the status and headers every answer of this module carries.
pub fn set_headers(
    r: &mut ngx_http_request_t,
    status: ngx_uint_t,
    content_type: &'static str,
    allow: Option<&'static str>,
) -> bool {
    r.headers_out.status = status;
    r.headers_out.content_type = ngx_str_t {
        len: content_type.len(),
        data: content_type.as_ptr().cast_mut(),
    };
    r.headers_out.content_type_len = content_type.len();
    r.headers_out.content_type_lowcase = ptr::null_mut();
    add_static_header(r, "Cache-Control", "no-store")
        && allow.is_none_or(|allow| add_static_header(r, "Allow", allow))
}

pub fn is_head(r: &ngx_http_request_t) -> bool {
    r.method == NGX_HTTP_HEAD as ngx_uint_t
}

/// Sends a complete response: status, headers, and `body` unless HEAD.
pub fn send(
    r: &mut ngx_http_request_t,
    status: ngx_uint_t,
    content_type: &'static str,
    body: &[u8],
    allow: Option<&'static str>,
) -> ngx_int_t {
    if !set_headers(r, status, content_type, allow) {
        return Status::NGX_ERROR.into();
    }
    if is_head(r) {
        // HEAD: the length of a ticket we did not take is unknown.
        r.headers_out.content_length_n = -1;
        // SAFETY: headers are complete.
        return unsafe { ngx_http_send_header(r) };
    }
    r.headers_out.content_length_n = body.len() as _;

    // SAFETY: the buffer comes from the request pool and outlives the output;
    // the output chain links are copied by the write filter.
    unsafe {
        let buf: *mut ngx_buf_t = ngx_create_temp_buf(r.pool, body.len().max(1));
        if buf.is_null() {
            return Status::NGX_ERROR.into();
        }
        ptr::copy_nonoverlapping(body.as_ptr(), (*buf).last, body.len());
        (*buf).last = (*buf).last.add(body.len());
        let is_main = ptr::eq(r, r.main);
        (*buf).set_last_buf(is_main as _);
        (*buf).set_last_in_chain(1);

        let rc = ngx_http_send_header(r);
        if rc == Status::NGX_ERROR.0 || rc > Status::NGX_OK.0 {
            return rc;
        }
        let mut out = ngx_chain_t {
            buf,
            next: ptr::null_mut(),
        };
        ngx_http_output_filter(r, &mut out)
    }
}

/// Answers with a refusal's status and body.
pub fn refuse(r: &mut ngx_http_request_t, refusal: Refusal) -> ngx_int_t {
    if refusal == Refusal::Replaced {
        // this worker is on its way out: the client's next request goes on
        // a new connection, which a worker of the new configuration takes
        r.set_keepalive(0);
    }
    send(
        r,
        refusal.status(),
        "text/plain",
        refusal.body().as_bytes(),
        None,
    )
}

/// Answers methods other than those in `allow` with 405, after reading the
/// body away so the connection stays usable. `None`: the method is allowed.
pub fn check_method(
    r: &mut ngx_http_request_t,
    methods: ngx_uint_t,
    allow: &'static str,
) -> Option<ngx_int_t> {
    // SAFETY: a request in its content phase.
    let rc = unsafe { ngx_http_discard_request_body(r) };
    if rc != Status::NGX_OK.0 {
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

/// A query argument's raw (escaped) value.
pub fn query_arg<'r>(r: &'r mut ngx_http_request_t, name: &str) -> Option<&'r [u8]> {
    let mut value = ngx_str_t::empty();
    // SAFETY: looks up a query argument of this request; the value points
    // into the request line, which lives as long as the request.
    let found =
        unsafe { nginx_sys::ngx_http_arg(r, name.as_ptr().cast_mut(), name.len(), &mut value) };
    if found != Status::NGX_OK.0 {
        return None;
    }
    if value.len == 0 {
        return Some(&[]);
    }
    // SAFETY: as above.
    Some(unsafe { core::slice::from_raw_parts(value.data, value.len) })
}
