//! ngx-ticket: an nginx module that hands out strictly ordered ticket numbers
//! from atomic counters in nginx shared memory, shared by every worker.
//!
//! The crate is split so that the nginx-facing files stay thin:
//! - pure core, unit-tested without nginx: [`config`] (directive arguments),
//!   [`counter`] (atomic ticket arithmetic), [`zone`] (shared-memory layout and
//!   key table), [`siphash`], [`response`] (bodies), [`status`] (status page),
//!   [`state`] (the state file of durable zones);
//! - the nginx edge: `module` (registration), `directives` (configuration),
//!   `shm` (zone init and reuse on reload), `durable` (state-file writes),
//!   `handler` (the HTTP handler).

pub mod config;
pub mod core;
pub mod counter;
pub mod response;
pub mod siphash;
pub mod state;
pub mod status;
pub mod zone;

// The edge refers to nginx's symbols, which only exist once nginx loads the
// module; unit tests link without nginx, so they leave it out.
#[cfg(not(test))]
mod directives;
#[cfg(not(test))]
mod durable;
#[cfg(not(test))]
mod handler;
#[cfg(not(test))]
mod module;
#[cfg(not(test))]
mod shm;
