//! lxgate: the runtime boundary for clinic patient media. The binary (`src/main.rs`)
//! only parses arguments; everything it runs lives here so tests share it.

pub mod age;
pub mod auth;
pub mod config;
pub mod contract;
pub mod db;
pub mod dev;
pub mod doctor;
pub mod http;
pub mod hub;
pub mod ingest;
pub mod keys;
pub mod metrics;
pub mod pgcluster;
pub mod recover;
pub mod render;
pub mod sap;
pub mod sdnotify;
pub mod smoke;
pub mod storage_audit;
pub mod watch;
