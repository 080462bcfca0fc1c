//! One worker's connection to one Redis: connect, handshake, pipelined
//! commands, replies matched to them in order, timeouts, reconnects.
//!
//! Built on nginx's own `ngx_event_connect_peer` and connection events, as
//! nginx-acme does: no blocking call, no thread. The link only moves bytes
//! and keeps the order of what it expects back; what a reply means is
//! decided by its owner ([`crate::redis`]), which drives it with the events
//! the handlers report.
//!
//! On a timeout or any protocol trouble the connection is closed: a late
//! reply must never be matched to the wrong command.

use core::ffi::c_void;
use core::ptr;
use std::collections::VecDeque;
use std::net::SocketAddr;

use nginx_sys::{
    ngx_close_connection, ngx_connection_t, ngx_event_connect_peer, ngx_event_get_peer,
    ngx_event_t, ngx_handle_read_event, ngx_handle_write_event, ngx_log_t, ngx_msec_t,
    ngx_peer_connection_t, ngx_str_t, sockaddr, socklen_t, u_char,
};
use ngx::core::Status;

use crate::core::redis::handshake::{Handshake, HandshakeError, Progress, ServerInfo};
use crate::core::redis::resp::{Decoder, Value};
use crate::core::redis::url::RedisUrl;
use crate::timer::Timer;

/// What a command sent on the link was, so its reply goes where it belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    Handshake,
    /// An owner's command, identified by the owner.
    Owner(u64),
}

/// Where the link is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not connected; the retry timer reconnects.
    Down,
    Connecting,
    Handshaking,
    Ready,
}

/// What happened on the link, for its owner.
pub enum Event {
    /// The handshake is done: commands may go.
    Ready(Box<ServerInfo>),
    /// The reply to an owner's command.
    Reply(u64, Value),
    /// The connection is gone: these owner commands got no reply (they may
    /// or may not have run).
    Failed { lost: Vec<u64>, why: String },
}

/// Backoff between reconnects, doubling from the first to the last.
const RETRY_FIRST_MSEC: ngx_msec_t = 50;
const RETRY_LAST_MSEC: ngx_msec_t = 2000;
/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;

pub struct Link {
    pub url: RedisUrl,
    /// `host:port`, for the log.
    pub endpoint: String,
    pub timeout: ngx_msec_t,
    pub state: State,
    addr: Box<libc_sockaddr::Storage>,
    socklen: socklen_t,
    name: Box<ngx_str_t>,
    name_bytes: Vec<u8>,
    /// A copy of the cycle's log that names this Redis in every line.
    log: Box<ngx_log_t>,
    conn: *mut ngx_connection_t,
    handshake: Option<Handshake>,
    out: Vec<u8>,
    sent: usize,
    decoder: Decoder,
    /// Where replies are read into, [`READ_CHUNK`] bytes, kept for the
    /// link's life (a reply comes per batch).
    read_buf: Box<[u8]>,
    expects: VecDeque<Expect>,
    retry: Box<Timer>,
    backoff: ngx_msec_t,
    /// Failures since the link was last ready.
    pub failures: u32,
    /// Why the link was last said to be unavailable: a failure is logged
    /// when the link goes down, and again when a server that answered
    /// refused it for another reason (a restart that comes back as a
    /// replica), never on every retry.
    pub logged_why: String,
    /// The last failure was the server refusing the handshake (it answered).
    pub refused: bool,
    /// Who this link is to its owner: handed back by the event handlers.
    pub id: usize,
}

/// Socket addresses as nginx takes them.
mod libc_sockaddr {
    use std::net::SocketAddr;

    /// Room for an IPv4 or IPv6 socket address, in the kernel's layout.
    #[repr(C, align(8))]
    pub struct Storage(pub [u8; 28]);

    pub fn encode(addr: &SocketAddr) -> (Storage, u32) {
        let mut out = [0u8; 28];
        match addr {
            SocketAddr::V4(v4) => {
                out[..2].copy_from_slice(&(nginx_sys::AF_INET as u16).to_ne_bytes());
                out[2..4].copy_from_slice(&v4.port().to_be_bytes());
                out[4..8].copy_from_slice(&v4.ip().octets());
                (Storage(out), 16)
            }
            SocketAddr::V6(v6) => {
                out[..2].copy_from_slice(&(nginx_sys::AF_INET6 as u16).to_ne_bytes());
                out[2..4].copy_from_slice(&v6.port().to_be_bytes());
                out[4..8].copy_from_slice(&v6.flowinfo().to_be_bytes());
                out[8..24].copy_from_slice(&v6.ip().octets());
                out[24..28].copy_from_slice(&v6.scope_id().to_ne_bytes());
                (Storage(out), 28)
            }
        }
    }
}

