//! Cryptography with a file format or a wire behind it: age sealing, hub request signatures.

pub mod age;
pub mod signing;
pub mod tls;
