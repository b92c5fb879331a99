//! AES-256-GCM a chunk at a time: `aes-gcm` wants the whole message in one buffer, and
//! a hub transfer can be many GiB. Built from RustCrypto's `ctr` and `ghash`.

use aes::cipher::{BlockEncrypt, KeyInit, KeyIvInit, StreamCipher};
use ghash::universal_hash::UniversalHash;

/// AES-256-GCM over a stream with a 96-bit nonce (NIST SP 800-38D): CTR from
/// inc32(J0) for the data, GHASH over AAD and ciphertext, the tag masked with E(J0).
pub(super) struct GcmStream {
    ctr: ctr::Ctr32BE<aes::Aes256>,
    ghash: ghash::GHash,
    mask: [u8; 16],
    aad_len: u64,
    len: u64,
    pending: [u8; 16],
    pending_len: usize,
}

impl GcmStream {
    pub(super) fn new(key: &[u8; 32], nonce: &[u8; 12], aad: &[u8]) -> GcmStream {
        let cipher = aes::Aes256::new(key.into());
        let mut h = [0u8; 16];
        cipher.encrypt_block((&mut h).into());
        let mut j0 = [0u8; 16];
        j0[..12].copy_from_slice(nonce);
        j0[15] = 1;
        let mut mask = j0;
        cipher.encrypt_block((&mut mask).into());
        let mut first = j0;
        first[15] = 2;
        let mut ghash = <ghash::GHash as ghash::universal_hash::KeyInit>::new(&h.into());
        ghash.update_padded(aad);
        GcmStream {
            ctr: ctr::Ctr32BE::<aes::Aes256>::new(key.into(), &first.into()),
            ghash,
            mask,
            aad_len: aad.len() as u64,
            len: 0,
            pending: [0; 16],
            pending_len: 0,
        }
    }

    /// GHASH takes whole blocks; a chunk's tail waits for the next chunk.
    fn absorb(&mut self, mut ct: &[u8]) {
        self.len += ct.len() as u64;
        if self.pending_len > 0 {
            let take = (16 - self.pending_len).min(ct.len());
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&ct[..take]);
            self.pending_len += take;
            ct = &ct[take..];
            if self.pending_len < 16 {
                return;
            }
            self.ghash.update(&[self.pending.into()]);
            self.pending_len = 0;
        }
        let whole = ct.len() / 16 * 16;
        if whole > 0 {
            self.ghash.update_padded(&ct[..whole]);
        }
        let rest = &ct[whole..];
        self.pending[..rest.len()].copy_from_slice(rest);
        self.pending_len = rest.len();
    }

    pub(super) fn encrypt(&mut self, buf: &mut [u8]) {
        self.ctr.apply_keystream(buf);
        self.absorb(buf);
    }

    pub(super) fn decrypt(&mut self, buf: &mut [u8]) {
        self.absorb(buf);
        self.ctr.apply_keystream(buf);
    }

    pub(super) fn tag(mut self) -> [u8; 16] {
        if self.pending_len > 0 {
            self.ghash.update_padded(&self.pending[..self.pending_len]);
        }
        let mut lens = [0u8; 16];
        lens[..8].copy_from_slice(&(self.aad_len * 8).to_be_bytes());
        lens[8..].copy_from_slice(&(self.len * 8).to_be_bytes());
        self.ghash.update(&[lens.into()]);
        let mut tag: [u8; 16] = self.ghash.finalize().into();
        for (t, m) in tag.iter_mut().zip(self.mask) {
            *t ^= m;
        }
        tag
    }
}
