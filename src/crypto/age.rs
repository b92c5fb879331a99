//! The age v1 file format (https://age-encryption.org/v1) with X25519 recipients: what
//! lxgate needs to seal small artifacts to the master identity and open them again.
//! Written against the specification and checked both ways against the `age` CLI in
//! tests/age.rs; only the X25519 stanza is supported (no scrypt, no plugins).

use std::io::{self, BufRead, Read, Write};

use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::ChaCha20Poly1305;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};

const INTRO: &str = "age-encryption.org/v1";
const X25519_INFO: &[u8] = b"age-encryption.org/v1/X25519";
const CHUNK: usize = 64 * 1024;
const TAG: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum AgeError {
    #[error("not an age identity: {0}")]
    BadIdentity(String),
    #[error("not an age recipient (age1…): {0}")]
    BadRecipient(String),
    #[error("not an age v1 file: {0}")]
    BadHeader(String),
    #[error("no identity matches this file: it was sealed to another key")]
    NoMatch,
    #[error("the header MAC does not verify: the file was altered")]
    HeaderMac,
    #[error("the payload does not decrypt: the file was altered or truncated")]
    Payload,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// An X25519 identity (`AGE-SECRET-KEY-1…`).
pub struct Identity(StaticSecret);

/// An X25519 recipient (`age1…`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Recipient(PublicKey);

impl Identity {
    pub fn generate() -> Identity {
        let mut b = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut b);
        Identity(StaticSecret::from(b))
    }

    pub fn parse(s: &str) -> Result<Identity, AgeError> {
        let bad = || AgeError::BadIdentity("expected AGE-SECRET-KEY-1…".into());
        let (hrp, data) = bech32::decode(s.trim()).map_err(|_| bad())?;
        if !hrp.as_str().eq_ignore_ascii_case("age-secret-key-") || data.len() != 32 {
            return Err(bad());
        }
        let mut b = [0u8; 32];
        b.copy_from_slice(&data);
        Ok(Identity(StaticSecret::from(b)))
    }

    /// The first identity in an identity file (`#` comments and blank lines skipped).
    pub fn from_file(path: &std::path::Path) -> Result<Identity, AgeError> {
        let text = std::fs::read_to_string(path)?;
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or_else(|| AgeError::BadIdentity(format!("{} holds no key", path.display())))?;
        Identity::parse(line)
    }

    pub fn recipient(&self) -> Recipient {
        Recipient(PublicKey::from(&self.0))
    }

    pub fn to_secret_string(&self) -> String {
        let hrp = bech32::Hrp::parse("age-secret-key-").expect("valid hrp");
        bech32::encode::<bech32::Bech32>(hrp, self.0.as_bytes())
            .expect("32 bytes encode")
            .to_uppercase()
    }
}

impl Recipient {
    pub fn parse(s: &str) -> Result<Recipient, AgeError> {
        let (hrp, data) =
            bech32::decode(s.trim()).map_err(|e| AgeError::BadRecipient(e.to_string()))?;
        if !hrp.as_str().eq_ignore_ascii_case("age") || data.len() != 32 {
            return Err(AgeError::BadRecipient(s.into()));
        }
        let mut b = [0u8; 32];
        b.copy_from_slice(&data);
        Ok(Recipient(PublicKey::from(b)))
    }
}

impl std::fmt::Display for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hrp = bech32::Hrp::parse("age").expect("valid hrp");
        let s = bech32::encode::<bech32::Bech32>(hrp, self.0.as_bytes()).expect("encodes");
        f.write_str(&s)
    }
}

fn hkdf(ikm: &[u8], salt: &[u8], info: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    hkdf::Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(info, &mut out)
        .expect("32 bytes is a valid HKDF length");
    out
}

fn header_mac(file_key: &[u8; 16], header_up_to_dashes: &[u8]) -> Hmac<Sha256> {
    let key = hkdf(file_key, b"", b"header");
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("any key length");
    mac.update(header_up_to_dashes);
    mac
}

