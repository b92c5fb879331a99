//! Who may do what: API bearer tokens and the site nodes a hub accepts transfers from.

pub mod media;
pub mod nodes;
pub mod replay;
pub mod tokens;
pub mod verified;