/// Adds ", redis: HOST:PORT" to every line the link's log writes.
unsafe extern "C" fn log_handler(log: *mut ngx_log_t, buf: *mut u_char, len: usize) -> *mut u_char {
    // SAFETY: nginx calls this with our log copy, whose `data` is the link's
    // endpoint bytes (kept alive by the link), and a buffer of `len` bytes.
    unsafe {
        let link = (*log).data.cast::<Link>();
        let Some(link) = link.as_ref() else {
            return buf;
        };
        let text = format!(", redis: {}", link.endpoint);
        let n = text.len().min(len);
        ptr::copy_nonoverlapping(text.as_ptr(), buf, n);
        buf.add(n)
    }
}

impl Link {
    pub fn new(
        url: RedisUrl,
        addr: SocketAddr,
        timeout: ngx_msec_t,
        cycle_log: *mut ngx_log_t,
        id: usize,
        on_retry: unsafe extern "C" fn(*mut ngx_event_t),
    ) -> Box<Link> {
        let (storage, socklen) = libc_sockaddr::encode(&addr);
        let endpoint = url.endpoint();
        let name_bytes = endpoint.as_bytes().to_vec();
        // SAFETY: the cycle's log is a valid ngx_log_t; the copy lives in the
        // link and only changes what lines add.
        let mut log = Box::new(unsafe { cycle_log.read() });
        // The box keeps the log where the retry timer points to.
        let retry = Timer::new(on_retry, id as *mut c_void, &mut *log);
        let mut link = Box::new(Link {
            url,
            endpoint,
            timeout,
            state: State::Down,
            addr: Box::new(storage),
            socklen,
            name: Box::new(ngx_str_t::empty()),
            name_bytes,
            log,
            conn: ptr::null_mut(),
            handshake: None,
            out: Vec::new(),
            sent: 0,
            decoder: Decoder::new(),
            read_buf: vec![0u8; READ_CHUNK].into_boxed_slice(),
            expects: VecDeque::new(),
            retry,
            backoff: RETRY_FIRST_MSEC,
            failures: 0,
            logged_why: String::new(),
            refused: false,
            id,
        });
        let this: *mut Link = &mut *link;
        link.name.len = link.name_bytes.len();
        link.name.data = link.name_bytes.as_mut_ptr();
        link.log.handler = Some(log_handler);
        link.log.data = this.cast();
        link.log.action = ptr::null_mut();
        link
    }

    pub fn log(&mut self) -> *mut ngx_log_t {
        &mut *self.log
    }

    /// Starts connecting. `handlers` are the owner's read and write event
    /// handlers (they get the link back through `c->data`).
    pub fn connect(
        &mut self,
        read: unsafe extern "C" fn(*mut ngx_event_t),
        write: unsafe extern "C" fn(*mut ngx_event_t),
    ) -> Result<(), String> {
        // SAFETY: a zeroed peer connection is nginx's initial state; the
        // address, name and log it points to live in the link.
        let rc = unsafe {
            let mut pc: ngx_peer_connection_t = core::mem::zeroed();
            pc.sockaddr = (&mut *self.addr as *mut libc_sockaddr::Storage).cast::<sockaddr>();
            pc.socklen = self.socklen;
            pc.name = &mut *self.name;
            pc.get = Some(ngx_event_get_peer);
            pc.log = &mut *self.log;
            pc.set_log_error(nginx_sys::ngx_connection_log_error_e_NGX_ERROR_ERR as _);
            let rc = ngx_event_connect_peer(&mut pc);
            self.conn = pc.connection;
            rc
        };
        if rc == Status::NGX_ERROR.0 || rc == Status::NGX_BUSY.0 || rc == Status::NGX_DECLINED.0 {
            self.close();
            return Err("connect() failed".into());
        }
        let link: *mut Link = self;
        // SAFETY: nginx made the connection; we own it until `close`.
        unsafe {
            let c = &mut *self.conn;
            c.data = link.cast();
            (*c.read).handler = Some(read);
            (*c.write).handler = Some(write);
            c.log = &mut *self.log;
            (*c.read).log = c.log;
            (*c.write).log = c.log;
            // Its connect and reply timers never hold up a worker's
            // graceful exit (a mute Redis would for `redis_timeout`): a
            // request that waits for a reply holds the worker by its own
            // deadline, and the timers still fire while the worker runs.
            (*c.read).set_cancelable(1);
            (*c.write).set_cancelable(1);
        }
        self.state = State::Connecting;
        self.decoder = Decoder::new();
        self.out.clear();
        self.sent = 0;
        if rc == Status::NGX_AGAIN.0 {
            // SAFETY: the connection's own write event.
            unsafe { nginx_sys::ngx_add_timer((*self.conn).write, self.timeout) };
            return Ok(());
        }
        self.start_handshake()
    }

