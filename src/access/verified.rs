//! Tokens the database confirmed a moment ago, trusted again without asking it.
//!
//! A video player seeks with many range requests on one token; each asked PostgreSQL
//! whether the token is still valid. Here a confirmed token is trusted for
//! `[server] token_recheck_secs` (default 5) after its check, and asked again after
//! that: a token revoked with `lxgate token revoke` (another process, which cannot
//! reach this cache) is refused at most that long after the revocation. Keyed by the
//! token's sha256, so the cache holds no token; only tokens the database confirmed get
//! in, so guessed tokens cannot fill it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::tokens::{Principal, TokenHash};

/// More distinct valid tokens than any host has in use within a few seconds; past it
/// expired entries are dropped, and if none are, the newcomer is simply not cached.
const MAX_ENTRIES: usize = 10_000;

pub struct Verified {
    window: Duration,
    entries: Mutex<HashMap<TokenHash, (Instant, Principal)>>,
}

impl Verified {
    /// Trust a confirmed token for `window`; zero turns the cache off.
    pub fn new(window: Duration) -> Verified {
        Verified {
            window,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The principal of a token the database confirmed within the window.
    pub fn get(&self, hash: &TokenHash) -> Option<Principal> {
        if self.window.is_zero() {
            return None;
        }
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(hash)
            .filter(|(at, _)| at.elapsed() < self.window)
            .map(|(_, p)| p.clone())
    }

    /// Remember that the database confirmed this token just now.
    pub fn insert(&self, hash: TokenHash, principal: &Principal) {
        if self.window.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&hash) {
            entries.retain(|_, (at, _)| at.elapsed() < self.window);
            if entries.len() >= MAX_ENTRIES {
                return;
            }
        }
        entries.insert(hash, (Instant::now(), principal.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::tokens::TokenRole;

    fn p(label: &str) -> Principal {
        Principal {
            token_id: 1,
            label: label.into(),
            role: TokenRole::Viewer,
            center: Some((1, "A".into())),
        }
    }

    #[test]
    fn a_token_is_trusted_for_the_window_then_asked_again() {
        let v = Verified::new(Duration::from_millis(50));
        let h = [7u8; 32];
        assert!(v.get(&h).is_none());
        v.insert(h, &p("a"));
        assert_eq!(v.get(&h).map(|p| p.label), Some("a".into()));
        assert!(v.get(&[8u8; 32]).is_none());
        std::thread::sleep(Duration::from_millis(60));
        assert!(v.get(&h).is_none(), "trusted past its window");
    }

    #[test]
    fn zero_turns_it_off_and_the_size_is_bounded() {
        let off = Verified::new(Duration::ZERO);
        off.insert([1; 32], &p("a"));
        assert!(off.get(&[1; 32]).is_none());
        let v = Verified::new(Duration::from_secs(60));
        for i in 0..(MAX_ENTRIES + 10) {
            let mut h = [0u8; 32];
            h[..8].copy_from_slice(&(i as u64).to_le_bytes());
            v.insert(h, &p("x"));
        }
        assert_eq!(v.entries.lock().unwrap().len(), MAX_ENTRIES);
    }
}
