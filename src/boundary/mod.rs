//! Where files and requests enter or leave: each boundary authenticates, checks and hands
//! files to the ingest core. No boundary imports another.

pub mod http;
pub mod hub_export;
pub mod sap;
pub mod watch;
