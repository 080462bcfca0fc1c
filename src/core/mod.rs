//! The pure core: everything that needs no nginx. Argument parsing, counter
//! arithmetic, the shared-memory layout and key table, response and status
//! rendering, the state file. No `unsafe` here; `cargo test` runs it all.

pub mod admin;
pub mod config;
pub mod counter;
pub mod redis;
pub mod reserve;
pub mod response;
pub mod siphash;
pub mod state;
pub mod status;
pub mod table;