    /// The connect finished (the write event fired while connecting).
    pub fn connected(&mut self) -> Result<(), String> {
        let c = self.conn;
        if c.is_null() {
            return Err("no connection".into());
        }
        // SAFETY: our live connection.
        unsafe {
            if (*(*c).write).timedout() != 0 {
                return Err("connect timed out".into());
            }
            if (*(*c).write).timer_set() != 0 {
                nginx_sys::ngx_del_timer((*c).write);
            }
            let mut err: core::ffi::c_int = 0;
            let mut len = core::mem::size_of::<core::ffi::c_int>() as socklen_t;
            let rc = nginx_sys::getsockopt(
                (*c).fd,
                nginx_sys::SOL_SOCKET as _,
                nginx_sys::SO_ERROR as _,
                (&mut err as *mut core::ffi::c_int).cast::<c_void>(),
                &mut len,
            );
            if rc == -1 || err != 0 {
                let err = if rc == -1 {
                    nginx_sys::ngx_socket_errno()
                } else {
                    err
                };
                return Err(format!("connect() failed ({err}: {})", os_error(err)));
            }
        }
        self.start_handshake()
    }

    fn start_handshake(&mut self) -> Result<(), String> {
        // Small pipelined commands must not wait for acknowledgements.
        // SAFETY: our live, connected socket.
        if unsafe { nginx_sys::ngx_tcp_nodelay(self.conn) } != Status::NGX_OK.0 {
            return Err("could not set TCP_NODELAY".into());
        }
        let handshake = Handshake::new(&self.url);
        handshake.encode(&mut self.out);
        for _ in handshake.steps() {
            self.expects.push_back(Expect::Handshake);
        }
        self.handshake = Some(handshake);
        self.state = State::Handshaking;
        self.flush()
    }

