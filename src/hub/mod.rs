//! Hub transfer as a protocol, shared by the site's sender (`boundary::hub_export`)
//! and the hub's receiver (`boundary::http::transfers`): the wire types (`wire`), the
//! media envelope (`envelope`) and its X25519 recipient keys (`keys`).
//!
//! A layer below the boundaries, beside `ingest` and `access`: it knows no HTTP
//! library, no database and no storage, so both sides read the same definitions.

pub mod envelope;
pub mod keys;
pub mod wire;
