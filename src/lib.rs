//! lxgate: the runtime boundary for clinic patient media. The binary (`src/main.rs`)
//! only parses arguments (`src/cli/`); everything it runs lives here so tests share it.
//!
//! Layers, each a folder, imported only downwards:
//! - `config` (a leaf) and `contract` (the runtime contract as data, and its renderers);
//! - `db`, `crypto` (age, request signatures), `access` (tokens, site nodes);
//! - `ingest`: the one ingest core every boundary hands files to;
//! - `hub`: the hub transfer protocol (wire types, media envelope, recipient keys),
//!   which the sender and the receiver boundaries both speak;
//! - `boundary/`: where files and requests come in (HTTP, watcher, SAP import, hub
//!   export); a boundary never imports another boundary;
//! - `ops/`: operator commands over the layers above (doctor, smoke, recover, keys, ...);
//! - beside them, used by every layer: `durable` (fsynced atomic writes), `byte_range`
//!   (what a Range header asks of a stored object), `logging`
//!   and `audit` (the journal, and the audit trail in it), `systemd` (readiness and
//!   the watchdog), `progress` (bars on a terminal for long operator work).

pub mod access;
pub mod audit;
pub mod boundary;
pub mod byte_range;
pub mod config;
pub mod contract;
pub mod crypto;
pub mod db;
pub(crate) mod durable;
pub mod hub;
pub mod ingest;
pub mod logging;
pub mod ops;
pub mod progress;
pub(crate) mod systemd;