fn stream_nonce(counter: u64, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[3..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = last as u8;
    n
}

/// Read up to `buf.len()` bytes, fewer only at the end of the input.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Length of the header `encrypt` writes: one X25519 stanza, every field fixed-size.
const HEADER_LEN: u64 = 22 + (10 + 43 + 1) + (43 + 1) + (4 + 43 + 1);

/// The exact size of the age file `encrypt` makes from `plain_len` bytes, so a sealed
/// stream can be sent with a Content-Length.
pub fn sealed_len(plain_len: u64) -> u64 {
    let chunks = plain_len.div_ceil(CHUNK as u64).max(1);
    HEADER_LEN + 16 + plain_len + chunks * TAG as u64
}

/// A `Read` over byte chunks arriving from elsewhere (a channel fed by another thread or
/// task), so `encrypt`/`decrypt` can sit in the middle of a stream.
pub struct ChunkReader<I, B> {
    chunks: I,
    cur: Option<B>,
    pos: usize,
}

impl<I: Iterator<Item = B>, B: AsRef<[u8]>> ChunkReader<I, B> {
    pub fn new(chunks: I) -> Self {
        ChunkReader {
            chunks,
            cur: None,
            pos: 0,
        }
    }
}

impl<I: Iterator<Item = B>, B: AsRef<[u8]>> Read for ChunkReader<I, B> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(c) = &self.cur {
                let rest = &c.as_ref()[self.pos..];
                if !rest.is_empty() {
                    let n = rest.len().min(buf.len());
                    buf[..n].copy_from_slice(&rest[..n]);
                    self.pos += n;
                    return Ok(n);
                }
            }
            match self.chunks.next() {
                Some(c) => {
                    self.cur = Some(c);
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
    }
}

/// Seal everything `input` yields to `to`, writing the age file to `out`.
pub fn encrypt(to: &Recipient, input: &mut impl Read, out: &mut impl Write) -> io::Result<()> {
    let mut file_key = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut file_key);

    let ephemeral = StaticSecret::random_from_rng(rand::rngs::OsRng);
    let share = PublicKey::from(&ephemeral);
    let shared = ephemeral.diffie_hellman(&to.0);
    let mut salt = share.as_bytes().to_vec();
    salt.extend_from_slice(to.0.as_bytes());
    let wrap = hkdf(shared.as_bytes(), &salt, X25519_INFO);
    let body = ChaCha20Poly1305::new((&wrap).into())
        .encrypt((&[0u8; 12]).into(), file_key.as_slice())
        .expect("wrapping 16 bytes cannot fail");

    let mut header = format!("{INTRO}\n-> X25519 {}\n", B64.encode(share.as_bytes()));
    // Stanza bodies are wrapped at 64 columns; the last line is always shorter.
    let b = B64.encode(&body);
    for chunk in b.as_bytes().chunks(64) {
        header.push_str(std::str::from_utf8(chunk).expect("base64 is ascii"));
        header.push('\n');
    }
    if b.len() % 64 == 0 {
        header.push('\n');
    }
    header.push_str("---");
    let mac = header_mac(&file_key, header.as_bytes())
        .finalize()
        .into_bytes();
    header.push_str(&format!(" {}\n", B64.encode(mac)));
    out.write_all(header.as_bytes())?;

    let mut nonce = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    out.write_all(&nonce)?;
    let aead = ChaCha20Poly1305::new((&hkdf(&file_key, &nonce, b"payload")).into());
    // Read one chunk ahead so the last chunk (the only one flagged) is known.
    let mut cur = vec![0u8; CHUNK];
    let mut next = vec![0u8; CHUNK];
    let mut n = fill(input, &mut cur)?;
    let mut counter = 0u64;
    loop {
        let m = if n == CHUNK {
            fill(input, &mut next)?
        } else {
            0
        };
        let last = m == 0;
        let sealed = aead
            .encrypt((&stream_nonce(counter, last)).into(), &cur[..n])
            .map_err(|_| io::Error::other("chunk encryption failed"))?;
        out.write_all(&sealed)?;
        if last {
            return Ok(());
        }
        std::mem::swap(&mut cur, &mut next);
        n = m;
        counter += 1;
    }
}

fn read_line<R: BufRead>(input: &mut R) -> Result<String, AgeError> {
    let bad = |m: &str| AgeError::BadHeader(m.to_string());
    let mut l = Vec::new();
    input.take(4096).read_until(b'\n', &mut l)?;
    if l.last() != Some(&b'\n') {
        return Err(bad("header line too long or file truncated"));
    }
    l.pop();
    String::from_utf8(l).map_err(|_| bad("header is not text"))
}