    /// Encodes straight into the output buffer; `expects` owner ids follow,
    /// one per command encoded.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    pub fn expect(&mut self, expect: u64) {
        self.expects.push_back(Expect::Owner(expect));
    }

    /// Commands encoded and not yet (all) written.
    pub fn has_unsent(&self) -> bool {
        self.sent < self.out.len()
    }

    /// Writes what the connection takes; arms the reply timer.
    pub fn flush(&mut self) -> Result<(), String> {
        let c = self.conn;
        if c.is_null() || self.state == State::Connecting {
            return Ok(());
        }
        // SAFETY: our live connection; `send` is nginx's function for it.
        unsafe {
            let Some(send) = (*c).send else {
                return Err("no send function".into());
            };
            while self.sent < self.out.len() {
                let rest = &mut self.out[self.sent..];
                let n = send(c, rest.as_mut_ptr(), rest.len());
                if n == Status::NGX_AGAIN.0 {
                    break;
                }
                if n <= 0 {
                    return Err("send() failed".into());
                }
                self.sent += n as usize;
            }
            if self.sent == self.out.len() {
                self.out.clear();
                self.sent = 0;
            }
            if ngx_handle_write_event((*c).write, 0) != Status::NGX_OK.0 {
                return Err("could not wait for the connection".into());
            }
            if !self.expects.is_empty() && (*(*c).read).timer_set() == 0 {
                nginx_sys::ngx_add_timer((*c).read, self.timeout);
            }
        }
        Ok(())
    }

    /// Reads and decodes whatever arrived; returns the events, in order.
    pub fn read(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        match self.read_replies(&mut events) {
            Ok(()) => {}
            Err(why) => events.push(self.fail(why)),
        }
        events
    }

    fn read_replies(&mut self, events: &mut Vec<Event>) -> Result<(), String> {
        let c = self.conn;
        if c.is_null() {
            return Ok(());
        }
        // SAFETY: our live connection; `recv` is nginx's function for it.
        unsafe {
            if (*(*c).read).timedout() != 0 {
                return Err(format!("no reply within {} ms", self.timeout));
            }
            let Some(recv) = (*c).recv else {
                return Err("no recv function".into());
            };
            loop {
                let n = recv(c, self.read_buf.as_mut_ptr(), self.read_buf.len());
                if n == Status::NGX_AGAIN.0 {
                    break;
                }
                if n < 0 {
                    return Err("recv() failed".into());
                }
                // Replies are taken as each chunk comes, also before an
                // end of stream: a peer that is not Redis is told by what
                // it sent, and one that streams is stopped by the decoder's
                // bounds or by a reply nobody asked for, not by memory.
                self.decoder.feed(&self.read_buf[..n as usize]);
                self.take_replies(events)?;
                if n == 0 {
                    return Err("connection closed by redis".into());
                }
            }
        }
        // SAFETY: our live connection.
        unsafe {
            let rev = (*c).read;
            if self.expects.is_empty() {
                if (*rev).timer_set() != 0 {
                    nginx_sys::ngx_del_timer(rev);
                }
            } else {
                // progress: the next reply gets the whole timeout
                nginx_sys::ngx_add_timer(rev, self.timeout);
            }
            if ngx_handle_read_event(rev, 0) != Status::NGX_OK.0 {
                return Err("could not wait for the connection".into());
            }
        }
        Ok(())
    }

    /// Hands out every complete reply the decoder holds.
    fn take_replies(&mut self, events: &mut Vec<Event>) -> Result<(), String> {
        loop {
            let value = match self.decoder.next_value() {
                Ok(Some(value)) => value,
                Ok(None) => break,
                Err(err) => return Err(format!("not a Redis reply ({err})")),
            };
            match self.expects.pop_front() {
                Some(Expect::Handshake) => {
                    let handshake = self.handshake.as_mut().ok_or("unexpected reply")?;
                    match handshake.on_reply(value) {
                        Ok(Progress::Continue) => {}
                        Ok(Progress::Done(info)) => {
                            self.handshake = None;
                            self.state = State::Ready;
                            self.backoff = RETRY_FIRST_MSEC;
                            events.push(Event::Ready(info));
                        }
                        Err(err) => {
                            self.refused = true;
                            return Err(handshake_error(&err));
                        }
                    }
                }
                Some(Expect::Owner(id)) => events.push(Event::Reply(id, value)),
                None => return Err("a reply nobody asked for".into()),
            }
        }
        Ok(())
    }

    /// Closes the connection after `why`; reports what got no reply and
    /// arms the reconnect.
    pub fn fail(&mut self, why: String) -> Event {
        self.close();
        let lost = self
            .expects
            .drain(..)
            .filter_map(|e| match e {
                Expect::Owner(id) => Some(id),
                Expect::Handshake => None,
            })
            .collect();
        self.failures = self.failures.saturating_add(1);
        if !self.retry.is_armed() && !crate::process::exiting() {
            self.retry.arm(self.backoff);
            self.backoff = (self.backoff * 2).min(RETRY_LAST_MSEC);
        }
        Event::Failed { lost, why }
    }

    /// Closes the connection (nothing more is read or written).
    pub fn close(&mut self) {
        if !self.conn.is_null() {
            // SAFETY: our connection, made by ngx_event_connect_peer; nginx
            // deletes its timers and posted events when closing it.
            unsafe { ngx_close_connection(self.conn) };
            self.conn = ptr::null_mut();
        }
        self.state = State::Down;
        self.handshake = None;
        self.out.clear();
        self.sent = 0;
    }

    /// At exit: nothing stays armed or open.
    pub fn shut(&mut self) {
        self.close();
        self.retry.disarm();
        self.expects.clear();
    }
}

fn handshake_error(err: &HandshakeError) -> String {
    err.to_string()
}

fn os_error(err: core::ffi::c_int) -> String {
    std::io::Error::from_raw_os_error(err).to_string()
}
