//! ngx-ticket: an nginx module that hands out strictly ordered ticket numbers
//! from atomic counters in nginx shared memory, shared by every worker.
//!
//! The crate reads as its architecture:
//! - [`core`]: the pure core, unit-tested without nginx (directive arguments,
//!   counter arithmetic, the zone layout and key table, response and status
//!   rendering, the state file). No `unsafe`.
//! - the nginx edge beside it, thin: `module` (registration), `conf` (the
//!   configuration types, a leaf), `directives` (directive handlers),
//!   `zone_init` (shared zones: init, reuse on reload, carry-over on resize),
//!   `http` (the HTTP handlers and the variable), `wait` (the one way a
//!   request waits), `durable` (the state-file writer), `process` (pids,
//!   clocks, the worker user; a leaf).
//!
//! Imports go one way, from the edge down to `conf`, `process` and `core`.
//! The only two-way tie is `module` and the files that look up their
//! configuration through its `TicketModule` (directives, handlers, zone
//! init): nginx hands each of them only a pointer, and the module is where
//! the typed lookup lives.

pub mod core;

// The edge refers to nginx's symbols, which only exist once nginx loads the
// module; unit tests link without nginx, so they leave it out.
#[cfg(not(test))]
mod conf;
#[cfg(not(test))]
mod directives;
#[cfg(not(test))]
mod durable;
#[cfg(not(test))]
mod http;
#[cfg(not(test))]
mod module;
#[cfg(not(test))]
mod process;
#[cfg(not(test))]
mod redis;
#[cfg(not(test))]
mod sweep;
#[cfg(not(test))]
mod take;
#[cfg(not(test))]
mod timer;
#[cfg(not(test))]
mod wait;
#[cfg(not(test))]
mod zone_init;