/// Open an age file sealed to `identity`, writing the plaintext to `out`.
pub fn decrypt(
    identity: &Identity,
    input: &mut impl BufRead,
    out: &mut impl Write,
) -> Result<(), AgeError> {
    let bad = |m: &str| AgeError::BadHeader(m.to_string());
    let mut header_text = String::new();
    let intro = read_line(input)?;
    if intro != INTRO {
        return Err(bad("missing age-encryption.org/v1 line"));
    }
    header_text.push_str(&intro);
    header_text.push('\n');
    let mut file_key: Option<[u8; 16]> = None;
    let mac_line = loop {
        let line = read_line(input)?;
        if let Some(rest) = line.strip_prefix("---") {
            header_text.push_str("---");
            break rest.trim_start().to_string();
        }
        let args: Vec<&str> = line
            .strip_prefix("-> ")
            .ok_or_else(|| bad("expected a stanza (-> …) or ---"))?
            .split(' ')
            .collect();
        header_text.push_str(&line);
        header_text.push('\n');
        let mut body_b64 = String::new();
        loop {
            let l = read_line(input)?;
            header_text.push_str(&l);
            header_text.push('\n');
            let short = l.len() < 64;
            body_b64.push_str(&l);
            if short {
                break;
            }
        }
        if file_key.is_some() || args.first() != Some(&"X25519") {
            continue;
        }
        let share: [u8; 32] = args
            .get(1)
            .and_then(|s| B64.decode(s).ok())
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| bad("X25519 stanza without a 32-byte share"))?;
        let body = B64
            .decode(&body_b64)
            .map_err(|_| bad("stanza body is not base64"))?;
        let share = PublicKey::from(share);
        let shared = identity.0.diffie_hellman(&share);
        if shared.as_bytes().iter().all(|&b| b == 0) {
            continue;
        }
        let mut salt = share.as_bytes().to_vec();
        salt.extend_from_slice(identity.recipient().0.as_bytes());
        let wrap = hkdf(shared.as_bytes(), &salt, X25519_INFO);
        if let Ok(k) =
            ChaCha20Poly1305::new((&wrap).into()).decrypt((&[0u8; 12]).into(), body.as_slice())
        {
            if let Ok(k) = <[u8; 16]>::try_from(k.as_slice()) {
                file_key = Some(k);
            }
        }
    };
    let file_key = file_key.ok_or(AgeError::NoMatch)?;
    let mac = B64
        .decode(mac_line)
        .map_err(|_| bad("header MAC is not base64"))?;
    header_mac(&file_key, header_text.as_bytes())
        .verify_slice(&mac)
        .map_err(|_| AgeError::HeaderMac)?;

    let mut nonce = [0u8; 16];
    if fill(input, &mut nonce)? != 16 {
        return Err(AgeError::Payload);
    }
    let aead = ChaCha20Poly1305::new((&hkdf(&file_key, &nonce, b"payload")).into());
    let mut cur = vec![0u8; CHUNK + TAG];
    let mut next = vec![0u8; CHUNK + TAG];
    let mut n = fill(input, &mut cur)?;
    let mut counter = 0u64;
    loop {
        let m = if n == CHUNK + TAG {
            fill(input, &mut next)?
        } else {
            0
        };
        let last = m == 0;
        let plain = aead
            .decrypt((&stream_nonce(counter, last)).into(), &cur[..n])
            .map_err(|_| AgeError::Payload)?;
        // An empty chunk is valid only as the sole chunk of an empty file.
        if plain.is_empty() && counter > 0 {
            return Err(AgeError::Payload);
        }
        out.write_all(&plain)?;
        if last {
            return Ok(());
        }
        std::mem::swap(&mut cur, &mut next);
        n = m;
        counter += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(len: usize) {
        let id = Identity::generate();
        let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut sealed = Vec::new();
        encrypt(&id.recipient(), &mut plain.as_slice(), &mut sealed).unwrap();
        let mut back = Vec::new();
        decrypt(&id, &mut sealed.as_slice(), &mut back).unwrap();
        assert_eq!(back, plain, "{len} bytes");
    }

    #[test]
    fn every_chunk_boundary_round_trips() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 2 * CHUNK + 5] {
            roundtrip(len);
        }
    }

    #[test]
    fn tampering_truncation_and_the_wrong_key_are_refused() {
        let id = Identity::generate();
        let plain = vec![9u8; CHUNK + 100];
        let mut sealed = Vec::new();
        encrypt(&id.recipient(), &mut plain.as_slice(), &mut sealed).unwrap();
        let mut flipped = sealed.clone();
        let at = flipped.len() - 50;
        flipped[at] ^= 1;
        assert!(matches!(
            decrypt(&id, &mut flipped.as_slice(), &mut Vec::new()),
            Err(AgeError::Payload)
        ));
        // Cut exactly after the first (full) chunk: it is not flagged last.
        let header_end = sealed.windows(4).position(|w| w == b"\n---").unwrap();
        let body_start = header_end
            + sealed[header_end + 1..]
                .iter()
                .position(|&b| b == b'\n')
                .unwrap()
            + 2;
        let cut = &sealed[..body_start + 16 + CHUNK + TAG];
        assert!(matches!(
            decrypt(&id, &mut &cut[..], &mut Vec::new()),
            Err(AgeError::Payload)
        ));
        assert!(matches!(
            decrypt(
                &Identity::generate(),
                &mut sealed.as_slice(),
                &mut Vec::new()
            ),
            Err(AgeError::NoMatch)
        ));
    }

    #[test]
    fn sealed_len_is_exact() {
        let id = Identity::generate();
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK] {
            let mut sealed = Vec::new();
            encrypt(&id.recipient(), &mut vec![1u8; len].as_slice(), &mut sealed).unwrap();
            assert_eq!(sealed.len() as u64, sealed_len(len as u64), "{len}");
        }
    }

    #[test]
    fn a_chunked_stream_reads_as_one() {
        let parts = vec![b"ab".to_vec(), vec![], b"cde".to_vec()];
        let mut out = String::new();
        ChunkReader::new(parts.into_iter())
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "abcde");
    }

    #[test]
    fn keys_print_and_parse_as_age_does() {
        let id = Identity::generate();
        let s = id.to_secret_string();
        assert!(s.starts_with("AGE-SECRET-KEY-1"));
        let again = Identity::parse(&s).unwrap();
        assert_eq!(again.recipient(), id.recipient());
        let r = id.recipient().to_string();
        assert!(r.starts_with("age1"));
        assert_eq!(Recipient::parse(&r).unwrap(), id.recipient());
    }
}
