//! What the database confirmed a moment ago, trusted again without asking it.
//!
//! A video player seeks with many range requests on one token and one job; each asked
//! PostgreSQL whether the token is still valid and the job still visible. Here a
//! confirmed answer is trusted for `[server] token_recheck_secs` (default 5) after the
//! question was asked, and asked again after that: a token revoked with `lxgate token
//! revoke` (another process, which cannot reach this cache) is refused at most that long
//! after the revocation. Keyed by the token's sha256, so no token is held; only what the
//! database confirmed gets in, so guessed tokens cannot fill it.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::tokens::{Principal, TokenHash};

/// More distinct entries than any host has in use within a few seconds; past it expired
/// entries are dropped, and if none are, the newcomer is simply not remembered.
const MAX_ENTRIES: usize = 10_000;

/// Tokens the database confirmed, by hash.
pub type Verified = Recent<TokenHash, Principal>;

pub struct Recent<K, V> {
    window: Duration,
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Hash + Eq, V: Clone> Recent<K, V> {
    /// Trust a confirmed answer for `window`; zero turns the cache off.
    pub fn new(window: Duration) -> Recent<K, V> {
        Recent {
            window,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The answer for `key` if the database gave it within the window, and when it was
    /// asked.
    pub fn get(&self, key: &K) -> Option<(V, Instant)> {
        if self.window.is_zero() {
            return None;
        }
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .filter(|(asked, _)| asked.elapsed() < self.window)
            .map(|(asked, v)| (v.clone(), *asked))
    }

    /// Remember the database's answer to a question asked at `asked` (before the query
    /// was sent, so the window bounds how old the answer is).
    pub fn insert(&self, key: K, value: &V, asked: Instant) {
        if self.window.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&key) {
            entries.retain(|_, (at, _)| at.elapsed() < self.window);
            if entries.len() >= MAX_ENTRIES {
                return;
            }
        }
        entries.insert(key, (asked, value.clone()));
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
    fn an_answer_is_trusted_for_the_window_from_when_it_was_asked() {
        let v = Verified::new(Duration::from_millis(200));
        let h = [7u8; 32];
        assert!(v.get(&h).is_none());
        v.insert(h, &p("a"), Instant::now());
        assert_eq!(v.get(&h).map(|(p, _)| p.label), Some("a".into()));
        assert!(v.get(&[8u8; 32]).is_none());
        std::thread::sleep(Duration::from_millis(210));
        assert!(v.get(&h).is_none(), "trusted past its window");
        // An answer to a question asked long ago is already stale when it arrives.
        v.insert(h, &p("a"), Instant::now() - Duration::from_secs(1));
        assert!(v.get(&h).is_none());
    }

    #[test]
    fn zero_turns_it_off_and_the_size_is_bounded() {
        let off = Verified::new(Duration::ZERO);
        off.insert([1; 32], &p("a"), Instant::now());
        assert!(off.get(&[1; 32]).is_none());
        let v = Verified::new(Duration::from_secs(60));
        for i in 0..(MAX_ENTRIES + 10) {
            let mut h = [0u8; 32];
            h[..8].copy_from_slice(&(i as u64).to_le_bytes());
            v.insert(h, &p("x"), Instant::now());
        }
        assert_eq!(v.entries.lock().unwrap().len(), MAX_ENTRIES);
    }
}
