//! Site → hub export (SPEC §8). The receiver's HTTP side lives in `http::transfers`.
pub mod export;
pub mod nodes;
pub mod signing;
