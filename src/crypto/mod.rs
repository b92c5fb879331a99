//! Cryptography with a file format or a wire behind it: age sealing and the master
//! identities it seals to, hub request signatures.

pub mod age;
pub mod keyring;
pub mod signing;
pub mod tls;
