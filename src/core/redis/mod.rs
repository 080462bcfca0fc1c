//! Cluster mode: ticket counters kept in Redis, the authority shared by every
//! nginx node. Everything here is pure (no nginx, no sockets, no `unsafe`);
//! the edge owns the connections and drives these types from nginx events.
//!
//! - [`url`]: `redis://` URLs of `ticket_zone`, with the password redacted in
//!   every message;
//! - [`resp`]: the RESP2 command encoder and incremental reply decoder;
//! - [`handshake`]: what a fresh connection sends and how replies are checked;
//! - [`keys`]: Redis key names of a zone's counters;
//! - [`scripts`]: the Lua scripts (`take`, `fence`, `admin_*`), their
//!   arguments and replies;
//! - [`batch`]: group commit, one `take` in flight per counter and worker;
//! - [`ids`]: maps keyed by the worker's own request and command ids;
//! - [`reply`]: typed fields of replies and reply errors;
//! - [`known`]: what a node remembers of a counter, and where a lease goes.
//!
//! A connection's life, as the edge sees it: [`handshake::Handshake`] until
//! [`handshake::Progress::Done`], then `fence` for each zone on the
//! connection, then `take` batches from each [`batch::KeyQueue`]. Any
//! [`resp::ProtocolError`] closes the connection and fails what is in flight.

pub mod batch;
pub mod handshake;
pub mod ids;
pub mod keys;
pub mod known;
pub mod reply;
pub mod resp;
pub mod scripts;
pub mod url;

#[cfg(test)]
mod live_tests;
