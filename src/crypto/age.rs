//! age v1 files (https://age-encryption.org/v1) with X25519 recipients, through the
//! `age` crate: this module only adapts it to lxgate's streams. What it adds: a cap on
//! the header before the parser sees it (a sealed upload is untrusted input), the exact
//! sealed length a streamed upload needs for its Content-Length, and error kinds the
//! callers can tell apart. Checked both ways against the `age` CLI in tests/age.rs.

use std::io::{self, BufRead, Read, Seek, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Key strings are handed out as secrets that zeroize on drop.
pub use ::age::secrecy::{ExposeSecret, SecretString};

/// Plaintext chunk size of the age payload stream; every chunk carries a 16-byte tag.
const CHUNK: u64 = 64 * 1024;
const TAG: u64 = 16;
/// The payload key's nonce, between the header and the payload.
const NONCE: u64 = 16;
/// Largest header accepted on input. One X25519 stanza plus age's grease stanza is
/// under 400 bytes; a few dozen recipients still fit. Anything longer is refused
/// before parsing, so a hostile upload cannot make the parser buffer without bound.
pub const MAX_HEADER: usize = 8 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AgeError {
    #[error("not an age identity: {0}")]
    BadIdentity(String),
    #[error("not an age recipient (age1…): {0}")]
    BadRecipient(String),
    #[error("not an age v1 file: {0}")]
    BadHeader(String),
    #[error("the age header is longer than {MAX_HEADER} bytes: not a file lxgate seals; seal it to one recipient")]
    HeaderTooLarge,
    #[error("no identity matches this file: it was sealed to another key")]
    NoMatch,
    #[error("the header MAC does not verify: the file was altered")]
    HeaderMac,
    #[error("the payload does not decrypt: the file was altered or truncated")]
    Payload,
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl From<age::DecryptError> for AgeError {
    fn from(e: age::DecryptError) -> Self {
        use age::DecryptError as D;
        match e {
            D::NoMatchingKeys => AgeError::NoMatch,
            D::InvalidMac => AgeError::HeaderMac,
            D::DecryptionFailed => AgeError::Payload,
            D::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => AgeError::Payload,
            D::Io(e) => AgeError::Io(e),
            other => AgeError::BadHeader(other.to_string()),
        }
    }
}

/// An X25519 identity (`AGE-SECRET-KEY-1…`); the secret is zeroized on drop.
pub struct Identity(age::x25519::Identity);

/// An X25519 recipient (`age1…`).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Recipient(age::x25519::Recipient);

impl Identity {
    pub fn generate() -> Identity {
        Identity(age::x25519::Identity::generate())
    }

    pub fn parse(s: &str) -> Result<Identity, AgeError> {
        s.trim()
            .parse()
            .map(Identity)
            .map_err(|e: &str| AgeError::BadIdentity(format!("{e}; expected AGE-SECRET-KEY-1…")))
    }

    /// The first identity in an identity file (`#` comments and blank lines skipped).
    pub fn from_file(path: &std::path::Path) -> Result<Identity, AgeError> {
        let text = SecretString::from(std::fs::read_to_string(path)?);
        let line = text
            .expose_secret()
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or_else(|| AgeError::BadIdentity(format!("{} holds no key", path.display())))?;
        Identity::parse(line)
    }

    pub fn recipient(&self) -> Recipient {
        Recipient(self.0.to_public())
    }

    /// The `AGE-SECRET-KEY-1…` line, zeroized when dropped.
    pub fn to_secret_string(&self) -> SecretString {
        self.0.to_string()
    }
}

impl Recipient {
    pub fn parse(s: &str) -> Result<Recipient, AgeError> {
        s.trim()
            .parse()
            .map(Recipient)
            .map_err(|e: &str| AgeError::BadRecipient(format!("{e}: {}", s.trim())))
    }
}

impl std::fmt::Display for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Counts what passes through, so the header's length is known once it is written.
struct Counted<W> {
    inner: W,
    n: Arc<AtomicU64>,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n.fetch_add(k as u64, Ordering::Relaxed);
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// An age file being written to `W`: the header is already out (buffered), so its
/// exact length is known before any payload is, and a sealed stream can be sent with
/// a Content-Length. age adds a random "grease" stanza, so the header length differs
/// from file to file and is only known here.
pub struct Sealing<W: Write> {
    stream: age::stream::StreamWriter<Counted<io::BufWriter<W>>>,
    header_len: u64,
}

impl<W: Write> Sealing<W> {
    /// Start an age file sealed to `to`. The header sits in a buffer until the payload
    /// follows, so a writer feeding a bounded channel cannot block here.
    pub fn start(to: &Recipient, out: W) -> io::Result<Sealing<W>> {
        let encryptor = age::Encryptor::with_recipients(std::iter::once(&to.0 as _))
            .map_err(io::Error::other)?;
        let n = Arc::new(AtomicU64::new(0));
        let stream = encryptor.wrap_output(Counted {
            inner: io::BufWriter::new(out),
            n: n.clone(),
        })?;
        let header_len = n.load(Ordering::Relaxed);
        Ok(Sealing { stream, header_len })
    }

    /// The exact size of the whole file once `plain_len` bytes are sealed (header and
    /// nonce, payload, one tag per chunk; an empty payload is one empty chunk).
    pub fn sealed_len(&self, plain_len: u64) -> u64 {
        let chunks = plain_len.div_ceil(CHUNK).max(1);
        self.header_len + plain_len + chunks * TAG
    }

    /// Seal everything `input` yields and finish the file.
    pub fn seal_from(mut self, input: &mut impl Read) -> io::Result<()> {
        io::copy(input, &mut self.stream)?;
        self.stream.finish()?.flush()
    }

    /// Write the last chunk and hand back the writer, everything flushed into it.
    pub fn finish(self) -> io::Result<W> {
        self.stream
            .finish()?
            .inner
            .into_inner()
            .map_err(|e| e.into_error())
    }
}

/// Plaintext written here leaves sealed: a staging file is written through it.
impl<W: Write> Write for Sealing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// Seal everything `input` yields to `to`, writing the age file to `out`.
pub fn encrypt(to: &Recipient, input: &mut impl Read, out: &mut impl Write) -> io::Result<()> {
    Sealing::start(to, out)?.seal_from(input)
}

/// The header up to and including the MAC line, at most `MAX_HEADER` bytes. age
/// headers are lines; the MAC line (`--- …`) is the last, the binary nonce follows.
fn read_header(input: &mut impl BufRead) -> Result<Vec<u8>, AgeError> {
    let mut header = Vec::new();
    loop {
        let room = (MAX_HEADER + 1 - header.len()) as u64;
        let start = header.len();
        let n = input.by_ref().take(room).read_until(b'\n', &mut header)?;
        if header.len() > MAX_HEADER {
            return Err(AgeError::HeaderTooLarge);
        }
        if n == 0 || header.last() != Some(&b'\n') {
            return Err(AgeError::BadHeader(
                "the file ends inside the header".into(),
            ));
        }
        if header[start..].starts_with(b"---") {
            return Ok(header);
        }
    }
}

/// The exact length of an age file holding `plain_len` bytes whose header `input`
/// starts with: how a stored sealed object's size is checked without a key.
pub fn expected_len(input: &mut impl BufRead, plain_len: u64) -> Result<u64, AgeError> {
    let header = read_header(input)?.len() as u64;
    let chunks = plain_len.div_ceil(CHUNK).max(1);
    Ok(header + NONCE + plain_len + chunks * TAG)
}

/// Open an age file sealed to `identity`, writing the plaintext to `out`.
pub fn decrypt(
    identity: &Identity,
    input: &mut impl BufRead,
    out: &mut impl Write,
) -> Result<(), AgeError> {
    decrypt_any(std::slice::from_ref(identity), input, out)
}

/// `decrypt` with the first of `identities` that opens the file (while the master key
/// rotates, an object is sealed to either the old or the new identity).
pub fn decrypt_any(
    identities: &[Identity],
    input: &mut impl BufRead,
    out: &mut impl Write,
) -> Result<(), AgeError> {
    let header = read_header(input)?;
    let decryptor = age::Decryptor::new_buffered(io::Cursor::new(header).chain(input))?;
    let mut plain = decryptor.decrypt(identities.iter().map(|i| &i.0 as &dyn age::Identity))?;
    let mut buf = vec![0u8; CHUNK as usize];
    loop {
        // A payload read error is a chunk that does not authenticate or a cut stream;
        // write errors are the caller's disk and stay I/O errors.
        let n = match plain.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                ) =>
            {
                return Err(AgeError::Payload)
            }
            Err(e) => return Err(AgeError::Io(e)),
        };
        out.write_all(&buf[..n])?;
    }
}

/// An age file opened for reading anywhere in its plaintext: age's payload is a
/// sequence of independently sealed 64 KiB chunks, so a seek decrypts only the chunk it
/// lands in. The plaintext length is authenticated (the last chunk is opened as the
/// last) before it is reported.
pub struct Opened<R: Read + io::Seek> {
    reader: age::stream::StreamReader<R>,
}

impl<R: BufRead + io::Seek> Opened<R> {
    /// Open `input` (positioned at the file's start) with the first identity that fits.
    pub fn new(identities: &[Identity], mut input: R) -> Result<Opened<R>, AgeError> {
        let start = input.stream_position()?;
        // The cap first, so a file that is not ours cannot make the parser buffer.
        read_header(&mut input)?;
        input.seek(io::SeekFrom::Start(start))?;
        let decryptor = age::Decryptor::new_buffered(input)?;
        let reader = decryptor.decrypt(identities.iter().map(|i| &i.0 as &dyn age::Identity))?;
        Ok(Opened { reader })
    }

    /// The plaintext length, checked against the authenticated last chunk.
    pub fn plaintext_len(&mut self) -> Result<u64, AgeError> {
        let here = self.reader.stream_position()?;
        let len = self.reader.seek(io::SeekFrom::End(0)).map_err(payload)?;
        self.reader
            .seek(io::SeekFrom::Start(here))
            .map_err(payload)?;
        Ok(len)
    }
}

/// Reads that fail authentication surface as `InvalidData`/`UnexpectedEof`.
fn payload(e: io::Error) -> AgeError {
    match e.kind() {
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => AgeError::Payload,
        _ => AgeError::Io(e),
    }
}

impl<R: Read + io::Seek> Read for Opened<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf)
    }
}

impl<R: Read + io::Seek> io::Seek for Opened<R> {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        self.reader.seek(pos)
    }
}

/// Whether `identity` opens the file's header (the payload is not read): how a key
/// rotation tells objects already moved from those still to move.
pub fn opens_with(identity: &Identity, input: &mut impl BufRead) -> Result<bool, AgeError> {
    let header = read_header(input)?;
    // The 16-byte payload nonce follows the header; the payload itself is not read.
    let decryptor =
        age::Decryptor::new_buffered(io::Cursor::new(header).chain(input.by_ref().take(16)))?;
    match decryptor.decrypt(std::iter::once(&identity.0 as &dyn age::Identity)) {
        Ok(_) => Ok(true),
        Err(age::DecryptError::NoMatchingKeys) => Ok(false),
        Err(e) => Err(e.into()),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const C: usize = CHUNK as usize;

    fn seal(id: &Identity, plain: &[u8]) -> Vec<u8> {
        let mut sealed = Vec::new();
        encrypt(&id.recipient(), &mut &plain[..], &mut sealed).unwrap();
        sealed
    }

    #[test]
    fn every_chunk_boundary_round_trips() {
        let id = Identity::generate();
        for len in [0, 1, C - 1, C, C + 1, 2 * C, 2 * C + 5] {
            let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut back = Vec::new();
            decrypt(&id, &mut seal(&id, &plain).as_slice(), &mut back).unwrap();
            assert_eq!(back, plain, "{len} bytes");
        }
    }

    #[test]
    fn tampering_truncation_and_the_wrong_key_are_refused() {
        let id = Identity::generate();
        let sealed = seal(&id, &vec![9u8; C + 100]);
        let mut flipped = sealed.clone();
        let at = flipped.len() - 50;
        flipped[at] ^= 1;
        assert!(matches!(
            decrypt(&id, &mut flipped.as_slice(), &mut Vec::new()),
            Err(AgeError::Payload)
        ));
        // Cut exactly after the first (full) chunk: it is not flagged last.
        let header_len = read_header(&mut sealed.as_slice()).unwrap().len();
        let cut = &sealed[..header_len + 16 + C + TAG as usize];
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
        for len in [0, 1, C - 1, C, C + 1, 3 * C] {
            let mut sealed = Vec::new();
            let s = Sealing::start(&id.recipient(), &mut sealed).unwrap();
            let expected = s.sealed_len(len as u64);
            s.seal_from(&mut vec![1u8; len].as_slice()).unwrap();
            assert_eq!(sealed.len() as u64, expected, "{len}");
            assert_eq!(
                expected_len(&mut sealed.as_slice(), len as u64).unwrap(),
                expected,
                "{len}"
            );
        }
    }

    #[test]
    fn an_oversized_header_is_refused_before_parsing() {
        let id = Identity::generate();
        let sealed = seal(&id, b"x");
        // A valid file with a junk stanza inserted after the intro line: over the cap it
        // is refused as too large (not as a bad MAC), without reading the rest.
        let intro = sealed.iter().position(|&b| b == b'\n').unwrap() + 1;
        let mut big = sealed[..intro].to_vec();
        big.extend_from_slice(b"-> junk\n");
        for _ in 0..(MAX_HEADER / 64 + 1) {
            big.extend_from_slice(&[b'A'; 64]);
            big.push(b'\n');
        }
        big.extend_from_slice(b"\n");
        big.extend_from_slice(&sealed[intro..]);
        assert!(matches!(
            decrypt(&id, &mut big.as_slice(), &mut Vec::new()),
            Err(AgeError::HeaderTooLarge)
        ));
        // One long line without a newline is cut off at the cap too.
        let mut line = b"age-encryption.org/v1\n-> X25519 ".to_vec();
        line.extend(std::iter::repeat_n(b'A', 1 << 20));
        assert!(matches!(
            decrypt(&id, &mut line.as_slice(), &mut Vec::new()),
            Err(AgeError::HeaderTooLarge)
        ));
    }

    #[test]
    fn header_forms_the_spec_rejects_are_refused() {
        let id = Identity::generate();
        let sealed = String::from_utf8_lossy(&seal(&id, b"")).into_owned();
        // The hand-written parser trimmed the MAC line, so it took `---MAC` and
        // `---  MAC`; the spec allows exactly one space.
        let no_space = sealed.replacen("--- ", "---", 1);
        let two_spaces = sealed.replacen("--- ", "---  ", 1);
        for bad in [no_space, two_spaces] {
            assert!(matches!(
                decrypt(&id, &mut bad.as_bytes(), &mut Vec::new()),
                Err(AgeError::BadHeader(_))
            ));
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
        assert!(s.expose_secret().starts_with("AGE-SECRET-KEY-1"));
        let again = Identity::parse(s.expose_secret()).unwrap();
        assert_eq!(again.recipient(), id.recipient());
        let r = id.recipient().to_string();
        assert!(r.starts_with("age1"));
        assert_eq!(Recipient::parse(&r).unwrap(), id.recipient());
    }
}
